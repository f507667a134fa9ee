// Monotonic clock reads shared by shards and workers.
#pragma once

#include <time.h>

#include <cstdint>

namespace esockets::detail {

inline std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

inline std::int64_t monotonic_ms() { return monotonic_ns() / 1000000; }

}  // namespace esockets::detail

// Small helpers shared by the takeover wire's two files (control_socket.cpp, takeover_wire.cpp).
// Thread: any.
#pragma once

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <string>

namespace esockets::detail::wire {

using Clock = std::chrono::steady_clock;

inline std::string errno_text(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

inline std::string ms_text(std::chrono::milliseconds t) {
  return std::to_string(t.count()) + " ms";
}

inline int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<decltype(left)>(left, 0, INT_MAX));
}

// 1 ready, 0 deadline passed, -1 poll failed (errno set).
inline int wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, ms_left(deadline));
    if (rc > 0) return 1;
    if (rc == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

}  // namespace esockets::detail::wire

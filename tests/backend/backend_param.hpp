// What the backend tests share: whether this kernel runs the io_uring backend, a test name
// for each backend, and a fixture parametrised by backend and worker count.
#pragma once

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "esockets/esockets.hpp"
#include "test_support.hpp"

namespace esockets::test {

/// True if a server can be built on io_uring here (Linux >= 6.1, io_uring allowed).
inline bool io_uring_usable() {
  static const bool usable = [] {
    ServerOptions o = loopback_options();
    o.backend = Backend::io_uring;
    CountingHandler h;
    try {
      Server s(h, o);
    } catch (const std::invalid_argument&) {
      return false;
    }
    return true;
  }();
  return usable;
}

inline std::string backend_name(Backend b) { return b == Backend::io_uring ? "io_uring" : "epoll"; }

struct BackendMode {
  Backend backend;
  unsigned workers;
};

inline std::string backend_mode_name(const ::testing::TestParamInfo<BackendMode>& i) {
  return backend_name(i.param.backend) + "_workers" + std::to_string(i.param.workers);
}

/// Both backends, inline and with two workers.
inline auto all_backend_modes() {
  return ::testing::Values(BackendMode{Backend::epoll, 0}, BackendMode{Backend::io_uring, 0},
                           BackendMode{Backend::epoll, 2}, BackendMode{Backend::io_uring, 2});
}

/// Skips io_uring cases on a kernel that cannot run it; options() are line-framed loopback
/// options on the case's backend and worker count.
class BackendModeTest : public ::testing::TestWithParam<BackendMode> {
 protected:
  void SetUp() override {
    if (GetParam().backend == Backend::io_uring && !io_uring_usable()) {
      GTEST_SKIP() << "this kernel cannot run the io_uring backend";
    }
  }
  ServerOptions options(unsigned shards) const {
    ServerOptions o = loopback_options(shards, GetParam().workers);
    o.backend = GetParam().backend;
    o.framing = Framing::line;
    return o;
  }
};

}  // namespace esockets::test

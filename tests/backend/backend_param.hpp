// What the backend tests share: whether this kernel runs the io_uring backend, and a test
// name for each backend.
#pragma once

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

}  // namespace esockets::test

// What the backend tests share: whether this kernel runs the io_uring backend, a test name
// for each backend, and a fixture parametrised by backend and worker count.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

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

// How ctest lists a case ("epoll, 2 workers"), not gtest's byte dump of the struct (whose
// padding bytes are whatever the stack held).
inline void PrintTo(const BackendMode& m, std::ostream* os) {
  *os << backend_name(m.backend) << ", " << m.workers << " workers";
}

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

/// BackendModeTest whose servers have a small SO_SNDBUF: most of a large reply waits in the
/// server's own queue (its send parked, on io_uring) instead of the kernel's.
class SendingBackendTest : public BackendModeTest {
 protected:
  ServerOptions send_options(unsigned shards) const {
    ServerOptions o = options(shards);
    o.socket_send_buffer = 32 * 1024;
    return o;
  }
};

/// A 16-byte record "<seq, 15 digits>\n": streams of them show loss, duplication, reorder.
inline std::string seq_record(std::uint64_t seq) {
  char b[32];
  std::snprintf(b, sizeof b, "%015llu\n", static_cast<unsigned long long>(seq));
  return std::string(b, 16);
}

/// Reads records up to number `n` (exclusive) in chunks of `chunk` bytes, checking that each
/// is `next` (advanced as they arrive); sleeps `pause` between chunks. "" or what went wrong.
inline std::string read_seq_records(Client& c, std::uint64_t n, std::uint64_t& next,
                                    std::size_t chunk = 16 * 1024,
                                    std::chrono::milliseconds pause = std::chrono::milliseconds(0)) {
  std::string got;
  while (next < n) {
    const std::size_t want = std::min<std::uint64_t>(chunk / 16, n - next) * 16;
    got.clear();
    if (!c.recv_exact(want, got, std::chrono::seconds(10))) {
      return "stream stopped after " + std::to_string(next + got.size() / 16) + " of " +
             std::to_string(n) + " records (errno " + std::to_string(errno) + ")";
    }
    for (std::size_t off = 0; off < got.size(); off += 16) {
      const std::uint64_t seq = std::strtoull(got.c_str() + off, nullptr, 10);
      if (seq != next || got[off + 15] != '\n') {
        return "record " + std::to_string(next) + " expected, got '" + got.substr(off, 15) +
               "' (lost, duplicated or reordered)";
      }
      ++next;
    }
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
  }
  return "";
}

/// Reads every client's records up to `total`, `step` records from each in turn (each stream
/// stays blocked while the others are read), for at most 20 s; `between()` runs after each
/// round. One entry per client: "" or what went wrong. `next` holds where each one is.
template <class Between>
std::vector<std::string> read_streams_in_turn(std::vector<Client>& clients, std::uint64_t total,
                                              std::vector<std::uint64_t>& next,
                                              std::uint64_t step, std::size_t chunk,
                                              Between&& between) {
  std::vector<std::string> errors(clients.size());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool progress = true;
  while (progress && std::chrono::steady_clock::now() < deadline) {
    progress = false;
    for (std::size_t i = 0; i < clients.size(); ++i) {
      if (next[i] >= total || !errors[i].empty()) continue;
      progress = true;
      const std::uint64_t upto = std::min<std::uint64_t>(total, next[i] + step);
      errors[i] = read_seq_records(clients[i], upto, next[i], chunk);
      if (!errors[i].empty()) errors[i] = "client " + std::to_string(i) + ": " + errors[i];
    }
    between();
  }
  for (std::size_t i = 0; i < clients.size(); ++i) {
    if (errors[i].empty() && next[i] < total) {
      errors[i] = "client " + std::to_string(i) + ": " + std::to_string(next[i]) + " of " +
                  std::to_string(total) + " records in 20 s";
    }
  }
  return errors;
}

/// A handler that records its connections' ids in connect order: a test gives each client a
/// role by its position (connect_in_order keeps the two orders the same).
class OrderedConnections : public Handler {
 public:
  std::mutex mu;
  std::vector<ConnectionId> ids;  // (under mu)
  std::atomic<int> connects{0};
  bool on_client_connect(Connection& c) override {
    std::lock_guard lk(mu);
    ids.push_back(c.id());
    ++connects;
    return true;
  }
};

/// Connects the clients one after the other, each once the handler has seen the one before
/// (its `connects` count), so that the handler's order is the clients' order.
inline ::testing::AssertionResult connect_in_order(std::vector<Client>& clients,
                                                   std::uint16_t port,
                                                   const std::atomic<int>& connects) {
  for (std::size_t i = 0; i < clients.size(); ++i) {
    if (!clients[i].connect(port)) return ::testing::AssertionFailure() << "connect " << i;
    if (!wait_until([&] { return connects.load() == static_cast<int>(i + 1); },
                    std::chrono::seconds(5))) {
      return ::testing::AssertionFailure() << "client " << i << " never reached the handler";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace esockets::test

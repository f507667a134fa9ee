// Helpers shared by the esockets tests: a blocking loopback client with timeouts, waits with
// deadlines, a per-test watchdog and a few handlers/guards.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "esockets/esockets.hpp"

#ifndef ESOCKETS_TEST_SCALE
#define ESOCKETS_TEST_SCALE 1
#endif

namespace esockets::test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// Divides a heavy count by ESOCKETS_TEST_SCALE (at least `min`).
constexpr std::size_t scaled(std::size_t n, std::size_t min = 1) {
  std::size_t s = n / static_cast<std::size_t>(ESOCKETS_TEST_SCALE);
  return s < min ? min : s;
}
constexpr int kScale = ESOCKETS_TEST_SCALE;

/// Polls pred every millisecond until it holds or timeout passes; returns the last result.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s);

/// Seconds before the watchdog kills a running test (env ESOCKETS_TEST_WATCHDOG overrides).
int watchdog_seconds();

/// Result of reading until EOF.
enum class EofResult { eof, reset, timeout, data };
const char* to_string(EofResult r);

/// A blocking TCP client for loopback tests. Every wait has a deadline.
class Client {
 public:
  Client() = default;
  /// Connects to 127.0.0.1:port, optionally from source address `src` (port chosen at connect).
  explicit Client(std::uint16_t port, const char* src = nullptr);
  ~Client();
  Client(Client&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Client& operator=(Client&& o) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// Takes over a socket connected elsewhere (closed with the Client).
  static Client adopt(int fd) {
    Client c;
    c.fd_ = fd;
    return c;
  }
  /// Connect; returns false (and sets errno) on failure instead of throwing.
  bool connect(std::uint16_t port, const char* src = nullptr);
  /// Connects to a listener address as Server::listeners() spells it ("127.0.0.1:p", "[::1]:p",
  /// "unix:/path", "unix:@name"; "0.0.0.0" and "::" mean loopback); false with errno set.
  bool connect(const std::string& address);
  /// Creates the socket for `address` without connecting (so that a later connect needs no
  /// new descriptor); false with errno set on failure.
  bool prepare(const std::string& address);
  /// Connects a socket made by prepare(); false with errno set on failure.
  bool connect_prepared(const std::string& address);
  int fd() const { return fd_; }
  bool is_open() const { return fd_ >= 0; }
  /// "127.0.0.1:port" of this client's socket.
  std::string local_address() const;
  /// The client's own port (IPv4 or IPv6); 0 for a Unix-domain client.
  std::uint16_t local_port() const;

  bool send_all(std::string_view data, std::chrono::milliseconds timeout = 10s);
  bool send_line(std::string_view line, std::chrono::milliseconds timeout = 10s) {
    return send_all(std::string(line) + "\n", timeout);
  }
  /// Reads exactly n bytes; false on EOF, error or timeout (whatever arrived is in out).
  bool recv_exact(std::size_t n, std::string& out, std::chrono::milliseconds timeout = 10s);
  std::string recv_exact(std::size_t n, std::chrono::milliseconds timeout = 10s);
  /// Reads one line (without the '\n'); false on EOF/timeout.
  bool recv_line(std::string& line, std::chrono::milliseconds timeout = 10s);
  /// Whatever arrives within timeout (empty if nothing); stops at EOF.
  std::string recv_for(std::chrono::milliseconds timeout);
  /// Reads (discarding data unless `data` is given) until EOF / reset / timeout.
  EofResult wait_eof(std::chrono::milliseconds timeout = 10s, std::string* data = nullptr);
  /// Returns EofResult::data if bytes arrive in timeout, eof/reset if the peer closed, else timeout.
  EofResult poll_once(std::chrono::milliseconds timeout);

  void shutdown_write();
  /// SO_LINGER 0 then close: the server sees a reset.
  void reset();
  void close();
  void set_rcvbuf(int bytes);

 private:
  int fd_ = -1;
  std::string pending_;  // bytes read past the last line by recv_line
};

/// Opens n clients to port, spreading the source address over 127.0.0.2 ... when many.
std::vector<Client> connect_many(std::uint16_t port, std::size_t n, bool spread_sources = false);

/// A handler counting every callback; on_message_recv echoes when `echo` is set.
class CountingHandler : public Handler {
 public:
  std::atomic<int> starts{0}, connects{0}, messages{0}, disconnects{0}, shutting_down{0},
      shut_down{0}, warnings{0}, high{0}, low{0};
  std::atomic<int> reasons[kCloseReasonCount] = {};
  std::atomic<std::uint64_t> bytes_in{0};
  bool echo = true;
  bool framed_echo = false;

  void on_start(Server&) override { starts++; }
  bool on_client_connect(Connection&) override {
    connects++;
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    messages++;
    bytes_in += m.size();
    if (echo) {
      if (framed_echo) {
        c.send_frame(m);
      } else {
        c.send(m);
      }
    }
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    reasons[static_cast<std::size_t>(r)]++;
    disconnects++;
  }
  void on_output_high(Connection&) override { high++; }
  void on_output_low(Connection&) override { low++; }
  void on_server_shutting_down(Server&) override { shutting_down++; }
  void on_server_shut_down(Server&) override { shut_down++; }
  void on_warning(std::string_view) override { warnings++; }
  int reason(CloseReason r) const { return reasons[static_cast<std::size_t>(r)].load(); }
};

/// Builds options for a loopback server on an ephemeral port.
ServerOptions loopback_options(unsigned shards = 1, unsigned workers = 0);

/// A shards × workers configuration for parameterised tests, and its test-name suffix.
struct Mode {
  unsigned shards, workers;
};
std::string mode_name(const ::testing::TestParamInfo<Mode>& i);

/// A listening loopback socket on an ephemeral port (for bind-failure tests); the fd or -1.
int occupy_loopback_port(std::uint16_t& port);

/// Reads a file descriptor count of this process (for leak checks).
std::size_t open_fd_count();

}  // namespace esockets::test

// AdminServer: the opt-in admin listener (ServerOptions::admin): GET /metrics and GET /health
// over HTTP/1.1, on a thread of its own so that it answers while the shards are busy.
// Thread: construct, start() and stop() from one thread; the hooks run on the admin thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "esockets/metrics.hpp"

namespace esockets::detail {

class AdminServer {
 public:
  struct Hooks {
    std::function<std::string(MetricsFormat)> metrics;  // the body of GET /metrics
    std::function<bool()> draining;                     // true: GET /health answers 503
    // A client that has not sent its whole request head by then is closed (tests shorten it).
    std::chrono::milliseconds head_timeout{5000};
    // TCP: bind with SO_REUSEPORT, so that a process taking over this server (takeover) binds
    // the same address while this one still serves it. Otherwise a taken address fails.
    bool reuse_port = false;
  };
  // Parses and binds `address` (parse_listen_address: TCP "127.0.0.1:9100", "[::1]:9100", or
  // "unix:/path"); throws std::invalid_argument for a bad address, std::system_error naming it
  // when binding fails.
  AdminServer(const std::string& address, Hooks hooks);
  ~AdminServer();  // stop()
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  void start();  // starts the thread (thread name "esk-admin")
  void stop();   // ends the thread and closes every socket; idempotent
  std::string address() const;  // as bound ("127.0.0.1:41234", "unix:/path")
  std::uint16_t port() const;   // TCP: the bound port; Unix: 0

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace esockets::detail

// Helpers for the esockets-http tests: the server binary as a child process on a free
// loopback port (child_process.hpp also runs curl, wrk and h2load with captured output), and a
// minimal HTTP/1.1 response reader for raw-socket tests.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "child_process.hpp"
#include "test_support.hpp"

#ifndef ESOCKETS_HTTP_BINARY
#error "ESOCKETS_HTTP_BINARY must name the esockets-http executable"
#endif

namespace esockets::test::http {

/// esockets-http running as a child process on a free loopback port (stderr kept apart in a
/// file, so warnings never block the server).
class ServerProcess {
 public:
  /// Starts the server with `args` (plus --port); true once it prints its listening line.
  bool start(std::vector<std::string> args) {
    return server_.start(
        [&args](std::uint16_t port) {
          std::vector<std::string> argv{ESOCKETS_HTTP_BINARY, "--port", std::to_string(port)};
          argv.insert(argv.end(), args.begin(), args.end());
          return argv;
        },
        {}, ChildProcess::Stderr::file);
  }
  std::uint16_t port() const { return server_.port(); }
  pid_t pid() { return server_.child().pid(); }
  std::string url(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(port()) + std::string(path);
  }
  /// What the server wrote to stdout / stderr so far.
  const std::string& out() { return server_.child().output(); }
  std::string err() { return server_.child().err(); }
  bool alive() { return server_.child().alive(); }
  /// SIGTERM, then the exit code (or -1 if it had to be killed or died of a signal).
  int stop(std::chrono::milliseconds timeout = std::chrono::seconds(20)) { return server_.stop(timeout); }

 private:
  ServerChild server_;
};

/// One response read off a raw socket.
struct Response {
  int status = 0;
  std::string head;  // status line and headers, up to the blank line
  std::string body;
  /// The value of header `name` (case-sensitive match on the name as the server writes it).
  std::string header(std::string_view name) const {
    const std::string key = "\r\n" + std::string(name) + ": ";
    const std::size_t at = head.find(key);
    if (at == std::string::npos) return {};
    const std::size_t start = at + key.size();
    return head.substr(start, head.find("\r\n", start) - start);
  }
};

/// Reads responses from a raw client, keeping bytes past the last one for the next call.
class ResponseReader {
 public:
  explicit ResponseReader(Client& c) : c_(c) {}
  /// One response (Content-Length framed; `head_only` for a HEAD request); false on EOF or
  /// timeout before it is complete.
  bool read(Response& r, bool head_only = false,
            std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = Clock::now() + timeout;
    std::size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!more(deadline)) return false;
    }
    r = Response{};
    r.head = buf_.substr(0, end + 2);
    if (r.head.rfind("HTTP/1.1 ", 0) != 0 || r.head.size() < 12) return false;
    r.status = std::stoi(r.head.substr(9, 3));
    const std::string cl = r.header("Content-Length");
    const std::size_t len = head_only || cl.empty() ? 0 : std::stoul(cl);
    while (buf_.size() < end + 4 + len) {
      if (!more(deadline)) return false;
    }
    r.body = buf_.substr(end + 4, len);
    buf_.erase(0, end + 4 + len);
    return true;
  }
  /// Bytes received but not yet returned.
  const std::string& pending() const { return buf_; }

 private:
  bool more(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    if (c_.poll_once(left) != EofResult::data) return false;
    char tmp[65536];
    const ssize_t n = ::recv(c_.fd(), tmp, sizeof tmp, MSG_DONTWAIT);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<std::size_t>(n));
    return true;
  }
  Client& c_;
  std::string buf_;
};

}  // namespace esockets::test::http

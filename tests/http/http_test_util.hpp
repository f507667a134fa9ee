// Helpers for the esockets-http tests: the server binary as a child process on a free
// loopback port, external commands (curl, wrk, h2load) with captured output, and a minimal
// HTTP/1.1 response reader for raw-socket tests.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "test_support.hpp"

#ifndef ESOCKETS_HTTP_BINARY
#error "ESOCKETS_HTTP_BINARY must name the esockets-http executable"
#endif

extern char** environ;

namespace esockets::test::http {

/// esockets-http running as a child process. start() picks a random port in 20000-32000
/// (below the ephemeral range) and retries when the bind fails.
class ServerProcess {
 public:
  ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() {
    if (pid_ > 0 && status_ == -1) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
    if (!err_path_.empty()) ::unlink(err_path_.c_str());
  }

  /// Starts the server with `args` (plus --port); true once it prints its listening line.
  bool start(std::vector<std::string> args) {
    std::mt19937 rng(std::random_device{}());
    for (int attempt = 0; attempt < 20; ++attempt) {
      port_ = static_cast<std::uint16_t>(20000 + rng() % 12000);
      if (spawn(args)) return true;
    }
    return false;
  }
  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string url(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
  }
  /// What the server wrote to stdout / stderr so far.
  const std::string& out() {
    pump(std::chrono::milliseconds(0));
    return out_text_;
  }
  std::string err() const { return read_file(err_path_); }
  bool alive() {
    if (status_ != -1) return false;
    int st;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      status_ = st;
      return false;
    }
    return true;
  }
  /// SIGTERM, then the exit code (or -1 if it had to be killed or died of a signal).
  int stop(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (pid_ <= 0) return -1;
    if (alive()) ::kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + timeout;
    while (alive() && Clock::now() < deadline) pump(std::chrono::milliseconds(20));
    if (alive()) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
      return -1;
    }
    pump(std::chrono::milliseconds(0));
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }

  static std::string read_file(const std::string& path) {
    std::string text;
    if (FILE* f = std::fopen(path.c_str(), "rb")) {
      char buf[4096];
      std::size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
      std::fclose(f);
    }
    return text;
  }

 private:
  bool spawn(const std::vector<std::string>& extra) {
    if (out_ >= 0) ::close(out_);
    out_text_.clear();
    status_ = -1;
    int po[2];
    if (::pipe2(po, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    if (!err_path_.empty()) ::unlink(err_path_.c_str());
    char tmpl[] = "/tmp/esockets-http-test-err-XXXXXX";
    const int ef = ::mkstemp(tmpl);
    if (ef < 0) throw std::runtime_error("mkstemp");
    err_path_ = tmpl;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, ef, 2);  // a file: warnings never block the server
    std::vector<std::string> args{ESOCKETS_HTTP_BINARY, "--port", std::to_string(port_)};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, ESOCKETS_HTTP_BINARY, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(po[1]);
    ::close(ef);
    out_ = po[0];
    if (rc != 0) throw std::runtime_error("posix_spawn esockets-http failed");
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline) {
      pump(std::chrono::milliseconds(20));
      if (out_text_.find("listening on") != std::string::npos) return true;
      if (!alive()) break;
    }
    if (alive()) {  // hung before listening: kill it and try another port
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
    }
    return false;
  }
  void pump(std::chrono::milliseconds timeout) {
    if (out_ < 0) return;
    pollfd p{out_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return;
    char buf[4096];
    const ssize_t r = ::read(out_, buf, sizeof buf);
    if (r > 0) out_text_.append(buf, static_cast<std::size_t>(r));
  }

  pid_t pid_ = -1;
  int out_ = -1;
  int status_ = -1;
  std::uint16_t port_ = 0;
  std::string out_text_;
  std::string err_path_;
};

/// Runs a shell command (stdout and stderr merged); returns its exit code and output.
struct CommandResult {
  int code = -1;
  std::string output;
};
inline CommandResult run_command(const std::string& cmd) {
  CommandResult r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

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

// Helpers for the esockets-redis tests: child processes (the server under test, a real
// redis-server to compare with, redis-cli), commands with captured output, and a RESP reply
// reader for raw-socket clients. Every wait has a deadline; every port is a random loopback
// port in 20000-32000 (below the ephemeral range), retried when the bind fails.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
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

#ifndef ESOCKETS_REDIS_BINARY
#error "ESOCKETS_REDIS_BINARY must name the esockets-redis executable"
#endif

extern char** environ;

namespace esockets::test::redis {

/// A child process with its stdout (and stderr) captured through a pipe.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { kill_now(); }

  /// Starts argv[0] (a path, or a name looked up in PATH) with stdout+stderr on a pipe.
  bool spawn(const std::vector<std::string>& args) {
    kill_now();
    out_text_.clear();
    status_ = -1;
    int po[2];
    if (::pipe2(po, O_CLOEXEC) != 0) return false;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, po[1], 2);
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawnp(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(po[1]);
    out_ = po[0];
    if (rc != 0) {
      pid_ = -1;
      return false;
    }
    return true;
  }
  pid_t pid() const { return pid_; }
  bool alive() {
    if (pid_ <= 0 || status_ != -1) return false;
    int st;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      status_ = st;
      return false;
    }
    return true;
  }
  /// Output so far (reads what is there, waiting at most `wait`).
  const std::string& output(std::chrono::milliseconds wait = std::chrono::milliseconds(0)) {
    pump(wait);
    return out_text_;
  }
  /// Waits until the output contains `text` (true) or `timeout` passes / the child ends.
  bool wait_for_output(std::string_view text, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      pump(std::chrono::milliseconds(20));
      if (out_text_.find(text) != std::string::npos) return true;
      if (!alive()) {
        pump(std::chrono::milliseconds(0));
        return out_text_.find(text) != std::string::npos;
      }
    }
    return false;
  }
  /// SIGTERM (then SIGKILL after `timeout`); the exit code, or -1 (signal / killed).
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

 private:
  void kill_now() {
    if (pid_ > 0 && alive()) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
    }
    if (out_ >= 0) ::close(out_);
    out_ = -1;
    pid_ = -1;
  }
  void pump(std::chrono::milliseconds timeout) {
    if (out_ < 0) return;
    pollfd p{out_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return;
    char buf[8192];
    const ssize_t r = ::read(out_, buf, sizeof buf);
    if (r > 0) out_text_.append(buf, static_cast<std::size_t>(r));
  }

  pid_t pid_ = -1;
  int out_ = -1;
  int status_ = -1;
  std::string out_text_;
};

/// A server child on a random free port: esockets-redis (ready when it prints its listening
/// line) or redis-server (ready when it logs "Ready to accept connections").
class ServerProcess {
 public:
  enum class Kind { esockets, redis };
  /// Starts the server; true once it is ready. `args` are extra flags.
  bool start(Kind kind, std::vector<std::string> args = {}) {
    std::mt19937 rng(std::random_device{}());
    for (int attempt = 0; attempt < 20; ++attempt) {
      port_ = static_cast<std::uint16_t>(20000 + rng() % 12000);
      std::vector<std::string> argv;
      std::string ready;
      if (kind == Kind::esockets) {
        argv = {ESOCKETS_REDIS_BINARY, "--port", std::to_string(port_)};
        ready = "esockets-redis listening on";
      } else {
        argv = {"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no"};
        ready = "Ready to accept connections";
      }
      argv.insert(argv.end(), args.begin(), args.end());
      if (!child_.spawn(argv)) return false;
      if (child_.wait_for_output(ready, std::chrono::seconds(30))) return true;
      child_.stop(std::chrono::seconds(2));
    }
    return false;
  }
  std::uint16_t port() const { return port_; }
  Child& child() { return child_; }
  int stop() { return child_.stop(); }

 private:
  Child child_;
  std::uint16_t port_ = 0;
};

/// Runs a shell command under `timeout` (seconds), stdout and stderr merged.
struct CommandResult {
  int code = -1;
  std::string output;
};
inline CommandResult run_command(const std::string& cmd, int timeout_s = 120) {
  CommandResult r;
  const std::string full = "timeout -k 5 " + std::to_string(timeout_s) + " " + cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

/// Single-quotes an argument for the shell.
inline std::string shell_quote(std::string_view s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

/// redis-cli -p port args... (each arg passed as is); its output.
inline CommandResult redis_cli(std::uint16_t port, const std::vector<std::string>& args) {
  std::string cmd = "redis-cli -h 127.0.0.1 -p " + std::to_string(port);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  return run_command(cmd, 30);
}

/// Encodes a command as a RESP multibulk.
inline std::string encode(const std::vector<std::string>& args) {
  std::string s = "*" + std::to_string(args.size()) + "\r\n";
  for (const auto& a : args) s += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
  return s;
}

/// Reads one whole RESP reply (its raw bytes, appended to `raw`); false on EOF / timeout.
inline bool read_reply(Client& c, std::string& raw,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  std::string line;
  if (!c.recv_line(line, timeout)) return false;
  raw += line + "\n";
  if (line.empty()) return false;
  const char type = line[0];
  if (type == '+' || type == '-' || type == ':') return true;
  const long n = std::strtol(line.c_str() + 1, nullptr, 10);
  if (type == '$') {
    if (n < 0) return true;
    std::string body;
    if (!c.recv_exact(static_cast<std::size_t>(n) + 2, body, timeout)) return false;
    raw += body;
    return true;
  }
  if (type == '*') {
    for (long i = 0; i < n; ++i) {
      if (!read_reply(c, raw, timeout)) return false;
    }
    return true;
  }
  return false;
}

/// Sends a command and returns its raw reply ("" on EOF / timeout).
inline std::string call(Client& c, const std::vector<std::string>& args) {
  if (!c.send_all(encode(args))) return {};
  std::string raw;
  return read_reply(c, raw) ? raw : std::string();
}

/// The value of `field` in an INFO reply ("" if absent).
inline std::string info_field(const std::string& info, std::string_view field) {
  const std::string key = "\n" + std::string(field) + ":";
  std::size_t at = info.find(key);
  if (at == std::string::npos) return {};
  at += key.size();
  return info.substr(at, info.find('\r', at) - at);
}

}  // namespace esockets::test::redis

// Tests that drive a program as a child process: spawn it with its stdout on a pipe (stderr on
// the same pipe or in a temporary file), wait for a line or for its "listening on HOST:PORT" line,
// stop it with SIGTERM and a bound, start a server on a random free loopback port, and run a shell
// command under a timeout with its output captured. Every wait has a deadline.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "test_support.hpp"

extern char** environ;

namespace esockets::test {

/// A child process with its stdout captured through a pipe.
class ChildProcess {
 public:
  /// Where the child's stderr goes: the stdout pipe, or a temporary file (read with err()), so
  /// that messages never block a child whose pipe nobody reads.
  enum class Stderr { merged, file };

  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    kill_now();
    if (!err_path_.empty()) ::unlink(err_path_.c_str());
  }

  /// Starts args[0] (a path, or a name looked up in PATH); false if it cannot be spawned.
  /// A child still running from an earlier spawn is killed first.
  bool spawn(const std::vector<std::string>& args, Stderr err = Stderr::merged) {
    kill_now();
    out_text_.clear();
    status_ = -1;
    int po[2];
    if (::pipe2(po, O_CLOEXEC) != 0) return false;
    int ef = -1;
    if (err == Stderr::file) {
      if (!err_path_.empty()) ::unlink(err_path_.c_str());
      char tmpl[] = "/tmp/esockets-test-err-XXXXXX";
      ef = ::mkstemp(tmpl);
      if (ef < 0) throw std::runtime_error("mkstemp");
      err_path_ = tmpl;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, ef >= 0 ? ef : po[1], 2);
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawnp(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(po[1]);
    if (ef >= 0) ::close(ef);
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
  /// Stdout so far (reads what is there, waiting at most `wait`).
  const std::string& output(std::chrono::milliseconds wait = std::chrono::milliseconds(0)) {
    pump(wait);
    return out_text_;
  }
  /// Stderr so far, with Stderr::file ("" otherwise: it is in output()).
  std::string err() const {
    std::string text;
    if (err_path_.empty()) return text;
    if (FILE* f = std::fopen(err_path_.c_str(), "rb")) {
      char buf[4096];
      std::size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
      std::fclose(f);
    }
    return text;
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
  /// Waits for a whole "listening on HOST:PORT" line; the port, or 0 if none came in time.
  std::uint16_t wait_listening(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      const std::size_t at = out_text_.find("listening on ");
      if (at != std::string::npos && out_text_.find('\n', at) != std::string::npos) {
        const std::size_t start = at + 13;  // HOST:PORT, the port after the last ':' (IPv6)
        const std::size_t colon = out_text_.rfind(':', out_text_.find_first_of(" \n", start));
        if (colon == std::string::npos || colon < start) return 0;
        return static_cast<std::uint16_t>(std::atoi(out_text_.c_str() + colon + 1));
      }
      if (Clock::now() >= deadline) return 0;
      const bool ended = !alive();
      const std::size_t before = out_text_.size();
      pump(std::chrono::milliseconds(20));
      if (ended && out_text_.size() == before) return 0;  // it exited and said all it had
    }
  }
  /// SIGTERM, then SIGKILL after `timeout`; the exit code, or -1 (killed / died of a signal).
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
  /// SIGKILL if still running; closes the pipe.
  void kill_now() {
    if (pid_ > 0 && alive()) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
    }
    if (out_ >= 0) ::close(out_);
    out_ = -1;
    pid_ = -1;
  }

 private:
  // Reads what is available within `timeout` (one read).
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
  std::string err_path_;
};

/// A server child on a random loopback port in 20000-32000 (below the ephemeral range), another
/// port tried when it does not get ready (the bind failed, or it hung).
class ServerChild {
 public:
  /// The server's argv for a port.
  using Argv = std::function<std::vector<std::string>(std::uint16_t port)>;

  /// Ready when `ready` shows in its output; with `ready` empty, when it prints its listening
  /// line with the port asked for. Up to `attempts` ports.
  bool start(const Argv& argv, std::string_view ready = {},
             ChildProcess::Stderr err = ChildProcess::Stderr::merged, int attempts = 20) {
    std::mt19937 rng(std::random_device{}());
    for (int attempt = 0; attempt < attempts; ++attempt) {
      port_ = static_cast<std::uint16_t>(20000 + rng() % 12000);
      if (!child_.spawn(argv(port_), err)) return false;
      const bool up = ready.empty() ? child_.wait_listening(std::chrono::seconds(30)) == port_
                                    : child_.wait_for_output(ready, std::chrono::seconds(30));
      if (up) return true;
      child_.stop(std::chrono::seconds(2));
    }
    return false;
  }
  std::uint16_t port() const { return port_; }
  ChildProcess& child() { return child_; }
  /// As ChildProcess::stop.
  int stop(std::chrono::milliseconds timeout = std::chrono::seconds(20)) { return child_.stop(timeout); }

 private:
  ChildProcess child_;
  std::uint16_t port_ = 0;
};

/// A shell command's exit code (-1 if it died of a signal) and its stdout and stderr, merged.
struct CommandResult {
  int code = -1;
  std::string output;
};
/// Runs `cmd` through the shell under `timeout -k 5 timeout_s` (exit 124 when it ran out).
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

}  // namespace esockets::test

// Helpers for the esockets-redis tests: the server under test and a real redis-server to compare
// with as child processes (child_process.hpp: random loopback ports in 20000-32000, retried when
// the bind fails; commands with captured output), redis-cli, and a RESP reply reader for
// raw-socket clients. Every wait has a deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "child_process.hpp"
#include "test_support.hpp"

#ifndef ESOCKETS_REDIS_BINARY
#error "ESOCKETS_REDIS_BINARY must name the esockets-redis executable"
#endif

namespace esockets::test::redis {

/// A child process with stdout and stderr captured through one pipe.
using Child = ChildProcess;

/// A server child on a random free port: esockets-redis (ready when it prints its listening
/// line) or redis-server (ready when it logs "Ready to accept connections").
class ServerProcess {
 public:
  enum class Kind { esockets, redis };
  /// Starts the server; true once it is ready. `args` are extra flags.
  bool start(Kind kind, std::vector<std::string> args = {}) {
    return server_.start(
        [&](std::uint16_t port) {
          std::vector<std::string> argv;
          if (kind == Kind::esockets) {
            argv = {ESOCKETS_REDIS_BINARY, "--port", std::to_string(port)};
          } else {
            argv = {"redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no"};
          }
          argv.insert(argv.end(), args.begin(), args.end());
          return argv;
        },
        kind == Kind::esockets ? std::string_view{} : "Ready to accept connections");
  }
  std::uint16_t port() const { return server_.port(); }
  Child& child() { return server_.child(); }
  int stop() { return server_.stop(); }

 private:
  ServerChild server_;
};

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

// The command line the example servers share (esockets-echo, -redis, -http, -chat): the common
// flags on a CLI11 app bound to an esockets::ServerOptions, the parse-or-exit-2 rule, the
// "PROGRAM listening on HOST:PORT (...)" line, the exit status of a server run, and SIGINT/SIGTERM
// turned into Server::request_stop().
//
// Flag names and values are parsed by CLI11; each value goes through number() / seconds() so a
// bad one names the flag and what it needs. --help prints the program's own text (anywhere on the
// command line, before anything is checked) and exits 0; every bad flag prints
//   PROGRAM: <what to change>
//   (run PROGRAM --help for the flags)
// on stderr and exits 2.
#pragma once

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "esockets/options.hpp"

namespace CLI {
class App;
}

namespace esockets {
class Server;
}

namespace esockets::tools {

/// Which of the common flags a program takes, and their bounds.
struct ServerFlags {
  unsigned max_shards = 254;     ///< --shards N, 1..max_shards
  bool max_connections = true;   ///< --max-connections N, 1..2^24
  std::size_t min_max_frame = 0; ///< --max-frame BYTES, min_max_frame..2^30; 0 = no such flag
};

class ServerCli {
 public:
  /// `program` prefixes every message; `usage` is what --help prints.
  ServerCli(std::string program, std::string usage);
  ~ServerCli();
  ServerCli(const ServerCli&) = delete;
  ServerCli& operator=(const ServerCli&) = delete;

  /// --host H, --port P (0..65535), --shards N, --workers N (0..255), --backend, and as `which` says
  /// --max-connections N and --max-frame BYTES, all bound to `o`; -q/--quiet sets quiet().
  /// Also the production flags: --listen ADDR (repeatable: 127.0.0.1:9000, [::1]:9000,
  /// unix:/path, unix:@name; replaces --host/--port), --proxy-protocol (every listener reads
  /// a PROXY v1 or v2 header first), --trusted-proxy CIDR (repeatable; default 127.0.0.0/8
  /// and ::1), --admin ADDR (GET /metrics and /health there), --cpus LIST|auto (pinning).
  void add_server_flags(ServerOptions& o, const ServerFlags& which = {});
  /// A flag taking one value (the last one wins when repeated); apply(flag, value) checks and
  /// stores it, calling usage_error() (through number() / seconds()) when it is bad.
  void option(const char* name, std::function<void(const char* flag, const std::string& value)> apply);
  /// Parses argv as said above: returns only when every flag is good.
  void parse(int argc, char** argv);

  /// The message, the pointer to --help, exit 2.
  [[noreturn]] void usage_error(const std::string& msg) const;
  /// `v` as a whole number in [lo, hi], or usage_error().
  template <class T>
  T number(std::string_view flag, std::string_view v, T lo, T hi) const {
    T out{};
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec != std::errc() || p != v.data() + v.size() || out < lo || out > hi) {
      usage_error(std::string(flag) + " needs a whole number between " + std::to_string(lo) +
                  " and " + std::to_string(hi) + ", not '" + std::string(v) + "'");
    }
    return out;
  }
  /// `v` as seconds >= 0 (fractions allowed), rounded to milliseconds, or usage_error().
  std::chrono::milliseconds seconds(std::string_view flag, std::string_view v) const;

  bool quiet() const { return quiet_; }
  const std::string& program() const { return program_; }
  /// The CLI11 app, for flags of other shapes (include <CLI/CLI.hpp> to use it).
  CLI::App& app() { return *app_; }

  /// Unless quiet(): "PROGRAM listening on HOST:PORT (DETAIL)" and a flush (tests and scripts
  /// read the port from this first line).
  /// With several listeners they follow the first, comma-separated; an admin listener is
  /// named in DETAIL ("admin=ADDR").
  void print_listening(const Server& server, const std::string& detail) const;
  /// Runs the server part of main: 0 when it returns, 2 ("PROGRAM: ...") when it throws
  /// std::invalid_argument (options the Server rejects), 1 ("PROGRAM: cannot start: ...") for
  /// any other exception.
  int run(const std::function<void()>& serve) const;

 private:
  std::string program_;
  std::string usage_;
  std::unique_ptr<CLI::App> app_;
  bool quiet_ = false;
  ServerOptions* opts_ = nullptr;  // add_server_flags' target: parse() builds its listeners
  std::vector<std::string> listen_;
  std::vector<std::string> trusted_;
  bool proxy_ = false;
  bool host_or_port_ = false;
};

/// SIGINT and SIGTERM stop one Server through request_stop() (async-signal-safe) from a signal
/// handler, so the main thread can wait in Server::wait() or serve other signals meanwhile.
/// Construct it before the Server: it blocks both signals in the calling thread, so the engine
/// threads (which inherit the mask) never take them. arm() after start() installs the handler
/// and unblocks them (a signal that came early is delivered then); disarm() (also on
/// destruction) blocks them again and forgets the server. One instance at a time.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  void arm(Server& server);
  void disarm();
  /// The stop signal received (SIGINT or SIGTERM), 0 if none.
  int received() const;
  /// "SIGINT", "SIGTERM", or `otherwise` when no signal stopped the server.
  const char* name(const char* otherwise = "stopped") const;
};

}  // namespace esockets::tools

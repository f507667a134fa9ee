// esockets-echo: an echo server on the esockets engine.
// Every message comes back to its sender (re-framed with the server's framing). SIGINT or
// SIGTERM stops it gracefully and prints per-shard stats.
#include <signal.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <utility>

#include <CLI/CLI.hpp>

#include "esockets/esockets.hpp"
#include "stats_print.hpp"

namespace {

constexpr const char* kUsage =
    "usage: esockets-echo [options]\n"
    "  --host H              numeric address to bind (default 127.0.0.1)\n"
    "  --port P              port (default 0 = ephemeral; the bound port is printed)\n"
    "  --shards N            reactor threads (default 1)\n"
    "  --workers N           handler threads, 0 = inline on the shards (default 0)\n"
    "  --framing F           raw | line | length-prefixed (default raw)\n"
    "  --balance B           hash | least-loaded: where new connections go (default hash)\n"
    "  --prefix-bytes N      length-prefixed header size: 1, 2 or 4 (default 4)\n"
    "  --max-frame BYTES     largest line/frame accepted (default 1048576)\n"
    "  --max-connections N   connections served at once (default: fd limit - 64)\n"
    "  --output-cap BYTES    per-connection queued output before closing as slow consumer\n"
    "                        (default 16777216)\n"
    "  --output-total-cap BYTES  queued output over all connections (default 1073741824)\n"
    "  --idle-timeout SEC    close clients silent this long, 0 = never (default 0)\n"
    "  --frame-timeout SEC   close clients that leave a frame unfinished this long,\n"
    "                        0 = never (default 30)\n"
    "  --write-timeout SEC   close clients that stop reading our output this long,\n"
    "                        0 = never (default 30)\n"
    "  --sndbuf BYTES        SO_SNDBUF of accepted sockets (default 0 = kernel autotuning)\n"
    "  --rcvbuf BYTES        SO_RCVBUF of accepted sockets (default 0 = kernel autotuning)\n"
    "  --handoff-poll US     with workers: microseconds a worker / shard keeps polling for\n"
    "                        more work before sleeping, 0 = sleep at once (default 50)\n"
    "  --read-chunk BYTES    per-shard read buffer (default 65536)\n"
    "  --backlog N           listen backlog (default 4096)\n"
    "  --stats-interval SEC  also print stats every SEC seconds (default 0 = only at exit)\n"
    "  -q, --quiet           do not print the listening line\n"
    "  -h, --help            this text\n"
    "Signals: SIGINT/SIGTERM stop gracefully and print stats; SIGUSR1 adds a shard, SIGUSR2\n"
    "retires one (never below 1), SIGHUP rebalances; each prints the per-shard stats after.\n"
    "Exit status: 0 after a clean stop, 2 for a bad flag, 1 if the server cannot start.\n";

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "esockets-echo: %s\n(run esockets-echo --help for the flags)\n", msg.c_str());
  std::exit(2);
}

template <class T>
T parse_number(std::string_view flag, std::string_view v, T lo, T hi) {
  T out{};
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size() || out < lo || out > hi) {
    usage_error(std::string(flag) + " needs a whole number between " + std::to_string(lo) +
                " and " + std::to_string(hi) + ", not '" + std::string(v) + "'");
  }
  return out;
}

std::chrono::milliseconds parse_seconds(std::string_view flag, std::string_view v) {
  std::string text(v);
  char* end = nullptr;
  double secs = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(secs >= 0) || secs > 86400.0 * 365) {
    usage_error(std::string(flag) + " needs a number of seconds >= 0 (fractions allowed), not '" +
                text + "'");
  }
  return std::chrono::milliseconds(static_cast<long long>(secs * 1000.0 + 0.5));
}

class EchoHandler : public esockets::Handler {
 public:
  explicit EchoHandler(bool framed) : framed_(framed) {}
  void on_message_recv(esockets::Connection& conn, esockets::Bytes msg) override {
    if (framed_) {
      conn.send_frame(msg);
    } else {
      conn.send(msg);
    }
  }
  void on_warning(std::string_view msg) override {
    std::fprintf(stderr, "warning: %.*s\n", static_cast<int>(msg.size()), msg.data());
  }

 private:
  bool framed_;
};

}  // namespace

int main(int argc, char** argv) {
  esockets::ServerOptions o;
  bool quiet = false;
  unsigned stats_interval = 0;
  // Flags are parsed by CLI11 (names, values, missing values, unknown flags); each value goes
  // through the checks above so that a bad one names the flag and what it needs. The help text
  // stays kUsage (grouped and explained as before), exit 2 for every bad flag.
  CLI::App app{"esockets-echo"};
  app.set_help_flag();  // -h / --help print kUsage below
  app.allow_windows_style_options(false);
  bool help = false;
  app.add_flag("-h,--help", help);
  app.add_flag("-q,--quiet", quiet);
  auto opt = [&](const char* name, auto apply) {
    app.add_option_function<std::string>(name, [name, apply](const std::string& v) { apply(name, v); })
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  };
  opt("--host", [&](const char*, const std::string& v) { o.host = v; });
  opt("--port", [&](const char* f, const std::string& v) { o.port = parse_number<std::uint16_t>(f, v, 0, 65535); });
  opt("--shards", [&](const char* f, const std::string& v) { o.shards = parse_number<unsigned>(f, v, 1, 255); });
  opt("--workers", [&](const char* f, const std::string& v) { o.workers = parse_number<unsigned>(f, v, 0, 255); });
  opt("--framing", [&](const char*, const std::string& f) {
    if (f == "raw") {
      o.framing = esockets::Framing::raw;
    } else if (f == "line") {
      o.framing = esockets::Framing::line;
    } else if (f == "length-prefixed") {
      o.framing = esockets::Framing::length_prefixed;
    } else {
      usage_error("--framing must be raw, line or length-prefixed, not '" + f + "'");
    }
  });
  opt("--balance", [&](const char*, const std::string& b) {
    if (b == "hash") {
      o.balance = esockets::Balance::hash;
    } else if (b == "least-loaded") {
      o.balance = esockets::Balance::least_loaded;
    } else {
      usage_error("--balance must be hash or least-loaded, not '" + b + "'");
    }
  });
  opt("--prefix-bytes",
      [&](const char* f, const std::string& v) { o.length_prefix_bytes = parse_number<unsigned>(f, v, 1, 4); });
  opt("--max-frame", [&](const char* f, const std::string& v) {
    o.max_frame = parse_number<std::size_t>(f, v, 1, std::size_t{1} << 30);
  });
  opt("--max-connections", [&](const char* f, const std::string& v) {
    o.max_connections = parse_number<std::size_t>(f, v, 1, std::size_t{1} << 24);
  });
  opt("--output-cap", [&](const char* f, const std::string& v) {
    o.output_hard_cap = parse_number<std::size_t>(f, v, 1, (std::size_t{1} << 32) - 1);
    if (o.output_high_watermark > o.output_hard_cap) o.output_high_watermark = o.output_hard_cap;
    if (o.output_low_watermark > o.output_high_watermark) {
      o.output_low_watermark = o.output_high_watermark / 4;
    }
  });
  opt("--output-total-cap", [&](const char* f, const std::string& v) {
    o.output_total_cap = parse_number<std::size_t>(f, v, 1, std::size_t{1} << 40);
  });
  opt("--idle-timeout", [&](const char* f, const std::string& v) { o.idle_timeout = parse_seconds(f, v); });
  opt("--frame-timeout", [&](const char* f, const std::string& v) { o.frame_timeout = parse_seconds(f, v); });
  opt("--write-timeout", [&](const char* f, const std::string& v) { o.write_timeout = parse_seconds(f, v); });
  opt("--sndbuf",
      [&](const char* f, const std::string& v) { o.socket_send_buffer = parse_number<int>(f, v, 0, 1 << 30); });
  opt("--rcvbuf",
      [&](const char* f, const std::string& v) { o.socket_receive_buffer = parse_number<int>(f, v, 0, 1 << 30); });
  opt("--handoff-poll", [&](const char* f, const std::string& v) {
    o.handoff_poll = std::chrono::microseconds(parse_number<unsigned>(f, v, 0, 1000000));
  });
  opt("--read-chunk",
      [&](const char* f, const std::string& v) { o.read_chunk = parse_number<std::size_t>(f, v, 512, 16u << 20); });
  opt("--backlog", [&](const char* f, const std::string& v) { o.backlog = parse_number<int>(f, v, 1, 1 << 20); });
  opt("--stats-interval",
      [&](const char* f, const std::string& v) { stats_interval = parse_number<unsigned>(f, v, 0, 86400); });
  for (int i = 1; i < argc; ++i) {  // help wins over everything else, as before
    if (std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[i], "--help") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ExtrasError& e) {
    const auto extras = app.remaining();
    usage_error("unknown flag '" + (extras.empty() ? std::string(e.what()) : extras.front()) + "'");
  } catch (const CLI::ArgumentMismatch& e) {
    std::string flag = e.what();
    const auto colon = flag.find(':');
    usage_error((colon == std::string::npos ? flag : flag.substr(0, colon)) + " needs a value");
  } catch (const CLI::ParseError& e) {
    usage_error(e.what());
  }
  (void)help;

  if (o.output_total_cap < o.output_hard_cap) o.output_total_cap = o.output_hard_cap;

  // Engine threads inherit this mask: only the main thread takes the stop signals.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  EchoHandler handler(o.framing != esockets::Framing::raw);
  try {
    esockets::Server server(handler, o);
    server.start();
    if (!quiet) {
      std::printf("esockets-echo listening on %s:%u (shards=%u workers=%u framing=%s)\n",
                  o.host.c_str(), server.port(), o.shards, o.workers,
                  o.framing == esockets::Framing::raw    ? "raw"
                  : o.framing == esockets::Framing::line ? "line"
                                                         : "length-prefixed");
      std::fflush(stdout);
    }
    int sig = 0;
    while (true) {
      siginfo_t info;
      if (stats_interval == 0) {
        sig = sigwaitinfo(&set, &info);
      } else {
        timespec ts{static_cast<time_t>(stats_interval), 0};
        sig = sigtimedwait(&set, &info, &ts);
      }
      if (sig == SIGINT || sig == SIGTERM) break;
      if (sig == SIGUSR1 || sig == SIGUSR2 || sig == SIGHUP) {
        const unsigned before = server.shards();
        const auto t0 = std::chrono::steady_clock::now();
        try {
          if (sig == SIGUSR1) {
            server.set_shards(before + 1);
          } else if (sig == SIGUSR2) {
            if (before > 1) server.set_shards(before - 1);
          } else {
            server.rebalance();
          }
        } catch (const std::exception& e) {
          std::fprintf(stderr, "esockets-echo: %s\n", e.what());
        }
        const double ms = std::chrono::duration<double, std::milli>(
                              std::chrono::steady_clock::now() - t0)
                              .count();
        std::printf("esockets-echo: %s: shards %u -> %u in %.1f ms\n",
                    sig == SIGUSR1 ? "SIGUSR1" : sig == SIGUSR2 ? "SIGUSR2" : "SIGHUP", before,
                    server.shards(), ms);
      }
      if (sig > 0 || stats_interval > 0) esockets::tools::print_stats(stdout, server.stats());
    }
    std::printf("esockets-echo: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    std::fflush(stdout);
    server.stop();
    esockets::tools::print_stats(stdout, server.stats());
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "esockets-echo: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "esockets-echo: cannot start: %s\n", e.what());
    return 1;
  }
  return 0;
}

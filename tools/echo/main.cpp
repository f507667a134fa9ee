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
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) usage_error(std::string(a) + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--host") {
      o.host = std::string(value());
    } else if (a == "--port") {
      o.port = parse_number<std::uint16_t>(a, value(), 0, 65535);
    } else if (a == "--shards") {
      o.shards = parse_number<unsigned>(a, value(), 1, 255);
    } else if (a == "--workers") {
      o.workers = parse_number<unsigned>(a, value(), 0, 255);
    } else if (a == "--framing") {
      std::string_view f = value();
      if (f == "raw") {
        o.framing = esockets::Framing::raw;
      } else if (f == "line") {
        o.framing = esockets::Framing::line;
      } else if (f == "length-prefixed") {
        o.framing = esockets::Framing::length_prefixed;
      } else {
        usage_error("--framing must be raw, line or length-prefixed, not '" + std::string(f) + "'");
      }
    } else if (a == "--balance") {
      std::string_view b = value();
      if (b == "hash") {
        o.balance = esockets::Balance::hash;
      } else if (b == "least-loaded") {
        o.balance = esockets::Balance::least_loaded;
      } else {
        usage_error("--balance must be hash or least-loaded, not '" + std::string(b) + "'");
      }
    } else if (a == "--prefix-bytes") {
      o.length_prefix_bytes = parse_number<unsigned>(a, value(), 1, 4);
    } else if (a == "--max-frame") {
      o.max_frame = parse_number<std::size_t>(a, value(), 1, std::size_t{1} << 30);
    } else if (a == "--max-connections") {
      o.max_connections = parse_number<std::size_t>(a, value(), 1, std::size_t{1} << 24);
    } else if (a == "--output-cap") {
      o.output_hard_cap = parse_number<std::size_t>(a, value(), 1, (std::size_t{1} << 32) - 1);
      if (o.output_high_watermark > o.output_hard_cap) o.output_high_watermark = o.output_hard_cap;
      if (o.output_low_watermark > o.output_high_watermark) {
        o.output_low_watermark = o.output_high_watermark / 4;
      }
    } else if (a == "--output-total-cap") {
      o.output_total_cap = parse_number<std::size_t>(a, value(), 1, std::size_t{1} << 40);
    } else if (a == "--idle-timeout") {
      o.idle_timeout = parse_seconds(a, value());
    } else if (a == "--frame-timeout") {
      o.frame_timeout = parse_seconds(a, value());
    } else if (a == "--write-timeout") {
      o.write_timeout = parse_seconds(a, value());
    } else if (a == "--sndbuf") {
      o.socket_send_buffer = parse_number<int>(a, value(), 0, 1 << 30);
    } else if (a == "--rcvbuf") {
      o.socket_receive_buffer = parse_number<int>(a, value(), 0, 1 << 30);
    } else if (a == "--handoff-poll") {
      o.handoff_poll = std::chrono::microseconds(parse_number<unsigned>(a, value(), 0, 1000000));
    } else if (a == "--read-chunk") {
      o.read_chunk = parse_number<std::size_t>(a, value(), 512, 16u << 20);
    } else if (a == "--backlog") {
      o.backlog = parse_number<int>(a, value(), 1, 1 << 20);
    } else if (a == "--stats-interval") {
      stats_interval = parse_number<unsigned>(a, value(), 0, 86400);
    } else if (a == "-q" || a == "--quiet") {
      quiet = true;
    } else {
      usage_error("unknown flag '" + std::string(a) + "'");
    }
  }

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

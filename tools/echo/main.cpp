// esockets-echo: an echo server on the esockets engine.
// Every message comes back to its sender (re-framed with the server's framing). SIGINT or
// SIGTERM stops it gracefully and prints per-shard stats.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>

#include "esockets/esockets.hpp"
#include "server_cli.hpp"
#include "stats_print.hpp"

namespace {

constexpr const char* kUsage =
    "usage: esockets-echo [options]\n"
    "  --host H              numeric address to bind (default 127.0.0.1)\n"
    "  --port P              port (default 0 = ephemeral; the bound port is printed)\n"
    "  --listen ADDR         listen here instead of --host/--port; repeat for several:\n"
    "                        127.0.0.1:9000, [::1]:9000, unix:/path/sock, unix:@name\n"
    "  --proxy-protocol      every listener reads a PROXY v1/v2 header (HAProxy send-proxy)\n"
    "                        before the client's bytes, and reports the client it names\n"
    "  --trusted-proxy CIDR  with --proxy-protocol: a source allowed to send the header;\n"
    "                        repeatable (default 127.0.0.0/8 and ::1)\n"
    "  --admin ADDR          serve GET /metrics (Prometheus/OpenMetrics) and GET /health\n"
    "                        (503 while draining) on ADDR, e.g. 127.0.0.1:9100\n"
    "  --drain SEC           on SIGTERM, first drain for SEC seconds (/health says 503, all\n"
    "                        clients still served), then stop (default 0)\n"
    "  --cpus LIST|auto      pin shards then workers to these CPUs, round-robin (0,1 or auto)\n"
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
  void on_warning(const esockets::Warning& w) override {
    std::fprintf(stderr, "%s [%s]: %.*s\n", esockets::to_string(w.severity),
                 esockets::to_string(w.code), static_cast<int>(w.text.size()), w.text.data());
  }

 private:
  bool framed_;
};

}  // namespace

int main(int argc, char** argv) {
  esockets::ServerOptions o;
  unsigned stats_interval = 0;
  std::chrono::milliseconds drain_for{0};
  // Flags are parsed by CLI11 (names, values, missing values, unknown flags); each value is
  // checked so that a bad one names the flag and what it needs. The help text stays kUsage
  // (grouped and explained), exit 2 for every bad flag.
  esockets::tools::ServerCli cli("esockets-echo", kUsage);
  cli.add_server_flags(o, {.max_shards = 255, .max_connections = true, .min_max_frame = 1});
  cli.option("--framing", [&](const char*, const std::string& f) {
    if (f == "raw") {
      o.framing = esockets::Framing::raw;
    } else if (f == "line") {
      o.framing = esockets::Framing::line;
    } else if (f == "length-prefixed") {
      o.framing = esockets::Framing::length_prefixed;
    } else {
      cli.usage_error("--framing must be raw, line or length-prefixed, not '" + f + "'");
    }
  });
  cli.option("--balance", [&](const char*, const std::string& b) {
    if (b == "hash") {
      o.balance = esockets::Balance::hash;
    } else if (b == "least-loaded") {
      o.balance = esockets::Balance::least_loaded;
    } else {
      cli.usage_error("--balance must be hash or least-loaded, not '" + b + "'");
    }
  });
  cli.option("--prefix-bytes",
      [&](const char* f, const std::string& v) { o.length_prefix_bytes = cli.number<unsigned>(f, v, 1, 4); });
  cli.option("--output-cap", [&](const char* f, const std::string& v) {
    o.output_hard_cap = cli.number<std::size_t>(f, v, 1, (std::size_t{1} << 32) - 1);
    if (o.output_high_watermark > o.output_hard_cap) o.output_high_watermark = o.output_hard_cap;
    if (o.output_low_watermark > o.output_high_watermark) {
      o.output_low_watermark = o.output_high_watermark / 4;
    }
  });
  cli.option("--output-total-cap", [&](const char* f, const std::string& v) {
    o.output_total_cap = cli.number<std::size_t>(f, v, 1, std::size_t{1} << 40);
  });
  cli.option("--idle-timeout", [&](const char* f, const std::string& v) { o.idle_timeout = cli.seconds(f, v); });
  cli.option("--frame-timeout", [&](const char* f, const std::string& v) { o.frame_timeout = cli.seconds(f, v); });
  cli.option("--write-timeout", [&](const char* f, const std::string& v) { o.write_timeout = cli.seconds(f, v); });
  cli.option("--sndbuf",
      [&](const char* f, const std::string& v) { o.socket_send_buffer = cli.number<int>(f, v, 0, 1 << 30); });
  cli.option("--rcvbuf",
      [&](const char* f, const std::string& v) { o.socket_receive_buffer = cli.number<int>(f, v, 0, 1 << 30); });
  cli.option("--handoff-poll", [&](const char* f, const std::string& v) {
    o.handoff_poll = std::chrono::microseconds(cli.number<unsigned>(f, v, 0, 1000000));
  });
  cli.option("--read-chunk",
      [&](const char* f, const std::string& v) { o.read_chunk = cli.number<std::size_t>(f, v, 512, 16u << 20); });
  cli.option("--backlog", [&](const char* f, const std::string& v) { o.backlog = cli.number<int>(f, v, 1, 1 << 20); });
  cli.option("--stats-interval",
      [&](const char* f, const std::string& v) { stats_interval = cli.number<unsigned>(f, v, 0, 86400); });
  cli.option("--drain", [&](const char* f, const std::string& v) { drain_for = cli.seconds(f, v); });
  cli.parse(argc, argv);

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
  return cli.run([&] {
    esockets::Server server(handler, o);
    server.start();
    cli.print_listening(server,
                        "shards=" + std::to_string(o.shards) + " workers=" + std::to_string(o.workers) +
                            " framing=" +
                            (o.framing == esockets::Framing::raw    ? "raw"
                             : o.framing == esockets::Framing::line ? "line"
                                                                    : "length-prefixed"));
    int sig = 0;
    while (true) {
      siginfo_t info;
      if (stats_interval == 0) {
        sig = sigwaitinfo(&set, &info);
      } else {
        timespec ts{static_cast<time_t>(stats_interval), 0};
        sig = sigtimedwait(&set, &info, &ts);
      }
      if (sig == SIGTERM && drain_for.count() > 0 && !server.draining()) {
        // A load balancer polling /health sees 503 and sends new clients elsewhere; everyone
        // connected is served meanwhile. A second SIGTERM or a SIGINT stops at once.
        server.drain();
        std::printf("esockets-echo: SIGTERM, draining for %.1f s\n",
                    static_cast<double>(drain_for.count()) / 1000.0);
        std::fflush(stdout);
        sigset_t stops;
        sigemptyset(&stops);
        sigaddset(&stops, SIGINT);
        sigaddset(&stops, SIGTERM);
        timespec ts{static_cast<time_t>(drain_for.count() / 1000),
                    static_cast<long>(drain_for.count() % 1000) * 1000000L};
        siginfo_t stop_info;
        const int again = sigtimedwait(&stops, &stop_info, &ts);
        sig = again > 0 ? again : SIGTERM;
        break;
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
  });
}

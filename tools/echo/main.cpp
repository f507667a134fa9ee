// esockets-echo: an echo server on the esockets engine.
// Every message comes back to its sender (re-framed with the server's framing). SIGINT or
// SIGTERM stops it gracefully and prints per-shard stats. With --processes N it runs N processes
// under an esockets::Supervisor on the same listeners and prints the totals of all of them.
#include <signal.h>

#include <algorithm>
#include <atomic>
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
    "  --takeover-socket PATH  offer a takeover on this Unix socket: a new process started\n"
    "                        with --take-over PATH gets the listeners and every client, then\n"
    "                        this one prints its stats and exits 0\n"
    "  --take-over PATH      take over from the server offering PATH instead of binding (use\n"
    "                        the same listeners; the first line says how many clients came)\n"
    "                        With --processes N both name N paths, PATH.0 .. PATH.N-1 (one\n"
    "                        per process): a new supervisor takes over the old one's\n"
    "                        processes one at a time, and the old one exits 0 when all went\n"
    "  --drain SEC           on SIGTERM, first drain for SEC seconds (/health says 503, all\n"
    "                        clients still served), then stop (default 0)\n"
    "  --cpus LIST|auto      pin shards then workers to these CPUs, round-robin (0,1 or auto)\n"
    "  --shards N            reactor threads (default 1)\n"
    "  --workers N           handler threads, 0 = inline on the shards (default 0)\n"
    "  --backend B           epoll | io_uring | automatic (default automatic: epoll,\n"
    "                        or $ESOCKETS_BACKEND)\n"
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
    "  --processes N         run N processes (1..256) on the same listeners (SO_REUSEPORT),\n"
    "                        each with --shards shards and its own fd limit; one that dies\n"
    "                        is restarted; SIGTERM drains and stops all; the stats are the\n"
    "                        totals of every process (default: one process, no supervisor)\n"
    "  --stats-interval SEC  also print stats every SEC seconds (default 0 = only at exit)\n"
    "  -q, --quiet           do not print the listening line\n"
    "  -h, --help            this text\n"
    "Signals: SIGINT/SIGTERM stop gracefully and print stats; SIGUSR1 adds a shard, SIGUSR2\n"
    "retires one (never below 1), SIGHUP rebalances; each prints the per-shard stats after\n"
    "(with --processes they are ignored).\n"
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

std::string framing_name(esockets::Framing f) {
  return f == esockets::Framing::raw ? "raw" : f == esockets::Framing::line ? "line" : "length-prefixed";
}

// --processes: the supervisor's side. SIGINT/SIGTERM reach stop() through this pointer.
std::atomic<esockets::Supervisor*> g_supervisor{nullptr};
volatile sig_atomic_t g_stop_signal = 0;
static_assert(std::atomic<esockets::Supervisor*>::is_always_lock_free);

extern "C" void on_supervisor_stop(int sig) {
  g_stop_signal = sig;
  if (esockets::Supervisor* s = g_supervisor.load()) s->stop();  // async-signal-safe
}

int run_processes(esockets::tools::ServerCli& cli, const esockets::ServerOptions& o, unsigned processes,
                  unsigned stats_interval, std::chrono::milliseconds drain_for) {
  esockets::SupervisorOptions so;
  so.processes = processes;
  so.server = o;
  so.drain = drain_for;
  if (so.stop_timeout <= drain_for) so.stop_timeout = drain_for + std::chrono::seconds(30);
  so.handle_signals = false;  // ours below: they also say which signal it was
  so.tick_interval = std::chrono::seconds(stats_interval);
  const std::string detail = "processes=" + std::to_string(processes) + " shards=" +
                             std::to_string(o.shards) + " workers=" + std::to_string(o.workers) +
                             " framing=" + framing_name(o.framing);
  so.on_event = [&](esockets::Supervisor& sup, const esockets::SupervisorEvent& e) {
    using K = esockets::SupervisorEventKind;
    switch (e.kind) {
      case K::all_ready: {
        if (cli.quiet()) break;
        std::string where;
        for (const std::string& a : sup.addresses()) where += (where.empty() ? "" : ", ") + a;
        std::string more = detail;
        if (!sup.admin_address().empty()) more += " admin=" + sup.admin_address();
        std::printf("esockets-echo listening on %s (%s)\n", where.c_str(), more.c_str());
        break;
      }
      case K::ready:  // in an upgrade, each says how many clients it took over
        if (!o.take_over.empty()) std::printf("esockets-echo: %s\n", e.text.c_str());
        break;
      case K::handed_over:
        std::printf("esockets-echo: %s\n", e.text.c_str());
        break;
      case K::exited:
      case K::restarting:
        if (!sup.stats().stopping) std::printf("esockets-echo: %s\n", e.text.c_str());
        break;
      case K::stopping:
        std::printf("esockets-echo: %s, %s\n",
                    g_stop_signal == SIGINT ? "SIGINT" : g_stop_signal == SIGTERM ? "SIGTERM" : "stop",
                    e.text.c_str());
        break;
      case K::tick:
        esockets::tools::print_process_stats(stdout, sup.stats());
        break;
      default:
        break;
    }
    std::fflush(stdout);
  };
  const bool framed = o.framing != esockets::Framing::raw;
  esockets::Supervisor sup(so, [framed](const esockets::ChildContext& ctx) {
    EchoHandler handler(framed);
    esockets::Server server(handler, ctx.options());
    server.start();
    return ctx.serve(server);
  });
  g_supervisor.store(&sup);
  struct sigaction sa {};
  sa.sa_handler = on_supervisor_stop;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  const int status = sup.run();
  g_supervisor.store(nullptr);
  const esockets::SupervisorStats st = sup.stats();
  esockets::tools::print_process_stats(stdout, st);
  const bool handed_over = std::all_of(st.processes.begin(), st.processes.end(),
                                       [](const esockets::ProcessStats& p) { return p.handed_over; });
  std::printf("esockets-echo: %u processes %s, exit status %d\n", processes,
              handed_over ? "handed over to a new supervisor" : "stopped", status);
  std::fflush(stdout);
  return status;
}

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
  unsigned processes = 0;
  cli.option("--processes",
      [&](const char* f, const std::string& v) { processes = cli.number<unsigned>(f, v, 1, 256); });
  cli.parse(argc, argv);

  if (o.output_total_cap < o.output_hard_cap) o.output_total_cap = o.output_hard_cap;

  if (processes > 0) {
    // The supervisor forks before any thread exists; the children block the stop signals
    // themselves. The resize signals would terminate an unprepared process: ignored.
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    int status = 0;
    const int rc = cli.run([&] { status = run_processes(cli, o, processes, stats_interval, drain_for); });
    return rc != 0 ? rc : status;
  }

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
    // With --takeover-socket the server may end by itself (a new process took everything):
    // look every 100 ms.
    const bool offers_takeover = !o.takeover_socket.empty();
    bool handed_over = false;
    using SteadyClock = std::chrono::steady_clock;
    const auto interval = std::chrono::seconds(stats_interval);
    auto next_stats = SteadyClock::now() + interval;
    while (true) {
      siginfo_t info;
      if (stats_interval == 0 && !offers_takeover) {
        sig = sigwaitinfo(&set, &info);
      } else {
        auto wait = stats_interval > 0 ? std::chrono::duration_cast<std::chrono::milliseconds>(
                                             next_stats - SteadyClock::now())
                                       : std::chrono::milliseconds(100);
        if (offers_takeover) wait = std::min(wait, std::chrono::milliseconds(100));
        if (wait.count() < 1) wait = std::chrono::milliseconds(1);
        timespec ts{static_cast<time_t>(wait.count() / 1000), static_cast<long>(wait.count() % 1000) * 1000000L};
        sig = sigtimedwait(&set, &info, &ts);
      }
      if (sig < 0 && offers_takeover && !server.running()) {
        handed_over = true;
        break;
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
      if (sig > 0) {
        esockets::tools::print_stats(stdout, server.stats());
      } else if (stats_interval > 0 && SteadyClock::now() >= next_stats) {
        esockets::tools::print_stats(stdout, server.stats());
        next_stats += interval;
      }
    }
    if (handed_over) {
      server.wait();
      const esockets::Stats st = server.stats();
      std::printf("esockets-echo: took over by a new process: %llu connections handed over in "
                  "%.1f ms, stopping\n",
                  static_cast<unsigned long long>(st.taken_over_out), st.takeover_ms);
      std::fflush(stdout);
      server.stop();
      esockets::tools::print_stats(stdout, st);
      return;
    }
    std::printf("esockets-echo: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    std::fflush(stdout);
    server.stop();
    esockets::tools::print_stats(stdout, server.stats());
  });
}

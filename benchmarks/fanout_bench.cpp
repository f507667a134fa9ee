// fanout_bench: what Server::multicast buys over one Server::send per member, end to end.
//
// A room of --members client connections (default 1,000) sits on a server in this process; a
// publisher sends fixed-size messages and the server fans each one out to every member:
//   multicast  Server::multicast(room, bytes) (--group: Group::send) -- variant A
//   send       one Server::send(id, bytes) per member                   -- variant B, the baseline
// from two kinds of publisher:
//   handler    a publishing client's frames reach on_message_recv, which fans out (inline on the
//              shard thread, or on a worker)
//   thread     a plain std::thread calls the fan-out itself (backpressure: wait_writable, retry)
// for every configuration shards x workers (default 1,2 x 0,2) and payload (default 64, 1024).
// One client thread reads all members and checks that each receives every message once, in
// order (sequence numbers); anything lost, repeated or closed ends the program with status 1.
// The publisher keeps at most --window messages (default 128) not yet delivered to everyone.
// Runs are interleaved (rep -> configuration, rotated -> payload -> publisher -> A,B, the pair's
// order alternating per rep); each figure is the median over --reps. Reported per case:
// deliveries/s (messages x members / time to the last delivery) and the server's CPU per
// delivery (the process's CPU time minus the client threads'), each with its ratio
// multicast / send from the same run.
//
// Memory per queued delivery: in a fresh child process per sample (so memory freed by one
// sample cannot be reused by the next), members that never read (SO_RCVBUF and the server's
// SO_SNDBUF 4 KiB) receive K = max(--mem-messages, 64 KiB / payload) messages; once every
// delivery is accepted and the server's queued output stops growing, (VmRSS after - before) is
// divided by K x members and by the deliveries still queued in user space.
//
// Usage: fanout_bench [--members N] [--payloads 64,1024] [--shards 1,2] [--workers 0,2]
//          [--publishers handler,thread] [--variants multicast,send] [--reps 3]
//          [--duration SEC] [--window MSGS] [--max-messages N] [--mem-messages K]
//          [--mem-payloads 64,1024] [--mem-reps 2] [--mem-shards 1] [--mem-workers 0]
//          [--no-memory] [--no-throughput] [--group] [--json FILE] [--smoke]
// Progress goes to stderr, the tables (markdown) to stdout. Exit 0, 1 on any delivery failure,
// 2 on a bad flag.
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <esockets/esockets.hpp>

#include "fanout_report.hpp"

namespace {

using namespace fanout;  // the benchmark's own helpers (fanout_*.hpp)

// ---------------------------------------------------------------------------- throughput

// One run: publish for `seconds` (at most max_messages), keep `window` messages in flight,
// wait until every member has every message, check it.
Sample run_once(Setup& s, Publisher pub, Variant v, std::size_t payload, double seconds,
                std::uint64_t max_messages, unsigned window) {
  Sample out{s.config().name(), pub, v, payload, 0};
  s.members().set_record(payload);
  s.handler().set_variant(v);
  fanout::Progress& pr = s.members().progress();
  const std::uint64_t n = s.room().size();
  const std::uint64_t d0 = pr.delivered();
  const std::uint64_t base = s.next_seq;
  std::string stall;
  double publisher_cpu = 0;
  const double main0 = fanout::thread_cpu();
  const double reader0 = s.members().reader_cpu();
  const double proc0 = fanout::process_cpu();
  std::thread publisher([&] {
    const double cpu0 = fanout::thread_cpu();
    // handler: a framed message written to the publishing client; thread: the bytes themselves.
    const std::size_t head = pub == Publisher::handler ? 4 : 0;
    std::string msg = pub == Publisher::handler ? fanout::frame(std::string(payload, 'x'))
                                                : std::string(payload, 'x');
    const auto t0 = Clock::now();
    const auto stop_at = t0 + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(seconds));
    std::uint64_t sent = 0;
    while (sent < max_messages && Clock::now() < stop_at) {
      if (sent >= window &&
          !pr.wait_until(d0 + (sent + 1 - window) * n, Clock::now() + std::chrono::seconds(10))) {
        stall = "no delivery progress for 10 s with the window full";
        break;
      }
      stamp(msg, head, base + sent);
      if (pub == Publisher::handler) {
        fanout::write_all(s.publisher_fd(), msg.data(), msg.size());
      } else {
        out.backpressure_retries += publish_from_thread(s, v, msg);
      }
      ++sent;
    }
    if (stall.empty() && !pr.wait_until(d0 + sent * n, Clock::now() + std::chrono::seconds(10))) {
      stall = "not everything was delivered within 10 s of the last publish";
    }
    out.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    out.messages = sent;
    publisher_cpu = fanout::thread_cpu() - cpu0;
  });
  publisher.join();
  const double clients = (s.members().reader_cpu() - reader0) + (fanout::thread_cpu() - main0) +
                         (pub == Publisher::handler ? publisher_cpu : 0.0);
  const double server_cpu = fanout::process_cpu() - proc0 - clients;
  s.next_seq = base + out.messages;
  const std::string where = out.config + " " + name(pub) + " " + name(v) + " " +
                            std::to_string(payload) + " B";
  s.check(where);
  if (!stall.empty()) {
    die(where + ": " + stall + " (" + std::to_string(pr.delivered() - d0) + " of " +
        std::to_string(out.messages * n) + " deliveries)");
  }
  if (out.messages == 0) die(where + ": nothing was published (--duration too short?)");
  const std::size_t short_members = s.members().count_short(s.next_seq);
  if (short_members != 0) {
    die(where + ": " + std::to_string(short_members) + " members did not get every message");
  }
  if (pr.delivered() - d0 != out.messages * n) {
    die(where + ": " + std::to_string(pr.delivered() - d0) + " deliveries, expected " +
        std::to_string(out.messages * n));
  }
  out.deliveries_per_sec = static_cast<double>(out.messages * n) / out.seconds;
  out.server_cpu_ns = server_cpu * 1e9 / static_cast<double>(out.messages * n);
  return out;
}

std::vector<Sample> run_throughput(const Options& o) {
  std::vector<Config> configs;
  for (unsigned sh : o.shards) {
    for (unsigned w : o.workers) configs.push_back(Config{sh, w});
  }
  std::vector<Sample> samples;
  for (unsigned rep = 0; rep < o.reps; ++rep) {
    for (std::size_t k = 0; k < configs.size(); ++k) {
      const Config cfg = configs[(k + rep) % configs.size()];  // rotate the starting config
      Setup s(o, cfg, false);
      // Warm-up (not recorded): allocator, pools, queues and TCP windows of every path.
      for (std::size_t payload : o.payloads) {
        for (Publisher p : o.publishers) {
          for (Variant v : o.variants) {
            (void)run_once(s, p, v, payload, 1.0, std::max(1u, o.window / 4), o.window);
          }
        }
      }
      for (std::size_t payload : o.payloads) {
        for (Publisher p : o.publishers) {
          std::vector<Variant> order = o.variants;
          if (rep % 2 == 1) std::reverse(order.begin(), order.end());  // A,B then B,A
          for (Variant v : order) {
            Sample smp = run_once(s, p, v, payload, o.duration, o.max_messages, o.window);
            smp.rep = rep;
            std::fprintf(stderr,
                         "rep %u  %-10s %-8s %-9s %5zu B  %7llu msgs  %9.0f deliveries/s  "
                         "%6.0f server ns/delivery\n",
                         rep + 1, smp.config.c_str(), name(p), name(v), payload,
                         static_cast<unsigned long long>(smp.messages), smp.deliveries_per_sec,
                         smp.server_cpu_ns);
            samples.push_back(smp);
          }
        }
      }
    }
  }
  return samples;
}

// ---------------------------------------------------------------------------- memory

long vm_rss_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// In the child: members that do not read, K messages, RSS before and after.
MemSample memory_child(const Options& o, Publisher pub, Variant v, std::size_t payload) {
  MemSample m{pub, v, payload, 0};
  // Never torn down: the child _Exits once the numbers are out.
  Setup& s = *new Setup(o, o.mem_config, true);
  s.handler().set_variant(v);
  const std::uint64_t n = s.room().size();
  const esockets::Stats st0 = s.server().stats();
  m.rss_before_kb = vm_rss_kb();
  const std::size_t head = pub == Publisher::handler ? 4 : 0;
  std::string msg = pub == Publisher::handler ? fanout::frame(std::string(payload, 'x'))
                                              : std::string(payload, 'x');
  const std::size_t k_messages = mem_messages_for(o, payload);
  for (std::size_t k = 0; k < k_messages; ++k) {
    stamp(msg, head, k);
    if (pub == Publisher::handler) {
      fanout::write_all(s.publisher_fd(), msg.data(), msg.size());
    } else {
      (void)publish_from_thread(s, v, msg);
    }
  }
  m.deliveries = k_messages * n;
  // Every delivery accepted into a queue (or written), and the queued bytes steady.
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  std::uint64_t last = ~std::uint64_t{0};
  int steady = 0;
  while (steady < 5) {
    if (Clock::now() > deadline) die("memory: queued output did not settle within 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const esockets::Stats st = s.server().stats();
    const bool all_in = st.total.messages_out - st0.total.messages_out >= m.deliveries;
    steady = all_in && st.total.output_bytes == last ? steady + 1 : 0;
    last = st.total.output_bytes;
  }
  m.queued_bytes = last;
  m.rss_after_kb = vm_rss_kb();
  s.check("memory " + std::string(name(pub)) + " " + name(v) + " " + std::to_string(payload) +
          " B");
  return m;
}

// Runs memory_child in a fresh process (this process has no threads yet) and reads its result.
MemSample memory_sample(const Options& o, Publisher pub, Variant v, std::size_t payload) {
  int p[2];
  if (::pipe(p) != 0) die("pipe failed");
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) die("fork failed");
  if (pid == 0) {
    ::close(p[0]);
    MemSample m{};
    try {
      m = memory_child(o, pub, v, payload);
    } catch (const std::exception& e) {
      die(std::string("memory child: ") + e.what());
    }
    const std::string line = std::to_string(m.rss_before_kb) + " " +
                             std::to_string(m.rss_after_kb) + " " +
                             std::to_string(m.deliveries) + " " + std::to_string(m.queued_bytes);
    if (::write(p[1], line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      std::_Exit(1);
    }
    std::_Exit(0);  // the server and 1,000 queues need no orderly teardown
  }
  ::close(p[1]);
  std::string text;
  const auto deadline = Clock::now() + std::chrono::seconds(90);
  char buf[256];
  for (;;) {
    pollfd pf{p[0], POLLIN, 0};
    const int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0 || ::poll(&pf, 1, left) <= 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      die("memory child did not finish within 90 s");
    }
    const ssize_t r = ::read(p[0], buf, sizeof buf);
    if (r <= 0) break;
    text.append(buf, static_cast<std::size_t>(r));
  }
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("memory child failed");
  MemSample m{pub, v, payload, 0};
  std::istringstream in(text);
  unsigned long long deliveries = 0, queued = 0;
  in >> m.rss_before_kb >> m.rss_after_kb >> deliveries >> queued;
  m.deliveries = deliveries;
  m.queued_bytes = queued;
  if (!in || m.deliveries == 0) die("memory child wrote no result");
  return m;
}

std::vector<MemSample> run_memory(const Options& o) {
  std::vector<MemSample> out;
  for (unsigned rep = 0; rep < o.mem_reps; ++rep) {
    for (std::size_t payload : o.mem_payloads) {
      for (Publisher p : o.publishers) {
        std::vector<Variant> order = o.variants;
        if (rep % 2 == 1) std::reverse(order.begin(), order.end());
        for (Variant v : order) {
          MemSample m = memory_sample(o, p, v, payload);
          m.rep = rep;
          std::fprintf(stderr,
                       "memory rep %u  %-8s %-9s %5zu B  RSS +%ld kB  %.0f B/delivery  "
                       "%.0f B/queued delivery\n",
                       rep + 1, name(p), name(v), payload, m.rss_after_kb - m.rss_before_kb,
                       m.per_delivery(), m.per_queued());
          out.push_back(m);
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------- options

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: fanout_bench [--members N] [--payloads 64,1024] [--shards 1,2]\n"
               "  [--workers 0,2] [--publishers handler,thread] [--variants multicast,send]\n"
               "  [--reps 3] [--duration SEC] [--window MSGS] [--max-messages N]\n"
               "  [--mem-messages K] [--mem-payloads 64,1024] [--mem-reps 2] [--mem-shards 1]\n"
               "  [--mem-workers 0] [--no-memory] [--no-throughput] [--group] [--json FILE]\n"
               "  [--smoke]\n");
  std::exit(code);
}

template <class T>
std::vector<T> parse_list(const std::string& s) {
  std::vector<T> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0') usage(2);
    out.push_back(static_cast<T>(v));
  }
  if (out.empty()) usage(2);
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    if (a == "--members") {
      o.members = parse_list<std::size_t>(val()).at(0);
    } else if (a == "--payloads") {
      o.payloads = parse_list<std::size_t>(val());
    } else if (a == "--shards") {
      o.shards = parse_list<unsigned>(val());
    } else if (a == "--workers") {
      o.workers = parse_list<unsigned>(val());
    } else if (a == "--publishers") {
      o.publishers.clear();
      std::stringstream in(val());
      std::string item;
      while (std::getline(in, item, ',')) {
        if (item == "handler") {
          o.publishers.push_back(Publisher::handler);
        } else if (item == "thread") {
          o.publishers.push_back(Publisher::thread);
        } else {
          usage(2);
        }
      }
    } else if (a == "--variants") {
      o.variants.clear();
      std::stringstream in(val());
      std::string item;
      while (std::getline(in, item, ',')) {
        if (item == "multicast") {
          o.variants.push_back(Variant::multicast);
        } else if (item == "send") {
          o.variants.push_back(Variant::send);
        } else {
          usage(2);
        }
      }
    } else if (a == "--reps") {
      o.reps = parse_list<unsigned>(val()).at(0);
    } else if (a == "--duration") {
      o.duration = std::strtod(val().c_str(), nullptr);
    } else if (a == "--window") {
      o.window = parse_list<unsigned>(val()).at(0);
    } else if (a == "--max-messages") {
      o.max_messages = parse_list<std::uint64_t>(val()).at(0);
    } else if (a == "--mem-messages") {
      o.mem_messages = parse_list<std::size_t>(val()).at(0);
    } else if (a == "--mem-payloads") {
      o.mem_payloads = parse_list<std::size_t>(val());
    } else if (a == "--mem-reps") {
      o.mem_reps = parse_list<unsigned>(val()).at(0);
    } else if (a == "--mem-shards") {
      o.mem_config.shards = parse_list<unsigned>(val()).at(0);
    } else if (a == "--mem-workers") {
      o.mem_config.workers = parse_list<unsigned>(val()).at(0);
    } else if (a == "--no-memory") {
      o.memory = false;
    } else if (a == "--no-throughput") {
      o.throughput = false;
    } else if (a == "--group") {
      o.group = true;
    } else if (a == "--json") {
      o.json = val();
    } else if (a == "--smoke") {
      o.members = 20;
      o.reps = 1;
      o.duration = 0.05;
      o.mem_messages = 10;
      o.mem_reps = 1;
    } else if (a == "--help" || a == "-h") {
      usage(0);
    } else {
      std::fprintf(stderr, "fanout_bench: unknown flag %s\n", a.c_str());
      usage(2);
    }
  }
  if (o.publishers.empty() || o.variants.empty()) usage(2);
  if (o.members == 0 || o.reps == 0 || o.window == 0 || !(o.duration > 0 && o.duration <= 60) ||
      o.max_messages == 0 || o.mem_messages == 0 || o.mem_reps == 0) {
    usage(2);
  }
  for (std::size_t p : o.payloads) {
    if (p < 16 || p > 65536) usage(2);
  }
  for (std::size_t p : o.mem_payloads) {
    if (p < 16 || p > 65536) usage(2);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  // Members and their server-side connections live in this process: two fds per member.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * o.members + 128) {
    die("needs " + std::to_string(2 * o.members + 128) + " file descriptors; ulimit -n is " +
        std::to_string(rl.rlim_cur));
  }
  try {
    // Memory first: its samples run in forked children, which is simplest while this process
    // has no threads.
    std::vector<MemSample> ms;
    if (o.memory) ms = run_memory(o);
    std::vector<Sample> samples;
    if (o.throughput) samples = run_throughput(o);
    const std::vector<Row> rows = summarize(o, samples);
    const std::vector<MemRow> mem = summarize_memory(o, ms);
    print_tables(o, rows, mem);
    if (!o.json.empty()) write_json(o, samples, rows, ms, mem);
  } catch (const std::exception& e) {
    die(e.what());
  }
  return 0;
}

// esockets-redis: a Redis-protocol (RESP2) server on the esockets engine.
// Strings with TTLs, pub/sub and the server commands redis-cli and redis-benchmark use; see
// benchmarks/protocols/README_redis.md for the design and the numbers against redis-server.
#include <signal.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "commands.hpp"
#include "esockets/esockets.hpp"
#include "redis_handler.hpp"

namespace {

constexpr const char* kUsage =
    "usage: esockets-redis [options]\n"
    "A Redis-protocol server (RESP2 and inline commands): PING ECHO SET GET DEL EXISTS INCR\n"
    "DECR INCRBY DECRBY MGET MSET EXPIRE PEXPIRE TTL PTTL PERSIST DBSIZE FLUSHALL INFO\n"
    "PUBLISH SUBSCRIBE UNSUBSCRIBE SELECT QUIT CONFIG GET COMMAND. One in-memory database.\n"
    "Options:\n"
    "  --host H              numeric address to bind (default 127.0.0.1)\n"
    "  --port P              port (default 6379; 0 = ephemeral, the bound port is printed)\n"
    "  --shards N            reactor threads (default 1)\n"
    "  --workers N           handler threads, 0 = inline on the shards (default 0)\n"
    "  --max-connections N   connections served at once (default: fd limit - 64)\n"
    "  --max-frame BYTES     largest request and bulk string (default 67108864 = 64 MB;\n"
    "                        redis's proto-max-bulk-len is 512 MB)\n"
    "  -q, --quiet           do not print the listening line\n"
    "  -h, --help            this text\n"
    "SIGINT/SIGTERM stop gracefully. Exit status: 0 after a clean stop, 2 for a bad flag, 1 if\n"
    "the server cannot start.\n";

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "esockets-redis: %s\n(run esockets-redis --help for the flags)\n",
               msg.c_str());
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

}  // namespace

int main(int argc, char** argv) {
  using namespace esockets;
  ServerOptions o;
  o.port = 6379;
  o.max_frame = std::size_t{64} << 20;
  std::size_t stripes = 256;
  bool quiet = false;
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
      o.shards = parse_number<unsigned>(a, value(), 1, 254);
    } else if (a == "--workers") {
      o.workers = parse_number<unsigned>(a, value(), 0, 255);
    } else if (a == "--max-connections") {
      o.max_connections = parse_number<std::size_t>(a, value(), 1, std::size_t{1} << 24);
    } else if (a == "--max-frame") {
      o.max_frame = parse_number<std::size_t>(a, value(), 1024, std::size_t{1} << 30);
    } else if (a == "--stripes") {  // hidden: keyspace lock stripes, for the benchmark
      stripes = parse_number<std::size_t>(a, value(), 1, 65536);
    } else if (a == "-q" || a == "--quiet") {
      quiet = true;
    } else {
      usage_error("unknown flag '" + std::string(a) + "'");
    }
  }

  redis::RespLimits limits;
  limits.max_request = o.max_frame;
  o.framing = Framing::custom;
  o.decoder = std::make_shared<redis::RespDecoder>(limits);
  // A GET may return a whole max-size value (and MGET several): the output cap follows.
  o.output_hard_cap = std::max<std::size_t>(o.output_hard_cap, 2 * o.max_frame + (1u << 20));
  if (o.output_total_cap < o.output_hard_cap) o.output_total_cap = o.output_hard_cap;

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // engine threads inherit it

  redis::Keyspace keys(stripes);
  redis::PubSub pubsub;
  redis::Context ctx{keys, pubsub, limits, o.host, o.workers};
  redis::RedisHandler handler(ctx);
  try {
    Server server(handler, o);
    // Active expiry: every handler thread ticks every 100 ms; the first to see a sweep due
    // takes it, so one sweep runs per 100 ms whatever the thread count.
    std::atomic<std::int64_t> next_sweep{0};
    const std::size_t per_stripe = std::max<std::size_t>(20, 20000 / keys.stripes());
    server.tick_every(std::chrono::milliseconds(100), [&keys, &next_sweep, per_stripe] {
      const std::int64_t now = redis::Keyspace::now_ms();
      std::int64_t due = next_sweep.load(std::memory_order_relaxed);
      if (now < due) return;
      if (!next_sweep.compare_exchange_strong(due, now + 100, std::memory_order_relaxed)) return;
      keys.sweep(now, per_stripe);
    });
    server.start();
    if (!quiet) {
      std::printf("esockets-redis listening on %s:%u (shards %u, workers %u)\n", o.host.c_str(),
                  server.port(), o.shards, o.workers);
      std::fflush(stdout);
    }
    int sig = 0;
    while (sig != SIGINT && sig != SIGTERM) {
      siginfo_t info;
      sig = sigwaitinfo(&set, &info);
    }
    server.stop();
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "esockets-redis: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "esockets-redis: cannot start: %s\n", e.what());
    return 1;
  }
  return 0;
}

// esockets-redis: a Redis-protocol (RESP2) server on the esockets engine.
// Strings with TTLs, pub/sub and the server commands redis-cli and redis-benchmark use; see
// benchmarks/protocols/README_redis.md for the design and the numbers against redis-server.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "commands.hpp"
#include "esockets/esockets.hpp"
#include "redis_handler.hpp"
#include "server_cli.hpp"

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
    "  --backend B           epoll | io_uring | automatic (default automatic: epoll,\n"
    "                        or $ESOCKETS_BACKEND)\n"
    "  --max-connections N   connections served at once (default: fd limit - 64)\n"
    "  --max-frame BYTES     largest request and bulk string (default 67108864 = 64 MB;\n"
    "                        redis's proto-max-bulk-len is 512 MB)\n"
    "  --takeover-socket PATH  offer a takeover on this Unix socket: a new process started\n"
    "                        with --take-over PATH gets the listeners and every client (with\n"
    "                        its SUBSCRIBEd channels); this one then exits 0\n"
    "  --take-over PATH      take over from the server offering PATH instead of binding\n"
    "  -q, --quiet           do not print the listening line\n"
    "  -h, --help            this text\n"
    "SIGINT/SIGTERM stop gracefully. Exit status: 0 after a clean stop, 2 for a bad flag, 1 if\n"
    "the server cannot start.\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace esockets;
  ServerOptions o;
  o.port = 6379;
  o.max_frame = std::size_t{64} << 20;
  std::size_t stripes = 256;
  tools::ServerCli cli("esockets-redis", kUsage);
  cli.add_server_flags(o, {.min_max_frame = 1024});
  cli.option("--stripes", [&](const char* f, const std::string& v) {  // hidden: keyspace lock
    stripes = cli.number<std::size_t>(f, v, 1, 65536);                // stripes, for the benchmark
  });
  cli.parse(argc, argv);

  redis::RespLimits limits;
  limits.max_request = o.max_frame;
  o.framing = Framing::custom;
  o.decoder = std::make_shared<redis::RespDecoder>(limits);
  // A GET may return a whole max-size value (and MGET several): the output cap follows.
  o.output_hard_cap = std::max<std::size_t>(o.output_hard_cap, 2 * o.max_frame + (1u << 20));
  if (o.output_total_cap < o.output_hard_cap) o.output_total_cap = o.output_hard_cap;

  tools::StopSignals stop;  // engine threads inherit a mask without SIGINT/SIGTERM
  redis::Keyspace keys(stripes);
  redis::PubSub pubsub;
  redis::Context ctx{keys, pubsub, limits, o.host, o.workers};
  redis::RedisHandler handler(ctx);
  return cli.run([&] {
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
    cli.print_listening(server,
                        "shards " + std::to_string(o.shards) + ", workers " + std::to_string(o.workers));
    stop.arm(server);
    server.wait();
    stop.disarm();
  });
}

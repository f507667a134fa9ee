// esockets — counters a running Server reports.
// Thread: plain values; Server::stats() may be called from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "esockets/listener.hpp"
#include "esockets/types.hpp"
#include "esockets/warning.hpp"

namespace esockets {

/// Counters of one shard (or their sum). Monotonic except the gauges marked so.
struct ShardStats {
  std::uint64_t connections = 0;         ///< gauge: connections open now
  std::uint64_t accepts = 0;             ///< connections accepted (including refused ones)
  std::uint64_t refused = 0;             ///< closed at once: over max_connections or refused
  std::uint64_t accept_errors = 0;       ///< accept() failures (EMFILE, ENFILE, ENOBUFS, ...)
  std::uint64_t bytes_in = 0;            ///< bytes read from clients
  std::uint64_t bytes_out = 0;           ///< bytes written to clients
  std::uint64_t messages_in = 0;         ///< frames delivered to on_message_recv
  std::uint64_t messages_out = 0;        ///< sends accepted into output queues
  std::uint64_t worker_queue_depth = 0;  ///< gauge: events waiting in this shard's worker queues
  std::uint64_t paused = 0;              ///< gauge: connections not being read (user or flow control)
  std::uint64_t output_bytes = 0;        ///< gauge: bytes queued for sending
  std::uint64_t warnings = 0;            ///< warnings raised (including rate-limited ones)
  std::uint64_t events_per_sec = 0;      ///< gauge: epoll events handled in the last second
  double busy_ratio = 0;                 ///< gauge: share of the last second not in epoll_wait
  /// Times another thread had to wake this shard from epoll_wait (an eventfd write). In the
  /// total: those plus the wake-ups of sleeping workers (futex); ServerOptions::handoff_poll
  /// trades CPU for fewer of them.
  std::uint64_t wakeups = 0;
  /// Calls into this shard refused with SendStatus::backpressure (a full command queue).
  std::uint64_t send_backpressure = 0;
  /// Gauge: commands this shard's handlers sent to other shards that wait for room in the
  /// target's queue (inline mode); the clients producing them are paused while it is high.
  std::uint64_t overflow = 0;
  unsigned shard = 0;                    ///< the shard's index (ids of its connections carry it)
  int cpu = -1;  ///< the CPU the shard's thread is pinned to (ServerOptions::cpu_affinity), or -1
  std::array<std::uint64_t, kCloseReasonCount> closes{};  ///< indexed by CloseReason
  /// Warnings raised, indexed by WarningCode (rate-limited ones included).
  std::array<std::uint64_t, kWarningCodeCount> warnings_by_code{};

  /// closes[r]: connections that ended for reason `r`.
  std::uint64_t closes_by(CloseReason r) const { return closes[static_cast<std::size_t>(r)]; }
  /// warnings_by_code[c]: warnings raised with code `c`.
  std::uint64_t warnings_of(WarningCode c) const {
    return warnings_by_code[static_cast<std::size_t>(c)];
  }
};

/// A distribution of durations in power-of-two buckets of microseconds: counts[i] holds the
/// observations of at most 2^i us (and more than 2^(i-1) us), the last bucket everything
/// longer than the largest bound (about 0.5 s).
struct DurationHistogram {
  static constexpr std::size_t kBounds = 20;  ///< finite bounds: 1 us, 2 us, ..., 2^19 us
  std::array<std::uint64_t, kBounds + 1> counts{};  ///< per bucket (not cumulative)
  std::uint64_t count = 0;                           ///< observations
  std::uint64_t sum_ns = 0;                          ///< their total, in nanoseconds
  /// Upper bound of bucket i in seconds (i < kBounds).
  static constexpr double bound_seconds(std::size_t i) {
    return static_cast<double>(std::uint64_t{1} << i) * 1e-6;
  }
};

/// Counters of one listener.
struct ListenerStats {
  std::string address;           ///< as bound (ListenerInfo::address)
  std::uint64_t connections = 0; ///< gauge: connections of this listener open now
  std::uint64_t accepts = 0;     ///< connections accepted (including refused ones)
  std::uint64_t refused = 0;     ///< refused by admission (server or listener max_connections)
  std::uint64_t proxy_errors = 0;    ///< closed for a missing, malformed or untrusted PROXY header
  std::uint64_t proxy_timeouts = 0;  ///< closed for a PROXY header that came too late
};

/// How uneven the shards are: max over mean of each gauge (1.0 = perfectly even).
struct Imbalance {
  double connections = 1.0;     ///< of ShardStats::connections
  double accepts = 1.0;         ///< of ShardStats::accepts
  double events_per_sec = 1.0;  ///< of ShardStats::events_per_sec
  double busy_ratio = 1.0;      ///< of ShardStats::busy_ratio
};

/// A snapshot of every live shard and their total.
struct Stats {
  std::vector<ShardStats> shards;  ///< one entry per live shard, in index order
  ShardStats total;                ///< sums over the shards (busy_ratio: the live shards' mean)
  Imbalance imbalance;             ///< how uneven the shards are
  std::vector<ListenerStats> listeners;  ///< one per listener, in ServerOptions::listeners order
  /// Time spent in handler callbacks (on_client_connect, on_message_recv, ...), on every
  /// handler thread (shards inline, workers otherwise). A sample: one callback in 8 is timed.
  DurationHistogram handler_time;
  /// With workers: how long events waited between the shard reading them and a worker taking
  /// them (hand-off latency). A sample: one event in 8 is timed.
  DurationHistogram handoff_wait;
  std::uint64_t resizes = 0;       ///< set_shards() calls that changed the shard count
  Backend backend = Backend::epoll;  ///< the shards' kernel interface (never automatic)
  std::vector<int> worker_cpus;    ///< per worker: the CPU it is pinned to, or -1
  bool draining = false;           ///< Server::drain() or stop() began (health reports 503)
  /// Takeover (ServerOptions::takeover_socket / take_over): connections handed to a new
  /// process, connections received from an old one, and how long the last transfer took
  /// (first listener sent or received to the last connection acknowledged), in milliseconds.
  std::uint64_t taken_over_out = 0;
  std::uint64_t taken_over_in = 0;  ///< see taken_over_out
  double takeover_ms = 0;           ///< see taken_over_out
};

}  // namespace esockets

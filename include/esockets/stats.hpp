// esockets — counters a running Server reports.
// Thread: plain values; Server::stats() may be called from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "esockets/types.hpp"

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
  std::array<std::uint64_t, kCloseReasonCount> closes{};  ///< indexed by CloseReason

  /// closes[r]: connections that ended for reason `r`.
  std::uint64_t closes_by(CloseReason r) const { return closes[static_cast<std::size_t>(r)]; }
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
};

}  // namespace esockets

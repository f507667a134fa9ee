// ShardCounters: a shard's counters. Written by the owner shard only (plain load+store on
// relaxed atomics, no RMW on the hot path), read by any thread for Server::stats().
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>

#include "esockets/stats.hpp"

namespace esockets::detail {

class Counter {
 public:
  void add(std::uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  void sub(std::uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed); }
  void set(std::uint64_t n) { v_.store(n, std::memory_order_relaxed); }
  std::uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

// A DurationHistogram kept by one thread (relaxed load+store), read by any for stats().
class HistogramCounters {
 public:
  static constexpr unsigned kSampleMask = 7;  // one observation in 8 is timed

  void record(std::uint64_t ns) {
    const std::uint64_t us = (ns + 999) / 1000;  // bucket i: at most 2^i us
    std::size_t b = us <= 1 ? 0 : static_cast<std::size_t>(std::bit_width(us - 1));
    if (b > DurationHistogram::kBounds) b = DurationHistogram::kBounds;
    buckets_[b].add();
    count_.add();
    sum_ns_.add(ns);
  }
  void add_to(DurationHistogram& h) const {
    for (std::size_t i = 0; i <= DurationHistogram::kBounds; ++i) h.counts[i] += buckets_[i].get();
    h.count += count_.get();
    h.sum_ns += sum_ns_.get();
  }

 private:
  Counter buckets_[DurationHistogram::kBounds + 1];
  Counter count_, sum_ns_;
};

struct ShardCounters {
  Counter connections, accepts, refused, accept_errors, bytes_in, bytes_out, messages_in,
      messages_out, paused, output_bytes, warnings;
  Counter overflow;  // gauge: commands for other shards waiting in the shard's Outgoing
  // Sends refused for a full inbox; written by the refused senders (any thread): a true RMW.
  std::atomic<std::uint64_t> send_backpressure{0};
  Counter closes[kCloseReasonCount];
  Counter warnings_by[kWarningCodeCount];
  Counter busy_permille;   // share of the last second not spent in epoll_wait, 0..1000
  Counter events_per_sec;  // epoll events handled in the last second
  Counter events_pushed;   // events put into worker queues (shard)
  Counter outbox_backlog;  // events waiting for room in a worker queue (shard)
  // Written by every worker that drains this shard's queues, so a true RMW atomic.
  std::atomic<std::uint64_t> events_popped{0};

  ShardStats snapshot() const {
    ShardStats s;
    s.connections = connections.get();
    s.accepts = accepts.get();
    s.refused = refused.get();
    s.accept_errors = accept_errors.get();
    s.bytes_in = bytes_in.get();
    s.bytes_out = bytes_out.get();
    s.messages_in = messages_in.get();
    s.messages_out = messages_out.get();
    s.paused = paused.get();
    s.output_bytes = output_bytes.get();
    s.warnings = warnings.get();
    s.overflow = overflow.get();
    s.send_backpressure = send_backpressure.load(std::memory_order_relaxed);
    s.events_per_sec = events_per_sec.get();
    s.busy_ratio = static_cast<double>(busy_permille.get()) / 1000.0;
    std::uint64_t pushed = events_pushed.get();
    std::uint64_t popped = events_popped.load(std::memory_order_relaxed);
    s.worker_queue_depth = (pushed > popped ? pushed - popped : 0) + outbox_backlog.get();
    for (std::size_t i = 0; i < kCloseReasonCount; ++i) s.closes[i] = closes[i].get();
    for (std::size_t i = 0; i < kWarningCodeCount; ++i) s.warnings_by_code[i] = warnings_by[i].get();
    return s;
  }
};

}  // namespace esockets::detail

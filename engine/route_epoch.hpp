// RouteEpoch: lets a shard hand a connection to another shard without losing the order of
// commands that other threads are sending to it at that moment.
// Thread: enter/exit on any thread that resolves a connection's owner and pushes a command to
// it; flip/quiet on the single thread moving connections (moves are serialised).
//
// A sender resolves the owner and pushes inside enter()/exit(). A mover first points the
// connections at their new shard, then flips the epoch and waits until the old epoch's count
// is zero: from then on every sender that saw the old owner has finished its push, so the old
// shard can drain its queues, apply those commands, and only then hand the connections over.
// Senders that enter later see the new owner. (A sender re-checks the epoch after counting
// itself in, so one delayed between the two steps cannot slip past a flip.) All operations are
// seq_cst RMWs/loads on the atomics themselves, which TSan understands.
#pragma once

#include <atomic>
#include <cstdint>

namespace esockets::detail {

class RouteEpoch {
 public:
  unsigned enter() {
    for (;;) {
      const unsigned e = epoch_.load(std::memory_order_seq_cst);
      inflight_[e].v.fetch_add(1, std::memory_order_seq_cst);
      if (epoch_.load(std::memory_order_seq_cst) == e) return e;
      inflight_[e].v.fetch_sub(1, std::memory_order_release);
    }
  }
  void exit(unsigned e) { inflight_[e].v.fetch_sub(1, std::memory_order_release); }

  /// Mover: start a new epoch; returns the old one to wait on with quiet().
  unsigned flip() {
    const unsigned old = epoch_.load(std::memory_order_seq_cst);
    epoch_.store(old ^ 1u, std::memory_order_seq_cst);
    return old;
  }
  /// Mover: true once every sender of epoch `old` has left.
  bool quiet(unsigned old) const { return inflight_[old].v.load(std::memory_order_seq_cst) == 0; }

 private:
  struct alignas(64) Counter {
    std::atomic<std::uint64_t> v{0};
  };
  std::atomic<unsigned> epoch_{0};
  Counter inflight_[2];
};

}  // namespace esockets::detail

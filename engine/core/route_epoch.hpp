// RouteEpoch: lets a shard hand a connection to another shard without losing the order of
// commands that other threads are sending to it at that moment.
// Thread: enter/exit on any thread that resolves a connection's owner and pushes a command to
// it; try_flip/quiet/done by movers (shards handing connections over, shards sealing their
// queues before they exit), one switch at a time.
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

  /// Mover: start a new epoch, unless another mover's switch is still in progress (then try
  /// again later). On true, *old is the epoch to wait on with quiet(); call done() after.
  /// Movers are serialised because two buckets can only tell "before my switch" from "after"
  /// when one switch completes before the next begins: with two shards moving at once, a
  /// sender counted in the epoch between their flips would be waited for by neither.
  bool try_flip(unsigned* old) {
    bool expected = false;
    if (!busy_.compare_exchange_strong(expected, true, std::memory_order_seq_cst)) return false;
    *old = epoch_.fetch_xor(1u, std::memory_order_seq_cst);
    return true;
  }
  /// Mover: true once every sender of epoch `old` has left.
  bool quiet(unsigned old) const { return inflight_[old].v.load(std::memory_order_seq_cst) == 0; }
  /// Mover: the switch is complete (quiet() held); the next mover may flip.
  void done() { busy_.store(false, std::memory_order_seq_cst); }

 private:
  struct alignas(64) Counter {
    std::atomic<std::uint64_t> v{0};
  };
  std::atomic<unsigned> epoch_{0};
  std::atomic<bool> busy_{false};
  Counter inflight_[2];
};

}  // namespace esockets::detail

// Outgoing: the commands one engine thread (a worker, or a shard's inline handlers) sends to
// connections hosted by shards, in call order, pushed in batches.
// Thread: owned by that one thread.
//
// The target shard of each command is resolved when it is pushed, inside the RouteEpoch, not
// when it was queued: a connection handed to another shard while its commands wait here is
// reached on its new shard, and the hand-over waits for pushes that resolved the old one. A
// command that does not fit stops the flush (nothing after it overtakes it), so per-connection
// order holds whatever the queues do. A multicast is split by shard at push time; the ids whose
// shard was full stay at the head.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "mailbox/mailbox.hpp"

namespace esockets::detail {

class ServerCore;
class Shard;

class Outgoing {
 public:
  Outgoing() = default;
  ~Outgoing();
  Outgoing(const Outgoing&) = delete;
  Outgoing& operator=(const Outgoing&) = delete;

  void push(const Command& c) {
    items_.push_back(c);
    ++pushed_;
  }
  /// Commands ever queued; flushed_through(n) is true once the first n have left.
  std::uint64_t pushed_count() const { return pushed_; }
  bool flushed_through(std::uint64_t n) const { return pushed_ - size() >= n; }
  std::size_t size() const { return items_.size() - head_; }
  bool empty() const { return head_ == items_.size(); }

  /// Pushes in order with push(Shard&, const Command&) -> bool until one does not fit;
  /// commands for connections (or shards) that are gone are disposed. Wakes every shard it
  /// pushed to. Returns true when nothing is left.
  template <class Push>
  bool flush(ServerCore& core, Push&& push_fn);

  /// Disposes of everything (the thread is leaving and nobody can take it).
  void clear();

 private:
  using PushFn = bool (*)(void*, Shard&, const Command&);
  bool push_multicast(ServerCore& core, MulticastBatch* b, std::uint64_t* touched, PushFn put,
                      void* ctx);
  bool flush_erased(ServerCore& core, PushFn put, void* ctx);

  std::vector<Command> items_;
  std::size_t head_ = 0;
  std::uint64_t pushed_ = 0;
  std::vector<std::uint64_t> by_shard_[256];  // scratch for splitting a multicast
};

template <class Push>
bool Outgoing::flush(ServerCore& core, Push&& push_fn) {
  if (empty()) return true;
  using Fn = std::remove_reference_t<Push>;
  return flush_erased(
      core, [](void* ctx, Shard& s, const Command& c) { return (*static_cast<Fn*>(ctx))(s, c); },
      &push_fn);
}

}  // namespace esockets::detail

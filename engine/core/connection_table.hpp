// ConnectionTable: the server's fd -> connection map with generations, shared by all shards.
// Thread: generation, birth, owner and host are atomics any thread may read without a lock;
// a slot's Conn* is dereferenced only by its host shard. Slots live in chunks allocated on
// demand and never moved, so a reader never sees a reallocation.
//
// An fd is unique in the process, so one table serves every shard: a slot belongs to the shard
// that accepted the fd (birth, recorded in the id), is routed to `owner` (where commands go) and
// held by `host` (the shard thread that has the Conn). A connection handed to another shard
// keeps its slot and generation, so ids held by users keep reaching it. The generation is odd
// while a live connection holds the slot and even otherwise; an id carries the odd value it was
// born with, so any use after the connection ended is detected.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "esockets/types.hpp"

namespace esockets::detail {

struct Conn;

class ConnectionTable {
 public:
  static constexpr std::uint32_t kChunkBits = 12;
  static constexpr std::uint32_t kChunkSize = 1u << kChunkBits;
  static constexpr std::uint32_t kNoShard = 0xff;
  static constexpr std::uint32_t kInTransit = 0xfe;  // host while handed between shards

  explicit ConnectionTable(std::size_t capacity);
  ~ConnectionTable();
  ConnectionTable(const ConnectionTable&) = delete;
  ConnectionTable& operator=(const ConnectionTable&) = delete;

  std::size_t capacity() const { return capacity_; }

  /// Host: the live connection named by id if `host` holds it, else nullptr.
  Conn* find(ConnectionId id, std::uint32_t host) const;
  /// Host: whatever `host` holds in the slot (live or lingering), or nullptr.
  Conn* at(std::uint32_t slot, std::uint32_t host) const;
  /// Accepting shard: claims a free slot; birth = owner = host = shard. Returns the new id.
  ConnectionId open(std::uint32_t shard, std::uint32_t slot, Conn* conn);
  /// Host: ends the identity (ids become stale) but keeps the Conn (lingering close).
  void retire(std::uint32_t slot);
  /// Host: empties the slot (the fd was closed).
  void clear(std::uint32_t slot);
  /// Host: commands for this slot go to `shard` from now on (hand-over, step 1).
  void set_owner(std::uint32_t slot, std::uint32_t shard);
  /// New host: it holds the Conn from now on (hand-over, last step).
  void set_host(std::uint32_t slot, std::uint32_t shard);

  /// Any thread: true if id names a live connection right now.
  bool live(ConnectionId id) const;
  /// Any thread: the shard commands for this slot go to (kNoShard if none).
  std::uint32_t owner(std::uint32_t slot) const;
  /// Any engine thread: where a command it queued for this slot goes. The owner; but while a
  /// live connection is handed to another process (owner none, see shard_takeover.cpp), its
  /// host, which applies what its own handlers sent until it saved the connection's state.
  std::uint32_t engine_route(std::uint32_t slot) const;
  /// Any thread: calls fn(id) for every live slot (weakly consistent).
  template <class Fn>
  void for_each_live(Fn&& fn) const;
  /// Host: calls fn(id) for every live slot it holds.
  template <class Fn>
  void for_each_hosted(std::uint32_t host, Fn&& fn) const;

 private:
  struct Slot {
    std::atomic<std::uint32_t> gen{0};
    std::atomic<std::uint8_t> birth{kNoShard};
    std::atomic<std::uint8_t> owner{kNoShard};
    std::atomic<std::uint8_t> host{kNoShard};
    std::atomic<Conn*> conn{nullptr};
  };
  struct Chunk {
    Slot slots[kChunkSize];
  };
  Slot* slot_ptr(std::uint32_t slot) const;
  Slot& slot_or_create(std::uint32_t slot);
  template <class Fn>
  void for_each_slot(Fn&& fn) const;

  std::size_t capacity_;
  std::size_t nchunks_;
  std::unique_ptr<std::atomic<Chunk*>[]> chunks_;
};

template <class Fn>
void ConnectionTable::for_each_slot(Fn&& fn) const {
  for (std::size_t c = 0; c < nchunks_; ++c) {
    Chunk* ch = chunks_[c].load(std::memory_order_acquire);
    if (ch == nullptr) continue;
    for (std::uint32_t i = 0; i < kChunkSize; ++i) {
      fn(static_cast<std::uint32_t>(c << kChunkBits) + i, ch->slots[i]);
    }
  }
}

template <class Fn>
void ConnectionTable::for_each_live(Fn&& fn) const {
  for_each_slot([&](std::uint32_t slot, const Slot& s) {
    const std::uint32_t g = s.gen.load(std::memory_order_acquire);
    if (g & 1u) fn(ConnectionId(s.birth.load(std::memory_order_relaxed), slot, g));
  });
}

template <class Fn>
void ConnectionTable::for_each_hosted(std::uint32_t host, Fn&& fn) const {
  for_each_slot([&](std::uint32_t slot, const Slot& s) {
    const std::uint32_t g = s.gen.load(std::memory_order_acquire);
    if ((g & 1u) && s.host.load(std::memory_order_relaxed) == host) {
      fn(ConnectionId(s.birth.load(std::memory_order_relaxed), slot, g));
    }
  });
}

}  // namespace esockets::detail

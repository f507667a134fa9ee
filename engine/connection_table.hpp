// ConnectionTable: a shard's fd -> connection map with generations.
// Thread: conn pointers are owner-shard only; generations are atomics any thread may read to
// answer "is this id still live?" without a lock. Slots live in chunks allocated on demand and
// never moved, so a reader never sees a reallocation.
//
// A slot's generation is odd while a live connection holds it and even otherwise; a
// ConnectionId carries the odd value it was born with, so any later use of it is detected.
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

  ConnectionTable(std::uint32_t shard, std::size_t capacity);
  ~ConnectionTable();
  ConnectionTable(const ConnectionTable&) = delete;
  ConnectionTable& operator=(const ConnectionTable&) = delete;

  std::size_t capacity() const { return capacity_; }

  /// Owner: the live connection named by id, or nullptr if the id is stale/foreign.
  Conn* find(ConnectionId id) const;
  /// Owner: whatever holds the slot (live or lingering), or nullptr.
  Conn* at(std::uint32_t slot) const;
  /// Owner: claims slot for conn and returns its new id. The slot must be free.
  ConnectionId open(std::uint32_t slot, Conn* conn);
  /// Owner: ends the identity (id becomes stale) but keeps conn in the slot (lingering close).
  void retire(std::uint32_t slot);
  /// Owner: empties the slot (the fd was closed).
  void clear(std::uint32_t slot);

  /// Any thread: true if id names a live connection right now.
  bool live(ConnectionId id) const;
  /// Any thread: calls fn(id) for every live slot (weakly consistent).
  template <class Fn>
  void for_each_live(Fn&& fn) const;

 private:
  struct Slot {
    std::atomic<std::uint32_t> gen{0};
    Conn* conn = nullptr;
  };
  struct Chunk {
    Slot slots[kChunkSize];
  };
  Slot* slot_ptr(std::uint32_t slot) const;
  Slot& slot_or_create(std::uint32_t slot);

  std::uint32_t shard_;
  std::size_t capacity_;
  std::size_t nchunks_;
  std::unique_ptr<std::atomic<Chunk*>[]> chunks_;
};

template <class Fn>
void ConnectionTable::for_each_live(Fn&& fn) const {
  for (std::size_t c = 0; c < nchunks_; ++c) {
    Chunk* ch = chunks_[c].load(std::memory_order_acquire);
    if (ch == nullptr) continue;
    for (std::uint32_t i = 0; i < kChunkSize; ++i) {
      std::uint32_t g = ch->slots[i].gen.load(std::memory_order_acquire);
      if (g & 1u) fn(ConnectionId(shard_, static_cast<std::uint32_t>(c << kChunkBits) + i, g));
    }
  }
}

}  // namespace esockets::detail

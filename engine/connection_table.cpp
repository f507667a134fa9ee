#include "connection_table.hpp"

#include <cassert>

namespace esockets::detail {

ConnectionTable::ConnectionTable(std::uint32_t shard, std::size_t capacity)
    : shard_(shard),
      capacity_(capacity),
      nchunks_((capacity + kChunkSize - 1) / kChunkSize),
      chunks_(new std::atomic<Chunk*>[nchunks_]) {
  for (std::size_t i = 0; i < nchunks_; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
}

ConnectionTable::~ConnectionTable() {
  for (std::size_t i = 0; i < nchunks_; ++i) delete chunks_[i].load(std::memory_order_relaxed);
}

ConnectionTable::Slot* ConnectionTable::slot_ptr(std::uint32_t slot) const {
  if (slot >= capacity_) return nullptr;
  Chunk* ch = chunks_[slot >> kChunkBits].load(std::memory_order_acquire);
  return ch == nullptr ? nullptr : &ch->slots[slot & (kChunkSize - 1)];
}

ConnectionTable::Slot& ConnectionTable::slot_or_create(std::uint32_t slot) {
  assert(slot < capacity_);
  auto& cp = chunks_[slot >> kChunkBits];
  Chunk* ch = cp.load(std::memory_order_relaxed);
  if (ch == nullptr) {
    ch = new Chunk;
    cp.store(ch, std::memory_order_release);  // only the owner creates chunks
  }
  return ch->slots[slot & (kChunkSize - 1)];
}

Conn* ConnectionTable::find(ConnectionId id) const {
  if (id.shard() != shard_ || !id.valid()) return nullptr;
  Slot* s = slot_ptr(id.slot());
  if (s == nullptr || s->gen.load(std::memory_order_relaxed) != id.generation()) return nullptr;
  return s->conn;
}

Conn* ConnectionTable::at(std::uint32_t slot) const {
  Slot* s = slot_ptr(slot);
  return s == nullptr ? nullptr : s->conn;
}

ConnectionId ConnectionTable::open(std::uint32_t slot, Conn* conn) {
  Slot& s = slot_or_create(slot);
  assert(s.conn == nullptr);
  std::uint32_t g = s.gen.load(std::memory_order_relaxed);
  g = (g & 1u) ? g + 2 : g + 1;  // next odd value; 0 is never a live generation
  s.conn = conn;
  s.gen.store(g, std::memory_order_release);
  return ConnectionId(shard_, slot, g);
}

void ConnectionTable::retire(std::uint32_t slot) {
  Slot* s = slot_ptr(slot);
  if (s == nullptr) return;
  std::uint32_t g = s->gen.load(std::memory_order_relaxed);
  if (g & 1u) s->gen.store(g + 1, std::memory_order_release);
}

void ConnectionTable::clear(std::uint32_t slot) {
  retire(slot);
  Slot* s = slot_ptr(slot);
  if (s != nullptr) s->conn = nullptr;
}

bool ConnectionTable::live(ConnectionId id) const {
  if (id.shard() != shard_ || !id.valid()) return false;
  Slot* s = slot_ptr(id.slot());
  return s != nullptr && s->gen.load(std::memory_order_acquire) == id.generation();
}

}  // namespace esockets::detail

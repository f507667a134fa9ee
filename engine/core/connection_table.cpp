#include "core/connection_table.hpp"

#include <cassert>
#include <mutex>

namespace esockets::detail {

namespace {
// Chunks are created by whichever shard accepts an fd in them first; creation is rare (once
// per 4096 fds), so a mutex there keeps two shards from creating the same chunk.
std::mutex chunk_mu;
}  // namespace

ConnectionTable::ConnectionTable(std::size_t capacity)
    : capacity_(capacity),
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
  Chunk* ch = cp.load(std::memory_order_acquire);
  if (ch == nullptr) {
    std::lock_guard lk(chunk_mu);
    ch = cp.load(std::memory_order_acquire);
    if (ch == nullptr) {
      ch = new Chunk;
      cp.store(ch, std::memory_order_release);
    }
  }
  return ch->slots[slot & (kChunkSize - 1)];
}

Conn* ConnectionTable::find(ConnectionId id, std::uint32_t host) const {
  if (!id.valid()) return nullptr;
  Slot* s = slot_ptr(id.slot());
  if (s == nullptr || s->gen.load(std::memory_order_relaxed) != id.generation() ||
      s->birth.load(std::memory_order_relaxed) != id.shard() ||
      s->host.load(std::memory_order_relaxed) != host) {
    return nullptr;
  }
  return s->conn.load(std::memory_order_relaxed);
}

Conn* ConnectionTable::at(std::uint32_t slot, std::uint32_t host) const {
  Slot* s = slot_ptr(slot);
  if (s == nullptr || s->host.load(std::memory_order_relaxed) != host) return nullptr;
  return s->conn.load(std::memory_order_relaxed);
}

ConnectionId ConnectionTable::open(std::uint32_t shard, std::uint32_t slot, Conn* conn) {
  Slot& s = slot_or_create(slot);
  std::uint32_t g = s.gen.load(std::memory_order_relaxed);
  g = (g & 1u) ? g + 2 : g + 1;  // next odd value; 0 is never a live generation
  s.conn.store(conn, std::memory_order_relaxed);
  s.birth.store(static_cast<std::uint8_t>(shard), std::memory_order_relaxed);
  s.host.store(static_cast<std::uint8_t>(shard), std::memory_order_relaxed);
  s.owner.store(static_cast<std::uint8_t>(shard), std::memory_order_seq_cst);
  s.gen.store(g, std::memory_order_release);
  return ConnectionId(shard, slot, g);
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
  if (s == nullptr) return;
  s->conn.store(nullptr, std::memory_order_relaxed);
  s->host.store(kNoShard, std::memory_order_relaxed);
  s->owner.store(kNoShard, std::memory_order_release);
}

void ConnectionTable::set_owner(std::uint32_t slot, std::uint32_t shard) {
  Slot* s = slot_ptr(slot);
  if (s != nullptr) s->owner.store(static_cast<std::uint8_t>(shard), std::memory_order_seq_cst);
}

void ConnectionTable::set_host(std::uint32_t slot, std::uint32_t shard) {
  Slot* s = slot_ptr(slot);
  if (s != nullptr) s->host.store(static_cast<std::uint8_t>(shard), std::memory_order_release);
}

bool ConnectionTable::live(ConnectionId id) const {
  if (!id.valid()) return false;
  Slot* s = slot_ptr(id.slot());
  return s != nullptr && s->gen.load(std::memory_order_acquire) == id.generation() &&
         s->birth.load(std::memory_order_relaxed) == id.shard();
}

std::uint32_t ConnectionTable::owner(std::uint32_t slot) const {
  Slot* s = slot_ptr(slot);
  return s == nullptr ? kNoShard : s->owner.load(std::memory_order_seq_cst);
}

std::uint32_t ConnectionTable::engine_route(std::uint32_t slot) const {
  Slot* s = slot_ptr(slot);
  if (s == nullptr) return kNoShard;
  const std::uint32_t owner = s->owner.load(std::memory_order_seq_cst);
  return owner != kNoShard ? owner : s->host.load(std::memory_order_acquire);
}

}  // namespace esockets::detail

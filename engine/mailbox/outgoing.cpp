#include "mailbox/outgoing.hpp"

#include "core/connection_table.hpp"
#include "core/server_core.hpp"
#include "shard/shard.hpp"

namespace esockets::detail {

Outgoing::~Outgoing() { clear(); }

void Outgoing::clear() {
  for (std::size_t i = head_; i < items_.size(); ++i) dispose(items_[i]);
  items_.clear();
  head_ = 0;
}

bool Outgoing::push_multicast(ServerCore& core, MulticastBatch* b, std::uint64_t* touched,
                              PushFn put, void* ctx) {
  ConnectionTable& table = core.table();
  std::uint64_t used[4] = {0, 0, 0, 0};
  for (std::uint64_t v : b->ids) {
    const ConnectionId id = ConnectionId::from_value(v);
    if (!table.live(id)) continue;  // gone: as if it had arrived after the close
    const std::uint32_t owner = table.engine_route(id.slot());
    if (owner >= 256) continue;
    by_shard_[owner].push_back(v);
    used[owner >> 6] |= std::uint64_t{1} << (owner & 63);
  }
  bool all = true;
  std::vector<std::uint64_t> left;
  for (unsigned w = 0; w < 4; ++w) {
    for (std::uint64_t m = used[w]; m != 0; m &= m - 1) {
      const unsigned t = w * 64 + static_cast<unsigned>(__builtin_ctzll(m));
      std::vector<std::uint64_t>& ids = by_shard_[t];
      Shard* s = t < core.shard_bound() ? core.shard_ptr(t) : nullptr;
      if (s == nullptr || !s->accepting()) {
        ids.clear();
        continue;
      }
      retain_shared_payload(b->payload);
      auto* part = new MulticastBatch{b->payload, std::move(ids)};
      ids = {};
      const Command c{0, part, static_cast<std::uint32_t>(part->ids.size()), CommandKind::multicast,
                      0, static_cast<std::uint8_t>(t)};
      if (put(ctx, *s, c)) {
        touched[t >> 6] |= std::uint64_t{1} << (t & 63);
      } else {
        // This shard is full: its recipients stay queued, in order, for the next flush.
        all = false;
        left.insert(left.end(), part->ids.begin(), part->ids.end());
        dispose(c);
      }
    }
  }
  b->ids.swap(left);
  return all;
}

bool Outgoing::flush_erased(ServerCore& core, PushFn put, void* ctx) {
  ConnectionTable& table = core.table();
  std::uint64_t touched[4] = {0, 0, 0, 0};
  RouteEpoch& route = core.route();
  const unsigned e = route.enter();
  std::size_t i = head_;
  for (; i < items_.size(); ++i) {
    const Command c = items_[i];  // a copy: applying a command may append to items_
    if (c.kind == CommandKind::multicast) {
      auto* b = static_cast<MulticastBatch*>(c.data);
      if (!push_multicast(core, b, touched, put, ctx)) break;
      dispose(c);
      continue;
    }
    std::uint32_t target;
    if (targets_shard(c.kind)) {
      target = c.shard;
    } else {
      const ConnectionId id = ConnectionId::from_value(c.id);
      target = table.live(id) ? table.engine_route(id.slot()) : ConnectionTable::kNoShard;
    }
    Shard* s = target < core.shard_bound() ? core.shard_ptr(target) : nullptr;
    if (s == nullptr || !s->accepting()) {
      dispose(c);  // the connection or its shard is gone
      continue;
    }
    if (!put(ctx, *s, c)) break;  // keep order: nothing after it goes out before it
    touched[target >> 6] |= std::uint64_t{1} << (target & 63);
  }
  // Wake inside the epoch: a shard that seals itself waits for us, so it is still whole.
  for (unsigned w = 0; w < 4; ++w) {
    for (std::uint64_t m = touched[w]; m != 0; m &= m - 1) {
      core.shard_ptr(w * 64 + static_cast<unsigned>(__builtin_ctzll(m)))->notify();
    }
  }
  route.exit(e);
  head_ = i;
  if (head_ == items_.size()) {
    items_.clear();
    head_ = 0;
    return true;
  }
  if (head_ > 4096 && head_ * 2 > items_.size()) {
    items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
  }
  return false;
}

}  // namespace esockets::detail

// ServerCore's routing half: how send, close, pause, multicast and broadcast reach the shard
// that hosts a connection, from whichever thread calls them (see docs/ARCHITECTURE.md,
// "Cross-thread commands"). Lifecycle and resizing are in server_core.cpp.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "shard/send_queue.hpp"
#include "core/server_core.hpp"
#include "shard/shard.hpp"
#include "mailbox/worker.hpp"

namespace esockets::detail {

SendBlock* ServerCore::make_send_block(Bytes bytes, bool framed) const {
  if (!framed && bytes.size() > SendQueue::kShareMin) {
    // A worker's handler sending (part of) the message it was given: reference, not copy.
    // Only a quarter of the buffer or more: a queued reference keeps the whole buffer alive,
    // and the output caps count the bytes sent, so a small slice is copied (a queue holds at
    // most 4x the bytes it counts).
    if (SharedPayload* lent = lent_payload()) {
      const auto at = reinterpret_cast<std::uintptr_t>(bytes.data());
      const auto base = reinterpret_cast<std::uintptr_t>(lent->data());
      const std::size_t held = lent->pool != nullptr ? lent->pool->capacity() : lent->len;
      if (at >= base && at + bytes.size() <= base + lent->len && bytes.size() * 4 >= held) {
        retain_shared_payload(lent);
        return make_shared_block(lent, static_cast<std::uint32_t>(at - base),
                                 static_cast<std::uint32_t>(bytes.size()));
      }
    }
  }
  char hdr[8];
  bool trailer = false;
  std::size_t hlen = 0;
  if (framed) {
    hlen = framer_.header_for(bytes.size(), hdr, &trailer);
    if (hlen == SIZE_MAX) return nullptr;
  }
  const std::size_t total = hlen + bytes.size() + (trailer ? 1 : 0);
  SendBlock* b = make_block(total);
  if (hlen > 0) std::memcpy(b->data(), hdr, hlen);
  if (!bytes.empty()) std::memcpy(b->data() + hlen, bytes.data(), bytes.size());
  if (trailer) b->data()[hlen + bytes.size()] = opts_.line_delimiter;
  b->end = static_cast<std::uint32_t>(total);
  return b;
}

bool ServerCore::post_to_shard(unsigned shard, const Command& cmd) {
  // Inside the route epoch: a shard that seals its queues before leaving waits for this push.
  const unsigned e = route_.enter();
  Shard* s = shard < shard_bound() ? shard_ptr(shard) : nullptr;
  const bool ok = s != nullptr && s->accepting() && s->post(cmd);
  if (ok) s->notify();
  route_.exit(e);
  return ok;
}

SendStatus ServerCore::post_foreign(const Command& cmd) {
  const ConnectionId id = ConnectionId::from_value(cmd.id);
  // Resolve the owner and push inside the route epoch, so a hand-over in progress waits for
  // this push before its shard drains its queues (see RouteEpoch).
  const unsigned e = route_.enter();
  const std::uint32_t owner = table_->owner(id.slot());
  Shard* s = owner < shard_bound() ? shard_ptr(owner) : nullptr;
  SendStatus st = SendStatus::ok;
  if (s == nullptr || !s->accepting() || !table_->live(id)) {
    st = SendStatus::closed;
  } else if (!s->post(cmd)) {
    st = SendStatus::backpressure;
    s->counters().send_backpressure.fetch_add(1, std::memory_order_relaxed);
  } else {
    s->notify();
  }
  route_.exit(e);
  if (st != SendStatus::ok) dispose(cmd);
  return st;
}

SendStatus ServerCore::route_command(const Command& cmd) {
  const ThreadContext& ctx = tls_context;
  if (ctx.core == this && ctx.worker >= 0) {
    return workers_[static_cast<unsigned>(ctx.worker)]->queue_command(cmd);
  }
  if (ctx.core == this && ctx.shard >= 0) {
    // A handler on a shard thread: never refused for room (see Shard::queue_remote).
    return shard_ptr(static_cast<unsigned>(ctx.shard))->queue_remote(cmd);
  }
  return post_foreign(cmd);
}

namespace {
bool usable(const std::unique_ptr<ConnectionTable>& t, ConnectionId id) {
  return t != nullptr && t->live(id);
}
}  // namespace

bool ServerCore::direct_ok(int shard, ConnectionId id) const {
  // The calling shard applies a command at once only if it owns the connection and nothing it
  // queued earlier still waits in its Outgoing list: an older command there (queued while the
  // connection lived on another shard that has since handed it to us) must not be overtaken.
  const Shard& s = *shard_ptr(static_cast<unsigned>(shard));
  return table_->owner(id.slot()) == static_cast<std::uint32_t>(shard) && s.remote_empty();
}

SendStatus ServerCore::send(ConnectionId id, Bytes bytes, bool framed) {
  if (state_.load(std::memory_order_acquire) == State::idle || !usable(table_, id)) {
    return SendStatus::closed;
  }
  if (bytes.size() > opts_.output_hard_cap) {
    // It can never fit: as for any send that would pass the cap, the client is a slow consumer.
    (void)close(id, CloseReason::slow_consumer);
    return SendStatus::slow_consumer;
  }
  const ThreadContext& ctx = tls_context;
  if (ctx.core == this && ctx.shard >= 0 && direct_ok(ctx.shard, id)) {
    Shard& s = *shard_ptr(static_cast<unsigned>(ctx.shard));
    if (!framed) return s.send_local(id, bytes.data(), bytes.size());
    SendBlock* b = make_send_block(bytes, framed);
    if (b == nullptr) return SendStatus::backpressure;
    return s.send_local(id, b);
  }
  SendBlock* b = make_send_block(bytes, framed);
  if (b == nullptr) return SendStatus::backpressure;  // too long for the length prefix
  return route_command(Command{id.value(), b, b->size(), CommandKind::send, 0, 0});
}

SendStatus ServerCore::close(ConnectionId id, CloseReason reason) {
  if (state_.load(std::memory_order_acquire) == State::idle || !usable(table_, id)) {
    return SendStatus::closed;
  }
  const ThreadContext& ctx = tls_context;
  if (ctx.core == this && ctx.shard >= 0 && direct_ok(ctx.shard, id)) {
    return shard_ptr(static_cast<unsigned>(ctx.shard))->close_local(id, reason);
  }
  return route_command(
      Command{id.value(), nullptr, 0, CommandKind::close, static_cast<std::uint8_t>(reason), 0});
}

SendStatus ServerCore::set_paused(ConnectionId id, bool pause) {
  if (state_.load(std::memory_order_acquire) == State::idle || !usable(table_, id)) {
    return SendStatus::closed;
  }
  const ThreadContext& ctx = tls_context;
  if (ctx.core == this && ctx.shard >= 0 && direct_ok(ctx.shard, id)) {
    return shard_ptr(static_cast<unsigned>(ctx.shard))->pause_local(id, pause);
  }
  return route_command(Command{id.value(), nullptr, 0,
                               pause ? CommandKind::pause : CommandKind::resume, 0, 0});
}

std::size_t ServerCore::broadcast(Bytes bytes) {
  if (state_.load(std::memory_order_acquire) == State::idle) return 0;
  std::vector<ConnectionId> ids;
  table_->for_each_live([&](ConnectionId id) { ids.push_back(id); });
  return multicast(ids, bytes, false).ok;
}

MulticastResult ServerCore::multicast(std::span<const ConnectionId> ids, Bytes bytes, bool framed) {
  MulticastResult r;
  if (state_.load(std::memory_order_acquire) == State::idle || ids.empty()) {
    r.closed = ids.size();
    return r;
  }
  if (bytes.size() > opts_.output_hard_cap) {
    for (ConnectionId id : ids) {
      if (close(id, CloseReason::slow_consumer) == SendStatus::ok) {
        ++r.slow_consumer;
      } else {
        ++r.closed;
      }
    }
    return r;
  }
  // One copy of the bytes, framed once; each recipient's queue links it (or copies it when
  // it is small, see SendQueue::adopt).
  SendBlock* framed_block = make_send_block(bytes, framed);
  if (framed_block == nullptr) {
    r.backpressure = ids.size();  // too long for the length prefix: nothing can be sent
    return r;
  }
  // (The block may reference a worker's message at an offset: its bytes start at begin.)
  SharedPayload* payload = make_shared_payload(framed_block->data() + framed_block->begin,
                                               framed_block->size(), 1);
  free_block(framed_block);
  const ThreadContext& ctx = tls_context;
  const int own = ctx.core == this ? ctx.shard : -1;
  auto* rest = new MulticastBatch{payload, {}};
  retain_shared_payload(payload);
  rest->ids.reserve(ids.size());
  for (ConnectionId id : ids) {
    if (!table_->live(id)) {
      ++r.closed;
      continue;
    }
    if (own >= 0 && direct_ok(own, id)) {
      // Hosted by the calling shard: applied now, in order with its direct sends.
      switch (shard_ptr(static_cast<unsigned>(own))->send_shared(id, payload)) {
        case SendStatus::ok: ++r.ok; break;
        case SendStatus::slow_consumer: ++r.slow_consumer; break;
        default: ++r.closed; break;
      }
      continue;
    }
    rest->ids.push_back(id.value());
  }
  release_shared_payload(payload);
  if (rest->ids.empty()) {
    dispose(Command{0, rest, 0, CommandKind::multicast, 0, 0});
    return r;
  }
  if (ctx.core == this && (ctx.worker >= 0 || ctx.shard >= 0)) {
    // Engine threads queue it whole; it is split by shard when pushed (Outgoing).
    const std::size_t n = rest->ids.size();
    const Command c{0, rest, static_cast<std::uint32_t>(n), CommandKind::multicast, 0, 0};
    const SendStatus st = ctx.worker >= 0 ? workers_[static_cast<unsigned>(ctx.worker)]->queue_command(c)
                                          : shard_ptr(static_cast<unsigned>(ctx.shard))->queue_remote(c);
    (st == SendStatus::ok ? r.ok : r.backpressure) += n;
    return r;
  }
  // Another thread: split by owner now, inside the route epoch, one command per shard.
  std::vector<std::vector<std::uint64_t>> parts(256);
  std::vector<unsigned> used;
  const unsigned e = route_.enter();
  for (std::uint64_t v : rest->ids) {
    const std::uint32_t owner = table_->owner(ConnectionId::from_value(v).slot());
    if (owner >= 256) {
      ++r.closed;
      continue;
    }
    if (parts[owner].empty()) used.push_back(owner);
    parts[owner].push_back(v);
  }
  for (unsigned t : used) {
    const std::size_t n = parts[t].size();
    Shard* s = t < shard_bound() ? shard_ptr(t) : nullptr;
    if (s == nullptr || !s->accepting()) {
      r.closed += n;
      continue;
    }
    retain_shared_payload(payload);
    auto* part = new MulticastBatch{payload, std::move(parts[t])};
    const Command c{0, part, static_cast<std::uint32_t>(n), CommandKind::multicast, 0,
                    static_cast<std::uint8_t>(t)};
    if (s->post(c)) {
      s->notify();
      r.ok += n;
    } else {
      s->counters().send_backpressure.fetch_add(n, std::memory_order_relaxed);
      r.backpressure += n;
      dispose(c);
    }
  }
  route_.exit(e);
  dispose(Command{0, rest, 0, CommandKind::multicast, 0, 0});
  return r;
}

bool ServerCore::wait_writable(ConnectionId id, std::chrono::milliseconds timeout) {
  if (tls_context.core == this || table_ == nullptr) return false;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (!connected(id)) return false;
    const unsigned e = route_.enter();
    const std::uint32_t owner = table_->owner(id.slot());
    Shard* s = owner < shard_bound() ? shard_ptr(owner) : nullptr;
    if (s == nullptr || !s->accepting()) {
      route_.exit(e);
      return false;
    }
    std::unique_lock lk(s->wait_mu_);
    const bool room = s->has_room();
    route_.exit(e);
    if (room) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    // The shard wakes waiters after each drain, under wait_mu_ (no lost wake-up); the slice
    // bounds the wait when the connection moves to another shard meanwhile.
    s->waiters_.fetch_add(1, std::memory_order_seq_cst);
    s->wait_cv_.wait_for(lk, std::min<std::chrono::steady_clock::duration>(
                                 deadline - now, std::chrono::milliseconds(20)));
    s->waiters_.fetch_sub(1, std::memory_order_seq_cst);
  }
}

}  // namespace esockets::detail

// The direct entry points a shard's own thread uses for the connections it hosts (inline
// handlers, applied commands), and holding commands for connections being handed to it.
// Thread: owner shard only.
#include <sys/socket.h>

#include "core/server_core.hpp"
#include "shard/shard.hpp"

namespace esockets::detail {

namespace {
constexpr std::size_t kDirectWriteMin = 8 * 1024;  // sends this large skip an empty queue
}  // namespace

bool Shard::hold_if_incoming(const Command& cmd) {
  const ConnectionId id = ConnectionId::from_value(cmd.id);
  if (!table_.live(id) || table_.owner(id.slot()) != index_) return false;
  incoming_[cmd.id].push_back(cmd);  // being handed to us: applied when it arrives
  return true;
}

SendStatus Shard::send_local(ConnectionId id, SendBlock* block) {
  Conn* c = table_.find(id, index_);
  if (c == nullptr &&
      hold_if_incoming(Command{id.value(), block, block->size(), CommandKind::send, 0, 0})) {
    return SendStatus::ok;
  }
  if (c == nullptr || !accepts_output(c)) {
    free_block(block);
    return SendStatus::closed;
  }
  if (over_cap(c, block->size())) {
    free_block(block);
    close_slow_consumer(c);
    return SendStatus::slow_consumer;
  }
  adopt(c, block);
  return SendStatus::ok;
}

SendStatus Shard::send_local(ConnectionId id, const char* p, std::size_t n) {
  Conn* c = table_.find(id, index_);
  if (c == nullptr && table_.live(id) && table_.owner(id.slot()) == index_) {
    return send_local(id, core_.make_send_block(Bytes(p, n), false));
  }
  if (c == nullptr || !accepts_output(c)) return SendStatus::closed;
  if (over_cap(c, n)) {
    close_slow_consumer(c);
    return SendStatus::slow_consumer;
  }
  if (n >= kDirectWriteMin && c->out.empty() && !c->moving && c->registered &&
      !c->send_armed) {  // (io_uring: a send still in flight goes first)
    // A large send with nothing queued ahead of it: write it now from the caller's buffer
    // (bulk echo would otherwise copy every byte into the queue first). Small sends keep
    // being batched into one sendmsg per pass.
    const ssize_t w = ::send(c->fd(), p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      counters_.bytes_out.add(static_cast<std::uint64_t>(w));
      if (static_cast<std::size_t>(w) == n) {
        counters_.messages_out.add();
        return SendStatus::ok;
      }
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    // EAGAIN, a partial write or an error: queue the rest; flush() reports any error.
  }
  append(c, p, n);
  return SendStatus::ok;
}

SendStatus Shard::close_local(ConnectionId id, CloseReason reason) {
  Conn* c = table_.find(id, index_);
  if (c == nullptr && hold_if_incoming(Command{id.value(), nullptr, 0, CommandKind::close,
                                               static_cast<std::uint8_t>(reason), 0})) {
    return SendStatus::ok;
  }
  if (c == nullptr || c->state == ConnState::closing || c->state == ConnState::lingering) {
    return SendStatus::closed;
  }
  begin_close(c, reason);
  return SendStatus::ok;
}

SendStatus Shard::pause_local(ConnectionId id, bool pause) {
  Conn* c = table_.find(id, index_);
  if (c == nullptr && hold_if_incoming(Command{id.value(), nullptr, 0,
                                               pause ? CommandKind::pause : CommandKind::resume,
                                               0, 0})) {
    return SendStatus::ok;
  }
  if (c == nullptr) return SendStatus::closed;
  set_user_pause(c, pause);
  return SendStatus::ok;
}

bool Shard::accepts_output(const Conn* c) const {
  // A connection closed by the server's stop still flushes: what is sent to it meanwhile
  // (replies in flight when the stop began) goes out before its FIN, within shutdown_timeout.
  return c->state == ConnState::open || c->state == ConnState::half_closed ||
         (c->state == ConnState::closing && c->reason == CloseReason::shutdown);
}

SendStatus Shard::send_shared(ConnectionId id, SharedPayload* p) {
  // A small payload is copied straight into the queue (as a plain send); a large one is linked
  // by a block that holds a reference of its own.
  if (p->len <= SendQueue::kShareMin && table_.find(id, index_) != nullptr) {
    return send_local(id, p->data(), p->len);
  }
  retain_shared_payload(p);
  return send_local(id, make_shared_block(p));
}

void Shard::multicast_local(MulticastBatch* b) {
  for (std::uint64_t v : b->ids) {
    const ConnectionId id = ConnectionId::from_value(v);
    if (table_.find(id, index_) != nullptr) {
      (void)send_shared(id, b->payload);
      continue;
    }
    // Not hosted here (being handed to us, or moved on): as a single send would be.
    retain_shared_payload(b->payload);
    SendBlock* blk = make_shared_block(b->payload);
    const Command one{v, blk, blk->size(), CommandKind::send, 0, 0};
    if (Conn* t = target_of(one)) (void)send_local(t->id(), blk);
  }
  release_shared_payload(b->payload);
  delete b;
}


}  // namespace esockets::detail

// Handing live connections from one shard to another (Server::rebalance, Server::set_shards).
// Thread: owner shard only (both the giving and the adopting side run on their own threads).
//
// The giving shard R, for each batch (up to kBatch connections per target):
//   1. takes them out of its epoll set and points their table slots' owner at the target T;
//      from now on new commands for them go to T, which holds them (incoming_) until step 4;
//   2. flips the RouteEpoch (one mover at a time, see RouteEpoch::try_flip) and waits until
//      every sender that might have seen R as the owner has finished its push (quiet()), then
//      drains its own queues completely: commands sent before the switch are applied here, in
//      order, to the connections R still holds, so none is left behind to overtake later ones;
//   3. tells each connection's worker, through R's event queue after all earlier events, that
//      the connection moved (the worker holds T's events for it until then);
//   4. posts the Conn records to T (adopt); T registers them in its epoll, applies held
//      commands in order, and carries on: buffered input, queued output, framing state, pause
//      flags and the ConnectionId are all kept.
// A retiring shard first stops receiving connections (the reuseport group is steered away by
// ServerCore), keeps accepting for a grace period (handshakes already aimed at it), drains its
// accept queue, closes its listener, moves everything, lets closing sockets finish, and exits.
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>

#include "core/server_core.hpp"
#include "shard/shard.hpp"

namespace esockets::detail {

namespace {
constexpr std::size_t kBatch = 1024;
constexpr std::int64_t kRetireGraceMs = 200;
}  // namespace

void Shard::close_listeners() {
  for (std::size_t i = 0; i < listeners_.size(); ++i) {
    ShardListener& l = listeners_[i];
    watch_listener(i, false);
    if (l.fd >= 0 && !l.shared) ::close(l.fd);  // a Unix listener's socket stays for the others
    if (l.fd >= 0 && l.shared && phase_ == Phase::serving) {
      // The kernel wakes one waiter per connection on a shared listener (EPOLLEXCLUSIVE, and
      // io_uring's accepts likewise). A wake that reached us as we stopped watching would leave
      // its client queued while the other shards sleep: take what waits once we are out of
      // the wait queue (io_uring: when our cancelled accepts have ended) and place it on the
      // shards that stay.
      if (ring_ && l.accepts_armed > 0) {
        l.drain_fd = l.fd;
      } else {
        accept_from(i, l.fd);
      }
    }
    l.fd = -1;
  }
  accept_paused_ = false;
}

void Shard::start_move(MoveRequest* req) {
  std::unique_ptr<MoveRequest> r(req);
  if (move_ != Move::idle || phase_ != Phase::serving || r->targets.empty()) {
    moves_done_.fetch_add(1, std::memory_order_acq_rel);  // nothing to do; do not hang the caller
    return;
  }
  move_req_ = std::move(r);
  move_left_ = move_req_->retire ? SIZE_MAX : move_req_->count;
  move_rr_ = 0;
  if (move_req_->retire) {
    move_ = Move::grace;
    grace_end_ms_ = now_ms_ + kRetireGraceMs;
  } else {
    move_ = Move::quiescing;
    if (!start_batch()) {
      move_ = Move::idle;
      move_req_.reset();
      moves_done_.fetch_add(1, std::memory_order_acq_rel);
    }
  }
}

void Shard::advance_move() {
  switch (move_) {
    case Move::idle:
      return;
    case Move::grace:
      if (now_ms_ < grace_end_ms_) return;
      accept_paused_ = false;
      for (std::size_t i = 0; i < listeners_.size(); ++i) {
        // Whatever completed its handshake on our TCP sockets before the steering. A Unix
        // listener's queue is shared: the other shards take what waits there.
        if (!listeners_[i].shared) accept_ready(i);
      }
      close_listeners();
      hand_over_pending();  // PROXY-stage sockets go on to the shards that stay
      move_ = Move::quiescing;
      if (!start_batch()) move_ = Move::finishing;
      return;
    case Move::quiescing:
      if (!unsent_.empty()) {
        std::vector<AdoptBatch*> retry;
        retry.swap(unsent_);
        for (AdoptBatch* b : retry) send_batch(b);
        if (!unsent_.empty()) return;
      }
      if (!batches_.empty() && !move_drained_) {
        RouteEpoch& route = core_.route();
        if (!move_flipped_) {
          if (!route.try_flip(&move_epoch_)) return;  // another shard is switching: next pass
          move_flipped_ = true;
        }
        if (!route.quiet(move_epoch_)) return;
        route.done();
        move_flipped_ = false;
        drain_all();  // everything sent before the switch, applied here, in order, no budget
        move_drained_ = true;
      }
      if (!batches_.empty()) {
        // io_uring: their receives are cancelled; bytes still completing are held in their
        // FrameState, so each leaves only after its last completion here.
        for (const AdoptBatch* b : batches_) {
          if (b != nullptr && !ring_settled(b->conns)) return;
        }
        // What the moving connections' handlers sent to other shards leaves before they do:
        // on their new shard their next sends must not overtake those (per-sender order).
        if (!remote_.flushed_through(move_remote_mark_)) {
          flush_remote();
          if (!remote_.flushed_through(move_remote_mark_)) return;
        }
        move_drained_ = false;
        hand_over_batch();
        if (!unsent_.empty()) return;
      }
      if (move_left_ > 0 && start_batch()) return;
      move_ = Move::finishing;
      [[fallthrough]];
    case Move::finishing:
      if (!unsent_.empty()) return;
      if (!move_req_->retire) {
        move_ = Move::idle;
        move_req_.reset();
        moves_done_.fetch_add(1, std::memory_order_acq_rel);
      }
      // A retiring shard leaves run() once its closing sockets are gone (see run()).
      return;
  }
}

bool Shard::start_batch() {
  const auto& targets = move_req_->targets;
  batches_.assign(targets.size(), nullptr);
  std::size_t taken = 0;
  const std::size_t limit = std::min(move_left_, kBatch * targets.size());
  table_.for_each_hosted(index_, [&](ConnectionId id) {
    if (taken >= limit) return;
    Conn* c = table_.find(id, index_);
    // Closing and half-closed connections move too: a retiring shard waits for nothing but
    // its lingering sockets (bounded by linger_timeout).
    if (c == nullptr || c->moving) return;
    const std::size_t t = move_rr_++ % targets.size();
    if (batches_[t] == nullptr) batches_[t] = new AdoptBatch{index_, targets[t], {}, {}};
    c->moving = true;
    io_detach(c);
    table_.set_owner(id.slot(), targets[t]);
    batches_[t]->conns.push_back(c);
    ++taken;
  });
  if (move_left_ != SIZE_MAX) move_left_ -= taken;
  if (taken == 0) {
    batches_.clear();
    move_left_ = 0;
    return false;
  }
  move_flipped_ = false;  // advance_move() switches the epoch once no other mover is
  move_drained_ = false;
  move_remote_mark_ = remote_.pushed_count();  // the moving connections produce no more
  return true;
}

void Shard::send_batch(AdoptBatch* b) {
  Command c{0, b, static_cast<std::uint32_t>(b->conns.size()), CommandKind::adopt, 0,
            static_cast<std::uint8_t>(b->to)};
  if (!core_.post_to_shard(b->to, c)) unsent_.push_back(b);  // inbox full: retry next pass
}

void Shard::hand_over_batch() {
  flush_dirty();  // no pointer to a record we give away may stay in our lists
  carry_posted();
  for (AdoptBatch* b : batches_) {
    if (b == nullptr) continue;
    for (Conn* c : b->conns) {
      // Nobody here may find it any more; the target claims it in adopt_batch().
      table_.set_host(c->id().slot(), ConnectionTable::kInTransit);
      // Its timers go with it (its handlers run on the shard that hosts it).
      if (ConnExtras* x = ExtrasAccess::of(c->pub)) timers_.detach(*x);
      c->dirty = false;
      c->timed = false;
      c->resume_pending = false;  // the new shard delivers held frames (adopt_batch)
      if (c->flow_paused) {
        c->flow_paused = false;  // the new shard has its own worker queues
        if (!c->user_paused) counters_.paused.sub();
      }
      if (c->user_paused) counters_.paused.sub();
      counters_.connections.sub();
      counters_.output_bytes.sub(c->out.bytes());
      core_.load_of(index_).fetch_sub(1, std::memory_order_relaxed);
      core_.in_transit().fetch_add(1, std::memory_order_acq_rel);
      if (!outboxes_.empty()) {
        emit(c->worker, Event{c->id().value(), nullptr, b->to, EventKind::moved, 0});
      }
    }
  }
  service_workers();  // the moved markers go out before the new shard's first events
  std::vector<AdoptBatch*> ready;
  ready.swap(batches_);
  for (AdoptBatch* b : ready) {
    if (b != nullptr) send_batch(b);
  }
}

void Shard::adopt_batch(AdoptBatch* batch) {
  // Their posted functions were taken in before anything held for them here (incoming_).
  for (Conn* c : batch->conns) {
    const ConnectionId id = c->id();
    table_.set_host(id.slot(), index_);
    if (ConnExtras* x = ExtrasAccess::of(c->pub)) timers_.attach(*x);
    c->moving = false;
    c->registered = false;
    c->armed = 0;
    counters_.connections.add();
    counters_.output_bytes.add(c->out.bytes());
    if (c->user_paused) counters_.paused.add();
    core_.load_of(index_).fetch_add(1, std::memory_order_relaxed);
    update_interest(c);
    if (c->state == ConnState::closing && !c->out.empty()) {
      set_deadline(c, now_ms_ + core_.options().linger_timeout.count());
    }
    mark_dirty(c);
    for (const Command& cmd : batch->posted) {
      if (cmd.id == id.value()) posted_.push_back(cmd);
    }
    auto it = incoming_.find(id.value());
    if (it != incoming_.end()) {
      std::vector<Command> held;
      held.swap(it->second);
      incoming_.erase(it);
      for (const Command& cmd : held) apply(cmd);
    }
    if (c->reading() && (c->frame.has_pending_frames() || c->eof_seen)) resume_reading(c);
    core_.in_transit().fetch_sub(1, std::memory_order_acq_rel);
  }
  delete batch;
}

}  // namespace esockets::detail

// A shard's part in a takeover between processes (see takeover.hpp and docs/ARCHITECTURE.md,
// "Takeover"). Thread: owner shard only; orders arrive as CommandKind::takeover and progress
// goes to the ServerCore's TakeoverHub.
//
// Old side, driven by the takeover thread once the new process holds the listeners:
//   freeze      listeners leave the epoll set (their sockets stay open: a failed takeover
//               resumes them), no connection is read any more; then every reply already on its
//               way is queued here: inline, our handlers' sends to other shards are pushed;
//               with workers, a barrier goes through every worker queue. Then "frozen".
//   export_all  (once every shard froze, so no handler still answers an earlier message) every
//               open connection is taken out of the epoll set and the route (sends now return
//               closed); the route epoch is switched and everything sent before is applied, in
//               order; its state is saved (on_client_takeover, on the worker that runs it), and
//               it leaves with its fd, unread input and queued output as a ConnRecord;
//               on_client_disconnect(taken_over) ends it here. Closing connections finish here.
//   import      a batch the new process did not acknowledge comes back (the transfer failed).
//   thaw        accept and read again.
// New side: import adopts the connections the old process sent, through on_client_restore.
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>

#include "core/server_core.hpp"
#include "shard/shard.hpp"
#include "io/socket_ops.hpp"
#include "takeover/takeover.hpp"

namespace esockets::detail {

void Shard::takeover_order(TakeoverOrder* raw) {
  std::unique_ptr<TakeoverOrder> o(raw);
  switch (o->op) {
    case TakeoverOp::freeze:
      freeze_all();
      return;
    case TakeoverOp::export_all:
      if (takeover_ != Takeover::frozen) {
        core_.takeover_hub().shard_exported(nullptr);  // not frozen: nothing to give
        return;
      }
      // A second barrier: connections placed here by another shard since the freeze had
      // their connect events handled after the first one; what those handlers sent must be
      // queued here before the route changes.
      for (unsigned w = 0; w < outboxes_.size(); ++w) {
        emit(w, Event{0, nullptr, 0, EventKind::barrier, 0});
      }
      barrier_acks_ = 0;
      takeover_ = Takeover::settling;
      advance_takeover();
      return;
    case TakeoverOp::import:
      if (o->batch) import_batch(*o->batch);
      return;
    case TakeoverOp::thaw:
      thaw_all();
      return;
  }
}

void Shard::freeze_all() {
  takeover_frozen_ = true;
  for (std::size_t i = 0; i < listeners_.size(); ++i) watch_listener(i, false);
  table_.for_each_hosted(index_, [this](ConnectionId id) {
    Conn* c = table_.find(id, index_);
    if (c == nullptr || c->state != ConnState::open) return;
    c->frozen = true;
    update_interest(c);  // output still flows; input waits in the kernel
  });
  for (unsigned w = 0; w < outboxes_.size(); ++w) emit(w, Event{0, nullptr, 0, EventKind::barrier, 0});
  barrier_acks_ = 0;
  takeover_ = Takeover::freezing;
  advance_takeover();
}

void Shard::thaw_all() {
  takeover_frozen_ = false;
  takeover_ = Takeover::none;
  if (phase_ == Phase::serving && !accept_paused_) {
    for (std::size_t i = 0; i < listeners_.size(); ++i) {
      if (listeners_[i].fd >= 0) (void)watch_listener(i, true);
    }
  }
  table_.for_each_hosted(index_, [this](ConnectionId id) {
    Conn* c = table_.find(id, index_);
    if (c == nullptr || !c->frozen) return;
    c->frozen = false;
    update_interest(c);
    resume_reading(c);
  });
}

void Shard::advance_takeover() {
  switch (takeover_) {
    case Takeover::none:
    case Takeover::frozen:
      return;
    case Takeover::freezing:
      flush_remote();
      if (barrier_acks_ < outboxes_.size() || !remote_.empty()) return;
      takeover_ = Takeover::frozen;
      core_.takeover_hub().shard_frozen();
      return;
    case Takeover::settling:
      if (barrier_acks_ < outboxes_.size()) return;
      takeover_flipped_ = false;
      export_.clear();
      table_.for_each_hosted(index_, [this](ConnectionId id) {
        Conn* c = table_.find(id, index_);
        if (c == nullptr || c->moving || c->state != ConnState::open) return;
        c->moving = true;
        io_detach(c);
        table_.set_owner(id.slot(), ConnectionTable::kNoShard);  // sends now return closed
        export_.push_back(c);
      });
      takeover_ = Takeover::switching;
      [[fallthrough]];
    case Takeover::switching: {
      // io_uring: their receives were cancelled above; the last bytes they read go with the
      // record, so wait for those before the application saves its state (on_client_takeover:
      // nothing it saved may be answered here afterwards, by a timer of this pass for one).
      if (!ring_settled(export_)) return;
      // As for a hand-over between shards: whoever resolved us as the owner before the switch
      // finishes its push, then everything queued for these connections is applied here.
      RouteEpoch& route = core_.route();
      if (!takeover_flipped_) {
        if (!route.try_flip(&takeover_epoch_)) return;
        takeover_flipped_ = true;
      }
      if (!route.quiet(takeover_epoch_)) return;
      route.done();
      takeover_flipped_ = false;
      drain_all();
      if (outboxes_.empty()) {
        // Functions posted before the switch run now, on the thread that runs this
        // connection's handlers, and what they send reaches us (engine_route: commands an
        // engine thread queued for a connection in transit go to its host until it leaves).
        run_posted();
        flush_remote();
      }
      flush_dirty();  // no pointer to a record we give away may stay in our lists
      export_states_.assign(export_.size(), TakenState{});
      export_waiting_ = 0;
      for (std::size_t i = 0; i < export_.size(); ++i) {
        Conn* c = export_[i];
        if (c->state != ConnState::open) continue;  // closed by what was applied: stays here
        if (outboxes_.empty()) {
          try {
            export_states_[i].app = core_.handler().on_client_takeover(c->pub);
          } catch (const std::exception& ex) {
            warn(WarningCode::handler_exception, Severity::warning, c->id(), 0,
                 std::string("on_client_takeover threw (its state is not carried over): ") +
                     ex.what());
          } catch (...) {
            warn(WarningCode::handler_exception, Severity::warning, c->id(), 0,
                 "on_client_takeover threw a non-std exception (its state is not carried over)");
          }
          if (const ProxyInfo* p = c->pub.proxy()) export_states_[i].proxy = encode_proxy(*p);
        } else {
          export_index_[c->id().value()] = i;
          ++export_waiting_;
          emit(c->worker, Event{c->id().value(), nullptr, index_, EventKind::takeover, 0});
        }
      }
      // What the hooks and the posted functions sent leaves our list before the records are
      // made (inline; with workers it comes in before each takeover_state answer).
      takeover_remote_mark_ = remote_.pushed_count();
      takeover_ = Takeover::saving;
      service_workers();
      [[fallthrough]];
    }
    case Takeover::saving:
      if (export_waiting_ > 0) return;
      if (!remote_.flushed_through(takeover_remote_mark_)) {
        flush_remote();
        if (!remote_.flushed_through(takeover_remote_mark_)) return;
      }
      finish_export();
      return;
  }
}

void Shard::take_state(const Command& cmd) {
  std::unique_ptr<TakenState> st(static_cast<TakenState*>(cmd.data));
  auto it = export_index_.find(cmd.id);
  if (it == export_index_.end()) return;
  export_states_[it->second] = std::move(*st);
  export_index_.erase(it);
  if (export_waiting_ > 0) --export_waiting_;  // advance_takeover() goes on from the loop
}

void Shard::finish_export() {
  auto batch = std::make_unique<ConnBatch>();
  for (std::size_t i = 0; i < export_.size(); ++i) {
    Conn* c = export_[i];
    if (c->state != ConnState::open) {
      // A close applied during the switch: it finishes here, in our epoll set again.
      c->moving = false;
      c->frozen = false;
      table_.set_owner(c->id().slot(), index_);
      update_interest(c);
      mark_dirty(c);
      continue;
    }
    ConnRecord r;
    r.listener = c->pub.listener_;
    r.peer = c->pub.peer_;
    r.input = std::string(Framer::unread(c->frame));
    c->out.copy_to(r.output);
    r.flags = (c->user_paused ? kRecordUserPaused : 0) | (c->above_high ? kRecordAboveHigh : 0);
    r.app_state = std::move(export_states_[i].app);
    r.proxy = std::move(export_states_[i].proxy);
    batch->fds.push_back(c->fd());
    batch->records.push_back(std::move(r));
    detach_exported(c);
  }
  // Sockets still in their PROXY stage go too, with what is left of their deadline.
  std::vector<int> pending;
  for (const auto& [fd, p] : pending_) pending.push_back(fd);
  for (int fd : pending) {
    const PendingProxy p = pending_.at(fd);
    unwatch_pending(fd);
    pending_.erase(fd);
    ConnRecord r;
    r.listener = p.listener;
    r.peer = p.peer;
    r.flags = kRecordProxyPending;
    r.frame_progress = static_cast<std::uint64_t>(std::max<std::int64_t>(p.deadline_ms - now_ms_, 1));
    batch->fds.push_back(fd);
    batch->records.push_back(std::move(r));
    core_.fds_in_use().fetch_sub(1, std::memory_order_relaxed);
    core_.listener(p.listener).connections.fetch_sub(1, std::memory_order_relaxed);
    core_.load_of(index_).fetch_sub(1, std::memory_order_relaxed);
  }
  export_.clear();
  export_states_.clear();
  export_index_.clear();
  takeover_ = Takeover::none;  // still frozen: listeners out, nothing left to read
  core_.takeover_hub().shard_exported(std::move(batch));
}

void Shard::detach_exported(Conn* c) {
  // Like retire() + close_fd(), except that the socket lives on in the batch (and then in the
  // new process): the identity ends here and the handler hears taken_over exactly once.
  const ConnectionId id = c->id();
  const int fd = c->fd();
  table_.retire(id.slot());
  counters_.connections.sub();
  if (c->user_paused || c->flow_paused) counters_.paused.sub();
  counters_.closes[static_cast<std::size_t>(CloseReason::taken_over)].add();
  counters_.output_bytes.sub(c->out.bytes());
  c->out.clear(pool_);
  c->frame.clear();
  if (outboxes_.empty()) {
    try {
      core_.handler().on_client_disconnect(c->pub, CloseReason::taken_over);
    } catch (...) {
      warn(WarningCode::handler_exception, Severity::warning, id, 0,
           "on_client_disconnect threw at a takeover");
    }
    c->pub.release_extras();
  }  // with workers, the takeover event ended it there
  table_.clear(static_cast<std::uint32_t>(fd));
  core_.fds_in_use().fetch_sub(1, std::memory_order_relaxed);
  core_.listener(c->pub.listener_).connections.fetch_sub(1, std::memory_order_relaxed);
  core_.load_of(index_).fetch_sub(1, std::memory_order_relaxed);
  c->timed = false;
  c->dirty = false;
  graveyard_.push_back(c);
}

void Shard::import_batch(ConnBatch& b) {
  const bool inline_mode = outboxes_.empty();
  for (std::size_t i = 0; i < b.records.size(); ++i) {
    ConnRecord& r = b.records[i];
    const int fd = b.fds[i];
    b.fds[i] = -1;  // ours now
    const std::uint16_t li =
        r.listener < core_.nlisteners() ? r.listener : static_cast<std::uint16_t>(0);
    if (static_cast<std::size_t>(fd) >= table_.capacity()) {
      warn(WarningCode::takeover, Severity::error, {}, 0,
           "takeover: a connection from " + r.peer.to_string() + " got fd " +
               std::to_string(fd) + ", beyond this process's fd limit: it is closed");
      ::close(fd);
      continue;
    }
    core_.fds_in_use().fetch_add(1, std::memory_order_relaxed);
    core_.listener(li).connections.fetch_add(1, std::memory_order_relaxed);
    core_.load_of(index_).fetch_add(1, std::memory_order_relaxed);
    if ((r.flags & kRecordProxyPending) != 0) {
      // Its PROXY header is still to come (or to be read): it starts that stage again here
      // with the time it had left (a plain connection if this listener has no PROXY stage).
      const std::int64_t left = static_cast<std::int64_t>(std::min<std::uint64_t>(r.frame_progress, 3600000));
      start_connection(fd, r.peer, li, now_ms_ + left);
      continue;
    }
    Conn* c = new Conn;
    c->pub.core_ = &core_;
    c->pub.fd_ = fd;
    c->pub.peer_ = r.peer;
    c->pub.listener_ = li;
    c->pub.id_ = table_.open(index_, static_cast<std::uint32_t>(fd), c);
    c->last_read_tick = tick();
    c->registered = false;
    c->armed = 0;
    c->frozen = takeover_frozen_;
    counters_.connections.add();
    if (!r.input.empty()) Framer::restore(c->frame, r.input);
    if (!r.output.empty()) {
      c->out.append(r.output.data(), r.output.size(), pool_);
      counters_.output_bytes.add(r.output.size());
    }
    if ((r.flags & kRecordUserPaused) != 0) {
      c->user_paused = true;
      counters_.paused.add();
    }
    std::unique_ptr<ProxyInfo> proxy;
    if (!r.proxy.empty()) {
      proxy = std::make_unique<ProxyInfo>();
      if (!decode_proxy(r.proxy, *proxy)) proxy.reset();
    }
    update_interest(c);
    if (inline_mode) {
      if (proxy) ExtrasAccess::make(c->pub).proxy = std::move(proxy);
      bool ok = true;
      const std::string& state = r.app_state;
      call_handler(c, [&] { ok = core_.handler().on_client_restore(c->pub, state); });
      if (table_.find(c->id(), index_) != c) continue;
      if (!ok && c->state == ConnState::open) begin_close(c, CloseReason::refused);
    } else {
      const unsigned nw = static_cast<unsigned>(outboxes_.size());
      c->worker = static_cast<std::uint8_t>((static_cast<unsigned>(fd) * 2654435761u >> 8) % nw);
      auto* info = new ConnectInfo{c->pub.peer_, li, std::move(proxy),
                                   std::make_unique<std::string>(std::move(r.app_state))};
      emit(c->worker, Event{c->id().value(), info, static_cast<std::uint32_t>(fd),
                            EventKind::connect, 0});
    }
    c->above_high = (r.flags & kRecordAboveHigh) != 0;
    after_output_change(c);  // on_output_low if the carried output is already low (or high)
    if (table_.find(c->id(), index_) != c) continue;
    if (!c->out.empty()) mark_dirty(c);
    if (c->reading() && c->frame.has_pending_frames()) resume_reading(c);
  }
}

}  // namespace esockets::detail

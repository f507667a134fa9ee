// The per-connection state machine of a shard: read and frame, write, close.
// (Accepting is in shard_accept.cpp, the direct entry points in shard_local.cpp.) The I/O under
// it is a backend's, shard_epoll.cpp or shard_uring.cpp, reached through io_attach, io_detach,
// update_interest and flush here, watch_listener and wait_events (shard.hpp).
// Thread: owner shard only.
//
//   open --EOF--> half_closed --eof_ack--> closing --output flushed--> (retire) --> closed
//     |                                       ^        \--FIN owed, input unread--> lingering
//     +--close()/error/timeout----------------+                                        |
//   errors (RST, EPIPE) skip straight to retire + close; lingering ends at the peer's FIN
//   or at linger_timeout.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/server_core.hpp"
#include "shard/shard.hpp"
#include "io/socket_ops.hpp"
#include "mailbox/worker.hpp"

namespace esockets::detail {

// ---------------------------------------------------------------- read

bool Shard::deliver_frame(Conn* c, std::string_view frame) {
  counters_.messages_in.add();
  if (outboxes_.empty()) {
    call_handler(c, [&] { core_.handler().on_message_recv(c->pub, frame); });
    return c->reading();
  }
  SharedPayload* payload = nullptr;
  try {
    payload = message_payload(frame);
  } catch (const std::bad_alloc&) {
    warn(WarningCode::out_of_memory, Severity::error, c->id(), 0,
         "out of memory copying a message for " + c->pub.getip());
    begin_close(c, CloseReason::io_error);
    return false;
  }
  Outbox& ob = outboxes_[c->worker];
  emit(c->worker, Event{c->id().value(), payload, static_cast<std::uint32_t>(frame.size()),
                        EventKind::message, 0});
  if (ob.size() > to_workers_[c->worker]->write_available() && !c->flow_paused) {
    // The worker is behind: stop reading this client (TCP pushes back) until it catches up,
    // and stop framing the chunk already read: its other frames wait in the connection's
    // FrameState, so the outbox grows by at most one event per connection past the bound.
    flow_pause(c, ob.flow_paused);
  }
  return c->reading();
}

SharedPayload* Shard::message_payload(std::string_view frame) {
  // A message for a worker, which its handler may send on without a copy (lent_payload()).
  // Large ones go in the pool's buffers (a quarter full at least, so queued messages hold at
  // most 4x their bytes): the read buffer itself when the message is a whole raw read, else a
  // copy. Small ones are copied into a block of their own size.
  const std::size_t n = frame.size();
  if (payloads_ == nullptr || n < payloads_->capacity() / 4 || n > payloads_->capacity()) {
    return make_shared_payload(frame.data(), static_cast<std::uint32_t>(n), 1);
  }
  SharedPayload* p = nullptr;
  if (lend_ != nullptr && frame.data() == lend_->data()) {
    p = lend_;
    lend_ = nullptr;  // the next read gets another
  } else {
    p = payloads_->get();
    std::memcpy(p->data(), frame.data(), n);
  }
  p->len = static_cast<std::uint32_t>(n);
  return p;
}

void Shard::deliver(Conn* c, const char* p, std::size_t n) {
  // While frames are delivered, the handler may close the connection or make it fail: the
  // frame buffer its `message` points into is only freed after the feed returns.
  const ConnectionId id = c->id();
  delivering_ = c;
  FeedStatus st;
  try {
    st = framer_.feed(c->frame, p, n, [&](std::string_view f) { return deliver_frame(c, f); });
  } catch (...) {
    delivering_ = nullptr;
    throw;  // dispatch() closes this connection only
  }
  delivering_ = nullptr;
  if (table_.find(id, index_) != c) return;
  if (c->state == ConnState::closing) {
    c->frame.clear();
    return;
  }
  if (st == FeedStatus::error) framing_failed(c);
}

void Shard::framing_failed(Conn* c) {
  const ConnectionId id = c->id();
  const char* why = framer_.error_reason(c->frame);
  warn(WarningCode::framing_error, Severity::info, c->id(), 0,
       std::string("framing error from ") + c->pub.getip() + ": " + why);
  c->frame.clear();
  // The handler may answer (an error reply); it goes out before the close. With workers the
  // close waits for the worker's ack, so replies to earlier frames go out first too.
  if (outboxes_.empty()) {
    call_handler(c, [&] { core_.handler().on_framing_error(c->pub, why); });
    if (table_.find(id, index_) != c) return;
  } else {
    emit(c->worker, Event{id.value(), const_cast<char*>(why), 0, EventKind::framing_error, 0});
  }
  close_after_worker(c, CloseReason::framing_error);
}

void Shard::close_after_worker(Conn* c, CloseReason reason) {
  // Inline, every reply to earlier frames is already queued. With workers, some may still be
  // on their way: read no more, and close once the worker acknowledges (it answers the eof
  // event after everything before it), so those replies go out first.
  if (outboxes_.empty()) {
    begin_close(c, reason);
    return;
  }
  c->state = ConnState::half_closed;
  c->reason = reason;
  update_interest(c);
  emit(c->worker, Event{c->id().value(), nullptr, 0, EventKind::eof, 0});
}

void Shard::on_eof(Conn* c) {
  c->peer_eof = true;
  close_after_worker(c, CloseReason::peer_closed);
}

void Shard::resume_reading(Conn* c) {
  if (!c->reading()) return;
  // The time spent paused was ours, not the client's: idle and frame clocks start again.
  const std::uint32_t now = tick();
  c->last_read_tick = now;
  if (c->frame_start_tick != 0) c->frame_start_tick = now;
  if ((c->frame.has_pending_frames() || c->eof_seen) && !c->resume_pending) {
    // Delivered from the loop (process_resumes), never nested in the caller's callback.
    c->resume_pending = true;
    resumes_.push_back(c->id());
  }
  if (c->hup) c->hup = false;  // re-register; the kernel reports the hang-up again after reads
  mark_dirty(c);
}

void Shard::set_user_pause(Conn* c, bool pause) {
  if (c->user_paused == pause) return;
  c->user_paused = pause;
  if (!c->flow_paused) {
    if (pause) {
      counters_.paused.add();
    } else {
      counters_.paused.sub();
    }
  }
  if (pause) {
    mark_dirty(c);
  } else {
    resume_reading(c);
  }
}

// ---------------------------------------------------------------- write

bool Shard::over_cap(Conn* c, std::size_t more) {
  return c->out.bytes() + more > core_.options().output_hard_cap ||
         counters_.output_bytes.get() + more > shard_output_cap_;
}

void Shard::append(Conn* c, const char* p, std::size_t n) {
  c->out.append(p, n, pool_);
  counters_.messages_out.add();
  counters_.output_bytes.add(n);
  mark_dirty(c);  // watermark callbacks run from flush(), never inside the caller's send()
}

void Shard::adopt(Conn* c, SendBlock* b) {
  const std::size_t n = b->size();
  c->out.adopt(b, pool_);
  counters_.messages_out.add();
  counters_.output_bytes.add(n);
  mark_dirty(c);
}

void Shard::after_output_change(Conn* c) {
  const auto& o = core_.options();
  const std::size_t q = c->out.bytes();
  EventKind k;
  if (!c->above_high && q >= o.output_high_watermark) {
    c->above_high = true;
    k = EventKind::output_high;
  } else if (c->above_high && q <= o.output_low_watermark) {
    c->above_high = false;
    k = EventKind::output_low;
  } else {
    return;
  }
  if (c->state != ConnState::open && c->state != ConnState::half_closed) return;
  if (outboxes_.empty()) {
    call_handler(c, [&] {
      if (k == EventKind::output_high) {
        core_.handler().on_output_high(c->pub);
      } else {
        core_.handler().on_output_low(c->pub);
      }
    });
  } else {
    emit(c->worker, Event{c->id().value(), nullptr, 0, k, 0});
  }
}

void Shard::mark_dirty(Conn* c) {
  if (c->dirty) return;
  c->dirty = true;
  dirty_.push_back(c);
}

void Shard::writable(Conn* c) { flush(c); }

void Shard::flush(Conn* c) {
  if (c->moving) return;  // the shard it goes to flushes it
  after_output_change(c);
  if (table_.find(c->id(), index_) != c) return;
  if (ring_) {
    ring_send(c);  // one send in flight at a time; its completion continues
  } else if (!epoll_write(c)) {
    return;  // closed
  }
  if (c->out.empty() && c->state == ConnState::closing) {
    finish_close(c);
    return;
  }
  update_interest(c);
}

void Shard::output_sent(Conn* c, std::size_t n) {
  // n bytes of the queue's head left (a sendmsg, or a ring send's completion).
  c->out.consume(n, pool_);
  c->write_stall_tick = c->out.empty() ? 0 : tick();
  counters_.bytes_out.add(n);
  counters_.output_bytes.sub(n);
  if (c->state == ConnState::closing && c->deadline_ms != 0) {
    // Progress: a slow but reading peer gets a fresh deadline.
    c->deadline_ms = now_ms_ + core_.options().linger_timeout.count();
  }
}

void Shard::update_interest(Conn* c) {
  if (c->moving) return;  // out of our epoll set until its new shard registers it
  if (ring_) {
    c->registered = true;  // attached to our ring (a new or adopted connection: from now on)
    ring_interest(c);
  } else {
    epoll_interest(c);
  }
}

// ---------------------------------------------------------------- the I/O layer

bool Shard::io_attach(Conn* c) {
  if (ring_) {
    c->registered = true;
    c->armed = 0;
    ring_interest(c);
    return true;
  }
  return epoll_attach(c);
}

void Shard::io_detach(Conn* c) {
  if (ring_) {
    ring_detach(c);
  } else {
    epoll_detach(c);
  }
  c->registered = false;
  c->armed = 0;
}

void Shard::io_failed(Conn* c, int err, const char* op) {
  // A read or send failed for good (the layer handled EAGAIN and EINTR): a reset by the peer
  // ends the connection as such; anything else is reported first.
  if (classify_io_errno(err) != IoFailure::other) {
    abort_conn(c, CloseReason::reset);
    return;
  }
  warn(WarningCode::io_error, Severity::warning, c->id(), err,
       errno_message((std::string(op) + " failed for " + c->pub.getip()).c_str(), err));
  abort_conn(c, CloseReason::io_error);
}

CloseReason Shard::pending_error_reason(Conn* c) {
  // An error event: the socket's pending error (SO_ERROR, which reading it clears) says whether
  // the peer reset it.
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(c->fd(), SOL_SOCKET, SO_ERROR, &err, &len);
  return classify_io_errno(err) == IoFailure::reset || err == 0 ? CloseReason::reset
                                                                : CloseReason::io_error;
}

// ---------------------------------------------------------------- close

void Shard::set_deadline(Conn* c, std::int64_t at_ms) {
  c->deadline_ms = at_ms;
  if (!c->timed) {
    c->timed = true;
    timed_.push_back(c->state == ConnState::lingering
                         ? ConnectionId(index_, static_cast<std::uint32_t>(c->fd()), 0)
                         : c->id());
  }
}

void Shard::begin_close(Conn* c, CloseReason reason) {
  if (c->state == ConnState::closing || c->state == ConnState::lingering) return;
  c->state = ConnState::closing;
  c->reason = reason;
  // Inside on_message_recv the handler's `message` may point into the frame buffer: deliver()
  // frees it once the handler returned.
  if (c != delivering_) c->frame.clear();
  if (!c->out.empty() || reason == CloseReason::shutdown) {
    // (At stop, sends may still be appended while it flushes: it is timed either way.)
    const auto& o = core_.options();
    set_deadline(c, now_ms_ + (reason == CloseReason::shutdown ? o.shutdown_timeout.count()
                                                               : o.linger_timeout.count()));
  }
  mark_dirty(c);  // flush() finishes the close once the output is out
}

void Shard::finish_close(Conn* c) {
  // Everything owed was sent. If the peer may still be sending, closing now would answer
  // its data with RST and could destroy our last bytes in flight: send FIN and drain first.
  const bool linger = !c->peer_eof && c->reason != CloseReason::reset &&
                      c->reason != CloseReason::io_error;
  retire(c, c->reason);
  // epoll's hup is a full hang-up: nothing to drain. io_uring reports a bare FIN as one too,
  // and unread input may still be there: it lingers, or close() would answer with RST.
  if (!linger || (c->hup && !ring_) || !c->registered) {
    close_fd(c);
    return;
  }
  ::shutdown(c->fd(), SHUT_WR);
  c->state = ConnState::lingering;
  c->timed = false;
  c->hup = false;
  c->registered = true;
  c->armed = ~0u;  // force the MOD that re-tags the epoll data
  update_interest(c);
  const auto& o = core_.options();
  std::int64_t until = now_ms_ + o.linger_timeout.count();
  if (phase_ != Phase::serving && stop_deadline_ms_ < until) until = stop_deadline_ms_;
  set_deadline(c, until);
}

void Shard::abort_conn(Conn* c, CloseReason reason) {
  if (c->state == ConnState::lingering) {
    close_fd(c);
    return;
  }
  c->state = ConnState::closing;
  c->reason = reason;
  retire(c, reason);
  close_fd(c);
}

void Shard::retire(Conn* c, CloseReason reason) {
  // The identity ends here: ids become stale, the handler hears about it exactly once.
  const ConnectionId id = c->id();
  table_.retire(id.slot());
  counters_.connections.sub();
  if (c->user_paused || c->flow_paused) counters_.paused.sub();
  counters_.closes[static_cast<std::size_t>(reason)].add();
  if (reason == CloseReason::refused) counters_.refused.add();  // refused by the handler
  drop_output(c);
  if (c != delivering_) c->frame.clear();
  if (outboxes_.empty()) {
    try {
      core_.handler().on_client_disconnect(c->pub, reason);
    } catch (const std::exception& ex) {
      warn(WarningCode::handler_exception, Severity::warning, id, 0,
           std::string("on_client_disconnect threw: ") + ex.what());
    } catch (...) {
      warn(WarningCode::handler_exception, Severity::warning, id, 0,
           "on_client_disconnect threw a non-std exception");
    }
    // Typed state and timers end with the handler's view of the connection.
    c->pub.release_extras();
  } else {
    emit(c->worker, Event{id.value(), nullptr, 0, EventKind::disconnect,
                          static_cast<std::uint8_t>(reason)});
  }
}

void Shard::close_fd(Conn* c) {
  const int fd = c->fd();
  // Empty the slot before the fd number is given back: the table is server-wide, and another
  // shard's accept may get this number the moment close() returns.
  table_.clear(static_cast<std::uint32_t>(fd));
  // The ring's operations hold the socket until they end: cancel them (by tag, so a later
  // socket on this fd number is not touched); they complete into nothing.
  if (ring_) ring_detach(c);
  ring_before_close();
  ::close(fd);  // also leaves the epoll set
  core_.fds_in_use().fetch_sub(1, std::memory_order_relaxed);
  core_.listener(c->pub.listener_).connections.fetch_sub(1, std::memory_order_relaxed);
  core_.load_of(index_).fetch_sub(1, std::memory_order_relaxed);
  c->timed = false;
  graveyard_.push_back(c);
  core_.fd_released();
  if (accept_paused_) resume_accepting();  // other shards notice through fd_release_epoch
}

void Shard::drop_output(Conn* c) {
  counters_.output_bytes.sub(c->out.bytes());
  if (!c->send_armed || c->out.empty()) {  // (empty: what the send reads is orphaned already)
    c->out.clear(pool_);
    return;
  }
  // io_uring: a send still reads the head block. Cancel it; the blocks go when it completes.
  ring_orphans_.emplace_back(send_tag(c), c->out.release());
  ring_->cancel(send_tag(c), ring_tag(RingOp::ignore, 0, 0));
}

void Shard::close_slow_consumer(Conn* c) {
  // The peer is not reading: what is queued would never arrive in time. Drop it and close.
  warn(WarningCode::slow_consumer, Severity::info, c->id(), 0,
       "output of " + c->pub.getip() + " passed output_hard_cap: closing as slow consumer");
  drop_output(c);
  c->write_stall_tick = 0;
  trim_pending_ = true;
  if (c->state == ConnState::closing) {
    // Closing already (a stop flushing it): it takes no more output (accepts_output), or the
    // client would see what follows with a gap before it; it ends as what it is.
    c->reason = CloseReason::slow_consumer;
    mark_dirty(c);
    return;
  }
  begin_close(c, CloseReason::slow_consumer);
}

}  // namespace esockets::detail

// The io_uring backend's I/O layer. The connection state machine (shard_io.cpp) is the one the
// epoll backend runs; this file only turns its wishes into ring operations and completions
// back into its events:
//   accept   kAcceptsInFlight single-shot accepts per listener, each re-armed as it completes
//            (a multishot accept takes the whole backlog in one go: near the fd limit it
//            installs descriptors faster than admission can refuse them, and runs into EMFILE)
//   read     one multishot receive per reading connection, into the shard's provided-buffer
//            ring; bytes that complete while the connection is not reading (a pause, a move, a
//            takeover freeze: the cancel is in flight) are held in its FrameState, in order,
//            and delivered by the usual resume
//   write    one send (or sendmsg of up to 16 blocks) in flight per connection, queued by
//            flush() and submitted with the pass's enter; the kernel waits for room in a full
//            socket itself; its completion consumes what went out and queues the next
//   errors   while a connection does not read, a one-shot poll for errors and hang-ups only (an
//            RST on a paused connection ends it, as EPOLLERR/EPOLLHUP do with epoll)
//   wakeup   a multishot poll of the shard's eventfd (read when it fires, as with epoll)
//   PROXY    a multishot (edge-triggered) POLLIN poll while the header is incomplete
// Every submission of a pass goes to the kernel in the one io_uring_enter that also waits.
// A connection leaves this shard (move, takeover) only once its receive and its send reported
// their last completion (ring_settled), so no byte is read or sent on the old ring after the
// new owner starts, and a send cancelled on the way out is not sent twice.
// Thread: owner shard only.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "core/server_core.hpp"
#include "io/listeners.hpp"
#include "io/socket_ops.hpp"
#include "shard/shard.hpp"

namespace esockets::detail {

namespace {
constexpr unsigned kRingEntries = 4096;
constexpr unsigned kRingCompletions = 32768;
constexpr std::uint16_t kBufferGroup = 0;
constexpr unsigned kBufferCount = 128;
constexpr std::size_t kMaxBufferSize = 64 * 1024;  // bytes per completion; 8 MiB per shard
constexpr std::int64_t kAcceptRetryMs = 100;  // as the epoll backend's EMFILE pause
constexpr std::uint8_t kAcceptsInFlight = 16;  // per listener; within the fd limit's reserve
constexpr std::uint32_t kCqeBufMore = 1u << 4;  // IORING_CQE_F_BUF_MORE (6.12)
// How long a wait that expects its sends' completions may hold out for one more completion
// when some of those sends did not complete (see ring_wait).
constexpr unsigned kSendBatchWaitUs = 50;
}  // namespace

void Shard::ring_setup() {
  ring_ = std::make_unique<Ring>(kRingEntries, kRingCompletions);
  std::size_t size = core_.options().read_chunk;
  if (size > kMaxBufferSize) size = kMaxBufferSize;
  if (size < 4096) size = 4096;
  ring_->add_buffers(kBufferGroup, kBufferCount, static_cast<unsigned>(size));
  ring_wake_armed_ = false;
}

void Shard::ring_detach(Conn* c) {
  if (c->recv_armed && !c->recv_cancel) {
    ring_->cancel(recv_tag(c), ring_tag(RingOp::ignore, 0, 0));
    c->recv_cancel = true;
  }
  if (c->write_armed) ring_->cancel(write_tag(c), ring_tag(RingOp::ignore, 0, 0));
  if (c->send_armed) ring_->cancel(send_tag(c), ring_tag(RingOp::ignore, 0, 0));
}

void Shard::ring_interest(Conn* c) {
  if (c->moving || !c->registered) return;
  // Not while frames are held: they go first (process_resumes), and the socket, not our
  // memory, holds what follows, so TCP pushes back on a client we are not keeping up with.
  const bool want_read = c->state == ConnState::lingering ||
                         (c->reading() && !c->eof_seen && !c->frame.has_pending_frames());
  if (!want_read && c->reading() && !c->resume_pending &&
      (c->eof_seen || c->frame.has_pending_frames())) {
    // It reads, but what it holds goes first: make sure the loop delivers it (process_resumes
    // then marks it dirty, and the flush arms the receive).
    c->resume_pending = true;
    resumes_.push_back(c->id());
  }
  if (want_read && !c->recv_armed) {
    ring_->recv_multishot(c->fd(), kBufferGroup, recv_tag(c));
    c->recv_armed = true;
    c->recv_cancel = false;
  } else if (!want_read && c->recv_armed && !c->recv_cancel) {
    ring_->cancel(recv_tag(c), ring_tag(RingOp::ignore, 0, 0));
    c->recv_cancel = true;
  }
  // (A cancelled receive that should read again is re-armed when its last completion comes.)
  if (c->state == ConnState::lingering) return;
  // Not reading: errors and hang-ups still end it (no mask: the kernel always reports those).
  // Hung up (see ring_hangup): a one-shot poll would complete again at once; a multishot one
  // completes per wake-up, so an RST still ends the connection. (Output needs no poll: the
  // send waits for room itself.)
  if (!want_read && !c->write_armed) {
    ring_->poll(c->fd(), 0, write_tag(c), c->hup);
    c->write_armed = true;
    c->poll_multi = c->hup;
  }
}

void Shard::ring_send(Conn* c) {
  if (c->send_armed || c->out.empty() || c->state == ConnState::lingering) return;
  RingMsg* m = nullptr;
  if (ring_msgs_used_ == ring_msgs_.size()) ring_msgs_.emplace_back();
  m = &ring_msgs_[ring_msgs_used_];
  const int cnt = c->out.gather(m->iov, static_cast<int>(std::size(m->iov)));
  if (cnt == 1) {
    ring_->send(c->fd(), m->iov[0].iov_base, m->iov[0].iov_len, send_tag(c));
  } else {
    ++ring_msgs_used_;  // held until the enter that submits it
    m->hdr = msghdr{};
    m->hdr.msg_iov = m->iov;
    m->hdr.msg_iovlen = static_cast<std::size_t>(cnt);
    ring_->sendmsg(c->fd(), &m->hdr, send_tag(c));
  }
  c->send_armed = true;
  ++ring_sends_queued_;
  if (c->write_stall_tick == 0) c->write_stall_tick = tick();
}

void Shard::ring_sent(std::uint64_t tag, int res) {
  bool orphaned = false;
  for (std::size_t i = 0; i < ring_orphans_.size();) {
    if (ring_orphans_[i].first != tag) {
      ++i;
      continue;
    }
    free_chain(ring_orphans_[i].second);  // the connection dropped its output meanwhile
    ring_orphans_[i] = ring_orphans_.back();
    ring_orphans_.pop_back();
    orphaned = true;
  }
  if (orphaned && res > 0) counters_.bytes_out.add(static_cast<std::size_t>(res));
  Conn* c = ring_conn(tag);
  if (c == nullptr) return;
  c->send_armed = false;
  if (orphaned) {
    if (!c->moving) mark_dirty(c);  // a close waiting for the queue to empty goes on
    return;
  }
  if (res > 0) {
    output_sent(c, static_cast<std::size_t>(res));
    if (!c->moving) mark_dirty(c);  // flush(): watermarks, then the rest or the close
    return;
  }
  // Cancelled (a move or takeover; what did not go out goes with it), or nothing sent: retried.
  if (res == 0 || res == -ECANCELED || res == -EAGAIN || res == -EINTR) {
    if (!c->moving) mark_dirty(c);
    return;
  }
  const int err = -res;
  if (c->state == ConnState::lingering) return;
  if (c->moving) {
    // In a batch on its way to another shard: its record must not end here (as a receive's
    // error then); the new shard ends it after what it holds is delivered.
    c->eof_seen = true;
    c->reset_seen = true;
    return;
  }
  io_failed(c, err, "send");
}

bool Shard::ring_settled(const std::vector<Conn*>& conns) const {
  if (!ring_) return true;
  for (const Conn* c : conns) {
    if (c->recv_armed || c->write_armed || c->send_armed) return false;
  }
  return true;
}

bool Shard::ring_listeners_settled() const {
  if (!ring_) return true;
  for (const ShardListener& l : listeners_) {
    if (l.accepts_armed > 0) return false;
  }
  return true;
}

void Shard::ring_listen(std::size_t li, bool on) {
  ShardListener& l = listeners_[li];
  l.watched = on;
  const std::uint64_t tag = ring_tag(RingOp::accept, static_cast<std::uint32_t>(li), 0);
  if (on && !l.accept_cancel) {
    // (While a cancel is in flight, the last completion tops them up again.)
    while (l.accepts_armed < kAcceptsInFlight) {
      ring_->accept(l.fd, tag);
      ++l.accepts_armed;
    }
  } else if (!on && l.accepts_armed > 0 && !l.accept_cancel) {
    ring_->cancel(tag, ring_tag(RingOp::ignore, 0, 0), true);
    l.accept_cancel = true;
    // The armed accept holds the listening socket: let the kernel see the cancel now, so a
    // listener that is closed next leaves its reuseport group at once.
    ring_->submit();
    (void)ring_->enter(false, 0);
  }
}

void Shard::ring_pending(int fd, bool on) {
  auto it = pending_.find(fd);
  if (it == pending_.end()) return;
  const std::uint64_t tag = ring_tag(RingOp::pending, static_cast<std::uint32_t>(fd), it->second.seq);
  if (on) {
    ring_->poll(fd, POLLIN | POLLRDHUP, tag, true);
  } else {
    ring_->cancel(tag, ring_tag(RingOp::ignore, 0, 0));
  }
}

int Shard::ring_wait(int timeout) {
  // One enter: every operation queued this pass is submitted, then we sleep for completions.
  ring_arm_wakeup();
  // Sends usually complete during the submission: wait for one completion beyond them, for
  // at most kSendBatchWaitUs more if some did not (a full socket), then take what there is.
  const int r = ring_->enter(timeout != 0, timeout, 1 + ring_sends_queued_,
                             ring_sends_queued_ > 0 ? kSendBatchWaitUs : 0);
  ring_sends_queued_ = 0;
  if (ring_->all_submitted()) ring_msgs_used_ = 0;  // the kernel has copied the sendmsg headers
  if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN) {
    warn(WarningCode::engine_error, Severity::error, {}, -r,
         errno_message("io_uring_enter failed", -r));
  }
  return 0;
}

void Shard::ring_arm_wakeup() {
  if (ring_wake_armed_) return;
  // Multishot, edge-triggered: one completion per notify() that found us asleep (armed on a
  // readable eventfd, it completes at once).
  ring_->poll(wake_.fd(), POLLIN, ring_tag(RingOp::wake, 0, 0), true);
  ring_wake_armed_ = true;
}

int Shard::ring_reap() {
  const unsigned n = ring_->reap([this](const io_uring_cqe& cqe) {
    try {
      ring_completion(cqe);
    } catch (const std::exception& ex) {
      if (Conn* c = ring_conn(cqe.user_data)) fail_conn(c, ex.what());
    }
  });
  ring_->publish();
  return static_cast<int>(n);
}

Conn* Shard::ring_conn(std::uint64_t user_data) const {
  const auto op = static_cast<RingOp>(user_data >> 60);
  if (op != RingOp::recv && op != RingOp::write && op != RingOp::send) return nullptr;
  Conn* c = table_.at(static_cast<std::uint32_t>((user_data >> 32) & 0xffffffu), index_);
  // Same slot, same generation: this connection (live or lingering), not a later one on the fd.
  if (c == nullptr || c->id().generation() != static_cast<std::uint32_t>(user_data)) return nullptr;
  return c;
}

void Shard::ring_completion(const io_uring_cqe& cqe) {
  const auto op = static_cast<RingOp>(cqe.user_data >> 60);
  const bool more = (cqe.flags & IORING_CQE_F_MORE) != 0;
  switch (op) {
    case RingOp::recv: {
      Conn* c = ring_conn(cqe.user_data);
      if ((cqe.flags & IORING_CQE_F_BUFFER) != 0) {
        const auto bid = static_cast<std::uint16_t>(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
        const bool buf_more = (cqe.flags & kCqeBufMore) != 0;
        if (c != nullptr && cqe.res > 0) {
          try {
            ring_received(c, ring_->buffer(bid), static_cast<std::size_t>(cqe.res));
          } catch (...) {
            ring_->used(bid, cqe.res, buf_more);
            throw;
          }
        }
        ring_->used(bid, cqe.res, buf_more);
      }
      if (c == nullptr) return;  // closed, moved or taken over since: nothing to do
      // ring_received may have closed it: look again before touching the record.
      c = ring_conn(cqe.user_data);
      if (c == nullptr) return;
      if (!more) {
        c->recv_armed = false;
        c->recv_cancel = false;
      }
      if (cqe.res <= 0) {
        ring_recv_done(c, cqe.res);
        c = ring_conn(cqe.user_data);
        if (c == nullptr) return;
      }
      // Ended (a cancel, no free buffer, EOF, an error): armed again if it still reads.
      if (!more) ring_interest(c);
      return;
    }
    case RingOp::write: {
      Conn* c = ring_conn(cqe.user_data);
      if (c == nullptr) return;
      const bool watch = c->poll_multi;
      if (!more) {
        c->write_armed = false;
        c->poll_multi = false;
      }
      if (c->moving || c->state == ConnState::lingering) return;
      if (cqe.res < 0) {  // cancelled (replaced, or the connection reads again)
        if (!more) ring_interest(c);
        return;
      }
      const auto ev = static_cast<std::uint32_t>(cqe.res);
      if (watch) {
        // A hung-up connection's watch: only an error (RST) or a full hang-up of a closing one
        // ends it; the FIN it reports first (and any later wake-up) changes nothing.
        if ((ev & POLLERR) != 0 || c->reset_seen ||
            ((ev & POLLHUP) != 0 &&
             (c->state == ConnState::closing || c->state == ConnState::half_closed))) {
          ring_hangup(c, ev);
        } else if (!more) {
          ring_interest(c);
        }
        return;
      }
      if ((ev & (POLLERR | POLLHUP | POLLRDHUP)) != 0 && !c->reading()) {
        ring_hangup(c, ev);
        return;
      }
      mark_dirty(c);  // it reads again: the receive sees what the poll saw
      return;
    }
    case RingOp::send:
      ring_sent(cqe.user_data, cqe.res);
      return;
    case RingOp::accept:
      ring_accept_done(static_cast<std::size_t>((cqe.user_data >> 32) & 0xffffffu), cqe.res);
      return;
    case RingOp::wake:
      wake_.drain_eventfd();
      if (!more) ring_wake_armed_ = false;  // re-armed by the next reap
      return;
    case RingOp::pending: {
      const int fd = static_cast<int>((cqe.user_data >> 32) & 0xffffffu);
      auto it = pending_.find(fd);
      if (it == pending_.end() || it->second.seq != static_cast<std::uint32_t>(cqe.user_data)) return;
      if (cqe.res == -ECANCELED) return;
      const std::uint32_t ev = cqe.res < 0 ? static_cast<std::uint32_t>(EPOLLERR)
                                           : static_cast<std::uint32_t>(cqe.res);
      pending_ready(fd, ev);
      it = pending_.find(fd);
      if (!more && it != pending_.end() && it->second.seq == static_cast<std::uint32_t>(cqe.user_data)) {
        ring_pending(fd, true);  // still waiting for the rest of its header
      }
      return;
    }
    case RingOp::ignore:
      return;
  }
}

void Shard::ring_hangup(Conn* c, std::uint32_t ev) {
  // A connection that does not read saw an error or a hang-up: as epoll's dispatch does.
  if (c->reset_seen) {
    abort_conn(c, CloseReason::reset);
    return;
  }
  if ((ev & POLLERR) != 0) {
    abort_conn(c, pending_error_reason(c));
    return;
  }
  if ((ev & POLLHUP) != 0 &&
      (c->state == ConnState::closing || c->state == ConnState::half_closed)) {
    abort_conn(c, c->reason);
    return;
  }
  // A hang-up, or only the peer's FIN (io_uring always reports POLLRDHUP, and a one-shot poll
  // would report it again at once): from now on a multishot watch (one completion per
  // wake-up, so an RST still ends it) until it reads, which then sees the end; output still
  // owed goes out through its send, which waits for room (not for the FIN).
  c->hup = true;
  ring_interest(c);
}

void Shard::ring_received(Conn* c, const char* p, std::size_t n) {
  if (c->state == ConnState::lingering) return;  // unread input is discarded, as with recv()
  counters_.bytes_in.add(n);
  if (c->state != ConnState::open) return;  // closing or half-closed: no more input delivered
  if (!c->reading() || c->moving || c->eof_seen || c->frame.has_pending_frames()) {
    // Not reading, or frames are held ahead of these bytes: keep them behind, in order. They
    // arrived now: the idle clock restarts and a partial frame's clock starts (resume_reading
    // restarts both again, as for input the kernel held).
    Framer::stash(c->frame, p, n);
    c->last_read_tick = tick();
    if (c->frame_start_tick == 0) c->frame_start_tick = c->last_read_tick;
    if (c->reading() && !c->moving && !c->resume_pending) {
      c->resume_pending = true;
      resumes_.push_back(c->id());
    }
    return;
  }
  const ConnectionId id = c->id();
  c->last_read_tick = tick();
  deliver(c, p, n);
  if (table_.find(id, index_) != c) return;
  if (c->frame.buffered() == 0) {
    c->frame_start_tick = 0;
  } else if (c->frame_start_tick == 0) {
    c->frame_start_tick = c->last_read_tick;
  }
  if (!c->reading()) mark_dirty(c);  // a pause or close: the receive is cancelled in flush
}

void Shard::ring_recv_done(Conn* c, int res) {
  if (res == 0) {
    if (c->state == ConnState::lingering) {
      close_fd(c);  // the peer's FIN: the lingering close is complete
      return;
    }
    if (c->state != ConnState::open) {
      c->peer_eof = true;  // no FIN of ours is owed a drain: finish_close() need not linger
      return;
    }
    if (c->reading() && !c->moving && !c->frame.has_pending_frames()) {
      on_eof(c);
      return;
    }
    c->eof_seen = true;  // delivered after the frames held before it (process_resumes)
    return;
  }
  // A cancel, or every provided buffer in use: the caller re-arms it if it still reads.
  if (res == -ECANCELED || res == -ENOBUFS) return;
  const int err = -res;
  if (c->state == ConnState::lingering) {
    close_fd(c);
    return;
  }
  if (c->moving) {
    // It is in a batch on its way to another shard (the cancel raced with the error): its
    // record must not end here; the new shard ends it after what it holds is delivered.
    c->eof_seen = true;
    if (classify_io_errno(err) == IoFailure::reset) c->reset_seen = true;
    return;
  }
  const IoFailure f = classify_io_errno(err);
  if (f == IoFailure::again || f == IoFailure::interrupted) return;
  io_failed(c, err, "read");
}

void Shard::ring_accept_done(std::size_t li, int res) {
  if (li >= listeners_.size()) return;
  ShardListener& l = listeners_[li];
  if (l.accepts_armed > 0) --l.accepts_armed;
  if (l.accepts_armed == 0) l.accept_cancel = false;
  if (res >= 0) ring_accepted(li, res);
  if (l.accepts_armed == 0 && l.drain_fd >= 0) {
    const int lfd = l.drain_fd;  // our accepts are out of its wait queue: see close_listeners()
    l.drain_fd = -1;
    if (phase_ == Phase::serving) accept_from(li, lfd);
  }
  if (res < 0 && res != -ECANCELED) {
    const int err = -res;
    switch (classify_accept_errno(err)) {
      case AcceptFailure::again:
      case AcceptFailure::retry:
        break;
      case AcceptFailure::exhausted:
        // The accepts in flight fail together: one failure (and one pause) per round, as
        // epoll's accept loop counts it.
        if (accept_paused_) break;
        counters_.accept_errors.add();
        warn(WarningCode::fd_exhausted, Severity::error, {}, err,
             errno_message("accept failed, pausing accepts until a connection closes", err));
        pause_accepting(now_ms_ + kAcceptRetryMs);
        break;
      case AcceptFailure::other:
        counters_.accept_errors.add();
        warn(WarningCode::accept_failed, Severity::error, {}, err, errno_message("accept failed", err));
        break;
    }
  }
  // Still wanted: keep kAcceptsInFlight armed.
  if (l.watched && l.fd >= 0 && !l.accept_cancel) ring_listen(li, true);
}

void Shard::ring_accepted(std::size_t li, int fd) {
  ListenerState& ls = core_.listener(li);
  counters_.accepts.add();
  ls.accepts.fetch_add(1, std::memory_order_relaxed);
  if (phase_ != Phase::serving) {
    // Accepted by the kernel while our listener was being closed: refused as admission would.
    counters_.refused.add();
    counters_.closes[static_cast<std::size_t>(CloseReason::refused)].add();
    ls.refused.fetch_add(1, std::memory_order_relaxed);
    close_refused(fd);
    return;
  }
  if (!admit(fd, li)) return;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    drop_accepted(fd, static_cast<std::uint16_t>(li));  // reset before we saw it
    return;
  }
  accepted(fd, li, to_peer_address(ss));
}

}  // namespace esockets::detail

// The epoll backend's I/O layer. The connection state machine (shard_io.cpp) is the one the
// io_uring backend runs too; this file only turns its wishes into epoll registrations and
// system calls, and readiness back into its events:
//   accept   each listener in the epoll set (EPOLLEXCLUSIVE for a Unix listener every shard
//            shares); readiness runs accept_ready's budgeted accept4 loop (shard_accept.cpp)
//   read     level-triggered EPOLLIN while a connection reads; up to kReadBudget recv calls
//            per readiness, straight into a payload buffer with raw framing and workers
//   write    flush() calls epoll_write: sendmsg of up to kIovMax blocks until the socket is
//            full, then EPOLLOUT until it has room
//   errors   EPOLLERR ends a connection after what arrived before it is delivered; EPOLLHUP
//            while not reading takes it out of the set (a level-triggered HUP would spin)
//   wakeup   the shard's eventfd in the set (kWakeTag)
//   PROXY    an edge-triggered EPOLLIN registration while the header is incomplete
// A lingering socket's tag is its retired identity (generation 0), so its readiness only
// drains input until the peer's FIN.
// Thread: owner shard only.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "core/server_core.hpp"
#include "io/socket_ops.hpp"
#include "shard/shard.hpp"

namespace esockets::detail {

namespace {
constexpr int kReadBudget = 4;  // reads per readable event (fairness)
constexpr int kIovMax = 64;
}  // namespace

void Shard::epoll_setup() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw std::system_error(errno, std::generic_category(), "esockets: epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_.fd(), &ev) != 0) {
    throw std::system_error(errno, std::generic_category(), "esockets: epoll_ctl(eventfd)");
  }
}

int Shard::epoll_wait_events(epoll_event* events, int timeout) {
  const int n = ::epoll_wait(epfd_, events, kMaxEvents, timeout);
  if (n < 0 && errno != EINTR) {
    const int err = errno;
    warn(WarningCode::engine_error, Severity::error, {}, err, errno_message("epoll_wait failed", err));
  }
  return n;
}

void Shard::epoll_dispatch(const epoll_event* events, int n) {
  for (int i = 0; i < n; ++i) {
    try {
      dispatch(events[i]);
    } catch (const std::exception& ex) {
      // One connection's failure (e.g. out of memory while framing) must not end the shard.
      on_event_failure(events[i], ex.what());
    }
  }
}

void Shard::dispatch(const epoll_event& ev) {
  const std::uint64_t tag = ev.data.u64;
  if (tag == kWakeTag) {
    wake_.drain_eventfd();
    return;
  }
  const ConnectionId id = ConnectionId::from_value(tag);
  if (id.generation() == 0 && id.shard() == 0 && id.slot() >= kListenerSlot0 &&
      id.slot() < kListenerSlot0 + listeners_.size()) {
    accept_ready(id.slot() - kListenerSlot0);
    return;
  }
  if (id.generation() == 0 && id.shard() == kPendingShard) {
    pending_ready(static_cast<int>(id.slot()), ev.events);
    return;
  }
  if (id.generation() == 0) {  // a lingering socket: its identity is retired
    Conn* c = table_.at(id.slot(), index_);
    if (c != nullptr && c->state == ConnState::lingering) linger_readable(c);
    return;
  }
  Conn* c = table_.find(id, index_);
  if (c == nullptr) return;  // closed earlier in this batch (or long ago): drop
  const std::uint32_t e = ev.events;
  if (e & EPOLLERR) {
    const CloseReason reason = pending_error_reason(c);
    if (c->reading() && (e & EPOLLIN)) {
      readable(c);  // deliver what arrived before the error; the read reports it
      if (table_.find(id, index_) == nullptr) return;
    }
    abort_conn(c, reason);
    return;
  }
  if (e & (EPOLLIN | EPOLLHUP)) {
    if (c->reading()) {
      readable(c);
    } else if (e & EPOLLHUP) {
      // Hang-up while we are not reading (paused / closing): level-triggered HUP would spin, so
      // leave the epoll set until reading resumes; a closing connection cannot be written to.
      if (c->state == ConnState::closing || c->state == ConnState::half_closed) {
        abort_conn(c, c->reason);
        return;
      }
      c->hup = true;
      update_interest(c);
    }
  }
  if (table_.find(id, index_) != c) return;
  if (e & EPOLLOUT) writable(c);
}

void Shard::on_event_failure(const epoll_event& ev, const char* what) {
  Conn* c = table_.find(ConnectionId::from_value(ev.data.u64), index_);
  if (c == nullptr) {
    warn(WarningCode::engine_error, Severity::error, {}, 0,
         std::string("event handling failed: ") + what);
    return;
  }
  fail_conn(c, what);
}

void Shard::readable(Conn* c) {
  const ConnectionId id = c->id();
  if (c->frame.has_pending_frames()) {
    // Frames read earlier are still held (a pause stopped their delivery): they go first, and
    // nothing more is read until they are all out, so held input never grows past one read.
    deliver(c, nullptr, 0);
    if (table_.find(id, index_) != c || !c->reading() || c->frame.has_pending_frames()) return;
  }
  for (int i = 0; i < kReadBudget; ++i) {
    char* buf = rbuf_.get();
    if (lend_reads_) {
      // Raw framing with workers: a large read is handed over as it is (message_payload).
      if (lend_ == nullptr) lend_ = payloads_->get();
      buf = lend_->data();
    }
    ssize_t n = ::recv(c->fd(), buf, rbuf_size_, 0);
    if (n > 0) {
      counters_.bytes_in.add(static_cast<std::uint64_t>(n));
      c->last_read_tick = tick();
      deliver(c, buf, static_cast<std::size_t>(n));
      if (table_.find(id, index_) != c) return;
      if (c->frame.buffered() == 0) {
        c->frame_start_tick = 0;
      } else if (c->frame_start_tick == 0) {
        c->frame_start_tick = c->last_read_tick;
      }
      if (!c->reading()) return;
      if (static_cast<std::size_t>(n) < rbuf_size_) return;  // drained: skip the EAGAIN call
      continue;
    }
    if (n == 0) {
      on_eof(c);
      return;
    }
    const int err = errno;
    const IoFailure f = classify_io_errno(err);
    if (f == IoFailure::again) return;
    if (f == IoFailure::interrupted) continue;
    io_failed(c, err, "read");
    return;
  }
}

void Shard::linger_readable(Conn* c) {
  for (int i = 0; i < kReadBudget; ++i) {
    ssize_t n = ::recv(c->fd(), rbuf_.get(), rbuf_size_, 0);
    if (n > 0) continue;  // unread input is discarded so close() sends FIN, not RST
    if (n < 0 && classify_io_errno(errno) == IoFailure::again) return;
    if (n < 0 && classify_io_errno(errno) == IoFailure::interrupted) continue;
    close_fd(c);
    return;
  }
}

bool Shard::epoll_write(Conn* c) {
  while (!c->out.empty()) {
    iovec iov[kIovMax];
    const int cnt = c->out.gather(iov, kIovMax);
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = static_cast<std::size_t>(cnt);
    ssize_t n = ::sendmsg(c->fd(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      std::size_t gathered = 0;
      for (int i = 0; i < cnt; ++i) gathered += iov[i].iov_len;
      output_sent(c, static_cast<std::size_t>(n));
      after_output_change(c);
      if (table_.find(c->id(), index_) != c) return false;
      if (static_cast<std::size_t>(n) < gathered) break;  // socket buffer full
      continue;
    }
    const int err = errno;
    IoFailure f = classify_io_errno(err);
    if (f == IoFailure::interrupted) continue;
    if (f == IoFailure::again) {
      if (c->write_stall_tick == 0) c->write_stall_tick = tick();
      break;
    }
    io_failed(c, err, "send");
    return false;
  }
  return true;
}

void Shard::epoll_interest(Conn* c) {
  std::uint32_t want = 0;
  if (c->state == ConnState::lingering) {
    want = EPOLLIN;
  } else {
    if (c->reading() && !c->hup) want |= EPOLLIN;
    if (!c->out.empty()) want |= EPOLLOUT;
  }
  const bool should_register = !(c->hup && want == 0);
  if (should_register == c->registered && want == c->armed) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = c->state == ConnState::lingering
                    ? ConnectionId(index_, static_cast<std::uint32_t>(c->fd()), 0).value()
                    : c->id().value();
  int op = !should_register ? EPOLL_CTL_DEL : (c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD);
  if (::epoll_ctl(epfd_, op, c->fd(), &ev) != 0) {
    const int err = errno;
    warn(WarningCode::io_error, Severity::error, c->id(), err, errno_message("epoll_ctl failed", err));
  }
  c->registered = should_register;
  c->armed = should_register ? want : 0;
}

bool Shard::epoll_attach(Conn* c) {
  c->armed = EPOLLIN;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = c->id().value();
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, c->fd(), &ev) != 0) return false;
  c->registered = true;
  return true;
}

void Shard::epoll_detach(Conn* c) {
  if (c->registered) ::epoll_ctl(epfd_, EPOLL_CTL_DEL, c->fd(), nullptr);
}

bool Shard::epoll_listen(std::size_t li, bool on) {
  ShardListener& l = listeners_[li];
  if (!on) {
    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, l.fd, nullptr);
    l.watched = false;
    return true;
  }
  epoll_event ev{};
  // A Unix listener's one socket is in every shard's epoll set: wake one shard per connection.
  ev.events = EPOLLIN | (l.shared ? EPOLLEXCLUSIVE : 0u);
  ev.data.u64 = listener_tag(li);
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, l.fd, &ev) != 0) return false;
  l.watched = true;
  return true;
}

bool Shard::epoll_pending(int fd, bool on) {
  if (!on) return ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr) == 0;
  epoll_event ev{};
  // Edge-triggered: a header that is still incomplete stays in the socket (peeked, not read)
  // and must not wake us again until more arrives.
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = ConnectionId(kPendingShard, static_cast<std::uint32_t>(fd), 0).value();
  return ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0;
}

}  // namespace esockets::detail

// Accepting: each listener's budgeted accept loop, admission (server-wide and per listener),
// the EMFILE pause, and setting up a new connection (here or, with least_loaded balance, on
// another shard; after its PROXY header when the listener asks for one).
// Thread: owner shard only.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "io/listeners.hpp"
#include "core/server_core.hpp"
#include "shard/shard.hpp"
#include "io/socket_ops.hpp"
#include "mailbox/worker.hpp"

namespace esockets::detail {

namespace {
constexpr int kAcceptBudget = 256;
constexpr std::int64_t kAcceptRetryMs = 100;  // fallback re-arm after EMFILE
}  // namespace

bool Shard::watch_listener(std::size_t li, bool on) {
  ShardListener& l = listeners_[li];
  if (l.fd < 0 || l.watched == on) return true;
  if (ring_) {
    ring_listen(li, on);
    return true;
  }
  return epoll_listen(li, on);
}

void Shard::accept_ready(std::size_t li) {
  if (accept_paused_ || phase_ != Phase::serving) return;
  const int lfd = listeners_[li].fd;
  if (lfd < 0) return;
  accept_from(li, lfd);
}

void Shard::accept_from(std::size_t li, int lfd) {
  ListenerState& ls = core_.listener(li);
  for (int i = 0; i < kAcceptBudget; ++i) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      switch (classify_accept_errno(err)) {
        case AcceptFailure::again:
          return;
        case AcceptFailure::retry:
          continue;
        case AcceptFailure::exhausted:
          counters_.accept_errors.add();
          warn(WarningCode::fd_exhausted, Severity::error, {}, err,
               errno_message("accept failed, pausing accepts until a connection closes", err));
          pause_accepting(now_ms_ + kAcceptRetryMs);
          return;
        case AcceptFailure::other:
          counters_.accept_errors.add();
          warn(WarningCode::accept_failed, Severity::error, {}, err,
               errno_message("accept failed", err));
          return;
      }
    }
    counters_.accepts.add();
    ls.accepts.fetch_add(1, std::memory_order_relaxed);
    if (!admit(fd, li)) continue;
    accepted(fd, li, to_peer_address(ss));
  }
}

void Shard::accepted(int fd, std::size_t li, const PeerAddress& peer) {
  ListenerState& ls = core_.listener(li);
  if (ls.proxy() && !ls.trusts(peer)) {
    // Not a proxy we trust: its header would lie about the client. Nothing is read.
    ls.proxy_errors.fetch_add(1, std::memory_order_relaxed);
    counters_.closes[static_cast<std::size_t>(CloseReason::proxy_error)].add();
    warn(WarningCode::proxy_error, Severity::warning, {}, 0,
         "PROXY listener " + ls.bound + ": closing a connection from " + peer.to_string() +
             ", which is not in trusted_proxies");
    drop_accepted(fd, static_cast<std::uint16_t>(li));
    return;
  }
  place_accepted(fd, peer, static_cast<std::uint16_t>(li));
}

bool Shard::admit(int fd, std::size_t li) {
  ListenerState& ls = core_.listener(li);
  auto& in_use = core_.fds_in_use();
  const std::size_t cap = ls.opts.max_connections;
  const char* which = nullptr;
  if (static_cast<std::size_t>(fd) >= table_.capacity() ||
      in_use.load(std::memory_order_relaxed) >= core_.max_connections()) {
    which = "max_connections";
  } else if (cap != 0 && ls.connections.load(std::memory_order_relaxed) >= cap) {
    which = "the listener's max_connections";
  }
  if (which != nullptr) {
    counters_.refused.add();
    counters_.closes[static_cast<std::size_t>(CloseReason::refused)].add();
    ls.refused.fetch_add(1, std::memory_order_relaxed);
    warn(WarningCode::connection_refused, Severity::warning, {}, 0,
         "connection refused on " + ls.bound + ": " + which + " (" +
             std::to_string(cap != 0 && which[0] == 't' ? cap : core_.max_connections()) +
             ") reached");
    close_refused(fd);
    return false;
  }
  in_use.fetch_add(1, std::memory_order_relaxed);
  ls.connections.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Shard::place_accepted(int fd, const PeerAddress& peer, std::uint16_t li) {
  // A Unix listener has no reuseport group to spread its clients: whichever shard the kernel
  // woke accepts, and the least loaded one serves.
  if (core_.options().balance == Balance::least_loaded || core_.listener(li).unix_socket()) {
    const std::uint32_t target = core_.pick_least_loaded(index_);  // counts it there
    if (target != index_) {
      auto* f = new FreshFd{fd, peer, li, 0};
      Command cmd{0, f, 0, CommandKind::adopt_fd, 0, static_cast<std::uint8_t>(target)};
      if (core_.post_to_shard(target, cmd)) return;
      delete f;  // its inbox is full: serve it here after all
      core_.load_of(target).fetch_sub(1, std::memory_order_relaxed);
      core_.load_of(index_).fetch_add(1, std::memory_order_relaxed);
    }
  } else {
    core_.load_of(index_).fetch_add(1, std::memory_order_relaxed);
  }
  start_connection(fd, peer, li, 0);
}

void Shard::start_connection(int fd, const PeerAddress& peer, std::uint16_t li,
                             std::int64_t deadline) {
  const ListenerState& ls = core_.listener(li);
  if (ls.proxy()) {
    begin_pending(fd, peer, li,
                  deadline != 0 ? deadline : now_ms_ + ls.opts.proxy_timeout.count());
    return;
  }
  setup_accepted(fd, peer, li, nullptr);
}

void Shard::adopt_fresh(FreshFd* raw) {
  // A socket another shard accepted (least_loaded, a Unix listener) or handed on while it
  // retired. The sender chose us while we were live; we may have begun retiring since.
  std::unique_ptr<FreshFd> f(raw);
  const bool retiring = move_req_ != nullptr && move_req_->retire;
  if (phase_ == Phase::serving && !retiring) {
    // A rebalance source takes it too: it is simply not in the batches being moved.
    start_connection(f->fd, f->peer, f->listener, f->proxy_deadline_ms);
    return;
  }
  core_.load_of(index_).fetch_sub(1, std::memory_order_relaxed);
  if (phase_ == Phase::serving) {
    // Retiring: pass it on to a shard that stays (pick_least_loaded sees live shards only).
    const std::uint32_t target = core_.pick_least_loaded(index_);  // counts it there
    if (target != index_) {
      Command cmd{0, f.get(), 0, CommandKind::adopt_fd, 0, static_cast<std::uint8_t>(target)};
      if (core_.post_to_shard(target, cmd)) {
        f.release();
        return;
      }
    }
    core_.load_of(target).fetch_sub(1, std::memory_order_relaxed);
  }
  // Stopping (or nowhere to pass it): refuse it as admission would.
  ListenerState& ls = core_.listener(f->listener);
  counters_.refused.add();
  counters_.closes[static_cast<std::size_t>(CloseReason::refused)].add();
  ls.refused.fetch_add(1, std::memory_order_relaxed);
  warn(WarningCode::connection_refused, Severity::warning, {}, 0,
       "connection refused on " + ls.bound + ": the server is stopping");
  drop_accepted(f->fd, f->listener);
}

void Shard::drop_accepted(int fd, std::uint16_t li) {
  // Admitted, never a connection: give back what admission counted.
  close_refused(fd);
  core_.fds_in_use().fetch_sub(1, std::memory_order_relaxed);
  core_.listener(li).connections.fetch_sub(1, std::memory_order_relaxed);
  core_.fd_released();
}

void Shard::close_refused(int fd) {
  // Over the limit there is no room to linger, but closing with unread input would answer the
  // client's request with RST: read what already arrived, send FIN, then close (the client
  // sees EOF; only bytes it sends after being refused can still draw a reset).
  char buf[4096];
  for (int i = 0; i < 16; ++i) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) break;
  }
  ::shutdown(fd, SHUT_WR);
  ring_before_close();
  ::close(fd);
}

void Shard::setup_accepted(int fd, const PeerAddress& peer, std::uint16_t li,
                           std::unique_ptr<ProxyInfo> proxy) {
  const bool inline_mode = outboxes_.empty();
  // TCP_NODELAY and the buffer sizes came with the socket: they are set on the listener.
  Conn* c = new Conn;
  c->pub.core_ = &core_;
  c->pub.fd_ = fd;
  c->pub.peer_ = peer;
  c->pub.listener_ = li;
  c->pub.id_ = table_.open(index_, static_cast<std::uint32_t>(fd), c);
  c->last_read_tick = tick();
  if (!io_attach(c)) {
    const int err = errno;
    warn(WarningCode::io_error, Severity::error, {}, err,
         errno_message("epoll_ctl(ADD) failed for an accepted socket", err));
    table_.clear(static_cast<std::uint32_t>(fd));
    ring_before_close();
    ::close(fd);
    core_.fds_in_use().fetch_sub(1, std::memory_order_relaxed);
    core_.listener(li).connections.fetch_sub(1, std::memory_order_relaxed);
    core_.load_of(index_).fetch_sub(1, std::memory_order_relaxed);
    counters_.closes[static_cast<std::size_t>(CloseReason::io_error)].add();
    delete c;
    return;
  }
  counters_.connections.add();
  if (takeover_frozen_) {
    c->frozen = true;  // placed here during a takeover: its input waits for the new process
    update_interest(c);
  }
  if (inline_mode) {
    if (proxy) ExtrasAccess::make(c->pub).proxy = std::move(proxy);
    bool ok = true;
    call_handler(c, [&] { ok = core_.handler().on_client_connect(c->pub); });
    if (!ok && c->state == ConnState::open) begin_close(c, CloseReason::refused);
  } else {
    const unsigned nw = static_cast<unsigned>(outboxes_.size());
    c->worker = static_cast<std::uint8_t>((static_cast<unsigned>(fd) * 2654435761u >> 8) % nw);
    auto* info = new ConnectInfo{c->pub.peer_, li, std::move(proxy), nullptr};
    emit(c->worker, Event{c->id().value(), info, static_cast<std::uint32_t>(fd),
                          EventKind::connect, 0});
  }
}

void Shard::pause_accepting(std::int64_t until_ms) {
  if (accept_paused_) return;
  for (std::size_t i = 0; i < listeners_.size(); ++i) watch_listener(i, false);
  accept_paused_ = true;
  accept_resume_ms_ = until_ms;
}

void Shard::resume_accepting() {
  if (!accept_paused_) return;
  if (takeover_frozen_) {
    accept_paused_ = false;  // a takeover holds the listeners out; thaw_all() brings them back
    return;
  }
  for (std::size_t i = 0; i < listeners_.size(); ++i) {
    if (!watch_listener(i, true)) {
      const int err = errno;
      warn(WarningCode::engine_error, Severity::error, {}, err,
           errno_message("epoll_ctl could not re-arm a listener", err));
    }
  }
  accept_paused_ = false;
}

}  // namespace esockets::detail

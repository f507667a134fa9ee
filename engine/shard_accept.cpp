// Accepting: the listener's budgeted accept loop, admission, the EMFILE pause, and setting up
// a new connection (here or, with least_loaded balance, on another shard).
// Thread: owner shard only.
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "server_core.hpp"
#include "shard.hpp"
#include "socket_ops.hpp"

namespace esockets::detail {

namespace {
constexpr int kAcceptBudget = 256;
constexpr std::int64_t kAcceptRetryMs = 100;  // fallback re-arm after EMFILE
}  // namespace

void Shard::accept_ready() {
  if (accept_paused_ || listen_fd_ < 0 || phase_ != Phase::serving) return;
  for (int i = 0; i < kAcceptBudget; ++i) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      switch (classify_accept_errno(err)) {
        case AcceptFailure::again:
          return;
        case AcceptFailure::retry:
          continue;
        case AcceptFailure::exhausted:
          counters_.accept_errors.add();
          warn(errno_message("accept failed, pausing accepts until a connection closes", err));
          pause_accepting(now_ms_ + kAcceptRetryMs);
          return;
        case AcceptFailure::other:
          counters_.accept_errors.add();
          warn(errno_message("accept failed", err));
          return;
      }
    }
    counters_.accepts.add();
    auto& in_use = core_.fds_in_use();
    if (static_cast<std::size_t>(fd) >= table_.capacity() ||
        in_use.load(std::memory_order_relaxed) >= core_.max_connections()) {
      counters_.refused.add();
      counters_.closes[static_cast<std::size_t>(CloseReason::refused)].add();
      warn("connection refused: max_connections (" + std::to_string(core_.max_connections()) +
           ") reached");
      close_refused(fd);
      continue;
    }
    in_use.fetch_add(1, std::memory_order_relaxed);
    const PeerAddress peer = to_peer_address(ss);
    if (core_.options().balance == Balance::least_loaded) {
      const std::uint32_t target = core_.pick_least_loaded(index_);  // counts it there
      if (target != index_) {
        auto* f = new FreshFd{fd, peer};
        Command cmd{0, f, 0, CommandKind::adopt_fd, 0, static_cast<std::uint8_t>(target)};
        if (core_.post_to_shard(target, cmd)) continue;
        delete f;  // its inbox is full: serve it here after all
        core_.load_of(target).fetch_sub(1, std::memory_order_relaxed);
        core_.load_of(index_).fetch_add(1, std::memory_order_relaxed);
      }
    } else {
      core_.load_of(index_).fetch_add(1, std::memory_order_relaxed);
    }
    setup_accepted(fd, peer);
  }
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
  ::close(fd);
}

void Shard::setup_accepted(int fd, const PeerAddress& peer) {
  const bool inline_mode = outboxes_.empty();
  // TCP_NODELAY and the buffer sizes came with the socket: they are set on the listener.
  Conn* c = new Conn;
  c->pub.core_ = &core_;
  c->pub.fd_ = fd;
  c->pub.peer_ = peer;
  c->pub.id_ = table_.open(index_, static_cast<std::uint32_t>(fd), c);
  c->last_read_tick = tick();
  c->armed = EPOLLIN;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = c->id().value();
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    warn(errno_message("epoll_ctl(ADD) failed for an accepted socket", errno));
    table_.clear(static_cast<std::uint32_t>(fd));
    ::close(fd);
    core_.fds_in_use().fetch_sub(1, std::memory_order_relaxed);
    core_.load_of(index_).fetch_sub(1, std::memory_order_relaxed);
    counters_.closes[static_cast<std::size_t>(CloseReason::io_error)].add();
    delete c;
    return;
  }
  counters_.connections.add();
  if (inline_mode) {
    bool ok = true;
    call_handler(c, [&] { ok = core_.handler().on_client_connect(c->pub); });
    if (!ok && c->state == ConnState::open) begin_close(c, CloseReason::refused);
  } else {
    const unsigned nw = static_cast<unsigned>(outboxes_.size());
    c->worker = static_cast<std::uint8_t>((static_cast<unsigned>(fd) * 2654435761u >> 8) % nw);
    auto* p = new PeerAddress(c->pub.peer_);
    emit(c->worker, Event{c->id().value(), p, static_cast<std::uint32_t>(fd),
                          EventKind::connect, 0});
  }
}

void Shard::pause_accepting(std::int64_t until_ms) {
  if (accept_paused_) return;
  epoll_event ev{};
  ev.events = 0;
  ev.data.u64 = kListenerTag;
  ::epoll_ctl(epfd_, EPOLL_CTL_MOD, listen_fd_, &ev);
  accept_paused_ = true;
  accept_resume_ms_ = until_ms;
}

void Shard::resume_accepting() {
  if (!accept_paused_ || listen_fd_ < 0) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenerTag;
  ::epoll_ctl(epfd_, EPOLL_CTL_MOD, listen_fd_, &ev);
  accept_paused_ = false;
}

}  // namespace esockets::detail

// The PROXY protocol stage: a connection of a listener with proxy_protocol is held outside the
// connection table until its header arrives. The header is read with MSG_PEEK and consumed only
// once whole, so the socket carries no state but its deadline: a retiring shard hands such
// sockets on as they are. Nothing of this stage reaches the handler.
// Thread: owner shard only.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "io/listeners.hpp"
#include "io/proxy_header.hpp"
#include "core/server_core.hpp"
#include "shard/shard.hpp"
#include "io/socket_ops.hpp"

namespace esockets::detail {

void Shard::begin_pending(int fd, const PeerAddress& peer, std::uint16_t li,
                          std::int64_t deadline) {
  if (ring_) {
    pending_[fd] = PendingProxy{peer, li, deadline, ++pending_seq_};
    ring_pending(fd, true);
    pending_ready(fd, EPOLLIN);  // the header may be here already
    return;
  }
  pending_[fd] = PendingProxy{peer, li, deadline};
  if (!epoll_pending(fd, true)) {
    const int err = errno;
    warn(WarningCode::io_error, Severity::error, {}, err,
         errno_message("epoll_ctl(ADD) failed for a PROXY-stage socket", err));
    fail_pending(fd, CloseReason::io_error, nullptr);
    return;
  }
  pending_ready(fd, EPOLLIN);  // the header may be here already
}

void Shard::pending_ready(int fd, std::uint32_t events) {
  auto it = pending_.find(fd);
  if (it == pending_.end()) return;
  const ListenerState& ls = core_.listener(it->second.listener);
  const std::size_t cap = ls.opts.max_proxy_header;
  if (peek_buf_.size() < cap) peek_buf_.resize(cap);
  const ssize_t n = ::recv(fd, peek_buf_.data(), cap, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0) {
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) {
      if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) == 0) return;
    }
    fail_pending(fd, CloseReason::proxy_error, "the connection failed before its PROXY header");
    return;
  }
  if (n == 0) {
    fail_pending(fd, CloseReason::proxy_error, "the connection closed without a PROXY header");
    return;
  }
  ProxyInfo info;
  const ProxyParseResult r = parse_proxy_header(
      std::string_view(peek_buf_.data(), static_cast<std::size_t>(n)), ls.opts.proxy_protocol, cap,
      info);
  switch (r.status) {
    case ProxyParse::need_more:
      if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
        fail_pending(fd, CloseReason::proxy_error, "the connection closed in the PROXY header");
      } else if (static_cast<std::size_t>(n) >= cap) {
        fail_pending(fd, CloseReason::proxy_error, "PROXY header over max_proxy_header");
      }
      return;
    case ProxyParse::malformed:
      fail_pending(fd, CloseReason::proxy_error, r.error != nullptr ? r.error : "malformed");
      return;
    case ProxyParse::done:
      break;
  }
  // Consume exactly the header; what follows is the client's and stays in the socket.
  const ssize_t got = ::recv(fd, peek_buf_.data(), r.consumed, MSG_DONTWAIT);
  if (got != static_cast<ssize_t>(r.consumed)) {
    fail_pending(fd, CloseReason::proxy_error, "the PROXY header could not be read");
    return;
  }
  const PendingProxy p = it->second;
  unwatch_pending(fd);
  pending_.erase(fd);
  const PeerAddress peer = info.local || info.source.family == 0 ? p.peer : info.source;
  setup_accepted(fd, peer, p.listener, std::make_unique<ProxyInfo>(std::move(info)));
}

void Shard::unwatch_pending(int fd) {
  if (ring_) {
    ring_pending(fd, false);
  } else {
    epoll_pending(fd, false);
  }
}

void Shard::fail_pending(int fd, CloseReason reason, const char* why) {
  auto it = pending_.find(fd);
  if (it == pending_.end()) return;
  const PendingProxy p = it->second;
  unwatch_pending(fd);
  pending_.erase(fd);
  ListenerState& ls = core_.listener(p.listener);
  counters_.closes[static_cast<std::size_t>(reason)].add();
  if (reason == CloseReason::proxy_timeout) {
    ls.proxy_timeouts.fetch_add(1, std::memory_order_relaxed);
  } else if (reason == CloseReason::proxy_error) {
    ls.proxy_errors.fetch_add(1, std::memory_order_relaxed);
  }
  if (why != nullptr) {
    warn(reason == CloseReason::proxy_timeout ? WarningCode::proxy_timeout : WarningCode::proxy_error,
         Severity::warning, {}, 0,
         "PROXY listener " + ls.bound + ": closing " + p.peer.to_string() + ": " + why);
  }
  core_.load_of(index_).fetch_sub(1, std::memory_order_relaxed);
  drop_accepted(fd, p.listener);
}

void Shard::sweep_pending() {
  std::vector<int> late;
  for (const auto& [fd, p] : pending_) {
    if (now_ms_ >= p.deadline_ms) late.push_back(fd);
  }
  for (int fd : late) {
    fail_pending(fd, CloseReason::proxy_timeout, "no complete PROXY header within proxy_timeout");
  }
}

void Shard::hand_over_pending() {
  // A retiring shard: sockets still in their PROXY stage go on to the shards that stay, with
  // their deadline (nothing of them was read).
  if (pending_.empty()) return;
  const std::vector<std::uint32_t> targets =
      move_req_ ? move_req_->targets : std::vector<std::uint32_t>{};
  std::size_t rr = 0;
  std::vector<int> fds;
  for (const auto& [fd, p] : pending_) fds.push_back(fd);
  for (int fd : fds) {
    const PendingProxy p = pending_.at(fd);
    if (targets.empty()) {
      fail_pending(fd, CloseReason::shutdown, nullptr);
      continue;
    }
    const std::uint32_t target = targets[rr++ % targets.size()];
    unwatch_pending(fd);
    auto* f = new FreshFd{fd, p.peer, p.listener, p.deadline_ms};
    core_.load_of(target).fetch_add(1, std::memory_order_relaxed);
    if (core_.post_to_shard(target, Command{0, f, 0, CommandKind::adopt_fd, 0,
                                            static_cast<std::uint8_t>(target)})) {
      pending_.erase(fd);
      core_.load_of(index_).fetch_sub(1, std::memory_order_relaxed);
      continue;
    }
    delete f;  // its inbox is full: this client must retry
    core_.load_of(target).fetch_sub(1, std::memory_order_relaxed);
    fail_pending(fd, CloseReason::shutdown, nullptr);
  }
}

void Shard::close_all_pending() {
  std::vector<int> fds;
  for (const auto& [fd, p] : pending_) fds.push_back(fd);
  for (int fd : fds) fail_pending(fd, CloseReason::shutdown, nullptr);
}

}  // namespace esockets::detail

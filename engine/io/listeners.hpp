// Listeners: ServerOptions::listeners resolved (addresses parsed, trusted proxies parsed), the
// sockets they bind, and their server-wide counters.
// Thread: resolved and opened on the thread that runs Server::start / set_shards; the counters
// are atomics updated by every shard; everything else is read-only once serving.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "esockets/listener.hpp"
#include "esockets/options.hpp"
#include "esockets/stats.hpp"
#include "io/proxy_header.hpp"
#include "io/socket_ops.hpp"

namespace esockets::detail {

struct ListenerState {
  ListenerOptions opts;
  ListenAddress addr;
  std::vector<Cidr> trusted;  // with a PROXY listener over TCP
  int backlog = 0;
  int shared_fd = -1;    // Unix: the one socket every shard polls (EPOLLEXCLUSIVE)
  std::string bound;     // ListenerInfo::address once bound
  std::uint16_t port = 0;
  dev_t unix_dev = 0;    // the socket file we created (removed at stop only if still ours)
  ino_t unix_ino = 0;

  std::atomic<std::uint64_t> connections{0};  // admitted and not yet closed (PROXY stage too)
  std::atomic<std::uint64_t> accepts{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::uint64_t> proxy_errors{0};
  std::atomic<std::uint64_t> proxy_timeouts{0};

  bool unix_socket() const {
    return addr.kind == ListenAddress::Kind::unix_path ||
           addr.kind == ListenAddress::Kind::unix_abstract;
  }
  bool proxy() const { return opts.proxy_protocol != ProxyProtocol::off; }
  // True if a PROXY header may come from this peer (Unix peers are always trusted).
  bool trusts(const PeerAddress& peer) const;
  ListenerInfo info() const;
  ListenerStats stats() const;
};

using Listeners = std::vector<std::unique_ptr<ListenerState>>;

// How ListenerInfo::address spells a bound listener: "host:port", "[v6]:port", "unix:/path",
// "unix:@name".
std::string tcp_text(const ListenAddress& a, std::uint16_t port);
std::string unix_text(const ListenAddress& a);

// At most this many listeners per server (epoll tags reserve that many slots).
inline constexpr std::size_t kMaxListeners = 64;

// ServerOptions::listeners (or host:port when it is empty) parsed and checked; throws
// std::invalid_argument naming "listeners[i].field" and what to change.
Listeners resolve_listeners(const ServerOptions& o);

// TCP: a new SO_REUSEPORT socket of the listener's group (one per shard). The first call binds
// the configured port; later ones the port it got.
int open_tcp_listener(ListenerState& l, const AcceptedSocketOptions& accepted);
// Unix: binds and listens on the listener's one socket (shared_fd), removing a stale file
// first when asked. Throws std::system_error naming the path and what to change.
void open_unix_listener(ListenerState& l, const AcceptedSocketOptions& accepted);
// Unix: closes the shared socket and removes the file if it is still the one we made.
void close_unix_listener(ListenerState& l);

}  // namespace esockets::detail

#include "io/listeners.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace esockets::detail {

std::string tcp_text(const ListenAddress& a, std::uint16_t port) {
  return a.kind == ListenAddress::Kind::tcp6 ? "[" + a.host + "]:" + std::to_string(port)
                                             : a.host + ":" + std::to_string(port);
}

std::string unix_text(const ListenAddress& a) {
  return a.kind == ListenAddress::Kind::unix_abstract ? "unix:@" + a.path : "unix:" + a.path;
}

namespace {

[[noreturn]] void bad_listener(std::size_t i, const std::string& field, const std::string& why) {
  throw std::invalid_argument("esockets: ServerOptions.listeners[" + std::to_string(i) + "]." +
                              field + " " + why);
}

socklen_t unix_sockaddr(const ListenAddress& a, sockaddr_un& sun) {
  std::memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  if (a.kind == ListenAddress::Kind::unix_abstract) {
    // Abstract names start with a NUL byte and are as long as the address length says.
    std::memcpy(sun.sun_path + 1, a.path.data(), a.path.size());
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + a.path.size());
  }
  std::memcpy(sun.sun_path, a.path.data(), a.path.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + a.path.size() + 1);
}

[[noreturn]] void unix_error(int err, const std::string& what, const ListenerState& l,
                             const char* advice) {
  std::string msg = "esockets: " + what + " " + unix_text(l.addr) + " failed";
  if (advice != nullptr && *advice != '\0') msg += " (" + std::string(advice) + ")";
  throw std::system_error(err, std::generic_category(), msg);
}

// A socket file at the path that nothing accepts on any more (its process died) is removed;
// anything else there is left alone and reported.
void remove_stale_socket(const ListenerState& l) {
  struct stat st {};
  if (::lstat(l.addr.path.c_str(), &st) != 0) return;  // nothing there
  if (!S_ISSOCK(st.st_mode)) {
    unix_error(EADDRINUSE, "bind", l, "the path exists and is not a socket: remove it or choose "
                                      "another path");
  }
  if (!l.opts.unlink_stale) {
    unix_error(EADDRINUSE, "bind", l, "a socket file is already there and unlink_stale is off: "
                                      "remove it or set unlink_stale");
  }
  // Non-blocking: a live server whose backlog is full answers EAGAIN instead of making us wait.
  const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) unix_error(errno, "socket() for", l, "");
  sockaddr_un sun{};
  const socklen_t len = unix_sockaddr(l.addr, sun);
  const int rc = ::connect(probe, reinterpret_cast<sockaddr*>(&sun), len);
  const int err = errno;
  ::close(probe);
  if (rc == 0 || err == EAGAIN) {
    unix_error(EADDRINUSE, "bind", l, "another process is listening on this socket: stop it or "
                                      "choose another path");
  }
  if (err != ECONNREFUSED) return;  // let bind report whatever is wrong
  (void)::unlink(l.addr.path.c_str());
}

}  // namespace

bool ListenerState::trusts(const PeerAddress& peer) const {
  if (unix_socket()) return true;
  for (const Cidr& c : trusted) {
    if (cidr_contains(c, peer)) return true;
  }
  return false;
}

ListenerInfo ListenerState::info() const {
  ListenerInfo i;
  i.address = bound;
  i.port = port;
  i.unix_socket = unix_socket();
  i.proxy_protocol = opts.proxy_protocol;
  return i;
}

ListenerStats ListenerState::stats() const {
  ListenerStats s;
  s.address = bound;
  s.connections = connections.load(std::memory_order_relaxed);
  s.accepts = accepts.load(std::memory_order_relaxed);
  s.refused = refused.load(std::memory_order_relaxed);
  s.proxy_errors = proxy_errors.load(std::memory_order_relaxed);
  s.proxy_timeouts = proxy_timeouts.load(std::memory_order_relaxed);
  return s;
}

Listeners resolve_listeners(const ServerOptions& o) {
  std::vector<ListenerOptions> specs = o.listeners;
  if (specs.empty()) {
    ListenerOptions d;
    d.address = o.host.find(':') != std::string::npos
                    ? "[" + o.host + "]:" + std::to_string(o.port)
                    : o.host + ":" + std::to_string(o.port);
    specs.push_back(std::move(d));
  }
  if (specs.size() > kMaxListeners) {
    throw std::invalid_argument("esockets: ServerOptions.listeners has " +
                                std::to_string(specs.size()) + " entries; at most " +
                                std::to_string(kMaxListeners) + " are supported");
  }
  Listeners out;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    auto l = std::make_unique<ListenerState>();
    l->opts = specs[i];
    std::string error;
    if (!parse_listen_address(l->opts.address, l->addr, error)) bad_listener(i, "address", error);
    if (l->opts.backlog < 0) bad_listener(i, "backlog", "must not be negative (0 = ServerOptions.backlog)");
    l->backlog = l->opts.backlog > 0 ? l->opts.backlog : o.backlog;
    if (l->opts.unix_mode > 07777) {
      bad_listener(i, "unix_mode", "must be a file mode such as 0660 (at most 07777)");
    }
    if (l->proxy()) {
      if (l->opts.proxy_timeout.count() < 1) {
        bad_listener(i, "proxy_timeout", "must be at least 1 ms with proxy_protocol");
      }
      if (l->opts.max_proxy_header < 232 || l->opts.max_proxy_header > 65551) {
        bad_listener(i, "max_proxy_header",
                     "must be between 232 and 65551 bytes (got " +
                         std::to_string(l->opts.max_proxy_header) + ")");
      }
      if (!l->unix_socket()) {
        if (l->opts.trusted_proxies.empty()) {
          bad_listener(i, "trusted_proxies", "must name at least one CIDR with proxy_protocol "
                                             "(no source would be accepted)");
        }
        for (const std::string& t : l->opts.trusted_proxies) {
          Cidr c;
          if (!parse_cidr(t, c, error)) bad_listener(i, "trusted_proxies", error);
          l->trusted.push_back(c);
        }
      }
    }
    for (const auto& prev : out) {
      // Two "…:0" TCP listeners are two ephemeral ports; anything else listed twice is a mistake.
      if (prev->opts.address == l->opts.address && (l->unix_socket() || l->addr.port != 0)) {
        bad_listener(i, "address", "'" + l->opts.address + "' is listed twice");
      }
    }
    out.push_back(std::move(l));
  }
  return out;
}

int open_tcp_listener(ListenerState& l, const AcceptedSocketOptions& accepted) {
  const std::uint16_t port = l.port != 0 ? l.port : l.addr.port;
  const int fd = create_listener_or_throw(l.addr.host, port, l.backlog, accepted, l.opts.v6_only);
  if (l.port == 0) {
    l.port = bound_port(fd);
    l.bound = tcp_text(l.addr, l.port);
  }
  return fd;
}

void open_unix_listener(ListenerState& l, const AcceptedSocketOptions& accepted) {
  if (l.addr.kind == ListenAddress::Kind::unix_path) remove_stale_socket(l);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) unix_error(errno, "socket() for", l, "");
  sockaddr_un sun{};
  const socklen_t len = unix_sockaddr(l.addr, sun);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sun), len) != 0) {
    const int err = errno;
    ::close(fd);
    unix_error(err, "bind", l,
               err == EADDRINUSE ? "the name is taken: choose another"
               : err == EACCES   ? "no permission to create the socket file in that directory"
               : err == ENOENT   ? "the directory does not exist"
                                 : "");
  }
  if (l.addr.kind == ListenAddress::Kind::unix_path) {
    if (l.opts.unix_mode != 0 && ::chmod(l.addr.path.c_str(), l.opts.unix_mode) != 0) {
      const int err = errno;
      ::close(fd);
      (void)::unlink(l.addr.path.c_str());
      unix_error(err, "chmod of", l, "");
    }
    struct stat st {};
    if (::stat(l.addr.path.c_str(), &st) == 0) {
      l.unix_dev = st.st_dev;
      l.unix_ino = st.st_ino;
    }
  }
  if (accepted.send_buffer > 0) {
    (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &accepted.send_buffer, sizeof(int));
  }
  if (accepted.receive_buffer > 0) {
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &accepted.receive_buffer, sizeof(int));
  }
  if (::listen(fd, l.backlog) != 0) {
    const int err = errno;
    ::close(fd);
    if (l.addr.kind == ListenAddress::Kind::unix_path) (void)::unlink(l.addr.path.c_str());
    unix_error(err, "listen on", l, "");
  }
  l.shared_fd = fd;
  l.bound = unix_text(l.addr);
  l.port = 0;
}

void close_unix_listener(ListenerState& l) {
  if (l.shared_fd < 0) return;
  ::close(l.shared_fd);
  l.shared_fd = -1;
  if (l.addr.kind != ListenAddress::Kind::unix_path || l.unix_ino == 0) return;
  struct stat st {};
  if (::lstat(l.addr.path.c_str(), &st) == 0 && st.st_dev == l.unix_dev && st.st_ino == l.unix_ino) {
    (void)::unlink(l.addr.path.c_str());
  }
}

}  // namespace esockets::detail

#include "io/socket_ops.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace esockets::detail {

namespace {

[[noreturn]] void throw_bind_error(int err, const std::string& what, const std::string& host,
                                   std::uint16_t port, const char* advice) {
  std::string msg = "esockets: " + what + " " + host + ":" + std::to_string(port) + " failed";
  if (advice != nullptr && *advice != '\0') msg += " (" + std::string(advice) + ")";
  throw std::system_error(err, std::generic_category(), msg);
}

const char* bind_advice(int err) {
  switch (err) {
    case EADDRINUSE:
      return "the port is taken by a socket without SO_REUSEPORT or of another user: choose another "
             "port, or port 0 for an ephemeral one";
    case EACCES:
      return "ports below 1024 need CAP_NET_BIND_SERVICE: choose a port >= 1024";
    case EADDRNOTAVAIL:
      return "the host address is not configured on this machine: use 127.0.0.1, 0.0.0.0 or a local "
             "address";
    case EMFILE:
    case ENFILE:
      return "out of file descriptors: raise the fd limit or lower shards";
    default:
      return "";
  }
}

}  // namespace

bool is_numeric_host(const std::string& host) {
  in_addr a4{};
  in6_addr a6{};
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

int create_listener_or_throw(const std::string& host, std::uint16_t port, int backlog,
                             const AcceptedSocketOptions& accepted, bool v6_only) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    len = sizeof(sockaddr_in6);
  } else {
    throw std::system_error(EINVAL, std::generic_category(),
                            "esockets: host '" + host + "' is not a numeric IPv4/IPv6 address");
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_bind_error(errno, "socket() for", host, port, bind_advice(errno));
  int one = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int err = errno;
    ::close(fd);
    throw_bind_error(err, "setsockopt(SO_REUSEPORT) on", host, port, "");
  }
  if (ss.ss_family == AF_INET6) {
    const int v6 = v6_only ? 1 : 0;
    if (::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof v6) != 0) {
      int err = errno;
      ::close(fd);
      throw_bind_error(err, "setsockopt(IPV6_V6ONLY) on", "[" + host + "]", port, "");
    }
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    int err = errno;
    ::close(fd);
    throw_bind_error(err, "bind", ss.ss_family == AF_INET6 ? "[" + host + "]" : host, port,
                     bind_advice(err));
  }
  // Inherited by every accepted socket (see AcceptedSocketOptions).
  if (accepted.nodelay) set_nodelay(fd);
  if (accepted.send_buffer > 0) {
    (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &accepted.send_buffer, sizeof(int));
  }
  if (accepted.receive_buffer > 0) {
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &accepted.receive_buffer, sizeof(int));
  }
  if (::listen(fd, backlog) != 0) {
    int err = errno;
    ::close(fd);
    throw_bind_error(err, "listen on", host, port, bind_advice(err));
  }
  return fd;
}

std::uint16_t bound_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

PeerAddress to_peer_address(const sockaddr_storage& ss) {
  PeerAddress p;
  if (ss.ss_family == AF_INET) {
    const auto* s4 = reinterpret_cast<const sockaddr_in*>(&ss);
    p.family = AF_INET;
    p.port = ntohs(s4->sin_port);
    std::memcpy(p.addr, &s4->sin_addr, 4);
  } else if (ss.ss_family == AF_INET6) {
    const auto* s6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    p.port = ntohs(s6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
      p.family = AF_INET;
      std::memcpy(p.addr, reinterpret_cast<const std::uint8_t*>(&s6->sin6_addr) + 12, 4);
    } else {
      p.family = AF_INET6;
      std::memcpy(p.addr, &s6->sin6_addr, 16);
    }
  } else if (ss.ss_family == AF_UNIX) {
    p.family = AF_UNIX;
  }
  return p;
}

void set_nodelay(int fd) {
  int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

IoFailure classify_io_errno(int err) {
  switch (err) {
    case EAGAIN:
#if EAGAIN != EWOULDBLOCK
    case EWOULDBLOCK:
#endif
      return IoFailure::again;
    case EINTR:
      return IoFailure::interrupted;
    case ECONNRESET:
    case EPIPE:
    case ETIMEDOUT:
    case ENOTCONN:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ECONNABORTED:
      return IoFailure::reset;
    default:
      return IoFailure::other;
  }
}

AcceptFailure classify_accept_errno(int err) {
  switch (err) {
    case EAGAIN:
#if EAGAIN != EWOULDBLOCK
    case EWOULDBLOCK:
#endif
      return AcceptFailure::again;
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM:  // firewall rules may refuse one connection
      return AcceptFailure::retry;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
      return AcceptFailure::exhausted;
    default:
      return AcceptFailure::other;
  }
}

std::size_t fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 1u << 20;
  return rl.rlim_cur > (1u << 24) ? (1u << 24) : static_cast<std::size_t>(rl.rlim_cur);
}

std::string errno_message(const char* what, int err) {
  return std::string(what) + " (" + std::strerror(err) + ")";
}

}  // namespace esockets::detail

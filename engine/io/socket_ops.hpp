// Thin syscall wrappers; errno sorted once here so the reactor reads like a state machine.
// Thread: any (stateless functions).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "esockets/connection.hpp"

namespace esockets::detail {

// Options every accepted socket should carry. Linux copies TCP_NODELAY, SO_SNDBUF and SO_RCVBUF
// from the listener into each connection it accepts, so they are set once on the listener (before
// listen(), which is also when a receive buffer must be known to pick the window scale) instead
// of with a syscall per accept.
struct AcceptedSocketOptions {
  bool nodelay = true;
  int send_buffer = 0;     // 0 = kernel autotuning
  int receive_buffer = 0;  // 0 = kernel autotuning
};

// Creates a non-blocking SO_REUSEPORT listener bound to host:port and listening.
// Throws std::system_error whose message names host:port and what to change.
// For IPv6, v6_only sets IPV6_V6ONLY (false: IPv4 clients too, whatever the sysctl says).
int create_listener_or_throw(const std::string& host, std::uint16_t port, int backlog,
                             const AcceptedSocketOptions& accepted, bool v6_only = false);

// The port a bound socket ended up on.
std::uint16_t bound_port(int fd);

// True if host is a numeric IPv4 or IPv6 address.
bool is_numeric_host(const std::string& host);

// An IPv4-mapped IPv6 address (a v4 client of a dual-stack listener) comes out as IPv4; a
// Unix-domain peer as family AF_UNIX with no address.
PeerAddress to_peer_address(const sockaddr_storage& ss);

void set_nodelay(int fd);

// Classes of errno after a failed read/write on a connected socket.
enum class IoFailure : std::uint8_t { again, interrupted, reset, other };
IoFailure classify_io_errno(int err);

// accept4() failures: retry now, stop for this pass, or pause accepting (fd exhaustion).
enum class AcceptFailure : std::uint8_t { again, retry, exhausted, other };
AcceptFailure classify_accept_errno(int err);

// RLIMIT_NOFILE soft limit (capped to something a table can index).
std::size_t fd_limit();

// "what (errno text)".
std::string errno_message(const char* what, int err);

}  // namespace esockets::detail

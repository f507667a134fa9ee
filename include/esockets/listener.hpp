// esockets — ListenerOptions: where a Server listens (TCP over IPv4 or IPv6, Unix-domain stream
// sockets), and how each listener admits clients (PROXY protocol, trusted proxies, a cap).
// Thread: plain values; copied into the Server at construction.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace esockets {

/// Whether a listener expects a PROXY protocol header (HAProxy's) before the client's bytes.
enum class ProxyProtocol : std::uint8_t {
  off,  ///< no header: the client's bytes come first
  v1,   ///< the text header ("PROXY TCP4 ...\r\n") only
  v2,   ///< the binary header only
  any,  ///< either, told apart by their first bytes
};

/// One listener of a Server. The address says what kind:
///   "127.0.0.1:9000", "0.0.0.0:9000"  TCP over IPv4 (port 0 = ephemeral)
///   "[::1]:9000", "[::]:9000"         TCP over IPv6
///   "unix:/run/app.sock"              a Unix-domain stream socket at a path
///   "unix:@app"                       a Unix-domain stream socket with an abstract name
/// A TCP listener is one SO_REUSEPORT socket per shard; a Unix listener is one socket whose
/// connections are spread over the shards.
struct ListenerOptions {
  std::string address;  ///< see above; parsed (and rejected with a clear error) by the Server
  int backlog = 0;      ///< listen() backlog; 0 = ServerOptions::backlog
  /// IPv6 only: accept IPv6 clients only (IPV6_V6ONLY). When false, an "[::]" listener also
  /// accepts IPv4 clients, whose addresses then read as IPv4 (not as IPv4-mapped IPv6).
  bool v6_only = false;
  /// Unix path only: chmod the socket file to this mode after binding (0 = leave it as the
  /// umask made it), e.g. 0660 to let a group connect.
  unsigned unix_mode = 0;
  /// Unix path only: remove a socket file left at the path by a process that is gone (nothing
  /// accepts on it). A live socket, or a file that is not a socket, is never removed: binding
  /// then fails with a message naming the path.
  bool unlink_stale = true;

  /// Read a PROXY protocol header before on_client_connect: peer()/getip() then report the
  /// client the proxy saw, Connection::proxy() the whole header. A missing, malformed or
  /// oversized header closes the connection as CloseReason::proxy_error, one not complete
  /// within proxy_timeout as CloseReason::proxy_timeout; neither reaches the handler.
  ProxyProtocol proxy_protocol = ProxyProtocol::off;
  /// With proxy_protocol: the proxies allowed to connect, as CIDRs ("10.0.0.0/8", "::1/128",
  /// or a single address). A connection from elsewhere is closed as proxy_error before a byte is
  /// read. Clients of a Unix listener have no address and are all trusted.
  std::vector<std::string> trusted_proxies = {"127.0.0.0/8", "::1/128"};
  /// With proxy_protocol: how long a connection may take to send its header.
  std::chrono::milliseconds proxy_timeout{3000};
  /// With proxy_protocol: the largest header accepted, in bytes (a v1 header is at most 107;
  /// a v2 header is 16 bytes plus its addresses and TLVs). At least 232, at most 65551.
  std::size_t max_proxy_header = 4096;

  /// Most connections of this listener served at once; 0 = only ServerOptions::max_connections
  /// applies. Past it, connections are accepted and closed at once (counted as refused).
  std::size_t max_connections = 0;
};

/// A listener as bound: Server::listeners() after start().
struct ListenerInfo {
  std::string address;  ///< as bound: the actual port for TCP ("127.0.0.1:41234"), the path for Unix
  std::uint16_t port = 0;  ///< TCP: the bound port; Unix: 0
  bool unix_socket = false;  ///< a Unix-domain listener
  ProxyProtocol proxy_protocol = ProxyProtocol::off;  ///< whether it reads a PROXY header
};

/// Stable name of a PROXY protocol setting ("off", "v1", "v2", "any").
const char* to_string(ProxyProtocol p) noexcept;

}  // namespace esockets

// esockets — Connection: the client as handlers see it.
// Thread: a Connection& is valid only inside the callback that received it, on that
// callback's thread (handlers of one connection never run concurrently). Keep the id(),
// not the reference, to reach the client later or from another thread.
#pragma once

#include <cstdint>
#include <string>

#include "esockets/types.hpp"

namespace esockets {

class Server;
namespace detail {
class ServerCore;
class Shard;
class Worker;
struct Conn;
struct WorkerConn;
}  // namespace detail

/// The peer address in a compact form (IPv4 or IPv6 plus port).
struct PeerAddress {
  std::uint8_t family = 0;  ///< AF_INET or AF_INET6 (0 when unknown)
  std::uint16_t port = 0;   ///< host byte order
  std::uint8_t addr[16] = {};
  /// "ip:port" for IPv4, "[ip]:port" for IPv6.
  std::string to_string() const;
};

class Connection {
 public:
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// The id that reaches this connection from any thread for as long as it lives.
  ConnectionId id() const { return id_; }
  /// The socket's file descriptor (the seed's fileno); unique among live connections.
  int fileno() const { return fd_; }
  /// "ip:port" of the client, as in the seed; also valid in on_client_disconnect.
  std::string getip() const { return peer_.to_string(); }
  const PeerAddress& peer() const { return peer_; }
  /// The server this connection belongs to.
  Server& server() const;

  /// Queues bytes for the client; never blocks. Same as Server::send(id(), bytes).
  SendStatus send(Bytes bytes);
  /// Queues one message framed with the server's framing (delimiter or length header added).
  SendStatus send_frame(Bytes message);
  /// Closes after what was sent so far is flushed; on_client_disconnect(closed_by_server) follows.
  SendStatus close();
  /// Stops reading this client (the seed's auto_register=False). With workers the shard
  /// applies it asynchronously: messages already read are still delivered.
  void pause_reading();
  /// Reads again after pause_reading().
  void resume_reading();

  /// One pointer of user state, owned by the user; touched only by this connection's handlers.
  void* user_data() const { return user_; }
  void set_user_data(void* p) { user_ = p; }

 private:
  friend class detail::ServerCore;
  friend class detail::Shard;
  friend class detail::Worker;
  friend struct detail::Conn;
  friend struct detail::WorkerConn;
  Connection() = default;

  detail::ServerCore* core_ = nullptr;
  ConnectionId id_{};
  int fd_ = -1;
  PeerAddress peer_{};
  void* user_ = nullptr;
};

}  // namespace esockets

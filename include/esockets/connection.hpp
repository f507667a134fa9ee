// esockets — Connection: the client as handlers see it.
// Thread: a Connection& is valid only inside the callback that received it, on that
// callback's thread (handlers of one connection never run concurrently). Keep the id(),
// not the reference, to reach the client later or from another thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "esockets/types.hpp"

namespace esockets {

class Server;
struct ProxyInfo;
namespace detail {
struct ConnExtras;
struct ExtrasAccess;
template <class T>
inline constexpr char type_tag = 0;  // one address per type: tells typed states apart
class ServerCore;
class Shard;
class Worker;
struct Conn;
struct WorkerConn;
}  // namespace detail

/// The peer address in a compact form (IPv4 or IPv6 plus port).
struct PeerAddress {
  /// AF_INET or AF_INET6; AF_UNIX for a client of a Unix-domain listener (no address); 0 when
  /// unknown. An IPv4 client of a dual-stack IPv6 listener reads as AF_INET.
  std::uint8_t family = 0;
  std::uint16_t port = 0;   ///< host byte order
  std::uint8_t addr[16] = {};  ///< network byte order: 4 bytes (IPv4) or 16 (IPv6)
  /// "ip:port" for IPv4, "[ip]:port" for IPv6, "unix:" for a Unix-domain client.
  std::string to_string() const;
};

/// A client as a handler callback sees it: its id, address, sends, reading control, timers
/// and per-connection state. Only the engine creates one; a `Connection&` is valid only inside
/// the callback that received it, on that callback's thread.
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
  /// The client's address and port in binary form (getip() as text).
  const PeerAddress& peer() const { return peer_; }
  /// The server this connection belongs to.
  Server& server() const;
  /// Which listener the client came through: its index in ServerOptions::listeners (0 for
  /// the host:port listener of a server without a list).
  std::uint16_t listener() const { return listener_; }
  /// The PROXY protocol header the client's proxy sent (a listener with proxy_protocol), or
  /// nullptr. Valid, like the connection, until on_client_disconnect returns.
  const ProxyInfo* proxy() const;

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
  /// Sets the pointer user_data() returns; the engine never dereferences or frees it.
  void set_user_data(void* p) { user_ = p; }

  /// Typed per-connection state, owned by the engine: constructs a T (replacing and destroying
  /// any earlier state) and returns it. It follows the connection when it moves to another
  /// shard, and is destroyed exactly once: right after on_client_disconnect returns, on that
  /// callback's thread (or by the next emplace_state / reset_state).
  template <class T, class... Args>
  T& emplace_state(Args&&... args) {
    auto p = std::make_unique<T>(std::forward<Args>(args)...);
    T& ref = *p;
    set_state(p.get(), [](void* q) { delete static_cast<T*>(q); }, &detail::type_tag<T>);
    p.release();
    return ref;
  }
  /// The state emplaced as a T, or nullptr (none, or of another type).
  template <class T>
  T* state() const {
    return static_cast<T*>(state_of(&detail::type_tag<T>));
  }
  /// Destroys the state now, if any.
  void reset_state();

  /// Runs fn on this connection's handler thread (its shard inline, its worker with workers)
  /// once `delay` has passed (to the millisecond, no earlier; later under load), never
  /// concurrently with its other callbacks. The timer moves with the connection between
  /// shards; when the connection ends it is dropped unrun (nothing runs after
  /// on_client_disconnect). Cost: O(1) to arm, fire and cancel; an engine thread's timers cost
  /// nothing while none is due. Throws std::logic_error outside this connection's callbacks.
  TimerId after(std::chrono::milliseconds delay, std::function<void(Connection&)> fn);
  /// As after(), then again every `period` (at least 1 ms) until cancelled or the end.
  TimerId every(std::chrono::milliseconds period, std::function<void(Connection&)> fn);
  /// Cancels a timer of this connection; false if it already ran (one-shot) or is unknown.
  /// From this connection's callbacks (a timer may cancel itself).
  bool cancel_timer(TimerId id);

 private:
  friend class detail::ServerCore;
  friend class detail::Shard;
  friend class detail::Worker;
  friend struct detail::Conn;
  friend struct detail::WorkerConn;
  friend struct detail::ExtrasAccess;
  Connection() = default;
  ~Connection();

  void set_state(void* p, void (*destroy)(void*), const void* tag);
  void* state_of(const void* tag) const;
  TimerId arm(std::chrono::milliseconds delay, std::chrono::milliseconds period,
              std::function<void(Connection&)>&& fn);
  /// Engine: destroys the typed state and drops the timers (the connection ended).
  void release_extras();

  detail::ServerCore* core_ = nullptr;
  ConnectionId id_{};
  int fd_ = -1;
  PeerAddress peer_{};
  std::uint16_t listener_ = 0;
  void* user_ = nullptr;
  detail::ConnExtras* extras_ = nullptr;  // typed state and timers; allocated on first use
};

}  // namespace esockets

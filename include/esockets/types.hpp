// esockets — basic vocabulary types shared by the whole public API.
// Thread: all types here are plain values, safe to copy between threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

namespace esockets {

/// A run of bytes borrowed for the duration of a call. The engine never keeps the pointer.
using Bytes = std::string_view;

/// Identity of one connection for its whole life, safe to hold in any thread.
/// Layout (64 bits): shard (8) | slot (24, the fd) | generation (32, odd while live).
/// A stale id (its connection closed, the fd maybe reused) never reaches another client:
/// every call made with it reports Closed (within 2^31 reuses of the same fd number, after
/// which the 32-bit generation comes round).
class ConnectionId {
 public:
  constexpr ConnectionId() = default;
  /// Builds an id from its parts (the engine does; users get ids from Connection::id()).
  constexpr ConnectionId(std::uint32_t shard, std::uint32_t slot, std::uint32_t generation)
      : v_((std::uint64_t{shard & 0xffu} << 56) | (std::uint64_t{slot & 0xffffffu} << 32) |
           generation) {}
  /// Rebuilds an id from value(); for storing ids in foreign containers or epoll data.
  static constexpr ConnectionId from_value(std::uint64_t v) {
    ConnectionId id;
    id.v_ = v;
    return id;
  }
  /// The id as one 64-bit number (from_value() turns it back into an id).
  constexpr std::uint64_t value() const { return v_; }
  /// The shard that accepted the connection (its birth shard). The connection may since have
  /// been handed to another shard (set_shards, rebalance); the id keeps reaching it.
  constexpr std::uint32_t shard() const { return static_cast<std::uint32_t>(v_ >> 56); }
  /// The slot: the connection's file descriptor number.
  constexpr std::uint32_t slot() const {
    return static_cast<std::uint32_t>((v_ >> 32) & 0xffffffu);
  }
  /// Which of the connections that held this slot the id names (odd while live).
  constexpr std::uint32_t generation() const { return static_cast<std::uint32_t>(v_); }
  /// False for a default-constructed id; such an id is Closed everywhere.
  constexpr bool valid() const { return generation() != 0; }
  friend constexpr bool operator==(ConnectionId, ConnectionId) = default;
  friend constexpr auto operator<=>(ConnectionId, ConnectionId) = default;

 private:
  std::uint64_t v_ = 0;
};

/// Why a connection ended; passed exactly once to Handler::on_client_disconnect.
enum class CloseReason : std::uint8_t {
  peer_closed,        ///< the client closed its side (FIN) and everything owed to it was sent
  reset,              ///< the connection was reset or failed with a socket error
  closed_by_server,   ///< Connection::close() or Server::close() was called
  refused,            ///< on_client_connect returned false, or admission refused it
  framing_error,      ///< the client sent a frame the framer rejects (too long, malformed)
  slow_consumer,      ///< queued output passed the hard cap or the write deadline
  idle,               ///< nothing received for the idle timeout
  frame_timeout,      ///< a started frame was not completed in time
  shutdown,           ///< the server stopped
  handler_exception,  ///< a handler threw while processing this connection
  io_error,           ///< an unexpected error from the kernel (errno reported in on_warning)
  /// A PROXY protocol listener got no valid header: missing, malformed, oversized, or sent by
  /// a source that is not a trusted proxy. The handler never saw the connection.
  proxy_error,
  proxy_timeout,      ///< a PROXY protocol header did not arrive in time (never reached the handler)
  /// Handed to a new process by a takeover (ServerOptions::takeover_socket): the client stays
  /// connected, served from now on by the other process; this process's ids for it are stale.
  taken_over,
};
inline constexpr std::size_t kCloseReasonCount = 14;

/// Stable snake_case name of a reason ("peer_closed", ...).
const char* to_string(CloseReason reason) noexcept;

/// Result of every send/close entry point. Nothing blocks.
enum class SendStatus : std::uint8_t {
  ok,             ///< accepted: applied exactly once, after every earlier call from this thread
                  ///< to the same connection (or the connection ends and on_client_disconnect
                  ///< says why)
  closed,         ///< the connection is gone (or the id is stale); nothing was done
  backpressure,   ///< would block: the queue into the connection's shard is full; nothing was
                  ///< done, the connection is fine; retry later (Server::wait_writable)
  slow_consumer,  ///< the bytes would pass output_hard_cap / the shard's share of
                  ///< output_total_cap: the connection is being closed as slow_consumer
};

/// Stable name of a status ("ok", "closed", "backpressure", "slow_consumer").
const char* to_string(SendStatus status) noexcept;

/// Names an armed timer on the thread that armed it (Connection::after, Server::after); 0 is no
/// timer. Ids are not reused while the server runs.
using TimerId = std::uint64_t;

/// Per-recipient outcomes of a multicast (Server::multicast, Group::send).
struct MulticastResult {
  std::size_t ok = 0;             ///< recipients the payload was queued for
  std::size_t closed = 0;         ///< ids that were stale or closed
  std::size_t backpressure = 0;   ///< recipients whose shard queue was full (retry them)
  std::size_t slow_consumer = 0;  ///< recipients closed as slow consumers by this payload
                                  ///< (known at once only on the recipient's own shard thread)
};

/// How each shard talks to the kernel (ServerOptions::backend; README "Backends").
enum class Backend : std::uint8_t {
  epoll,     ///< readiness: epoll_wait, then one recv or sendmsg call per socket
  io_uring,  ///< completions: one ring per shard, multishot receive into a provided-buffer
             ///< ring the shard's connections share; needs Linux 6.1 or later
  automatic, ///< epoll unless ESOCKETS_BACKEND=io_uring (or epoll) is set in the environment
};
/// "epoll", "io_uring" or "automatic".
const char* to_string(Backend b) noexcept;

}  // namespace esockets

// Hashes a ConnectionId by value(), so that ids can key unordered containers. (Hidden from
// Doxygen, which cannot place a specialisation of std::hash declared outside namespace std.)
/// \cond ESOCKETS_STD_SPECIALISATIONS
template <>
struct std::hash<esockets::ConnectionId> {
  std::size_t operator()(esockets::ConnectionId id) const noexcept {
    return std::hash<std::uint64_t>{}(id.value());
  }
};
/// \endcond

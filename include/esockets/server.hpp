// esockets — Server: owns the shards (reactor threads) and workers.
// Thread: every method is safe to call from any thread, including from handlers, unless its
// comment says otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "esockets/handler.hpp"
#include "esockets/options.hpp"
#include "esockets/stats.hpp"
#include "esockets/types.hpp"

namespace esockets {

namespace detail {
class ServerCore;
}

class Server {
 public:
  /// Validates options; throws std::invalid_argument naming the bad field. The handler must
  /// outlive the Server.
  Server(Handler& handler, ServerOptions options = {});
  /// Stops the server if it is running (as stop()).
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Binds one SO_REUSEPORT listener per shard, calls on_start, starts the threads and
  /// returns. Throws std::system_error (bind/listen failures, with host:port in the message)
  /// or std::logic_error if already started. Call from a thread that is not an engine thread.
  void start();
  /// Graceful stop: on_server_shutting_down, stop accepting, let workers finish queued events,
  /// flush accepted output (up to shutdown_timeout), one on_client_disconnect(shutdown) per
  /// connection, then on_server_shut_down. No callback runs after it returns. Idempotent.
  /// Must not be called from a handler (it waits for the threads that run them).
  void stop();
  /// Blocks until the server has stopped (stop() called from elsewhere). Returns at once if
  /// the server is not running.
  void wait();
  /// True between start() and the end of stop().
  bool running() const;

  /// The bound port (valid after start(); equals options.port unless that was 0).
  std::uint16_t port() const;
  const ServerOptions& options() const;

  /// Queues bytes for a connection. Ok: they will leave after every earlier send made from
  /// this thread to it. Closed: the connection is gone (stale ids never reach anyone).
  /// Backpressure: a queue into the shard is full, or the bytes would pass output_hard_cap
  /// (the connection is then closed as slow_consumer). Never blocks.
  SendStatus send(ConnectionId id, Bytes bytes);
  /// As send(), framing the message with the server's framing (delimiter / length header).
  SendStatus send_frame(ConnectionId id, Bytes message);
  /// Closes the connection once its queued output is flushed.
  SendStatus close(ConnectionId id);
  /// Queues bytes for every connection open now; returns how many shards accepted it
  /// (a shard whose command queue is full is skipped and counted in warnings).
  std::size_t broadcast(Bytes bytes);

  /// Changes the number of shards, before start() or while serving, and returns when done:
  /// new shards accept at once; a retiring shard (the newest) first stops receiving new
  /// connections, then hands every live connection, with its buffered input, queued output
  /// and framing state, to the remaining shards, and its thread ends. No connection is reset,
  /// nothing is lost or reordered, handlers see no extra callbacks, and ConnectionIds keep
  /// working. Calls are serialised with each other and with stop(). Throws
  /// std::invalid_argument for n outside 1..254, std::logic_error if the server is stopping
  /// or if called from a handler (it waits for engine threads).
  void set_shards(unsigned n);
  /// The number of live shards (options().shards before start()).
  unsigned shards() const;
  /// Moves live connections from shards above the mean connection count to those below it,
  /// by the same hand-over as set_shards; returns when done. Not from a handler.
  void rebalance();

  /// Connections open now, over all shards.
  std::size_t client_count() const;
  /// Calls fn for every connection open now (a weakly consistent snapshot: connections that
  /// open or close during the walk may or may not be seen). Runs on the calling thread.
  void for_each_client(const std::function<void(ConnectionId)>& fn) const;
  /// Counters per shard and in total.
  Stats stats() const;

 private:
  std::unique_ptr<detail::ServerCore> core_;
};

}  // namespace esockets

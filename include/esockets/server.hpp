// esockets — Server: owns the shards (reactor threads) and workers.
// Thread: every method is safe to call from any thread, including from handlers, unless its
// comment says otherwise.
#pragma once

#include <cstddef>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "esockets/handler.hpp"
#include "esockets/listener.hpp"
#include "esockets/options.hpp"
#include "esockets/stats.hpp"
#include "esockets/types.hpp"

namespace esockets {

namespace detail {
class ServerCore;
}

/// A TCP server: one SO_REUSEPORT listener and epoll reactor thread per shard, optional worker
/// threads for the handler, and the calls that reach connections from any thread.
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
  /// From an engine thread (a handler) it only starts the stop, as request_stop(), and returns
  /// at once; wait() or ~Server wait for the end.
  void stop();
  /// Starts a graceful stop and returns at once. Async-signal-safe (one write to an eventfd):
  /// the way to stop from a SIGINT/SIGTERM handler. The server's control thread runs the stop;
  /// wait() returns when it is done. No effect before start() or after the stop.
  void request_stop() noexcept;
  /// Blocks until the server has stopped (stop() called from elsewhere). Returns at once if
  /// the server is not running.
  void wait();
  /// True between start() and the end of stop().
  bool running() const;

  /// The bound port of the first TCP listener (valid after start(); equals its configured
  /// port unless that was 0); 0 if every listener is a Unix-domain one.
  std::uint16_t port() const;
  /// The listeners as bound, in ServerOptions::listeners order (empty before start()).
  std::vector<ListenerInfo> listeners() const;
  /// The admin listener's address as bound ("127.0.0.1:41234"), or "" without one.
  std::string admin_address() const;
  /// Starts draining: GET /health on the admin listener answers 503 from now on, so a load
  /// balancer stops sending new clients, while the server goes on serving everyone (stop()
  /// ends it). stop() drains too. From any thread; idempotent.
  void drain();
  /// True once drain() or stop() was called.
  bool draining() const;
  /// True once a takeover (ServerOptions::takeover_socket) moved every listener and
  /// connection to a new process; the server then stops by itself, and running() turns false.
  bool handed_over() const;
  /// The options the server was built with.
  const ServerOptions& options() const;

  /// Queues bytes for a connection. Never blocks.
  /// ok: applied exactly once, after every earlier call from this thread to this connection,
  ///   whatever happens meanwhile (the connection moves to another shard, queues fill, the
  ///   server stops); only the end of the connection drops it, and on_client_disconnect says why.
  /// closed: the connection is gone (stale ids never reach anyone).
  /// backpressure: would block: the queue into the connection's shard is full; nothing was
  ///   done and the connection is fine. Only threads that are not engine threads see it:
  ///   handlers on shard threads and workers queue past a full queue (and stop reading the
  ///   clients whose messages produce the overflow). Retry after wait_writable().
  /// slow_consumer: the bytes would pass output_hard_cap (or the shard's share of
  ///   output_total_cap): the connection is closed as slow_consumer, its queued output dropped.
  ///   A send from another thread that passes the cap when its shard applies it returns ok and
  ///   the connection closes the same way.
  SendStatus send(ConnectionId id, Bytes bytes);
  /// As send(), framing the message with the server's framing (delimiter / length header).
  SendStatus send_frame(ConnectionId id, Bytes message);
  /// Closes the connection once its queued output is flushed.
  SendStatus close(ConnectionId id);
  /// Queues bytes for every connection open now (a multicast to a snapshot of the live ids);
  /// returns how many connections it was queued for. Recipients whose shard queue is full are
  /// skipped (counted in stats().total.send_backpressure).
  std::size_t broadcast(Bytes bytes);
  /// Sends one payload to many connections: the bytes are copied once into a reference-counted
  /// buffer shared by every recipient's output queue, and one command per shard carries the
  /// ids it hosts. Each recipient's outcome is as for send(), in order with this thread's other
  /// calls to that connection.
  MulticastResult multicast(std::span<const ConnectionId> ids, Bytes bytes);
  /// As multicast(), framing the message with the server's framing.
  MulticastResult multicast_frame(std::span<const ConnectionId> ids, Bytes message);
  /// For threads that are not engine threads, after a send returned backpressure: blocks until
  /// the queue into the shard hosting `id` has room again (true), or the connection is gone or
  /// `timeout` passed (false). From an engine thread it returns false at once.
  bool wait_writable(ConnectionId id, std::chrono::milliseconds timeout);
  /// True while `id` names an open connection.
  bool connected(ConnectionId id) const;

  /// Runs fn(conn) on the thread that runs `id`'s handlers (its shard inline, its worker with
  /// workers), never concurrently with its callbacks and never nested in one: the way to hand
  /// a result computed on another thread back to a connection. It travels the send() path, so
  /// it runs after every earlier call from this thread to `id` was applied, and returns as
  /// send() does (ok, closed, backpressure). If the connection ends first, fn is destroyed
  /// unrun (on_client_disconnect still comes exactly once).
  SendStatus post(ConnectionId id, std::function<void(Connection&)> fn);

  /// Timers of the calling engine thread (a handler's shard or worker): fn runs on this thread
  /// once `delay` has passed (to the millisecond, no earlier). O(1) to arm, fire and cancel.
  /// Throws std::logic_error from a thread that is not an engine thread. Timers still armed
  /// when the thread ends (stop, retire) are dropped unrun.
  TimerId after(std::chrono::milliseconds delay, std::function<void()> fn);
  /// As after(), then again every `period` (at least 1 ms) until cancelled.
  TimerId every(std::chrono::milliseconds period, std::function<void()> fn);
  /// Cancels a timer armed by this thread with after()/every(); false if it is unknown or a
  /// one-shot that already ran. Only from the thread that armed it.
  bool cancel_timer(TimerId id);

  /// A repeating tick on every handler thread (each shard with workers == 0, each worker
  /// otherwise), including shards added later by set_shards: fn runs on each of them every
  /// `period` (at least 1 ms), first within one period of this call. From any thread, also
  /// before start(). The typical use is per-thread caches refreshed on a clock (an HTTP Date
  /// header). Returns an id for cancel_tick().
  std::uint64_t tick_every(std::chrono::milliseconds period, std::function<void()> fn);
  /// After it returns no thread starts fn again (a call already under way may finish).
  void cancel_tick(std::uint64_t tick_id);

  /// Changes the number of shards, before start() or while serving, and returns when done:
  /// new shards accept at once; a retiring shard (the newest) first stops receiving new
  /// connections, then hands every live connection, with its buffered input, queued output
  /// and framing state, to the remaining shards, and its thread ends. No connection is reset,
  /// nothing is lost or reordered, handlers see no extra callbacks, and ConnectionIds keep
  /// working. A retired shard releases its threads, fds, buffers and command queues; there is
  /// no limit on how many shards a server creates over its life. Calls are serialised with
  /// each other and with stop(). Throws std::invalid_argument for n outside 1..254,
  /// std::logic_error if the server is stopping or if called from a handler (it waits for
  /// engine threads).
  void set_shards(unsigned n);
  /// The number of live shards (options().shards before start()).
  unsigned shards() const;
  /// The kernel interface the shards use: ServerOptions::backend with automatic resolved.
  Backend backend() const;
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

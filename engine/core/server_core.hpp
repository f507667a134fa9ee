// ServerCore: the Server's implementation. Owns the shards and workers, routes cross-thread
// calls to the shard that owns a connection, and runs the lifecycle: start, stop, and live
// resizing (set_shards, rebalance).
// Thread: routing methods (send, close, pause, broadcast, stats, ...) are safe from any thread;
// start/stop/wait/set_shards/rebalance from any non-engine thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "ops/admin.hpp"
#include "core/connection_table.hpp"
#include "io/listeners.hpp"
#include "io/socket_ops.hpp"
#include "esockets/handler.hpp"
#include "esockets/options.hpp"
#include "esockets/stats.hpp"
#include "framing/framer.hpp"
#include "mailbox/mailbox.hpp"
#include "core/route_epoch.hpp"
#include "takeover/takeover.hpp"
#include "core/timers.hpp"

namespace esockets::detail {

class Shard;
class Worker;
struct SendBlock;

// Which engine thread the caller is, so a call can take the direct path or the right queue.
struct ThreadContext {
  const ServerCore* core = nullptr;
  int shard = -1;
  int worker = -1;
};
extern thread_local ThreadContext tls_context;

class ServerCore {
 public:
  static constexpr unsigned kMaxShards = 254;  // 0xfe and 0xff are reserved in the table
  static constexpr unsigned kMaxWorkers = 255;

  ServerCore(Server& server, Handler& handler, ServerOptions options);
  ~ServerCore();

  void start();
  /// Non-engine thread: the whole graceful stop. Engine thread: request_stop().
  void stop();
  /// Any thread, async-signal-safe: wakes the control thread, which runs the stop.
  void request_stop() noexcept;
  void wait();
  bool running() const { return state_.load(std::memory_order_acquire) == State::running; }
  std::uint16_t port() const { return port_; }
  std::vector<ListenerInfo> listener_infos() const;
  std::string admin_address() const;
  void drain() { draining_.store(true, std::memory_order_release); }
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  bool handed_over() const { return handed_over_.load(std::memory_order_acquire); }
  std::size_t nlisteners() const { return listeners_.size(); }
  ListenerState& listener(std::size_t i) { return *listeners_[i]; }
  const ListenerState& listener(std::size_t i) const { return *listeners_[i]; }
  /// The CPU a shard's / worker's thread is pinned to (ServerOptions::cpu_affinity), or -1.
  int cpu_for_shard(unsigned index) const;
  int cpu_for_worker(unsigned index) const;
  const ServerOptions& options() const { return opts_; }
  /// The shards' kernel interface (ServerOptions::backend resolved at construction).
  Backend backend() const { return backend_; }
  AcceptedSocketOptions accepted_options() const {
    return {opts_.tcp_nodelay, opts_.socket_send_buffer, opts_.socket_receive_buffer};
  }

  void set_shards(unsigned n);
  unsigned shards() const;
  void rebalance();

  SendStatus send(ConnectionId id, Bytes bytes, bool framed);
  SendStatus close(ConnectionId id, CloseReason reason);
  SendStatus set_paused(ConnectionId id, bool pause);
  std::size_t broadcast(Bytes bytes);
  MulticastResult multicast(std::span<const ConnectionId> ids, Bytes bytes, bool framed);
  bool wait_writable(ConnectionId id, std::chrono::milliseconds timeout);
  bool connected(ConnectionId id) const { return table_ != nullptr && table_->live(id); }
  SendStatus post(ConnectionId id, std::function<void(Connection&)>&& fn);

  // Timers (timers.hpp). The calling engine thread's timers, or nullptr off engine threads.
  ThreadTimers* thread_timers();
  /// The timers of the thread running `id`'s handlers, if that is the calling thread.
  ThreadTimers* timers_for(ConnectionId id);
  TimerId next_timer_id() { return timer_ids_.fetch_add(1, std::memory_order_relaxed) + 1; }
  std::uint64_t add_tick(std::chrono::milliseconds period, std::function<void()>&& fn);
  void cancel_tick(std::uint64_t id);
  std::uint64_t ticks_version() const { return ticks_version_.load(std::memory_order_acquire); }
  std::vector<std::shared_ptr<TickRegistration>> ticks_snapshot() const;
  std::size_t client_count() const;
  void for_each_client(const std::function<void(ConnectionId)>& fn) const;
  Stats stats() const;

  // For shards and workers.
  Server& server() { return server_; }
  Handler& handler() { return handler_; }
  const Framer& framer() const { return framer_; }
  ConnectionTable& table() { return *table_; }
  RouteEpoch& route() { return route_; }
  unsigned nworkers() const { return static_cast<unsigned>(workers_.size()); }
  /// Number of shard indices ever used; shard_ptr(i) for i below it may be live or retired.
  unsigned shard_bound() const { return shard_bound_.load(std::memory_order_acquire); }
  Shard* shard_ptr(unsigned i) const { return slots_[i].load(std::memory_order_acquire); }
  Worker& worker(unsigned i) { return *workers_[i]; }
  std::size_t max_connections() const { return max_connections_; }
  std::size_t table_capacity() const { return table_capacity_; }
  std::atomic<std::size_t>& fds_in_use() { return fds_in_use_; }
  std::atomic<std::int64_t>& load_of(unsigned shard) { return load_[shard].v; }
  /// Time origin of every shard's coarse ticks (connections move between shards).
  std::int64_t epoch_ms() const { return epoch_ms_; }
  /// Connections handed over but not yet adopted (set_shards/rebalance wait for zero).
  std::atomic<std::int64_t>& in_transit() { return in_transit_; }
  bool workers_should_exit() const { return workers_exit_.load(std::memory_order_acquire); }
  /// Stop protocol: a shard has applied everything sent to it before the stop and its own
  /// handlers' cross-shard sends are out; when all are, shards close their connections.
  void stop_ready();
  bool all_stop_ready() const;
  /// Called by a shard that closed a socket: lets shards paused on EMFILE try again.
  void fd_released();
  std::atomic<std::uint32_t>& fd_release_epoch() { return fd_release_epoch_; }
  void count_worker_warning(WarningCode code) {
    worker_warnings_.fetch_add(1, std::memory_order_relaxed);
    worker_warnings_by_[static_cast<std::size_t>(code)].fetch_add(1, std::memory_order_relaxed);
  }
  /// Any engine thread: hands a warning to the handler (a throwing on_warning is swallowed).
  /// Counting and rate limiting are the caller's.
  void report(const Warning& w) noexcept;

  /// Any thread: pushes a command into a shard's inbox and wakes it; false if full or gone.
  bool post_to_shard(unsigned shard, const Command& cmd);
  /// Accepting shard: the shard a new connection should live on (least_loaded); counts it.
  std::uint32_t pick_least_loaded(std::uint32_t accepting);

  /// Builds the block for a send: the payload, framed when asked. nullptr if the message
  /// cannot be framed (longer than the length prefix can state).
  SendBlock* make_send_block(Bytes bytes, bool framed) const;

  // Takeover (takeover.cpp): the shards report to the hub; counts for stats().
  TakeoverHub& takeover_hub() { return takeover_hub_; }
  std::uint64_t connections_taken_over() const { return taken_over_.load(std::memory_order_relaxed); }
  std::uint64_t connections_taken_in() const { return taken_in_.load(std::memory_order_relaxed); }

 private:
  void takeover_warning(Severity severity, const std::string& text);
  void post_takeover(unsigned shard, TakeoverOp op, std::unique_ptr<ConnBatch> batch);
  void start_takeover_socket();
  void takeover_loop();
  bool serve_takeover(Channel& ch);
  std::vector<std::vector<int>> take_over_listeners_locked();
  void import_connections();
  void start_locked();
  enum class State : std::uint8_t { idle, running, stopping, stopped };
  void do_stop();
  void control_loop();
  SendStatus post_foreign(const Command& cmd);
  bool direct_ok(int shard, ConnectionId id) const;
  SendStatus route_command(const Command& cmd);
  Shard* add_shard_locked(const std::vector<int>& listen_fds);
  std::vector<int> open_shard_listeners_locked();
  void close_listeners_locked();
  void retire_shard_locked();
  void steer_locked(const std::vector<unsigned>& receivers);
  void unsteer_locked();
  void wait_transit_locked();
  std::vector<unsigned> active_snapshot() const;

  struct alignas(64) Load {
    std::atomic<std::int64_t> v{0};
  };

  Server& server_;
  Handler& handler_;
  ServerOptions opts_;
  Backend backend_ = Backend::epoll;
  Framer framer_;
  std::unique_ptr<ConnectionTable> table_;
  RouteEpoch route_;
  std::array<std::atomic<Shard*>, 256> slots_{};
  std::vector<std::unique_ptr<Shard>> owned_;  // every shard ever made (retired ones stay)
  std::atomic<unsigned> shard_bound_{0};
  std::array<Load, 256> load_{};
  std::array<std::atomic<bool>, 256> active_flag_{};
  std::vector<unsigned> active_;   // live shards; resize_mu_
  std::vector<unsigned> group_;    // reuseport group order (shard per position); resize_mu_
  std::vector<std::unique_ptr<Worker>> workers_;
  std::uint16_t port_ = 0;
  std::size_t max_connections_ = 0;
  std::size_t table_capacity_ = 0;
  std::atomic<std::size_t> fds_in_use_{0};
  std::atomic<std::uint32_t> fd_release_epoch_{0};
  std::atomic<std::uint64_t> worker_warnings_{0};
  std::array<std::atomic<std::uint64_t>, kWarningCodeCount> worker_warnings_by_{};  // + control
  std::atomic<std::uint64_t> timer_ids_{0};
  mutable std::mutex ticks_mu_;
  std::vector<std::shared_ptr<TickRegistration>> ticks_;  // ticks_mu_
  std::atomic<std::uint64_t> ticks_version_{0};
  std::atomic<bool> workers_exit_{false};
  std::atomic<std::int64_t> in_transit_{0};
  std::atomic<unsigned> stop_ready_{0};
  std::atomic<unsigned> stop_total_{~0u};
  std::int64_t epoch_ms_ = 0;
  bool steering_ok_ = true;
  Listeners listeners_;                  // resolved at construction; sockets bound by start()
  std::unique_ptr<AdminServer> admin_;   // ServerOptions::admin
  std::atomic<bool> draining_{false};
  std::atomic<bool> handed_over_{false};  // a takeover moved everything to a new process
  std::atomic<std::uint64_t> resizes_{0};
  std::vector<int> cpu_plan_;            // CPUs to pin threads to, round-robin (empty = none)

  // Takeover.
  TakeoverHub takeover_hub_;
  int takeover_listen_fd_ = -1;           // the old side's control socket (takeover_socket)
  std::thread takeover_thread_;           // esk-takeover: waits on it, runs a takeover
  std::unique_ptr<Channel> import_channel_;  // the new side's, during start()
  unsigned takeover_group_ = 0;           // sockets per TCP listener received (new side)
  std::chrono::steady_clock::time_point takeover_start_{};  // new side: when it connected
  std::atomic<std::uint64_t> taken_over_{0};  // connections handed to a new process
  std::atomic<std::uint64_t> taken_in_{0};    // connections received from an old one
  std::atomic<std::int64_t> takeover_us_{0};  // the last transfer's duration

  std::atomic<State> state_{State::idle};
  int stop_efd_ = -1;     // request_stop() writes it; the control thread reads it
  std::thread control_;   // runs a requested stop (from a signal handler or a handler)
  std::mutex control_mu_;  // joins control_ once
  std::mutex resize_mu_;  // serialises start/stop/set_shards/rebalance
  std::mutex life_mu_;
  std::condition_variable life_cv_;
};

/// Throws std::invalid_argument naming the first bad field and what to change.
void validate_options_or_throw(const ServerOptions& o);

}  // namespace esockets::detail

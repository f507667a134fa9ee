// ServerCore: the Server's implementation. Owns the shards and workers, routes cross-thread
// calls to the owning shard, and runs the start/stop lifecycle.
// Thread: routing methods (send, close, pause, broadcast, stats, ...) are safe from any thread;
// start/stop/wait from any non-engine thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "esockets/handler.hpp"
#include "esockets/options.hpp"
#include "esockets/stats.hpp"
#include "framer.hpp"
#include "mailbox.hpp"

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
  static constexpr unsigned kMaxShards = 255;
  static constexpr unsigned kMaxWorkers = 255;

  ServerCore(Server& server, Handler& handler, ServerOptions options);
  ~ServerCore();

  void start();
  void stop();
  void wait();
  bool running() const { return state_.load(std::memory_order_acquire) == State::running; }
  std::uint16_t port() const { return port_; }
  const ServerOptions& options() const { return opts_; }

  SendStatus send(ConnectionId id, Bytes bytes, bool framed);
  SendStatus close(ConnectionId id, CloseReason reason);
  SendStatus set_paused(ConnectionId id, bool pause);
  std::size_t broadcast(Bytes bytes);
  std::size_t client_count() const;
  void for_each_client(const std::function<void(ConnectionId)>& fn) const;
  Stats stats() const;

  // For shards and workers.
  Server& server() { return server_; }
  Handler& handler() { return handler_; }
  const Framer& framer() const { return framer_; }
  unsigned nshards() const { return static_cast<unsigned>(shards_.size()); }
  unsigned nworkers() const { return static_cast<unsigned>(workers_.size()); }
  Shard& shard(unsigned i) { return *shards_[i]; }
  Worker& worker(unsigned i) { return *workers_[i]; }
  std::size_t max_connections() const { return max_connections_; }
  std::size_t table_capacity() const { return table_capacity_; }
  std::atomic<std::size_t>& fds_in_use() { return fds_in_use_; }
  /// Called by a shard that closed a socket: lets shards paused on EMFILE try again.
  void fd_released();
  std::atomic<std::uint32_t>& fd_release_epoch() { return fd_release_epoch_; }
  void count_worker_warning() { worker_warnings_.fetch_add(1, std::memory_order_relaxed); }

  /// Builds the block for a send: the payload, framed when asked. nullptr if the message
  /// cannot be framed (longer than the length prefix can state).
  SendBlock* make_send_block(Bytes bytes, bool framed) const;

 private:
  enum class State : std::uint8_t { idle, running, stopping, stopped };
  SendStatus route(ConnectionId id, const Command& cmd);

  Server& server_;
  Handler& handler_;
  ServerOptions opts_;
  Framer framer_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::uint16_t port_ = 0;
  std::size_t max_connections_ = 0;
  std::size_t table_capacity_ = 0;
  std::atomic<std::size_t> fds_in_use_{0};
  std::atomic<std::uint32_t> fd_release_epoch_{0};
  std::atomic<std::uint64_t> worker_warnings_{0};

  std::atomic<State> state_{State::idle};
  std::mutex life_mu_;
  std::condition_variable life_cv_;
};

/// Throws std::invalid_argument naming the first bad field and what to change.
void validate_options_or_throw(const ServerOptions& o);

}  // namespace esockets::detail

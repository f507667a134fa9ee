// Worker: a handler thread in worker mode. Drains the event queues of every shard, runs the
// user's callbacks, and sends commands back over its own queue to each shard.
// Thread: run() and queue_command() on the worker's own thread only; notify() from any thread.
//
// Affinity: a connection's events all come from its shard's queue to the one worker picked at
// accept, in order, so its callbacks never overlap and keep arrival order.
#pragma once

#include <cstdint>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "esockets/connection.hpp"
#include "mailbox.hpp"
#include "wakeup.hpp"

namespace esockets::detail {

class ServerCore;

struct WorkerConn {
  Connection pub;
  bool refused = false;  // on_client_connect said no: its messages are dropped
  bool failed = false;   // a handler threw: its messages are dropped until the close lands
};

class Worker {
 public:
  Worker(ServerCore& core, unsigned index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void start();
  void join();
  /// Any thread: wake the worker if it sleeps.
  void notify() { wake_.notify(); }

  /// Worker thread: queue a command for a shard (pushed in batches). Backpressure when this
  /// worker already holds too many commands the shard has not taken yet.
  SendStatus queue_command(unsigned shard, const Command& c);

 private:
  struct Pending {
    std::vector<Command> items;
    std::size_t head = 0;
    std::size_t size() const { return items.size() - head; }
  };

  void run();
  void handle(unsigned shard, const Event& e);
  bool flush_pending();  // false if some shard's queue is full
  bool any_event_queued();
  void fail(WorkerConn& wc, const char* what, const char* detail);
  void warn(const std::string& msg);

  ServerCore& core_;
  const unsigned index_;
  Wakeup wake_{false};
  std::thread thread_;
  std::unordered_map<std::uint64_t, WorkerConn> conns_;
  std::vector<Pending> pending_;
  std::vector<Event> batch_;
  unsigned shards_done_ = 0;
  std::vector<bool> shard_done_;  // a done shard takes no more commands: drop them
  std::int64_t warn_window_ms_ = 0;
  unsigned warn_in_window_ = 0;
};

}  // namespace esockets::detail

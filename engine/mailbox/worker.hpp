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
#include "mailbox/mailbox.hpp"
#include "mailbox/outgoing.hpp"
#include "shard/shard_stats.hpp"
#include "core/timers.hpp"
#include "mailbox/wakeup.hpp"

namespace esockets::detail {

class ServerCore;

struct WorkerConn {
  Connection pub;
  std::uint32_t home = 0;  // the shard whose queue carries its events now
  bool refused = false;    // on_client_connect said no: its messages are dropped
  bool failed = false;     // a handler threw: its messages are dropped until the close lands
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
  std::uint64_t kernel_wakeups() const { return wake_.kernel_notifies(); }
  const HistogramCounters& handler_time() const { return handler_time_; }
  const HistogramCounters& handoff_wait() const { return handoff_wait_; }
  int cpu() const { return cpu_.load(std::memory_order_relaxed); }

  /// Worker thread: queue a command (pushed in batches, in call order, to the shard that owns
  /// the connection at push time). Never refused: while more than command_queue_capacity wait,
  /// the worker takes no further event (its shards then stop reading the clients).
  SendStatus queue_command(const Command& c);
  /// Worker thread: queue a reply the engine owes (ack, refusal, failure close): never refused.
  void queue_control(const Command& c);
  /// Worker thread: this worker runs `id`'s handlers.
  bool hosts(ConnectionId id) const { return conns_.count(id.value()) != 0; }
  /// Worker thread: its timers (its connections' and its own).
  ThreadTimers& timers() { return timers_; }

 private:
  struct Held {
    unsigned shard;
    Event event;
  };

  void run();
  void handle(unsigned shard, const Event& e);
  void process(unsigned shard, const Event& e);  // times a sample of them
  void process_event(unsigned shard, const Event& e);
  void replay_held(std::uint64_t id);
  bool flush_pending();  // false if a shard's queue is full
  bool any_event_queued();
  void fail(WorkerConn& wc, const char* what, const char* detail);
  void run_timers();
  template <class Fn>
  void guarded(WorkerConn& wc, const char* what, Fn&& fn);
  // Handler faults only (the worker makes no system calls that fail per connection).
  void warn(WarningCode code, ConnectionId conn, const std::string& msg);

  ServerCore& core_;
  const unsigned index_;
  Wakeup wake_{false};
  std::thread thread_;
  ThreadTimers timers_;  // before conns_: a connection's timers unlink from it when it goes
  std::unordered_map<std::uint64_t, WorkerConn> conns_;
  // Events that arrived from a shard the connection has not moved to yet (the old shard's
  // "moved" marker is still queued), or before its connect event.
  std::unordered_map<std::uint64_t, std::vector<Held>> held_;
  Outgoing pending_;  // commands for shards, in call order (see Outgoing)
  std::vector<Event> batch_;
  std::vector<Held> stash_;  // popped events waiting for pending_ to fall under high_mark_
  std::size_t stash_head_ = 0;
  std::size_t high_mark_ = 0;
  std::int64_t poll_ns_ = 0;           // ServerOptions::handoff_poll
  std::int64_t last_progress_ns_ = 0;  // when an event was last handled
  std::int64_t warn_window_ms_ = 0;
  unsigned warn_in_window_ = 0;
  std::uint64_t warn_suppressed_ = 0;
  HistogramCounters handler_time_;
  HistogramCounters handoff_wait_;
  std::atomic<int> cpu_{-1};
  unsigned handler_sample_ = 0;
};

}  // namespace esockets::detail

// Timers of one engine thread (a shard, or a worker): a hashed wheel of 1 ms slots.
// Thread: owner thread only, except that a connection's nodes are unlinked by its old shard
// and linked by its new one during a hand-over (each on its own thread, never at once).
//
// Cost follows armed timers, not connections: arming, cancelling and firing are O(1); a
// pass over a slot touches only the timers hashed to it (including those due in a later
// round of the wheel); a thread with no armed timer never looks at the wheel.
//
// Two kinds of nodes:
//   - thread timers (Server::after/every, ticks): owned by ThreadTimers, found by id;
//   - connection timers (Connection::after/every): owned by the connection's ConnExtras, which
//     moves with the connection; the wheel only links them.
// A node taken from the wheel to run is marked in_run: cancelling it then only flags it (the
// run loop frees it), so a timer may cancel itself or any other timer due in the same pass.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "esockets/connection.hpp"
#include "esockets/proxy.hpp"
#include "esockets/types.hpp"

namespace esockets::detail {

class ServerCore;
class ThreadTimers;

struct TimerNode {
  TimerNode* prev = nullptr;
  TimerNode* next = nullptr;
  std::int64_t due_ms = 0;
  std::int64_t period_ms = 0;  // 0 = one-shot
  TimerId id = 0;
  std::uint64_t conn = 0;  // ConnectionId value of a connection timer; 0 = thread timer
  std::function<void(Connection&)> on_conn;
  std::function<void()> on_thread;
  std::uint32_t slot = 0;
  bool linked = false;
  bool in_run = false;     // taken from the wheel by the current run pass
  bool cancelled = false;  // cancelled while in_run: freed by the run loop
};

// Per-connection extras behind Connection::extras_: typed state and armed timers.
struct ConnExtras {
  void* state = nullptr;
  void (*destroy)(void*) = nullptr;
  const void* tag = nullptr;
  std::vector<TimerNode*> timers;  // armed (a one-shot leaves when it runs); owned here
  ThreadTimers* home = nullptr;    // whose wheel links them
  std::unique_ptr<ProxyInfo> proxy;  // the connection's PROXY header, if it came with one
};

// A repeating tick registered with Server::tick_every, run on every handler thread.
struct TickRegistration {
  std::uint64_t id = 0;
  std::int64_t period_ms = 1;
  std::function<void()> fn;
  std::atomic<bool> cancelled{false};
};

class ThreadTimers {
 public:
  static constexpr unsigned kSlots = 1024;

  explicit ThreadTimers(ServerCore& core);
  ~ThreadTimers();
  ThreadTimers(const ThreadTimers&) = delete;
  ThreadTimers& operator=(const ThreadTimers&) = delete;

  /// A thread timer (period 0 = one-shot).
  TimerId add(std::int64_t delay_ms, std::int64_t period_ms, std::function<void()> fn);
  bool cancel(TimerId id);

  /// Connection timers: link/unlink a node owned by a ConnExtras.
  void link(TimerNode* n);
  void unlink(TimerNode* n);
  /// Hand-over: the old shard detaches a connection's timers, the new one attaches them.
  void detach(ConnExtras& x);
  void attach(ConnExtras& x);

  /// Arms ticks registered since the last call (cheap when nothing changed).
  void sync_ticks();

  /// Runs every timer due at `now_ms`. resolve(conn id) gives the Connection hosted by this
  /// thread (or nullptr); call(Connection&, fn) runs a connection timer with the owner's
  /// exception handling; thread timers that throw are reported through warn(text).
  template <class Resolve, class Call, class Warn>
  void run_due(std::int64_t now_ms, Resolve&& resolve, Call&& call, Warn&& warn);

  /// Milliseconds until the next slot that holds a timer (-1: none armed). May be early (a
  /// timer of a later round), never late.
  int timeout_ms(std::int64_t now_ms) const;
  bool empty() const { return count_ == 0; }
  /// The thread ended (a retired shard): drops its thread timers and ticks; a new thread on
  /// this object arms the registered ticks again.
  void reset();
  /// Ticks were registered or cancelled since sync_ticks() last looked.
  bool ticks_pending() const;
  std::size_t armed() const { return count_; }

 private:
  void collect(std::int64_t now_ms);
  void relink(TimerNode* n, std::int64_t now_ms);
  static void forget(ConnExtras& x, TimerNode* n);

  ServerCore& core_;
  std::array<TimerNode*, kSlots> heads_{};
  std::array<std::uint64_t, kSlots / 64> used_{};  // bit per non-empty slot
  std::int64_t cursor_ms_ = 0;  // every slot up to this time has been run
  std::size_t count_ = 0;
  std::vector<TimerNode*> due_;
  std::unordered_map<TimerId, TimerNode*> owned_;  // thread timers
  std::uint64_t ticks_seen_ = 0;
  std::vector<std::shared_ptr<TickRegistration>> ticks_;
};

// The engine's access to Connection::extras_.
struct ExtrasAccess {
  static ConnExtras*& of(Connection& c) { return c.extras_; }
  /// Created on first use (owner thread).
  static ConnExtras& make(Connection& c) {
    if (c.extras_ == nullptr) c.extras_ = new ConnExtras();
    return *c.extras_;
  }
};

template <class Resolve, class Call, class Warn>
void ThreadTimers::run_due(std::int64_t now_ms, Resolve&& resolve, Call&& call, Warn&& warn) {
  if (count_ == 0 || now_ms <= cursor_ms_) {
    if (count_ == 0) cursor_ms_ = now_ms;
    return;
  }
  collect(now_ms);
  std::vector<TimerNode*> batch;
  batch.swap(due_);
  for (TimerNode* n : batch) {
    if (n->cancelled) {
      delete n;
      continue;
    }
    if (n->conn != 0) {
      Connection* c = resolve(n->conn);
      ConnExtras* x = c != nullptr ? ExtrasAccess::of(*c) : nullptr;
      if (x == nullptr) {
        n->in_run = false;  // not ours any more: its owner frees it
        continue;
      }
      if (n->period_ms == 0) forget(*x, n);  // cancel_timer() now says false
      call(*c, n->on_conn);
      if (n->period_ms == 0) {
        delete n;
        continue;
      }
    } else {
      if (n->period_ms == 0) owned_.erase(n->id);
      try {
        n->on_thread();
      } catch (const std::exception& ex) {
        warn(std::string("a timer threw: ") + ex.what());
      } catch (...) {
        warn("a timer threw a non-std exception");
      }
      if (n->period_ms == 0) {
        delete n;
        continue;
      }
    }
    n->in_run = false;
    if (n->cancelled) {
      delete n;
    } else {
      relink(n, now_ms);
    }
  }
  if (due_.empty()) {
    batch.clear();
    due_.swap(batch);  // keep the capacity
  }
}

}  // namespace esockets::detail

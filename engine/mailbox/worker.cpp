#include "mailbox/worker.hpp"

#include <chrono>
#include <cstdlib>
#include <string_view>

#include <sched.h>

#include "core/clock.hpp"
#include "core/server_core.hpp"
#include "shard/shard.hpp"
#include "takeover/takeover.hpp"
#include "core/threads.hpp"

namespace esockets::detail {

namespace {
constexpr std::size_t kEventBatch = 256;
}

Worker::Worker(ServerCore& core, unsigned index) : core_(core), index_(index), timers_(core) {
  batch_.resize(kEventBatch);
  high_mark_ = core.options().command_queue_capacity;
  poll_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(core.options().handoff_poll).count();
}

Worker::~Worker() {
  for (std::size_t i = stash_head_; i < stash_.size(); ++i) dispose(stash_[i].event);
  for (auto& [id, v] : held_) {
    for (const Held& h : v) dispose(h.event);
  }
}

void Worker::start() {
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

SendStatus Worker::queue_command(const Command& c) {
  // Never refused: memory is bounded by taking no further event while too many wait (run()).
  pending_.push(c);
  return SendStatus::ok;
}

void Worker::queue_control(const Command& c) { pending_.push(c); }

bool Worker::flush_pending() {
  return pending_.flush(core_, [this](Shard& s, const Command& c) {
    return s.from_worker(index_).push(c);
  });
}

bool Worker::any_event_queued() {
  const unsigned bound = core_.shard_bound();
  for (unsigned s = 0; s < bound; ++s) {
    if (core_.shard_ptr(s)->to_worker(index_).read_available() > 0) return true;
  }
  return false;
}

void Worker::run() {
  tls_context = ThreadContext{&core_, -1, static_cast<int>(index_)};
  cpu_.store(name_and_pin_thread("esk-worker-" + std::to_string(index_), core_.cpu_for_worker(index_)),
             std::memory_order_relaxed);
  const std::size_t low_mark = core_.options().worker_queue_capacity / 2;
  while (true) {
    run_timers();
    if (!flush_pending()) {
      // A shard is behind on our commands: wait for it rather than pile up more work (its
      // events wait in its queue, so it stops reading the clients that produce them).
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      continue;
    }
    bool progress = false;
    if (stash_head_ < stash_.size()) {
      // Events popped earlier whose handling was stopped because too many commands waited.
      progress = true;
      while (stash_head_ < stash_.size() && pending_.size() <= high_mark_) {
        const Held h = stash_[stash_head_++];
        handle(h.shard, h.event);
      }
      if (stash_head_ == stash_.size()) {
        stash_.clear();
        stash_head_ = 0;
      }
      continue;
    }
    const unsigned bound = core_.shard_bound();
    for (unsigned s = 0; s < bound; ++s) {
      Shard& sh = *core_.shard_ptr(s);
      EventQueue& q = sh.to_worker(index_);
      const std::size_t n = pending_.size() > high_mark_ ? 0 : q.pop(batch_.data(), batch_.size());
      if (n > 0) {
        progress = true;
        for (std::size_t i = 0; i < n; ++i) {
          handle(s, batch_[i]);
          if (pending_.size() > high_mark_ && i + 1 < n) {
            // One batch of events may fan out into far more commands than the queues take:
            // keep the rest for after the flush (in order), so memory stays bounded.
            for (std::size_t k = i + 1; k < n; ++k) stash_.push_back(Held{s, batch_[k]});
            break;
          }
        }
        sh.counters().events_popped.fetch_add(n, std::memory_order_relaxed);
      }
      auto& wanted = sh.drain_wanted(index_);
      if (wanted.load(std::memory_order_acquire) && q.read_available() <= low_mark &&
          wanted.exchange(false, std::memory_order_acq_rel)) {
        sh.notify();
      }
    }
    if (progress) {
      if (poll_ns_ > 0) last_progress_ns_ = monotonic_ns();
      continue;
    }
    if (!flush_pending()) continue;
    // Every shard has ended and pushed its last event; nothing is left to read.
    if (core_.workers_should_exit() && !any_event_queued() && stash_.empty()) break;
    if (poll_ns_ > 0 && monotonic_ns() - last_progress_ns_ < poll_ns_) {
      // Traffic was here a moment ago: poll a little longer rather than pay a wake-up. Yield
      // while polling: on a machine with more threads than cores a pure spin takes the core
      // from the very thread it waits for (measured: worse than sleeping).
      ::sched_yield();
      continue;
    }
    wake_.prepare_sleep();
    if (any_event_queued() || core_.workers_should_exit() ||
        timers_.ticks_pending()) {
      wake_.woke();
      continue;
    }
    wake_.sleep_futex(timers_.timeout_ms(monotonic_ms()));
  }
  flush_pending();  // whatever is left goes to shards that have ended: disposed
  pending_.clear();
}

void Worker::run_timers() {
  timers_.sync_ticks();
  if (timers_.empty()) return;
  timers_.run_due(
      monotonic_ms(),
      [this](std::uint64_t id) -> Connection* {
        auto it = conns_.find(id);
        return it != conns_.end() && !it->second.refused && !it->second.failed ? &it->second.pub
                                                                                : nullptr;
      },
      [this](Connection& pub, const std::function<void(Connection&)>& fn) {
        guarded(conns_.at(pub.id().value()), "a timer", [&] { fn(pub); });
      },
      [this](const std::string& msg) { warn(WarningCode::handler_exception, {}, msg); });
}

template <class Fn>
void Worker::guarded(WorkerConn& wc, const char* what, Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& ex) {
    fail(wc, what, ex.what());
  } catch (...) {
    fail(wc, what, "non-std exception");
  }
}

void Worker::fail(WorkerConn& wc, const char* what, const char* detail) {
  warn(WarningCode::handler_exception, wc.pub.id(),
       std::string("handler ") + what + " threw for " + wc.pub.getip() + ": " + detail);
  if (!wc.failed) {
    wc.failed = true;
    queue_control(Command{wc.pub.id().value(), nullptr, 0, CommandKind::close,
                          static_cast<std::uint8_t>(CloseReason::handler_exception), 0});
  }
}

void Worker::handle(unsigned shard, const Event& e) {
  if (e.stamp_us != 0) {
    const auto now_us = static_cast<std::uint32_t>(monotonic_ns() / 1000);
    handoff_wait_.record(std::uint64_t{static_cast<std::uint32_t>(now_us - e.stamp_us)} * 1000);
  }
  if (e.kind == EventKind::barrier) {
    queue_control(Command{0, nullptr, 0, CommandKind::barrier_ack, 0,
                          static_cast<std::uint8_t>(shard)});
    return;
  }
  // A connection's events come from one shard at a time: the one it lives on. After a move,
  // the new shard's events wait here until the old shard's "moved" marker is processed.
  auto it = conns_.find(e.id);
  const bool from_home = e.kind == EventKind::connect
                             ? true
                             : (it != conns_.end() && it->second.home == shard);
  if (!from_home) {
    held_[e.id].push_back(Held{shard, e});
    return;
  }
  process(shard, e);
  if (!held_.empty() && (e.kind == EventKind::connect || e.kind == EventKind::moved)) {
    replay_held(e.id);
  }
}

void Worker::replay_held(std::uint64_t id) {
  // Take, each time, the earliest held event from the connection's home shard (so each
  // shard's order is kept); processing a "moved" marker changes the home, so start over.
  for (;;) {
    auto hit = held_.find(id);
    if (hit == held_.end()) return;
    auto cit = conns_.find(id);
    std::vector<Held>& v = hit->second;
    std::size_t k = 0;
    while (k < v.size() && (cit == conns_.end() || v[k].shard != cit->second.home)) ++k;
    if (k == v.size()) return;
    const Held h = v[k];
    v.erase(v.begin() + static_cast<std::ptrdiff_t>(k));
    if (v.empty()) held_.erase(hit);
    process(h.shard, h.event);
  }
}

void Worker::process(unsigned shard, const Event& e) {
  if ((++handler_sample_ & HistogramCounters::kSampleMask) != 0) {
    process_event(shard, e);
    return;
  }
  const std::int64_t t0 = monotonic_ns();
  process_event(shard, e);
  handler_time_.record(static_cast<std::uint64_t>(monotonic_ns() - t0));
}

void Worker::process_event(unsigned shard, const Event& e) {
  Handler& h = core_.handler();
  switch (e.kind) {
    case EventKind::connect: {
      std::unique_ptr<ConnectInfo> info(static_cast<ConnectInfo*>(e.data));
      WorkerConn& wc = conns_[e.id];
      wc.home = shard;
      wc.pub.core_ = &core_;
      wc.pub.id_ = ConnectionId::from_value(e.id);
      wc.pub.fd_ = static_cast<int>(e.len);
      wc.pub.peer_ = info->peer;
      wc.pub.listener_ = info->listener;
      if (info->proxy) ExtrasAccess::make(wc.pub).proxy = std::move(info->proxy);
      try {
        const bool ok = info->restored ? h.on_client_restore(wc.pub, *info->restored)
                                       : h.on_client_connect(wc.pub);
        if (!ok) {
          wc.refused = true;
          queue_control(Command{e.id, nullptr, 0, CommandKind::close,
                                static_cast<std::uint8_t>(CloseReason::refused), 0});
        }
      } catch (const std::exception& ex) {
        fail(wc, "on_client_connect", ex.what());
      } catch (...) {
        fail(wc, "on_client_connect", "non-std exception");
      }
      return;
    }
    case EventKind::message: {
      auto* payload = static_cast<SharedPayload*>(e.data);
      auto it = conns_.find(e.id);
      if (it != conns_.end() && !it->second.refused && !it->second.failed) {
        // While the handler runs, a send of bytes of its message references them (no copy).
        lent_payload() = payload;
        try {
          h.on_message_recv(it->second.pub, std::string_view(payload->data(), payload->len));
        } catch (const std::exception& ex) {
          fail(it->second, "on_message_recv", ex.what());
        } catch (...) {
          fail(it->second, "on_message_recv", "non-std exception");
        }
        lent_payload() = nullptr;
      }
      release_shared_payload(payload);
      return;
    }
    case EventKind::disconnect: {
      auto it = conns_.find(e.id);
      if (it == conns_.end()) return;
      try {
        h.on_client_disconnect(it->second.pub, static_cast<CloseReason>(e.reason));
      } catch (const std::exception& ex) {
        warn(WarningCode::handler_exception, it->second.pub.id(),
             std::string("on_client_disconnect threw: ") + ex.what());
      } catch (...) {
        warn(WarningCode::handler_exception, it->second.pub.id(),
             "on_client_disconnect threw a non-std exception");
      }
      it->second.pub.release_extras();  // typed state and timers end here
      conns_.erase(it);
      return;
    }
    case EventKind::post: {
      auto* p = static_cast<PostedFn*>(e.data);
      auto it = conns_.find(e.id);
      if (it != conns_.end() && !it->second.refused && !it->second.failed) {
        guarded(it->second, "a posted function", [&] { p->fn(it->second.pub); });
      }
      delete p;
      return;
    }
    case EventKind::output_high:
    case EventKind::output_low: {
      auto it = conns_.find(e.id);
      if (it == conns_.end() || it->second.refused || it->second.failed) return;
      try {
        if (e.kind == EventKind::output_high) {
          h.on_output_high(it->second.pub);
        } else {
          h.on_output_low(it->second.pub);
        }
      } catch (const std::exception& ex) {
        fail(it->second, "on_output_high/low", ex.what());
      } catch (...) {
        fail(it->second, "on_output_high/low", "non-std exception");
      }
      return;
    }
    case EventKind::framing_error: {
      auto it = conns_.find(e.id);
      if (it == conns_.end() || it->second.refused || it->second.failed) return;
      try {
        h.on_framing_error(it->second.pub, static_cast<const char*>(e.data));
      } catch (const std::exception& ex) {
        fail(it->second, "on_framing_error", ex.what());
      } catch (...) {
        fail(it->second, "on_framing_error", "non-std exception");
      }
      return;
    }
    case EventKind::eof:
      queue_control(Command{e.id, nullptr, 0, CommandKind::eof_ack, 0, 0});
      return;
    case EventKind::moved: {
      auto it = conns_.find(e.id);
      if (it != conns_.end()) it->second.home = e.len;
      return;
    }
    case EventKind::barrier:
      return;  // answered in handle()
    case EventKind::takeover: {
      // Handed to another process: its state goes back to the shard (which waits for it),
      // then the connection ends here.
      auto* st = new TakenState;
      auto it = conns_.find(e.id);
      if (it != conns_.end()) {
        if (!it->second.refused && !it->second.failed) {
          try {
            st->app = h.on_client_takeover(it->second.pub);
          } catch (const std::exception& ex) {
            warn(WarningCode::handler_exception, it->second.pub.id(),
                 std::string("on_client_takeover threw (its state is not carried over): ") +
                     ex.what());
          } catch (...) {
            warn(WarningCode::handler_exception, it->second.pub.id(),
                 "on_client_takeover threw a non-std exception (its state is not carried over)");
          }
        }
        if (const ProxyInfo* p = it->second.pub.proxy()) st->proxy = encode_proxy(*p);
      }
      queue_control(Command{e.id, st, 0, CommandKind::takeover_state, 0,
                            static_cast<std::uint8_t>(e.len)});
      if (it == conns_.end()) return;
      try {
        h.on_client_disconnect(it->second.pub, CloseReason::taken_over);
      } catch (...) {
        warn(WarningCode::handler_exception, it->second.pub.id(),
             "on_client_disconnect threw at a takeover");
      }
      it->second.pub.release_extras();
      conns_.erase(it);
      return;
    }
  }
}

void Worker::warn(WarningCode code, ConnectionId conn, const std::string& msg) {
  const std::int64_t now = monotonic_ms();
  core_.count_worker_warning(code);
  Warning w;
  w.worker = static_cast<int>(index_);
  if (now - warn_window_ms_ >= 1000) {
    if (warn_suppressed_ > 0) {
      const std::string note = "esockets: worker " + std::to_string(index_) + ": " +
                               std::to_string(warn_suppressed_) + " similar warnings suppressed";
      warn_suppressed_ = 0;
      w.code = WarningCode::suppressed;
      w.text = note;
      core_.report(w);
    }
    warn_window_ms_ = now;
    warn_in_window_ = 0;
  }
  if (++warn_in_window_ > 10) {
    ++warn_suppressed_;
    return;
  }
  const std::string text = "esockets: worker " + std::to_string(index_) + ": " + msg;
  w.code = code;
  w.connection = conn;
  w.text = text;
  core_.report(w);
}

}  // namespace esockets::detail

// Shard lifecycle, loop and cross-thread traffic. The per-connection state machine (accept,
// read, write, close) is in shard_io.cpp.
#include "shard/shard.hpp"

#include <malloc.h>
#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <system_error>

#include "core/clock.hpp"
#include "core/server_core.hpp"
#include "io/socket_ops.hpp"
#include "core/threads.hpp"
#include "mailbox/worker.hpp"

namespace esockets::detail {

namespace {

constexpr std::int64_t kTickMs = 50;
constexpr std::int64_t kTimeoutSweepMs = 250;
constexpr unsigned kWarningsPerSecond = 10;

}  // namespace

Shard::Shard(ServerCore& core, std::uint32_t index, const std::vector<int>& listen_fds)
    : core_(core),
      index_(index),
      table_(core.table()),
      framer_(core.framer().config()),
      inbox_(std::make_unique<CommandInbox>(core.options().command_queue_capacity)),
      timers_(core) {
  if (core.backend() == Backend::io_uring) {
    ring_setup();
  } else {
    epoll_setup();
  }
  for (std::size_t i = 0; i < listen_fds.size(); ++i) {
    const int shared = core.listener(i).shared_fd;
    listeners_.push_back(ShardListener{listen_fds[i] >= 0 ? listen_fds[i] : shared,
                                       listen_fds[i] < 0, false});
  }
  for (std::size_t i = 0; i < listeners_.size(); ++i) {
    if (!watch_listener(i, true)) {
      throw std::system_error(errno, std::generic_category(), "esockets: epoll_ctl(listener)");
    }
  }
  const auto& o = core.options();
  for (unsigned w = 0; w < o.workers; ++w) {
    from_workers_.push_back(std::make_unique<CommandQueue>(o.command_queue_capacity));
    to_workers_.push_back(std::make_unique<EventQueue>(o.worker_queue_capacity));
    drain_wanted_.push_back(std::make_unique<std::atomic<bool>>(false));
  }
  outboxes_.resize(o.workers);
  if (o.workers > 0) {
    poll_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(o.handoff_poll).count();
  }
  rbuf_size_ = o.read_chunk;
  rbuf_.reset(new char[rbuf_size_]);
  open_payloads();
  cmd_batch_.resize(kCommandBatch);
  timeouts_enabled_ = o.idle_timeout.count() > 0 || o.frame_timeout.count() > 0 ||
                      o.write_timeout.count() > 0;
  const unsigned live = core.shards() > 0 ? core.shards() : 1;
  shard_output_cap_ = o.output_total_cap / live;
  // Commands for other shards may wait this many before the clients producing them pause.
  remote_high_ = o.command_queue_capacity;
}

Shard::~Shard() {
  // Threads are joined; free whatever is still queued or held. The ring goes first: a send
  // still parked in it would read the blocks freed below.
  ring_.reset();
  Command cmd{};
  while (inbox_ && inbox_->pop(cmd)) dispose(cmd);
  for (auto& q : from_workers_) {
    if (q) q->consume_all([](const Command& x) { dispose(x); });
  }
  for (auto& q : to_workers_) q->consume_all([](const Event& x) { dispose(x); });
  for (auto& ob : outboxes_) {
    for (std::size_t i = ob.head; i < ob.items.size(); ++i) dispose(ob.items[i]);
  }
  for (auto& [id, cmds] : incoming_) {
    for (const Command& x : cmds) dispose(x);
  }
  for (const Command& x : posted_) dispose(x);
  auto drop_batch = [this](AdoptBatch* b) {
    if (b == nullptr) return;
    for (Conn* c : b->conns) {
      c->out.clear(pool_);
      table_.clear(static_cast<std::uint32_t>(c->fd()));
      ::close(c->fd());
      delete c;
    }
    for (const Command& x : b->posted) dispose(x);
    delete b;
  };
  for (AdoptBatch* b : batches_) drop_batch(b);
  for (AdoptBatch* b : unsent_) drop_batch(b);
  for (std::size_t slot = 0; slot < table_.capacity(); slot += 1) {
    Conn* c = table_.at(static_cast<std::uint32_t>(slot), index_);
    if (c == nullptr) continue;
    c->out.clear(pool_);
    table_.clear(static_cast<std::uint32_t>(slot));
    ::close(c->fd());
    delete c;
  }
  free_graveyard();
  for (const ShardListener& l : listeners_) {
    if (l.fd >= 0 && !l.shared) ::close(l.fd);
  }
  for (const auto& [fd, p] : pending_) ::close(fd);  // (stop closed them; the listeners may be gone)
  if (epfd_ >= 0) ::close(epfd_);
  for (auto& [tag, chain] : ring_orphans_) free_chain(chain);
  close_payloads();
}

void Shard::open_payloads() {
  const auto& o = core_.options();
  if (o.workers == 0 || payloads_ != nullptr) return;
  payloads_ = PayloadPool::open(o.read_chunk);
  lend_reads_ = o.framing == Framing::raw && core_.backend() == Backend::epoll;
}

void Shard::close_payloads() {
  if (lend_ != nullptr) release_shared_payload(lend_);
  lend_ = nullptr;
  if (payloads_ != nullptr) payloads_->close();  // buffers still with workers free themselves
  payloads_ = nullptr;
}

void Shard::start() {
  thread_ = std::thread([this] { run(); });
}

void Shard::join() {
  if (thread_.joinable()) thread_.join();
}

void Shard::request_stop() {
  stop_requested_.store(true, std::memory_order_release);
  wake_.notify();
}

bool Shard::on_own_thread() const {
  return tls_context.core == &core_ && tls_context.shard == static_cast<int>(index_);
}

bool Shard::inbound_pending() const {
  if (!inbox_->empty()) return true;
  for (const auto& q : from_workers_) {
    if (q->read_available() > 0) return true;
  }
  if (stop_requested_.load(std::memory_order_acquire) && phase_ == Phase::serving) return true;
  return false;
}

int Shard::next_timeout_ms() const {
  if (!dirty_.empty() || !graveyard_.empty() || !resumes_.empty() || !posted_.empty()) return 0;
  if (move_ == Move::quiescing || !unsent_.empty() || !remote_.empty() ||
      takeover_ == Takeover::switching) {
    return 1;
  }
  for (const auto& ob : outboxes_) {
    if (!ob.empty() || !ob.flow_paused.empty()) return static_cast<int>(kTickMs) / 10 + 1;
  }
  if (!timed_.empty() || !pending_.empty() || accept_paused_ || phase_ != Phase::serving ||
      trim_pending_ ||
      move_ != Move::idle || (timeouts_enabled_ && counters_.connections.get() > 0)) {
    return static_cast<int>(kTickMs);
  }
  // Load telemetry is refreshed once a second while there is anything to measure.
  return counters_.connections.get() > 0 ? 1000 : -1;
}

void Shard::run() {
  tls_context = ThreadContext{&core_, static_cast<int>(index_), -1};
  cpu_.store(name_and_pin_thread("esk-shard-" + std::to_string(index_), core_.cpu_for_shard(index_)),
             std::memory_order_relaxed);
  epoll_event events[kMaxEvents];
  if (ring_) ring_->enable();  // this thread is the ring's only submitter from now on
  now_ms_ = monotonic_ms();
  epoch_ms_ = core_.epoch_ms();
  last_sweep_ms_ = now_ms_;
  last_timeout_sweep_ms_ = now_ms_;
  load_window_start_ns_ = monotonic_ns();
  while (true) {
    int timeout = next_timeout_ms();
    if (timeout != 0) {
      const int t = timers_timeout_ms();
      if (t >= 0 && (timeout < 0 || t < timeout)) timeout = t;
    }
    std::int64_t poll_start = 0;  // set when this pass is a poll that found nothing queued
    if (timeout != 0 && poll_ns_ > 0) {
      const std::int64_t now = monotonic_ns();
      if (now - last_handoff_ns_ < poll_ns_) {
        // Events went to workers a moment ago: poll for their replies (and the sockets) rather
        // than sleep and pay a wake-up for each. When nothing is queued yet, yield so a worker
        // sharing this core can run.
        timeout = 0;
        if (!inbound_pending()) {
          ::sched_yield();
          poll_start = now;
        }
      }
    }
    if (timeout != 0) {
      wake_.prepare_sleep();
      if (inbound_pending()) timeout = 0;
    }
    const std::int64_t before = monotonic_ns();
    int n = wait_events(events, timeout);
    const std::int64_t after = monotonic_ns();
    idle_ns_ += after - before;
    wake_.woke();
    now_ms_ = after / 1000000;
    if (ring_) {
      n = ring_reap();  // completions are dispatched as they are reaped
    } else {
      epoll_dispatch(events, n);
    }
    if (n > 0) events_in_window_ += static_cast<std::uint64_t>(n);
    drain_commands();
    run_posted();
    process_resumes();
    run_timers();
    flush_remote();
    service_workers();
    if (phase_ != Phase::serving || stop_requested_.load(std::memory_order_acquire)) advance_stop();
    if (move_ != Move::idle && phase_ == Phase::serving) advance_move();
    if (takeover_ != Takeover::none && phase_ == Phase::serving) advance_takeover();
    if (now_ms_ - last_sweep_ms_ >= kTickMs) sweep_timers();
    if (now_ms_ - last_timeout_sweep_ms_ >= kTimeoutSweepMs) sweep_timeouts();
    if (after - load_window_start_ns_ >= 1000000000) update_load();
    flush_dirty();
    flush_remote();
    service_workers();
    free_graveyard();
    if (poll_start != 0 && n == 0) {
      // A poll that found nothing counts as idle, like the epoll_wait it stands in for (the
      // busy ratio steers least_loaded placement).
      idle_ns_ += monotonic_ns() - poll_start - (after - before);
    }
    if (phase_ == Phase::done || (move_ == Move::finishing && move_req_ && move_req_->retire &&
                                  counters_.connections.get() == 0 && timed_.empty())) {
      bool pending = !remote_.empty() || !unsent_.empty() || !posted_.empty();
      for (auto& ob : outboxes_) pending = pending || !ob.empty();
      // io_uring: an armed accept still holds a listener we closed; its last completions
      // (sockets the kernel accepted meanwhile) are handled before we leave, and so are the
      // cancelled sends of closed connections (they read bytes we free when they end).
      pending = pending || !ring_listeners_settled() || !ring_sends_settled();
      if (!pending) {
        if (ring_) ring_->enter(false, 0);  // the cancels of closed sockets' operations
        seal_and_drain();
        break;
      }
    }
  }
  exited_.store(true, std::memory_order_release);
}

int Shard::wait_events(epoll_event* events, int timeout) {
  return ring_ ? ring_wait(timeout) : epoll_wait_events(events, timeout);
}

void Shard::update_load() {
  const std::int64_t now = monotonic_ns();
  const std::int64_t window = now - load_window_start_ns_;
  if (window <= 0) return;
  std::int64_t busy = window - idle_ns_;
  if (busy < 0) busy = 0;
  counters_.busy_permille.set(static_cast<std::uint64_t>(busy * 1000 / window));
  counters_.events_per_sec.set(events_in_window_ * 1000000000ull / static_cast<std::uint64_t>(window));
  load_window_start_ns_ = now;
  idle_ns_ = 0;
  events_in_window_ = 0;
}

void Shard::apply(const Command& cmd) {
  switch (cmd.kind) {
    case CommandKind::send: {
      Conn* c = target_of(cmd);
      if (c != nullptr) (void)send_local(c->id(), static_cast<SendBlock*>(cmd.data));
      return;
    }
    case CommandKind::close: {
      Conn* c = target_of(cmd);
      if (c != nullptr) close_local(c->id(), static_cast<CloseReason>(cmd.reason));
      return;
    }
    case CommandKind::pause:
    case CommandKind::resume: {
      Conn* c = target_of(cmd);
      if (c != nullptr) pause_local(c->id(), cmd.kind == CommandKind::pause);
      return;
    }
    case CommandKind::eof_ack: {
      Conn* c = target_of(cmd);
      if (c != nullptr && c->state == ConnState::half_closed) begin_close(c, c->reason);
      return;
    }
    case CommandKind::multicast:
      multicast_local(static_cast<MulticastBatch*>(cmd.data));
      return;
    case CommandKind::barrier_ack:
      ++barrier_acks_;
      return;
    case CommandKind::adopt:
      adopt_batch(static_cast<AdoptBatch*>(cmd.data));
      return;
    case CommandKind::adopt_fd:
      adopt_fresh(static_cast<FreshFd*>(cmd.data));
      return;
    case CommandKind::move_out:
      start_move(static_cast<MoveRequest*>(cmd.data));
      return;
    case CommandKind::post:
      apply_post(cmd);
      return;
    case CommandKind::takeover:
      takeover_order(static_cast<TakeoverOrder*>(cmd.data));
      return;
    case CommandKind::takeover_state:
      take_state(cmd);
      return;
  }
}

void Shard::emit(unsigned worker, const Event& e) {
  outboxes_[worker].items.push_back(e);
  if ((++emit_sample_ & HistogramCounters::kSampleMask) == 0) {
    outboxes_[worker].items.back().stamp_us =
        static_cast<std::uint32_t>(monotonic_ns() / 1000) | 1u;  // never 0 (= unsampled)
  }
}

void Shard::service_workers() {
  std::uint64_t backlog = 0;
  for (unsigned w = 0; w < outboxes_.size(); ++w) {
    Outbox& ob = outboxes_[w];
    if (!ob.empty()) {
      // Connections wait for room: ask the worker to wake us once it drained below half.
      // Set before the push, so the worker cannot drain everything without seeing it.
      if (!ob.flow_paused.empty()) drain_wanted_[w]->store(true, std::memory_order_release);
      std::size_t pushed = to_workers_[w]->push(ob.items.data() + ob.head, ob.size());
      if (pushed > 0) {
        ob.head += pushed;
        counters_.events_pushed.add(pushed);
        core_.worker(w).notify();
        if (poll_ns_ > 0) last_handoff_ns_ = monotonic_ns();
      }
      if (ob.empty()) {
        ob.items.clear();
        ob.head = 0;
      } else {
        if (ob.head > 4096 && ob.head * 2 > ob.items.size()) {
          ob.items.erase(ob.items.begin(), ob.items.begin() + static_cast<std::ptrdiff_t>(ob.head));
          ob.head = 0;
        }
      }
    }
    backlog += ob.size();
    // Resume flow-paused connections once the queue is back under its low mark.
    if (ob.empty() && !ob.flow_paused.empty() &&
        !drain_wanted_[w]->load(std::memory_order_acquire)) {
      flow_resume(ob.flow_paused);
    }
  }
  counters_.outbox_backlog.set(backlog);
}

void Shard::advance_stop() {
  if (phase_ == Phase::serving) {
    // Stop accepting; stop reading; let workers finish what is queued (barrier).
    close_listeners();
    close_all_pending();  // never seen by a handler: nothing to flush or report
    phase_ = Phase::draining;
    // The pass's clock was read when its wait returned; a busy pass may have taken a while
    // since, and shutdown_timeout counts from the stop.
    now_ms_ = monotonic_ms();
    stop_deadline_ms_ = now_ms_ + core_.options().shutdown_timeout.count();
    table_.for_each_hosted(index_, [this](ConnectionId id) {
      Conn* c = table_.find(id, index_);
      if (c != nullptr && c->state == ConnState::open) {
        if (!c->user_paused && !c->flow_paused) counters_.paused.add();
        c->user_paused = true;  // no new input: the server is going away
        update_interest(c);
      }
    });
    for (unsigned w = 0; w < outboxes_.size(); ++w) emit(w, Event{0, nullptr, 0, EventKind::barrier, 0});
    barrier_acks_ = 0;
  }
  const bool late = now_ms_ >= stop_deadline_ms_;
  if (phase_ == Phase::draining && !stop_ready_reported_ &&
      ((barrier_acks_ >= outboxes_.size() && remote_.empty()) || late)) {
    // Every worker handled what we gave it and our handlers' sends to other shards are in
    // their queues: apply everything sent to us so far (on_server_shutting_down's sends
    // included), then tell the others.
    drain_all();
    stop_ready_reported_ = true;
    core_.stop_ready();
  }
  if (phase_ == Phase::draining && stop_ready_reported_ && (core_.all_stop_ready() || late)) {
    // Every shard is ready: no handler sends to another shard's client any more, so closing now
    // loses nothing that was accepted. Sends still arriving are appended while each connection
    // flushes (see send_local), bounded by shutdown_timeout.
    drain_all();
    phase_ = Phase::closing;
    table_.for_each_hosted(index_, [this](ConnectionId id) {
      Conn* c = table_.find(id, index_);
      if (c != nullptr) begin_close(c, CloseReason::shutdown);
    });
  }
  if (phase_ == Phase::closing && counters_.connections.get() == 0) {
    // Lingering sockets still hold fds; wait for them (bounded by the deadline).
    bool lingering = false;
    for (ConnectionId id : timed_) {
      Conn* c = table_.at(id.slot(), index_);
      if (c != nullptr && c->state == ConnState::lingering) lingering = true;
    }
    if (!lingering) {
      phase_ = Phase::done;
    }
  }
}

void Shard::process_resumes() {
  // Held frames are delivered here, at the top of the loop, never from inside a callback that
  // resumed reading (on_output_low, on_message_recv of another connection): one connection's
  // callbacks never nest.
  if (resumes_.empty()) return;
  std::vector<ConnectionId> ids;
  ids.swap(resumes_);
  for (ConnectionId id : ids) {
    Conn* c = table_.find(id, index_);
    if (c == nullptr) continue;
    c->resume_pending = false;
    if (!c->reading() || c->moving) continue;
    if (c->frame.has_pending_frames()) {
      delivering_ = c;
      FeedStatus st;
      try {
        st = framer_.resume(c->frame, [&](std::string_view f) { return deliver_frame(c, f); });
      } catch (const std::exception& ex) {
        delivering_ = nullptr;
        fail_conn(c, ex.what());
        continue;
      }
      delivering_ = nullptr;
      if (table_.find(id, index_) != c) continue;
      if (c->frame.buffered() == 0) c->frame_start_tick = 0;  // no partial frame is left
      if (c->state == ConnState::closing) c->frame.clear();
      if (st == FeedStatus::error && c->state != ConnState::closing) {
        framing_failed(c);
        continue;
      }
    }
    if (c->eof_seen && c->reading() && !c->frame.has_pending_frames()) {
      // io_uring: the peer's FIN (or RST) came in behind the frames just delivered.
      c->eof_seen = false;
      if (c->reset_seen) {
        abort_conn(c, CloseReason::reset);
      } else {
        on_eof(c);
      }
      continue;
    }
    mark_dirty(c);
  }
}

void Shard::fail_conn(Conn* c, const char* what) {
  warn(WarningCode::out_of_memory, Severity::error, c->id(), 0,
       "closing " + c->pub.getip() + ": " + what);
  if (c->state == ConnState::lingering) {
    close_fd(c);
    return;
  }
  c->frame.clear();
  abort_conn(c, CloseReason::io_error);
}

void Shard::sweep_timers() {
  last_sweep_ms_ = now_ms_;
  const std::uint32_t epoch = core_.fd_release_epoch().load(std::memory_order_relaxed);
  if (accept_paused_ && (now_ms_ >= accept_resume_ms_ || epoch != fd_epoch_seen_)) {
    resume_accepting();
  }
  fd_epoch_seen_ = epoch;
  if (!pending_.empty()) sweep_pending();
  const bool past_stop = phase_ != Phase::serving && now_ms_ >= stop_deadline_ms_;
  std::size_t keep = 0;
  for (std::size_t i = 0; i < timed_.size(); ++i) {
    ConnectionId id = timed_[i];
    Conn* c = id.generation() == 0 ? table_.at(id.slot(), index_) : table_.find(id, index_);
    if (c == nullptr || !c->timed) continue;
    if ((c->deadline_ms != 0 && now_ms_ >= c->deadline_ms) || past_stop) {
      c->timed = false;
      if (c->state == ConnState::lingering) {
        close_fd(c);
      } else {
        // Output could not be flushed in time: the peer is not reading.
        abort_conn(c, c->state == ConnState::closing && c->reason != CloseReason::shutdown
                          ? CloseReason::slow_consumer
                          : c->reason);
      }
      continue;
    }
    timed_[keep++] = id;
  }
  timed_.resize(keep);
}

void Shard::sweep_timeouts() {
  // A coarse sweep over the table (as uSockets does) instead of a timer per connection:
  // every connection is looked at every 250 ms, which costs microseconds per thousand.
  last_timeout_sweep_ms_ = now_ms_;
  if (trim_pending_) {
    // Large output buffers of closed slow consumers were freed: give the memory back.
    ::malloc_trim(0);
    trim_pending_ = false;
  }
  if (!timeouts_enabled_ || phase_ != Phase::serving) return;
  const auto& o = core_.options();
  const auto ticks = [](std::chrono::milliseconds d) {
    return static_cast<std::uint32_t>(d.count() / 10);
  };
  const std::uint32_t idle = ticks(o.idle_timeout);
  const std::uint32_t frame = ticks(o.frame_timeout);
  const std::uint32_t write = ticks(o.write_timeout);
  const std::uint32_t now = tick();
  table_.for_each_hosted(index_, [&](ConnectionId id) {
    Conn* c = table_.find(id, index_);
    if (c == nullptr || c->state != ConnState::open) return;
    if (write != 0 && c->write_stall_tick != 0 && now - c->write_stall_tick >= write) {
      close_slow_consumer(c);
      return;
    }
    if (c->user_paused || c->flow_paused) return;  // we are not reading: not the client's fault
    if (frame != 0 && c->frame_start_tick != 0 && now - c->frame_start_tick >= frame) {
      begin_close(c, CloseReason::frame_timeout);
      return;
    }
    if (idle != 0 && now - c->last_read_tick >= idle) begin_close(c, CloseReason::idle);
  });
}

void Shard::flush_dirty() {
  // Closing a connection may run a handler that makes others dirty: index, not iterators.
  for (std::size_t i = 0; i < dirty_.size(); ++i) {
    Conn* c = dirty_[i];
    c->dirty = false;
    if (table_.find(c->id(), index_) != c) continue;  // closed meanwhile
    flush(c);
  }
  dirty_.clear();
}

void Shard::free_graveyard() {
  for (Conn* c : graveyard_) delete c;
  graveyard_.clear();
}

void Shard::wake_waiters() {
  { std::lock_guard lk(wait_mu_); }  // a waiter checks for room under this lock, then sleeps
  wait_cv_.notify_all();
}

void Shard::warn(WarningCode code, Severity severity, ConnectionId conn, int err,
                 const std::string& msg) {
  counters_.warnings.add();
  counters_.warnings_by[static_cast<std::size_t>(code)].add();
  Warning w;
  w.shard = static_cast<int>(index_);
  if (now_ms_ - warn_window_ms_ >= 1000) {
    if (warn_suppressed_ > 0) {
      const std::string note = "esockets: shard " + std::to_string(index_) + ": " +
                               std::to_string(warn_suppressed_) + " similar warnings suppressed";
      warn_suppressed_ = 0;
      w.code = WarningCode::suppressed;
      w.severity = Severity::warning;
      w.text = note;
      core_.report(w);
    }
    warn_window_ms_ = now_ms_;
    warn_in_window_ = 0;
  }
  if (warn_in_window_ >= kWarningsPerSecond) {
    ++warn_suppressed_;
    return;
  }
  ++warn_in_window_;
  const std::string text = "esockets: shard " + std::to_string(index_) + ": " + msg;
  w.code = code;
  w.severity = severity;
  w.connection = conn;
  w.error = err;
  w.text = text;
  core_.report(w);  // a throwing on_warning must not take the shard down: report() catches
}

}  // namespace esockets::detail

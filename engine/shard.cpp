// Shard lifecycle, loop and cross-thread traffic. The per-connection state machine (accept,
// read, write, close) is in shard_io.cpp.
#include "shard.hpp"

#include <malloc.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <chrono>
#include <system_error>

#include "server_core.hpp"
#include "socket_ops.hpp"
#include "worker.hpp"

namespace esockets::detail {

namespace {

constexpr std::uint64_t kListenerTag = ConnectionId(0, 0xffffff, 0).value();
constexpr std::uint64_t kWakeTag = ConnectionId(0, 0xfffffe, 0).value();
constexpr int kMaxEvents = 512;
constexpr std::size_t kCommandBatch = 512;
constexpr std::int64_t kTickMs = 50;
constexpr std::int64_t kTimeoutSweepMs = 250;
constexpr unsigned kWarningsPerSecond = 10;

std::int64_t monotonic_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Shard::Shard(ServerCore& core, std::uint32_t index, int listen_fd)
    : core_(core),
      index_(index),
      listen_fd_(listen_fd),
      table_(index, core.table_capacity()),
      framer_(core.framer().config()),
      inbox_(core.options().command_queue_capacity) {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw std::system_error(errno, std::generic_category(), "esockets: epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_.fd(), &ev) != 0) {
    throw std::system_error(errno, std::generic_category(), "esockets: epoll_ctl(eventfd)");
  }
  ev.data.u64 = kListenerTag;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) {
    throw std::system_error(errno, std::generic_category(), "esockets: epoll_ctl(listener)");
  }
  const auto& o = core.options();
  for (unsigned w = 0; w < o.workers; ++w) {
    from_workers_.push_back(std::make_unique<CommandQueue>(o.command_queue_capacity));
    to_workers_.push_back(std::make_unique<EventQueue>(o.worker_queue_capacity));
    drain_wanted_.push_back(std::make_unique<std::atomic<bool>>(false));
  }
  outboxes_.resize(o.workers);
  rbuf_size_ = o.read_chunk;
  rbuf_.reset(new char[rbuf_size_]);
  cmd_batch_.resize(kCommandBatch);
  timeouts_enabled_ = o.idle_timeout.count() > 0 || o.frame_timeout.count() > 0 ||
                      o.write_timeout.count() > 0;
  shard_output_cap_ = o.output_total_cap / o.shards;
}

Shard::~Shard() {
  // Threads are joined; free whatever is still queued or held.
  Command cmd{};
  while (inbox_.pop(cmd)) dispose(cmd);
  for (auto& q : from_workers_) q->consume_all([](const Command& x) { dispose(x); });
  for (auto& q : to_workers_) q->consume_all([](const Event& x) { dispose(x); });
  for (auto& ob : outboxes_) {
    for (std::size_t i = ob.head; i < ob.items.size(); ++i) dispose(ob.items[i]);
  }
  for (std::size_t slot = 0; slot < table_.capacity(); slot += 1) {
    Conn* c = table_.at(static_cast<std::uint32_t>(slot));
    if (c == nullptr) continue;
    c->out.clear(pool_);
    ::close(c->fd());
    table_.clear(static_cast<std::uint32_t>(slot));
    delete c;
  }
  free_graveyard();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (epfd_ >= 0) ::close(epfd_);
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

bool Shard::post(const Command& c) { return inbox_.push(c); }

bool Shard::on_own_thread() const {
  return tls_context.core == &core_ && tls_context.shard == static_cast<int>(index_);
}

bool Shard::inbound_pending() const {
  if (!inbox_.empty()) return true;
  for (const auto& q : from_workers_) {
    if (q->read_available() > 0) return true;
  }
  if (stop_requested_.load(std::memory_order_acquire) && phase_ == Phase::serving) return true;
  return false;
}

int Shard::next_timeout_ms() const {
  if (!dirty_.empty() || !graveyard_.empty()) return 0;
  for (const auto& ob : outboxes_) {
    if (!ob.empty() || !ob.flow_paused.empty()) return static_cast<int>(kTickMs) / 10 + 1;
  }
  if (!timed_.empty() || accept_paused_ || phase_ != Phase::serving || trim_pending_ ||
      (timeouts_enabled_ && counters_.connections.get() > 0)) {
    return static_cast<int>(kTickMs);
  }
  return -1;
}

void Shard::run() {
  tls_context = ThreadContext{&core_, -1, static_cast<int>(index_)};
  tls_context.shard = static_cast<int>(index_);
  tls_context.worker = -1;
  epoll_event events[kMaxEvents];
  now_ms_ = monotonic_ms();
  epoch_ms_ = now_ms_;
  last_sweep_ms_ = now_ms_;
  last_timeout_sweep_ms_ = now_ms_;
  while (true) {
    int timeout = next_timeout_ms();
    if (timeout != 0) {
      wake_.prepare_sleep();
      if (inbound_pending()) timeout = 0;
    }
    int n = ::epoll_wait(epfd_, events, kMaxEvents, timeout);
    wake_.woke();
    now_ms_ = monotonic_ms();
    if (n < 0 && errno != EINTR) warn(errno_message("epoll_wait failed", errno));
    for (int i = 0; i < n; ++i) dispatch(events[i]);
    drain_commands();
    service_workers();
    if (phase_ != Phase::serving || stop_requested_.load(std::memory_order_acquire)) advance_stop();
    if (now_ms_ - last_sweep_ms_ >= kTickMs) sweep_timers();
    if (now_ms_ - last_timeout_sweep_ms_ >= kTimeoutSweepMs) sweep_timeouts();
    flush_dirty();
    service_workers();
    free_graveyard();
    if (phase_ == Phase::done) {
      bool pending = false;
      for (auto& ob : outboxes_) pending = pending || !ob.empty();
      if (!pending) break;
    }
  }
}

void Shard::dispatch(const epoll_event& ev) {
  const std::uint64_t tag = ev.data.u64;
  if (tag == kWakeTag) {
    wake_.drain_eventfd();
    return;
  }
  if (tag == kListenerTag) {
    accept_ready();
    return;
  }
  const ConnectionId id = ConnectionId::from_value(tag);
  if (id.generation() == 0) {  // a lingering socket: its identity is retired
    Conn* c = table_.at(id.slot());
    if (c != nullptr && c->state == ConnState::lingering) linger_readable(c);
    return;
  }
  Conn* c = table_.find(id);
  if (c == nullptr) return;  // closed earlier in this batch (or long ago): drop
  const std::uint32_t e = ev.events;
  if (e & EPOLLERR) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(c->fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (c->reading() && (e & EPOLLIN)) {
      readable(c);  // deliver what arrived before the error; the read reports it
      if (table_.find(id) == nullptr) return;
    }
    abort_conn(c, classify_io_errno(err) == IoFailure::reset || err == 0 ? CloseReason::reset
                                                                          : CloseReason::io_error);
    return;
  }
  if (e & (EPOLLIN | EPOLLHUP)) {
    if (c->reading()) {
      readable(c);
    } else if (e & EPOLLHUP) {
      // Hang-up while we are not reading (paused / closing): level-triggered HUP would spin, so
      // leave the epoll set until reading resumes; a closing connection cannot be written to.
      if (c->state == ConnState::closing || c->state == ConnState::half_closed) {
        abort_conn(c, c->state == ConnState::closing ? c->reason : CloseReason::peer_closed);
        return;
      }
      c->hup = true;
      update_interest(c);
    }
  }
  if (table_.find(id) != c) return;
  if (e & EPOLLOUT) writable(c);
}

void Shard::drain_commands() {
  for (unsigned w = 0; w < from_workers_.size(); ++w) {
    std::size_t n;
    while ((n = from_workers_[w]->pop(cmd_batch_.data(), cmd_batch_.size())) > 0) {
      for (std::size_t i = 0; i < n; ++i) apply(cmd_batch_[i]);
      if (n < cmd_batch_.size()) break;
    }
  }
  Command c{};
  std::size_t budget = 4 * kCommandBatch;
  while (budget-- > 0 && inbox_.pop(c)) apply(c);
}

void Shard::apply(const Command& cmd) {
  const ConnectionId id = ConnectionId::from_value(cmd.id);
  switch (cmd.kind) {
    case CommandKind::send:
      if (send_local(id, static_cast<SendBlock*>(cmd.data)) != SendStatus::ok) {
        // send_local took ownership either way.
      }
      return;
    case CommandKind::close:
      close_local(id, static_cast<CloseReason>(cmd.reason));
      return;
    case CommandKind::pause:
    case CommandKind::resume:
      pause_local(id, cmd.kind == CommandKind::pause);
      return;
    case CommandKind::broadcast: {
      auto* sp = static_cast<SharedPayload*>(cmd.data);
      broadcast_local(sp->data(), sp->len);
      release_shared_payload(sp);
      return;
    }
    case CommandKind::eof_ack: {
      Conn* c = table_.find(id);
      if (c != nullptr && c->state == ConnState::half_closed) begin_close(c, CloseReason::peer_closed);
      return;
    }
    case CommandKind::barrier_ack:
      ++barrier_acks_;
      return;
  }
}

void Shard::emit(unsigned worker, const Event& e) {
  outboxes_[worker].items.push_back(e);
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
      std::vector<ConnectionId> ids;
      ids.swap(ob.flow_paused);
      for (ConnectionId id : ids) {
        Conn* c = table_.find(id);
        if (c != nullptr && c->flow_paused) {
          c->flow_paused = false;
          if (!c->user_paused) counters_.paused.sub();
          resume_reading(c);
        }
      }
    }
  }
  counters_.outbox_backlog.set(backlog);
}

void Shard::advance_stop() {
  if (phase_ == Phase::serving) {
    // Stop accepting; stop reading; let workers finish what is queued (barrier).
    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
    ::close(listen_fd_);
    listen_fd_ = -1;
    accept_paused_ = false;
    phase_ = Phase::draining;
    stop_deadline_ms_ = now_ms_ + core_.options().shutdown_timeout.count();
    table_.for_each_live([this](ConnectionId id) {
      Conn* c = table_.find(id);
      if (c != nullptr && c->state == ConnState::open) {
        c->user_paused = true;  // no new input: the server is going away
        update_interest(c);
      }
    });
    for (unsigned w = 0; w < outboxes_.size(); ++w) emit(w, Event{0, nullptr, 0, EventKind::barrier, 0});
    barrier_acks_ = 0;
  }
  if (phase_ == Phase::draining && barrier_acks_ >= outboxes_.size()) {
    phase_ = Phase::closing;
    table_.for_each_live([this](ConnectionId id) {
      Conn* c = table_.find(id);
      if (c != nullptr) begin_close(c, CloseReason::shutdown);
    });
  }
  if (phase_ == Phase::closing && counters_.connections.get() == 0) {
    // Lingering sockets still hold fds; wait for them (bounded by the deadline).
    bool lingering = false;
    for (ConnectionId id : timed_) {
      Conn* c = table_.at(id.slot());
      if (c != nullptr && c->state == ConnState::lingering) lingering = true;
    }
    if (!lingering) {
      for (unsigned w = 0; w < outboxes_.size(); ++w) {
        emit(w, Event{0, nullptr, 0, EventKind::shard_done, 0});
      }
      phase_ = Phase::done;
    }
  }
}

void Shard::sweep_timers() {
  last_sweep_ms_ = now_ms_;
  const std::uint32_t epoch = core_.fd_release_epoch().load(std::memory_order_relaxed);
  if (accept_paused_ && (now_ms_ >= accept_resume_ms_ || epoch != fd_epoch_seen_)) {
    resume_accepting();
  }
  fd_epoch_seen_ = epoch;
  const bool past_stop = phase_ != Phase::serving && now_ms_ >= stop_deadline_ms_;
  std::size_t keep = 0;
  for (std::size_t i = 0; i < timed_.size(); ++i) {
    ConnectionId id = timed_[i];
    Conn* c = id.generation() == 0 ? table_.at(id.slot()) : table_.find(id);
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
  table_.for_each_live([&](ConnectionId id) {
    Conn* c = table_.find(id);
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
    if (table_.find(c->id()) != c) continue;  // closed meanwhile
    flush(c);
  }
  dirty_.clear();
}

void Shard::free_graveyard() {
  for (Conn* c : graveyard_) delete c;
  graveyard_.clear();
}

void Shard::warn(const std::string& msg) {
  counters_.warnings.add();
  if (now_ms_ - warn_window_ms_ >= 1000) {
    if (warn_suppressed_ > 0) {
      std::string note = "esockets: shard " + std::to_string(index_) + ": " +
                         std::to_string(warn_suppressed_) + " similar warnings suppressed";
      warn_suppressed_ = 0;
      try {
        core_.handler().on_warning(note);
      } catch (...) {
      }
    }
    warn_window_ms_ = now_ms_;
    warn_in_window_ = 0;
  }
  if (warn_in_window_ >= kWarningsPerSecond) {
    ++warn_suppressed_;
    return;
  }
  ++warn_in_window_;
  try {
    core_.handler().on_warning("esockets: shard " + std::to_string(index_) + ": " + msg);
  } catch (...) {
    // A throwing on_warning must not take the shard down.
  }
}

}  // namespace esockets::detail

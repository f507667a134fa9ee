// Shard, its cross-thread half: commands in from workers and other threads (drain_commands,
// drain_all, apply's routing via target_of), commands out to other shards in call order
// (queue_remote, flush_remote, push_or_apply), flow control of the clients that produce them,
// sealing before the thread leaves, and the release/revive of a retired shard's index.
#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/server_core.hpp"
#include "shard/shard.hpp"
#include "mailbox/worker.hpp"

namespace esockets::detail {

void Shard::seal_and_drain() {
  // From here no thread may push to us: seal, then wait (as a mover does) for every sender
  // that saw us accepting, then apply whatever they pushed. Commands for connections that
  // ended are disposed; any for a connection that moved on go after it.
  sealed_.store(true, std::memory_order_seq_cst);
  RouteEpoch& route = core_.route();
  unsigned old = 0;
  while (!route.try_flip(&old)) ::sched_yield();
  while (!route.quiet(old)) ::sched_yield();
  route.done();
  for (int round = 0; round < 1000; ++round) {
    drain_all();
    // Forwards and flushes below may find their targets full for a moment.
    const bool out =
        remote_.flush(core_, [this](Shard& t, const Command& c) { return push_or_apply(t, c); });
    for (AdoptBatch* b : std::exchange(unsent_, {})) send_batch(b);
    service_workers();
    bool pending = !out || !unsent_.empty();
    for (auto& ob : outboxes_) pending = pending || !ob.empty();
    if (!pending && inbox_->empty()) break;
    ::sched_yield();
  }
  free_graveyard();
}

void Shard::drain_commands() {
  for (unsigned w = 0; w < from_workers_.size(); ++w) {
    std::size_t n;
    while ((n = from_workers_[w]->pop(cmd_batch_.data(), cmd_batch_.size())) > 0) {
      for (std::size_t i = 0; i < n; ++i) apply(cmd_batch_[i]);
      if (n < cmd_batch_.size()) break;
    }
  }
  // A budget per pass keeps a flood of foreign sends from starving the sockets.
  Command c{};
  std::size_t budget = 4 * kCommandBatch;
  while (budget-- > 0 && inbox_->pop(c)) apply(c);
  if (waiters_.load(std::memory_order_seq_cst) > 0) wake_waiters();
}

void Shard::drain_all() {
  // Everything pushed before this call is applied, with no budget: every position below the
  // tail was claimed by a producer that publishes it within a few instructions.
  for (unsigned w = 0; w < from_workers_.size(); ++w) {
    std::size_t n;
    while ((n = from_workers_[w]->pop(cmd_batch_.data(), cmd_batch_.size())) > 0) {
      for (std::size_t i = 0; i < n; ++i) apply(cmd_batch_[i]);
    }
  }
  const std::size_t end = inbox_->tail_position();
  Command c{};
  while (inbox_->head_position() < end) {
    if (inbox_->pop(c)) {
      apply(c);
    } else {
      ::sched_yield();
    }
  }
  if (waiters_.load(std::memory_order_seq_cst) > 0) wake_waiters();
}

void Shard::flush_remote() {
  if (remote_.empty() && remote_paused_.empty()) return;
  (void)remote_.flush(core_, [this](Shard& t, const Command& c) { return push_or_apply(t, c); });
  counters_.overflow.set(remote_.size());
  if (remote_.size() <= remote_high_ / 2 && !remote_paused_.empty()) {
    flow_resume(remote_paused_);  // the targets caught up: read those clients again
  }
}

void Shard::flow_resume(std::vector<ConnectionId>& list) {
  std::vector<ConnectionId> ids;
  ids.swap(list);
  for (ConnectionId id : ids) {
    Conn* c = table_.find(id, index_);
    if (c != nullptr && c->flow_paused) {
      c->flow_paused = false;
      if (!c->user_paused) counters_.paused.sub();
      resume_reading(c);
    }
  }
}

bool Shard::push_or_apply(Shard& target, const Command& c) {
  // A command queued for another shard whose connection has since been handed to us is
  // applied here, now, in its place in the list (our inbox may hold nothing of it: a direct
  // send made after the list emptied would overtake it there).
  if (&target == this) {
    apply(c);
    return true;
  }
  return target.post(c);
}

SendStatus Shard::queue_remote(const Command& c) {
  remote_.push(c);
  if (remote_.size() > remote_high_ && delivering_ != nullptr && !delivering_->flow_paused) {
    // Memory stays bounded: the client whose message is fanning out is read no more until the
    // other shards took what waits (TCP pushes back on it).
    flow_pause(delivering_, remote_paused_);
  }
  return SendStatus::ok;
}

void Shard::flow_pause(Conn* c, std::vector<ConnectionId>& list) {
  c->flow_paused = true;
  if (!c->user_paused) counters_.paused.add();
  list.push_back(c->id());
  mark_dirty(c);  // re-evaluates the epoll mask during flush
}

Conn* Shard::target_of(const Command& cmd) {
  // Returns the connection the command is for, or nullptr after taking care of it: held for a
  // connection being handed to us, forwarded if it moved on, or disposed if it is gone.
  const ConnectionId id = ConnectionId::from_value(cmd.id);
  if (Conn* c = table_.find(id, index_)) return c;
  if (table_.live(id)) {
    const std::uint32_t owner = table_.owner(id.slot());
    if (owner == index_) {
      incoming_[cmd.id].push_back(cmd);  // the hand-over is on its way
      return nullptr;
    }
    if (owner != ConnectionTable::kNoShard) {
      // Not reached while hand-overs drain their queues completely (see shard_move.cpp); kept
      // so that a command can never be lost to a routing race, only reach its client late.
      remote_.push(cmd);
      return nullptr;
    }
  }
  dispose(cmd);  // the connection is gone: as if the command had arrived after its close
  return nullptr;
}

void Shard::release() {
  // Joined and sealed: nobody pushes to us (accepting() is false and every sender that saw it
  // true has finished). The event queues to workers stay: workers poll every shard index and
  // they are reused, empty, by the next shard created with this index.
  inbox_.reset();
  for (auto& q : from_workers_) q.reset();
  ring_.reset();  // its submitter thread is gone; closing it ends whatever it still held
  rbuf_.reset();
  rbuf_size_ = 0;
  pool_.trim();
  close_payloads();
  remote_.clear();
  std::vector<Conn*>().swap(dirty_);
  std::vector<ConnectionId>().swap(timed_);
  std::vector<ConnectionId>().swap(resumes_);
  std::vector<ConnectionId>().swap(remote_paused_);
  std::vector<Command>().swap(cmd_batch_);
  std::unordered_map<std::uint64_t, std::vector<Command>>().swap(incoming_);
  for (const Command& x : posted_) dispose(x);
  std::vector<Command>().swap(posted_);
  timers_.reset();  // a thread's timers end with it; a shard reviving this index starts afresh
  for (auto& ob : outboxes_) {
    // Empty after a drained exit (run() leaves only then); whatever is left is freed, not lost.
    for (std::size_t i = ob.head; i < ob.items.size(); ++i) dispose(ob.items[i]);
    std::vector<Event>().swap(ob.items);
    std::vector<ConnectionId>().swap(ob.flow_paused);
    ob.head = 0;
  }
  if (thread_.joinable()) thread_.join();
  thread_ = std::thread();
}

void Shard::revive(const std::vector<int>& listen_fds) {
  // A new shard on this index: fresh queues and buffers, then open for pushes again.
  const auto& o = core_.options();
  inbox_ = std::make_unique<CommandInbox>(o.command_queue_capacity);
  for (auto& q : from_workers_) q = std::make_unique<CommandQueue>(o.command_queue_capacity);
  for (auto& d : drain_wanted_) d->store(false, std::memory_order_relaxed);
  rbuf_size_ = o.read_chunk;
  rbuf_.reset(new char[rbuf_size_]);
  open_payloads();
  cmd_batch_.resize(kCommandBatch);
  if (core_.backend() == Backend::io_uring) ring_setup();  // enabled by the new thread
  listeners_.clear();
  for (std::size_t i = 0; i < listen_fds.size(); ++i) {
    const int shared = core_.listener(i).shared_fd;
    listeners_.push_back(ShardListener{listen_fds[i] >= 0 ? listen_fds[i] : shared,
                                       listen_fds[i] < 0, false});
  }
  for (std::size_t i = 0; i < listeners_.size(); ++i) {
    if (!watch_listener(i, true)) {
      throw std::system_error(errno, std::generic_category(), "esockets: epoll_ctl(listener)");
    }
  }
  phase_ = Phase::serving;
  move_ = Move::idle;
  move_req_.reset();
  move_left_ = 0;
  barrier_acks_ = 0;
  stop_ready_reported_ = false;
  accept_paused_ = false;
  stop_requested_.store(false, std::memory_order_relaxed);
  exited_.store(false, std::memory_order_release);
  sealed_.store(false, std::memory_order_seq_cst);
}


}  // namespace esockets::detail

// ServerCore's half of what protocols need on top of send: post, timers and ticks
// (see timers.hpp and include/esockets/server.hpp).
#include <algorithm>
#include <stdexcept>

#include "esockets/server.hpp"
#include "core/server_core.hpp"
#include "shard/shard.hpp"
#include "mailbox/worker.hpp"

namespace esockets::detail {

SendStatus ServerCore::post(ConnectionId id, std::function<void(Connection&)>&& fn) {
  if (state_.load(std::memory_order_acquire) == State::idle || table_ == nullptr || !table_->live(id)) {
    return SendStatus::closed;
  }
  const Command cmd{id.value(), new PostedFn{std::move(fn)}, 0, CommandKind::post, 0, 0};
  const ThreadContext& ctx = tls_context;
  if (ctx.core == this && ctx.shard >= 0 && direct_ok(ctx.shard, id)) {
    // Never nested in the calling handler: the shard runs it from its loop, this pass.
    shard_ptr(static_cast<unsigned>(ctx.shard))->post_local(cmd);
    return SendStatus::ok;
  }
  return route_command(cmd);
}

ThreadTimers* ServerCore::thread_timers() {
  const ThreadContext& ctx = tls_context;
  if (ctx.core != this) return nullptr;
  if (ctx.worker >= 0) return &workers_[static_cast<unsigned>(ctx.worker)]->timers();
  if (ctx.shard >= 0) return &shard_ptr(static_cast<unsigned>(ctx.shard))->timers();
  return nullptr;
}

ThreadTimers* ServerCore::timers_for(ConnectionId id) {
  const ThreadContext& ctx = tls_context;
  if (ctx.core != this) return nullptr;
  if (ctx.worker >= 0) {
    Worker& w = *workers_[static_cast<unsigned>(ctx.worker)];
    return w.hosts(id) ? &w.timers() : nullptr;
  }
  if (ctx.shard >= 0 && workers_.empty() &&
      table_->find(id, static_cast<std::uint32_t>(ctx.shard)) != nullptr) {
    return &shard_ptr(static_cast<unsigned>(ctx.shard))->timers();
  }
  return nullptr;
}

std::uint64_t ServerCore::add_tick(std::chrono::milliseconds period, std::function<void()>&& fn) {
  auto reg = std::make_shared<TickRegistration>();
  reg->period_ms = std::max<std::int64_t>(period.count(), 1);
  reg->fn = std::move(fn);
  reg->id = next_timer_id();
  {
    std::lock_guard<std::mutex> lk(ticks_mu_);
    ticks_.push_back(reg);
    ticks_version_.fetch_add(1, std::memory_order_acq_rel);
  }
  // Sleeping threads arm it when they next wake: wake them now so the first call is on time.
  for (unsigned i = 0, n = shard_bound(); i < n; ++i) {
    if (Shard* s = shard_ptr(i)) s->notify();
  }
  for (auto& w : workers_) w->notify();
  return reg->id;
}

void ServerCore::cancel_tick(std::uint64_t id) {
  std::lock_guard<std::mutex> lk(ticks_mu_);
  auto it = std::find_if(ticks_.begin(), ticks_.end(), [id](const auto& r) { return r->id == id; });
  if (it == ticks_.end()) return;
  (*it)->cancelled.store(true, std::memory_order_release);
  ticks_.erase(it);
  ticks_version_.fetch_add(1, std::memory_order_acq_rel);
}

std::vector<std::shared_ptr<TickRegistration>> ServerCore::ticks_snapshot() const {
  std::lock_guard<std::mutex> lk(ticks_mu_);
  return ticks_;
}

}  // namespace esockets::detail

namespace esockets {

namespace {
std::int64_t checked_period(std::chrono::milliseconds period) {
  if (period.count() < 1) throw std::invalid_argument("esockets: a timer period must be at least 1 ms");
  return period.count();
}
}  // namespace

SendStatus Server::post(ConnectionId id, std::function<void(Connection&)> fn) {
  return core_->post(id, std::move(fn));
}

TimerId Server::after(std::chrono::milliseconds delay, std::function<void()> fn) {
  detail::ThreadTimers* t = core_->thread_timers();
  if (t == nullptr) throw std::logic_error("esockets: Server::after is for engine threads (handlers)");
  return t->add(delay.count(), 0, std::move(fn));
}

TimerId Server::every(std::chrono::milliseconds period, std::function<void()> fn) {
  const std::int64_t p = checked_period(period);
  detail::ThreadTimers* t = core_->thread_timers();
  if (t == nullptr) throw std::logic_error("esockets: Server::every is for engine threads (handlers)");
  return t->add(p, p, std::move(fn));
}

bool Server::cancel_timer(TimerId id) {
  detail::ThreadTimers* t = core_->thread_timers();
  return t != nullptr && t->cancel(id);
}

std::uint64_t Server::tick_every(std::chrono::milliseconds period, std::function<void()> fn) {
  checked_period(period);
  return core_->add_tick(period, std::move(fn));
}

void Server::cancel_tick(std::uint64_t tick_id) { core_->cancel_tick(tick_id); }

}  // namespace esockets

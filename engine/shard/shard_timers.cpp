// Shard: functions posted to connections (Server::post) and timers, for inline handlers.
#include "core/clock.hpp"
#include "core/server_core.hpp"
#include "shard/shard.hpp"

namespace esockets::detail {

void Shard::apply_post(const Command& cmd) {
  Conn* c = target_of(cmd);  // held, forwarded or disposed when not hosted here
  if (c == nullptr) return;
  if (!outboxes_.empty()) {
    // Handlers run on the connection's worker: the function goes there, after its events.
    emit(c->worker, Event{cmd.id, cmd.data, 0, EventKind::post, 0});
    return;
  }
  posted_.push_back(cmd);
}

void Shard::carry_posted() {
  // Hand-over: posts already taken in for a moving connection go in its batch, in order.
  if (posted_.empty()) return;
  std::vector<Command> keep;
  for (const Command& cmd : posted_) {
    const ConnectionId id = ConnectionId::from_value(cmd.id);
    Conn* c = table_.find(id, index_);
    AdoptBatch* to = nullptr;
    if (c != nullptr && c->moving) {
      const std::uint32_t target = table_.owner(id.slot());
      for (AdoptBatch* b : batches_) {
        if (b != nullptr && b->to == target) to = b;
      }
    }
    if (to != nullptr) {
      to->posted.push_back(cmd);
    } else {
      keep.push_back(cmd);
    }
  }
  posted_.swap(keep);
}

void Shard::run_posted() {
  if (posted_.empty()) return;
  std::vector<Command> batch;
  batch.swap(posted_);
  for (const Command& cmd : batch) {
    auto* p = static_cast<PostedFn*>(cmd.data);
    Conn* c = table_.find(ConnectionId::from_value(cmd.id), index_);
    if (c != nullptr && c->state != ConnState::lingering) {
      call_handler(c, [&] { p->fn(c->pub); });
    } else if (c == nullptr && table_.live(ConnectionId::from_value(cmd.id))) {
      // It was handed to another shard after the post was taken in: it follows.
      target_of(cmd);
      continue;
    }
    delete p;
  }
  if (posted_.empty()) {
    batch.clear();
    posted_.swap(batch);  // keep the capacity
  }
}

void Shard::run_timers() {
  if (!outboxes_.empty() && timers_.empty()) return;  // handlers run on workers: no ticks here
  if (outboxes_.empty()) timers_.sync_ticks();
  timers_.run_due(
      now_ms_,
      [this](std::uint64_t id) -> Connection* {
        Conn* c = table_.find(ConnectionId::from_value(id), index_);
        return c != nullptr && c->state != ConnState::lingering ? &c->pub : nullptr;
      },
      [this](Connection& pub, const std::function<void(Connection&)>& fn) {
        Conn* c = table_.find(pub.id(), index_);
        call_handler(c, [&] { fn(pub); });
      },
      [this](const std::string& msg) {
        warn(WarningCode::handler_exception, Severity::warning, {}, 0, msg);
      });
}

int Shard::timers_timeout_ms() const {
  if (outboxes_.empty() && timers_.ticks_pending()) return 0;  // a tick to arm here
  if (timers_.empty()) return -1;
  return timers_.timeout_ms(monotonic_ms());
}

}  // namespace esockets::detail

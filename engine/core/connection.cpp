#include "esockets/connection.hpp"

#include <algorithm>
#include <stdexcept>

#include "core/clock.hpp"
#include "core/server_core.hpp"
#include "core/timers.hpp"

namespace esockets {

Server& Connection::server() const { return core_->server(); }
SendStatus Connection::send(Bytes bytes) { return core_->send(id_, bytes, false); }
SendStatus Connection::send_frame(Bytes message) { return core_->send(id_, message, true); }
SendStatus Connection::close() { return core_->close(id_, CloseReason::closed_by_server); }
void Connection::pause_reading() { (void)core_->set_paused(id_, true); }
void Connection::resume_reading() { (void)core_->set_paused(id_, false); }

Connection::~Connection() { release_extras(); }

const ProxyInfo* Connection::proxy() const {
  return extras_ != nullptr ? extras_->proxy.get() : nullptr;
}

void Connection::set_state(void* p, void (*destroy)(void*), const void* tag) {
  detail::ConnExtras& x = detail::ExtrasAccess::make(*this);
  void* old = x.state;
  void (*old_destroy)(void*) = x.destroy;
  x.state = p;
  x.destroy = destroy;
  x.tag = tag;
  if (old != nullptr && old_destroy != nullptr) old_destroy(old);
}

void* Connection::state_of(const void* tag) const {
  return extras_ != nullptr && extras_->tag == tag ? extras_->state : nullptr;
}

void Connection::reset_state() {
  if (extras_ == nullptr || extras_->state == nullptr) return;
  void* old = extras_->state;
  void (*destroy)(void*) = extras_->destroy;
  extras_->state = nullptr;
  extras_->destroy = nullptr;
  extras_->tag = nullptr;
  if (destroy != nullptr) destroy(old);
}

TimerId Connection::arm(std::chrono::milliseconds delay, std::chrono::milliseconds period,
                        std::function<void(Connection&)>&& fn) {
  detail::ThreadTimers* t = core_ != nullptr ? core_->timers_for(id_) : nullptr;
  if (t == nullptr) {
    throw std::logic_error("esockets: Connection timers are armed from the connection's own callbacks");
  }
  detail::ConnExtras& x = detail::ExtrasAccess::make(*this);
  auto n = std::make_unique<detail::TimerNode>();
  n->id = core_->next_timer_id();
  n->conn = id_.value();
  // +1: the clock is read in whole milliseconds; rounding up means never early.
  n->due_ms = detail::monotonic_ms() + std::max<std::int64_t>(delay.count(), 0) + 1;
  n->period_ms = period.count();
  n->on_conn = std::move(fn);
  x.timers.push_back(n.get());
  x.home = t;
  t->link(n.release());
  return x.timers.back()->id;
}

TimerId Connection::after(std::chrono::milliseconds delay, std::function<void(Connection&)> fn) {
  return arm(delay, std::chrono::milliseconds(0), std::move(fn));
}

TimerId Connection::every(std::chrono::milliseconds period, std::function<void(Connection&)> fn) {
  if (period.count() < 1) throw std::invalid_argument("esockets: a timer period must be at least 1 ms");
  return arm(period, period, std::move(fn));
}

bool Connection::cancel_timer(TimerId id) {
  if (extras_ == nullptr) return false;
  auto& v = extras_->timers;
  auto it = std::find_if(v.begin(), v.end(), [id](const detail::TimerNode* n) { return n->id == id; });
  if (it == v.end()) return false;
  detail::TimerNode* n = *it;
  v.erase(it);
  if (n->in_run) {
    n->cancelled = true;  // its run loop frees it
  } else {
    if (extras_->home != nullptr) extras_->home->unlink(n);
    delete n;
  }
  return true;
}

void Connection::release_extras() {
  detail::ConnExtras* x = extras_;
  if (x == nullptr) return;
  extras_ = nullptr;
  for (detail::TimerNode* n : x->timers) {
    if (n->in_run) {
      n->cancelled = true;
    } else {
      if (x->home != nullptr) x->home->unlink(n);
      delete n;
    }
  }
  if (x->state != nullptr && x->destroy != nullptr) x->destroy(x->state);
  delete x;
}

}  // namespace esockets

#include "core/timers.hpp"

#include <algorithm>
#include <mutex>

#include "core/clock.hpp"
#include "core/server_core.hpp"

namespace esockets::detail {

ThreadTimers::ThreadTimers(ServerCore& core) : core_(core), cursor_ms_(monotonic_ms()) {}

ThreadTimers::~ThreadTimers() {
  // Thread timers still armed when the thread ends are dropped unrun. Connection timers
  // belong to their connections (all ended by now; a leftover is unlinked, not freed).
  for (unsigned s = 0; s < kSlots; ++s) {
    for (TimerNode* n = heads_[s]; n != nullptr;) {
      TimerNode* next = n->next;
      n->linked = false;
      n->prev = n->next = nullptr;
      if (n->conn == 0) delete n;
      n = next;
    }
  }
  for (TimerNode* n : due_) {
    if (n->conn == 0) delete n;
  }
}

void ThreadTimers::reset() {
  for (auto& [id, n] : owned_) {
    unlink(n);
    delete n;
  }
  owned_.clear();
  ticks_.clear();
  ticks_seen_ = 0;
  cursor_ms_ = monotonic_ms();
}

void ThreadTimers::link(TimerNode* n) {
  // A node due now or earlier goes to the next slot to run: the current one was passed.
  const std::int64_t at = std::max(n->due_ms, cursor_ms_ + 1);
  const auto slot = static_cast<std::uint32_t>(at & (kSlots - 1));
  n->slot = slot;
  n->prev = nullptr;
  n->next = heads_[slot];
  if (n->next != nullptr) n->next->prev = n;
  heads_[slot] = n;
  used_[slot / 64] |= std::uint64_t{1} << (slot % 64);
  n->linked = true;
  ++count_;
}

void ThreadTimers::unlink(TimerNode* n) {
  if (!n->linked) return;
  if (n->prev != nullptr) {
    n->prev->next = n->next;
  } else {
    heads_[n->slot] = n->next;
    if (n->next == nullptr) used_[n->slot / 64] &= ~(std::uint64_t{1} << (n->slot % 64));
  }
  if (n->next != nullptr) n->next->prev = n->prev;
  n->prev = n->next = nullptr;
  n->linked = false;
  --count_;
}

void ThreadTimers::detach(ConnExtras& x) {
  for (TimerNode* n : x.timers) unlink(n);
  x.home = nullptr;
}

void ThreadTimers::attach(ConnExtras& x) {
  for (TimerNode* n : x.timers) link(n);
  x.home = this;
}

void ThreadTimers::forget(ConnExtras& x, TimerNode* n) {
  auto it = std::find(x.timers.begin(), x.timers.end(), n);
  if (it != x.timers.end()) x.timers.erase(it);
}

TimerId ThreadTimers::add(std::int64_t delay_ms, std::int64_t period_ms, std::function<void()> fn) {
  auto* n = new TimerNode();
  n->id = core_.next_timer_id();
  n->due_ms = monotonic_ms() + std::max<std::int64_t>(delay_ms, 0) + 1;  // never early
  n->period_ms = period_ms;
  n->on_thread = std::move(fn);
  owned_.emplace(n->id, n);
  link(n);
  return n->id;
}

bool ThreadTimers::cancel(TimerId id) {
  auto it = owned_.find(id);
  if (it == owned_.end()) return false;
  TimerNode* n = it->second;
  owned_.erase(it);
  if (n->in_run) {
    n->cancelled = true;  // the run loop frees it
  } else {
    unlink(n);
    delete n;
  }
  return true;
}

bool ThreadTimers::ticks_pending() const { return core_.ticks_version() != ticks_seen_; }

void ThreadTimers::sync_ticks() {
  const std::uint64_t v = core_.ticks_version();
  if (v == ticks_seen_) return;
  ticks_seen_ = v;
  for (const auto& reg : core_.ticks_snapshot()) {
    const bool known = std::any_of(ticks_.begin(), ticks_.end(),
                                   [&](const auto& t) { return t->id == reg->id; });
    if (known || reg->cancelled.load(std::memory_order_acquire)) continue;
    ticks_.push_back(reg);
    TickRegistration* r = reg.get();
    auto* n = new TimerNode();
    n->id = core_.next_timer_id();
    n->period_ms = r->period_ms;
    n->due_ms = monotonic_ms() + r->period_ms + 1;
    const TimerId self = n->id;
    n->on_thread = [this, r, self] {
      if (r->cancelled.load(std::memory_order_acquire)) {
        cancel(self);
        ticks_.erase(std::remove_if(ticks_.begin(), ticks_.end(),
                                    [r](const auto& t) { return t.get() == r; }),
                     ticks_.end());
        return;
      }
      r->fn();
    };
    owned_.emplace(self, n);
    link(n);
  }
}

void ThreadTimers::collect(std::int64_t now_ms) {
  // Slots from the one after the cursor up to now (all of them, once, after a long sleep).
  const std::int64_t span = std::min<std::int64_t>(now_ms - cursor_ms_, kSlots);
  for (std::int64_t t = cursor_ms_ + 1; t <= cursor_ms_ + span; ++t) {
    const auto slot = static_cast<std::uint32_t>(t & (kSlots - 1));
    if ((used_[slot / 64] & (std::uint64_t{1} << (slot % 64))) == 0) continue;
    for (TimerNode* n = heads_[slot]; n != nullptr;) {
      TimerNode* next = n->next;
      if (n->due_ms <= now_ms) {
        unlink(n);
        n->in_run = true;
        due_.push_back(n);
      }
      n = next;
    }
  }
  cursor_ms_ = now_ms;
  // Earliest first; equal deadlines in the order they were armed (ids grow).
  std::sort(due_.begin(), due_.end(), [](const TimerNode* a, const TimerNode* b) {
    return a->due_ms != b->due_ms ? a->due_ms < b->due_ms : a->id < b->id;
  });
}

void ThreadTimers::relink(TimerNode* n, std::int64_t now_ms) {
  n->due_ms += n->period_ms;
  if (n->due_ms <= now_ms) n->due_ms = now_ms + n->period_ms;  // fell behind: no burst
  link(n);
}

int ThreadTimers::timeout_ms(std::int64_t now_ms) const {
  if (count_ == 0) return -1;
  // The next non-empty slot after the cursor, found through the bitmap.
  const auto start = static_cast<std::uint32_t>((cursor_ms_ + 1) & (kSlots - 1));
  for (std::uint32_t d = 0; d < kSlots;) {
    const std::uint32_t slot = (start + d) & (kSlots - 1);
    const std::uint64_t word = used_[slot / 64] >> (slot % 64);
    if (word != 0) {
      const std::uint32_t at = d + static_cast<std::uint32_t>(__builtin_ctzll(word));
      const std::int64_t when = cursor_ms_ + 1 + at;
      return static_cast<int>(std::max<std::int64_t>(0, when - now_ms));
    }
    d += 64 - slot % 64;
  }
  return static_cast<int>(std::max<std::int64_t>(0, cursor_ms_ + kSlots - now_ms));
}

}  // namespace esockets::detail

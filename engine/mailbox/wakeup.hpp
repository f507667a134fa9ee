// Wakeup: coalesced cross-thread notification, at most one kernel call per sleep.
// Thread: notify() from any thread; prepare_sleep/cancel_sleep/woke/sleep_* by the owner only.
//
// Protocol (a Dekker pair on one atomic, so TSan sees it): the owner exchanges its state to
// kSleeping, then re-checks its queues, then sleeps. A producer first pushes, then exchanges the
// state to kNotified; only the producer that sees kSleeping makes the kernel call. Both RMWs are
// on the same atomic, so either the owner's re-check sees the push or the producer sees kSleeping.
#pragma once

#include <atomic>
#include <cstdint>

namespace esockets::detail {

class Wakeup {
 public:
  // use_eventfd: the owner sleeps in epoll_wait on fd(); otherwise it sleeps in sleep_futex().
  explicit Wakeup(bool use_eventfd);
  ~Wakeup();
  Wakeup(const Wakeup&) = delete;
  Wakeup& operator=(const Wakeup&) = delete;

  int fd() const { return efd_; }

  /// Any thread: make sure the owner wakes up (or does not fall asleep) after this call.
  void notify();
  /// Owner: announce the intent to sleep; re-check every queue afterwards.
  void prepare_sleep() { state_.exchange(kSleeping, std::memory_order_seq_cst); }
  /// Owner: woke up (or decided not to sleep).
  void woke() { state_.exchange(kAwake, std::memory_order_acq_rel); }
  /// Owner (eventfd mode): the eventfd showed up readable; reset it.
  void drain_eventfd();
  /// Owner (futex mode): sleep until notified, or at most timeout_ms (-1 = no limit). Call
  /// after prepare_sleep and an empty re-check.
  void sleep_futex(int timeout_ms = -1);
  /// Count of kernel wakeup calls made (for benchmarks and tests).
  std::uint64_t kernel_notifies() const { return notifies_.load(std::memory_order_relaxed); }

 private:
  static constexpr std::uint32_t kAwake = 0;
  static constexpr std::uint32_t kSleeping = 1;
  static constexpr std::uint32_t kNotified = 2;
  std::uint32_t* word() { return reinterpret_cast<std::uint32_t*>(&state_); }
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));

  alignas(64) std::atomic<std::uint32_t> state_{kAwake};
  std::atomic<std::uint64_t> notifies_{0};
  int efd_ = -1;
};

}  // namespace esockets::detail

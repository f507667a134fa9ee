#include "mailbox/wakeup.hpp"

#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace esockets::detail {

Wakeup::Wakeup(bool use_eventfd) {
  if (use_eventfd) {
    efd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd_ < 0) throw std::system_error(errno, std::generic_category(), "esockets: eventfd");
  }
}

Wakeup::~Wakeup() {
  if (efd_ >= 0) ::close(efd_);
}

void Wakeup::notify() {
  if (state_.exchange(kNotified, std::memory_order_seq_cst) != kSleeping) return;
  notifies_.fetch_add(1, std::memory_order_relaxed);
  if (efd_ >= 0) {
    std::uint64_t one = 1;
    // A full counter (never in practice) still leaves the fd readable, which is all we need.
    ssize_t r = ::write(efd_, &one, sizeof one);
    (void)r;
  } else {
    // The futex word is the state itself (std::atomic::wait has no timeout, and its notify
    // may skip the wake-up for waiters it did not register itself).
    ::syscall(SYS_futex, word(), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  }
}

void Wakeup::drain_eventfd() {
  std::uint64_t v = 0;
  ssize_t r = ::read(efd_, &v, sizeof v);
  (void)r;
}

void Wakeup::sleep_futex(int timeout_ms) {
  // Returns once a producer moved the state away from kSleeping (or the time is up). The
  // kernel compares the word with kSleeping before sleeping, so a notify in between is seen.
  timespec ts{};
  timespec* limit = nullptr;
  if (timeout_ms >= 0) {
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = static_cast<long>(timeout_ms % 1000) * 1000000;
    limit = &ts;
  }
  while (state_.load(std::memory_order_acquire) == kSleeping) {
    const long r = ::syscall(SYS_futex, word(), FUTEX_WAIT_PRIVATE, kSleeping, limit, nullptr, 0);
    if (r != 0 && errno == ETIMEDOUT) break;
  }
  woke();
}

}  // namespace esockets::detail

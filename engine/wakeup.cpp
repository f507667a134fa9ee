#include "wakeup.hpp"

#include <sys/eventfd.h>
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
    state_.notify_one();
  }
}

void Wakeup::drain_eventfd() {
  std::uint64_t v = 0;
  ssize_t r = ::read(efd_, &v, sizeof v);
  (void)r;
}

void Wakeup::sleep_futex() {
  // Returns once a producer moved the state away from kSleeping.
  state_.wait(kSleeping, std::memory_order_acquire);
  woke();
}

}  // namespace esockets::detail

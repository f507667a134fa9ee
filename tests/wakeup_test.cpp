// Wakeup: no lost wakeups whether notify comes before or after prepare_sleep; one kernel call
// per sleep however many notifies arrive.
#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <thread>
#include <vector>

#include "test_support.hpp"
#include "mailbox/wakeup.hpp"

namespace esockets::detail {
namespace {

using namespace std::chrono_literals;
using esockets::test::scaled;

// Owner loop following the documented protocol; returns when `stop` is set. Counts items seen.
// In eventfd mode it sleeps in poll() with a 5 s cap and records a "lost wakeup" if the poll
// times out while an item was pending.
void owner_loop(Wakeup& w, bool eventfd, std::atomic<std::uint64_t>& queue,
                std::atomic<std::uint64_t>& consumed, std::atomic<bool>& stop,
                std::atomic<int>& lost) {
  while (!stop.load()) {
    if (queue.load() > consumed.load()) {
      consumed.store(queue.load());
      continue;
    }
    w.prepare_sleep();
    if (queue.load() > consumed.load() || stop.load()) {  // re-check after announcing sleep
      w.woke();
      continue;
    }
    if (eventfd) {
      pollfd p{w.fd(), POLLIN, 0};
      int r = ::poll(&p, 1, 5000);
      // A quiet 5 s is only a lost wakeup if an item was waiting (the test thread may simply
      // have been descheduled that long on a loaded machine).
      if (r == 0 && queue.load() > consumed.load()) lost++;
      if (r > 0) w.drain_eventfd();
      w.woke();
    } else {
      w.sleep_futex();
    }
  }
}

void ping_pong(bool eventfd) {
  Wakeup w(eventfd);
  std::atomic<std::uint64_t> queue{0}, consumed{0};
  std::atomic<bool> stop{false};
  std::atomic<int> lost{0};
  std::thread owner([&] { owner_loop(w, eventfd, queue, consumed, stop, lost); });
  const std::uint64_t rounds = scaled(3'000, 500);
  bool stalled = false;
  for (std::uint64_t i = 1; i <= rounds && !stalled; ++i) {
    queue.store(i);  // push, then notify
    w.notify();
    if (!esockets::test::wait_until([&] { return consumed.load() >= i; }, 30s)) {
      stalled = true;
      ADD_FAILURE() << "lost wakeup: item " << i << " not consumed within 30 s";
    }
  }
  stop = true;
  // Unstick the owner even if a wakeup was lost.
  for (int k = 0; k < 100 && owner.joinable(); ++k) {
    w.notify();
    std::this_thread::sleep_for(1ms);
    if (consumed.load() >= queue.load() || stalled) break;
  }
  w.notify();
  owner.join();
  EXPECT_EQ(lost.load(), 0);
  EXPECT_EQ(consumed.load(), rounds);
  EXPECT_LE(w.kernel_notifies(), rounds + 1);  // + the notify that stops the owner
}

TEST(Wakeup, NoLostWakeupFutexPingPong) { ping_pong(false); }
TEST(Wakeup, NoLostWakeupEventfdPingPong) { ping_pong(true); }

TEST(Wakeup, ManyProducersNeverLoseAWakeup) {
  for (bool eventfd : {false, true}) {
    Wakeup w(eventfd);
    std::atomic<std::uint64_t> queue{0}, consumed{0};
    std::atomic<bool> stop{false};
    std::atomic<int> lost{0};
    std::thread owner([&] { owner_loop(w, eventfd, queue, consumed, stop, lost); });
    const std::uint64_t per = scaled(20'000, 1'000);
    std::vector<std::thread> ps;
    for (int p = 0; p < 4; ++p) {
      ps.emplace_back([&] {
        for (std::uint64_t i = 0; i < per; ++i) {
          queue.fetch_add(1);
          w.notify();
          if (i % 64 == 0) std::this_thread::yield();
        }
      });
    }
    for (auto& t : ps) t.join();
    EXPECT_TRUE(esockets::test::wait_until([&] { return consumed.load() == 4 * per; }, 30s))
        << "eventfd=" << eventfd << ": consumed " << consumed.load() << " of " << 4 * per;
    stop = true;
    w.notify();
    owner.join();
    EXPECT_EQ(lost.load(), 0) << "eventfd=" << eventfd;
  }
}

TEST(Wakeup, NotifyBeforePrepareSleepMakesNoKernelCall) {
  Wakeup w(true);
  w.notify();  // owner awake: nothing to do in the kernel
  w.notify();
  EXPECT_EQ(w.kernel_notifies(), 0u);
  pollfd p{w.fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "eventfd must not be readable";
}

TEST(Wakeup, ManyNotifiesDuringOneSleepCoalesceToOneKernelCall) {
  for (bool eventfd : {false, true}) {
    Wakeup w(eventfd);
    w.prepare_sleep();
    std::vector<std::thread> ts;
    for (int t = 0; t < 8; ++t) {
      ts.emplace_back([&] {
        for (int i = 0; i < 1000; ++i) w.notify();
      });
    }
    for (auto& t : ts) t.join();
    EXPECT_EQ(w.kernel_notifies(), 1u) << "eventfd=" << eventfd;
    if (eventfd) {
      pollfd p{w.fd(), POLLIN, 0};
      EXPECT_EQ(::poll(&p, 1, 0), 1) << "eventfd must be readable after the notify";
      w.drain_eventfd();
      EXPECT_EQ(::poll(&p, 1, 0), 0) << "drain_eventfd must reset it";
      w.woke();
    } else {
      w.sleep_futex();  // must return at once: the state already left kSleeping
    }
    // A second sleep gets its own single kernel call.
    w.prepare_sleep();
    w.notify();
    w.notify();
    EXPECT_EQ(w.kernel_notifies(), 2u) << "eventfd=" << eventfd;
    if (eventfd) {
      w.drain_eventfd();
      w.woke();
    } else {
      w.sleep_futex();
    }
    // Awake again: notifies cost nothing.
    w.notify();
    EXPECT_EQ(w.kernel_notifies(), 2u) << "eventfd=" << eventfd;
  }
}

TEST(Wakeup, FutexSleeperIsWokenByLaterNotify) {
  Wakeup w(false);
  std::atomic<bool> woke{false};
  w.prepare_sleep();
  std::thread owner([&] {
    w.sleep_futex();
    woke = true;
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(woke.load());
  w.notify();
  EXPECT_TRUE(esockets::test::wait_until([&] { return woke.load(); }, 30s));
  if (!woke.load()) w.notify();
  owner.join();
  EXPECT_EQ(w.kernel_notifies(), 1u);
}

}  // namespace
}  // namespace esockets::detail

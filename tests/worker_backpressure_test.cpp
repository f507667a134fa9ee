// Backpressure in worker mode: a slow worker with a small queue; a client floods messages; the
// shard pauses reading (stats paused > 0) and keeps the queue bounded; nothing is lost or
// reordered; reading resumes.
#include <gtest/gtest.h>

#include <charconv>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class Slow : public CountingHandler {
 public:
  std::atomic<std::int64_t> next{0};
  std::atomic<int> out_of_order{0};
  void on_message_recv(Connection&, Bytes m) override {
    std::int64_t v = -1;
    std::from_chars(m.data(), m.data() + m.size(), v);
    if (v != next.load()) out_of_order++;
    next = v + 1;
    // Slow worker: 1 ms per message for every 4th message (about 250 us per message on average).
    if (v % 4 == 0) std::this_thread::sleep_for(1ms);
    messages++;
  }
};

TEST(WorkerBackpressure, SlowWorkerPausesReadingAndLosesNothing) {
  Slow h;
  ServerOptions o = loopback_options(1, 1);
  o.framing = Framing::line;
  o.worker_queue_capacity = 64;
  o.read_chunk = 4096;  // frames of one read are always delivered: they bound the overshoot
  Server server(h, o);
  server.start();
  const std::int64_t kN = static_cast<std::int64_t>(scaled(20000, 2000));
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> max_paused{0}, max_depth{0};
  std::thread monitor([&] {
    while (!done.load()) {
      Stats st = server.stats();
      if (st.total.paused > max_paused) max_paused = st.total.paused;
      if (st.total.worker_queue_depth > max_depth) max_depth = st.total.worker_queue_depth;
      std::this_thread::sleep_for(1ms);
    }
  });
  Client c(server.port());
  std::string all;
  for (std::int64_t i = 0; i < kN; ++i) all += std::to_string(i) + "\n";
  ASSERT_TRUE(c.send_all(all, 60s));
  EXPECT_TRUE(wait_until([&] { return h.messages.load() == kN; }, 60s))
      << h.messages.load() << " of " << kN;
  done = true;
  monitor.join();
  EXPECT_EQ(h.out_of_order.load(), 0);
  EXPECT_EQ(h.next.load(), kN);
  EXPECT_GT(max_paused.load(), 0u) << "the shard never paused reading the flooding client";
  // Bounded by the queue capacity plus the frames of one read chunk (lines are >= 2 bytes).
  EXPECT_LE(max_depth.load(), 64u + 4096u / 2) << "worker queue depth not bounded";
  // Reading resumed: the gauge is back to 0 and the connection still works.
  EXPECT_TRUE(wait_until([&] { return server.stats().total.paused == 0; }, 5s));
  ASSERT_TRUE(c.send_line(std::to_string(kN)));
  EXPECT_TRUE(wait_until([&] { return h.messages.load() == kN + 1; }, 5s));
  EXPECT_EQ(h.out_of_order.load(), 0);
  EXPECT_EQ(h.disconnects.load(), 0);
}

}  // namespace
}  // namespace esockets::test

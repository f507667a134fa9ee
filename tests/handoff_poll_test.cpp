// ServerOptions::handoff_poll: a worker (and its shard) that handled traffic a moment ago keeps
// polling instead of sleeping, so a conversation with gaps shorter than the window costs no
// thread wake-ups; with 0 every gap ends in a sleep and each message wakes the threads again.
// Stats::total.wakeups counts those wake-ups.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "test_support.hpp"

namespace esockets::test {
namespace {

using namespace std::chrono_literals;

constexpr int kMessages = 20;

// Ping-pongs kMessages small messages with a 3 ms pause between them; returns the wake-ups
// the exchange cost (stats before and after, the connection already established).
std::uint64_t wakeups_for_spaced_pingpong(std::chrono::microseconds poll) {
  CountingHandler h;
  ServerOptions o = loopback_options(1, 1);
  o.handoff_poll = poll;
  Server server(h, o);
  server.start();
  Client c(server.port());
  EXPECT_TRUE(c.send_all("hello"));
  EXPECT_EQ(c.recv_exact(5), "hello");
  const std::uint64_t before = server.stats().total.wakeups;
  for (int i = 0; i < kMessages; ++i) {
    std::this_thread::sleep_for(3ms);
    const std::string m = "m" + std::to_string(i);
    EXPECT_TRUE(c.send_all(m));
    EXPECT_EQ(c.recv_exact(m.size()), m);
  }
  const std::uint64_t after = server.stats().total.wakeups;
  c.close();
  server.stop();
  EXPECT_EQ(h.messages.load(), kMessages + 1);
  return after - before;
}

TEST(HandoffPoll, WithoutPollingEachSpacedMessageWakesTheWorker) {
  // The worker sleeps within microseconds of its last event; a 3 ms gap finds it asleep, so
  // each message costs at least the worker's wake-up (and the shard's for the reply).
  const std::uint64_t n = wakeups_for_spaced_pingpong(0us);
  EXPECT_GE(n, static_cast<std::uint64_t>(kMessages) / 2) << n << " wake-ups";
}

TEST(HandoffPoll, APollWindowLongerThanTheGapsAvoidsTheWakeups) {
  // With a 1 s window neither side ever sleeps during the 60 ms exchange.
  const std::uint64_t n = wakeups_for_spaced_pingpong(1s);
  EXPECT_LE(n, 2u) << n << " wake-ups";
}

TEST(HandoffPoll, PollingIsNotCountedAsBusy) {
  // A message every 200 ms keeps the shard polling (1 s window) for the whole 2.6 s; the
  // busy ratio must still say the shard is nearly idle, or least_loaded placement would
  // steer clients away from a shard that only waits.
  CountingHandler h;
  ServerOptions o = loopback_options(1, 1);
  o.handoff_poll = 1s;
  Server server(h, o);
  server.start();
  Client c(server.port());
  for (int i = 0; i < 13; ++i) {
    ASSERT_TRUE(c.send_all("ping"));
    ASSERT_EQ(c.recv_exact(4), "ping");
    std::this_thread::sleep_for(200ms);
  }
  const double busy = server.stats().shards.at(0).busy_ratio;
  EXPECT_LT(busy, 0.5) << "a shard that polls for replies reported itself busy";
  server.stop();
}

}  // namespace
}  // namespace esockets::test

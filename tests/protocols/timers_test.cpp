// Timers on the connection's own thread (Connection::after/every/cancel_timer), the calling
// engine thread's timers (Server::after/every/cancel_timer) and ticks on every handler thread
// (Server::tick_every): they run on the right thread, not early, follow a connection that moves
// to another shard, stop at cancel, and never run after on_client_disconnect.
#include <gtest/gtest.h>

#include <mutex>
#include <set>
#include <thread>

#include "test_support.hpp"

namespace esockets::test {
namespace {

using Clock = std::chrono::steady_clock;

// Line protocol: "after <ms>" arms a one-shot that answers "fired <elapsed>"; "every <ms> <n>"
// arms a periodic timer that sends "tick <k>" and cancels itself after n runs; "arm-cancel"
// arms a one-shot and cancels it at once; "late <ms>" arms a one-shot and expects to be closed
// before it fires.
class TimerHandler : public CountingHandler {
 public:
  std::atomic<int> wrong_thread{0}, after_disconnect{0}, fired{0}, overlapping{0};
  struct PerConn {
    std::thread::id thread;
    std::atomic<bool> in_callback{false};
    bool gone = false;
  };

  bool on_client_connect(Connection& c) override {
    c.emplace_state<PerConn>().thread = std::this_thread::get_id();
    return CountingHandler::on_client_connect(c);
  }
  void check(Connection& c) {
    PerConn* s = c.state<PerConn>();
    if (s == nullptr || s->gone) {
      after_disconnect++;
      return;
    }
    if (c.server().options().workers > 0 && s->thread != std::this_thread::get_id()) wrong_thread++;
    if (s->in_callback.exchange(true)) overlapping++;
  }
  void done(Connection& c) {
    if (PerConn* s = c.state<PerConn>()) s->in_callback.store(false);
  }
  void on_message_recv(Connection& c, Bytes m) override {
    check(c);
    messages++;
    const std::string line(m);
    if (line.rfind("after ", 0) == 0) {
      const int ms = std::stoi(line.substr(6));
      const auto start = Clock::now();
      c.after(std::chrono::milliseconds(ms), [this, start](Connection& cc) {
        check(cc);
        fired++;
        const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
        cc.send("fired " + std::to_string(took.count()) + "\n");
        done(cc);
      });
    } else if (line.rfind("every ", 0) == 0) {
      const int ms = std::stoi(line.substr(6));
      const int n = std::stoi(line.substr(line.find(' ', 6) + 1));
      auto k = std::make_shared<int>(0);
      auto id = std::make_shared<TimerId>(0);
      *id = c.every(std::chrono::milliseconds(ms), [this, k, n, id](Connection& cc) {
        check(cc);
        fired++;
        cc.send("tick " + std::to_string(++*k) + "\n");
        if (*k == n) cc.send(cc.cancel_timer(*id) ? "cancelled\n" : "cancel failed\n");
        done(cc);
      });
    } else if (line == "arm-cancel") {
      const TimerId id = c.after(5ms, [this](Connection& cc) {
        fired++;
        cc.send("should not fire\n");
      });
      c.send(c.cancel_timer(id) && !c.cancel_timer(id) ? "ok\n" : "bad\n");
    } else if (line.rfind("late ", 0) == 0) {
      c.after(std::chrono::milliseconds(std::stoi(line.substr(5))), [this](Connection& cc) {
        check(cc);
        fired++;
      });
      c.send("armed\n");
    }
    done(c);
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    if (PerConn* s = c.state<PerConn>()) s->gone = true;
    CountingHandler::on_client_disconnect(c, r);
  }
};

class ConnectionTimers : public ::testing::TestWithParam<Mode> {};

ServerOptions line_options(unsigned shards, unsigned workers) {
  ServerOptions o = loopback_options(shards, workers);
  o.framing = Framing::line;
  return o;
}

TEST_P(ConnectionTimers, AOneShotFiresOnceNoEarlierThanItsDelay) {
  TimerHandler h;
  Server server(h, line_options(GetParam().shards, GetParam().workers));
  server.start();
  Client c(server.port());
  ASSERT_TRUE(c.send_all("after 120\n"));
  std::string line;
  ASSERT_TRUE(c.recv_line(line, 5s));
  ASSERT_EQ(line.rfind("fired ", 0), 0u) << line;
  EXPECT_GE(std::stoi(line.substr(6)), 120);
  EXPECT_EQ(c.recv_for(200ms), "");  // once
  EXPECT_EQ(h.fired.load(), 1);
  EXPECT_EQ(h.wrong_thread.load(), 0);
  EXPECT_EQ(h.overlapping.load(), 0);
}

TEST_P(ConnectionTimers, APeriodicTimerRunsUntilItCancelsItself) {
  TimerHandler h;
  Server server(h, line_options(GetParam().shards, GetParam().workers));
  server.start();
  Client c(server.port());
  ASSERT_TRUE(c.send_all("every 10 5\n"));
  std::string line;
  for (int k = 1; k <= 5; ++k) {
    ASSERT_TRUE(c.recv_line(line, 5s));
    EXPECT_EQ(line, "tick " + std::to_string(k));
  }
  ASSERT_TRUE(c.recv_line(line, 5s));
  EXPECT_EQ(line, "cancelled");
  EXPECT_EQ(c.recv_for(150ms), "");
  EXPECT_EQ(h.fired.load(), 5);
}

TEST_P(ConnectionTimers, ACancelledTimerNeverRuns) {
  TimerHandler h;
  Server server(h, line_options(GetParam().shards, GetParam().workers));
  server.start();
  Client c(server.port());
  ASSERT_TRUE(c.send_all("arm-cancel\n"));
  std::string line;
  ASSERT_TRUE(c.recv_line(line, 5s));
  EXPECT_EQ(line, "ok");
  EXPECT_EQ(c.recv_for(100ms), "");
  EXPECT_EQ(h.fired.load(), 0);
}

TEST_P(ConnectionTimers, TimersOfAClosedConnectionAreDroppedUnrun) {
  TimerHandler h;
  Server server(h, line_options(GetParam().shards, GetParam().workers));
  server.start();
  std::vector<Client> clients = connect_many(server.port(), 20);
  for (auto& c : clients) ASSERT_TRUE(c.send_all("late 150\n"));
  std::string line;
  for (auto& c : clients) ASSERT_TRUE(c.recv_line(line, 5s));
  for (auto& c : clients) c.close();
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 20; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(h.fired.load(), 0);
  EXPECT_EQ(h.after_disconnect.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, ConnectionTimers,
                         ::testing::Values(Mode{1, 0}, Mode{2, 0}, Mode{2, 2}), mode_name);

TEST(ConnectionTimersMove, PeriodicTimersFollowTheirConnectionsAcrossShardChanges) {
  TimerHandler h;
  Server server(h, line_options(1, 0));
  server.start();
  const std::size_t n = scaled(40, 10);
  std::vector<Client> clients = connect_many(server.port(), n);
  const int ticks = 40;
  for (auto& c : clients) ASSERT_TRUE(c.send_all("every 10 " + std::to_string(ticks) + "\n"));
  std::atomic<bool> done{false};
  std::thread resizer([&] {
    const unsigned plan[] = {3, 1, 4, 2, 1};
    for (int round = 0; round < 3 && !done.load(); ++round) {
      for (unsigned k : plan) {
        server.set_shards(k);
        server.rebalance();
      }
    }
  });
  std::string line;
  for (auto& c : clients) {
    for (int k = 1; k <= ticks; ++k) {
      ASSERT_TRUE(c.recv_line(line, 10s)) << "tick " << k;
      ASSERT_EQ(line, "tick " + std::to_string(k));
    }
    ASSERT_TRUE(c.recv_line(line, 10s));
    EXPECT_EQ(line, "cancelled");
  }
  done = true;
  resizer.join();
  EXPECT_EQ(h.fired.load(), static_cast<int>(n) * ticks);
  EXPECT_EQ(h.overlapping.load(), 0);
  EXPECT_EQ(h.after_disconnect.load(), 0);
}

TEST(ConnectionTimersThread, ArmingOutsideTheConnectionsCallbacksThrows) {
  class Keep : public CountingHandler {
   public:
    std::atomic<std::uint64_t> id{0};
    bool on_client_connect(Connection& c) override {
      id = c.id().value();
      return CountingHandler::on_client_connect(c);
    }
  } h;
  Server server(h, loopback_options(1, 0));
  server.start();
  EXPECT_THROW(server.after(10ms, [] {}), std::logic_error);
  EXPECT_THROW(server.every(10ms, [] {}), std::logic_error);
  EXPECT_FALSE(server.cancel_timer(1));
  EXPECT_THROW(server.tick_every(0ms, [] {}), std::invalid_argument);
}

// Server::after/every arm timers of the calling engine thread.
class ThreadTimerHandler : public CountingHandler {
 public:
  std::atomic<int> runs{0}, wrong_thread{0};
  void on_message_recv(Connection& c, Bytes) override {
    const auto me = std::this_thread::get_id();
    Server& s = c.server();
    const ConnectionId id = c.id();
    auto count = std::make_shared<int>(0);
    auto tid = std::make_shared<TimerId>(0);
    *tid = s.every(5ms, [this, me, &s, id, count, tid] {
      if (std::this_thread::get_id() != me) wrong_thread++;
      runs++;
      if (++*count == 3) {
        s.cancel_timer(*tid);
        s.send(id, "three\n");
      }
    });
  }
};

TEST(ThreadTimers, EveryRunsOnTheArmingThreadUntilCancelled) {
  for (unsigned workers : {0u, 2u}) {
    ThreadTimerHandler h;
    Server server(h, loopback_options(2, workers));
    server.start();
    Client c(server.port());
    ASSERT_TRUE(c.send_all("go\n"));
    std::string line;
    ASSERT_TRUE(c.recv_line(line, 5s));
    EXPECT_EQ(line, "three");
    std::this_thread::sleep_for(60ms);
    EXPECT_EQ(h.runs.load(), 3) << "workers " << workers;
    EXPECT_EQ(h.wrong_thread.load(), 0);
  }
}

class TickHandler : public CountingHandler {
 public:
  std::mutex mu;
  std::set<std::thread::id> tick_threads, handler_threads;
  std::atomic<int> ticks{0};
  void on_message_recv(Connection& c, Bytes m) override {
    {
      std::lock_guard<std::mutex> lk(mu);
      handler_threads.insert(std::this_thread::get_id());
    }
    c.send(m);
  }
  void tick() {
    ticks++;
    std::lock_guard<std::mutex> lk(mu);
    tick_threads.insert(std::this_thread::get_id());
  }
  std::size_t tick_thread_count() {
    std::lock_guard<std::mutex> lk(mu);
    return tick_threads.size();
  }
};

TEST(Ticks, RunOnEveryShardInlineIncludingShardsAddedLaterAndStopWhenCancelled) {
  TickHandler h;
  Server server(h, loopback_options(2, 0));
  const std::uint64_t id = server.tick_every(5ms, [&h] { h.tick(); });  // before start
  server.start();
  ASSERT_TRUE(wait_until([&] { return h.tick_thread_count() == 2; }, 5s));
  server.set_shards(3);
  ASSERT_TRUE(wait_until([&] { return h.tick_thread_count() == 3; }, 5s));
  server.cancel_tick(id);
  std::this_thread::sleep_for(50ms);  // a call under way may finish
  const int after_cancel = h.ticks.load();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(h.ticks.load(), after_cancel);
}

TEST(Ticks, RunOnEveryWorkerWithWorkers) {
  TickHandler h;
  Server server(h, loopback_options(2, 3));
  server.start();
  server.tick_every(5ms, [&h] { h.tick(); });  // while serving
  ASSERT_TRUE(wait_until([&] { return h.tick_thread_count() == 3; }, 5s));
  // The three tick threads are the workers, where handlers run.
  std::vector<Client> clients = connect_many(server.port(), 30);
  for (auto& c : clients) ASSERT_TRUE(c.send_all("x"));
  for (auto& c : clients) EXPECT_EQ(c.recv_exact(1), "x");
  std::lock_guard<std::mutex> lk(h.mu);
  for (const auto& t : h.handler_threads) EXPECT_EQ(h.tick_threads.count(t), 1u);
  EXPECT_EQ(h.tick_threads.size(), 3u);
}

}  // namespace
}  // namespace esockets::test

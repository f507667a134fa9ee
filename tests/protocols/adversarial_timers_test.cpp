// Adversarial tests of timers (Connection::after/every/cancel_timer, Server::after/every,
// tick_every/cancel_tick): never earlier than the delay, on the connection's handler thread,
// never overlapping its callbacks, following it across hand-overs with their cadence, never
// after on_client_disconnect, cancellable from within a timer (itself or another due in the
// same pass); thread timers end with their thread (a retired shard's index is reused: its old
// timers must not come back); ticks on every handler thread, stopped by cancel_tick.
#include <gtest/gtest.h>

#include <set>

#include "adversarial_support.hpp"

namespace esockets::test::adv {
namespace {

class TimerHandler : public Handler {
 public:
  Registry reg;
  std::function<void(Connection&, Rec*)> on_connect;
  std::function<void(Connection&, Rec*)> on_message;
  std::atomic<long> disconnects{0};
  bool on_client_connect(Connection& c) override {
    Rec* r = reg.add(c.id(), c.peer().port);
    c.set_user_data(r);
    InCallback g(r);
    if (on_connect) on_connect(c, r);
    return true;
  }
  void on_message_recv(Connection& c, Bytes) override {
    Rec* r = static_cast<Rec*>(c.user_data());
    InCallback g(r);
    if (on_message) on_message(c, r);
  }
  void on_client_disconnect(Connection& c, CloseReason) override {
    Rec* r = static_cast<Rec*>(c.user_data());
    {
      InCallback g(r);
    }
    r->gone = true;
    disconnects++;
  }
};

class AdversarialTimers : public ::testing::TestWithParam<Mode> {};

// Elapsed time from arming (steady_clock, ns) to the run must be at least the delay.
TEST_P(AdversarialTimers, ConnectionTimersNeverFireBeforeTheirDelay) {
  TimerHandler h;
  std::atomic<long> runs{0}, early{0}, wrong_thread{0};
  std::atomic<long long> worst_ns{1LL << 60};
  std::atomic<long> armed_total{0};
  h.on_connect = [&](Connection& c, Rec* r) {
    const auto tid = std::this_thread::get_id();
    for (int d = 1; d <= 4; ++d) {
      armed_total++;
      const auto armed = Clock::now();
      c.after(std::chrono::milliseconds(d), [&, r, d, armed, tid](Connection&) {
        InCallback g(r);
        const long long slack =
            std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - armed).count() -
            d * 1000000LL;
        long long w = worst_ns.load();
        while (slack < w && !worst_ns.compare_exchange_weak(w, slack)) {
        }
        if (slack < 0) early++;
        if (std::this_thread::get_id() != tid) wrong_thread++;
        runs++;
      });
    }
  };
  // Every paced message also arms a 1 ms timer.
  h.on_message = [&](Connection& c, Rec* r) {
    const auto armed = Clock::now();
    armed_total++;
    c.after(1ms, [&, r, armed](Connection&) {
      InCallback g(r);
      const long long slack =
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - armed).count() - 1000000LL;
      long long w = worst_ns.load();
      while (slack < w && !worst_ns.compare_exchange_weak(w, slack)) {
      }
      if (slack < 0) early++;
      runs++;
    });
  };
  Server server(h, loopback_options(1, GetParam().workers));
  server.start();
  // A pacer keeps the handler threads waking every ~100 us, so a pass can happen at any point
  // of a millisecond (a timer must still wait its whole delay).
  std::atomic<bool> pace{true};
  std::thread pacer([&] {
    Client p(server.port());
    while (pace) {
      p.send_all("p");
      std::this_thread::sleep_for(100us);
    }
  });
  const std::size_t n = scaled(100, 30);
  std::vector<Client> cs;
  for (std::size_t i = 0; i < n; ++i) {
    cs.emplace_back(server.port());
    std::this_thread::sleep_for(std::chrono::microseconds(300 + 137 * (i % 7)));  // spread phase
  }
  const bool all = wait_until([&] { return runs.load() >= static_cast<long>(4 * n); });
  pace = false;
  wait_until([&] { return runs.load() == armed_total.load(); }, 2s);
  pace = false;
  pacer.join();
  ASSERT_TRUE(all);
  EXPECT_EQ(early.load(), 0) << "timers ran before their delay; worst by " << -worst_ns.load() << " ns";
  EXPECT_EQ(wrong_thread.load(), 0);
  server.stop();
  EXPECT_EQ(h.reg.total(&Rec::overlaps), 0);
}

// Inline: every shard thread arms one Server::every timer (tagged with the shard that armed it:
// the accepting shard, ConnectionId::shard()). After set_shards(1) shards 1 and 2 have ended and
// their timers are dropped unrun (server.hpp); set_shards(3) reuses the indexes with new
// threads, which must not run the old threads' timers.
TEST(AdversarialTimersInline, ThreadTimersOfARetiredShardDoNotComeBackWithItsIndex) {
  TimerHandler h;
  std::mutex mu;
  std::set<std::uint32_t> armers;
  std::atomic<long> fires{0};
  std::atomic<bool> retired{false};
  std::atomic<long> retired_fires{0};
  h.on_connect = [&](Connection& c, Rec*) {
    static thread_local const void* armed_for = nullptr;
    if (armed_for == &h) return;
    armed_for = &h;
    const std::uint32_t shard = c.id().shard();
    {
      std::lock_guard lk(mu);
      armers.insert(shard);
    }
    c.server().every(2ms, [&, shard] {
      fires++;
      if (shard != 0 && retired.load()) retired_fires++;
    });
  };
  Server server(h, loopback_options(3, 0));
  server.start();
  std::vector<Client> cs;
  for (int i = 0; i < 60; ++i) cs.emplace_back(server.port());
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lk(mu);
    return armers.size() == 3;
  }, 5s)) << "connections did not reach every shard";
  ASSERT_TRUE(wait_until([&] { return fires.load() > 30; }));
  server.set_shards(1);
  retired = true;
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(retired_fires.load(), 0) << "a retired shard's timer ran while it was retired";
  server.set_shards(3);  // no new connection: the new threads arm nothing themselves
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(retired_fires.load(), 0)
      << "timers armed by retired shards 1 and 2 ran again on the new threads of their indexes";
  server.stop();
}

// Periodic connection timers keep running across hand-overs (no loss) without bursts, never
// overlap other callbacks, and stop with the connection.
TEST_P(AdversarialTimers, PeriodicTimersFollowHandOversWithTheirCadence) {
  TimerHandler h;
  struct Track {
    std::atomic<long> fires{0};
    Clock::time_point start;
  };
  std::mutex mu;
  std::unordered_map<Rec*, std::unique_ptr<Track>> tracks;
  h.on_connect = [&](Connection& c, Rec* r) {
    Track* t;
    {
      std::lock_guard lk(mu);
      auto& p = tracks[r];
      p = std::make_unique<Track>();
      t = p.get();
    }
    t->start = Clock::now();
    c.every(10ms, [r, t](Connection&) {
      InCallback g(r);
      t->fires++;
    });
  };
  Server server(h, loopback_options(1, GetParam().workers));
  server.start();
  const std::size_t n = scaled(24, 8);
  std::vector<Client> cs;
  for (std::size_t i = 0; i < n; ++i) cs.emplace_back(server.port());
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lk(mu);
    return h.reg.total(&Rec::busy) == 0 && tracks.size() == n;
  }));
  {
    Reshaper rs(server, scaled(8, 3), 30ms);
    // Traffic on the side so the moves carry busy connections too.
    for (int k = 0; k < 40; ++k) {
      for (auto& c : cs) c.send_all("x");
      std::this_thread::sleep_for(10ms);
    }
    rs.join();
  }
  const auto end = Clock::now();
  long lost = 0, burst = 0;
  std::string detail;
  {
    std::lock_guard lk(mu);
    for (auto& [r, t] : tracks) {
      const double expect = std::chrono::duration<double, std::milli>(end - t->start).count() / 10.0;
      const long f = t->fires.load();
      if (f > static_cast<long>(expect) + 2) {
        burst++;
        detail = "fires " + std::to_string(f) + " expected ~" + std::to_string(expect);
      }
      if (f < static_cast<long>(expect * (kScale > 1 ? 0.2 : 0.5))) {
        lost++;
        detail = "fires " + std::to_string(f) + " expected ~" + std::to_string(expect);
      }
    }
  }
  EXPECT_EQ(burst, 0) << detail;
  EXPECT_EQ(lost, 0) << detail;
  cs.clear();  // peer closes
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == static_cast<long>(n); }));
  std::this_thread::sleep_for(40ms);
  server.stop();
  EXPECT_EQ(h.reg.total(&Rec::overlaps), 0);
  EXPECT_EQ(h.reg.total(&Rec::after_end), 0) << "a timer ran after on_client_disconnect";
}

// Two one-shots due in the same pass: whichever runs first cancels the other (true, and the
// other never runs) and fails to cancel itself (false: a one-shot already running); a periodic
// timer cancels itself on its 3rd run and runs exactly 3 times.
TEST_P(AdversarialTimers, CancelFromWithinTimers) {
  TimerHandler h;
  std::atomic<long> ab_runs{0}, c_runs{0}, bad{0};
  h.on_connect = [&](Connection& c, Rec* r) {
    auto ids = std::make_shared<std::array<TimerId, 3>>();
    for (int me = 0; me < 2; ++me) {
      (*ids)[me] = c.after(5ms, [&, r, ids, me](Connection& cc) {
        InCallback g(r);
        ab_runs++;
        if (!cc.cancel_timer((*ids)[1 - me])) bad++;  // due in this very pass: not run yet
        if (cc.cancel_timer((*ids)[me])) bad++;       // a one-shot that is running
      });
    }
    auto count = std::make_shared<int>(0);
    (*ids)[2] = c.every(1ms, [&, r, ids, count](Connection& cc) {
      InCallback g(r);
      c_runs++;
      if (++*count == 3 && !cc.cancel_timer((*ids)[2])) bad++;
    });
  };
  Server server(h, loopback_options(2, GetParam().workers));
  server.start();
  const std::size_t n = scaled(60, 20);
  std::vector<Client> cs;
  for (std::size_t i = 0; i < n; ++i) cs.emplace_back(server.port());
  ASSERT_TRUE(wait_until([&] { return ab_runs.load() >= static_cast<long>(n) && c_runs.load() >= static_cast<long>(3 * n); }));
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(ab_runs.load(), static_cast<long>(n));
  EXPECT_EQ(c_runs.load(), static_cast<long>(3 * n));
  EXPECT_EQ(bad.load(), 0);
  server.stop();
  EXPECT_EQ(h.reg.total(&Rec::overlaps), 0);
}

// Timers armed one after another with the same delay (the same deadline, or a later one) run
// in the order they were armed, as the wheel promises "in the order they were due".
TEST_P(AdversarialTimers, TimersWithEqualDeadlinesRunInArmingOrder) {
  TimerHandler h;
  std::atomic<long> done{0}, disorder{0};
  h.on_connect = [&](Connection& c, Rec* r) {
    auto next = std::make_shared<int>(0);
    for (int i = 0; i < 8; ++i) {
      c.after(4ms, [&, r, next, i](Connection&) {
        InCallback g(r);
        if (*next != i) disorder++;
        *next = i + 1;
        done++;
      });
    }
  };
  Server server(h, loopback_options(1, GetParam().workers));
  server.start();
  const std::size_t n = scaled(20, 5);
  std::vector<Client> cs;
  for (std::size_t i = 0; i < n; ++i) cs.emplace_back(server.port());
  ASSERT_TRUE(wait_until([&] { return done.load() == static_cast<long>(8 * n); }));
  EXPECT_EQ(disorder.load(), 0) << "timers with one deadline ran out of arming order";
  server.stop();
}

// Thousands of timers with random delays on many connections; a random part is cancelled at
// once, others are cancelled by timers that run; shards change meanwhile. Each timer runs
// exactly once unless its cancel_timer returned true, and then never.
TEST_P(AdversarialTimers, ThousandsOfTimersWithRandomCancelsWhileShardsChange) {
  TimerHandler h;
  struct St {
    std::vector<TimerId> ids;
    std::vector<char> state;  // 0 armed, 1 ran, 2 cancelled
  };
  std::atomic<long> armed{0}, ran{0}, cancelled{0}, bad{0};
  std::mutex smu;
  std::unordered_map<Rec*, std::unique_ptr<St>> sts;
  const int per = static_cast<int>(scaled(150, 40));
  h.on_connect = [&](Connection& c, Rec* r) {
    St* s;
    {
      std::lock_guard lk(smu);
      auto& p = sts[r];
      p = std::make_unique<St>();
      s = p.get();
    }
    std::mt19937 rng(static_cast<unsigned>(c.id().value()));
    s->ids.resize(per);
    s->state.assign(per, 0);
    for (int i = 0; i < per; ++i) {
      const int victim = static_cast<int>(rng() % per);
      s->ids[i] = c.after(std::chrono::milliseconds(1 + rng() % 120), [&, r, s, i, victim](Connection& cc) {
        InCallback g(r);
        if (s->state[i] != 0) bad++;
        s->state[i] = 1;
        ran++;
        if (victim != i && s->state[victim] == 0) {
          if (cc.cancel_timer(s->ids[victim])) {
            s->state[victim] = 2;
            cancelled++;
          } else {
            bad++;  // armed and not run: must be cancellable
          }
        }
      });
      armed++;
    }
    for (int i = 0; i < per; i += 3) {
      if (s->state[i] == 0 && c.cancel_timer(s->ids[i])) {
        s->state[i] = 2;
        cancelled++;
      }
    }
  };
  Server server(h, loopback_options(1, GetParam().workers));
  server.start();
  Reshaper rs(server, scaled(6, 2), 10ms);
  const std::size_t n = scaled(40, 10);
  std::vector<Client> cs;
  for (std::size_t i = 0; i < n; ++i) cs.emplace_back(server.port());
  EXPECT_TRUE(wait_until([&] { return armed.load() == static_cast<long>(n) * per && ran.load() + cancelled.load() == armed.load(); }, 20s))
      << "armed " << armed << " ran " << ran << " cancelled " << cancelled;
  rs.join();
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(ran.load() + cancelled.load(), armed.load());
  EXPECT_EQ(bad.load(), 0);
  server.stop();
  EXPECT_EQ(h.reg.total(&Rec::overlaps), 0);
}

// Connections with 1 ms periodic timers end every way: closed by a timer, by the peer, by a
// reset, by a framing error, by stop. No timer runs after on_client_disconnect.
TEST_P(AdversarialTimers, NoTimerAfterTheEndWhateverEndsTheConnection) {
  TimerHandler h;
  h.on_connect = [&](Connection& c, Rec* r) {
    auto k = std::make_shared<int>(0);
    c.every(1ms, [r, k](Connection& cc) {
      InCallback g(r);
      if (++*k == 5 && cc.fileno() % 5 == 0) cc.close();
    });
    c.after(3ms, [r](Connection&) { InCallback g(r); });
  };
  ServerOptions o = loopback_options(2, GetParam().workers);
  o.framing = Framing::line;
  o.max_frame = 64;
  Server server(h, o);
  server.start();
  std::vector<Client> keep;
  for (std::size_t round = 0; round < scaled(6, 2); ++round) {
    std::vector<Client> cs;
    for (int i = 0; i < 25; ++i) cs.emplace_back(server.port());
    std::this_thread::sleep_for(8ms);
    for (std::size_t i = 0; i < cs.size(); ++i) {
      switch (i % 4) {
        case 0: cs[i].close(); break;
        case 1: cs[i].reset(); break;
        case 2: cs[i].send_all(std::string(200, 'z')); break;  // line too long
        case 3: keep.push_back(std::move(cs[i])); break;     // ended by stop
      }
    }
  }
  std::this_thread::sleep_for(30ms);
  server.stop();
  EXPECT_EQ(h.reg.total(&Rec::after_end), 0) << "a timer ran after on_client_disconnect";
  EXPECT_EQ(h.reg.total(&Rec::overlaps), 0);
}

// Server timers: from handlers they run on that thread; from other threads they throw.
TEST_P(AdversarialTimers, ServerTimersBelongToEngineThreads) {
  TimerHandler h;
  std::atomic<long> ran{0}, wrong{0};
  h.on_connect = [&](Connection& c, Rec*) {
    const auto me = std::this_thread::get_id();
    const auto armed = Clock::now();
    c.server().after(2ms, [&, me, armed] {
      if (std::this_thread::get_id() != me || Clock::now() - armed < 2ms) wrong++;
      ran++;
    });
  };
  Server server(h, loopback_options(2, GetParam().workers));
  EXPECT_THROW(server.after(1ms, [] {}), std::logic_error);
  server.start();
  EXPECT_THROW(server.after(1ms, [] {}), std::logic_error);
  EXPECT_THROW(server.every(1ms, [] {}), std::logic_error);
  EXPECT_FALSE(server.cancel_timer(1));
  std::vector<Client> cs;
  for (int i = 0; i < 20; ++i) cs.emplace_back(server.port());
  ASSERT_TRUE(wait_until([&] { return ran.load() == 20; }));
  EXPECT_EQ(wrong.load(), 0);
  server.stop();
}

// tick_every runs on every handler thread (each shard inline, including shards added later;
// each worker, and only them, with workers); after cancel_tick returns, at most one call per
// thread that was already under way.
TEST_P(AdversarialTimers, TicksOnEveryHandlerThreadAndCancelStopsThem) {
  CountingHandler h;
  Server server(h, loopback_options(2, GetParam().workers));
  std::mutex mu;
  std::set<std::thread::id> threads;
  std::atomic<long> calls{0};
  const auto tick = server.tick_every(2ms, [&] {
    calls++;
    std::lock_guard lk(mu);
    threads.insert(std::this_thread::get_id());
  });
  server.start();
  const std::size_t want = GetParam().workers == 0 ? 2 : GetParam().workers;
  auto distinct = [&] {
    std::lock_guard lk(mu);
    return threads.size();
  };
  EXPECT_TRUE(wait_until([&] { return distinct() >= want; }, 3s)) << distinct();
  if (GetParam().workers == 0) {
    server.set_shards(4);
    EXPECT_TRUE(wait_until([&] { return distinct() >= 4; }, 3s)) << "ticks on added shards: " << distinct();
  } else {
    server.set_shards(3);
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(distinct(), want) << "ticks ran on a shard thread in worker mode";
  }
  server.cancel_tick(tick);
  const long at_cancel = calls.load();
  std::this_thread::sleep_for(30ms);
  const long later = calls.load();
  EXPECT_LE(later - at_cancel, 4) << "ticks kept running after cancel_tick";
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(calls.load(), later) << "ticks kept running after cancel_tick";
  server.stop();
}

INSTANTIATE_TEST_SUITE_P(Modes, AdversarialTimers, ::testing::ValuesIn(modes()), name_of);

}  // namespace
}  // namespace esockets::test::adv

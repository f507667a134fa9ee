// Cross-shard relays while shards come and go: pairs of clients flood each other through the
// relay handler (each line forwarded from the sender's handler to its partner), and a control
// thread cycles set_shards(3), rebalance(), set_shards(2) the whole time, so connections and
// the commands queued for them move between shards under full queues. Nothing may be lost,
// duplicated or reordered (per-client sequence numbers), no connection may close, every
// resize call returns, traffic keeps flowing, and stop() returns. Forked child with a deadline.
#include <algorithm>

#include "fanout_support.hpp"

using namespace fanout;

namespace {

void resize_load_body(ChildLog& log, unsigned workers, std::uint64_t window) {
  const std::size_t kPairs = scaled(24, 6);
  ServerOptions o = esockets::test::loopback_options(2, workers);
  o.framing = esockets::Framing::line;
  if (window == 0) {
    // Open loop: nothing ties a sender's rate to its partner's reading (the relay handler
    // has no cross-connection pause), so a reader slower than the relays (sanitizer builds)
    // lets output queue up; a larger cap keeps that from closing clients as slow consumers.
    o.output_hard_cap = 128u << 20;
  }
  RelayHandler h(false);
  Server s(h, o);
  h.attach(s);
  s.start();
  PairRig rig;
  if (!rig.setup(s, h.reg, kPairs, log)) return;

  std::atomic<bool> stop_writing{false};
  std::thread writer([&] { rig.write(stop_writing, UINT64_MAX, window); });
  const auto t0 = Clock::now();
  const double run_s = 8.0;
  int cycles = 0, stalled = 0;
  double slowest = 0;
  std::uint64_t last = rig.book->delivered();
  auto last_check = Clock::now();
  // At least three cycles whatever the machine's speed (a cycle under TSan with an open-loop
  // writer took 10 s), within the child's deadline.
  while ((since_s(t0) < run_s || cycles < 3) && since_s(t0) < 40.0) {
    const auto c0 = Clock::now();
    try {
      s.set_shards(3);
      s.rebalance();
      s.set_shards(2);
      s.rebalance();
    } catch (const std::exception& e) {
      log.fail(std::string("resize threw: ") + e.what());
      break;
    }
    slowest = std::max(slowest, since_s(c0));
    ++cycles;
    if (Clock::now() - last_check >= 1s) {
      const std::uint64_t now = rig.book->delivered();
      if (now == last) ++stalled;
      log.note("t=" + std::to_string(static_cast<int>(since_s(t0))) + "s cycles " +
               std::to_string(cycles) + ", delivered " + std::to_string(now) + ", missing " +
               std::to_string(rig.book->missing()) + ", overflow " +
               std::to_string(s.stats().total.overflow));
      last = now;
      last_check = Clock::now();
    }
  }
  stop_writing.store(true);
  writer.join();
  const auto until = Clock::now() + 30s;
  std::uint64_t prev = rig.undelivered();
  auto last_change = Clock::now();
  while (!rig.drained() && Clock::now() < until) {
    std::this_thread::sleep_for(10ms);
    const std::uint64_t u = rig.undelivered();
    if (u != prev) {
      prev = u;
      last_change = Clock::now();
    } else if (Clock::now() - last_change > 5s) {
      break;
    }
  }
  log.note(std::to_string(cycles) + " resize cycles (slowest " + std::to_string(slowest) +
           " s); written " + std::to_string(rig.written_total()) + ", undelivered " +
           std::to_string(rig.undelivered()) + "; handler " + h.first.str() + "; closes " +
           h.reg.reasons_str());
  log.check(cycles >= 3, "only " + std::to_string(cycles) + " resize cycles");
  log.check(stalled == 0, "traffic stalled in " + std::to_string(stalled) + " one-second windows");
  log.check(rig.undelivered() == 0, std::to_string(rig.undelivered()) + " lines never arrived");
  log.check(rig.book->missing() == 0, "lost lines: " + std::to_string(rig.book->missing()) +
                                          rig.book->first_problems());
  log.check(rig.book->duplicates() == 0, "duplicated or reordered lines: " +
                                             std::to_string(rig.book->duplicates()) +
                                             rig.book->first_problems());
  log.check(rig.book->garbage_count() == 0, "garbage" + rig.book->first_problems());
  log.check(h.first.backpressure.load() == 0, "handler sends returned backpressure: " + h.first.str());
  log.check(h.reg.disconnects.load() == 0, "connections closed: " + h.reg.reasons_str());
  const auto ts = Clock::now();
  s.stop();
  log.check(since_s(ts) < 10.0, "stop() took " + std::to_string(since_s(ts)) + " s");
  rig.fleet.stop();
}

struct ResizeLoadCase {
  const char* name;
  unsigned workers;
  std::uint64_t window;
};
void PrintTo(const ResizeLoadCase& c, std::ostream* os) { *os << c.name; }

class ResizeUnderLoad : public ::testing::TestWithParam<ResizeLoadCase> {};

TEST_P(ResizeUnderLoad, RelaysSurviveMovesWithoutLossOrReorder) {
  const ResizeLoadCase c = GetParam();
  const ChildOutcome out = run_in_child(
      [&](ChildLog& log) { resize_load_body(log, c.workers, c.window); }, ms(70000L));
  expect_child_ok(out, c.name);
}

INSTANTIATE_TEST_SUITE_P(Fanout, ResizeUnderLoad,
                         ::testing::Values(ResizeLoadCase{"inline_small_window", 0, 64},
                                           ResizeLoadCase{"inline_windowed", 0, 4096},
                                           ResizeLoadCase{"inline_open_loop", 0, 0},
                                           ResizeLoadCase{"workers2_windowed", 2, 4096}),
                         [](const ::testing::TestParamInfo<ResizeLoadCase>& i) {
                           return std::string(i.param.name);
                         });

// Shard 1 retires in the middle of a one-way flood between the shards, handing its clients to
// shard 0.
//  - senders_move == false: clients on shard 0 flood their partners on shard 1. Only the
//    destinations move, to shard 0, whose handlers still hold relays for them in their queue
//    to shard 1. Every relay to one partner comes from one thread (shard 0): the documented
//    per-thread order must hold.
//  - senders_move == true: clients on shard 1 flood their partners on shard 0. The senders
//    move while their earlier relays still wait in shard 1's queue to shard 0; their later
//    messages are handled on shard 0. One connection's handler calls are sequential and in
//    order (connect, messages...), so the relays they make must stay in that order too.
void retire_body(ChildLog& log, bool senders_move) {
  const std::size_t kPairs = scaled(24, 6);
  ServerOptions o = esockets::test::loopback_options(2, 0);
  o.framing = esockets::Framing::line;
  RelayHandler h(false);
  Server s(h, o);
  h.attach(s);
  s.start();
  PairRig rig;
  if (!rig.setup(s, h.reg, kPairs, log)) return;
  // active[] alternates shard 0, shard 1: mute the receiving side.
  for (std::size_t k = senders_move ? 0 : 1; k < rig.active.size(); k += 2) rig.mute[rig.active[k]] = 1;
  std::atomic<bool> stop_writing{false};
  std::thread writer([&] { rig.write(stop_writing, UINT64_MAX, 0); });
  const auto t0 = Clock::now();
  std::uint64_t overflow_seen = 0;
  while (since_s(t0) < 3.0) {
    std::this_thread::sleep_for(10ms);
    overflow_seen = std::max<std::uint64_t>(overflow_seen, s.stats().total.overflow);
    if (since_s(t0) > 1.0 && overflow_seen > 0) break;
  }
  log.note("retiring shard 1 after " + std::to_string(since_s(t0)) + " s; overflow seen " +
           std::to_string(overflow_seen));
  try {
    s.set_shards(1);
  } catch (const std::exception& e) {
    log.fail(std::string("set_shards(1) threw: ") + e.what());
  }
  std::this_thread::sleep_for(1500ms);
  stop_writing.store(true);
  writer.join();
  const auto until = Clock::now() + 20s;
  while (!rig.drained() && Clock::now() < until) std::this_thread::sleep_for(10ms);
  log.note("written " + std::to_string(rig.written_total()) + ", undelivered " +
           std::to_string(rig.undelivered()) + ", handler " + h.first.str());
  log.check(rig.undelivered() == 0, std::to_string(rig.undelivered()) + " lines never arrived");
  log.check(rig.book->missing() == 0 && rig.book->duplicates() == 0,
            "lost/skipped " + std::to_string(rig.book->missing()) + ", duplicated/reordered " +
                std::to_string(rig.book->duplicates()) + rig.book->first_problems());
  log.check(h.reg.disconnects.load() == 0, "connections closed: " + h.reg.reasons_str());
  s.stop();
  rig.fleet.stop();
}

TEST(ResizeUnderLoad, RetiringTheDestinationShardKeepsPerThreadOrder) {
  const ChildOutcome out = run_in_child([&](ChildLog& log) { retire_body(log, false); }, ms(60000L));
  expect_child_ok(out, "retire_destination");
}

TEST(ResizeUnderLoad, RetiringTheSenderShardKeepsEachSendersOrder) {
  const ChildOutcome out = run_in_child([&](ChildLog& log) { retire_body(log, true); }, ms(60000L));
  expect_child_ok(out, "retire_sender");
}

}  // namespace

// Shards sending to each other at full speed: pairs of clients, one on shard 0 and one on
// shard 1, each client's lines relayed by its shard's inline handler to its partner on the
// other shard (both directions at once, so both shards push into each other's queues for
// the whole run). For ~10 s:
//   - traffic keeps flowing: deliveries rise in every one-second window (no deadlock, no stall);
//   - nothing is lost, duplicated or reordered (per-client sequence numbers), once the
//     writers stop and the relays drain;
//   - no handler send returns backpressure;
//   - memory stays bounded: VmRSS after the warm-up grows by at most 64 MB (release builds;
//     sanitizer allocators grow RSS by themselves), and stats().total.overflow (commands
//     waiting for room in another shard's queue) stays under 2^20;
//   - stop() returns promptly afterwards.
// Runs in a forked child with a deadline: a deadlock fails the test instead of hanging ctest.
#include <algorithm>

#include "fanout_support.hpp"

using namespace fanout;

namespace {

struct FloodCase {
  const char* name;
  std::uint64_t window;  // 0 = open loop (writers push as fast as the sockets take it)
  int seconds;
};

void PrintTo(const FloodCase& c, std::ostream* os) { *os << c.name; }

void flood_body(ChildLog& log, const FloodCase& fc) {
  const std::size_t kPairs = scaled(32, 8);
  ServerOptions o = esockets::test::loopback_options(2, 0);
  o.framing = esockets::Framing::line;
  RelayHandler h(false);
  if (fc.window == 0) {
    // Open loop: nothing ties a sender's rate to its partner's reading (the relay handler
    // has no cross-connection pause), so a reader slower than the relays (sanitizer builds)
    // lets output queue up; a larger cap keeps that from closing clients as slow consumers.
    o.output_hard_cap = 128u << 20;
  }
  Server s(h, o);
  h.attach(s);
  s.start();
  PairRig rig;
  if (!rig.setup(s, h.reg, kPairs, log)) return;
  log.note(std::to_string(kPairs) + " pairs across shards 0 and 1, window " +
           (fc.window == 0 ? std::string("open loop") : std::to_string(fc.window)));

  std::atomic<bool> stop{false};
  std::thread writer([&] { rig.write(stop, UINT64_MAX, fc.window); });
  const auto t0 = Clock::now();
  std::uint64_t last = rig.book->delivered();
  long rss_base = -1, rss_max = -1;
  std::uint64_t overflow_max = 0;
  int stalled_seconds = 0;
  for (int sec = 1; sec <= fc.seconds; ++sec) {
    std::this_thread::sleep_until(t0 + std::chrono::seconds(sec));
    const std::uint64_t now = rig.book->delivered();
    const auto st = s.stats();
    const long rss = self_rss_kb();
    overflow_max = std::max<std::uint64_t>(overflow_max, st.total.overflow);
    if (sec == 2) rss_base = rss;
    if (sec >= 2) rss_max = std::max(rss_max, rss);
    log.note("t=" + std::to_string(sec) + "s delivered +" + std::to_string(now - last) +
             " (total " + std::to_string(now) + ", written " + std::to_string(rig.written_live.load()) +
             ", missing " + std::to_string(rig.book->missing()) + ") overflow=" +
             std::to_string(st.total.overflow) + " send_backpressure=" +
             std::to_string(st.total.send_backpressure) + " paused=" + std::to_string(st.total.paused) +
             " output_bytes=" + std::to_string(st.total.output_bytes) +
             " rss=" + std::to_string(rss / 1024) + "MB handler: " + h.first.str());
    if (sec >= 2 && now == last) ++stalled_seconds;  // the first second is the ramp-up
    last = now;
  }
  stop.store(true);
  writer.join();
  const std::uint64_t written = rig.written_total();
  // Let the relays drain: everything written must arrive.
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
      break;  // nothing moves any more: what is missing is lost
    }
  }
  log.note("written " + std::to_string(written) + " lines, undelivered " +
           std::to_string(rig.undelivered()) + ", missing (skipped) " +
           std::to_string(rig.book->missing()) + ", duplicates " +
           std::to_string(rig.book->duplicates()) + "; handler first attempts: " + h.first.str() +
           "; closes: " + h.reg.reasons_str());

  log.check(stalled_seconds == 0, "traffic stalled in " + std::to_string(stalled_seconds) +
                                      " one-second windows (deadlock or starvation)");
  log.check(written > 0 && rig.undelivered() == 0,
            std::to_string(rig.undelivered()) + " of " + std::to_string(written) +
                " relayed lines never arrived");
  log.check(rig.book->missing() == 0, "lost lines (gaps in a partner's sequence): " +
                                          std::to_string(rig.book->missing()) +
                                          rig.book->first_problems());
  log.check(rig.book->duplicates() == 0, "duplicated or reordered lines" + rig.book->first_problems());
  log.check(rig.book->garbage_count() == 0, "garbage" + rig.book->first_problems());
  log.check(h.first.backpressure.load() == 0,
            "handler sends returned backpressure " + std::to_string(h.first.backpressure.load()) +
                " times (a shard thread must queue past a full queue)");
  log.check(h.reg.disconnects.load() == 0, "connections closed during the run: " + h.reg.reasons_str());
  // Memory: after the warm-up the process must not keep growing (an unbounded overflow list
  // or leaked blocks would).
  // (ASan/TSan allocators hold freed memory in quarantine and grow RSS by hundreds of MB on
  // their own: there only the overflow gauge is checked.)
  const long slack_kb = 64L * 1024;
  log.note("rss after warm-up " + std::to_string(rss_base / 1024) + " MB, max " +
           std::to_string(rss_max / 1024) + " MB; overflow max " + std::to_string(overflow_max));
  if (kScale == 1) {
    log.check(rss_base > 0 && rss_max - rss_base <= slack_kb,
              "VmRSS grew by " + std::to_string((rss_max - rss_base) / 1024) + " MB after the warm-up");
  }
  log.check(overflow_max <= (1u << 20), "stats().total.overflow reached " + std::to_string(overflow_max));

  log.note("stopping");
  const auto ts = Clock::now();
  s.stop();
  const double stop_s = since_s(ts);
  log.note("stop() returned after " + std::to_string(stop_s) + " s");
  log.check(stop_s < 10.0, "stop() took " + std::to_string(stop_s) + " s");
  rig.fleet.stop();
}

class CrossShardFlood : public ::testing::TestWithParam<FloodCase> {};

TEST_P(CrossShardFlood, KeepsFlowingWithoutLossAndStops) {
  const FloodCase fc = GetParam();
  const ChildOutcome out = run_in_child([&](ChildLog& log) { flood_body(log, fc); },
                                        ms((fc.seconds + 60) * 1000L));
  expect_child_ok(out, fc.name);
}

INSTANTIATE_TEST_SUITE_P(Fanout, CrossShardFlood,
                         ::testing::Values(FloodCase{"windowed_ping_across", 4096, 6},
                                           FloodCase{"open_loop", 0, 10}),
                         [](const ::testing::TestParamInfo<FloodCase>& i) {
                           return std::string(i.param.name);
                         });

}  // namespace

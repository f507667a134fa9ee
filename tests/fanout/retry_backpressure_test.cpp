// A handler that retries on backpressure must not deadlock an inline server. Pairs of clients
// on shards 0 and 1 each write a burst at once; every line is relayed by the inline handler
// to the partner on the other shard, and the handler retries (yield) while send returns
// backpressure, as a naive user would. Today both shards can end up spinning in a handler,
// each waiting for room in the other's inbox, which neither drains any more.
// With the fix a send from a shard thread never returns backpressure, so the retry loop never
// runs: every line arrives, in order, and stop() returns, within a deadline. Runs in a forked
// child: a deadlock fails the test (the child is killed at its deadline).
#include <algorithm>

#include "fanout_support.hpp"

using namespace fanout;

namespace {

void retry_body(ChildLog& log, unsigned workers) {
  const std::size_t kPairs = scaled(32, 8);
  const std::uint64_t kLines = scaled(4000, 1000);  // per client: > one inbox per direction
  ServerOptions o = esockets::test::loopback_options(2, workers);
  o.framing = esockets::Framing::line;
  RelayHandler h(true, 30s);
  Server s(h, o);
  h.attach(s);
  s.start();
  PairRig rig;
  if (!rig.setup(s, h.reg, kPairs, log)) return;
  log.note(std::to_string(kPairs) + " pairs, " + std::to_string(kLines) +
           " lines per client written at once, relayed with retry-on-backpressure");

  std::atomic<bool> stop{false};
  std::thread writer([&] { rig.write(stop, kLines, 0); });
  const std::uint64_t want = kLines * rig.active.size();
  const auto t0 = Clock::now();
  std::uint64_t last = 0;
  int flat = 0;
  for (int sec = 1; sec <= 20 && rig.book->delivered() < want; ++sec) {
    std::this_thread::sleep_until(t0 + std::chrono::seconds(sec));
    const std::uint64_t d = rig.book->delivered();
    log.note("t=" + std::to_string(sec) + "s delivered " + std::to_string(d) + " of " +
             std::to_string(want) + ", handler retries " + std::to_string(h.retries.load()) +
             ", first attempts " + h.first.str() + ", relayed " + std::to_string(h.relayed.load()));
    flat = d == last ? flat + 1 : 0;
    last = d;
    if (flat >= 5) break;  // nothing moves: report rather than wait for the deadline
  }
  const std::uint64_t delivered = rig.book->delivered();
  log.check(delivered == want, "delivered " + std::to_string(delivered) + " of " +
                                   std::to_string(want) + " (handler retries " +
                                   std::to_string(h.retries.load()) + ", gave up " +
                                   std::to_string(h.gave_up.load()) + ")");
  log.check(h.first.backpressure.load() == 0,
            "handler sends returned backpressure " + std::to_string(h.first.backpressure.load()) +
                " times (engine threads must never see it)");
  log.check(rig.book->missing() == 0 && rig.book->duplicates() == 0,
            "lost " + std::to_string(rig.book->missing()) + ", duplicated/reordered " +
                std::to_string(rig.book->duplicates()) + rig.book->first_problems());
  log.check(h.reg.disconnects.load() == 0, "closes during the run: " + h.reg.reasons_str());
  if (delivered != want) {
    log.note("not complete: stopping the writer and the server anyway (a hang is killed)");
  }
  stop.store(true);
  // The writer may be stuck on full sockets of a wedged server: stop() must still return.
  log.note("stopping");
  const auto ts = Clock::now();
  s.stop();
  const double stop_s = since_s(ts);
  log.note("stop() returned after " + std::to_string(stop_s) + " s");
  log.check(stop_s < 10.0, "stop() took " + std::to_string(stop_s) + " s");
  writer.join();
  rig.fleet.stop();
}

class RetryOnBackpressure : public ::testing::TestWithParam<unsigned> {};

TEST_P(RetryOnBackpressure, DoesNotDeadlockAndDeliversEverything) {
  const unsigned workers = GetParam();
  const ms deadline(25000L * std::min(kScale, 3));
  const ChildOutcome out = run_in_child([&](ChildLog& log) { retry_body(log, workers); }, deadline);
  expect_child_ok(out, workers == 0 ? "inline" : "workers");
}

INSTANTIATE_TEST_SUITE_P(Fanout, RetryOnBackpressure, ::testing::Values(0u, 2u),
                         [](const ::testing::TestParamInfo<unsigned>& i) {
                           return i.param == 0 ? std::string("inline")
                                               : "workers" + std::to_string(i.param);
                         });

}  // namespace

// "Ok means delivered", across a stop while the shards' queues to each other are full: pairs
// of clients on shards 0 and 1 flood each other through the inline (or worker) relay
// handler; stop() is called in the middle of it, with the writers still writing. Every relay
// that returned ok to the handler must reach its client, in order, before that client's
// FIN: per receiver, the lines received are exactly 0, 1, ..., k-1 where k is the number of
// ok relays the handler made to it. Every connection closes with reason shutdown and stop()
// returns promptly. Runs in a forked child with a deadline.
#include <algorithm>

#include "fanout_support.hpp"

using namespace fanout;

namespace {

void stop_body(ChildLog& log, unsigned workers, std::uint64_t window, ms linger) {
  const std::size_t kPairs = scaled(32, 8);
  ServerOptions o = esockets::test::loopback_options(2, workers);
  o.framing = esockets::Framing::line;
  o.shutdown_timeout = 10s;
  if (window == 0) {
    // Open loop: nothing ties a sender's rate to its partner's reading (the relay handler
    // has no cross-connection pause), so a reader slower than the relays (sanitizer builds)
    // lets output queue up; a larger cap keeps that from closing clients as slow consumers.
    o.output_hard_cap = 128u << 20;
  }  // the clients read everything: a flush never needs this long
  o.linger_timeout = linger;
  RelayHandler h(false);
  Server s(h, o);
  h.attach(s);
  s.start();
  PairRig rig;
  if (!rig.setup(s, h.reg, kPairs, log)) return;

  std::atomic<bool> stop_writing{false};
  std::thread writer([&] { rig.write(stop_writing, UINT64_MAX, window); });
  // Flood until the cross-shard queues are busy (or 3 s), then stop the server under load.
  const auto t0 = Clock::now();
  std::uint64_t overflow_seen = 0;
  while (since_s(t0) < 3.0) {
    std::this_thread::sleep_for(20ms);
    overflow_seen = std::max<std::uint64_t>(overflow_seen, s.stats().total.overflow);
    if (since_s(t0) > 1.0 && overflow_seen > 0) break;
  }
  log.note("stopping after " + std::to_string(since_s(t0)) + " s of flooding; overflow seen " +
           std::to_string(overflow_seen) + ", delivered so far " +
           std::to_string(rig.book->delivered()));
  const auto ts = Clock::now();
  s.stop();
  const double stop_s = since_s(ts);
  stop_writing.store(true);
  log.note("stop() returned after " + std::to_string(stop_s) + " s");
  log.check(stop_s < 10.0, "stop() took " + std::to_string(stop_s) + " s");
  // Every client reads until the server's FIN.
  const auto until = Clock::now() + 15s;
  while (rig.fleet.ended() < rig.fleet.size() && Clock::now() < until) {
    std::this_thread::sleep_for(5ms);
  }
  writer.join();
  log.check(rig.fleet.ended() == rig.fleet.size(),
            std::to_string(rig.fleet.size() - rig.fleet.ended()) + " clients never saw the FIN");

  std::size_t short_receivers = 0;
  std::uint64_t ok_total = 0, got_total = 0, lost = 0;
  std::string first;
  for (std::size_t i : rig.active) {
    const ConnectionId id = h.reg.id_of(rig.fleet.local_port(i));
    const std::uint64_t ok = h.ok_to_slot[id.slot()].load();
    const std::uint64_t got = rig.book->expected(i, rig.partner[i]);
    ok_total += ok;
    got_total += got;
    if (got < ok) {
      ++short_receivers;
      lost += ok - got;
      if (first.empty()) {
        first = "client " + std::to_string(i) + " received " + std::to_string(got) + " of " +
                std::to_string(ok) + " ok relays";
      }
    }
  }
  log.note("ok relays " + std::to_string(ok_total) + ", received " + std::to_string(got_total) +
           ", handler first attempts " + h.first.str() + ", closes: " + h.reg.reasons_str() +
           "; clients ended by reset: " + std::to_string(rig.fleet.resets()));
  log.check(short_receivers == 0, std::to_string(short_receivers) +
                                      " receivers lost ok relays at stop (" + std::to_string(lost) +
                                      " lines; " + first + ")");
  if (rig.book->missing() == 0) {
    log.check(got_total <= ok_total, "received more lines than ok relays");
  }
  log.check(rig.book->missing() == 0 && rig.book->duplicates() == 0,
            "gaps " + std::to_string(rig.book->missing()) + ", duplicates/reorders " +
                std::to_string(rig.book->duplicates()) + rig.book->first_problems());
  log.check(h.first.backpressure.load() == 0, "handler sends returned backpressure: " + h.first.str());
  log.check(h.reg.reason(CloseReason::shutdown) == h.reg.connects.load(),
            "close reasons: " + h.reg.reasons_str());
  rig.fleet.stop();
}

struct StopCase {
  const char* name;
  unsigned workers;
  std::uint64_t window;
  ms linger;
};
void PrintTo(const StopCase& c, std::ostream* os) { *os << c.name; }

class StopUnderLoad : public ::testing::TestWithParam<StopCase> {};

TEST_P(StopUnderLoad, EveryOkRelayArrivesBeforeTheFin) {
  const StopCase c = GetParam();
  const ChildOutcome out = run_in_child([&](ChildLog& log) { stop_body(log, c.workers, c.window, c.linger); },
                                        ms(40000L * std::min(kScale, 2)));
  expect_child_ok(out, c.name);
}

INSTANTIATE_TEST_SUITE_P(Fanout, StopUnderLoad,
                         ::testing::Values(StopCase{"inline_open_loop", 0, 0, 2000ms},
                                           StopCase{"inline_windowed", 0, 4096, 2000ms},
                                           StopCase{"workers2_open_loop", 2, 0, 2000ms},
                                           // A short linger: the server gives up on a client
                                           // that keeps sending after the FIN sooner.
                                           StopCase{"inline_open_loop_linger300ms", 0, 0, 300ms}),
                         [](const ::testing::TestParamInfo<StopCase>& i) {
                           return std::string(i.param.name);
                         });

}  // namespace

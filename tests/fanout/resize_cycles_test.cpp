// Live resizing without limit or leak: 300 cycles of set_shards(3), rebalance(), set_shards(2)
// on an idle server with a few clients connected. The API promises that a retired shard
// releases its thread, fds, buffers and command queues and that there is no limit on how many
// shards a server creates over its life. So no cycle may throw, VmRSS after the cycles stays
// within 16 MB of before, the process's open fd count returns to where it was (+-2), and the
// clients still echo. (Release: 300 cycles, more than the 254 shard indices a server has;
// sanitizer builds run fewer and check fds only: their allocators quarantine freed memory.)
// Runs in a forked child: /proc/self is the server's alone, and a hang fails the test.
#include <algorithm>

#include "fanout_support.hpp"

using namespace fanout;

namespace {

class EchoHandler : public esockets::Handler {
 public:
  bool on_client_connect(Connection& c) override {
    reg.on_connect(c);
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override { c.send_frame(m); }
  void on_client_disconnect(Connection&, CloseReason r) override { reg.on_disconnect(r); }
  Registry reg;
};

bool echo_round(Fleet& fleet, std::atomic<std::uint64_t>& echoed, const std::string& tag) {
  const std::uint64_t before = echoed.load();
  for (std::size_t i = 0; i < fleet.size(); ++i) {
    if (!fleet.send(i, tag + "\n", 5s)) return false;
  }
  const auto until = Clock::now() + 10s;
  while (echoed.load() < before + fleet.size() && Clock::now() < until) {
    std::this_thread::sleep_for(1ms);
  }
  return echoed.load() == before + fleet.size();
}

void resize_body(ChildLog& log, std::size_t cycles) {
  ServerOptions o = esockets::test::loopback_options(2, 0);
  o.framing = esockets::Framing::line;
  EchoHandler h;
  Server s(h, o);
  s.start();
  Fleet fleet;
  const std::size_t kClients = 6;
  if (!log.check(fleet.connect(s.port(), kClients), "connect failed")) return;
  std::atomic<std::uint64_t> echoed{0};
  std::atomic<std::uint64_t> wrong{0};
  fleet.start([&](std::size_t, std::string_view line) {
    if (line.rfind("e", 0) == 0) {
      echoed++;
    } else {
      wrong++;
    }
  });
  if (!log.check(echo_round(fleet, echoed, "e-start"), "clients do not echo at the start")) return;

  const std::size_t kWarmup = 2;  // the first cycles create pools and caches that stay
  long rss_before = -1;
  std::size_t fds_before = 0;
  std::size_t done = 0;
  const auto t0 = Clock::now();
  for (std::size_t k = 0; k < cycles; ++k) {
    if (k == kWarmup) {
      rss_before = self_rss_kb();
      fds_before = self_fd_count();
      log.note("after " + std::to_string(kWarmup) + " warm-up cycles: rss " +
               std::to_string(rss_before / 1024) + " MB, fds " + std::to_string(fds_before));
    }
    try {
      s.set_shards(3);
      s.rebalance();
      s.set_shards(2);
    } catch (const std::exception& e) {
      log.fail("cycle " + std::to_string(k) + " threw: " + e.what());
      break;
    }
    ++done;
    if ((k + 1) % 50 == 0) {
      log.note("cycle " + std::to_string(k + 1) + ": rss " + std::to_string(self_rss_kb() / 1024) +
               " MB, fds " + std::to_string(self_fd_count()) + ", " +
               std::to_string(since_s(t0)) + " s");
    }
    if (since_s(t0) > 70.0) {
      log.fail("only " + std::to_string(k + 1) + " cycles in 70 s");
      break;
    }
  }
  const long rss_after = self_rss_kb();
  const std::size_t fds_after = self_fd_count();
  log.note(std::to_string(done) + " cycles in " + std::to_string(since_s(t0)) + " s; rss " +
           std::to_string(rss_before / 1024) + " -> " + std::to_string(rss_after / 1024) +
           " MB, fds " + std::to_string(fds_before) + " -> " + std::to_string(fds_after) +
           ", shards " + std::to_string(s.shards()));
  log.check(done == cycles, "completed " + std::to_string(done) + " of " + std::to_string(cycles) +
                                " cycles");
  if (done > kWarmup) {
    // (Sanitizer allocators quarantine freed memory, a retired shard's 1 MiB inbox included:
    // their RSS grows by itself, so only release builds check it.)
    const long slack_kb = 16L * 1024;
    log.check(kScale > 1 || rss_after - rss_before <= slack_kb,
              "VmRSS grew by " + std::to_string((rss_after - rss_before) / 1024) + " MB over " +
                  std::to_string(done - kWarmup) + " cycles (" +
                  std::to_string((rss_after - rss_before) / static_cast<long>(done - kWarmup)) +
                  " KiB per cycle)");
    const long dfd = static_cast<long>(fds_after) - static_cast<long>(fds_before);
    log.check(dfd >= -2 && dfd <= 2, "open fds " + std::to_string(fds_before) + " -> " +
                                         std::to_string(fds_after) + " over " +
                                         std::to_string(done - kWarmup) + " cycles");
  }
  log.check(s.shards() == 2, "shards() = " + std::to_string(s.shards()));
  log.check(s.client_count() == kClients, "client_count() = " + std::to_string(s.client_count()));
  log.check(h.reg.disconnects.load() == 0, "closes during the cycles: " + h.reg.reasons_str());
  log.check(echo_round(fleet, echoed, "e-end"), "clients do not echo after the cycles");
  log.check(wrong.load() == 0, "unexpected lines");
  fleet.stop();
  s.stop();
}

TEST(ResizeCycles, ThreeHundredCyclesNoThrowNoLeak) {
  // Release: more cycles than a server has shard indices (254); sanitizers: fewer.
  const std::size_t cycles = kScale > 1 ? std::max<std::size_t>(300 / kScale, 30) : 300;
  const ChildOutcome out = run_in_child([&](ChildLog& log) { resize_body(log, cycles); }, 85s);
  expect_child_ok(out, "resize");
}

}  // namespace

// Delivery contract, behaviour 5: concurrent movers. Three shards carry the clients; three empty
// shards are added and rebalance() makes the three loaded shards hand connections over at the
// same time; then set_shards(3) brings them back; repeated. Meanwhile three (or eight) publisher
// threads (not engine threads) each send their own numbered stream to every client with
// send_frame, retrying on backpressure, at full speed or paced. Every record that returned ok
// must arrive exactly once and in order within its stream (DESIGN.md invariant 8; server.hpp Server::send: "ok: applied exactly once,
// after every earlier call from this thread to this connection, whatever happens meanwhile (the
// connection moves to another shard ...)").
#include <gtest/gtest.h>

#include "stream_rig.hpp"

namespace esockets::test::delivery {
namespace {

struct Case {
  unsigned workers;
  // 0 = full speed (limited by backpressure only). Otherwise each publisher pauses this long
  // between rounds, so a shard's inbox stays small when it quiesces: what remains is the
  // movers' own coordination (RouteEpoch) with senders.
  int pace_us;
  int publishers;  // 8: more publisher threads than cores, senders are preempted mid-send
  friend void PrintTo(const Case& c, std::ostream* os) {
    *os << "workers=" << c.workers << " pace_us=" << c.pace_us << " publishers=" << c.publishers;
  }
};

class ConcurrentMovers : public ::testing::TestWithParam<Case> {};

TEST_P(ConcurrentMovers, RecordsFromEveryPublisherKeepOrderWhileThreeShardsMoveAtOnce) {
  const unsigned workers = GetParam().workers;
  const auto between_rounds = std::chrono::microseconds(GetParam().pace_us);
  const Wire w = Wire::lp4;
  StreamHandler h(w, 1024);
  ServerOptions o = loopback_options(3, workers);
  o.framing = framing_of(w);
  Server server(h, o);
  server.start();

  const std::size_t n = scaled(300, 48);
  ClientFleet fleet(server.port(), n, w);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(n); }, 20s));
  std::vector<ConnectionId> ids(n);
  for (std::size_t i = 0; i < n; ++i) {
    ids[i] = h.id_of_port(fleet.port_of(i));
    ASSERT_TRUE(ids[i].valid());
  }
  fleet.start();

  const int kPublishers = GetParam().publishers;
  const char types[] = {'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'};
  std::atomic<bool> stop_pub{false};
  ErrorLog pub_errors;
  std::vector<std::vector<std::uint64_t>> ok(static_cast<std::size_t>(kPublishers), std::vector<std::uint64_t>(n, 0));
  std::vector<PublisherStats> ps(static_cast<std::size_t>(kPublishers));
  std::vector<std::thread> pubs;
  for (int p = 0; p < kPublishers; ++p) {
    pubs.emplace_back([&, p] { ps[static_cast<std::size_t>(p)] = publish(server, w, types[p], ids, ok[static_cast<std::size_t>(p)], stop_pub, pub_errors, between_rounds); });
  }

  const std::size_t rounds = scaled(10, 4);
  ErrorLog resize_errors;
  std::size_t concurrent_rebalances = 0;
  const auto t0 = Clock::now();
  for (std::size_t k = 0; k < rounds; ++k) {
    try {
      server.set_shards(6);
      // Three loaded shards above the mean, three empty ones below: three movers at once.
      const Stats before = server.stats();
      std::size_t hot = 0;
      const double mean = static_cast<double>(before.total.connections) / 6.0;
      for (const auto& s : before.shards) hot += static_cast<double>(s.connections) > mean + 1 ? 1 : 0;
      if (hot >= 3) ++concurrent_rebalances;
      server.rebalance();
      server.set_shards(3);
    } catch (const std::exception& e) {
      resize_errors.add(e.what());
    }
  }
  const double resize_ms = ms_since(t0);
  std::this_thread::sleep_for(200ms);
  stop_pub.store(true);
  for (auto& t : pubs) t.join();

  auto all_in = [&] {
    return fleet.with_lock([&] {
      for (std::size_t i = 0; i < n; ++i) {
        if (fleet.ended(i)) continue;
        for (int p = 0; p < kPublishers; ++p) {
          if (fleet.track(i, types[p]).received < ok[static_cast<std::size_t>(p)][i]) return false;
        }
      }
      return true;
    });
  };
  const bool arrived = wait_until(all_in, 8s);

  std::size_t bad_streams = 0, ended = 0;
  std::uint64_t lost = 0, late = 0;
  std::string examples;
  fleet.with_lock([&] {
    for (std::size_t i = 0; i < n; ++i) {
      if (fleet.ended(i)) ++ended;
      for (int p = 0; p < kPublishers; ++p) {
        const SeqTrack& t = fleet.track(i, types[p]);
        const std::uint64_t want = ok[static_cast<std::size_t>(p)][i];
        if (t.clean() && t.received == want) continue;
        ++bad_streams;
        if (t.received < want) lost += want - t.received;
        late += t.backwards;
        if (examples.size() < 1500) {
          examples += "\n  client " + std::to_string(i) + " stream " + types[p] + ": ok=" + std::to_string(want) +
                      " received=" + std::to_string(t.received) + " skipped=" + std::to_string(t.gaps) +
                      " late/dup=" + std::to_string(t.backwards) + "; first: " + t.first_error;
        }
      }
    }
    return 0;
  });
  std::uint64_t total_ok = 0, total_bp = 0;
  for (const auto& s : ps) {
    total_ok += s.ok;
    total_bp += s.backpressure;
  }
  std::printf("[concurrent_movers %s%s] %zu clients, %zu rounds (%zu with >=3 movers) in %.0f ms, %llu records ok "
              "(%llu backpressure retries), warnings=%llu\n",
              workers == 0 ? "inline" : "workers2", GetParam().pace_us > 0 ? "/paced" : "", n, rounds, concurrent_rebalances, resize_ms,
              static_cast<unsigned long long>(total_ok), static_cast<unsigned long long>(total_bp),
              static_cast<unsigned long long>(server.stats().total.warnings));
  for (const auto& wmsg : h.warnings()) std::printf("  warning: %s\n", wmsg.c_str());
  if (!examples.empty()) std::printf("  examples:%s\n", examples.c_str());

  EXPECT_GE(concurrent_rebalances, 1u) << "no round had three loaded shards: the scenario did not happen";
  EXPECT_EQ(resize_errors.count(), 0u) << resize_errors.summary();
  EXPECT_EQ(pub_errors.count(), 0u) << pub_errors.summary();
  EXPECT_TRUE(arrived) << "not every ok'd record arrived within 8 s";
  EXPECT_EQ(bad_streams, 0u) << lost << " ok'd records lost, " << late << " late/duplicated, on " << bad_streams
                             << " (client, publisher) streams (examples above)";
  EXPECT_EQ(ended, 0u);
  EXPECT_EQ(h.errors.count(), 0u) << h.errors.summary();

  h.stopping.store(true);
  server.stop();
  fleet.stop();
}

INSTANTIATE_TEST_SUITE_P(Delivery, ConcurrentMovers,
                         ::testing::Values(Case{0, 0, 3}, Case{2, 0, 3}, Case{0, 2000, 3}, Case{2, 2000, 3},
                                           Case{0, 12000, 8}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return std::string(i.param.workers == 0 ? "inline" : "workers2") +
                                  (i.param.pace_us > 0 ? "_paced" : "_full_speed") + "_" +
                                  std::to_string(i.param.publishers) + "_publishers";
                         });

}  // namespace
}  // namespace esockets::test::delivery

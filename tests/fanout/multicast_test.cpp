// Server::multicast and Group over 1,000 connections on 2 shards:
//   - one multicast from a foreign thread reaches every recipient once;
//   - back-to-back multicasts (a publisher's burst) all arrive, once each, in order, and none
//     is refused with backpressure (a multicast is one command per shard, not one per
//     recipient, so a burst of 200 is 400 commands against queues of 32,768);
//   - MulticastResult counts stale ids (closed, fd reused by a newcomer, default id) as
//     closed, live ones as ok, and a newcomer that got a stale id's fd receives nothing;
//   - a Group forgets closed members by itself (size(), members(), contains(), send());
//   - multicast and per-connection send interleaved from one thread keep per-connection
//     order, whether that thread is foreign, a shard thread (inline handler) or a worker.
#include <algorithm>

#include "fanout_support.hpp"

using namespace fanout;
using esockets::test::wait_until;

namespace {

class McHandler : public esockets::Handler {
 public:
  void attach(Server& s) { server_ = &s; }
  bool on_client_connect(Connection& c) override {
    reg.on_connect(c);
    return true;
  }
  void on_message_recv(Connection&, Bytes m) override {
    if (m != "GO") return;
    // Interleaves multicast and per-connection sends from this engine thread.
    std::vector<ConnectionId> ids;
    std::size_t rounds = 0;
    {
      std::lock_guard lk(mu);
      ids = go_ids;
      rounds = go_rounds;
    }
    for (std::size_t k = 0; k < rounds; ++k) {
      const std::string line = "i 0 " + std::to_string(k) + "\n";
      if (k % 2 == 0) {
        tally.add(server_->multicast(ids, line));
      } else {
        for (ConnectionId id : ids) tally.add(server_->send(id, line));
      }
    }
    go_done = true;
  }
  void on_client_disconnect(Connection&, CloseReason r) override { reg.on_disconnect(r); }

  Registry reg;
  StatusTally tally;
  std::mutex mu;
  std::vector<ConnectionId> go_ids;
  std::size_t go_rounds = 0;
  std::atomic<bool> go_done{false};

 private:
  Server* server_ = nullptr;
};

// A running server with n clients, every client's id known and lines checked per client.
struct Rig {
  explicit Rig(std::size_t n, unsigned workers = 0, std::size_t senders = 1)
      : server(h, opts(workers)), book(n + 1, senders) {
    h.attach(server);
    server.start();
    ok = fleet.connect(server.port(), n + 1);  // the last one is a control client
    if (!ok) return;
    fleet.start([this](std::size_t i, std::string_view line) {
      std::string_view room;
      std::uint64_t sender = 0, seq = 0;
      if (!parse_delivery(line, room, sender, seq)) {
        book.garbage(i, line);
        return;
      }
      book.see(i, static_cast<std::size_t>(sender), seq);
    });
    ok = wait_until([&] { return h.reg.connects.load() == static_cast<int>(n + 1); }, 30s);
    for (std::size_t i = 0; i < n && ok; ++i) {
      ids.push_back(h.reg.id_of(fleet.local_port(i)));
      ok = ids.back().valid();
    }
    control = h.reg.id_of(fleet.local_port(n));
    const auto st = server.stats();
    both_shards = st.shards.size() == 2 && st.shards[0].connections > n / 10 &&
                  st.shards[1].connections > n / 10;
  }
  static ServerOptions opts(unsigned workers) {
    ServerOptions o = esockets::test::loopback_options(2, workers);
    o.framing = esockets::Framing::line;
    return o;
  }
  ~Rig() {
    fleet.stop();
    server.stop();
  }
  McHandler h;
  Server server;
  Fleet fleet;
  SeqBook book;
  std::vector<ConnectionId> ids;
  ConnectionId control;
  bool ok = false;
  bool both_shards = false;
};

constexpr std::size_t kN = 1000;

TEST(Multicast, OnePayloadReachesEveryRecipientOnce) {
  Rig r(kN);
  ASSERT_TRUE(r.ok);
  ASSERT_TRUE(r.both_shards);
  const MulticastResult res = r.server.multicast(r.ids, "mc 0 0\n");
  EXPECT_EQ(res.ok, kN);
  EXPECT_EQ(res.closed + res.backpressure + res.slow_consumer, 0u);
  EXPECT_TRUE(wait_until([&] { return r.book.delivered() >= kN; }, 10s)) << r.book.delivered();
  std::this_thread::sleep_for(200ms);  // anything extra would show up now
  EXPECT_EQ(r.book.delivered(), kN);
  EXPECT_EQ(r.book.duplicates(), 0u) << r.book.first_problems();
  std::size_t missing = 0;
  for (std::size_t i = 0; i < kN; ++i) missing += r.book.expected(i, 0) == 1 ? 0 : 1;
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(r.book.expected(kN, 0), 0u) << "the control client is not a recipient";
}

TEST(Multicast, BackToBackBurstArrivesOnceInOrderWithoutBackpressure) {
  Rig r(kN);
  ASSERT_TRUE(r.ok);
  ASSERT_TRUE(r.both_shards);
  const std::size_t kRounds = scaled(200, 25);
  StatusTally t;
  for (std::size_t k = 0; k < kRounds; ++k) {
    t.add(r.server.multicast(r.ids, "mc 0 " + std::to_string(k) + " burst-payload\n"));
  }
  const std::uint64_t want = kN * kRounds;
  wait_progress([&] { return r.book.delivered() >= want; }, [&] { return r.book.delivered(); },
                ms(20000L * std::min(kScale, 4)), 5s);
  const auto st = r.server.stats();
  std::printf("[multicast] burst of %zu: %s; delivered %llu of %llu; send_backpressure=%llu\n",
              kRounds, t.str().c_str(), static_cast<unsigned long long>(r.book.delivered()),
              static_cast<unsigned long long>(want),
              static_cast<unsigned long long>(st.total.send_backpressure));
  EXPECT_EQ(t.backpressure.load(), 0u)
      << "a burst of " << kRounds << " multicasts was refused for some recipients: " << t.str();
  EXPECT_EQ(t.ok.load(), want) << t.str();
  EXPECT_EQ(r.book.delivered(), t.ok.load()) << "every ok must arrive";
  EXPECT_EQ(r.book.duplicates(), 0u) << r.book.first_problems();
  if (t.backpressure.load() == 0) {
    EXPECT_EQ(r.book.missing(), 0u) << r.book.first_problems();
  }
}

TEST(Multicast, CountsStaleIdsAndNeverReachesTheirNewOwners) {
  Rig r(kN);
  ASSERT_TRUE(r.ok);
  // Every 10th client leaves; the server closes their sockets and the fds become free.
  std::vector<std::size_t> gone;
  for (std::size_t i = 0; i < kN; i += 10) gone.push_back(i);
  for (std::size_t i : gone) r.fleet.close(i);
  ASSERT_TRUE(wait_until([&] { return r.h.reg.disconnects.load() == static_cast<int>(gone.size()); }, 10s));
  for (std::size_t i : gone) ASSERT_FALSE(r.server.connected(r.ids[i]));
  // Newcomers: the lowest free fds, i.e. the leavers' slots, with new generations.
  Fleet newcomers;
  ASSERT_TRUE(newcomers.connect(r.server.port(), gone.size()));
  std::atomic<std::uint64_t> newcomer_lines{0};
  newcomers.start([&](std::size_t, std::string_view) { newcomer_lines++; });
  ASSERT_TRUE(wait_until([&] {
    return r.h.reg.connects.load() == static_cast<int>(kN + 1 + gone.size());
  }, 10s));
  std::size_t reused = 0;
  for (std::size_t k = 0; k < gone.size(); ++k) {
    const ConnectionId nid = r.h.reg.id_of(newcomers.local_port(k));
    for (std::size_t i : gone) reused += nid.slot() == r.ids[i].slot() ? 1 : 0;
  }
  std::printf("[multicast] %zu newcomers hold a stale id's fd\n", reused);

  std::vector<ConnectionId> targets = r.ids;
  targets.push_back(ConnectionId{});
  const MulticastResult res = r.server.multicast(targets, "mc 0 0\n");
  EXPECT_EQ(res.ok, kN - gone.size());
  EXPECT_EQ(res.closed, gone.size() + 1) << "stale ids and the default id";
  EXPECT_EQ(res.backpressure + res.slow_consumer, 0u);
  EXPECT_TRUE(wait_until([&] { return r.book.delivered() >= kN - gone.size(); }, 10s));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(newcomer_lines.load(), 0u) << "a stale id reached the client that now has its fd";
  EXPECT_EQ(r.book.delivered(), kN - gone.size());
  EXPECT_EQ(r.book.duplicates(), 0u) << r.book.first_problems();
  for (std::size_t i : gone) EXPECT_EQ(r.book.expected(i, 0), 0u) << "client " << i << " had left";
  newcomers.stop();
}

TEST(Multicast, GroupForgetsClosedMembers) {
  Rig r(kN);
  ASSERT_TRUE(r.ok);
  esockets::Group g(r.server);
  for (ConnectionId id : r.ids) ASSERT_TRUE(g.add(id));
  EXPECT_FALSE(g.add(r.ids[0])) << "already a member";
  EXPECT_EQ(g.size(), kN);
  std::vector<std::size_t> gone;
  for (std::size_t i = 3; i < kN; i += 10) gone.push_back(i);
  for (std::size_t i : gone) r.fleet.close(i);
  ASSERT_TRUE(wait_until([&] { return r.h.reg.disconnects.load() == static_cast<int>(gone.size()); }, 10s));
  EXPECT_EQ(g.size(), kN - gone.size()) << "closed members must leave the group by themselves";
  const auto members = g.members();
  EXPECT_EQ(members.size(), kN - gone.size());
  std::size_t stale_members = 0;
  for (ConnectionId id : members) stale_members += r.server.connected(id) ? 0 : 1;
  EXPECT_EQ(stale_members, 0u);
  for (std::size_t i : gone) EXPECT_FALSE(g.contains(r.ids[i])) << "member " << i << " left";
  EXPECT_FALSE(g.add(r.ids[gone[0]])) << "a closed connection cannot join";
  const MulticastResult res = g.send_frame("mc 0 0");
  EXPECT_EQ(res.ok, kN - gone.size());
  EXPECT_EQ(res.closed + res.backpressure + res.slow_consumer, 0u);
  EXPECT_TRUE(wait_until([&] { return r.book.delivered() >= kN - gone.size(); }, 10s));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(r.book.delivered(), kN - gone.size());
  EXPECT_TRUE(g.remove(r.ids[0]));
  EXPECT_FALSE(g.remove(r.ids[0]));
  EXPECT_EQ(g.size(), kN - gone.size() - 1);
}

enum class Caller { foreign, inline_handler, worker_handler };

class Interleaved : public ::testing::TestWithParam<Caller> {};

TEST_P(Interleaved, MulticastAndSendKeepPerConnectionOrder) {
  const Caller caller = GetParam();
  Rig r(kN, caller == Caller::worker_handler ? 2 : 0);
  ASSERT_TRUE(r.ok);
  ASSERT_TRUE(r.both_shards);
  const std::size_t kRounds = scaled(100, 20);  // from a shard thread: > one inbox of sends
  StatusTally t;
  if (caller == Caller::foreign) {
    for (std::size_t k = 0; k < kRounds; ++k) {
      const std::string line = "i 0 " + std::to_string(k) + "\n";
      if (k % 2 == 0) {
        t.add(r.server.multicast(r.ids, line));
      } else {
        for (ConnectionId id : r.ids) {
          SendStatus st = r.server.send(id, line);
          // A well-behaved foreign sender: wait for room and retry.
          for (int tries = 0; st == SendStatus::backpressure && tries < 100; ++tries) {
            r.server.wait_writable(id, 100ms);
            st = r.server.send(id, line);
          }
          t.add(st);
        }
      }
    }
  } else {
    {
      std::lock_guard lk(r.h.mu);
      r.h.go_ids = r.ids;
      r.h.go_rounds = kRounds;
    }
    ASSERT_TRUE(r.fleet.send(kN, "GO\n"));
    ASSERT_TRUE(wait_until([&] { return r.h.go_done.load(); }, 30s));
  }
  const StatusTally& used = caller == Caller::foreign ? t : r.h.tally;
  const std::uint64_t want = kN * kRounds;
  wait_progress([&] { return r.book.delivered() >= want; }, [&] { return r.book.delivered(); },
                ms(20000L * std::min(kScale, 4)), 5s);
  std::printf("[multicast] interleaved: %s; delivered %llu of %llu\n", used.str().c_str(),
              static_cast<unsigned long long>(r.book.delivered()),
              static_cast<unsigned long long>(want));
  EXPECT_EQ(used.backpressure.load(), 0u) << used.str();
  EXPECT_EQ(used.ok.load(), want) << used.str();
  EXPECT_EQ(r.book.delivered(), want);
  EXPECT_EQ(r.book.missing(), 0u) << r.book.first_problems();
  EXPECT_EQ(r.book.duplicates(), 0u) << "out of order or duplicated" << r.book.first_problems();
}

INSTANTIATE_TEST_SUITE_P(Fanout, Interleaved,
                         ::testing::Values(Caller::foreign, Caller::inline_handler,
                                           Caller::worker_handler),
                         [](const ::testing::TestParamInfo<Caller>& i) {
                           return i.param == Caller::foreign          ? std::string("foreign_thread")
                                  : i.param == Caller::inline_handler ? std::string("shard_thread")
                                                                      : std::string("worker_thread");
                         });

}  // namespace

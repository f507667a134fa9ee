// Claim (README, "Tuning the shard count while serving"): `rebalance()` evens out connection
// counts after a skew, by the same hand-over as set_shards: no connection is lost, no extra
// callback, ConnectionIds keep reaching their clients.
//
// The skew: one shard, N clients, then set_shards(3) (new shards start empty: nobody connects
// after it). rebalance() must leave every shard within a small tolerance of N/3 and every
// client must still echo, by its old id too. Fails if rebalance() moves nothing or too little
// (e.g. moves only to one cold shard, or stops at the first batch), moves too much, loses or
// resets a connection, or produces an extra connect/disconnect.
#include <gtest/gtest.h>

#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "test_support.hpp"

namespace esockets::test {
namespace {

// Echoes and remembers each client's id by its "ip:port" (the client's local address).
class IdEcho : public CountingHandler {
 public:
  std::mutex mu;
  std::unordered_map<std::string, ConnectionId> ids;
  bool on_client_connect(Connection& c) override {
    {
      std::lock_guard lk(mu);
      ids[c.getip()] = c.id();
    }
    return CountingHandler::on_client_connect(c);
  }
  ConnectionId id_of(const Client& c) {
    std::lock_guard lk(mu);
    auto it = ids.find(c.local_address());
    return it == ids.end() ? ConnectionId() : it->second;
  }
};

void expect_all_echo(std::vector<Client>& clients, const std::string& tag) {
  for (std::size_t i = 0; i < clients.size(); ++i) {
    const std::string msg = tag + "-" + std::to_string(i) + ";";
    ASSERT_TRUE(clients[i].send_all(msg)) << "client " << i;
    EXPECT_EQ(clients[i].recv_exact(msg.size()), msg) << "client " << i;
  }
}

class RebalanceEvens : public ::testing::TestWithParam<Mode> {};

TEST_P(RebalanceEvens, SkewFromNewEmptyShardsIsEvenedAndEveryClientStillEchoes) {
  IdEcho h;
  Server server(h, loopback_options(1, GetParam().workers));
  server.start();
  const std::size_t n = scaled(120, 30);
  auto clients = connect_many(server.port(), n);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(n); }));
  expect_all_echo(clients, "before");
  std::vector<ConnectionId> ids;
  for (const Client& c : clients) ids.push_back(h.id_of(c));

  server.set_shards(3);
  Stats st = server.stats();
  ASSERT_EQ(st.shards.size(), 3u);
  // The skew this test needs: everything on the first shard.
  ASSERT_EQ(st.shards[0].connections, n);
  ASSERT_EQ(st.shards[1].connections, 0u);
  ASSERT_EQ(st.shards[2].connections, 0u);

  server.rebalance();  // returns when the hand-over is done
  st = server.stats();
  ASSERT_EQ(st.shards.size(), 3u);
  const double mean = static_cast<double>(n) / 3.0;
  const double tolerance = 1.0 + 0.05 * mean;
  std::uint64_t sum = 0;
  for (const ShardStats& s : st.shards) {
    sum += s.connections;
    EXPECT_LE(std::abs(static_cast<double>(s.connections) - mean), tolerance)
        << "shard " << s.shard << " has " << s.connections << " of " << n << " connections";
  }
  EXPECT_EQ(sum, n);
  EXPECT_LE(st.imbalance.connections, 1.0 + tolerance / mean);

  expect_all_echo(clients, "after");
  // Ids taken before the move still reach their clients.
  for (std::size_t i = 0; i < clients.size(); ++i) {
    ASSERT_TRUE(ids[i].valid()) << "no id recorded for client " << i;
    const std::string msg = "by-id-" + std::to_string(i) + ";";
    EXPECT_EQ(server.send(ids[i], msg), SendStatus::ok) << "client " << i;
    EXPECT_EQ(clients[i].recv_exact(msg.size()), msg) << "client " << i;
  }
  EXPECT_EQ(h.connects.load(), static_cast<int>(n)) << "no extra connect callback";
  EXPECT_EQ(h.disconnects.load(), 0) << "no connection ends in a rebalance";

  clients.clear();
  EXPECT_TRUE(wait_until([&] { return h.disconnects.load() == static_cast<int>(n); }));
  server.stop();
  EXPECT_EQ(h.reason(CloseReason::peer_closed), static_cast<int>(n));
}

INSTANTIATE_TEST_SUITE_P(Modes, RebalanceEvens,
                         ::testing::Values(Mode{1, 0}, Mode{1, 2}), mode_name);

}  // namespace
}  // namespace esockets::test

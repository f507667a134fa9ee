// ConnectionTable: generations odd while live, stale ids never found, for_each_live.
#include <gtest/gtest.h>

#include <set>

#include "core/connection_table.hpp"

namespace esockets::detail {
namespace {

Conn* fake(std::uintptr_t n) { return reinterpret_cast<Conn*>(n * 64); }

// The table is server-wide; most checks look at it through one shard's eyes.
class ShardView {
 public:
  ShardView(std::uint32_t shard, std::size_t capacity) : shard_(shard), t_(capacity) {}
  ConnectionId open(std::uint32_t slot, Conn* c) { return t_.open(shard_, slot, c); }
  Conn* find(ConnectionId id) const { return t_.find(id, shard_); }
  Conn* at(std::uint32_t slot) const { return t_.at(slot, shard_); }
  bool live(ConnectionId id) const { return t_.live(id); }
  void retire(std::uint32_t slot) { t_.retire(slot); }
  void clear(std::uint32_t slot) { t_.clear(slot); }
  template <class Fn>
  void for_each_live(Fn&& fn) const {
    t_.for_each_hosted(shard_, fn);
  }
  ConnectionTable& table() { return t_; }

 private:
  std::uint32_t shard_;
  ConnectionTable t_;
};

TEST(ConnectionTable, OpenGivesOddGenerationAndFinds) {
  ShardView t(3, 10000);
  ConnectionId id = t.open(42, fake(1));
  EXPECT_EQ(id.shard(), 3u);
  EXPECT_EQ(id.slot(), 42u);
  EXPECT_EQ(id.generation() % 2, 1u);
  EXPECT_TRUE(id.valid());
  EXPECT_EQ(t.find(id), fake(1));
  EXPECT_EQ(t.at(42), fake(1));
  EXPECT_TRUE(t.live(id));
}

TEST(ConnectionTable, RetireMakesIdStaleButKeepsConn) {
  ShardView t(0, 100);
  ConnectionId id = t.open(7, fake(1));
  t.retire(7);
  EXPECT_FALSE(t.live(id));
  EXPECT_EQ(t.find(id), nullptr);
  EXPECT_EQ(t.at(7), fake(1)) << "a retired (lingering) slot keeps its conn";
  t.retire(7);  // idempotent: must not make the generation odd again
  EXPECT_FALSE(t.live(id));
  t.clear(7);
  EXPECT_EQ(t.at(7), nullptr);
  EXPECT_FALSE(t.live(id));
}

TEST(ConnectionTable, ReuseOfSlotGivesNewGenerationAndOldIdStaysStale) {
  ShardView t(1, 100);
  std::set<std::uint32_t> gens;
  std::vector<ConnectionId> old;
  for (int round = 0; round < 50; ++round) {
    ConnectionId id = t.open(9, fake(round + 1));
    EXPECT_EQ(id.generation() % 2, 1u);
    EXPECT_TRUE(gens.insert(id.generation()).second) << "generation reused in round " << round;
    for (ConnectionId o : old) {
      EXPECT_FALSE(t.live(o));
      EXPECT_EQ(t.find(o), nullptr);
    }
    EXPECT_EQ(t.find(id), fake(round + 1));
    if (round % 2 == 0) {
      t.clear(9);
    } else {
      t.retire(9);
      t.clear(9);
    }
    old.push_back(id);
  }
}

TEST(ConnectionTable, ForeignAndInvalidIdsAreNotFound) {
  ShardView t(2, 100);
  ConnectionId id = t.open(5, fake(1));
  EXPECT_EQ(t.find(ConnectionId(3, 5, id.generation())), nullptr) << "other shard";
  EXPECT_FALSE(t.live(ConnectionId(3, 5, id.generation())));
  EXPECT_EQ(t.find(ConnectionId()), nullptr);
  EXPECT_FALSE(t.live(ConnectionId()));
  EXPECT_EQ(t.find(ConnectionId(2, 5, id.generation() + 2)), nullptr) << "future generation";
  EXPECT_EQ(t.find(ConnectionId(2, 99, 1)), nullptr) << "slot never opened";
  EXPECT_EQ(t.find(ConnectionId(2, 5000, 1)), nullptr) << "slot past capacity";
  EXPECT_FALSE(t.live(ConnectionId(2, 5000, 1)));
  EXPECT_EQ(t.at(5000), nullptr);
}

TEST(ConnectionTable, ForEachLiveVisitsExactlyLiveSlotsAcrossChunks) {
  const std::uint32_t cap = 3 * ConnectionTable::kChunkSize + 17;
  ShardView t(4, cap);
  std::set<ConnectionId> expect;
  for (std::uint32_t s = 0; s < cap; s += 97) {
    ConnectionId id = t.open(s, fake(s + 1));
    if ((s / 97) % 3 == 0) {
      t.retire(s);
    } else if ((s / 97) % 3 == 1) {
      t.clear(s);
    } else {
      expect.insert(id);
    }
  }
  std::set<ConnectionId> seen;
  t.for_each_live([&](ConnectionId id) { EXPECT_TRUE(seen.insert(id).second); });
  EXPECT_EQ(seen, expect);
  // The last slot of the capacity works too.
  ConnectionId last = t.open(cap - 1, fake(1));
  EXPECT_TRUE(t.live(last));
}

TEST(ConnectionTable, HandOverKeepsTheIdAndMovesOwnerThenHost) {
  ConnectionTable t(100);
  ConnectionId id = t.open(1, 7, fake(1));
  EXPECT_EQ(t.owner(7), 1u);
  EXPECT_EQ(t.find(id, 1), fake(1));
  t.set_owner(7, 2);  // commands go to shard 2 from now on
  EXPECT_EQ(t.owner(7), 2u);
  EXPECT_EQ(t.find(id, 1), fake(1)) << "the old host still holds it until it hands it over";
  EXPECT_EQ(t.find(id, 2), nullptr);
  t.set_host(7, ConnectionTable::kInTransit);
  EXPECT_EQ(t.find(id, 1), nullptr);
  EXPECT_EQ(t.find(id, 2), nullptr);
  EXPECT_TRUE(t.live(id)) << "in transit is still live";
  t.set_host(7, 2);
  EXPECT_EQ(t.find(id, 2), fake(1));
  EXPECT_EQ(id.shard(), 1u) << "the id keeps its birth shard";
  std::set<ConnectionId> on2;
  t.for_each_hosted(2, [&](ConnectionId x) { on2.insert(x); });
  EXPECT_EQ(on2, std::set<ConnectionId>{id});
  t.clear(7);
  EXPECT_FALSE(t.live(id));
  EXPECT_EQ(t.owner(7), ConnectionTable::kNoShard);
  // The fd is reused by another shard: the old id stays stale, the new one has its own birth.
  ConnectionId again = t.open(3, 7, fake(2));
  EXPECT_FALSE(t.live(id));
  EXPECT_TRUE(t.live(again));
  EXPECT_NE(again.generation(), id.generation());
  EXPECT_EQ(t.find(ConnectionId(1, 7, again.generation()), 3), nullptr) << "birth must match";
}

}  // namespace
}  // namespace esockets::detail

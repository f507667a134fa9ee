// ConnectionTable: generations odd while live, stale ids never found, for_each_live.
#include <gtest/gtest.h>

#include <set>

#include "connection_table.hpp"

namespace esockets::detail {
namespace {

Conn* fake(std::uintptr_t n) { return reinterpret_cast<Conn*>(n * 64); }

TEST(ConnectionTable, OpenGivesOddGenerationAndFinds) {
  ConnectionTable t(3, 10000);
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
  ConnectionTable t(0, 100);
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
  ConnectionTable t(1, 100);
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
  ConnectionTable t(2, 100);
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
  ConnectionTable t(4, cap);
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

}  // namespace
}  // namespace esockets::detail

// The keyspace alone: redis's SET/INCR/EXPIRE/TTL semantics, the expiry index and sweep, and
// multi-key atomicity under concurrent threads (run under TSan too).
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "keyspace.hpp"
#include "pubsub.hpp"

#ifndef ESOCKETS_TEST_SCALE
#define ESOCKETS_TEST_SCALE 1
#endif

namespace esockets::redis {
namespace {

std::string get(Keyspace& ks, std::string_view k, std::int64_t now) {
  std::string out;
  ks.get(k, now, out);
  return out;
}

TEST(Keyspace, SetGetConditionsAndTtl) {
  Keyspace ks(8);
  const std::int64_t t = 1000;
  EXPECT_EQ(get(ks, "a", t), "$-1\r\n");
  EXPECT_TRUE(ks.set("a", "1", {}, t));
  EXPECT_EQ(get(ks, "a", t), "$1\r\n1\r\n");
  EXPECT_FALSE(ks.set("a", "2", {Keyspace::Cond::nx, 0, false}, t));
  EXPECT_FALSE(ks.set("b", "2", {Keyspace::Cond::xx, 0, false}, t));
  EXPECT_TRUE(ks.set("a", "3", {Keyspace::Cond::xx, t + 500, false}, t));
  EXPECT_EQ(ks.pttl("a", t), 500);
  EXPECT_EQ(ks.pttl("b", t), -2);
  std::int64_t r = 0;
  EXPECT_EQ(ks.incr_by("a", 10, t, r), Keyspace::Incr::ok);
  EXPECT_EQ(r, 13);
  EXPECT_EQ(ks.pttl("a", t), 500) << "INCR keeps the TTL";
  EXPECT_TRUE(ks.set("a", "x", {Keyspace::Cond::none, 0, true}, t));  // KEEPTTL
  EXPECT_EQ(ks.pttl("a", t), 500);
  EXPECT_EQ(ks.incr_by("a", 1, t, r), Keyspace::Incr::not_integer);
  EXPECT_TRUE(ks.set("a", "y", {}, t));
  EXPECT_EQ(ks.pttl("a", t), -1) << "SET without options clears the TTL";
  EXPECT_TRUE(ks.set("m", "9223372036854775807", {}, t));
  EXPECT_EQ(ks.incr_by("m", 1, t, r), Keyspace::Incr::overflow);
  // Alive at its deadline, gone after it (redis: expired when now > when).
  EXPECT_TRUE(ks.expire_at("a", t + 10, Keyspace::ExpireCond::none, t));
  EXPECT_EQ(get(ks, "a", t + 10), "$1\r\ny\r\n");
  EXPECT_EQ(get(ks, "a", t + 11), "$-1\r\n");
  EXPECT_EQ(ks.size(), 1u) << "the read removed the expired key";
  // EXPIRE conditions.
  ks.set("c", "1", {}, t);
  EXPECT_FALSE(ks.expire_at("c", t + 100, Keyspace::ExpireCond::xx, t));
  EXPECT_FALSE(ks.expire_at("c", t + 100, Keyspace::ExpireCond::gt, t));
  EXPECT_TRUE(ks.expire_at("c", t + 100, Keyspace::ExpireCond::lt, t));
  EXPECT_FALSE(ks.expire_at("c", t + 200, Keyspace::ExpireCond::nx, t));
  EXPECT_TRUE(ks.expire_at("c", t + 200, Keyspace::ExpireCond::gt, t));
  EXPECT_FALSE(ks.expire_at("c", t + 150, Keyspace::xx | Keyspace::gt, t)) << "both apply";
  EXPECT_TRUE(ks.expire_at("c", t + 150, Keyspace::xx | Keyspace::lt, t));
  EXPECT_EQ(ks.pttl("c", t), 150);
  EXPECT_TRUE(ks.persist("c", t));
  EXPECT_EQ(ks.pttl("c", t), -1);
  EXPECT_TRUE(ks.expire_at("c", t, Keyspace::ExpireCond::none, t)) << "a past deadline deletes";
  EXPECT_EQ(ks.pttl("c", t), -2);
}

TEST(Keyspace, SweepRemovesOnlyExpiredKeysAndKeepsTheIndexExact) {
  Keyspace ks(16);
  const std::int64_t t = 5000;
  for (int i = 0; i < 1000; ++i) ks.set("p" + std::to_string(i), "v", {}, t);
  for (int i = 0; i < 300; ++i) {
    ks.set("e" + std::to_string(i), "v", {Keyspace::Cond::none, t + 100, false}, t);
  }
  // Re-setting a TTL replaces its index entry instead of adding one.
  for (int i = 0; i < 300; ++i) {
    ks.expire_at("e" + std::to_string(i), t + 50, Keyspace::ExpireCond::none, t);
  }
  EXPECT_EQ(ks.expires(), 300u);
  EXPECT_EQ(ks.sweep(t + 50, 1000), 0u);
  // A bounded budget per stripe: several sweeps may be needed, none removes a live key.
  std::size_t removed = 0;
  for (int round = 0; round < 100 && removed < 300; ++round) removed += ks.sweep(t + 51, 2);
  EXPECT_EQ(removed, 300u);
  EXPECT_EQ(ks.size(), 1000u);
  EXPECT_EQ(ks.expires(), 0u);
}

TEST(Keyspace, MultiKeyCommandsAreAtomicAcrossThreads) {
  for (std::size_t stripes : {std::size_t{1}, std::size_t{64}}) {
    Keyspace ks(stripes);
    const std::vector<std::string> names{"a", "b", "c", "d"};
    std::vector<std::string_view> keys(names.begin(), names.end());
    std::atomic<bool> stop{false};
    std::atomic<int> torn{0};
    const int rounds = 4000 / ESOCKETS_TEST_SCALE;
    std::thread writer([&] {
      for (int i = 0; i < rounds; ++i) {
        const std::string v = std::to_string(i);
        const std::string_view pairs[] = {"a", v, "b", v, "c", v, "d", v};
        ks.mset(pairs, 0);
      }
      stop = true;
    });
    std::thread reader([&] {
      std::string out;
      while (!stop) {
        out.clear();
        ks.mget(keys, 0, out);
        // Four equal values (or four nils before the first MSET).
        std::vector<std::string> values;
        for (std::size_t at = out.find("\r\n") + 2; at < out.size();) {
          const std::size_t e = out.find("\r\n", at);
          const std::string head = out.substr(at, e - at);
          at = e + 2;
          if (head == "$-1") {
            values.push_back("nil");
          } else {
            const std::size_t e2 = out.find("\r\n", at);
            values.push_back(out.substr(at, e2 - at));
            at = e2 + 2;
          }
        }
        if (values.size() != 4 || values[1] != values[0] || values[2] != values[0] ||
            values[3] != values[0]) {
          ++torn;
        }
      }
    });
    std::thread counter([&] {
      std::int64_t r = 0;
      for (int i = 0; i < rounds; ++i) ks.incr_by("n", 1, 0, r);
    });
    writer.join();
    reader.join();
    counter.join();
    EXPECT_EQ(torn.load(), 0) << stripes << " stripes";
    std::int64_t r = 0;
    ks.incr_by("n", 0, 0, r);
    EXPECT_EQ(r, rounds);
    const std::string_view del_keys[] = {"a", "a", "b", "zz"};
    EXPECT_EQ(ks.del(del_keys, 0), 2u);
  }
}

TEST(PubSubRegistry, SubscribeUnsubscribeCounts) {
  PubSub ps(4);
  const ConnectionId a(0, 10, 1), b(1, 11, 1);
  EXPECT_TRUE(ps.subscribe("ch", a));
  EXPECT_FALSE(ps.subscribe("ch", a));
  EXPECT_TRUE(ps.subscribe("ch", b));
  EXPECT_TRUE(ps.subscribe("other", b));
  EXPECT_EQ(ps.channels(), 2u);
  EXPECT_TRUE(ps.unsubscribe("ch", a));
  EXPECT_FALSE(ps.unsubscribe("ch", a));
  EXPECT_TRUE(ps.unsubscribe("ch", b));
  EXPECT_EQ(ps.channels(), 1u);
  std::string m;
  encode_message(m, "ch", "hi");
  EXPECT_EQ(m, "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n");
}

}  // namespace
}  // namespace esockets::redis

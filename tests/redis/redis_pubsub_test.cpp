// PUBLISH/SUBSCRIBE across shards: subscribers on both shards of a 2-shard server (inline
// handlers and 2 workers) get every message of each publisher, in publish order; PUBLISH
// counts them; a disconnected subscriber is forgotten; redis-cli subscribes and publishes.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "redis_test_util.hpp"

namespace esockets::test::redis {
namespace {

struct Mode {
  unsigned workers;
};

class PubSubAcrossShards : public ::testing::TestWithParam<Mode> {};

unsigned shard_of(Client& c) {
  const std::string info = call(c, {"INFO", "esockets"});
  return static_cast<unsigned>(std::stoul(info_field(info, "client_shard")));
}

// Parses one pushed message reply: *3 $7 message $ch $payload; returns the payload.
bool read_message(Client& c, std::string& channel, std::string& payload) {
  std::string raw;
  if (!read_reply(c, raw)) return false;
  const std::string head = "*3\r\n$7\r\nmessage\r\n$";
  if (raw.compare(0, head.size(), head) != 0) return false;
  std::size_t at = head.size();
  std::size_t e = raw.find("\r\n", at);
  const std::size_t clen = std::stoul(raw.substr(at, e - at));
  channel = raw.substr(e + 2, clen);
  at = e + 2 + clen + 2 + 1;  // past "\r\n$"
  e = raw.find("\r\n", at);
  const std::size_t plen = std::stoul(raw.substr(at, e - at));
  payload = raw.substr(e + 2, plen);
  return true;
}

TEST_P(PubSubAcrossShards, EverySubscriberGetsEachPublishersMessagesInOrder) {
  ServerProcess server;
  ASSERT_TRUE(server.start(ServerProcess::Kind::esockets,
                           {"--shards", "2", "--workers", std::to_string(GetParam().workers)}));
  // Connect until both shards hold at least two subscribers (the kernel's reuseport hash
  // places them; 64 tries make a miss vanishingly unlikely).
  std::vector<Client> subs;
  std::vector<Client> spare;
  std::map<unsigned, int> per_shard;
  for (int i = 0; i < 64 && (per_shard[0] < 2 || per_shard[1] < 2); ++i) {
    Client c(server.port());
    const unsigned s = shard_of(c);
    if (per_shard[s] >= 2) {
      spare.push_back(std::move(c));  // kept open: publishers are picked from these
      continue;
    }
    ++per_shard[s];
    subs.push_back(std::move(c));
  }
  ASSERT_EQ(per_shard[0], 2);
  ASSERT_EQ(per_shard[1], 2);
  for (Client& c : subs) {
    ASSERT_EQ(call(c, {"SUBSCRIBE", "news", "other"}),
              "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    std::string second;
    ASSERT_TRUE(read_reply(c, second));
    EXPECT_EQ(second, "*3\r\n$9\r\nsubscribe\r\n$5\r\nother\r\n:2\r\n");
  }
  // Two publishers, one per shard when the spares allow it, pipelining their PUBLISHes.
  std::vector<Client> pubs;
  std::set<unsigned> pub_shards;
  for (Client& c : spare) {
    const unsigned s = shard_of(c);
    if (pub_shards.insert(s).second) pubs.push_back(std::move(c));
  }
  while (pubs.size() < 2) pubs.emplace_back(server.port());
  const int n = static_cast<int>(scaled(2000, 100));
  for (std::size_t p = 0; p < 2; ++p) {
    std::string batch;
    for (int i = 0; i < n; ++i) {
      batch += encode({"PUBLISH", "news", "p" + std::to_string(p) + "-" + std::to_string(i)});
    }
    ASSERT_TRUE(pubs[p].send_all(batch));
  }
  for (std::size_t p = 0; p < 2; ++p) {
    for (int i = 0; i < n; ++i) {
      std::string raw;
      ASSERT_TRUE(read_reply(pubs[p], raw));
      ASSERT_EQ(raw, ":4\r\n") << "publisher " << p << " message " << i;
    }
  }
  for (std::size_t s = 0; s < subs.size(); ++s) {
    int next[2] = {0, 0};
    for (int k = 0; k < 2 * n; ++k) {
      std::string ch, payload;
      ASSERT_TRUE(read_message(subs[s], ch, payload)) << "subscriber " << s << " message " << k;
      ASSERT_EQ(ch, "news");
      const int p = payload[1] - '0';
      ASSERT_EQ(payload, "p" + std::to_string(p) + "-" + std::to_string(next[p]))
          << "subscriber " << s << ": out of order";
      ++next[p];
    }
  }
  // A subscriber that leaves is no longer counted; one that unsubscribes neither.
  subs[0].close();
  ASSERT_EQ(call(subs[1], {"UNSUBSCRIBE", "news"}),
            "*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:1\r\n");
  EXPECT_TRUE(wait_until([&] { return call(pubs[0], {"PUBLISH", "news", "x"}) == ":2\r\n"; },
                         std::chrono::seconds(10)));
  EXPECT_EQ(call(pubs[0], {"PUBLISH", "other", "y"}), ":3\r\n");
  subs.clear();  // clients left open would hold the stop for the engine's linger time
  pubs.clear();
  spare.clear();
  EXPECT_EQ(server.stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, PubSubAcrossShards, ::testing::Values(Mode{0}, Mode{2}),
                         [](const ::testing::TestParamInfo<Mode>& i) {
                           return "workers" + std::to_string(i.param.workers);
                         });

TEST(RedisCliPubSub, SubscriberProcessReceivesWhatAnotherPublishes) {
  ServerProcess server;
  ASSERT_TRUE(server.start(ServerProcess::Kind::esockets, {"--shards", "2"}));
  Child sub;
  ASSERT_TRUE(sub.spawn({"redis-cli", "-h", "127.0.0.1", "-p", std::to_string(server.port()),
                         "SUBSCRIBE", "chan"}));
  ASSERT_TRUE(sub.wait_for_output("chan\n1\n", std::chrono::seconds(10))) << sub.output();
  // redis-cli prints the confirmation once the server sent it: the subscription is in place.
  const CommandResult r = redis_cli(server.port(), {"PUBLISH", "chan", "hello world"});
  EXPECT_EQ(r.output, "1\n");
  EXPECT_TRUE(sub.wait_for_output("message\nchan\nhello world\n", std::chrono::seconds(10)))
      << sub.output();
  sub.stop();
  EXPECT_TRUE(wait_until([&] { return redis_cli(server.port(), {"PUBLISH", "chan", "x"}).output == "0\n"; },
                         std::chrono::seconds(10)));
  EXPECT_EQ(server.stop(), 0);
}

TEST(RedisTakeover, SubscribersKeepTheirChannelsInTheNewProcess) {
  // esockets-redis --takeover-socket, then a second one with --take-over: the subscriber's
  // connection moves with its channels, and the old process exits 0.
  char tmpl[] = "/tmp/esk-redis-takeover-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/ctl";
  Child old_srv;
  ASSERT_TRUE(old_srv.spawn({ESOCKETS_REDIS_BINARY, "--port", "0", "--shards", "2",
                             "--takeover-socket", path}));
  const std::uint16_t port = old_srv.wait_listening();
  ASSERT_NE(port, 0) << old_srv.output();
  Client sub(port);
  EXPECT_EQ(call(sub, {"SUBSCRIBE", "a", "bb"}),
            "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
  std::string raw;
  ASSERT_TRUE(read_reply(sub, raw));  // the second confirmation
  Child new_srv;
  ASSERT_TRUE(new_srv.spawn({ESOCKETS_REDIS_BINARY, "--port", "0", "--workers", "1",
                             "--take-over", path}));
  ASSERT_EQ(new_srv.wait_listening(), port) << new_srv.output();
  EXPECT_NE(new_srv.output().find("took over 1 connections"), std::string::npos)
      << new_srv.output();
  ASSERT_TRUE(wait_until([&] { return !old_srv.alive(); }, std::chrono::seconds(10)))
      << old_srv.output();
  EXPECT_EQ(old_srv.stop(), 0) << old_srv.output();
  Client pub(port);
  EXPECT_EQ(call(pub, {"PUBLISH", "bb", "after"}), ":1\r\n");
  std::string channel, payload;
  ASSERT_TRUE(read_message(sub, channel, payload));
  EXPECT_EQ(channel, "bb");
  EXPECT_EQ(payload, "after");
  EXPECT_EQ(new_srv.stop(), 0);
}

}  // namespace
}  // namespace esockets::test::redis

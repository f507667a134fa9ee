// esockets-redis against a real redis-server 7.0, both started here: the same commands give
// byte-identical replies over a raw socket (errors included), the same redis-cli output, the
// same replies to inline and pipelined requests and in subscribed mode.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "redis_test_util.hpp"

namespace esockets::test::redis {
namespace {

using Args = std::vector<std::string>;

class RedisCompare : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ours_ = new ServerProcess;
    theirs_ = new ServerProcess;
    ASSERT_TRUE(ours_->start(ServerProcess::Kind::esockets, {"--shards", "2"}))
        << ours_->child().output();
    ASSERT_TRUE(theirs_->start(ServerProcess::Kind::redis)) << theirs_->child().output();
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(ours_->stop(), 0) << "esockets-redis did not stop cleanly";
    theirs_->stop();
    delete ours_;
    delete theirs_;
  }
  void SetUp() override {
    if (ours_ == nullptr || theirs_ == nullptr) GTEST_SKIP() << "servers did not start";
    Client a(ours_->port()), b(theirs_->port());
    ASSERT_EQ(call(a, {"FLUSHALL"}), "+OK\r\n");
    ASSERT_EQ(call(b, {"FLUSHALL"}), "+OK\r\n");
  }
  // Sends `cmds` one at a time on one connection to each server; replies must be identical.
  static void expect_same_replies(const std::vector<Args>& cmds) {
    Client a(ours_->port()), b(theirs_->port());
    for (const Args& c : cmds) {
      std::string label;
      for (const auto& s : c) label += "[" + s.substr(0, 40) + "] ";
      const std::string want = call(b, c);
      ASSERT_FALSE(want.empty()) << "redis-server gave no reply to " << label;
      EXPECT_EQ(call(a, c), want) << label;
    }
  }
  static ServerProcess* ours_;
  static ServerProcess* theirs_;
};
ServerProcess* RedisCompare::ours_ = nullptr;
ServerProcess* RedisCompare::theirs_ = nullptr;

const std::string kLong(150, 'L');

std::vector<Args> string_commands() {
  return {
      {"PING"}, {"ping", "hello"}, {"PING", "a", "b"}, {"ECHO", "hi there"}, {"ECHO"},
      {"SET", "k", "v"}, {"GET", "k"}, {"GET", "missing"}, {"GET"}, {"GeT", "a", "b"},
      {"SET", "k"}, {"SET", "k", "v", "EX", "abc"}, {"SET", "k", "v", "EX", "-1"},
      {"SET", "k", "v", "EX", "0"}, {"SET", "k", "v", "PX", "0"}, {"SET", "k", "v", "NX", "XX"},
      {"SET", "k", "v", "PX"}, {"SET", "k", "v", "BOGUS"}, {"SET", "k", "v", "EX", "10", "PX", "10"},
      {"SET", "k", "v", "EX", "9223372036854775807"}, {"SET", "k", "v2", "NX"},
      {"SET", "k", "v2", "XX"}, {"SET", "new", "v", "XX"}, {"GET", "new"},
      {"SET", "k", "v3", "GET"}, {"SET", "k2", "x", "NX", "GET"}, {"SET", "k", "v", "EX", "100"},
      {"TTL", "k"}, {"SET", "k", "v", "PX", "100000"}, {"TTL", "k"},
      {"SET", "k", "w", "KEEPTTL"}, {"TTL", "k"}, {"SET", "k", "v", "KEEPTTL", "EX", "5"},
      {"SET", "k", "v"}, {"TTL", "k"}, {"TTL", "missing"}, {"TTL"}, {"EXPIRE", "k", "50"},
      {"TTL", "k"}, {"EXPIRE", "k", "abc"}, {"EXPIRE", "k"}, {"EXPIRE", "missing", "10"},
      {"EXPIRE", "k", "10", "NX"}, {"EXPIRE", "k", "10", "XX", "GT"}, {"TTL", "k"},
      {"EXPIRE", "k", "10", "NX", "XX"}, {"EXPIRE", "k", "10", "GT", "LT"},
      {"EXPIRE", "k", "10", "FOO"}, {"EXPIRE", "k", "99999999999999999"},
      {"PEXPIRE", "k", "9999999999999999999"}, {"PERSIST", "k"}, {"TTL", "k"},
      {"PERSIST", "k"}, {"EXPIRE", "k", "-5"}, {"EXISTS", "k"}, {"SET", "k", "v"},
      {"DEL", "k", "missing", "k"}, {"DEL"}, {"EXISTS", "k"}, {"EXISTS"},
      {"SET", "n", "10"}, {"INCR", "n"}, {"DECR", "n"}, {"INCRBY", "n", "5"},
      {"INCRBY", "n", "x"}, {"INCRBY", "n"}, {"DECRBY", "n", "3"}, {"INCR", "fresh"},
      {"DECR", "fresh2"}, {"SET", "s", "abc"}, {"INCR", "s"}, {"SET", "s", " 1"}, {"INCR", "s"},
      {"SET", "big", "9223372036854775807"}, {"INCR", "big"}, {"DECRBY", "n", "-9223372036854775808"},
      {"DECRBY", "n", "-9223372036854775807"}, {"INCRBY", "n", "9223372036854775807"},
      {"MSET", "a", "1", "b", "2", "c", "3"}, {"MSET", "a"}, {"MSET", "a", "1", "b"}, {"MSET"},
      {"MGET", "a", "b", "c", "nope"}, {"MGET"}, {"DEL", "a", "b", "c"},
      {"EXISTS", "a", "b", "a"}, {"SET", "a", "1"}, {"EXISTS", "a", "b", "a"}, {"DBSIZE"},
      {"DBSIZE", "x"}, {"SELECT", "0"}, {"SELECT", "99"}, {"SELECT", "abc"}, {"SELECT"},
      {"SELECT", "99999999999"}, {"FLUSHALL", "x"}, {"FLUSHALL", "a", "b"},
      {"FLUSHALL", "ASYNC"}, {"DBSIZE"}, {"FLUSHALL", "sync"},
  };
}

std::vector<Args> server_commands() {
  return {
      {"CONFIG", "GET", "save"}, {"CONFIG", "GET", "appendonly"}, {"config", "get", "SAVE"},
      {"CONFIG", "GET", "no-such-parameter"}, {"CONFIG", "foo"}, {"CONFIG", "Foo", "bar"},
      {"CONFIG"}, {"CONFIG", "GET"}, {"COMMAND", "foo"}, {"COMMAND", "COUNT", "x"},
      {"foo", "a", "b"}, {"FOO"}, {"foo", "a\r\nb", "c"}, {""}, {kLong, kLong, kLong},
      {"nosuch", kLong}, {"nosuch", "a", kLong, "c"}, {"PUBLISH", "ch", "msg"}, {"PUBLISH", "ch"},
      {"SUBSCRIBE"}, {"UNSUBSCRIBE"}, {"UNSUBSCRIBE", "never"}, {"QUIT", "x"},
  };
}

TEST_F(RedisCompare, StringCommandRepliesAreByteIdentical) { expect_same_replies(string_commands()); }

TEST_F(RedisCompare, ServerCommandAndErrorRepliesAreByteIdentical) {
  expect_same_replies(server_commands());
}

TEST_F(RedisCompare, RedisCliPrintsTheSame) {
  const std::vector<Args> cmds = {
      {"PING"}, {"SET", "k", "hello world"}, {"GET", "k"}, {"GET", "nope"},
      {"SET", "t", "v", "EX", "100"}, {"TTL", "t"}, {"TTL", "k"}, {"TTL", "nope"},
      {"EXPIRE", "k", "1000"}, {"TTL", "k"}, {"DEL", "k", "nope"}, {"EXISTS", "k", "t"},
      {"INCR", "n"}, {"DECR", "n"}, {"INCRBY", "n", "41"}, {"MSET", "a", "1", "b", "2"},
      {"MGET", "a", "b", "zz"}, {"DBSIZE"}, {"ECHO", "x y"}, {"SELECT", "0"},
      {"CONFIG", "GET", "save"}, {"CONFIG", "GET", "appendonly"}, {"PUBLISH", "ch", "m"},
      {"get"}, {"frob", "a", "b"}, {"INCR", "a", "b"}, {"SET", "s", "x"}, {"INCR", "s"},
      {"FLUSHALL"}, {"DBSIZE"}, {"QUIT"},
  };
  for (const Args& c : cmds) {
    const CommandResult want = redis_cli(theirs_->port(), c);
    const CommandResult got = redis_cli(ours_->port(), c);
    EXPECT_EQ(got.output, want.output) << c[0];
    EXPECT_EQ(got.code, want.code) << c[0];
  }
}

TEST_F(RedisCompare, InlineCommandsGetTheSameReplies) {
  const std::string input =
      "PING\r\nSET k \"a b\\r\\n\"\r\nGET k\r\nECHO 'x y'\n   \r\nset q 'it\\'s'\r\nGET q\r\n"
      "EXISTS k q\r\nPING\r\n";
  std::string replies[2];
  ServerProcess* servers[2] = {ours_, theirs_};
  for (int i = 0; i < 2; ++i) {
    Client c(servers[i]->port());
    ASSERT_TRUE(c.send_all(input));
    for (int r = 0; r < 8; ++r) ASSERT_TRUE(read_reply(c, replies[i])) << i << " reply " << r;
  }
  EXPECT_EQ(replies[0], replies[1]);
  EXPECT_NE(replies[1].find("$5\r\na b\r\n\r\n"), std::string::npos);
}

TEST_F(RedisCompare, PipelinedRequestsGetTheSameReplies) {
  std::string input;
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    switch (i % 6) {
      case 0: input += encode({"SET", "key" + std::to_string(i % 50), std::to_string(i)}); break;
      case 1: input += encode({"GET", "key" + std::to_string(i % 50)}); break;
      case 2: input += encode({"INCR", "counter"}); break;
      case 3: input += encode({"ECHO", std::string(static_cast<std::size_t>(i % 300), 'e')}); break;
      case 4: input += encode({"nope", std::to_string(i)}); break;
      default: input += "EXISTS key1 key2 counter\r\n"; break;
    }
  }
  std::string replies[2];
  ServerProcess* servers[2] = {ours_, theirs_};
  for (int i = 0; i < 2; ++i) {
    Client c(servers[i]->port());
    ASSERT_TRUE(c.send_all(input));
    for (int r = 0; r < n; ++r) ASSERT_TRUE(read_reply(c, replies[i])) << i << " reply " << r;
  }
  EXPECT_EQ(replies[0].size(), replies[1].size());
  EXPECT_TRUE(replies[0] == replies[1]);
}

TEST_F(RedisCompare, SubscribedModeRepliesAreByteIdentical) {
  expect_same_replies({
      {"SUBSCRIBE", "a", "b", "a"}, {"GET", "k"}, {"SET", "k", "v"}, {"PING"}, {"PING", "x"},
      {"PING", "x", "y"}, {"PUBLISH", "a", "m"}, {"SUBSCRIBE", "c"}, {"UNSUBSCRIBE", "a"},
      {"UNSUBSCRIBE", "a"}, {"UNSUBSCRIBE", "b", "zz"}, {"UNSUBSCRIBE", "c"}, {"GET", "k"},
      {"PING"}, {"UNSUBSCRIBE"},
  });
}

TEST_F(RedisCompare, QuitRepliesOkThenCloses) {
  ServerProcess* servers[2] = {ours_, theirs_};
  std::string seen[2];
  for (int i = 0; i < 2; ++i) {
    Client c(servers[i]->port());
    // Whatever follows QUIT in the same write is not executed.
    ASSERT_TRUE(c.send_all(encode({"PING"}) + encode({"QUIT"}) + encode({"SET", "after", "1"})));
    EXPECT_EQ(c.wait_eof(std::chrono::seconds(10), &seen[i]), EofResult::eof) << i;
    Client d(servers[i]->port());
    EXPECT_EQ(call(d, {"EXISTS", "after"}), ":0\r\n") << i;
  }
  EXPECT_EQ(seen[0], "+PONG\r\n+OK\r\n");
  EXPECT_EQ(seen[0], seen[1]);
}

TEST_F(RedisCompare, CommandAndInfoAnswerWhatClientsAsk) {
  Client c(ours_->port());
  const std::string count = call(c, {"COMMAND", "COUNT"});
  ASSERT_EQ(count[0], ':');
  const long n = std::strtol(count.c_str() + 1, nullptr, 10);
  EXPECT_GE(n, 25);
  EXPECT_EQ(call(c, {"COMMAND", "DOCS"}).substr(0, 1), "*");
  const std::string all = call(c, {"COMMAND"});
  EXPECT_EQ(all.substr(0, all.find('\r')), "*" + std::to_string(n));
  EXPECT_NE(call(c, {"COMMAND", "INFO", "get"}).find("$3\r\nget\r\n:2\r\n"), std::string::npos);
  ASSERT_EQ(call(c, {"SET", "k", "v"}), "+OK\r\n");
  const std::string info = call(c, {"INFO"});
  for (const char* s : {"# Server", "# Clients", "# Stats", "# Keyspace", "# Esockets"}) {
    EXPECT_NE(info.find(s), std::string::npos) << s;
  }
  EXPECT_EQ(info_field(info, "redis_version").substr(0, 2), "7.");
  EXPECT_EQ(info_field(info, "tcp_port"), std::to_string(ours_->port()));
  EXPECT_EQ(info_field(info, "esockets_shards"), "2");
  EXPECT_EQ(info_field(info, "db0"), "keys=1,expires=0,avg_ttl=0");
  const std::string ks = call(c, {"INFO", "keyspace"});
  EXPECT_EQ(ks.find("# Server"), std::string::npos);
  EXPECT_NE(ks.find("# Keyspace"), std::string::npos);
  // redis-cli's INFO output passes through untouched.
  const CommandResult r = redis_cli(ours_->port(), {"INFO", "server"});
  EXPECT_NE(r.output.find("redis_mode:standalone"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace esockets::test::redis

// Bad input costs one connection: malformed RESP gets redis-server's protocol error (compared
// with a real redis-server) and closes only that connection; oversized requests are refused
// from their header; expiry works lazily and by the active sweep; bad flags exit 2.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "redis_test_util.hpp"

namespace esockets::test::redis {
namespace {

TEST(RedisRobustness, MalformedRequestsGetRedisErrorAndCloseOnlyThatConnection) {
  ServerProcess ours, theirs;
  ASSERT_TRUE(ours.start(ServerProcess::Kind::esockets, {"--shards", "2"}));
  ASSERT_TRUE(theirs.start(ServerProcess::Kind::redis));
  Client bystander(ours.port());
  ASSERT_EQ(call(bystander, {"SET", "k", "v"}), "+OK\r\n");
  const std::vector<std::string> inputs = {
      "*abc\r\n",
      "*1\r\n$-5\r\n",
      "*1\r\n$abc\r\n",
      "*1\r\nfoo\r\n",
      "*2\r\n$3\r\nGET\r\n:1\r\n",
      "SET a \"b\r\n",
      "SET a 'b'c\r\n",
      "*1\r\n$4\r\nPING\r\n*x\r\n",               // the PING is answered first
      "PING\r\n*1\r\n$4\r\nECHO\r\n*1\r\n$-1\r\n",  // arity error, then protocol error
  };
  for (const std::string& in : inputs) {
    std::string got[2];
    EofResult end[2];
    ServerProcess* servers[2] = {&ours, &theirs};
    for (int i = 0; i < 2; ++i) {
      Client c(servers[i]->port());
      ASSERT_TRUE(c.send_all(in));
      end[i] = c.wait_eof(std::chrono::seconds(10), &got[i]);
    }
    EXPECT_EQ(end[1], EofResult::eof) << "redis-server kept " << in;
    EXPECT_EQ(end[0], EofResult::eof) << in;
    EXPECT_EQ(got[0], got[1]) << in;
    EXPECT_NE(got[0].find("-ERR Protocol error: "), std::string::npos) << in;
    // The other client never noticed.
    EXPECT_EQ(call(bystander, {"GET", "k"}), "$1\r\nv\r\n");
  }
  // Stricter than redis (which skips the two bytes after a bulk string unchecked).
  Client c(ours.port());
  ASSERT_TRUE(c.send_all("*1\r\n$4\r\nPINGxx"));
  std::string got;
  EXPECT_EQ(c.wait_eof(std::chrono::seconds(10), &got), EofResult::eof);
  EXPECT_EQ(got, "-ERR Protocol error: expected CRLF after bulk data\r\n");
  EXPECT_EQ(call(bystander, {"PING"}), "+PONG\r\n");
  bystander.close();  // a client left open would hold the stop for the engine's linger time
  EXPECT_EQ(ours.stop(), 0);
  theirs.stop();
}

TEST(RedisRobustness, OversizedRequestsAreRefusedFromTheirHeader) {
  ServerProcess ours;
  ASSERT_TRUE(ours.start(ServerProcess::Kind::esockets, {"--max-frame", "65536"}));
  Client bystander(ours.port());
  // A bulk string over --max-frame: refused at its header, before any of its bytes.
  {
    Client c(ours.port());
    ASSERT_TRUE(c.send_all("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n"));
    std::string got;
    EXPECT_EQ(c.wait_eof(std::chrono::seconds(10), &got), EofResult::eof);
    EXPECT_EQ(got, "-ERR Protocol error: invalid bulk length\r\n");
  }
  // A bulk string that fits is stored and read back whole.
  const std::string value(60000, 'x');
  EXPECT_EQ(call(bystander, {"SET", "big", value}), "+OK\r\n");
  EXPECT_EQ(call(bystander, {"GET", "big"}), "$60000\r\n" + value + "\r\n");
  // An inline line over 64 KB without a newline.
  {
    Client c(ours.port());
    ASSERT_TRUE(c.send_all(std::string(70000, 'a')));
    std::string got;
    EXPECT_EQ(c.wait_eof(std::chrono::seconds(10), &got), EofResult::eof);
    EXPECT_EQ(got, "-ERR Protocol error: too big inline request\r\n");
  }
  // Several elements that each fit but together pass --max-frame.
  {
    Client c(ours.port());
    std::string req = "*3\r\n$4\r\nMSET\r\n$40000\r\n" + std::string(40000, 'a') + "\r\n$40000\r\n";
    ASSERT_TRUE(c.send_all(req));
    std::string got;
    EXPECT_EQ(c.wait_eof(std::chrono::seconds(10), &got), EofResult::eof);
    EXPECT_EQ(got, "-ERR Protocol error: request larger than the server's max frame\r\n");
  }
  EXPECT_EQ(call(bystander, {"DBSIZE"}), ":1\r\n");
  bystander.close();
  EXPECT_EQ(ours.stop(), 0);
}

TEST(RedisRobustness, ExpiredKeysVanishOnReadAndByTheActiveSweep) {
  ServerProcess ours;
  ASSERT_TRUE(ours.start(ServerProcess::Kind::esockets, {"--shards", "2", "--workers", "1"}));
  Client c(ours.port());
  ASSERT_EQ(call(c, {"SET", "k", "v", "PX", "100"}), "+OK\r\n");
  ASSERT_EQ(call(c, {"GET", "k"}), "$1\r\nv\r\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(call(c, {"GET", "k"}), "$-1\r\n");
  EXPECT_EQ(call(c, {"TTL", "k"}), ":-2\r\n");
  // Keys nobody reads: the sweep (every 100 ms) removes them; DBSIZE counts them until then.
  const int n = static_cast<int>(scaled(5000, 500));
  std::string batch;
  for (int i = 0; i < n; ++i) {
    batch += encode({"SET", "e" + std::to_string(i), "v", "PX", std::to_string(200 + i % 100)});
  }
  for (int i = 0; i < 10; ++i) batch += encode({"SET", "keep" + std::to_string(i), "v"});
  ASSERT_TRUE(c.send_all(batch));
  for (int i = 0; i < n + 10; ++i) {
    std::string raw;
    ASSERT_TRUE(read_reply(c, raw));
    ASSERT_EQ(raw, "+OK\r\n");
  }
  const std::string size = call(c, {"DBSIZE"});
  EXPECT_EQ(size, ":" + std::to_string(n + 10) + "\r\n") << "too slow: keys expired already";
  EXPECT_TRUE(wait_until([&] { return call(c, {"DBSIZE"}) == ":10\r\n"; },
                         std::chrono::seconds(10)))
      << call(c, {"DBSIZE"});
  EXPECT_EQ(info_field(call(c, {"INFO", "keyspace"}), "db0"), "keys=10,expires=0,avg_ttl=0");
  c.close();
  EXPECT_EQ(ours.stop(), 0);
}

TEST(RedisRobustness, FlagsAreCheckedAndHelpIsPrinted) {
  const std::string bin = ESOCKETS_REDIS_BINARY;
  const CommandResult help = run_command(bin + " --help", 30);
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.output.find("--shards"), std::string::npos);
  for (const char* bad : {" --bogus", " --shards 0", " --port 70000", " --workers x",
                          " --max-frame", " --stripes 0"}) {
    const CommandResult r = run_command(bin + bad, 30);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.output;
    EXPECT_NE(r.output.find("esockets-redis:"), std::string::npos) << bad;
  }
}

TEST(RedisRobustness, StopsGracefullyOnSigterm) {
  ServerProcess ours;
  ASSERT_TRUE(ours.start(ServerProcess::Kind::esockets, {"--shards", "2", "--workers", "2"}));
  std::vector<Client> clients;
  for (int i = 0; i < 20; ++i) {
    clients.emplace_back(ours.port());
    ASSERT_EQ(call(clients.back(), {"SUBSCRIBE", "c" + std::to_string(i % 3)}).substr(0, 4),
              "*3\r\n");
  }
  EXPECT_EQ(ours.stop(), 0);
  for (Client& c : clients) EXPECT_NE(c.wait_eof(std::chrono::seconds(10)), EofResult::timeout);
}

}  // namespace
}  // namespace esockets::test::redis

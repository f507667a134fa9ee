// Server::post: a function handed to the thread that runs a connection's handlers. It runs
// there exactly once, never nested in a callback, after the same thread's earlier sends were
// applied; it keeps working while connections move between shards; a post to a connection
// that ends first is destroyed unrun.
#include <gtest/gtest.h>

#include <thread>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class PostHandler : public CountingHandler {
 public:
  std::mutex mu;
  std::map<std::uint64_t, std::thread::id> thread_of;  // connection -> its handler thread
  std::atomic<int> wrong_thread{0}, nested{0}, ran{0};
  std::atomic<bool> in_callback{false};
  std::vector<ConnectionId> ids;

  bool on_client_connect(Connection& c) override {
    std::lock_guard<std::mutex> lk(mu);
    thread_of[c.id().value()] = std::this_thread::get_id();
    ids.push_back(c.id());
    return CountingHandler::on_client_connect(c);
  }
  void on_message_recv(Connection& c, Bytes m) override {
    in_callback = true;
    if (m == "self") {
      // A post to its own connection from its own handler runs after this call returns.
      c.server().post(c.id(), [this](Connection& cc) {
        if (in_callback.load()) nested++;
        cc.send("posted-self\n");
      });
      c.send("handler\n");
    }
    in_callback = false;
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    std::lock_guard<std::mutex> lk(mu);
    // With workers each connection has one handler thread; inline it follows the shard.
    if (c.server().options().workers > 0) thread_of.erase(c.id().value());
    CountingHandler::on_client_disconnect(c, r);
  }
  void check_thread(Connection& c) {
    if (c.server().options().workers == 0) return;  // inline: the shard may change (moves)
    std::lock_guard<std::mutex> lk(mu);
    auto it = thread_of.find(c.id().value());
    if (it == thread_of.end() || it->second != std::this_thread::get_id()) wrong_thread++;
  }
};

class Post : public ::testing::TestWithParam<Mode> {};

TEST_P(Post, FromAnotherThreadRunsAfterEarlierSendsInOrder) {
  PostHandler h;
  Server server(h, loopback_options(GetParam().shards, GetParam().workers));
  server.start();
  const std::size_t nclients = 8;
  std::vector<Client> clients = connect_many(server.port(), nclients);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(nclients); }));
  std::vector<ConnectionId> ids;
  {
    std::lock_guard<std::mutex> lk(h.mu);
    ids = h.ids;
  }
  const int n = static_cast<int>(scaled(2000, 200));
  std::vector<std::string> expect(nclients);
  std::thread publisher([&] {
    for (int i = 0; i < n; ++i) {
      for (std::size_t k = 0; k < ids.size(); ++k) {
        const std::string s = "s" + std::to_string(i) + "\n";
        while (server.send(ids[k], s) == SendStatus::backpressure) server.wait_writable(ids[k], 100ms);
        SendStatus st;
        while ((st = server.post(ids[k], [&h, i](Connection& c) {
                  h.check_thread(c);
                  h.ran++;
                  c.send("p" + std::to_string(i) + "\n");
                })) == SendStatus::backpressure) {
          server.wait_writable(ids[k], 100ms);
        }
        ASSERT_EQ(st, SendStatus::ok);
      }
    }
  });
  // Each client sees s<i> before p<i>, both series complete and in order.
  for (std::size_t k = 0; k < nclients; ++k) {
    int next_s = 0, next_p = 0;
    std::string line;
    while (next_s < n || next_p < n) {
      ASSERT_TRUE(clients[k].recv_line(line, 20s)) << "client " << k << " s" << next_s << " p" << next_p;
      const int v = std::stoi(line.substr(1));
      if (line[0] == 's') {
        ASSERT_EQ(v, next_s++);
      } else {
        ASSERT_EQ(v, next_p++);
        ASSERT_LT(v, next_s) << "p" << v << " ran before the send made ahead of it";
      }
    }
  }
  publisher.join();
  EXPECT_EQ(h.ran.load(), n * static_cast<int>(nclients));
  EXPECT_EQ(h.wrong_thread.load(), 0);
}

TEST_P(Post, ToItsOwnConnectionFromAHandlerRunsAfterTheHandlerReturns) {
  PostHandler h;
  Server server(h, loopback_options(GetParam().shards, GetParam().workers));
  server.start();
  Client c(server.port());
  ASSERT_TRUE(c.send_all("self"));
  EXPECT_EQ(c.recv_exact(std::string("handler\nposted-self\n").size()), "handler\nposted-self\n");
  EXPECT_EQ(h.nested.load(), 0);
}

TEST_P(Post, ToAGoneConnectionSaysClosedAndAPostThatLosesTheRaceIsDestroyedUnrun) {
  PostHandler h;
  Server server(h, loopback_options(GetParam().shards, GetParam().workers));
  server.start();
  auto token = std::make_shared<int>(0);
  ConnectionId id;
  {
    Client c(server.port());
    ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }));
    std::lock_guard<std::mutex> lk(h.mu);
    id = h.ids.at(0);
  }
  // Posts race the close: each either runs (before on_client_disconnect) or is destroyed.
  std::atomic<int> ran{0};
  int ok = 0;
  for (int i = 0; i < 1000; ++i) {
    if (server.post(id, [token, &ran](Connection&) { ran++; }) == SendStatus::ok) ++ok;
  }
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  ASSERT_TRUE(wait_until([&] { return token.use_count() == 1; }, 5s))
      << "posted functions still alive: " << token.use_count() - 1;
  EXPECT_LE(ran.load(), ok);
  EXPECT_EQ(server.post(id, [](Connection&) {}), SendStatus::closed);
  EXPECT_EQ(server.post(ConnectionId{}, [](Connection&) {}), SendStatus::closed);
}

INSTANTIATE_TEST_SUITE_P(Modes, Post, ::testing::Values(Mode{1, 0}, Mode{2, 0}, Mode{2, 2}),
                         mode_name);

TEST(PostMove, PostsKeepTheirOrderWhileConnectionsMoveBetweenShards) {
  for (unsigned workers : {0u, 2u}) {
    PostHandler h;
    Server server(h, loopback_options(1, workers));
    server.start();
    const std::size_t nclients = scaled(16, 4);
    std::vector<Client> clients = connect_many(server.port(), nclients);
    ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(nclients); }));
    std::vector<ConnectionId> ids;
    {
      std::lock_guard<std::mutex> lk(h.mu);
      ids = h.ids;
    }
    const int n = static_cast<int>(scaled(3000, 300));
    std::atomic<bool> publishing{true};
    std::thread publisher([&] {
      for (int i = 0; i < n; ++i) {
        for (ConnectionId id : ids) {
          while (server.post(id, [i](Connection& c) { c.send(std::to_string(i) + "\n"); }) ==
                 SendStatus::backpressure) {
            server.wait_writable(id, 100ms);
          }
        }
      }
      publishing = false;
    });
    const unsigned plan[] = {3, 1, 4, 2, 1};
    for (int round = 0; round < 4 && publishing.load(); ++round) {
      for (unsigned k : plan) {
        server.set_shards(k);
        server.rebalance();
      }
    }
    for (std::size_t k = 0; k < nclients; ++k) {
      std::string line;
      for (int i = 0; i < n; ++i) {
        ASSERT_TRUE(clients[k].recv_line(line, 20s)) << "workers " << workers << " client " << k << " at " << i;
        ASSERT_EQ(line, std::to_string(i)) << "workers " << workers;
      }
    }
    publisher.join();
  }
}

}  // namespace
}  // namespace esockets::test

// Refusing a client: on_client_connect returns false -> the client sees EOF, exactly one
// disconnect(refused), no message delivered; inline and with workers.
#include <gtest/gtest.h>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class Refuser : public CountingHandler {
 public:
  std::atomic<int> refused_messages{0};
  std::atomic<int> disconnect_refused{0};
  std::atomic<int> seen{0};
  bool on_client_connect(Connection& c) override {
    CountingHandler::on_client_connect(c);
    return seen++ % 2 == 1;  // refuse every other client (first refused)
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    if (r == CloseReason::refused) disconnect_refused++;
    CountingHandler::on_client_disconnect(c, r);
  }
};

class Refuse : public ::testing::TestWithParam<unsigned> {};

TEST_P(Refuse, RefusedClientSeesEofAndOneRefusedDisconnect) {
  Refuser h;
  Server server(h, loopback_options(1, GetParam()));
  server.start();
  // Connect one at a time so "every other" is deterministic.
  std::vector<Client> refused, accepted;
  for (int i = 0; i < 10; ++i) {
    Client c(server.port());
    // Accepted clients and every other refused one send data right away: a refused client's
    // bytes must never reach on_message_recv.
    if (i % 4 != 0) c.send_all("hello-from-" + std::to_string(i));
    ASSERT_TRUE(wait_until([&] { return h.connects.load() == i + 1; }));
    (i % 2 == 0 ? refused : accepted).push_back(std::move(c));
  }
  for (std::size_t k = 0; k < refused.size(); ++k) {
    EofResult r = refused[k].wait_eof(5s);
    if (k % 2 == 0) {
      // Sent nothing: the refusal must be an orderly FIN.
      EXPECT_EQ(r, EofResult::eof) << "silent refused client should get a FIN, got " << to_string(r);
    } else {
      // Sent data the server never read: closing without draining it answers with RST.
      EXPECT_TRUE(r == EofResult::eof || r == EofResult::reset) << to_string(r);
    }
  }
  ASSERT_TRUE(wait_until([&] { return h.disconnect_refused.load() == 5; }));
  for (auto& c : accepted) {
    std::string got;
    EXPECT_EQ(c.poll_once(0ms) == EofResult::eof, false);
  }
  // Accepted clients work (their first bytes were echoed).
  for (std::size_t i = 0; i < accepted.size(); ++i) {
    std::string expect = "hello-from-" + std::to_string(2 * i + 1);
    EXPECT_EQ(accepted[i].recv_exact(expect.size()), expect);
  }
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(h.messages.load(), 5) << "a refused client's bytes reached on_message_recv";
  Stats st = server.stats();
  EXPECT_EQ(st.total.accepts, 10u);
  EXPECT_EQ(st.total.closes_by(CloseReason::refused), 5u);
  EXPECT_EQ(server.client_count(), 5u);
  server.stop();
  EXPECT_EQ(h.disconnect_refused.load(), 5);
  EXPECT_EQ(h.disconnects.load(), 10) << "exactly one disconnect per connect";
  EXPECT_EQ(h.reason(CloseReason::shutdown), 5);
}

// stats.hpp: "refused: closed at once: over max_connections or refused".
TEST_P(Refuse, HandlerRefusalIsCountedInStatsRefused) {
  Refuser h;
  Server server(h, loopback_options(1, GetParam()));
  server.start();
  Client c(server.port());  // the first client is refused
  EXPECT_EQ(c.wait_eof(5s), EofResult::eof);
  ASSERT_TRUE(wait_until([&] { return h.disconnect_refused.load() == 1; }));
  Stats st = server.stats();
  EXPECT_EQ(st.total.closes_by(CloseReason::refused), 1u);
  EXPECT_EQ(st.total.refused, 1u) << "a handler refusal is not counted in stats().refused";
}

TEST_P(Refuse, MaxConnectionsRefusesExtraClients) {
  CountingHandler h;
  ServerOptions o = loopback_options(1, GetParam());
  o.max_connections = 3;
  Server server(h, o);
  server.start();
  auto ok = connect_many(server.port(), 3);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 3; }));
  Client extra(server.port());
  EofResult r = extra.wait_eof(5s);
  EXPECT_TRUE(r == EofResult::eof || r == EofResult::reset) << to_string(r);
  ASSERT_TRUE(wait_until([&] { return server.stats().total.refused == 1; }));
  EXPECT_EQ(h.connects.load(), 3) << "admission refusal happens before on_client_connect";
  EXPECT_EQ(server.client_count(), 3u);
  ok[0].close();
  ASSERT_TRUE(wait_until([&] { return server.client_count() == 2; }));
  Client later(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 4; }));
  ASSERT_TRUE(later.send_all("x"));
  EXPECT_EQ(later.recv_exact(1), "x");
}

INSTANTIATE_TEST_SUITE_P(Workers, Refuse, ::testing::Values(0u, 2u),
                         [](const auto& i) { return "workers" + std::to_string(i.param); });

}  // namespace
}  // namespace esockets::test

// A throwing handler closes only its connection (handler_exception); others keep working and
// stats().warnings counts it; inline and with workers; on_client_connect throwing too.
#include <gtest/gtest.h>

#include <stdexcept>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class Thrower : public CountingHandler {
 public:
  std::atomic<int> throw_on_connect{0};
  std::atomic<int> after_throw_messages{0};
  bool on_client_connect(Connection& c) override {
    CountingHandler::on_client_connect(c);
    if (throw_on_connect.load() > 0) {
      throw_on_connect--;
      throw std::runtime_error("connect boom");
    }
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "boom") throw std::runtime_error("message boom");
    if (m == "boom-int") throw 42;
    CountingHandler::on_message_recv(c, m);
  }
};

class HandlerException : public ::testing::TestWithParam<unsigned> {};

TEST_P(HandlerException, ThrowingMessageClosesOnlyThatConnection) {
  Thrower h;
  h.framed_echo = true;
  ServerOptions o = loopback_options(2, GetParam());
  o.framing = Framing::line;
  Server server(h, o);
  server.start();
  auto clients = connect_many(server.port(), 6);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 6; }));
  ASSERT_TRUE(clients[0].send_all("hi\nboom\nnever\n"));
  ASSERT_TRUE(clients[1].send_all("boom-int\n"));
  std::string echoed;
  EXPECT_EQ(clients[0].wait_eof(5s, &echoed), EofResult::eof);
  EXPECT_EQ(echoed, "hi\n");
  EXPECT_NE(clients[1].wait_eof(5s), EofResult::timeout);
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 2; }));
  EXPECT_EQ(h.reason(CloseReason::handler_exception), 2);
  for (std::size_t i = 2; i < clients.size(); ++i) {
    for (int k = 0; k < 10; ++k) {
      std::string m = "m" + std::to_string(i) + "-" + std::to_string(k);
      ASSERT_TRUE(clients[i].send_line(m));
      std::string line;
      ASSERT_TRUE(clients[i].recv_line(line));
      EXPECT_EQ(line, m);
    }
  }
  Stats st = server.stats();
  EXPECT_GT(st.total.warnings, 0u);
  EXPECT_EQ(st.total.closes_by(CloseReason::handler_exception), 2u);
  EXPECT_EQ(h.messages.load(), 1 + 40);  // "hi" + echoes; "never" not delivered
  server.stop();
  EXPECT_EQ(h.disconnects.load(), 6);
}

TEST_P(HandlerException, ThrowingOnClientConnect) {
  Thrower h;
  h.throw_on_connect = 1;
  Server server(h, loopback_options(1, GetParam()));
  server.start();
  Client bad(server.port());
  bad.send_all("ignored");
  EXPECT_NE(bad.wait_eof(5s), EofResult::timeout);
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  EXPECT_EQ(h.reason(CloseReason::handler_exception), 1);
  EXPECT_EQ(h.messages.load(), 0);
  Client good(server.port());
  ASSERT_TRUE(good.send_all("ok"));
  EXPECT_EQ(good.recv_exact(2), "ok");
  EXPECT_GT(server.stats().total.warnings, 0u);
  server.stop();
  EXPECT_EQ(h.disconnects.load(), 2);
  EXPECT_EQ(h.connects.load(), 2);
}

INSTANTIATE_TEST_SUITE_P(Workers, HandlerException, ::testing::Values(0u, 2u),
                         [](const auto& i) { return "workers" + std::to_string(i.param); });

}  // namespace
}  // namespace esockets::test

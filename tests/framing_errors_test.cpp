// Framing errors: a line longer than max_frame, or a length header claiming more than max_frame,
// closes the connection with framing_error after delivering the frames before it.
#include <gtest/gtest.h>

#include <mutex>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class Collect : public CountingHandler {
 public:
  std::mutex mu;
  std::vector<std::string> got;
  void on_message_recv(Connection& c, Bytes m) override {
    {
      std::lock_guard lk(mu);
      got.emplace_back(m);
    }
    CountingHandler::on_message_recv(c, m);
  }
};

class FramingErrors : public ::testing::TestWithParam<unsigned> {};

TEST_P(FramingErrors, LineLongerThanMaxFrame) {
  Collect h;
  h.framed_echo = true;
  ServerOptions o = loopback_options(1, GetParam());
  o.framing = Framing::line;
  o.max_frame = 100;
  Server server(h, o);
  server.start();
  Client good(server.port()), bad(server.port());
  ASSERT_TRUE(bad.send_all("first\nsecond\n" + std::string(101, 'x') + "\nafter\n"));
  std::string echoed;
  EXPECT_EQ(bad.wait_eof(5s, &echoed), EofResult::eof);
  if (GetParam() == 0) {
    // Inline: the echoes were queued before the error and are flushed before the FIN.
    EXPECT_EQ(echoed, "first\nsecond\n");
  }
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  EXPECT_EQ(h.reason(CloseReason::framing_error), 1);
  {
    std::lock_guard lk(h.mu);
    EXPECT_EQ(h.got, (std::vector<std::string>{"first", "second"}));
  }
  // Exactly max_frame is fine; the other client is unaffected.
  ASSERT_TRUE(good.send_all(std::string(100, 'y') + "\n"));
  EXPECT_EQ(good.recv_exact(101), std::string(100, 'y') + "\n");
  EXPECT_EQ(server.stats().total.closes_by(CloseReason::framing_error), 1u);
}

TEST_P(FramingErrors, LongLineWithoutDelimiterIsRejectedBeforeItEnds) {
  Collect h;
  ServerOptions o = loopback_options(1, GetParam());
  o.framing = Framing::line;
  o.max_frame = 1000;
  Server server(h, o);
  server.start();
  Client bad(server.port());
  // No delimiter ever: the server must not buffer without bound.
  bad.send_all(std::string(5000, 'x'), 2s);
  EXPECT_NE(bad.wait_eof(5s), EofResult::timeout);
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  EXPECT_EQ(h.reason(CloseReason::framing_error), 1);
  EXPECT_EQ(h.messages.load(), 0);
}

TEST_P(FramingErrors, LengthHeaderClaimingMoreThanMaxFrame) {
  for (unsigned prefix : {1u, 2u, 4u}) {
    SCOPED_TRACE("prefix bytes " + std::to_string(prefix));
    Collect h;
    h.framed_echo = true;
    ServerOptions o = loopback_options(1, GetParam());
    o.framing = Framing::length_prefixed;
    o.length_prefix_bytes = prefix;
    o.max_frame = 10;
    Server server(h, o);
    server.start();
    Client c(server.port());
    auto frame = [&](std::size_t len, const std::string& payload) {
      std::string s;
      for (unsigned i = 0; i < prefix; ++i) {
        s.push_back(static_cast<char>((len >> (8 * (prefix - 1 - i))) & 0xff));
      }
      return s + payload;
    };
    std::string good = frame(3, "abc") + frame(10, "0123456789") + frame(0, "");
    ASSERT_TRUE(c.send_all(good + frame(11, "")));  // header alone claims 11 > max_frame
    std::string echoed;
    EXPECT_EQ(c.wait_eof(5s, &echoed), EofResult::eof);
    if (GetParam() == 0) {
      EXPECT_EQ(echoed, good);
    }
    ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
    EXPECT_EQ(h.reason(CloseReason::framing_error), 1);
    std::lock_guard lk(h.mu);
    EXPECT_EQ(h.got, (std::vector<std::string>{"abc", "0123456789", ""}));
  }
}

INSTANTIATE_TEST_SUITE_P(Workers, FramingErrors, ::testing::Values(0u, 2u),
                         [](const auto& i) { return "workers" + std::to_string(i.param); });

}  // namespace
}  // namespace esockets::test

// Framing::custom over sockets: a netstring-style decoder ("<len>:<payload>,") that resumes
// its scan through the progress scratch. Messages split at any byte, pipelined messages and
// messages left half-read while their connection moves to another shard all arrive whole and
// in order; malformed input reaches Handler::on_framing_error, whose reply goes out before the
// close, and costs only that connection.
#include <gtest/gtest.h>

#include <charconv>
#include <random>
#include <string>
#include <thread>

#include "test_support.hpp"

namespace esockets::test {
namespace {

// "<decimal length>:<payload>," — the payload is delivered without the header and the comma.
class NetstringDecoder final : public Decoder {
 public:
  Decoded decode(Bytes in, std::uint64_t& progress) const override {
    // progress: digits already read (low 32 bits) — a header split over reads is not reread.
    std::size_t i = static_cast<std::size_t>(progress);
    while (i < in.size() && in[i] >= '0' && in[i] <= '9') {
      if (i >= 9) return Decoded::malformed("length has too many digits");
      ++i;
    }
    if (i == in.size()) {
      progress = i;
      return Decoded::need_more();
    }
    if (i == 0 || in[i] != ':') return Decoded::malformed("expected digits then ':'");
    std::size_t len = 0;
    std::from_chars(in.data(), in.data() + i, len);
    const std::size_t total = i + 1 + len + 1;
    if (in.size() < total) {
      progress = i;  // the header stays parsed
      return Decoded::need_more(total);
    }
    if (in[total - 1] != ',') return Decoded::malformed("missing ','");
    return Decoded::message(total, i + 1, len);
  }
};

std::string netstring(std::string_view p) { return std::to_string(p.size()) + ":" + std::string(p) + ","; }

class EchoNetstrings : public CountingHandler {
 public:
  std::atomic<int> framing_errors{0};
  std::string last_reason;  // written by one handler thread, read after the close
  std::mutex mu;
  void on_message_recv(Connection& c, Bytes m) override {
    messages++;
    c.send(netstring(m));
  }
  void on_framing_error(Connection& c, std::string_view reason) override {
    {
      std::lock_guard<std::mutex> lk(mu);
      last_reason = std::string(reason);
    }
    framing_errors++;
    c.send("ERR " + std::string(reason) + "\n");
  }
};

ServerOptions netstring_options(unsigned shards, unsigned workers) {
  ServerOptions o = loopback_options(shards, workers);
  o.framing = Framing::custom;
  o.decoder = std::make_shared<NetstringDecoder>();
  o.max_frame = 64 * 1024;
  return o;
}

class CustomFraming : public ::testing::TestWithParam<Mode> {};

TEST_P(CustomFraming, MessagesSplitAnywhereArriveWholeAndInOrder) {
  EchoNetstrings h;
  Server server(h, netstring_options(GetParam().shards, GetParam().workers));
  server.start();
  Client c(server.port());
  std::mt19937 rng(3);
  std::string stream, expect;
  const int n = static_cast<int>(scaled(400, 50));
  for (int i = 0; i < n; ++i) {
    const std::string p = "m" + std::to_string(i) + std::string(rng() % 3000, 'a' + i % 26);
    stream += netstring(p);
  }
  expect = stream;  // the echo re-frames each message the same way
  std::size_t pos = 0;
  while (pos < stream.size()) {
    const std::size_t k = std::min<std::size_t>(stream.size() - pos, 1 + rng() % 700);
    ASSERT_TRUE(c.send_all(std::string_view(stream).substr(pos, k)));
    pos += k;
  }
  std::string got;
  ASSERT_TRUE(c.recv_exact(expect.size(), got, 20s));
  EXPECT_EQ(got, expect);
  EXPECT_EQ(h.messages.load(), n);
}

TEST_P(CustomFraming, MalformedInputGetsTheHandlersReplyThenClosesOnlyThatConnection) {
  EchoNetstrings h;
  Server server(h, netstring_options(GetParam().shards, GetParam().workers));
  server.start();
  Client good(server.port()), bad(server.port());
  ASSERT_TRUE(good.send_all(netstring("before")));
  EXPECT_EQ(good.recv_exact(netstring("before").size()), netstring("before"));
  ASSERT_TRUE(bad.send_all(netstring("ok") + "x:oops,"));
  std::string rest;
  EXPECT_EQ(bad.wait_eof(10s, &rest), EofResult::eof);
  EXPECT_EQ(rest, netstring("ok") + "ERR expected digits then ':'\n");
  ASSERT_TRUE(wait_until([&] { return h.reason(CloseReason::framing_error) == 1; }));
  ASSERT_TRUE(good.send_all(netstring("after")));
  EXPECT_EQ(good.recv_exact(netstring("after").size()), netstring("after"));
  EXPECT_EQ(h.framing_errors.load(), 1);
}

TEST_P(CustomFraming, AClaimOverMaxFrameClosesAtOnceWithoutWaitingForTheBytes) {
  EchoNetstrings h;
  Server server(h, netstring_options(GetParam().shards, GetParam().workers));
  server.start();
  Client c(server.port());
  ASSERT_TRUE(c.send_all("999999:abc"));  // 1 MB announced, 64 KiB allowed
  std::string rest;
  EXPECT_EQ(c.wait_eof(10s, &rest), EofResult::eof);
  EXPECT_EQ(rest, "ERR frame_too_long\n");
}

INSTANTIATE_TEST_SUITE_P(Modes, CustomFraming,
                         ::testing::Values(Mode{1, 0}, Mode{2, 0}, Mode{2, 2}), mode_name);

TEST(CustomFramingMove, AHalfReadMessageCompletesAfterItsConnectionMoves) {
  EchoNetstrings h;
  ServerOptions o = netstring_options(1, 0);
  o.frame_timeout = std::chrono::milliseconds(0);
  Server server(h, o);
  server.start();
  std::vector<Client> clients = connect_many(server.port(), 24);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 24; }));
  const std::string msg = netstring(std::string(5000, 'h'));
  // Each client leaves a different prefix buffered (inside the header, the payload, before ',').
  for (std::size_t i = 0; i < clients.size(); ++i) {
    ASSERT_TRUE(clients[i].send_all(std::string_view(msg).substr(0, 1 + i * 200)));
  }
  std::this_thread::sleep_for(100ms);  // let the shard buffer the prefixes
  server.set_shards(4);
  server.rebalance();
  for (std::size_t i = 0; i < clients.size(); ++i) {
    ASSERT_TRUE(clients[i].send_all(std::string_view(msg).substr(1 + i * 200)));
  }
  server.set_shards(1);
  for (auto& c : clients) EXPECT_EQ(c.recv_exact(msg.size(), 10s), msg);
  EXPECT_EQ(h.framing_errors.load(), 0);
}

TEST(CustomFramingOptions, ADecoderIsRequiredForCustomAndOnlyForIt) {
  CountingHandler h;
  ServerOptions o = loopback_options();
  o.framing = Framing::custom;
  EXPECT_THROW(Server(h, o), std::invalid_argument);
  o.framing = Framing::line;
  o.decoder = std::make_shared<LineDecoder>();
  EXPECT_THROW(Server(h, o), std::invalid_argument);
}

}  // namespace
}  // namespace esockets::test

// Adversarial tests of Framing::custom over sockets: messages split at every byte and in random
// chunks, pipelined; malformed input reaches Handler::on_framing_error with the decoder's
// reason, its reply precedes the FIN and the connection ends with framing_error (also when the
// bad bytes were held back by a pause, inline or by worker flow control); a message partially
// buffered while its connection moves between shards completes after the move; a claim over
// max_frame closes at once. Inline and with 2 workers.
#include <gtest/gtest.h>

#include <cstdlib>

#include "adversarial_support.hpp"

namespace esockets::test::adv {
namespace {

// "#<len>:<payload>". progress = bytes of the header already scanned for ':'.
class HashDecoder final : public Decoder {
 public:
  Decoded decode(Bytes in, std::uint64_t& progress) const override {
    if (in.empty()) return Decoded::need_more();
    if (in[0] != '#') return Decoded::malformed("expected_hash");
    std::size_t from = std::max<std::size_t>(progress, 1);
    if (from > in.size()) return Decoded::malformed("progress_past_input");
    const std::size_t colon = in.find(':', from);
    if (colon == Bytes::npos) {
      progress = in.size();
      return in.size() > 12 ? Decoded::malformed("header_too_long") : Decoded::need_more();
    }
    std::size_t len = 0;
    for (std::size_t i = 1; i < colon; ++i) {
      if (in[i] < '0' || in[i] > '9') return Decoded::malformed("bad_length");
      len = len * 10 + static_cast<std::size_t>(in[i] - '0');
    }
    const std::size_t total = colon + 1 + len;
    if (in.size() < total) return Decoded::need_more(total);
    return Decoded::message(total, colon + 1, len);
  }
};

std::string msg(std::string_view payload) { return "#" + std::to_string(payload.size()) + ":" + std::string(payload); }

class EchoHandler : public Handler {
 public:
  Registry reg;
  std::atomic<long> framing_errors{0}, disconnects{0}, by_framing{0};
  std::mutex mu;
  std::vector<std::string> reasons;
  int sleep_us = 0;
  bool on_client_connect(Connection& c) override {
    c.set_user_data(reg.add(c.id(), c.peer().port));
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    InCallback g(static_cast<Rec*>(c.user_data()));
    if (sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    if (m == "P") {
      // Inline: stop reading now (the rest of the read is held), resume from a timer.
      c.pause_reading();
      c.after(10ms, [](Connection& cc) { cc.resume_reading(); });
    }
    c.send(std::string(m) + "\n");
  }
  void on_framing_error(Connection& c, std::string_view reason) override {
    InCallback g(static_cast<Rec*>(c.user_data()));
    framing_errors++;
    {
      std::lock_guard lk(mu);
      reasons.emplace_back(reason);
    }
    c.send("ERR " + std::string(reason) + "\n");
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    static_cast<Rec*>(c.user_data())->gone = true;
    if (r == CloseReason::framing_error) by_framing++;
    disconnects++;
  }
};

ServerOptions custom_options(unsigned shards, unsigned workers) {
  ServerOptions o = loopback_options(shards, workers);
  o.framing = Framing::custom;
  o.decoder = std::make_shared<HashDecoder>();
  return o;
}

// Reads everything until EOF (or timeout); returns the lines and whether EOF came.
std::vector<std::string> lines_until_eof(Client& c, bool& eof, std::chrono::milliseconds t = 5s) {
  std::string all;
  eof = c.wait_eof(t, &all) == EofResult::eof;
  std::vector<std::string> out;
  std::size_t pos = 0, nl;
  while ((nl = all.find('\n', pos)) != std::string::npos) {
    out.push_back(all.substr(pos, nl - pos));
    pos = nl + 1;
  }
  if (pos < all.size()) out.push_back(all.substr(pos) + "<partial>");
  return out;
}

class AdversarialDecoder : public ::testing::TestWithParam<Mode> {};

TEST_P(AdversarialDecoder, MessagesSplitAtEveryByteAndInRandomChunksArriveInOrder) {
  EchoHandler h;
  Server server(h, custom_options(2, GetParam().workers));
  server.start();
  const std::size_t count = scaled(150, 40);
  std::string stream, expect;
  for (std::size_t k = 0; k < count; ++k) {
    const std::string p = "s" + std::to_string(k) + std::string(k % 37, 'x');
    stream += msg(p);
    expect += p + "\n";
  }
  Client bytewise(server.port()), chunky(server.port()), whole(server.port());
  std::thread a([&] {
    for (char ch : stream) bytewise.send_all(std::string_view(&ch, 1));
  });
  std::thread b([&] {
    std::mt19937 rng(7);
    for (std::size_t pos = 0; pos < stream.size();) {
      const std::size_t n = std::min<std::size_t>(1 + rng() % 60, stream.size() - pos);
      chunky.send_all(std::string_view(stream).substr(pos, n));
      pos += n;
      if (rng() % 4 == 0) std::this_thread::sleep_for(100us);
    }
  });
  ASSERT_TRUE(whole.send_all(stream));  // pipelined in as few reads as the kernel makes
  a.join();
  b.join();
  EXPECT_EQ(bytewise.recv_exact(expect.size()), expect);
  EXPECT_EQ(chunky.recv_exact(expect.size()), expect);
  EXPECT_EQ(whole.recv_exact(expect.size()), expect);
  EXPECT_EQ(h.framing_errors.load(), 0);
  server.stop();
  EXPECT_EQ(h.reg.total(&Rec::overlaps), 0);
}

// Good messages then garbage, in one write: every echo, then the error reply, then FIN; the
// connection ends with framing_error; a neighbour is unaffected.
TEST_P(AdversarialDecoder, MalformedInputGetsReasonReplyBeforeFinAndCostsOneConnection) {
  EchoHandler h;
  Server server(h, custom_options(1, GetParam().workers));
  server.start();
  Client good(server.port()), bad(server.port());
  std::string s;
  for (int k = 0; k < 5; ++k) s += msg("g" + std::to_string(k));
  ASSERT_TRUE(bad.send_all(s + "garbage"));
  bool eof = false;
  const auto lines = lines_until_eof(bad, eof);
  ASSERT_TRUE(eof);
  ASSERT_EQ(lines.size(), 6u);
  for (int k = 0; k < 5; ++k) EXPECT_EQ(lines[k], "g" + std::to_string(k));
  EXPECT_EQ(lines[5], "ERR expected_hash");
  ASSERT_TRUE(wait_until([&] { return h.by_framing.load() == 1; }));
  ASSERT_TRUE(good.send_all(msg("still") + msg("here")));
  EXPECT_EQ(good.recv_exact(11), "still\nhere\n");
  server.stop();
}

// Inline: the handler pauses reading on "P" (the rest of that read is held) and resumes from a
// timer; the held bytes end in garbage. on_framing_error must still run with the reason, its
// reply must precede the FIN, and the reason must be framing_error.
TEST(AdversarialDecoderInline, MalformedInputHeldByAPauseStillReachesOnFramingError) {
  EchoHandler h;
  Server server(h, custom_options(1, 0));
  server.start();
  Client c(server.port());
  ASSERT_TRUE(c.send_all(msg("P") + msg("after") + "garbage"));
  bool eof = false;
  const auto lines = lines_until_eof(c, eof);
  EXPECT_TRUE(eof);
  ASSERT_EQ(lines.size(), 3u) << (lines.empty() ? std::string("(nothing)") : lines.back());
  EXPECT_EQ(lines[0], "P");
  EXPECT_EQ(lines[1], "after");
  EXPECT_EQ(lines[2], "ERR expected_hash");
  EXPECT_EQ(h.framing_errors.load(), 1) << "on_framing_error never ran for input held by a pause";
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  EXPECT_EQ(h.by_framing.load(), 1);
  server.stop();
}

// Workers: a slow worker and a 16-event queue make the shard flow-pause the connection, so the
// tail of a pipelined burst (ending in garbage) is held and framed later. Every message is still
// answered, then the error reply, then FIN (the worker's replies must precede the close).
TEST(AdversarialDecoderWorkers, MalformedTailHeldByWorkerFlowControlKeepsRepliesAndReason) {
  EchoHandler h;
  h.sleep_us = 200;
  ServerOptions o = custom_options(1, 2);
  o.worker_queue_capacity = 16;
  Server server(h, o);
  server.start();
  Client c(server.port());
  const int n = static_cast<int>(scaled(300, 100));
  std::string s;
  for (int k = 0; k < n; ++k) s += msg("m" + std::to_string(k));
  ASSERT_TRUE(c.send_all(s + "garbage"));
  bool eof = false;
  const auto lines = lines_until_eof(c, eof, 20s);
  EXPECT_TRUE(eof);
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(n + 1))
      << "replies lost before the close; last line: " << (lines.empty() ? std::string("(none)") : lines.back());
  for (int k = 0; k < n; ++k) ASSERT_EQ(lines[k], "m" + std::to_string(k));
  EXPECT_EQ(lines[n], "ERR expected_hash");
  EXPECT_EQ(h.framing_errors.load(), 1);
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  EXPECT_EQ(h.by_framing.load(), 1);
  server.stop();
}

// Half a message (its header scanned: decoder progress > 0) is buffered when its connection
// moves to another shard; the rest arrives after the move and the message completes.
TEST_P(AdversarialDecoder, PartialMessageCompletesAfterItsConnectionMoves) {
  EchoHandler h;
  Server server(h, custom_options(1, GetParam().workers));
  server.start();
  const std::size_t n = scaled(24, 6);
  std::vector<Client> cs;
  for (std::size_t i = 0; i < n; ++i) cs.emplace_back(server.port());
  ASSERT_TRUE(wait_until([&] { return h.reg.total(&Rec::busy) == 0; }));
  const unsigned steps[] = {3, 2, 1, 3, 1};
  std::string expect;
  for (unsigned round = 0; round < 5; ++round) {
    const std::string p = "r" + std::to_string(round) + std::string(40, 'a' + round);
    const std::string m = msg(p);
    const std::size_t cut = 2 + round * 7;  // inside the header, or inside the payload
    for (auto& c : cs) ASSERT_TRUE(c.send_all(std::string_view(m).substr(0, cut)));
    std::this_thread::sleep_for(5ms);
    server.set_shards(steps[round]);
    server.rebalance();
    for (auto& c : cs) ASSERT_TRUE(c.send_all(std::string_view(m).substr(cut)));
    expect += p + "\n";
  }
  for (auto& c : cs) EXPECT_EQ(c.recv_exact(expect.size()), expect);
  EXPECT_EQ(h.framing_errors.load(), 0);
  server.stop();
}

// A header claiming more than max_frame: closed at once (no more bytes needed), with the reply
// of on_framing_error("frame_too_long") before the FIN. Same for a whole message over it.
TEST_P(AdversarialDecoder, ClaimsOverMaxFrameCloseAtOnce) {
  EchoHandler h;
  ServerOptions o = custom_options(1, GetParam().workers);
  o.max_frame = 1000;
  Server server(h, o);
  server.start();
  Client claim(server.port()), whole(server.port()), ok(server.port());
  ASSERT_TRUE(claim.send_all(msg("fine") + "#5000:abc"));
  ASSERT_TRUE(whole.send_all(msg(std::string(1500, 'w'))));
  bool eof = false;
  auto lines = lines_until_eof(claim, eof, 3s);
  EXPECT_TRUE(eof) << "a claim over max_frame did not close the connection at once";
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "fine");
  EXPECT_EQ(lines[1], "ERR frame_too_long");
  lines = lines_until_eof(whole, eof, 3s);
  EXPECT_TRUE(eof);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "ERR frame_too_long");
  ASSERT_TRUE(ok.send_all(msg(std::string(990, 'k'))));
  EXPECT_EQ(ok.recv_exact(991).size(), 991u);
  server.stop();
}

INSTANTIATE_TEST_SUITE_P(Modes, AdversarialDecoder, ::testing::ValuesIn(modes()), name_of);

}  // namespace
}  // namespace esockets::test::adv

// The RESP decoder alone: the same messages at every split point, linear work on input that
// arrives a byte at a time, redis's error texts for malformed input, and the size limits.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "resp_decoder.hpp"

namespace esockets::redis {
namespace {

std::string mb(const std::vector<std::string>& args) {
  std::string s = "*" + std::to_string(args.size()) + "\r\n";
  for (const auto& a : args) s += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
  return s;
}

struct Fed {
  std::vector<std::string> messages;  // delivered bytes of each message
  std::string error;                  // malformed reason, if any
  std::size_t calls = 0;
  std::size_t work = 0;
};

// Feeds `stream` in the given chunks the way the engine does: input accumulates, decode runs
// on it, a complete message leaves the input (progress back to 0), need_more(at_least) holds
// further calls until that much arrived (unless `ignore_at_least`, a harsher caller).
Fed feed(const std::string& stream, const std::vector<std::size_t>& chunks,
         const RespLimits& lim = {}, bool ignore_at_least = false) {
  Fed f;
  std::string buf;
  std::uint64_t progress = 0;
  std::size_t wait_for = 0;
  std::size_t at = 0;
  auto drain = [&] {
    while (!buf.empty() && (ignore_at_least || buf.size() >= wait_for)) {
      ++f.calls;
      const Decoded d = resp_decode(buf, progress, lim, &f.work);
      if (d.status == Decoded::Status::malformed) {
        f.error = d.reason;
        return false;
      }
      if (d.status == Decoded::Status::need_more) {
        wait_for = d.at_least;
        EXPECT_GT(d.at_least, buf.size()) << "need_more must ask for more than it has";
        return true;
      }
      EXPECT_GE(d.consumed, 1u);
      EXPECT_LE(d.offset + d.length, d.consumed);
      f.messages.push_back(buf.substr(d.offset, d.length));
      buf.erase(0, d.consumed);
      progress = 0;
      wait_for = 0;
    }
    return true;
  };
  for (std::size_t c : chunks) {
    if (at >= stream.size()) break;
    c = std::min(c, stream.size() - at);
    buf.append(stream, at, c);
    at += c;
    if (!drain()) return f;
  }
  buf.append(stream, at, std::string::npos);
  drain();
  return f;
}

std::string sample_stream() {
  std::string s;
  s += mb({"PING"});
  s += "PING\r\n";
  s += mb({"SET", "key:1", std::string("bin\r\n*3\r\n$\0x", 13)});
  s += "SET k \"a b\\r\\n\" 'c d'\n";
  s += mb({"MSET", "a", "", "b", std::string(300, 'z')});
  s += "*0\r\n";
  s += "\r\n";
  s += mb({"GET", "key:1"});
  s += "*-1\r\n";
  return s;
}

TEST(RespDecoder, SameMessagesAtEverySplitPoint) {
  const std::string s = sample_stream();
  const Fed whole = feed(s, {});
  ASSERT_TRUE(whole.error.empty()) << whole.error;
  ASSERT_EQ(whole.messages.size(), 9u);
  EXPECT_EQ(whole.messages[1], "PING");
  EXPECT_EQ(whole.messages[5], "");  // *0: delivered empty, ignored by the server
  for (std::size_t cut = 1; cut < s.size(); ++cut) {
    const Fed f = feed(s, {cut});
    ASSERT_TRUE(f.error.empty()) << "cut " << cut << ": " << f.error;
    ASSERT_EQ(f.messages, whole.messages) << "cut " << cut;
    for (std::size_t cut2 = cut + 1; cut2 < s.size(); cut2 += 7) {
      const Fed g = feed(s, {cut, cut2 - cut});
      ASSERT_EQ(g.messages, whole.messages) << "cuts " << cut << "," << cut2;
    }
  }
  std::mt19937 rng(12345);
  for (int round = 0; round < 200; ++round) {
    std::vector<std::size_t> chunks;
    for (std::size_t used = 0; used < s.size();) {
      const std::size_t c = 1 + rng() % 40;
      chunks.push_back(c);
      used += c;
    }
    ASSERT_EQ(feed(s, chunks).messages, whole.messages) << "round " << round;
  }
}

TEST(RespDecoder, ParsesArguments) {
  std::vector<std::string_view> argv;
  std::string scratch;
  const std::string bin("x\r\ny\0z", 6);
  const std::string m = mb({"SET", "k", bin});
  ASSERT_TRUE(parse_request(m, argv, scratch));
  ASSERT_EQ(argv.size(), 3u);
  EXPECT_EQ(argv[0], "SET");
  EXPECT_EQ(argv[2], bin);

  ASSERT_TRUE(parse_request(R"(set "a b" 'c\'d' "\x41\n" plain)", argv, scratch));
  ASSERT_EQ(argv.size(), 5u);
  EXPECT_EQ(argv[1], "a b");
  EXPECT_EQ(argv[2], "c'd");
  EXPECT_EQ(argv[3], "A\n");
  EXPECT_EQ(argv[4], "plain");
  EXPECT_FALSE(parse_request("   ", argv, scratch));
  EXPECT_FALSE(parse_request("", argv, scratch));
}

TEST(RespDecoder, LinearOnByteAtATimeInput) {
  // A 1 MB bulk string and a request of 20,000 small arguments, one byte per read, with the
  // engine's at_least honoured and with a caller that calls after every byte regardless.
  const std::string big = mb({"SET", "k", std::string(1 << 20, 'v')});
  std::vector<std::string> many{"MSET"};
  for (int i = 0; i < 20000; ++i) many.push_back(std::to_string(i % 97));
  const std::string small = mb(many);
  const std::string line = std::string("ECHO ") + std::string(60000, 'x') + "\r\n";
  for (const std::string* s : {&big, &small, &line}) {
    const std::vector<std::size_t> ones(s->size(), 1);
    for (bool ignore : {false, true}) {
      const Fed f = feed(*s, ones, {}, ignore);
      ASSERT_TRUE(f.error.empty()) << f.error;
      ASSERT_EQ(f.messages.size(), 1u);
      // Each byte is examined a bounded number of times: a header (at most 22 bytes) may be
      // rescanned once per call while it is incomplete.
      EXPECT_LE(f.work, 3 * s->size() + 24 * f.calls)
          << "size " << s->size() << " ignore_at_least " << ignore;
      EXPECT_LE(f.calls, s->size() + 1);
    }
  }
  // Honouring at_least, the 1 MB bulk costs a handful of calls, not one per byte.
  const Fed f = feed(big, std::vector<std::size_t>(big.size(), 1));
  EXPECT_LT(f.calls, 64u);
  EXPECT_LT(f.work, 256u);
}

std::string reason_of(const std::string& input, const RespLimits& lim = {}) {
  std::uint64_t progress = 0;
  const Decoded d = resp_decode(input, progress, lim);
  if (d.status != Decoded::Status::malformed) {
    return d.status == Decoded::Status::complete ? "<complete>" : "<need_more>";
  }
  return d.reason;
}

TEST(RespDecoder, MalformedInputGetsRedisReasons) {
  EXPECT_EQ(reason_of("*abc\r\n"), "invalid multibulk length");
  EXPECT_EQ(reason_of("*a"), "invalid multibulk length");  // rejected at its first bad byte
  EXPECT_EQ(reason_of("*1\n"), "invalid multibulk length");  // missing \r
  EXPECT_EQ(reason_of("*1\rx"), "invalid multibulk length");  // \r not followed by \n
  EXPECT_EQ(reason_of("*01\r\n"), "invalid multibulk length");
  EXPECT_EQ(reason_of("*9999999999\r\n"), "invalid multibulk length");
  EXPECT_EQ(reason_of("*99999999999999999999999\r\n"), "invalid multibulk length");
  EXPECT_EQ(reason_of("*1\r\n$-5\r\n"), "invalid bulk length");
  EXPECT_EQ(reason_of("*1\r\n$-1\r\n"), "invalid bulk length");
  EXPECT_EQ(reason_of("*1\r\n$x\r\n"), "invalid bulk length");
  EXPECT_EQ(reason_of("*1\r\n$3\nfoo"), "invalid bulk length");
  EXPECT_EQ(reason_of("*1\r\nfoo\r\n"), "expected '$', got 'f'");
  EXPECT_EQ(reason_of("*2\r\n$1\r\na\r\n:1\r\n"), "expected '$', got ':'");
  EXPECT_EQ(reason_of("*1\r\n$3\r\nfooXY"), "expected CRLF after bulk data");
  EXPECT_EQ(reason_of("SET a \"b\r\n"), "unbalanced quotes in request");
  EXPECT_EQ(reason_of("SET a 'b'c\r\n"), "unbalanced quotes in request");
  // Not malformed: "*0" and "*-1" are empty requests; an unfinished header waits.
  EXPECT_EQ(reason_of("*0\r\n"), "<complete>");
  EXPECT_EQ(reason_of("*-1\r\n"), "<complete>");
  EXPECT_EQ(reason_of("*12"), "<need_more>");
  EXPECT_EQ(reason_of("*1\r\n$12"), "<need_more>");
}

TEST(RespDecoder, SizeLimits) {
  RespLimits lim;
  lim.max_request = 4096;
  lim.max_inline = 1000;
  // The largest bulk that fits in one request of max_request bytes.
  const std::string head = "*1\r\n$4080\r\n";
  const std::string fits = head + std::string(4080, 'a') + "\r\n";
  ASSERT_LE(fits.size(), lim.max_request);
  EXPECT_EQ(reason_of(fits, lim), "<complete>");
  // A bulk claimed over the limit is refused from its header alone, before its bytes arrive.
  EXPECT_EQ(reason_of("*1\r\n$4097\r\n", lim), "invalid bulk length");
  EXPECT_EQ(reason_of("*2\r\n$4000\r\n" + std::string(4000, 'a') + "\r\n$100\r\n", lim),
            "request larger than the server's max frame");
  EXPECT_EQ(reason_of("*1000\r\n", lim), "invalid multibulk length");  // 1000 x 6 > 4096
  EXPECT_EQ(reason_of(std::string(1001, 'x'), lim), "too big inline request");
  EXPECT_EQ(reason_of(std::string(1000, 'x'), lim), "<need_more>");
  EXPECT_EQ(reason_of(std::string(999, 'x') + "\n", lim), "<complete>");
}

TEST(RespDecoder, ParseInt64FollowsString2ll) {
  std::int64_t v = 0;
  EXPECT_TRUE(parse_int64("0", v));
  EXPECT_TRUE(parse_int64("-9223372036854775808", v));
  EXPECT_EQ(v, INT64_MIN);
  EXPECT_TRUE(parse_int64("9223372036854775807", v));
  EXPECT_EQ(v, INT64_MAX);
  for (const char* bad : {"", "-", "-0", "01", "+1", "9223372036854775808", "1 ", " 1", "1a"}) {
    EXPECT_FALSE(parse_int64(bad, v)) << bad;
  }
}

}  // namespace
}  // namespace esockets::redis

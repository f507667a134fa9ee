// RequestDecoder and parse_head, without a server: the same requests whatever the split,
// linear work byte-at-a-time, limits refused as soon as they are known, chunked bodies.
// Compiled with ESOCKETS_HTTP_COUNT_WORK: http::g_work counts the bytes the decoder examines.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "http_decoder.hpp"
#include "http_request.hpp"

namespace esockets::http {
namespace {

// What a stream decodes to: the messages in order, then the error (if any).
struct Outcome {
  std::vector<std::string> messages;
  std::string error;
  std::size_t calls = 0;
  bool operator==(const Outcome& o) const { return messages == o.messages && error == o.error; }
};

// Feeds `pieces` as the engine does: buffered input from the current message start, a call
// only when new bytes arrived and at least `at_least` are there, progress reset per message.
Outcome run(const RequestDecoder& dec, const std::vector<std::string>& pieces) {
  Outcome out;
  std::string buf;
  std::uint64_t progress = 0;
  std::size_t need = 0;
  for (const std::string& piece : pieces) {
    buf += piece;
    while (!buf.empty() && buf.size() >= need) {
      ++out.calls;
      const Decoded d = dec.decode(buf, progress);
      if (d.status == Decoded::Status::malformed) {
        out.error = d.reason;
        return out;
      }
      if (d.status == Decoded::Status::need_more) {
        need = d.at_least > buf.size() ? d.at_least : buf.size() + 1;
        if (d.at_least > dec.max_message_bytes()) {
          out.error = "frame_too_long";
          return out;
        }
        break;
      }
      EXPECT_GE(d.consumed, 1u);
      EXPECT_LE(d.offset + d.length, d.consumed);
      out.messages.push_back(buf.substr(d.offset, d.length));
      buf.erase(0, d.consumed);
      progress = 0;
      need = 0;
    }
  }
  return out;
}

std::vector<std::string> whole(const std::string& s) { return {s}; }
std::vector<std::string> bytes(const std::string& s) {
  std::vector<std::string> v;
  for (char c : s) v.emplace_back(1, c);
  return v;
}

const std::string kGet = "GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n";
const std::string kPost = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
const std::string kChunked =
    "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5\r\nhello\r\n1;ext=\"v\"\r\n \r\nA  ; e\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
const std::string kChunkedNoTrailer =
    "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
const std::string kLf = "GET /json HTTP/1.0\nConnection: keep-alive\n\n";
const std::string kLeadingBlank = "\r\n\r\nHEAD /plaintext HTTP/1.1\r\nHost: a\r\n\r\n";

std::string pipelined() { return kGet + kPost + kChunked + kLf + kChunkedNoTrailer + kLeadingBlank + kGet; }

TEST(HttpDecoder, PipelinedStreamWholeGivesEachRequest) {
  RequestDecoder dec(Limits{});
  const Outcome o = run(dec, whole(pipelined()));
  EXPECT_EQ(o.error, "");
  const std::vector<std::string> want{kGet, kPost, kChunked, kLf, kChunkedNoTrailer, kLeadingBlank, kGet};
  EXPECT_EQ(o.messages, want);
}

TEST(HttpDecoder, EverySplitPointGivesTheSameRequests) {
  RequestDecoder dec(Limits{});
  const std::string s = pipelined();
  const Outcome ref = run(dec, whole(s));
  ASSERT_EQ(ref.messages.size(), 7u);
  for (std::size_t i = 1; i < s.size(); ++i) {
    EXPECT_EQ(run(dec, {s.substr(0, i), s.substr(i)}), ref) << "split at " << i;
  }
  for (std::size_t i = 1; i + 1 < s.size(); i += 7) {
    for (std::size_t j = i + 1; j < s.size(); j += 5) {
      EXPECT_EQ(run(dec, {s.substr(0, i), s.substr(i, j - i), s.substr(j)}), ref)
          << "splits at " << i << ", " << j;
    }
  }
  EXPECT_EQ(run(dec, bytes(s)), ref);
}

TEST(HttpDecoder, RandomSplitsOfErrorsGiveTheSameError) {
  RequestDecoder dec(Limits{});
  const std::string bad = kGet + "GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n" + kGet;
  const Outcome ref = run(dec, whole(bad));
  EXPECT_EQ(ref.messages.size(), 1u);
  EXPECT_EQ(ref.error.substr(0, 3), "400");
  std::mt19937 rng(7);
  for (int k = 0; k < 300; ++k) {
    std::vector<std::string> pieces;
    std::size_t at = 0;
    while (at < bad.size()) {
      const std::size_t n = 1 + rng() % 9;
      pieces.push_back(bad.substr(at, n));
      at += n;
    }
    EXPECT_EQ(run(dec, pieces), ref);
  }
}

TEST(HttpDecoder, ByteAtATimeHeadIsLinear) {
  Limits limits;
  limits.max_header_bytes = 64 * 1024;
  limits.max_headers = 10000;
  RequestDecoder dec(limits);
  std::string head = "GET /plaintext HTTP/1.1\r\nHost: a\r\n";
  while (head.size() < 60000) head += "X-Header-" + std::to_string(head.size()) + ": some value here\r\n";
  head += "\r\n";
  g_work = 0;
  const Outcome whole_run = run(dec, whole(head));
  const std::uint64_t whole_work = g_work;
  ASSERT_EQ(whole_run.messages.size(), 1u);
  g_work = 0;
  const Outcome byte_run = run(dec, bytes(head));
  ASSERT_EQ(byte_run, whole_run);
  EXPECT_EQ(byte_run.calls, head.size());
  // Whole: the search and one parse (about 2 bytes examined per byte). Byte at a time: each
  // call looks at the new byte and at most the unresolved line break before it.
  const std::uint64_t byte_work = g_work;
  EXPECT_LE(whole_work, 3 * head.size());
  EXPECT_LE(byte_work, 6 * head.size()) << "byte-at-a-time work is not linear";
}

TEST(HttpDecoder, ByteAtATimeChunkedBodyIsLinear) {
  Limits limits;
  limits.max_body = 1 << 20;
  RequestDecoder dec(limits);
  std::string req = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string body;
  for (int i = 0; body.size() < 100000; ++i) {
    const std::string chunk(static_cast<std::size_t>(1 + i % 300), static_cast<char>('a' + i % 26));
    char size[16];
    std::snprintf(size, sizeof size, "%zx", chunk.size());
    req += std::string(size) + "\r\n" + chunk + "\r\n";
    body += chunk;
  }
  req += "0\r\nA: b\r\nC: d\r\n\r\n";
  g_work = 0;
  const Outcome o = run(dec, bytes(req));
  ASSERT_EQ(o.error, "");
  ASSERT_EQ(o.messages.size(), 1u);
  const std::uint64_t work = g_work;
  EXPECT_LE(work, 8 * req.size()) << "byte-at-a-time chunked work is not linear";
  // The engine is not called for every byte of chunk data: need_more names the CRLF after it.
  EXPECT_LT(o.calls, req.size() / 2);
  std::string decoded;
  ASSERT_TRUE(dechunk(o.messages[0].substr(o.messages[0].find("\r\n\r\n") + 4), decoded));
  EXPECT_EQ(decoded, body);
}

TEST(HttpDecoder, ContentLengthBodyIsNotRescanned) {
  RequestDecoder dec(Limits{});
  const std::string req = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 500000\r\n\r\n" +
                          std::string(500000, 'x');
  g_work = 0;
  const Outcome o = run(dec, bytes(req));
  ASSERT_EQ(o.messages.size(), 1u);
  const std::uint64_t work = g_work;
  EXPECT_LE(work, 1000u) << "the body of a Content-Length request is never examined";
  EXPECT_LT(o.calls, 100u) << "need_more(head + length): no call per body byte";
}

struct BadCase {
  const char* name;
  std::string input;
  const char* status;
};

TEST(HttpDecoder, MalformedInputIsRefusedWithItsStatus) {
  const std::vector<BadCase> cases = {
      {"no version", "GET /\r\n\r\n", "400"},
      {"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"ctl in target", "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", "400"},
      {"http2", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", "505"},
      {"no host", "GET / HTTP/1.1\r\n\r\n", "400"},
      {"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"},
      {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", "400"},
      {"no colon", "GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", "400"},
      {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", "400"},
      {"ctl in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", "400"},
      {"bad length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", "400"},
      {"negative length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "400"},
      {"two lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "400"},
      {"length and chunked",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "400"},
      {"te in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "400"},
      {"gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "501"},
      {"chunked, gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "400"},
      {"huge length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", "413"},
      {"bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"},
      {"chunk without CRLF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", "400"},
      {"chunk line LF only", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n", "400"},
      {"many blank lines", std::string(100, '\n') + "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
  };
  RequestDecoder dec(Limits{});
  for (const BadCase& c : cases) {
    const Outcome o = run(dec, whole(c.input));
    EXPECT_TRUE(o.messages.empty()) << c.name;
    EXPECT_EQ(o.error.substr(0, 3), c.status) << c.name << ": " << o.error;
    EXPECT_EQ(run(dec, bytes(c.input)), o) << c.name << " byte at a time";
  }
}

TEST(HttpDecoder, OversizedHeadIsRefusedBeforeItEnds) {
  Limits limits;
  limits.max_header_bytes = 1024;
  RequestDecoder dec(limits);
  // 431 as soon as max_header_bytes arrived without the blank line, not at the end.
  std::string head = "GET / HTTP/1.1\r\nHost: a\r\n";
  while (head.size() < 1024) head += "X-Filler: 0123456789\r\n";
  Outcome o = run(dec, bytes(head));
  EXPECT_EQ(o.error.substr(0, 3), "431") << o.error;
  o = run(dec, whole(head.substr(0, 1023)));
  EXPECT_EQ(o.error, "") << "1023 bytes may still be a head";
  // The limit counts the whole head: exactly max_header_bytes is fine.
  std::string exact = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
  exact += std::string(1024 - exact.size() - 4, 'v') + "\r\n\r\n";
  ASSERT_EQ(exact.size(), 1024u);
  o = run(dec, whole(exact));
  EXPECT_EQ(o.messages.size(), 1u) << o.error;
  // No line break at all: the request line is too long.
  o = run(dec, whole("GET /" + std::string(2000, 'a')));
  EXPECT_EQ(o.error.substr(0, 3), "414") << o.error;
  // Too many fields.
  limits.max_header_bytes = 8192;
  limits.max_headers = 5;
  RequestDecoder few(limits);
  o = run(few, whole("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n"));
  EXPECT_EQ(o.error.substr(0, 3), "431") << o.error;
}

TEST(HttpDecoder, OversizedBodyIsRefusedBeforeItArrives) {
  Limits limits;
  limits.max_body = 1000;
  RequestDecoder dec(limits);
  Outcome o = run(dec, whole("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n"));
  EXPECT_EQ(o.error.substr(0, 3), "413") << o.error;
  o = run(dec, whole("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n"));
  EXPECT_EQ(o.error, "");
  EXPECT_TRUE(o.messages.empty()) << "waits for the 1000 bytes";
  // Chunked: refused at the size line that takes the total over the limit.
  o = run(dec, whole("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "1f4\r\n" + std::string(500, 'a') + "\r\n1f5\r\n"));
  EXPECT_EQ(o.error.substr(0, 3), "413") << o.error;
  o = run(dec, whole("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "fffffffffffffffffffffff\r\n"));
  EXPECT_EQ(o.error.substr(0, 3), "413") << o.error;
}

TEST(HttpDecoder, ChunkFramingIsBounded) {
  Limits limits;
  limits.max_body = 4096;
  RequestDecoder dec(limits);
  // One-byte chunks with long extensions: the framing may not grow without bound.
  std::string req = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 4000; ++i) req += "1;" + std::string(200, 'e') + "\r\nx\r\n";
  const Outcome o = run(dec, whole(req));
  EXPECT_EQ(o.error.substr(0, 3), "413") << o.error;
  const Outcome line = run(dec, whole("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;" +
                                      std::string(kMaxChunkLine, 'e')));
  EXPECT_EQ(line.error.substr(0, 3), "400") << line.error;
}

TEST(HttpRequest, ParseHeadFields) {
  Limits limits;
  RequestHead h;
  ASSERT_EQ(parse_head("POST /echo?x=1 HTTP/1.1\r\nhOsT: a\r\ncontent-TYPE: text/x \r\n"
                       "CONTENT-LENGTH: 3\r\nConnection: foo, Close\r\n\r\nabc",
                       limits, h),
            nullptr);
  EXPECT_EQ(h.method, "POST");
  EXPECT_EQ(h.target, "/echo?x=1");
  EXPECT_EQ(h.content_type, "text/x");
  EXPECT_EQ(h.content_length, 3u);
  EXPECT_EQ(h.minor, 1);
  EXPECT_TRUE(h.conn_close);
  EXPECT_FALSE(h.keep_alive());
  EXPECT_EQ(h.head_len, std::string_view("POST /echo?x=1 HTTP/1.1\r\nhOsT: a\r\ncontent-TYPE: text/x \r\n"
                                         "CONTENT-LENGTH: 3\r\nConnection: foo, Close\r\n\r\n").size());
  ASSERT_EQ(parse_head("GET / HTTP/1.0\r\n\r\n", limits, h), nullptr);
  EXPECT_FALSE(h.keep_alive()) << "HTTP/1.0 closes by default";
  ASSERT_EQ(parse_head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", limits, h), nullptr);
  EXPECT_TRUE(h.keep_alive());
  ASSERT_EQ(parse_head("GET / HTTP/1.1\r\nHost: a\r\n\r\n", limits, h), nullptr);
  EXPECT_TRUE(h.keep_alive());
  ASSERT_EQ(parse_head("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", limits, h), nullptr);
  EXPECT_TRUE(h.expect_continue);
}

TEST(HttpRequest, DechunkJoinsChunks) {
  std::string out;
  ASSERT_TRUE(dechunk("5\r\nhello\r\n1;a=b\r\n \r\n5\r\nworld\r\n0\r\nT: x\r\n\r\n", out));
  EXPECT_EQ(out, "hello world");
  out.clear();
  EXPECT_FALSE(dechunk("5\r\nhel", out));
}

TEST(HttpDecoder, RejectsBadLimits) {
  Limits l;
  l.max_body = kMaxBodyLimit + 1;
  EXPECT_THROW(RequestDecoder{l}, std::invalid_argument);
  l = Limits{};
  l.max_header_bytes = 0;
  EXPECT_THROW(RequestDecoder{l}, std::invalid_argument);
}

}  // namespace
}  // namespace esockets::http

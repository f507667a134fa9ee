// esockets-http over raw sockets: pipelining in order, errors that close only their own
// connection (400, 431, 413, 505, 501), Connection: close and HTTP/1.0, the header-read
// timeout against slow clients, the Date tick, chunked uploads in pieces.
#include <random>

#include "http_test_util.hpp"

namespace esockets::test::http {
namespace {

constexpr const char* kGet = "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n";

std::string post(std::string_view body, std::string_view extra = {}) {
  return "POST /echo HTTP/1.1\r\nHost: t\r\n" + std::string(extra) +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

class HttpRaw : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.start({"--shards", std::to_string(GetParam().shards), "--workers",
                               std::to_string(GetParam().workers), "--max-header-bytes", "4096",
                               "--max-body", "100000"}))
        << server_.err();
  }
  void TearDown() override { EXPECT_EQ(server_.stop(), 0) << server_.err(); }

  // Sends `request` on a new connection and expects `status` with Connection: close, then EOF.
  void expect_error_then_close(const std::string& request, int status) {
    Client c(server_.port());
    ASSERT_TRUE(c.send_all(request));
    ResponseReader rd(c);
    Response r;
    ASSERT_TRUE(rd.read(r)) << "no response to: " << request.substr(0, 80);
    EXPECT_EQ(r.status, status) << request.substr(0, 80);
    EXPECT_EQ(r.header("Connection"), "close");
    EXPECT_EQ(c.wait_eof(10s * kScale), EofResult::eof);
  }

  ServerProcess server_;
};

TEST_P(HttpRaw, PipelinedRequestsAreAnsweredInOrder) {
  const int n = static_cast<int>(scaled(400, 100));
  std::string stream;
  for (int i = 0; i < n; ++i) {
    switch (i % 4) {
      case 0: stream += kGet; break;
      case 1: stream += post("body-" + std::to_string(i)); break;
      case 2: stream += "GET /nope-" + std::to_string(i) + " HTTP/1.1\r\nHost: t\r\n\r\n"; break;
      default:
        // two chunks, "ck-" and the index (at most 3 digits: its length is the same in hex)
        stream += "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nck-\r\n";
        stream += std::to_string(std::to_string(i).size()) + "\r\n" + std::to_string(i) + "\r\n0\r\n\r\n";
        break;
    }
  }
  std::mt19937 rng(42);
  for (int round = 0; round < 2; ++round) {
    Client c(server_.port());
    if (round == 0) {
      ASSERT_TRUE(c.send_all(stream));
    } else {  // the same stream cut at random points
      for (std::size_t at = 0; at < stream.size();) {
        const std::size_t len = 1 + rng() % 300;
        ASSERT_TRUE(c.send_all(std::string_view(stream).substr(at, len)));
        at += len;
      }
    }
    ResponseReader rd(c);
    for (int i = 0; i < n; ++i) {
      Response r;
      ASSERT_TRUE(rd.read(r)) << "response " << i << " of round " << round;
      switch (i % 4) {
        case 0: EXPECT_EQ(r.body, "Hello, World!") << i; break;
        case 1: EXPECT_EQ(r.body, "body-" + std::to_string(i)) << i; break;
        case 2: EXPECT_EQ(r.status, 404) << i; break;
        default: EXPECT_EQ(r.body, "ck-" + std::to_string(i)) << i; break;
      }
    }
    EXPECT_EQ(c.poll_once(200ms), EofResult::timeout) << "nothing more, and still open";
  }
}

TEST_P(HttpRaw, MalformedRequestGets400AndClosesOnlyItsConnection) {
  Client keep(server_.port());
  ResponseReader krd(keep);
  Response r;
  ASSERT_TRUE(keep.send_all(kGet));
  ASSERT_TRUE(krd.read(r));
  EXPECT_EQ(r.status, 200);

  Client bad(server_.port());
  ASSERT_TRUE(bad.send_all(std::string(kGet) + "GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n" + kGet));
  ResponseReader brd(bad);
  ASSERT_TRUE(brd.read(r));
  EXPECT_EQ(r.status, 200) << "the request before the bad one is answered";
  ASSERT_TRUE(brd.read(r));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.header("Connection"), "close");
  EXPECT_EQ(bad.wait_eof(10s * kScale), EofResult::eof);
  EXPECT_TRUE(brd.pending().empty()) << "nothing answered after the 400";

  ASSERT_TRUE(keep.send_all(kGet));
  ASSERT_TRUE(krd.read(r)) << "the other keep-alive connection still works";
  EXPECT_EQ(r.status, 200);
}

TEST_P(HttpRaw, ErrorStatuses) {
  expect_error_then_close("GARBAGE\r\n\r\n", 400);
  expect_error_then_close("GET / HTTP/1.1\r\n\r\n", 400);  // no Host
  expect_error_then_close("GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505);
  expect_error_then_close("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
  expect_error_then_close("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
}

TEST_P(HttpRaw, OversizedHeadersGet431BeforeTheHeadEnds) {
  // 6000 bytes of header fields (limit 4096) and never the blank line: the answer comes anyway.
  std::string head = "GET /plaintext HTTP/1.1\r\nHost: t\r\n";
  while (head.size() < 6000) head += "X-Padding: 0123456789abcdef0123456789abcdef\r\n";
  expect_error_then_close(head, 431);
  expect_error_then_close("GET /" + std::string(5000, 'a'), 414);
}

TEST_P(HttpRaw, TooLargeBodyGets413BeforeTheBodyIsSent) {
  expect_error_then_close("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n", 413);
  expect_error_then_close("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n30d41\r\n", 413);
  // At the limit it is served.
  Client c(server_.port());
  const std::string body(100000, 'b');
  ASSERT_TRUE(c.send_all(post(body)));
  ResponseReader rd(c);
  Response r;
  ASSERT_TRUE(rd.read(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.body == body);
}

TEST_P(HttpRaw, ConnectionCloseAnswersThenCloses) {
  Client c(server_.port());
  ASSERT_TRUE(c.send_all("GET /json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" + std::string(kGet)));
  ResponseReader rd(c);
  Response r;
  ASSERT_TRUE(rd.read(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Connection"), "close");
  EXPECT_EQ(c.wait_eof(10s * kScale), EofResult::eof);
  EXPECT_TRUE(rd.pending().empty()) << "the request after Connection: close is not answered";
}

TEST_P(HttpRaw, Http10ClosesUnlessKeepAlive) {
  {
    Client c(server_.port());
    ASSERT_TRUE(c.send_all("GET /plaintext HTTP/1.0\r\n\r\n"));
    ResponseReader rd(c);
    Response r;
    ASSERT_TRUE(rd.read(r));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << "answered as HTTP/1.1, as nginx does";
    EXPECT_EQ(r.header("Connection"), "close");
    EXPECT_EQ(c.wait_eof(10s * kScale), EofResult::eof);
  }
  Client c(server_.port());
  ResponseReader rd(c);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.send_all("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    Response r;
    ASSERT_TRUE(rd.read(r)) << i;
    EXPECT_EQ(r.header("Connection"), "keep-alive");
  }
}

TEST_P(HttpRaw, ChunkedUploadInPieces) {
  Client c(server_.port());
  const std::string head = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  ASSERT_TRUE(c.send_all(head));
  std::string body;
  for (int i = 0; i < 20; ++i) {
    const std::string chunk(static_cast<std::size_t>(100 + i * 37), static_cast<char>('a' + i));
    char size[16];
    std::snprintf(size, sizeof size, "%zX", chunk.size());
    const std::string framed = std::string(size) + ";i=" + std::to_string(i) + "\r\n" + chunk + "\r\n";
    ASSERT_TRUE(c.send_all(framed.substr(0, framed.size() / 2)));
    std::this_thread::sleep_for(2ms);
    ASSERT_TRUE(c.send_all(framed.substr(framed.size() / 2)));
    body += chunk;
  }
  ASSERT_TRUE(c.send_all("0\r\nX-Trailer: yes\r\n\r\n"));
  ResponseReader rd(c);
  Response r;
  ASSERT_TRUE(rd.read(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Content-Length"), std::to_string(body.size()));
  EXPECT_TRUE(r.body == body);
  ASSERT_TRUE(c.send_all(kGet));
  ASSERT_TRUE(rd.read(r)) << "the connection goes on after a chunked request";
  EXPECT_EQ(r.body, "Hello, World!");
}

TEST_P(HttpRaw, HeadResponsesHaveNoBody) {
  Client c(server_.port());
  ASSERT_TRUE(c.send_all("HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\nHEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n"
                         "HEAD /plaintext HTTP/1.1\r\nHost: t\r\n\r\n" + std::string(kGet)));
  ResponseReader rd(c);
  Response r;
  const int want[] = {405, 404, 200};
  for (int s : want) {
    ASSERT_TRUE(rd.read(r, /*head_only=*/true));
    EXPECT_EQ(r.status, s);
    EXPECT_NE(r.header("Content-Length"), "0") << "the length a GET would get";
  }
  ASSERT_TRUE(rd.read(r));
  EXPECT_EQ(r.status, 200) << "a body after a HEAD response would break the framing";
  EXPECT_EQ(r.body, "Hello, World!");
}

TEST_P(HttpRaw, DateIsRefreshedEverySecond) {
  Client c(server_.port());
  ResponseReader rd(c);
  Response first, later;
  ASSERT_TRUE(c.send_all(kGet));
  ASSERT_TRUE(rd.read(first));
  std::this_thread::sleep_for(2200ms);
  ASSERT_TRUE(c.send_all(kGet));
  ASSERT_TRUE(rd.read(later));
  EXPECT_EQ(first.header("Date").size(), 29u);
  EXPECT_NE(first.header("Date"), later.header("Date"));
}

INSTANTIATE_TEST_SUITE_P(Modes, HttpRaw, ::testing::Values(Mode{1, 0}, Mode{2, 2}), mode_name);

TEST(HttpRawTimeout, SlowHeaderIsClosedButIdleKeepAliveIsNot) {
  ServerProcess s;
  ASSERT_TRUE(s.start({"--header-timeout", "1", "--keepalive-timeout", "30"})) << s.err();
  Client idle(s.port());
  ResponseReader rd(idle);
  Response r;
  ASSERT_TRUE(idle.send_all(kGet));
  ASSERT_TRUE(rd.read(r));

  Client slow(s.port());
  const auto t0 = Clock::now();
  ASSERT_TRUE(slow.send_all("GET /plaintext HTTP/1.1\r\nHo"));
  const EofResult e = slow.wait_eof(10s * kScale);
  const auto waited = Clock::now() - t0;
  EXPECT_TRUE(e == EofResult::eof || e == EofResult::reset) << to_string(e);
  EXPECT_GE(waited, 900ms) << "closed before the header timeout";

  // The idle keep-alive connection (no request started) outlived the header timeout.
  ASSERT_TRUE(idle.send_all(kGet));
  ASSERT_TRUE(rd.read(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(s.stop(), 0) << s.err();
}

}  // namespace
}  // namespace esockets::test::http

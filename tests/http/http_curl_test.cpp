// esockets-http driven by curl: status codes, TechEmpower headers, keep-alive reuse,
// Connection: close, HTTP/1.0, POST /echo (Content-Length and chunked), 404/405, HEAD, /stats;
// and the command line (bad flag: exit 2; --help: 0; SIGTERM: 0).
#include <ctime>
#include <fstream>

#include "http_test_util.hpp"

namespace esockets::test::http {
namespace {

class HttpCurl : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.start({"--shards", std::to_string(GetParam().shards), "--workers",
                               std::to_string(GetParam().workers)}))
        << "esockets-http did not start: " << server_.err();
  }
  void TearDown() override {
    EXPECT_EQ(server_.stop(), 0) << server_.err();
  }
  // curl -sS -i with extra arguments; the whole output (headers, body, errors).
  CommandResult curl(const std::string& args) {
    return run_command("curl -sS -i --max-time 20 " + args);
  }
  std::string url(std::string_view path) { return "'" + server_.url(path) + "'"; }

  ServerProcess server_;
};

// Splits "HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody" into status, header map lookups, body.
struct Parsed {
  int status = 0;
  std::string head, body;
  explicit Parsed(const std::string& text) {
    const std::size_t end = text.find("\r\n\r\n");
    if (text.rfind("HTTP/", 0) != 0 || end == std::string::npos) return;
    head = text.substr(0, end + 2);
    body = text.substr(end + 4);
    status = std::stoi(text.substr(text.find(' ') + 1, 3));
  }
  std::string header(const std::string& name) const {
    const std::size_t at = head.find("\r\n" + name + ": ");
    if (at == std::string::npos) return {};
    const std::size_t start = at + name.size() + 4;
    return head.substr(start, head.find("\r\n", start) - start);
  }
};

bool is_imf_fixdate(const std::string& d) {
  static const std::string days = "Mon Tue Wed Thu Fri Sat Sun";
  static const std::string months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec";
  const std::string shape = "Ddd, 00 Mmm 0000 00:00:00 GMT";
  if (d.size() != shape.size()) return false;
  for (std::size_t i = 0; i < d.size(); ++i) {
    if (shape[i] == '0' ? (d[i] < '0' || d[i] > '9')
                        : (shape[i] != 'D' && shape[i] != 'd' && shape[i] != 'M' &&
                           shape[i] != 'm' && d[i] != shape[i])) {
      return false;
    }
  }
  return days.find(d.substr(0, 3)) % 4 == 0 && months.find(d.substr(8, 3)) % 4 == 0 &&
         d.substr(0, 3).find(' ') == std::string::npos && d.substr(8, 3).find(' ') == std::string::npos;
}

TEST_P(HttpCurl, PlaintextFollowsTechEmpowerRules) {
  const CommandResult r = curl(url("/plaintext"));
  ASSERT_EQ(r.code, 0) << r.output;
  const Parsed p(r.output);
  EXPECT_EQ(p.head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r.output;
  EXPECT_EQ(p.body, "Hello, World!");
  EXPECT_EQ(p.header("Content-Type"), "text/plain");
  EXPECT_EQ(p.header("Content-Length"), "13");
  EXPECT_EQ(p.header("Server"), "esockets");
  const std::string date = p.header("Date");
  // RFC 7231 7.1.1.1 IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), and the time is now (the
  // tick refreshes it every second).
  EXPECT_TRUE(is_imf_fixdate(date)) << date;
  std::tm tm{};
  ASSERT_NE(strptime(date.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm), nullptr);
  const long skew = static_cast<long>(timegm(&tm) - std::time(nullptr));
  EXPECT_LE(std::abs(skew), 3) << date;
}

TEST_P(HttpCurl, Json) {
  const Parsed p(curl(url("/json")).output);
  EXPECT_EQ(p.status, 200);
  EXPECT_EQ(p.body, "{\"message\":\"Hello, World!\"}");
  EXPECT_EQ(p.header("Content-Type"), "application/json");
  EXPECT_EQ(p.header("Content-Length"), std::to_string(p.body.size()));
  EXPECT_FALSE(p.header("Date").empty());
  EXPECT_EQ(p.header("Server"), "esockets");
}

TEST_P(HttpCurl, KeepAliveReusesTheConnection) {
  const CommandResult r = run_command("curl -sS -v --max-time 20 -o /dev/null -o /dev/null " +
                                      url("/plaintext") + " " + url("/json"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("Re-using existing connection"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("Connection: close"), std::string::npos) << r.output;
}

TEST_P(HttpCurl, ConnectionCloseIsHonoured) {
  const CommandResult r = run_command("curl -sS -v --max-time 20 -H 'Connection: close' -o /dev/null -o /dev/null " +
                                      url("/plaintext") + " " + url("/json"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("< Connection: close"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("Re-using existing connection"), std::string::npos) << r.output;
}

TEST_P(HttpCurl, Http10ClosesUnlessKeepAliveAsked) {
  CommandResult r = curl("--http1.0 " + url("/plaintext"));
  Parsed p(r.output);
  EXPECT_EQ(p.status, 200) << r.output;
  EXPECT_EQ(p.header("Connection"), "close");
  EXPECT_EQ(p.body, "Hello, World!");
  r = run_command("curl -sS -v --max-time 20 --http1.0 -H 'Connection: keep-alive' -o /dev/null -o /dev/null " +
                  url("/plaintext") + " " + url("/json"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("< Connection: keep-alive"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Re-using existing connection"), std::string::npos) << r.output;
}

TEST_P(HttpCurl, PostEchoReturnsTheBody) {
  Parsed p(curl("--data-binary 'hello echo' -H 'Content-Type: text/x-test' " + url("/echo")).output);
  EXPECT_EQ(p.status, 200);
  EXPECT_EQ(p.body, "hello echo");
  EXPECT_EQ(p.header("Content-Type"), "text/x-test");
  // A 300 KB body from a file, as Content-Length and as a chunked upload.
  char path[] = "/tmp/esockets-http-body-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  std::string body;
  for (int i = 0; body.size() < 300000; ++i) body += "line " + std::to_string(i) + "\n";
  ASSERT_EQ(::write(fd, body.data(), body.size()), static_cast<ssize_t>(body.size()));
  ::close(fd);
  for (const char* extra : {"", "-H 'Transfer-Encoding: chunked' "}) {
    const CommandResult r = curl(std::string("-H 'Expect:' ") + extra + "--data-binary @" + path +
                                 " " + url("/echo"));
    p = Parsed(r.output);
    EXPECT_EQ(p.status, 200) << extra << r.output.substr(0, 300);
    EXPECT_EQ(p.body.size(), body.size()) << extra;
    EXPECT_TRUE(p.body == body) << extra;
    EXPECT_EQ(p.header("Content-Length"), std::to_string(body.size()));
  }
  ::unlink(path);
}

TEST_P(HttpCurl, NotFoundAndMethodNotAllowed) {
  Parsed p(curl(url("/nope")).output);
  EXPECT_EQ(p.status, 404);
  p = Parsed(curl(url("/plaintext/x")).output);
  EXPECT_EQ(p.status, 404);
  p = Parsed(curl("-X POST " + url("/plaintext")).output);
  EXPECT_EQ(p.status, 405);
  EXPECT_EQ(p.header("Allow"), "GET, HEAD");
  p = Parsed(curl("-X DELETE " + url("/json")).output);
  EXPECT_EQ(p.status, 405);
  p = Parsed(curl(url("/echo")).output);
  EXPECT_EQ(p.status, 405);
  EXPECT_EQ(p.header("Allow"), "POST");
  // A query string does not change the route.
  p = Parsed(curl(url("/plaintext?a=1")).output);
  EXPECT_EQ(p.status, 200);
  const std::string codes =
      run_command("curl -sS --max-time 20 -o /dev/null -o /dev/null -o /dev/null -w '%{http_code} ' " +
                  url("/nope") + " " + url("/json") + " -X PUT " + url("/stats")).output;
  EXPECT_EQ(codes, "404 405 405 ") << "curl -X applies to every URL";
}

TEST_P(HttpCurl, HeadHasHeadersButNoBody) {
  const CommandResult r = run_command("curl -sS -I --max-time 20 " + url("/plaintext"));
  const Parsed p(r.output);
  EXPECT_EQ(p.status, 200) << r.output;
  EXPECT_EQ(p.header("Content-Length"), "13");
  EXPECT_EQ(p.body, "");
}

TEST_P(HttpCurl, StatsIsJsonWithTheEngineCounters) {
  for (int i = 0; i < 3; ++i) curl(url("/plaintext"));
  const Parsed p(curl(url("/stats")).output);
  EXPECT_EQ(p.status, 200);
  EXPECT_EQ(p.header("Content-Type"), "application/json");
  EXPECT_EQ(p.body.rfind("{\"total\":{", 0), 0u) << p.body;
  EXPECT_NE(p.body.find("\"shards\":[{\"shard\":0,"), std::string::npos) << p.body;
  EXPECT_NE(p.body.find("\"framing_error\":"), std::string::npos) << p.body;
  const std::size_t at = p.body.find("\"accepts\":");
  ASSERT_NE(at, std::string::npos);
  EXPECT_GE(std::stoul(p.body.substr(at + 10)), 4u) << p.body;
  // Python's parser (Debian's) agrees that it is JSON.
  char path[] = "/tmp/esockets-http-stats-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_EQ(::write(fd, p.body.data(), p.body.size()), static_cast<ssize_t>(p.body.size()));
  ::close(fd);
  const CommandResult j = run_command(std::string("/usr/bin/python3 -m json.tool ") + path + " >/dev/null");
  EXPECT_EQ(j.code, 0) << j.output;
  ::unlink(path);
}

INSTANTIATE_TEST_SUITE_P(Modes, HttpCurl, ::testing::Values(Mode{1, 0}, Mode{2, 2}), mode_name);

TEST(HttpBinary, BadFlagsExit2AndHelpExits0) {
  for (const std::string args : {"--no-such-flag", "--shards 0", "--port 70000", "--workers",
                                 "--max-body 999999999999", "--header-timeout x"}) {
    const CommandResult r = run_command(std::string(ESOCKETS_HTTP_BINARY) + " " + args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.output;
    EXPECT_NE(r.output.find("esockets-http:"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("listening"), std::string::npos);
  }
  const CommandResult h = run_command(std::string(ESOCKETS_HTTP_BINARY) + " --help");
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.output.find("--max-body"), std::string::npos);
}

TEST(HttpBinary, ListeningLineComesFirstAndSigtermStopsCleanly) {
  ServerProcess s;
  ASSERT_TRUE(s.start({"--shards", "2"}));
  EXPECT_EQ(s.out().rfind("esockets-http listening on 127.0.0.1:" + std::to_string(s.port()), 0), 0u)
      << s.out();
  EXPECT_EQ(run_command("curl -sS --max-time 20 -o /dev/null -w '%{http_code}' '" + s.url("/json") + "'").output,
            "200");
  EXPECT_EQ(s.stop(), 0) << s.err();
}

}  // namespace
}  // namespace esockets::test::http

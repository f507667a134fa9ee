// esockets-http under real load generators: wrk (keep-alive, 20 connections) and h2load
// (HTTP/1.1 pipelining 16 deep) finish with zero errors and only 2xx answers, inline and
// with workers. Counts, not speeds: the machine is shared.

#include "http_test_util.hpp"

namespace esockets::test::http {
namespace {

class HttpLoad : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.start({"--shards", std::to_string(GetParam().shards), "--workers",
                               std::to_string(GetParam().workers)}))
        << server_.err();
  }
  void TearDown() override { EXPECT_EQ(server_.stop(), 0) << server_.err(); }
  ServerProcess server_;
};

TEST_P(HttpLoad, WrkKeepAliveHasNoErrors) {
  const CommandResult r = run_command("wrk -t1 -c20 -d2s --timeout 10s " + server_.url("/plaintext"));
  ASSERT_EQ(r.code, 0) << r.output;
  const std::size_t at = r.output.find(" requests in ");
  ASSERT_NE(at, std::string::npos) << r.output;
  const std::size_t start = r.output.find_last_not_of("0123456789", at - 1) + 1;
  EXPECT_GT(std::stoul(r.output.substr(start, at - start)), 1000u / kScale) << r.output;
  EXPECT_EQ(r.output.find("Socket errors"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("Non-2xx"), std::string::npos) << r.output;
  EXPECT_TRUE(server_.alive());
}

TEST_P(HttpLoad, H2loadPipelinedHasNoErrors) {
  const std::size_t n = scaled(20000, 2000);
  for (const char* path : {"/plaintext", "/json"}) {
    const CommandResult r = run_command("h2load --h1 -n " + std::to_string(n) +
                                        " -c 20 -m 16 -T 30 " + server_.url(path));
    ASSERT_EQ(r.code, 0) << r.output;
    const std::string want = "requests: " + std::to_string(n) + " total, " + std::to_string(n) +
                             " started, " + std::to_string(n) + " done, " + std::to_string(n) +
                             " succeeded, 0 failed, 0 errored, 0 timeout";
    EXPECT_NE(r.output.find(want), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("status codes: " + std::to_string(n) + " 2xx, 0 3xx, 0 4xx, 0 5xx"),
              std::string::npos)
        << r.output;
  }
}

TEST_P(HttpLoad, H2loadPipelinedPostsEcho) {
  char path[] = "/tmp/esockets-http-post-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string body(1000, 'p');
  ASSERT_EQ(::write(fd, body.data(), body.size()), static_cast<ssize_t>(body.size()));
  ::close(fd);
  const std::size_t n = scaled(5000, 500);
  const CommandResult r = run_command("h2load --h1 -n " + std::to_string(n) + " -c 10 -m 8 -T 30 -d " +
                                      path + " " + server_.url("/echo"));
  ::unlink(path);
  EXPECT_NE(r.output.find("status codes: " + std::to_string(n) + " 2xx"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(" 0 errored, 0 timeout"), std::string::npos) << r.output;
}

INSTANTIATE_TEST_SUITE_P(Modes, HttpLoad, ::testing::Values(Mode{1, 0}, Mode{2, 0}, Mode{2, 2}),
                         mode_name);

}  // namespace
}  // namespace esockets::test::http

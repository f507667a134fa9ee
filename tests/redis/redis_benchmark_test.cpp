// redis-benchmark drives esockets-redis (2 shards; inline handlers and 2 workers), plain and
// pipelined: every test it runs completes with a rate, no error, and the server saw the
// requests (INFO's command count and the values the benchmark wrote).
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "redis_test_util.hpp"

namespace esockets::test::redis {
namespace {

struct Mode {
  unsigned workers;
  unsigned pipeline;
};

class RedisBenchmark : public ::testing::TestWithParam<Mode> {};

TEST_P(RedisBenchmark, EveryRequestIsAnswered) {
  ServerProcess server;
  ASSERT_TRUE(server.start(ServerProcess::Kind::esockets,
                           {"--shards", "2", "--workers", std::to_string(GetParam().workers)}));
  const std::size_t n = scaled(20000, 2000);
  const std::string cmd = "redis-benchmark -h 127.0.0.1 -p " + std::to_string(server.port()) +
                          " -t ping,set,get,incr,mset -n " + std::to_string(n) + " -c 20 -q -P " +
                          std::to_string(GetParam().pipeline);
  const CommandResult r = run_command(cmd, 240);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output.find("rror"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("WARN"), std::string::npos) << r.output;  // CONFIG GET answered
  // -q prints the final line of each test after carriage returns.
  for (const char* test : {"PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET (10 keys)"}) {
    const std::regex line(std::string("(^|[\r\n])") +
                          std::regex_replace(std::string(test), std::regex(R"([()])"), R"(\$&)") +
                          R"(: [0-9.]+ requests per second)");
    EXPECT_TRUE(std::regex_search(r.output, line)) << test << " missing in:\n" << r.output;
  }
  Client c(server.port());
  const std::string info = call(c, {"INFO", "stats"});
  // 6 tests of n requests each, plus the benchmark's CONFIG GETs and this INFO.
  const std::uint64_t done = std::stoull(info_field(info, "total_commands_processed"));
  EXPECT_GE(done, 6 * n);
  EXPECT_LE(done, 6 * (n + 20 * GetParam().pipeline) + 100);
  // SET and MSET wrote -d 3 bytes of the benchmark's (random) payload.
  EXPECT_TRUE(std::regex_match(call(c, {"GET", "key:__rand_int__"}),
                               std::regex("\\$3\r\n[^\r\n]{3}\r\n")));
  // INCR ran once per request. redis-benchmark issues whole pipelines, so with -P it may
  // send up to clients x pipeline requests more than -n.
  const std::string counter = call(c, {"GET", "counter:__rand_int__"});
  const std::size_t value_at = counter.find("\r\n") + 2;
  ASSERT_NE(value_at, std::string::npos + 2) << counter;
  const std::uint64_t incrs = std::stoull(counter.substr(value_at));
  EXPECT_GE(incrs, n);
  EXPECT_LE(incrs, n + 20 * GetParam().pipeline);
  c.close();  // an open client would hold the stop for the engine's linger time
  EXPECT_EQ(server.stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, RedisBenchmark,
                         ::testing::Values(Mode{0, 1}, Mode{0, 16}, Mode{2, 1}, Mode{2, 16}),
                         [](const ::testing::TestParamInfo<Mode>& i) {
                           return "workers" + std::to_string(i.param.workers) + "_P" +
                                  std::to_string(i.param.pipeline);
                         });

}  // namespace
}  // namespace esockets::test::redis

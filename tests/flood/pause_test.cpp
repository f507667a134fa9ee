// esockets-flood's client-visible pause: per connection, the longest wait for the server while a
// reply was owed (what a client notices while a server hands its connections to another process).
// A test server stops reading one of the connections for 300 ms once, mid-run: that connection's
// pause shows in the JSON and the summary, in every mode that waits for replies, and fails the run
// over --max-pause. The bounds are on the injected pause; a run without one gets only a loose bound.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_server.hpp"
#include "tool_runner.hpp"

using floodtest::FloodTest;
using floodtest::JValue;
using floodtest::ServerConfig;
using floodtest::TestServer;
using floodtest::ToolRun;

namespace {
constexpr int kConns = 8;
constexpr int kHoldMs = 300;
constexpr int kExitBadArgs = 2, kExitLatency = 8;

// The first connection accepted is not read for kHoldMs, hold_after_ms after the first byte.
ServerConfig holding(int hold_after_ms) {
    ServerConfig cfg;
    cfg.hold_conn = 1;
    cfg.hold_after_ms = hold_after_ms;
    cfg.hold_ms = kHoldMs;
    return cfg;
}

std::vector<std::string> args(const TestServer& srv, std::vector<std::string> more) {
    std::vector<std::string> a{"--port", std::to_string(srv.port()), "-c", std::to_string(kConns), "--threads", "1",
                               "--quiet"};
    a.insert(a.end(), more.begin(), more.end());
    return a;
}
}  // namespace

// One connection held for 300 ms: its pause is the hold (at least 250 ms: the hold starts and ends at
// the server's 5 ms resolution, and the connection's last reply before it may come a little after its
// start), every other connection's is far from it, so p50 stays low while p99 (over 8 connections:
// the largest) and max show the hold.
TEST_F(FloodTest, HeldConnectionShowsItsPauseInEveryModeThatWaitsForReplies) {
    for (std::vector<std::string> mode : {std::vector<std::string>{"pingpong"}, {"pipeline", "4"}, {"rate", "800"}}) {
        SCOPED_TRACE(mode.front());
        TestServer srv(holding(400));
        std::vector<std::string> a = args(srv, {"--duration", "1.2"});
        a.insert(a.end(), mode.begin(), mode.end());
        ToolRun r = flood(a);
        ASSERT_TRUE(r.json_ok) << r.out << r.err;
        ASSERT_VALID_RUN(r) << r.out;
        const JValue& p = r.json["pause_per_connection_ms"];
        EXPECT_EQ(p["connections"].num(), kConns) << r.json_text;
        EXPECT_GE(p["max"].num(), 250) << r.out;
        EXPECT_GE(p["p99"].num(), 250) << r.out;
        EXPECT_LT(p["p50"].num(), 250) << r.out;
        EXPECT_NE(r.out.find("pause per connection (ms): p50 "), std::string::npos) << r.out;
        EXPECT_NE(r.out.find("n=8 connections)"), std::string::npos) << r.out;
        EXPECT_EQ(r.json["requests"]["unanswered"].num(), 0) << r.out;
    }
}

// --max-pause fails the run (exit 8, the latency thresholds' code) when the p99 pause is over it.
TEST_F(FloodTest, MaxPauseFailsARunWithAHeldConnection) {
    TestServer srv(holding(300));
    ToolRun r = flood(args(srv, {"--duration", "1", "--max-pause", "200ms", "pipeline", "2"}));
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_EQ(r.code, kExitLatency) << r.out;
    EXPECT_NE(r.out.find("exit 8: latency threshold exceeded: pause per connection p99"), std::string::npos) << r.out;
    EXPECT_EQ(r.json["config"]["latency_thresholds_us"]["pause_p99"].num(), 200'000) << r.json_text;
}

// A hold that ends inside --warmup is not measured (waits count when they end in the steady phase or
// the drain, as the headline latency does): no connection shows it.
TEST_F(FloodTest, PauseEndingInTheWarmupIsNotMeasured) {
    TestServer srv(holding(100));
    ToolRun r = flood(args(srv, {"--duration", "2", "--warmup", "1.2", "pingpong"}));
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    ASSERT_VALID_RUN(r) << r.out;
    const JValue& p = r.json["pause_per_connection_ms"];
    EXPECT_EQ(p["connections"].num(), kConns) << r.json_text;
    EXPECT_LT(p["max"].num(), kHoldMs) << r.out;
}

// Without a hold every connection is measured and none comes near the injected pause (a loose bound:
// the machine is shared). Modes that owe no replies report none, and refuse --max-pause.
TEST_F(FloodTest, NoHoldNoPauseAndNothingOwedReportsNone) {
    TestServer srv;
    ToolRun r = flood(args(srv, {"--duration", "0.8", "pipeline", "4"}));
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    ASSERT_VALID_RUN(r) << r.out;
    const JValue& p = r.json["pause_per_connection_ms"];
    EXPECT_EQ(p["connections"].num(), kConns) << r.json_text;
    EXPECT_LT(p["max"].num(), kHoldMs) << r.out;

    ToolRun fh = flood(args(srv, {"--duration", "0.3", "firehose"}));
    ASSERT_TRUE(fh.json_ok) << fh.out << fh.err;
    const JValue& q = fh.json["pause_per_connection_ms"];
    EXPECT_EQ(q["connections"].num(), 0) << fh.json_text;
    EXPECT_EQ(q["p99"].kind, JValue::Null) << fh.json_text;
    EXPECT_EQ(fh.out.find("pause per connection"), std::string::npos) << fh.out;

    ToolRun bad = flood(args(srv, {"--duration", "0.3", "--max-pause", "1s", "firehose"}), 30, false);
    EXPECT_EQ(bad.code, kExitBadArgs) << bad.err;
    EXPECT_NE(bad.err.find("--max-pause applies to pingpong, pipeline, rate and churn"), std::string::npos) << bad.err;
}

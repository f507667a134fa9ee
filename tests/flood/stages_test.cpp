// esockets-flood --stages: the rate schedule (parse, N(t) and its inverse) and a real staged run
// against test_server.hpp, its per-stage report checked against the schedule.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "stages.hpp"
#include "test_server.hpp"
#include "tool_runner.hpp"

using flood::RateSchedule;
using flood::Stage;
using floodtest::FloodTest;
using floodtest::TestServer;
using floodtest::ToolRun;

TEST(Stages, ParseAcceptsUnitsAndRejectsWithReason) {
    std::vector<Stage> st;
    std::string err;
    ASSERT_TRUE(flood::parse_stages("5s:1000,10s:5000,500ms:0,2:7,1m:1", st, err)) << err;
    ASSERT_EQ(st.size(), 5u);
    EXPECT_DOUBLE_EQ(st[0].secs, 5);
    EXPECT_DOUBLE_EQ(st[1].rate, 5000);
    EXPECT_DOUBLE_EQ(st[2].secs, 0.5);
    EXPECT_DOUBLE_EQ(st[3].secs, 2);
    EXPECT_DOUBLE_EQ(st[4].secs, 60);
    for (const char* bad : {"", "5s", "5s:", ":10", "0s:10", "-1s:10", "5x:10", "5s:-1", "5s:1x", "5s:1,", "5s:1,,2s:3"}) {
        err.clear();
        EXPECT_FALSE(flood::parse_stages(bad, st, err)) << bad;
        EXPECT_NE(err.find("--stages"), std::string::npos) << bad << ": " << err;
    }
}

TEST(Stages, ScheduleIntegratesLinearRampsAndInvertsExactly) {
    // From 100: ramp to 1000 over 2 s, hold 1 s, ramp down to 0 over 1 s.
    const RateSchedule s(100, {{2, 1000}, {1, 1000}, {1, 0}}, 1.0);
    EXPECT_DOUBLE_EQ(s.arrivals_until(2), 1100);      // (100+1000)/2 * 2
    EXPECT_DOUBLE_EQ(s.arrivals_until(3), 2100);
    EXPECT_DOUBLE_EQ(s.arrivals_until(4), 2600);
    EXPECT_DOUBLE_EQ(s.arrivals_until(10), 2600);     // the last rate (0) holds
    EXPECT_DOUBLE_EQ(s.rate_at(1), 550);
    EXPECT_DOUBLE_EQ(s.rate_at(3.5), 500);
    EXPECT_EQ(s.stage_at(0.5), 0u);
    EXPECT_EQ(s.stage_at(2.5), 1u);
    EXPECT_EQ(s.stage_at(99), 2u);
    for (double n = 0.5; n < 2600; n += 7.25) {
        const double t = s.time_of(n);
        ASSERT_GE(t, 0) << n;
        EXPECT_NEAR(s.arrivals_until(t), n, 1e-6 * n + 1e-9) << n;
    }
    EXPECT_LT(s.time_of(2600.5), 0);  // never: the rate stays 0
    // From 0 (a ramp up from nothing) and a scale (one thread's share).
    const RateSchedule z(0, {{1, 200}}, 0.25);
    EXPECT_DOUBLE_EQ(z.arrivals_until(1), 25);
    EXPECT_NEAR(z.time_of(25.0 / 4), 0.5, 1e-12);     // N(t) = 25 t^2
    EXPECT_NEAR(z.time_of(30), 1.1, 1e-12);           // 50/s after the end
}

TEST_F(FloodTest, StagesRunReportsEachStageAgainstItsTarget) {
    TestServer srv;
    // 0 -> 800 over 0.6 s, hold 800 for 0.6 s, 800 -> 0 over 0.4 s: 240 + 480 + 160 requests.
    ToolRun r = flood({"--port", std::to_string(srv.port()), "-c", "4", "--threads", "2", "--stages",
                       "0.6s:800,600ms:800,0.4s:0", "--drain", "3", "--verify", "rate"});
    ASSERT_VALID_RUN(r) << r.out << r.err;
    ASSERT_TRUE(r.json_ok) << r.json_text;
    EXPECT_DOUBLE_EQ(r.json["config"]["duration_s"].num(), 1.6);  // the sum of the stages
    EXPECT_EQ(r.json["config"]["stages"].s, "0.6s:800,600ms:800,0.4s:0");
    const auto& st = r.json["stages"].a;
    ASSERT_EQ(st.size(), 3u) << r.json_text;
    const double expected[] = {240, 480, 160}, from[] = {0, 800, 800}, to[] = {800, 800, 0};
    double sent = 0;
    for (int i = 0; i < 3; ++i) {
        EXPECT_NEAR(st[i]["expected"].num(), expected[i], 1e-6) << i;
        EXPECT_DOUBLE_EQ(st[i]["from_rate"].num(), from[i]) << i;
        EXPECT_DOUBLE_EQ(st[i]["to_rate"].num(), to[i]) << i;
        // Each thread's arrivals sit half a unit into its share: at most one off per thread and stage.
        EXPECT_NEAR(st[i]["sent"].num(), expected[i], 2) << i;
        EXPECT_EQ(st[i]["answered"].num(), st[i]["sent"].num()) << i;
        EXPECT_EQ(st[i]["latency_us"]["count"].num(), st[i]["answered"].num()) << i;
        sent += st[i]["sent"].num();
    }
    EXPECT_EQ(sent, r.json["requests"]["due"].num());
    EXPECT_EQ(r.json["requests"]["unanswered"].num(), 0);
    // Achieved = replies that arrived within the stage: the hold stage gets about its 800/s.
    EXPECT_NEAR(st[1]["achieved_rate"].num(), 800, 800 * std::min(0.9, 0.25 * ESOCKETS_TEST_SCALE)) << r.out;
    EXPECT_NE(r.out.find("target 0 -> 800"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("achieved"), std::string::npos) << r.out;
}

TEST_F(FloodTest, StagesBadArgumentsExit2WithMessage) {
    const std::vector<std::pair<std::vector<std::string>, const char*>> cases = {
        {{"--stages", "1s:10", "pingpong"}, "only applies to the rate mode"},
        {{"--stages", "1s", "rate"}, "DURATION:RATE"},
        {{"--stages", "1s:10", "rate", "-3"}, ">= 0"},
        {{"--stages", "1s:10", "--ramp", "2", "rate"}, "shorter than --duration"},
        {{"rate"}, "needs an argument"},
    };
    for (auto& [args, hint] : cases) {
        std::vector<std::string> a = {"--port", "1"};
        a.insert(a.end(), args.begin(), args.end());
        ToolRun r = flood(a, 10, false);
        EXPECT_EQ(r.code, 2) << hint;
        EXPECT_NE(r.err.find(hint), std::string::npos) << "stderr: " << r.err;
    }
}

// esockets-flood tells the truth about stalls (issue 17): requests due while the server is frozen
// (SIGSTOP of a server child process), still waiting when the drain ends, or queued on a connection
// that died are in the latency figures (censored), in the summary and the JSON, and fail the run
// over --max-unanswered; validity is judged per thread; each error class is provoked for real.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "child_server.hpp"
#include "test_server.hpp"
#include "tool_runner.hpp"

using floodtest::Behaviour;
using floodtest::ChildServer;
using floodtest::FloodTest;
using floodtest::ToolRun;
using std::chrono::milliseconds;

namespace {
constexpr int kExitUnanswered = 7, kExitLatency = 8, kExitInvalid = 5;

double err(const ToolRun& r, const char* cls) { return r.json["errors"][cls].num(); }

// Every request due is answered or unanswered: nothing silently dropped from the accounting.
void expect_accounted(const ToolRun& r) {
    const auto& q = r.json["requests"];
    EXPECT_EQ(q["due"].num(), q["answered"].num() + q["unanswered"].num() + q["dropped"].num()) << r.json_text;
    EXPECT_EQ(q["unanswered"].num(), q["unanswered_end_of_run"].num() + q["unanswered_dead_connection"].num());
}
}  // namespace

// The server is frozen inside the run and resumed before its end: the requests due meanwhile are
// answered late, the stall is named, and a latency threshold fails the run with its own exit code.
TEST_F(FloodTest, FrozenServerResumedShowsInLatencyAndSummary) {
    ChildServer srv(Behaviour::Echo);
    ASSERT_TRUE(srv.ok());
    ToolRun r = flood({"--port", srv.port_arg(), "-c", "10", "--threads", "1", "--duration", "2", "--drain", "1",
                       "--max-p99", "100ms", "--hgrm", path("/out.hgrm"), "--csv", path("/out.csv"), "rate", "2000"},
                      30, true, [&](pid_t) { srv.freeze(milliseconds(800), milliseconds(700)); });
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_EQ(r.code, kExitLatency) << r.out;
    EXPECT_NE(r.out.find("exit 8: latency threshold exceeded: p99"), std::string::npos) << r.out;
    EXPECT_GE(r.json["latency_us"]["max"].num(), 500'000) << r.out;
    EXPECT_GE(r.json["latency_us"]["p99"].num(), 300'000) << r.out;
    EXPECT_TRUE(r.json["stall"]["found"].b) << r.out;
    EXPECT_GE(r.json["stall"]["length_s"].num(), 0.5);
    EXPECT_GE(r.json["stall"]["requests_waited"].num(), 500);
    EXPECT_NE(r.out.find("What this run shows: The server stopped answering for"), std::string::npos) << r.out;
    expect_accounted(r);
    const std::string hgrm = floodtest::slurp(path("/out.hgrm")), csv = floodtest::slurp(path("/out.csv"));
    EXPECT_EQ(hgrm.rfind("       Value     Percentile TotalCount 1/(1-Percentile)", 0), 0u) << hgrm;
    EXPECT_NE(hgrm.find("#[Max     ="), std::string::npos);
    EXPECT_EQ(csv.rfind("t_s,msgs_per_sec,", 0), 0u) << csv;
    ::unlink(path("/out.hgrm").c_str());
    ::unlink(path("/out.csv").c_str());
}

// Frozen until after the end (the run, shortened): the requests that were due are
// unanswered, counted as censored latencies (p99 and max of seconds, not microseconds), and the
// run fails with exit 7. On the old tool they were only "abandoned" and the run exited 0.
TEST_F(FloodTest, FrozenServerUntilTheEndFailsWithUnanswered) {
    ChildServer srv(Behaviour::Echo);
    ASSERT_TRUE(srv.ok());
    ToolRun r = flood({"--port", srv.port_arg(), "-c", "10", "--threads", "1", "--duration", "1.5", "--drain", "0.5",
                       "rate", "2000"},
                      30, true, [&](pid_t) { srv.freeze(milliseconds(800), milliseconds(-1)); });
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_EQ(r.code, kExitUnanswered) << r.out;
    EXPECT_FALSE(r.json["valid"].kind == floodtest::JValue::Bool && r.json["exit_code"].num() == 0);
    const auto& q = r.json["requests"];
    EXPECT_GE(q["unanswered"].num(), 500) << r.out;
    EXPECT_GE(q["unanswered_end_of_run"].num(), 500);
    EXPECT_GE(r.json["censored_latency_us"]["count"].num(), 500);
    EXPECT_GE(r.json["latency_us"]["p99"].num(), 500'000) << r.out;
    EXPECT_GE(r.json["latency_us"]["max"].num(), 1'000'000) << r.out;
    EXPECT_TRUE(r.json["stall"]["until_end"].b) << r.out;
    EXPECT_NE(r.out.find("were never answered"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("exit 7:"), std::string::npos) << r.out;
    expect_accounted(r);
    // Allowing them (--max-unanswered 100%) leaves the figures as they are but passes the run.
    ChildServer srv2(Behaviour::BlackHole);
    ToolRun ok = flood({"--port", srv2.port_arg(), "-c", "2", "--threads", "1", "--duration", "0.3", "--drain", "0.2",
                        "--max-unanswered", "100%", "pingpong"});
    EXPECT_TRUE(ok.code == 0 || ok.code == kExitInvalid) << ok.out;
    EXPECT_EQ(ok.json["requests"]["unanswered"].num(), 2);
}

// The end of the drain: requests in flight to a server that never answers are unanswered at
// least (end - send): one latency sample each, no response_timeout (5 s) yet.
TEST_F(FloodTest, DrainEndCountsWaitingRequests) {
    ChildServer srv(Behaviour::BlackHole);
    ASSERT_TRUE(srv.ok());
    ToolRun r = flood({"--port", srv.port_arg(), "-c", "3", "--threads", "1", "--duration", "0.5", "--drain", "0.3",
                       "pipeline", "4"});
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_EQ(r.code, kExitUnanswered) << r.out;
    EXPECT_EQ(r.json["requests"]["unanswered_end_of_run"].num(), 12) << r.out;
    EXPECT_EQ(r.json["latency_us"]["count"].num(), 12);
    EXPECT_GE(r.json["latency_us"]["p50"].num(), 700'000) << r.out;
    EXPECT_EQ(r.json["errors"]["total"].num(), 0);
    expect_accounted(r);
}

// A connection killed (RST) with requests on it: they are unanswered (dead connection), not lost
// from the figures; the reset is an econnreset error.
TEST_F(FloodTest, KilledConnectionCountsItsQueuedRequests) {
    ChildServer srv(Behaviour::ResetAfter, 300);
    ASSERT_TRUE(srv.ok());
    ToolRun r = flood({"--port", srv.port_arg(), "-c", "4", "--threads", "1", "--duration", "1", "--drain", "0.3",
                       "rate", "1000"});
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_EQ(r.code, kExitUnanswered) << r.out;
    EXPECT_GE(r.json["requests"]["unanswered_dead_connection"].num(), 1) << r.out;
    EXPECT_GE(err(r, "econnreset") + err(r, "epipe"), 4) << r.out;
    EXPECT_NE(r.out.find("lost with connections that died"), std::string::npos) << r.out;
    expect_accounted(r);
}

// --- error classes, each provoked for real ---

TEST_F(FloodTest, ErrorClassRefusedCountsOncePerConnection) {
    std::uint16_t port = 0;
    {
        ChildServer probe(Behaviour::Echo);  // a free port; nothing listens once it is gone
        port = probe.port();
    }
    ToolRun r = flood({"--port", std::to_string(port), "-c", "3", "--threads", "1", "--duration", "1", "pingpong"});
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_EQ(r.code, 4) << r.out;
    // Retried every 200 ms for 1 s: ~5 attempts each, but 3 failed connections and 3 errors.
    EXPECT_EQ(err(r, "econnrefused"), 3) << r.out;
    EXPECT_EQ(r.json["connections"]["failed"].num(), 3);
    EXPECT_GE(r.json["connections"]["failed_attempts"].num(), 6);
}

TEST_F(FloodTest, ErrorClassReset) {
    ChildServer srv(Behaviour::ResetOnData);
    ASSERT_TRUE(srv.ok());
    ToolRun r = flood({"--port", srv.port_arg(), "-c", "2", "--threads", "1", "--duration", "0.5", "pingpong"});
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_GE(err(r, "econnreset"), 1) << r.out;
    EXPECT_EQ(err(r, "unexpected_eof") + err(r, "etimedout") + err(r, "enobufs"), 0) << r.out;
    EXPECT_TRUE(r.json["errors"]["first"].has("econnreset"));
}

TEST_F(FloodTest, ErrorClassResponseTimeoutOneSamplePerRequest) {
    ChildServer srv(Behaviour::BlackHole);
    ASSERT_TRUE(srv.ok());
    ToolRun r = flood({"--port", srv.port_arg(), "-c", "2", "--threads", "1", "--duration", "0.6", "--drain", "0.2",
                       "--response-timeout", "200", "pingpong"});
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_EQ(err(r, "response_timeout"), 2) << r.out;
    EXPECT_EQ(r.json["latency_us"]["count"].num(), 2) << r.out;  // one sample per request, censored
    EXPECT_EQ(r.json["requests"]["unanswered"].num(), 2);
}

TEST_F(FloodTest, ErrorClassTimeoutAnsweredLateIsNotAlsoAMessage) {
    ChildServer srv(Behaviour::Echo);
    ASSERT_TRUE(srv.ok());
    ToolRun r = flood({"--port", srv.port_arg(), "-c", "2", "--threads", "1", "--duration", "1.5", "--drain", "1",
                       "--response-timeout", "200", "--max-unanswered", "100%", "pingpong"},
                      30, true, [&](pid_t) { srv.freeze(milliseconds(500), milliseconds(600)); });
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    const double timeouts = err(r, "response_timeout");
    EXPECT_GE(timeouts, 1) << r.out;
    EXPECT_EQ(r.json["requests"]["answered_after_timeout"].num() + r.json["requests"]["unanswered"].num(), timeouts)
        << r.out;
    // Answered late: one latency sample (>= the stall), counted as an error, not as a message.
    EXPECT_EQ(r.json["latency_us"]["count"].num(), r.json["requests"]["due"].num()) << r.out;
    EXPECT_EQ(r.json["requests"]["answered"].num() + timeouts, r.json["requests"]["due"].num()) << r.out;
    EXPECT_GE(r.json["latency_us"]["max"].num(), 400'000);
}

TEST_F(FloodTest, ErrorClassEofMidReply) {
    ChildServer srv(Behaviour::HalfThenFin);
    ASSERT_TRUE(srv.ok());
    ToolRun r = flood({"--port", srv.port_arg(), "-c", "2", "--threads", "1", "--duration", "0.5", "--size", "64",
                       "pingpong"});
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_GE(err(r, "unexpected_eof"), 1) << r.out;
    EXPECT_EQ(err(r, "econnreset"), 0) << r.out;
}

TEST_F(FloodTest, ErrorClassVerifyMismatch) {
    floodtest::ServerConfig cfg;
    cfg.corrupt = true;
    floodtest::TestServer srv(cfg);
    ToolRun r = flood({"--port", std::to_string(srv.port()), "-c", "2", "--threads", "1", "--duration", "0.5",
                       "--verify", "pingpong"});
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_GE(err(r, "verify_mismatch"), 1) << r.out;
    EXPECT_EQ(r.code, 6) << r.out;
}

// EMFILE in the tool itself: its RLIMIT_NOFILE lowered in the child to 66 (budget 64 sockets), while
// it also holds stdio, two epoll sets and inherited descriptors: some sockets cannot be created.
TEST_F(FloodTest, ErrorClassEmfileInTheTool) {
    ChildServer srv(Behaviour::Echo);
    ASSERT_TRUE(srv.ok());
    ToolRun r = flood({"--port", srv.port_arg(), "-c", "64", "--threads", "1", "--duration", "0.6", "idle"}, 30, true,
                      {}, 66);
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_EQ(r.code, 4) << r.out;
    EXPECT_GE(err(r, "emfile"), 1) << r.out;
    EXPECT_LE(err(r, "emfile"), 64) << "counted once per connection, not per retry\n" << r.out;
    EXPECT_EQ(err(r, "enobufs"), 0);
}

// Validity per thread: the tool itself frozen for 400 ms in a rate run falls behind its schedule;
// the run is marked invalid (exit 5) with the thread named.
TEST_F(FloodTest, StoppedGeneratorIsInvalid) {
    ChildServer srv(Behaviour::Echo);
    ASSERT_TRUE(srv.ok());
    ToolRun r = flood({"--port", srv.port_arg(), "-c", "4", "--threads", "1", "--duration", "2", "rate", "2000"}, 30,
                      true, [](pid_t tool) {
                          std::this_thread::sleep_for(milliseconds(700));
                          ::kill(tool, SIGSTOP);
                          std::this_thread::sleep_for(milliseconds(400));
                          ::kill(tool, SIGCONT);
                      });
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    EXPECT_EQ(r.code, kExitInvalid) << r.out;
    EXPECT_FALSE(r.json["valid"].b);
    ASSERT_GE(r.json["invalid_reasons"].a.size(), 1u);
    EXPECT_NE(r.json["invalid_reasons"].a[0].s.find("thread 0.0"), std::string::npos) << r.json_text;
    EXPECT_NE(r.out.find("The generator itself fell behind"), std::string::npos) << r.out;
}

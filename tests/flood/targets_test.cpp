// esockets-flood targets other than IPv4: IPv6 (--host ::1 / [::1]:PORT) and unix stream sockets
// (--unix PATH / --host unix:PATH), against test_server.hpp echo servers on those listeners.
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "test_server.hpp"
#include "tool_runner.hpp"

using floodtest::FloodTest;
using floodtest::ServerConfig;
using floodtest::TestServer;
using floodtest::ToolRun;

namespace {

void expect_clean(const ToolRun& r, const char* family) {
    EXPECT_EQ(r.json["config"]["family"].s, family) << r.json_text;
    EXPECT_EQ(r.json["connections"]["established"].num(), r.json["connections"]["requested"].num()) << r.out;
    EXPECT_GT(r.json["throughput"]["msgs_total"].num(), 0) << r.out;
    EXPECT_EQ(floodtest::errors_total(r), 0) << r.out;
    EXPECT_EQ(r.json["requests"]["unanswered"].num(), 0) << r.out;
}

}  // namespace

TEST_F(FloodTest, Ipv6LoopbackTarget) {
    const int lfd = floodtest::make_listener6();
    if (lfd < 0) GTEST_SKIP() << "IPv6 loopback [::1] is unavailable here: " << std::strerror(errno);
    TestServer srv(lfd, ServerConfig{});
    const std::string port = std::to_string(srv.port());
    // [::1]:PORT in --host; --verify checks every echoed byte and sequence stamp.
    ToolRun r = flood({"--host", "[::1]:" + port, "-c", "4", "--duration", "0.5", "--verify", "pingpong"});
    ASSERT_VALID_RUN(r) << r.out << r.err;
    ASSERT_TRUE(r.json_ok) << r.json_text;
    expect_clean(r, "ipv6");
    EXPECT_EQ(r.json["config"]["target"].s, "[::1]:" + port);
    EXPECT_NE(r.out.find("-> [::1]:" + port), std::string::npos) << r.out;
    // --host ::1 with --port, open loop.
    ToolRun rate = flood({"--host", "::1", "--port", port, "-c", "2", "--duration", "0.5", "--verify", "rate", "400"});
    ASSERT_VALID_RUN(rate) << rate.out << rate.err;
    expect_clean(rate, "ipv6");
}

TEST_F(FloodTest, UnixSocketTarget) {
    const std::string sock = path("/flood.sock");
    const int lfd = floodtest::make_unix_listener(sock);
    ASSERT_GE(lfd, 0) << "cannot listen on " << sock << ": " << std::strerror(errno);
    {
        TestServer srv(lfd, ServerConfig{});
        ToolRun r = flood({"--unix", sock, "-c", "4", "--duration", "0.5", "--verify", "pingpong"});
        ASSERT_VALID_RUN(r) << r.out << r.err;
        ASSERT_TRUE(r.json_ok) << r.json_text;
        expect_clean(r, "unix");
        EXPECT_EQ(r.json["config"]["target"].s, "unix:" + sock);
        ToolRun p = flood({"--host", "unix:" + sock, "-c", "2", "--duration", "0.5", "--verify", "--framing", "line",
                           "pipeline", "8"});
        ASSERT_VALID_RUN(p) << p.out << p.err;
        expect_clean(p, "unix");
    }
    ::unlink(sock.c_str());
    // Nobody listening any more: the connects fail and the run says so (exit 4), it does not hang.
    ToolRun gone = flood({"--unix", sock, "-c", "1", "--duration", "0.3", "pingpong"});
    EXPECT_EQ(gone.code, 4) << gone.out << gone.err;
}

TEST_F(FloodTest, TargetBadArgumentsExit2WithMessage) {
    const std::vector<std::pair<std::vector<std::string>, const char*>> cases = {
        {{"--host", "[::1", "pingpong"}, "[IPv6]:PORT"},
        {{"--host", "[::1]:0", "pingpong"}, "port 1..65535"},
        {{"--host", "[::1]", "pingpong"}, "missing --port"},
        {{"--host", "::2", "--port", "7", "pingpong"}, "--allow-remote"},
        {{"--host", "::1", "--port", "7", "--sources", "2", "pingpong"}, "need an IPv4 target"},
        {{"--unix", "/tmp/x.sock", "--port", "7", "pingpong"}, "drop --port"},
        {{"--host", "unix:", "pingpong"}, "unix:/path"},
        {{"--unix", "/tmp/x.sock", "reset"}, "unix socket does not have"},
        {{"--unix", "/tmp/" + std::string(120, 'x'), "pingpong"}, "shorter path"},
    };
    for (auto& [args, hint] : cases) {
        ToolRun r = flood(args, 10, false);
        EXPECT_EQ(r.code, 2) << hint;
        EXPECT_NE(r.err.find(hint), std::string::npos) << "stderr: " << r.err;
    }
}

// esockets-flood's delivery checks, end to end: the pubsub mode against esockets-chat and against a
// scripted faulty chat server, and --verify's sequence numbers against scripted faulty echo
// servers. A correct server must give 0 lost / duplicated / reordered and exit 0; each fault
// (one dropped, one duplicated, two swapped messages) must show in its own counter and exit 6.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "chat_process.hpp"
#include "fault_servers.hpp"
#include "test_server.hpp"
#include "tool_runner.hpp"

using floodtest::ChatProcess;
using floodtest::errors_total;
using floodtest::FaultChatServer;
using floodtest::FaultEchoServer;
using floodtest::Faults;
using floodtest::FloodTest;
using floodtest::JValue;
using floodtest::ok_exit;
using floodtest::scaled;
using floodtest::TestServer;
using floodtest::ToolRun;

namespace {

constexpr int kExitDelivery = 6;

struct Expect {
    double lost, duplicated, reordered;
};

void expect_delivery(const ToolRun& r, Expect e, double corrupted = 0) {
    ASSERT_TRUE(r.json_ok) << r.out << r.err;
    const JValue& d = r.json["delivery"];
    EXPECT_TRUE(d["checked"].b) << r.out;
    EXPECT_EQ(d["lost"].num(), e.lost) << r.out;
    EXPECT_EQ(d["duplicated"].num(), e.duplicated) << r.out;
    EXPECT_EQ(d["reordered"].num(), e.reordered) << r.out;
    EXPECT_EQ(d["corrupted"].num(), corrupted) << r.out;
}

// The three faults together, then each alone (each lands in its own counter).
struct FaultCase {
    const char* name;
    Faults faults;
    Expect expect;
};
std::vector<FaultCase> fault_cases(long drop, long dup, long swap) {
    return {{"all three", {drop, dup, swap}, {1, 1, 1}},
            {"drop", {drop, -1, -1}, {1, 0, 0}},
            {"duplicate", {-1, dup, -1}, {0, 1, 0}},
            {"swap", {-1, -1, swap}, {0, 0, 1}}};
}

struct ChatMode {
    unsigned shards, workers, subscriptions;
};
void PrintTo(const ChatMode& m, std::ostream* os) {
    *os << m.shards << " shards, " << m.workers << " workers, " << m.subscriptions << " rooms per subscriber";
}

class PubsubChatTest : public FloodTest, public ::testing::WithParamInterface<ChatMode> {};

}  // namespace

// A correct server (esockets-chat, inline and with workers, several shards): every message of
// every publisher reaches every subscriber of its room once, in order, and the counts add up.
TEST_P(PubsubChatTest, EveryMessageArrivesOnceInOrder) {
    const ChatMode m = GetParam();
    ChatProcess chat({"--port", "0", "--shards", std::to_string(m.shards), "--workers", std::to_string(m.workers)});
    const std::uint16_t port = chat.wait_listening();
    ASSERT_NE(port, 0) << chat.output();
    const int subs = scaled(200, 20), pubs = 4, rooms = 4, msgs = scaled(1000, 100);
    ToolRun r = flood({"--port", std::to_string(port), "-c", std::to_string(subs), "--duration", "20", "--quiet",
                       "--verify", "pubsub", "--publishers", std::to_string(pubs), "--rooms", std::to_string(rooms),
                       "--subscriptions", std::to_string(m.subscriptions), "--messages", std::to_string(msgs)},
                      60);
    ASSERT_VALID_RUN(r) << r.out << r.err;
    expect_delivery(r, {0, 0, 0});
    const JValue& p = r.json["pubsub"];
    EXPECT_EQ(p["subscriptions"].num(), subs * m.subscriptions);
    EXPECT_EQ(p["subscriptions_confirmed"].num(), subs * m.subscriptions);
    EXPECT_EQ(p["published"].num(), pubs * msgs);
    // Every room has subs * K / rooms subscribers and one publisher.
    const double expected = static_cast<double>(pubs) * msgs * subs * m.subscriptions / rooms;
    EXPECT_EQ(p["expected_deliveries"].num(), expected);
    EXPECT_EQ(p["delivered"].num(), expected);
    EXPECT_EQ(p["abandoned"].num(), 0);
    EXPECT_EQ(p["delivery_latency_us"]["count"].num(), expected);
    EXPECT_GT(p["deliveries_per_sec"].num(), 0);
    EXPECT_EQ(errors_total(r), 0) << r.out;
    EXPECT_EQ(r.json["connections"]["established"].num(), subs + pubs);
    EXPECT_LT(r.json["generator"]["wall_s"].num(), 15) << "the run should end once everything is delivered";
    EXPECT_EQ(chat.stop(SIGTERM), 0) << chat.output();
    EXPECT_NE(chat.output().find("SIGTERM: "), std::string::npos) << chat.output();
}

INSTANTIATE_TEST_SUITE_P(Modes, PubsubChatTest,
                         ::testing::Values(ChatMode{1, 0, 1}, ChatMode{2, 0, 1}, ChatMode{2, 2, 1}, ChatMode{2, 2, 2}),
                         [](const ::testing::TestParamInfo<ChatMode>& i) {
                             return std::to_string(i.param.shards) + "shards_" + std::to_string(i.param.workers) +
                                    "workers_" + std::to_string(i.param.subscriptions) + "rooms_each";
                         });

TEST_F(FloodTest, PubsubCountsEachFaultOfAScriptedServer) {
    // Deliveries to one of the three subscribers: #10 dropped, #20 twice, #30 and #31 swapped.
    for (const auto& fc : fault_cases(10, 20, 30)) {
        SCOPED_TRACE(fc.name);
        FaultChatServer srv(fc.faults);
        ToolRun r = flood({"--port", std::to_string(srv.port()), "-c", "3", "--duration", "10", "--drain", "0.5",
                           "--quiet", "pubsub", "--publishers", "1", "--messages", "100"});
        EXPECT_EQ(r.code, kExitDelivery) << r.out << r.err;
        expect_delivery(r, fc.expect);
        EXPECT_EQ(r.json["pubsub"]["published"].num(), 100);
        EXPECT_EQ(r.json["pubsub"]["expected_deliveries"].num(), 300);
        EXPECT_EQ(r.json["pubsub"]["delivered"].num(), 300 - fc.expect.lost);
        EXPECT_NE(r.out.find("delivery check: lost"), std::string::npos) << r.out;
        EXPECT_NE(r.out.find("exit 6: delivery check failed"), std::string::npos) << r.out;
        EXPECT_EQ(errors_total(r), 0) << r.out;
    }
}

TEST_F(FloodTest, PubsubWithoutFaultsFromTheScriptedServerIsClean) {
    FaultChatServer srv(Faults{});
    ToolRun r = flood({"--port", std::to_string(srv.port()), "-c", "3", "--duration", "10", "--quiet", "pubsub",
                       "--publishers", "2", "--rooms", "2", "--subscriptions", "2", "--messages", "100"});
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    expect_delivery(r, {0, 0, 0});
    EXPECT_EQ(r.json["pubsub"]["delivered"].num(), 600);
}

// A server that never answers SUB: the publishers never start and the run says why.
TEST_F(FloodTest, PubsubUnconfirmedSubscriptionsFailTheRun) {
    const int lfd = floodtest::make_listener();  // connections complete in the backlog, nobody reads
    ASSERT_GE(lfd, 0);
    ToolRun r = flood({"--port", std::to_string(floodtest::port_of(lfd)), "-c", "2", "--duration", "0.5", "--quiet",
                       "pubsub"});
    ::close(lfd);
    EXPECT_EQ(r.code, kExitDelivery) << r.out << r.err;
    ASSERT_TRUE(r.json_ok);
    EXPECT_EQ(r.json["pubsub"]["subscriptions_confirmed"].num(), 0);
    EXPECT_EQ(r.json["pubsub"]["subscriptions"].num(), 2);
    EXPECT_EQ(r.json["pubsub"]["published"].num(), 0);
    EXPECT_NE(r.out.find("2 of 2 subscriptions never confirmed"), std::string::npos) << r.out;
}

TEST_F(FloodTest, VerifyPipelineCountsEachFaultOfAScriptedServer) {
    // Replies on the first connection: #10 dropped, #20 twice, #30 and #31 swapped. Line framing
    // and echo framing with fixed-size records.
    for (const bool line : {true, false}) {
        for (const auto& fc : fault_cases(10, 20, 30)) {
            SCOPED_TRACE(std::string(fc.name) + (line ? " line" : " echo"));
            FaultEchoServer srv(fc.faults, line ? 0 : 32);
            std::vector<std::string> args = {"--port", std::to_string(srv.port()), "-c", "2", "--duration", "0.5",
                                             "--drain", "0.3", "--quiet", "--verify", "--size", "32"};
            if (line) args.insert(args.end(), {"--framing", "line"});
            args.insert(args.end(), {"pipeline", "4"});
            ToolRun r = flood(args);
            EXPECT_EQ(r.code, kExitDelivery) << r.out << r.err;
            expect_delivery(r, fc.expect);
            EXPECT_EQ(errors_total(r), 0) << r.out;
            EXPECT_NE(r.out.find("delivery check (--verify): lost"), std::string::npos) << r.out;
        }
    }
}

TEST_F(FloodTest, VerifyPingpongCountsDuplicateAndLoss) {
    // One request in flight: a swap cannot happen, a dropped reply stalls that connection and is
    // lost at the end of the drain; the other connection goes on.
    FaultEchoServer srv(Faults{12, 5, -1});
    ToolRun r = flood({"--port", std::to_string(srv.port()), "-c", "2", "--duration", "0.5", "--drain", "0.3",
                       "--quiet", "--verify", "--framing", "line", "pingpong"});
    EXPECT_EQ(r.code, kExitDelivery) << r.out << r.err;
    expect_delivery(r, {1, 1, 0});
    EXPECT_GT(r.json["throughput"]["msgs_total"].num(), 100);
}

TEST_F(FloodTest, VerifyFirehoseCountsEachFault) {
    for (const auto& fc : fault_cases(100, 200, 300)) {
        SCOPED_TRACE(fc.name);
        FaultEchoServer srv(fc.faults, 32);
        ToolRun r = flood({"--port", std::to_string(srv.port()), "-c", "1", "--duration", "0.4", "--drain", "0.3",
                           "--quiet", "--verify", "--size", "32", "firehose"});
        EXPECT_EQ(r.code, kExitDelivery) << r.out << r.err;
        expect_delivery(r, fc.expect);
    }
}

// A reply whose stamp was damaged is corrupted, not a duplicate or a reordering.
TEST_F(FloodTest, VerifyCorruptStampIsAMismatchNotAnOrderingFault) {
    floodtest::ServerConfig cfg;
    cfg.corrupt = true;  // flips a bit in the first byte of every chunk: the stamp's check character
    TestServer srv(cfg);
    ToolRun r = flood({"--port", std::to_string(srv.port()), "-c", "2", "--duration", "0.5", "--quiet", "--verify",
                       "pingpong"});
    EXPECT_EQ(r.code, kExitDelivery) << r.out << r.err;
    ASSERT_TRUE(r.json_ok);
    const JValue& d = r.json["delivery"];
    EXPECT_GT(d["corrupted"].num(), 0);
    EXPECT_EQ(d["corrupted"].num(), r.json["errors"]["verify_mismatch"].num());
    EXPECT_EQ(d["duplicated"].num(), 0);
    EXPECT_EQ(d["reordered"].num(), 0);
    EXPECT_EQ(d["lost"].num(), 0);
}

// Against a correct echo server every mode with replies reports a clean check.
TEST_F(FloodTest, VerifyCleanInEveryModeWithReplies) {
    TestServer srv;
    const std::vector<std::vector<std::string>> modes = {
        {"pingpong"},
        {"--size", "1-300", "pipeline", "8"},
        {"--size", "1", "pipeline", "8"},
        {"--framing", "line", "--size", "1-300", "pipeline", "8"},
        {"--framing", "length-prefixed", "--prefix-bytes", "2", "--size", "1-300", "pipeline", "8"},
        {"rate", "2000"},
        {"churn", "3"},
        {"firehose"},
        {"--framing", "line", "--size", "1-200", "firehose"},
        {"halfclose"}};
    for (const auto& m : modes) {
        std::vector<std::string> args = {"--port", std::to_string(srv.port()), "-c", "4", "--duration", "0.4",
                                         "--quiet", "--verify"};
        args.insert(args.end(), m.begin(), m.end());
        SCOPED_TRACE(args.back());
        ToolRun r = flood(args);
        ASSERT_VALID_RUN(r) << r.out << r.err;
        expect_delivery(r, {0, 0, 0});
        EXPECT_EQ(errors_total(r), 0) << r.out;
        EXPECT_GT(r.json["throughput"]["msgs_total"].num(), 0);
    }
}

TEST_F(FloodTest, PubsubBadArgumentsExit2WithMessage) {
    struct Case {
        std::vector<std::string> args;
        const char* hint;
    };
    const std::vector<Case> cases = {
        {{"--port", "1", "--publishers", "2", "pingpong"}, "only applies to the pubsub mode"},
        {{"--port", "1", "--procs", "2", "-c", "4", "pubsub"}, "one process"},
        {{"--port", "1", "--requests", "5", "pubsub"}, "--messages"},
        {{"--port", "1", "pubsub", "--rooms", "2", "--subscriptions", "3"}, "--subscriptions 3 is more than --rooms 2"},
        {{"--port", "1", "-c", "2", "pubsub", "--rooms", "3"}, "without a subscriber"},
        {{"--port", "1", "pubsub", "--window", "0"}, "--window"},
        {{"--port", "1", "--verify", "--size", "1-100", "firehose"}, "fixed --size"},
    };
    for (auto& c : cases) {
        ToolRun r = flood(c.args, 10, false);
        EXPECT_EQ(r.code, 2) << c.args.back();
        EXPECT_NE(r.err.find(c.hint), std::string::npos) << "stderr: " << r.err;
    }
    ToolRun help = flood({"--help"}, 10, false);
    EXPECT_EQ(help.code, 0);
    for (const char* s : {"pubsub", "--publishers", "--rooms", "--subscriptions", "--messages", "--window",
                          "6 delivery check failed", "sequence number"})
        EXPECT_NE(help.out.find(s), std::string::npos) << s;
}

// esockets-flood --protocol resp / http end to end, against a real redis-server and a real nginx
// (real_servers.hpp), and the argument checks of the protocol flags. The tool's counts are compared
// with what the servers say they served (INFO commandstats, DBSIZE, stub_status).
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "real_servers.hpp"
#include "test_server.hpp"
#include "tool_runner.hpp"

using floodtest::errors_total;
using floodtest::FloodTest;
using floodtest::JValue;
using floodtest::NginxServer;
using floodtest::ok_exit;
using floodtest::RedisServer;
using floodtest::redis_calls;
using floodtest::redis_command;
using floodtest::scaled;
using floodtest::ToolRun;

namespace {

#define REQUIRE_SERVER(s)                       \
    do {                                        \
        if (!(s).port()) GTEST_SKIP() << (s).why(); \
    } while (0)

std::string port_of(const RedisServer& s) { return std::to_string(s.port()); }
std::string port_of(const NginxServer& s) { return std::to_string(s.port()); }

void reset_redis(const RedisServer& r) {
    ASSERT_EQ(redis_command(r.port(), {"FLUSHALL"}), "+OK\r\n");
    ASSERT_EQ(redis_command(r.port(), {"CONFIG", "RESETSTAT"}), "+OK\r\n");
}

long long dbsize(const RedisServer& r) {
    const std::string s = redis_command(r.port(), {"DBSIZE"});
    return s.size() > 1 && s[0] == ':' ? std::stoll(s.substr(1)) : -1;
}

double msgs_total(const ToolRun& r) { return r.json["throughput"]["msgs_total"].num(); }

// A server that answers every read with a line that is neither RESP nor HTTP.
class GarbageServer {
public:
    GarbageServer() : lfd_(floodtest::make_listener()), port_(floodtest::port_of(lfd_)) {
        th_ = std::thread([this] {
            std::vector<int> fds;
            while (!stop_) {
                std::vector<pollfd> pf{{lfd_, POLLIN, 0}};
                for (int fd : fds) pf.push_back({fd, POLLIN, 0});
                if (::poll(pf.data(), pf.size(), 20) <= 0) continue;
                if (pf[0].revents) {
                    const int c = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
                    if (c >= 0) fds.push_back(c);
                }
                for (std::size_t k = 1; k < pf.size(); ++k) {
                    if (!pf[k].revents) continue;
                    char buf[4096];
                    const ssize_t r = ::recv(pf[k].fd, buf, sizeof buf, 0);
                    if (r > 0) (void)!::send(pf[k].fd, "?what\r\n", 7, MSG_NOSIGNAL);
                }
            }
            for (int fd : fds) ::close(fd);
        });
    }
    ~GarbageServer() {
        stop_ = true;
        th_.join();
        ::close(lfd_);
    }
    std::uint16_t port() const { return port_; }

private:
    int lfd_;
    std::uint16_t port_;
    std::atomic<bool> stop_{false};
    std::thread th_;
};

}  // namespace

TEST_F(FloodTest, ProtocolBadArgumentsExit2WithMessage) {
    struct Case {
        std::vector<std::string> args;
        const char* hint;
    };
    const std::vector<Case> cases = {
        {{"--protocol", "smtp", "pingpong"}, "raw, resp or http"},
        {{"--protocol", "resp", "--verify", "pingpong"}, "drop --verify"},
        {{"--protocol", "resp", "firehose"}, "pingpong, pipeline D, rate R and churn K"},
        {{"--protocol", "http", "slowloris"}, "pingpong, pipeline D, rate R and churn K"},
        {{"--protocol", "resp", "idle"}, "drop --protocol"},
        {{"--protocol", "http", "pubsub"}, "pingpong, pipeline D"},
        {{"--protocol", "resp", "--framing", "line", "pingpong"}, "--framing"},
        {{"--protocol", "http", "--size", "10", "pingpong"}, "--size"},
        {{"--resp-command", "get", "pingpong"}, "only applies to --protocol resp"},
        {{"--protocol", "http", "--key-range", "10", "pingpong"}, "only applies to --protocol resp"},
        {{"--path", "/x", "pingpong"}, "only applies to --protocol http"},
        {{"--protocol", "http", "--path", "x", "pingpong"}, "starting with '/'"},
        {{"--protocol", "resp", "--ratio", "1", "pingpong"}, "SET:GET"},
        {{"--protocol", "resp", "--resp-command", "get", "--ratio", "1:2", "pingpong"}, "--resp-command mixed"},
        {{"--protocol", "resp", "--key-range", "0", "pingpong"}, "--key-range"},
    };
    for (auto& c : cases) {
        std::vector<std::string> args = {"--port", "1"};
        args.insert(args.end(), c.args.begin(), c.args.end());
        ToolRun r = flood(args, 10, false);
        EXPECT_EQ(r.code, 2) << c.hint;
        EXPECT_NE(r.err.find(c.hint), std::string::npos) << "stderr: " << r.err;
    }
    ToolRun h = flood({"--help"}, 10, false);
    for (const char* s : {"--protocol raw|resp|http", "--resp-command", "--ratio", "--key-range", "--key-pattern",
                          "--path", "--host-header", "error_reply", "protocol_error", "non-2xx"})
        EXPECT_NE(h.out.find(s), std::string::npos) << s;
}

TEST_F(FloodTest, RespSetGetCountsMatchRedisCommandstats) {
    RedisServer redis;
    REQUIRE_SERVER(redis);
    reset_redis(redis);
    ToolRun set = flood({"--port", port_of(redis), "--protocol", "resp", "--resp-command", "set", "--key-range", "1000",
                         "-c", "8", "--duration", "1", "pingpong"});
    ASSERT_VALID_RUN(set) << set.out << set.err;
    ASSERT_TRUE(set.json_ok);
    EXPECT_EQ(errors_total(set), 0) << set.out;
    EXPECT_EQ(set.json["config"]["protocol"].s, "resp");
    const double sets = set.json["resp"]["set_replies"].num();
    EXPECT_GT(sets, scaled(2000, 200));
    EXPECT_EQ(sets, msgs_total(set));
    EXPECT_EQ(set.json["resp"]["get_replies"].num(), 0);
    EXPECT_EQ(redis_calls(redis.port(), "set"), static_cast<long long>(sets));
    EXPECT_LE(dbsize(redis), 1000);
    EXPECT_GT(dbsize(redis), 900);  // thousands of uniform draws over 1000 keys

    ToolRun get = flood({"--port", port_of(redis), "--protocol", "resp", "--resp-command", "get", "--key-range", "2000",
                         "-c", "8", "--duration", "1", "pingpong"});
    ASSERT_VALID_RUN(get) << get.out << get.err;
    ASSERT_TRUE(get.json_ok);
    EXPECT_EQ(errors_total(get), 0) << get.out;
    const double gets = get.json["resp"]["get_replies"].num();
    EXPECT_EQ(gets, msgs_total(get));
    EXPECT_EQ(redis_calls(redis.port(), "get"), static_cast<long long>(gets));
    // Keys 0..999 exist (most of them), 1000..1999 never: about half the GETs hit.
    const double hits = get.json["resp"]["hits"].num(), misses = get.json["resp"]["misses"].num();
    EXPECT_EQ(hits + misses, gets);
    EXPECT_GT(hits, 0.3 * gets);
    EXPECT_GT(misses, 0.4 * gets);
}

TEST_F(FloodTest, RespSequentialKeysCoverKeyRangeAndPipelineCountsExact) {
    RedisServer redis;
    REQUIRE_SERVER(redis);
    reset_redis(redis);
    // Each of the 8 connections issues far more than 3000/8 requests: sequential keys cover the range.
    ToolRun seq = flood({"--port", port_of(redis), "--protocol", "resp", "--key-pattern", "sequential", "--key-range",
                         "3000", "--size", "100", "-c", "8", "--duration", "1", "pipeline", "16"});
    ASSERT_VALID_RUN(seq) << seq.out << seq.err;
    ASSERT_TRUE(seq.json_ok);
    EXPECT_EQ(errors_total(seq), 0) << seq.out;
    ASSERT_GT(msgs_total(seq), 3000 * 4);
    EXPECT_EQ(dbsize(redis), 3000);
    EXPECT_EQ(redis_calls(redis.port(), "set"), static_cast<long long>(msgs_total(seq)));
    const std::string v = redis_command(redis.port(), {"GET", "key:2999"});
    EXPECT_EQ(v.rfind("$100\r\n", 0), 0u) << v;  // --size 100 values

    // One connection, as many requests as keys: sequential keys hit each key once (uniform ones would
    // leave about 1/e of them unset).
    reset_redis(redis);
    ToolRun once = flood({"--port", port_of(redis), "--protocol", "resp", "--key-pattern", "sequential", "--key-range",
                          "3000", "-c", "1", "--requests", "3000", "--duration", "30", "pipeline", "16"});
    ASSERT_VALID_RUN(once) << once.out << once.err;
    EXPECT_EQ(dbsize(redis), 3000);
    EXPECT_EQ(redis_command(redis.port(), {"EXISTS", "key:0", "key:1499", "key:2999", "key:3000"}), ":3\r\n");

    // Count bound, pipelined, over two processes: exactly N requests reach the server.
    reset_redis(redis);
    const int n = scaled(40000, 8000);
    ToolRun bounded = flood({"--port", port_of(redis), "--protocol", "resp", "--procs", "2", "-c", "6", "--requests",
                             std::to_string(n), "--duration", "30", "pipeline", "16"});
    ASSERT_VALID_RUN(bounded) << bounded.out << bounded.err;
    ASSERT_TRUE(bounded.json_ok);
    EXPECT_EQ(errors_total(bounded), 0);
    EXPECT_EQ(msgs_total(bounded), n);
    EXPECT_EQ(bounded.json["resp"]["set_replies"].num(), n);
    EXPECT_EQ(bounded.json["latency_us"]["count"].num(), n);
    EXPECT_EQ(redis_calls(redis.port(), "set"), n);
}

TEST_F(FloodTest, RespMixedRatioAndRateMode) {
    RedisServer redis;
    REQUIRE_SERVER(redis);
    reset_redis(redis);
    ToolRun mix = flood({"--port", port_of(redis), "--protocol", "resp", "--resp-command", "mixed", "--ratio", "1:4",
                         "--key-range", "100", "-c", "4", "--duration", "1", "pipeline", "8"});
    ASSERT_VALID_RUN(mix) << mix.out << mix.err;
    ASSERT_TRUE(mix.json_ok);
    EXPECT_EQ(errors_total(mix), 0);
    const double sets = mix.json["resp"]["set_replies"].num(), gets = mix.json["resp"]["get_replies"].num();
    EXPECT_EQ(sets + gets, msgs_total(mix));
    EXPECT_EQ(redis_calls(redis.port(), "set"), static_cast<long long>(sets));
    EXPECT_EQ(redis_calls(redis.port(), "get"), static_cast<long long>(gets));
    ASSERT_GT(sets + gets, 5000);
    EXPECT_NEAR(sets / (sets + gets), 0.2, 0.005);  // 1 SET then 4 GETs, per thread
    EXPECT_GT(mix.json["resp"]["hits"].num(), 0.9 * gets);  // 100 keys, written from the start
    EXPECT_EQ(mix.json["config"]["ratio"].s, "1:4");

    reset_redis(redis);
    ToolRun rate = flood({"--port", port_of(redis), "--protocol", "resp", "-c", "4", "--duration", "1", "rate", "2000"});
    ASSERT_VALID_RUN(rate) << rate.out << rate.err;
    ASSERT_TRUE(rate.json_ok);
    EXPECT_EQ(errors_total(rate), 0);
    EXPECT_NEAR(msgs_total(rate), 2000, 60);
    EXPECT_EQ(redis_calls(redis.port(), "set"), static_cast<long long>(msgs_total(rate)));
    EXPECT_TRUE(rate.json.has("service_latency_us"));
}

TEST_F(FloodTest, RespErrorRepliesCountedAsErrors) {
    RedisServer redis;
    REQUIRE_SERVER(redis);
    reset_redis(redis);
    ASSERT_EQ(redis_command(redis.port(), {"RPUSH", "key:0", "x"}), ":1\r\n");  // GET key:0 -> WRONGTYPE
    const int n = scaled(3000, 500);
    // Without --max-errors error replies are reported, not fatal (exit 0), as every error class.
    // One connection: with two, a slow (sanitizer) run can finish one thread's share before the other
    // connects, and the peak of open connections (1 of 2) makes it exit 4.
    ToolRun r = flood({"--port", port_of(redis), "--protocol", "resp", "--resp-command", "get", "--key-range", "1",
                       "-c", "1", "--requests", std::to_string(n), "pipeline", "4"});
    ASSERT_VALID_RUN(r) << r.out << r.err;
    ASSERT_TRUE(r.json_ok);
    EXPECT_EQ(r.json["errors"]["error_reply"].num(), n);
    EXPECT_EQ(errors_total(r), n);
    EXPECT_EQ(r.json["resp"]["error_replies"].num(), n);
    EXPECT_EQ(r.json["resp"]["get_replies"].num(), n);
    EXPECT_EQ(msgs_total(r), 0);  // an error reply is not a message
    EXPECT_NE(r.json["errors"]["first"]["error_reply"]["detail"].s.find("WRONGTYPE"), std::string::npos);
    EXPECT_NE(r.out.find("error_reply"), std::string::npos);
    EXPECT_EQ(redis_calls(redis.port(), "get"), n);
    ToolRun strict = flood({"--port", port_of(redis), "--protocol", "resp", "--resp-command", "get", "--key-range",
                            "1", "-c", "1", "--requests", "10", "--max-errors", "0", "pingpong"});
    EXPECT_EQ(strict.code, 3) << strict.out << strict.err;
}

TEST_F(FloodTest, GarbageRepliesCountAsProtocolErrors) {
    GarbageServer srv;
    for (const char* proto : {"resp", "http"}) {
        ToolRun r = flood({"--port", std::to_string(srv.port()), "--protocol", proto, "-c", "2", "--duration", "0.5",
                           "--max-errors", "0", "pingpong"});
        // 3: errors over --max-errors; or 4 when the failing connections were never both open at once
        EXPECT_TRUE(r.code == 3 || r.code == 4) << proto << r.out << r.err;
        ASSERT_TRUE(r.json_ok);
        EXPECT_GT(r.json["errors"]["protocol_error"].num(), 0) << proto;
        EXPECT_EQ(errors_total(r), r.json["errors"]["protocol_error"].num()) << proto;
        EXPECT_EQ(msgs_total(r), 0) << proto;
    }
}

TEST_F(FloodTest, HttpPingpongAndPipelineMatchNginxServedCount) {
    NginxServer nginx;
    REQUIRE_SERVER(nginx);
    for (const char* depth : {"1", "16"}) {
        const long long before = nginx.served();
        std::vector<std::string> args = {"--port", port_of(nginx), "--protocol", "http", "--path", "/plaintext",
                                         "-c", "8", "--duration", "1"};
        if (std::string(depth) == "1") args.push_back("pingpong");
        else args.insert(args.end(), {"pipeline", depth});
        ToolRun r = flood(args);
        const long long after = nginx.served();
        ASSERT_VALID_RUN(r) << r.out << r.err;
        ASSERT_TRUE(r.json_ok);
        const JValue& h = r.json["http"];
        EXPECT_EQ(errors_total(r), 0) << depth << r.out;
        EXPECT_GT(h["responses"].num(), scaled(3000, 300)) << depth;
        EXPECT_EQ(h["responses"].num(), msgs_total(r)) << depth;
        EXPECT_EQ(h["status_2xx"].num(), h["responses"].num()) << depth;
        EXPECT_EQ(h["non_2xx"].num(), 0) << depth;
        EXPECT_EQ(after - before - 1, static_cast<long long>(h["responses"].num())) << depth;  // -1: the first query
        // keepalive_requests 1000: nginx closes every connection after 1000 responses (Connection: close)
        EXPECT_GE(h["reopened"].num(), static_cast<double>(static_cast<long long>(h["responses"].num()) / 1000 - 8)) << depth;
    }
}

TEST_F(FloodTest, HttpReopensAfterConnectionCloseNon2xxAndChunked) {
    NginxServer nginx(50);  // Connection: close on every 50th response of a connection
    REQUIRE_SERVER(nginx);
    const int n = scaled(12000, 3000);
    long long before = nginx.served();
    ToolRun r = flood({"--port", port_of(nginx), "--protocol", "http", "--path", "/plaintext", "-c", "4", "--requests",
                       std::to_string(n), "--duration", "30", "pipeline", "8"});
    long long after = nginx.served();
    ASSERT_VALID_RUN(r) << r.out << r.err;
    ASSERT_TRUE(r.json_ok);
    EXPECT_EQ(errors_total(r), 0) << r.out;
    EXPECT_EQ(msgs_total(r), n);
    EXPECT_EQ(r.json["http"]["status_2xx"].num(), n);
    EXPECT_GE(r.json["http"]["reopened"].num(), n / 50 - 4);
    EXPECT_EQ(r.json["connections"]["connects_ok"].num(), 4 + r.json["http"]["reopened"].num());
    // Requests pipelined behind a Connection: close response were not served; the tool sent them again.
    EXPECT_EQ(after - before - 1, n);

    ToolRun nf = flood({"--port", port_of(nginx), "--protocol", "http", "--path", "/missing", "-c", "4", "--duration",
                        "0.5", "pipeline", "4"});
    ASSERT_VALID_RUN(nf) << nf.out << nf.err;  // non-2xx are counted apart, not errors
    ASSERT_TRUE(nf.json_ok);
    EXPECT_EQ(errors_total(nf), 0);
    EXPECT_GT(nf.json["http"]["non_2xx"].num(), 100);
    EXPECT_EQ(nf.json["http"]["non_2xx"].num(), nf.json["http"]["responses"].num());
    EXPECT_EQ(nf.json["http"]["status_4xx"].num(), nf.json["http"]["responses"].num());
    EXPECT_EQ(nf.json["http"]["status_2xx"].num(), 0);
    EXPECT_NE(nf.out.find("non-2xx"), std::string::npos);

    before = nginx.served();
    ToolRun ch = flood({"--port", port_of(nginx), "--protocol", "http", "--path", "/chunked", "-c", "2", "--duration",
                        "0.5", "rate", "1000"});
    after = nginx.served();
    ASSERT_VALID_RUN(ch) << ch.out << ch.err;
    ASSERT_TRUE(ch.json_ok);
    EXPECT_EQ(errors_total(ch), 0);
    EXPECT_NEAR(msgs_total(ch), 500, 30);
    EXPECT_EQ(ch.json["http"]["chunked"].num(), msgs_total(ch));
    EXPECT_EQ(after - before - 1, static_cast<long long>(msgs_total(ch)));
}

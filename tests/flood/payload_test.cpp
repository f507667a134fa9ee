// esockets-flood --payload-file and --payload-template: the template (unit) and the bytes the
// tool really sends, captured by an echo server that records every connection's stream.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "payload_template.hpp"
#include "test_server.hpp"
#include "tool_runner.hpp"

using flood::PayloadTemplate;
using floodtest::FloodTest;
using floodtest::ToolRun;

namespace {

// Echoes and records what each connection sent (blocking, a thread per connection).
class CaptureServer {
public:
    CaptureServer() : lfd_(floodtest::make_listener()), port_(floodtest::port_of(lfd_)) {
        th_ = std::thread([this] {
            std::vector<std::thread> conns;
            while (!stop_) {
                pollfd p{lfd_, POLLIN, 0};
                if (::poll(&p, 1, 20) <= 0) continue;
                const int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (fd < 0) continue;
                std::size_t slot;
                {
                    std::lock_guard<std::mutex> lk(mu_);
                    slot = streams_.size();
                    streams_.emplace_back();
                }
                conns.emplace_back([this, fd, slot] {
                    char buf[65536];
                    for (;;) {
                        const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
                        if (r <= 0) break;
                        {
                            std::lock_guard<std::mutex> lk(mu_);
                            streams_[slot].append(buf, static_cast<std::size_t>(r));
                        }
                        if (::send(fd, buf, static_cast<std::size_t>(r), MSG_NOSIGNAL) != r) break;
                    }
                    ::close(fd);
                });
            }
            for (auto& t : conns) t.join();
        });
    }
    ~CaptureServer() {
        stop_ = true;
        th_.join();
        ::close(lfd_);
    }
    std::string port() const { return std::to_string(port_); }
    std::vector<std::string> streams() {
        std::lock_guard<std::mutex> lk(mu_);
        return streams_;
    }

private:
    int lfd_;
    std::uint16_t port_;
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::vector<std::string> streams_;
    std::thread th_;
};

}  // namespace

TEST(PayloadTemplate, ParsesEscapesAndPlaceholders) {
    PayloadTemplate t;
    std::string err, out;
    ASSERT_TRUE(t.parse("GET /{seq}?c={conn} HTTP/1.1\\r\\n{{x}\\x41\\\\\\t", err)) << err;
    t.render(7, 12345, out);
    EXPECT_EQ(out, "GET /12345?c=7 HTTP/1.1\r\n{x}A\\\t");
    EXPECT_EQ(t.length(7, 12345), out.size());
    t.render(123456789, 0, out);
    EXPECT_EQ(t.length(123456789, 0), out.size());
    EXPECT_TRUE(t.has_placeholders());
    EXPECT_TRUE(t.contains('\n'));
    EXPECT_EQ(t.max_length(), out.size() - 1 - 9 + 40);
    for (const char* bad : {"", "a{sequence}", "{seq", "a\\q", "a\\", "\\x4"}) {
        PayloadTemplate b;
        err.clear();
        EXPECT_FALSE(b.parse(bad, err)) << bad;
        EXPECT_NE(err.find("--payload-template"), std::string::npos) << bad << ": " << err;
    }
}

TEST_F(FloodTest, PayloadTemplateSendsSeqAndConnPerRequest) {
    CaptureServer srv;
    // 30 requests over 2 connections: {seq} reaches two digits, so request lengths differ (echo framing
    // splits the replies by each request's own length).
    ToolRun r = flood({"--port", srv.port(), "-c", "2", "--threads", "1", "--requests", "30", "--duration", "5",
                       "--payload-template", "GET /{seq} c{conn}\\r\\n", "pipeline", "2"});
    ASSERT_VALID_RUN(r) << r.out << r.err;
    ASSERT_TRUE(r.json_ok) << r.json_text;
    EXPECT_EQ(r.json["throughput"]["msgs_total"].num(), 30) << r.out;
    EXPECT_EQ(r.json["config"]["payload_template"].s, "GET /{seq} c{conn}\\r\\n");
    const auto streams = srv.streams();
    ASSERT_EQ(streams.size(), 2u);
    std::size_t total = 0;
    std::vector<bool> seen(2, false);
    for (const std::string& s : streams) {
        // One connection's stream: its requests 0, 1, ... k-1, each with its own connection index.
        const auto c = s.find(" c");
        ASSERT_NE(c, std::string::npos) << s;
        const int conn = s[c + 2] - '0';
        ASSERT_TRUE(conn == 0 || conn == 1) << s;
        EXPECT_FALSE(seen[static_cast<std::size_t>(conn)]) << "two streams of connection " << conn;
        seen[static_cast<std::size_t>(conn)] = true;
        std::string want;
        std::size_t k = 0;
        while (want.size() < s.size()) want += "GET /" + std::to_string(k++) + " c" + std::to_string(conn) + "\r\n";
        EXPECT_EQ(s, want);
        total += k;
    }
    EXPECT_EQ(total, 30u);
}

TEST_F(FloodTest, PayloadFileIsSentWholeWithItsSize) {
    std::string bytes;
    for (int i = 0; i < 300; ++i) bytes += static_cast<char>((i * 37) & 0xff);  // includes \0 and \n
    const std::string file = path("/payload.bin");
    std::ofstream(file, std::ios::binary) << bytes;
    CaptureServer srv;
    ToolRun r = flood({"--port", srv.port(), "-c", "1", "--requests", "4", "--duration", "5", "--payload-file", file,
                       "--framing", "length-prefixed", "pingpong"});
    ::unlink(file.c_str());
    ASSERT_VALID_RUN(r) << r.out << r.err;
    ASSERT_TRUE(r.json_ok) << r.json_text;
    EXPECT_EQ(r.json["config"]["size_min"].num(), 300);
    EXPECT_EQ(r.json["throughput"]["msgs_total"].num(), 4) << r.out;
    const auto streams = srv.streams();
    ASSERT_EQ(streams.size(), 1u);
    const std::string one = std::string("\0\0\x01\x2c", 4) + bytes;  // 4-byte big-endian length 300
    EXPECT_EQ(streams[0], one + one + one + one);
}

TEST_F(FloodTest, PayloadSourcesBadArgumentsExit2WithMessage) {
    const std::string file = path("/p.txt");
    std::ofstream(file) << "hello\nworld";
    const std::vector<std::pair<std::vector<std::string>, const char*>> cases = {
        {{"--payload-file", file, "--verify", "pingpong"}, "drop one of them"},
        {{"--payload-template", "x{seq}", "--verify", "pingpong"}, "--verify stamps its own"},
        {{"--payload-template", "x", "--protocol", "resp", "pingpong"}, "does not apply to --protocol resp"},
        {{"--payload-file", file, "--protocol", "http", "pingpong"}, "does not apply to --protocol http"},
        {{"--payload-file", file, "pubsub"}, "does not apply to the pubsub mode"},
        {{"--payload-template", "x", "idle"}, "sends no requests"},
        {{"--payload-file", file, "--payload-template", "x", "pingpong"}, "keep one"},
        {{"--payload-file", file, "--size", "10", "pingpong"}, "drop --size"},
        {{"--payload-template", "x", "--payload", "hex:41", "pingpong"}, "drop --payload"},
        {{"--payload-file", file, "--framing", "line", "pingpong"}, "--framing line"},
        {{"--payload-file", path("/missing"), "pingpong"}, "cannot read"},
        {{"--payload-template", "{nope}", "pingpong"}, "unknown placeholder"},
        {{"--payload-template", std::string(300, 'x'), "--framing", "length-prefixed", "--prefix-bytes", "1",
          "pingpong"}, "1-byte length prefix"},
    };
    for (auto& [args, hint] : cases) {
        std::vector<std::string> a = {"--port", "1"};
        a.insert(a.end(), args.begin(), args.end());
        ToolRun r = flood(a, 10, false);
        EXPECT_EQ(r.code, 2) << hint;
        EXPECT_NE(r.err.find(hint), std::string::npos) << "stderr: " << r.err;
    }
    ::unlink(file.c_str());
}

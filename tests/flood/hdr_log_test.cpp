// esockets-flood --hdr-log: the interval log is decoded here independently (base64, the compressed
// V2 header, zlib inflate, ZigZag LEB128 counts with zero runs) and compared with what was recorded.
#include <zlib.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_server.hpp"
#include "tool_runner.hpp"

using floodtest::FloodTest;
using floodtest::TestServer;
using floodtest::ToolRun;

namespace {

std::vector<unsigned char> unbase64(const std::string& s) {
    auto val = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    std::vector<unsigned char> out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : s) {
        if (c == '=') break;
        const int v = val(c);
        if (v < 0) return {};
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<unsigned char>(acc >> bits));
        }
    }
    return out;
}

std::uint64_t be(const unsigned char* p, int n) {
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
    return v;
}

struct Decoded {
    bool ok = false;
    std::string why;
    std::uint32_t digits = 0;
    std::uint64_t lowest = 0, highest = 0;
    double ratio = 0;
    std::vector<std::uint64_t> counts;  // by HdrHistogram counts index
    std::uint64_t total = 0;
};

Decoded decode(const std::string& b64) {
    Decoded d;
    const auto raw = unbase64(b64);
    if (raw.size() < 8 || be(raw.data(), 4) != 0x1c849314u) return d.why = "not a compressed V2 histogram", d;
    const std::uint64_t zlen = be(raw.data() + 4, 4);
    if (raw.size() != 8 + zlen) return d.why = "compressed length mismatch", d;
    std::vector<unsigned char> enc(1 << 20);
    uLongf n = enc.size();
    if (uncompress(enc.data(), &n, raw.data() + 8, static_cast<uLong>(zlen)) != Z_OK) return d.why = "inflate failed", d;
    enc.resize(n);
    if (n < 40 || be(enc.data(), 4) != 0x1c849313u) return d.why = "not a V2 encoding", d;
    const std::uint64_t payload = be(enc.data() + 4, 4);
    if (40 + payload != n || be(enc.data() + 8, 4) != 0) return d.why = "bad payload length / index offset", d;
    d.digits = static_cast<std::uint32_t>(be(enc.data() + 12, 4));
    d.lowest = be(enc.data() + 16, 8);
    d.highest = be(enc.data() + 24, 8);
    const std::uint64_t rb = be(enc.data() + 32, 8);
    std::memcpy(&d.ratio, &rb, sizeof d.ratio);
    for (std::size_t i = 40; i < n;) {
        std::uint64_t v = 0;
        int shift = 0;
        for (int k = 0; k < 9 && i < n; ++k) {
            const unsigned char b = enc[i++];
            if (k == 8) {
                v |= static_cast<std::uint64_t>(b) << shift;
                break;
            }
            v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
            shift += 7;
            if (!(b & 0x80)) break;
        }
        const std::int64_t x = static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
        if (x < 0) d.counts.insert(d.counts.end(), static_cast<std::size_t>(-x), 0);
        else {
            d.counts.push_back(static_cast<std::uint64_t>(x));
            d.total += static_cast<std::uint64_t>(x);
        }
    }
    d.ok = true;
    return d;
}

// HdrHistogram's value range of counts index i for 3 significant digits, lowest value 1.
std::uint64_t lowest_of(std::size_t i) {
    if (i < 2048) return i;
    const std::size_t bucket = i / 1024 - 1, sub = i % 1024 + 1024;
    return static_cast<std::uint64_t>(sub) << bucket;
}

}  // namespace

TEST_F(FloodTest, HdrLogIntervalsDecodeToTheRecordedLatencies) {
    TestServer srv;
    const std::string log = path("/lat.hlog");
    ToolRun r = flood({"--port", std::to_string(srv.port()), "-c", "2", "--threads", "1", "--duration", "2.2",
                       "--hdr-log", log, "rate", "500"});
    if (r.code == 2 && r.err.find("without it") != std::string::npos) GTEST_SKIP() << r.err;
    ASSERT_VALID_RUN(r) << r.out << r.err;
    std::ifstream f(log);
    std::string line;
    std::vector<std::string> lines;
    while (std::getline(f, line)) lines.push_back(line);
    ::unlink(log.c_str());
    ASSERT_GE(lines.size(), 6u);
    EXPECT_EQ(lines[1], "#[Histogram log format version 1.3]");
    EXPECT_EQ(lines[2].rfind("#[StartTime: ", 0), 0u);
    EXPECT_EQ(lines[3], "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"");
    std::uint64_t total = 0;
    double prev_end = 0;
    for (std::size_t k = 4; k < lines.size(); ++k) {
        std::istringstream ls(lines[k]);
        std::string start, len, max, b64;
        ASSERT_TRUE(std::getline(ls, start, ',') && std::getline(ls, len, ',') && std::getline(ls, max, ',') &&
                    std::getline(ls, b64))
            << lines[k];
        EXPECT_NEAR(std::stod(start), prev_end, 0.002) << "intervals follow each other";
        prev_end = std::stod(start) + std::stod(len);
        const Decoded d = decode(b64);
        ASSERT_TRUE(d.ok) << d.why << ": " << lines[k];
        EXPECT_EQ(d.digits, 3u);
        EXPECT_EQ(d.lowest, 1u);
        EXPECT_EQ(d.highest, 3'600'000'000'000ull);
        EXPECT_EQ(d.ratio, 1.0);
        total += d.total;
        if (d.total) {  // Interval_Max (ms) lies in the last non-empty bucket
            std::size_t last = d.counts.size();
            while (last > 0 && d.counts[last - 1] == 0) --last;
            ASSERT_GT(last, 0u);
            const double max_ns = std::stod(max) * 1e6;
            EXPECT_GE(max_ns + 1000, static_cast<double>(lowest_of(last - 1))) << lines[k];
            EXPECT_LT(max_ns, static_cast<double>(lowest_of(last)) + 1000) << lines[k];
        }
    }
    // Every reply of the run is in exactly one interval.
    EXPECT_EQ(total, static_cast<std::uint64_t>(r.json["requests"]["answered"].num())) << r.out;
    EXPECT_GT(total, 500u);
}

TEST_F(FloodTest, HdrLogBadArgumentsExit2) {
    ToolRun r = flood({"--port", "1", "--procs", "2", "-c", "2", "--hdr-log", path("/x.hlog"), "pingpong"}, 10, false);
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("drop --procs"), std::string::npos) << r.err;
    ToolRun w = flood({"--port", "1", "--hdr-log", "/nonexistent-dir/x.hlog", "pingpong"}, 10, false);
    EXPECT_EQ(w.code, 2);
    EXPECT_NE(w.err.find("--hdr-log"), std::string::npos) << w.err;
}

// Unit tests of the RESP and HTTP reply framing of esockets-flood (--protocol resp / http): every
// stream is fed whole, split at every single point, split at every pair of points (short streams)
// and byte by byte, and must frame the same replies each time.
#include <gtest/gtest.h>

#include <string>
#include <type_traits>
#include <vector>

#include "http_parser.hpp"
#include "resp_parser.hpp"

using flood::HttpReplyParser;
using flood::RespReplyParser;

namespace {

// What a reply was framed as.
struct Framed {
    std::string desc;  // parser-specific summary
    std::size_t end;   // stream offset just after it
    bool operator==(const Framed& o) const { return desc == o.desc && end == o.end; }
};

std::string describe(const RespReplyParser& p) {
    return std::string(1, p.type()) + (p.is_error() ? " err" : "") + (p.is_nil() ? " nil" : "") + " [" + p.text() + "]";
}
std::string describe(const HttpReplyParser& p) {
    return std::to_string(p.status()) + (p.close() ? " close" : "") + (p.chunked() ? " chunked" : "");
}

// Feeds the stream in the pieces cut at `cuts`; returns the replies framed, and sets bad when the
// parser refused the stream (at offset bad_at).
template <class P>
std::vector<Framed> frame(const std::string& s, const std::vector<std::size_t>& cuts, bool& bad, std::size_t& bad_at,
                          bool at_eof = false) {
    P p;
    std::vector<Framed> out;
    bad = false;
    std::size_t from = 0;
    std::vector<std::size_t> ends = cuts;
    ends.push_back(s.size());
    for (std::size_t e : ends) {
        while (from < e) {
            std::size_t used = 0;
            const auto st = p.feed(reinterpret_cast<const unsigned char*>(s.data()) + from, e - from, used);
            EXPECT_LE(used, e - from);
            from += used;
            if (st == P::kBad) {
                bad = true;
                bad_at = from;
                return out;
            }
            if (st == P::kDone) out.push_back({describe(p), from});
            else EXPECT_EQ(from, e);
        }
    }
    if constexpr (std::is_same_v<P, HttpReplyParser>) {
        if (at_eof && p.eof()) out.push_back({describe(p), s.size()});
    }
    return out;
}

template <class P>
void check_all_splits(const std::string& s, const std::vector<Framed>& want, bool want_bad = false, bool at_eof = false) {
    bool bad = false;
    std::size_t bad_at = 0;
    const auto whole = frame<P>(s, {}, bad, bad_at, at_eof);
    ASSERT_EQ(bad, want_bad) << s;
    const std::size_t whole_bad_at = bad_at;
    EXPECT_EQ(whole, want) << s;
    for (std::size_t k = 0; k <= s.size(); ++k) {
        const auto got = frame<P>(s, {k}, bad, bad_at, at_eof);
        EXPECT_EQ(bad, want_bad) << "split at " << k << ": " << s;
        EXPECT_EQ(got, want) << "split at " << k << ": " << s;
        if (want_bad) {
            EXPECT_EQ(bad_at, whole_bad_at) << "split at " << k;
        }
    }
    if (s.size() <= 160)
        for (std::size_t a = 1; a < s.size(); ++a)
            for (std::size_t b = a + 1; b < s.size(); ++b) {
                const auto got = frame<P>(s, {a, b}, bad, bad_at, at_eof);
                ASSERT_EQ(got, want) << "split at " << a << "," << b << ": " << s;
            }
    std::vector<std::size_t> every;
    for (std::size_t k = 1; k < s.size(); ++k) every.push_back(k);
    EXPECT_EQ(frame<P>(s, every, bad, bad_at, at_eof), want) << "byte by byte: " << s;
    EXPECT_EQ(bad, want_bad);
}

// Concatenates replies and the expected framing (desc per reply) of each.
struct Stream {
    std::string bytes;
    std::vector<Framed> want;
    Stream& add(const std::string& r, const std::string& desc) {
        bytes += r;
        want.push_back({desc, bytes.size()});
        return *this;
    }
};

}  // namespace

TEST(RespReplyParser, FramesEveryReplyKindAtEverySplitPoint) {
    Stream s;
    s.add("+OK\r\n", "+ [OK]")
        .add("-ERR unknown command 'FOO'\r\n", "- err [ERR unknown command 'FOO']")
        .add(":1000\r\n", ": []")
        .add(":-5\r\n", ": []")
        .add("$5\r\nhello\r\n", "$ []")
        .add("$0\r\n\r\n", "$ []")
        .add("$-1\r\n", "$ nil []")
        .add("$4\r\n\r\n\r\n\r\n", "$ []")  // a bulk string holding CRLFs
        .add("*-1\r\n", "* nil []")
        .add("*0\r\n", "* []")
        .add("*3\r\n$3\r\nfoo\r\n$-1\r\n:7\r\n", "* []")
        .add("*2\r\n*2\r\n+a\r\n-b\r\n*1\r\n*0\r\n", "* []")  // nested, an error inside is not an error reply
        .add("+\r\n", "+ []");
    check_all_splits<RespReplyParser>(s.bytes, s.want);
    Stream r3;  // RESP3 replies a server may send
    r3.add("_\r\n", "_ nil []")
        .add("#t\r\n", "# [t]")
        .add(",3.14\r\n", ", [3.14]")
        .add("(3492890328409238509324850943850943825024385\r\n", "( [3492890328409238509324850943850943825024385]")
        .add("!21\r\nSYNTAX invalid syntax\r\n", "! err []")
        .add("=15\r\ntxt:Some string\r\n", "= []")
        .add("%2\r\n+first\r\n:1\r\n+second\r\n*1\r\n~1\r\n$1\r\nx\r\n", "% []");
    check_all_splits<RespReplyParser>(r3.bytes, r3.want);
}

TEST(RespReplyParser, LongRepliesAndDeepNesting) {
    Stream s;
    s.add("$70000\r\n" + std::string(70000, 'v') + "\r\n", "$ []");
    std::string err(500, 'e'), kept = "- err [";
    err.insert(0, 1, '-');
    err += "\r\n";
    kept.append(RespReplyParser::kTextKeep, 'e');
    kept += ']';
    s.add(err, kept);
    std::string deep;
    for (int k = 0; k < 64; ++k) deep += "*1\r\n";
    s.add(deep + ":1\r\n", "* []");
    bool bad = false;
    std::size_t at = 0;
    EXPECT_EQ(frame<RespReplyParser>(s.bytes, {5, 70003, 70010, 70200}, bad, at), s.want);
    EXPECT_FALSE(bad);
    std::string deeper;
    for (int k = 0; k < 65; ++k) deeper += "*1\r\n";
    frame<RespReplyParser>(deeper + ":1\r\n", {}, bad, at);
    EXPECT_TRUE(bad);
    EXPECT_EQ(at, 65u * 4u);
}

TEST(RespReplyParser, RejectsMalformedReplies) {
    const std::vector<std::pair<std::string, std::size_t>> bad_streams = {
        {"?x\r\n", 0},                  // unknown type byte
        {"+OK\r\n:12a\r\n", 8},         // non-digit in an integer (after a good reply)
        {"$abc\r\n", 1},                // non-digit in a length
        {"$3\r\nabcd\r\n", 7},          // bulk longer than its length
        {"+OK\n", 3},                   // LF without CR
        {"$-2\r\n", 5},                 // negative length other than -1
        {"*1\r\n$\r\n", 7},             // length without digits
        {":1\rX", 3},                   // CR not followed by LF
        {"$99999999999999999999\r\n", 20},  // too long a number
    };
    for (auto& [s, at] : bad_streams) {
        bool bad = false;
        std::size_t bad_at = 0;
        frame<RespReplyParser>(s, {}, bad, bad_at);
        EXPECT_TRUE(bad) << s;
        EXPECT_EQ(bad_at, at) << s;
        for (std::size_t k = 0; k <= s.size(); ++k) {
            frame<RespReplyParser>(s, {k}, bad, bad_at);
            EXPECT_TRUE(bad) << "split at " << k << ": " << s;
            EXPECT_EQ(bad_at, at) << "split at " << k << ": " << s;
        }
    }
}

TEST(HttpReplyParser, FramesResponsesAtEverySplitPoint) {
    Stream s;
    s.add("HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!", "200")
        .add("HTTP/1.1 404 Not Found\r\ncontent-LENGTH: 0\r\n\r\n", "404")
        .add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nHello\r\nA\r\n0123456789\r\n0\r\n"
             "X-Trailer: y\r\n\r\n",
             "200 chunked")
        .add("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", "204")  // no body
        .add("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", "304")
        .add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2\r\nab\r\n0\r\n\r\n",
             "200 chunked")  // chunked wins over Content-Length
        .add("HTTP/1.1 500 Internal Server Error\nContent-Length: 2\n\nok", "500")  // bare LF line ends
        .add("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", "200")
        .add("HTTP/1.1 200 OK\r\nX-Long: " + std::string(2000, 'a') + "\r\nContent-Length: 4\r\n\r\nbody", "200")
        .add("HTTP/1.1 301 Moved\r\nConnection: Keep-Alive, Close\r\nContent-Length: 3\r\n\r\nabc", "301 close");
    check_all_splits<HttpReplyParser>(s.bytes, s.want);
    Stream h10;
    h10.add("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", "200 close");  // HTTP/1.0 closes by default
    check_all_splits<HttpReplyParser>(h10.bytes, h10.want);
}

TEST(HttpReplyParser, BodyUntilCloseEndsAtEof) {
    const std::string s = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\nServer: x\r\n\r\nto the end";
    check_all_splits<HttpReplyParser>(s, {{"200", s.find("xHTTP") + 1}, {"200 close", s.size()}}, false, true);
    HttpReplyParser p;
    std::size_t used = 0;
    const std::string done = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    EXPECT_EQ(p.feed(reinterpret_cast<const unsigned char*>(done.data()), done.size(), used), HttpReplyParser::kDone);
    EXPECT_FALSE(p.in_reply());
    EXPECT_FALSE(p.eof());  // EOF between responses ends nothing
    EXPECT_EQ(p.feed(reinterpret_cast<const unsigned char*>("HT"), 2, used), HttpReplyParser::kNeedMore);
    EXPECT_TRUE(p.in_reply());
}

TEST(HttpReplyParser, RejectsMalformedResponses) {
    const std::vector<std::string> bad_streams = {
        "SSH-2.0-OpenSSH\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 200 OK\r\n" + std::string(70000, 'X') + ": y\r\n\r\n",
    };
    for (auto& s : bad_streams) {
        bool bad = false;
        std::size_t at = 0;
        frame<HttpReplyParser>(s, {}, bad, at);
        EXPECT_TRUE(bad) << s.substr(0, 80);
        for (std::size_t k = 0; k <= s.size(); k += s.size() > 200 ? 997 : 1) {
            frame<HttpReplyParser>(s, {k}, bad, at);
            EXPECT_TRUE(bad) << "split at " << k << ": " << s.substr(0, 80);
        }
    }
}

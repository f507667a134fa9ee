// PROXY protocol header parsing (v1 text, v2 binary), trusted-proxy CIDRs and listener
// addresses: the pure functions of engine/io/proxy_header.hpp.
#include "io/proxy_header.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace esockets::detail {
namespace {

using namespace std::string_literals;

constexpr std::size_t kMax = 4096;
const std::string kSig("\r\n\r\n\0\r\nQUIT\n", 12);

// ---- building headers ----

std::string be16(std::size_t v) { return {static_cast<char>((v >> 8) & 0xFF), static_cast<char>(v & 0xFF)}; }

std::string v2(unsigned ver_cmd, unsigned fam, const std::string& body) {
  return kSig + static_cast<char>(ver_cmd) + static_cast<char>(fam) + be16(body.size()) + body;
}
std::string v2_len(unsigned ver_cmd, unsigned fam, std::size_t len, const std::string& body) {
  return kSig + static_cast<char>(ver_cmd) + static_cast<char>(fam) + be16(len) + body;
}
std::string tlv(unsigned type, const std::string& value) {
  return static_cast<char>(type) + be16(value.size()) + value;
}
std::string ip(int family, const char* text) {
  std::uint8_t b[16];
  EXPECT_EQ(inet_pton(family, text, b), 1) << text;
  return {reinterpret_cast<const char*>(b), family == AF_INET ? 4u : 16u};
}
std::string inet_block(const char* src, const char* dst, std::uint16_t sport, std::uint16_t dport) {
  return ip(AF_INET, src) + ip(AF_INET, dst) + be16(sport) + be16(dport);
}
std::string inet6_block(const char* src, const char* dst, std::uint16_t sport, std::uint16_t dport) {
  return ip(AF_INET6, src) + ip(AF_INET6, dst) + be16(sport) + be16(dport);
}

std::string text_of(const PeerAddress& a) {
  if (a.family == 0) return "";
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(a.family, a.addr, buf, sizeof buf);
  return std::string(buf) + " " + std::to_string(a.port);
}

ProxyParseResult parse(std::string_view in, ProxyProtocol accept = ProxyProtocol::any, std::size_t max = kMax) {
  ProxyInfo info;
  return parse_proxy_header(in, accept, max, info);
}

// Parses `header` + `trailer` (whole), and checks that every prefix of the header waits.
ProxyInfo parse_ok(const std::string& header, ProxyProtocol accept = ProxyProtocol::any, std::size_t max = kMax) {
  const std::string trailer = "GET / HTTP/1.1\r\n";
  ProxyInfo info;
  const auto r = parse_proxy_header(header + trailer, accept, max, info);
  EXPECT_EQ(r.status, ProxyParse::done) << (r.error ? r.error : "") << " for " << testing::PrintToString(header);
  EXPECT_EQ(r.consumed, header.size());
  EXPECT_EQ(r.error, nullptr);
  for (std::size_t n = 0; n < header.size(); ++n) {
    ProxyInfo scratch;
    const auto p = parse_proxy_header(std::string_view(header).substr(0, n), accept, max, scratch);
    EXPECT_EQ(p.status, ProxyParse::need_more) << "prefix of " << n << ": " << (p.error ? p.error : "");
  }
  ProxyInfo exact;
  const auto e = parse_proxy_header(header, accept, max, exact);
  EXPECT_EQ(e.status, ProxyParse::done);
  EXPECT_EQ(e.consumed, header.size());
  return info;
}

// Malformed with `error`; and with exactly `first_bad` bytes (the shortest input showing the
// fault) already malformed, one byte fewer still need_more.
void expect_bad(const std::string& in, const char* error, ProxyProtocol accept = ProxyProtocol::any,
                std::size_t max = kMax, std::size_t first_bad = 0) {
  const auto r = parse(in, accept, max);
  ASSERT_EQ(r.status, ProxyParse::malformed) << testing::PrintToString(in);
  ASSERT_NE(r.error, nullptr);
  EXPECT_STREQ(r.error, error) << testing::PrintToString(in);
  EXPECT_EQ(r.consumed, 0u);
  if (first_bad != 0) {
    const auto at = parse(std::string_view(in).substr(0, first_bad), accept, max);
    EXPECT_EQ(at.status, ProxyParse::malformed) << "with " << first_bad << " bytes";
    if (at.error) {
      EXPECT_STREQ(at.error, error);
    }
    EXPECT_EQ(parse(std::string_view(in).substr(0, first_bad - 1), accept, max).status, ProxyParse::need_more)
        << "with " << first_bad - 1 << " bytes";
  }
}

// ---- v1 ----

TEST(ProxyV1, Tcp4) {
  const auto info = parse_ok("PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n");
  EXPECT_EQ(info.version, 1);
  EXPECT_FALSE(info.local);
  EXPECT_EQ(info.source.family, AF_INET);
  EXPECT_EQ(text_of(info.source), "192.168.0.1 56324");
  EXPECT_EQ(text_of(info.destination), "10.0.0.2 443");
  EXPECT_TRUE(info.tlvs.empty());
}

TEST(ProxyV1, Tcp6) {
  const auto info = parse_ok("PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 0 65535\r\n", ProxyProtocol::v1);
  EXPECT_EQ(info.source.family, AF_INET6);
  EXPECT_EQ(text_of(info.source), "2001:db8::1 0");
  EXPECT_EQ(text_of(info.destination), "::ffff:10.0.0.1 65535");
}

TEST(ProxyV1, Unknown) {
  const auto info = parse_ok("PROXY UNKNOWN\r\n");
  EXPECT_EQ(info.version, 1);
  EXPECT_TRUE(info.local);
  EXPECT_EQ(info.source.family, 0);
  EXPECT_EQ(info.destination.family, 0);
}

TEST(ProxyV1, UnknownIgnoresTheRestOfTheLine) {
  const auto info = parse_ok("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n");
  EXPECT_TRUE(info.local);
  EXPECT_EQ(info.source.family, 0);
}

TEST(ProxyV1, LongestTcp6Fits107Bytes) {
  const std::string a = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";  // 45 characters
  const std::string h = "PROXY TCP6 " + a + " 1:2:3:4:5:6:7:8 65535 65535\r\n";
  ASSERT_LE(h.size(), 107u);
  const auto info = parse_ok(h);
  EXPECT_EQ(info.source.family, AF_INET6);
  EXPECT_EQ(info.source.port, 65535);
}

TEST(ProxyV1, Exactly107BytesIsAccepted) {
  std::string h = "PROXY UNKNOWN ";
  h += std::string(107 - h.size() - 2, 'x') + "\r\n";
  ASSERT_EQ(h.size(), 107u);
  parse_ok(h);
}

TEST(ProxyV1, TrailingClientBytesAreNotConsumed) {
  const std::string h = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
  const auto r = parse(h + "PROXY TCP4 9.9.9.9 9.9.9.9 9 9\r\n");
  EXPECT_EQ(r.status, ProxyParse::done);
  EXPECT_EQ(r.consumed, h.size());
}

TEST(ProxyV1, ByteAtATime) {
  const std::string h = "PROXY TCP4 127.0.0.1 127.0.0.1 40000 9000\r\n";
  std::string buf;
  for (std::size_t i = 0; i < h.size(); ++i) {
    buf += h[i];
    const auto r = parse(buf, ProxyProtocol::v1);
    ASSERT_EQ(r.status, i + 1 < h.size() ? ProxyParse::need_more : ProxyParse::done) << i;
  }
  buf += "x";
  EXPECT_EQ(parse(buf, ProxyProtocol::v1).consumed, h.size());
}

TEST(ProxyV1Malformed, NotAHeader) {
  expect_bad("GET / HTTP/1.1\r\n", "not a PROXY protocol header", ProxyProtocol::any, kMax, 1);
  expect_bad("PROXX TCP4", "not a PROXY protocol header", ProxyProtocol::any, kMax, 5);
  expect_bad("proxy TCP4", "not a PROXY protocol header", ProxyProtocol::v1, kMax, 1);
  expect_bad("PROXY\r\n", "not a PROXY protocol header", ProxyProtocol::any, kMax, 6);
  expect_bad("PROXY  TCP4 1.2.3.4", "bad v1 protocol (TCP4, TCP6 or UNKNOWN)", ProxyProtocol::any, kMax, 7);
}

TEST(ProxyV1Malformed, BadProtocol) {
  const char* e = "bad v1 protocol (TCP4, TCP6 or UNKNOWN)";
  expect_bad("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", e, ProxyProtocol::any, kMax, 10);
  expect_bad("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", e, ProxyProtocol::any, kMax, 8);  // "U" may be UNKNOWN
  expect_bad("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", e, ProxyProtocol::any, kMax, 7);
  expect_bad("PROXY TCP4\r\n", e, ProxyProtocol::any, kMax, 11);
  expect_bad("PROXY UNKNOWNX\r\n", e, ProxyProtocol::any, kMax, 14);
}

TEST(ProxyV1Malformed, BadAddresses) {
  const char* src = "bad v1 source address";
  const char* dst = "bad v1 destination address";
  expect_bad("PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n", src, ProxyProtocol::any, kMax, 14);
  expect_bad("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", src, ProxyProtocol::any, kMax, 17);
  expect_bad("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", src, ProxyProtocol::any, kMax, 19);
  expect_bad("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", src, ProxyProtocol::any, kMax, 13);
  expect_bad("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", src, ProxyProtocol::any, kMax, 12);
  expect_bad("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", dst, ProxyProtocol::any, kMax, 20);
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.x 1 2\r\n", dst, ProxyProtocol::any, kMax, 26);
  expect_bad("PROXY TCP6 1::2::3 ::1 1 2\r\n", src, ProxyProtocol::any, kMax, 19);
  expect_bad("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", src, ProxyProtocol::any, kMax, 19);
  expect_bad("PROXY TCP6 ::1 ::g 1 2\r\n", dst, ProxyProtocol::any, kMax, 18);
}

TEST(ProxyV1Malformed, FamilyMismatch) {
  expect_bad("PROXY TCP4 ::1 ::1 1 2\r\n", "bad v1 source address", ProxyProtocol::any, kMax, 12);
  expect_bad("PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "bad v1 destination address", ProxyProtocol::any, kMax, 20);
  expect_bad("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad v1 source address", ProxyProtocol::any, kMax, 19);
  expect_bad("PROXY TCP6 ::1 1.2.3.4 1 2\r\n", "bad v1 destination address", ProxyProtocol::any, kMax, 23);
}

TEST(ProxyV1Malformed, BadPorts) {
  const char* sp = "bad v1 source port";
  const char* dp = "bad v1 destination port";
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", sp, ProxyProtocol::any, kMax, 32);
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", sp);
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", sp, ProxyProtocol::any, kMax, 28);
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", sp, ProxyProtocol::any, kMax, 28);
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", sp, ProxyProtocol::any, kMax, 29);
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n", sp, ProxyProtocol::any, kMax, 28);
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", dp, ProxyProtocol::any, kMax, 34);
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", dp, ProxyProtocol::any, kMax, 30);
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\n", dp, ProxyProtocol::any, kMax, 30);
}

TEST(ProxyV1Malformed, NotEndedByCrlf) {
  const char* e = "v1 header not ended by CRLF";
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", e, ProxyProtocol::any, kMax, 31);
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", e, ProxyProtocol::any, kMax, 32);
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 extra\r\n", e, ProxyProtocol::any, kMax, 31);
}

TEST(ProxyV1Malformed, OversizedWithoutCrlf) {
  std::string h = "PROXY UNKNOWN " + std::string(200, 'x');
  expect_bad(h, "v1 header over 107 bytes", ProxyProtocol::any, kMax, 107);
  // A line of valid TCP6 fields that only ends after 107 bytes.
  h = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
      "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n";
  ASSERT_GT(h.size(), 107u);
  expect_bad(h, "v1 header over 107 bytes", ProxyProtocol::v1, 65551, 107);
}

TEST(ProxyV1Malformed, OverMaxHeader) {
  const std::string h = "PROXY TCP4 192.168.100.100 192.168.100.101 65535 65535\r\n";
  parse_ok(h, ProxyProtocol::any, h.size());
  expect_bad(h, "v1 header over max_proxy_header", ProxyProtocol::any, h.size() - 1, h.size() - 1);
}

// ---- v2 ----

TEST(ProxyV2, Tcp4) {
  const auto info = parse_ok(v2(0x21, 0x11, inet_block("203.0.113.7", "10.0.0.1", 51234, 443)));
  EXPECT_EQ(info.version, 2);
  EXPECT_FALSE(info.local);
  EXPECT_EQ(info.source.family, AF_INET);
  EXPECT_EQ(text_of(info.source), "203.0.113.7 51234");
  EXPECT_EQ(text_of(info.destination), "10.0.0.1 443");
  EXPECT_TRUE(info.tlvs.empty());
}

TEST(ProxyV2, Tcp6) {
  const auto info = parse_ok(v2(0x21, 0x21, inet6_block("2001:db8::7", "::1", 65535, 0)), ProxyProtocol::v2);
  EXPECT_EQ(info.source.family, AF_INET6);
  EXPECT_EQ(text_of(info.source), "2001:db8::7 65535");
  EXPECT_EQ(text_of(info.destination), "::1 0");
}

TEST(ProxyV2, Local) {
  const auto info = parse_ok(v2(0x20, 0x00, ""));
  EXPECT_EQ(info.version, 2);
  EXPECT_TRUE(info.local);
  EXPECT_EQ(info.source.family, 0);
  EXPECT_EQ(info.destination.family, 0);
}

TEST(ProxyV2, LocalSkipsAddressesAndKeepsTlvs) {
  const auto info = parse_ok(v2(0x20, 0x11, inet_block("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0xE0, "hc")));
  EXPECT_TRUE(info.local);
  EXPECT_EQ(info.source.family, 0);
  ASSERT_EQ(info.tlvs.size(), 1u);
  EXPECT_EQ(info.tlvs[0].type, 0xE0);
  EXPECT_EQ(info.tlvs[0].value, "hc");
}

TEST(ProxyV2, UnspecWithProxyCommandIsLocal) {
  const auto info = parse_ok(v2(0x21, 0x00, tlv(0x04, std::string(5, '\0'))));
  EXPECT_TRUE(info.local);
  EXPECT_EQ(info.source.family, 0);
  ASSERT_EQ(info.tlvs.size(), 1u);
}

TEST(ProxyV2, UnixIsProxiedWithoutAddress) {
  std::string block(216, '\0');
  std::memcpy(block.data(), "/run/client.sock", 16);
  std::memcpy(block.data() + 108, "/run/app.sock", 13);
  const auto info = parse_ok(v2(0x21, 0x31, block + tlv(0x02, "example.com")));
  EXPECT_FALSE(info.local);
  EXPECT_EQ(info.source.family, 0);
  EXPECT_EQ(info.destination.family, 0);
  ASSERT_EQ(info.tlvs.size(), 1u);
  EXPECT_EQ(info.tlvs[0].value, "example.com");
}

TEST(ProxyV2, TlvsInOrderIncludingEmptyAndNoop) {
  const std::string ssl = "\x01"s + std::string(4, '\0') + tlv(0x21, "TLSv1.3");
  const auto info = parse_ok(v2(0x21, 0x11,
                                inet_block("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0x01, "h2") + tlv(0x02, "") +
                                    tlv(0x04, std::string(3, '\0')) + tlv(0x20, ssl) + tlv(0x05, "\x00\xff"s)));
  ASSERT_EQ(info.tlvs.size(), 5u);
  EXPECT_EQ(info.tlvs[0].type, 0x01);
  EXPECT_EQ(info.tlvs[0].value, "h2");
  EXPECT_EQ(info.tlvs[1].type, 0x02);
  EXPECT_EQ(info.tlvs[1].value, "");
  EXPECT_EQ(info.tlvs[2].type, 0x04);
  EXPECT_EQ(info.tlvs[2].value.size(), 3u);
  EXPECT_EQ(info.tlvs[3].type, 0x20);
  EXPECT_EQ(info.tlvs[3].value, ssl);
  EXPECT_EQ(info.tlvs[4].value, "\x00\xff"s);
}

TEST(ProxyV2, ExactlyMaxHeader) {
  const std::string h = v2(0x21, 0x11, inet_block("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0xE1, std::string(200, 'v')));
  parse_ok(h, ProxyProtocol::v2, h.size());
  EXPECT_EQ(parse(h, ProxyProtocol::v2, h.size() - 1).status, ProxyParse::malformed);
}

TEST(ProxyV2, LargestHeader) {
  const std::string h = v2(0x21, 0x11, inet_block("1.2.3.4", "5.6.7.8", 1, 2) + tlv(0xE1, std::string(65535 - 15, 'v')));
  ASSERT_EQ(h.size(), 65551u);
  const auto r = parse(h, ProxyProtocol::any, 65551);
  EXPECT_EQ(r.status, ProxyParse::done);
  EXPECT_EQ(r.consumed, 65551u);
}

TEST(ProxyV2, ByteAtATimeWithTrailingBytes) {
  const std::string h = v2(0x21, 0x21, inet6_block("::1", "::2", 7, 8) + tlv(0x01, "http/1.1"));
  std::string buf;
  for (std::size_t i = 0; i < h.size(); ++i) {
    buf += h[i];
    ASSERT_EQ(parse(buf, ProxyProtocol::v2).status, i + 1 < h.size() ? ProxyParse::need_more : ProxyParse::done) << i;
  }
  buf += "\r\n\r\n";  // client bytes that look like a signature's start
  const auto r = parse(buf, ProxyProtocol::v2);
  EXPECT_EQ(r.status, ProxyParse::done);
  EXPECT_EQ(r.consumed, h.size());
}

TEST(ProxyV2Malformed, BadSignature) {
  std::string h = v2(0x21, 0x00, "");
  h[5] = 'X';
  expect_bad(h, "not a PROXY protocol header", ProxyProtocol::any, kMax, 6);
  h = v2(0x21, 0x00, "");
  h[11] = '\r';
  expect_bad(h, "not a PROXY protocol header", ProxyProtocol::v2, kMax, 12);
  expect_bad("\r\nGET", "not a PROXY protocol header", ProxyProtocol::v2, kMax, 3);
}

TEST(ProxyV2Malformed, BadVersion) {
  for (unsigned vc : {0x01u, 0x11u, 0x31u, 0xF1u})
    expect_bad(v2(vc, 0x00, ""), "bad v2 version", ProxyProtocol::any, kMax, 13);
}

TEST(ProxyV2Malformed, BadCommand) {
  for (unsigned vc : {0x22u, 0x2Fu})
    expect_bad(v2(vc, 0x00, ""), "bad v2 command (LOCAL or PROXY)", ProxyProtocol::any, kMax, 13);
}

TEST(ProxyV2Malformed, DatagramTransport) {
  for (unsigned fam : {0x12u, 0x22u, 0x32u})
    expect_bad(v2(0x21, fam, std::string(216, '\0')), "v2 datagram transport not supported", ProxyProtocol::any,
               kMax, 14);
}

TEST(ProxyV2Malformed, BadFamily) {
  for (unsigned fam : {0x01u, 0x10u, 0x13u, 0x41u, 0x02u})
    expect_bad(v2(0x21, fam, std::string(216, '\0')), "bad v2 address family", ProxyProtocol::any, kMax, 14);
}

TEST(ProxyV2Malformed, ShortAddressBlockKnownFromTheLength) {
  const char* e = "v2 address block too short";
  expect_bad(v2(0x21, 0x11, std::string(11, '\0')), e, ProxyProtocol::any, kMax, 16);
  expect_bad(v2(0x21, 0x21, std::string(35, '\0')), e, ProxyProtocol::any, kMax, 16);
  expect_bad(v2(0x21, 0x31, std::string(215, '\0')), e, ProxyProtocol::any, kMax, 16);
  expect_bad(v2(0x20, 0x11, ""), e, ProxyProtocol::any, kMax, 16);  // LOCAL still skips them
}

TEST(ProxyV2Malformed, TlvOverrun) {
  const char* e = "v2 TLV overruns the header";
  const std::string addrs = inet_block("1.2.3.4", "5.6.7.8", 1, 2);
  // A value longer than the block: known once the TLV's own header arrives (16 + 12 + 3).
  expect_bad(v2(0x21, 0x11, addrs + tlv(0x01, "abcd").substr(0, 5)), e, ProxyProtocol::any, kMax, 31);
  // One or two bytes left: not even a TLV header, known from the length field.
  expect_bad(v2(0x21, 0x11, addrs + "\x01"), e, ProxyProtocol::any, kMax, 16);
  // Two bytes left after a TLV: known once that TLV's header shows where it ends.
  expect_bad(v2(0x21, 0x11, addrs + tlv(0x01, "ok") + "\x01\x00"s), e, ProxyProtocol::any, kMax, 31);
  // The second of two TLVs overruns.
  expect_bad(v2(0x21, 0x00, tlv(0x01, "ok") + "\x02\x00\x09xy"s), e, ProxyProtocol::any, kMax, 24);
}

TEST(ProxyV2Malformed, OversizedFromTheFirst16Bytes) {
  // 16 + 5000 > 4096: refused before any address byte arrives.
  const std::string first16 = v2_len(0x21, 0x11, 5000, "");
  expect_bad(first16, "v2 header over max_proxy_header", ProxyProtocol::any, 4096, 16);
  expect_bad(v2_len(0x21, 0x00, 65535, ""), "v2 header over max_proxy_header", ProxyProtocol::v2, 65550, 16);
  EXPECT_EQ(parse(v2_len(0x21, 0x00, 65535, ""), ProxyProtocol::v2, 65551).status, ProxyParse::need_more);
  // A max_header under 16 bytes fits no header at all.
  expect_bad(v2(0x21, 0x00, ""), "v2 header over max_proxy_header", ProxyProtocol::any, 10, 10);
}

// ---- accept modes ----

TEST(ProxyAccept, EmptyInputWaits) {
  for (auto a : {ProxyProtocol::v1, ProxyProtocol::v2, ProxyProtocol::any})
    EXPECT_EQ(parse("", a).status, ProxyParse::need_more);
}

TEST(ProxyAccept, V1OnlyRefusesV2FromTheFirstByte) {
  const std::string h = v2(0x21, 0x11, inet_block("1.2.3.4", "5.6.7.8", 1, 2));
  expect_bad(h, "v2 header on a listener accepting v1 only", ProxyProtocol::v1, kMax, 1);
}

TEST(ProxyAccept, V2OnlyRefusesV1FromTheFirstByte) {
  expect_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "v1 header on a listener accepting v2 only", ProxyProtocol::v2,
             kMax, 1);
  expect_bad("PRIVMSG", "not a PROXY protocol header", ProxyProtocol::v2);
}

TEST(ProxyAccept, AnyTakesBoth) {
  EXPECT_EQ(parse_ok("PROXY UNKNOWN\r\n", ProxyProtocol::any).version, 1);
  EXPECT_EQ(parse_ok(v2(0x20, 0x00, ""), ProxyProtocol::any).version, 2);
}

// ---- CIDR ----

Cidr cidr(const char* text) {
  Cidr c;
  std::string error;
  EXPECT_TRUE(parse_cidr(text, c, error)) << text << ": " << error;
  return c;
}

PeerAddress peer(const char* text) {
  PeerAddress p;
  p.family = std::strchr(text, ':') ? AF_INET6 : AF_INET;
  EXPECT_EQ(inet_pton(p.family, text, p.addr), 1) << text;
  return p;
}

TEST(Cidr, ParsesIpv4) {
  const Cidr c = cidr("10.0.0.0/8");
  EXPECT_EQ(c.family, AF_INET);
  EXPECT_EQ(c.prefix, 8);
  EXPECT_EQ(c.addr[0], 10);
}

TEST(Cidr, ParsesIpv6) {
  const Cidr c = cidr("2001:db8::/32");
  EXPECT_EQ(c.family, AF_INET6);
  EXPECT_EQ(c.prefix, 32);
  EXPECT_EQ(c.addr[0], 0x20);
  EXPECT_EQ(c.addr[1], 0x01);
}

TEST(Cidr, SingleAddressIsAFullPrefix) {
  EXPECT_EQ(cidr("127.0.0.1").prefix, 32);
  EXPECT_EQ(cidr("::1").prefix, 128);
  EXPECT_EQ(cidr("0.0.0.0/0").prefix, 0);
  EXPECT_EQ(cidr("::/0").prefix, 0);
}

TEST(Cidr, HostBitsAreMasked) {
  const Cidr c = cidr("10.1.255.255/12");
  EXPECT_EQ(c.addr[0], 10);
  EXPECT_EQ(c.addr[1], 0);
  EXPECT_EQ(c.addr[2], 0);
  const Cidr d = cidr("2001:db8:ffff::1/33");
  EXPECT_EQ(d.addr[4], 0x80);
  EXPECT_EQ(d.addr[15], 0);
}

TEST(Cidr, Rejects) {
  for (const char* bad : {"", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/+8", "10.0.0.0/8x",
                          "10.0.0.0/-1", "10.0.0.0/08", "10.0.0.0/8/8", "10.0.0", "localhost", "10.0.0.0 /8",
                          " 10.0.0.0/8", "::1/ 64", "fe80::1%eth0/64", "1.2.3.4/1000000"}) {
    Cidr c;
    std::string error;
    EXPECT_FALSE(parse_cidr(bad, c, error)) << "'" << bad << "'";
    EXPECT_NE(error.find(std::string(1, '\'').append(bad).append(1, '\'')), std::string::npos) << error;
  }
  std::string error;
  Cidr c;
  parse_cidr("10.0.0.0/33", c, error);
  EXPECT_EQ(error, "'10.0.0.0/33': the prefix must be 0-32");
}

TEST(Cidr, ContainsIpv4) {
  const Cidr c = cidr("10.0.0.0/8");
  EXPECT_TRUE(cidr_contains(c, peer("10.0.0.1")));
  EXPECT_TRUE(cidr_contains(c, peer("10.255.255.255")));
  EXPECT_FALSE(cidr_contains(c, peer("11.0.0.0")));
  EXPECT_FALSE(cidr_contains(c, peer("::1")));
  EXPECT_TRUE(cidr_contains(cidr("192.168.1.7"), peer("192.168.1.7")));
  EXPECT_FALSE(cidr_contains(cidr("192.168.1.7"), peer("192.168.1.6")));
  EXPECT_TRUE(cidr_contains(cidr("172.16.0.0/12"), peer("172.31.255.1")));
  EXPECT_FALSE(cidr_contains(cidr("172.16.0.0/12"), peer("172.32.0.1")));
  EXPECT_TRUE(cidr_contains(cidr("0.0.0.0/0"), peer("8.8.8.8")));
}

TEST(Cidr, ContainsIpv6) {
  const Cidr c = cidr("2001:db8::/33");
  EXPECT_TRUE(cidr_contains(c, peer("2001:db8::1")));
  EXPECT_TRUE(cidr_contains(c, peer("2001:db8:7fff::1")));
  EXPECT_FALSE(cidr_contains(c, peer("2001:db8:8000::1")));
  EXPECT_TRUE(cidr_contains(cidr("::1/128"), peer("::1")));
  EXPECT_FALSE(cidr_contains(cidr("::1/128"), peer("::2")));
  EXPECT_TRUE(cidr_contains(cidr("::/0"), peer("fe80::1")));
}

TEST(Cidr, MappedPeerMatchesIpv4Ranges) {
  EXPECT_TRUE(cidr_contains(cidr("127.0.0.0/8"), peer("::ffff:127.0.0.1")));
  EXPECT_FALSE(cidr_contains(cidr("127.0.0.0/8"), peer("::ffff:128.0.0.1")));
}

TEST(Cidr, Ipv4PeerMatchesOnlyMappedIpv6Ranges) {
  EXPECT_TRUE(cidr_contains(cidr("::ffff:0:0/96"), peer("1.2.3.4")));
  EXPECT_TRUE(cidr_contains(cidr("::ffff:10.0.0.0/104"), peer("10.9.8.7")));
  EXPECT_FALSE(cidr_contains(cidr("::ffff:10.0.0.0/104"), peer("11.9.8.7")));
  EXPECT_TRUE(cidr_contains(cidr("::ffff:10.0.0.0/104"), peer("::ffff:10.9.8.7")));
  // Other IPv6 ranges, ::/0 included, never hold IPv4 clients (add 0.0.0.0/0 for them).
  EXPECT_FALSE(cidr_contains(cidr("::/0"), peer("1.2.3.4")));
  EXPECT_FALSE(cidr_contains(cidr("::/0"), peer("::ffff:1.2.3.4")));
  EXPECT_FALSE(cidr_contains(cidr("::1/128"), peer("127.0.0.1")));
}

TEST(Cidr, UnknownPeerMatchesNothing) {
  EXPECT_FALSE(cidr_contains(cidr("0.0.0.0/0"), PeerAddress{}));
  EXPECT_FALSE(cidr_contains(cidr("::/0"), PeerAddress{}));
}

// ---- listen addresses ----

ListenAddress listen_ok(const std::string& text) {
  ListenAddress a;
  std::string error;
  EXPECT_TRUE(parse_listen_address(text, a, error)) << text << ": " << error;
  return a;
}

std::string listen_error(const std::string& text) {
  ListenAddress a;
  std::string error;
  EXPECT_FALSE(parse_listen_address(text, a, error)) << text;
  EXPECT_EQ(error.rfind("listen address '" + text + "': ", 0), 0u) << error;
  return error;
}

TEST(ListenAddress, Tcp4) {
  const auto a = listen_ok("127.0.0.1:9000");
  EXPECT_EQ(a.kind, ListenAddress::Kind::tcp4);
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 9000);
  EXPECT_EQ(listen_ok("0.0.0.0:0").port, 0);
  EXPECT_EQ(listen_ok("0.0.0.0:65535").port, 65535);
}

TEST(ListenAddress, Tcp6) {
  const auto a = listen_ok("[::1]:9000");
  EXPECT_EQ(a.kind, ListenAddress::Kind::tcp6);
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 9000);
  EXPECT_EQ(listen_ok("[::]:0").host, "::");
  EXPECT_EQ(listen_ok("[::ffff:127.0.0.1]:80").kind, ListenAddress::Kind::tcp6);
}

TEST(ListenAddress, UnixPath) {
  const auto a = listen_ok("unix:/run/app.sock");
  EXPECT_EQ(a.kind, ListenAddress::Kind::unix_path);
  EXPECT_EQ(a.path, "/run/app.sock");
  EXPECT_EQ(listen_ok("unix:relative.sock").path, "relative.sock");
  EXPECT_EQ(listen_ok("unix:" + std::string(107, 'p')).path.size(), 107u);
  EXPECT_NE(listen_error("unix:" + std::string(108, 'p')).find("107"), std::string::npos);
  EXPECT_NE(listen_error("unix:").find("empty"), std::string::npos);
}

TEST(ListenAddress, UnixAbstract) {
  const auto a = listen_ok("unix:@app");
  EXPECT_EQ(a.kind, ListenAddress::Kind::unix_abstract);
  EXPECT_EQ(a.path, "app");
  EXPECT_EQ(listen_ok("unix:@" + std::string(106, 'n')).path.size(), 106u);
  EXPECT_NE(listen_error("unix:@" + std::string(107, 'n')).find("106"), std::string::npos);
  EXPECT_NE(listen_error("unix:@").find("empty"), std::string::npos);
}

TEST(ListenAddress, HostNameAsksForANumericAddress) {
  EXPECT_NE(listen_error("localhost:80").find("numeric"), std::string::npos);
  EXPECT_NE(listen_error("example.com:443").find("numeric"), std::string::npos);
}

TEST(ListenAddress, UnbracketedIpv6AsksForBrackets) {
  EXPECT_NE(listen_error("::1:80").find("bracket"), std::string::npos);
  EXPECT_NE(listen_error("2001:db8::1:443").find("bracket"), std::string::npos);
}

TEST(ListenAddress, MissingPort) {
  for (const char* t : {"127.0.0.1", "127.0.0.1:", "[::1]", "[::1]:"})
    EXPECT_NE(listen_error(t).find("port"), std::string::npos) << t;
}

TEST(ListenAddress, Rejects) {
  for (const char* t : {"", ":80", "1.2.3.4:65536", "1.2.3.4:+80", "1.2.3.4:-1", "1.2.3.4:8o", "1.2.3.4:99999999",
                        "256.0.0.1:80", "1.2.3:80", "[::1]80", "[::1", "[1.2.3.4]:80", "[fe80::1%eth0]:80",
                        "[]:80", "tcp://1.2.3.4:80", " 1.2.3.4:80"})
    listen_error(t);
  EXPECT_NE(listen_error("1.2.3.4:65536").find("0-65535"), std::string::npos);
}

}  // namespace
}  // namespace esockets::detail

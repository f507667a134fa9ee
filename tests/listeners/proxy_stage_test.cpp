// The PROXY protocol stage end to end: raw sockets write hand-made headers (v1, v2 over IPv4
// and IPv6 with TLVs, v2 LOCAL), whole, a byte at a time, or split so that the header's end
// and the client's first bytes arrive together; the handler (inline, or on a worker) sees the
// proxy's client as peer(), the header as proxy(), the listener index, and an echo without the
// header. Malformed, truncated, late, oversized and untrusted headers close the connection as
// proxy_error / proxy_timeout without any handler callback, counted per listener and
// reported as a structured Warning.
//
// Fails if the header leaks into on_message_recv, a byte of the client's payload is lost
// (peeked header consumed too far) or a drip-fed header stalls (edge-triggered wake-ups), a
// bad header reaches the handler or is not counted, the deadline is not enforced, or an
// untrusted source is read from.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <memory>
#include <thread>

#include "listener_support.hpp"

namespace esockets::test {
namespace {

class ProxyP : public ::testing::TestWithParam<unsigned> {  // param: workers
 protected:
  // Listener 0: 127.0.0.1 any; 1: [::1] v2 only; 2: Unix path v1 only; 3: 127.0.0.1 trusting
  // only 10.0.0.0/8; 4: 127.0.0.1 without PROXY.
  void start(std::chrono::milliseconds proxy_timeout = std::chrono::milliseconds(3000),
             unsigned shards = 2) {
    ServerOptions o = line_options(shards, GetParam());
    ListenerOptions any = listener_at("127.0.0.1:0");
    any.proxy_protocol = ProxyProtocol::any;
    any.proxy_timeout = proxy_timeout;
    ListenerOptions v2 = listener_at("[::1]:0");
    v2.proxy_protocol = ProxyProtocol::v2;
    v2.proxy_timeout = proxy_timeout;
    ListenerOptions ux = listener_at("unix:" + dir_.file("proxy.sock"));
    ux.proxy_protocol = ProxyProtocol::v1;
    ux.proxy_timeout = proxy_timeout;
    ListenerOptions untrusted = listener_at("127.0.0.1:0");
    untrusted.proxy_protocol = ProxyProtocol::any;
    untrusted.trusted_proxies = {"10.0.0.0/8"};
    o.listeners = {any, v2, ux, untrusted, listener_at("127.0.0.1:0")};
    server_ = std::make_unique<Server>(h_, o);
    server_->start();
    li_ = server_->listeners();
    ASSERT_EQ(li_.size(), 5u);
  }
  void TearDown() override {
    if (server_) server_->stop();
  }
  // Waits until the listener counted one more PROXY failure of kind `timeouts`.
  bool wait_proxy_count(std::size_t l, std::uint64_t n, bool timeouts) {
    return wait_until([&] {
      const ListenerStats s = server_->stats().listeners[l];
      return (timeouts ? s.proxy_timeouts : s.proxy_errors) >= n;
    });
  }
  // The checks every rejected header shares: closed without a callback, counted, reported.
  void expect_rejected(Sock& s, std::size_t l, CloseReason why, const std::string& what) {
    const EofResult r = s.wait_eof(5s);
    EXPECT_TRUE(r == EofResult::eof || r == EofResult::reset) << what << ": " << to_string(r);
    const bool timeout = why == CloseReason::proxy_timeout;
    ASSERT_TRUE(wait_proxy_count(l, 1, timeout)) << what;
    ASSERT_TRUE(wait_until([&] {
      return !h_.warnings_of(timeout ? WarningCode::proxy_timeout : WarningCode::proxy_error)
                  .empty();
    })) << what << ": no Warning";
    // The counters move before the socket's admission is given back: wait for both.
    EXPECT_TRUE(wait_until([&] { return server_->stats().listeners[l].connections == 0; }))
        << what << ": the listener's gauge is not given back";
    const Stats st = server_->stats();
    EXPECT_EQ(st.total.closes_by(why), 1u) << what;
    EXPECT_EQ(st.listeners[l].proxy_errors, timeout ? 0u : 1u) << what;
    EXPECT_EQ(st.listeners[l].proxy_timeouts, timeout ? 1u : 0u) << what;
    EXPECT_EQ(st.total.connections, 0u);
    EXPECT_EQ(st.total.warnings_of(timeout ? WarningCode::proxy_timeout : WarningCode::proxy_error),
              1u);
    const auto w = h_.warnings_of(timeout ? WarningCode::proxy_timeout : WarningCode::proxy_error);
    ASSERT_EQ(w.size(), 1u);
    EXPECT_GE(w[0].shard, 0);
    EXPECT_FALSE(w[0].text.empty());
    EXPECT_NE(w[0].text.find(li_[l].address), std::string::npos) << w[0].text;
    EXPECT_EQ(h_.connects.load(), 0) << what << ": reached on_client_connect";
    EXPECT_EQ(h_.disconnects.load(), 0) << what << ": reached on_client_disconnect";
    EXPECT_EQ(h_.messages.load(), 0u);
  }

  TempDir dir_;
  SeqHandler h_;
  std::unique_ptr<Server> server_;
  std::vector<ListenerInfo> li_;
};

std::string workers_name(const ::testing::TestParamInfo<unsigned>& i) {
  return i.param == 0 ? "inline" : "workers" + std::to_string(i.param);
}

std::string peer_text(const PeerAddress& a) { return a.to_string(); }

TEST_P(ProxyP, V1HeaderAndPayloadInOneWrite) {
  start();
  EXPECT_EQ(li_[0].proxy_protocol, ProxyProtocol::any);
  Sock s = connect_or_fail(li_[0].address);
  ASSERT_TRUE(s.send_all(proxy_v1_tcp4("192.0.2.1", "198.51.100.2", 56324, 443) +
                         numbered_lines(0, 3)));
  std::string got;
  ASSERT_TRUE(s.recv_exact(numbered_lines(0, 3).size(), got));
  EXPECT_EQ(got, numbered_lines(0, 3)) << "the echo must not include the header";
  EXPECT_TRUE(echo_numbered(s, 3, 50, "after the header"));
  auto c = h_.by_peer("192.0.2.1:56324");
  ASSERT_TRUE(c.has_value()) << "peer() is the header's source";
  EXPECT_EQ(c->family, AF_INET);
  EXPECT_EQ(c->listener, 0);
  ASSERT_TRUE(c->proxy.has_value());
  EXPECT_EQ(c->proxy->version, 1);
  EXPECT_FALSE(c->proxy->local);
  EXPECT_EQ(peer_text(c->proxy->source), "192.0.2.1:56324");
  EXPECT_EQ(peer_text(c->proxy->destination), "198.51.100.2:443");
  EXPECT_TRUE(c->proxy->tlvs.empty());
  EXPECT_TRUE(c->proxy_in_message) << "proxy() is visible in on_message_recv too";
  EXPECT_TRUE(c->listener_in_message);
  if (GetParam() > 0) {
    EXPECT_EQ(c->thread.rfind("esk-worker-", 0), 0u) << c->thread;
  }
  EXPECT_EQ(h_.seq_errors.load(), 0);
  const Stats st = server_->stats();
  EXPECT_EQ(st.listeners[0].accepts, 1u);
  EXPECT_EQ(st.listeners[0].connections, 1u);
  EXPECT_EQ(st.listeners[0].proxy_errors, 0u);
}

TEST_P(ProxyP, V2Tcp6WithTlvs) {
  start();
  Sock s = connect_or_fail(li_[1].address);
  const std::vector<std::pair<std::uint8_t, std::string>> tlvs = {
      {0x01, "h2"}, {0x05, std::string("id\0x", 4)}, {0xE0, std::string(300, 'z')}};
  ASSERT_TRUE(s.send_all(proxy_v2_tcp6("2001:db8::1", "2001:db8::2", 1234, 8443, tlvs)));
  EXPECT_TRUE(echo_numbered(s, 0, 20, "v2 TCP6 client"));
  auto c = h_.by_peer("[2001:db8::1]:1234");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->family, AF_INET6);
  EXPECT_EQ(c->listener, 1);
  ASSERT_TRUE(c->proxy.has_value());
  EXPECT_EQ(c->proxy->version, 2);
  EXPECT_EQ(peer_text(c->proxy->destination), "[2001:db8::2]:8443");
  ASSERT_EQ(c->proxy->tlvs.size(), 3u);
  EXPECT_EQ(c->proxy->tlvs[0].type, 0x01);
  EXPECT_EQ(c->proxy->tlvs[0].value, "h2");
  EXPECT_EQ(c->proxy->tlvs[1].type, 0x05);
  EXPECT_EQ(c->proxy->tlvs[1].value, std::string("id\0x", 4));
  EXPECT_EQ(c->proxy->tlvs[2].type, 0xE0);
  EXPECT_EQ(c->proxy->tlvs[2].value, std::string(300, 'z'));
  EXPECT_TRUE(c->proxy_in_message);
}

TEST_P(ProxyP, V2Tcp4OnAnyListener) {
  start();
  Sock s = connect_or_fail(li_[0].address);
  ASSERT_TRUE(s.send_all(proxy_v2_tcp4("203.0.113.9", "127.0.0.1", 40000, 80) + "0\n"));
  std::string got;
  ASSERT_TRUE(s.recv_exact(2, got));
  EXPECT_EQ(got, "0\n");
  auto c = h_.by_peer("203.0.113.9:40000");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->proxy->version, 2);
}

TEST_P(ProxyP, V2LocalKeepsTheRealPeer) {
  start();
  Sock s = connect_or_fail(li_[0].address);
  ASSERT_TRUE(s.send_all(proxy_v2_local()));
  EXPECT_TRUE(echo_numbered(s, 0, 5, "LOCAL client"));
  auto c = h_.by_peer("127.0.0.1:" + std::to_string(s.local_port()));
  ASSERT_TRUE(c.has_value()) << "a LOCAL header leaves peer() as the connection's own";
  ASSERT_TRUE(c->proxy.has_value());
  EXPECT_TRUE(c->proxy->local);
  EXPECT_EQ(c->proxy->version, 2);
  EXPECT_EQ(c->proxy->source.family, 0);
}

TEST_P(ProxyP, V1UnknownKeepsTheRealPeer) {
  start();
  Sock s = connect_or_fail(li_[0].address);
  ASSERT_TRUE(s.send_all("PROXY UNKNOWN\r\n"));
  EXPECT_TRUE(echo_numbered(s, 0, 5, "UNKNOWN client"));
  auto c = h_.by_peer("127.0.0.1:" + std::to_string(s.local_port()));
  ASSERT_TRUE(c.has_value());
  ASSERT_TRUE(c->proxy.has_value());
  EXPECT_TRUE(c->proxy->local);
  EXPECT_EQ(c->proxy->version, 1);
}

// Edge-triggered PROXY stage: every byte arrives on its own; nothing may stall.
TEST_P(ProxyP, HeaderDripFedOneByteAtATime) {
  start();
  const std::string v1 = proxy_v1_tcp4("192.0.2.7", "192.0.2.8", 1111, 2222);
  const std::string v2 = proxy_v2_tcp6("2001:db8::7", "2001:db8::8", 3333, 4444, {{0x02, "host"}});
  Sock a = connect_or_fail(li_[0].address);
  Sock b = connect_or_fail(li_[1].address);
  Sock u = connect_or_fail(li_[2].address);
  const std::string u_header = proxy_v1_tcp4("192.0.2.9", "192.0.2.10", 5555, 6666);
  const std::size_t longest = std::max({v1.size(), v2.size(), u_header.size()});
  for (std::size_t i = 0; i < longest; ++i) {
    if (i < v1.size()) {
      ASSERT_TRUE(a.send_all(v1.substr(i, 1)));
    }
    if (i < v2.size()) {
      ASSERT_TRUE(b.send_all(v2.substr(i, 1)));
    }
    if (i < u_header.size()) {
      ASSERT_TRUE(u.send_all(u_header.substr(i, 1)));
    }
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_TRUE(echo_numbered(a, 0, 10, "drip v1"));
  EXPECT_TRUE(echo_numbered(b, 0, 10, "drip v2"));
  EXPECT_TRUE(echo_numbered(u, 0, 10, "drip v1 over Unix"));
  EXPECT_TRUE(h_.by_peer("192.0.2.7:1111").has_value());
  EXPECT_TRUE(h_.by_peer("[2001:db8::7]:3333").has_value());
  auto uc = h_.by_peer("192.0.2.9:5555");
  ASSERT_TRUE(uc.has_value()) << "a Unix PROXY client's peer is the header's source";
  EXPECT_EQ(uc->listener, 2);
  EXPECT_EQ(h_.connects.load(), 3);
  EXPECT_EQ(h_.seq_errors.load(), 0);
}

// The header's end and the client's first bytes arrive together, the rest later.
TEST_P(ProxyP, HeaderEndAndPayloadStartInOneSegment) {
  start();
  const std::string header = proxy_v1_tcp4("192.0.2.20", "192.0.2.21", 7000, 7001);
  const std::string payload = numbered_lines(0, 100);
  for (std::size_t cut : {std::size_t{1}, std::size_t{2}, header.size() / 2}) {
    Sock s = connect_or_fail(li_[0].address);
    ASSERT_TRUE(s.send_all(header.substr(0, header.size() - cut)));
    std::this_thread::sleep_for(20ms);
    ASSERT_TRUE(s.send_all(header.substr(header.size() - cut) + payload.substr(0, 7)));
    std::this_thread::sleep_for(20ms);
    ASSERT_TRUE(s.send_all(payload.substr(7)));
    std::string got;
    ASSERT_TRUE(s.recv_exact(payload.size(), got)) << "cut " << cut << ": got " << got.size();
    EXPECT_EQ(got, payload) << "cut " << cut;
  }
  // v2 with a TLV split the same way.
  const std::string v2 = proxy_v2_tcp4("198.18.0.1", "198.18.0.2", 9, 10, {{0x01, "http/1.1"}});
  Sock s = connect_or_fail(li_[0].address);
  ASSERT_TRUE(s.send_all(v2.substr(0, 15)));
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(s.send_all(v2.substr(15) + "0\n1"));
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(s.send_all("\n2\n"));
  std::string got;
  ASSERT_TRUE(s.recv_exact(6, got));
  EXPECT_EQ(got, "0\n1\n2\n");
  EXPECT_EQ(h_.seq_errors.load(), 0);
  EXPECT_EQ(h_.connects.load(), 4);
}

TEST_P(ProxyP, MalformedHeaderNeverReachesTheHandler) {
  start();
  Sock s = connect_or_fail(li_[0].address);
  ASSERT_TRUE(s.send_all("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  expect_rejected(s, 0, CloseReason::proxy_error, "malformed");
}

TEST_P(ProxyP, WrongVersionForTheListener) {
  start();
  Sock s = connect_or_fail(li_[1].address);  // v2 only
  ASSERT_TRUE(s.send_all(proxy_v1_tcp4("192.0.2.1", "192.0.2.2", 1, 2)));
  expect_rejected(s, 1, CloseReason::proxy_error, "v1 on a v2 listener");
}

TEST_P(ProxyP, NoHeaderTimesOut) {
  start(300ms);
  Sock s = connect_or_fail(li_[0].address);
  const auto t0 = Clock::now();
  const EofResult r = s.wait_eof(5s);
  const auto ms = ms_since(t0);
  EXPECT_TRUE(r == EofResult::eof || r == EofResult::reset) << to_string(r);
  EXPECT_GE(ms, 250) << "closed before proxy_timeout";
  EXPECT_LE(ms, 1500) << "proxy_timeout not enforced in time";
  expect_rejected(s, 0, CloseReason::proxy_timeout, "timeout");
}

TEST_P(ProxyP, PartialHeaderTimesOut) {
  start(300ms);
  Sock s = connect_or_fail(li_[2].address);  // Unix, v1
  ASSERT_TRUE(s.send_all("PROXY TCP4 192.0.2.1 "));
  expect_rejected(s, 2, CloseReason::proxy_timeout, "partial header, Unix");
}

TEST_P(ProxyP, PeerClosesMidHeader) {
  start();
  Sock s = connect_or_fail(li_[0].address);
  ASSERT_TRUE(s.send_all("PROXY TCP4 192.0.2.1 19"));
  std::this_thread::sleep_for(30ms);
  s.shutdown_write();
  const auto t0 = Clock::now();
  expect_rejected(s, 0, CloseReason::proxy_error, "peer closed mid-header");
  EXPECT_LT(ms_since(t0), 2000) << "a half-closed header must fail at once, not at the deadline";
}

TEST_P(ProxyP, PeerClosesBeforeAnyByte) {
  start();
  Sock s = connect_or_fail(li_[0].address);
  s.close();
  ASSERT_TRUE(wait_proxy_count(0, 1, false));
  EXPECT_TRUE(wait_until([&] { return server_->stats().listeners[0].connections == 0; }));
  EXPECT_EQ(h_.connects.load(), 0);
}

TEST_P(ProxyP, UntrustedSourceClosedBeforeReading) {
  start();
  Sock s = connect_or_fail(li_[3].address);
  // Nothing sent: the close must not wait for a header (or the 3 s deadline).
  const auto t0 = Clock::now();
  const EofResult r = s.wait_eof(2s);
  EXPECT_TRUE(r == EofResult::eof || r == EofResult::reset) << to_string(r);
  EXPECT_LT(ms_since(t0), 1500);
  expect_rejected(s, 3, CloseReason::proxy_error, "untrusted");
  // A valid header from an untrusted source is refused just the same.
  Sock t = connect_or_fail(li_[3].address);
  (void)t.send_all(proxy_v1_tcp4("192.0.2.1", "192.0.2.2", 1, 2) + "0\n");
  const EofResult r2 = t.wait_eof(2s);
  EXPECT_TRUE(r2 == EofResult::eof || r2 == EofResult::reset) << to_string(r2);
  ASSERT_TRUE(wait_proxy_count(3, 2, false));
  EXPECT_EQ(h_.connects.load(), 0);
}

TEST_P(ProxyP, OversizedV2LengthRejectedAtOnce) {
  start();
  Sock s = connect_or_fail(li_[0].address);
  // Claims 60000 bytes of addresses (max_proxy_header is 4096): known from 16 bytes.
  ASSERT_TRUE(s.send_all(proxy_v2_prefix(0x21, 0x11, 60000) + std::string(100, '\0')));
  const auto t0 = Clock::now();
  expect_rejected(s, 0, CloseReason::proxy_error, "oversized v2");
  EXPECT_LT(ms_since(t0), 2000) << "an oversized claim must fail before the deadline";
}

TEST_P(ProxyP, V1WithoutCrlfPastMaxLengthRejected) {
  start();
  Sock s = connect_or_fail(li_[0].address);
  ASSERT_TRUE(s.send_all("PROXY TCP4 " + std::string(200, '1')));
  const auto t0 = Clock::now();
  expect_rejected(s, 0, CloseReason::proxy_error, "v1 over 107 bytes");
  EXPECT_LT(ms_since(t0), 2000);
}

// A plain listener next to PROXY ones reads the client's bytes as they are.
TEST_P(ProxyP, PlainListenerBesideProxyListeners) {
  start();
  Sock s = connect_or_fail(li_[4].address);
  EXPECT_TRUE(echo_numbered(s, 0, 10, "plain client"));
  auto c = h_.by_peer("127.0.0.1:" + std::to_string(s.local_port()));
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c->proxy.has_value());
  EXPECT_EQ(c->listener, 4);
}

// Many PROXY clients at once over both shards, interleaved, each with its own header.
TEST_P(ProxyP, ManyClientsEachWithItsOwnHeader) {
  start();
  const std::size_t n = scaled(64, 16);
  std::vector<Sock> socks;
  for (std::size_t i = 0; i < n; ++i) {
    socks.push_back(connect_or_fail(li_[i % 3].address));
    const auto sport = static_cast<std::uint16_t>(10000 + i);
    const std::string src = "10.9." + std::to_string(i / 200) + "." + std::to_string(i % 200 + 1);
    const std::string hdr = i % 3 == 1 ? proxy_v2_tcp4(src, "10.0.0.1", sport, 80)
                                       : proxy_v1_tcp4(src, "10.0.0.1", sport, 80);
    ASSERT_TRUE(socks.back().send_all(hdr.substr(0, hdr.size() / 2)));
  }
  for (std::size_t i = 0; i < n; ++i) {
    const auto sport = static_cast<std::uint16_t>(10000 + i);
    const std::string src = "10.9." + std::to_string(i / 200) + "." + std::to_string(i % 200 + 1);
    const std::string hdr = i % 3 == 1 ? proxy_v2_tcp4(src, "10.0.0.1", sport, 80)
                                       : proxy_v1_tcp4(src, "10.0.0.1", sport, 80);
    ASSERT_TRUE(socks[i].send_all(hdr.substr(hdr.size() / 2)));
  }
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_TRUE(echo_numbered(socks[i], 0, 20, "client " + std::to_string(i)));
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::string src = "10.9." + std::to_string(i / 200) + "." + std::to_string(i % 200 + 1);
    auto c = h_.by_peer(src + ":" + std::to_string(10000 + i));
    ASSERT_TRUE(c.has_value()) << i;
    EXPECT_EQ(c->listener, i % 3) << i;
    EXPECT_EQ(c->connects, 1);
  }
  EXPECT_EQ(h_.connects.load(), static_cast<int>(n));
  EXPECT_EQ(h_.seq_errors.load(), 0);
  EXPECT_EQ(h_.double_connects.load(), 0);
}

// A client that sends its header and payload and half-closes at once is served, then ends.
TEST_P(ProxyP, HeaderPayloadAndFinTogether) {
  start();
  Sock s = connect_or_fail(li_[0].address);
  ASSERT_TRUE(s.send_all(proxy_v1_tcp4("192.0.2.30", "192.0.2.31", 3000, 3001) +
                         numbered_lines(0, 5)));
  s.shutdown_write();
  std::string got;
  EXPECT_EQ(s.wait_eof(5s, &got), EofResult::eof);
  EXPECT_EQ(got, numbered_lines(0, 5)) << "the payload before FIN is served";
  ASSERT_TRUE(wait_until([&] { return h_.disconnects.load() == 1; }));
  auto c = h_.conns();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].peer, "192.0.2.30:3000");
  EXPECT_EQ(c[0].reason, CloseReason::peer_closed);
  EXPECT_TRUE(c[0].proxy_at_disconnect) << "proxy() is valid in on_client_disconnect";
  // A header alone and FIN: a connection that ends at once, not a PROXY error.
  Sock t = connect_or_fail(li_[0].address);
  ASSERT_TRUE(t.send_all(proxy_v1_tcp4("192.0.2.32", "192.0.2.31", 3002, 3001)));
  t.shutdown_write();
  EXPECT_EQ(t.wait_eof(5s), EofResult::eof);
  ASSERT_TRUE(wait_until([&] { return h_.disconnects.load() == 2; }));
  EXPECT_EQ(server_->stats().listeners[0].proxy_errors, 0u);
  EXPECT_EQ(h_.reason(CloseReason::peer_closed), 2);
}

// A dual-stack PROXY listener trusts an IPv4 proxy by its IPv4 range.
TEST_P(ProxyP, DualStackProxyListenerTrustsIpv4Proxies) {
  ServerOptions o = line_options(1, GetParam());
  ListenerOptions l = listener_at("[::]:0");
  l.proxy_protocol = ProxyProtocol::v1;
  l.trusted_proxies = {"127.0.0.0/8"};
  o.listeners = {l};
  server_ = std::make_unique<Server>(h_, o);
  server_->start();
  Sock s = connect_or_fail("127.0.0.1:" + std::to_string(server_->listeners()[0].port));
  ASSERT_TRUE(s.send_all(proxy_v1_tcp4("192.0.2.40", "192.0.2.41", 4000, 4001)));
  EXPECT_TRUE(echo_numbered(s, 0, 3, "IPv4 proxy of a dual-stack listener"));
  EXPECT_TRUE(h_.by_peer("192.0.2.40:4000").has_value());
  // An IPv6 proxy is outside 127.0.0.0/8.
  Sock v6 = connect_or_fail("[::1]:" + std::to_string(server_->listeners()[0].port));
  EXPECT_NE(v6.wait_eof(3s), EofResult::timeout);
  EXPECT_TRUE(wait_until([&] { return server_->stats().listeners[0].proxy_errors == 1; }));
}

INSTANTIATE_TEST_SUITE_P(Modes, ProxyP, ::testing::Values(0u, 2u), workers_name);

}  // namespace
}  // namespace esockets::test

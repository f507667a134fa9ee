// Several listeners in one Server: TCP over IPv4 and IPv6, a Unix path and an abstract Unix
// name, served together by two shards, inline and with workers. Each client echoes numbered
// lines (checked for loss, duplication and order by the handler and by the client); each
// connection reports the listener it came through and its address in the right form; the
// listeners report their bound addresses and per-listener counters. Unix clients (one shared
// socket for every shard) are spread over the shards. IPv6 dual stack (v6_only) and
// per-listener max_connections; bad listener options rejected at construction with the field
// named.
//
// Fails if a listener index, address form or counter is wrong, a Unix listener is served by
// one shard only, an IPv4 client of "[::]" reads as ::ffff:a.b.c.d, v6_only is ignored, a
// listener's cap counts another listener's connections or never frees a place, or a bad option
// reaches start().
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <set>
#include <stdexcept>
#include <thread>

#include "listener_support.hpp"

namespace esockets::test {
namespace {

class ListenersP : public ::testing::TestWithParam<unsigned> {};  // param: workers

std::string workers_name(const ::testing::TestParamInfo<unsigned>& i) {
  return i.param == 0 ? "inline" : "workers" + std::to_string(i.param);
}

// 1. Four listener kinds in one server.
TEST_P(ListenersP, EveryKindEchoesAndReportsItsListener) {
  TempDir dir;
  const std::string path = dir.file("s.sock");
  const std::string abstract = unique_abstract_name("multi");
  SeqHandler h;
  ServerOptions o = line_options(2, GetParam());
  o.listeners = {listener_at("127.0.0.1:0"), listener_at("[::1]:0"), listener_at("unix:" + path),
                 listener_at("unix:@" + abstract)};
  Server server(h, o);
  EXPECT_TRUE(server.listeners().empty()) << "listeners() is empty before start()";
  server.start();

  const std::vector<ListenerInfo> li = server.listeners();
  ASSERT_EQ(li.size(), 4u);
  EXPECT_NE(li[0].port, 0);
  EXPECT_EQ(li[0].address, "127.0.0.1:" + std::to_string(li[0].port));
  EXPECT_FALSE(li[0].unix_socket);
  EXPECT_NE(li[1].port, 0);
  EXPECT_EQ(li[1].address, "[::1]:" + std::to_string(li[1].port));
  EXPECT_FALSE(li[1].unix_socket);
  EXPECT_EQ(li[2].address, "unix:" + path);
  EXPECT_EQ(li[2].port, 0);
  EXPECT_TRUE(li[2].unix_socket);
  EXPECT_EQ(li[3].address, "unix:@" + abstract);
  EXPECT_EQ(li[3].port, 0);
  EXPECT_TRUE(li[3].unix_socket);
  for (const auto& l : li) EXPECT_EQ(l.proxy_protocol, ProxyProtocol::off);
  EXPECT_EQ(server.port(), li[0].port) << "port() is the first TCP listener's";

  constexpr int kPerListener = 3;
  const std::uint64_t kLines = scaled(200, 20);
  std::vector<Sock> socks;
  std::vector<std::size_t> which;
  for (std::size_t l = 0; l < 4; ++l) {
    for (int k = 0; k < kPerListener; ++k) {
      socks.push_back(connect_or_fail(li[l].address));
      which.push_back(l);
    }
  }
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 4 * kPerListener; }))
      << h.connects.load();
  // Interleave the clients: each sends its lines in a few rounds.
  for (std::uint64_t first = 0; first < kLines; first += kLines / 4) {
    const std::uint64_t n = std::min<std::uint64_t>(kLines / 4, kLines - first);
    for (std::size_t i = 0; i < socks.size(); ++i) {
      ASSERT_TRUE(echo_numbered(socks[i], first, n, "client " + std::to_string(i) + " of " +
                                                        li[which[i]].address));
    }
  }
  EXPECT_EQ(h.seq_errors.load(), 0);
  EXPECT_EQ(h.double_connects.load(), 0);

  // What each connection looked like to the handler.
  std::map<std::string, std::size_t> tcp_peer;  // expected getip() -> listener
  for (std::size_t i = 0; i < socks.size(); ++i) {
    if (which[i] == 0) tcp_peer["127.0.0.1:" + std::to_string(socks[i].local_port())] = 0;
    if (which[i] == 1) tcp_peer["[::1]:" + std::to_string(socks[i].local_port())] = 1;
  }
  int unix_seen = 0;
  for (const SeenConn& s : h.conns()) {
    EXPECT_LT(s.listener, 4);
    EXPECT_EQ(s.messages, kLines);
    EXPECT_TRUE(s.listener_in_message);
    EXPECT_FALSE(s.proxy.has_value());
    if (s.listener == 0) {
      EXPECT_EQ(s.family, AF_INET);
      EXPECT_EQ(tcp_peer.count(s.peer), 1u) << s.peer;
    } else if (s.listener == 1) {
      EXPECT_EQ(s.family, AF_INET6);
      EXPECT_EQ(tcp_peer.count(s.peer), 1u) << s.peer;
      if (tcp_peer.count(s.peer) == 1) {
        EXPECT_EQ(tcp_peer[s.peer], 1u);
      }
    } else {
      EXPECT_EQ(s.family, AF_UNIX);
      EXPECT_EQ(s.peer, "unix:");
      ++unix_seen;
    }
    if (GetParam() > 0) {
      EXPECT_EQ(s.thread.rfind("esk-worker-", 0), 0u) << s.thread;
    }
  }
  EXPECT_EQ(unix_seen, 2 * kPerListener);
  for (int l = 0; l < 4; ++l) EXPECT_EQ(h.per_listener[l].load(), kPerListener) << "listener " << l;

  Stats st = server.stats();
  ASSERT_EQ(st.listeners.size(), 4u);
  for (std::size_t l = 0; l < 4; ++l) {
    EXPECT_EQ(st.listeners[l].address, li[l].address);
    EXPECT_EQ(st.listeners[l].connections, static_cast<std::uint64_t>(kPerListener)) << l;
    EXPECT_EQ(st.listeners[l].accepts, static_cast<std::uint64_t>(kPerListener)) << l;
    EXPECT_EQ(st.listeners[l].refused, 0u);
    EXPECT_EQ(st.listeners[l].proxy_errors, 0u);
    EXPECT_EQ(st.listeners[l].proxy_timeouts, 0u);
  }
  EXPECT_EQ(st.total.accepts, static_cast<std::uint64_t>(4 * kPerListener));
  EXPECT_EQ(st.total.connections, static_cast<std::uint64_t>(4 * kPerListener));

  for (auto& s : socks) s.close();
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 4 * kPerListener; }));
  ASSERT_TRUE(wait_until([&] {
    Stats s = server.stats();
    for (const auto& l : s.listeners) {
      if (l.connections != 0) return false;
    }
    return s.total.connections == 0;
  })) << "per-listener connection gauges return to 0";
  EXPECT_EQ(h.reason(CloseReason::peer_closed), 4 * kPerListener);
  EXPECT_EQ(h.unknown_disconnects.load(), 0);
  server.stop();
  EXPECT_EQ(::access(path.c_str(), F_OK), -1) << "the socket file is removed by stop()";
}

// 1b. One shared Unix socket, polled by every shard: its clients are spread over the shards.
TEST_P(ListenersP, UnixClientsSpreadOverShards) {
  TempDir dir;
  SeqHandler h;
  ServerOptions o = line_options(2, GetParam());
  const std::string abstract = unique_abstract_name("spread");
  o.listeners = {listener_at("unix:" + dir.file("spread.sock")), listener_at("unix:@" + abstract)};
  Server server(h, o);
  server.start();
  const auto li = server.listeners();
  const std::size_t n = scaled(100, 24);
  std::vector<Sock> socks;
  for (std::size_t i = 0; i < n; ++i) socks.push_back(connect_or_fail(li[i % 2].address));
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(n); }))
      << h.connects.load() << " of " << n;
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_TRUE(echo_numbered(socks[i], 0, 5, "unix client " + std::to_string(i)));
  }
  const Stats st = server.stats();
  ASSERT_EQ(st.shards.size(), 2u);
  EXPECT_GT(st.shards[0].connections, 0u) << "shard 0 serves none of the Unix clients";
  EXPECT_GT(st.shards[1].connections, 0u) << "shard 1 serves none of the Unix clients";
  EXPECT_EQ(st.shards[0].connections + st.shards[1].connections, n);
  std::printf("[unix spread] shard0=%llu shard1=%llu\n",
              static_cast<unsigned long long>(st.shards[0].connections),
              static_cast<unsigned long long>(st.shards[1].connections));
  std::set<std::uint32_t> id_shards;
  for (const SeenConn& s : h.conns()) id_shards.insert(s.id.shard());
  EXPECT_EQ(h.seq_errors.load(), 0);
  server.stop();
  EXPECT_EQ(h.disconnects.load(), static_cast<int>(n));
  EXPECT_EQ(h.reason(CloseReason::shutdown), static_cast<int>(n));
}

// 5. Per-listener admission.
TEST_P(ListenersP, ListenerMaxConnectionsIsPerListener) {
  TempDir dir;
  SeqHandler h;
  ServerOptions o = line_options(2, GetParam());
  ListenerOptions a = listener_at("127.0.0.1:0");
  a.max_connections = 3;
  ListenerOptions u = listener_at("unix:" + dir.file("capped.sock"));
  u.max_connections = 2;
  o.listeners = {a, listener_at("127.0.0.1:0"), u};
  Server server(h, o);
  server.start();
  const auto li = server.listeners();

  std::vector<Sock> on_a;
  for (int i = 0; i < 3; ++i) {
    on_a.push_back(connect_or_fail(li[0].address));
    ASSERT_TRUE(echo_numbered(on_a.back(), 0, 3, "A client " + std::to_string(i)));
  }
  Sock fourth = connect_or_fail(li[0].address);
  EXPECT_NE(fourth.wait_eof(5s), EofResult::timeout) << "the 4th client of A is closed at once";
  ASSERT_TRUE(wait_until([&] { return server.stats().listeners[0].refused == 1; }));

  // Listener B has no cap of its own.
  std::vector<Sock> on_b;
  for (int i = 0; i < 5; ++i) {
    on_b.push_back(connect_or_fail(li[1].address));
    ASSERT_TRUE(echo_numbered(on_b.back(), 0, 3, "B client " + std::to_string(i)));
  }
  // The Unix listener's cap holds too (it admits before placing on a shard).
  std::vector<Sock> on_u;
  for (int i = 0; i < 2; ++i) {
    on_u.push_back(connect_or_fail(li[2].address));
    ASSERT_TRUE(echo_numbered(on_u.back(), 0, 3, "U client " + std::to_string(i)));
  }
  Sock third_u = connect_or_fail(li[2].address);
  EXPECT_NE(third_u.wait_eof(5s), EofResult::timeout) << "the 3rd Unix client is closed at once";

  Stats st = server.stats();
  EXPECT_EQ(st.listeners[0].refused, 1u);
  EXPECT_EQ(st.listeners[0].accepts, 4u);
  EXPECT_EQ(st.listeners[0].connections, 3u);
  EXPECT_EQ(st.listeners[1].refused, 0u);
  EXPECT_EQ(st.listeners[1].connections, 5u);
  EXPECT_EQ(st.listeners[2].refused, 1u);
  EXPECT_EQ(st.listeners[2].connections, 2u);
  EXPECT_EQ(st.total.closes_by(CloseReason::refused), 2u);
  EXPECT_EQ(st.total.refused, 2u);
  EXPECT_EQ(h.connects.load(), 3 + 5 + 2) << "refused clients never reach on_client_connect";
  EXPECT_EQ(h.warnings_of(WarningCode::connection_refused).size(), 2u);

  // A place frees when one of A's clients leaves.
  on_a[0].close();
  ASSERT_TRUE(wait_until([&] { return server.stats().listeners[0].connections == 2; }));
  Sock again = connect_or_fail(li[0].address);
  EXPECT_TRUE(echo_numbered(again, 0, 3, "A client after a place freed"));
  on_u[0].close();
  ASSERT_TRUE(wait_until([&] { return server.stats().listeners[2].connections == 1; }));
  Sock again_u = connect_or_fail(li[2].address);
  EXPECT_TRUE(echo_numbered(again_u, 0, 3, "U client after a place freed"));
  EXPECT_EQ(server.stats().listeners[0].refused, 1u);
  EXPECT_EQ(server.stats().listeners[2].refused, 1u);
  EXPECT_EQ(h.seq_errors.load(), 0);
  server.stop();
  EXPECT_EQ(h.disconnects.load(), h.connects.load());
}

INSTANTIATE_TEST_SUITE_P(Modes, ListenersP, ::testing::Values(0u, 2u), workers_name);

// 2. Dual stack.
int connect_v4(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST(ListenersV6, DualStackAcceptsIpv4AsIpv4) {
  SeqHandler h;
  ServerOptions o = line_options(2, 0);
  ListenerOptions l = listener_at("[::]:0");
  l.v6_only = false;
  o.listeners = {l};
  Server server(h, o);
  server.start();
  const auto li = server.listeners();
  ASSERT_EQ(li.size(), 1u);
  EXPECT_EQ(li[0].address, "[::]:" + std::to_string(li[0].port));
  const int fd = connect_v4(li[0].port);
  ASSERT_GE(fd, 0) << "an IPv4 client reaches a dual-stack [::] listener";
  Sock v4 = Sock::adopt(fd);
  ASSERT_TRUE(echo_numbered(v4, 0, 10, "IPv4 client of [::]"));
  Sock v6 = connect_or_fail("[::1]:" + std::to_string(li[0].port));
  ASSERT_TRUE(echo_numbered(v6, 0, 10, "IPv6 client of [::]"));
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 2; }));
  auto s4 = h.by_peer("127.0.0.1:" + std::to_string(v4.local_port()));
  ASSERT_TRUE(s4.has_value()) << "the IPv4 client reads as 127.0.0.1:port, not ::ffff:127.0.0.1";
  EXPECT_EQ(s4->family, AF_INET);
  auto s6 = h.by_peer("[::1]:" + std::to_string(v6.local_port()));
  ASSERT_TRUE(s6.has_value());
  EXPECT_EQ(s6->family, AF_INET6);
  server.stop();
}

TEST(ListenersV6, V6OnlyRefusesIpv4) {
  SeqHandler h;
  ServerOptions o = line_options(2, 0);
  ListenerOptions l = listener_at("[::]:0");
  l.v6_only = true;
  o.listeners = {l};
  Server server(h, o);
  server.start();
  const auto port = server.listeners()[0].port;
  const int fd = connect_v4(port);
  EXPECT_LT(fd, 0) << "an IPv4 connect to a v6_only listener's port must fail";
  if (fd >= 0) ::close(fd);
  Sock v6 = connect_or_fail("[::1]:" + std::to_string(port));
  EXPECT_TRUE(echo_numbered(v6, 0, 10, "IPv6 client of v6_only [::]"));
  server.stop();
  EXPECT_EQ(h.connects.load(), 1);
}

// 4. Bad options are rejected at construction, naming the field.
struct BadCase {
  std::string name;
  std::function<void(ServerOptions&)> set;
  std::string field;  // what the message must contain
};

std::vector<ListenerOptions> one(ListenerOptions l) { return {std::move(l)}; }

TEST(ListenersOptions, BadOptionsNameTheField) {
  ListenerOptions proxy = listener_at("127.0.0.1:0");
  proxy.proxy_protocol = ProxyProtocol::v1;
  const std::vector<BadCase> cases = {
      {"host name", [](ServerOptions& o) { o.listeners = one(listener_at("localhost:80")); },
       "listeners[0].address"},
      {"unbracketed v6", [](ServerOptions& o) { o.listeners = one(listener_at("::1:80")); },
       "listeners[0].address"},
      {"no port", [](ServerOptions& o) { o.listeners = one(listener_at("1.2.3.4")); },
       "listeners[0].address"},
      {"empty unix", [](ServerOptions& o) { o.listeners = one(listener_at("unix:")); },
       "listeners[0].address"},
      {"empty abstract", [](ServerOptions& o) { o.listeners = one(listener_at("unix:@")); },
       "listeners[0].address"},
      {"long unix path",
       [](ServerOptions& o) { o.listeners = one(listener_at("unix:/tmp/" + std::string(120, 'x'))); },
       "listeners[0].address"},
      {"port 70000", [](ServerOptions& o) { o.listeners = one(listener_at("127.0.0.1:70000")); },
       "listeners[0].address"},
      {"v6 port 70000", [](ServerOptions& o) { o.listeners = one(listener_at("[::1]:70000")); },
       "listeners[0].address"},
      {"empty address", [](ServerOptions& o) { o.listeners = one(listener_at("")); },
       "listeners[0].address"},
      {"second bad",
       [](ServerOptions& o) {
         o.listeners = {listener_at("127.0.0.1:0"), listener_at("127.0.0.1:x")};
       },
       "listeners[1].address"},
      {"bad cidr prefix",
       [proxy](ServerOptions& o) {
         ListenerOptions l = proxy;
         l.trusted_proxies = {"10.0.0.0/33"};
         o.listeners = one(l);
       },
       "listeners[0].trusted_proxies"},
      {"bad cidr text",
       [proxy](ServerOptions& o) {
         ListenerOptions l = proxy;
         l.trusted_proxies = {"10.0.0.0/8", "proxy.example"};
         o.listeners = one(l);
       },
       "listeners[0].trusted_proxies"},
      {"no trusted proxies",
       [proxy](ServerOptions& o) {
         ListenerOptions l = proxy;
         l.trusted_proxies = {};
         o.listeners = one(l);
       },
       "listeners[0].trusted_proxies"},
      {"max_proxy_header small",
       [proxy](ServerOptions& o) {
         ListenerOptions l = proxy;
         l.max_proxy_header = 231;
         o.listeners = one(l);
       },
       "listeners[0].max_proxy_header"},
      {"max_proxy_header large",
       [proxy](ServerOptions& o) {
         ListenerOptions l = proxy;
         l.max_proxy_header = 65552;
         o.listeners = one(l);
       },
       "listeners[0].max_proxy_header"},
      {"proxy_timeout zero",
       [proxy](ServerOptions& o) {
         ListenerOptions l = proxy;
         l.proxy_timeout = std::chrono::milliseconds(0);
         o.listeners = one(l);
       },
       "listeners[0].proxy_timeout"},
      {"negative backlog",
       [](ServerOptions& o) {
         ListenerOptions l = listener_at("127.0.0.1:0");
         l.backlog = -1;
         o.listeners = one(l);
       },
       "listeners[0].backlog"},
      {"unix_mode",
       [](ServerOptions& o) {
         ListenerOptions l = listener_at("unix:/tmp/esk-never.sock");
         l.unix_mode = 010000;
         o.listeners = one(l);
       },
       "listeners[0].unix_mode"},
      {"65 listeners",
       [](ServerOptions& o) {
         o.listeners.clear();
         for (int i = 0; i < 65; ++i) o.listeners.push_back(listener_at("127.0.0.1:0"));
       },
       "64"},
      {"duplicate tcp",
       [](ServerOptions& o) {
         o.listeners = {listener_at("127.0.0.1:45678"), listener_at("127.0.0.1:45678")};
       },
       "listeners[1].address"},
      {"admin host name", [](ServerOptions& o) { o.admin = "localhost:9100"; }, "admin"},
      {"admin no port", [](ServerOptions& o) { o.admin = "127.0.0.1"; }, "admin"},
      {"cpu out of range", [](ServerOptions& o) { o.cpu_affinity.cpus = {0, 4096}; },
       "cpu_affinity.cpus"},
      {"cpu negative", [](ServerOptions& o) { o.cpu_affinity.cpus = {-1}; }, "cpu_affinity.cpus"},
  };
  CountingHandler h;
  for (const BadCase& c : cases) {
    ServerOptions o = loopback_options();
    c.set(o);
    try {
      Server s(h, o);
      ADD_FAILURE() << c.name << ": constructed without an error";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(c.field), std::string::npos)
          << c.name << ": '" << e.what() << "' does not name " << c.field;
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << ": threw something else: " << e.what();
    }
  }
  // 64 listeners are fine.
  ServerOptions o = loopback_options();
  for (int i = 0; i < 64; ++i) o.listeners.push_back(listener_at("127.0.0.1:0"));
  EXPECT_NO_THROW(Server(h, o));
}

// The same Unix path twice cannot both be bound: it must be refused at construction like a
// duplicate TCP address, not at start() as "another process is listening".
TEST(ListenersOptions, DuplicateUnixPathRejectedAtConstruction) {
  CountingHandler h;
  for (const std::string& addr : {std::string("unix:/tmp/esk-dup-never.sock"),
                                 std::string("unix:@esk-dup-never")}) {
    ServerOptions o = loopback_options();
    o.listeners = {listener_at(addr), listener_at(addr)};
    try {
      Server s(h, o);
      ADD_FAILURE() << addr << " listed twice was accepted at construction";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("listeners[1].address"), std::string::npos) << e.what();
    }
  }
}

// Many listeners with ephemeral ports on the same host are fine (not duplicates).
TEST(ListenersOptions, SeveralEphemeralListenersOnOneHost) {
  SeqHandler h;
  ServerOptions o = line_options(2, 0);
  for (int i = 0; i < 6; ++i) o.listeners.push_back(listener_at("127.0.0.1:0"));
  Server server(h, o);
  server.start();
  const auto li = server.listeners();
  std::set<std::uint16_t> ports;
  for (std::size_t i = 0; i < li.size(); ++i) {
    ports.insert(li[i].port);
    Sock s = connect_or_fail(li[i].address);
    EXPECT_TRUE(echo_numbered(s, 0, 3, li[i].address));
  }
  EXPECT_EQ(ports.size(), 6u);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 6; }));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(h.per_listener[i].load(), 1) << i;
  server.stop();
}

}  // namespace
}  // namespace esockets::test

// esockets behind a real HAProxy (Debian's haproxy 2.6, run in the foreground with -db on free
// loopback ports below 32768, stopped at the end):
//  * PROXY protocol v1 and v2 (send-proxy / send-proxy-v2) into an in-process Server whose
//    listener accepts either: esockets-flood connects to HAProxy from 127.0.0.2 and 127.0.0.3,
//    and the server must see exactly those clients (never HAProxy's 127.0.0.1), each once.
//  * Drain: docs/haproxy.cfg, unchanged (its addresses come from the environment), in front of
//    two esockets-echo processes; SIGTERM to one while esockets-flood opens new connections
//    through HAProxy. Its /health turns 503, HAProxy marks it DOWN, new connections go to the
//    other instance, nothing fails, and a client already connected to it gets every byte of its
//    echo, then FIN, when it stops.
// Every wait is bounded; the load is bounded in connections and seconds. The figures are
// printed (std::cout) for the record.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "haproxy_support.hpp"

namespace esockets::test {
namespace {

// ---- a. PROXY v1 / v2 through HAProxy into an in-process Server -----------------------------

struct Seen {
  std::string ip;
  std::uint16_t port = 0;
  bool has_proxy = false;
  std::uint8_t version = 0;
  bool local = false;
  bool source_is_peer = false;  // proxy()->source equals peer()
  std::string dst_ip;
  std::uint16_t dst_port = 0;
};

class RecordingEcho : public Handler {
 public:
  bool on_client_connect(Connection& c) override {
    Seen s;
    s.ip = ip_of(c.peer());
    s.port = c.peer().port;
    if (const ProxyInfo* p = c.proxy()) {
      s.has_proxy = true;
      s.version = p->version;
      s.local = p->local;
      s.source_is_peer = p->source.family == c.peer().family && p->source.port == c.peer().port &&
                         std::memcmp(p->source.addr, c.peer().addr, sizeof p->source.addr) == 0;
      s.dst_ip = ip_of(p->destination);
      s.dst_port = p->destination.port;
    }
    std::lock_guard lk(mu_);
    seen_.push_back(std::move(s));
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override { c.send(m); }
  void on_client_disconnect(Connection&, CloseReason) override { disconnects++; }
  std::vector<Seen> seen() {
    std::lock_guard lk(mu_);
    return seen_;
  }
  std::atomic<std::size_t> disconnects{0};

 private:
  std::mutex mu_;
  std::vector<Seen> seen_;
};

struct ProxyMode {
  const char* keyword;  // HAProxy's server option
  std::uint8_t version;
};

void PrintTo(const ProxyMode& m, std::ostream* os) { *os << m.keyword; }

class HaproxyProxyProtocol : public ::testing::TestWithParam<ProxyMode> {};

TEST_P(HaproxyProxyProtocol, ServerSeesTheFloodsSourceAddressesNotHaproxys) {
  const ProxyMode mode = GetParam();
  if (find_haproxy().empty()) GTEST_SKIP() << "haproxy is not installed (tools/install-deps.sh)";
  TempDir dir;
  ASSERT_TRUE(dir.ok());

  RecordingEcho h;
  ServerOptions o;
  ListenerOptions l;
  l.address = "127.0.0.1:0";
  l.proxy_protocol = ProxyProtocol::any;
  o.listeners.push_back(l);
  Server server(h, o);
  server.start();
  const std::uint16_t server_port = server.port();

  Program haproxy;
  std::vector<std::uint16_t> ports;
  ASSERT_TRUE(start_haproxy(haproxy, dir, ports, 1, [&](const std::vector<std::uint16_t>& p) {
    const std::string cfg = dir.file("haproxy.cfg");
    std::ofstream(cfg) << "global\n"
                          "    log stderr format short local0 notice\n"
                          "defaults\n"
                          "    mode tcp\n"
                          "    log global\n"
                          "    timeout connect 5s\n"
                          "    timeout client 30s\n"
                          "    timeout server 30s\n"
                          "frontend fe\n"
                          "    bind 127.0.0.1:"
                       << p[0]
                       << "\n"
                          "    default_backend be\n"
                          "backend be\n"
                          "    server s1 127.0.0.1:"
                       << server_port << " " << mode.keyword << "\n";
    return std::make_pair(cfg, std::vector<std::string>{});
  })) << "haproxy never listened";
  const std::uint16_t frontend = ports[0];
  std::cout << "haproxy config (" << mode.keyword << "):\n" << read_file(dir.file("haproxy.cfg"));

  const std::size_t conns = scaled(200, 20);
  const std::string json = dir.file("flood.json");
  Program flood;
  ASSERT_TRUE(
      flood.spawn({ESOCKETS_FLOOD_PATH, "--port", std::to_string(frontend), "-c",
                   std::to_string(conns), "--threads", "1", "--duration", "3", "--verify",
                   "--source-ips", "127.0.0.2,127.0.0.3", "--quiet", "--json", json, "pingpong"},
                  dir.file("flood.out")));
  const int flood_rc = flood.wait(60s);
  const floodtest::JValue r = read_json(json);
  const auto& c = r["connections"];
  const auto& d = r["delivery"];
  std::cout << "flood: exit " << flood_rc << ", connections requested " << count(c["requested"])
            << " established " << count(c["established"]) << " connects " << count(c["connects_ok"])
            << " failed " << count(c["failed"]) << ", requests answered "
            << count(r["requests"]["answered"]) << " unanswered "
            << count(r["requests"]["unanswered"]) << ", errors " << count(r["errors"]["total"])
            << ", lost " << count(d["lost"]) << " duplicated " << count(d["duplicated"])
            << " reordered " << count(d["reordered"]) << " corrupted " << count(d["corrupted"])
            << "\n";
  EXPECT_EQ(flood_rc, 0) << read_file(dir.file("flood.out"));
  ASSERT_TRUE(r.has("connections"))
      << "no JSON from the flood: " << read_file(dir.file("flood.out"));
  EXPECT_EQ(r["errors"]["total"].num(), 0);
  EXPECT_EQ(c["failed"].num(), 0);
  EXPECT_EQ(c["established"].num(), static_cast<double>(conns));
  EXPECT_TRUE(d["checked"].b);
  EXPECT_EQ(d["lost"].num() + d["duplicated"].num() + d["reordered"].num() + d["corrupted"].num(),
            0);
  EXPECT_EQ(r["requests"]["unanswered"].num(), 0);
  EXPECT_GT(r["requests"]["answered"].num(), 0);

  // HAProxy closes its side to the server when the flood's clients close.
  EXPECT_TRUE(wait_until([&] { return server.client_count() == 0; }, 15s));
  const std::vector<Seen> seen = h.seen();
  std::set<std::string> ips;
  std::set<std::pair<std::string, std::uint16_t>> pairs;
  std::size_t with_proxy = 0, right_version = 0, local = 0, source_is_peer = 0, to_frontend = 0;
  std::size_t in_range = 0;
  const auto [lo, hi] = ephemeral_range();
  std::uint16_t min_port = 65535, max_port = 0;
  for (const Seen& s : seen) {
    ips.insert(s.ip);
    pairs.emplace(s.ip, s.port);
    with_proxy += s.has_proxy;
    right_version += s.version == mode.version;
    local += s.local;
    source_is_peer += s.source_is_peer;
    to_frontend += s.dst_ip == "127.0.0.1" && s.dst_port == frontend;
    in_range += s.port >= lo && s.port <= hi;
    min_port = std::min(min_port, s.port);
    max_port = std::max(max_port, s.port);
  }
  std::string ip_list;
  for (const auto& ip : ips) ip_list += (ip_list.empty() ? "" : ", ") + ip;
  std::cout << "server (" << mode.keyword << "): " << seen.size() << " connections, "
            << pairs.size() << " distinct (ip, port), addresses {" << ip_list << "}, ports "
            << min_port << ".." << max_port << " (ephemeral range " << lo << ".." << hi << "), "
            << with_proxy << " with proxy(), " << right_version << " of version "
            << int{mode.version} << ", " << to_frontend << " to 127.0.0.1:" << frontend << "\n";

  EXPECT_EQ(ips, (std::set<std::string>{"127.0.0.2", "127.0.0.3"}))
      << "the server must see the flood's sources, never HAProxy's own 127.0.0.1";
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(c["connects_ok"].num()))
      << "one server connection per connection the flood opened";
  EXPECT_EQ(pairs.size(), seen.size()) << "every (ip, port) once";
  EXPECT_EQ(in_range, seen.size()) << "every port from the ephemeral range";
  EXPECT_GE(min_port, 32768);
  EXPECT_EQ(with_proxy, seen.size());
  EXPECT_EQ(right_version, seen.size());
  EXPECT_EQ(local, 0u);
  EXPECT_EQ(source_is_peer, seen.size()) << "peer() is the header's source";
  EXPECT_EQ(to_frontend, seen.size()) << "the header's destination is HAProxy's frontend";

  const Stats st = server.stats();
  EXPECT_EQ(st.total.closes_by(CloseReason::proxy_error), 0u);
  EXPECT_EQ(st.total.closes_by(CloseReason::proxy_timeout), 0u);
  EXPECT_EQ(st.total.closes_by(CloseReason::reset), 0u);
  EXPECT_EQ(h.disconnects.load(), seen.size());
  server.stop();
  stop_haproxy(haproxy);
  if (HasFailure()) std::cout << "haproxy log:\n" << read_file(dir.file("haproxy.log"));
}

INSTANTIATE_TEST_SUITE_P(SendProxy, HaproxyProxyProtocol,
                         ::testing::Values(ProxyMode{"send-proxy", 1},
                                           ProxyMode{"send-proxy-v2", 2}),
                         [](const ::testing::TestParamInfo<ProxyMode>& i) {
                           return std::string(i.param.version == 1 ? "v1" : "v2");
                         });

// ---- b. Drain: docs/haproxy.cfg, two esockets-echo, SIGTERM to one under churn --------------

struct Echo {
  ChildProcess child;
  std::uint16_t port = 0, admin = 0;
};

// Everything a child wrote to stdout, read until the pipe has been quiet for 50 ms (bounded).
std::string all_output(ChildProcess& child) {
  for (int k = 0; k < 100; ++k) {
    const std::size_t before = child.output().size();
    if (child.output(50ms).size() == before) break;
  }
  return child.output();
}

bool start_echo(Echo& e) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    e.port = free_port();
    e.admin = free_port();
    // --sndbuf 64 KiB: a client that stops reading leaves most of a large echo queued in the
    // engine (not in the kernel), so the drain check below sees the stop flush it.
    if (!e.child.spawn({ESOCKETS_ECHO_BINARY, "--listen", "127.0.0.1:" + std::to_string(e.port),
                        "--proxy-protocol", "--admin", "127.0.0.1:" + std::to_string(e.admin),
                        "--drain", "3", "--sndbuf", "65536"},
                       ChildProcess::Stderr::file)) {
      return false;
    }
    if (e.child.wait_listening(10s) == e.port &&
        e.child.output().find("admin=127.0.0.1:" + std::to_string(e.admin)) != std::string::npos) {
      return true;
    }
    e.child.stop(2s);
  }
  return false;
}

// A PROXY v2 header (PROXY command, TCP over IPv4) naming src -> dst.
std::string proxy_v2_header(const char* src, std::uint16_t sport, const char* dst,
                            std::uint16_t dport) {
  std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
  h += '\x21';  // version 2, PROXY
  h += '\x11';  // AF_INET, STREAM
  h += '\0';
  h += '\x0c';  // 12 bytes of addresses
  in_addr a{};
  ::inet_pton(AF_INET, src, &a);
  h.append(reinterpret_cast<const char*>(&a), 4);
  ::inet_pton(AF_INET, dst, &a);
  h.append(reinterpret_cast<const char*>(&a), 4);
  const std::uint16_t sp = htons(sport), dp = htons(dport);
  h.append(reinterpret_cast<const char*>(&sp), 2);
  h.append(reinterpret_cast<const char*>(&dp), 2);
  return h;
}

// The numbers of esockets-echo's exit print: the "total" row's accepts and the "closes:" line.
struct EchoExit {
  long long accepts = -1;
  std::map<std::string, long long> closes;
};
EchoExit parse_echo_exit(const std::string& out) {
  EchoExit e;
  const std::size_t stop = out.find("stopping");
  if (stop == std::string::npos) return e;
  std::istringstream in(out.substr(stop));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string first;
    words >> first;
    if (first == "total") {
      long long conns = 0;
      words >> conns >> e.accepts;
    } else if (first == "closes:") {
      std::string kv;
      while (words >> kv) {
        const std::size_t eq = kv.find('=');
        if (eq != std::string::npos) e.closes[kv.substr(0, eq)] = std::atoll(kv.c_str() + eq + 1);
      }
    }
  }
  return e;
}

struct Sample {
  double t = 0;                // seconds since the SIGTERM (negative before it)
  long long a1 = -1, a2 = -1;  // esockets_accepts_total of each instance (-1: no answer)
  long long stot1 = -1, stot2 = -1;
  std::string st1, st2;
};

TEST(HaproxyDrain, SigtermTurnsHealthOffTrafficMovesAndTheStopFlushesWithFin) {
  if (find_haproxy().empty()) GTEST_SKIP() << "haproxy is not installed (tools/install-deps.sh)";
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string cfg = ESOCKETS_HAPROXY_CONFIG;  // docs/haproxy.cfg, used as it is
  ASSERT_TRUE(std::filesystem::exists(cfg)) << cfg;

  Echo e1, e2;
  ASSERT_TRUE(start_echo(e1)) << e1.child.output() << e1.child.err();
  ASSERT_TRUE(start_echo(e2)) << e2.child.output() << e2.child.err();

  Program haproxy;
  std::vector<std::uint16_t> ports;
  ASSERT_TRUE(start_haproxy(haproxy, dir, ports, 2, [&](const std::vector<std::uint16_t>& p) {
    std::vector<std::string> env = {
        "ESK_FRONTEND=127.0.0.1:" + std::to_string(p[0]),
        "ESK_STATS=127.0.0.1:" + std::to_string(p[1]),
        "ESK1_ADDR=127.0.0.1:" + std::to_string(e1.port),
        "ESK1_ADMIN_PORT=" + std::to_string(e1.admin),
        "ESK2_ADDR=127.0.0.1:" + std::to_string(e2.port),
        "ESK2_ADMIN_PORT=" + std::to_string(e2.admin),
    };
    return std::make_pair(cfg, env);
  })) << "haproxy never listened";
  const std::uint16_t frontend = ports[0], stats_port = ports[1];
  std::cout << "haproxy -db -f " << cfg << " with ESK_FRONTEND=127.0.0.1:" << frontend
            << " ESK_STATS=127.0.0.1:" << stats_port << " ESK1_ADDR=127.0.0.1:" << e1.port
            << " ESK1_ADMIN_PORT=" << e1.admin << " ESK2_ADDR=127.0.0.1:" << e2.port
            << " ESK2_ADMIN_PORT=" << e2.admin << "\n";

  // Both instances UP (their first check passed) before any load.
  ASSERT_TRUE(poll_until(
      [&] {
        auto s = haproxy_stats(stats_port);
        return s["esockets/esk1"].status == "UP" && s["esockets/esk1"].check_status == "L7OK" &&
               s["esockets/esk2"].status == "UP" && s["esockets/esk2"].check_status == "L7OK";
      },
      15s))
      << read_file(dir.file("haproxy.log"));

  // Load: new connections all the time (churn: connect, one echoed request, close), through
  // HAProxy, from 127.0.0.2 and 127.0.0.3, bounded by --connect-rate and --duration.
  const std::size_t rate = scaled(400, 50);
  const std::string json = dir.file("flood.json");
  Program flood;
  const auto t0 = Clock::now();
  ASSERT_TRUE(
      flood.spawn({ESOCKETS_FLOOD_PATH, "--port", std::to_string(frontend), "-c", "16", "--threads",
                   "1", "--connect-rate", std::to_string(rate), "--duration", "6", "--verify",
                   "--source-ips", "127.0.0.2,127.0.0.3", "--quiet", "--json", json, "churn", "1"},
                  dir.file("flood.out")));

  // Timeline of accepts (each instance's /metrics) and sessions (HAProxy's stats), for the record.
  std::mutex samples_mu;
  std::vector<Sample> samples;
  std::atomic<bool> sampling{true};
  std::atomic<long long> term_ns{0};
  std::thread sampler([&] {
    while (sampling.load()) {
      Sample s;
      const HttpReply m1 = http_get(e1.admin, "/metrics", 1s);
      const HttpReply m2 = http_get(e2.admin, "/metrics", 1s);
      if (m1.status == 200) s.a1 = metric_sum(m1.body, "esockets_accepts_total");
      if (m2.status == 200) s.a2 = metric_sum(m2.body, "esockets_accepts_total");
      auto hs = haproxy_stats(stats_port);
      s.stot1 = hs["esockets/esk1"].stot;
      s.stot2 = hs["esockets/esk2"].stot;
      s.st1 = hs["esockets/esk1"].status;
      s.st2 = hs["esockets/esk2"].status;
      // Before the SIGTERM, relative to when it is due (1.5 s into the load).
      const long long term = term_ns.load();
      const Clock::time_point ref =
          term == 0 ? t0 + 1500ms : Clock::time_point(Clock::duration(term));
      s.t = std::chrono::duration<double>(Clock::now() - ref).count();
      {
        std::lock_guard lk(samples_mu);
        samples.push_back(s);
      }
      std::this_thread::sleep_for(100ms);
    }
  });
  struct JoinSampler {
    std::atomic<bool>& flag;
    std::thread& t;
    ~JoinSampler() {
      flag = false;
      if (t.joinable()) t.join();
    }
  } join_sampler{sampling, sampler};

  // A long-lived client straight to instance 1 (with the PROXY v2 header HAProxy would send):
  // a 900,000-byte request, whose echo it starts reading, then stops reading until instance 1
  // begins its stop. Under 1 MiB (output_high_watermark), so the server reads all of it; a
  // 64 KiB receive buffer here and --sndbuf there keep most of the echo queued in the engine.
  const int direct = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(direct, 0);
  struct CloseFd {
    int fd;
    ~CloseFd() { ::close(fd); }
  } close_direct{direct};
  const int rcvbuf = 65536;
  ::setsockopt(direct, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  timeval tv{20, 0};
  ::setsockopt(direct, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(direct, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(e1.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(direct, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }
  std::string request(900000, '\0');
  std::mt19937 rng(12345);
  for (char& ch : request) ch = static_cast<char>('a' + rng() % 26);
  const std::string header = proxy_v2_header("198.51.100.7", 40000, "127.0.0.1", e1.port);
  auto send_all = [&](const std::string& bytes) {
    std::size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t n = ::send(direct, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  };
  ASSERT_TRUE(send_all(header));
  ASSERT_TRUE(send_all(request)) << "sending the request failed: errno " << errno;
  std::string echoed;
  char buf[65536];
  enum class End { none, eof, reset, timeout, error } end = End::none;
  auto read_some = [&](std::size_t until) {
    while (echoed.size() < until) {
      const ssize_t n = ::recv(direct, buf, sizeof buf, 0);
      if (n > 0) {
        echoed.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      end = n == 0                                      ? End::eof
            : errno == ECONNRESET                       ? End::reset
            : (errno == EAGAIN || errno == EWOULDBLOCK) ? End::timeout
                                                        : End::error;
      return;
    }
  };
  read_some(100000);
  ASSERT_EQ(end, End::none) << "the direct client's echo ended early";
  const std::size_t before_term = echoed.size();

  // 1.5 s into the load: SIGTERM to instance 1.
  std::this_thread::sleep_until(t0 + 1500ms);
  const HttpReply m1_term = http_get(e1.admin, "/metrics");
  const HttpReply m2_term = http_get(e2.admin, "/metrics");
  auto hs_term = haproxy_stats(stats_port);
  const auto t_term = Clock::now();
  term_ns = t_term.time_since_epoch().count();
  ::kill(e1.child.pid(), SIGTERM);
  const long long a1_term = metric_sum(m1_term.body, "esockets_accepts_total");
  const long long a2_term = metric_sum(m2_term.body, "esockets_accepts_total");

  // HAProxy marks it DOWN from its /health (503) while it still serves (before its stop).
  auto since_term = [&] { return std::chrono::duration<double>(Clock::now() - t_term).count(); };
  std::map<std::string, HaproxyServer> hs_down;
  ASSERT_TRUE(poll_until(
      [&] {
        hs_down = haproxy_stats(stats_port);
        return hs_down["esockets/esk1"].status.rfind("DOWN", 0) == 0;
      },
      10s))
      << "HAProxy never marked instance 1 DOWN\n"
      << read_file(dir.file("haproxy.log"));
  const double down_after = since_term();
  const bool stopping_before_down = e1.child.output().find("stopping") != std::string::npos;
  EXPECT_FALSE(stopping_before_down) << "instance 1 began its stop before HAProxy marked it DOWN";
  const HttpReply health1 = http_get(e1.admin, "/health");
  const HttpReply m1_down = http_get(e1.admin, "/metrics");
  EXPECT_EQ(health1.status, 503) << health1.body;
  const long long queued_while_draining = metric_sum(m1_down.body, "esockets_queued_output_bytes");

  // Its stop begins after --drain 3: the direct client now reads the rest, then must see EOF.
  ASSERT_TRUE(e1.child.wait_for_output("stopping", 20s)) << e1.child.output();
  const double stopping_after = since_term();
  read_some(request.size() + 1);
  const double client_end_after = since_term();
  ::shutdown(direct, SHUT_WR);  // our FIN: the server's linger after its close ends at once

  // Instance 1 exits by itself: drain 3 s + stop (shutdown_timeout 5 s) + slack.
  const bool exited = poll_until([&] { return !e1.child.alive(); }, 20s);
  const double exit_after = since_term();
  EXPECT_TRUE(exited) << "instance 1 did not exit after its drain";
  const int e1_rc = e1.child.stop(1s);
  const std::string e1_out = all_output(e1.child);
  EchoExit e1_exit = parse_echo_exit(e1_out);

  const int flood_rc = flood.wait(60s);
  sampling = false;
  if (sampler.joinable()) sampler.join();
  const floodtest::JValue r = read_json(json);
  auto hs_end = haproxy_stats(stats_port);
  const HttpReply m2_end = http_get(e2.admin, "/metrics");
  const long long a2_end = metric_sum(m2_end.body, "esockets_accepts_total");
  const std::string haproxy_log = read_file(dir.file("haproxy.log"));

  // ---- the record ----
  const auto& c = r["connections"];
  const auto& d = r["delivery"];
  const auto& hs1 = hs_end["esockets/esk1"];
  const auto& hs2 = hs_end["esockets/esk2"];
  std::cout << "flood churn 1 through haproxy: exit " << flood_rc << ", connects "
            << count(c["connects_ok"]) << ", failed connects " << count(c["failed"])
            << " (attempts " << count(c["failed_attempts"]) << "), requests answered "
            << count(r["requests"]["answered"]) << " unanswered "
            << count(r["requests"]["unanswered"]) << ", errors " << count(r["errors"]["total"])
            << ", lost " << count(d["lost"]) << " corrupted " << count(d["corrupted"]) << "\n";
  std::cout << "SIGTERM to instance 1 at 1.5 s: haproxy marked it DOWN after " << secs(down_after)
            << " s; its stop began after " << secs(stopping_after) << " s; it exited (code "
            << e1_rc << ") after " << secs(exit_after) << " s\n";
  std::cout << "instance 1 accepts: " << a1_term << " at SIGTERM, " << e1_exit.accepts
            << " at exit (= haproxy sessions " << hs1.stot << " + 1 direct client); haproxy "
            << "sessions to esk1: " << hs_term["esockets/esk1"].stot << " at SIGTERM, "
            << hs_down["esockets/esk1"].stot << " when DOWN, " << hs1.stot << " at the end\n";
  std::cout << "instance 2 accepts: " << a2_term << " at SIGTERM, " << a2_end
            << " at the end; haproxy sessions to esk2: " << hs_term["esockets/esk2"].stot
            << " at SIGTERM, " << hs2.stot << " at the end\n";
  std::cout << "haproxy errors: esk1 econ " << hs1.econ << " eresp " << hs1.eresp << " retries "
            << hs1.wretr << " redispatches " << hs1.wredis << "; esk2 econ " << hs2.econ
            << " eresp " << hs2.eresp << " retries " << hs2.wretr << " redispatches " << hs2.wredis
            << "\n";
  std::cout << "direct client on instance 1: sent " << request.size() << " bytes, had "
            << before_term << " back at SIGTERM, " << queued_while_draining
            << " bytes queued in the engine while draining, received " << echoed.size()
            << " in all, then "
            << (end == End::eof       ? "EOF"
                : end == End::reset   ? "RST"
                : end == End::timeout ? "timeout"
                                      : "error")
            << " after " << secs(client_end_after) << " s\n";
  std::cout << "instance 1 closes:";
  for (const auto& [k, v] : e1_exit.closes) {
    if (v != 0) std::cout << " " << k << "=" << v;
  }
  std::cout << "\n";
  {
    std::lock_guard lk(samples_mu);
    std::cout << "timeline (t from SIGTERM; accepts of each instance; haproxy sessions/state):\n";
    double next = -10;
    for (const Sample& s : samples) {
      if (s.t < next) continue;
      next = s.t + 0.45;
      std::cout << "  t=" << std::setw(6) << secs(s.t) << "  esk1 accepts " << std::setw(6) << s.a1
                << " sessions " << s.stot1 << " " << s.st1 << "  | esk2 accepts " << std::setw(6)
                << s.a2 << " sessions " << s.stot2 << " " << s.st2 << "\n";
    }
    // When instance 1's accepts last grew, for the record.
    double last_growth = 0, prev = -1;
    for (const Sample& s : samples) {
      if (s.a1 < 0) continue;
      if (prev >= 0 && s.a1 > prev) last_growth = s.t;
      prev = s.a1;
    }
    std::cout << "instance 1's accepts last grew at t=" << secs(last_growth)
              << " s (sampled every ~0.1 s)\n";
  }
  for (std::istringstream in(haproxy_log); !in.eof();) {
    std::string line;
    std::getline(in, line);
    if (line.find("is DOWN") != std::string::npos && line.rfind("<", 0) == 0) {
      std::cout << "haproxy: " << line << "\n";
    }
  }

  // ---- the checks ----
  // The load saw nothing: no failed connect, no error, every request answered exactly.
  EXPECT_EQ(flood_rc, 0) << read_file(dir.file("flood.out"));
  ASSERT_TRUE(r.has("connections"))
      << "no JSON from the flood: " << read_file(dir.file("flood.out"));
  EXPECT_EQ(c["failed"].num(), 0);
  EXPECT_EQ(c["failed_attempts"].num(), 0);
  EXPECT_EQ(r["errors"]["total"].num(), 0);
  EXPECT_EQ(r["requests"]["unanswered"].num(), 0);
  EXPECT_EQ(d["lost"].num() + d["duplicated"].num() + d["reordered"].num() + d["corrupted"].num(),
            0);
  EXPECT_GT(c["connects_ok"].num(), 100);

  // Instance 1 drained, was taken out by its health check, and stopped cleanly by itself.
  EXPECT_EQ(e1_rc, 0) << e1_out << e1.child.err();
  EXPECT_NE(e1_out.find("draining for 3.0 s"), std::string::npos) << e1_out;
  EXPECT_NE(haproxy_log.find("esk1 is DOWN"), std::string::npos) << haproxy_log;
  EXPECT_NE(haproxy_log.find("code: 503"), std::string::npos) << "DOWN for another reason?\n"
                                                              << haproxy_log;
  // HAProxy sent it nothing once it was DOWN, and it accepted exactly what HAProxy sent it (plus
  // the direct client): every connection after that went to instance 2.
  EXPECT_EQ(hs1.stot, hs_down["esockets/esk1"].stot) << "sessions sent to esk1 after DOWN";
  EXPECT_EQ(e1_exit.accepts, hs1.stot + 1) << e1_out;
  EXPECT_GT(a2_end, a2_term) << "instance 2 accepted nothing after the SIGTERM";
  EXPECT_GT(hs2.stot, hs_term["esockets/esk2"].stot);
  EXPECT_GT(a1_term, 1) << "instance 1 had no traffic before the SIGTERM";
  EXPECT_EQ(e1_exit.closes["reset"], 0);
  EXPECT_EQ(e1_exit.closes["io_error"], 0);
  EXPECT_EQ(e1_exit.closes["shutdown"], 1) << "the direct client ends with the stop";

  // The direct client got every byte of its echo, then FIN (not RST).
  EXPECT_GT(queued_while_draining, 0) << "the echo was not queued in the engine during the drain";
  EXPECT_EQ(end, End::eof) << "the stop must end the connection with FIN after the output";
  EXPECT_EQ(echoed.size(), request.size());
  EXPECT_TRUE(echoed == request) << "the echo differs from the request";

  EXPECT_EQ(e2.child.stop(20s), 0) << e2.child.output() << e2.child.err();
  stop_haproxy(haproxy);
  if (HasFailure()) std::cout << "haproxy log:\n" << haproxy_log;
}

}  // namespace
}  // namespace esockets::test

// The admin listener of a running Server (ServerOptions::admin): GET /metrics serves what
// stats() says, in text promtool accepts; GET /health is 200 until drain() or stop() begins,
// then 503; the admin socket is gone once stop() returns. Inline and with workers (the
// hand-off histogram fills only with workers).
// Fails if a served counter differs from stats() (read after the traffic stopped), if promtool
// complains about a live server's output, or if /health does not follow drain().
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "esockets/esockets.hpp"
#include "child_process.hpp"
#include "test_support.hpp"

namespace esockets::test {
namespace {

class Echo : public Handler {
 public:
  void on_message_recv(Connection& c, Bytes m) override { c.send(m); }
};

std::uint16_t port_of(const std::string& address) {
  return static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
}

// One HTTP/1.1 request; returns the whole response (the admin listener closes after it).
std::string http_get(std::uint16_t port, const std::string& path) {
  Client c(port);
  EXPECT_TRUE(c.send_all("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  std::string out;
  EXPECT_EQ(c.wait_eof(10s, &out), EofResult::eof);
  return out;
}

std::string body_of(const std::string& response) {
  const auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? std::string() : response.substr(at + 4);
}

// "name{labels} value" lines of a Prometheus text body.
std::map<std::string, double> samples(const std::string& body) {
  std::map<std::string, double> m;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.rfind(' ');
    m[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return m;
}

class ServerMetrics : public ::testing::TestWithParam<unsigned> {};

TEST_P(ServerMetrics, MetricsMatchStatsAndHealthFollowsDrain) {
  Echo h;
  ServerOptions o = loopback_options(2, GetParam());
  o.admin = "127.0.0.1:0";
  Server s(h, o);
  s.start();
  const std::uint16_t admin = port_of(s.admin_address());
  ASSERT_NE(admin, 0);

  {
    std::vector<Client> clients = connect_many(s.port(), 20);
    for (int round = 0; round < 50; ++round) {
      for (auto& c : clients) ASSERT_TRUE(c.send_all("ping-" + std::to_string(round) + ";"));
    }
    for (auto& c : clients) {
      std::string got;
      std::string want;
      for (int round = 0; round < 50; ++round) want += "ping-" + std::to_string(round) + ";";
      ASSERT_TRUE(c.recv_exact(want.size(), got));
      ASSERT_EQ(got, want);
    }
  }
  ASSERT_TRUE(wait_until([&] { return s.client_count() == 0; }));

  const std::string health = http_get(admin, "/health");
  EXPECT_NE(health.find("HTTP/1.1 200"), std::string::npos) << health;

  const Stats st = s.stats();
  const std::string body = body_of(http_get(admin, "/metrics"));
  const auto m = samples(body);
  for (const ShardStats& x : st.shards) {
    const std::string sh = "{shard=\"" + std::to_string(x.shard) + "\"}";
    EXPECT_EQ(m.at("esockets_accepts_total" + sh), static_cast<double>(x.accepts)) << sh;
    EXPECT_EQ(m.at("esockets_received_bytes_total" + sh), static_cast<double>(x.bytes_in)) << sh;
    EXPECT_EQ(m.at("esockets_sent_bytes_total" + sh), static_cast<double>(x.bytes_out)) << sh;
    EXPECT_EQ(m.at("esockets_connections" + sh), 0.0) << sh;
    EXPECT_EQ(m.at("esockets_closes_total{shard=\"" + std::to_string(x.shard) +
                   "\",reason=\"peer_closed\"}"),
              static_cast<double>(x.closes_by(CloseReason::peer_closed)));
  }
  EXPECT_EQ(m.at("esockets_shards"), 2.0);
  EXPECT_EQ(m.at("esockets_draining"), 0.0);
  const std::string listener = "{listener=\"" + s.listeners()[0].address + "\"}";
  EXPECT_EQ(m.at("esockets_listener_accepts_total" + listener), 20.0);
  // Every message went through a handler; a sample of them was timed.
  EXPECT_GT(m.at("esockets_handler_duration_seconds_count"), 0.0);
  EXPECT_EQ(m.at("esockets_handler_duration_seconds_bucket{le=\"+Inf\"}"),
            m.at("esockets_handler_duration_seconds_count"));
  if (GetParam() > 0) {
    EXPECT_GT(m.at("esockets_handoff_wait_seconds_count"), 0.0);
  } else {
    EXPECT_EQ(m.at("esockets_handoff_wait_seconds_count"), 0.0);
  }

  // A live server's output passes promtool's lint.
  char path[] = "/tmp/esk-metrics-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, body.data(), body.size()), static_cast<ssize_t>(body.size()));
  ::close(fd);
  const CommandResult r = run_command(std::string("promtool check metrics < ") + path, 60);
  ::unlink(path);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output, "") << r.output;

  s.drain();
  EXPECT_TRUE(s.draining());
  const std::string drained = http_get(admin, "/health");
  EXPECT_NE(drained.find("HTTP/1.1 503"), std::string::npos) << drained;
  EXPECT_EQ(samples(body_of(http_get(admin, "/metrics"))).at("esockets_draining"), 1.0);
  // Draining changes nothing for clients.
  Client late(s.port());
  ASSERT_TRUE(late.send_all("still-served"));
  EXPECT_EQ(late.recv_exact(12), "still-served");
  late.close();

  s.stop();
  Client gone;
  EXPECT_FALSE(gone.connect(admin)) << "the admin listener outlived stop()";
}

TEST(ServerMetricsOptions, BadAdminAddressIsRejectedAtConstruction) {
  Echo h;
  ServerOptions o = loopback_options();
  o.admin = "localhost:9100";
  try {
    Server s(h, o);
    FAIL() << "a host name was accepted as the admin address";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("admin"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("localhost:9100"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, ServerMetrics, ::testing::Values(0u, 2u),
                         [](const auto& i) { return i.param == 0 ? "inline" : "workers2"; });

}  // namespace
}  // namespace esockets::test

// Bad options throw std::invalid_argument naming the field; a taken port throws
// std::system_error naming host:port; start() twice throws.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <vector>
#include <stdexcept>
#include <system_error>

#include "test_support.hpp"

namespace esockets::test {
namespace {

struct BadCase {
  const char* field;
  std::function<void(ServerOptions&)> apply;
};

TEST(Options, BadOptionsThrowInvalidArgumentNamingTheField) {
  const std::vector<BadCase> cases = {
      {"shards", [](ServerOptions& o) { o.shards = 0; }},
      {"shards", [](ServerOptions& o) { o.shards = 256; }},
      {"workers", [](ServerOptions& o) { o.workers = 256; }},
      {"host", [](ServerOptions& o) { o.host = "localhost"; }},
      {"host", [](ServerOptions& o) { o.host = ""; }},
      {"host", [](ServerOptions& o) { o.host = "127.0.0.300"; }},
      {"backlog", [](ServerOptions& o) { o.backlog = 0; }},
      {"read_chunk", [](ServerOptions& o) { o.read_chunk = 10; }},
      {"length_prefix_bytes",
       [](ServerOptions& o) {
         o.framing = Framing::length_prefixed;
         o.length_prefix_bytes = 3;
       }},
      {"max_frame", [](ServerOptions& o) { o.max_frame = 0; }},
      {"output_low_watermark",
       [](ServerOptions& o) { o.output_low_watermark = o.output_high_watermark + 1; }},
      {"output_high_watermark",
       [](ServerOptions& o) { o.output_high_watermark = o.output_hard_cap + 1; }},
      {"worker_queue_capacity", [](ServerOptions& o) { o.worker_queue_capacity = 1; }},
      {"command_queue_capacity", [](ServerOptions& o) { o.command_queue_capacity = 1; }},
      {"handoff_poll", [](ServerOptions& o) { o.handoff_poll = std::chrono::microseconds(-1); }},
      {"handoff_poll", [](ServerOptions& o) { o.handoff_poll = std::chrono::seconds(2); }},
      {"shutdown_timeout", [](ServerOptions& o) { o.shutdown_timeout = std::chrono::milliseconds(-1); }},
      {"linger_timeout", [](ServerOptions& o) { o.linger_timeout = std::chrono::milliseconds(-1); }},
  };
  CountingHandler h;
  for (const auto& c : cases) {
    ServerOptions o = loopback_options();
    c.apply(o);
    try {
      Server s(h, o);
      ADD_FAILURE() << "no exception for a bad " << c.field;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(c.field), std::string::npos)
          << "what() = '" << e.what() << "' does not name " << c.field;
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.field << ": wrong exception type: " << e.what();
    }
  }
  EXPECT_EQ(h.starts.load(), 0);
}

TEST(Options, GoodEdgeOptionsAreAccepted) {
  CountingHandler h;
  ServerOptions o = loopback_options(254, 0);
  o.length_prefix_bytes = 3;  // ignored unless length_prefixed
  EXPECT_NO_THROW(Server(h, o));
  o = loopback_options();
  o.host = "::1";
  EXPECT_NO_THROW(Server(h, o));
}

TEST(Options, BindingATakenPortThrowsSystemErrorWithHostPort) {
  std::uint16_t port = 0;
  const int fd = occupy_loopback_port(port);
  ASSERT_GE(fd, 0);
  CountingHandler h;
  ServerOptions o = loopback_options(2, 1);
  o.port = port;
  Server server(h, o);
  try {
    server.start();
    ADD_FAILURE() << "start() on a taken port did not throw";
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(port)), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(h.starts.load(), 0) << "on_start must not run when binding fails";
  EXPECT_FALSE(server.running());
  ::close(fd);
}

TEST(Options, StartTwiceThrows) {
  CountingHandler h;
  Server server(h, loopback_options());
  server.start();
  EXPECT_THROW(server.start(), std::logic_error);
  EXPECT_TRUE(server.running());
  server.stop();
  EXPECT_THROW(server.start(), std::logic_error) << "a Server runs once";
  EXPECT_EQ(h.starts.load(), 1);
}

TEST(Options, PortIsReportedAndTwoServersGetDifferentPorts) {
  CountingHandler h1, h2;
  Server a(h1, loopback_options(2, 0)), b(h2, loopback_options());
  a.start();
  b.start();
  EXPECT_NE(a.port(), 0);
  EXPECT_NE(b.port(), 0);
  EXPECT_NE(a.port(), b.port());
  Client ca(a.port());
  ASSERT_TRUE(ca.send_all("a"));
  EXPECT_EQ(ca.recv_exact(1), "a");
  EXPECT_EQ(h2.connects.load(), 0);
}

}  // namespace
}  // namespace esockets::test

namespace esockets::test {
namespace {

// Reads the options each accepted socket ended up with.
class SockoptHandler : public CountingHandler {
 public:
  std::mutex mu;
  std::vector<std::array<int, 3>> seen;  // {TCP_NODELAY, SO_SNDBUF, SO_RCVBUF}
  bool on_client_connect(Connection& c) override {
    std::array<int, 3> v{};
    socklen_t len = sizeof(int);
    ::getsockopt(c.fileno(), IPPROTO_TCP, TCP_NODELAY, &v[0], &len);
    len = sizeof(int);
    ::getsockopt(c.fileno(), SOL_SOCKET, SO_SNDBUF, &v[1], &len);
    len = sizeof(int);
    ::getsockopt(c.fileno(), SOL_SOCKET, SO_RCVBUF, &v[2], &len);
    {
      std::lock_guard lk(mu);
      seen.push_back(v);
    }
    return CountingHandler::on_client_connect(c);
  }
};

// tcp_nodelay and the socket buffer sizes reach every accepted socket, on every shard,
// including shards added while serving (the options are set on each listener and inherited).
TEST(Options, AcceptedSocketsCarryNodelayAndBufferSizes) {
  for (bool nodelay : {true, false}) {
    SockoptHandler h;
    ServerOptions o = loopback_options(2, 0);
    o.tcp_nodelay = nodelay;
    o.socket_send_buffer = 100000;
    o.socket_receive_buffer = 120000;
    Server server(h, o);
    server.start();
    server.set_shards(3);
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < 24; ++i) clients.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(wait_until([&] { return h.connects.load() == 24; }));
    std::lock_guard lk(h.mu);
    for (const auto& v : h.seen) {
      EXPECT_EQ(v[0] != 0, nodelay);
      EXPECT_EQ(v[1], 2 * 100000) << "SO_SNDBUF (the kernel reports twice the value set)";
      EXPECT_EQ(v[2], 2 * 120000) << "SO_RCVBUF";
    }
    std::set<unsigned> shards;
    for (const auto& s : server.stats().shards) {
      if (s.accepts > 0) shards.insert(s.shard);
    }
    EXPECT_GE(shards.size(), 2u) << "the clients should have reached more than one listener";
    server.stop();
  }
}

}  // namespace
}  // namespace esockets::test

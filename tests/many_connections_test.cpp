// 9,000 concurrent connections on 2 shards (scaled under sanitizers), both ends in this process.
#include <gtest/gtest.h>

#include "test_support.hpp"

namespace esockets::test {
namespace {

TEST(ManyConnections, NineThousandConcurrentOnTwoShards) {
  CountingHandler h;
  ServerOptions o = loopback_options(2, 0);
  o.framing = Framing::line;
  h.framed_echo = true;
  Server server(h, o);
  server.start();
  const std::size_t kN = scaled(9000, 100);
  const std::size_t fds_before = open_fd_count();
  auto clients = connect_many(server.port(), kN, /*spread_sources=*/true);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(kN); }, 30s))
      << h.connects.load() << " of " << kN;
  EXPECT_EQ(server.client_count(), kN);
  Stats st = server.stats();
  EXPECT_EQ(st.total.accepts, kN);
  EXPECT_EQ(st.total.refused, 0u);
  EXPECT_EQ(st.total.accept_errors, 0u);
  ASSERT_EQ(st.shards.size(), 2u);
  for (std::size_t i = 0; i < kN; ++i) {
    ASSERT_TRUE(clients[i].send_line("hello " + std::to_string(i))) << i;
  }
  std::size_t bad = 0;
  for (std::size_t i = 0; i < kN; ++i) {
    std::string line;
    if (!clients[i].recv_line(line, 20s) || line != "hello " + std::to_string(i)) ++bad;
  }
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(h.messages.load(), static_cast<int>(kN));
  clients.clear();
  ASSERT_TRUE(wait_until([&] { return server.client_count() == 0; }, 30s))
      << server.client_count();
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == static_cast<int>(kN); }, 30s));
  EXPECT_EQ(h.reason(CloseReason::peer_closed), static_cast<int>(kN));
  // The server released its fds (lingering closes finish once the peers' FINs arrived).
  EXPECT_TRUE(wait_until([&] { return open_fd_count() <= fds_before; }, 10s))
      << open_fd_count() << " fds open, " << fds_before << " before";
  server.stop();
  EXPECT_EQ(h.disconnects.load(), static_cast<int>(kN));
}

}  // namespace
}  // namespace esockets::test

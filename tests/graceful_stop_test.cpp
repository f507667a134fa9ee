// Graceful stop with queued output: the client that was not reading still receives everything
// send() accepted, then a FIN (not RST); the disconnect reason is shutdown.
#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class Ids : public CountingHandler {
 public:
  std::mutex mu;
  std::vector<ConnectionId> ids;
  bool on_client_connect(Connection& c) override {
    {
      std::lock_guard lk(mu);
      ids.push_back(c.id());
    }
    return CountingHandler::on_client_connect(c);
  }
};

class GracefulStop : public ::testing::TestWithParam<unsigned> {};

TEST_P(GracefulStop, QueuedOutputIsFlushedThenFin) {
  Ids h;
  ServerOptions o = loopback_options(1, GetParam());
  o.output_hard_cap = 16 * 1024 * 1024;
  o.shutdown_timeout = std::chrono::milliseconds(15000);
  Server server(h, o);
  server.start();
  Client c(server.port());
  c.set_rcvbuf(64 * 1024);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }));
  ConnectionId id = h.ids[0];
  constexpr std::size_t kTotal = 8 << 20;
  std::string expect;
  expect.reserve(kTotal);
  for (std::size_t k = 0; k < 8; ++k) {
    std::string chunk(1 << 20, '\0');
    for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>((i * 7 + k) & 0xff);
    ASSERT_EQ(server.send(id, chunk), SendStatus::ok);
    expect += chunk;
  }
  ASSERT_TRUE(wait_until([&] { return server.stats().total.output_bytes > 0; }, 5s));
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    server.stop();
    stopped = true;
  });
  // The stopper thread may start late on a loaded machine: wait until stop() is under way,
  // then give it time in which it must not return (the client reads nothing yet).
  EXPECT_TRUE(wait_until([&] { return h.shutting_down.load() == 1; }));
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(stopped.load()) << "stop() returned before the output was flushed";
  EXPECT_EQ(h.shutting_down.load(), 1);
  std::string got;
  EofResult r = c.wait_eof(30s, &got);
  EXPECT_EQ(r, EofResult::eof) << "expected FIN after the data, got " << to_string(r);
  EXPECT_EQ(got.size(), kTotal);
  EXPECT_TRUE(got == expect) << "flushed bytes differ";
  c.close();
  stopper.join();
  EXPECT_EQ(h.disconnects.load(), 1);
  EXPECT_EQ(h.reason(CloseReason::shutdown), 1);
  EXPECT_EQ(h.shut_down.load(), 1);
  // Gauges come back to zero: nothing open, paused or queued.
  const Stats st = server.stats();
  EXPECT_EQ(st.total.connections, 0u);
  EXPECT_EQ(st.total.paused, 0u);
  EXPECT_EQ(st.total.output_bytes, 0u);
}

TEST_P(GracefulStop, SendsFromOnServerShuttingDownAreFlushed) {
  class Bye : public Ids {
   public:
    void on_server_shutting_down(Server& s) override {
      Ids::on_server_shutting_down(s);
      std::lock_guard lk(mu);
      for (auto id : ids) s.send(id, "goodbye");
    }
  } h;
  Server server(h, loopback_options(2, GetParam()));
  server.start();
  auto clients = connect_many(server.port(), 10);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 10; }));
  std::thread stopper([&] { server.stop(); });
  for (auto& c : clients) {
    std::string got;
    EXPECT_EQ(c.wait_eof(10s, &got), EofResult::eof);
    EXPECT_EQ(got, "goodbye");
    c.close();
  }
  stopper.join();
  EXPECT_EQ(h.reason(CloseReason::shutdown), 10);
}

INSTANTIATE_TEST_SUITE_P(Workers, GracefulStop, ::testing::Values(0u, 2u),
                         [](const auto& i) { return "workers" + std::to_string(i.param); });

}  // namespace
}  // namespace esockets::test

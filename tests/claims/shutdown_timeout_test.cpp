// Claim (README options and limits tables, server.hpp stop()): stop() keeps flushing accepted
// output for at most shutdown_timeout, then closes anyway; the connection's disconnect reason
// is `shutdown` ("stop with output still queued ... closes[shutdown]"), and no callback runs
// after stop() returns.
//
// A client with a tiny receive buffer never reads 4 MiB the server queued for it; stop() with
// shutdown_timeout = 300 ms must return after roughly that long. Fails if stop() waits for the
// output regardless (write_timeout, 30 s, or forever), returns without waiting at all while
// output is queued, reports another reason, or calls a handler after returning.
#include <gtest/gtest.h>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class Flooder : public CountingHandler {
 public:
  std::atomic<bool> stopped{false};
  std::atomic<int> late_callbacks{0};
  void on_message_recv(Connection& c, Bytes) override {
    EXPECT_EQ(c.send(std::string(4 * 1024 * 1024, 'f')), SendStatus::ok);
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    if (stopped.load()) late_callbacks++;
    CountingHandler::on_client_disconnect(c, r);
  }
};

class ShutdownTimeout : public ::testing::TestWithParam<unsigned> {};

TEST_P(ShutdownTimeout, StopWithAClientThatNeverReadsReturnsAfterShutdownTimeout) {
  constexpr auto kShutdown = std::chrono::milliseconds(300);
  const auto slack = std::chrono::milliseconds(1000 * kScale);
  Flooder h;
  auto o = loopback_options(1, GetParam());
  o.shutdown_timeout = kShutdown;
  o.socket_send_buffer = 4096;
  Server server(h, o);
  server.start();
  Client c(server.port());
  c.set_rcvbuf(4096);
  ASSERT_TRUE(c.send_all("go"));
  // The output is queued and stuck: the client reads nothing.
  ASSERT_TRUE(wait_until([&] { return server.stats().total.output_bytes > 1024 * 1024; }));

  const auto t0 = Clock::now();
  server.stop();
  const auto took = Clock::now() - t0;
  h.stopped.store(true);
  EXPECT_GE(took, kShutdown - 50ms) << "stop() did not try to flush: " << took / 1ms << " ms";
  EXPECT_LE(took, kShutdown + slack) << "stop() took " << took / 1ms << " ms";
  EXPECT_EQ(h.disconnects.load(), 1);
  EXPECT_EQ(h.reason(CloseReason::shutdown), 1)
      << "slow_consumer=" << h.reason(CloseReason::slow_consumer);
  EXPECT_EQ(h.shut_down.load(), 1);
  EXPECT_EQ(h.late_callbacks.load(), 0);
  EXPECT_EQ(server.stats().total.closes_by(CloseReason::shutdown), 1u);
  EXPECT_EQ(server.stats().total.output_bytes, 0u);
}

INSTANTIATE_TEST_SUITE_P(Workers, ShutdownTimeout, ::testing::Values(0u, 2u),
                         [](const auto& i) { return "workers" + std::to_string(i.param); });

}  // namespace
}  // namespace esockets::test

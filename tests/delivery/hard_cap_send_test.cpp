// Delivery contract, behaviour 11: a send larger than output_hard_cap. README: "a send that would
// queue more [than output_hard_cap] ... closes the connection as slow_consumer"; server.hpp /
// types.hpp: SendStatus::slow_consumer = "the bytes would pass output_hard_cap ...: the
// connection is closed as slow_consumer, its queued output dropped". So Server::send (and
// Connection::send from a handler) with more bytes than the cap returns slow_consumer, and
// on_client_disconnect(slow_consumer) follows; the client sees the connection end.
#include <gtest/gtest.h>

#include "delivery_support.hpp"

namespace esockets::test::delivery {
namespace {

class CapHandler : public Handler {
 public:
  std::atomic<int> connects{0}, disconnects{0};
  std::atomic<int> reason{-1};
  std::atomic<int> handler_status{-1};
  std::atomic<std::uint64_t> id{0};
  std::size_t big = 0;
  bool on_client_connect(Connection& c) override {
    id.store(c.id().value());
    connects++;
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "big") handler_status.store(static_cast<int>(c.send(std::string(big, 'b'))));
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    reason.store(static_cast<int>(r));
    disconnects++;
  }
};

struct Case {
  bool from_handler;
  bool framed;
  unsigned workers;
  friend void PrintTo(const Case& c, std::ostream* os) {
    *os << (c.from_handler ? "handler" : "other thread") << (c.framed ? " send_frame" : " send")
        << " workers=" << c.workers;
  }
};

class HardCapSend : public ::testing::TestWithParam<Case> {};

TEST_P(HardCapSend, SendPastHardCapReturnsSlowConsumerAndCloses) {
  const Case k = GetParam();
  CapHandler h;
  ServerOptions o = loopback_options(1, k.workers);
  o.framing = Framing::line;
  o.output_hard_cap = 64 * 1024;
  o.output_high_watermark = 32 * 1024;
  o.output_low_watermark = 8 * 1024;
  h.big = 100 * 1024;
  Server server(h, o);
  server.start();
  Client c(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }));
  const ConnectionId id = ConnectionId::from_value(h.id.load());

  SendStatus st;
  if (k.from_handler) {
    ASSERT_TRUE(c.send_line("big"));
    ASSERT_TRUE(wait_until([&] { return h.handler_status.load() >= 0; }));
    st = static_cast<SendStatus>(h.handler_status.load());
  } else {
    const std::string big(h.big, 'b');
    st = k.framed ? server.send_frame(id, big) : server.send(id, big);
  }
  const bool disconnected = wait_until([&] { return h.disconnects.load() == 1; }, 3s);
  const EofResult end = c.wait_eof(3s);
  std::printf("[hard_cap_send] status %s, disconnect %s, client %s\n", to_string(st),
              disconnected ? to_string(static_cast<CloseReason>(h.reason.load())) : "none", to_string(end));
  EXPECT_EQ(st, SendStatus::slow_consumer) << "a send of 100 KiB past output_hard_cap (64 KiB) returned "
                                           << to_string(st);
  EXPECT_TRUE(disconnected) << "no on_client_disconnect after the send past the hard cap";
  EXPECT_EQ(h.reason.load(), static_cast<int>(CloseReason::slow_consumer));
  EXPECT_NE(end, EofResult::timeout) << "the client's connection stayed open";
  EXPECT_EQ(server.send(id, "x"), SendStatus::closed);
  server.stop();
}

INSTANTIATE_TEST_SUITE_P(Delivery, HardCapSend,
                         ::testing::Values(Case{false, false, 0}, Case{false, true, 0}, Case{false, false, 2},
                                           Case{true, false, 0}, Case{true, false, 2}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return std::string(i.param.from_handler ? "handler" : "other_thread") +
                                  (i.param.framed ? "_send_frame" : "_send") +
                                  (i.param.workers == 0 ? "_inline" : "_workers2");
                         });

}  // namespace
}  // namespace esockets::test::delivery

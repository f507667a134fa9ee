// Ordering: many connections x numbered messages; per-connection sequence holds and callbacks
// of one connection never overlap (4 workers, and inline with 2 shards); echoes come back in
// order.
#include <gtest/gtest.h>

#include <charconv>

#include "test_support.hpp"

namespace esockets::test {
namespace {

struct PerConn {
  std::atomic<int> in_flight{0};
  std::int64_t next = 0;
};

class SeqHandler : public Handler {
 public:
  std::atomic<int> overlaps{0}, out_of_order{0}, connects{0}, disconnects{0}, bad_disconnect{0};
  std::atomic<std::int64_t> messages{0};

  bool on_client_connect(Connection& c) override {
    auto* p = new PerConn;
    enter(p);
    c.set_user_data(p);
    connects++;
    leave(p);
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    auto* p = static_cast<PerConn*>(c.user_data());
    enter(p);
    // "<client>:<seq>"
    auto colon = m.find(':');
    std::int64_t seq = -1;
    if (colon != Bytes::npos) std::from_chars(m.data() + colon + 1, m.data() + m.size(), seq);
    if (seq != p->next) out_of_order++;
    p->next = seq + 1;
    messages++;
    c.send_frame(m);
    leave(p);
  }
  void on_client_disconnect(Connection& c, CloseReason) override {
    auto* p = static_cast<PerConn*>(c.user_data());
    if (p == nullptr) {
      bad_disconnect++;
      return;
    }
    enter(p);
    leave(p);
    c.set_user_data(nullptr);
    delete p;
    disconnects++;
  }

 private:
  void enter(PerConn* p) {
    if (p->in_flight.exchange(1) != 0) overlaps++;
    // Widen the window so an overlap would be caught.
    for (volatile int i = 0; i < 50; i = i + 1) {
    }
  }
  void leave(PerConn* p) { p->in_flight.store(0); }
};

class Ordering : public ::testing::TestWithParam<Mode> {};

TEST_P(Ordering, PerConnectionOrderAndNoOverlap) {
  SeqHandler h;
  ServerOptions o = loopback_options(GetParam().shards, GetParam().workers);
  o.framing = Framing::line;
  Server server(h, o);
  server.start();
  const std::size_t kConns = scaled(1000, 20);
  constexpr int kMsgs = 100;
  auto clients = connect_many(server.port(), kConns);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(kConns); }, 20s));

  constexpr int kThreads = 4;
  std::atomic<int> echo_errors{0}, io_errors{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      // Interleave: each round sends the next 10 messages of every connection of this thread.
      for (int base = 0; base < kMsgs; base += 10) {
        for (std::size_t i = static_cast<std::size_t>(t); i < kConns; i += kThreads) {
          std::string batch;
          for (int k = base; k < base + 10; ++k) batch += std::to_string(i) + ":" + std::to_string(k) + "\n";
          if (!clients[i].send_all(batch, 20s)) io_errors++;
        }
        for (std::size_t i = static_cast<std::size_t>(t); i < kConns; i += kThreads) {
          for (int k = base; k < base + 10; ++k) {
            std::string line;
            if (!clients[i].recv_line(line, 20s)) {
              io_errors++;
              return;
            }
            if (line != std::to_string(i) + ":" + std::to_string(k)) echo_errors++;
          }
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(io_errors.load(), 0);
  EXPECT_EQ(echo_errors.load(), 0);
  EXPECT_EQ(h.messages.load(), static_cast<std::int64_t>(kConns) * kMsgs);
  EXPECT_EQ(h.out_of_order.load(), 0);
  EXPECT_EQ(h.overlaps.load(), 0);
  clients.clear();
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == static_cast<int>(kConns); }, 20s));
  server.stop();
  EXPECT_EQ(h.disconnects.load(), static_cast<int>(kConns));
  EXPECT_EQ(h.bad_disconnect.load(), 0);
  EXPECT_EQ(h.overlaps.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, Ordering, ::testing::Values(Mode{2, 4}, Mode{2, 0}, Mode{1, 1}),
                         mode_name);

}  // namespace
}  // namespace esockets::test

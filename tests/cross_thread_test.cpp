// Cross-thread send/close from 8 threads racing peer resets: no crash, exactly one disconnect
// per connection, only documented statuses.
#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <random>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class Tracker : public CountingHandler {
 public:
  std::mutex mu;
  std::vector<ConnectionId> ids;
  std::map<std::uint64_t, int> disconnects_of;
  Tracker() { echo = false; }
  bool on_client_connect(Connection& c) override {
    {
      std::lock_guard lk(mu);
      ids.push_back(c.id());
    }
    return CountingHandler::on_client_connect(c);
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    {
      std::lock_guard lk(mu);
      disconnects_of[c.id().value()]++;
    }
    CountingHandler::on_client_disconnect(c, r);
  }
};

class CrossThread : public ::testing::TestWithParam<unsigned> {};

TEST_P(CrossThread, SendAndCloseFrom8ThreadsRacingResets) {
  Tracker h;
  ServerOptions o = loopback_options(2, GetParam());
  o.output_hard_cap = 256 * 1024;
  o.output_high_watermark = 128 * 1024;
  o.output_low_watermark = 32 * 1024;
  Server server(h, o);
  server.start();
  const std::size_t kConns = scaled(400, 50);
  auto clients = connect_many(server.port(), kConns);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(kConns); }));
  std::vector<ConnectionId> ids;
  {
    std::lock_guard lk(h.mu);
    ids = h.ids;
  }
  std::atomic<bool> go{true};
  std::atomic<std::uint64_t> st_ok{0}, st_closed{0}, st_bp{0}, st_other{0};
  std::vector<std::thread> spammers;
  for (int t = 0; t < 8; ++t) {
    spammers.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1);
      std::string payload(64, static_cast<char>('a' + t));
      while (go.load(std::memory_order_relaxed)) {
        ConnectionId id = ids[rng() % ids.size()];
        unsigned op = rng() % 100;
        SendStatus s;
        if (op < 2) {
          s = server.close(id);
        } else if (op < 50) {
          s = server.send(id, payload);
        } else {
          s = server.send_frame(id, payload);
        }
        switch (s) {
          case SendStatus::ok: st_ok++; break;
          case SendStatus::closed: st_closed++; break;
          case SendStatus::backpressure: st_bp++; break;
          default: st_other++; break;
        }
      }
    });
  }
  // Meanwhile reset clients at random (some read a little first).
  std::mt19937 rng(99);
  std::vector<std::size_t> order(kConns);
  for (std::size_t i = 0; i < kConns; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  const auto spam_until = Clock::now() + std::chrono::milliseconds(1500);
  for (std::size_t k = 0; k < kConns; ++k) {
    Client& c = clients[order[k]];
    if (k % 3 == 0) c.recv_for(1ms);
    if (k % 4 == 0) {
      c.close();  // orderly close with unread data pending -> the kernel sends RST anyway
    } else {
      c.reset();
    }
    if (k % 16 == 0) std::this_thread::sleep_for(1ms);
  }
  std::this_thread::sleep_until(spam_until);
  go = false;
  for (auto& t : spammers) t.join();
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == static_cast<int>(kConns); }, 20s))
      << h.disconnects.load() << " of " << kConns;
  server.stop();
  EXPECT_EQ(st_other.load(), 0u);
  EXPECT_GT(st_ok.load() + st_closed.load(), 0u);
  EXPECT_EQ(h.connects.load(), h.disconnects.load());
  std::lock_guard lk(h.mu);
  EXPECT_EQ(h.disconnects_of.size(), kConns);
  for (auto& [id, n] : h.disconnects_of) EXPECT_EQ(n, 1) << "id " << id;
  Stats st = server.stats();
  std::uint64_t closes = 0;
  for (auto c : st.total.closes) closes += c;
  EXPECT_EQ(closes, kConns);
  RecordProperty("ok", std::to_string(st_ok.load()));
  RecordProperty("closed", std::to_string(st_closed.load()));
  RecordProperty("backpressure", std::to_string(st_bp.load()));
}

INSTANTIATE_TEST_SUITE_P(Workers, CrossThread, ::testing::Values(0u, 2u),
                         [](const auto& i) { return "workers" + std::to_string(i.param); });

}  // namespace
}  // namespace esockets::test

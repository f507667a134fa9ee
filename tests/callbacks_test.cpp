// Every Handler callback fires with the right arguments, counts and order, inline and with
// workers; nothing fires after stop() returns.
#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <set>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class Recorder : public Handler {
 public:
  std::atomic<int> seq{0};
  std::atomic<int> start_seq{-1}, shutting_seq{-1}, shut_seq{-1};
  std::atomic<int> first_connect_seq{-1}, last_disconnect_seq{-1};
  std::atomic<int> connects{0}, messages{0}, disconnects{0}, total_calls{0};
  std::atomic<int> connect_before_start{0}, callbacks_after_shut_down{0}, bad_args{0};
  std::atomic<bool> shut_down_done{false};
  std::mutex mu;
  std::map<std::uint64_t, std::string> ip_at_connect;     // by id
  std::map<std::uint64_t, std::string> ip_at_disconnect;  // by id
  std::map<std::uint64_t, CloseReason> reason;
  std::map<std::uint64_t, int> disconnect_count;
  std::map<std::uint64_t, std::string> received;
  Server* server = nullptr;

  void call() {
    total_calls++;
    if (shut_down_done.load()) callbacks_after_shut_down++;
  }
  void on_start(Server& s) override {
    call();
    start_seq = seq++;
    if (&s != server || s.port() == 0) bad_args++;
  }
  bool on_client_connect(Connection& c) override {
    call();
    int q = seq++;
    int expected = -1;
    first_connect_seq.compare_exchange_strong(expected, q);
    if (start_seq.load() < 0) connect_before_start++;
    if (!c.id().valid() || c.id().generation() % 2 != 1 || c.fileno() < 0 ||
        c.id().slot() != static_cast<std::uint32_t>(c.fileno()) || &c.server() != server) {
      bad_args++;
    }
    connects++;
    std::lock_guard lk(mu);
    ip_at_connect[c.id().value()] = c.getip();
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    call();
    seq++;
    messages++;
    {
      std::lock_guard lk(mu);
      received[c.id().value()].append(m);
      if (!ip_at_connect.count(c.id().value())) bad_args++;
    }
    c.send(m);
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    call();
    last_disconnect_seq = seq++;
    disconnects++;
    std::lock_guard lk(mu);
    ip_at_disconnect[c.id().value()] = c.getip();
    reason[c.id().value()] = r;
    disconnect_count[c.id().value()]++;
  }
  void on_server_shutting_down(Server& s) override {
    call();
    shutting_seq = seq++;
    if (&s != server) bad_args++;
  }
  void on_server_shut_down(Server& s) override {
    call();
    shut_seq = seq++;
    if (&s != server) bad_args++;
    shut_down_done = true;
  }
};

class Callbacks : public ::testing::TestWithParam<Mode> {};

TEST_P(Callbacks, FireWithRightArgumentsCountsAndOrder) {
  Recorder h;
  Server server(h, loopback_options(GetParam().shards, GetParam().workers));
  h.server = &server;
  EXPECT_EQ(h.total_calls.load(), 0) << "no callback before start()";
  server.start();
  ASSERT_GE(h.start_seq.load(), 0) << "on_start runs inside start()";
  ASSERT_NE(server.port(), 0);

  constexpr int kClients = 8;
  std::vector<Client> clients;
  std::set<std::string> client_addrs;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back(server.port());
    client_addrs.insert(clients.back().local_address());
  }
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == kClients; }));
  // Each client sends 3 messages and reads the echo.
  for (int i = 0; i < kClients; ++i) {
    for (int m = 0; m < 3; ++m) {
      std::string msg = "c" + std::to_string(i) + "m" + std::to_string(m) + ";";
      ASSERT_TRUE(clients[i].send_all(msg));
      EXPECT_EQ(clients[i].recv_exact(msg.size()), msg);
    }
  }
  EXPECT_GE(h.messages.load(), kClients);  // raw framing: a read may merge, never split here
  {
    std::lock_guard lk(h.mu);
    std::set<std::string> seen;
    for (auto& [id, ip] : h.ip_at_connect) seen.insert(ip);
    EXPECT_EQ(seen, client_addrs) << "getip() must be the client's local address";
    for (auto& [id, data] : h.received) EXPECT_EQ(data.size(), 15u) << data;
  }

  // Half of the clients close: disconnect(peer_closed) with the same getip().
  for (int i = 0; i < kClients / 2; ++i) clients[i].close();
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == kClients / 2; }));
  {
    std::lock_guard lk(h.mu);
    for (auto& [id, r] : h.reason) {
      EXPECT_EQ(r, CloseReason::peer_closed) << to_string(r);
      EXPECT_EQ(h.ip_at_disconnect[id], h.ip_at_connect[id]);
    }
  }

  server.stop();
  EXPECT_FALSE(server.running());
  const int calls_at_stop = h.total_calls.load();
  EXPECT_EQ(h.disconnects.load(), kClients) << "one disconnect per connect";
  {
    std::lock_guard lk(h.mu);
    EXPECT_EQ(h.disconnect_count.size(), static_cast<std::size_t>(kClients));
    for (auto& [id, n] : h.disconnect_count) EXPECT_EQ(n, 1);
    int shutdowns = 0;
    std::string reasons;
    for (auto& [id, r] : h.reason) {
      shutdowns += r == CloseReason::shutdown;
      reasons += std::string(to_string(r)) + " ";
    }
    EXPECT_EQ(shutdowns, kClients - kClients / 2) << "reasons: " << reasons;
  }
  EXPECT_EQ(h.bad_args.load(), 0);
  EXPECT_EQ(h.connect_before_start.load(), 0);
  EXPECT_LT(h.start_seq.load(), h.first_connect_seq.load());
  EXPECT_LT(h.last_disconnect_seq.load(), h.shut_seq.load());
  EXPECT_LT(h.shutting_seq.load(), h.shut_seq.load());
  EXPECT_GE(h.shutting_seq.load(), 0);
  // The remaining clients see EOF; writing into the dead server triggers nothing.
  for (int i = kClients / 2; i < kClients; ++i) {
    EXPECT_EQ(clients[i].wait_eof(5s), EofResult::eof);
    clients[i].send_all("late");
  }
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(h.total_calls.load(), calls_at_stop) << "a callback ran after stop() returned";
  EXPECT_EQ(h.callbacks_after_shut_down.load(), 0);
  server.stop();  // idempotent
  EXPECT_EQ(h.total_calls.load(), calls_at_stop);
}

TEST_P(Callbacks, StopWithNoClientsAndDestructorStops) {
  Recorder h;
  {
    Server server(h, loopback_options(GetParam().shards, GetParam().workers));
    h.server = &server;
    server.start();
    EXPECT_TRUE(server.running());
  }  // ~Server stops
  EXPECT_EQ(h.shutting_seq.load(), 1);
  EXPECT_EQ(h.shut_seq.load(), 2);
  EXPECT_EQ(h.total_calls.load(), 3);
}

TEST_P(Callbacks, WaitReturnsAfterStopFromAnotherThread) {
  Recorder h;
  Server server(h, loopback_options(GetParam().shards, GetParam().workers));
  h.server = &server;
  server.wait();  // not running: returns at once
  server.start();
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    server.stop();
  });
  server.wait();
  EXPECT_TRUE(h.shut_down_done.load());
  stopper.join();
}

INSTANTIATE_TEST_SUITE_P(Modes, Callbacks,
                         ::testing::Values(Mode{1, 0}, Mode{2, 0}, Mode{1, 2}, Mode{2, 4}),
                         mode_name);

}  // namespace
}  // namespace esockets::test

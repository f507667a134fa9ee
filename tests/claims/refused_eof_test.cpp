// Claim (README, "Limits and failure behaviour"): a refused client, whether on_client_connect
// returned false or max_connections was reached, is "accepted, then closed at once (EOF)": it
// reads an orderly end of stream, not a connection reset.
//
// Each case is run with a client that sent nothing and with a client whose bytes were already
// in the server's receive queue when the refusal happened (made deterministic by holding the
// refusing thread until the bytes are there): closing a socket with unread input answers with
// RST unless the server drains it first. Fails if a refusal closes the socket while unread
// input is in it (RST instead of FIN), if the refused client is left open (timeout), or if the
// refusal is not counted as `refused`.
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <ostream>

#include "test_support.hpp"

namespace esockets::test {

// Failure messages name the result ("reset") instead of dumping its bytes.
[[maybe_unused]] static void PrintTo(EofResult r, std::ostream* os) { *os << to_string(r); }

namespace {

// A gate a handler waits at (bounded) until the test opens it.
class Gate {
 public:
  void open() {
    std::lock_guard lk(mu_);
    open_ = true;
    cv_.notify_all();
  }
  /// Marks `waiting`, then waits up to 10 s for open(); false on timeout.
  bool pass() {
    std::unique_lock lk(mu_);
    waiting_ = true;
    cv_.notify_all();
    return cv_.wait_for(lk, 10s, [&] { return open_; });
  }
  bool waiting() {
    std::lock_guard lk(mu_);
    return waiting_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false, waiting_ = false;
};

// Refuses every client; the first one only after the gate opens.
class GatedRefuser : public CountingHandler {
 public:
  Gate gate;
  std::atomic<int> gate_timeouts{0};
  bool on_client_connect(Connection& c) override {
    CountingHandler::on_client_connect(c);
    if (connects.load() == 1 && !gate.pass()) gate_timeouts++;
    return false;
  }
};

class RefusedByHandler : public ::testing::TestWithParam<unsigned> {};

TEST_P(RefusedByHandler, SilentClientSeesEof) {
  GatedRefuser h;
  h.gate.open();
  Server server(h, loopback_options(1, GetParam()));
  server.start();
  Client c(server.port());
  EXPECT_EQ(c.wait_eof(10s), EofResult::eof);
  EXPECT_TRUE(wait_until([&] { return h.reason(CloseReason::refused) == 1; }));
  EXPECT_EQ(h.messages.load(), 0);
  server.stop();
  EXPECT_EQ(server.stats().total.closes_by(CloseReason::refused), 1u);
}

TEST_P(RefusedByHandler, ClientWhoseBytesArrivedBeforeTheRefusalSeesEof) {
  GatedRefuser h;
  Server server(h, loopback_options(1, GetParam()));
  server.start();
  Client c(server.port());
  // on_client_connect is running (held at the gate): the bytes land in the accepted socket's
  // receive queue before the handler refuses it.
  ASSERT_TRUE(wait_until([&] { return h.gate.waiting(); }));
  ASSERT_TRUE(c.send_all(std::string(1000, 'x')));
  h.gate.open();
  EXPECT_EQ(c.wait_eof(10s), EofResult::eof) << "a refused client must get FIN, not RST";
  EXPECT_TRUE(wait_until([&] { return h.reason(CloseReason::refused) == 1; }));
  EXPECT_EQ(h.messages.load(), 0) << "a refused client's bytes never reach on_message_recv";
  EXPECT_EQ(h.gate_timeouts.load(), 0);
  server.stop();
}

INSTANTIATE_TEST_SUITE_P(Workers, RefusedByHandler, ::testing::Values(0u, 2u),
                         [](const auto& i) { return "workers" + std::to_string(i.param); });

// Inline handler that can hold its shard: a message "hold" waits at the gate.
class Holder : public CountingHandler {
 public:
  Gate gate;
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "hold") {
      gate.pass();
      return;
    }
    CountingHandler::on_message_recv(c, m);
  }
};

TEST(RefusedByMaxConnections, SilentClientSeesEof) {
  Holder h;
  auto o = loopback_options(1, 0);
  o.max_connections = 1;
  Server server(h, o);
  server.start();
  Client admitted(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }));
  Client refused(server.port());
  EXPECT_EQ(refused.wait_eof(10s), EofResult::eof);
  EXPECT_TRUE(wait_until([&] { return server.stats().total.refused == 1; }));
  EXPECT_EQ(server.stats().total.closes_by(CloseReason::refused), 1u);
  EXPECT_EQ(h.connects.load(), 1) << "an over-limit client never reaches on_client_connect";
  // The admitted client is still served.
  ASSERT_TRUE(admitted.send_all("ping"));
  EXPECT_EQ(admitted.recv_exact(4), "ping");
  server.stop();
}

TEST(RefusedByMaxConnections, ClientWhoseBytesArrivedBeforeTheRefusalSeesEof) {
  Holder h;
  auto o = loopback_options(1, 0);
  o.max_connections = 1;
  Server server(h, o);
  server.start();
  Client admitted(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }));
  // Hold the only shard inside a handler: the next client completes its handshake in the
  // kernel's accept queue and its bytes arrive before the shard accepts (and refuses) it.
  ASSERT_TRUE(admitted.send_all("hold"));
  ASSERT_TRUE(wait_until([&] { return h.gate.waiting(); }));
  Client refused(server.port());
  ASSERT_TRUE(refused.send_all("GET / HTTP/1.0\r\n\r\n"));
  h.gate.open();
  const EofResult r = refused.wait_eof(10s);
  EXPECT_EQ(r, EofResult::eof) << "got " << to_string(r)
                               << ": the over-limit socket was closed with its input unread";
  EXPECT_TRUE(wait_until([&] { return server.stats().total.refused == 1; }));
  ASSERT_TRUE(admitted.send_all("ping"));
  EXPECT_EQ(admitted.recv_exact(4), "ping");
  server.stop();
}

}  // namespace
}  // namespace esockets::test

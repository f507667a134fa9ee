// Delivery contract, behaviour 2: sends accepted during stop(). Inline, one shard. While the shard
// is busy in another client's on_message_recv (it sleeps), stop() runs on_server_shutting_down,
// which sends 5,000 numbered lines to client A with Server::send. Handler::on_server_shutting_down
// promises "sends made here are flushed before connections close", and every send that returned
// ok must arrive (DESIGN.md invariant 8: "... whatever happens meanwhile: ... the server stops"):
// A must read all of them, in order, then EOF.
#include <gtest/gtest.h>

#include "delivery_support.hpp"

namespace esockets::test::delivery {
namespace {

class ShutdownSender : public Handler {
 public:
  std::atomic<int> connects{0};
  std::atomic<bool> sleeping{false};
  std::atomic<std::uint64_t> a_id{0};  // the first client to connect
  std::atomic<int> ok{0}, not_ok{0};
  std::string first_not_ok;
  int lines = 5000;
  std::atomic<int> a_reason{-1};

  bool on_client_connect(Connection& c) override {
    if (connects++ == 0) a_id.store(c.id().value());
    return true;
  }
  void on_message_recv(Connection&, Bytes m) override {
    if (m == "sleep") {
      sleeping.store(true);
      std::this_thread::sleep_for(800ms);  // the shard is busy: stop()'s sends queue up
    }
  }
  void on_server_shutting_down(Server& s) override {
    const ConnectionId id = ConnectionId::from_value(a_id.load());
    char buf[32];
    for (int i = 0; i < lines; ++i) {
      std::snprintf(buf, sizeof buf, "L%06d\n", i);
      const SendStatus st = s.send(id, buf);
      if (st == SendStatus::ok) {
        ok++;
      } else {
        if (not_ok++ == 0) first_not_ok = std::string(to_string(st)) + " at line " + std::to_string(i);
      }
    }
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    if (c.id().value() == a_id.load()) a_reason.store(static_cast<int>(r));
  }
};

TEST(ShutdownSend, EveryLineSentFromOnServerShuttingDownArrivesBeforeEof) {
  ShutdownSender h;
  ServerOptions o = loopback_options(1, 0);
  o.framing = Framing::line;
  o.shutdown_timeout = 5000ms;
  Server server(h, o);
  server.start();

  Client a(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }));
  Client b(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 2; }));
  ASSERT_NE(h.a_id.load(), 0u);

  // A's reader: every line, then EOF.
  std::string got;
  EofResult end = EofResult::timeout;
  std::thread reader([&] { end = a.wait_eof(20s, &got); });

  ASSERT_TRUE(b.send_line("sleep"));
  ASSERT_TRUE(wait_until([&] { return h.sleeping.load(); }));
  const auto t0 = Clock::now();
  server.stop();
  const double stop_ms = ms_since(t0);
  reader.join();

  // Parse what A received.
  std::vector<int> seqs;
  std::size_t pos = 0;
  bool garbage = false;
  while (pos < got.size()) {
    const std::size_t nl = got.find('\n', pos);
    if (nl == std::string::npos) {
      garbage = true;
      break;
    }
    const std::string line = got.substr(pos, nl - pos);
    if (line.size() != 7 || line[0] != 'L') {
      garbage = true;
    } else {
      seqs.push_back(std::atoi(line.c_str() + 1));
    }
    pos = nl + 1;
  }
  std::size_t in_order = 0;
  while (in_order < seqs.size() && seqs[in_order] == static_cast<int>(in_order)) ++in_order;
  std::printf("[shutdown_send] stop took %.0f ms; %d sends ok, %d not ok (%s); A received %zu lines, "
              "%zu in order from the start; end=%s; A's reason=%d\n",
              stop_ms, h.ok.load(), h.not_ok.load(), h.first_not_ok.c_str(), seqs.size(), in_order,
              to_string(end), h.a_reason.load());

  EXPECT_EQ(h.not_ok.load(), 0) << "a send from on_server_shutting_down was refused: " << h.first_not_ok
                                << " (the inbox holds 32768 commands, 5000 fit)";
  EXPECT_EQ(end, EofResult::eof) << "A must get FIN after its lines";
  EXPECT_FALSE(garbage) << "A received a malformed line";
  EXPECT_EQ(seqs.size(), static_cast<std::size_t>(h.ok.load()))
      << "every line whose send returned ok must arrive before EOF; the first missing one is L"
      << in_order;
  EXPECT_EQ(in_order, seqs.size()) << "lines out of order or missing in the middle";
  EXPECT_EQ(h.a_reason.load(), static_cast<int>(CloseReason::shutdown));
}

}  // namespace
}  // namespace esockets::test::delivery

// Every public Server/Connection call from the test thread: send/send_frame/close to live and
// stale ids, broadcast, client_count, for_each_client, stats counters, pause/resume_reading.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <map>
#include <mutex>
#include <set>

#include "test_support.hpp"

namespace esockets::test {
namespace {

// Records ids by the client's address; echoes framed messages; "pause" pauses reading and
// answers "paused"; on_output_low resumes reading.
class IdHandler : public CountingHandler {
 public:
  std::mutex mu;
  std::map<std::string, ConnectionId> by_addr;
  std::map<std::uint64_t, CloseReason> reason_of;
  std::vector<std::string> after_pause;  // messages delivered to the paused client, in order
  std::atomic<bool> resumed{false};

  bool on_client_connect(Connection& c) override {
    {
      std::lock_guard lk(mu);
      by_addr[c.getip()] = c.id();
    }
    return CountingHandler::on_client_connect(c);
  }
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "pause") {
      messages++;
      c.pause_reading();
      c.send_frame("paused");
      return;
    }
    if (m.substr(0, 2) == "p:") {
      messages++;
      std::lock_guard lk(mu);
      after_pause.emplace_back(m);
      return;
    }
    CountingHandler::on_message_recv(c, m);
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    {
      std::lock_guard lk(mu);
      reason_of[c.id().value()] = r;
    }
    CountingHandler::on_client_disconnect(c, r);
  }
  void on_output_low(Connection& c) override {
    CountingHandler::on_output_low(c);
    c.resume_reading();
    resumed = true;
  }
  ConnectionId id_of(const Client& cl) {
    std::lock_guard lk(mu);
    auto it = by_addr.find(cl.local_address());
    return it == by_addr.end() ? ConnectionId() : it->second;
  }
};

class Api : public ::testing::TestWithParam<Mode> {
 protected:
  ServerOptions opts(Framing f = Framing::line) {
    ServerOptions o = loopback_options(GetParam().shards, GetParam().workers);
    o.framing = f;
    return o;
  }
};

TEST_P(Api, SendSendFrameAndCloseToLiveIds) {
  IdHandler h;
  h.framed_echo = true;
  Server server(h, opts());
  server.start();
  Client a(server.port()), b(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 2; }));
  ConnectionId ia = h.id_of(a), ib = h.id_of(b);
  ASSERT_TRUE(ia.valid());
  ASSERT_TRUE(ib.valid());
  EXPECT_NE(ia, ib);

  EXPECT_EQ(server.send(ia, "raw-bytes"), SendStatus::ok);
  EXPECT_EQ(server.send_frame(ia, "framed"), SendStatus::ok);
  EXPECT_EQ(a.recv_exact(std::string("raw-bytesframed\n").size()), "raw-bytesframed\n");
  EXPECT_EQ(server.send_frame(ib, ""), SendStatus::ok);
  EXPECT_EQ(b.recv_exact(1), "\n");

  // Many sends from this thread arrive in call order.
  std::string expect;
  for (int i = 0; i < 1000; ++i) {
    std::string m = std::to_string(i);
    expect += m + "\n";
    ASSERT_EQ(server.send_frame(ib, m), SendStatus::ok);
  }
  EXPECT_EQ(b.recv_exact(expect.size()), expect);

  // close: output queued before it is flushed, then EOF, disconnect(closed_by_server).
  EXPECT_EQ(server.send(ia, "bye"), SendStatus::ok);
  EXPECT_EQ(server.close(ia), SendStatus::ok);
  std::string rest;
  EXPECT_EQ(a.wait_eof(5s, &rest), EofResult::eof);
  EXPECT_EQ(rest, "bye");
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  {
    std::lock_guard lk(h.mu);
    EXPECT_EQ(h.reason_of[ia.value()], CloseReason::closed_by_server);
  }
  // The id is stale now.
  EXPECT_EQ(server.send(ia, "x"), SendStatus::closed);
  EXPECT_EQ(server.send_frame(ia, "x"), SendStatus::closed);
  EXPECT_EQ(server.close(ia), SendStatus::closed);
  // b still works.
  ASSERT_TRUE(b.send_line("still-here"));
  std::string line;
  ASSERT_TRUE(b.recv_line(line));
  EXPECT_EQ(line, "still-here");
  server.stop();
  EXPECT_EQ(h.disconnects.load(), 2);
  EXPECT_EQ(h.reason(CloseReason::shutdown), 1);
  // After stop every id is closed.
  EXPECT_EQ(server.send(ib, "x"), SendStatus::closed);
  EXPECT_EQ(server.close(ib), SendStatus::closed);
}

TEST_P(Api, InvalidAndForeignIdsAreClosed) {
  IdHandler h;
  Server server(h, opts());
  EXPECT_EQ(server.send(ConnectionId(0, 5, 1), "x"), SendStatus::closed) << "before start";
  server.start();
  Client a(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }));
  ConnectionId ia = h.id_of(a);
  EXPECT_EQ(server.send(ConnectionId(), "x"), SendStatus::closed);
  EXPECT_EQ(server.close(ConnectionId()), SendStatus::closed);
  EXPECT_EQ(server.send(ConnectionId(200, ia.slot(), ia.generation()), "x"), SendStatus::closed);
  EXPECT_EQ(server.send(ConnectionId(ia.shard(), ia.slot(), ia.generation() + 2), "x"),
            SendStatus::closed);
  EXPECT_EQ(server.send(ConnectionId(ia.shard(), ia.slot(), ia.generation() + 1), "x"),
            SendStatus::closed);
  EXPECT_EQ(server.send(ConnectionId(ia.shard(), 0xffffff, 1), "x"), SendStatus::closed);
  EXPECT_EQ(server.send_frame(ConnectionId(ia.shard(), 0xffffff, 1), "x"), SendStatus::closed);
  EXPECT_EQ(a.poll_once(200ms), EofResult::timeout) << "nothing may reach the live client";
  EXPECT_EQ(server.send(ia, "ok"), SendStatus::ok);
  EXPECT_EQ(a.recv_exact(2), "ok");
}

TEST_P(Api, BroadcastClientCountAndForEachClient) {
  IdHandler h;
  Server server(h, opts());
  server.start();
  EXPECT_EQ(server.client_count(), 0u);
  constexpr std::size_t kN = 20;
  auto clients = connect_many(server.port(), kN);
  ASSERT_TRUE(wait_until([&] { return server.client_count() == kN; }))
      << server.client_count();
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(kN); }));
  std::set<ConnectionId> expect, seen;
  for (auto& c : clients) expect.insert(h.id_of(c));
  server.for_each_client([&](ConnectionId id) { EXPECT_TRUE(seen.insert(id).second); });
  EXPECT_EQ(seen, expect);

  // broadcast() returns how many connections it was queued for.
  EXPECT_EQ(server.broadcast("hello all\n"), kN);
  for (auto& c : clients) EXPECT_EQ(c.recv_exact(10), "hello all\n");

  for (std::size_t i = 0; i < kN / 2; ++i) clients[i].close();
  ASSERT_TRUE(wait_until([&] { return server.client_count() == kN - kN / 2; }));
  seen.clear();
  server.for_each_client([&](ConnectionId id) { seen.insert(id); });
  EXPECT_EQ(seen.size(), kN - kN / 2);
  for (std::size_t i = kN / 2; i < kN; ++i) EXPECT_TRUE(seen.count(h.id_of(clients[i])));
  EXPECT_EQ(server.broadcast("again\n"), kN - kN / 2);
  for (std::size_t i = kN / 2; i < kN; ++i) EXPECT_EQ(clients[i].recv_exact(6), "again\n");
  server.stop();
  EXPECT_EQ(server.client_count(), 0u);
}

TEST_P(Api, StatsCountersMatchTraffic) {
  IdHandler h;
  h.framed_echo = true;
  Server server(h, opts());
  server.start();
  constexpr int kClients = 6, kMsgs = 50;
  auto clients = connect_many(server.port(), kClients);
  std::uint64_t bytes = 0;
  for (auto& c : clients) {
    std::string all;
    for (int m = 0; m < kMsgs; ++m) all += "message-" + std::to_string(m) + "\n";
    bytes += all.size();
    ASSERT_TRUE(c.send_all(all));
    EXPECT_EQ(c.recv_exact(all.size()), all);
  }
  // The shard publishes its counters after sendmsg returns (bytes_out, then output_bytes), so
  // the client can hold the echo before they move: wait for the settled values in one snapshot
  // and check everything on that snapshot.
  Stats st;
  EXPECT_TRUE(wait_until([&] {
    st = server.stats();
    return st.total.bytes_out == bytes && st.total.output_bytes == 0;
  })) << "bytes_out " << st.total.bytes_out << " of " << bytes << ", output_bytes "
      << st.total.output_bytes;
  EXPECT_EQ(st.shards.size(), GetParam().shards);
  EXPECT_EQ(st.total.accepts, static_cast<std::uint64_t>(kClients));
  EXPECT_EQ(st.total.connections, static_cast<std::uint64_t>(kClients));
  EXPECT_EQ(st.total.refused, 0u);
  EXPECT_EQ(st.total.messages_in, static_cast<std::uint64_t>(kClients * kMsgs));
  EXPECT_EQ(st.total.messages_out, static_cast<std::uint64_t>(kClients * kMsgs));
  EXPECT_EQ(st.total.bytes_in, bytes);
  EXPECT_EQ(st.total.bytes_out, bytes);
  EXPECT_EQ(st.total.output_bytes, 0u);
  EXPECT_EQ(st.total.paused, 0u);
  std::uint64_t sum_accepts = 0;
  for (auto& s : st.shards) sum_accepts += s.accepts;
  EXPECT_EQ(sum_accepts, st.total.accepts);

  // Two peer closes, one server close, one reset, the rest at shutdown.
  clients[0].close();
  clients[1].close();
  ConnectionId i2 = h.id_of(clients[2]);
  EXPECT_EQ(server.close(i2), SendStatus::ok);
  EXPECT_EQ(clients[2].wait_eof(5s), EofResult::eof);
  clients[3].reset();
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 4; }));
  ASSERT_TRUE(wait_until([&] { return server.stats().total.connections == 2; }));
  st = server.stats();
  EXPECT_EQ(st.total.closes_by(CloseReason::peer_closed), 2u);
  EXPECT_EQ(st.total.closes_by(CloseReason::closed_by_server), 1u);
  EXPECT_EQ(st.total.closes_by(CloseReason::reset), 1u);
  EXPECT_EQ(h.reason(CloseReason::peer_closed), 2);
  EXPECT_EQ(h.reason(CloseReason::closed_by_server), 1);
  EXPECT_EQ(h.reason(CloseReason::reset), 1);
  server.stop();
  st = server.stats();
  EXPECT_EQ(st.total.connections, 0u);
  EXPECT_EQ(st.total.closes_by(CloseReason::shutdown), 2u);
  std::uint64_t closes = 0;
  for (auto c : st.total.closes) closes += c;
  EXPECT_EQ(closes, static_cast<std::uint64_t>(kClients));
}

TEST_P(Api, PauseReadingStopsDeliveryAndResumeDeliversInOrder) {
  IdHandler h;
  h.framed_echo = true;
  ServerOptions o = opts();
  o.output_high_watermark = 64 * 1024;
  o.output_low_watermark = 16 * 1024;
  Server server(h, o);
  server.start();
  Client c(server.port());
  ASSERT_TRUE(c.send_line("pause"));
  std::string line;
  ASSERT_TRUE(c.recv_line(line));
  ASSERT_EQ(line, "paused");
  const int before = h.messages.load();
  std::string burst;
  constexpr int kN = 200;
  for (int i = 0; i < kN; ++i) burst += "p:" + std::to_string(i) + "\n";
  ASSERT_TRUE(c.send_all(burst));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(h.messages.load(), before) << "messages delivered while paused";
  EXPECT_EQ(server.stats().total.paused, 1u);
  // Resume through on_output_low: push output past the high watermark, then read it.
  ConnectionId id = h.id_of(c);
  std::string big(128 * 1024, 'z');
  ASSERT_EQ(server.send(id, big), SendStatus::ok);
  ASSERT_TRUE(wait_until([&] { return h.high.load() == 1; }, 5s));
  EXPECT_EQ(c.recv_exact(big.size()), big);
  ASSERT_TRUE(wait_until([&] { return h.resumed.load(); }, 5s));
  ASSERT_TRUE(wait_until([&] { return h.messages.load() == before + kN; }, 5s))
      << h.messages.load() - before;
  std::lock_guard lk(h.mu);
  ASSERT_EQ(h.after_pause.size(), static_cast<std::size_t>(kN));
  for (int i = 0; i < kN; ++i) EXPECT_EQ(h.after_pause[i], "p:" + std::to_string(i));
  EXPECT_EQ(server.stats().total.paused, 0u);
}

TEST_P(Api, LengthPrefixedSendFrameAddsHeader) {
  IdHandler h;
  h.framed_echo = true;
  ServerOptions o = opts(Framing::length_prefixed);
  o.length_prefix_bytes = 2;
  Server server(h, o);
  server.start();
  Client c(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }));
  std::string frame = std::string("\x00\x05", 2) + "hello";
  ASSERT_TRUE(c.send_all(frame));
  EXPECT_EQ(c.recv_exact(frame.size()), frame);
  ASSERT_EQ(server.send_frame(h.id_of(c), "abc"), SendStatus::ok);
  EXPECT_EQ(c.recv_exact(5), std::string("\x00\x03", 2) + "abc");
  // A message too long for a 2-byte header cannot be framed.
  EXPECT_EQ(server.send_frame(h.id_of(c), std::string(70000, 'x')), SendStatus::backpressure);
  EXPECT_EQ(h.messages.load(), 1);
}

INSTANTIATE_TEST_SUITE_P(Modes, Api,
                         ::testing::Values(Mode{1, 0}, Mode{2, 0}, Mode{1, 2}, Mode{2, 2}),
                         mode_name);

}  // namespace
}  // namespace esockets::test

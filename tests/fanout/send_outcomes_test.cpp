// Distinct send outcomes. SendStatus::slow_consumer ("the connection is being closed") and
// SendStatus::backpressure ("nothing was done, the connection is fine, retry after
// wait_writable") mean opposite things to a caller and must not be mixed up:
//   - on the owner shard thread, a send that passes output_hard_cap returns slow_consumer and
//     the connection closes with CloseReason::slow_consumer (also for one oversized send);
//   - from a foreign thread, a send that passes the cap when the shard applies it returns ok,
//     never backpressure, and the connection closes as slow_consumer;
//   - a foreign-thread send into a full command queue returns backpressure, is counted in
//     stats().total.send_backpressure, does nothing (the connection stays open; a close()
//     refused this way does not close it), and wait_writable(id, timeout) returns true once
//     the shard drained its queue, false while it cannot, and false at once for a closed id.
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "fanout_support.hpp"

using namespace fanout;
using esockets::test::wait_until;

namespace {

constexpr std::size_t kCap = 256 * 1024;

ServerOptions capped_options(unsigned shards) {
  ServerOptions o = esockets::test::loopback_options(shards, 0);
  o.framing = esockets::Framing::line;
  o.output_hard_cap = kCap;
  o.output_high_watermark = kCap / 2;
  o.output_low_watermark = kCap / 4;
  o.socket_send_buffer = 16 * 1024;
  o.write_timeout = std::chrono::milliseconds(0);  // only the cap closes here
  return o;
}

class OutcomeHandler : public esockets::Handler {
 public:
  void attach(Server& s) { server_ = &s; }
  bool on_client_connect(Connection& c) override {
    reg.on_connect(c);
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "FILL" || m == "FILL-SERVER") {
      // Sends from the owner shard thread until one is not ok.
      const std::string chunk(8 * 1024, 'f');
      SendStatus st = SendStatus::ok;
      std::size_t n = 0;
      for (; n < 4096 && st == SendStatus::ok; ++n) {
        st = m == "FILL" ? c.send(chunk) : server_->send(c.id(), chunk);
      }
      fill_oks = n - 1;
      fill_status = static_cast<int>(st);
      after_status = static_cast<int>(c.send("x"));
      return;
    }
    if (m == "BIG") {
      big_status = static_cast<int>(c.send(std::string(kCap + 1, 'b')));
      after_status = static_cast<int>(c.send("x"));
      return;
    }
    if (m == "BLOCK") {
      // Keeps this shard thread busy (bounded) so its command queue fills.
      blocked = true;
      const auto until = Clock::now() + 15s;
      while (!release.load() && Clock::now() < until) std::this_thread::sleep_for(1ms);
      blocked = false;
      return;
    }
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    reg.on_disconnect(r);
    std::lock_guard lk(mu);
    reason_of[c.id()] = r;
  }
  bool closed_as(ConnectionId id, CloseReason r) {
    std::lock_guard lk(mu);
    auto it = reason_of.find(id);
    return it != reason_of.end() && it->second == r;
  }
  std::string reason_str(ConnectionId id) {
    std::lock_guard lk(mu);
    auto it = reason_of.find(id);
    return it == reason_of.end() ? "still open" : esockets::to_string(it->second);
  }

  Registry reg;
  std::atomic<int> fill_status{-1}, big_status{-1}, after_status{-1};
  std::atomic<std::size_t> fill_oks{0};
  std::atomic<bool> blocked{false}, release{false};
  std::mutex mu;
  std::unordered_map<ConnectionId, CloseReason> reason_of;

 private:
  Server* server_ = nullptr;
};

const char* status_name(int s) {
  return s < 0 ? "(not called)" : esockets::to_string(static_cast<SendStatus>(s));
}

// Reads and discards until EOF/reset; true if the peer closed within the timeout.
bool drain_until_closed(int fd, ms timeout) {
  char buf[65536];
  const auto until = Clock::now() + timeout;
  while (Clock::now() < until) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
    if (n < 0) std::this_thread::sleep_for(1ms);
  }
  return false;
}

ConnectionId wait_id(OutcomeHandler& h, std::uint16_t port) {
  ConnectionId id;
  wait_until([&] { return (id = h.reg.id_of(port)).valid(); }, 10s);
  return id;
}

class OwnerThreadPastCap : public ::testing::TestWithParam<const char*> {};

TEST_P(OwnerThreadPastCap, ReturnsSlowConsumerAndClosesAsSlowConsumer) {
  const std::string cmd = GetParam();
  OutcomeHandler h;
  Server s(h, capped_options(2));
  h.attach(s);
  s.start();
  Fleet fleet;
  ASSERT_TRUE(fleet.connect(s.port(), 1, 4096));  // a client that does not read
  const ConnectionId id = wait_id(h, fleet.local_port(0));
  ASSERT_TRUE(id.valid());
  ASSERT_TRUE(fleet.send(0, cmd + "\n"));
  ASSERT_TRUE(wait_until([&] { return h.after_status.load() >= 0; }, 10s));
  const int st = cmd == "BIG" ? h.big_status.load() : h.fill_status.load();
  std::printf("[outcomes] %s: first non-ok status %s after %zu ok sends; next send: %s\n",
              cmd.c_str(), status_name(st), h.fill_oks.load(), status_name(h.after_status.load()));
  EXPECT_EQ(st, static_cast<int>(SendStatus::slow_consumer))
      << "a send past output_hard_cap on the owner thread returned " << status_name(st)
      << " (backpressure would tell the caller to retry a connection that is being closed)";
  EXPECT_EQ(h.after_status.load(), static_cast<int>(SendStatus::closed))
      << "the next send to the slow consumer returned " << status_name(h.after_status.load());
  const bool closed = wait_until([&] { return h.closed_as(id, CloseReason::slow_consumer); }, 5s);
  EXPECT_TRUE(closed) << "connection state: " << h.reason_str(id);
  if (closed) EXPECT_TRUE(drain_until_closed(fleet.fd(0), 10s)) << "the client never saw the close";
  EXPECT_EQ(s.stats().total.closes_by(CloseReason::slow_consumer), 1u);
  s.stop();
}

INSTANTIATE_TEST_SUITE_P(Fanout, OwnerThreadPastCap,
                         ::testing::Values("FILL", "FILL-SERVER", "BIG"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           std::string n = i.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n == "FILL" ? std::string("connection_send_fill")
                                  : n == "BIG" ? std::string("one_oversized_send")
                                               : std::string("server_send_fill");
                         });

TEST(ForeignThreadPastCap, ReturnsOkNeverBackpressureAndClosesAsSlowConsumer) {
  OutcomeHandler h;
  Server s(h, capped_options(2));
  h.attach(s);
  s.start();
  Fleet fleet;
  ASSERT_TRUE(fleet.connect(s.port(), 1, 4096));
  const ConnectionId id = wait_id(h, fleet.local_port(0));
  ASSERT_TRUE(id.valid());
  const std::string chunk(8 * 1024, 'g');
  StatusTally t;
  for (std::size_t i = 0; i < 4 * kCap / chunk.size(); ++i) {
    const SendStatus st = s.send(id, chunk);
    t.add(st);
    if (st == SendStatus::closed) break;
    if (i % 8 == 0) std::this_thread::sleep_for(1ms);  // let the shard apply them
  }
  // One oversized send from a foreign thread: either ok (closed when applied) or
  // slow_consumer; never backpressure, which would mean "nothing done, connection fine".
  const SendStatus big = s.send(id, std::string(kCap + 1, 'B'));
  std::printf("[outcomes] foreign fill: %s; oversized: %s; connection: %s\n", t.str().c_str(),
              esockets::to_string(big), h.reason_str(id).c_str());
  EXPECT_EQ(t.backpressure.load(), 0u) << t.str();
  EXPECT_NE(big, SendStatus::backpressure);
  EXPECT_TRUE(wait_until([&] { return h.closed_as(id, CloseReason::slow_consumer); }, 10s))
      << "connection state: " << h.reason_str(id);
  EXPECT_EQ(s.send(id, "late"), SendStatus::closed);
  EXPECT_TRUE(drain_until_closed(fleet.fd(0), 10s));
  s.stop();
}

TEST(OversizedForeignSend, ClosesTheConnection) {
  // A single send larger than output_hard_cap from a foreign thread, on an idle connection.
  OutcomeHandler h;
  Server s(h, capped_options(1));
  h.attach(s);
  s.start();
  Fleet fleet;
  ASSERT_TRUE(fleet.connect(s.port(), 1, 4096));
  const ConnectionId id = wait_id(h, fleet.local_port(0));
  ASSERT_TRUE(id.valid());
  const SendStatus big = s.send(id, std::string(kCap + 1, 'B'));
  EXPECT_TRUE(big == SendStatus::ok || big == SendStatus::slow_consumer)
      << "an oversized foreign send returned " << esockets::to_string(big);
  EXPECT_TRUE(wait_until([&] { return h.closed_as(id, CloseReason::slow_consumer); }, 5s))
      << "connection state: " << h.reason_str(id) << " (after status " << esockets::to_string(big) << ")";
  s.stop();
}

TEST(ForeignThreadFullQueue, BackpressureIsCountedHarmlessAndWaitWritableWorks) {
  ServerOptions o = esockets::test::loopback_options(1, 0);
  o.framing = esockets::Framing::line;
  o.command_queue_capacity = 16;
  OutcomeHandler h;
  Server s(h, o);
  h.attach(s);
  s.start();
  Fleet fleet;
  ASSERT_TRUE(fleet.connect(s.port(), 3));  // 0 blocks the shard, 1 is the target, 2 leaves
  const ConnectionId target = wait_id(h, fleet.local_port(1));
  const ConnectionId leaver = wait_id(h, fleet.local_port(2));
  ASSERT_TRUE(target.valid() && leaver.valid());
  std::mutex lines_mu;
  std::vector<std::string> target_lines;
  fleet.start([&](std::size_t i, std::string_view line) {
    if (i != 1) return;
    std::lock_guard lk(lines_mu);
    target_lines.emplace_back(line);
  });

  ASSERT_TRUE(fleet.send(0, "BLOCK\n"));
  ASSERT_TRUE(wait_until([&] { return h.blocked.load(); }, 10s));
  std::vector<int> ok_seq;
  std::size_t bp = 0;
  bool ok_after_bp = false;
  for (int i = 0; i < 64; ++i) {
    const SendStatus st = s.send(target, "m" + std::to_string(i) + "\n");
    if (st == SendStatus::ok) {
      ok_seq.push_back(i);
      if (bp > 0) ok_after_bp = true;
    } else if (st == SendStatus::backpressure) {
      ++bp;
    } else {
      ADD_FAILURE() << "send " << i << " into a busy shard returned " << esockets::to_string(st);
    }
  }
  std::printf("[outcomes] full queue: %zu ok, %zu backpressure\n", ok_seq.size(), bp);
  ASSERT_GT(bp, 0u) << "64 sends into a 16-command queue of a blocked shard never hit backpressure";
  EXPECT_FALSE(ok_after_bp) << "the shard is blocked: nothing can have freed room";
  auto st1 = s.stats();
  EXPECT_EQ(st1.total.send_backpressure, bp) << "stats().total.send_backpressure";
  ASSERT_EQ(st1.shards.size(), 1u);
  EXPECT_EQ(st1.shards[0].send_backpressure, bp) << "stats().shards[0].send_backpressure";
  EXPECT_TRUE(s.connected(target)) << "backpressure must leave the connection open";

  // Other calls into the full queue: refused, counted, and without effect.
  EXPECT_EQ(s.close(target), SendStatus::backpressure) << "close() into a full queue";
  const ConnectionId one[] = {target};
  const MulticastResult mr = s.multicast(one, "mc\n");
  EXPECT_EQ(mr.backpressure, 1u) << "multicast into a full queue: ok=" << mr.ok;
  EXPECT_EQ(s.broadcast("bc\n"), 0u) << "broadcast into a full queue reported recipients";
  const auto st2 = s.stats();
  EXPECT_GE(st2.total.send_backpressure, bp + 3) << "close/multicast/broadcast refusals not counted";

  // While the shard cannot drain, wait_writable times out.
  auto t0 = Clock::now();
  EXPECT_FALSE(s.wait_writable(target, 200ms)) << "the queue is still full";
  EXPECT_GE(since_s(t0), 0.15);
  h.release = true;
  t0 = Clock::now();
  EXPECT_TRUE(s.wait_writable(target, 5s)) << "the shard drained, the queue has room";
  EXPECT_LT(since_s(t0), 2.0);
  EXPECT_EQ(s.send(target, "after\n"), SendStatus::ok);
  EXPECT_TRUE(wait_until([&] {
    std::lock_guard lk(lines_mu);
    return !target_lines.empty() && target_lines.back() == "after";
  }, 10s));
  {
    std::lock_guard lk(lines_mu);
    std::vector<std::string> want;
    for (int i : ok_seq) want.push_back("m" + std::to_string(i));
    want.push_back("after");
    EXPECT_EQ(target_lines, want) << "exactly the sends that returned ok, in order";
  }
  EXPECT_TRUE(s.connected(target)) << "a close() refused with backpressure must not close";
  EXPECT_EQ(h.reason_str(target), "still open");

  // A closed id: false at once.
  fleet.close(2);
  ASSERT_TRUE(wait_until([&] { return !s.connected(leaver); }, 10s));
  t0 = Clock::now();
  EXPECT_FALSE(s.wait_writable(leaver, 3s));
  EXPECT_LT(since_s(t0), 0.5) << "wait_writable for a closed id must not wait for the timeout";
  t0 = Clock::now();
  EXPECT_FALSE(s.wait_writable(ConnectionId{}, 3s));
  EXPECT_LT(since_s(t0), 0.5);
  fleet.stop();
  s.stop();
}

}  // namespace

// Claim (README options and limits tables, server.hpp send()): command_queue_capacity bounds the
// commands queued into a shard; when the queue is full, send and close from a thread that is
// not an engine thread return backpressure, do nothing, and leave the connection fine; every
// send that returned ok is delivered, in order; wait_writable says when to retry.
//
// The only shard is held inside an inline handler (at a gate the test opens, bounded), so it
// drains nothing while the test thread sends numbered lines to another client. Fails if a full
// queue blocks the caller, drops or reorders an accepted send, still accepts sends well past
// the capacity, closes the connection (or a backpressured close() closes it), or if
// wait_writable does not report room once the shard runs again.
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class Holding : public CountingHandler {
 public:
  std::mutex mu;
  std::condition_variable cv;
  bool held = false, released = false;
  std::vector<ConnectionId> ids;

  bool on_client_connect(Connection& c) override {
    {
      std::lock_guard lk(mu);
      ids.push_back(c.id());
    }
    return CountingHandler::on_client_connect(c);
  }
  void on_message_recv(Connection& c, Bytes m) override {
    if (m != "hold") return CountingHandler::on_message_recv(c, m);
    std::unique_lock lk(mu);
    held = true;
    cv.notify_all();
    cv.wait_for(lk, 10s, [&] { return released; });  // bounded: never hangs the shard
  }
  void release() {
    std::lock_guard lk(mu);
    released = true;
    cv.notify_all();
  }
  bool is_held() {
    std::lock_guard lk(mu);
    return held;
  }
};

constexpr std::size_t kCapacity = 16;

struct Filled {
  std::size_t ok = 0;
  bool backpressure = false;
};

// Sends numbered lines to `id` until one returns backpressure (bounded).
Filled fill(Server& server, ConnectionId id) {
  Filled f;
  for (std::size_t k = 0; k < 100 * kCapacity; ++k) {
    char line[32];
    std::snprintf(line, sizeof line, "m%05zu\n", f.ok);
    const SendStatus st = server.send(id, line);
    if (st == SendStatus::backpressure) {
      f.backpressure = true;
      break;
    }
    EXPECT_EQ(st, SendStatus::ok) << "send #" << k;
    if (st != SendStatus::ok) break;
    ++f.ok;
  }
  return f;
}

std::string expected_lines(std::size_t n) {
  std::string s;
  char line[32];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(line, sizeof line, "m%05zu\n", i);
    s += line;
  }
  return s;
}

TEST(CommandQueueBackpressure, FullQueueReturnsBackpressureConnectionStaysAndOkSendsArrive) {
  Holding h;
  auto o = loopback_options(1, 0);
  o.command_queue_capacity = kCapacity;
  Server server(h, o);
  server.start();
  Client holder(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }));
  Client target(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 2; }));
  ConnectionId id;
  {
    std::lock_guard lk(h.mu);
    id = h.ids[1];
  }

  ASSERT_TRUE(holder.send_all("hold"));
  ASSERT_TRUE(wait_until([&] { return h.is_held(); }));
  const Filled f = fill(server, id);
  EXPECT_TRUE(f.backpressure) << "no backpressure after " << f.ok << " sends into a queue of "
                              << kCapacity;
  EXPECT_GE(f.ok, kCapacity / 2) << "the queue holds fewer commands than its capacity";
  EXPECT_LE(f.ok, kCapacity) << "more sends accepted than the queue can hold";
  // A full queue refuses close() the same way, and nothing happened to the connection.
  EXPECT_EQ(server.close(id), SendStatus::backpressure);
  EXPECT_TRUE(server.connected(id));

  h.release();
  EXPECT_TRUE(server.wait_writable(id, 10s)) << "the shard runs again: room in its queue";
  ASSERT_EQ(server.send(id, "last\n"), SendStatus::ok);
  const std::string want = expected_lines(f.ok) + "last\n";
  const std::string got = target.recv_exact(want.size(), 10s);
  EXPECT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << "an accepted send was lost or reordered: got "
                           << got.substr(0, 200) << "...";
  EXPECT_TRUE(server.connected(id));
  EXPECT_EQ(target.poll_once(50ms), EofResult::timeout) << "nothing more, and no close";
  EXPECT_EQ(h.disconnects.load(), 0);
  server.stop();
}

TEST(CommandQueueBackpressure, RefusedSendsAreCountedInStats) {
  // stats.hpp: send_backpressure counts calls into a shard refused with backpressure.
  Holding h;
  auto o = loopback_options(1, 0);
  o.command_queue_capacity = kCapacity;
  Server server(h, o);
  server.start();
  Client holder(server.port());
  Client target(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 2; }));
  ConnectionId id;
  {
    std::lock_guard lk(h.mu);
    id = h.ids[1];
  }
  ASSERT_TRUE(holder.send_all("hold"));
  ASSERT_TRUE(wait_until([&] { return h.is_held(); }));
  const Filled f = fill(server, id);
  ASSERT_TRUE(f.backpressure);
  EXPECT_EQ(server.close(id), SendStatus::backpressure);
  h.release();
  const Stats st = server.stats();
  EXPECT_GE(st.total.send_backpressure, 2u) << "one refused send and one refused close";
  EXPECT_GE(st.shards.at(0).send_backpressure, 2u);
  server.stop();
}

}  // namespace
}  // namespace esockets::test

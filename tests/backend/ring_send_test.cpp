// Output while it waits for room, on both backends. On io_uring a connection's send is one
// operation in flight that the kernel parks until the socket has room: the bytes it reads
// must outlive a close, must not go out twice when a move or a stop cancels it, and a
// connection must not leave its shard while it is in flight. The clients here read slowly
// (small receive buffers), so sends wait; every byte carries a sequence number.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend_param.hpp"
#include "esockets/esockets.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using esockets::Backend;
using esockets::Bytes;
using esockets::CloseReason;
using esockets::Connection;
using esockets::SendStatus;
using esockets::Server;
using esockets::ServerOptions;
using esockets::test::Client;
using esockets::test::wait_until;

namespace {

using RingSend = esockets::test::SendingBackendTest;
using esockets::test::seq_record;

// "go <n>": n records, sent in batches of 1,024 (16 KiB) from the handler. Sends that do not return ok
// are counted (none are expected unless the test makes the client a slow consumer).
class Streamer : public esockets::Handler {
 public:
  std::atomic<int> refused_sends{0};
  std::atomic<int> streams_queued{0};  // "go" requests whose every record was accepted
  std::atomic<int> disconnects{0};
  std::mutex mu;
  std::vector<CloseReason> reasons;
  void on_message_recv(Connection& c, Bytes m) override {
    const std::string s(m.data(), m.size());
    if (s.rfind("go ", 0) != 0) return;
    const std::uint64_t n = std::strtoull(s.c_str() + 3, nullptr, 10);
    std::string batch;
    for (std::uint64_t seq = 0; seq < n;) {
      batch.clear();
      for (int k = 0; k < 1024 && seq < n; ++k) batch += seq_record(seq++);
      SendStatus st = c.send(batch);
      // (A worker's sends queue into the shard: a full queue is waited out, bounded.)
      for (int tries = 0; st == SendStatus::backpressure && tries < 10000; ++tries) {
        std::this_thread::sleep_for(1ms);
        st = c.send(batch);
      }
      if (st != SendStatus::ok) {
        ++refused_sends;
        return;
      }
    }
    ++streams_queued;
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    std::lock_guard lk(mu);
    reasons.push_back(r);
    ++disconnects;
  }
};

// Connections move between shards (grow, shrink, rebalance) while each has megabytes queued
// and its send waits for the client to make room: each stream arrives whole and in order.
TEST_P(RingSend, MovesWhileSendsWaitForRoomLoseAndRepeatNothing) {
  Streamer h;
  ServerOptions o = send_options(2);
  o.output_hard_cap = 64u * 1024 * 1024;
  Server s(h, o);
  s.start();
  constexpr int kClients = 4;
  constexpr std::uint64_t kRecords = 128 * 1024;  // 2 MiB each
  std::vector<Client> clients(kClients);
  for (auto& c : clients) {
    c.set_rcvbuf(16 * 1024);
    ASSERT_TRUE(c.connect(s.port()));
  }
  for (auto& c : clients) ASSERT_TRUE(c.send_line("go " + std::to_string(kRecords)));
  ASSERT_TRUE(wait_until([&] { return h.streams_queued.load() == kClients; }, 10s))
      << "the streams were not queued";
  // (A worker's sends are still on their way into the shard for a moment.)
  ASSERT_TRUE(wait_until([&] { return s.stats().total.output_bytes > 4u * 1024 * 1024; }, 5s))
      << "the sends do not wait for room";
  // The shard count changes all the time (another thread) while the clients read, so sends
  // complete while their connections are being handed over.
  std::atomic<bool> reading{true};
  std::thread mover([&] {
    const unsigned counts[] = {1, 3, 2, 4, 1, 2};
    for (std::size_t step = 0; reading.load() && step < 2000; ++step) {
      s.set_shards(counts[step % std::size(counts)]);
      if (step % 3 == 0) s.rebalance();
    }
  });
  // A chunk from each client in turn, so every stream stays blocked while others are read;
  // a pause per round (a shrink takes its grace period) lets several resizes happen.
  std::vector<std::uint64_t> next(kClients, 0);
  const std::vector<std::string> errors = esockets::test::read_streams_in_turn(
      clients, kRecords, next, 1024, 16 * 1024, [] { std::this_thread::sleep_for(10ms); });
  reading = false;
  mover.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(h.refused_sends.load(), 0);
  EXPECT_GE(s.stats().resizes, 3u);
  s.stop();
  EXPECT_EQ(h.disconnects.load(), kClients);
}

// A client that stops reading passes output_hard_cap while a send waits for room: it is
// closed as slow_consumer (the queue the send reads from is dropped under it), the server
// goes on serving others, and the stop finds nothing left in flight.
TEST_P(RingSend, SlowConsumerClosedWhileItsSendWaits) {
  Streamer h;
  ServerOptions o = send_options(1);
  o.output_hard_cap = 512 * 1024;
  o.output_high_watermark = 256 * 1024;
  o.output_low_watermark = 64 * 1024;
  Server s(h, o);
  s.start();
  Client slow;
  slow.set_rcvbuf(8 * 1024);
  ASSERT_TRUE(slow.connect(s.port()));
  ASSERT_TRUE(slow.send_line("go 16384"));  // 256 KiB: it waits for room, under the cap
  ASSERT_TRUE(wait_until([&] { return h.streams_queued.load() == 1; }, 5s));
  ASSERT_TRUE(wait_until([&] { return s.stats().total.output_bytes > 0; }, 5s))
      << "the send does not wait for room";
  ASSERT_TRUE(slow.send_line("go 65536"));  // 1 MiB more: past the cap
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }, 10s));
  {
    std::lock_guard lk(h.mu);
    ASSERT_EQ(h.reasons.size(), 1u);
    EXPECT_EQ(h.reasons[0], CloseReason::slow_consumer);
  }
  // Inline, the send that passed the cap returned slow_consumer; a worker's send is checked
  // against the cap on the shard, after it returned ok.
  EXPECT_EQ(h.refused_sends.load(), GetParam().workers == 0 ? 1 : 0);
  ASSERT_TRUE(wait_until([&] { return s.stats().total.output_bytes == 0; }, 5s))
      << "the dropped queue is still counted";
  // Another client is served, whole and in order.
  Client fine;
  ASSERT_TRUE(fine.connect(s.port()));
  ASSERT_TRUE(fine.send_line("go 1000"));
  std::uint64_t next = 0;
  EXPECT_EQ(esockets::test::read_seq_records(fine, 1000, next), "");
  s.stop();
  EXPECT_EQ(h.disconnects.load(), 2);
}

// stop() while sends wait for clients that do not read: it ends within shutdown_timeout,
// every connection is reported once, and no descriptor is left open.
TEST_P(RingSend, StopWhileSendsWaitForRoomEndsEveryConnection) {
  const std::size_t fds_before = esockets::test::open_fd_count();
  Streamer h;
  ServerOptions o = send_options(2);
  o.shutdown_timeout = 300ms;
  {
    Server s(h, o);
    s.start();
    std::vector<Client> clients(6);
    for (auto& c : clients) {
      c.set_rcvbuf(8 * 1024);
      ASSERT_TRUE(c.connect(s.port()));
      ASSERT_TRUE(c.send_line("go 32768"));  // 512 KiB each, never read
    }
    ASSERT_TRUE(wait_until([&] { return h.streams_queued.load() == 6; }, 10s));
    ASSERT_TRUE(wait_until([&] { return s.stats().total.output_bytes > 6u * 256 * 1024; }, 5s))
        << "the sends do not wait for room";
    const auto t0 = std::chrono::steady_clock::now();
    s.stop();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "stop waited for the sends";
    EXPECT_EQ(h.disconnects.load(), 6);
  }
  EXPECT_TRUE(wait_until([&] { return esockets::test::open_fd_count() <= fds_before; }, 3s))
      << "descriptors left after the server: " << esockets::test::open_fd_count() << " vs "
      << fds_before;
}

INSTANTIATE_TEST_SUITE_P(Backends, RingSend, esockets::test::all_backend_modes(),
                         esockets::test::backend_mode_name);

}  // namespace

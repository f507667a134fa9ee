// Adversarial tests of messages lent to workers (commit abd8d76): a worker's handler that
// sends bytes of its message gets a block referencing the message's SharedPayload (at an
// offset) instead of a copy, and large messages travel in read_chunk-sized PayloadPool
// buffers. These tests look where that reference goes further than lent_message_test.cpp:
// multicast/broadcast of a slice (the bytes are copied once more from the block), what a
// small slice pins for as long as it is queued, and what the pool keeps after a burst.
//
// Streams carry 16-byte sequence records (seq_record): wrong bytes, loss or reorder show as a
// record other than the next one.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LENT_EXACT_HEAP 1
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#else
#define LENT_EXACT_HEAP 0
#endif

#include "backend_param.hpp"
#include "esockets/esockets.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using esockets::Backend;
using esockets::Bytes;
using esockets::Connection;
using esockets::ConnectionId;
using esockets::Framing;
using esockets::MulticastResult;
using esockets::SendStatus;
using esockets::Server;
using esockets::ServerOptions;
using esockets::test::BackendMode;
using esockets::test::Client;
using esockets::test::wait_until;

namespace {

using LentAdversarial = esockets::test::BackendModeTest;

// Bytes of the heap in use by the whole process (every thread's arena). Only the sanitizers'
// allocators count it exactly; the memory tests run under them (CI's ASan and TSan passes).
std::size_t heap_in_use() {
#if LENT_EXACT_HEAP
  return __sanitizer_get_current_allocated_bytes();
#else
  return 0;
#endif
}

std::string records(std::uint64_t from, std::uint64_t n) {
  std::string s;
  s.reserve(n * 16);
  for (std::uint64_t i = 0; i < n; ++i) s += esockets::test::seq_record(from + i);
  return s;
}

std::string length_prefixed(const std::string& payload) {
  const auto n = static_cast<std::uint32_t>(payload.size());
  std::string out;
  out.push_back(static_cast<char>(n >> 24));
  out.push_back(static_cast<char>(n >> 16));
  out.push_back(static_cast<char>(n >> 8));
  out.push_back(static_cast<char>(n));
  return out + payload;
}

// Connections by connect order: 0 sends length-prefixed messages, each a junk record (999...)
// and then sequence records; the handler passes everything after the junk on, to 1 by
// multicast and to 2 by send (unframed both: a slice of the lent message at offset 16).
class SliceRelay : public esockets::test::OrderedConnections {
 public:
  Server* srv = nullptr;
  std::atomic<int> messages{0};
  std::atomic<int> refused{0};
  void on_message_recv(Connection& c, Bytes m) override {
    ConnectionId to_multicast, to_send;
    {
      std::lock_guard lk(mu);
      if (ids.size() < 3 || c.id() != ids[0]) return;
      to_multicast = ids[1];
      to_send = ids[2];
    }
    const Bytes tail = m.substr(16);
    const MulticastResult r = srv->multicast(std::span<const ConnectionId>(&to_multicast, 1), tail);
    if (r.ok != 1) ++refused;
    if (srv->send(to_send, tail) != SendStatus::ok) ++refused;
    ++messages;
  }
};

// A multicast (as broadcast and Group::send do) of bytes inside the message a worker's handler
// runs on must queue those bytes, wherever they start in the message. Small messages (a block
// of their own) and large ones (a PayloadPool buffer) alternate.
TEST_P(LentAdversarial, MulticastOfASliceOfTheMessageSendsThatSlice) {
  const int kMessages = static_cast<int>(esockets::test::scaled(256, 16));
  SliceRelay h;
  ServerOptions o = options(1);
  o.framing = Framing::length_prefixed;
  o.length_prefix_bytes = 4;
  Server s(h, o);
  h.srv = &s;
  s.start();
  std::vector<Client> clients(3);
  ASSERT_TRUE(esockets::test::connect_in_order(clients, s.port(), h.connects));
  std::uint64_t total = 0;
  std::string wire;
  for (int i = 0; i < kMessages; ++i) {
    const std::uint64_t n = i % 2 == 0 ? 32 : 1100;  // 528 B, and 17.6 KiB: >= read_chunk / 4
    wire += length_prefixed(esockets::test::seq_record(999999999999999) + records(total, n));
    total += n;
  }
  std::atomic<bool> sent{false};
  std::thread writer([&] { sent = clients[0].send_all(wire, 20s); });
  std::string errors[2];
  std::thread readers[2];
  for (int k = 0; k < 2; ++k) {
    readers[k] = std::thread([&, k] {
      std::uint64_t next = 0;
      errors[k] = esockets::test::read_seq_records(clients[1 + k], total, next, 64 * 1024);
    });
  }
  for (auto& r : readers) r.join();
  writer.join();
  EXPECT_TRUE(sent.load());
  EXPECT_EQ(errors[0], "") << "multicast recipient";
  EXPECT_EQ(errors[1], "") << "send recipient";
  EXPECT_EQ(h.refused.load(), 0);
  s.stop();
}

// Connections: 0 sends length-prefixed messages of 32 KiB (each lands in a read_chunk-sized
// pool buffer); the handler sends a 200-byte slice of each to 1, which does not read.
class SliverForwarder : public esockets::test::OrderedConnections {
 public:
  Server* srv = nullptr;
  std::atomic<int> messages{0};
  std::atomic<int> refused{0};
  std::size_t sliver = 200;
  void on_message_recv(Connection& c, Bytes m) override {
    ConnectionId to;
    {
      std::lock_guard lk(mu);
      if (ids.size() < 2 || c.id() != ids[0]) return;
      to = ids[1];
    }
    if (srv->send(to, m.substr(0, sliver)) != SendStatus::ok) ++refused;
    ++messages;
  }
};

// Output queued for a client that does not read is bounded by the output caps, which count
// queued bytes. A 200-byte slice of a large message queued by reference keeps the message's
// whole read_chunk buffer alive: the memory a connection's queue holds must stay within a
// small multiple of the bytes it counts (here: the pool's 64 idle buffers, 16x the queued
// bytes, and 8 MiB of slack for everything else).
TEST_P(LentAdversarial, SmallSlicesQueuedForASlowReaderDoNotPinWholeBuffers) {
  if (!LENT_EXACT_HEAP) GTEST_SKIP() << "needs a sanitizer's exact count of the heap in use";
  const int kMessages = static_cast<int>(esockets::test::scaled(2048, 256));
  constexpr int kBatch = 8;
  constexpr std::size_t kMessageBytes = 32 * 1024;
  SliverForwarder h;
  ServerOptions o = options(1);
  o.framing = Framing::length_prefixed;
  o.length_prefix_bytes = 4;
  o.read_chunk = 64 * 1024;
  o.socket_send_buffer = 4096;
  o.write_timeout = 0ms;
  o.shutdown_timeout = 300ms;  // the recipient never reads: the stop gives up on it
  Server s(h, o);
  h.srv = &s;
  s.start();
  std::vector<Client> clients(2);
  ASSERT_TRUE(esockets::test::connect_in_order(clients, s.port(), h.connects));
  clients[1].set_rcvbuf(4096);
  const std::string message = length_prefixed(records(0, kMessageBytes / 16));
  std::string batch;
  for (int i = 0; i < kBatch; ++i) batch += message;
  // Warm up: a batch through, then the baseline.
  ASSERT_TRUE(clients[0].send_all(batch, 10s));
  ASSERT_TRUE(wait_until([&] { return h.messages.load() == kBatch; }, 10s));
  std::this_thread::sleep_for(50ms);
  const std::size_t before = heap_in_use();
  // In batches, so that few messages are ever in flight to the worker at once.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  for (int sent = kBatch; sent < kBatch + kMessages; sent += kBatch) {
    ASSERT_TRUE(clients[0].send_all(batch, 10s));
    while (h.messages.load() < sent + kBatch) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "handler stalled at " << sent;
      std::this_thread::yield();
    }
  }
  std::this_thread::sleep_for(100ms);  // the last sends reach the recipient's shard
  const std::size_t after = heap_in_use();
  const std::size_t queued = static_cast<std::size_t>(kMessages) * h.sliver;
  const std::size_t grown = after > before ? after - before : 0;
  const std::size_t allowed = 64 * o.read_chunk + 16 * queued + 8 * 1024 * 1024;
  EXPECT_EQ(h.refused.load(), 0);
  EXPECT_LE(grown, allowed) << kMessages << " slices of " << h.sliver << " bytes (" << queued
                            << " bytes queued at most) hold " << grown / 1024 << " KiB ("
                            << grown / (queued ? queued : 1) << "x)";
  s.stop();
}

// Holds the worker in the first message after `armed` until `open` (at most 10 s).
class Gate : public esockets::Handler {
 public:
  std::atomic<int> connects{0};
  std::atomic<int> messages{0};
  std::atomic<bool> armed{false};
  std::atomic<bool> open{false};
  bool on_client_connect(Connection&) override {
    ++connects;
    return true;
  }
  void on_message_recv(Connection&, Bytes) override {
    if (armed.exchange(false)) {
      const auto until = std::chrono::steady_clock::now() + 10s;
      while (!open.load() && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(1ms);
      }
    }
    ++messages;
  }
};

// A burst of large messages while the worker is busy takes a pool buffer each; once the worker
// is through them they all come back. The pool keeps at most kKeepIdle (64) idle buffers, as
// BlockPool keeps "enough for a busy pass, not a hoard after a burst": what it holds after the
// burst must drop to that, not stay at the burst's peak while the server is idle.
TEST_P(LentAdversarial, PoolHoldsAtMostItsIdleBuffersAfterABurst) {
  if (!LENT_EXACT_HEAP) GTEST_SKIP() << "needs a sanitizer's exact count of the heap in use";
  const int kBurst = static_cast<int>(esockets::test::scaled(1024, 512));
  constexpr std::size_t kMessageBytes = 32 * 1024;
  Gate h;
  ServerOptions o = options(1);
  o.framing = Framing::length_prefixed;
  o.length_prefix_bytes = 4;
  o.read_chunk = 64 * 1024;
  Server s(h, o);
  s.start();
  Client c;
  ASSERT_TRUE(c.connect(s.port()));
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }, 5s));
  const std::string message = length_prefixed(records(0, kMessageBytes / 16));
  ASSERT_TRUE(c.send_all(message, 10s));
  ASSERT_TRUE(wait_until([&] { return h.messages.load() == 1; }, 10s));
  std::this_thread::sleep_for(50ms);
  const std::size_t before = heap_in_use();
  h.armed = true;
  std::string burst;
  for (int i = 0; i < kBurst; ++i) burst += message;
  std::atomic<bool> sent{false};
  std::thread writer([&] { sent = c.send_all(burst, 20s); });
  // Every message of the burst read by the shard (and waiting for the worker), then let go.
  const bool read_all = wait_until(
      [&] { return s.stats().total.messages_in >= static_cast<std::uint64_t>(kBurst + 1); }, 20s);
  h.open = true;
  writer.join();
  ASSERT_TRUE(sent.load());
  ASSERT_TRUE(read_all);
  ASSERT_TRUE(wait_until([&] { return h.messages.load() == kBurst + 1; }, 20s));
  burst.clear();
  burst.shrink_to_fit();
  std::this_thread::sleep_for(100ms);  // idle now
  const std::size_t after = heap_in_use();
  const std::size_t grown = after > before ? after - before : 0;
  const std::size_t allowed = 64 * (o.read_chunk + 64) + 8 * 1024 * 1024;
  EXPECT_LE(grown, allowed) << "idle after a burst of " << kBurst << " messages of "
                            << kMessageBytes << " bytes: " << grown / 1024 << " KiB still held";
  s.stop();
}

INSTANTIATE_TEST_SUITE_P(Backends, LentAdversarial,
                         ::testing::Values(BackendMode{Backend::epoll, 2},
                                           BackendMode{Backend::io_uring, 2},
                                           BackendMode{Backend::epoll, 1}),
                         esockets::test::backend_mode_name);

}  // namespace

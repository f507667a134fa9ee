// Messages lent to workers without copies: a large message reaches a worker in a buffer of the
// shard's PayloadPool (on epoll with raw framing, the very buffer it was read into), and a
// handler's send of bytes inside its message references them. The buffer goes back to the
// pool of the shard that made it from whichever thread drops the last reference: the worker,
// or another shard that sent the bytes, possibly after the maker shard retired.
//
// Every stream carries 16-byte sequence records: a buffer reused while still referenced, a
// wrong offset or a lost reference shows as a wrong, lost or repeated record. Both backends
// (epoll lends the read buffer; io_uring copies from its provided buffers into the pool).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
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
using esockets::ConnectionId;
using esockets::Framing;
using esockets::SendStatus;
using esockets::Server;
using esockets::ServerOptions;
using esockets::test::BackendMode;
using esockets::test::Client;
using esockets::test::wait_until;

namespace {

using LentMessage = esockets::test::BackendModeTest;

// Connections by connect order, in threes: 0 sends records that the handler forwards to 1
// (a send on another connection, often on the other shard); 2's records come back to it in
// two sends, the first and the second half of each message.
class Relay : public esockets::test::OrderedConnections {
 public:
  Server* srv = nullptr;
  std::atomic<int> refused_sends{0};
  std::atomic<std::uint64_t> forwarded{0};
  void on_message_recv(Connection& c, Bytes m) override {
    std::size_t index = 0;
    ConnectionId partner;
    {
      std::lock_guard lk(mu);
      while (index < ids.size() && ids[index] != c.id()) ++index;
      if (index % 3 == 0 && index + 1 < ids.size()) partner = ids[index + 1];
    }
    SendStatus st = SendStatus::ok;
    if (index % 3 == 0) {
      st = srv->send(partner, m);
      forwarded += m.size();
    } else if (index % 3 == 2) {
      const std::size_t half = m.size() / 2;
      st = c.send(m.substr(0, half));
      if (st == SendStatus::ok) st = c.send(m.substr(half));
    }
    if (st != SendStatus::ok) ++refused_sends;
  }
};

std::string record_chunk(std::uint64_t from, std::uint64_t n) {
  std::string s;
  s.reserve(n * 16);
  for (std::uint64_t i = 0; i < n; ++i) s += esockets::test::seq_record(from + i);
  return s;
}

// Writes records [0, total) in chunks of `per_write` records (large writes: large reads).
void write_records(Client& c, std::uint64_t total, std::uint64_t per_write,
                   std::atomic<int>& failures) {
  for (std::uint64_t seq = 0; seq < total; seq += per_write) {
    if (!c.send_all(record_chunk(seq, std::min(per_write, total - seq)), 30s)) {
      ++failures;
      return;
    }
  }
}

ServerOptions relay_options(const LentMessage& t, unsigned shards) {
  ServerOptions o = esockets::test::loopback_options(shards, t.GetParam().workers);
  o.backend = t.GetParam().backend;
  o.framing = Framing::raw;
  return o;
}

TEST_P(LentMessage, ForwardedAndSplitEchoesKeepEveryRecordWhileShardsComeAndGo) {
  const std::uint64_t kRecords = 64 * 1024 / static_cast<std::uint64_t>(esockets::test::kScale);
  constexpr int kTriples = 3;
  Relay h;
  Server s(h, relay_options(*this, 2));
  h.srv = &s;
  s.start();
  std::vector<Client> clients(3 * kTriples);
  ASSERT_TRUE(esockets::test::connect_in_order(clients, s.port(), h.connects));
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kTriples; ++t) {
    writers.emplace_back([&, t] { write_records(clients[3 * t], kRecords, 4096, failures); });
    writers.emplace_back([&, t] { write_records(clients[3 * t + 2], kRecords, 2048, failures); });
  }
  // Shards retire and come back while lent buffers are queued on other shards.
  std::atomic<bool> done{false};
  std::thread mover([&] {
    const unsigned plan[] = {3, 1, 2, 1, 3, 2};
    for (unsigned n : plan) {
      if (done.load()) break;
      s.set_shards(n);
      std::this_thread::sleep_for(20ms);
    }
  });
  std::vector<std::string> errors;
  std::vector<std::thread> readers;
  std::mutex emu;
  for (int t = 0; t < kTriples; ++t) {
    for (int k : {1, 2}) {
      readers.emplace_back([&, t, k] {
        std::uint64_t next = 0;
        const std::string e =
            esockets::test::read_seq_records(clients[3 * t + k], kRecords, next, 64 * 1024);
        if (!e.empty()) {
          std::lock_guard lk(emu);
          errors.push_back("client " + std::to_string(3 * t + k) + ": " + e);
        }
      });
    }
  }
  for (auto& r : readers) r.join();
  done = true;
  mover.join();
  for (auto& w : writers) w.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(h.refused_sends.load(), 0);
  EXPECT_EQ(h.forwarded.load(), kTriples * kRecords * 16);
  s.stop();
}

// A stop while lent bytes wait in queues of both shards (readers that do not read) and in
// the workers' queues: every buffer goes back or is freed (ASan: no leak, no use after free),
// and what each client got before the end is a gap-free prefix of its stream.
TEST_P(LentMessage, StopWithLentBytesQueuedEverywhereFreesEveryBuffer) {
  const std::uint64_t kRecords = 64 * 1024 / static_cast<std::uint64_t>(esockets::test::kScale);
  constexpr int kTriples = 2;
  Relay h;
  ServerOptions o = relay_options(*this, 2);
  o.shutdown_timeout = 300ms;  // the receivers never read: the stop gives up on them
  Server s(h, o);
  h.srv = &s;
  s.start();
  std::vector<Client> clients(3 * kTriples);
  for (auto& c : clients) c.set_rcvbuf(16 * 1024);
  ASSERT_TRUE(esockets::test::connect_in_order(clients, s.port(), h.connects));
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kTriples; ++t) {
    writers.emplace_back([&, t] { write_records(clients[3 * t], kRecords, 4096, failures); });
    writers.emplace_back([&, t] { write_records(clients[3 * t + 2], kRecords, 4096, failures); });
  }
  ASSERT_TRUE(wait_until([&] { return h.forwarded.load() >= kTriples * kRecords * 4; }, 20s));
  s.stop();  // closes every connection: a writer blocked on a full socket fails and ends
  for (auto& w : writers) w.join();
  EXPECT_EQ(h.refused_sends.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, LentMessage,
                         ::testing::Values(BackendMode{Backend::epoll, 2},
                                           BackendMode{Backend::io_uring, 2},
                                           BackendMode{Backend::epoll, 1}),
                         esockets::test::backend_mode_name);

}  // namespace

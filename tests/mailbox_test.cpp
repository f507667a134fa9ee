// Mailbox queues: spsc FIFO across threads, the mpsc inbox keeps per-producer order.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "mailbox/mailbox.hpp"
#include "shard/send_queue.hpp"
#include "test_support.hpp"

namespace esockets::detail {
namespace {

using esockets::test::scaled;

TEST(Mailbox, SpscEventQueueIsFifoAcrossThreads) {
  EventQueue q(64);
  const std::uint64_t n = scaled(1'000'000, 10'000);
  std::thread producer([&] {
    for (std::uint64_t i = 1; i <= n;) {
      if (q.push(Event{i, nullptr, static_cast<std::uint32_t>(i), EventKind::message, 0})) {
        ++i;
      } else {
        std::this_thread::yield();
      }
    }
  });
  std::uint64_t expect = 1;
  bool ordered = true;
  std::thread consumer([&] {
    Event e;
    while (expect <= n) {
      if (q.pop(e)) {
        if (e.id != expect || e.len != static_cast<std::uint32_t>(expect)) ordered = false;
        ++expect;
      } else {
        std::this_thread::yield();
      }
    }
  });
  producer.join();
  consumer.join();
  EXPECT_TRUE(ordered);
  EXPECT_EQ(expect, n + 1);
}

TEST(Mailbox, SpscCommandQueueCarriesOwnershipOfBlocks) {
  CommandQueue q(16);
  const int n = static_cast<int>(scaled(100'000, 2'000));
  std::atomic<bool> ok{true};
  std::thread producer([&] {
    for (int i = 0; i < n;) {
      SendBlock* b = make_block(sizeof(int));
      std::memcpy(b->data(), &i, sizeof i);
      b->end = sizeof(int);
      if (q.push(Command{static_cast<std::uint64_t>(i), b, b->size(), CommandKind::send, 0})) {
        ++i;
      } else {
        free_block(b);
        std::this_thread::yield();
      }
    }
  });
  std::thread consumer([&] {
    Command c;
    for (int i = 0; i < n;) {
      if (!q.pop(c)) {
        std::this_thread::yield();
        continue;
      }
      int v;
      std::memcpy(&v, static_cast<SendBlock*>(c.data)->data(), sizeof v);
      if (v != i || c.id != static_cast<std::uint64_t>(i)) ok = false;
      dispose(c);
      ++i;
    }
  });
  producer.join();
  consumer.join();
  EXPECT_TRUE(ok);
}

TEST(Mailbox, MpscInboxKeepsPerProducerOrderWith8Producers) {
  CommandInbox inbox(1024);
  constexpr int kProducers = 8;
  const std::uint64_t per = scaled(100'000, 2'000);
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (std::uint64_t i = 0; i < per;) {
        Command c{(std::uint64_t{static_cast<std::uint64_t>(p)} << 48) | i, nullptr, 0,
                  CommandKind::close, static_cast<std::uint8_t>(p)};
        if (inbox.push(c)) {
          ++i;
        } else {
          std::this_thread::yield();
        }
      }
    });
  }
  std::vector<std::uint64_t> next(kProducers, 0);
  std::uint64_t total = 0, errors = 0;
  std::thread consumer([&] {
    Command c;
    while (total < per * kProducers) {
      if (!inbox.pop(c)) {
        std::this_thread::yield();
        continue;
      }
      auto p = static_cast<int>(c.id >> 48);
      std::uint64_t i = c.id & ((std::uint64_t{1} << 48) - 1);
      if (p < 0 || p >= kProducers || c.reason != p || i != next[static_cast<std::size_t>(p)]) {
        ++errors;
      } else {
        ++next[static_cast<std::size_t>(p)];
      }
      ++total;
    }
  });
  for (auto& t : producers) t.join();
  consumer.join();
  EXPECT_EQ(errors, 0u);
  for (int p = 0; p < kProducers; ++p) EXPECT_EQ(next[static_cast<std::size_t>(p)], per);
  Command c;
  EXPECT_FALSE(inbox.pop(c));
}

TEST(Mailbox, SharedPayloadFreedByLastReleaser) {
  // Under ASan a leak or double free here fails the test.
  constexpr std::uint32_t kRefs = 8;
  SharedPayload* sp = make_shared_payload("hello", 5, kRefs);
  EXPECT_EQ(sp->len, 5u);
  EXPECT_EQ(std::string_view(sp->data(), 5), "hello");
  std::vector<std::thread> ts;
  for (std::uint32_t i = 0; i < kRefs; ++i) ts.emplace_back([sp] { release_shared_payload(sp); });
  for (auto& t : ts) t.join();
  // dispose() frees what commands own.
  dispose(Command{0, new MulticastBatch{make_shared_payload("x", 1, 1), {1, 2, 3}}, 3,
                  CommandKind::multicast, 0});
  dispose(Command{0, make_block(10), 0, CommandKind::send, 0});
  // A shared block holds a reference of its own: the payload outlives the first release.
  SharedPayload* shared = make_shared_payload("abc", 3, 2);
  SendBlock* blk = make_shared_block(shared);
  EXPECT_EQ(std::string_view(blk->data() + blk->begin, blk->size()), "abc");
  release_shared_payload(shared);
  dispose(Command{0, blk, 3, CommandKind::send, 0});
  dispose(Command{0, nullptr, 0, CommandKind::close, 0});
  dispose(Event{0, make_shared_payload("0123456789", 10, 1), 10, EventKind::message, 0});
  dispose(Event{0, new ConnectInfo{PeerAddress{}, 0, std::make_unique<ProxyInfo>()}, 0,
                EventKind::connect, 0});
}

}  // namespace
}  // namespace esockets::detail

// SendQueue: append/gather/consume/adopt bookkeeping.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "shard/send_queue.hpp"

namespace esockets::detail {
namespace {

std::string gathered(const SendQueue& q, int max = 64) {
  iovec iov[64];
  int n = q.gather(iov, max);
  std::string s;
  for (int i = 0; i < n; ++i) s.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
  return s;
}

SendBlock* block_of(const std::string& s) {
  SendBlock* b = make_block(s.size());
  std::memcpy(b->data(), s.data(), s.size());
  b->end = static_cast<std::uint32_t>(s.size());
  return b;
}

TEST(SendQueue, EmptyQueueGathersNothing) {
  SendQueue q;
  iovec iov[4];
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.bytes(), 0u);
  EXPECT_EQ(q.gather(iov, 4), 0);
}

TEST(SendQueue, AppendThenGatherReturnsBytesInOrder) {
  BlockPool pool;
  SendQueue q;
  q.append("hello ", 6, pool);
  q.append("world", 5, pool);
  EXPECT_EQ(q.bytes(), 11u);
  EXPECT_EQ(gathered(q), "hello world");
  q.clear(pool);
  EXPECT_TRUE(q.empty());
}

TEST(SendQueue, LargeAppendSpansBlocksAndConsumePartially) {
  BlockPool pool;
  SendQueue q;
  std::string big(100000, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  q.append(big.data(), big.size(), pool);
  EXPECT_EQ(q.bytes(), big.size());
  EXPECT_EQ(gathered(q), big);
  q.consume(12345, pool);
  EXPECT_EQ(q.bytes(), big.size() - 12345);
  EXPECT_EQ(gathered(q), big.substr(12345));
  q.consume(q.bytes(), pool);
  EXPECT_TRUE(q.empty());
  iovec iov[4];
  EXPECT_EQ(q.gather(iov, 4), 0);
  // Usable again after draining.
  q.append("x", 1, pool);
  EXPECT_EQ(gathered(q), "x");
  q.clear(pool);
}

TEST(SendQueue, GatherRespectsMaxIovecs) {
  BlockPool pool;
  SendQueue q;
  for (int i = 0; i < 10; ++i) q.adopt(block_of(std::string(BlockPool::kStandard + 1, 'a' + i)), pool);
  iovec iov[64];
  EXPECT_EQ(q.gather(iov, 3), 3);
  EXPECT_EQ(q.gather(iov, 64), 10);
  EXPECT_EQ(q.bytes(), 10 * (BlockPool::kStandard + 1));
  q.clear(pool);
  EXPECT_EQ(q.bytes(), 0u);
}

TEST(SendQueue, AdoptSmallBlockIsCopiedIntoTailInOrder) {
  BlockPool pool;
  SendQueue q;
  q.append("abc", 3, pool);
  q.adopt(block_of("def"), pool);
  q.append("ghi", 3, pool);
  q.adopt(block_of(""), pool);
  EXPECT_EQ(q.bytes(), 9u);
  EXPECT_EQ(gathered(q), "abcdefghi");
  q.clear(pool);
}

TEST(SendQueue, AdoptIntoEmptyQueueAndConsumeExactBoundaries) {
  BlockPool pool;
  SendQueue q;
  std::string a(BlockPool::kStandard + 10, 'A'), b(BlockPool::kStandard + 20, 'B');
  q.adopt(block_of(a), pool);
  q.adopt(block_of(b), pool);
  q.append("tail", 4, pool);
  EXPECT_EQ(q.bytes(), a.size() + b.size() + 4);
  q.consume(a.size(), pool);  // exactly the first block
  EXPECT_EQ(gathered(q), b + "tail");
  q.consume(b.size(), pool);
  EXPECT_EQ(gathered(q), "tail");
  q.consume(4, pool);
  EXPECT_TRUE(q.empty());
  q.append("again", 5, pool);
  EXPECT_EQ(gathered(q), "again");
  q.clear(pool);
}

TEST(SendQueue, RandomizedModelCheck) {
  BlockPool pool;
  SendQueue q;
  std::string model;
  std::mt19937 rng(12345);
  std::uint64_t counter = 0;
  auto payload = [&](std::size_t n) {
    std::string s(n, '\0');
    for (auto& ch : s) ch = static_cast<char>(counter++ * 131 % 251);
    return s;
  };
  for (int step = 0; step < 5000; ++step) {
    int op = static_cast<int>(rng() % 4);
    if (op == 0) {
      auto s = payload(rng() % 3000);
      q.append(s.data(), s.size(), pool);
      model += s;
    } else if (op == 1) {
      auto s = payload(rng() % 40000);
      q.adopt(block_of(s), pool);
      model += s;
    } else {
      // Consume what one sendmsg could: up to the gathered bytes.
      std::string g = gathered(q, 8);
      std::size_t n = g.empty() ? 0 : rng() % (g.size() + 1);
      ASSERT_EQ(g, model.substr(0, g.size())) << "step " << step;
      q.consume(n, pool);
      model.erase(0, n);
    }
    ASSERT_EQ(q.bytes(), model.size()) << "step " << step;
    ASSERT_EQ(q.empty(), model.empty());
  }
  ASSERT_EQ(gathered(q, 64).size() <= model.size(), true);
  q.consume(q.bytes(), pool);
  EXPECT_TRUE(q.empty());
  q.clear(pool);
}


// PayloadPool: buffers come back from any thread and are reused; a closed pool frees what
// comes back after it, and itself with the last buffer (ASan reports a leak or a use after
// free; TSan a missing order between a giver's reads and the owner's reuse).
TEST(PayloadPool, BufferGivenBackIsReusedAndAPartOfItQueuesWithoutCopy) {
  PayloadPool* pool = PayloadPool::open(1024);
  SharedPayload* p = pool->get();
  EXPECT_EQ(p->pool, pool);
  std::memcpy(p->data(), "0123456789", 10);
  p->len = 10;
  // A block lending bytes [3, 7): a send of part of a message.
  retain_shared_payload(p);
  BlockPool blocks;
  SendQueue q;
  q.adopt(make_shared_block(p, 3, 4), blocks);  // small: copied into the tail, reference dropped
  EXPECT_EQ(gathered(q), "3456");
  std::string big(600, 'x');
  std::memcpy(p->data() + 100, big.data(), big.size());
  p->len = 700;
  retain_shared_payload(p);
  q.adopt(make_shared_block(p, 100, 600), blocks);  // large: linked, not copied
  EXPECT_EQ(gathered(q), "3456" + big);
  release_shared_payload(p);  // the maker's reference: the queue's keeps it out of the pool
  EXPECT_EQ(p->refs.load(), 1u);
  q.clear(blocks);  // the last reference: back to the pool
  SharedPayload* again = pool->get();
  EXPECT_EQ(again, p);
  EXPECT_EQ(again->refs.load(), 1u);
  EXPECT_EQ(again->len, 0u);
  release_shared_payload(again);
  pool->close();
}

TEST(PayloadPool, GivenBackFromManyThreadsWhileTheOwnerTakesAndCloses) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  PayloadPool* pool = PayloadPool::open(256);
  std::atomic<int> handed{0};
  std::vector<std::atomic<SharedPayload*>> slots(kThreads);
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        SharedPayload* p = nullptr;
        while ((p = slots[t].exchange(nullptr, std::memory_order_acquire)) == nullptr) {
          std::this_thread::yield();
        }
        // Read what the owner wrote, then drop the last reference from this thread.
        EXPECT_EQ(static_cast<unsigned char>(p->data()[0]), static_cast<unsigned char>(i));
        release_shared_payload(p);
        ++handed;
      }
    });
  }
  int made = 0;
  for (int i = 0; i < kPerThread; ++i) {
    for (int t = 0; t < kThreads; ++t) {
      SharedPayload* p = pool->get();
      p->data()[0] = static_cast<char>(i);
      p->len = 1;
      ++made;
      while (slots[t].load(std::memory_order_relaxed) != nullptr) std::this_thread::yield();
      slots[t].store(p, std::memory_order_release);
    }
    if (i == kPerThread / 2) {
      // Half way: the owner goes (a shard retires) with buffers still out, and a new pool
      // takes its place; the old one ends with the last of its buffers.
      pool->close();
      pool = PayloadPool::open(256);
    }
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(handed.load(), made);
  pool->close();
}


TEST(PayloadPool, KeepsFewerIdleBuffersTheLargerTheyAre) {
  // (capacity, how many it keeps idle): about 4 MiB, between 2 and 64.
  const std::pair<std::size_t, std::uint32_t> cases[] = {
      {64 * 1024, 64}, {1024 * 1024, 4}, {16 * 1024 * 1024, 2}};
  for (const auto& [cap, keep] : cases) {
    PayloadPool* pool = PayloadPool::open(cap);
    std::vector<SharedPayload*> out;
    for (std::uint32_t i = 0; i < keep + 10; ++i) out.push_back(pool->get());
    for (SharedPayload* p : out) release_shared_payload(p);
    EXPECT_EQ(pool->idle_count(), keep) << cap << "-byte buffers";
    pool->close();
  }
}

}  // namespace
}  // namespace esockets::detail

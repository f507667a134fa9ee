// SendQueue: append/gather/consume/adopt bookkeeping.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

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

}  // namespace
}  // namespace esockets::detail

// table_bench: the shard's per-connection bookkeeping (engine/core/connection_table.hpp,
// engine/shard/send_queue.hpp).
//
//   BM_Table_OpenRetireClear        the life of one connection: open -> find -> retire -> clear
//   BM_Table_Find/N                 find() of live ids spread over N open slots (hit path)
//   BM_Table_FindStale              find() of stale ids (generation mismatch)
//   BM_Table_LiveFromOtherThread    live() on a reader thread while the owner churns slots
//   BM_Table_ForEachLive/N          for_each_live over N open slots
//   BM_SendQueue_Small              64 B appends, gather + consume (flush) every 16 appends
//   BM_SendQueue_Bulk               16 KiB appends, gather + consume after each
//   BM_SendQueue_Adopt              cross-thread sends: adopt 64 B blocks made elsewhere
#include <benchmark/benchmark.h>
#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "core/connection_table.hpp"
#include "shard/send_queue.hpp"

namespace {

using esockets::ConnectionId;
using esockets::detail::BlockPool;
using esockets::detail::Conn;
using esockets::detail::ConnectionTable;
using esockets::detail::make_block;
using esockets::detail::SendBlock;
using esockets::detail::SendQueue;

// The table never dereferences Conn*; any distinct non-null address will do.
Conn* fake_conn(std::uint32_t slot) {
  return reinterpret_cast<Conn*>(std::uintptr_t{0x10000} + std::uintptr_t{slot} * 64);
}

constexpr std::size_t kCapacity = 1u << 16;

void BM_Table_OpenRetireClear(benchmark::State& state) {
  ConnectionTable table(kCapacity);
  std::uint32_t slot = 0;
  for (auto _ : state) {
    ConnectionId id = table.open(0, slot, fake_conn(slot));
    benchmark::DoNotOptimize(table.find(id, 0));
    table.retire(slot);
    benchmark::DoNotOptimize(table.find(id, 0));  // stale now
    table.clear(slot);
    slot = (slot + 1) & (kCapacity - 1);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Table_OpenRetireClear);

void BM_Table_Find(benchmark::State& state) {
  const auto n = static_cast<std::uint32_t>(state.range(0));
  ConnectionTable table(kCapacity);
  std::vector<ConnectionId> ids;
  ids.reserve(n);
  // Spread the slots the way fds spread: dense from a small base.
  for (std::uint32_t i = 0; i < n; ++i) ids.push_back(table.open(0, 16 + i, fake_conn(16 + i)));
  // Visit in a scrambled order so the hardware prefetcher does not do all the work.
  std::vector<ConnectionId> order;
  order.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) order.push_back(ids[(i * 2654435761u) % n]);
  std::size_t k = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(table.find(order[k], 0));
    if (++k == n) k = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Table_Find)->Arg(64)->Arg(4096)->Arg(50000);

void BM_Table_FindStale(benchmark::State& state) {
  ConnectionTable table(kCapacity);
  std::vector<ConnectionId> stale;
  for (std::uint32_t i = 0; i < 1024; ++i) {
    stale.push_back(table.open(0, i, fake_conn(i)));
    table.clear(i);
    table.open(0, i, fake_conn(i));  // the slot is live again under a newer generation
  }
  std::size_t k = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(table.find(stale[k], 0));
    k = (k + 1) & 1023;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Table_FindStale);

// live() is the lock-free "is this id still mine?" check a worker or a foreign thread makes.
// The reader is the benchmark thread; the owner thread churns open/clear on the same slots.
void BM_Table_LiveFromOtherThread(benchmark::State& state) {
  const bool churn = state.range(0) != 0;
  constexpr std::uint32_t kSlots = 4096;
  ConnectionTable table(kCapacity);
  std::vector<ConnectionId> ids;
  for (std::uint32_t i = 0; i < kSlots; ++i) ids.push_back(table.open(0, i, fake_conn(i)));
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> churned{0};
  std::thread owner;
  if (churn) {
    owner = std::thread([&] {
      std::uint32_t s = 0;
      std::uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        table.clear(s);
        table.open(0, s, fake_conn(s));
        s = (s + 1) & (kSlots - 1);
        ++n;
      }
      churned.store(n, std::memory_order_relaxed);
    });
  }
  std::size_t k = 0;
  std::uint64_t alive = 0;
  for (auto _ : state) {
    alive += table.live(ids[k]) ? 1 : 0;
    k = (k + 1) & (kSlots - 1);
  }
  stop.store(true);
  if (owner.joinable()) owner.join();
  benchmark::DoNotOptimize(alive);
  state.SetItemsProcessed(state.iterations());
  state.counters["owner_churns"] = static_cast<double>(churned.load());
}
BENCHMARK(BM_Table_LiveFromOtherThread)->ArgName("churn")->Arg(0)->Arg(1)->UseRealTime();

void BM_Table_ForEachLive(benchmark::State& state) {
  const auto n = static_cast<std::uint32_t>(state.range(0));
  ConnectionTable table(kCapacity);
  for (std::uint32_t i = 0; i < n; ++i) table.open(0, i, fake_conn(i));
  for (auto _ : state) {
    std::uint64_t count = 0;
    table.for_each_live([&](ConnectionId id) { count += id.generation() & 1u; });
    benchmark::DoNotOptimize(count);
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Table_ForEachLive)->Arg(1000)->Arg(20000);

// ---------------------------------------------------------------------------------------------
// SendQueue: append n bytes per call; every `flush_every` appends gather iovecs and consume what
// a sendmsg() would have taken (everything), returning blocks to the pool.
void send_queue_bench(benchmark::State& state, std::size_t n, int flush_every) {
  BlockPool pool;
  SendQueue q;
  std::vector<char> payload(n, 'x');
  std::array<iovec, 64> iov{};
  int pending = 0;
  std::uint64_t bytes = 0;
  for (auto _ : state) {
    q.append(payload.data(), n, pool);
    bytes += n;
    if (++pending == flush_every) {
      int k = q.gather(iov.data(), static_cast<int>(iov.size()));
      std::size_t total = 0;
      for (int i = 0; i < k; ++i) total += iov[static_cast<std::size_t>(i)].iov_len;
      benchmark::DoNotOptimize(iov.data());
      q.consume(total, pool);
      pending = 0;
    }
  }
  q.clear(pool);
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
}

void BM_SendQueue_Small(benchmark::State& state) { send_queue_bench(state, 64, 16); }
BENCHMARK(BM_SendQueue_Small);

void BM_SendQueue_Bulk(benchmark::State& state) { send_queue_bench(state, 16 * 1024, 1); }
BENCHMARK(BM_SendQueue_Bulk);

// A partial write: all but an odd tail is taken, so the next gather starts mid-block.
void BM_SendQueue_PartialConsume(benchmark::State& state) {
  BlockPool pool;
  SendQueue q;
  std::vector<char> payload(16 * 1024, 'y');
  std::array<iovec, 64> iov{};
  for (auto _ : state) {
    q.append(payload.data(), payload.size(), pool);
    int k = q.gather(iov.data(), static_cast<int>(iov.size()));
    benchmark::DoNotOptimize(k);
    q.consume(q.bytes() - 777, pool);
  }
  q.clear(pool);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(payload.size()));
}
BENCHMARK(BM_SendQueue_PartialConsume);

// Cross-thread sends arrive as blocks made by make_block(); small ones are copied into the tail.
void BM_SendQueue_Adopt(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  BlockPool pool;
  SendQueue q;
  std::vector<char> payload(n, 'z');
  std::array<iovec, 64> iov{};
  int pending = 0;
  for (auto _ : state) {
    SendBlock* b = make_block(n);  // the worker's side of the hand-off, included in the cost
    std::memcpy(b->data(), payload.data(), n);
    b->end = static_cast<std::uint32_t>(n);
    q.adopt(b, pool);
    if (++pending == 16) {
      int k = q.gather(iov.data(), static_cast<int>(iov.size()));
      benchmark::DoNotOptimize(k);
      q.consume(q.bytes(), pool);
      pending = 0;
    }
  }
  q.clear(pool);
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
}
BENCHMARK(BM_SendQueue_Adopt)->Arg(64)->Arg(16 * 1024);

}  // namespace

BENCHMARK_MAIN();

// mailbox_bench: throughput of the engine's cross-thread queues and the cost of a hand-off that
// has to wake a sleeping thread (engine/mailbox/mailbox.hpp, engine/mailbox/wakeup.hpp).
//
//   BM_Spsc<Event|Command>/Single   one push / one pop per element, producer and consumer on two threads
//   BM_Spsc<Event|Command>/Batch    push(array, n) / pop(array, n) in batches of n
//   BM_CommandInbox/threads:P       P producers into the mpsc inbox, one consumer thread
//   BM_RoundTrip_Wakeup/futex       request -> reply between two threads that sleep when idle
//   BM_RoundTrip_Wakeup/eventfd     ... sleeping in epoll_wait on the Wakeup's eventfd
//   BM_RoundTrip_MutexCondvar       the same ping-pong with std::mutex + condition_variable queues
//
// Round trips report ns per round trip (real time); throughput benchmarks report items/s.
#include <benchmark/benchmark.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "mailbox/mailbox.hpp"
#include "mailbox/wakeup.hpp"

namespace {

using esockets::detail::Command;
using esockets::detail::CommandInbox;
using esockets::detail::CommandKind;
using esockets::detail::CommandQueue;
using esockets::detail::Event;
using esockets::detail::EventKind;
using esockets::detail::EventQueue;
using esockets::detail::Wakeup;

constexpr std::size_t kQueueCapacity = 4096;

template <class T>
T make_item(std::uint64_t i);
template <>
Event make_item<Event>(std::uint64_t i) {
  return Event{i, nullptr, 64, EventKind::message, 0};
}
template <>
Command make_item<Command>(std::uint64_t i) {
  return Command{i, nullptr, 64, CommandKind::send, 0, 0};
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// ---------------------------------------------------------------------------------------------
// spsc: the benchmark thread produces, a consumer thread drains. batch == 1 uses the single
// element push()/pop(); batch > 1 uses the array overloads, as the shard and worker loops do.
template <class Q, class T>
void BM_Spsc(benchmark::State& state) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  Q q(kQueueCapacity);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> consumed{0};
  std::thread consumer([&] {
    std::array<T, 256> buf{};
    std::uint64_t n = 0, sum = 0;
    while (true) {
      std::size_t got = 0;
      if (batch == 1) {
        T t;
        if (q.pop(t)) {
          got = 1;
          sum += t.id;
        }
      } else {
        got = q.pop(buf.data(), batch);
        for (std::size_t i = 0; i < got; ++i) sum += buf[i].id;
      }
      if (got != 0) {
        n += got;
        consumed.store(n, std::memory_order_release);
      } else if (stop.load(std::memory_order_acquire)) {
        break;
      } else {
        cpu_relax();
      }
    }
    benchmark::DoNotOptimize(sum);
  });

  std::array<T, 256> items{};
  std::uint64_t produced = 0;
  for (auto _ : state) {
    if (batch == 1) {
      T t = make_item<T>(produced);
      while (!q.push(t)) cpu_relax();
    } else {
      for (std::size_t i = 0; i < batch; ++i) items[i] = make_item<T>(produced + i);
      std::size_t done = 0;
      while (done < batch) {
        std::size_t k = q.push(items.data() + done, batch - done);
        if (k == 0) cpu_relax();
        done += k;
      }
    }
    produced += batch;
  }
  // Count only what the consumer actually took out.
  while (consumed.load(std::memory_order_acquire) < produced) cpu_relax();
  stop.store(true, std::memory_order_release);
  consumer.join();
  state.SetItemsProcessed(static_cast<std::int64_t>(produced));
  state.counters["batch"] = static_cast<double>(batch);
}

BENCHMARK_TEMPLATE(BM_Spsc, EventQueue, Event)->Name("BM_SpscEvent/Single")->Arg(1)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Spsc, EventQueue, Event)->Name("BM_SpscEvent/Batch")->Arg(16)->Arg(64)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Spsc, CommandQueue, Command)->Name("BM_SpscCommand/Single")->Arg(1)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Spsc, CommandQueue, Command)
    ->Name("BM_SpscCommand/Batch")
    ->Arg(16)
    ->Arg(64)
    ->UseRealTime();

// ---------------------------------------------------------------------------------------------
// mpsc CommandInbox: 1..4 producer threads (the benchmark's own threads), one consumer thread
// started by thread 0 before the timed loop (Google Benchmark holds every thread at a barrier at
// the start and at the end of the loop).
struct InboxFixture {
  CommandInbox inbox{kQueueCapacity};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> consumed{0};
  std::atomic<std::uint64_t> produced{0};
  std::atomic<int> producers_done{0};
  std::thread consumer;
};
InboxFixture* g_inbox = nullptr;

void BM_CommandInbox(benchmark::State& state) {
  if (state.thread_index() == 0) {
    g_inbox = new InboxFixture;
    InboxFixture* f = g_inbox;
    f->consumer = std::thread([f] {
      std::uint64_t n = 0, sum = 0;
      Command c;
      while (true) {
        if (f->inbox.pop(c)) {
          sum += c.id;
          f->consumed.store(++n, std::memory_order_release);
        } else if (f->stop.load(std::memory_order_acquire)) {
          break;
        } else {
          cpu_relax();
        }
      }
      benchmark::DoNotOptimize(sum);
    });
  }
  std::uint64_t mine = 0;
  for (auto _ : state) {
    // g_inbox is published before the start barrier, so every thread sees it here.
    const Command c = make_item<Command>(mine);
    while (!g_inbox->inbox.push(c)) cpu_relax();
    ++mine;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(mine));
  InboxFixture* f = g_inbox;
  f->produced.fetch_add(mine, std::memory_order_acq_rel);
  f->producers_done.fetch_add(1, std::memory_order_acq_rel);
  if (state.thread_index() == 0) {
    // Wait for every producer to report before draining and tearing down.
    while (f->producers_done.load(std::memory_order_acquire) < state.threads()) cpu_relax();
    const std::uint64_t total = f->produced.load(std::memory_order_acquire);
    while (f->consumed.load(std::memory_order_acquire) < total) cpu_relax();
    f->stop.store(true, std::memory_order_release);
    f->consumer.join();
    delete f;
    g_inbox = nullptr;
  }
}
BENCHMARK(BM_CommandInbox)->ThreadRange(1, 4)->UseRealTime();

// ---------------------------------------------------------------------------------------------
// Round trip through the engine's hand-off: request queue + Wakeup to the server thread, reply
// queue + Wakeup back. Both sides sleep when they find nothing to do, exactly as the shard
// (eventfd mode: epoll_wait on wake.fd()) and the worker (futex mode) do.
class Sleeper {
 public:
  explicit Sleeper(bool use_eventfd) : wake_(use_eventfd) {
    if (use_eventfd) {
      ep_ = ::epoll_create1(EPOLL_CLOEXEC);
      if (ep_ < 0) throw std::runtime_error("epoll_create1 failed");
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = 1;
      if (::epoll_ctl(ep_, EPOLL_CTL_ADD, wake_.fd(), &ev) != 0) {
        throw std::runtime_error("epoll_ctl failed");
      }
    }
  }
  ~Sleeper() {
    if (ep_ >= 0) ::close(ep_);
  }
  Sleeper(const Sleeper&) = delete;
  Sleeper& operator=(const Sleeper&) = delete;

  Wakeup& wake() { return wake_; }

  // Owner: pops one element from q, sleeping (prepare_sleep / re-check / sleep) while empty.
  template <class Q, class T>
  bool wait_pop(Q& q, T& out, const std::atomic<bool>& stop) {
    while (true) {
      if (q.pop(out)) return true;
      if (stop.load(std::memory_order_acquire)) return false;
      wake_.prepare_sleep();
      if (q.read_available() != 0 || stop.load(std::memory_order_acquire)) {
        wake_.woke();
        continue;
      }
      if (ep_ >= 0) {
        epoll_event ev{};
        int n = ::epoll_wait(ep_, &ev, 1, -1);
        wake_.woke();
        if (n > 0) wake_.drain_eventfd();
      } else {
        wake_.sleep_futex();
      }
    }
  }

 private:
  Wakeup wake_;
  int ep_ = -1;
};

void BM_RoundTrip_Wakeup(benchmark::State& state) {
  const bool use_eventfd = state.range(0) != 0;
  EventQueue requests(1024);
  CommandQueue replies(1024);
  Sleeper server_side(use_eventfd);
  Sleeper client_side(use_eventfd);
  std::atomic<bool> stop{false};

  std::thread server([&] {
    Event e;
    while (server_side.wait_pop(requests, e, stop)) {
      while (!replies.push(Command{e.id, nullptr, e.len, CommandKind::send, 0, 0})) cpu_relax();
      client_side.wake().notify();
    }
  });

  std::uint64_t i = 0;
  Command reply;
  for (auto _ : state) {
    while (!requests.push(make_item<Event>(i))) cpu_relax();
    server_side.wake().notify();
    if (!client_side.wait_pop(replies, reply, stop)) break;
    ++i;
  }
  stop.store(true, std::memory_order_release);
  server_side.wake().notify();
  server.join();
  state.SetItemsProcessed(static_cast<std::int64_t>(i));
  const double n = static_cast<double>(i == 0 ? 1 : i);
  state.counters["kernel_wakes_per_rt"] = static_cast<double>(server_side.wake().kernel_notifies() +
                                                              client_side.wake().kernel_notifies()) /
                                          n;
}
BENCHMARK(BM_RoundTrip_Wakeup)->Name("BM_RoundTrip_Wakeup/futex")->Arg(0)->UseRealTime();
BENCHMARK(BM_RoundTrip_Wakeup)->Name("BM_RoundTrip_Wakeup/eventfd")->Arg(1)->UseRealTime();

// Baseline: the textbook blocking queue.
template <class T>
class LockedQueue {
 public:
  void push(const T& t) {
    {
      std::lock_guard<std::mutex> lk(m_);
      q_.push_back(t);
    }
    cv_.notify_one();
  }
  bool wait_pop(T& out, const std::atomic<bool>& stop) {
    std::unique_lock<std::mutex> lk(m_);
    cv_.wait(lk, [&] { return !q_.empty() || stop.load(std::memory_order_acquire); });
    if (q_.empty()) return false;
    out = q_.front();
    q_.pop_front();
    return true;
  }
  void wake_all() {
    { std::lock_guard<std::mutex> lk(m_); }
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<T> q_;
};

void BM_RoundTrip_MutexCondvar(benchmark::State& state) {
  LockedQueue<Event> requests;
  LockedQueue<Command> replies;
  std::atomic<bool> stop{false};
  std::thread server([&] {
    Event e;
    while (requests.wait_pop(e, stop)) replies.push(Command{e.id, nullptr, e.len, CommandKind::send, 0, 0});
  });
  std::uint64_t i = 0;
  Command reply;
  for (auto _ : state) {
    requests.push(make_item<Event>(i));
    if (!replies.wait_pop(reply, stop)) break;
    ++i;
  }
  stop.store(true, std::memory_order_release);
  requests.wake_all();
  server.join();
  state.SetItemsProcessed(static_cast<std::int64_t>(i));
}
BENCHMARK(BM_RoundTrip_MutexCondvar)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

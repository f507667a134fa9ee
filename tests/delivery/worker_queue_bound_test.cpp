// Delivery contract, behaviour 9: the worker queues are bounded. ServerOptions:
// worker_queue_capacity = "events per (shard, worker) queue; a full queue pauses reading the
// clients that feed it" (README: "reads pause: TCP pushes back; nothing is dropped"; DESIGN.md
// invariant 4: "Queues are bounded"). One 64 KiB read of "\n" with line framing is 65,536 empty
// frames: while the worker is slow (its handler sleeps), stats().total.worker_queue_depth must
// stay about worker_queue_capacity plus a small margin, not grow by one event per frame; and
// every frame is still delivered exactly once.
#include <gtest/gtest.h>

#include "delivery_support.hpp"

namespace esockets::test::delivery {
namespace {

class SlowWorker : public Handler {
 public:
  std::atomic<int> connects{0};
  std::atomic<std::int64_t> messages{0}, empty{0};
  std::atomic<bool> sleeping{false};
  bool on_client_connect(Connection&) override {
    connects++;
    return true;
  }
  void on_message_recv(Connection&, Bytes m) override {
    if (m == "sleep") {
      sleeping.store(true);
      std::this_thread::sleep_for(600ms);
      return;
    }
    messages++;
    if (m.empty()) empty++;
  }
};

TEST(WorkerQueueBound, OneReadOfNewlinesDoesNotQueueAnEventPerFrame) {
  SlowWorker h;
  ServerOptions o = loopback_options(1, 1);
  o.framing = Framing::line;
  o.worker_queue_capacity = 256;
  o.read_chunk = 64 * 1024;
  Server server(h, o);
  server.start();
  Client a(server.port());
  Client b(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 2; }));
  ASSERT_TRUE(a.send_line("sleep"));
  ASSERT_TRUE(wait_until([&] { return h.sleeping.load(); }));

  const std::size_t frames = 64 * 1024;
  ASSERT_TRUE(b.send_all(std::string(frames, '\n')));
  std::uint64_t max_depth = 0;
  const auto t0 = Clock::now();
  while (ms_since(t0) < 800) {
    max_depth = std::max<std::uint64_t>(max_depth, server.stats().total.worker_queue_depth);
    std::this_thread::sleep_for(1ms);
  }
  const bool all = wait_until([&] { return h.messages.load() >= static_cast<std::int64_t>(frames); }, 15s);
  std::this_thread::sleep_for(100ms);
  const std::uint64_t bound = 2 * o.worker_queue_capacity;
  std::printf("[worker_queue_bound] max worker_queue_depth %llu (capacity %zu, bound %llu); %lld frames delivered\n",
              static_cast<unsigned long long>(max_depth), o.worker_queue_capacity,
              static_cast<unsigned long long>(bound), static_cast<long long>(h.messages.load()));
  EXPECT_LE(max_depth, bound) << "events queued for the worker grew past its queue capacity (one per frame "
                                 "of a single read)";
  EXPECT_TRUE(all);
  EXPECT_EQ(h.messages.load(), static_cast<std::int64_t>(frames)) << "every empty frame exactly once";
  EXPECT_EQ(h.empty.load(), h.messages.load());
  server.stop();
}

}  // namespace
}  // namespace esockets::test::delivery

// Stopping from where a real server stops: a signal handler (SIGUSR1 -> request_stop(), the
// async-signal-safe entry point) delivered to each engine thread in turn, and stop() called
// from inside handlers.
//   - SignalStop: the signal is sent with pthread_kill to one engine thread (shard 0, shard 1,
//     worker A, worker B, or one of the remaining engine threads such as the control thread,
//     found through /proc/self/task) while clients are echoing. The handler must run on that
//     thread, the server must stop gracefully (wait() returns, on_server_shutting_down and
//     on_server_shut_down run once, every client sees EOF with reason shutdown), and nothing
//     terminates the process.
//   - StopFromHandler: server.stop() from on_message_recv, from every on_client_disconnect of
//     the shutdown and from on_server_shutting_down / on_server_shut_down returns at once
//     (it only requests the stop) and the server stops.
// Each run is a forked child with a deadline (a hang or a crash fails the test).
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "fanout_support.hpp"

using namespace fanout;

namespace {

std::atomic<Server*> g_server{nullptr};
std::atomic<pid_t> g_handled_on{0};
std::atomic<int> g_signals{0};
std::atomic<int> g_want_signals{1};

// Each handler waits (bounded, async-signal-safe) until every signalled thread is inside its own
// handler, so that "all at once" really runs request_stop() concurrently from every engine
// thread. Without the wait the first handler's stop can end a thread before its own signal is
// delivered: the kernel discards a signal pending on an exiting thread, and TSan, which defers
// signals to its next safe point, did exactly that (4 of 5 handlers ran).
extern "C" void on_sigusr1(int) {
  g_signals.fetch_add(1);
  g_handled_on.store(static_cast<pid_t>(::syscall(SYS_gettid)));
  timespec t0{}, now{};
  ::clock_gettime(CLOCK_MONOTONIC, &t0);
  while (g_signals.load() < g_want_signals.load()) {
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec >= 3) break;  // a lost signal fails the count check below
  }
  if (Server* s = g_server.load()) s->request_stop();
}

struct ThreadSeen {
  pid_t tid;
  pthread_t handle;
};

class RecordingHandler : public esockets::Handler {
 public:
  explicit RecordingHandler(bool workers) : workers_(workers) {}
  bool on_client_connect(Connection& c) override {
    reg.on_connect(c);
    const pid_t tid = gettid_now();
    std::lock_guard lk(mu);
    if (!workers_) {
      const std::string label = "shard" + std::to_string(c.id().shard());
      threads.emplace(label, ThreadSeen{tid, pthread_self()});
    } else if (!worker_tids.count(tid)) {
      worker_tids.insert(tid);
      const std::string label = std::string("worker") + static_cast<char>('A' + worker_tids.size() - 1);
      threads.emplace(label, ThreadSeen{tid, pthread_self()});
    }
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override { c.send_frame(m); }
  void on_client_disconnect(Connection&, CloseReason r) override { reg.on_disconnect(r); }
  void on_server_shutting_down(Server&) override { shutting_down++; }
  void on_server_shut_down(Server&) override { shut_down++; }

  Registry reg;
  std::atomic<int> shutting_down{0}, shut_down{0};
  std::mutex mu;
  std::map<std::string, ThreadSeen> threads;
  std::set<pid_t> worker_tids;

 private:
  bool workers_;
};

constexpr std::size_t kAllThreads = 99;

struct SignalCase {
  unsigned workers;
  std::size_t target;  // index into: labelled threads (sorted), then other engine threads;
                       // kAllThreads: every engine thread, back to back
};

std::string signal_case_name(const ::testing::TestParamInfo<SignalCase>& i) {
  static const char* inl[] = {"shard0", "shard1", "other_engine_thread0"};
  static const char* wrk[] = {"workerA", "workerB", "other_engine_thread0", "other_engine_thread1",
                              "other_engine_thread2"};
  return std::string(i.param.workers == 0 ? "inline_" : "workers2_") +
         (i.param.target == kAllThreads ? "all_engine_threads_at_once"
          : i.param.workers == 0        ? inl[i.param.target]
                                        : wrk[i.param.target]);
}

void PrintTo(const SignalCase& c, std::ostream* os) { *os << signal_case_name({c, 0}); }

void signal_body(ChildLog& log, const SignalCase& sc) {
  g_want_signals.store(1);
  g_signals.store(0);  // (sanitizer builds run bodies in-process, one test after another)
  g_handled_on.store(0);
  struct sigaction sa {};
  sa.sa_handler = on_sigusr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: interrupted system calls fail with EINTR
  ::sigaction(SIGUSR1, &sa, nullptr);

  ServerOptions o = esockets::test::loopback_options(2, sc.workers);
  o.framing = esockets::Framing::line;
  RecordingHandler h(sc.workers > 0);
  Server s(h, o);
  const std::vector<pid_t> before = self_tids();
  s.start();
  g_server.store(&s);
  std::vector<pid_t> engine;
  {
    const std::vector<pid_t> after = self_tids();
    for (pid_t t : after) {
      if (std::find(before.begin(), before.end(), t) == before.end()) engine.push_back(t);
    }
  }
  std::sort(engine.begin(), engine.end());
  Fleet fleet;
  // Clients until both shards (inline) or both workers (worker mode) have run a handler.
  for (int k = 0; k < 64; ++k) {
    if (!fleet.connect(s.port(), 1)) {
      log.fail("connect failed");
      return;
    }
    const auto until = Clock::now() + 5s;
    while (h.reg.connects.load() < k + 1 && Clock::now() < until) std::this_thread::sleep_for(1ms);
    std::lock_guard lk(h.mu);
    if (h.threads.size() >= 2 && k >= 3) break;
  }
  std::vector<std::pair<std::string, ThreadSeen>> targets;
  {
    std::lock_guard lk(h.mu);
    for (auto& [label, t] : h.threads) targets.emplace_back(label, t);
  }
  if (!log.check(targets.size() == 2, "saw " + std::to_string(targets.size()) +
                                          " labelled engine threads, expected 2")) {
    return;
  }
  for (pid_t t : engine) {
    bool labelled = false;
    for (auto& [label, seen] : targets) labelled = labelled || seen.tid == t;
    if (!labelled) targets.emplace_back("engine thread " + std::to_string(t), ThreadSeen{t, pthread_t{}});
  }
  std::string listing;
  for (auto& [label, t] : targets) listing += " " + label + "(" + std::to_string(t.tid) + ")";
  log.note("engine threads:" + listing);
  if (!log.check(sc.target < targets.size() || sc.target == kAllThreads,
                 "no engine thread #" + std::to_string(sc.target))) {
    return;
  }

  // Echo traffic on every client while the signal lands.
  std::atomic<std::uint64_t> echoed{0};
  fleet.start([&](std::size_t, std::string_view) { echoed++; });
  std::atomic<bool> pump_stop{false};
  std::thread pump([&] {
    for (int round = 0; round < 20000 && !pump_stop.load(); ++round) {
      for (std::size_t i = 0; i < fleet.size(); ++i) (void)fleet.send(i, "ping\n", 50ms);
      std::this_thread::sleep_for(200us);
    }
  });
  struct JoinPump {  // every early return below still ends the pump
    std::atomic<bool>& stop;
    std::thread& t;
    ~JoinPump() {
      stop.store(true);
      if (t.joinable()) t.join();
    }
  } join_pump{pump_stop, pump};
  std::this_thread::sleep_for(100ms);

  const bool all = sc.target == kAllThreads;
  const int want_signals = all ? static_cast<int>(targets.size()) : 1;
  g_want_signals.store(want_signals);
  const auto& [label, target] = targets[all ? 0 : sc.target];
  log.note(all ? std::string("signalling every engine thread") : "signalling " + label);
  const auto t0 = Clock::now();
  for (std::size_t k = 0; k < targets.size(); ++k) {
    if (!all && k != sc.target) continue;
    int rc;
    if (k < 2) {
      rc = ::pthread_kill(targets[k].second.handle, SIGUSR1);
    } else {
      rc = static_cast<int>(::syscall(SYS_tgkill, ::getpid(), targets[k].second.tid, SIGUSR1));
    }
    if (!log.check(rc == 0, "could not signal " + targets[k].first + ": rc " + std::to_string(rc) +
                                " errno " + std::to_string(errno) + " after " +
                                std::to_string(since_s(t0) * 1e6) + " us")) {
      s.stop();
      return;
    }
  }
  s.wait();
  const double secs = since_s(t0);
  log.note("wait() returned " + std::to_string(secs) + " s after the signal; echoed " +
           std::to_string(echoed.load()) + " lines");
  pump_stop.store(true);
  if (pump.joinable()) pump.join();
  log.check(g_signals.load() == want_signals,
            "signal handler ran " + std::to_string(g_signals.load()) + " times");
  log.check(all || g_handled_on.load() == target.tid,
            "the signal was handled on thread " + std::to_string(g_handled_on.load()) + ", not on " +
                label + " (" + std::to_string(target.tid) + ")");
  log.check(echoed.load() > 0, "no echo traffic before the signal");
  log.check(secs < 10.0, "the stop took " + std::to_string(secs) + " s");
  log.check(!s.running(), "running() after wait()");
  log.check(h.shutting_down.load() == 1, "on_server_shutting_down ran " +
                                             std::to_string(h.shutting_down.load()) + " times");
  log.check(h.shut_down.load() == 1, "on_server_shut_down ran " + std::to_string(h.shut_down.load()) +
                                         " times");
  log.check(h.reg.disconnects.load() == h.reg.connects.load(),
            std::to_string(h.reg.disconnects.load()) + " disconnects for " +
                std::to_string(h.reg.connects.load()) + " connects");
  log.check(h.reg.reason(CloseReason::shutdown) == h.reg.connects.load(),
            "close reasons: " + h.reg.reasons_str());
  const auto until = Clock::now() + 5s;
  while (fleet.ended() < fleet.size() && Clock::now() < until) std::this_thread::sleep_for(1ms);
  log.check(fleet.ended() == fleet.size(), std::to_string(fleet.size() - fleet.ended()) +
                                               " clients never saw the server close");
  fleet.stop();
  s.stop();  // idempotent after a requested stop
  g_server.store(nullptr);
}

class SignalStop : public ::testing::TestWithParam<SignalCase> {};

TEST_P(SignalStop, StopsGracefullyFromEachEngineThread) {
  const SignalCase sc = GetParam();
  const ChildOutcome out = run_in_child([&](ChildLog& log) { signal_body(log, sc); },
                                        ms(20000L * std::min(kScale, 3)));
  expect_child_ok(out, signal_case_name({sc, 0}));
}

INSTANTIATE_TEST_SUITE_P(Fanout, SignalStop,
                         ::testing::Values(SignalCase{0, 0}, SignalCase{0, 1}, SignalCase{0, 2},
                                           SignalCase{2, 0}, SignalCase{2, 1}, SignalCase{2, 2},
                                           SignalCase{2, 3}, SignalCase{2, 4},
                                           SignalCase{0, kAllThreads}, SignalCase{2, kAllThreads}),
                         signal_case_name);

// ------------------------------------------------------------------ stop() from handlers

class StoppingHandler : public esockets::Handler {
 public:
  void attach(Server& s) { server_ = &s; }
  bool on_client_connect(Connection& c) override {
    reg.on_connect(c);
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "STOP") {
      timed_stop(msg_stop_max);
      return;
    }
    c.send_frame(m);
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    reg.on_disconnect(r);
    timed_stop(disc_stop_max);  // every disconnect of the shutdown calls stop() again
  }
  void on_server_shutting_down(Server&) override {
    shutting_down++;
    timed_stop(cb_stop_max);
  }
  void on_server_shut_down(Server&) override {
    shut_down++;
    timed_stop(cb_stop_max);
  }

  Registry reg;
  std::atomic<int> shutting_down{0}, shut_down{0};
  std::atomic<std::int64_t> msg_stop_max{-1}, disc_stop_max{-1}, cb_stop_max{-1};  // microseconds

 private:
  void timed_stop(std::atomic<std::int64_t>& slot) {
    const auto t0 = Clock::now();
    server_->stop();
    const std::int64_t us =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
    std::int64_t cur = slot.load();
    while (us > cur && !slot.compare_exchange_weak(cur, us)) {
    }
  }
  Server* server_ = nullptr;
};

void stop_from_handler_body(ChildLog& log, unsigned workers) {
  ServerOptions o = esockets::test::loopback_options(2, workers);
  o.framing = esockets::Framing::line;
  StoppingHandler h;
  Server s(h, o);
  h.attach(s);
  s.start();
  Fleet fleet;
  if (!log.check(fleet.connect(s.port(), 16), "connect failed")) return;
  std::atomic<std::uint64_t> echoed{0};
  fleet.start([&](std::size_t, std::string_view) { echoed++; });
  for (std::size_t i = 0; i < fleet.size(); ++i) (void)fleet.send(i, "hello\n");
  const auto until = Clock::now() + 10s;
  while (echoed.load() < fleet.size() && Clock::now() < until) std::this_thread::sleep_for(1ms);
  log.check(echoed.load() == fleet.size(), "echoes before the stop: " + std::to_string(echoed.load()));
  const auto t0 = Clock::now();
  (void)fleet.send(3, "STOP\n");
  s.wait();
  const double secs = since_s(t0);
  log.note("wait() returned " + std::to_string(secs) + " s after STOP; stop() inside handlers took "
           "at most: on_message_recv " + std::to_string(h.msg_stop_max.load()) +
           " us, on_client_disconnect " + std::to_string(h.disc_stop_max.load()) +
           " us, on_server_* " + std::to_string(h.cb_stop_max.load()) + " us");
  const std::int64_t at_once_us = 100000L * kScale;
  log.check(h.msg_stop_max.load() >= 0 && h.msg_stop_max.load() < at_once_us,
            "stop() from on_message_recv took " + std::to_string(h.msg_stop_max.load()) + " us");
  log.check(h.disc_stop_max.load() >= 0 && h.disc_stop_max.load() < at_once_us,
            "stop() from on_client_disconnect took " + std::to_string(h.disc_stop_max.load()) + " us");
  log.check(h.cb_stop_max.load() >= 0 && h.cb_stop_max.load() < at_once_us,
            "stop() from on_server_shutting_down/shut_down took " +
                std::to_string(h.cb_stop_max.load()) + " us");
  log.check(secs < 10.0, "the stop took " + std::to_string(secs) + " s");
  log.check(h.shutting_down.load() == 1 && h.shut_down.load() == 1,
            "on_server_shutting_down x" + std::to_string(h.shutting_down.load()) +
                ", on_server_shut_down x" + std::to_string(h.shut_down.load()));
  log.check(h.reg.reason(CloseReason::shutdown) == static_cast<int>(fleet.size()),
            "close reasons: " + h.reg.reasons_str());
  const auto until2 = Clock::now() + 5s;
  while (fleet.ended() < fleet.size() && Clock::now() < until2) std::this_thread::sleep_for(1ms);
  log.check(fleet.ended() == fleet.size(), "clients still open after the stop");
  fleet.stop();
  const auto t1 = Clock::now();
  s.stop();
  log.check(since_s(t1) < 5.0, "a second stop() from the main thread took " + std::to_string(since_s(t1)) + " s");
}

class StopFromHandler : public ::testing::TestWithParam<unsigned> {};

TEST_P(StopFromHandler, ReturnsAtOnceAndTheServerStops) {
  const unsigned workers = GetParam();
  const ChildOutcome out = run_in_child([&](ChildLog& log) { stop_from_handler_body(log, workers); },
                                        ms(20000L * std::min(kScale, 3)));
  expect_child_ok(out, workers == 0 ? "inline" : "workers2");
}

INSTANTIATE_TEST_SUITE_P(Fanout, StopFromHandler, ::testing::Values(0u, 2u),
                         [](const ::testing::TestParamInfo<unsigned>& i) {
                           return i.param == 0 ? std::string("inline") : std::string("workers2");
                         });

// ------------------------------------------------------------------ stop during a resize

// A control thread keeps resizing (set_shards(3), rebalance(), set_shards(2)) while SIGUSR1
// lands on a shard thread: the stop waits for the resize in progress, later resize calls throw
// std::logic_error (documented), and everything ends: wait() returns, the resizer leaves, the
// process neither hangs nor terminates.
void stop_during_resize_body(ChildLog& log) {
  struct sigaction sa {};
  sa.sa_handler = on_sigusr1;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGUSR1, &sa, nullptr);
  g_signals.store(0);
  ServerOptions o = esockets::test::loopback_options(2, 0);
  o.framing = esockets::Framing::line;
  RecordingHandler h(false);
  Server s(h, o);
  s.start();
  g_server.store(&s);
  Fleet fleet;
  if (!log.check(fleet.connect(s.port(), 8), "connect failed")) return;
  std::atomic<int> cycles{0}, logic_errors{0}, other_errors{0};
  std::atomic<bool> resizer_done{false};
  std::thread resizer([&] {
    for (int k = 0; k < 1000; ++k) {
      try {
        s.set_shards(3);
        s.rebalance();
        s.set_shards(2);
        cycles++;
      } catch (const std::logic_error&) {
        logic_errors++;
        break;
      } catch (...) {
        other_errors++;
        break;
      }
    }
    resizer_done = true;
  });
  while (cycles.load() < 2) std::this_thread::sleep_for(1ms);
  pthread_t target{};
  {
    std::lock_guard lk(h.mu);
    auto it = h.threads.begin();
    if (!log.check(it != h.threads.end(), "no shard thread seen")) {
      s.stop();
      resizer.join();
      return;
    }
    target = it->second.handle;  // shard 0 never retires
  }
  std::this_thread::sleep_for(50ms);
  log.check(::pthread_kill(target, SIGUSR1) == 0, "pthread_kill failed");
  s.wait();
  const auto until = Clock::now() + 10s;
  while (!resizer_done.load() && Clock::now() < until) std::this_thread::sleep_for(1ms);
  log.note("cycles " + std::to_string(cycles.load()) + ", logic_error " +
           std::to_string(logic_errors.load()) + ", other " + std::to_string(other_errors.load()));
  log.check(resizer_done.load(), "the resizing thread is stuck after the stop");
  log.check(other_errors.load() == 0, "a resize failed with something other than logic_error");
  log.check(h.shut_down.load() == 1, "on_server_shut_down ran " + std::to_string(h.shut_down.load()) +
                                         " times");
  if (resizer_done.load()) resizer.join(); else resizer.detach();
  fleet.stop();
  g_server.store(nullptr);
}

TEST(SignalStop, DuringResizeCycles) {
  const ChildOutcome out = run_in_child([&](ChildLog& log) { stop_during_resize_body(log); },
                                        ms(30000L * std::min(kScale, 3)));
  expect_child_ok(out, "stop_during_resize");
}

}  // namespace

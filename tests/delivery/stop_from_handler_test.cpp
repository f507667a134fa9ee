// Delivery contract, behaviour 3: a handler that calls Server::stop(). server.hpp: "From an
// engine thread (a handler) it only starts the stop, as request_stop(), and returns at once;
// wait() or ~Server wait for the end." So: the call returns at once, the stop starts, wait()
// returns, on_server_shut_down runs exactly once, nothing hangs and the process does not end
// (std::terminate). DESIGN.md invariant 8: "every wait in a stop or hand-over has a bound".
// Each scenario runs in a child process with a deadline, so a hang or a terminate is reported as
// a failure instead of stalling or killing the test binary.
#include <gtest/gtest.h>

#include "delivery_support.hpp"

namespace esockets::test::delivery {
namespace {

enum class Where {
  message,        // on_message_recv (engine thread: shard or worker)
  connect,        // on_client_connect
  disconnect,     // on_client_disconnect (the client left)
  shutting_down,  // on_server_shutting_down (runs on the thread that called stop())
  shut_down,      // on_server_shut_down (runs on the thread that called stop())
  message_and_two_stoppers,  // on_message_recv, while two other threads call stop() too
};

const char* where_name(Where w) {
  switch (w) {
    case Where::message: return "on_message_recv";
    case Where::connect: return "on_client_connect";
    case Where::disconnect: return "on_client_disconnect";
    case Where::shutting_down: return "on_server_shutting_down";
    case Where::shut_down: return "on_server_shut_down";
    case Where::message_and_two_stoppers: return "on_message_recv_plus_two_threads";
  }
  return "?";
}

class StopHandler : public Handler {
 public:
  explicit StopHandler(Where w) : where_(w) {}
  std::atomic<int> shutting_down{0}, shut_down{0}, stop_calls{0}, stop_returns{0}, messages{0};
  std::atomic<long> slowest_stop_call_ms{0};

  bool on_client_connect(Connection& c) override {
    if (where_ == Where::connect) call_stop(c.server());
    return true;
  }
  void on_message_recv(Connection& c, Bytes) override {
    messages++;
    if (where_ == Where::message || where_ == Where::message_and_two_stoppers) call_stop(c.server());
  }
  void on_client_disconnect(Connection& c, CloseReason) override {
    if (where_ == Where::disconnect) call_stop(c.server());
  }
  void on_server_shutting_down(Server& s) override {
    shutting_down++;
    if (where_ == Where::shutting_down) call_stop(s);
  }
  void on_server_shut_down(Server& s) override {
    shut_down++;
    if (where_ == Where::shut_down) call_stop(s);
  }

 private:
  void call_stop(Server& s) {
    stop_calls++;
    const auto t0 = Clock::now();
    s.stop();
    const long ms = static_cast<long>(ms_since(t0));
    if (ms > slowest_stop_call_ms.load()) slowest_stop_call_ms.store(ms);
    stop_returns++;
  }
  Where where_;
};

struct Scenario {
  Where where;
  unsigned workers;
  friend void PrintTo(const Scenario& s, std::ostream* os) { *os << where_name(s.where) << " workers=" << s.workers; }
};

std::string scenario_name(const ::testing::TestParamInfo<Scenario>& i) {
  return std::string(where_name(i.param.where)) + (i.param.workers == 0 ? "_inline" : "_workers2");
}

class StopFromHandler : public ::testing::TestWithParam<Scenario> {};

TEST_P(StopFromHandler, StopStartsWaitReturnsShutDownRunsNoHangNoTerminate) {
  const Scenario sc = GetParam();
  // The racing variant repeats its scenario (the race between the stoppers is timing-dependent).
  const int rounds = sc.where == Where::message_and_two_stoppers ? 5 : 1;
  const auto outcome = run_in_child(rounds == 1 ? 12s : 20s, [&](ChildReport& r) {
    for (int round = 0; round < rounds; ++round) {
      StopHandler h(sc.where);
      ServerOptions o = loopback_options(2, sc.workers);
      o.framing = Framing::line;
      o.shutdown_timeout = 2000ms;
      if (rounds > 1) r.note("round " + std::to_string(round));
      {
        Server server(h, o);
        server.start();
        r.stage("connect a client");
        Client c(server.port());
        const auto t0 = Clock::now();
        double returned_ms = -1;
        switch (sc.where) {
          case Where::connect:
            r.stage("server.wait() after a handler's stop() in on_client_connect");
            server.wait();
            break;
          case Where::message:
            c.send_line("stop");
            r.stage("server.wait() after a handler's stop() in on_message_recv");
            server.wait();
            break;
          case Where::disconnect:
            c.close();
            r.stage("server.wait() after a handler's stop() in on_client_disconnect");
            server.wait();
            break;
          case Where::shutting_down:
            r.stage("server.stop() from the test thread; on_server_shutting_down calls stop() too");
            server.stop();
            break;
          case Where::shut_down:
            r.stage("server.stop() from the test thread; on_server_shut_down calls stop() too");
            server.stop();
            break;
          case Where::message_and_two_stoppers: {
            c.send_line("stop");
            if (!wait_until([&] { return h.stop_calls.load() >= 1; }, 5s)) r.fail("the handler did not run");
            r.stage("two threads call server.stop() while a handler's stop() runs");
            std::thread t1([&] { server.stop(); });
            std::thread t2([&] { server.stop(); });
            t1.join();
            t2.join();
            r.stage("server.wait()");
            server.wait();
            break;
          }
        }
        returned_ms = ms_since(t0);
        r.note("wait()/stop() returned after " + std::to_string(static_cast<long>(returned_ms)) + " ms");
        if (returned_ms > 2000 + 3000) {
          r.fail("the stop took " + std::to_string(returned_ms) + " ms (shutdown_timeout 2000 ms + 3 s slack)");
        }
        if (h.stop_calls.load() < 1) r.fail("the handler never called stop() (scenario did not run)");
        if (h.stop_returns.load() != h.stop_calls.load()) r.fail("a handler's stop() call did not return");
        if (h.slowest_stop_call_ms.load() > 1000) {
          r.fail("a handler's stop() took " + std::to_string(h.slowest_stop_call_ms.load()) +
                 " ms: from a handler it must only request the stop and return at once");
        }
        if (h.shutting_down.load() != 1) {
          r.fail("on_server_shutting_down ran " + std::to_string(h.shutting_down.load()) + " times");
        }
        if (h.shut_down.load() != 1) r.fail("on_server_shut_down ran " + std::to_string(h.shut_down.load()) + " times");
        if (server.running()) r.fail("running() is still true after wait()/stop() returned");
        if (c.is_open() && c.wait_eof(3s) != EofResult::eof) r.fail("the client did not get EOF after the stop");
        r.stage("~Server");
      }
    }
    r.stage("done");
  });
  EXPECT_TRUE(outcome.ok()) << "stop() called from " << where_name(sc.where) << ": " << outcome.describe();
}

INSTANTIATE_TEST_SUITE_P(Delivery, StopFromHandler,
                         ::testing::Values(Scenario{Where::message, 0}, Scenario{Where::message, 2},
                                           Scenario{Where::connect, 0}, Scenario{Where::connect, 2},
                                           Scenario{Where::disconnect, 0}, Scenario{Where::disconnect, 2},
                                           Scenario{Where::shutting_down, 0},
                                           Scenario{Where::shutting_down, 2},
                                           Scenario{Where::shut_down, 0}, Scenario{Where::shut_down, 2},
                                           Scenario{Where::message_and_two_stoppers, 0},
                                           Scenario{Where::message_and_two_stoppers, 2}),
                         scenario_name);

}  // namespace
}  // namespace esockets::test::delivery

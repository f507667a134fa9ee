// Delivery contract, behaviour 4: worker backpressure must not drop control replies or data.
// One worker, command_queue_capacity 16. A handler answers one message with 5,000 sends, so the
// worker holds far more than 4 x 16 commands the shard has not taken yet. The worker is kept
// busy (another client's handler sleeps) while the flood message and a control event (the
// client's EOF, a new connection that on_client_connect refuses, the stop barrier) queue up
// behind each other, so the worker handles them in one batch.
// The contract:
//  - README: a client that half-closes "gets every reply, then FIN" (every reply whose send
//    returned ok, in order, then FIN);
//  - handler.hpp: a refused client "is closed and on_client_disconnect(refused) follows";
//  - DESIGN.md 8: "Control messages (acks, closes, barriers) never compete with data for
//    capacity, and every wait in a stop ... has a bound": stop() returns within
//    shutdown_timeout plus slack;
//  - and for the data itself, server.hpp: backpressure is seen "only [by] threads that are not
//    engine threads: handlers on shard threads and workers queue past a full queue": every send
//    the worker's handler makes returns ok and arrives (DESIGN.md 8).
// Each scenario runs in a child process with a deadline (a lost barrier ack hangs stop()).
#include <gtest/gtest.h>


#include "delivery_support.hpp"

namespace esockets::test::delivery {
namespace {

constexpr int kReplies = 5000;

class FloodHandler : public Handler {
 public:
  std::atomic<bool> sleeping{false};
  std::atomic<int> connects{0}, flood_calls{0}, flood_ok{0}, flood_not_ok{0};
  std::atomic<int> refuse_nth{0};  // refuse the n-th connection (1-based); 0 = none
  std::atomic<int> refused_disconnects{0}, disconnects{0};
  std::mutex mu;
  std::string first_not_ok;

  bool on_client_connect(Connection&) override {
    const int k = ++connects;
    return k != refuse_nth.load();
  }
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "sleep") {
      sleeping.store(true);
      std::this_thread::sleep_for(500ms);  // the worker is busy: the next events queue up
      return;
    }
    if (m == "flood") {
      flood_calls++;
      char buf[32];
      for (int i = 0; i < kReplies; ++i) {
        std::snprintf(buf, sizeof buf, "R%06d\n", i);
        const SendStatus st = c.send(buf);
        if (st == SendStatus::ok) {
          flood_ok++;
        } else if (flood_not_ok++ == 0) {
          std::lock_guard lk(mu);
          first_not_ok = std::string(to_string(st)) + " at reply " + std::to_string(i);
        }
      }
    }
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    disconnects++;
    if (r == CloseReason::refused) refused_disconnects++;
  }
};

ServerOptions flood_options() {
  ServerOptions o = loopback_options(1, 1);
  o.framing = Framing::line;
  o.command_queue_capacity = 16;
  o.shutdown_timeout = 2000ms;
  return o;
}

/// Checks the replies a client read: R000000 ... in order; returns how many arrived in order.
int replies_in_order(const std::string& got, bool* garbage) {
  int k = 0;
  std::size_t pos = 0;
  *garbage = false;
  while (pos < got.size()) {
    const std::size_t nl = got.find('\n', pos);
    if (nl == std::string::npos) {
      *garbage = true;
      break;
    }
    char want[32];
    std::snprintf(want, sizeof want, "R%06d", k);
    if (got.compare(pos, nl - pos, want) != 0) {
      *garbage = true;
      break;
    }
    ++k;
    pos = nl + 1;
  }
  return k;
}

void check_flood_ran(FloodHandler& h, ChildReport& r) {
  if (h.flood_calls.load() != 1) r.fail("the flood handler ran " + std::to_string(h.flood_calls.load()) + " times");
  if (h.flood_ok.load() < 64) r.fail("fewer than 64 of the flood's sends returned ok");
}

void check_flood_all_ok(FloodHandler& h, ChildReport& r) {
  check_flood_ran(h, r);
  if (h.flood_not_ok.load() != 0) {
    std::lock_guard lk(h.mu);
    r.fail(std::to_string(h.flood_not_ok.load()) + " of " + std::to_string(kReplies) +
           " sends from the worker's handler did not return ok (first: " + h.first_not_ok +
           "); server.hpp says workers queue past a full queue");
  }
}

TEST(WorkerControlReplies, HalfClosedClientGetsEveryOkReplyThenFin) {
  const auto outcome = run_in_child(15s, [](ChildReport& r) {
    FloodHandler h;
    Server server(h, flood_options());
    server.start();
    Client sleeper(server.port());
    Client x(server.port());
    if (!wait_until([&] { return h.connects.load() == 2; })) r.fail("clients did not connect");
    sleeper.send_line("sleep");
    if (!wait_until([&] { return h.sleeping.load(); })) r.fail("the sleeper's message never ran");
    r.stage("client X sends 'flood' and half-closes while the worker is busy");
    x.send_line("flood");
    x.shutdown_write();
    std::string got;
    const EofResult end = x.wait_eof(8s, &got);
    bool garbage = false;
    const int n = replies_in_order(got, &garbage);
    r.note("X read " + std::to_string(n) + " replies in order, then " + to_string(end) + "; " +
           std::to_string(h.flood_ok.load()) + " sends returned ok");
    check_flood_ran(h, r);
    if (garbage) r.fail("X received replies out of order or malformed after reply " + std::to_string(n));
    if (n != h.flood_ok.load()) {
      r.fail("X received " + std::to_string(n) + " replies; " + std::to_string(h.flood_ok.load()) +
             " sends returned ok");
    }
    if (end != EofResult::eof) {
      r.fail(std::string("after half-closing, X got ") + to_string(end) +
             " instead of FIN within 8 s (the worker's eof_ack was lost?)");
    }
    r.stage("stop");
    server.stop();
    r.stage("done");
  });
  EXPECT_TRUE(outcome.ok()) << outcome.describe();
}

TEST(WorkerControlReplies, ConnectionRefusedByOnClientConnectIsClosed) {
  const auto outcome = run_in_child(15s, [](ChildReport& r) {
    FloodHandler h;
    h.refuse_nth.store(3);
    Server server(h, flood_options());
    server.start();
    Client sleeper(server.port());
    Client x(server.port());
    if (!wait_until([&] { return h.connects.load() == 2; })) r.fail("clients did not connect");
    std::string got;
    std::thread reader([&] { (void)x.wait_eof(12s, &got); });
    sleeper.send_line("sleep");
    if (!wait_until([&] { return h.sleeping.load(); })) r.fail("the sleeper's message never ran");
    x.send_line("flood");
    if (!wait_until([&] { return server.stats().total.messages_in >= 2; })) r.fail("the flood message was not read");
    r.stage("client R connects while the worker is busy; on_client_connect refuses it");
    Client refused(server.port());
    const EofResult end = refused.wait_eof(5s);
    r.note(std::string("the refused client got ") + to_string(end));
    if (end != EofResult::eof) {
      r.fail(std::string("the connection refused by on_client_connect was not closed within 5 s (") +
             to_string(end) + "): the worker's close command was lost");
    }
    if (!wait_until([&] { return h.refused_disconnects.load() == 1; }, 2s)) {
      r.fail("on_client_disconnect(refused) did not follow the refusal");
    }
    check_flood_ran(h, r);
    r.stage("stop");
    server.stop();
    reader.join();
    bool garbage = false;
    const int n = replies_in_order(got, &garbage);
    if (n != h.flood_ok.load() || garbage) {
      r.fail("X received " + std::to_string(n) + " replies in order; " + std::to_string(h.flood_ok.load()) +
             " sends returned ok");
    }
    r.stage("done");
  });
  EXPECT_TRUE(outcome.ok()) << outcome.describe();
}

TEST(WorkerControlReplies, StopReturnsWithinShutdownTimeout) {
  const auto outcome = run_in_child(15s, [](ChildReport& r) {
    FloodHandler h;
    const ServerOptions o = flood_options();
    Server server(h, o);
    server.start();
    Client sleeper(server.port());
    Client x(server.port());
    if (!wait_until([&] { return h.connects.load() == 2; })) r.fail("clients did not connect");
    std::string got;
    std::thread reader([&] { (void)x.wait_eof(20s, &got); });
    sleeper.send_line("sleep");
    if (!wait_until([&] { return h.sleeping.load(); })) r.fail("the sleeper's message never ran");
    x.send_line("flood");
    if (!wait_until([&] { return server.stats().total.messages_in >= 2; })) r.fail("the flood message was not read");
    r.stage("server.stop() while the worker is busy and a flood is queued behind it");
    const auto t0 = Clock::now();
    server.stop();
    const double ms = ms_since(t0);
    r.note("stop() took " + std::to_string(static_cast<long>(ms)) + " ms");
    if (ms > static_cast<double>(o.shutdown_timeout.count()) + 3000) {
      r.fail("stop() took " + std::to_string(ms) + " ms (shutdown_timeout 2000 ms + 3 s slack)");
    }
    check_flood_ran(h, r);
    r.stage("join the reader");
    reader.join();
    bool garbage = false;
    const int n = replies_in_order(got, &garbage);
    if (n != h.flood_ok.load() || garbage) {
      r.fail("X received " + std::to_string(n) + " replies in order; " + std::to_string(h.flood_ok.load()) +
             " sends returned ok (stop must flush what send accepted)");
    }
    r.stage("done");
  });
  EXPECT_TRUE(outcome.ok()) << outcome.describe();
}


TEST(WorkerControlReplies, EverySendOfAWorkerHandlerIsOkAndArrives) {
  const auto outcome = run_in_child(15s, [](ChildReport& r) {
    FloodHandler h;
    Server server(h, flood_options());
    server.start();
    Client x(server.port());
    if (!wait_until([&] { return h.connects.load() == 1; })) r.fail("the client did not connect");
    r.stage("client X sends 'flood': its handler makes 5,000 sends in one call");
    x.send_line("flood");
    std::string got;
    const bool all = x.recv_exact(static_cast<std::size_t>(kReplies) * 8, got, 8s);
    bool garbage = false;
    const int n = replies_in_order(got, &garbage);
    r.note("X read " + std::to_string(n) + " replies in order; " + std::to_string(h.flood_ok.load()) +
           " sends returned ok");
    check_flood_all_ok(h, r);
    if (!all || n != kReplies || garbage) {
      r.fail("X received " + std::to_string(n) + " of the " + std::to_string(kReplies) + " replies in order");
    }
    r.stage("stop");
    server.stop();
    r.stage("done");
  });
  EXPECT_TRUE(outcome.ok()) << outcome.describe();
}

}  // namespace
}  // namespace esockets::test::delivery

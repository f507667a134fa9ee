// A supervisor for tests/processes/supervisor_test.cpp, in a process of its own: the test
// binary has a watchdog thread, and a Supervisor should fork from a single-threaded process
// (under ASan a lock another thread holds at fork time stays locked in the child).
//
// usage: supervisor_helper PROCESSES [admin ADDR] [fail-first P] [port N] [listen ADDR]...
//                           [takeover-socket PATH] [take-over PATH]
//                           [crash-in-takeover P] [slow-takeover MS] [crash-after-start P]
//                           [restart-backoff MS] [takeover-timeout MS]
// (The last five are for supervisor_upgrade_adversarial_test.cpp: crash-in-takeover P: the first
// child of slot P dies (SIGKILL) in its first on_client_takeover, in the middle of handing its
// connections over; slow-takeover MS: on_client_takeover sleeps MS per connection, so that a
// transfer lasts; crash-after-start P: the first child of slot P dies (SIGKILL) right after its
// Server::start() returned, before its first report; restart-backoff MS and takeover-timeout MS
// set SupervisorOptions::restart_backoff and ServerOptions::takeover_timeout.)
// Prints its events and, after run(), its totals as lines on stdout (see supervisor_test.cpp
// and supervisor_upgrade_test.cpp); exits with run()'s status. Children serve lines: "who"
// answers "<process> <pid>", "count" the number of lines this connection sent before it (a
// per-connection state that a takeover carries), anything else comes back as it was sent.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <thread>

#include "esockets/esockets.hpp"

namespace {

class WhoEchoHandler : public esockets::Handler {
 public:
  explicit WhoEchoHandler(unsigned process, bool crash_in_takeover = false, int slow_takeover_ms = 0)
      : who_(std::to_string(process) + " " + std::to_string(::getpid())),
        crash_in_takeover_(crash_in_takeover),
        slow_takeover_ms_(slow_takeover_ms) {}
  bool on_client_connect(esockets::Connection& c) override {
    c.emplace_state<std::uint64_t>(0);
    return true;
  }
  void on_message_recv(esockets::Connection& c, esockets::Bytes m) override {
    std::uint64_t& lines = *c.state<std::uint64_t>();
    if (m == "count") {
      c.send_frame(std::to_string(lines));
    } else {
      c.send_frame(m == "who" ? esockets::Bytes(who_) : m);
    }
    ++lines;
  }
  std::string on_client_takeover(esockets::Connection& c) override {
    if (crash_in_takeover_) ::raise(SIGKILL);
    if (slow_takeover_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(slow_takeover_ms_));
    return std::to_string(*c.state<std::uint64_t>());
  }
  bool on_client_restore(esockets::Connection& c, std::string_view state) override {
    c.emplace_state<std::uint64_t>(std::strtoull(std::string(state).c_str(), nullptr, 10));
    return true;
  }

 private:
  std::string who_;
  bool crash_in_takeover_ = false;
  int slow_takeover_ms_ = 0;
};

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: supervisor_helper PROCESSES [admin ADDR] [fail-first P]\n");
    return 2;
  }
  esockets::SupervisorOptions o;
  o.processes = static_cast<unsigned>(std::atoi(argv[1]));
  o.server.framing = esockets::Framing::line;
  o.stats_interval = std::chrono::milliseconds(50);
  o.restart_backoff = std::chrono::milliseconds(50);
  o.stop_timeout = std::chrono::seconds(10);
  int fail_first = -1;
  int crash_in_takeover = -1;
  int slow_takeover_ms = 0;
  int crash_after_start = -1;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    if (key == "admin") o.server.admin = argv[i + 1];
    if (key == "fail-first") fail_first = std::atoi(argv[i + 1]);
    if (key == "port") o.server.port = static_cast<std::uint16_t>(std::atoi(argv[i + 1]));
    if (key == "listen") o.server.listeners.push_back(esockets::ListenerOptions{argv[i + 1]});
    if (key == "takeover-socket") o.server.takeover_socket = argv[i + 1];
    if (key == "take-over") o.server.take_over = argv[i + 1];
    if (key == "crash-in-takeover") crash_in_takeover = std::atoi(argv[i + 1]);
    if (key == "slow-takeover") slow_takeover_ms = std::atoi(argv[i + 1]);
    if (key == "crash-after-start") crash_after_start = std::atoi(argv[i + 1]);
    if (key == "restart-backoff") {
      o.restart_backoff = std::chrono::milliseconds(std::atoi(argv[i + 1]));
      o.max_restart_backoff = std::max(o.max_restart_backoff, o.restart_backoff);
    }
    if (key == "takeover-timeout") o.server.takeover_timeout = std::chrono::milliseconds(std::atoi(argv[i + 1]));
  }
  o.on_event = [](esockets::Supervisor& sup, const esockets::SupervisorEvent& e) {
    using K = esockets::SupervisorEventKind;
    const std::string pe = std::to_string(e.process) + " " + std::to_string(e.pid);
    switch (e.kind) {
      case K::started: say("started " + pe); break;
      case K::ready: say("ready " + pe); break;
      case K::exited: say("exited " + pe + " " + std::to_string(e.status)); break;
      case K::all_ready: say("all_ready " + std::to_string(sup.port()) + " " + sup.admin_address()); break;
      case K::stopping: say("stopping"); break;
      case K::handed_over: say("handed_over " + pe); break;
      case K::restarting: say("restarting " + pe + " " + e.text); break;
      default: break;
    }
  };
  int rc = 99;
  try {
    esockets::Supervisor sup(o, [fail_first, crash_in_takeover, slow_takeover_ms,
                                 crash_after_start](const esockets::ChildContext& ctx) -> int {
      // fail-first P: process P cannot start the first time (as a bad option would do).
      if (static_cast<int>(ctx.process()) == fail_first && ctx.restarts() == 0) {
        throw std::runtime_error("cannot start");
      }
      const bool first = ctx.restarts() == 0;
      WhoEchoHandler h(ctx.process(), first && static_cast<int>(ctx.process()) == crash_in_takeover,
                       slow_takeover_ms);
      esockets::Server server(h, ctx.options());
      server.start();
      if (first && static_cast<int>(ctx.process()) == crash_after_start) ::raise(SIGKILL);
      return ctx.serve(server);
    });
    rc = sup.run();
    const esockets::SupervisorStats st = sup.stats();
    const esockets::ShardStats& t = st.total.total;
    say("total " + std::to_string(t.accepts) + " " + std::to_string(t.messages_in) + " " +
        std::to_string(t.messages_out) + " " + std::to_string(t.bytes_in) + " " +
        std::to_string(t.bytes_out) + " " + std::to_string(st.restarts) + " " +
        std::to_string(t.connections) + " " + std::to_string(st.running));
    for (const esockets::ProcessStats& ps : st.processes) {
      say("process " + std::to_string(ps.process) + " " + std::to_string(ps.stats.total.accepts) +
          " " + std::to_string(ps.stats.total.messages_in));
    }
    unsigned handed = 0;
    for (const esockets::ProcessStats& ps : st.processes) handed += ps.handed_over ? 1 : 0;
    say("takeover " + std::to_string(st.total.taken_over_out) + " " +
        std::to_string(st.total.taken_over_in) + " " + std::to_string(handed));
  } catch (const std::exception& e) {
    say(std::string("exception ") + e.what());
  }
  return rc;
}

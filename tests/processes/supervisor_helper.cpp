// A supervisor for tests/processes/supervisor_test.cpp, in a process of its own: the test
// binary has a watchdog thread, and a Supervisor should fork from a single-threaded process
// (under ASan a lock another thread holds at fork time stays locked in the child).
//
// usage: supervisor_helper PROCESSES [admin ADDR] [fail-first P] [port N] [listen ADDR]...
//                           [takeover-socket PATH] [take-over PATH]
// Prints its events and, after run(), its totals as lines on stdout (see supervisor_test.cpp
// and supervisor_upgrade_test.cpp); exits with run()'s status. Children serve lines: "who"
// answers "<process> <pid>", "count" the number of lines this connection sent before it (a
// per-connection state that a takeover carries), anything else comes back as it was sent.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>

#include "esockets/esockets.hpp"

namespace {

class WhoEchoHandler : public esockets::Handler {
 public:
  explicit WhoEchoHandler(unsigned process)
      : who_(std::to_string(process) + " " + std::to_string(::getpid())) {}
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
    return std::to_string(*c.state<std::uint64_t>());
  }
  bool on_client_restore(esockets::Connection& c, std::string_view state) override {
    c.emplace_state<std::uint64_t>(std::strtoull(std::string(state).c_str(), nullptr, 10));
    return true;
  }

 private:
  std::string who_;
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
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    if (key == "admin") o.server.admin = argv[i + 1];
    if (key == "fail-first") fail_first = std::atoi(argv[i + 1]);
    if (key == "port") o.server.port = static_cast<std::uint16_t>(std::atoi(argv[i + 1]));
    if (key == "listen") o.server.listeners.push_back(esockets::ListenerOptions{argv[i + 1]});
    if (key == "takeover-socket") o.server.takeover_socket = argv[i + 1];
    if (key == "take-over") o.server.take_over = argv[i + 1];
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
    esockets::Supervisor sup(o, [fail_first](const esockets::ChildContext& ctx) -> int {
      // fail-first P: process P cannot start the first time (as a bad option would do).
      if (static_cast<int>(ctx.process()) == fail_first && ctx.restarts() == 0) {
        throw std::runtime_error("cannot start");
      }
      WhoEchoHandler h(ctx.process());
      esockets::Server server(h, ctx.options());
      server.start();
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

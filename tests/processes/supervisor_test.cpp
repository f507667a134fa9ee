// Multi-process mode (issue 15, include/esockets/supervisor.hpp): several processes accept on
// one port, a child killed with SIGKILL is restarted while the others keep serving, SIGTERM
// drains them all and run() returns 0, and the supervisor's totals are what the clients did.
//
// Each test runs a supervisor process (supervisor_helper.cpp) that reports its events and,
// at the end, its totals as lines on stdout. The children serve a line protocol: "who"
// answers "<process> <pid>", anything else comes back as it was sent.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "supervised.hpp"

namespace esockets::test {
namespace {

class WhoEchoHandler : public Handler {
 public:
  explicit WhoEchoHandler(unsigned process) : who_(std::to_string(process) + " " + std::to_string(::getpid())) {}
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "who") {
      c.send_frame(who_);
    } else {
      c.send_frame(m);
    }
  }

 private:
  std::string who_;
};

int who_echo_child(const ChildContext& ctx) {
  WhoEchoHandler h(ctx.process());
  Server server(h, ctx.options());
  server.start();
  return ctx.serve(server);
}

SupervisorOptions base_options(unsigned processes) {
  SupervisorOptions o;
  o.processes = processes;
  o.server.framing = Framing::line;
  o.server.port = 0;
  o.stats_interval = std::chrono::milliseconds(50);
  o.restart_backoff = std::chrono::milliseconds(50);
  o.stop_timeout = std::chrono::seconds(10);
  return o;
}

TEST(Supervisor, ProcessesShareOnePortEchoInOrderAndSigtermDrainsAll) {
  Supervised sup({"4"});
  const std::string ready = sup.wait_line("all_ready");
  ASSERT_FALSE(ready.empty()) << sup.log();
  const auto port = static_cast<std::uint16_t>(numbers(ready).at(0));
  ASSERT_NE(port, 0);

  // Many clients at once: every one must be served (the supervisor's own socket on the port
  // never listens, so none may wait in a queue nobody accepts from).
  constexpr std::size_t kClients = 64;
  std::vector<Client> clients;
  std::map<int, int> per_process;
  std::set<int> pids;
  for (std::size_t i = 0; i < kClients; ++i) {
    Client c;
    ASSERT_TRUE(c.connect(port, source(i))) << "client " << i;
    clients.push_back(std::move(c));
  }
  std::uint64_t messages = 0, bytes = 0;
  for (auto& c : clients) {
    const auto [p, pid] = who(c);
    ASSERT_GE(p, 0);
    per_process[p]++;
    pids.insert(pid);
    messages += 1;
    bytes += 4;
  }
  EXPECT_GE(per_process.size(), 2u) << "64 connections all landed in one process";
  EXPECT_EQ(pids.size(), per_process.size());
  for (std::size_t i = 0; i < clients.size(); ++i) {
    ASSERT_TRUE(echo_rounds(clients[i], i, 0, 5, 8, &messages, &bytes)) << "client " << i;
  }

  // SIGTERM: every child stops its server (clients see a clean EOF), run() returns 0.
  const auto t0 = Clock::now();
  ASSERT_EQ(::kill(sup.pid(), SIGTERM), 0);
  for (auto& c : clients) {
    EXPECT_EQ(c.wait_eof(5s), EofResult::eof);
    c.close();  // our FIN ends the server's linger at once
  }
  ASSERT_EQ(sup.terminate(false), 0) << sup.log();
  EXPECT_LT(Clock::now() - t0, 10s);
  for (int pid : pids) EXPECT_NE(::kill(pid, 0), 0) << "child " << pid << " outlived run()";

  const auto total = numbers(sup.wait_line("total", 2s));
  ASSERT_EQ(total.size(), 8u) << sup.log();
  EXPECT_EQ(total[0], kClients);   // accepts
  EXPECT_EQ(total[1], messages);   // messages in
  EXPECT_EQ(total[2], messages);   // messages out (echoes)
  EXPECT_EQ(total[3], bytes);      // bytes in
  EXPECT_EQ(total[5], 0u);         // restarts
  EXPECT_EQ(total[6], 0u);         // connections left
  EXPECT_EQ(total[7], 0u);         // children running
  std::uint64_t accepts = 0;
  for (int i = 0; i < 4; ++i) {
    const auto p = numbers(sup.wait_line("process " + std::to_string(i), 1s));
    ASSERT_EQ(p.size(), 3u);
    EXPECT_EQ(p[1], static_cast<std::uint64_t>(per_process[i])) << "process " << i;
    accepts += p[1];
  }
  EXPECT_EQ(accepts, kClients);
}

TEST(Supervisor, KilledChildIsRestartedWhileTheOthersKeepServing) {
  Supervised sup({"3"});
  const std::string ready = sup.wait_line("all_ready");
  ASSERT_FALSE(ready.empty()) << sup.log();
  const auto port = static_cast<std::uint16_t>(numbers(ready).at(0));

  constexpr std::size_t kClients = 36;
  std::vector<Client> clients;
  std::vector<std::pair<int, int>> where;
  for (std::size_t i = 0; i < kClients; ++i) {
    Client c;
    ASSERT_TRUE(c.connect(port, source(i)));
    where.push_back(who(c));
    ASSERT_GE(where.back().first, 0);
    clients.push_back(std::move(c));
  }
  const auto [victim, victim_pid] = where[0];
  ASSERT_EQ(::kill(victim_pid, SIGKILL), 0);

  // The victim's clients lose their connection; everyone else goes on, in order, meanwhile.
  for (std::size_t i = 0; i < kClients; ++i) {
    if (where[i].first == victim) {
      const EofResult r = clients[i].wait_eof(5s);
      EXPECT_TRUE(r == EofResult::eof || r == EofResult::reset) << to_string(r);
    } else {
      ASSERT_TRUE(echo_rounds(clients[i], i, 0, 3, 4, nullptr, nullptr)) << "client " << i;
    }
  }
  const std::string exited = sup.wait_line("exited " + std::to_string(victim));
  ASSERT_FALSE(exited.empty()) << sup.log();
  EXPECT_NE(exited.find(" -9"), std::string::npos) << exited;  // minus SIGKILL
  const std::string back = sup.wait_line("ready " + std::to_string(victim));
  ASSERT_FALSE(back.empty()) << sup.log();
  const int new_pid = static_cast<int>(numbers(back).at(1));
  EXPECT_NE(new_pid, victim_pid);

  // New clients reach the restarted child too (bounded: the kernel's hash decides).
  bool served = false;
  std::vector<Client> extra;
  for (std::size_t i = 0; i < 150 && !served; ++i) {
    Client c;
    ASSERT_TRUE(c.connect(port, source(i)));
    const auto [p, pid] = who(c);
    ASSERT_GE(p, 0);
    if (pid == new_pid) served = echo_rounds(c, 1000 + i, 0, 2, 4, nullptr, nullptr);
    extra.push_back(std::move(c));
  }
  EXPECT_TRUE(served) << "no new connection reached the restarted process " << victim;
  for (std::size_t i = 0; i < kClients; ++i) {
    if (where[i].first != victim) {
      ASSERT_TRUE(echo_rounds(clients[i], i, 100, 1, 4, nullptr, nullptr)) << "client " << i;
    }
  }

  clients.clear();
  extra.clear();
  ASSERT_EQ(sup.terminate(), 0) << sup.log();
  const auto total = numbers(sup.wait_line("total", 2s));
  ASSERT_EQ(total.size(), 8u) << sup.log();
  EXPECT_EQ(total[5], 1u);  // one restart
  EXPECT_EQ(total[7], 0u);
}

// GET /metrics on the supervisor's admin listener; the body or "".
std::string scrape(const std::string& admin) {
  Client c;
  if (!c.connect(admin)) return "";
  if (!c.send_all("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")) return "";
  std::string body;
  c.wait_eof(5s, &body);
  return body;
}

std::uint64_t sum_of(const std::string& metrics, const std::string& name) {
  std::uint64_t sum = 0;
  std::istringstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + "{", 0) != 0 && line.rfind(name + " ", 0) != 0) continue;
    sum += std::strtoull(line.c_str() + line.rfind(' ') + 1, nullptr, 10);
  }
  return sum;
}

TEST(Supervisor, TotalsAndMetricsEqualWhatTheClientsDid) {
  Supervised sup({"2", "admin", "127.0.0.1:0"});
  const std::string ready = sup.wait_line("all_ready");
  ASSERT_FALSE(ready.empty()) << sup.log();
  const auto port = static_cast<std::uint16_t>(numbers(ready).at(0));
  const std::string admin = ready.substr(ready.rfind(' ') + 1);
  ASSERT_NE(admin.find("127.0.0.1:"), std::string::npos) << ready;

  constexpr std::size_t kClients = 16;
  std::vector<Client> clients;
  std::uint64_t messages = 0, bytes = 0;
  for (std::size_t i = 0; i < kClients; ++i) {
    Client c;
    ASSERT_TRUE(c.connect(port, source(i)));
    ASSERT_TRUE(echo_rounds(c, i, 0, 5, 5, &messages, &bytes));
    clients.push_back(std::move(c));
  }
  // The children report every 50 ms: the totals catch up within a few reports.
  std::string m;
  const bool caught_up = wait_until(
      [&] {
        m = scrape(admin);
        return sum_of(m, "esockets_process_received_messages_total") == messages &&
               sum_of(m, "esockets_received_messages_total") == messages &&
               sum_of(m, "esockets_connections") == kClients;
      },
      10s);
  EXPECT_TRUE(caught_up) << m;
  EXPECT_EQ(sum_of(m, "esockets_process_received_bytes_total"), bytes);
  EXPECT_EQ(sum_of(m, "esockets_process_up"), 2u);
  EXPECT_EQ(sum_of(m, "esockets_shards"), 2u);  // one shard in each process

  clients.clear();
  ASSERT_EQ(sup.terminate(), 0) << sup.log();
  const auto total = numbers(sup.wait_line("total", 2s));
  ASSERT_EQ(total.size(), 8u) << sup.log();
  EXPECT_EQ(total[0], kClients);
  EXPECT_EQ(total[1], messages);
  EXPECT_EQ(total[3], bytes);
  EXPECT_EQ(total[4], bytes);  // echoed byte for byte
}

TEST(Supervisor, ChildThatCannotStartStopsTheOthers) {
  // Process 1 fails at its first start (as a bad option or a taken port would): no restart
  // loop; the others are stopped and run() returns the failure.
  Supervised sup({"3", "fail-first", "1"});
  EXPECT_EQ(sup.terminate(false, 10s), 1) << sup.log();
  const auto total = numbers(sup.wait_line("total", 2s));
  ASSERT_EQ(total.size(), 8u) << sup.log();
  EXPECT_EQ(total[5], 0u);  // no restarts
  EXPECT_EQ(total[7], 0u);  // nobody left running
}

TEST(Supervisor, BadOptionsAreRefusedBeforeAnythingForks) {
  auto make = [](SupervisorOptions o) { Supervisor s(std::move(o), who_echo_child); };
  SupervisorOptions zero = base_options(1);
  zero.processes = 0;
  EXPECT_THROW(make(zero), std::invalid_argument);
  SupervisorOptions unix_listener = base_options(2);
  unix_listener.server.listeners.push_back(ListenerOptions{"unix:/tmp/esockets-sup-test.sock"});
  try {
    make(unix_listener);
    ADD_FAILURE() << "a Unix listener was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("Unix-domain"), std::string::npos) << e.what();
  }
  SupervisorOptions short_stop = base_options(2);
  short_stop.drain = 2s;
  short_stop.stop_timeout = 1s;
  EXPECT_THROW(make(short_stop), std::invalid_argument);
  EXPECT_THROW(Supervisor(base_options(2), ChildMain{}), std::invalid_argument);

  // A port held by a socket without SO_REUSEPORT: run() throws before forking a child.
  std::uint16_t taken = 0;
  const int fd = occupy_loopback_port(taken);
  ASSERT_GE(fd, 0);
  SupervisorOptions o = base_options(2);
  o.server.port = taken;
  o.handle_signals = false;
  Supervisor s(o, who_echo_child);
  EXPECT_THROW(s.run(), std::system_error);
  ::close(fd);
}

}  // namespace
}  // namespace esockets::test

// A rolling upgrade of a multi-process server (issue 15, SupervisorOptions::server.takeover_socket
// / take_over): a new supervisor takes over the old one's children one slot at a time while
// clients keep echoing sequence-numbered lines; the old supervisor ends with status 0 once every
// slot was handed over. Also: an old supervisor with more processes is refused before anything
// changes, and a slot whose takeover fails starts fresh while the old process keeps serving its
// clients.
//
// Both supervisors are supervisor_helper processes (supervised.hpp). Its children answer
// "who" with "<slot> <pid>" and "count" with the number of lines the connection sent before:
// a per-connection state that on_client_takeover / on_client_restore carry across.
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "supervised.hpp"

namespace esockets::test {
namespace {

// "count" on a client: the lines it sent before, or -1.
long long count_of(Client& c) {
  std::string line;
  if (!c.send_line("count") || !c.recv_line(line, 5s)) return -1;
  return std::atoll(line.c_str());
}

// The pids a supervisor's lines name as "ready P PID", by slot, up to `slots` of them.
std::map<int, int> ready_pids(Supervised& sup, int slots) {
  std::map<int, int> out;
  for (int i = 0; i < slots; ++i) {
    const auto r = numbers(sup.wait_line("ready " + std::to_string(i)));
    if (r.size() != 2) return out;
    out[static_cast<int>(r[0])] = static_cast<int>(r[1]);
  }
  return out;
}

TEST(SupervisorUpgrade, NewSupervisorTakesOverEveryProcessOneAtATimeUnderLoad) {
  SocketDir dir;
  const std::string ctl = dir.path();
  Supervised old_sup({"2", "takeover-socket", ctl});
  const std::string ready = old_sup.wait_line("all_ready");
  ASSERT_FALSE(ready.empty()) << old_sup.log();
  const auto port = static_cast<std::uint16_t>(numbers(ready).at(0));
  struct stat st {};
  ASSERT_EQ(::stat((ctl + ".0").c_str(), &st), 0) << "slot 0 offers no takeover at " << ctl << ".0";
  ASSERT_EQ(::stat((ctl + ".1").c_str(), &st), 0);

  constexpr std::size_t kClients = 40;
  std::vector<Client> clients(kClients);
  std::vector<std::pair<int, int>> before(kClients);
  std::vector<long long> sent(kClients, 0);  // lines each client sent, for "count"
  std::set<int> old_pids;
  for (std::size_t i = 0; i < kClients; ++i) {
    ASSERT_TRUE(clients[i].connect(port, source(i))) << "client " << i;
    before[i] = who(clients[i]);
    ASSERT_GE(before[i].first, 0);
    old_pids.insert(before[i].second);
    ++sent[i];
  }
  ASSERT_EQ(old_pids.size(), 2u) << "40 clients all landed in one process";

  // Every client echoes sequence-numbered pipelined lines through the whole upgrade: a line
  // lost, duplicated, reordered or late by more than 5 s fails its round.
  std::atomic<bool> stop{false};
  std::atomic<int> failed_client{-1};
  std::atomic<int> rounds_done{0};
  std::thread pump([&] {
    for (int r = 0; r < 2000 && !stop.load() && failed_client.load() < 0; ++r) {
      for (std::size_t i = 0; i < kClients; ++i) {
        if (!echo_rounds(clients[i], i, r * 4, 1, 4, nullptr, nullptr)) {
          failed_client.store(static_cast<int>(i));
          return;
        }
        sent[i] += 4;
      }
      rounds_done.fetch_add(1);
    }
  });
  struct Join {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Join() {
      stop.store(true);
      if (t.joinable()) t.join();
    }
  } join{stop, pump};
  while (rounds_done.load() < 3 && failed_client.load() < 0) std::this_thread::sleep_for(5ms);

  Supervised new_sup({"2", "port", std::to_string(port), "takeover-socket", ctl, "take-over", ctl});
  // One at a time: slot 1 starts only after slot 0 took over everything of old slot 0.
  ASSERT_FALSE(new_sup.wait_line("started 0").empty()) << new_sup.log();
  const auto r0 = numbers(new_sup.wait_line("ready 0", 20s));
  ASSERT_EQ(r0.size(), 2u) << new_sup.log();
  const auto s1 = new_sup.wait_line("started 1");
  ASSERT_FALSE(s1.empty()) << "slot 1 started before slot 0 was ready, or never:\n" << new_sup.log();
  const auto r1 = numbers(new_sup.wait_line("ready 1", 20s));
  ASSERT_EQ(r1.size(), 2u) << new_sup.log();
  ASSERT_FALSE(new_sup.wait_line("all_ready").empty()) << new_sup.log();
  const std::map<int, int> new_pid{{0, static_cast<int>(r0[1])}, {1, static_cast<int>(r1[1])}};

  // The old supervisor: both slots handed over, run() returned 0 by itself.
  EXPECT_EQ(old_sup.terminate(false, 20s), 0) << old_sup.log();
  const std::string old_log = old_sup.log();  // (the two old children may end in either order)
  EXPECT_NE(old_log.find("\nhanded_over 0 "), std::string::npos) << old_log;
  EXPECT_NE(old_log.find("\nhanded_over 1 "), std::string::npos) << old_log;
  const auto old_takeover = numbers(old_sup.wait_line("takeover", 1s));
  ASSERT_EQ(old_takeover.size(), 3u) << old_sup.log();
  EXPECT_EQ(old_takeover[0], kClients);  // out
  EXPECT_EQ(old_takeover[2], 2u);        // slots handed over
  for (int pid : old_pids) EXPECT_NE(::kill(pid, 0), 0) << "old child " << pid << " outlived its supervisor";

  // Load went on after the upgrade, then stop it and look at every client.
  const int at_upgrade = rounds_done.load();
  while (rounds_done.load() < at_upgrade + 3 && failed_client.load() < 0) std::this_thread::sleep_for(5ms);
  stop.store(true);
  pump.join();
  ASSERT_LT(failed_client.load(), 0) << "client " << failed_client.load()
                                     << " lost, duplicated or reordered a line\n" << new_sup.log();
  for (std::size_t i = 0; i < kClients; ++i) {
    const auto [slot, pid] = who(clients[i]);
    EXPECT_EQ(slot, before[i].first) << "client " << i << " moved to another slot";
    EXPECT_EQ(pid, new_pid.at(before[i].first)) << "client " << i << " is not served by the new process";
    ++sent[i];
    EXPECT_EQ(count_of(clients[i]), sent[i]) << "client " << i << ": its state did not cross";
    ++sent[i];
  }

  clients.clear();
  EXPECT_EQ(new_sup.terminate(), 0) << new_sup.log();
  const auto new_takeover = numbers(new_sup.wait_line("takeover", 2s));
  ASSERT_EQ(new_takeover.size(), 3u) << new_sup.log();
  EXPECT_EQ(new_takeover[1], kClients);  // in
  EXPECT_EQ(new_takeover[2], 0u);
}

TEST(SupervisorUpgrade, OldSupervisorWithMoreProcessesIsRefusedAndKeepsServing) {
  SocketDir dir;
  const std::string ctl = dir.path();
  Supervised old_sup({"3", "takeover-socket", ctl});
  const std::string ready = old_sup.wait_line("all_ready");
  ASSERT_FALSE(ready.empty()) << old_sup.log();
  const auto port = static_cast<std::uint16_t>(numbers(ready).at(0));
  Client c;
  ASSERT_TRUE(c.connect(port));
  const auto [slot, pid] = who(c);
  ASSERT_GE(slot, 0);

  Supervised new_sup({"2", "port", std::to_string(port), "take-over", ctl});
  const std::string refused = new_sup.wait_line("exception", 10s);
  EXPECT_NE(refused.find("run at least 3 processes"), std::string::npos) << new_sup.log();
  EXPECT_NE(new_sup.terminate(false), 0);
  EXPECT_TRUE(new_sup.wait_line("started").empty()) << "it forked a child before refusing";

  ASSERT_TRUE(echo_rounds(c, 0, 0, 3, 4, nullptr, nullptr));
  EXPECT_EQ(who(c).second, pid);
  c.close();
  EXPECT_EQ(old_sup.terminate(), 0) << old_sup.log();
  const auto t = numbers(old_sup.wait_line("takeover", 2s));
  ASSERT_EQ(t.size(), 3u) << old_sup.log();
  EXPECT_EQ(t[0], 0u);  // nothing went anywhere
}

TEST(SupervisorUpgrade, FailedTakeoverStartsTheSlotFreshAndTheOldProcessKeepsItsClients) {
  SocketDir dir;
  const std::string ctl = dir.path();
  Supervised old_sup({"2", "takeover-socket", ctl});
  const std::string ready = old_sup.wait_line("all_ready");
  ASSERT_FALSE(ready.empty()) << old_sup.log();
  const auto port = static_cast<std::uint16_t>(numbers(ready).at(0));
  std::vector<Client> clients(12);
  std::vector<int> old_pid(clients.size());
  for (std::size_t i = 0; i < clients.size(); ++i) {
    ASSERT_TRUE(clients[i].connect(port, source(i)));
    old_pid[i] = who(clients[i]).second;
    ASSERT_GT(old_pid[i], 0);
  }

  // The new build listens on one more address: the takeover refuses mismatched listeners
  // before anything moves, so each slot starts fresh beside the old processes.
  std::uint16_t extra = 0;
  const int hold = occupy_loopback_port(extra);
  ASSERT_GE(hold, 0);
  ::close(hold);
  const std::string here = "127.0.0.1:" + std::to_string(port);
  const std::string there = "127.0.0.1:" + std::to_string(extra);
  Supervised new_sup({"2", "listen", here, "listen", there, "takeover-socket", ctl, "take-over", ctl});
  const std::string again = new_sup.wait_line("restarting 0", 20s);
  EXPECT_NE(again.find("could not take over " + ctl + ".0"), std::string::npos) << new_sup.log();
  EXPECT_NE(again.find("the old process keeps what it did not hand over"), std::string::npos) << again;
  ASSERT_EQ(ready_pids(new_sup, 2).size(), 2u) << new_sup.log();
  ASSERT_FALSE(new_sup.wait_line("all_ready").empty()) << new_sup.log();

  // The old processes still serve every client they had, in order.
  for (std::size_t i = 0; i < clients.size(); ++i) {
    ASSERT_TRUE(echo_rounds(clients[i], i, 0, 2, 4, nullptr, nullptr)) << "client " << i;
    EXPECT_EQ(who(clients[i]).second, old_pid[i]) << "client " << i;
  }
  // The new processes serve the extra address.
  Client fresh;
  ASSERT_TRUE(fresh.connect(there));
  ASSERT_TRUE(echo_rounds(fresh, 99, 0, 1, 4, nullptr, nullptr));
  fresh.close();

  clients.clear();
  EXPECT_EQ(new_sup.terminate(), 0) << new_sup.log();
  EXPECT_EQ(old_sup.terminate(), 0) << old_sup.log();
  const auto t = numbers(old_sup.wait_line("takeover", 2s));
  ASSERT_EQ(t.size(), 3u) << old_sup.log();
  EXPECT_EQ(t[0], 0u);
  EXPECT_EQ(t[2], 0u);
}

}  // namespace
}  // namespace esockets::test

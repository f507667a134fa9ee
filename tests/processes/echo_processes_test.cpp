// esockets-echo --processes N: the first line says how many processes serve, clients are
// echoed by more than one of them, SIGTERM stops all with status 0 and the summary holds the
// totals of every process; a bad value exits 2 saying what to change. A second supervisor
// started with --take-over gets every client, process by process, and the first exits 0.
#include <signal.h>
#include <stdlib.h>

#include <cinttypes>
#include <filesystem>
#include <sstream>

#include "child_process.hpp"
#include "test_support.hpp"

namespace esockets::test {
namespace {

// The exit code once the program ended by itself (bounded wait; SIGTERM after it).
int exit_code(ChildProcess& p, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = Clock::now() + timeout;
  while (p.alive() && Clock::now() < deadline) p.output(20ms);
  return p.stop(1s);
}

TEST(EchoProcesses, ServesWithSeveralProcessesAndPrintsTheirTotals) {
  ChildProcess echo;
  ASSERT_TRUE(echo.spawn({ESOCKETS_ECHO_BINARY, "--processes", "3", "--framing", "line"},
                         ChildProcess::Stderr::file));
  const std::uint16_t port = echo.wait_listening(20s);
  ASSERT_NE(port, 0) << echo.output() << echo.err();
  EXPECT_NE(echo.output().find("processes=3"), std::string::npos) << echo.output();

  constexpr int kClients = 24, kMessages = 10;
  std::vector<Client> clients;
  char src[32];
  for (int i = 0; i < kClients; ++i) {
    std::snprintf(src, sizeof src, "127.0.0.%d", 1 + i % 6);
    Client c;
    ASSERT_TRUE(c.connect(port, src));
    clients.push_back(std::move(c));
  }
  for (int m = 0; m < kMessages; ++m) {
    for (int i = 0; i < kClients; ++i) {
      const std::string line = "client " + std::to_string(i) + " message " + std::to_string(m);
      ASSERT_TRUE(clients[static_cast<std::size_t>(i)].send_line(line));
      std::string got;
      ASSERT_TRUE(clients[static_cast<std::size_t>(i)].recv_line(got, 5s));
      ASSERT_EQ(got, line);
    }
  }
  clients.clear();

  EXPECT_EQ(echo.stop(15s), 0) << echo.output() << echo.err();
  const std::string out = echo.output(200ms);
  EXPECT_NE(out.find("SIGTERM, stopping 3 processes"), std::string::npos) << out;
  EXPECT_NE(out.find("processes: 3 running=0 restarts=0"), std::string::npos) << out;
  EXPECT_NE(out.find("3 processes stopped, exit status 0"), std::string::npos) << out;
  // The total line counts every process: 24 accepts, 240 messages in.
  std::istringstream in(out);
  std::string line;
  bool total_seen = false;
  int processes_with_clients = 0;
  bool in_process_table = false;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string first;
    words >> first;
    if (first == "total") {
      std::uint64_t conns = 0, accepts = 0, refused = 0, bin = 0, bout = 0, min = 0;
      words >> conns >> accepts >> refused >> bin >> bout >> min;
      EXPECT_EQ(accepts, static_cast<std::uint64_t>(kClients)) << line;
      EXPECT_EQ(min, static_cast<std::uint64_t>(kClients * kMessages)) << line;
      EXPECT_EQ(bin, bout) << line;
      total_seen = true;
    } else if (first == "process") {
      in_process_table = true;
    } else if (in_process_table && !first.empty() && first != "processes:") {
      std::uint64_t pid = 0, restarts = 0, conns = 0, accepts = 0;
      words >> pid >> restarts >> conns >> accepts;
      if (accepts > 0) ++processes_with_clients;
    }
  }
  EXPECT_TRUE(total_seen) << out;
  EXPECT_GE(processes_with_clients, 2) << out;
}

TEST(EchoProcesses, NewSupervisorTakesOverEveryClientAndTheOldOneExitsZero) {
  char dir[] = "/tmp/esk-echo-upgrade-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string ctl = std::string(dir) + "/ctl";
  ChildProcess old_echo;
  ASSERT_TRUE(old_echo.spawn({ESOCKETS_ECHO_BINARY, "--processes", "2", "--framing", "line",
                              "--takeover-socket", ctl},
                             ChildProcess::Stderr::file));
  const std::uint16_t port = old_echo.wait_listening(20s);
  ASSERT_NE(port, 0) << old_echo.output() << old_echo.err();

  constexpr int kClients = 16;
  std::vector<Client> clients(kClients);
  char src[32];
  auto echo_all = [&](int round) {
    for (int i = 0; i < kClients; ++i) {
      const std::string line = "client " + std::to_string(i) + " round " + std::to_string(round);
      std::string got;
      if (!clients[static_cast<std::size_t>(i)].send_line(line) ||
          !clients[static_cast<std::size_t>(i)].recv_line(got, 5s) || got != line) {
        return false;
      }
    }
    return true;
  };
  for (int i = 0; i < kClients; ++i) {
    std::snprintf(src, sizeof src, "127.0.0.%d", 1 + i % 6);
    ASSERT_TRUE(clients[static_cast<std::size_t>(i)].connect(port, src));
  }
  ASSERT_TRUE(echo_all(0));

  ChildProcess new_echo;
  ASSERT_TRUE(new_echo.spawn({ESOCKETS_ECHO_BINARY, "--processes", "2", "--framing", "line", "--port",
                              std::to_string(port), "--takeover-socket", ctl, "--take-over", ctl},
                             ChildProcess::Stderr::file));
  ASSERT_EQ(new_echo.wait_listening(20s), port) << new_echo.output() << new_echo.err();
  EXPECT_EQ(exit_code(old_echo, 20s), 0) << old_echo.output() << old_echo.err();
  const std::string old_out = old_echo.output(200ms);
  EXPECT_NE(old_out.find("2 processes handed over to a new supervisor, exit status 0"), std::string::npos)
      << old_out;
  EXPECT_NE(old_out.find("handed_over=2 taken_over_out=16"), std::string::npos) << old_out;
  const std::string new_out = new_echo.output();
  EXPECT_NE(new_out.find("process 0 (pid"), std::string::npos) << new_out;
  EXPECT_NE(new_out.find("from " + ctl + ".0"), std::string::npos) << new_out;
  EXPECT_NE(new_out.find("from " + ctl + ".1"), std::string::npos) << new_out;
  for (int round = 1; round <= 3; ++round) ASSERT_TRUE(echo_all(round)) << "round " << round;

  clients.clear();
  EXPECT_EQ(new_echo.stop(15s), 0) << new_echo.output() << new_echo.err();
  EXPECT_NE(new_echo.output(200ms).find("taken_over_in=16"), std::string::npos) << new_echo.output();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(EchoProcesses, BadProcessCountExitsTwo) {
  ChildProcess echo;
  ASSERT_TRUE(echo.spawn({ESOCKETS_ECHO_BINARY, "--processes", "0"}));
  EXPECT_EQ(exit_code(echo), 2);
  EXPECT_NE(echo.output().find("--processes needs a whole number between 1 and 256"),
            std::string::npos)
      << echo.output();
  ChildProcess unix_echo;
  ASSERT_TRUE(unix_echo.spawn({ESOCKETS_ECHO_BINARY, "--processes", "2", "--listen", "unix:@esk-sup-test"}));
  EXPECT_EQ(exit_code(unix_echo), 2);
  EXPECT_NE(unix_echo.output().find("Unix-domain"), std::string::npos) << unix_echo.output();
}

}  // namespace
}  // namespace esockets::test

// esockets-echo --processes N: the first line says how many processes serve, clients are
// echoed by more than one of them, SIGTERM stops all with status 0 and the summary holds the
// totals of every process; a bad value exits 2 saying what to change.
#include <signal.h>

#include <cinttypes>
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

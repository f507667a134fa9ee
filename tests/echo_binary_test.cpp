// esockets-echo as a subprocess: bad flag -> exit 2 with a message; SIGTERM -> exit 0 with the
// stats table; bind failure -> exit 1.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_support.hpp"

extern char** environ;

namespace esockets::test {
namespace {

struct Proc {
  pid_t pid = -1;
  int out = -1, err = -1;
  std::string out_text, err_text;
  int status = -1;

  explicit Proc(std::vector<std::string> args) {
    int po[2], pe[2];
    if (::pipe2(po, O_CLOEXEC) != 0 || ::pipe2(pe, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    args.insert(args.begin(), ESOCKETS_ECHO_BINARY);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int rc = posix_spawn(&pid, ESOCKETS_ECHO_BINARY, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(po[1]);
    ::close(pe[1]);
    out = po[0];
    err = pe[0];
    if (rc != 0) throw std::runtime_error("posix_spawn failed");
  }
  ~Proc() {
    if (pid > 0 && status == -1) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (out >= 0) ::close(out);
    if (err >= 0) ::close(err);
  }
  // Reads available output for up to `ms`; returns when `until` appears in stdout (if given).
  void pump(std::chrono::milliseconds timeout, const std::string& until = "") {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (!until.empty() && out_text.find(until) != std::string::npos) return;
      pollfd p[2] = {{out, POLLIN, 0}, {err, POLLIN, 0}};
      int n = ::poll(p, 2, 20);
      if (n <= 0) {
        if (until.empty() && exited_nohang()) return;
        continue;
      }
      char buf[4096];
      bool eof_both = true;
      for (int i = 0; i < 2; ++i) {
        if (p[i].revents == 0) {
          eof_both = false;
          continue;
        }
        ssize_t r = ::read(p[i].fd, buf, sizeof buf);
        if (r > 0) {
          (i == 0 ? out_text : err_text).append(buf, static_cast<std::size_t>(r));
          eof_both = false;
        }
      }
      if (eof_both && until.empty()) return;
    }
  }
  bool exited_nohang() {
    if (status != -1) return true;
    int st;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      status = st;
      return true;
    }
    return false;
  }
  // Waits for exit (kills after timeout); returns the exit code or -1.
  int wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!exited_nohang() && Clock::now() < deadline) pump(50ms);
    if (!exited_nohang()) return -1;
    pump(200ms);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
};

std::uint16_t parse_port(const std::string& out) {
  const std::string key = "listening on 127.0.0.1:";
  auto p = out.find(key);
  if (p == std::string::npos) return 0;
  return static_cast<std::uint16_t>(std::stoi(out.substr(p + key.size())));
}

TEST(EchoBinary, BadFlagExits2WithMessage) {
  for (std::vector<std::string> args :
       {std::vector<std::string>{"--no-such-flag"}, {"--framing", "xml"}, {"--shards", "0"},
        {"--port", "70000"}, {"--workers"}}) {
    Proc p(args);
    EXPECT_EQ(p.wait_exit(20s), 2) << args[0];
    EXPECT_NE(p.err_text.find("esockets-echo:"), std::string::npos) << p.err_text;
    EXPECT_EQ(p.out_text.find("listening"), std::string::npos);
  }
}

TEST(EchoBinary, ServesThenSigtermExits0WithStats) {
  Proc p({"--port", "0", "--shards", "2", "--workers", "1", "--framing", "line"});
  p.pump(20s, "\n");
  ASSERT_EQ(p.out_text.rfind("esockets-echo listening on 127.0.0.1:", 0), 0u) << p.out_text;
  std::uint16_t port = parse_port(p.out_text);
  ASSERT_NE(port, 0);
  {
    Client c(port);
    ASSERT_TRUE(c.send_line("ping"));
    std::string line;
    ASSERT_TRUE(c.recv_line(line));
    EXPECT_EQ(line, "ping");
  }
  Client still_open(port);
  ASSERT_EQ(::kill(p.pid, SIGTERM), 0);
  EXPECT_EQ(p.wait_exit(30s), 0) << "stderr: " << p.err_text;
  EXPECT_EQ(still_open.wait_eof(5s), EofResult::eof);
  // The stats table: something beyond the listening line, mentioning the traffic counters.
  EXPECT_GT(p.out_text.size() + p.err_text.size(), p.out_text.find('\n') + 20)
      << "no stats printed:\n" << p.out_text << p.err_text;
  const std::string all = p.out_text + p.err_text;
  EXPECT_NE(all.find("accepts"), std::string::npos) << all;
}

TEST(EchoBinary, SigintAlsoStopsCleanly) {
  Proc p({"--port", "0"});
  p.pump(20s, "\n");
  ASSERT_NE(parse_port(p.out_text), 0) << p.out_text;
  ASSERT_EQ(::kill(p.pid, SIGINT), 0);
  EXPECT_EQ(p.wait_exit(30s), 0) << p.err_text;
}

TEST(EchoBinary, BindFailureExits1) {
  std::uint16_t bound = 0;
  const int fd = occupy_loopback_port(bound);
  ASSERT_GE(fd, 0);
  const std::string port = std::to_string(bound);
  Proc p({"--port", port});
  EXPECT_EQ(p.wait_exit(20s), 1) << p.out_text << p.err_text;
  EXPECT_NE(p.err_text.find(port), std::string::npos) << p.err_text;
  ::close(fd);
}

}  // namespace
}  // namespace esockets::test

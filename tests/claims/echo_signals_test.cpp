// Claim (README, "Tuning the shard count while serving" and "Programs"): esockets-echo adds a
// shard on SIGUSR1, retires one on SIGUSR2 (never below 1) and rebalances on SIGHUP, and the
// clients connected meanwhile keep being served.
//
// The test runs the binary with one shard, keeps a set of line clients echoing from a second
// thread the whole time, and walks 1 -> 2 -> 3 shards, SIGHUP, 3 -> 2 -> 1, then SIGUSR2 at 1.
// After each signal it reads the "SIGxxx: shards A -> B" line and the per-shard table printed
// after it. It fails if: a signal no longer changes the shard count (or the printed table has
// another number of shard rows), SIGUSR2 goes below 1 shard or ends the process, SIGHUP leaves
// the new shards empty (no rebalance), a connection is lost (total conns != clients), or any
// echo fails or stops during a change.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mutex>
#include <sstream>
#include <stdexcept>

#include "test_support.hpp"

extern char** environ;

namespace esockets::test {
namespace {

// esockets-echo as a child process with its stdout captured (stderr kept apart for messages).
class EchoProcess {
 public:
  explicit EchoProcess(std::vector<std::string> args) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
    args.insert(args.begin(), ESOCKETS_ECHO_BINARY);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, ESOCKETS_ECHO_BINARY, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    ::close(err[1]);
    out_ = out[0];
    err_ = err[0];
    if (rc != 0) throw std::runtime_error("posix_spawn of esockets-echo failed");
  }
  ~EchoProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
    ::close(err_);
  }
  EchoProcess(const EchoProcess&) = delete;
  EchoProcess& operator=(const EchoProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& out() const { return out_text_; }
  const std::string& err() const { return err_text_; }

  /// Reads output until `needle` occurs in stdout at or after `from`; its position or npos.
  std::size_t wait_for(const std::string& needle, std::size_t from,
                       std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      const std::size_t p = out_text_.find(needle, from);
      if (p != std::string::npos) return p;
      if (Clock::now() >= deadline || exited()) return std::string::npos;
      read_some(20ms);
    }
  }
  /// Waits for the process to end; its exit code, or -1 (killed, or still running at timeout).
  int wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!exited() && Clock::now() < deadline) read_some(20ms);
    if (!exited()) return -1;
    read_some(50ms);
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }

 private:
  bool exited() {
    if (!exited_ && ::waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
    return exited_;
  }
  void read_some(std::chrono::milliseconds timeout) {
    pollfd p[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
    if (::poll(p, 2, static_cast<int>(timeout.count())) <= 0) return;
    char buf[4096];
    for (int i = 0; i < 2; ++i) {
      if (p[i].revents == 0) continue;
      const ssize_t r = ::read(p[i].fd, buf, sizeof buf);
      if (r > 0) (i == 0 ? out_text_ : err_text_).append(buf, static_cast<std::size_t>(r));
    }
  }

  pid_t pid_ = -1;
  int out_ = -1, err_ = -1;
  int status_ = 0;
  bool exited_ = false;
  std::string out_text_, err_text_;
};

// The per-shard table esockets-echo prints (tools/echo/stats_print.cpp): one row per live shard
// ("<index> <conns> <accepts> ..."), then "total <conns> ...", ending with a "wakeups:" line.
struct Table {
  std::vector<std::uint64_t> conns;  // per live shard, in printed order
  std::uint64_t total = 0;
  bool complete = false;
};

Table parse_table(const std::string& text) {
  Table t;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream row(line);
    std::string name;
    std::uint64_t conns = 0;
    if (!(row >> name >> conns)) continue;
    if (name == "total") {
      t.total = conns;
      t.complete = true;
      break;
    }
    if (name.find_first_not_of("0123456789") == std::string::npos) t.conns.push_back(conns);
  }
  return t;
}

// Echo round trips over a fixed set of clients on a thread of its own, until stopped.
class EchoTraffic {
 public:
  explicit EchoTraffic(std::vector<Client> clients) : clients_(std::move(clients)) {
    thread_ = std::thread([this] { run(); });
  }
  ~EchoTraffic() { stop(); }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  std::uint64_t round_trips() const { return trips_.load(); }
  std::string first_failure() {
    std::lock_guard lk(mu_);
    return failure_;
  }
  std::size_t size() const { return clients_.size(); }

 private:
  void run() {
    std::uint64_t seq = 0;
    while (!stop_.load()) {
      for (std::size_t i = 0; i < clients_.size() && !stop_.load(); ++i) {
        std::ostringstream m;
        m << 'c' << i << '-' << seq++;
        const std::string msg = m.str();
        std::string got;
        if (!clients_[i].send_line(msg, 10s) || !clients_[i].recv_line(got, 10s) || got != msg) {
          std::lock_guard lk(mu_);
          if (failure_.empty()) {
            std::ostringstream why;
            why << "client " << i << " sent '" << msg << "', got '" << got << "'";
            failure_ = why.str();
          }
          stop_.store(true);
          return;
        }
        trips_.fetch_add(1);
      }
    }
  }

  std::vector<Client> clients_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> trips_{0};
  std::mutex mu_;
  std::string failure_;
};

class EchoSignals : public ::testing::TestWithParam<unsigned> {};

TEST_P(EchoSignals, Usr1AddsUsr2RetiresNeverBelowOneHupRebalancesWhileClientsAreServed) {
  EchoProcess p({"--port", "0", "--shards", "1", "--workers", std::to_string(GetParam()),
                 "--framing", "line"});
  const std::string key = "listening on 127.0.0.1:";
  const std::size_t at = p.wait_for(key, 0, 30s);
  ASSERT_NE(at, std::string::npos) << p.out() << p.err();
  ASSERT_NE(p.wait_for("\n", at, 10s), std::string::npos);
  const auto port = static_cast<std::uint16_t>(std::stoi(p.out().substr(at + key.size())));
  ASSERT_NE(port, 0);

  const std::size_t n = scaled(24, 9);
  EchoTraffic traffic(connect_many(port, n));
  ASSERT_TRUE(wait_until([&] { return traffic.round_trips() >= n; }, 30s))
      << traffic.first_failure();

  struct Step {
    int sig;
    const char* name;
    unsigned before, after;
  };
  const Step steps[] = {{SIGUSR1, "SIGUSR1", 1, 2}, {SIGUSR1, "SIGUSR1", 2, 3},
                        {SIGHUP, "SIGHUP", 3, 3},   {SIGUSR2, "SIGUSR2", 3, 2},
                        {SIGUSR2, "SIGUSR2", 2, 1}, {SIGUSR2, "SIGUSR2", 1, 1}};
  std::size_t from = p.out().size();
  for (const Step& s : steps) {
    SCOPED_TRACE(std::string(s.name) + " at " + std::to_string(s.before) + " shards");
    ASSERT_EQ(::kill(p.pid(), s.sig), 0);
    const std::string line = std::string("esockets-echo: ") + s.name + ": shards " +
                             std::to_string(s.before) + " -> " + std::to_string(s.after);
    const std::size_t pos = p.wait_for(line, from, 60s);
    ASSERT_NE(pos, std::string::npos) << "expected '" << line << "' in:\n"
                                      << p.out().substr(from) << "\nstderr:\n" << p.err();
    const std::size_t end = p.wait_for("\nwakeups:", pos, 30s);
    ASSERT_NE(end, std::string::npos) << "no stats table after the signal:\n" << p.out().substr(pos);
    const Table t = parse_table(p.out().substr(pos, end - pos));
    from = end + 1;
    ASSERT_TRUE(t.complete) << p.out().substr(pos, end - pos);
    EXPECT_EQ(t.conns.size(), s.after) << p.out().substr(pos, end - pos);
    EXPECT_EQ(t.total, n) << "a connection was lost or duplicated:\n" << p.out().substr(pos, end - pos);
    if (s.sig == SIGHUP) {
      // Shards 1 and 2 joined after every client connected, so they started empty; after the
      // rebalance every shard holds about a third.
      ASSERT_EQ(t.conns.size(), 3u);
      for (std::uint64_t c : t.conns) {
        EXPECT_LE(c > n / 3 ? c - n / 3 : n / 3 - c, 2u) << p.out().substr(pos, end - pos);
      }
    }
    // Every client is served after the change (the traffic thread went round at least once more).
    const std::uint64_t trips = traffic.round_trips();
    EXPECT_TRUE(wait_until([&] { return traffic.round_trips() >= trips + n; }, 30s))
        << traffic.first_failure();
  }
  traffic.stop();
  EXPECT_EQ(traffic.first_failure(), "");
  // A change that failed (e.g. set_shards(0) refused with an exception) is reported on stderr
  // as "esockets-echo: ..."; warnings ("warning: ...") are allowed.
  EXPECT_EQ(p.err().find("esockets-echo:"), std::string::npos) << p.err();

  ASSERT_EQ(::kill(p.pid(), SIGTERM), 0);
  EXPECT_EQ(p.wait_exit(30s), 0) << p.err();
}

INSTANTIATE_TEST_SUITE_P(Workers, EchoSignals, ::testing::Values(0u, 1u),
                         [](const auto& i) { return "workers" + std::to_string(i.param); });

}  // namespace
}  // namespace esockets::test

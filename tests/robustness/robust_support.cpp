#include "robust_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <set>
#include <sstream>

namespace robust {

// ------------------------------------------------------------------ watchdog

namespace {

std::mutex g_children_mu;
std::set<pid_t> g_children;

// The watchdog's state is leaked on purpose: its thread outlives the listener, which
// GoogleTest deletes at exit.
struct WatchdogState {
  std::mutex mu;
  std::string name;
  Clock::time_point deadline{};
  bool armed = false;
  int limit_s = 90;
};

class Watchdog : public testing::EmptyTestEventListener {
 public:
  Watchdog() : st_(new WatchdogState) {
    st_->limit_s = 90 * (kScale > 1 ? 3 : 1);
    if (const char* e = std::getenv("ROBUST_WATCHDOG_SECONDS")) st_->limit_s = std::atoi(e);
    std::thread([st = st_] { loop(st); }).detach();
  }
  void OnTestStart(const testing::TestInfo& info) override {
    std::lock_guard<std::mutex> lk(st_->mu);
    st_->name = std::string(info.test_suite_name()) + "." + info.name();
    st_->deadline = Clock::now() + std::chrono::seconds(st_->limit_s);
    st_->armed = true;
  }
  void OnTestEnd(const testing::TestInfo&) override {
    std::lock_guard<std::mutex> lk(st_->mu);
    st_->armed = false;
  }

 private:
  static void loop(WatchdogState* st) {
    while (true) {
      std::this_thread::sleep_for(ms(200));
      std::lock_guard<std::mutex> lk(st->mu);
      if (st->armed && Clock::now() > st->deadline) {
        std::fprintf(stderr, "WATCHDOG: %s ran longer than %d s; aborting\n", st->name.c_str(),
                     st->limit_s);
        std::lock_guard<std::mutex> lk2(g_children_mu);
        for (pid_t p : g_children) ::kill(p, SIGKILL);
        std::fflush(stderr);
        std::_Exit(3);
      }
    }
  }
  WatchdogState* st_;
};

[[maybe_unused]] const bool g_watchdog_registered = [] {
  testing::UnitTest::GetInstance()->listeners().Append(new Watchdog);
  return true;
}();

}  // namespace

// ------------------------------------------------------------------ sockets

std::string source_addr(int i, int spread) { return "127.0.0." + std::to_string(2 + (i % spread)); }

static int make_socket(const char* src) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (src != nullptr) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = 0;
    ::inet_pton(AF_INET, src, &a.sin_addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      int e = errno;
      ::close(fd);
      errno = e;
      return -1;
    }
  }
  return fd;
}

static sockaddr_in server_addr(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

namespace {
// A TCP_NODELAY socket connected (or, non-blocking, connecting) to port; -1 with errno set.
int connect_to(std::uint16_t port, const char* src, bool blocking) {
  int fd = make_socket(src);
  if (fd < 0) return -1;
  if (!blocking) set_blocking(fd, false);
  sockaddr_in a = server_addr(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 &&
      (blocking || errno != EINPROGRESS)) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  set_nodelay(fd);
  return fd;
}
}  // namespace

int connect_blocking(std::uint16_t port, const char* src) { return connect_to(port, src, true); }

int connect_nonblocking(std::uint16_t port, const char* src) {
  return connect_to(port, src, false);
}

std::vector<int> open_many(std::uint16_t port, int n, ms deadline, int spread) {
  std::vector<int> done;
  done.reserve(static_cast<std::size_t>(n));
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  const auto until = Clock::now() + deadline;
  int started = 0, inflight = 0, failed = 0;
  const int kWindow = 512;
  std::vector<epoll_event> evs(512);
  while (static_cast<int>(done.size()) + failed < n && Clock::now() < until) {
    while (inflight < kWindow && started < n) {
      std::string src = source_addr(started, spread);
      int fd = connect_nonblocking(port, spread > 0 ? src.c_str() : nullptr);
      ++started;
      if (fd < 0) {
        ++failed;
        continue;
      }
      epoll_event ev{};
      ev.events = EPOLLOUT;
      ev.data.fd = fd;
      ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
      ++inflight;
    }
    int k = ::epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 100);
    for (int i = 0; i < k; ++i) {
      int fd = evs[static_cast<std::size_t>(i)].data.fd;
      ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
      --inflight;
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        ++failed;
        ::close(fd);
      } else {
        done.push_back(fd);
      }
    }
  }
  ::close(ep);
  if (static_cast<int>(done.size()) != n) {
    ADD_FAILURE() << "open_many: established " << done.size() << " of " << n << " (" << failed
                  << " failed)";
  }
  return done;
}

void set_blocking(int fd, bool blocking) {
  int fl = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, blocking ? (fl & ~O_NONBLOCK) : (fl | O_NONBLOCK));
}

void set_linger_rst(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

void set_rcvbuf(int fd, int bytes) { ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes); }

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

bool write_all(int fd, const void* p, std::size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pollfd pf{fd, POLLOUT, 0};
        ::poll(&pf, 1, 100);
        continue;
      }
      return false;
    }
    c += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_exact(int fd, void* p, std::size_t n, ms timeout) {
  char* c = static_cast<char*>(p);
  const auto until = Clock::now() + timeout;
  while (n > 0) {
    auto left = std::chrono::duration_cast<ms>(until - Clock::now()).count();
    if (left <= 0) return false;
    pollfd pf{fd, POLLIN, 0};
    int r = ::poll(&pf, 1, static_cast<int>(left));
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) return false;
    }
    ssize_t k = ::recv(fd, c, n, MSG_DONTWAIT);
    if (k == 0) return false;
    if (k < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return false;
    }
    c += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

const char* to_string(End e) {
  switch (e) {
    case End::eof: return "eof";
    case End::reset: return "reset";
    case End::timeout: return "timeout";
    case End::error: return "error";
  }
  return "?";
}

End read_to_end(int fd, ms timeout, std::string* out) {
  const auto until = Clock::now() + timeout;
  char buf[65536];
  while (true) {
    auto left = std::chrono::duration_cast<ms>(until - Clock::now()).count();
    if (left <= 0) return End::timeout;
    pollfd pf{fd, POLLIN, 0};
    int r = ::poll(&pf, 1, static_cast<int>(left));
    if (r == 0) return End::timeout;
    if (r < 0) {
      if (errno == EINTR) continue;
      return End::error;
    }
    ssize_t k = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (k == 0) return End::eof;
    if (k < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return errno == ECONNRESET ? End::reset : End::error;
    }
    if (out != nullptr) out->append(buf, static_cast<std::size_t>(k));
  }
}

bool echo_ok(int fd, ms timeout, const std::string& msg) {
  if (!write_all(fd, msg.data(), msg.size())) return false;
  std::string got(msg.size(), '\0');
  return read_exact(fd, got.data(), got.size(), timeout) && got == msg;
}

// ------------------------------------------------------------------ /proc

long clock_ticks_per_sec() { return ::sysconf(_SC_CLK_TCK); }

long long cpu_ticks(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  if (!std::getline(f, s)) return -1;
  auto rp = s.rfind(')');
  if (rp == std::string::npos) return -1;
  std::istringstream is(s.substr(rp + 2));
  std::string tok;
  long long utime = 0, stime = 0;
  // fields after ')' start at field 3 (state); utime is field 14, stime 15.
  for (int field = 3; field <= 15 && (is >> tok); ++field) {
    if (field == 14) utime = std::atoll(tok.c_str());
    if (field == 15) stime = std::atoll(tok.c_str());
  }
  return utime + stime;
}

static long status_kb(pid_t pid, const char* key) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::size_t klen = std::strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, klen, key) == 0) return std::atol(line.c_str() + klen);
  }
  return -1;
}
long rss_kb(pid_t pid) { return status_kb(pid, "VmRSS:"); }
long hwm_kb(pid_t pid) { return status_kb(pid, "VmHWM:"); }

int fd_count(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

double self_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

bool wait_until(const std::function<bool()>& pred, ms timeout) {
  const auto until = Clock::now() + timeout;
  while (Clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(ms(5));
  }
  return pred();
}

// ------------------------------------------------------------------ child echo server

ChildServer::ChildServer(const ChildOptions& o) {
#ifndef ESOCKETS_ECHO_BINARY
  ADD_FAILURE() << "ESOCKETS_ECHO_BINARY not defined";
  return;
#else
  int pfd[2];
  if (::pipe2(pfd, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return;
  }
  std::vector<std::string> args{ESOCKETS_ECHO_BINARY, "--port", "0"};
  args.insert(args.end(), o.args.begin(), o.args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    // Child: async-signal-safe calls only until exec.
    ::dup2(pfd[1], 1);
    if (o.nofile > 0) {
      rlimit rl{static_cast<rlim_t>(o.nofile), static_cast<rlim_t>(o.nofile)};
      ::setrlimit(RLIMIT_NOFILE, &rl);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(pfd[1]);
  if (pid_ < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    ::close(pfd[0]);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(g_children_mu);
    g_children.insert(pid_);
  }
  out_fd_ = pfd[0];
  reader_ = std::thread([this] {
    std::string buf;
    char tmp[4096];
    while (true) {
      ssize_t k = ::read(out_fd_, tmp, sizeof tmp);
      if (k <= 0) {
        if (k < 0 && errno == EINTR) continue;
        break;
      }
      buf.append(tmp, static_cast<std::size_t>(k));
      std::size_t nl;
      while ((nl = buf.find('\n')) != std::string::npos) {
        std::lock_guard<std::mutex> lk(mu_);
        lines_.push_back(buf.substr(0, nl));
        buf.erase(0, nl + 1);
      }
    }
  });
  // First line: "esockets-echo listening on 127.0.0.1:PORT ..."
  wait_until(
      [&] {
        std::lock_guard<std::mutex> lk(mu_);
        return !lines_.empty();
      },
      ms(20000));
  std::lock_guard<std::mutex> lk(mu_);
  if (lines_.empty()) {
    ADD_FAILURE() << "esockets-echo printed nothing";
    return;
  }
  auto p = lines_[0].find("127.0.0.1:");
  if (p == std::string::npos) {
    ADD_FAILURE() << "unexpected first line: " << lines_[0];
    return;
  }
  port_ = static_cast<std::uint16_t>(std::atoi(lines_[0].c_str() + p + 10));
#endif
}

int ChildServer::stop(ms timeout) {
  if (pid_ <= 0) return -1;
  if (exited_) return status_;
  ::kill(pid_, SIGTERM);
  const auto until = Clock::now() + timeout;
  int st = 0;
  while (true) {
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) break;
    if (Clock::now() > until) {
      ADD_FAILURE() << "esockets-echo did not exit within " << timeout.count() << " ms of SIGTERM";
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &st, 0);
      break;
    }
    std::this_thread::sleep_for(ms(10));
  }
  exited_ = true;
  status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  if (reader_.joinable()) reader_.join();
  {
    std::lock_guard<std::mutex> lk(g_children_mu);
    g_children.erase(pid_);
  }
  return status_;
}

ChildServer::~ChildServer() {
  if (pid_ > 0 && !exited_) {
    ::kill(pid_, SIGKILL);
    int st;
    ::waitpid(pid_, &st, 0);
    exited_ = true;
    std::lock_guard<std::mutex> lk(g_children_mu);
    g_children.erase(pid_);
  }
  if (reader_.joinable()) reader_.join();
  if (out_fd_ >= 0) ::close(out_fd_);
}

std::vector<std::string> ChildServer::lines() const {
  std::lock_guard<std::mutex> lk(mu_);
  return lines_;
}

std::map<std::string, std::uint64_t> ChildServer::last_closes() const {
  std::map<std::string, std::uint64_t> m;
  auto ls = lines();
  for (auto it = ls.rbegin(); it != ls.rend(); ++it) {
    if (it->rfind("closes:", 0) != 0) continue;
    std::istringstream is(it->substr(7));
    std::string kv;
    while (is >> kv) {
      auto eq = kv.find('=');
      if (eq != std::string::npos) m[kv.substr(0, eq)] = std::strtoull(kv.c_str() + eq + 1, nullptr, 10);
    }
    break;
  }
  return m;
}

std::map<std::string, std::uint64_t> ChildServer::last_total() const {
  static const char* names[] = {"conns",   "accepts",  "refused", "bytes_in", "bytes_out",
                                "msgs_in", "msgs_out", "queue",   "paused",   "warnings"};
  std::map<std::string, std::uint64_t> m;
  auto ls = lines();
  for (auto it = ls.rbegin(); it != ls.rend(); ++it) {
    if (it->rfind("total ", 0) != 0) continue;
    std::istringstream is(it->substr(6));
    for (const char* n : names) {
      std::uint64_t v = 0;
      if (!(is >> v)) break;
      m[n] = v;
    }
    break;
  }
  return m;
}

// ------------------------------------------------------------------ statistics

double Dist::pct(double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  std::size_t i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}
double Dist::max() { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }
double Dist::min() { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }
std::string Dist::summary(const char* unit) {
  char b[256];
  std::snprintf(b, sizeof b, "n=%zu min=%.1f p50=%.1f p90=%.1f p99=%.1f max=%.1f %s", v.size(), min(),
                pct(50), pct(90), pct(99), max(), unit);
  return b;
}

}  // namespace robust

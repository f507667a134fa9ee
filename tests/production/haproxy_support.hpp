// Helpers of the HAProxy tests: programs run as children with their output in a file, free
// loopback ports below the ephemeral range, plain HTTP GETs with a deadline, HAProxy's stats CSV,
// Prometheus samples, and HAProxy itself started in the foreground and stopped. Every wait has a
// deadline.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "flood/mini_json.hpp"
#include "test_support.hpp"

extern char** environ;

namespace esockets::test {

// ---- programs, ports, files ------------------------------------------------------------------

inline std::string find_haproxy() {
  if (::access("/usr/sbin/haproxy", X_OK) == 0) return "/usr/sbin/haproxy";
  const char* path = std::getenv("PATH");
  std::string p = path != nullptr ? path : "/usr/bin:/bin";
  std::size_t pos = 0;
  while (pos <= p.size()) {
    std::size_t c = p.find(':', pos);
    if (c == std::string::npos) c = p.size();
    const std::string f = p.substr(pos, c - pos) + "/haproxy";
    if (::access(f.c_str(), X_OK) == 0) return f;
    pos = c + 1;
  }
  return "";
}

// Free now on 127.0.0.1 (SO_REUSEADDR, as servers bind: a port in TIME_WAIT counts as free).
inline bool port_free(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// Polls pred every `period` until it holds (true) or `timeout` passes (false): for predicates
// that cost a request each (HAProxy's stats, an admin listener).
inline bool poll_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                       std::chrono::milliseconds period = std::chrono::milliseconds(20)) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(period);
  }
}

// A free loopback port in 20000-32000 (below the ephemeral range), never one handed out before
// by this process.
inline std::uint16_t free_port() {
  static std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(::getpid()));
  static std::set<std::uint16_t> given;
  for (int k = 0; k < 500; ++k) {
    const auto p = static_cast<std::uint16_t>(20000 + rng() % 12000);
    if (given.count(p) == 0 && port_free(p)) {
      given.insert(p);
      return p;
    }
  }
  return 0;
}

// Something listens on 127.0.0.1:port (or 0.0.0.0:port): /proc/net/tcp, state 0A.
inline bool listening(std::uint16_t port) {
  std::ifstream f("/proc/net/tcp");
  std::string line;
  std::getline(f, line);  // header
  char want_lo[32], want_any[32];
  std::snprintf(want_lo, sizeof want_lo, "0100007F:%04X", port);
  std::snprintf(want_any, sizeof want_any, "00000000:%04X", port);
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string slot, local, remote, state;
    in >> slot >> local >> remote >> state;
    if (state == "0A" && (local == want_lo || local == want_any)) return true;
  }
  return false;
}

inline std::pair<int, int> ephemeral_range() {
  std::ifstream f("/proc/sys/net/ipv4/ip_local_port_range");
  int lo = 32768, hi = 60999;
  f >> lo >> hi;
  return {lo, hi};
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A scratch directory, removed with its files at the end.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/esockets-haproxy-XXXXXX";
    if (::mkdtemp(tmpl) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

// A program whose stdout and stderr go to a file, with extra environment variables. It dies
// with the test process (PR_SET_PDEATHSIG), so a test killed by the watchdog leaves no HAProxy
// behind.
class Program {
 public:
  Program() = default;
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
  ~Program() { stop(SIGKILL, std::chrono::milliseconds(0)); }

  bool spawn(const std::vector<std::string>& args, const std::string& log,
             const std::vector<std::string>& env_extra = {}) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    env.insert(env.end(), env_extra.begin(), env_extra.end());
    std::vector<std::string> a = args;
    std::vector<char*> argv, envp;
    for (auto& s : a) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (auto& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) return false;
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {  // async-signal-safe calls only until exec
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(out, 1);
      ::dup2(out, 2);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(out);
    status_ = -1;
    return pid_ > 0;
  }
  bool alive() {
    if (pid_ <= 0 || status_ != -1) return false;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      status_ = st;
      return false;
    }
    return true;
  }
  void signal(int sig) {
    if (alive()) ::kill(pid_, sig);
  }
  /// Waits up to `timeout` for the exit; SIGKILL after it. The exit code, or -1 (killed).
  int wait(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (alive() && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
    if (alive()) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
      return -1;
    }
    if (pid_ <= 0) return -1;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }
  /// `sig`, then SIGKILL after `timeout`.
  int stop(int sig, std::chrono::milliseconds timeout) {
    signal(sig);
    const int rc = wait(timeout);
    pid_ = -1;
    return rc;
  }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

// ---- HTTP and the numbers it carries ---------------------------------------------------------

struct HttpReply {
  int status = 0;  // 0: no answer
  std::string body;
};

inline HttpReply http_get(std::uint16_t port, const std::string& path,
                          std::chrono::milliseconds timeout = 3s) {
  HttpReply r;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return r;
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return r;
  }
  std::string raw;
  char buf[16384];
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const std::size_t head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos) return r;
  r.status = std::atoi(raw.c_str() + 9);
  r.body = raw.substr(head_end + 4);
  return r;
}

// The sum of every sample of a Prometheus family ("esockets_accepts_total"); -1 if none.
inline long long metric_sum(const std::string& text, const std::string& name) {
  long long sum = -1;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    const std::size_t sp = line.rfind(' ');
    sum = (sum < 0 ? 0 : sum) + std::llround(std::strtod(line.c_str() + sp + 1, nullptr));
  }
  return sum;
}

// Seconds with three decimals, for the record.
inline std::string secs(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", s);
  return buf;
}

// One server row of HAProxy's stats CSV.
struct HaproxyServer {
  std::string status;        // UP, DOWN, ... ("" when the stats could not be read)
  std::string check_status;  // L7OK, L7STS, L4CON, ...
  long long stot = -1;       // sessions sent to it so far
  long long econ = 0, eresp = 0, wretr = 0, wredis = 0;
};

// "backend/server" -> row, from GET /stats;csv.
inline std::map<std::string, HaproxyServer> haproxy_stats(std::uint16_t stats_port) {
  std::map<std::string, HaproxyServer> rows;
  const HttpReply r = http_get(stats_port, "/stats;csv");
  if (r.status != 200) return rows;
  std::istringstream in(r.body);
  std::string line;
  std::vector<std::string> header;
  auto split = [](const std::string& s) {
    std::vector<std::string> v;
    std::string cell;
    std::istringstream cs(s);
    while (std::getline(cs, cell, ',')) v.push_back(cell);
    return v;
  };
  while (std::getline(in, line)) {
    if (line.rfind("# ", 0) == 0) {
      header = split(line.substr(2));
      continue;
    }
    const std::vector<std::string> cells = split(line);
    if (header.empty() || cells.size() < 2) continue;
    auto col = [&](const char* name) -> std::string {
      for (std::size_t i = 0; i < header.size() && i < cells.size(); ++i) {
        if (header[i] == name) return cells[i];
      }
      return "";
    };
    HaproxyServer s;
    s.status = col("status");
    s.check_status = col("check_status");
    s.stot = std::atoll(col("stot").c_str());
    s.econ = std::atoll(col("econ").c_str());
    s.eresp = std::atoll(col("eresp").c_str());
    s.wretr = std::atoll(col("wretr").c_str());
    s.wredis = std::atoll(col("wredis").c_str());
    rows[cells[0] + "/" + cells[1]] = s;
  }
  return rows;
}

// A count from the flood's JSON, for printing.
inline long long count(const floodtest::JValue& v) { return std::llround(v.num()); }

inline floodtest::JValue read_json(const std::string& path) {
  floodtest::JValue v;
  floodtest::JParser(read_file(path)).parse(v);
  return v;
}

// HAProxy in the foreground (-db) on `config`, ready when every port in `ports` listens.
// Ports are chosen by `make_config` (called again with new ports when HAProxy cannot bind).
inline bool start_haproxy(Program& proc, const TempDir& dir, std::vector<std::uint16_t>& ports,
                          std::size_t nports,
                          const std::function<std::pair<std::string, std::vector<std::string>>(
                              const std::vector<std::uint16_t>&)>& make_config) {
  const std::string haproxy = find_haproxy();
  for (int attempt = 0; attempt < 3; ++attempt) {
    ports.clear();
    for (std::size_t i = 0; i < nports; ++i) ports.push_back(free_port());
    const auto [config, env] = make_config(ports);
    if (!proc.spawn({haproxy, "-db", "-f", config}, dir.file("haproxy.log"), env)) return false;
    const auto deadline = Clock::now() + 10s;
    bool up = false;
    while (Clock::now() < deadline && proc.alive()) {
      up = std::all_of(ports.begin(), ports.end(), [](std::uint16_t p) { return listening(p); });
      if (up) break;
      std::this_thread::sleep_for(20ms);
    }
    if (up) return true;
    std::cout << "haproxy did not start (attempt " << attempt + 1 << "):\n"
              << read_file(dir.file("haproxy.log")) << "\n";
    proc.stop(SIGKILL, 2s);
  }
  return false;
}

// Soft stop (SIGUSR1: finish the sessions, which are all gone by now), then SIGTERM, then SIGKILL.
inline void stop_haproxy(Program& proc) {
  proc.signal(SIGUSR1);
  if (!poll_until([&] { return !proc.alive(); }, 5s)) proc.signal(SIGTERM);
  proc.stop(SIGKILL, 5s);
}

inline std::string ip_of(const PeerAddress& p) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (p.family == AF_INET || p.family == AF_INET6) ::inet_ntop(p.family, p.addr, buf, sizeof buf);
  return buf;
}

}  // namespace esockets::test

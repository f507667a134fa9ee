// Helpers for the delivery-contract tests (DESIGN.md invariant 8, "Ok means delivered"):
// numbered records and their framing, per-stream sequence checks (loss, duplication, order),
// a fleet of non-blocking clients served by one epoll thread, a child process with a deadline
// (for scenarios whose failure mode is a hang or the end of the process), and /proc readings.
// Header-only; every wait is bounded.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <ostream>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "test_support.hpp"

// Readable gtest output for the engine's enums.
namespace esockets {
inline void PrintTo(SendStatus s, std::ostream* os) { *os << to_string(s); }
inline void PrintTo(CloseReason r, std::ostream* os) { *os << to_string(r); }
namespace test {
inline void PrintTo(EofResult r, std::ostream* os) { *os << to_string(r); }
}  // namespace test
}  // namespace esockets

namespace esockets::test::delivery {

using namespace std::chrono_literals;

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ------------------------------------------------------------------ /proc/self/status

/// A "Vm...:" field of /proc/self/status in KiB (VmRSS, VmHWM, VmSize, VmPeak); -1 if absent.
inline long proc_status_kb(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::size_t n = std::strlen(field);
  while (std::getline(f, line)) {
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') {
      return std::atol(line.c_str() + n + 1);
    }
  }
  return -1;
}

// ------------------------------------------------------------------ raw client sockets

/// Blocking connect to 127.0.0.1:port; SO_RCVBUF is set before connect() when rcvbuf > 0 (so
/// the window is small from the handshake on). Returns the fd or -1.
inline int connect_loopback(std::uint16_t port, int rcvbuf = 0) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

inline std::uint16_t local_port_of(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

inline void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

/// Blocking-style write of everything with a deadline (works on non-blocking fds too).
inline bool write_all_fd(int fd, std::string_view data, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = Clock::now() + timeout;
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
      continue;
    }
    return false;
  }
  return true;
}

// ------------------------------------------------------------------ records and framing

/// How bytes travel to the clients: raw 8-byte records, lines, or 4-byte length prefixes.
enum class Wire { raw8, line, lp4 };

inline const char* wire_name(Wire w) {
  switch (w) {
    case Wire::raw8: return "raw";
    case Wire::line: return "line";
    case Wire::lp4: return "lp4";
  }
  return "?";
}

inline Framing framing_of(Wire w) {
  switch (w) {
    case Wire::raw8: return Framing::raw;
    case Wire::line: return Framing::line;
    case Wire::lp4: return Framing::length_prefixed;
  }
  return Framing::raw;
}

/// The payload of a numbered record of stream `type` (raw8: the 8 bytes of seq, type implied).
inline std::string record_payload(Wire w, char type, std::uint64_t seq) {
  if (w == Wire::line) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%c%016llx", type, static_cast<unsigned long long>(seq));
    return buf;
  }
  std::string p;
  if (w == Wire::lp4) p.push_back(type);
  for (int i = 0; i < 8; ++i) p.push_back(static_cast<char>((seq >> (8 * i)) & 0xff));
  return p;
}

/// Parses a record payload; false if it is not one (e.g. filler).
inline bool parse_record(Wire w, std::string_view p, char& type, std::uint64_t& seq) {
  if (w == Wire::raw8) {
    if (p.size() != 8) return false;
    type = 'R';
    seq = 0;
    for (int i = 7; i >= 0; --i) seq = (seq << 8) | static_cast<unsigned char>(p[static_cast<std::size_t>(i)]);
    return true;
  }
  if (p.empty()) return false;
  type = p[0];
  if (w == Wire::line) {
    if (p.size() != 17) return false;
    seq = std::strtoull(std::string(p.substr(1)).c_str(), nullptr, 16);
    return true;
  }
  if (p.size() != 9) return false;
  seq = 0;
  for (int i = 8; i >= 1; --i) seq = (seq << 8) | static_cast<unsigned char>(p[static_cast<std::size_t>(i)]);
  return true;
}

/// The bytes a client sends for one message (line: payload + '\n'; lp4: BE header + payload).
inline std::string wire_frame(Wire w, std::string_view payload) {
  std::string out;
  if (w == Wire::lp4) {
    const auto n = static_cast<std::uint32_t>(payload.size());
    out.push_back(static_cast<char>(n >> 24));
    out.push_back(static_cast<char>(n >> 16));
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(n));
  }
  out.append(payload);
  if (w == Wire::line) out.push_back('\n');
  return out;
}

/// Cuts a byte stream into payloads with the given wire format.
class FrameParser {
 public:
  explicit FrameParser(Wire w = Wire::raw8) : w_(w) {}
  template <class F>
  void feed(const char* p, std::size_t n, F&& on_frame) {
    buf_.append(p, n);
    std::size_t off = 0;
    for (;;) {
      const std::size_t left = buf_.size() - off;
      if (w_ == Wire::raw8) {
        if (left < 8) break;
        on_frame(std::string_view(buf_.data() + off, 8));
        off += 8;
      } else if (w_ == Wire::line) {
        const std::size_t nl = buf_.find('\n', off);
        if (nl == std::string::npos) break;
        on_frame(std::string_view(buf_.data() + off, nl - off));
        off = nl + 1;
      } else {
        if (left < 4) break;
        const auto* u = reinterpret_cast<const unsigned char*>(buf_.data() + off);
        const std::size_t len = (std::size_t{u[0]} << 24) | (std::size_t{u[1]} << 16) |
                                (std::size_t{u[2]} << 8) | u[3];
        if (left < 4 + len) break;
        on_frame(std::string_view(buf_.data() + off + 4, len));
        off += 4 + len;
      }
    }
    buf_.erase(0, off);
  }
  std::size_t buffered() const { return buf_.size(); }

 private:
  Wire w_;
  std::string buf_;
};

/// One numbered stream as a receiver sees it: every number once, in order, none missing.
struct SeqTrack {
  std::uint64_t next = 0;      // the number expected next
  std::uint64_t received = 0;  // records seen
  std::uint64_t gaps = 0;      // numbers skipped (lost, or reordered past)
  std::uint64_t backwards = 0; // numbers at or below one already seen (duplicate or reorder)
  std::string first_error;

  void on(std::uint64_t s) {
    ++received;
    if (s == next) {
      ++next;
      return;
    }
    char buf[160];
    if (s > next) {
      gaps += s - next;
      std::snprintf(buf, sizeof buf, "expected #%llu, got #%llu (%llu missing or reordered)",
                    static_cast<unsigned long long>(next), static_cast<unsigned long long>(s),
                    static_cast<unsigned long long>(s - next));
      next = s + 1;
    } else {
      ++backwards;
      std::snprintf(buf, sizeof buf, "expected #%llu, got #%llu again/late (duplicate or reorder)",
                    static_cast<unsigned long long>(next), static_cast<unsigned long long>(s));
    }
    if (first_error.empty()) first_error = buf;
  }
  bool clean() const { return gaps == 0 && backwards == 0; }
};

/// A bounded list of error messages shared by threads.
class ErrorLog {
 public:
  void add(std::string s) {
    count_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lk(mu_);
    if (list_.size() < 20) list_.push_back(std::move(s));
  }
  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  std::string summary() const {
    std::lock_guard lk(mu_);
    std::string s = std::to_string(count()) + " error(s)";
    for (const auto& e : list_) s += "\n    " + e;
    return s;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> list_;
  std::atomic<std::uint64_t> count_{0};
};

// ------------------------------------------------------------------ a fleet of clients

/// N non-blocking clients served by one thread (epoll): it reads and parses everything that
/// arrives (per client, per stream type: a SeqTrack), optionally generates outgoing messages,
/// and notes any client whose connection ends (a server-side close nobody asked for).
class ClientFleet {
 public:
  /// gen(i, k): the k-th message client i sends (already framed), called from the IO thread.
  using Gen = std::function<std::string(std::size_t client, std::uint64_t k)>;

  ClientFleet(std::uint16_t port, std::size_t n, Wire wire, int rcvbuf = 0) : wire_(wire) {
    clients_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      int fd = connect_loopback(port, rcvbuf);
      if (fd < 0) throw std::runtime_error("ClientFleet: connect failed: " + std::string(std::strerror(errno)));
      set_nonblocking(fd);
      clients_[i].fd = fd;
      clients_[i].port = local_port_of(fd);
      clients_[i].parser = FrameParser(wire);
    }
  }
  ~ClientFleet() {
    stop();
    for (auto& c : clients_) {
      if (c.fd >= 0) ::close(c.fd);
    }
  }

  std::size_t size() const { return clients_.size(); }
  std::uint16_t port_of(std::size_t i) const { return clients_[i].port; }

  /// Starts the IO thread. With a generator, each client gets one new message every `every`
  /// while sending() is on.
  void start(Gen gen = nullptr, std::chrono::microseconds every = 10ms) {
    gen_ = std::move(gen);
    every_ = every;
    running_.store(true);
    thread_ = std::thread([this] { run(); });
  }
  void set_sending(bool on) { sending_.store(on); }
  void stop() {
    running_.store(false);
    if (thread_.joinable()) thread_.join();
  }

  /// Runs fn under the fleet's lock (the IO thread holds it while it processes a batch).
  template <class F>
  auto with_lock(F&& fn) {
    std::lock_guard lk(mu_);
    return fn();
  }
  /// Under with_lock: the tracker of client i's stream `type`.
  SeqTrack& track(std::size_t i, char type) { return clients_[i].tracks[static_cast<unsigned char>(type)]; }
  std::uint64_t generated(std::size_t i) const { return clients_[i].generated; }
  std::uint64_t unsent_bytes(std::size_t i) const { return clients_[i].out.size() - clients_[i].out_off; }
  bool ended(std::size_t i) const { return clients_[i].ended; }
  const std::string& end_note(std::size_t i) const { return clients_[i].end_note; }
  std::uint64_t other_frames(std::size_t i) const { return clients_[i].other; }

 private:
  struct C {
    int fd = -1;
    std::uint16_t port = 0;
    FrameParser parser;
    std::array<SeqTrack, 128> tracks{};
    std::uint64_t other = 0;  // frames that are not numbered records (filler)
    std::string out;
    std::size_t out_off = 0;
    std::uint64_t generated = 0;
    bool want_out = false;
    bool ended = false;
    std::string end_note;
  };

  void arm(std::size_t i, bool out) {
    C& c = clients_[i];
    if (c.ended || c.want_out == out) return;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0u);
    ev.data.u64 = i;
    ::epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    c.want_out = out;
  }

  void flush_out(std::size_t i) {
    C& c = clients_[i];
    while (c.out_off < c.out.size()) {
      ssize_t n = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c.out_off += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      break;  // EAGAIN (server not reading: paused or behind) or an error seen on read
    }
    if (c.out_off == c.out.size()) {
      c.out.clear();
      c.out_off = 0;
    } else if (c.out_off > (1u << 16)) {
      c.out.erase(0, c.out_off);
      c.out_off = 0;
    }
    arm(i, c.out_off < c.out.size());
  }

  void read_some(std::size_t i) {
    C& c = clients_[i];
    char buf[65536];
    for (int k = 0; k < 16; ++k) {
      ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        c.parser.feed(buf, static_cast<std::size_t>(n), [&](std::string_view f) {
          char type;
          std::uint64_t seq;
          if (parse_record(wire_, f, type, seq)) {
            c.tracks[static_cast<unsigned char>(type)].on(seq);
          } else {
            ++c.other;
          }
        });
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        c.ended = true;
        c.end_note = n == 0 ? "EOF from the server" : std::string("error: ") + std::strerror(errno);
        ::epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
      }
      return;
    }
  }

  void run() {
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    for (std::size_t i = 0; i < clients_.size(); ++i) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.u64 = i;
      ::epoll_ctl(ep_, EPOLL_CTL_ADD, clients_[i].fd, &ev);
    }
    std::vector<epoll_event> evs(512);
    auto next_gen = Clock::now();
    while (running_.load()) {
      const int k = ::epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), 2);
      std::lock_guard lk(mu_);
      for (int j = 0; j < k; ++j) {
        const std::size_t i = evs[static_cast<std::size_t>(j)].data.u64;
        const std::uint32_t e = evs[static_cast<std::size_t>(j)].events;
        if (clients_[i].ended) continue;
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) read_some(i);
        if (!clients_[i].ended && (e & EPOLLOUT)) flush_out(i);
      }
      if (gen_ && sending_.load() && Clock::now() >= next_gen) {
        next_gen = Clock::now() + every_;
        for (std::size_t i = 0; i < clients_.size(); ++i) {
          C& c = clients_[i];
          if (c.ended) continue;
          // Bounded: a client whose server-side reading is paused keeps at most 256 KiB here.
          if (c.out.size() - c.out_off > (256u << 10)) continue;
          c.out += gen_(i, c.generated++);
          flush_out(i);
        }
      }
    }
    ::close(ep_);
    ep_ = -1;
  }

  Wire wire_;
  std::vector<C> clients_;
  std::mutex mu_;
  Gen gen_;
  std::chrono::microseconds every_{10000};
  std::atomic<bool> running_{false};
  std::atomic<bool> sending_{false};
  std::thread thread_;
  int ep_ = -1;
};

// ------------------------------------------------------------------ child process + deadline

/// What a child body reports to its parent, through a pipe, one line per note.
class ChildReport {
 public:
  explicit ChildReport(int fd) : fd_(fd) {}
  /// Where the child is now (the parent names the last stage if the child hangs or dies).
  void stage(const std::string& s) { put('S', s); }
  /// A failed expectation; the child exits 1 at the end.
  void fail(const std::string& s) {
    failed_ = true;
    put('F', s);
  }
  void note(const std::string& s) { put('N', s); }
  /// The body returned (written by run_in_child).
  void done() { put('D', "done"); }
  bool failed() const { return failed_; }

 private:
  void put(char kind, std::string s) {
    for (char& ch : s) {
      if (ch == '\n') ch = '|';
    }
    std::string line(1, kind);
    line += ' ';
    line += s;
    line += '\n';
    std::string_view v = line;
    while (!v.empty()) {
      ssize_t n = ::write(fd_, v.data(), v.size());
      if (n > 0) {
        v.remove_prefix(static_cast<std::size_t>(n));
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        return;
      }
    }
  }
  int fd_;
  bool failed_ = false;
};

struct ChildOutcome {
  bool timed_out = false;
  bool exited = false;
  bool completed = false;  // the child ran the body to its end
  int exit_code = -1;
  int signal = 0;
  double elapsed_ms = 0;
  std::string last_stage;
  std::vector<std::string> failures;
  std::vector<std::string> notes;

  bool ok() const { return !timed_out && exited && exit_code == 0 && completed && failures.empty(); }
  std::string describe() const {
    std::ostringstream o;
    if (timed_out) {
      o << "the child did not finish within its deadline (" << elapsed_ms
        << " ms): HANG; last stage: '" << last_stage << "'";
    } else if (signal != 0) {
      o << "the child process ENDED by signal " << signal << " (" << ::strsignal(signal)
        << ") after " << elapsed_ms << " ms; last stage: '" << last_stage << "'";
    } else if (exited && exit_code == 0 && !completed) {
      o << "the child exited without running the scenario (re-execution did not reach it)";
    } else if (exited && exit_code != 0 && failures.empty()) {
      o << "the child exited with status " << exit_code
        << " without reporting a failure (sanitizer report or std::terminate? see stderr); "
           "last stage: '"
        << last_stage << "'";
    } else {
      o << "child finished in " << elapsed_ms << " ms, status " << exit_code;
    }
    for (const auto& f : failures) o << "\n  FAIL: " << f;
    for (const auto& n : notes) o << "\n  note: " << n;
    return o.str();
  }
};

namespace detail {
/// In a re-executed child: the report fd and which run_in_child call of the test to run.
inline int child_report_fd() {
  const char* e = std::getenv("DELIVERY_CHILD_REPORT_FD");
  return e != nullptr ? std::atoi(e) : -1;
}
inline int child_call_index() {
  const char* e = std::getenv("DELIVERY_CHILD_CALL");
  return e != nullptr ? std::atoi(e) : 0;
}
/// Counts run_in_child calls within the current test (reset when the test changes).
inline int next_call_in_this_test() {
  static const ::testing::TestInfo* test = nullptr;
  static int n = 0;
  const ::testing::TestInfo* now = ::testing::UnitTest::GetInstance()->current_test_info();
  if (now != test) {
    test = now;
    n = 0;
  }
  return n++;
}
}  // namespace detail

/// Runs body in a child process and waits at most `deadline` for it. The child is this test
/// binary re-executed with --gtest_filter=<the current test> (a fresh process: no threads of the
/// parent, so it works under TSan too); the test runs up to the same run_in_child call, which
/// then runs body and exits. The engine's threads live and die with the child: a hang becomes a
/// timed_out outcome, std::terminate or a sanitizer abort a signal / exit status, instead of
/// taking the test binary down. The child's stdout is discarded; its stderr (sanitizer
/// reports, "terminate called ...") goes to the test's stderr.
inline ChildOutcome run_in_child(std::chrono::milliseconds deadline,
                                 const std::function<void(ChildReport&)>& body) {
  const int call = detail::next_call_in_this_test();
  const int report_fd = detail::child_report_fd();
  if (report_fd >= 0) {
    // We are the child. Earlier calls of this test were run by earlier children.
    if (call != detail::child_call_index()) {
      ChildOutcome skipped;  // run by another child
      skipped.exited = true;
      skipped.exit_code = 0;
      skipped.completed = true;
      return skipped;
    }
    ChildReport r(report_fd);
    try {
      body(r);
    } catch (const std::exception& e) {
      r.fail(std::string("exception: ") + e.what());
    } catch (...) {
      r.fail("unknown exception");
    }
    r.done();
    std::fflush(stderr);
    ::_exit(r.failed() ? 1 : 0);
  }

  ChildOutcome out;
  const ::testing::TestInfo* ti = ::testing::UnitTest::GetInstance()->current_test_info();
  if (ti == nullptr) {
    out.failures.push_back("run_in_child called outside a test");
    return out;
  }
  const std::string filter = std::string("--gtest_filter=") + ti->test_suite_name() + "." + ti->name();
  char exe[4096];
  const ssize_t len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) {
    out.failures.push_back("readlink(/proc/self/exe) failed");
    return out;
  }
  exe[len] = '\0';
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    out.failures.push_back("pipe2 failed");
    return out;
  }
  // Everything the child needs is prepared here: between fork and exec it only calls dup2 and
  // execve (async-signal-safe; the parent has other threads).
  const int report_w = ::fcntl(p[1], F_DUPFD, 3);  // without O_CLOEXEC: survives the exec
  const int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  std::vector<std::string> env_store;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "DELIVERY_CHILD_", 15) != 0) env_store.emplace_back(*e);
  }
  env_store.push_back("DELIVERY_CHILD_REPORT_FD=" + std::to_string(report_w));
  env_store.push_back("DELIVERY_CHILD_CALL=" + std::to_string(call));
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string filter_arg = filter;
  char* argv[] = {exe, filter_arg.data(), nullptr};
  std::fflush(stdout);
  std::fflush(stderr);
  const auto t0 = Clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(report_w);
    if (devnull >= 0) ::close(devnull);
    out.failures.push_back("fork failed");
    return out;
  }
  if (pid == 0) {
    if (devnull >= 0) ::dup2(devnull, 1);  // the child's gtest chatter is not wanted
    ::execve(exe, argv, envp.data());
    ::_exit(127);
  }
  ::close(report_w);
  if (devnull >= 0) ::close(devnull);
  ::close(p[1]);
  std::string acc;
  bool pipe_open = true;
  int status = 0;
  bool reaped = false;
  while (true) {
    const auto left = deadline - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    if (left.count() <= 0) break;
    if (pipe_open) {
      pollfd pf{p[0], POLLIN, 0};
      const int r = ::poll(&pf, 1, static_cast<int>(std::min<long long>(left.count(), 50)));
      if (r > 0) {
        char buf[4096];
        ssize_t n = ::read(p[0], buf, sizeof buf);
        if (n > 0) {
          acc.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0) {
          pipe_open = false;
        }
      }
    } else {
      std::this_thread::sleep_for(5ms);
    }
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      reaped = true;
      char buf[4096];
      ssize_t n;
      while (pipe_open && (n = ::read(p[0], buf, sizeof buf)) > 0) acc.append(buf, static_cast<std::size_t>(n));
      break;
    }
  }
  if (!reaped) {
    out.timed_out = true;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    pollfd pf{p[0], POLLIN, 0};
    char buf[4096];
    while (::poll(&pf, 1, 0) > 0) {
      ssize_t n = ::read(p[0], buf, sizeof buf);
      if (n <= 0) break;
      acc.append(buf, static_cast<std::size_t>(n));
    }
  } else if (WIFEXITED(status)) {
    out.exited = true;
    out.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    out.signal = WTERMSIG(status);
  }
  ::close(p[0]);
  out.elapsed_ms = ms_since(t0);
  std::istringstream in(acc);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() < 2) continue;
    const std::string text = line.substr(2);
    if (line[0] == 'S') out.last_stage = text;
    if (line[0] == 'F') out.failures.push_back(text);
    if (line[0] == 'N') out.notes.push_back(text);
    if (line[0] == 'D') out.completed = true;
  }
  if (out.exited && out.exit_code == 127 && out.last_stage.empty() && out.failures.empty()) {
    out.failures.push_back("could not re-execute the test binary");
  }
  return out;
}

/// True in the re-executed child of run_in_child (the test body before the run_in_child call
/// runs there too: keep it free of side effects that matter, such as starting servers).
inline bool in_child() { return detail::child_report_fd() >= 0; }

}  // namespace esockets::test::delivery

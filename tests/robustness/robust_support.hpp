// Helpers for the robustness suite: raw client sockets, a child-process echo server,
// /proc measurements, a per-test watchdog, latency statistics.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#ifndef ESOCKETS_TEST_SCALE
#define ESOCKETS_TEST_SCALE 1
#endif

namespace robust {

using Clock = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

inline constexpr int kScale = ESOCKETS_TEST_SCALE;
/// n divided by the sanitizer scale, at least lo.
inline int scaled(int n, int lo = 1) { return n / kScale > lo ? n / kScale : lo; }
inline double since_ms(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ------------------------------------------------------------------ sockets

/// Source address for the i-th client: 127.0.0.2 ... 127.0.0.(1+spread).
std::string source_addr(int i, int spread = 8);
/// Blocking connect to 127.0.0.1:port (optionally from src); returns fd or -1 (errno set).
int connect_blocking(std::uint16_t port, const char* src = nullptr);
/// Non-blocking socket whose connect is in progress (or done); -1 on failure.
int connect_nonblocking(std::uint16_t port, const char* src = nullptr);
/// Opens n connections (non-blocking, bounded concurrency), waits until each is established.
/// Returns the fds (non-blocking). Fails the test (ADD_FAILURE) if any cannot be established.
std::vector<int> open_many(std::uint16_t port, int n, ms deadline = ms(30000), int spread = 8);
void set_blocking(int fd, bool blocking);
void set_linger_rst(int fd);  // SO_LINGER {1,0}: close() sends RST
void set_rcvbuf(int fd, int bytes);
void set_nodelay(int fd);
/// Writes all bytes (blocking fd). False on error.
bool write_all(int fd, const void* p, std::size_t n);
/// Reads exactly n bytes with a deadline (any fd; uses poll). False on EOF/error/timeout.
bool read_exact(int fd, void* p, std::size_t n, ms timeout);
/// How a read-until-end finished.
enum class End { eof, reset, timeout, error };
const char* to_string(End e);
/// Reads and discards (or appends to out) until EOF/error/timeout.
End read_to_end(int fd, ms timeout, std::string* out = nullptr);
/// Sends "x" and expects "x" back within timeout (raw echo).
bool echo_ok(int fd, ms timeout, const std::string& msg = "x");

// ------------------------------------------------------------------ /proc

long clock_ticks_per_sec();
/// utime+stime of a process in clock ticks; -1 if it is gone.
long long cpu_ticks(pid_t pid);
/// VmRSS / VmHWM in KiB.
long rss_kb(pid_t pid);
long hwm_kb(pid_t pid);
int fd_count(pid_t pid);

// ------------------------------------------------------------------ child echo server

struct ChildOptions {
  std::vector<std::string> args;  // esockets-echo flags (besides --port 0)
  long nofile = 0;                // RLIMIT_NOFILE for the child; 0 = inherit
};

/// esockets-echo in a child process (fork + exec). Its stdout is collected by a thread.
class ChildServer {
 public:
  explicit ChildServer(const ChildOptions& o);
  ~ChildServer();
  bool ok() const { return port_ != 0; }
  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  /// SIGTERM, wait for exit (bounded); returns the exit status (or -1). Collects the final
  /// stats table.
  int stop(ms timeout = ms(20000));
  /// All stdout lines so far.
  std::vector<std::string> lines() const;
  /// From the last "closes:" line: name -> value (reasons and accept_errors).
  std::map<std::string, std::uint64_t> last_closes() const;
  /// From the last "total" row: conns accepts refused bytes_in bytes_out msgs_in msgs_out
  /// queue paused warnings.
  std::map<std::string, std::uint64_t> last_total() const;

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread reader_;
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
  bool exited_ = false;
  int status_ = -1;
};

// ------------------------------------------------------------------ statistics

struct Dist {
  std::vector<double> v;
  void add(double x) { v.push_back(x); }
  double pct(double p);  // p in [0,100]
  double max();
  double min();
  std::string summary(const char* unit = "ms");
};

/// Process CPU (utime+stime, seconds) of this process.
double self_cpu_seconds();

/// Polls pred every 5 ms until true or timeout.
bool wait_until(const std::function<bool()>& pred, ms timeout);

}  // namespace robust

// fanout_clients: the client side of fanout_bench, in the benchmark's own process: member
// connections read by one epoll thread that checks every record, a publisher connection, and a
// futex-backed delivery counter a publisher waits on (its window).
// Thread: Members::start_reader runs the reader on its own thread; Progress is safe from any
// thread; everything else belongs to the thread that made it.
#pragma once

#include <arpa/inet.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace fanout {

using Clock = std::chrono::steady_clock;

/// Throws std::runtime_error with errno's text: client setup failures end the benchmark.
[[noreturn]] inline void fail_errno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

/// A blocking TCP connection to 127.0.0.1:port. rcvbuf > 0 sets SO_RCVBUF before connecting
/// (so the advertised window is small from the start).
inline int connect_loopback(std::uint16_t port, int rcvbuf) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail_errno("socket");
  if (rcvbuf > 0 && ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0) {
    fail_errno("setsockopt(SO_RCVBUF)");
  }
  const int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{5, 0};  // every blocking call on a client socket is bounded
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    fail_errno("connect 127.0.0.1:" + std::to_string(port));
  }
  return fd;
}

/// Writes all n bytes on a blocking socket (bounded by its SO_SNDTIMEO).
inline void write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail_errno("send on a client socket");
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

/// A length-prefixed frame (4-byte big-endian header), as the benchmark's server reads them.
/// CPU time of the calling thread, or of the whole process, in seconds.
inline double thread_cpu() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}
inline double process_cpu() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

inline std::string frame(std::string_view payload) {
  std::string f(4 + payload.size(), '\0');
  const std::uint32_t n = htonl(static_cast<std::uint32_t>(payload.size()));
  std::memcpy(f.data(), &n, 4);
  std::memcpy(f.data() + 4, payload.data(), payload.size());
  return f;
}

/// Deliveries counted by the reader; a publisher sleeps on it (futex, with a timeout) while its
/// window is full. The reader pays a wake-up only when someone is waiting.
class Progress {
 public:
  std::uint64_t delivered() const { return delivered_.load(std::memory_order_acquire); }

  /// Reader thread: n more records arrived.
  void add(std::uint64_t n) {
    delivered_.fetch_add(n, std::memory_order_seq_cst);
    seq_.fetch_add(1, std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst) != 0) {
      ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&seq_), FUTEX_WAKE_PRIVATE, 1,
                nullptr, nullptr, 0);
    }
  }

  /// Blocks until delivered() >= target (true) or the deadline passes (false).
  bool wait_until(std::uint64_t target, Clock::time_point deadline) {
    for (;;) {
      const std::uint32_t s = seq_.load(std::memory_order_seq_cst);
      if (delivered() >= target) return true;
      if (Clock::now() >= deadline) return false;
      waiters_.fetch_add(1, std::memory_order_seq_cst);
      if (delivered_.load(std::memory_order_seq_cst) < target) {
        timespec ts{0, 20'000'000};  // re-check the deadline at least every 20 ms
        ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&seq_), FUTEX_WAIT_PRIVATE, s,
                  &ts, nullptr, 0);
      }
      waiters_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

 private:
  std::atomic<std::uint64_t> delivered_{0};
  std::atomic<std::uint32_t> seq_{0};
  std::atomic<std::uint32_t> waiters_{0};
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
};

/// The room's members on the client side. Every delivery is a record of `record` bytes whose
/// first 8 bytes are its sequence number; each member must see 0, 1, 2, ... with no gap,
/// repeat or extra byte. One thread reads them all (level-triggered epoll, one recv per ready
/// socket per pass).
class Members {
 public:
  /// Connects n members to 127.0.0.1:port and sends each the hello frame "M".
  Members(std::uint16_t port, std::size_t n, int rcvbuf) : state_(n) {
    fds_.reserve(n);
    const std::string hello = frame("M");
    for (std::size_t i = 0; i < n; ++i) {
      fds_.push_back(connect_loopback(port, rcvbuf));
      write_all(fds_.back(), hello.data(), hello.size());
    }
  }
  ~Members() {
    stop_reader();
    for (int fd : fds_) ::close(fd);
    if (ep_ >= 0) ::close(ep_);
  }
  Members(const Members&) = delete;
  Members& operator=(const Members&) = delete;

  std::size_t size() const { return fds_.size(); }
  Progress& progress() { return progress_; }

  /// Starts the reader thread; records are `record` bytes long.
  void start_reader(std::size_t record) {
    record_ = record;
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) fail_errno("epoll_create1");
    for (std::size_t i = 0; i < fds_.size(); ++i) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = static_cast<std::uint32_t>(i);
      if (::epoll_ctl(ep_, EPOLL_CTL_ADD, fds_[i], &ev) != 0) fail_errno("epoll_ctl");
    }
    reader_ = std::thread([this] { read_loop(); });
  }
  /// CPU time the reader thread has used so far, in seconds (0 before start_reader).
  double reader_cpu() {
    clockid_t id;
    timespec ts{};
    if (!reader_.joinable() || ::pthread_getcpuclockid(reader_.native_handle(), &id) != 0 ||
        ::clock_gettime(id, &ts) != 0) {
      return 0;
    }
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
  }
  void stop_reader() {
    stop_.store(true, std::memory_order_release);
    if (reader_.joinable()) reader_.join();
  }

  /// The record size of the next run (call only while nothing is in flight).
  void set_record(std::size_t record) { record_.store(record, std::memory_order_release); }

  /// After a run has been fully delivered: every member has seen exactly `total` records and
  /// sits on a record boundary. Returns how many members did not (0 = nothing lost).
  std::size_t count_short(std::uint64_t total) const {
    std::size_t bad = 0;
    for (const MemberState& m : state_) {
      if (m.next.load(std::memory_order_acquire) != total || m.off != 0) ++bad;
    }
    return bad;
  }

  /// The first error the reader saw (a bad sequence number, EOF, a socket error); empty if none.
  std::string error() const {
    std::lock_guard lk(err_mu_);
    return error_;
  }

 private:
  struct MemberState {
    std::atomic<std::uint64_t> next{0};  // sequence number expected next
    std::uint32_t off = 0;               // bytes of the current record seen so far
    unsigned char head[8] = {};          // its first 8 bytes
  };

  void set_error(std::string e) {
    std::lock_guard lk(err_mu_);
    if (error_.empty()) error_ = std::move(e);
  }

  // Consumes n bytes of member i's stream; returns how many records they completed.
  std::uint64_t consume(std::size_t i, const char* p, std::size_t n) {
    MemberState& m = state_[i];
    const std::size_t rec = record_.load(std::memory_order_relaxed);
    std::uint64_t done = 0;
    std::uint64_t next = m.next.load(std::memory_order_relaxed);
    while (n > 0) {
      if (m.off < 8) {
        const std::size_t k = std::min<std::size_t>(8 - m.off, n);
        std::memcpy(m.head + m.off, p, k);
      }
      const std::size_t take = std::min<std::size_t>(rec - m.off, n);
      m.off += static_cast<std::uint32_t>(take);
      p += take;
      n -= take;
      if (m.off == rec) {
        std::uint64_t seq = 0;
        std::memcpy(&seq, m.head, 8);
        if (seq != next) {
          set_error("member " + std::to_string(i) + " got message " + std::to_string(seq) +
                    " where " + std::to_string(next) + " was due");
        }
        next = seq + 1;
        m.off = 0;
        ++done;
      }
    }
    m.next.store(next, std::memory_order_release);
    return done;
  }

  void read_loop() {
    std::vector<char> buf(64 * 1024);
    epoll_event evs[256];
    const auto give_up = Clock::now() + std::chrono::hours(1);  // a bound, never reached
    while (!stop_.load(std::memory_order_acquire) && Clock::now() < give_up) {
      const int k = ::epoll_wait(ep_, evs, 256, 10);
      std::uint64_t got = 0;
      for (int e = 0; e < k; ++e) {
        const std::size_t i = evs[e].data.u32;
        const ssize_t r = ::recv(fds_[i], buf.data(), buf.size(), MSG_DONTWAIT);
        if (r > 0) {
          got += consume(i, buf.data(), static_cast<std::size_t>(r));
        } else if (r == 0) {
          set_error("member " + std::to_string(i) + " was closed by the server");
          ::epoll_ctl(ep_, EPOLL_CTL_DEL, fds_[i], nullptr);
        } else if (errno != EAGAIN && errno != EINTR) {
          set_error("member " + std::to_string(i) + ": recv: " + std::strerror(errno));
          ::epoll_ctl(ep_, EPOLL_CTL_DEL, fds_[i], nullptr);
        }
      }
      if (got != 0) progress_.add(got);
    }
  }

  std::vector<int> fds_;
  std::vector<MemberState> state_;
  std::atomic<std::size_t> record_{0};
  int ep_ = -1;
  std::thread reader_;
  std::atomic<bool> stop_{false};
  Progress progress_;
  mutable std::mutex err_mu_;
  std::string error_;
};

}  // namespace fanout

// send_zc_bench: does io_uring's zero-copy send (IORING_OP_SEND_ZC) beat a copying send for the
// sizes the engine writes? Issue 14 asks for SEND_ZC "where it measures faster"; this is the
// measurement. One loopback TCP connection, a reader thread draining the far end, and the
// benchmark thread writing size-byte messages through the engine's Ring (engine/io/uring.hpp),
// one send in flight at a time as a shard does:
//
//   BM_Send/<size>      IORING_OP_SEND from one of kBuffers buffers
//   BM_SendZc/<size>    IORING_OP_SEND_ZC; a buffer is reused only after its notification
//                       (IORING_CQE_F_NOTIF): the kernel no longer references its pages
//   BM_SendSyscall/<size>  a blocking ::send, the epoll backend's write path without the poll
//
// Reports bytes/s; BM_SendZc also `copied_pct`: the share of zero-copy sends the kernel reports
// it copied after all (IORING_SEND_ZC_REPORT_USAGE). Compare SendZc with Send of the same size in
// the same run. Skipped where this kernel cannot run the engine's rings (Ring::unsupported_reason).
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "io/uring.hpp"

namespace {

using esockets::detail::Ring;

constexpr int kBuffers = 8;

// A connected loopback pair: `out` is ours to write, a thread drains `in` until it closes.
class Loopback {
 public:
  Loopback() {
    const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (l < 0 || ::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 1) != 0 ||
        ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw std::runtime_error(std::string("loopback listener: ") + std::strerror(errno));
    }
    out_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (out_ < 0 || ::connect(out_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      throw std::runtime_error(std::string("loopback connect: ") + std::strerror(errno));
    }
    in_ = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    ::close(l);
    if (in_ < 0) throw std::runtime_error(std::string("loopback accept: ") + std::strerror(errno));
    const int one = 1;
    ::setsockopt(out_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    reader_ = std::thread([this] {
      std::vector<char> buf(1 << 18);
      while (::recv(in_, buf.data(), buf.size(), 0) > 0) {
      }
    });
  }
  ~Loopback() {
    ::shutdown(out_, SHUT_WR);
    reader_.join();
    ::close(out_);
    ::close(in_);
  }
  Loopback(const Loopback&) = delete;
  Loopback& operator=(const Loopback&) = delete;
  int fd() const { return out_; }

 private:
  int out_ = -1;
  int in_ = -1;
  std::thread reader_;
};

// What a shard does with a ring: one send in flight; with zero copy, buffers come back with
// their notifications.
class Sender {
 public:
  Sender(int fd, std::size_t size, bool zc) : fd_(fd), zc_(zc), ring_(64, 256) {
    ring_.enable();
    for (auto& b : bufs_) b.assign(size, 'x');
    free_.fill(true);
  }

  // Writes one message of the buffer size (all of it, resending a short tail); false on error.
  bool send_one() {
    const int b = take_buffer();
    if (b < 0) return false;
    const std::size_t size = bufs_[static_cast<std::size_t>(b)].size();
    std::size_t done = 0;
    while (done < size) {
      io_uring_sqe* s = ring_.sqe();
      s->opcode = zc_ ? IORING_OP_SEND_ZC : IORING_OP_SEND;
      s->fd = fd_;
      s->addr = reinterpret_cast<std::uintptr_t>(bufs_[static_cast<std::size_t>(b)].data() + done);
      s->len = static_cast<std::uint32_t>(size - done);
      s->msg_flags = MSG_NOSIGNAL;
      if (zc_) s->ioprio = IORING_SEND_ZC_REPORT_USAGE;
      s->user_data = static_cast<std::uint64_t>(b);
      if (zc_) free_[static_cast<std::size_t>(b)] = false;  // until its notification
      ++in_flight_;
      const int res = wait_result();
      if (res <= 0) return false;
      done += static_cast<std::size_t>(res);
    }
    return true;
  }

  // Waits for every outstanding notification.
  void drain() {
    for (int idle = 0; (in_flight_ > 0 || zc_pending()) && idle < 5;) {
      const int r = ring_.enter(true, 1000);
      if (r == -ETIME) ++idle;
      if (r < 0 && r != -EINTR && r != -ETIME) break;
      reap();
    }
  }

  std::uint64_t notifications() const { return notifs_; }
  std::uint64_t copied() const { return copied_; }

 private:
  bool zc_pending() const {
    for (bool f : free_) {
      if (!f) return true;
    }
    return false;
  }

  int take_buffer() {
    for (;;) {
      for (int i = 0; i < kBuffers; ++i) {
        const int b = (next_ + i) % kBuffers;
        if (free_[static_cast<std::size_t>(b)]) {
          next_ = (b + 1) % kBuffers;
          return b;
        }
      }
      const int r = ring_.enter(true, 1000);
      if (r < 0 && r != -EINTR && r != -ETIME) return -1;
      reap();
    }
  }

  int wait_result() {
    result_ = INT32_MIN;
    while (result_ == INT32_MIN) {
      const int r = ring_.enter(true, 1000);
      if (r < 0 && r != -EINTR && r != -ETIME) return r;
      reap();
    }
    return result_;
  }

  void reap() {
    ring_.reap([this](const io_uring_cqe& cqe) {
      const auto b = static_cast<std::size_t>(cqe.user_data);
      if ((cqe.flags & IORING_CQE_F_NOTIF) != 0) {
        free_[b] = true;
        ++notifs_;
        if ((static_cast<std::uint32_t>(cqe.res) & IORING_NOTIF_USAGE_ZC_COPIED) != 0) ++copied_;
        return;
      }
      --in_flight_;
      result_ = cqe.res;
      // No notification follows a zero-copy send that failed outright.
      if (zc_ && (cqe.flags & IORING_CQE_F_MORE) == 0) free_[b] = true;
    });
  }

  int fd_;
  bool zc_;
  Ring ring_;
  std::array<std::vector<char>, kBuffers> bufs_;
  std::array<bool, kBuffers> free_{};
  int next_ = 0;
  int in_flight_ = 0;
  int result_ = 0;
  std::uint64_t notifs_ = 0;
  std::uint64_t copied_ = 0;
};

void run_ring(benchmark::State& state, bool zc) {
  if (!Ring::unsupported_reason().empty()) {
    state.SkipWithError(("io_uring unavailable: " + Ring::unsupported_reason()).c_str());
    return;
  }
  const auto size = static_cast<std::size_t>(state.range(0));
  Loopback lo;
  Sender s(lo.fd(), size, zc);
  for (auto _ : state) {
    if (!s.send_one()) {
      state.SkipWithError("send failed");
      break;
    }
  }
  s.drain();
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
  if (zc) {
    state.counters["copied_pct"] =
        s.notifications() == 0 ? 0.0 : 100.0 * static_cast<double>(s.copied()) /
                                           static_cast<double>(s.notifications());
  }
}

void BM_Send(benchmark::State& state) { run_ring(state, false); }
void BM_SendZc(benchmark::State& state) { run_ring(state, true); }

void BM_SendSyscall(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Loopback lo;
  std::vector<char> buf(size, 'x');
  for (auto _ : state) {
    std::size_t done = 0;
    while (done < size) {
      const ssize_t n = ::send(lo.fd(), buf.data() + done, size - done, MSG_NOSIGNAL);
      if (n <= 0) {
        state.SkipWithError("send failed");
        return;
      }
      done += static_cast<std::size_t>(n);
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}

// 4 KiB: a small reply; 16 KiB: the engine's send block; 64 KiB: read_chunk; 256 KiB: a large
// gathered write.
BENCHMARK(BM_Send)->RangeMultiplier(4)->Range(4 << 10, 256 << 10)->UseRealTime();
BENCHMARK(BM_SendZc)->RangeMultiplier(4)->Range(4 << 10, 256 << 10)->UseRealTime();
BENCHMARK(BM_SendSyscall)->RangeMultiplier(4)->Range(4 << 10, 256 << 10)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

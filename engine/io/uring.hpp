// Ring: one io_uring instance over the raw kernel interface (no liburing), as a shard uses it:
// one submitting thread (SINGLE_ISSUER, DEFER_TASKRUN: completions are produced only when that
// thread enters the kernel to wait), a large completion queue, and one provided-buffer ring
// that multishot receives draw from, shared by every connection of the shard.
// Thread: construction and register calls on any thread while the ring is disabled; after
// enable(), every call on the enabling thread only.
#pragma once

#include <linux/io_uring.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace esockets::detail {

class Ring {
 public:
  /// Empty if this kernel runs everything the io_uring backend uses (a single-issuer ring with
  /// deferred task running, provided-buffer rings, multishot receive); otherwise
  /// why not, for the error message and the automatic choice. Probed once per process.
  static const std::string& unsupported_reason();

  /// A disabled ring (enable() on the thread that will use it). Throws std::system_error.
  Ring(unsigned sq_entries, unsigned cq_entries);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  /// Provided buffers: `count` (a power of two) buffers of `size` bytes in group `group`.
  /// Consumed incrementally where the kernel can (IOU_PBUF_RING_INC, 6.12+): a receive takes
  /// only the bytes it fills, so small messages share a buffer instead of taking one each.
  void add_buffers(std::uint16_t group, unsigned count, unsigned size);
  bool incremental_buffers() const { return buf_inc_; }
  /// The calling thread becomes the ring's only submitter.
  void enable();

  /// A zeroed SQE to fill; when the queue is full, what is queued is submitted first.
  io_uring_sqe* sqe();
  /// Submits what is queued and, if wait, waits until a completion arrives or timeout_ms
  /// passes (-1: no limit). Runs the deferred completions either way. Returns 0 or -errno
  /// (-ETIME and -EINTR are normal).
  /// wait_nr > 1 with min_wait_us (kernels with IORING_FEAT_MIN_TIMEOUT, 6.12+; ignored
  /// elsewhere): wait for wait_nr completions, but once min_wait_us passed return as soon as
  /// there is any. A pass that submits k sends (which complete during the submission when the
  /// socket has room) waits for k + 1, so those do not end the wait by themselves.
  int enter(bool wait, int timeout_ms, unsigned wait_nr = 1, unsigned min_wait_us = 0);
  bool min_wait_supported() const { return min_wait_; }
  /// Submits what is queued without waiting or reaping.
  void submit();
  /// Calls fn(const io_uring_cqe&) for each completion ready; returns how many.
  template <class Fn>
  unsigned reap(Fn&& fn);

  /// Where a completion's bytes in provided buffer `bid` start.
  const char* buffer(std::uint16_t bid) const {
    return bufs_ + std::size_t{bid} * buf_size_ + (buf_inc_ ? buf_off_[bid] : 0);
  }
  /// After a completion's bytes were used: `more` (IORING_CQE_F_BUF_MORE) says the kernel
  /// goes on filling the buffer behind them; otherwise it comes back (published by publish()).
  void used(std::uint16_t bid, int res, bool more) {
    if (buf_inc_ && more) {
      buf_off_[bid] += res > 0 ? static_cast<unsigned>(res) : 0u;
      return;
    }
    recycle(bid);
  }
  void recycle(std::uint16_t bid);
  void publish();
  std::uint64_t enters() const { return enters_; }

  // SQE builders (the caller sets user_data after).
  void recv_multishot(int fd, std::uint16_t group, std::uint64_t user_data);
  /// multishot: edge-triggered, one completion per wake-up until cancelled.
  void poll(int fd, std::uint32_t events, std::uint64_t user_data, bool multishot);
  /// Cancels the operation tagged `target` (all: every one with that tag).
  void cancel(std::uint64_t target, std::uint64_t user_data, bool all = false);
  /// A single-shot accept (non-blocking, close-on-exec socket).
  void accept(int fd, std::uint64_t user_data);
  /// A send of n bytes at p (no SIGPIPE). The bytes must stay until it completes; the kernel
  /// waits for room in the socket itself, so a full socket needs no poll of ours.
  void send(int fd, const void* p, std::size_t n, std::uint64_t user_data);
  /// sendmsg of m's iovecs: m and its iovec array need only live until the next submit (the
  /// kernel copies them then; 5.5+'s stable submission), the bytes until it completes.
  void sendmsg(int fd, const msghdr* m, std::uint64_t user_data);
  /// True when every queued SQE has been handed to the kernel.
  bool all_submitted() const { return sq_pending() == 0; }

 private:
  unsigned sq_pending() const;

  int fd_ = -1;
  void* rings_ = nullptr;
  std::size_t rings_size_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  std::size_t sqes_size_ = 0;
  unsigned* sq_head_ = nullptr;
  unsigned* sq_tail_ = nullptr;
  unsigned* sq_array_ = nullptr;
  unsigned sq_mask_ = 0;
  unsigned sq_entries_ = 0;
  unsigned sq_local_tail_ = 0;
  unsigned* cq_head_ = nullptr;
  unsigned* cq_tail_ = nullptr;
  io_uring_cqe* cqes_ = nullptr;
  unsigned cq_mask_ = 0;
  std::uint64_t enters_ = 0;
  bool min_wait_ = false;
  // io_uring_getevents_arg as kernels since 6.12 define it (Debian 12's header calls the
  // min_wait_usec field pad).
  struct GeteventsArg {
    std::uint64_t sigmask;
    std::uint32_t sigmask_sz;
    std::uint32_t min_wait_usec;
    std::uint64_t ts;
  };
  static_assert(sizeof(GeteventsArg) == sizeof(io_uring_getevents_arg));
  static constexpr std::uint32_t kFeatMinTimeout = 1u << 15;  // IORING_FEAT_MIN_TIMEOUT

  io_uring_buf* br_ = nullptr;  // the provided-buffer ring (tail: br_[0].resv)
  std::size_t br_size_ = 0;
  char* bufs_ = nullptr;
  std::size_t bufs_bytes_ = 0;
  unsigned buf_size_ = 0;
  unsigned buf_mask_ = 0;
  bool buf_inc_ = false;
  std::vector<unsigned> buf_off_;  // incremental: bytes of each buffer handed out so far
  static constexpr std::uint16_t kPbufRingInc = 2;  // IOU_PBUF_RING_INC (6.12)
  std::uint16_t br_tail_ = 0;
};

template <class Fn>
unsigned Ring::reap(Fn&& fn) {
  unsigned head = *cq_head_;
  const unsigned tail = __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE);
  unsigned n = 0;
  while (head != tail) {
    const io_uring_cqe cqe = cqes_[head & cq_mask_];
    ++head;
    ++n;
    // The slot is handed back before fn runs: fn may submit, and a submit may need CQ room.
    __atomic_store_n(cq_head_, head, __ATOMIC_RELEASE);
    fn(cqe);
  }
  return n;
}

}  // namespace esockets::detail

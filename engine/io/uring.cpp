#include "io/uring.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace esockets::detail {

namespace {

constexpr unsigned kSetupFlags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                 IORING_SETUP_R_DISABLED | IORING_SETUP_CQSIZE |
                                 IORING_SETUP_SUBMIT_ALL;

int sys_setup(unsigned entries, io_uring_params* p) {
  return static_cast<int>(::syscall(__NR_io_uring_setup, entries, p));
}
int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags, const void* arg,
              std::size_t argsz) {
  return static_cast<int>(::syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz));
}
int sys_register(int fd, unsigned op, const void* arg, unsigned nr) {
  return static_cast<int>(::syscall(__NR_io_uring_register, fd, op, arg, nr));
}

std::string probe() {
  io_uring_params p{};
  p.flags = kSetupFlags;
  p.cq_entries = 16;
  const int fd = sys_setup(8, &p);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOSYS) return "the kernel has no io_uring (ENOSYS)";
    if (err == EPERM) return "io_uring is disabled here (EPERM: kernel.io_uring_disabled or a seccomp filter)";
    if (err == EINVAL) {
      return "the kernel is older than 6.1 (io_uring_setup refused single-issuer rings with "
             "deferred task running)";
    }
    return std::string("io_uring_setup failed: ") + std::strerror(err);
  }
  std::string why;
  if ((p.features & IORING_FEAT_NODROP) == 0 || (p.features & IORING_FEAT_EXT_ARG) == 0 ||
      (p.features & IORING_FEAT_SINGLE_MMAP) == 0) {
    why = "the kernel's io_uring lacks NODROP, EXT_ARG or SINGLE_MMAP";
  }
  // Opcodes (multishot flags came with 5.19/6.0; a 6.1 ring setup implies them).
  if (why.empty()) {
    const std::size_t sz = sizeof(io_uring_probe) + 256 * sizeof(io_uring_probe_op);
    auto* pr = static_cast<io_uring_probe*>(::calloc(1, sz));
    if (pr != nullptr && sys_register(fd, IORING_REGISTER_PROBE, pr, 256) == 0) {
      for (unsigned op : {unsigned{IORING_OP_RECV}, unsigned{IORING_OP_ACCEPT},
                          unsigned{IORING_OP_ASYNC_CANCEL}, unsigned{IORING_OP_POLL_ADD}}) {
        if (op > pr->last_op || (pr->ops[op].flags & IO_URING_OP_SUPPORTED) == 0) {
          why = "the kernel's io_uring lacks opcode " + std::to_string(op);
          break;
        }
      }
    } else {
      why = "IORING_REGISTER_PROBE failed";
    }
    ::free(pr);
  }
  if (why.empty()) {
    // Provided-buffer rings.
    const std::size_t sz = 4096;
    void* mem = ::mmap(nullptr, sz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
      why = "mmap failed";
    } else {
      io_uring_buf_reg reg{};
      reg.ring_addr = reinterpret_cast<std::uintptr_t>(mem);
      reg.ring_entries = 8;
      reg.bgid = 0;
      if (sys_register(fd, IORING_REGISTER_PBUF_RING, &reg, 1) != 0) {
        why = "the kernel's io_uring has no provided-buffer rings";
      }
      ::munmap(mem, sz);
    }
  }
  ::close(fd);
  return why;
}

}  // namespace

const std::string& Ring::unsupported_reason() {
  static const std::string why = probe();
  return why;
}

Ring::Ring(unsigned sq_entries, unsigned cq_entries) {
  io_uring_params p{};
  p.flags = kSetupFlags;
  p.cq_entries = cq_entries;
  fd_ = sys_setup(sq_entries, &p);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "esockets: io_uring_setup");
  sq_entries_ = p.sq_entries;
  min_wait_ = (p.features & kFeatMinTimeout) != 0;
  const std::size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  const std::size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
  rings_size_ = sq_size > cq_size ? sq_size : cq_size;
  rings_ = ::mmap(nullptr, rings_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_,
                  IORING_OFF_SQ_RING);
  if (rings_ == MAP_FAILED) {
    const int err = errno;
    ::close(fd_);
    throw std::system_error(err, std::generic_category(), "esockets: mmap(io_uring rings)");
  }
  sqes_size_ = p.sq_entries * sizeof(io_uring_sqe);
  void* s = ::mmap(nullptr, sqes_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_,
                   IORING_OFF_SQES);
  if (s == MAP_FAILED) {
    const int err = errno;
    ::munmap(rings_, rings_size_);
    ::close(fd_);
    throw std::system_error(err, std::generic_category(), "esockets: mmap(io_uring sqes)");
  }
  sqes_ = static_cast<io_uring_sqe*>(s);
  char* base = static_cast<char*>(rings_);
  sq_head_ = reinterpret_cast<unsigned*>(base + p.sq_off.head);
  sq_tail_ = reinterpret_cast<unsigned*>(base + p.sq_off.tail);
  sq_mask_ = *reinterpret_cast<unsigned*>(base + p.sq_off.ring_mask);
  sq_array_ = reinterpret_cast<unsigned*>(base + p.sq_off.array);
  for (unsigned i = 0; i < p.sq_entries; ++i) sq_array_[i] = i;
  sq_local_tail_ = *sq_tail_;
  cq_head_ = reinterpret_cast<unsigned*>(base + p.cq_off.head);
  cq_tail_ = reinterpret_cast<unsigned*>(base + p.cq_off.tail);
  cq_mask_ = *reinterpret_cast<unsigned*>(base + p.cq_off.ring_mask);
  cqes_ = reinterpret_cast<io_uring_cqe*>(base + p.cq_off.cqes);
}

Ring::~Ring() {
  // Closing the ring cancels whatever is still armed and drops its file references.
  if (fd_ >= 0) ::close(fd_);
  if (sqes_ != nullptr) ::munmap(sqes_, sqes_size_);
  if (rings_ != nullptr) ::munmap(rings_, rings_size_);
  if (br_ != nullptr) ::munmap(br_, br_size_);
  if (bufs_ != nullptr) ::munmap(bufs_, bufs_bytes_);
}

void Ring::add_buffers(std::uint16_t group, unsigned count, unsigned size) {
  br_size_ = count * sizeof(io_uring_buf);
  void* mem = ::mmap(nullptr, br_size_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "esockets: mmap(buffer ring)");
  // The ring is an array of io_uring_buf whose first entry's resv field is the tail. (Not
  // through struct io_uring_buf_ring: in C++ the kernel header's flexible-array wrapper has an
  // empty struct of size 1 in front of bufs, which moves every entry by 8 bytes.)
  br_ = static_cast<io_uring_buf*>(mem);
  bufs_bytes_ = std::size_t{count} * size;
  // Pages are touched only when the kernel first fills a buffer: idle shards stay small.
  void* b = ::mmap(nullptr, bufs_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (b == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "esockets: mmap(buffers)");
  bufs_ = static_cast<char*>(b);
  buf_size_ = size;
  buf_mask_ = count - 1;
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uintptr_t>(mem);
  reg.ring_entries = count;
  reg.bgid = group;
  reg.pad = kPbufRingInc;  // "flags" in 6.12+ headers
  buf_inc_ = sys_register(fd_, IORING_REGISTER_PBUF_RING, &reg, 1) == 0;
  if (!buf_inc_) {
    reg.pad = 0;  // a kernel before 6.12: one buffer per completion
    if (sys_register(fd_, IORING_REGISTER_PBUF_RING, &reg, 1) != 0) {
      throw std::system_error(errno, std::generic_category(), "esockets: IORING_REGISTER_PBUF_RING");
    }
  }
  buf_off_.assign(count, 0);
  for (unsigned i = 0; i < count; ++i) recycle(static_cast<std::uint16_t>(i));
  publish();
}

void Ring::recycle(std::uint16_t bid) {
  buf_off_[bid] = 0;
  io_uring_buf& b = br_[br_tail_ & buf_mask_];
  b.addr = reinterpret_cast<std::uintptr_t>(bufs_ + std::size_t{bid} * buf_size_);
  b.len = buf_size_;
  b.bid = bid;
  ++br_tail_;
}

void Ring::publish() { __atomic_store_n(&br_[0].resv, br_tail_, __ATOMIC_RELEASE); }

void Ring::enable() {
  if (sys_register(fd_, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) != 0) {
    throw std::system_error(errno, std::generic_category(), "esockets: IORING_REGISTER_ENABLE_RINGS");
  }
}

unsigned Ring::sq_pending() const {
  return sq_local_tail_ - __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE);
}

io_uring_sqe* Ring::sqe() {
  if (sq_pending() >= sq_entries_) submit();
  io_uring_sqe* s = &sqes_[sq_local_tail_ & sq_mask_];
  std::memset(s, 0, sizeof *s);
  ++sq_local_tail_;
  return s;
}

void Ring::submit() {
  __atomic_store_n(sq_tail_, sq_local_tail_, __ATOMIC_RELEASE);
  while (sq_pending() > 0) {
    ++enters_;
    const int r = sys_enter(fd_, sq_pending(), 0, 0, nullptr, 0);
    if (r < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY) return;
  }
}

int Ring::enter(bool wait, int timeout_ms, unsigned wait_nr, unsigned min_wait_us) {
  __atomic_store_n(sq_tail_, sq_local_tail_, __ATOMIC_RELEASE);
  __kernel_timespec ts{};
  GeteventsArg arg{};
  arg.sigmask_sz = _NSIG / 8;
  if (wait && timeout_ms >= 0) {
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1000000;
    arg.ts = reinterpret_cast<std::uintptr_t>(&ts);
  }
  if (!min_wait_ || min_wait_us == 0 || !wait) {
    wait_nr = 1;  // (older kernels reject a non-zero min_wait_usec)
  } else if (wait_nr > 1) {
    arg.min_wait_usec = min_wait_us;
  }
  ++enters_;
  const int r = sys_enter(fd_, sq_pending(), wait ? wait_nr : 0,
                          IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg);
  return r < 0 ? -errno : 0;
}

void Ring::recv_multishot(int fd, std::uint16_t group, std::uint64_t user_data) {
  io_uring_sqe* s = sqe();
  s->opcode = IORING_OP_RECV;
  s->fd = fd;
  s->ioprio = IORING_RECV_MULTISHOT;
  s->flags = IOSQE_BUFFER_SELECT;
  s->buf_group = group;
  s->user_data = user_data;
}

void Ring::poll(int fd, std::uint32_t events, std::uint64_t user_data, bool multishot) {
  io_uring_sqe* s = sqe();
  s->opcode = IORING_OP_POLL_ADD;
  s->fd = fd;
  s->len = multishot ? IORING_POLL_ADD_MULTI : 0;
  s->poll32_events = events;  // little-endian hosts (x86-64, arm64)
  s->user_data = user_data;
}

void Ring::cancel(std::uint64_t target, std::uint64_t user_data, bool all) {
  io_uring_sqe* s = sqe();
  s->opcode = IORING_OP_ASYNC_CANCEL;
  s->fd = -1;
  s->addr = target;
  s->cancel_flags = all ? IORING_ASYNC_CANCEL_ALL : 0;
  s->user_data = user_data;
}

void Ring::accept(int fd, std::uint64_t user_data) {
  io_uring_sqe* s = sqe();
  s->opcode = IORING_OP_ACCEPT;
  s->fd = fd;
  s->accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
  s->user_data = user_data;
}

void Ring::send(int fd, const void* p, std::size_t n, std::uint64_t user_data) {
  io_uring_sqe* s = sqe();
  s->opcode = IORING_OP_SEND;
  s->fd = fd;
  s->addr = reinterpret_cast<std::uintptr_t>(p);
  s->len = static_cast<std::uint32_t>(n);
  s->msg_flags = MSG_NOSIGNAL;
  s->user_data = user_data;
}

void Ring::sendmsg(int fd, const msghdr* m, std::uint64_t user_data) {
  io_uring_sqe* s = sqe();
  s->opcode = IORING_OP_SENDMSG;
  s->fd = fd;
  s->addr = reinterpret_cast<std::uintptr_t>(m);
  s->len = 1;
  s->msg_flags = MSG_NOSIGNAL;
  s->user_data = user_data;
}

}  // namespace esockets::detail

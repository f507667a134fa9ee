// SendQueue: a connection's pending output as a chain of heap blocks, gathered into one
// sendmsg() per flush. An idle connection's queue owns no memory.
// Thread: owner shard only (blocks may be allocated on any thread and adopted here).
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace esockets::detail {

class PayloadPool;

// Bytes shared by reference: one copy for many recipients' queues (multicast), or a message
// lent to a worker that its handler may send on without copying. Whichever thread drops the
// last reference frees it, or gives it back to the pool it came from.
struct SharedPayload {
  std::atomic<std::uint32_t> refs;
  std::uint32_t len;
  PayloadPool* pool = nullptr;       // where it goes back when unreferenced (nullptr: freed)
  SharedPayload* next = nullptr;     // (in the pool's lists)
  char* data() { return reinterpret_cast<char*>(this + 1); }
};
SharedPayload* make_shared_payload(const char* p, std::uint32_t n, std::uint32_t refs);
void retain_shared_payload(SharedPayload* s, std::uint32_t n = 1);
void release_shared_payload(SharedPayload* s);

/// The message a worker's handler is running on (this thread's; nullptr outside a handler):
/// a send of bytes inside it references them instead of copying (ServerCore::make_send_block).
SharedPayload*& lent_payload();

// Buffers of one size that a shard fills with input for workers and gets back from whichever
// thread drops the last reference (a worker after its handler, a shard after the send that
// reused the bytes), so a steady stream of large messages allocates nothing. Without it every
// message was a large malloc on the shard and a free on the worker: glibc gave the memory back
// (madvise) and faulted it in again each time, which cost more than the copies.
//
// Thread: get() and close() on the owner shard's thread; give_back() from any thread. The pool
// is freed when it is closed and its last buffer is gone (each buffer holds a reference).
class PayloadPool {
 public:
  /// A pool of buffers of `capacity` bytes, referenced once by the caller (close() drops it).
  static PayloadPool* open(std::size_t capacity);
  std::size_t capacity() const { return cap_; }
  /// Owner: an unreferenced-by-others buffer (refs 1, len 0) of capacity() bytes.
  SharedPayload* get();
  /// Owner: no more get(); frees every idle buffer; buffers still out are freed as they come
  /// back, and the pool with the last of them.
  void close();
  /// Any thread, from release_shared_payload: `p` is unreferenced.
  void give_back(SharedPayload* p);
  /// Buffers idle now (given back and not taken again), for tests.
  std::uint32_t idle_count() const { return parked_.load(std::memory_order_relaxed); }

 private:
  explicit PayloadPool(std::size_t capacity);
  void take_returned();
  void free_list(SharedPayload* head);
  void unref();

  // Idle buffers kept for reuse, at most: 64, fewer for large ones (about 4 MiB, 2 at least).
  static constexpr std::uint32_t kKeepIdle = 64;
  static constexpr std::size_t kKeepIdleBytes = 4u << 20;
  const std::size_t cap_;
  const std::uint32_t keep_idle_;
  std::atomic<std::uint32_t> refs_{1};          // the owner's, and one per buffer not freed
  std::atomic<std::uint32_t> parked_{0};        // buffers idle (returned_ and idle_)
  std::atomic<bool> closed_{false};
  std::atomic<SharedPayload*> returned_{nullptr};  // given back by any thread (a stack)
  std::vector<SharedPayload*> idle_;            // owner only
};

// One block: header followed by cap bytes, or (shared != nullptr) a header that lends a
// reference to a SharedPayload's bytes. Made by make_block() on any thread.
struct SendBlock {
  SendBlock* next;
  std::uint32_t begin;  // first unsent byte
  std::uint32_t end;    // one past the last byte
  std::uint32_t cap;    // == end for a shared block: nothing is ever appended into it
  std::uint32_t pad_;
  SharedPayload* shared;
  char* data() { return shared != nullptr ? shared->data() : reinterpret_cast<char*>(this + 1); }
  std::uint32_t size() const { return end - begin; }
};

SendBlock* make_block(std::size_t cap);
/// A block that queues `p`'s bytes without copying them; takes over one reference.
SendBlock* make_shared_block(SharedPayload* p);
/// A block that queues bytes [offset, offset + n) of `p` without copying them; takes over one
/// reference.
SendBlock* make_shared_block(SharedPayload* p, std::uint32_t offset, std::uint32_t n);
/// Frees a block (and drops its payload reference if it is shared).
void free_block(SendBlock* b);
/// Frees a chain of blocks linked by next (SendQueue::release()).
void free_chain(SendBlock* b);

// A small per-shard cache of standard-size blocks so steady echo traffic does not hit malloc.
class BlockPool {
 public:
  static constexpr std::size_t kStandard = 16 * 1024 - sizeof(SendBlock) - 16;
  ~BlockPool();
  SendBlock* get(std::size_t need);
  void put(SendBlock* b);
  /// Frees every cached block.
  void trim();

 private:
  std::vector<SendBlock*> free_;
};

class SendQueue {
 public:
  /// Shared payloads up to this size are copied into the tail block instead of linked.
  static constexpr std::size_t kShareMin = 128;
  SendQueue() = default;
  SendQueue(const SendQueue&) = delete;
  SendQueue& operator=(const SendQueue&) = delete;

  std::size_t bytes() const { return bytes_; }
  bool empty() const { return bytes_ == 0; }

  /// Copies bytes, filling the tail block first.
  void append(const char* p, std::size_t n, BlockPool& pool);
  /// Adopts a block made elsewhere (a cross-thread send); small ones are copied into the tail.
  void adopt(SendBlock* b, BlockPool& pool);
  /// Fills up to max iovecs from the head; returns how many.
  int gather(iovec* iov, int max) const;
  /// Drops n sent bytes from the head, returning emptied blocks to the pool.
  void consume(std::size_t n, BlockPool& pool);
  /// Frees everything (connection gone).
  void clear(BlockPool& pool);
  /// Empties the queue and hands its chain of blocks to the caller (free_chain() frees it):
  /// bytes an asynchronous send still reads from outlive the queue.
  SendBlock* release();
  /// Appends every queued byte, in order, to `out` (a takeover carries them over).
  void copy_to(std::string& out) const;

 private:
  SendBlock* head_ = nullptr;
  SendBlock* tail_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace esockets::detail

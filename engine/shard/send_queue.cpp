#include "shard/send_queue.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

namespace esockets::detail {

SendBlock* make_block(std::size_t cap) {
  void* mem = std::malloc(sizeof(SendBlock) + cap);
  if (mem == nullptr) throw std::bad_alloc();
  auto* b = static_cast<SendBlock*>(mem);
  b->next = nullptr;
  b->begin = 0;
  b->end = 0;
  b->cap = static_cast<std::uint32_t>(cap);
  b->pad_ = 0;
  b->shared = nullptr;
  return b;
}

SendBlock* make_shared_block(SharedPayload* p) { return make_shared_block(p, 0, p->len); }

SendBlock* make_shared_block(SharedPayload* p, std::uint32_t offset, std::uint32_t n) {
  SendBlock* b = make_block(0);
  b->begin = offset;
  b->end = b->cap = offset + n;
  b->shared = p;
  return b;
}

void free_block(SendBlock* b) {
  if (b->shared != nullptr) release_shared_payload(b->shared);
  std::free(b);
}

SharedPayload* make_shared_payload(const char* p, std::uint32_t n, std::uint32_t refs) {
  void* mem = std::malloc(sizeof(SharedPayload) + n);
  if (mem == nullptr) throw std::bad_alloc();
  auto* s = new (mem) SharedPayload;
  s->refs.store(refs, std::memory_order_relaxed);
  s->len = n;
  if (n > 0 && p != nullptr) std::memcpy(s->data(), p, n);
  return s;
}

void retain_shared_payload(SharedPayload* s, std::uint32_t n) {
  s->refs.fetch_add(n, std::memory_order_relaxed);
}

void release_shared_payload(SharedPayload* s) {
  if (s->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    if (s->pool != nullptr) {
      s->pool->give_back(s);
      return;
    }
    s->~SharedPayload();
    std::free(s);
  }
}

SharedPayload*& lent_payload() {
  thread_local SharedPayload* lent = nullptr;
  return lent;
}

PayloadPool* PayloadPool::open(std::size_t capacity) { return new PayloadPool(capacity); }

PayloadPool::PayloadPool(std::size_t capacity)
    : cap_(capacity),
      keep_idle_(static_cast<std::uint32_t>(
          std::clamp<std::size_t>(kKeepIdleBytes / (capacity == 0 ? 1 : capacity), 2, kKeepIdle))) {}

SharedPayload* PayloadPool::get() {
  if (idle_.empty()) take_returned();
  SharedPayload* p = nullptr;
  if (!idle_.empty()) {
    p = idle_.back();
    idle_.pop_back();
    parked_.fetch_sub(1, std::memory_order_relaxed);
  } else {
    void* mem = std::malloc(sizeof(SharedPayload) + cap_);
    if (mem == nullptr) throw std::bad_alloc();
    p = new (mem) SharedPayload;
    p->pool = this;
    refs_.fetch_add(1, std::memory_order_relaxed);
  }
  p->refs.store(1, std::memory_order_relaxed);
  p->len = 0;
  p->next = nullptr;
  return p;
}

void PayloadPool::take_returned() {
  // The acquire pairs with give_back's release: the giver's last reads of the bytes happen
  // before we write into them again.
  SharedPayload* p = returned_.exchange(nullptr, std::memory_order_acquire);
  while (p != nullptr) {
    idle_.push_back(p);  // (at most keep_idle_: give_back frees the rest)
    p = p->next;
  }
}

void PayloadPool::give_back(SharedPayload* p) {
  if (parked_.fetch_add(1, std::memory_order_relaxed) >= keep_idle_) {
    // Enough idle already: a burst's buffers are not hoarded once it is over.
    parked_.fetch_sub(1, std::memory_order_relaxed);
    p->~SharedPayload();
    std::free(p);
    unref();
    return;
  }
  // Hold a reference while we look at closed_: the owner may close and every other buffer
  // may be freed meanwhile.
  refs_.fetch_add(1, std::memory_order_relaxed);
  SharedPayload* head = returned_.load(std::memory_order_relaxed);
  do {
    p->next = head;
  } while (!returned_.compare_exchange_weak(head, p, std::memory_order_seq_cst,
                                            std::memory_order_relaxed));
  // Either close() sees our push when it empties the stack, or we see closed_ and empty it
  // ourselves (both sides seq_cst: one of the two orders holds).
  if (closed_.load(std::memory_order_seq_cst)) {
    free_list(returned_.exchange(nullptr, std::memory_order_seq_cst));
  }
  unref();
}

void PayloadPool::close() {
  closed_.store(true, std::memory_order_seq_cst);
  for (SharedPayload* p : idle_) {
    p->~SharedPayload();
    std::free(p);
    unref();
  }
  std::vector<SharedPayload*>().swap(idle_);
  free_list(returned_.exchange(nullptr, std::memory_order_seq_cst));
  unref();
}

void PayloadPool::free_list(SharedPayload* p) {
  while (p != nullptr) {
    SharedPayload* next = p->next;
    p->~SharedPayload();
    std::free(p);
    unref();
    p = next;
  }
}

void PayloadPool::unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

BlockPool::~BlockPool() { trim(); }

void BlockPool::trim() {
  for (SendBlock* b : free_) free_block(b);
  std::vector<SendBlock*>().swap(free_);
}

SendBlock* BlockPool::get(std::size_t need) {
  if (need <= kStandard) {
    if (!free_.empty()) {
      SendBlock* b = free_.back();
      free_.pop_back();
      b->next = nullptr;
      b->begin = b->end = 0;
      return b;
    }
    return make_block(kStandard);
  }
  return make_block(need);
}

void BlockPool::put(SendBlock* b) {
  // Keep a bounded number: enough for a busy pass, not a hoard after a burst.
  if (b->shared == nullptr && b->cap == kStandard && free_.size() < 256) {
    free_.push_back(b);
  } else {
    free_block(b);
  }
}

void SendQueue::append(const char* p, std::size_t n, BlockPool& pool) {
  while (n > 0) {
    if (tail_ == nullptr || tail_->end == tail_->cap) {
      SendBlock* b = pool.get(n);
      if (tail_ != nullptr) {
        tail_->next = b;
      } else {
        head_ = b;
      }
      tail_ = b;
    }
    std::size_t room = tail_->cap - tail_->end;
    std::size_t k = n < room ? n : room;
    std::memcpy(tail_->data() + tail_->end, p, k);
    tail_->end += static_cast<std::uint32_t>(k);
    bytes_ += k;
    p += k;
    n -= k;
  }
}

void SendQueue::adopt(SendBlock* b, BlockPool& pool) {
  std::size_t n = b->size();
  if (b->shared != nullptr && n <= kShareMin) {
    // A small shared payload costs less copied than linked (a block header, an iovec and a
    // reference count each): into the tail block, or a fresh pooled one, as a local send.
    append(b->data() + b->begin, n, pool);
    free_block(b);
    return;
  }
  // Small private blocks are copied into the tail when it has room; large ones are linked.
  if (b->shared == nullptr && tail_ != nullptr &&
      n <= static_cast<std::size_t>(tail_->cap - tail_->end)) {
    std::memcpy(tail_->data() + tail_->end, b->data() + b->begin, n);
    tail_->end += static_cast<std::uint32_t>(n);
    bytes_ += n;
    free_block(b);
    return;
  }
  if (n == 0) {
    free_block(b);
    return;
  }
  b->next = nullptr;
  if (tail_ != nullptr) {
    tail_->next = b;
  } else {
    head_ = b;
  }
  tail_ = b;
  bytes_ += n;
  (void)pool;
}

int SendQueue::gather(iovec* iov, int max) const {
  int k = 0;
  for (SendBlock* b = head_; b != nullptr && k < max; b = b->next) {
    if (b->size() == 0) continue;
    iov[k].iov_base = b->data() + b->begin;
    iov[k].iov_len = b->size();
    ++k;
  }
  return k;
}

void SendQueue::copy_to(std::string& out) const {
  out.reserve(out.size() + bytes_);
  for (SendBlock* b = head_; b != nullptr; b = b->next) out.append(b->data() + b->begin, b->size());
}

void SendQueue::consume(std::size_t n, BlockPool& pool) {
  bytes_ -= n;
  while (n > 0 && head_ != nullptr) {
    std::size_t sz = head_->size();
    if (n < sz) {
      head_->begin += static_cast<std::uint32_t>(n);
      return;
    }
    n -= sz;
    SendBlock* next = head_->next;
    pool.put(head_);
    head_ = next;
  }
  // Drop blocks emptied exactly at a boundary.
  while (head_ != nullptr && head_->size() == 0 && head_ != tail_) {
    SendBlock* next = head_->next;
    pool.put(head_);
    head_ = next;
  }
  if (head_ == nullptr) {
    tail_ = nullptr;
  } else if (bytes_ == 0) {
    pool.put(head_);
    head_ = tail_ = nullptr;
  }
}

void SendQueue::clear(BlockPool& pool) {
  while (head_ != nullptr) {
    SendBlock* next = head_->next;
    pool.put(head_);
    head_ = next;
  }
  tail_ = nullptr;
  bytes_ = 0;
}

SendBlock* SendQueue::release() {
  SendBlock* chain = head_;
  head_ = tail_ = nullptr;
  bytes_ = 0;
  return chain;
}

void free_chain(SendBlock* b) {
  while (b != nullptr) {
    SendBlock* next = b->next;
    free_block(b);
    b = next;
  }
}

}  // namespace esockets::detail

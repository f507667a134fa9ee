#include "mailbox.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

#include "esockets/connection.hpp"
#include "send_queue.hpp"

namespace esockets::detail {

SharedPayload* make_shared_payload(const char* p, std::uint32_t n, std::uint32_t refs) {
  void* mem = std::malloc(sizeof(SharedPayload) + n);
  if (mem == nullptr) throw std::bad_alloc();
  auto* s = new (mem) SharedPayload;
  s->refs.store(refs, std::memory_order_relaxed);
  s->len = n;
  if (n > 0) std::memcpy(s->data(), p, n);
  return s;
}

void release_shared_payload(SharedPayload* s) {
  if (s->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    s->~SharedPayload();
    std::free(s);
  }
}

void dispose(const Command& c) {
  if (c.data == nullptr) return;
  if (c.kind == CommandKind::send) free_block(static_cast<SendBlock*>(c.data));
  if (c.kind == CommandKind::broadcast) release_shared_payload(static_cast<SharedPayload*>(c.data));
}

void dispose(const Event& e) {
  if (e.data == nullptr) return;
  if (e.kind == EventKind::connect) delete static_cast<PeerAddress*>(e.data);
  if (e.kind == EventKind::message) std::free(e.data);
}

}  // namespace esockets::detail

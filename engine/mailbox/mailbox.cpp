#include "mailbox/mailbox.hpp"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "esockets/connection.hpp"
#include "shard/send_queue.hpp"
#include "takeover/takeover.hpp"

namespace esockets::detail {

void dispose(const Command& c) {
  if (c.data == nullptr) return;
  if (c.kind == CommandKind::send) free_block(static_cast<SendBlock*>(c.data));
  if (c.kind == CommandKind::multicast) {
    auto* b = static_cast<MulticastBatch*>(c.data);
    release_shared_payload(b->payload);
    delete b;
  }
  if (c.kind == CommandKind::post) delete static_cast<PostedFn*>(c.data);
  if (c.kind == CommandKind::takeover) delete static_cast<TakeoverOrder*>(c.data);
  if (c.kind == CommandKind::takeover_state) delete static_cast<TakenState*>(c.data);
  if (c.kind == CommandKind::adopt_fd) {
    // Only when a shard is destroyed with it still queued (a server torn down mid-placement).
    auto* f = static_cast<FreshFd*>(c.data);
    ::close(f->fd);
    delete f;
  }
}

void dispose(const Event& e) {
  if (e.data == nullptr) return;
  if (e.kind == EventKind::connect) delete static_cast<ConnectInfo*>(e.data);
  if (e.kind == EventKind::message) release_shared_payload(static_cast<SharedPayload*>(e.data));
  if (e.kind == EventKind::post) delete static_cast<PostedFn*>(e.data);
}

}  // namespace esockets::detail

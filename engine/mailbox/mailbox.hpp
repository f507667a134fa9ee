// Mailbox: the messages that cross threads, and the lock-free queues that carry them.
// Thread: each queue is written by exactly the producers named below and read by its owner.
//
//   EventQueue    shard -> worker   spsc, one per (shard, worker)
//   CommandQueue  worker -> shard   spsc, one per (worker, shard)
//   CommandInbox  any thread -> shard   mpsc, one per shard (MpscRing below)
//
// Every element is trivially copyable; payloads travel as heap pointers whose ownership moves
// with the element (freed by the consumer, or by the queue's owner at teardown).
#pragma once

#include <atomic>
#include <boost/lockfree/spsc_queue.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <type_traits>
#include <vector>

#include "esockets/connection.hpp"
#include "esockets/proxy.hpp"
#include "shard/send_queue.hpp"

namespace esockets::detail {

enum class EventKind : std::uint8_t {
  connect,      // data: ConnectInfo* (new'd), fd in `len`
  message,      // data: SharedPayload* (one reference) holding len bytes
  disconnect,   // reason
  output_high,  // queued output crossed the high watermark
  output_low,   // ... and fell below the low watermark again
  eof,          // the peer shut down its side: answer with CommandKind::eof_ack
  barrier,      // stop protocol: answer with CommandKind::barrier_ack
  moved,        // the connection now lives on shard `len`; its later events come from there
  framing_error,  // data: the reason (static text); an eof event follows
  post,         // data: PostedFn*, run on the connection (Server::post, a timer moved along)
  takeover,     // handed to another process: save its state (CommandKind::takeover_state),
                // then on_client_disconnect(taken_over); `len` is the shard to answer
};

struct Event {
  std::uint64_t id;
  void* data;
  std::uint32_t len;
  EventKind kind;
  std::uint8_t reason;
  // A sampled event: when the shard queued it (monotonic microseconds, low 32 bits), for the
  // hand-off histogram; 0 = not sampled.
  std::uint32_t stamp_us = 0;
};

// A socket accepted on one shard and placed on another (least_loaded balance), or one still
// sending its PROXY header handed on by a retiring shard (nothing of it was read: peeked only).
struct FreshFd {
  int fd;
  PeerAddress peer;
  std::uint16_t listener = 0;
  std::int64_t proxy_deadline_ms = 0;  // PROXY stage under way: its deadline (0 = not started)
};

// The data of a connect event: who connected, through which listener, and its PROXY header.
struct ConnectInfo {
  PeerAddress peer;
  std::uint16_t listener = 0;
  std::unique_ptr<ProxyInfo> proxy;
  // Set for a connection taken over from another process: on_client_restore(state) is
  // called instead of on_client_connect.
  std::unique_ptr<std::string> restored;
};

enum class CommandKind : std::uint8_t {
  send,         // data: SendBlock*
  close,        // reason
  pause,        // stop reading
  resume,       // read again
  multicast,    // data: MulticastBatch*, one payload for the ids this shard hosts
  eof_ack,      // the worker handled everything before the eof event
  barrier_ack,  // the worker handled everything before the barrier event
  adopt,        // data: AdoptBatch*, connections handed over by another shard
  adopt_fd,     // data: FreshFd*, a just-accepted socket placed here by least_loaded balance
  move_out,     // data: MoveRequest*, hand connections to other shards (rebalance, retire)
  post,         // data: PostedFn*, run on the connection's handler thread (Server::post)
  takeover,        // data: TakeoverOrder*, a step of a takeover (freeze, export, import, thaw)
  takeover_state,  // data: TakenState*, a worker's answer to EventKind::takeover
};

struct Command {
  std::uint64_t id;
  void* data;
  std::uint32_t len;
  CommandKind kind;
  std::uint8_t reason;
  std::uint8_t shard = 0;  // explicit target for commands not about one connection
};

/// Commands not addressed to a connection name their shard explicitly.
inline bool targets_shard(CommandKind k) {
  return k == CommandKind::barrier_ack || k == CommandKind::adopt || k == CommandKind::adopt_fd ||
         k == CommandKind::move_out || k == CommandKind::takeover ||
         k == CommandKind::takeover_state;
}
/// Replies the engine itself owes (acks, closes it decided): never refused for lack of room.
inline bool is_control(CommandKind k) {
  return k == CommandKind::eof_ack || k == CommandKind::barrier_ack || k == CommandKind::adopt ||
         k == CommandKind::adopt_fd || k == CommandKind::move_out || k == CommandKind::takeover ||
         k == CommandKind::takeover_state;
}

// A function to run with a connection on its handler thread (Server::post).
struct PostedFn {
  std::function<void(Connection&)> fn;
};

// One payload for many connections: holds one reference to it. Split per shard on its way.
struct MulticastBatch {
  SharedPayload* payload;
  std::vector<std::uint64_t> ids;
};

static_assert(std::is_trivially_copyable_v<Event> && std::is_trivially_destructible_v<Event>);
static_assert(std::is_trivially_copyable_v<Command> && std::is_trivially_destructible_v<Command>);

// A bounded multi-producer, single-consumer ring (after Dmitry Vyukov's bounded MPMC queue):
// each cell has a sequence number that says whose turn it is. Producers claim a position with
// one CAS and publish the cell with a release store; the consumer takes cells in position
// order, so commands from one producer keep their order. Used instead of
// boost::lockfree::queue, whose freelist reads node memory another thread may be writing (by
// design, checked by a later CAS) and so cannot run clean under ThreadSanitizer
// (boostorg/lockfree issue 78); here every shared access is an atomic or ordered by one.
template <class T>
class MpscRing {
 public:
  explicit MpscRing(std::size_t capacity) {
    std::size_t n = 2;
    while (n < capacity) n <<= 1;
    mask_ = n - 1;
    cells_.reset(new Cell[n]);
    for (std::size_t i = 0; i < n; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
  }
  /// Any thread; false when full. Never blocks.
  bool push(const T& v) {
    std::size_t pos = tail_.load(std::memory_order_relaxed);
    for (;;) {
      Cell& c = cells_[pos & mask_];
      const std::size_t seq = c.seq.load(std::memory_order_acquire);
      const auto diff = static_cast<std::ptrdiff_t>(seq) - static_cast<std::ptrdiff_t>(pos);
      if (diff == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          c.value = v;
          c.seq.store(pos + 1, std::memory_order_release);
          return true;
        }
      } else if (diff < 0) {
        return false;  // the consumer has not freed this cell yet: full
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
  }
  /// Consumer only; false when the next cell is not published yet.
  bool pop(T& out) {
    Cell& c = cells_[head_ & mask_];
    if (c.seq.load(std::memory_order_acquire) != head_ + 1) return false;
    out = c.value;
    c.seq.store(head_ + mask_ + 1, std::memory_order_release);
    ++head_;
    return true;
  }
  /// Any thread: true when at least k more pushes would fit now (an estimate under races).
  bool has_room(std::size_t k) const {
    const std::size_t pos = tail_.load(std::memory_order_acquire) + k;
    return cells_[pos & mask_].seq.load(std::memory_order_acquire) == pos;
  }
  std::size_t capacity() const { return mask_ + 1; }
  /// Any thread: positions claimed so far (every one below it is published soon after).
  std::size_t tail_position() const { return tail_.load(std::memory_order_acquire); }
  /// Consumer only: positions consumed so far.
  std::size_t head_position() const { return head_; }
  /// Consumer only.
  bool empty() const {
    return cells_[head_ & mask_].seq.load(std::memory_order_acquire) != head_ + 1;
  }

 private:
  struct Cell {
    std::atomic<std::size_t> seq{0};
    T value{};
  };
  std::unique_ptr<Cell[]> cells_;
  std::size_t mask_ = 0;
  alignas(64) std::atomic<std::size_t> tail_{0};
  alignas(64) std::size_t head_ = 0;
};

using EventQueue = boost::lockfree::spsc_queue<Event>;
using CommandQueue = boost::lockfree::spsc_queue<Command>;
using CommandInbox = MpscRing<Command>;

// Frees whatever a command/event still owns (used when it cannot be delivered).
void dispose(const Command& c);
void dispose(const Event& e);

}  // namespace esockets::detail

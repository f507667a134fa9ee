// Mailbox: the messages that cross threads, and the lock-free queues that carry them.
// Thread: each queue is written by exactly the producers named below and read by its owner.
//
//   EventQueue    shard -> worker   spsc, one per (shard, worker)
//   CommandQueue  worker -> shard   spsc, one per (worker, shard)
//   CommandInbox  any thread -> shard   mpsc (Boost's MPMC queue, fixed size), one per shard
//
// Every element is trivially copyable; payloads travel as heap pointers whose ownership moves
// with the element (freed by the consumer, or by the queue's owner at teardown).
#pragma once

#include <atomic>
#include <boost/lockfree/queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>
#include <cstdint>
#include <type_traits>

namespace esockets::detail {

enum class EventKind : std::uint8_t {
  connect,      // data: PeerAddress* (new'd), fd in `len`
  message,      // data: malloc'd bytes of len
  disconnect,   // reason
  output_high,  // queued output crossed the high watermark
  output_low,   // ... and fell below the low watermark again
  eof,          // the peer shut down its side: answer with CommandKind::eof_ack
  barrier,      // stop protocol: answer with CommandKind::barrier_ack
  moved,        // the connection now lives on shard `len`; its later events come from there
};

struct Event {
  std::uint64_t id;
  void* data;
  std::uint32_t len;
  EventKind kind;
  std::uint8_t reason;
};

enum class CommandKind : std::uint8_t {
  send,         // data: SendBlock*
  close,        // reason
  pause,        // stop reading
  resume,       // read again
  broadcast,    // data: SharedPayload*
  eof_ack,      // the worker handled everything before the eof event
  barrier_ack,  // the worker handled everything before the barrier event
  adopt,        // data: AdoptBatch*, connections handed over by another shard
  adopt_fd,     // data: FreshFd*, a just-accepted socket placed here by least_loaded balance
  move_out,     // data: MoveRequest*, hand connections to other shards (rebalance, retire)
};

struct Command {
  std::uint64_t id;
  void* data;
  std::uint32_t len;
  CommandKind kind;
  std::uint8_t reason;
  std::uint8_t shard;  // explicit target for commands not about one connection
};

/// Commands not addressed to a connection name their shard explicitly.
inline bool targets_shard(CommandKind k) {
  return k == CommandKind::broadcast || k == CommandKind::barrier_ack ||
         k == CommandKind::adopt || k == CommandKind::adopt_fd || k == CommandKind::move_out;
}

static_assert(std::is_trivially_copyable_v<Event> && std::is_trivially_destructible_v<Event>);
static_assert(std::is_trivially_copyable_v<Command> && std::is_trivially_destructible_v<Command>);

// Broadcast payload shared by every shard; the last shard to apply it frees it.
struct SharedPayload {
  std::atomic<std::uint32_t> refs;
  std::uint32_t len;
  char* data() { return reinterpret_cast<char*>(this + 1); }
};
SharedPayload* make_shared_payload(const char* p, std::uint32_t n, std::uint32_t refs);
void release_shared_payload(SharedPayload* s);

using EventQueue = boost::lockfree::spsc_queue<Event>;
using CommandQueue = boost::lockfree::spsc_queue<Command>;
using CommandInbox = boost::lockfree::queue<Command, boost::lockfree::fixed_sized<true>>;

// Frees whatever a command/event still owns (used when it cannot be delivered).
void dispose(const Command& c);
void dispose(const Event& e);

}  // namespace esockets::detail

// Shard: one reactor thread with its own epoll instance and SO_REUSEPORT listener, hosting
// connections of the server-wide ConnectionTable.
// Thread: the thread body and every *_local method run on the shard's own thread only;
// post(), notify(), request_stop(), request_retire() and counters are safe from any thread.
//
// Loop phases, in order, each pass (run()):
//   1. epoll_wait (no timeout when work is pending; a coarse tick when timers are armed)
//   2. events: listener -> accept; wakeup fd -> drain; connection -> read / write / hangup
//      (an event whose id is no longer live, e.g. closed earlier in this batch, is dropped)
//   3. commands from workers (spsc) and from any thread (mpsc), in batches
//   4. worker outboxes pushed; connections paused by flow control resumed below the low mark
//   5. stop / retire / move protocols, timers (deadlines, idle sweep, accept re-arm), load
//   6. flush: every dirty connection written with one sendmsg; closes completed
//   7. records of closed connections freed (never during a pass, so references stay valid)
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <exception>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/clock.hpp"
#include "shard/conn.hpp"
#include "esockets/proxy.hpp"
#include "esockets/warning.hpp"
#include "core/connection_table.hpp"
#include "framing/framer.hpp"
#include "mailbox/mailbox.hpp"
#include "mailbox/outgoing.hpp"
#include "shard/shard_stats.hpp"
#include "takeover/takeover.hpp"
#include "core/timers.hpp"
#include "io/uring.hpp"
#include "mailbox/wakeup.hpp"

namespace esockets::detail {

class ServerCore;

// Connections handed from one shard to another (rebalance, retire).
struct AdoptBatch {
  std::uint32_t from;
  std::uint32_t to;
  std::vector<Conn*> conns;
  // Functions posted to these connections and taken in here but not run yet: the adopting
  // shard takes them in first, so they keep their place ahead of later commands.
  std::vector<Command> posted;
};
// A connection of a PROXY listener whose header has not arrived yet: outside the connection
// table, in no handler's view. Its epoll tag is ConnectionId(kPendingShard, fd, 0).
struct PendingProxy {
  PeerAddress peer;  // the proxy's address
  std::uint16_t listener = 0;
  std::int64_t deadline_ms = 0;
  std::uint32_t seq = 0;  // io_uring: tells its poll from one of an earlier socket on this fd
};
// Move up to `count` connections to `targets` (spread evenly); retire = all, then exit.
struct MoveRequest {
  std::vector<std::uint32_t> targets;
  std::size_t count;
  bool retire;
};

class Shard {
 public:
  // listen_fds[i]: this shard's socket of TCP listener i (-1 for a Unix listener, whose one
  // socket the ServerCore owns and every shard polls).
  Shard(ServerCore& core, std::uint32_t index, const std::vector<int>& listen_fds);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  void start();
  void join();
  /// Resize thread, after join(): give back what a retired shard holds (queues, buffers, pool);
  /// revive() makes it a live shard again on a new listener (the index is reused).
  void release();
  void revive(const std::vector<int>& listen_fds);
  /// Any thread: begin the stop protocol.
  void request_stop();
  /// True once the thread has left its loop (after stop or retire).
  bool exited() const { return exited_.load(std::memory_order_acquire); }
  /// Any thread, inside the RouteEpoch: false once the shard sealed its queues before leaving
  /// (a push after that would never be applied); the caller then treats it as gone.
  bool accepting() const { return !sealed_.load(std::memory_order_seq_cst); }
  /// True once a move_out request finished (rebalance) — counts completed requests.
  std::uint64_t moves_done() const { return moves_done_.load(std::memory_order_acquire); }

  std::uint32_t index() const { return index_; }
  /// This shard's socket of listener i (-1 once closed; a Unix listener's shared socket).
  int listen_fd(std::size_t i) const { return i < listeners_.size() ? listeners_[i].fd : -1; }
  ShardCounters& counters() { return counters_; }
  const HistogramCounters& handler_time() const { return handler_time_; }
  /// The CPU this shard's thread is pinned to, or -1.
  int cpu() const { return cpu_.load(std::memory_order_relaxed); }
  const ShardCounters& counters() const { return counters_; }

  /// Any thread, inside the RouteEpoch after accepting(): queue a command from a thread that
  /// is not a worker; false if the inbox is full (counted in send_backpressure by callers).
  bool post(const Command& c) { return inbox_->push(c); }
  /// Any thread, inside the RouteEpoch after accepting(): room for a good share of the inbox.
  bool has_room() const { return inbox_->has_room(inbox_->capacity() / 4); }
  /// Any thread: wake the shard if it sleeps.
  void notify() { wake_.notify(); }
  std::uint64_t kernel_wakeups() const { return wake_.kernel_notifies(); }

  /// Worker w's queue of commands into this shard (worker w is its only producer).
  CommandQueue& from_worker(unsigned w) { return *from_workers_[w]; }
  /// This shard's queue of events to worker w (this shard is its only producer).
  EventQueue& to_worker(unsigned w) { return *to_workers_[w]; }
  /// Worker w sets this back to false and notifies once its queue from us drained.
  std::atomic<bool>& drain_wanted(unsigned w) { return *drain_wanted_[w]; }

  // Owner thread only: direct paths used when a handler runs on this shard.
  SendStatus send_local(ConnectionId id, SendBlock* block);
  SendStatus send_local(ConnectionId id, const char* p, std::size_t n);
  SendStatus close_local(ConnectionId id, CloseReason reason);
  SendStatus pause_local(ConnectionId id, bool pause);
  void multicast_local(MulticastBatch* b);
  /// Owner thread: queues a multicast payload for one hosted connection (copied when small).
  SendStatus send_shared(ConnectionId id, SharedPayload* p);
  /// Owner thread: a command from this shard's handlers for a connection another shard hosts;
  /// queued in order and pushed at the end of the pass (never refused for lack of room: while
  /// too many wait, the clients whose messages produce them are not read).
  SendStatus queue_remote(const Command& c);
  /// Owner thread: nothing waits in the Outgoing list (direct application keeps order).
  bool remote_empty() const { return remote_.empty(); }
  bool on_own_thread() const;
  /// Owner thread: a Server::post for a connection hosted here, run from the loop this pass.
  void post_local(const Command& c) { posted_.push_back(c); }
  /// Owner thread: this shard's timers (connection timers of inline handlers, thread timers).
  ThreadTimers& timers() { return timers_; }

 private:
  // epoll data of the listeners, the wakeup eventfd and PROXY-stage sockets: ids no connection
  // can have (generation 0; a lingering socket's tag carries its shard's index, below 0xfe).
  static constexpr std::uint32_t kListenerSlot0 = 0xffff00;  // listener i: slot 0xffff00 + i
  static constexpr std::uint64_t kWakeTag = ConnectionId(0, 0xfffffe, 0).value();
  static constexpr std::uint32_t kPendingShard = 0xff;
  static constexpr std::uint64_t listener_tag(std::size_t i) {
    return ConnectionId(0, kListenerSlot0 + static_cast<std::uint32_t>(i), 0).value();
  }
  struct ShardListener {
    int fd = -1;
    bool shared = false;    // a Unix listener's socket: not ours to close
    bool watched = false;  // watched for connections (epoll set, or io_uring accept wanted)
    std::uint8_t accepts_armed = 0;  // io_uring: accepts in flight on this listener
    bool accept_cancel = false;      // ... and a cancel of them was queued
    // A shared (Unix) listener this retiring shard stopped watching: its queue is drained
    // once more when our accepts have ended (io_uring), see close_listeners().
    int drain_fd = -1;
  };
  static constexpr std::size_t kCommandBatch = 512;  // commands popped from a queue at a time
  enum class Phase : std::uint8_t { serving, draining, closing, done };
  enum class Move : std::uint8_t { idle, grace, quiescing, finishing };

  static constexpr int kMaxEvents = 512;  // epoll events taken per wait
  void run();
  int wait_events(epoll_event* events, int timeout);  // the backend's wait
  bool inbound_pending() const;
  int next_timeout_ms() const;

  // shard_io.cpp: the connection state machine.
  void accept_ready(std::size_t li);
  void accept_from(std::size_t li, int lfd);  // accept_ready's loop on a given socket
  bool admit(int fd, std::size_t li);
  void accepted(int fd, std::size_t li, const PeerAddress& peer);
  void place_accepted(int fd, const PeerAddress& peer, std::uint16_t li);
  void start_connection(int fd, const PeerAddress& peer, std::uint16_t li, std::int64_t deadline);
  void setup_accepted(int fd, const PeerAddress& peer, std::uint16_t li,
                      std::unique_ptr<ProxyInfo> proxy);
  void drop_accepted(int fd, std::uint16_t li);
  void adopt_fresh(FreshFd* f);
  void close_refused(int fd);
  bool watch_listener(std::size_t li, bool on);  // accept on it (or stop), on either backend
  // shard_proxy.cpp: the PROXY protocol stage.
  void begin_pending(int fd, const PeerAddress& peer, std::uint16_t li, std::int64_t deadline);
  void pending_ready(int fd, std::uint32_t events);
  void fail_pending(int fd, CloseReason reason, const char* why);
  void unwatch_pending(int fd);  // before it leaves pending_ (io_uring needs its seq)
  void sweep_pending();
  void hand_over_pending();
  void close_all_pending();
  void pause_accepting(std::int64_t until_ms);
  void resume_accepting();
  void deliver(Conn* c, const char* p, std::size_t n);
  void framing_failed(Conn* c);
  bool deliver_frame(Conn* c, std::string_view frame);
  void on_eof(Conn* c);
  void close_after_worker(Conn* c, CloseReason reason);
  void process_resumes();
  void fail_conn(Conn* c, const char* what);
  void wake_waiters();
  void flow_pause(Conn* c, std::vector<ConnectionId>& list);
  void flow_resume(std::vector<ConnectionId>& list);
  void writable(Conn* c);
  void flush(Conn* c);
  void output_sent(Conn* c, std::size_t n);  // n bytes of the head went out: account, refresh
  void append(Conn* c, const char* p, std::size_t n);
  void adopt(Conn* c, SendBlock* b);
  bool over_cap(Conn* c, std::size_t more);
  bool accepts_output(const Conn* c) const;
  void close_slow_consumer(Conn* c);
  void drop_output(Conn* c);  // frees the queue (or, with a send in flight, orphans it)
  void after_output_change(Conn* c);
  void mark_dirty(Conn* c);
  void update_interest(Conn* c);
  void begin_close(Conn* c, CloseReason reason);
  void finish_close(Conn* c);
  void abort_conn(Conn* c, CloseReason reason);
  void retire(Conn* c, CloseReason reason);
  void close_fd(Conn* c);
  void set_deadline(Conn* c, std::int64_t at_ms);
  void resume_reading(Conn* c);
  void set_user_pause(Conn* c, bool pause);
  bool hold_if_incoming(const Command& cmd);

  // The I/O layer. The state machine reaches it through six calls: wait_events, update_interest,
  // flush and watch_listener above and these two (shard_io.cpp, shard_accept.cpp); each picks
  // the backend's layer below.
  /// Attaches a new or adopted connection to this shard's I/O (epoll set or ring).
  bool io_attach(Conn* c);
  /// Takes a connection out of this shard's I/O before it leaves (move, takeover).
  void io_detach(Conn* c);
  /// A layer's read or send ("read", "send") failed with err, neither EAGAIN nor EINTR.
  void io_failed(Conn* c, int err, const char* op);
  /// After an error event (EPOLLERR, POLLERR): reset or io_error, from the socket's SO_ERROR.
  CloseReason pending_error_reason(Conn* c);

  // shard_epoll.cpp: the epoll backend's I/O layer.
  void epoll_setup();
  int epoll_wait_events(epoll_event* events, int timeout);
  void epoll_dispatch(const epoll_event* events, int n);
  void dispatch(const epoll_event& ev);
  void on_event_failure(const epoll_event& ev, const char* what);
  void readable(Conn* c);
  void linger_readable(Conn* c);
  bool epoll_write(Conn* c);  // sendmsg until the queue is empty or the socket full; false: closed
  void epoll_interest(Conn* c);
  bool epoll_attach(Conn* c);
  void epoll_detach(Conn* c);
  bool epoll_listen(std::size_t li, bool on);
  bool epoll_pending(int fd, bool on);  // a PROXY-stage socket

  // shard_uring.cpp: the io_uring backend's I/O layer.
  enum class RingOp : std::uint8_t { recv = 1, write, accept, wake, pending, ignore, send };
  static constexpr std::uint64_t ring_tag(RingOp op, std::uint32_t key, std::uint32_t low) {
    return (std::uint64_t{static_cast<std::uint8_t>(op)} << 60) |
           (std::uint64_t{key & 0xffffffu} << 32) | low;
  }
  static std::uint64_t recv_tag(const Conn* c) {
    return ring_tag(RingOp::recv, c->id().slot(), c->id().generation());
  }
  static std::uint64_t write_tag(const Conn* c) {
    return ring_tag(RingOp::write, c->id().slot(), c->id().generation());
  }
  static std::uint64_t send_tag(const Conn* c) {
    return ring_tag(RingOp::send, c->id().slot(), c->id().generation());
  }
  void ring_setup();
  int ring_wait(int timeout);
  void ring_arm_wakeup();  // before every wait
  int ring_reap();
  void ring_completion(const io_uring_cqe& cqe);
  Conn* ring_conn(std::uint64_t user_data) const;
  void ring_received(Conn* c, const char* p, std::size_t n);
  void ring_recv_done(Conn* c, int res);
  void ring_accept_done(std::size_t li, int res);
  void ring_hangup(Conn* c, std::uint32_t ev);
  void ring_send(Conn* c);  // from flush(): the queue's head goes out with the next enter
  void ring_sent(std::uint64_t tag, int res);
  bool ring_sends_settled() const { return ring_orphans_.empty(); }
  /// Before a socket that ring operations were queued for is closed: they are submitted
  /// first, or the kernel would resolve its fd number to whatever socket gets it next.
  void ring_before_close() {
    if (ring_ && !ring_->all_submitted()) ring_->submit();
  }
  void ring_accepted(std::size_t li, int fd);
  void ring_interest(Conn* c);
  void ring_detach(Conn* c);
  void ring_listen(std::size_t li, bool on);
  void ring_pending(int fd, bool on);
  bool ring_settled(const std::vector<Conn*>& conns) const;
  bool ring_listeners_settled() const;

  // shard.cpp: cross-thread traffic and lifecycle.
  void apply(const Command& cmd);
  Conn* target_of(const Command& cmd);
  void drain_commands();
  void drain_all();
  void flush_remote();
  bool push_or_apply(Shard& target, const Command& c);
  void seal_and_drain();
  void emit(unsigned worker, const Event& e);
  void service_workers();
  void advance_stop();
  void sweep_timers();
  void sweep_timeouts();
  // shard_timers.cpp: posted functions and timers.
  void apply_post(const Command& cmd);
  void carry_posted();
  void run_posted();
  void run_timers();
  int timers_timeout_ms() const;
  void update_load();
  void flush_dirty();
  void free_graveyard();
  void warn(WarningCode code, Severity severity, ConnectionId conn, int err,
            const std::string& msg);
  template <class Fn>
  void call_handler(Conn* c, Fn&& fn);
  std::uint32_t tick() const { return static_cast<std::uint32_t>((now_ms_ - epoch_ms_) / 10) + 1; }

  // shard_takeover.cpp: handing connections to another process (takeover.hpp).
  enum class Takeover : std::uint8_t { none, freezing, frozen, settling, switching, saving };
  void takeover_order(TakeoverOrder* order);
  void freeze_all();
  void thaw_all();
  void advance_takeover();
  void take_state(const Command& cmd);
  void finish_export();
  void detach_exported(Conn* c);
  void import_batch(ConnBatch& batch);

  // shard_move.cpp: handing connections to other shards.
  void start_move(MoveRequest* req);
  void advance_move();
  bool start_batch();
  void hand_over_batch();
  void send_batch(AdoptBatch* b);
  void adopt_batch(AdoptBatch* batch);
  void close_listeners();

  ServerCore& core_;
  const std::uint32_t index_;
  std::vector<ShardListener> listeners_;
  int epfd_ = -1;                // epoll backend
  std::unique_ptr<Ring> ring_;   // io_uring backend
  bool ring_wake_armed_ = false;  // the wakeup eventfd's poll is armed
  // A sendmsg's header and iovecs, kept until the enter that submits it (then reused).
  struct RingMsg {
    msghdr hdr;
    iovec iov[16];
  };
  std::deque<RingMsg> ring_msgs_;  // deque: references stay valid as it grows
  std::size_t ring_msgs_used_ = 0;
  unsigned ring_sends_queued_ = 0;  // sends queued this pass (the wait counts their completions)
  // Output dropped (a close) while a send still reads it: freed when that send completes.
  std::vector<std::pair<std::uint64_t, SendBlock*>> ring_orphans_;
  std::uint32_t pending_seq_ = 0;
  Wakeup wake_{true};
  ConnectionTable& table_;
  Framer framer_;  // this shard's copy (framing config is immutable)
  ShardCounters counters_;
  HistogramCounters handler_time_;
  std::atomic<int> cpu_{-1};
  unsigned handler_sample_ = 0;
  unsigned emit_sample_ = 0;
  std::unique_ptr<CommandInbox> inbox_;
  std::vector<std::unique_ptr<CommandQueue>> from_workers_;
  std::vector<std::unique_ptr<EventQueue>> to_workers_;
  std::vector<std::unique_ptr<std::atomic<bool>>> drain_wanted_;
  std::thread thread_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> exited_{false};
  std::atomic<bool> sealed_{false};
 public:
  // wait_writable(): threads waiting for room in our inbox (any thread).
  std::atomic<int> waiters_{0};
  std::mutex wait_mu_;
  std::condition_variable wait_cv_;
 private:
  std::atomic<std::uint64_t> moves_done_{0};

  // Owner-only state.
  struct Outbox {
    std::vector<Event> items;
    std::size_t head = 0;
    std::vector<ConnectionId> flow_paused;
    bool empty() const { return head == items.size(); }
    std::size_t size() const { return items.size() - head; }
  };
  std::vector<Outbox> outboxes_;
  std::unique_ptr<char[]> rbuf_;
  std::size_t rbuf_size_ = 0;
  BlockPool pool_;
  // With workers: buffers of read_chunk bytes that large messages travel to workers in (see
  // PayloadPool); with raw framing on epoll, reads go straight into lend_, which becomes the
  // message when the read is large enough (no copy on the way in).
  PayloadPool* payloads_ = nullptr;
  SharedPayload* lend_ = nullptr;
  bool lend_reads_ = false;
  void open_payloads();
  void close_payloads();
  SharedPayload* message_payload(std::string_view frame);
  std::vector<Conn*> dirty_;
  std::vector<ConnectionId> resumes_;  // held frames to deliver from the loop, not a callback
  Conn* delivering_ = nullptr;         // the connection whose frames are being delivered
  Outgoing remote_;                    // inline handlers' commands for other shards
  std::vector<ConnectionId> remote_paused_;  // not read while remote_ is over its bound
  std::size_t remote_high_ = 0;
  std::vector<ConnectionId> timed_;
  std::vector<Conn*> graveyard_;
  std::vector<Command> cmd_batch_;
  std::vector<Command> posted_;  // Server::post to run with inline handlers, in order
  std::unordered_map<int, PendingProxy> pending_;  // PROXY stage, by fd
  std::vector<char> peek_buf_;  // PROXY headers are peeked into it (the largest max_proxy_header)
  ThreadTimers timers_;
  // Commands for connections being handed to us, held until the hand-over arrives.
  std::unordered_map<std::uint64_t, std::vector<Command>> incoming_;
  Phase phase_ = Phase::serving;
  unsigned barrier_acks_ = 0;
  bool stop_ready_reported_ = false;
  bool accept_paused_ = false;
  std::int64_t accept_resume_ms_ = 0;
  std::uint32_t fd_epoch_seen_ = 0;
  std::int64_t now_ms_ = 0;
  std::int64_t epoch_ms_ = 0;
  std::int64_t last_sweep_ms_ = 0;
  std::int64_t last_timeout_sweep_ms_ = 0;
  std::int64_t stop_deadline_ms_ = 0;
  std::int64_t warn_window_ms_ = 0;
  unsigned warn_in_window_ = 0;
  std::uint64_t warn_suppressed_ = 0;
  bool timeouts_enabled_ = false;
  bool trim_pending_ = false;
  std::size_t shard_output_cap_ = 0;

  // Load telemetry (busy = time not spent in epoll_wait).
  std::int64_t load_window_start_ns_ = 0;
  std::int64_t idle_ns_ = 0;
  std::int64_t poll_ns_ = 0;          // ServerOptions::handoff_poll, 0 without workers
  std::int64_t last_handoff_ns_ = 0;  // when events were last pushed to a worker
  std::uint64_t events_in_window_ = 0;

  // Moving connections out (rebalance / retire).
  Move move_ = Move::idle;
  std::unique_ptr<MoveRequest> move_req_;
  std::size_t move_left_ = 0;
  std::size_t move_rr_ = 0;
  std::int64_t grace_end_ms_ = 0;
  unsigned move_epoch_ = 0;
  bool move_flipped_ = false;
  bool move_drained_ = false;          // the batch's queues are drained; waiting for remote_
  std::uint64_t move_remote_mark_ = 0;  // remote_ commands queued before the batch started
  std::vector<AdoptBatch*> batches_;  // per target, being quiesced
  std::vector<AdoptBatch*> unsent_;   // target inbox was full: retry

  // Takeover (shard_takeover.cpp).
  Takeover takeover_ = Takeover::none;
  bool takeover_frozen_ = false;    // listeners and connections are not read
  bool takeover_flipped_ = false;
  unsigned takeover_epoch_ = 0;
  std::vector<Conn*> export_;                             // leaving, in table order
  std::vector<TakenState> export_states_;                 // their saved states
  std::unordered_map<std::uint64_t, std::size_t> export_index_;  // id -> index, from workers
  std::size_t export_waiting_ = 0;                        // states still to come from workers
  std::uint64_t takeover_remote_mark_ = 0;  // remote_ commands queued before the records
};

template <class Fn>
void Shard::call_handler(Conn* c, Fn&& fn) {
  try {
    if ((++handler_sample_ & HistogramCounters::kSampleMask) == 0) {
      const std::int64_t t0 = monotonic_ns();
      fn();
      handler_time_.record(static_cast<std::uint64_t>(monotonic_ns() - t0));
    } else {
      fn();
    }
  } catch (const std::exception& ex) {
    warn(WarningCode::handler_exception, Severity::warning, c->id(), 0,
         "handler threw for " + c->pub.getip() + ": " + ex.what());
    begin_close(c, CloseReason::handler_exception);
  } catch (...) {
    warn(WarningCode::handler_exception, Severity::warning, c->id(), 0,
         "handler threw a non-std exception for " + c->pub.getip());
    begin_close(c, CloseReason::handler_exception);
  }
}

}  // namespace esockets::detail

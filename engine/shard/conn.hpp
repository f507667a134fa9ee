// Conn: a shard's record of one connection.
// Thread: owner shard only. Never handed to another thread: other threads hold ConnectionIds.
#pragma once

#include <cstdint>

#include "esockets/connection.hpp"
#include "esockets/types.hpp"
#include "framing/framer.hpp"
#include "shard/send_queue.hpp"

namespace esockets::detail {

enum class ConnState : std::uint8_t {
  open,         // reading and writing
  half_closed,  // reading stopped (peer FIN, framing error); waiting for the worker's eof_ack
  closing,      // flushing output, then closing; no more reads delivered
  lingering,    // identity retired; our FIN sent, draining unread input until the peer's FIN
};

struct Conn {
  Connection pub;       // what inline handlers receive; id, fd, peer address
  FrameState frame;     // partial frame / held input
  SendQueue out;        // pending output
  std::int64_t deadline_ms = 0;  // closing/lingering: give up at this time (0 = none)
  // Coarse times in shard ticks (see Shard::tick()); 0 = not running.
  std::uint32_t last_read_tick = 0;    // last byte received (idle timeout)
  std::uint32_t frame_start_tick = 0;  // a partial frame has been buffered since (frame timeout)
  std::uint32_t write_stall_tick = 0;  // output pending without progress since (write timeout)
  std::uint32_t armed = 0;       // epoll events currently registered
  ConnState state = ConnState::open;
  CloseReason reason = CloseReason::closed_by_server;
  std::uint8_t worker = 0;       // affine worker (workers > 0)
  bool user_paused : 1 = false;  // pause_reading()
  bool flow_paused : 1 = false;  // the worker queue is full
  bool dirty : 1 = false;        // on the shard's flush list
  bool above_high : 1 = false;   // on_output_high fired, on_output_low not yet
  bool peer_eof : 1 = false;     // read returned 0
  bool registered : 1 = true;    // in the epoll set
  bool timed : 1 = false;        // on the shard's timed list
  bool hup : 1 = false;          // EPOLLHUP seen while not reading
  bool moving : 1 = false;       // being handed to another shard: out of our epoll set
  bool resume_pending : 1 = false;  // on the shard's list of held frames to deliver
  bool frozen : 1 = false;          // a takeover is handing it to another process: not read
  // io_uring backend (shard_uring.cpp): what the shard's ring holds for this connection.
  bool recv_armed : 1 = false;   // a multishot receive is armed (until its last completion)
  bool recv_cancel : 1 = false;  // ... and a cancel of it was queued
  bool write_armed : 1 = false;  // a poll for errors and hang-ups is armed (while not reading)
  bool poll_multi : 1 = false;   // ... and it is the multishot watch of a hung-up one
  bool send_armed : 1 = false;   // a send of the queue's head is in flight (until it completes)
  bool eof_seen : 1 = false;     // the receive reported EOF while not reading: on_eof() later
  bool reset_seen : 1 = false;   // ... an RST (while moving): it ends as reset, not on_eof()

  ConnectionId id() const { return pub.id_; }
  int fd() const { return pub.fd_; }
  bool reading() const {
    return state == ConnState::open && !user_paused && !flow_paused && !frozen;
  }
};

}  // namespace esockets::detail

// Takeover between processes (ServerOptions::takeover_socket on the old side, take_over on the
// new side): what the control thread and the shards pass each other. The wire format is in
// takeover_wire.hpp; the protocol is described in docs/ARCHITECTURE.md ("Takeover").
// Thread: TakeoverHub is shared by the shards and the thread that runs the takeover (locked);
// the orders travel in shard inboxes.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "takeover/takeover_wire.hpp"

namespace esockets::detail {

// A worker's answer to EventKind::takeover: what on_client_takeover returned, and the
// connection's PROXY header (the worker's Connection holds it).
struct TakenState {
  std::string app;
  std::string proxy;  // encode_proxy(), or empty
};

// Connections with their fds: exported by a shard (old side) or to be adopted by one (new side,
// or the old side taking back what a failed transfer did not deliver). Whoever holds a batch
// owns its fds.
struct ConnBatch {
  std::vector<ConnRecord> records;
  std::vector<int> fds;  // fds[i] belongs to records[i]
  ~ConnBatch();
  void close_all();
};

enum class TakeoverOp : std::uint8_t {
  freeze,      // stop accepting and reading; answer once every reply in flight is queued
  export_all,  // hand every open connection to the hub; the closing ones finish here
  import,      // adopt `batch` (restore hook instead of on_client_connect)
  thaw,        // accept and read again (a failed takeover)
};

struct TakeoverOrder {
  TakeoverOp op = TakeoverOp::freeze;
  std::unique_ptr<ConnBatch> batch;  // import
};

// Where the shards report their progress to the thread that runs a takeover.
class TakeoverHub {
 public:
  void reset();
  void shard_frozen();
  void shard_exported(std::unique_ptr<ConnBatch> batch);
  /// Waits until `shards` have frozen; false at the deadline.
  bool wait_frozen(unsigned shards, std::chrono::steady_clock::time_point deadline);
  /// The next exported batch (null once `shards` exported and nothing is left, or at the
  /// deadline: then `timed_out` is set).
  std::unique_ptr<ConnBatch> next_export(unsigned shards,
                                         std::chrono::steady_clock::time_point deadline,
                                         bool& timed_out);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  unsigned frozen_ = 0;
  unsigned exported_ = 0;
  std::deque<std::unique_ptr<ConnBatch>> ready_;
};

// ConnRecord::flags.
inline constexpr std::uint32_t kRecordUserPaused = 1;  // pause_reading() was in force
// Still in its PROXY stage (nothing read, no handler saw it); frame_progress holds the
// milliseconds left of its proxy_timeout.
inline constexpr std::uint32_t kRecordProxyPending = 2;
// on_output_high was called and on_output_low not yet: the new process calls on_output_low
// when the carried output drains (the application may be waiting for it).
inline constexpr std::uint32_t kRecordAboveHigh = 4;

}  // namespace esockets::detail

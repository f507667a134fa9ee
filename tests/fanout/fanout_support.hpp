// Helpers for the fan-out suite (tests/fanout): a line-protocol chat handler whose rooms span
// shards, a fleet of loopback clients read by one epoll thread, per-sender sequence books
// (loss / duplication / order), /proc measurements and a forked-child runner with a deadline
// (a hang fails the test instead of hanging ctest).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "esockets/esockets.hpp"
#include "test_support.hpp"

namespace fanout {

using namespace std::chrono_literals;
using esockets::Bytes;
using esockets::CloseReason;
using esockets::Connection;
using esockets::ConnectionId;
using esockets::MulticastResult;
using esockets::SendStatus;
using esockets::Server;
using esockets::ServerOptions;
using esockets::test::kScale;
using esockets::test::scaled;
using Clock = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

inline double since_s(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ------------------------------------------------------------------ /proc

/// VmRSS of this process in KiB (-1 if unreadable).
long self_rss_kb();
/// Open file descriptors of this process.
std::size_t self_fd_count();
/// Thread ids (gettid) of this process's threads.
std::vector<pid_t> self_tids();
pid_t gettid_now();

// ------------------------------------------------------------------ send outcomes

/// Counts the SendStatus values a handler saw (thread-safe).
struct StatusTally {
  std::atomic<std::uint64_t> ok{0}, closed{0}, backpressure{0}, slow_consumer{0};
  void add(SendStatus s);
  void add(const MulticastResult& r);
  std::string str() const;
};

/// Who made a connection: the peer port of the client is the key the tests hold.
struct Registry {
  mutable std::mutex mu;
  std::unordered_map<std::uint16_t, ConnectionId> by_port;
  std::atomic<int> connects{0}, disconnects{0};
  std::atomic<int> reasons[esockets::kCloseReasonCount] = {};
  void on_connect(const Connection& c);
  void on_disconnect(CloseReason r);
  /// Id of the client whose local port is `port`; invalid id if unknown.
  ConnectionId id_of(std::uint16_t port) const;
  int reason(CloseReason r) const { return reasons[static_cast<std::size_t>(r)].load(); }
  std::string reasons_str() const;
};

// ------------------------------------------------------------------ chat handler

enum class FanoutKind { per_member_send, group_send_frame };
const char* to_string(FanoutKind k);

/// Line protocol, one command per line:
///   JOIN <room>           -> member of room; replies "JOINED <room>" (after the join took effect)
///   MSG <room> <text>     -> every member of <room> (the sender too, if a member) gets the
///                            line "<room> <text>"; from the sender's handler, either one
///                            Server::send_frame per member or one Group::send_frame
/// Closed members leave by themselves: per_member_send removes them in on_client_disconnect,
/// group_send_frame relies on Group forgetting closed connections.
class ChatHandler : public esockets::Handler {
 public:
  explicit ChatHandler(FanoutKind kind) : kind_(kind) {}
  void attach(Server& s) { server_ = &s; }

  bool on_client_connect(Connection& c) override;
  void on_message_recv(Connection& c, Bytes m) override;
  void on_client_disconnect(Connection& c, CloseReason r) override;
  void on_warning(std::string_view w) override;

  StatusTally tally;                  // outcome per recipient of every fan-out
  std::atomic<std::uint64_t> fanouts{0};  // MSG lines handled
  std::atomic<std::uint64_t> bad_lines{0};
  Registry reg;
  std::atomic<int> warnings{0};
  std::mutex warn_mu;
  std::vector<std::string> first_warnings;

 private:
  struct Room {
    std::vector<ConnectionId> members;
    std::unique_ptr<esockets::Group> group;
  };
  Room& room_locked(const std::string& name);

  FanoutKind kind_;
  Server* server_ = nullptr;
  std::mutex mu_;
  std::unordered_map<std::string, Room> rooms_;
};

// ------------------------------------------------------------------ clients

/// n loopback clients, non-blocking, read by one epoll thread that splits lines and hands
/// them to a callback (on that thread). send() may be called from other threads.
class Fleet {
 public:
  using LineFn = std::function<void(std::size_t client, std::string_view line)>;
  Fleet() = default;
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  /// Connects n more clients (blocking connects); false on failure or once started.
  bool connect(std::uint16_t port, std::size_t n, int rcvbuf = 0);
  std::size_t size() const { return fds_.size(); }
  int fd(std::size_t i) const { return fds_[i]; }
  std::uint16_t local_port(std::size_t i) const { return ports_[i]; }

  /// Starts the reader; on_line runs on the reader thread for every complete line.
  void start(LineFn on_line);
  /// Stops the reader (joins it). Idempotent.
  void stop();
  /// Writes all of data to client i (poll for room; deadline). Thread-safe per client only if
  /// one thread writes to a client at a time.
  bool send(std::size_t i, std::string_view data, ms timeout = 10s);
  /// Shuts client i down (FIN both ways); the reader then sees it end.
  void close(std::size_t i);
  /// Clients whose socket reached EOF or failed (seen by the reader).
  std::size_t ended() const { return ended_.load(); }
  bool ended(std::size_t i) const { return i < ended_flags_.size() && ended_flags_[i]->load(); }
  /// Clients whose socket ended with an error (ECONNRESET...) rather than EOF.
  std::size_t resets() const { return resets_.load(); }
  /// Bytes received over all clients.
  std::uint64_t bytes_in() const { return bytes_in_.load(); }

 private:
  void run();
  std::vector<int> fds_;
  std::vector<std::uint16_t> ports_;
  std::vector<std::string> partial_;
  std::vector<std::unique_ptr<std::atomic<bool>>> ended_flags_;
  int ep_ = -1;
  int stop_fd_ = -1;
  LineFn on_line_;
  std::thread reader_;
  std::atomic<bool> running_{false};
  std::atomic<std::size_t> ended_{0};
  std::atomic<std::size_t> resets_{0};
  std::atomic<std::uint64_t> bytes_in_{0};
};

// ------------------------------------------------------------------ sequence book

/// Per receiver, per sender: the next sequence number expected. Written by one thread (the
/// reader); totals are atomics readable from any thread.
class SeqBook {
 public:
  SeqBook(std::size_t receivers, std::size_t senders);
  /// Records that `receiver` got `seq` from `sender`.
  void see(std::size_t receiver, std::size_t sender, std::uint64_t seq);
  /// A line that could not be parsed or names an unknown sender.
  void garbage(std::size_t receiver, std::string_view line);
  std::uint64_t delivered() const { return delivered_.load(); }
  std::uint64_t missing() const { return missing_.load(); }      // skipped over (lost)
  std::uint64_t duplicates() const { return backwards_.load(); }  // seq below expected
  std::uint64_t garbage_count() const { return garbage_.load(); }
  /// Highest sequence seen + 1 from sender at receiver (the reader thread's view).
  std::uint64_t expected(std::size_t receiver, std::size_t sender) const;
  /// The first few anomalies (gaps, duplicates, garbage), one per line.
  std::string first_problems() const;

 private:
  std::size_t senders_;
  std::vector<std::atomic<std::uint64_t>> next_;
  std::atomic<std::uint64_t> delivered_{0}, missing_{0}, backwards_{0}, garbage_{0};
  mutable std::mutex mu_;
  std::vector<std::string> problems_;
};

/// Parses "<word> <sender> <seq>" (the chat handler's delivery for "MSG <word> <sender> <seq>").
bool parse_delivery(std::string_view line, std::string_view& room, std::uint64_t& sender,
                    std::uint64_t& seq);
bool parse_u64(std::string_view s, std::uint64_t& v);

/// Waits until pred holds, or timeout, or `stall` passes without progress() changing.
/// Returns pred().
bool wait_progress(const std::function<bool()>& pred, const std::function<std::uint64_t()>& progress,
                   ms timeout, ms stall);

class ChildLog;

// ------------------------------------------------------------------ relay across shards

/// Pairs of clients, each client's messages forwarded to its partner (on the other shard):
///   PAIR <partner's local port>   -> replies "PAIRED"; later lines are relayed
///   <seq> <padding>               -> Server::send_frame(partner, line) from the handler
/// With `retry`, a send that returns backpressure is retried (yield) until it does not, up to
/// retry_limit per send: the naive handler that must not deadlock an inline server.
class RelayHandler : public esockets::Handler {
 public:
  explicit RelayHandler(bool retry, ms retry_limit = 30s) : retry_(retry), retry_limit_(retry_limit) {}
  void attach(Server& s) { server_ = &s; }
  bool on_client_connect(Connection& c) override;
  void on_message_recv(Connection& c, Bytes m) override;
  void on_client_disconnect(Connection& c, CloseReason r) override;

  Registry reg;
  StatusTally first;  // status of each first attempt
  StatusTally final;  // status each relay ended with
  std::atomic<std::uint64_t> relayed{0}, retries{0}, gave_up{0}, bad{0};
  /// Relays that returned ok, by the destination's fd slot ("ok means delivered").
  std::vector<std::atomic<std::uint64_t>> ok_to_slot = std::vector<std::atomic<std::uint64_t>>(1 << 16);

 private:
  bool retry_;
  ms retry_limit_;
  Server* server_ = nullptr;
};

/// The client side of a relay run: pairs (one client on shard 0, its partner on shard 1),
/// a reader checking each receiver's sequence from its partner, and a writer.
class PairRig {
 public:
  /// Connects clients until `pairs` are on each of shards 0 and 1, pairs them; false (with a
  /// failure logged) if that cannot be done.
  bool setup(Server& s, Registry& reg, std::size_t pairs, ChildLog& log);
  /// Writes numbered lines to every paired client until `stop` (then flushes partial lines) or
  /// until each wrote `limit` lines. window > 0: at most `window` lines of a client not yet
  /// seen by its partner.
  void write(const std::atomic<bool>& stop, std::uint64_t limit, std::uint64_t window);
  /// Lines written per client (valid after write() returned).
  std::uint64_t written(std::size_t client) const { return next_[client]; }
  std::uint64_t written_total() const;
  /// True when every partner has seen every line written to its peer.
  bool drained() const;
  std::uint64_t undelivered() const;

  Fleet fleet;
  std::unique_ptr<SeqBook> book;
  std::vector<std::size_t> active;   // paired clients: shard 0's and shard 1's alternately
  std::vector<std::size_t> partner;  // per client; SIZE_MAX when idle
  std::vector<char> mute;            // per client: receives only (set before write())
  std::atomic<std::uint64_t> written_live{0};

 private:
  std::vector<std::uint64_t> next_;
  std::atomic<bool> writer_done_{false};
};

// ------------------------------------------------------------------ forked child

/// What a child reports: notes (printed) and failures (each fails the test).
class ChildLog {
 public:
  explicit ChildLog(int fd) : fd_(fd) {}
  void note(const std::string& s);
  void fail(const std::string& s);
  /// fail(what) unless cond; returns cond.
  bool check(bool cond, const std::string& what);
  int failures() const { return failures_; }

 private:
  void line(char tag, const std::string& s);
  int fd_;
  int failures_ = 0;
};

struct ChildOutcome {
  bool finished = false;   // exited (normally or by a signal) before the deadline
  bool timed_out = false;  // killed at the deadline
  int exit_code = -1;
  int term_signal = 0;
  double seconds = 0;
  std::vector<std::string> notes;
  std::vector<std::string> failures;
  std::string stacks;  // gdb's backtrace of every thread, when the child hung
  std::string describe() const;
};

/// gdb's "thread apply all bt" of a process (empty text if gdb is missing).
std::string thread_stacks(pid_t pid);

/// Runs body in a forked child (it must not use gtest assertions; report through ChildLog).
/// The child exits 0 after body returns, 1 if body throws. The parent kills it (SIGKILL) at
/// the deadline, after printing every thread's stack (gdb). Under ThreadSanitizer and
/// AddressSanitizer, which do not support threads in a forked child, body runs on a thread of
/// this process instead, and a hang prints the stacks and ends the test binary (exit 3).
ChildOutcome run_in_child(const std::function<void(ChildLog&)>& body, ms deadline);

/// Adds one gtest failure per child failure, timeout or abnormal exit; prints the notes.
void expect_child_ok(const ChildOutcome& o, const std::string& what);

}  // namespace fanout

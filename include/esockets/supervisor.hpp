// esockets — Supervisor: several processes, each a Server with its own shards, serving the
// same listeners (multi-process mode: past one process's fd limit, and a crash costs one
// process's clients, not all of them).
// Thread: construct the Supervisor and call run() on one thread, before the process starts
// other threads (run() forks, and a child inherits only the forking thread); stop(), stats()
// and the accessors from any thread, stop() also from a signal handler.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "esockets/metrics.hpp"
#include "esockets/options.hpp"
#include "esockets/stats.hpp"

namespace esockets {

class Server;
class Supervisor;

/// What happened to the supervised processes (SupervisorOptions::on_event).
enum class SupervisorEventKind : std::uint8_t {
  started,    ///< a child process was forked (the first time or as a restart)
  ready,      ///< a child is serving: its first stats report arrived
  all_ready,  ///< every child of the first start is serving (once per run())
  exited,     ///< a child ended; status says how
  restarting, ///< a child that ended will be started again after delay
  stopping,   ///< stop() or SIGTERM/SIGINT: every child was asked to stop
  tick,       ///< SupervisorOptions::tick_interval passed (a time to print stats)
  /// A child gave every listener and connection to a new process (a takeover, see
  /// SupervisorOptions::server) and ended with status 0: its slot is done and not restarted.
  /// Once every slot is, run() returns 0.
  handed_over,
};

/// One event of run(), delivered on run()'s thread.
struct SupervisorEvent {
  SupervisorEventKind kind = SupervisorEventKind::started;  ///< what happened
  unsigned process = 0;  ///< the child's slot, 0..processes-1 (0 for all_ready, stopping, tick)
  int pid = 0;           ///< the child's pid (0 when no single child is meant)
  /// exited: the exit code (0..255), or minus the number of the signal that killed it.
  int status = 0;
  std::uint64_t restarts = 0;  ///< how many times this slot was restarted so far
  std::chrono::milliseconds delay{0};  ///< restarting: the back-off before the new start
  std::string text;  ///< the event as one line for a log ("process 1 (pid 42) killed by signal 9")
};

/// Options of a Supervisor. The constructor validates them (std::invalid_argument naming the
/// field and what to change).
struct SupervisorOptions {
  /// Child processes, 1..256. Each runs the child function once and is restarted when it ends
  /// before the supervisor stops.
  unsigned processes = 2;
  /// The options every child's Server starts from (ChildContext::options() is this, adjusted):
  /// its TCP listeners are shared by all children through SO_REUSEPORT (the kernel spreads
  /// connections over every child's shards). Port 0 is resolved once by the supervisor, so
  /// every child binds the same port. Unix-domain listeners cannot be shared and are refused.
  /// `admin`, when set, is served by the supervisor itself with the totals of every child.
  ///
  /// Upgrades (takeover, one process at a time):
  /// - `takeover_socket` = P: child i offers a takeover on "P.i" (P.0, P.1, ...). A child
  ///   whose connections all went to a new process ends with status 0 and its slot is done
  ///   (SupervisorEventKind::handed_over); once every slot is, run() returns 0.
  /// - `take_over` = P (a new supervisor, typically a new build): child i's first start takes
  ///   over "P.i" from the old supervisor's child i, one slot at a time (slot i+1 starts once
  ///   slot i is ready, that is, holds everything slot i of the old one held). A slot with no
  ///   "P.i" starts fresh; a slot whose takeover fails starts fresh after restart_backoff
  ///   and the old child keeps what it did not hand over. run() refuses to start (std::invalid_argument)
  ///   when the old supervisor has more processes than this one (seen by its children
  ///   listening on "P.n"; one restarting at that moment is missed, and keeps its slot). Every TCP port must be given
  ///   (the old one's), not 0. Set both (the same P) so that the next upgrade can follow.
  /// With either set, a TCP admin listener is bound with SO_REUSEPORT, so the new supervisor
  /// serves the same admin address (a Unix-domain admin path cannot be shared: give the new
  /// supervisor another one). Whether slot i takes over, and whether it offers "P.i", is
  /// probed at each start: it takes over only where an old child listens, and offers no path
  /// another process listens on (a restarted old child never fights the new one for it). If
  /// the new supervisor dies during a transfer, its children stop as always (their clients
  /// see a close); the old children keep what they had not handed over.
  ServerOptions server;
  /// Back-off before restarting a child that ended; doubled for each further restart of the
  /// same slot up to max_restart_backoff, and back to this after the child ran 10 s.
  std::chrono::milliseconds restart_backoff{100};
  std::chrono::milliseconds max_restart_backoff{5000};  ///< the cap of the doubling back-off
  /// On stop, each child first drains this long (Server::drain(): GET /health answers 503,
  /// everyone connected is still served), then stops gracefully; 0 = stop at once.
  std::chrono::milliseconds drain{0};
  /// How long after stop() began children may take to end; those still running then are
  /// killed (SIGKILL) and run() reports failure. Must exceed drain.
  std::chrono::milliseconds stop_timeout{30000};
  /// How often each child sends its Server::stats() to the supervisor (1 ms .. 1 min).
  std::chrono::milliseconds stats_interval{250};
  /// run() turns SIGTERM and SIGINT into stop() (and restores the previous handlers after).
  bool handle_signals = true;
  /// Every tick_interval a tick event; 0 = none.
  std::chrono::milliseconds tick_interval{0};
  /// Called on run()'s thread for each event; empty = exits, restarts and failures are
  /// written to stderr as "esockets supervisor: <text>". Must not call run().
  std::function<void(Supervisor&, const SupervisorEvent&)> on_event;
};

/// What a child process is told: which one it is and how to build and serve its Server.
/// Thread: the child's main thread (the one that runs the child function).
class ChildContext {
 public:
  /// The child's slot, 0..processes()-1 (a restarted child keeps its slot).
  unsigned process() const { return process_; }
  /// How many children the supervisor runs.
  unsigned processes() const { return processes_; }
  /// How many times this slot was restarted before this start (0 for the first).
  std::uint64_t restarts() const { return restarts_; }
  /// SupervisorOptions::server adjusted for a child: every TCP port resolved (the same in
  /// every child), ServerOptions::reuseport_shared set, admin cleared (the supervisor serves
  /// it), takeover_socket and take_over made this slot's ("P.<slot>"; take_over only on a
  /// takeover start). Build the child's Server from this.
  const ServerOptions& options() const { return *options_; }
  /// Serves `server` (already started) until the supervisor stops it: reports its stats every
  /// stats_interval (the first report tells the supervisor this child is ready), waits for
  /// SIGTERM or SIGINT (the supervisor's stop, or the supervisor's own death), drains for
  /// SupervisorOptions::drain (a second signal cuts it short), stops the server and sends the
  /// final stats. Returns 0, the child's exit status after a clean stop.
  int serve(Server& server) const;
  /// Sends one stats snapshot to the supervisor, for a child that runs its own loop instead
  /// of serve() (the first one marks it ready). Never blocks; a snapshot the supervisor has
  /// no room for is dropped (the next one replaces it). With `final` it waits up to 1 s for
  /// room: the last report before the child ends. `handed_over` (with final): the server
  /// gave everything to a new process (Server::handed_over()), so the slot is not restarted.
  void report(const Stats& stats, bool final = false, bool handed_over = false) const;

 private:
  friend class Supervisor;
  ChildContext() = default;
  unsigned process_ = 0;
  unsigned processes_ = 0;
  std::uint64_t restarts_ = 0;
  const ServerOptions* options_ = nullptr;
  int channel_ = -1;
  std::chrono::milliseconds drain_{0};
  std::chrono::milliseconds interval_{250};
};

/// The body of a child process: build a Server from ctx.options(), start it, and return
/// ctx.serve(server). Its return value is the child's exit status (an exception ends the
/// child with status 1, its message on stderr).
using ChildMain = std::function<int(const ChildContext& ctx)>;

/// One slot's view in SupervisorStats.
struct ProcessStats {
  unsigned process = 0;        ///< the slot, 0..processes-1
  int pid = 0;                 ///< the running child's pid, 0 while none runs
  bool ready = false;          ///< the running child reported at least once
  std::uint64_t restarts = 0;  ///< times this slot was restarted
  /// How the slot's last child ended: exit code, or minus the signal (0 if none ended yet).
  int last_status = 0;
  /// The slot's child handed everything to a new process (a takeover); the slot is done.
  bool handed_over = false;
  /// The slot's counters: the running child's last report plus the counters (not the gauges)
  /// of the children that ran in this slot before it. shards holds the running child's only.
  Stats stats;
};

/// Every child's counters, gathered by the supervisor (Supervisor::stats()).
struct SupervisorStats {
  /// One entry per slot, in slot order.
  std::vector<ProcessStats> processes;
  /// The sum over every slot: total adds up every child's total (exited children's counters
  /// included); shards lists the running children's shards, renumbered in slot order (slot
  /// 0's shards first) so that each has its own index; listeners are summed by address;
  /// imbalance is computed over all those shards; takeover_ms is the slowest child's last
  /// transfer. render_metrics() takes it as it is.
  Stats total;
  std::uint64_t restarts = 0;  ///< restarts over all slots
  unsigned running = 0;        ///< children alive now
  bool stopping = false;       ///< stop() began
};

/// Runs N child processes, each running a ChildMain (a Server of its own on the shared
/// listeners), restarts those that end, gathers their stats, and stops them all on stop() or
/// SIGTERM/SIGINT.
class Supervisor {
 public:
  /// Validates the options (std::invalid_argument naming the bad field). `child` runs in each
  /// child process.
  Supervisor(SupervisorOptions options, ChildMain child);
  /// Must not be destroyed while run() runs.
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  /// Resolves and holds the listeners' ports (a bound SO_REUSEPORT socket per TCP listener
  /// that never listens, so it takes no connection), starts the admin listener if any, forks
  /// the children, and supervises them until stop(): a child that ends is restarted after a
  /// back-off while the others keep serving. Then it sends SIGTERM to every child and returns
  /// once all ended: 0 if every child exited 0, otherwise the first failing child's exit code
  /// (128 + signal for a killed one). Throws std::system_error before forking anything when
  /// a port cannot be bound, std::logic_error if called twice. If a child of the first start
  /// ends before it was ever ready (it could not start its server), the others are stopped
  /// and run() returns that child's status instead of restarting it.
  int run();
  /// Starts stopping: run() forwards SIGTERM to every child and returns when all ended.
  /// Async-signal-safe (one eventfd write); from any thread; idempotent. Before run() it makes
  /// run() stop at once.
  void stop() noexcept;

  /// The port of the first TCP listener as every child binds it (valid once run() began).
  std::uint16_t port() const;
  /// The listeners' addresses as the children bind them ("127.0.0.1:41234"), valid once
  /// run() began.
  std::vector<std::string> addresses() const;
  /// The supervisor's admin listener as bound ("127.0.0.1:9100"), or "" without one.
  std::string admin_address() const;
  /// The latest stats of every child (each reports every stats_interval) and their totals.
  SupervisorStats stats() const;
  /// The options the supervisor was built with.
  const SupervisorOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Renders the supervisor's totals as render_metrics() does for one Server (shards labelled
/// by their renumbered index), followed by per-process families labelled process="N":
/// `<prefix>_process_up`, `_process_restarts_total`, `_process_connections`,
/// `_process_received_messages_total`, `_process_sent_messages_total`,
/// `_process_received_bytes_total`, `_process_sent_bytes_total`. The supervisor's admin
/// listener serves this.
std::string render_metrics(const SupervisorStats& stats,
                           MetricsFormat format = MetricsFormat::prometheus,
                           std::string_view prefix = "esockets");

}  // namespace esockets

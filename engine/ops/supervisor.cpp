// Supervisor: forks the children, restarts those that end, gathers their stats, stops them.
// (A child's own side, ChildContext, is engine/ops/child_context.cpp.)
//
// run() is one poll loop on the calling thread over: an eventfd that stop() writes (also from
// the SIGTERM/SIGINT handler), one pidfd per running child (readable once it ended), and one
// SOCK_SEQPACKET socket per child on which it sends its Server::stats() every
// stats_interval (engine/ops/supervisor_stats.hpp). The loop sleeps until the nearest restart,
// stop deadline or tick. The admin listener, if any, runs on its own thread and reads the
// gathered stats under the mutex.
//
// Ports: every TCP listener's port is bound once here, by a SO_REUSEPORT socket that never
// calls listen(). A socket joins its port's reuseport group only when it listens, so this one
// takes no connection; it holds the port (for this user's reuseport sockets only) across
// restarts, and turns port 0 into the port every child binds.
//
// Thread: run() on one thread; stop() and the accessors from any (stop() also from a signal
// handler). A child inherits only run()'s thread; it never takes the mutex (another thread may
// have held it at fork time).
#include "esockets/supervisor.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dirent.h>

#include <algorithm>
#include <cstddef>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <system_error>

#include "ops/admin.hpp"
#include "esockets/server.hpp"
#include "io/proxy_header.hpp"
#include "io/socket_ops.hpp"
#include "ops/supervisor_stats.hpp"
#include "takeover/takeover_wire.hpp"

namespace esockets {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A child that ran this long before ending is restarted after the first back-off again.
constexpr milliseconds kStableRun{10000};

std::atomic<Supervisor*> g_signal_target{nullptr};
static_assert(std::atomic<Supervisor*>::is_always_lock_free);

extern "C" void on_supervisor_signal(int) {
  if (Supervisor* s = g_signal_target.load()) s->stop();  // one eventfd write
}

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), "esockets: Supervisor: " + what);
}

int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

// Exit code, or minus the signal.
int status_code(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return -WTERMSIG(wstatus);
  return 1;
}

std::string describe_status(int code) {
  if (code >= 0) return "exited with status " + std::to_string(code);
  const char* name = sigabbrev_np(-code);
  return "killed by signal " + std::to_string(-code) + (name ? " (SIG" + std::string(name) + ")" : "");
}

// A bound, non-listening SO_REUSEPORT socket on host:port (see the header comment).
int reserve_port(const detail::ListenAddress& a, bool v6_only, std::uint16_t& port_out) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (a.kind == detail::ListenAddress::Kind::tcp6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(a.port);
    if (inet_pton(AF_INET6, a.host.c_str(), &s6->sin6_addr) != 1) errno = EINVAL;
    len = sizeof(sockaddr_in6);
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(a.port);
    if (inet_pton(AF_INET, a.host.c_str(), &s4->sin_addr) != 1) errno = EINVAL;
    len = sizeof(sockaddr_in);
  }
  const std::string where = (a.kind == detail::ListenAddress::Kind::tcp6 ? "[" + a.host + "]" : a.host) +
                            ":" + std::to_string(a.port);
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_errno(errno, "socket() for " + where);
  const int one = 1;
  const int v6 = v6_only ? 1 : 0;
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      (ss.ss_family == AF_INET6 && ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof v6) != 0) ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    const int err = errno;
    ::close(fd);
    throw_errno(err, "cannot bind " + where +
                         (err == EADDRINUSE ? " (the port is taken by a socket without SO_REUSEPORT "
                                              "or of another user: choose another port, or 0)"
                                            : ""));
  }
  sockaddr_storage got{};
  socklen_t glen = sizeof got;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&got), &glen);
  port_out = ntohs(got.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                                             : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
  return fd;
}

// Slot i's takeover socket: the configured path with ".i" appended.
std::string slot_path(const std::string& base, unsigned i) { return base + "." + std::to_string(i); }

std::string tcp_address(const detail::ListenAddress& a, std::uint16_t port) {
  return (a.kind == detail::ListenAddress::Kind::tcp6 ? "[" + a.host + "]" : a.host) + ":" +
         std::to_string(port);
}

// In a child: true if `fd` is a socket of the supervisor's admin listener (the listener or a
// connection it accepted), which the child must not hold open.
bool is_admin_socket(int fd, std::uint16_t admin_port, const std::string& admin_path) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
  if (ss.ss_family == AF_INET && admin_port != 0) {
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port) == admin_port;
  }
  if (ss.ss_family == AF_INET6 && admin_port != 0) {
    return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port) == admin_port;
  }
  if (ss.ss_family == AF_UNIX && !admin_path.empty()) {
    const auto* un = reinterpret_cast<sockaddr_un*>(&ss);
    return len > offsetof(sockaddr_un, sun_path) && admin_path == un->sun_path;
  }
  return false;
}

}  // namespace

struct Supervisor::Impl {
  struct Slot {
    pid_t pid = 0;
    int pidfd = -1;
    int chan = -1;  // our end of the child's report socket
    bool ready = false;
    bool ever_ready = false;
    bool started_once = false;
    // Rolling upgrade (server.take_over): the next start takes over the old supervisor's
    // child of this slot; cleared once a child is ready or a takeover failed.
    bool take_over_pending = false;
    bool takeover_failed = false;  // a takeover start ended before it was ready: start fresh
    Clock::time_point failed_at{};
    pid_t takeover_from = 0;  // who listened on the old path when the takeover started (0: unknown)
    bool retaken = false;     // after a failed takeover, a restarted old child was taken over
    bool waiting_turn = false;  // rolling upgrade: starts once the slot before it is ready
    // This start offers its takeover socket: set at each start, off while another process
    // listens on the path (the old child after a failed takeover, or the new process that
    // took this slot's connections), or the child could not start at all.
    bool offer = false;
    bool handed_over_report = false;  // the running child's last report said handed over
    bool handed_over = false;  // its child gave everything to a new process: not restarted
    std::uint64_t restarts = 0;
    int last_status = 0;
    Clock::time_point started{};
    bool restart_pending = false;
    Clock::time_point restart_at{};
    milliseconds backoff{0};
    Stats base;  // counters of the slot's earlier children
    Stats last;  // the running child's latest report
  };

  SupervisorOptions opts;
  ChildMain child;
  ServerOptions child_opts;  // opts.server resolved for the children
  std::vector<std::string> addresses;
  std::vector<int> reserved;
  std::atomic<std::uint16_t> port{0};
  int stop_fd = -1;
  std::atomic<bool> stop_requested{false};
  bool ran = false;
  pid_t self = 0;

  std::unique_ptr<detail::AdminServer> admin;
  detail::AdminServer::Hooks admin_hooks;
  std::uint16_t admin_port = 0;
  std::string admin_path;

  mutable std::mutex mu;  // slots' pid, ready, restarts, last_status, base, last; admin_address
  std::string admin_address;
  std::vector<Slot> slots;
  bool stopping = false;  // run()'s thread writes it under mu

  int final_status = 0;
  bool all_ready_sent = false;

  void emit(Supervisor& sup, SupervisorEvent e) {
    if (opts.on_event) {
      opts.on_event(sup, e);
      return;
    }
    if (e.kind == SupervisorEventKind::exited || e.kind == SupervisorEventKind::restarting) {
      std::fprintf(stderr, "esockets supervisor: %s\n", e.text.c_str());
    }
  }

  void resolve();
  void plan_takeovers();
  bool all_handed_over() const {
    return std::all_of(slots.begin(), slots.end(), [](const Slot& s) { return s.handed_over; });
  }
  void spawn(Supervisor& sup, unsigned i);
  [[noreturn]] void child_main(unsigned i, int chan, pid_t parent);
  void read_reports(Supervisor& sup, unsigned i);
  void reap(Supervisor& sup, unsigned i, int wstatus);
  void begin_stop(Supervisor& sup, Clock::time_point& deadline);
};

// --- options ---

Supervisor::Supervisor(SupervisorOptions options, ChildMain child) : impl_(std::make_unique<Impl>()) {
  auto bad = [](const std::string& field, const std::string& what) {
    throw std::invalid_argument("esockets: SupervisorOptions." + field + " " + what);
  };
  if (options.processes < 1 || options.processes > 256) {
    bad("processes", "is " + std::to_string(options.processes) + "; give 1 to 256");
  }
  if (!child) bad("(child function)", "is empty; give the function each child process runs");
  if (options.restart_backoff.count() < 0 || options.restart_backoff.count() > 3600000) {
    bad("restart_backoff", "must be 0 ms to 1 hour");
  }
  if (options.max_restart_backoff < options.restart_backoff ||
      options.max_restart_backoff.count() > 3600000) {
    bad("max_restart_backoff", "must be at least restart_backoff and at most 1 hour");
  }
  if (options.stats_interval.count() < 1 || options.stats_interval.count() > 60000) {
    bad("stats_interval", "must be 1 ms to 1 min");
  }
  if (options.drain.count() < 0) bad("drain", "must not be negative");
  if (options.stop_timeout <= options.drain) {
    bad("stop_timeout", "must be longer than drain (children that drain are killed otherwise)");
  }
  if (options.tick_interval.count() < 0) bad("tick_interval", "must not be negative (0 = no ticks)");
  impl_->opts = std::move(options);
  impl_->child = std::move(child);
  impl_->slots.resize(impl_->opts.processes);
  // Listener addresses are checked now; ports are bound by run().
  const ServerOptions& so = impl_->opts.server;
  for (std::size_t i = 0; i < so.listeners.size(); ++i) {
    detail::ListenAddress a;
    std::string error;
    if (!detail::parse_listen_address(so.listeners[i].address, a, error)) {
      throw std::invalid_argument("esockets: SupervisorOptions.server.listeners[" + std::to_string(i) +
                                  "].address: " + error);
    }
    if (a.kind == detail::ListenAddress::Kind::unix_path ||
        a.kind == detail::ListenAddress::Kind::unix_abstract) {
      throw std::invalid_argument(
          "esockets: SupervisorOptions.server.listeners[" + std::to_string(i) + "] '" +
          so.listeners[i].address +
          "' is a Unix-domain socket, which only one process can listen on: with several "
          "processes use TCP listeners (SO_REUSEPORT shares them)");
    }
  }
  if (so.listeners.empty() && !detail::is_numeric_host(so.host)) {
    throw std::invalid_argument("esockets: SupervisorOptions.server.host '" + so.host +
                                "' is not a numeric IPv4/IPv6 address");
  }
  // Each slot appends ".<slot>" to the takeover paths; sockaddr_un has room for 107 bytes.
  for (const auto& [field, path] : {std::pair{"takeover_socket", &so.takeover_socket},
                                    std::pair{"take_over", &so.take_over}}) {
    if (!path->empty() && path->size() + 4 > sizeof(sockaddr_un::sun_path) - 1) {
      throw std::invalid_argument(std::string("esockets: SupervisorOptions.server.") + field +
                                  " is " + std::to_string(path->size()) +
                                  " bytes; each process appends \".<slot>\", so give at most " +
                                  std::to_string(sizeof(sockaddr_un::sun_path) - 5));
    }
  }
  if (!so.take_over.empty()) {
    bool port0 = so.listeners.empty() && so.port == 0;
    for (const ListenerOptions& l : so.listeners) {
      detail::ListenAddress a;
      std::string error;
      port0 = port0 || (detail::parse_listen_address(l.address, a, error) && a.port == 0);
    }
    if (port0) {
      throw std::invalid_argument(
          "esockets: SupervisorOptions.server.take_over needs every listener's port given (the "
          "old processes' ports): port 0 would hold another port for restarted children");
    }
  }
  impl_->stop_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl_->stop_fd < 0) throw_errno(errno, "eventfd");
}

Supervisor::~Supervisor() {
  if (g_signal_target.load() == this) g_signal_target.store(nullptr);
  for (int fd : impl_->reserved) ::close(fd);
  if (impl_->stop_fd >= 0) ::close(impl_->stop_fd);
}

void Supervisor::Impl::resolve() {
  child_opts = opts.server;
  child_opts.reuseport_shared = true;
  child_opts.admin.clear();
  child_opts.takeover_socket.clear();  // per slot: child_main()
  child_opts.take_over.clear();
  if (child_opts.listeners.empty()) {
    detail::ListenAddress a;
    a.kind = child_opts.host.find(':') != std::string::npos ? detail::ListenAddress::Kind::tcp6
                                                            : detail::ListenAddress::Kind::tcp4;
    a.host = child_opts.host;
    a.port = child_opts.port;
    std::uint16_t p = 0;
    reserved.push_back(reserve_port(a, false, p));
    child_opts.port = p;
    addresses.push_back(tcp_address(a, p));
    port.store(p);
    return;
  }
  for (ListenerOptions& l : child_opts.listeners) {
    detail::ListenAddress a;
    std::string error;
    detail::parse_listen_address(l.address, a, error);  // checked by the constructor
    std::uint16_t p = 0;
    reserved.push_back(reserve_port(a, l.v6_only, p));
    l.address = tcp_address(a, p);
    addresses.push_back(l.address);
    if (port.load() == 0) port.store(p);
  }
}

// A rolling upgrade: an old child that no slot would take over is refused up front: it would
// keep its connections and its supervisor forever. Which slots take over is decided at each
// slot's start (spawn()), by whether an old child listens on its path then.
void Supervisor::Impl::plan_takeovers() {
  const std::string& base = opts.server.take_over;
  if (base.empty()) return;
  const auto n = static_cast<unsigned>(slots.size());
  if (detail::control_socket_live(slot_path(base, n))) {
    unsigned old = n;
    while (old < 256 && detail::control_socket_live(slot_path(base, old))) ++old;
    throw std::invalid_argument("esockets: Supervisor: the old processes offer a takeover at " +
                                slot_path(base, 0) + " .. " + slot_path(base, old - 1) + ", " +
                                std::to_string(old) + " of them; run at least " +
                                std::to_string(old) + " processes (processes = " +
                                std::to_string(n) + " would leave " + std::to_string(old - n) +
                                " behind)");
  }
}

// --- children ---

void Supervisor::Impl::spawn(Supervisor& sup, unsigned i) {
  Slot& s = slots[i];
  // Probed now, not at run(): an old child may have been restarted, or have ended, since.
  const pid_t old_pid = !opts.server.take_over.empty() && !s.ever_ready && !s.takeover_failed
                            ? detail::control_socket_owner(slot_path(opts.server.take_over, i))
                            : -1;
  s.take_over_pending = old_pid >= 0;
  s.takeover_from = std::max<pid_t>(old_pid, 0);
  const std::string offer_path = slot_path(opts.server.takeover_socket, i);
  s.offer = !opts.server.takeover_socket.empty() &&
            ((s.take_over_pending && offer_path == slot_path(opts.server.take_over, i)) ||
             !detail::control_socket_live(offer_path));
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    const int err = errno;
    s.restart_pending = true;
    s.restart_at = Clock::now() + std::max(opts.restart_backoff, milliseconds(100));
    emit(sup, {SupervisorEventKind::restarting, i, 0, 0, s.restarts, opts.restart_backoff,
               "process " + std::to_string(i) + ": socketpair failed: " + std::strerror(err)});
    return;
  }
  // A signal must not run our handler in the child before it resets its dispositions.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  std::fflush(nullptr);  // or the child would write our buffered output again
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(sv[0]);
    child_main(i, sv[1], parent);
  }
  const int fork_err = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(sv[1]);
  if (pid < 0) {
    ::close(sv[0]);
    s.restart_pending = true;
    const milliseconds delay = std::max(opts.restart_backoff, milliseconds(100));
    s.restart_at = Clock::now() + delay;
    emit(sup, {SupervisorEventKind::restarting, i, 0, 0, s.restarts, delay,
               "process " + std::to_string(i) + ": fork failed: " + std::strerror(fork_err)});
    return;
  }
  ::fcntl(sv[0], F_SETFL, ::fcntl(sv[0], F_GETFL) | O_NONBLOCK);
  {
    std::lock_guard lk(mu);
    s.pid = pid;
    s.ready = false;
    s.chan = sv[0];
    s.pidfd = open_pidfd(pid);
    s.started = Clock::now();
    s.restart_pending = false;
    s.started_once = true;
    s.handed_over_report = false;
  }
  std::string how;
  if (s.take_over_pending) {
    how = " to take over " + slot_path(opts.server.take_over, i) +
          (s.takeover_from > 0 ? " from pid " + std::to_string(s.takeover_from) : std::string()) +
          (s.retaken ? " (its first takeover failed and the old supervisor restarted that process)"
                     : "");
  }
  emit(sup, {SupervisorEventKind::started, i, pid, 0, s.restarts, milliseconds(0),
             "process " + std::to_string(i) + " (pid " + std::to_string(pid) + ") started" + how});
}

void Supervisor::Impl::child_main(unsigned i, int chan, pid_t parent) {
  // Stop signals stay blocked: ChildContext::serve() waits for them with sigtimedwait.
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGCHLD, SIG_DFL);
  // If the supervisor dies, the child stops as if asked to.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) ::raise(SIGTERM);  // it died before prctl: stays pending
  // The supervisor's descriptors are not the child's to hold.
  ::close(stop_fd);
  for (int fd : reserved) ::close(fd);
  for (const Slot& o : slots) {
    if (o.chan >= 0) ::close(o.chan);
    if (o.pidfd >= 0) ::close(o.pidfd);
  }
  if (admin_port != 0 || !admin_path.empty()) {
    if (DIR* d = ::opendir("/proc/self/fd")) {
      std::vector<int> fds;
      while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9') fds.push_back(std::atoi(e->d_name));
      }
      ::closedir(d);
      for (int fd : fds) {
        if (fd > 2 && fd != chan && is_admin_socket(fd, admin_port, admin_path)) ::close(fd);
      }
    }
  }
  ServerOptions mine = child_opts;
  if (slots[i].offer) {
    mine.takeover_socket = slot_path(opts.server.takeover_socket, i);
  }
  if (slots[i].take_over_pending) mine.take_over = slot_path(opts.server.take_over, i);
  ChildContext ctx;
  ctx.process_ = i;
  ctx.processes_ = opts.processes;
  ctx.restarts_ = slots[i].restarts;
  ctx.options_ = &mine;
  ctx.channel_ = chan;
  ctx.drain_ = opts.drain;
  ctx.interval_ = opts.stats_interval;
  int rc = 1;
  try {
    rc = child(ctx);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "esockets supervisor: process %u: %s\n", i, e.what());
  } catch (...) {
    std::fprintf(stderr, "esockets supervisor: process %u: unknown exception\n", i);
  }
  std::fflush(nullptr);
  ::_exit(rc & 0xff);  // not exit(): the parent's atexit handlers and statics are not ours
}

void Supervisor::Impl::read_reports(Supervisor& sup, unsigned i) {
  Slot& s = slots[i];
  std::string buf;
  while (s.chan >= 0) {
    const ssize_t want = ::recv(s.chan, nullptr, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
    if (want < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (want <= 0) {  // the child's end is closed (it ended) or broken
      ::close(s.chan);
      std::lock_guard lk(mu);
      s.chan = -1;
      return;
    }
    buf.resize(static_cast<std::size_t>(want));
    const ssize_t n = ::recv(s.chan, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n != want) continue;
    auto report = detail::decode_report(buf);
    if (!report) continue;  // not a report of this program: ignored
    bool first = false;
    std::string took;
    {
      std::lock_guard lk(mu);
      s.last = std::move(report->stats);
      s.handed_over_report = report->handed_over;
      first = !s.ready && s.pid != 0;
      if (first) s.ready = s.ever_ready = true;
      if (first && s.take_over_pending) {
        char ms[32];
        std::snprintf(ms, sizeof ms, "%.1f", s.last.takeover_ms);
        took = "; took over " + std::to_string(s.last.taken_over_in) + " connections from " +
               slot_path(opts.server.take_over, i) + " in " + ms + " ms";
      }
      if (first) s.take_over_pending = false;
    }
    if (first) {
      emit(sup, {SupervisorEventKind::ready, i, s.pid, 0, s.restarts, milliseconds(0),
                 "process " + std::to_string(i) + " (pid " + std::to_string(s.pid) + ") ready" + took});
      // One slot at a time: the next waits for this one's takeover to finish.
      if (i + 1 < slots.size() && slots[i + 1].waiting_turn && !stopping) {
        slots[i + 1].waiting_turn = false;
        slots[i + 1].restart_pending = true;
        slots[i + 1].restart_at = Clock::now();
      }
      bool all = !all_ready_sent;
      for (const Slot& o : slots) all = all && o.ever_ready;
      if (all) {
        all_ready_sent = true;
        emit(sup, {SupervisorEventKind::all_ready, 0, 0, 0, 0, milliseconds(0),
                   std::to_string(slots.size()) + " processes ready"});
      }
    }
  }
}

void Supervisor::Impl::reap(Supervisor& sup, unsigned i, int wstatus) {
  Slot& s = slots[i];
  read_reports(sup, i);  // its final report was sent before it ended
  if (s.chan >= 0) ::close(s.chan);
  if (s.pidfd >= 0) ::close(s.pidfd);
  const pid_t pid = s.pid;
  const int code = status_code(wstatus);
  const auto lived = Clock::now() - s.started;
  const bool gave_away = code == 0 && s.handed_over_report;
  {
    std::lock_guard lk(mu);
    s.handed_over = gave_away;
    unsigned none = 0;
    detail::accumulate(s.base, detail::counters_only(s.last), none);
    s.last = Stats{};
    s.pid = 0;
    s.ready = false;
    s.chan = -1;
    s.pidfd = -1;
    s.last_status = code;
  }
  const std::string who = "process " + std::to_string(i) + " (pid " + std::to_string(pid) + ") ";
  emit(sup, {SupervisorEventKind::exited, i, pid, code, s.restarts, milliseconds(0),
             who + describe_status(code)});
  if (gave_away) {
    emit(sup, {SupervisorEventKind::handed_over, i, pid, 0, s.restarts, milliseconds(0),
               who + "handed every connection to a new process; the slot is done"});
    return;
  }
  if (stopping) {
    if (code != 0 && final_status == 0) final_status = code > 0 ? code : 128 - code;
    return;
  }
  if (!s.ever_ready && s.take_over_pending) {
    // The old process refused or failed; it keeps serving what it holds. This slot serves
    // the shared listeners beside it.
    const std::string path = slot_path(opts.server.take_over, i);
    s.take_over_pending = false;
    s.takeover_failed = true;
    s.failed_at = Clock::now();
    s.restart_pending = true;
    s.restart_at = Clock::now() + opts.restart_backoff;
    emit(sup, {SupervisorEventKind::restarting, i, pid, code, s.restarts, opts.restart_backoff,
               who + "could not take over " + path + " (" + describe_status(code) +
                   "); starting it fresh in " + std::to_string(opts.restart_backoff.count()) +
                   " ms: the old process keeps what it did not hand over"});
    return;
  }
  if (!s.ever_ready && !all_ready_sent) {
    // It never served: a bad option, a port taken. Restarting would fail the same way.
    if (final_status == 0) final_status = code > 0 ? code : code < 0 ? 128 - code : 1;
    SupervisorEvent e{SupervisorEventKind::stopping, i, pid, code, s.restarts, milliseconds(0),
                      who + "ended before it was ready; stopping the others"};
    std::fprintf(stderr, "esockets supervisor: %s\n", e.text.c_str());
    stop_requested.store(true);
    const std::uint64_t one = 1;
    (void)!::write(stop_fd, &one, sizeof one);
    return;
  }
  if (lived >= kStableRun || s.backoff.count() == 0) s.backoff = opts.restart_backoff;
  const milliseconds delay = s.backoff;
  s.backoff = std::min(opts.max_restart_backoff, std::max(delay * 2, milliseconds(1)));
  s.restart_pending = true;
  s.restart_at = Clock::now() + delay;
  emit(sup, {SupervisorEventKind::restarting, i, pid, code, s.restarts, delay,
             who + "will be restarted in " + std::to_string(delay.count()) + " ms (restart " +
                 std::to_string(s.restarts + 1) + ")"});
}

void Supervisor::Impl::begin_stop(Supervisor& sup, Clock::time_point& deadline) {
  {
    std::lock_guard lk(mu);
    if (stopping) return;
    stopping = true;
  }
  stop_requested.store(true);
  deadline = Clock::now() + opts.stop_timeout;
  unsigned running = 0;
  for (Slot& s : slots) {
    s.restart_pending = false;
    s.waiting_turn = false;
    if (s.pid > 0) {
      ::kill(s.pid, SIGTERM);
      ++running;
    }
  }
  emit(sup, {SupervisorEventKind::stopping, 0, 0, 0, 0, milliseconds(0),
             "stopping " + std::to_string(running) + " processes"});
}

// --- run ---

int Supervisor::run() {
  Impl& m = *impl_;
  if (m.ran) throw std::logic_error("esockets: Supervisor::run() called twice");
  m.ran = true;
  m.self = ::getpid();
  m.resolve();  // throws before anything is forked
  m.plan_takeovers();
  // A child is reaped by us (waitpid), so SIGCHLD must not be ignored.
  struct sigaction old_chld {};
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGCHLD, &dfl, &old_chld);
  struct sigaction old_term {}, old_int {};
  if (m.opts.handle_signals) {
    g_signal_target.store(this);
    struct sigaction sa {};
    sa.sa_handler = on_supervisor_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGTERM, &sa, &old_term);
    ::sigaction(SIGINT, &sa, &old_int);
  }
  if (!m.opts.server.admin.empty()) {
    detail::AdminServer::Hooks hooks;
    hooks.metrics = [this](MetricsFormat f) { return render_metrics(stats(), f); };
    hooks.draining = [this] { return impl_->stop_requested.load(); };
    // An upgrade's new supervisor binds the same admin address while the old one still runs.
    hooks.reuse_port = !m.opts.server.takeover_socket.empty() || !m.opts.server.take_over.empty();
    m.admin_hooks = hooks;
    m.admin = std::make_unique<detail::AdminServer>(m.opts.server.admin, std::move(hooks));  // binds
    m.admin_port = m.admin->port();
    std::lock_guard lk(m.mu);
    m.admin_address = m.admin->address();
    if (m.admin_address.rfind("unix:", 0) == 0) m.admin_path = m.admin_address.substr(5);
  }

  // The first children are forked while this is the only thread; the admin thread starts after.
  // A rolling upgrade starts the slots one after another (read_reports starts the next).
  const bool upgrading = !m.opts.server.take_over.empty();
  for (unsigned i = 0; i < m.slots.size(); ++i) {
    if (upgrading && i > 0) {
      m.slots[i].waiting_turn = true;
    } else {
      m.spawn(*this, i);
    }
  }
  if (m.admin) m.admin->start();

  Clock::time_point deadline{};
  Clock::time_point next_tick = Clock::now() + m.opts.tick_interval;
  std::vector<pollfd> pfds;
  std::vector<std::pair<unsigned, bool>> what;  // slot, is pidfd
  while (true) {
    bool any_running = false;
    for (const auto& s : m.slots) any_running = any_running || s.pid > 0;
    if ((m.stopping || m.all_handed_over()) && !any_running) break;

    pfds.clear();
    what.clear();
    pfds.push_back({m.stop_fd, POLLIN, 0});
    what.emplace_back(0, false);
    bool missing_pidfd = false;
    for (unsigned i = 0; i < m.slots.size(); ++i) {
      const auto& s = m.slots[i];
      if (s.pid <= 0) continue;
      if (s.pidfd >= 0) {
        pfds.push_back({s.pidfd, POLLIN, 0});
        what.emplace_back(i, true);
      } else {
        missing_pidfd = true;
      }
      if (s.chan >= 0) {
        pfds.push_back({s.chan, POLLIN, 0});
        what.emplace_back(i, false);
      }
    }
    const auto now = Clock::now();
    Clock::time_point wake = Clock::time_point::max();
    for (const auto& s : m.slots) {
      if (s.restart_pending) wake = std::min(wake, s.restart_at);
    }
    if (m.stopping) wake = std::min(wake, deadline);
    if (m.opts.tick_interval.count() > 0) wake = std::min(wake, next_tick);
    int timeout = -1;
    if (wake != Clock::time_point::max()) {
      timeout = static_cast<int>(std::max<long long>(
          0, std::chrono::duration_cast<milliseconds>(wake - now).count() + 1));
    }
    if (missing_pidfd && (timeout < 0 || timeout > 50)) timeout = 50;  // no pidfd: poll waitpid
    const int n = ::poll(pfds.data(), pfds.size(), timeout);
    if (n < 0 && errno != EINTR) throw_errno(errno, "poll");

    if (n > 0 && (pfds[0].revents & POLLIN) != 0) {
      std::uint64_t v = 0;
      (void)!::read(m.stop_fd, &v, sizeof v);
      m.begin_stop(*this, deadline);
    }
    for (std::size_t k = 1; n > 0 && k < pfds.size(); ++k) {
      if (pfds[k].revents == 0 || what[k].second) continue;
      m.read_reports(*this, what[k].first);
    }
    // Reap: pidfd readable, or (without pidfds) whoever waitpid says ended.
    for (unsigned i = 0; i < m.slots.size(); ++i) {
      auto& s = m.slots[i];
      if (s.pid <= 0) continue;
      int ws = 0;
      const pid_t r = ::waitpid(s.pid, &ws, WNOHANG);
      if (r == s.pid) m.reap(*this, i, ws);
    }
    const auto after = Clock::now();
    if (m.stopping && after >= deadline) {
      for (auto& s : m.slots) {
        if (s.pid > 0) ::kill(s.pid, SIGKILL);  // reaped next pass, counted as failed
      }
      deadline = after + milliseconds(1000);
    }
    for (unsigned i = 0; i < m.slots.size() && !m.stopping; ++i) {
      auto& s = m.slots[i];
      if (!s.restart_pending || after < s.restart_at) continue;
      // After a failed takeover the old child takes its connections back and listens on P.i
      // again; it keeps P.i (its clients are the ones a next upgrade must reach). Until it does,
      // or takeover_timeout passed (it died), the fresh start waits rather than take the path.
      // If it died and the old supervisor restarted it in that time, the process now on the
      // old path is another one: it is taken over (once), or this slot would serve beside it
      // without a path and the next upgrade could not reach it.
      if (s.takeover_failed && !s.ever_ready && after < s.failed_at + m.opts.server.takeover_timeout) {
        const pid_t now_on = detail::control_socket_owner(slot_path(m.opts.server.take_over, i));
        if (!s.retaken && s.takeover_from > 0 && now_on > 0 && now_on != s.takeover_from) {
          s.takeover_failed = false;
          s.retaken = true;
        } else if (!m.opts.server.takeover_socket.empty() &&
                   !detail::control_socket_live(slot_path(m.opts.server.takeover_socket, i))) {
          s.restart_at = after + milliseconds(20);
          continue;
        }
      }
      if (s.started_once) {
        std::lock_guard lk(m.mu);
        ++s.restarts;
      }
#if defined(__SANITIZE_ADDRESS__)
      // GCC 12's ASan allocator has no fork handlers: an allocator lock the admin thread
      // holds at fork time would stay locked in the child forever. Under ASan the admin
      // listener pauses while a child is forked and binds its address again right after.
      // glibc's malloc needs no such care.
      if (m.admin) {
        const std::string bound = m.admin_address;
        m.admin->stop();
        m.admin.reset();
        m.spawn(*this, i);
        try {
          m.admin = std::make_unique<detail::AdminServer>(bound, m.admin_hooks);
          m.admin->start();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "esockets supervisor: admin listener lost: %s\n", e.what());
          m.admin.reset();
        }
        continue;
      }
#endif
      m.spawn(*this, i);
    }
    if (m.opts.tick_interval.count() > 0 && after >= next_tick) {
      next_tick = after + m.opts.tick_interval;
      m.emit(*this, {SupervisorEventKind::tick, 0, 0, 0, 0, milliseconds(0), "tick"});
    }
  }

  if (m.admin) m.admin->stop();
  if (m.opts.handle_signals) {
    ::sigaction(SIGTERM, &old_term, nullptr);
    ::sigaction(SIGINT, &old_int, nullptr);
    g_signal_target.store(nullptr);
  }
  ::sigaction(SIGCHLD, &old_chld, nullptr);
  return m.final_status;
}

void Supervisor::stop() noexcept {
  impl_->stop_requested.store(true);
  const std::uint64_t one = 1;
  (void)!::write(impl_->stop_fd, &one, sizeof one);
}

std::uint16_t Supervisor::port() const { return impl_->port.load(); }

std::vector<std::string> Supervisor::addresses() const {
  std::lock_guard lk(impl_->mu);
  return impl_->addresses;
}

std::string Supervisor::admin_address() const {
  std::lock_guard lk(impl_->mu);
  return impl_->admin_address;
}

const SupervisorOptions& Supervisor::options() const { return impl_->opts; }

SupervisorStats Supervisor::stats() const {
  SupervisorStats out;
  unsigned next_shard = 0;
  std::lock_guard lk(impl_->mu);
  out.stopping = impl_->stopping;
  for (unsigned i = 0; i < impl_->slots.size(); ++i) {
    const auto& s = impl_->slots[i];
    ProcessStats p;
    p.process = i;
    p.pid = s.pid;
    p.ready = s.ready;
    p.restarts = s.restarts;
    p.last_status = s.last_status;
    p.handed_over = s.handed_over;
    unsigned own = 0;
    detail::accumulate(p.stats, s.base, own);
    detail::accumulate(p.stats, s.last, own);
    detail::finish_sum(p.stats);
    detail::accumulate(out.total, s.base, next_shard);
    detail::accumulate(out.total, s.last, next_shard);
    out.restarts += s.restarts;
    if (s.pid > 0) ++out.running;
    out.processes.push_back(std::move(p));
  }
  detail::finish_sum(out.total);
  return out;
}

}  // namespace esockets

#include "core/server_core.hpp"

#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <fcntl.h>
#include <stdexcept>
#include <string>

#include "esockets/metrics.hpp"
#include "esockets/server.hpp"
#include "shard/send_queue.hpp"
#include "shard/shard.hpp"
#include "ops/supervisor_stats.hpp"
#include "io/socket_ops.hpp"
#include "io/uring.hpp"
#include "core/threads.hpp"
#include <linux/filter.h>
#include <sys/socket.h>
#include <chrono>
#include <thread>
#include "mailbox/worker.hpp"

namespace esockets::detail {

thread_local ThreadContext tls_context;

namespace {

[[noreturn]] void bad_option(const std::string& field, const std::string& why) {
  throw std::invalid_argument("esockets: ServerOptions." + field + " " + why);
}

constexpr std::size_t kFdReserve = 64;

}  // namespace

// automatic: ESOCKETS_BACKEND (epoll or io_uring) when set, like libuv's UV_USE_IO_URING, so
// a deployment or a test run can switch every server of a process; epoll otherwise.
Backend resolve_backend(Backend wanted) {
  std::string_view from = "ServerOptions.backend";
  if (wanted == Backend::automatic) {
    const char* env = std::getenv("ESOCKETS_BACKEND");
    const std::string_view e = env != nullptr ? env : "";
    if (e.empty() || e == "automatic" || e == "epoll") return Backend::epoll;
    if (e != "io_uring") {
      throw std::invalid_argument("esockets: ESOCKETS_BACKEND must be epoll, io_uring or "
                                  "automatic (got '" + std::string(e) + "')");
    }
    wanted = Backend::io_uring;
    from = "ESOCKETS_BACKEND";
  }
  if (wanted == Backend::io_uring && !Ring::unsupported_reason().empty()) {
    throw std::invalid_argument("esockets: " + std::string(from) +
                                " asks for io_uring, which this kernel cannot run: " +
                                Ring::unsupported_reason() + "; use epoll");
  }
  return wanted;
}

void validate_options_or_throw(const ServerOptions& o) {
  if (o.shards < 1 || o.shards > ServerCore::kMaxShards) {
    bad_option("shards", "must be between 1 and 254 (got " + std::to_string(o.shards) + ")");
  }
  if (o.takeover_timeout.count() <= 0) {
    bad_option("takeover_timeout", "must be positive (got " +
                                       std::to_string(o.takeover_timeout.count()) + " ms)");
  }
  if (o.workers > ServerCore::kMaxWorkers) {
    bad_option("workers", "must be at most 255 (got " + std::to_string(o.workers) + ")");
  }
  if (o.listeners.empty() && !is_numeric_host(o.host)) {
    bad_option("host", "must be a numeric IPv4 or IPv6 address such as 127.0.0.1 or :: (got '" +
                           o.host + "')");
  }
  if (o.backlog < 1) bad_option("backlog", "must be at least 1");
  if (o.read_chunk < 512 || o.read_chunk > (16u << 20)) {
    bad_option("read_chunk", "must be between 512 bytes and 16 MiB");
  }
  if (o.framing == Framing::length_prefixed && o.length_prefix_bytes != 1 &&
      o.length_prefix_bytes != 2 && o.length_prefix_bytes != 4) {
    bad_option("length_prefix_bytes", "must be 1, 2 or 4");
  }
  if (o.framing == Framing::custom && o.decoder == nullptr) {
    bad_option("decoder", "must be set with framing = Framing::custom");
  }
  if (o.framing != Framing::custom && o.decoder != nullptr) {
    bad_option("decoder", "is used only with framing = Framing::custom (set framing, or drop it)");
  }
  if (o.max_frame < 1 || o.max_frame > (1u << 30)) {
    bad_option("max_frame", "must be between 1 byte and 1 GiB");
  }
  if (o.output_low_watermark > o.output_high_watermark) {
    bad_option("output_low_watermark", "must not exceed output_high_watermark");
  }
  if (o.output_high_watermark > o.output_hard_cap) {
    bad_option("output_high_watermark", "must not exceed output_hard_cap");
  }
  if (o.output_hard_cap < 1 || o.output_hard_cap > (std::size_t{1} << 32) - 1) {
    bad_option("output_hard_cap", "must be between 1 byte and 4 GiB");
  }
  if (o.output_total_cap < o.output_hard_cap) {
    bad_option("output_total_cap", "must be at least output_hard_cap");
  }
  if (o.idle_timeout.count() < 0) bad_option("idle_timeout", "must not be negative (0 = off)");
  if (o.frame_timeout.count() < 0) bad_option("frame_timeout", "must not be negative (0 = off)");
  if (o.write_timeout.count() < 0) bad_option("write_timeout", "must not be negative (0 = off)");
  if (o.socket_send_buffer < 0 || o.socket_receive_buffer < 0) {
    bad_option("socket_send_buffer/socket_receive_buffer", "must not be negative (0 = kernel default)");
  }
  if (o.worker_queue_capacity < 16 || o.worker_queue_capacity > (1u << 20)) {
    bad_option("worker_queue_capacity", "must be between 16 and 1048576");
  }
  if (o.command_queue_capacity < 16 || o.command_queue_capacity > 65534) {
    bad_option("command_queue_capacity", "must be between 16 and 65534");
  }
  if (o.handoff_poll.count() < 0 || o.handoff_poll > std::chrono::seconds(1)) {
    bad_option("handoff_poll", "must be between 0 and 1 s");
  }
  if (o.shutdown_timeout.count() < 0) bad_option("shutdown_timeout", "must not be negative");
  if (!o.cpu_affinity.cpus.empty()) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    (void)::sched_getaffinity(0, sizeof allowed, &allowed);
    for (int cpu : o.cpu_affinity.cpus) {
      if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed)) {
        bad_option("cpu_affinity.cpus", "names CPU " + std::to_string(cpu) +
                                            ", which this process may not run on (see taskset -p)");
      }
    }
  }
  if (o.linger_timeout.count() < 0) bad_option("linger_timeout", "must not be negative");
}

ServerCore::ServerCore(Server& server, Handler& handler, ServerOptions options)
    : server_(server),
      handler_(handler),
      opts_(std::move(options)),
      framer_(FramerConfig{opts_.framing, opts_.line_delimiter, opts_.length_prefix_bytes,
                           opts_.max_frame, opts_.decoder.get()}) {
  validate_options_or_throw(opts_);
  backend_ = resolve_backend(opts_.backend);
  listeners_ = resolve_listeners(opts_);
  if (!opts_.admin.empty()) {
    ListenAddress a;
    std::string error;
    if (!parse_listen_address(opts_.admin, a, error)) bad_option("admin", error);
  }
  if (!opts_.cpu_affinity.cpus.empty()) {
    cpu_plan_ = opts_.cpu_affinity.cpus;
  } else if (opts_.cpu_affinity.automatic) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
      for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &allowed)) cpu_plan_.push_back(c);
      }
    }
  }
  stop_efd_ = ::eventfd(0, EFD_CLOEXEC);
  if (stop_efd_ < 0) throw std::system_error(errno, std::generic_category(), "esockets: eventfd");
}

ServerCore::~ServerCore() {
  stop();
  ::close(stop_efd_);
}

void ServerCore::request_stop() noexcept {
  // Only write(2): async-signal-safe. Before start() the control thread does not exist and
  // start() discards the request.
  const std::uint64_t one = 1;
  ssize_t r;
  do {
    r = ::write(stop_efd_, &one, sizeof one);
  } while (r < 0 && errno == EINTR);
}

void ServerCore::control_loop() {
  // Calls made here (on_server_shutting_down runs on this thread) count as engine calls, so a
  // stop() from them only requests, never joins this thread.
  tls_context = ThreadContext{this, -1, -1};
  (void)name_and_pin_thread("esk-control", -1);
  std::uint64_t v = 0;
  while (::read(stop_efd_, &v, sizeof v) < 0 && errno == EINTR) {
  }
  do_stop();
}

int ServerCore::cpu_for_shard(unsigned index) const {
  return cpu_plan_.empty() ? -1 : cpu_plan_[index % cpu_plan_.size()];
}

int ServerCore::cpu_for_worker(unsigned index) const {
  return cpu_plan_.empty() ? -1 : cpu_plan_[(opts_.shards + index) % cpu_plan_.size()];
}

std::vector<int> ServerCore::open_shard_listeners_locked() {
  // One socket per TCP listener for a new shard (-1 for Unix listeners: their one socket is
  // shared). On failure nothing stays open.
  std::vector<int> fds(listeners_.size(), -1);
  try {
    for (std::size_t i = 0; i < listeners_.size(); ++i) {
      if (!listeners_[i]->unix_socket()) fds[i] = open_tcp_listener(*listeners_[i], accepted_options());
    }
  } catch (...) {
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
    throw;
  }
  return fds;
}

void ServerCore::close_listeners_locked() {
  for (auto& l : listeners_) close_unix_listener(*l);
}

std::vector<ListenerInfo> ServerCore::listener_infos() const {
  std::vector<ListenerInfo> v;
  if (state_.load(std::memory_order_acquire) == State::idle) return v;
  for (const auto& l : listeners_) v.push_back(l->info());
  return v;
}

std::string ServerCore::admin_address() const { return admin_ ? admin_->address() : std::string(); }

void ServerCore::report(const Warning& w) noexcept {
  try {
    handler_.on_warning(w);
  } catch (...) {
    // A throwing on_warning must not take an engine thread down.
  }
}

Shard* ServerCore::add_shard_locked(const std::vector<int>& listen_fds) {
  // A retired shard's index is reused (its Shard revived with fresh queues), so a server that
  // autoscales its shards forever holds at most as many Shard records as it ever ran at once.
  const unsigned bound = shard_bound_.load(std::memory_order_relaxed);
  for (unsigned idx = 0; idx < bound; ++idx) {
    if (active_flag_[idx].load(std::memory_order_relaxed)) continue;
    Shard* p = shard_ptr(idx);
    try {
      p->revive(listen_fds);
    } catch (...) {
      for (int fd : listen_fds) {
        if (fd >= 0) ::close(fd);
      }
      throw;
    }
    load_[idx].v.store(0, std::memory_order_relaxed);
    active_.push_back(idx);
    group_.push_back(idx);
    active_flag_[idx].store(true, std::memory_order_release);
    return p;
  }
  const unsigned idx = bound;
  if (idx >= kMaxShards) {
    for (int fd : listen_fds) {
      if (fd >= 0) ::close(fd);
    }
    throw std::length_error("esockets: at most 254 shards can run at once");
  }
  auto sh = std::make_unique<Shard>(*this, idx, listen_fds);
  Shard* p = sh.get();
  owned_.push_back(std::move(sh));
  load_[idx].v.store(0, std::memory_order_relaxed);
  slots_[idx].store(p, std::memory_order_release);
  shard_bound_.store(idx + 1, std::memory_order_release);
  active_.push_back(idx);
  group_.push_back(idx);
  active_flag_[idx].store(true, std::memory_order_release);
  return p;
}

void ServerCore::start() {
  start_locked();
  if (import_channel_) {
    // The listeners are served already; now the old server's connections, then the shard
    // count this server was configured with.
    import_connections();
    if (takeover_group_ > opts_.shards) set_shards(opts_.shards);
    if (!opts_.takeover_socket.empty()) {
      try {
        start_takeover_socket();
      } catch (const std::exception& e) {
        takeover_warning(Severity::error, std::string(e.what()) + " (no further takeover)");
      }
    }
  }
  if (takeover_listen_fd_ >= 0) takeover_thread_ = std::thread([this] { takeover_loop(); });
}

void ServerCore::start_locked() {
  std::lock_guard rl(resize_mu_);
  if (state_.load() != State::idle) {
    throw std::logic_error("esockets: Server::start() called twice (a Server runs once)");
  }
  table_capacity_ = fd_limit();
  const std::size_t limit_max = table_capacity_ > kFdReserve ? table_capacity_ - kFdReserve : 1;
  max_connections_ = opts_.max_connections == 0 ? limit_max : opts_.max_connections;
  table_ = std::make_unique<ConnectionTable>(table_capacity_);
  epoch_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now().time_since_epoch())
                  .count();

  // Bind every listener first so a failure leaves nothing running.
  std::vector<std::vector<int>> fds;
  try {
    if (!opts_.take_over.empty()) {
      fds = take_over_listeners_locked();  // the old server's sockets, already listening
    } else {
      for (auto& l : listeners_) {
        if (l->unix_socket()) open_unix_listener(*l, accepted_options());
      }
      for (unsigned i = 0; i < opts_.shards; ++i) fds.push_back(open_shard_listeners_locked());
      if (!opts_.takeover_socket.empty()) start_takeover_socket();
    }
    port_ = 0;
    for (const auto& l : listeners_) {
      if (!l->unix_socket()) {
        port_ = l->port;
        break;
      }
    }
    if (!opts_.admin.empty()) {
      AdminServer::Hooks hooks;
      hooks.metrics = [this](MetricsFormat f) { return render_metrics(stats(), f); };
      hooks.draining = [this] { return draining(); };
      hooks.reuse_port = !opts_.takeover_socket.empty() || !opts_.take_over.empty();
      admin_ = std::make_unique<AdminServer>(opts_.admin, std::move(hooks));
    }
    for (auto& f : fds) {
      std::vector<int> mine;
      mine.swap(f);  // owned by the shard now
      add_shard_locked(mine);
    }
    for (unsigned w = 0; w < opts_.workers; ++w) {
      workers_.push_back(std::make_unique<Worker>(*this, w));
    }
  } catch (...) {
    admin_.reset();
    import_channel_.reset();
    if (takeover_listen_fd_ >= 0) {
      ::close(takeover_listen_fd_);
      takeover_listen_fd_ = -1;
      (void)::unlink(opts_.takeover_socket.c_str());
    }
    for (const auto& v : fds) {
      for (int fd : v) {
        if (fd >= 0) ::close(fd);
      }
    }
    close_listeners_locked();
    for (unsigned i = 0; i < shard_bound_.load(); ++i) slots_[i].store(nullptr);
    shard_bound_.store(0);
    owned_.clear();
    active_.clear();
    group_.clear();
    workers_.clear();
    throw;
  }
  handler_.on_start(server_);
  {
    // A request_stop() made before start() has nothing to stop: discard it.
    std::uint64_t v = 0;
    const int fl = ::fcntl(stop_efd_, F_GETFL);
    ::fcntl(stop_efd_, F_SETFL, fl | O_NONBLOCK);
    (void)::read(stop_efd_, &v, sizeof v);
    ::fcntl(stop_efd_, F_SETFL, fl);
  }
  state_.store(State::running, std::memory_order_release);
  for (auto& w : workers_) w->start();
  for (auto& s : owned_) s->start();
  if (admin_) admin_->start();
  control_ = std::thread([this] { control_loop(); });
}

namespace {
// The ServerCore whose stop this thread is running (its shutdown callbacks may call stop()).
thread_local const ServerCore* tls_stopping = nullptr;
}  // namespace

void ServerCore::stop() {
  if (tls_context.core == this || tls_stopping == this) {
    // An engine thread, the control thread, or a shutdown callback of the stop in progress on
    // this thread cannot wait for the stop to end: it is under way (or requested) already.
    request_stop();
    return;
  }
  do_stop();
  std::lock_guard lk(control_mu_);  // several threads may be stopping at once
  if (control_.joinable()) {
    request_stop();  // the control thread finds the server stopped and leaves
    control_.join();
  }
}

void ServerCore::do_stop() {
  {
    std::unique_lock lk(life_mu_);
    State st = state_.load();
    if (st == State::idle || st == State::stopped) return;
    if (st == State::stopping) {
      life_cv_.wait(lk, [&] { return state_.load() == State::stopped; });
      return;
    }
    state_.store(State::stopping, std::memory_order_release);
  }
  drain();  // the admin listener's /health says 503 from here on
  // A takeover under way finishes (or fails) first; then nobody can start one.
  if (takeover_thread_.joinable() && takeover_thread_.get_id() != std::this_thread::get_id()) {
    takeover_thread_.join();
  }
  if (takeover_listen_fd_ >= 0) {
    ::close(takeover_listen_fd_);
    takeover_listen_fd_ = -1;
    (void)::unlink(opts_.takeover_socket.c_str());
  }
  std::lock_guard rl(resize_mu_);  // a set_shards/rebalance in progress finishes first
  tls_stopping = this;
  struct Reset {
    ~Reset() { tls_stopping = nullptr; }
  } reset;
  try {
    handler_.on_server_shutting_down(server_);
  } catch (...) {
  }
  stop_total_.store(static_cast<unsigned>(active_.size()), std::memory_order_seq_cst);
  for (unsigned i : active_) shard_ptr(i)->request_stop();
  for (auto& s : owned_) s->join();
  // Every shard has pushed its last event: workers drain the queues and leave.
  workers_exit_.store(true, std::memory_order_release);
  for (auto& w : workers_) w->notify();
  for (auto& w : workers_) w->join();
  close_listeners_locked();  // the Unix sockets every shard polled, and their files
  if (admin_) admin_->stop();
  try {
    handler_.on_server_shut_down(server_);
  } catch (...) {
  }
  {
    std::lock_guard lk(life_mu_);
    state_.store(State::stopped, std::memory_order_release);
  }
  life_cv_.notify_all();
}

void ServerCore::wait() {
  std::unique_lock lk(life_mu_);
  life_cv_.wait(lk, [&] {
    State st = state_.load();
    return st == State::idle || st == State::stopped;
  });
}

unsigned ServerCore::shards() const {
  if (state_.load(std::memory_order_acquire) == State::idle) return opts_.shards;
  unsigned n = 0;
  const unsigned bound = shard_bound();
  for (unsigned i = 0; i < bound; ++i) n += active_flag_[i].load(std::memory_order_acquire) ? 1 : 0;
  return n;
}

std::vector<unsigned> ServerCore::active_snapshot() const {
  std::vector<unsigned> v;
  const unsigned bound = shard_bound();
  for (unsigned i = 0; i < bound; ++i) {
    if (active_flag_[i].load(std::memory_order_acquire)) v.push_back(i);
  }
  return v;
}

void ServerCore::set_shards(unsigned n) {
  if (n < 1 || n > kMaxShards) {
    throw std::invalid_argument("esockets: set_shards(" + std::to_string(n) +
                                "): the shard count must be between 1 and 254");
  }
  if (tls_context.core == this) {
    throw std::logic_error("esockets: set_shards() must not be called from a handler (it waits "
                           "for engine threads); call it from another thread");
  }
  std::lock_guard rl(resize_mu_);
  const State st = state_.load(std::memory_order_acquire);
  if (st == State::idle) {
    opts_.shards = n;
    return;
  }
  if (st != State::running) {
    throw std::logic_error("esockets: set_shards() called while the server is stopping or stopped");
  }
  if (active_.size() != n) resizes_.fetch_add(1, std::memory_order_relaxed);
  while (active_.size() < n) {
    Shard* s = add_shard_locked(open_shard_listeners_locked());
    s->start();
  }
  while (active_.size() > n) retire_shard_locked();
  wait_transit_locked();
}

void ServerCore::wait_transit_locked() {
  // Hand-overs are posted; return once every adopting shard has taken its connections.
  while (in_transit_.load(std::memory_order_acquire) > 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

void ServerCore::retire_shard_locked() {
  const unsigned victim = active_.back();
  std::vector<unsigned> rest(active_.begin(), active_.end() - 1);
  steer_locked(rest);  // new connections stop reaching the victim's listener
  active_.pop_back();
  active_flag_[victim].store(false, std::memory_order_release);
  Shard* s = shard_ptr(victim);
  auto* req = new MoveRequest{std::vector<std::uint32_t>(rest.begin(), rest.end()), SIZE_MAX, true};
  const Command cmd{0, req, 0, CommandKind::move_out, 0, static_cast<std::uint8_t>(victim)};
  while (!post_to_shard(victim, cmd)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  s->join();
  s->release();
  // Its listener is closed: the kernel moved the group's last member into its position.
  for (std::size_t i = 0; i < group_.size(); ++i) {
    if (group_[i] == victim) {
      group_[i] = group_.back();
      group_.pop_back();
      break;
    }
  }
  unsteer_locked();
}

void ServerCore::steer_locked(const std::vector<unsigned>& receivers) {
  // Shared with other processes: positions in the group are not ours to count.
  if (receivers.empty() || !steering_ok_ || opts_.reuseport_shared) return;
  // Classic BPF for the reuseport group: a random member among the receivers' positions.
  std::vector<sock_filter> code;
  code.push_back(sock_filter{BPF_LD | BPF_W | BPF_ABS, 0, 0,
                             static_cast<std::uint32_t>(SKF_AD_OFF + SKF_AD_RANDOM)});
  code.push_back(sock_filter{BPF_ALU | BPF_MOD | BPF_K, 0, 0,
                             static_cast<std::uint32_t>(receivers.size())});
  for (std::size_t j = 0; j < receivers.size(); ++j) {
    std::uint32_t pos = 0;
    for (std::size_t g = 0; g < group_.size(); ++g) {
      if (group_[g] == receivers[j]) pos = static_cast<std::uint32_t>(g);
    }
    code.push_back(sock_filter{BPF_JMP | BPF_JEQ | BPF_K, 0, 1, static_cast<std::uint32_t>(j)});
    code.push_back(sock_filter{BPF_RET | BPF_K, 0, 0, pos});
  }
  code.push_back(sock_filter{BPF_RET | BPF_K, 0, 0, 0});
  sock_fprog prog{static_cast<unsigned short>(code.size()), code.data()};
  // Every TCP listener is a reuseport group of its own, built and shrunk in the same shard
  // order, so one program (positions) serves them all. Unix listeners have no group.
  for (std::size_t li = 0; li < listeners_.size() && steering_ok_; ++li) {
    if (listeners_[li]->unix_socket()) continue;
    const int fd = shard_ptr(receivers.front())->listen_fd(li);
    if (fd < 0 || ::setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0) {
      steering_ok_ = false;
      worker_warnings_.fetch_add(1, std::memory_order_relaxed);
      worker_warnings_by_[static_cast<std::size_t>(WarningCode::steering_unavailable)].fetch_add(
          1, std::memory_order_relaxed);
      Warning w;
      w.code = WarningCode::steering_unavailable;
      w.severity = Severity::warning;
      w.error = errno;
      w.text =
          "esockets: this kernel refused reuseport BPF steering; a retiring shard keeps "
          "accepting during its grace period and hands those connections over, but "
          "handshakes completing after its listener closes may be reset";
      report(w);
    }
  }
}

void ServerCore::unsteer_locked() {
  if (!steering_ok_ || active_.empty() || opts_.reuseport_shared) return;
  for (std::size_t li = 0; li < listeners_.size(); ++li) {
    if (listeners_[li]->unix_socket()) continue;
    const int fd = shard_ptr(active_.front())->listen_fd(li);
    int dummy = 0;
    if (fd >= 0) (void)::setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &dummy, sizeof dummy);
  }
}

void ServerCore::rebalance() {
  if (tls_context.core == this) {
    throw std::logic_error("esockets: rebalance() must not be called from a handler");
  }
  std::lock_guard rl(resize_mu_);
  if (state_.load(std::memory_order_acquire) != State::running || active_.size() < 2) return;
  std::vector<std::int64_t> count;
  std::int64_t total = 0;
  for (unsigned i : active_) {
    count.push_back(static_cast<std::int64_t>(shard_ptr(i)->counters().connections.get()));
    total += count.back();
  }
  const std::int64_t mean = total / static_cast<std::int64_t>(active_.size());
  std::vector<std::uint32_t> cold;
  for (std::size_t k = 0; k < active_.size(); ++k) {
    if (count[k] < mean) cold.push_back(active_[k]);
  }
  if (cold.empty()) return;
  std::vector<std::pair<Shard*, std::uint64_t>> waits;
  for (std::size_t k = 0; k < active_.size(); ++k) {
    const std::int64_t excess = count[k] - mean;
    if (excess <= 1) continue;
    Shard* s = shard_ptr(active_[k]);
    auto* req = new MoveRequest{cold, static_cast<std::size_t>(excess), false};
    const std::uint64_t before = s->moves_done();
    const Command cmd{0, req, 0, CommandKind::move_out, 0, static_cast<std::uint8_t>(active_[k])};
    while (!post_to_shard(active_[k], cmd)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    waits.emplace_back(s, before);
  }
  for (auto& [s, before] : waits) {
    while (s->moves_done() == before) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  wait_transit_locked();
}

std::uint32_t ServerCore::pick_least_loaded(std::uint32_t accepting) {
  std::uint32_t best = accepting;
  std::int64_t best_score = INT64_MAX;
  const unsigned bound = shard_bound();
  for (unsigned i = 0; i < bound; ++i) {
    if (!active_flag_[i].load(std::memory_order_acquire)) continue;
    Shard* s = shard_ptr(i);
    // Connections weighted by how busy the shard was over the last second.
    const std::int64_t busy = static_cast<std::int64_t>(s->counters().busy_permille.get());
    const std::int64_t score =
        (load_[i].v.load(std::memory_order_relaxed) + 1) * (1000 + 4 * busy);
    if (score < best_score || (score == best_score && i == accepting)) {
      best = i;
      best_score = score;
    }
  }
  load_[best].v.fetch_add(1, std::memory_order_relaxed);
  return best;
}

void ServerCore::fd_released() { fd_release_epoch_.fetch_add(1, std::memory_order_relaxed); }

void ServerCore::stop_ready() {
  const unsigned n = stop_ready_.fetch_add(1, std::memory_order_seq_cst) + 1;
  if (n >= stop_total_.load(std::memory_order_seq_cst)) {
    // The last shard to be ready wakes the others, which wait for this in their tick.
    const unsigned bound = shard_bound();
    for (unsigned i = 0; i < bound; ++i) shard_ptr(i)->notify();
  }
}

bool ServerCore::all_stop_ready() const {
  return stop_ready_.load(std::memory_order_seq_cst) >= stop_total_.load(std::memory_order_seq_cst);
}

std::size_t ServerCore::client_count() const {
  std::size_t n = 0;
  const unsigned bound = shard_bound();
  for (unsigned i = 0; i < bound; ++i) n += shard_ptr(i)->counters().connections.get();
  return n;
}

void ServerCore::for_each_client(const std::function<void(ConnectionId)>& fn) const {
  if (table_ != nullptr) table_->for_each_live(fn);
}

Stats ServerCore::stats() const {
  Stats st;
  st.backend = backend_;
  const unsigned bound = shard_bound();
  for (unsigned i = 0; i < bound; ++i) {
    const Shard* s = shard_ptr(i);
    const bool active = active_flag_[i].load(std::memory_order_acquire);
    ShardStats x = s->counters().snapshot();
    x.wakeups = s->kernel_wakeups();
    x.cpu = s->cpu();
    x.shard = i;
    ShardStats& t = st.total;
    // Retired shards still count toward the totals (their history), not toward the list.
    if (active) st.shards.push_back(x);
    t.connections += x.connections;
    t.accepts += x.accepts;
    t.refused += x.refused;
    t.accept_errors += x.accept_errors;
    t.bytes_in += x.bytes_in;
    t.bytes_out += x.bytes_out;
    t.messages_in += x.messages_in;
    t.messages_out += x.messages_out;
    t.worker_queue_depth += x.worker_queue_depth;
    t.paused += x.paused;
    t.output_bytes += x.output_bytes;
    t.warnings += x.warnings;
    t.events_per_sec += x.events_per_sec;
    t.wakeups += x.wakeups;
    t.send_backpressure += x.send_backpressure;
    t.overflow += x.overflow;
    for (std::size_t r = 0; r < kCloseReasonCount; ++r) t.closes[r] += x.closes[r];
    for (std::size_t c = 0; c < kWarningCodeCount; ++c) t.warnings_by_code[c] += x.warnings_by_code[c];
    s->handler_time().add_to(st.handler_time);
  }
  st.total.warnings += worker_warnings_.load(std::memory_order_relaxed);
  for (std::size_t c = 0; c < kWarningCodeCount; ++c) {
    st.total.warnings_by_code[c] += worker_warnings_by_[c].load(std::memory_order_relaxed);
  }
  for (const auto& w : workers_) {
    w->handler_time().add_to(st.handler_time);
    w->handoff_wait().add_to(st.handoff_wait);
    st.worker_cpus.push_back(w->cpu());
  }
  for (const auto& l : listeners_) st.listeners.push_back(l->stats());
  st.resizes = resizes_.load(std::memory_order_relaxed);
  st.taken_over_out = taken_over_.load(std::memory_order_relaxed);
  st.taken_over_in = taken_in_.load(std::memory_order_relaxed);
  st.takeover_ms = static_cast<double>(takeover_us_.load(std::memory_order_relaxed)) / 1000.0;
  st.draining = draining();
  st.total.cpu = -1;
  for (const auto& w : workers_) st.total.wakeups += w->kernel_wakeups();
  summarize_shards(st);
  return st;
}

}  // namespace esockets::detail

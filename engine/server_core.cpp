#include "server_core.hpp"

#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "esockets/server.hpp"
#include "send_queue.hpp"
#include "shard.hpp"
#include "socket_ops.hpp"
#include "worker.hpp"

namespace esockets::detail {

thread_local ThreadContext tls_context;

namespace {

[[noreturn]] void bad_option(const std::string& field, const std::string& why) {
  throw std::invalid_argument("esockets: ServerOptions." + field + " " + why);
}

constexpr std::size_t kFdReserve = 64;

}  // namespace

void validate_options_or_throw(const ServerOptions& o) {
  if (o.shards < 1 || o.shards > ServerCore::kMaxShards) {
    bad_option("shards", "must be between 1 and 255 (got " + std::to_string(o.shards) + ")");
  }
  if (o.workers > ServerCore::kMaxWorkers) {
    bad_option("workers", "must be at most 255 (got " + std::to_string(o.workers) + ")");
  }
  if (!is_numeric_host(o.host)) {
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
  if (o.shutdown_timeout.count() < 0) bad_option("shutdown_timeout", "must not be negative");
  if (o.linger_timeout.count() < 0) bad_option("linger_timeout", "must not be negative");
}

ServerCore::ServerCore(Server& server, Handler& handler, ServerOptions options)
    : server_(server),
      handler_(handler),
      opts_(std::move(options)),
      framer_(FramerConfig{opts_.framing, opts_.line_delimiter, opts_.length_prefix_bytes,
                           opts_.max_frame}) {
  validate_options_or_throw(opts_);
}

ServerCore::~ServerCore() { stop(); }

void ServerCore::start() {
  {
    std::lock_guard lk(life_mu_);
    if (state_.load() != State::idle) {
      throw std::logic_error("esockets: Server::start() called twice (a Server runs once)");
    }
  }
  table_capacity_ = fd_limit();
  const std::size_t limit_max = table_capacity_ > kFdReserve ? table_capacity_ - kFdReserve : 1;
  max_connections_ = opts_.max_connections == 0 ? limit_max : opts_.max_connections;

  // Bind every listener first so a failure leaves nothing running.
  std::vector<int> fds;
  try {
    std::uint16_t port = opts_.port;
    for (unsigned i = 0; i < opts_.shards; ++i) {
      fds.push_back(create_listener_or_throw(opts_.host, port, opts_.backlog));
      if (i == 0) port = bound_port(fds[0]);
    }
    port_ = port;
    for (unsigned i = 0; i < opts_.shards; ++i) {
      shards_.push_back(std::make_unique<Shard>(*this, i, fds[i]));
      fds[i] = -1;  // owned by the shard now
    }
    for (unsigned w = 0; w < opts_.workers; ++w) {
      workers_.push_back(std::make_unique<Worker>(*this, w));
    }
  } catch (...) {
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
    shards_.clear();
    workers_.clear();
    throw;
  }
  handler_.on_start(server_);
  state_.store(State::running, std::memory_order_release);
  for (auto& w : workers_) w->start();
  for (auto& s : shards_) s->start();
}

void ServerCore::stop() {
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
  try {
    handler_.on_server_shutting_down(server_);
  } catch (...) {
  }
  for (auto& s : shards_) s->request_stop();
  for (auto& s : shards_) s->join();
  for (auto& w : workers_) w->join();
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

void ServerCore::fd_released() { fd_release_epoch_.fetch_add(1, std::memory_order_relaxed); }

SendBlock* ServerCore::make_send_block(Bytes bytes, bool framed) const {
  char hdr[8];
  bool trailer = false;
  std::size_t hlen = 0;
  if (framed) {
    hlen = framer_.header_for(bytes.size(), hdr, &trailer);
    if (hlen == SIZE_MAX) return nullptr;
  }
  const std::size_t total = hlen + bytes.size() + (trailer ? 1 : 0);
  SendBlock* b = make_block(total);
  if (hlen > 0) std::memcpy(b->data(), hdr, hlen);
  if (!bytes.empty()) std::memcpy(b->data() + hlen, bytes.data(), bytes.size());
  if (trailer) b->data()[hlen + bytes.size()] = opts_.line_delimiter;
  b->end = static_cast<std::uint32_t>(total);
  return b;
}

SendStatus ServerCore::route(ConnectionId id, const Command& cmd) {
  Shard& s = *shards_[id.shard()];
  const ThreadContext& ctx = tls_context;
  if (ctx.core == this && ctx.worker >= 0) {
    return workers_[static_cast<unsigned>(ctx.worker)]->queue_command(id.shard(), cmd);
  }
  if (!s.post(cmd)) {
    dispose(cmd);
    return SendStatus::backpressure;
  }
  s.notify();
  return SendStatus::ok;
}

SendStatus ServerCore::send(ConnectionId id, Bytes bytes, bool framed) {
  if (!id.valid() || id.shard() >= shards_.size() || state_.load() == State::idle) {
    return SendStatus::closed;
  }
  Shard& s = *shards_[id.shard()];
  if (!s.table().live(id)) return SendStatus::closed;
  if (bytes.size() > opts_.output_hard_cap) return SendStatus::backpressure;
  if (s.on_own_thread() && !framed) return s.send_local(id, bytes.data(), bytes.size());
  SendBlock* b = make_send_block(bytes, framed);
  if (b == nullptr) return SendStatus::backpressure;  // too long for the length prefix
  if (s.on_own_thread()) return s.send_local(id, b);
  return route(id, Command{id.value(), b, b->size(), CommandKind::send, 0});
}

SendStatus ServerCore::close(ConnectionId id, CloseReason reason) {
  if (!id.valid() || id.shard() >= shards_.size() || state_.load() == State::idle) {
    return SendStatus::closed;
  }
  Shard& s = *shards_[id.shard()];
  if (!s.table().live(id)) return SendStatus::closed;
  if (s.on_own_thread()) return s.close_local(id, reason);
  return route(id, Command{id.value(), nullptr, 0, CommandKind::close,
                           static_cast<std::uint8_t>(reason)});
}

SendStatus ServerCore::set_paused(ConnectionId id, bool pause) {
  if (!id.valid() || id.shard() >= shards_.size() || state_.load() == State::idle) {
    return SendStatus::closed;
  }
  Shard& s = *shards_[id.shard()];
  if (!s.table().live(id)) return SendStatus::closed;
  if (s.on_own_thread()) return s.pause_local(id, pause);
  return route(id, Command{id.value(), nullptr, 0,
                           pause ? CommandKind::pause : CommandKind::resume, 0});
}

std::size_t ServerCore::broadcast(Bytes bytes) {
  if (state_.load() == State::idle || shards_.empty()) return 0;
  const auto n = static_cast<std::uint32_t>(shards_.size());
  SharedPayload* sp =
      make_shared_payload(bytes.data(), static_cast<std::uint32_t>(bytes.size()), n);
  std::size_t accepted = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    Shard& s = *shards_[i];
    if (s.on_own_thread()) {
      // Our own shard applies it now, in order with our direct sends.
      s.broadcast_local(sp->data(), sp->len);
      release_shared_payload(sp);
      ++accepted;
      continue;
    }
    Command c{ConnectionId(i, 0, 0).value(), sp, sp->len, CommandKind::broadcast, 0};
    if (route(ConnectionId(i, 0, 1), c) == SendStatus::ok) ++accepted;
  }
  return accepted;
}

std::size_t ServerCore::client_count() const {
  std::size_t n = 0;
  for (const auto& s : shards_) n += s->counters().connections.get();
  return n;
}

void ServerCore::for_each_client(const std::function<void(ConnectionId)>& fn) const {
  for (const auto& s : shards_) s->table().for_each_live(fn);
}

Stats ServerCore::stats() const {
  Stats st;
  for (const auto& s : shards_) {
    ShardStats x = s->counters().snapshot();
    st.shards.push_back(x);
    ShardStats& t = st.total;
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
    for (std::size_t i = 0; i < kCloseReasonCount; ++i) t.closes[i] += x.closes[i];
  }
  st.total.warnings += worker_warnings_.load(std::memory_order_relaxed);
  return st;
}

}  // namespace esockets::detail

// Takeover between processes, the ServerCore's part (see takeover.hpp, shard_takeover.cpp and
// docs/ARCHITECTURE.md, "Takeover").
// Thread: the old side runs on its own thread (esk-takeover), which waits on the control
// socket and runs one takeover at a time under resize_mu_; the new side runs in start().
//
// Messages (protocol version 1, after the hellos; payloads in takeover_wire's Writer format):
//   old -> new  listeners    u16 count, then per listener: u8 kind (0 TCP, 1 Unix), u16 fds,
//                            bytes address; the fds in that order (a TCP listener's sockets in
//                            reuseport group order, so the kernel's steering positions hold)
//   new -> old  ack          "listeners": the new process accepts on them now
//   old -> new  connections  write_batch() of at most kMaxFds records, one fd each
//   new -> old  ack          u32 records adopted; only then does the old side close its copies
//   old -> new  done         u64 connections sent; or abort with the reason
#include "takeover/takeover.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>
#include <thread>

#include "core/server_core.hpp"
#include "shard/shard.hpp"
#include "core/threads.hpp"

namespace esockets::detail {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- hub and batches

ConnBatch::~ConnBatch() { close_all(); }

void ConnBatch::close_all() {
  for (int& fd : fds) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

void TakeoverHub::reset() {
  std::lock_guard lk(mu_);
  frozen_ = 0;
  exported_ = 0;
  ready_.clear();
}

void TakeoverHub::shard_frozen() {
  {
    std::lock_guard lk(mu_);
    ++frozen_;
  }
  cv_.notify_all();
}

void TakeoverHub::shard_exported(std::unique_ptr<ConnBatch> batch) {
  {
    std::lock_guard lk(mu_);
    ++exported_;
    if (batch && !batch->records.empty()) ready_.push_back(std::move(batch));
  }
  cv_.notify_all();
}

bool TakeoverHub::wait_frozen(unsigned shards, Clock::time_point deadline) {
  std::unique_lock lk(mu_);
  return cv_.wait_until(lk, deadline, [&] { return frozen_ >= shards; });
}

std::unique_ptr<ConnBatch> TakeoverHub::next_export(unsigned shards, Clock::time_point deadline,
                                                    bool& timed_out) {
  std::unique_lock lk(mu_);
  timed_out = !cv_.wait_until(lk, deadline, [&] { return !ready_.empty() || exported_ >= shards; });
  if (ready_.empty()) return nullptr;
  auto b = std::move(ready_.front());
  ready_.pop_front();
  return b;
}

// ---------------------------------------------------------------- common

namespace {

// Timeouts (takeover_timeout each) the old side keeps waiting for a shard that is still
// exporting after the transfer failed, to take its connections back.
constexpr int kLateExportSteps = 6;

Message message(MsgType type, std::string payload = {}) {
  Message m;
  m.type = type;
  m.payload = std::move(payload);
  return m;
}

}  // namespace

void ServerCore::takeover_warning(Severity severity, const std::string& text) {
  count_worker_warning(WarningCode::takeover);
  Warning w;
  w.code = WarningCode::takeover;
  w.severity = severity;
  const std::string line = "esockets: takeover: " + text;  // Warning::text only points to it
  w.text = line;
  report(w);
}

void ServerCore::post_takeover(unsigned shard, TakeoverOp op, std::unique_ptr<ConnBatch> batch) {
  auto* o = new TakeoverOrder{op, std::move(batch)};
  const Command cmd{0, o, 0, CommandKind::takeover, 0, static_cast<std::uint8_t>(shard)};
  // An inbox full of commands empties within a pass: wait for room, bounded by the shard.
  for (int i = 0; !post_to_shard(shard, cmd); ++i) {
    if (i > 5000 || shard_ptr(shard)->exited()) {
      if (o->batch && !o->batch->records.empty()) {
        takeover_warning(Severity::error,
                         "shard " + std::to_string(shard) + " took no order for 5 s or has "
                         "stopped: " + std::to_string(o->batch->records.size()) +
                         " connections handed to it are closed");
      }
      delete o;  // closes the batch's sockets
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// ---------------------------------------------------------------- old side

void ServerCore::start_takeover_socket() {
  std::string err;
  takeover_listen_fd_ = listen_control(opts_.takeover_socket, err);
  if (takeover_listen_fd_ < 0) {
    throw std::runtime_error("esockets: takeover_socket: " + err);
  }
}

void ServerCore::takeover_loop() {
  tls_context = ThreadContext{};
  (void)name_and_pin_thread("esk-takeover", -1);
  while (state_.load(std::memory_order_acquire) == State::running && takeover_listen_fd_ >= 0) {
    std::string err;
    const int fd = accept_control(takeover_listen_fd_, std::chrono::milliseconds(100), err);
    if (fd < 0) continue;  // a timeout (checks the state again) or a failed accept
    Channel ch(fd);
    Agreement agreed;
    if (!handshake_server(ch, err, &agreed, our_hello(), opts_.takeover_timeout)) {
      takeover_warning(Severity::warning, "refused a peer on " + opts_.takeover_socket + ": " +
                                              err + " (nothing changed; still serving)");
      continue;
    }
    if (serve_takeover(ch)) {
      handed_over_.store(true, std::memory_order_release);
      request_stop();  // everything went to the new process: stop (closing ones finish)
      return;
    }
  }
}

bool ServerCore::serve_takeover(Channel& ch) {
  std::unique_lock rl(resize_mu_);
  if (state_.load(std::memory_order_acquire) != State::running) {
    std::string e;
    (void)ch.send(message(MsgType::abort, "the old server is stopping"), opts_.takeover_timeout, e);
    return false;
  }
  const auto step = [&] { return Clock::now() + opts_.takeover_timeout; };
  const auto t0 = Clock::now();
  std::string err;
  // The path is for the next upgrade: the new process may listen on it once it is done.
  ::close(takeover_listen_fd_);
  takeover_listen_fd_ = -1;
  (void)::unlink(opts_.takeover_socket.c_str());
  const auto relisten = [&] {
    std::string e;
    takeover_listen_fd_ = listen_control(opts_.takeover_socket, e);
    if (takeover_listen_fd_ < 0) takeover_warning(Severity::error, e);
  };

  // 1. The listeners: the new process accepts on them as soon as it has them.
  Writer w;
  std::vector<int> lfds;
  w.u16(static_cast<std::uint16_t>(listeners_.size()));
  for (std::size_t li = 0; li < listeners_.size(); ++li) {
    const ListenerState& l = *listeners_[li];
    if (l.unix_socket()) {
      w.u8(1);
      w.u16(1);
      lfds.push_back(l.shared_fd);
    } else {
      w.u8(0);
      w.u16(static_cast<std::uint16_t>(group_.size()));
      for (unsigned idx : group_) lfds.push_back(shard_ptr(idx)->listen_fd(li));
    }
    w.bytes(l.bound);
  }
  Message m = message(MsgType::listeners, w.take());
  m.fds = lfds;
  Message reply;
  if (!ch.send(m, opts_.takeover_timeout, err) || !ch.recv(reply, opts_.takeover_timeout, err) ||
      reply.type != MsgType::ack) {
    if (err.empty()) err = "the new process answered " + type_name(reply.type) + ": " + reply.payload;
    close_fds(reply);
    takeover_warning(Severity::warning,
                     "the new process failed before taking the listeners (" + err +
                         "); still serving everything");
    relisten();
    return false;
  }

  // 2. Freeze: no more input; every reply to input already read gets queued.
  const std::vector<unsigned> shards = active_;
  takeover_hub_.reset();
  for (unsigned s : shards) post_takeover(s, TakeoverOp::freeze, nullptr);
  if (!takeover_hub_.wait_frozen(static_cast<unsigned>(shards.size()), step())) {
    for (unsigned s : shards) post_takeover(s, TakeoverOp::thaw, nullptr);
    (void)ch.send(message(MsgType::abort, "the old server's shards did not settle in time"),
                  opts_.takeover_timeout, err);
    takeover_warning(Severity::error, "shards did not freeze in time; still serving everything "
                                      "(the new process accepts on the listeners too)");
    relisten();
    return false;
  }

  // 3. Export, in batches the new process acknowledges.
  for (unsigned s : shards) post_takeover(s, TakeoverOp::export_all, nullptr);
  std::uint64_t moved = 0;
  std::vector<std::unique_ptr<ConnBatch>> left;  // not acknowledged: taken back on failure
  std::string failure;
  int late_steps = 0;
  for (;;) {
    bool timed_out = false;
    std::unique_ptr<ConnBatch> b =
        takeover_hub_.next_export(static_cast<unsigned>(shards.size()), step(), timed_out);
    if (!b && timed_out) {
      // A shard still saving its connections (slow on_client_takeover hooks) will hand its
      // batch over later: it has detached them, so it must be collected and taken back, or
      // its clients stay connected with nobody serving them. Wait on, bounded.
      if (failure.empty()) failure = "the old server's shards did not hand over in time";
      if (++late_steps <= kLateExportSteps) continue;
      takeover_warning(Severity::error, "a shard still had not handed its connections over " +
                                            std::to_string(kLateExportSteps) +
                                            " timeouts later; they are lost");
    }
    if (!b) break;
    if (!failure.empty()) {
      left.push_back(std::move(b));
      continue;
    }
    std::size_t at = 0;
    while (at < b->records.size()) {
      const std::size_t n = std::min(kMaxFds, b->records.size() - at);
      std::vector<ConnRecord> chunk(std::make_move_iterator(b->records.begin() + at),
                                    std::make_move_iterator(b->records.begin() + at + n));
      Message cm = message(MsgType::connections, write_batch(chunk));
      cm.fds.assign(b->fds.begin() + at, b->fds.begin() + at + n);
      Message ack;
      bool ok = ch.send(cm, opts_.takeover_timeout, err) &&
                ch.recv(ack, opts_.takeover_timeout, err);
      if (ok && ack.type != MsgType::ack) {
        err = "the new process answered " + type_name(ack.type) + ": " + ack.payload;
        ok = false;
      }
      close_fds(ack);
      if (!ok) {
        // Whether the new process got this batch is unknown: if it died, the sockets it held
        // are gone with it; ours are still open, so we keep serving them (the records stay).
        for (std::size_t k = 0; k < n; ++k) b->records[at + k] = std::move(chunk[k]);
        failure = err;
        break;
      }
      for (std::size_t k = at; k < at + n; ++k) {
        ::close(b->fds[k]);
        b->fds[k] = -1;
      }
      moved += n;
      at += n;
    }
    if (!failure.empty()) {
      b->records.erase(b->records.begin(), b->records.begin() + static_cast<std::ptrdiff_t>(at));
      b->fds.erase(b->fds.begin(), b->fds.begin() + static_cast<std::ptrdiff_t>(at));
      left.push_back(std::move(b));
    }
  }
  if (!failure.empty()) {
    std::size_t kept = 0;
    std::size_t k = 0;
    for (auto& b : left) {
      kept += b->records.size();
      post_takeover(shards[k++ % shards.size()], TakeoverOp::import, std::move(b));
    }
    for (unsigned s : shards) post_takeover(s, TakeoverOp::thaw, nullptr);
    (void)ch.send(message(MsgType::abort, failure), opts_.takeover_timeout, err);
    takeover_warning(Severity::error,
                     "failed (" + failure + "): " + std::to_string(moved) +
                         " connections went to the new process (lost with it if it died), " +
                         std::to_string(kept) + " are served here again; the new process "
                                                "shares the listeners if it lives");
    relisten();
    return false;
  }
  Writer dw;
  dw.u64(moved);
  if (!ch.send(message(MsgType::done, dw.take()), opts_.takeover_timeout, err)) {
    takeover_warning(Severity::warning, "the new process took every connection (" +
                                            std::to_string(moved) +
                                            ") but did not hear 'done': " + err);
  }
  // The Unix sockets' files are the new process's now: stop() must not remove them.
  for (auto& l : listeners_) l->unix_ino = 0;
  taken_over_.fetch_add(moved, std::memory_order_relaxed);
  takeover_us_.store(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count(),
                     std::memory_order_relaxed);
  return true;
}

// ---------------------------------------------------------------- new side

std::vector<std::vector<int>> ServerCore::take_over_listeners_locked() {
  takeover_start_ = Clock::now();
  std::string err;
  const int fd = connect_control(opts_.take_over, opts_.takeover_timeout, err);
  if (fd < 0) throw std::runtime_error("esockets: take_over: " + err);
  import_channel_ = std::make_unique<Channel>(fd);
  Channel& ch = *import_channel_;
  Agreement agreed;
  if (!handshake_client(ch, err, &agreed, our_hello(), opts_.takeover_timeout)) {
    import_channel_.reset();
    throw std::runtime_error("esockets: take_over " + opts_.take_over + ": " + err);
  }
  Message m;
  if (!ch.recv(m, opts_.takeover_timeout, err)) {
    import_channel_.reset();
    throw std::runtime_error("esockets: take_over " + opts_.take_over + ": " + err);
  }
  struct Fds {
    std::vector<int> v;
    ~Fds() {
      for (int f : v) {
        if (f >= 0) ::close(f);
      }
    }
  } got{std::move(m.fds)};
  const auto fail = [&](const std::string& why) {
    std::string e;
    (void)ch.send(message(MsgType::abort, why), opts_.takeover_timeout, e);
    import_channel_.reset();
    throw std::runtime_error("esockets: take_over " + opts_.take_over + ": " + why);
  };
  if (m.type == MsgType::abort) fail("the old server refused: " + m.payload);
  if (m.type != MsgType::listeners) fail("expected the listeners, got " + type_name(m.type));
  Reader r(m.payload);
  const std::size_t n = r.u16();
  if (r.ok() && n != listeners_.size()) {
    fail("the old server has " + std::to_string(n) + " listeners and this one " +
         std::to_string(listeners_.size()) + ": configure the same listeners, in the same order");
  }
  std::vector<std::vector<int>> per(n);  // per listener, its received sockets
  std::size_t used = 0;
  unsigned group = 0;
  for (std::size_t li = 0; li < n && r.ok(); ++li) {
    const std::uint8_t kind = r.u8();
    const std::size_t count = r.u16();
    std::string bound;
    r.bytes(bound);
    if (!r.ok()) break;
    ListenerState& l = *listeners_[li];
    if ((kind == 1) != l.unix_socket() || count == 0 || used + count > got.v.size() ||
        (kind == 1 && count != 1)) {
      fail("listener " + std::to_string(li) + " (" + bound + ") of the old server is " +
           (kind == 1 ? "a Unix socket" : "TCP") + ", here it is " +
           (l.unix_socket() ? "a Unix socket" : "TCP") + ": configure the same listeners");
    }
    for (std::size_t k = 0; k < count; ++k) per[li].push_back(got.v[used + k]);
    used += count;
    if (kind == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      if (::getsockname(per[li][0], reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
        fail("getsockname on a received listener failed");
      }
      const std::uint16_t port = to_peer_address(ss).port;
      if ((l.addr.port != 0 && l.addr.port != port) || tcp_text(l.addr, port) != bound) {
        fail("listener " + std::to_string(li) + " is " + bound + " in the old server but " +
             tcp_text(l.addr, l.addr.port) +
             " is configured here: use the same address and port (or port 0)");
      }
      l.port = port;
      l.bound = bound;
      if (group != 0 && group != count) fail("the old server's TCP listeners differ in size");
      group = static_cast<unsigned>(count);
    } else {
      if (unix_text(l.addr) != bound) {
        fail("listener " + std::to_string(li) + " is " + bound + " in the old server but " +
             unix_text(l.addr) + " here: configure the same path");
      }
      l.bound = bound;
    }
  }
  if (!r.ok() || !r.at_end() || used != got.v.size()) {
    fail("malformed listeners message: " + (r.ok() ? std::string("extra data") : r.what()));
  }
  for (std::size_t li = 0; li < n; ++li) {
    ListenerState& l = *listeners_[li];
    if (!l.unix_socket()) continue;
    l.shared_fd = per[li][0];  // owned by the listener from here on (closed at stop)
    struct stat st {};
    if (l.addr.kind == ListenAddress::Kind::unix_path && ::stat(l.addr.path.c_str(), &st) == 0) {
      l.unix_dev = st.st_dev;
      l.unix_ino = st.st_ino;
    }
  }
  // Shards: as many as the old server had sockets (every socket keeps being served, so
  // nothing queued on one is lost); start() then resizes to options.shards.
  takeover_group_ = group;
  const unsigned nshards = std::max<unsigned>(opts_.shards, group);
  std::vector<std::vector<int>> fds(nshards, std::vector<int>(listeners_.size(), -1));
  for (std::size_t li = 0; li < n; ++li) {
    if (listeners_[li]->unix_socket()) continue;
    for (unsigned s = 0; s < per[li].size(); ++s) fds[s][li] = per[li][s];
  }
  got.v.clear();  // owned by fds / the listeners now
  try {
    for (unsigned s = 0; s < nshards; ++s) {
      for (std::size_t li = 0; li < listeners_.size(); ++li) {
        if (!listeners_[li]->unix_socket() && fds[s][li] < 0) {
          fds[s][li] = open_tcp_listener(*listeners_[li], accepted_options());
        }
      }
    }
  } catch (...) {
    for (auto& v : fds) {
      for (int f : v) {
        if (f >= 0) ::close(f);
      }
    }
    throw;
  }
  return fds;
}

void ServerCore::import_connections() {
  Channel& ch = *import_channel_;
  std::string err;
  if (!ch.send(message(MsgType::ack, "listeners"), opts_.takeover_timeout, err)) {
    takeover_warning(Severity::error, "the old server went away after handing over the "
                                      "listeners (" + err + "): serving them without its "
                                      "connections");
    import_channel_.reset();
    return;
  }
  std::uint64_t adopted = 0;
  std::size_t rr = 0;
  for (;;) {
    Message m;
    if (!ch.recv(m, opts_.takeover_timeout, err)) {
      takeover_warning(Severity::error, "the old server stopped before it was done (" + err +
                                            "): keeping the " + std::to_string(adopted) +
                                            " connections received");
      break;
    }
    if (m.type == MsgType::done) break;
    if (m.type == MsgType::abort) {
      takeover_warning(Severity::error, "the old server gave up (" + m.payload + "): keeping the " +
                                            std::to_string(adopted) + " connections received");
      break;
    }
    if (m.type != MsgType::connections) {
      close_fds(m);
      takeover_warning(Severity::error, "unexpected " + type_name(m.type) + " message: stopped "
                                        "taking connections (" + std::to_string(adopted) +
                                        " taken)");
      break;
    }
    auto batch = std::make_unique<ConnBatch>();
    batch->fds = std::move(m.fds);
    if (!read_batch(m.payload, batch->fds.size(), batch->records, err)) {
      (void)ch.send(message(MsgType::abort, "malformed connections: " + err),
                    opts_.takeover_timeout, err);
      takeover_warning(Severity::error, "malformed connections message (" + err +
                                            "): refused it; keeping the " +
                                            std::to_string(adopted) + " received before");
      break;  // batch closes its fds: the old server keeps serving them
    }
    const std::size_t count = batch->records.size();
    std::vector<unsigned> shards;
    {
      std::lock_guard rl(resize_mu_);
      shards = active_;
    }
    // Spread over the shards, a slice each.
    std::vector<std::unique_ptr<ConnBatch>> per(shards.size());
    for (std::size_t i = 0; i < count; ++i) {
      auto& p = per[rr++ % shards.size()];
      if (!p) p = std::make_unique<ConnBatch>();
      p->records.push_back(std::move(batch->records[i]));
      p->fds.push_back(batch->fds[i]);
      batch->fds[i] = -1;
    }
    for (std::size_t k = 0; k < shards.size(); ++k) {
      if (per[k]) post_takeover(shards[k], TakeoverOp::import, std::move(per[k]));
    }
    adopted += count;
    Writer w;
    w.u32(static_cast<std::uint32_t>(count));
    if (!ch.send(message(MsgType::ack, w.take()), opts_.takeover_timeout, err)) {
      takeover_warning(Severity::error, "the old server went away (" + err + "): keeping the " +
                                            std::to_string(adopted) + " connections received");
      break;
    }
  }
  taken_in_.fetch_add(adopted, std::memory_order_relaxed);
  takeover_us_.store(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - takeover_start_).count(),
      std::memory_order_relaxed);
  import_channel_.reset();
}

}  // namespace esockets::detail

#include "worker.hpp"

#include <chrono>
#include <cstdlib>
#include <string_view>

#include "server_core.hpp"
#include "shard.hpp"

namespace esockets::detail {

namespace {
constexpr std::size_t kEventBatch = 256;
}

Worker::Worker(ServerCore& core, unsigned index) : core_(core), index_(index) {
  pending_.resize(core.nshards());
  shard_done_.assign(core.nshards(), false);
  batch_.resize(kEventBatch);
}

Worker::~Worker() {
  for (auto& p : pending_) {
    for (std::size_t i = p.head; i < p.items.size(); ++i) dispose(p.items[i]);
  }
}

void Worker::start() {
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

SendStatus Worker::queue_command(unsigned shard, const Command& c) {
  Pending& p = pending_[shard];
  if (p.size() >= 4 * core_.options().command_queue_capacity) {
    dispose(c);
    return SendStatus::backpressure;
  }
  p.items.push_back(c);
  return SendStatus::ok;
}

bool Worker::flush_pending() {
  bool all = true;
  for (unsigned s = 0; s < pending_.size(); ++s) {
    Pending& p = pending_[s];
    if (p.size() == 0) continue;
    if (shard_done_[s]) {
      for (std::size_t i = p.head; i < p.items.size(); ++i) dispose(p.items[i]);
      p.items.clear();
      p.head = 0;
      continue;
    }
    CommandQueue& q = core_.shard(s).from_worker(index_);
    std::size_t n = q.push(p.items.data() + p.head, p.size());
    if (n > 0) {
      p.head += n;
      core_.shard(s).notify();
    }
    if (p.size() == 0) {
      p.items.clear();
      p.head = 0;
    } else {
      all = false;
    }
  }
  return all;
}

bool Worker::any_event_queued() {
  for (unsigned s = 0; s < core_.nshards(); ++s) {
    if (core_.shard(s).to_worker(index_).read_available() > 0) return true;
  }
  return false;
}

void Worker::run() {
  tls_context = ThreadContext{&core_, -1, static_cast<int>(index_)};
  const unsigned ns = core_.nshards();
  const std::size_t low_mark = core_.options().worker_queue_capacity / 2;
  while (true) {
    if (!flush_pending()) {
      // A shard is behind on our commands: wait for it rather than pile up more work.
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      continue;
    }
    if (shards_done_ == ns) break;
    bool progress = false;
    for (unsigned s = 0; s < ns; ++s) {
      Shard& sh = core_.shard(s);
      EventQueue& q = sh.to_worker(index_);
      const std::size_t n = q.pop(batch_.data(), batch_.size());
      if (n > 0) {
        progress = true;
        for (std::size_t i = 0; i < n; ++i) handle(s, batch_[i]);
        sh.counters().events_popped.fetch_add(n, std::memory_order_relaxed);
      }
      auto& wanted = sh.drain_wanted(index_);
      if (wanted.load(std::memory_order_acquire) && q.read_available() <= low_mark &&
          wanted.exchange(false, std::memory_order_acq_rel)) {
        sh.notify();
      }
    }
    if (progress) continue;
    if (!flush_pending()) continue;
    wake_.prepare_sleep();
    if (any_event_queued() || shards_done_ == ns) {
      wake_.woke();
      continue;
    }
    wake_.sleep_futex();
  }
}

void Worker::fail(WorkerConn& wc, const char* what, const char* detail) {
  warn(std::string("handler ") + what + " threw for " + wc.pub.getip() + ": " + detail);
  if (!wc.failed) {
    wc.failed = true;
    queue_command(wc.pub.id().shard(),
                  Command{wc.pub.id().value(), nullptr, 0, CommandKind::close,
                          static_cast<std::uint8_t>(CloseReason::handler_exception)});
  }
}

void Worker::handle(unsigned shard, const Event& e) {
  Handler& h = core_.handler();
  switch (e.kind) {
    case EventKind::connect: {
      auto* peer = static_cast<PeerAddress*>(e.data);
      WorkerConn& wc = conns_[e.id];
      wc.pub.core_ = &core_;
      wc.pub.id_ = ConnectionId::from_value(e.id);
      wc.pub.fd_ = static_cast<int>(e.len);
      wc.pub.peer_ = *peer;
      delete peer;
      try {
        if (!h.on_client_connect(wc.pub)) {
          wc.refused = true;
          queue_command(shard, Command{e.id, nullptr, 0, CommandKind::close,
                                       static_cast<std::uint8_t>(CloseReason::refused)});
        }
      } catch (const std::exception& ex) {
        fail(wc, "on_client_connect", ex.what());
      } catch (...) {
        fail(wc, "on_client_connect", "non-std exception");
      }
      return;
    }
    case EventKind::message: {
      auto it = conns_.find(e.id);
      if (it != conns_.end() && !it->second.refused && !it->second.failed) {
        try {
          h.on_message_recv(it->second.pub, std::string_view(static_cast<char*>(e.data), e.len));
        } catch (const std::exception& ex) {
          fail(it->second, "on_message_recv", ex.what());
        } catch (...) {
          fail(it->second, "on_message_recv", "non-std exception");
        }
      }
      std::free(e.data);
      return;
    }
    case EventKind::disconnect: {
      auto it = conns_.find(e.id);
      if (it == conns_.end()) return;
      try {
        h.on_client_disconnect(it->second.pub, static_cast<CloseReason>(e.reason));
      } catch (const std::exception& ex) {
        warn(std::string("on_client_disconnect threw: ") + ex.what());
      } catch (...) {
        warn("on_client_disconnect threw a non-std exception");
      }
      conns_.erase(it);
      return;
    }
    case EventKind::output_high:
    case EventKind::output_low: {
      auto it = conns_.find(e.id);
      if (it == conns_.end() || it->second.refused || it->second.failed) return;
      try {
        if (e.kind == EventKind::output_high) {
          h.on_output_high(it->second.pub);
        } else {
          h.on_output_low(it->second.pub);
        }
      } catch (const std::exception& ex) {
        fail(it->second, "on_output_high/low", ex.what());
      } catch (...) {
        fail(it->second, "on_output_high/low", "non-std exception");
      }
      return;
    }
    case EventKind::eof:
      queue_command(shard, Command{e.id, nullptr, 0, CommandKind::eof_ack, 0});
      return;
    case EventKind::barrier:
      queue_command(shard, Command{0, nullptr, 0, CommandKind::barrier_ack, 0});
      return;
    case EventKind::shard_done:
      ++shards_done_;
      shard_done_[shard] = true;
      return;
  }
}

void Worker::warn(const std::string& msg) {
  const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
  core_.count_worker_warning();
  if (now - warn_window_ms_ >= 1000) {
    warn_window_ms_ = now;
    warn_in_window_ = 0;
  }
  if (++warn_in_window_ > 10) return;
  try {
    core_.handler().on_warning("esockets: worker " + std::to_string(index_) + ": " + msg);
  } catch (...) {
  }
}

}  // namespace esockets::detail

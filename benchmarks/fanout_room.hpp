// fanout_room: the server side of fanout_bench: a handler that fans each message of the
// publishing client out to the room (Server::multicast or one Server::send per member), and a
// Setup that starts a server, connects the room and the publisher, and checks it stayed whole.
// Thread: FanoutHandler runs on engine threads; Setup belongs to the benchmark's main thread;
// publish_from_thread runs on a plain thread that is not an engine thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <esockets/esockets.hpp>

#include "fanout_clients.hpp"

namespace fanout {

using esockets::ConnectionId;

enum class Variant { multicast, send };
enum class Publisher { handler, thread };

inline const char* name(Variant v) { return v == Variant::multicast ? "multicast" : "send"; }
inline const char* name(Publisher p) { return p == Publisher::handler ? "handler" : "thread"; }

struct Config {
  unsigned shards = 1;
  unsigned workers = 0;
  std::string name() const {
    return "s" + std::to_string(shards) +
           (workers == 0 ? "-inline" : "-w" + std::to_string(workers));
  }
};

struct Options {
  std::size_t members = 1000;
  std::vector<std::size_t> payloads{64, 1024};
  std::vector<unsigned> shards{1, 2};
  std::vector<unsigned> workers{0, 2};
  std::vector<Publisher> publishers{Publisher::handler, Publisher::thread};
  std::vector<Variant> variants{Variant::multicast, Variant::send};  // one only: for profiling
  unsigned reps = 3;
  double duration = 0.4;            // seconds of publishing per run
  unsigned window = 128;            // messages in flight (published, not yet delivered to all)
  std::uint64_t max_messages = 1'000'000;
  std::size_t mem_messages = 200;
  std::vector<std::size_t> mem_payloads{64, 1024};
  unsigned mem_reps = 2;
  Config mem_config{1, 0};
  bool memory = true;
  bool throughput = true;
  bool group = false;
  std::string json;
};

// ---------------------------------------------------------------------------- server side

inline char publisher_tag;  // Connection::user_data of the publishing client

class FanoutHandler final : public esockets::Handler {
 public:
  void set_variant(Variant v) { variant_.store(v, std::memory_order_release); }
  void set_room(const std::vector<ConnectionId>* ids, esockets::Group* group) {
    group_ = group;
    room_.store(ids, std::memory_order_release);
  }
  std::size_t joined() const { return joined_count_.load(std::memory_order_acquire); }
  std::vector<ConnectionId> joined_ids() {
    std::lock_guard lk(mu_);
    return joined_;
  }
  /// Recipients a handler fan-out did not reach with status ok.
  std::uint64_t failures() const { return failures_.load(std::memory_order_acquire); }
  std::uint64_t warnings() const { return warnings_.load(std::memory_order_acquire); }
  std::string first_warning() {
    std::lock_guard lk(mu_);
    return first_warning_;
  }

  void on_message_recv(esockets::Connection& c, esockets::Bytes msg) override {
    if (c.user_data() == &publisher_tag) {
      fan_out(c.server(), msg);
    } else if (msg == "M") {
      std::lock_guard lk(mu_);
      joined_.push_back(c.id());
      joined_count_.store(joined_.size(), std::memory_order_release);
    } else if (msg == "P") {
      c.set_user_data(&publisher_tag);
    }
  }
  void on_warning(std::string_view message) override {
    warnings_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lk(mu_);
    if (first_warning_.empty()) first_warning_ = std::string(message);
  }

 private:
  void fan_out(esockets::Server& server, esockets::Bytes msg) {
    const std::vector<ConnectionId>* room = room_.load(std::memory_order_acquire);
    if (room == nullptr) return;
    std::uint64_t bad = 0;
    if (variant_.load(std::memory_order_acquire) == Variant::multicast) {
      const esockets::MulticastResult r = group_ != nullptr ? group_->send(msg)
                                                            : server.multicast(*room, msg);
      bad = room->size() - r.ok;
    } else {
      for (ConnectionId id : *room) bad += server.send(id, msg) != esockets::SendStatus::ok;
    }
    if (bad != 0) failures_.fetch_add(bad, std::memory_order_relaxed);
  }

  std::atomic<Variant> variant_{Variant::multicast};
  std::atomic<const std::vector<ConnectionId>*> room_{nullptr};
  esockets::Group* group_ = nullptr;
  std::mutex mu_;
  std::vector<ConnectionId> joined_;
  std::atomic<std::size_t> joined_count_{0};
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<std::uint64_t> warnings_{0};
  std::string first_warning_;
};

[[noreturn]] inline void die(const std::string& why) {
  std::fprintf(stderr, "fanout_bench: FAILED: %s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

// A server with a room of members and a publishing client, for one configuration.
class Setup {
 public:
  Setup(const Options& o, Config cfg, bool quiet_members) : cfg_(cfg) {
    esockets::ServerOptions so;
    so.shards = cfg.shards;
    so.workers = cfg.workers;
    so.framing = esockets::Framing::length_prefixed;
    if (quiet_members) {
      so.socket_send_buffer = 4096;  // output stays in the engine's queues, where RSS sees it
    } else {
      // The window bounds the room's total backlog, not one member's; leave room for a laggard.
      so.output_hard_cap = 64u << 20;
    }
    server_ = std::make_unique<esockets::Server>(handler_, so);
    server_->start();
    members_ = std::make_unique<fanout::Members>(server_->port(), o.members,
                                                 quiet_members ? 4096 : 0);
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (handler_.joined() < o.members) {
      if (Clock::now() > deadline) {
        die(cfg.name() + ": only " + std::to_string(handler_.joined()) + " of " +
            std::to_string(o.members) + " members joined within 20 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ids_ = handler_.joined_ids();
    if (o.group) {
      group_ = std::make_unique<esockets::Group>(*server_);
      for (ConnectionId id : ids_) group_->add(id);
    }
    handler_.set_room(&ids_, group_.get());
    pub_fd_ = fanout::connect_loopback(server_->port(), 0);
    const std::string hello = fanout::frame("P");
    fanout::write_all(pub_fd_, hello.data(), hello.size());
    if (!quiet_members) members_->start_reader(64);
  }
  ~Setup() {
    // Clients leave first: a server-side close would wait up to linger_timeout for their FIN.
    members_.reset();
    ::close(pub_fd_);
    server_->stop();
  }
  Setup(const Setup&) = delete;
  Setup& operator=(const Setup&) = delete;

  FanoutHandler& handler() { return handler_; }
  esockets::Server& server() { return *server_; }
  fanout::Members& members() { return *members_; }
  const std::vector<ConnectionId>& room() const { return ids_; }
  esockets::Group* group() { return group_.get(); }
  int publisher_fd() const { return pub_fd_; }
  const Config& config() const { return cfg_; }
  /// Sequence number of the next message (numbering continues over the runs of a setup).
  std::uint64_t next_seq = 0;

  /// Ends the program if the server closed anything or warned, or a fan-out failed.
  void check(const std::string& where) {
    const esockets::Stats st = server_->stats();
    std::uint64_t closes = 0;
    for (std::uint64_t n : st.total.closes) closes += n;
    if (closes != 0) die(where + ": the server closed " + std::to_string(closes) + " connections");
    if (handler_.failures() != 0) {
      die(where + ": " + std::to_string(handler_.failures()) + " recipients not reached");
    }
    if (handler_.warnings() != 0) die(where + ": server warning: " + handler_.first_warning());
    const std::string err = members_->error();
    if (!err.empty()) die(where + ": " + err);
  }

 private:
  Config cfg_;
  FanoutHandler handler_;
  std::unique_ptr<esockets::Server> server_;
  std::unique_ptr<fanout::Members> members_;
  std::unique_ptr<esockets::Group> group_;
  std::vector<ConnectionId> ids_;
  int pub_fd_ = -1;
};

// Sends one message to the room from a thread that is not an engine thread. A full command
// queue (backpressure) is waited out and the recipient retried; returns the retries.
inline std::uint64_t publish_from_thread(Setup& s, Variant v, esockets::Bytes msg) {
  esockets::Server& server = s.server();
  if (v == Variant::multicast) {
    const esockets::MulticastResult r =
        s.group() != nullptr ? s.group()->send(msg) : server.multicast(s.room(), msg);
    if (r.ok != s.room().size()) {
      die("multicast from a thread reached " + std::to_string(r.ok) + " of " +
          std::to_string(s.room().size()) + " (backpressure " + std::to_string(r.backpressure) +
          ", closed " + std::to_string(r.closed) + ")");
    }
    return 0;
  }
  std::uint64_t retries = 0;
  for (ConnectionId id : s.room()) {
    for (int attempt = 0;; ++attempt) {
      const esockets::SendStatus st = server.send(id, msg);
      if (st == esockets::SendStatus::ok) break;
      if (st != esockets::SendStatus::backpressure || attempt == 1000) {
        die(std::string("send from a thread: ") + esockets::to_string(st));
      }
      ++retries;
      (void)server.wait_writable(id, std::chrono::milliseconds(100));
    }
  }
  return retries;
}

// Writes the message's sequence number into its first 8 bytes.
inline void stamp(std::string& msg, std::size_t at, std::uint64_t seq) {
  std::memcpy(msg.data() + at, &seq, sizeof seq);
}


}  // namespace fanout

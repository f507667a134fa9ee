// Adversarial tests of the io_uring backend: each runs on epoll and on io_uring with the same
// expectations (a promise of the engine, not of a backend). A test that fails on io_uring only
// shows a bug of the io_uring I/O layer (engine/shard/shard_uring.cpp and what it relies on).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <mutex>
#include <string>
#include <thread>
#include <dirent.h>
#include <unistd.h>

#include <unordered_map>
#include <vector>

#include "esockets/esockets.hpp"
#include "backend_param.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using esockets::Backend;
using esockets::Bytes;
using esockets::CloseReason;
using esockets::Connection;
using esockets::ConnectionId;
using esockets::SendStatus;
using esockets::Server;
using esockets::ServerOptions;
using esockets::test::Client;
using esockets::test::io_uring_usable;
using esockets::test::wait_until;

namespace {

class UringAdv : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::io_uring && !io_uring_usable()) {
      GTEST_SKIP() << "this kernel cannot run the io_uring backend";
    }
  }
  ServerOptions options(unsigned shards = 1, unsigned workers = 0) const {
    ServerOptions o = esockets::test::loopback_options(shards, workers);
    o.backend = GetParam();
    return o;
  }
};

std::string name_of(const ::testing::TestParamInfo<Backend>& i) {
  return esockets::test::backend_name(i.param);
}

// A 16-byte line: "<seq padded to 15 digits>\n".
std::string line16(unsigned seq) {
  char b[32];
  std::snprintf(b, sizeof b, "%015u\n", seq);
  return std::string(b, 16);
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 13) % 26);
  return s;
}

// Raw framing (the default): the handler is busy on the first chunk while the client sends a
// burst, then pauses on the next chunk and is resumed a moment later. Every byte must be
// delivered (and echoed) once, in order.
class RawPauseEcho : public esockets::Handler {
 public:
  std::mutex mu;
  std::string got;
  std::atomic<int> chunks{0};
  std::atomic<bool> got1{false};
  std::atomic<bool> paused{false};
  ConnectionId id;
  void on_message_recv(Connection& c, Bytes m) override {
    {
      std::lock_guard lk(mu);
      got.append(m.data(), m.size());
    }
    c.send(m);
    const int n = ++chunks;
    if (n == 1) {
      got1 = true;
      std::this_thread::sleep_for(150ms);  // the burst piles up in the socket
    }
    if (n == 2) {
      id = c.id();
      c.pause_reading();
      paused = true;
    }
  }
};

TEST_P(UringAdv, RawFramingPauseMidBurstLosesNothing) {
  RawPauseEcho h;
  Server s(h, options());
  s.start();
  Client c(s.port());
  const std::string first = "first-chunk-0000";
  const std::string burst = pattern(48 * 1024);
  ASSERT_TRUE(c.send_all(first));
  ASSERT_TRUE(wait_until([&] { return h.got1.load(); }, 3s));  // asleep on the first chunk
  ASSERT_TRUE(c.send_all(burst));
  ASSERT_TRUE(wait_until([&] { return h.paused.load(); }, 3s));
  std::this_thread::sleep_for(50ms);
  ASSERT_EQ(s.post(h.id, [](Connection& x) { x.resume_reading(); }), SendStatus::ok);
  std::string echo;
  const bool all = c.recv_exact(first.size() + burst.size(), echo, 3s);
  EXPECT_TRUE(all) << "echoed " << echo.size() << " of " << first.size() + burst.size()
                   << " bytes; the server delivered "
                   << [&] { std::lock_guard lk(h.mu); return h.got.size(); }() << " bytes";
  EXPECT_TRUE(echo == (first + burst).substr(0, echo.size())) << "echo reordered/corrupted";
  s.stop();
}

// Raw framing, the peer's FIN right behind a burst that arrives while the connection is
// paused: every byte is delivered, then on_client_disconnect(peer_closed).
class RawPauseCount : public esockets::Handler {
 public:
  std::atomic<std::size_t> bytes{0};
  std::atomic<int> chunks{0};
  std::atomic<bool> got1{false};
  std::atomic<bool> paused{false};
  std::atomic<int> disconnects{0};
  std::atomic<int> peer_closed{0};
  ConnectionId id;
  void on_message_recv(Connection& c, Bytes m) override {
    bytes += m.size();
    const int n = ++chunks;
    if (n == 1) {
      got1 = true;
      std::this_thread::sleep_for(150ms);
    }
    if (n == 2) {
      id = c.id();
      c.pause_reading();
      paused = true;
    }
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    if (r == CloseReason::peer_closed) ++peer_closed;
    ++disconnects;
  }
};

TEST_P(UringAdv, RawFramingPeerCloseBehindPausedBurst) {
  RawPauseCount h;
  Server s(h, options());
  s.start();
  Client c(s.port());
  const std::string first = "first-chunk-0000";
  const std::string burst = pattern(48 * 1024);
  ASSERT_TRUE(c.send_all(first));
  ASSERT_TRUE(wait_until([&] { return h.got1.load(); }, 3s));
  ASSERT_TRUE(c.send_all(burst));
  c.shutdown_write();
  ASSERT_TRUE(wait_until([&] { return h.paused.load(); }, 3s));
  std::this_thread::sleep_for(50ms);
  ASSERT_EQ(s.post(h.id, [](Connection& x) { x.resume_reading(); }), SendStatus::ok);
  EXPECT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }, 3s))
      << "no on_client_disconnect; delivered " << h.bytes.load() << " of "
      << first.size() + burst.size() << " bytes";
  EXPECT_EQ(h.bytes.load(), first.size() + burst.size());
  EXPECT_EQ(h.peer_closed.load(), 1);
  s.stop();
}

// Line framing. The handler is busy on line 0 while lines 1..2048 (16 bytes each: 32 KiB) and
// a partial line arrive; it pauses on line 1024 and is resumed a moment later. The partial
// line is never completed: frame_timeout must end the connection.
class FrameTimeoutHandler : public esockets::Handler {
 public:
  std::atomic<bool> got0{false};
  std::atomic<unsigned> lines{0};
  std::atomic<bool> paused{false};
  std::atomic<int> disconnects{0};
  std::atomic<int> frame_timeouts{0};
  std::atomic<int> last_reason{-1};
  ConnectionId id;
  void on_message_recv(Connection& c, Bytes m) override {
    const unsigned seq = static_cast<unsigned>(std::strtoul(std::string(m).c_str(), nullptr, 10));
    ++lines;
    if (seq == 0) {
      got0 = true;
      std::this_thread::sleep_for(150ms);  // the burst arrives meanwhile
    }
    if (seq == 1024) {
      id = c.id();
      c.pause_reading();
      paused = true;
    }
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    if (r == CloseReason::frame_timeout) ++frame_timeouts;
    last_reason = static_cast<int>(r);
    ++disconnects;
  }
};

TEST_P(UringAdv, FrameTimeoutCoversPartialFrameHeldWhilePaused) {
  FrameTimeoutHandler h;
  ServerOptions o = options();
  o.framing = esockets::Framing::line;
  o.frame_timeout = 400ms;
  o.idle_timeout = 0ms;
  Server s(h, o);
  s.start();
  Client c(s.port());
  ASSERT_TRUE(c.send_all(line16(0)));
  ASSERT_TRUE(wait_until([&] { return h.got0.load(); }, 3s));  // line 0 read on its own
  std::string burst;
  for (unsigned i = 1; i <= 2048; ++i) burst += line16(i);
  burst += "partial";
  ASSERT_TRUE(c.send_all(burst));
  ASSERT_TRUE(wait_until([&] { return h.paused.load(); }, 3s));
  std::this_thread::sleep_for(50ms);
  ASSERT_EQ(s.post(h.id, [](Connection& x) { x.resume_reading(); }), SendStatus::ok);
  ASSERT_TRUE(wait_until([&] { return h.lines.load() == 2049; }, 3s)) << h.lines.load();
  EXPECT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }, 3s))
      << "a partial line sat for 3 s with frame_timeout = 400 ms";
  EXPECT_EQ(h.frame_timeouts.load(), 1) << "reason " << h.last_reason.load();
  s.stop();
}


// Raw framing with workers and no pause_reading at all: engine flow control only. The worker
// is slow on the first chunks (its queue fills), and the shard is held up for a moment (by
// on_warning, which runs on the shard: a connection refused by max_connections) while the client
// sends a burst, so that one receive completes many chunks at once and flow control pauses the
// client in the middle of them. Every byte must come back, in order.
class SlowRawEcho : public esockets::Handler {
 public:
  std::atomic<std::size_t> bytes{0};
  std::atomic<int> chunks{0};
  std::atomic<int> warnings{0};
  void on_message_recv(Connection& c, Bytes m) override {
    bytes += m.size();
    c.send(m);
    if (++chunks <= 8) std::this_thread::sleep_for(40ms);
  }
  void on_warning(std::string_view) override {
    if (++warnings == 1) std::this_thread::sleep_for(150ms);  // on the shard's thread
  }
};

TEST_P(UringAdv, RawFramingWorkerFlowControlLosesNothing) {
  SlowRawEcho h;
  ServerOptions o = options(1, 2);
  o.worker_queue_capacity = 16;
  o.read_chunk = 4096;  // 4 KiB reads: one receive completes many chunks at once
  o.max_connections = 1;
  Server s(h, o);
  s.start();
  Client c(s.port());
  ASSERT_TRUE(wait_until([&] { return s.client_count() == 1; }, 3s));
  const std::string data = pattern(512 * 1024);
  std::size_t off = 0;
  for (int i = 0; i < 8; ++i, off += 4096) {  // eight chunks for the slow worker
    ASSERT_TRUE(c.send_all(std::string_view(data).substr(off, 4096)));
    std::this_thread::sleep_for(3ms);
  }
  Client refused(s.port());  // refused: the shard sleeps in on_warning
  std::this_thread::sleep_for(20ms);
  std::thread writer([&] { (void)c.send_all(std::string_view(data).substr(off), 5s); });
  std::string echo;
  const bool all = c.recv_exact(data.size(), echo, 4s);
  writer.join();
  EXPECT_GE(h.warnings.load(), 1);
  EXPECT_TRUE(all) << "echoed " << echo.size() << " of " << data.size()
                   << " bytes; the workers got " << h.bytes.load();
  EXPECT_TRUE(echo == data.substr(0, echo.size())) << "echo reordered/corrupted";
  s.stop();
}

// Many connections complete receives at once (the shard was busy meanwhile): more of them than
// the provided-buffer ring has buffers (128; one per completion), so receives end with ENOBUFS
// and are re-armed. Every line comes back once, in order, on every connection; some pause too.
class BurstEcho : public esockets::Handler {
 public:
  Server* server = nullptr;
  std::atomic<bool> blocked{false};
  std::atomic<std::uint64_t> lines{0};
  std::mutex mu;
  std::vector<ConnectionId> paused;
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "block") {
      blocked = true;
      std::this_thread::sleep_for(250ms);
      return;
    }
    c.send(m);
    c.send("\n");
    if (++lines % 97 == 0) {
      c.pause_reading();
      std::lock_guard lk(mu);
      paused.push_back(c.id());
    }
  }
};

TEST_P(UringAdv, ManyConnectionsCompleteAtOnceBeyondTheBufferRing) {
  BurstEcho h;
  ServerOptions o = options(1);
  o.framing = esockets::Framing::line;
  Server s(h, o);
  h.server = &s;
  s.start();
  const unsigned n = 300, per = 48;
  std::vector<Client> cs;
  for (unsigned i = 0; i < n; ++i) cs.emplace_back(s.port());
  Client blocker(s.port());
  ASSERT_TRUE(wait_until([&] { return s.client_count() == n + 1; }, 3s));
  std::atomic<bool> stop_resumer{false};
  std::thread resumer([&] {
    while (!stop_resumer) {
      std::vector<ConnectionId> ids;
      {
        std::lock_guard lk(h.mu);
        ids.swap(h.paused);
      }
      for (ConnectionId id : ids) (void)s.post(id, [](Connection& c) { c.resume_reading(); });
      std::this_thread::sleep_for(2ms);
    }
  });
  ASSERT_TRUE(blocker.send_line("block"));
  ASSERT_TRUE(wait_until([&] { return h.blocked.load(); }, 3s));
  std::vector<std::string> bursts(n);
  for (unsigned i = 0; i < n; ++i) {
    for (unsigned k = 0; k < per; ++k) {
      std::string l = "c" + std::to_string(i) + " " + std::to_string(k) + " ";
      l.resize(1000, static_cast<char>('a' + (i + k) % 26));
      bursts[i] += l + "\n";
    }
    ASSERT_TRUE(cs[i].send_all(bursts[i], 2s)) << "client " << i;  // all while the shard sleeps
  }
  std::vector<std::string> failures;
  for (unsigned i = 0; i < n && failures.size() < 5; ++i) {
    std::string got;
    if (!cs[i].recv_exact(bursts[i].size(), got, 3s) || got != bursts[i]) {
      failures.push_back("client " + std::to_string(i) + ": " + std::to_string(got.size()) +
                         " of " + std::to_string(bursts[i].size()) + " bytes, " +
                         (got == bursts[i].substr(0, got.size()) ? "in order" : "CORRUPTED"));
    }
  }
  stop_resumer = true;
  resumer.join();
  for (const auto& f : failures) ADD_FAILURE() << f;
  s.stop();
}

// The peer's FIN and lines held while the connection was paused travel with it to another
// shard (set_shards 2 -> 1): after the resume on the new shard, every line, then peer_closed.
class HeldFinEcho : public esockets::Handler {
 public:
  std::atomic<int> sleeping{0};
  std::atomic<int> paused_n{0};
  std::atomic<int> disconnects{0};
  std::atomic<int> peer_closed{0};
  std::mutex mu;
  std::vector<ConnectionId> paused;
  std::unordered_map<std::uint64_t, unsigned> next;  // expected seq per connection
  std::vector<std::string> errors;
  void on_message_recv(Connection& c, Bytes m) override {
    const unsigned seq = static_cast<unsigned>(std::strtoul(std::string(m).c_str(), nullptr, 10));
    {
      std::lock_guard lk(mu);
      unsigned& want = next[c.id().value()];
      if (seq != want && errors.size() < 10) {
        errors.push_back("got " + std::to_string(seq) + " expected " + std::to_string(want));
      }
      want = seq + 1;
    }
    c.send(m);
    c.send("\n");
    if (seq == 0) {
      ++sleeping;
      std::this_thread::sleep_for(120ms);  // the rest and the FIN arrive meanwhile
    }
    if (seq == 1) {
      c.pause_reading();
      std::lock_guard lk(mu);
      paused.push_back(c.id());
      ++paused_n;
    }
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    if (r == CloseReason::peer_closed) ++peer_closed;
    ++disconnects;
  }
};

TEST_P(UringAdv, HeldLinesAndFinMoveWithTheConnection) {
  HeldFinEcho h;
  ServerOptions o = options(2);
  o.framing = esockets::Framing::line;
  Server s(h, o);
  s.start();
  const unsigned n = 8, lines = 300;
  std::vector<Client> cs;
  for (unsigned i = 0; i < n; ++i) cs.emplace_back(s.port());
  ASSERT_TRUE(wait_until([&] { return s.client_count() == n; }, 3s));
  std::vector<std::string> all(n);
  for (unsigned i = 0; i < n; ++i) {
    for (unsigned k = 0; k < lines; ++k) all[i] += line16(k);
    ASSERT_TRUE(cs[i].send_all(all[i].substr(0, 16)));
  }
  ASSERT_TRUE(wait_until([&] { return h.sleeping.load() >= 1; }, 3s));
  for (unsigned i = 0; i < n; ++i) {
    ASSERT_TRUE(cs[i].send_all(all[i].substr(16)));
    cs[i].shutdown_write();
  }
  ASSERT_TRUE(wait_until([&] { return h.paused_n.load() == static_cast<int>(n); }, 4s));
  std::this_thread::sleep_for(30ms);
  s.set_shards(1);  // the paused connections of shard 1 move to shard 0
  std::vector<ConnectionId> ids;
  {
    std::lock_guard lk(h.mu);
    ids = h.paused;
  }
  for (ConnectionId id : ids) {
    EXPECT_EQ(s.post(id, [](Connection& c) { c.resume_reading(); }), SendStatus::ok);
  }
  for (unsigned i = 0; i < n; ++i) {
    std::string got;
    EXPECT_TRUE(cs[i].recv_exact(all[i].size(), got, 3s))
        << "client " << i << ": " << got.size() << " of " << all[i].size();
    EXPECT_TRUE(got == all[i].substr(0, got.size())) << "client " << i << " reordered";
    EXPECT_EQ(cs[i].wait_eof(3s), esockets::test::EofResult::eof) << "client " << i;
  }
  EXPECT_TRUE(wait_until([&] { return h.disconnects.load() == static_cast<int>(n); }, 3s));
  EXPECT_EQ(h.peer_closed.load(), static_cast<int>(n));
  {
    std::lock_guard lk(h.mu);
    for (const auto& e : h.errors) ADD_FAILURE() << e;
  }
  s.stop();
}

// A shard index retired and revived (a new ring each time) serves like any other: clients
// spread over both shards pipeline numbered lines while the count goes 2 -> 1 -> 2 -> 1 -> 2.
TEST_P(UringAdv, RevivedShardServesAndMovesCleanly) {
  esockets::test::CountingHandler h;
  h.framed_echo = true;  // send_frame: the line and its '\n'
  ServerOptions o = options(2);
  o.framing = esockets::Framing::line;
  Server s(h, o);
  s.start();
  s.set_shards(1);
  s.set_shards(2);
  const unsigned n = 16, lines = 2000;
  std::vector<std::string> failures;
  std::mutex fmu;
  std::atomic<bool> done{false};
  std::thread resizer([&] {
    for (int i = 0; !done.load() && i < 6; ++i) {
      std::this_thread::sleep_for(40ms);
      s.set_shards(i % 2 == 0 ? 1 : 2);
    }
  });
  std::vector<std::thread> ts;
  for (unsigned k = 0; k < n; ++k) {
    ts.emplace_back([&, k] {
      Client c(s.port());
      unsigned sent = 0, got = 0;
      std::string line;
      while (got < lines) {
        if (sent < lines && sent - got < 64) {
          std::string burst;
          for (unsigned i = 0; i < 16 && sent < lines; ++i, ++sent) {
            burst += "c" + std::to_string(k) + " " + std::to_string(sent) + "\n";
          }
          if (!c.send_all(burst, 3s)) break;
          continue;
        }
        if (!c.recv_line(line, 3s)) break;
        const std::string want = "c" + std::to_string(k) + " " + std::to_string(got);
        if (line != want) {
          std::lock_guard lk(fmu);
          failures.push_back("client " + std::to_string(k) + " got '" + line + "', expected '" +
                             want + "'");
          return;
        }
        ++got;
      }
      if (got != lines) {
        std::lock_guard lk(fmu);
        failures.push_back("client " + std::to_string(k) + " got " + std::to_string(got));
      }
    });
  }
  for (auto& t : ts) t.join();
  done = true;
  resizer.join();
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_TRUE(wait_until([&] { return h.disconnects.load() == static_cast<int>(n); }, 3s));
  EXPECT_EQ(s.stats().total.connections, 0u);
  s.stop();
}

// PROXY v1 listener: the header dripped in pieces, then lines and the FIN in one write; and a
// header, lines and FIN all in one write. Lines echo in order, peer() is the proxied client.
class ProxyEcho : public esockets::Handler {
 public:
  std::atomic<int> disconnects{0};
  std::atomic<int> peer_closed{0};
  std::mutex mu;
  std::vector<std::string> peers;
  bool on_client_connect(Connection& c) override {
    std::lock_guard lk(mu);
    peers.push_back(c.getip());
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    c.send(m);
    c.send("\n");
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    if (r == CloseReason::peer_closed) ++peer_closed;
    ++disconnects;
  }
};

TEST_P(UringAdv, ProxyHeaderThenPipelinedLinesAndFin) {
  ProxyEcho h;
  ServerOptions o = options(1);
  o.framing = esockets::Framing::line;
  esockets::ListenerOptions l;
  l.address = "127.0.0.1:0";
  l.proxy_protocol = esockets::ProxyProtocol::v1;
  o.listeners = {l};
  Server s(h, o);
  s.start();
  const std::string header = "PROXY TCP4 192.0.2.7 192.0.2.8 4711 80\r\n";
  std::string lines;
  for (unsigned k = 0; k < 500; ++k) lines += line16(k);
  {
    Client c(s.port());
    ASSERT_TRUE(c.send_all(header.substr(0, 10)));
    std::this_thread::sleep_for(20ms);
    ASSERT_TRUE(c.send_all(header.substr(10, 15)));
    std::this_thread::sleep_for(20ms);
    ASSERT_TRUE(c.send_all(header.substr(25) + lines));
    c.shutdown_write();
    std::string got;
    EXPECT_TRUE(c.recv_exact(lines.size(), got, 3s)) << got.size();
    EXPECT_TRUE(got == lines.substr(0, got.size()));
    EXPECT_EQ(c.wait_eof(3s), esockets::test::EofResult::eof);
  }
  {
    Client c(s.port());
    ASSERT_TRUE(c.send_all(header + lines));
    c.shutdown_write();
    std::string got;
    EXPECT_TRUE(c.recv_exact(lines.size(), got, 3s)) << got.size();
    EXPECT_TRUE(got == lines.substr(0, got.size()));
    EXPECT_EQ(c.wait_eof(3s), esockets::test::EofResult::eof);
  }
  EXPECT_TRUE(wait_until([&] { return h.disconnects.load() == 2; }, 3s));
  EXPECT_EQ(h.peer_closed.load(), 2);
  {
    std::lock_guard lk(h.mu);
    for (const auto& p : h.peers) EXPECT_EQ(p.rfind("192.0.2.7", 0), 0u) << p;
  }
  s.stop();
}

// Takeover to another server (in process, through the control socket) while every connection
// is paused with lines held in the old server (received while the pause took effect): the new
// server gets them with the connection and, once resumed, delivers every line once, in order.
class TakeoverEcho : public esockets::Handler {
 public:
  bool old_side = true;
  std::atomic<int> sleeping{0};
  std::atomic<int> paused_n{0};
  std::atomic<int> taken{0};
  std::atomic<int> other_closes{0};
  void on_message_recv(Connection& c, Bytes m) override {
    c.send(m);
    c.send("\n");
    if (!old_side) return;
    const unsigned seq = static_cast<unsigned>(std::strtoul(std::string(m).c_str(), nullptr, 10));
    if (seq == 0) {
      ++sleeping;
      std::this_thread::sleep_for(60ms);  // the rest arrives meanwhile
    }
    if (seq == 1) {
      c.pause_reading();
      ++paused_n;
    }
  }
  std::string on_client_takeover(Connection&) override {
    ++taken;
    return "x";
  }
  bool on_client_restore(Connection&, std::string_view) override { return true; }
  void on_client_disconnect(Connection&, CloseReason r) override {
    if (r != CloseReason::taken_over) ++other_closes;
  }
};

TEST_P(UringAdv, TakeoverCarriesLinesHeldWhilePaused) {
  const std::string path = "/tmp/esk-uring-adv-" + std::to_string(::getpid()) + "-" +
                           std::to_string(static_cast<int>(GetParam()));
  TakeoverEcho h_old, h_new;
  h_new.old_side = false;
  ServerOptions oo = options(2);
  oo.framing = esockets::Framing::line;
  oo.takeover_socket = path;
  Server old_srv(h_old, oo);
  old_srv.start();
  const unsigned n = 6, lines = 400;
  std::vector<Client> cs;
  for (unsigned i = 0; i < n; ++i) cs.emplace_back(old_srv.port());
  ASSERT_TRUE(wait_until([&] { return old_srv.client_count() == n; }, 3s));
  std::vector<std::string> all(n);
  for (unsigned i = 0; i < n; ++i) {
    for (unsigned k = 0; k < lines; ++k) all[i] += line16(k);
  }
  for (unsigned i = 0; i < n; ++i) ASSERT_TRUE(cs[i].send_all(all[i].substr(0, 16)));
  ASSERT_TRUE(wait_until([&] { return h_old.sleeping.load() >= 1; }, 3s));
  for (unsigned i = 0; i < n; ++i) ASSERT_TRUE(cs[i].send_all(all[i].substr(16)));
  ASSERT_TRUE(wait_until([&] { return h_old.paused_n.load() == static_cast<int>(n); }, 4s));
  std::this_thread::sleep_for(30ms);
  ServerOptions no = options(1);
  no.framing = esockets::Framing::line;
  no.port = 0;
  no.take_over = path;
  Server new_srv(h_new, no);
  new_srv.start();
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 4s)) << "the old server still runs";
  old_srv.wait();
  ASSERT_TRUE(wait_until([&] { return new_srv.client_count() == n; }, 3s));
  EXPECT_EQ(h_old.taken.load(), static_cast<int>(n));
  EXPECT_EQ(h_old.other_closes.load(), 0);
  new_srv.for_each_client([&](ConnectionId id) {
    (void)new_srv.post(id, [](Connection& c) { c.resume_reading(); });
  });
  for (unsigned i = 0; i < n; ++i) {
    std::string got;
    EXPECT_TRUE(cs[i].recv_exact(all[i].size(), got, 3s))
        << "client " << i << ": " << got.size() << " of " << all[i].size();
    EXPECT_TRUE(got == all[i].substr(0, got.size())) << "client " << i << " reordered";
  }
  new_srv.stop();
  ::unlink(path.c_str());
}

// CPU time (ms) used so far by this process's thread named `name` (-1 if none).
long thread_cpu_ms(const std::string& name) {
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return -1;
  long ms = -1;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string dir = std::string("/proc/self/task/") + e->d_name;
    std::ifstream comm(dir + "/comm");
    std::string c;
    std::getline(comm, c);
    if (c != name) continue;
    std::ifstream stat(dir + "/stat");
    std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    std::istringstream rest(all.substr(all.rfind(')') + 2));
    std::string f;
    long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> f; ++i) {
      if (i == 14) utime = std::stol(f);
      if (i == 15) stime = std::stol(f);
    }
    ms = (utime + stime) * 1000 / ::sysconf(_SC_CLK_TCK);
  }
  ::closedir(d);
  return ms;
}

// A paused connection whose client then half-closes (FIN) just waits, as on epoll: the shard
// stays idle (it does not spin on the hang-up), and after resume_reading the connection ends
// as peer_closed.
class PauseOnFirst : public esockets::Handler {
 public:
  std::atomic<bool> paused{false};
  std::atomic<int> disconnects{0};
  std::atomic<int> peer_closed{0};
  ConnectionId id;
  void on_message_recv(Connection& c, Bytes m) override {
    c.send(m);
    c.send("\n");
    if (!paused) {
      id = c.id();
      c.pause_reading();
      paused = true;
    }
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    if (r == CloseReason::peer_closed) ++peer_closed;
    ++disconnects;
  }
};

TEST_P(UringAdv, PausedConnectionWithPeerFinLeavesTheShardIdle) {
  PauseOnFirst h;
  ServerOptions o = options(1);
  o.framing = esockets::Framing::line;
  Server s(h, o);
  s.start();
  Client c(s.port());
  ASSERT_TRUE(c.send_line("hello"));
  std::string line;
  ASSERT_TRUE(c.recv_line(line, 3s));
  ASSERT_TRUE(h.paused.load());
  std::this_thread::sleep_for(50ms);  // the pause took effect (the receive is cancelled)
  ASSERT_TRUE(c.send_line("after the pause"));
  c.shutdown_write();
  std::this_thread::sleep_for(100ms);
  const long cpu0 = thread_cpu_ms("esk-shard-0");
  ASSERT_GE(cpu0, 0);
  std::this_thread::sleep_for(1200ms);
  const long cpu1 = thread_cpu_ms("esk-shard-0");
  const auto st = s.stats();
  EXPECT_LT(cpu1 - cpu0, 300) << "the shard thread used " << cpu1 - cpu0
                              << " ms of CPU in 1.2 s while its only connection was paused";
  EXPECT_LT(st.shards.at(0).events_per_sec, 1000u)
      << "completions per second on the shard: " << st.shards.at(0).events_per_sec;
  EXPECT_EQ(h.disconnects.load(), 0);
  ASSERT_EQ(s.post(h.id, [](Connection& x) { x.resume_reading(); }), SendStatus::ok);
  ASSERT_TRUE(c.recv_line(line, 3s));
  EXPECT_EQ(line, "after the pause");
  EXPECT_EQ(c.wait_eof(3s), esockets::test::EofResult::eof);
  EXPECT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }, 3s));
  EXPECT_EQ(h.peer_closed.load(), 1);
  s.stop();
}

// A paused connection whose client half-closes and then resets: the reset ends it at once
// (reason reset), as on epoll, although nothing reads it.
class PauseOnFirstCounting : public PauseOnFirst {
 public:
  std::atomic<int> resets{0};
  void on_client_disconnect(Connection& c, CloseReason r) override {
    if (r == CloseReason::reset) ++resets;
    PauseOnFirst::on_client_disconnect(c, r);
  }
};

TEST_P(UringAdv, PausedConnectionFinThenResetEndsAtOnce) {
  PauseOnFirstCounting h;
  ServerOptions o = options(1);
  o.framing = esockets::Framing::line;
  Server s(h, o);
  s.start();
  Client c(s.port());
  ASSERT_TRUE(c.send_line("hello"));
  std::string line;
  ASSERT_TRUE(c.recv_line(line, 3s));
  std::this_thread::sleep_for(50ms);
  c.shutdown_write();
  std::this_thread::sleep_for(100ms);
  c.reset();
  EXPECT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }, 2s))
      << "a reset paused connection is still open";
  EXPECT_EQ(h.resets.load(), 1);
  EXPECT_EQ(s.client_count(), 0u);
  s.stop();
}

// A retiring shard (set_shards 2 -> 1) while its clients reset their connections around the
// end of its grace period; the shard is kept busy by a thread timer so that resets land while
// it runs. Each reset connection ends exactly once (reset), the others move and keep working,
// and the counters add up.
class RetireResetHandler : public esockets::Handler {
 public:
  Server* server = nullptr;
  std::atomic<bool> timer_armed{false};
  std::atomic<int> disconnects{0};
  std::atomic<int> resets{0};
  std::mutex mu;
  std::unordered_map<std::uint64_t, int> ends;  // disconnects per id
  bool on_client_connect(Connection& c) override {
    if (c.id().shard() == 1 && !timer_armed.exchange(true)) {
      server->every(3ms, [] { std::this_thread::sleep_for(10ms); });  // shard 1 stays busy
    }
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    c.send(m);
    c.send("\n");
  }
  std::string other_reasons;
  void on_client_disconnect(Connection& c, CloseReason r) override {
    if (r == CloseReason::reset) ++resets;
    ++disconnects;
    std::lock_guard lk(mu);
    if (r != CloseReason::reset) other_reasons += std::to_string(static_cast<int>(r)) + " ";
    ++ends[c.id().value()];
  }
};

TEST_P(UringAdv, RetireWhileClientsResetAroundGraceEnd) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    // On the heap: if set_shards hangs, the server cannot be stopped and is left running.
    auto* hp = new RetireResetHandler;
    RetireResetHandler& h = *hp;
    ServerOptions o = options(2);
    o.framing = esockets::Framing::line;
    auto* sp = new Server(h, o);
    Server& s = *sp;
    h.server = &s;
    s.start();
    auto* csp = new std::vector<Client>;
    std::vector<Client>& cs = *csp;
    for (int i = 0; i < 80; ++i) cs.emplace_back(s.port());
    ASSERT_TRUE(wait_until([&] { return s.client_count() == cs.size(); }, 3s));
    // Which clients are on shard 1: ask each one's id through an echo of its local port.
    std::unordered_map<std::uint16_t, std::size_t> by_port;
    for (std::size_t i = 0; i < cs.size(); ++i) by_port[cs[i].local_port()] = i;
    std::vector<bool> on1(cs.size(), false);
    std::mutex m1;
    std::atomic<int> asked{0};
    s.for_each_client([&](ConnectionId id) {
      ++asked;
      const bool one = id.shard() == 1;
      (void)s.post(id, [&, one](Connection& c) {
        std::lock_guard lk(m1);
        auto it = by_port.find(c.peer().port);
        if (it != by_port.end()) on1[it->second] = one;
        --asked;
      });
    });
    ASSERT_TRUE(wait_until([&] { return asked.load() == 0; }, 3s));
    std::vector<std::size_t> victims, keep;
    for (std::size_t i = 0; i < cs.size(); ++i) (on1[i] ? victims : keep).push_back(i);
    if (victims.size() < 10) {  // reuseport put too few on shard 1: try again
      s.stop();
      delete csp;
      delete sp;
      delete hp;
      continue;
    }
    std::atomic<bool> resized{false};
    const auto t0 = std::chrono::steady_clock::now();
    std::thread resizer([&] {
      s.set_shards(1);
      resized = true;
    });
    // Resets from 140 ms to ~300 ms after the retire began (its grace period is 200 ms).
    std::this_thread::sleep_until(t0 + 140ms);
    int reset_count = 0;
    for (std::size_t v : victims) {
      cs[v].reset();
      ++reset_count;
      std::this_thread::sleep_for(4ms);
    }
    const bool done = wait_until([&] { return resized.load(); }, 4s);
    if (!done) {
      std::string per;
      for (const auto& sh : s.stats().shards) {
        per += " shard " + std::to_string(sh.shard) + ": connections gauge " +
               std::to_string(static_cast<std::int64_t>(sh.connections)) + ";";
      }
      ADD_FAILURE() << "set_shards(1) did not return within 4 s (attempt " << attempt
                    << "); disconnects " << h.disconnects.load() << " of " << reset_count
                    << " resets; " << keep.size() << " clients left open, client_count() "
                    << s.client_count() << ";" << per;
      resizer.detach();
      return;  // server, handler and clients leak: stop() would wait for set_shards
    }
    resizer.join();
    EXPECT_TRUE(wait_until([&] { return h.disconnects.load() == reset_count; }, 3s))
        << "disconnects " << h.disconnects.load() << ", resets sent " << reset_count;
    EXPECT_EQ(h.resets.load(), reset_count) << "other reasons: " << [&] {
      std::lock_guard lk(h.mu);
      return h.other_reasons;
    }();
    {
      std::lock_guard lk(h.mu);
      for (const auto& [id, n] : h.ends) EXPECT_EQ(n, 1) << "connection ended " << n << " times";
    }
    EXPECT_EQ(s.client_count(), keep.size());
    const auto st = s.stats();
    EXPECT_EQ(st.total.connections, keep.size()) << "connections gauge";
    for (std::size_t k : keep) {
      ASSERT_TRUE(cs[k].send_line("still " + std::to_string(k)));
      std::string line;
      ASSERT_TRUE(cs[k].recv_line(line, 3s)) << "client " << k;
      EXPECT_EQ(line, "still " + std::to_string(k));
    }
    s.stop();
    delete csp;
    delete sp;
    delete hp;
    if (::testing::Test::HasFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, UringAdv, ::testing::Values(Backend::epoll, Backend::io_uring),
                         name_of);

}  // namespace

// The same promises on both backends (ServerOptions::backend = epoll | io_uring), with traffic
// that reaches the paths where they differ: a completion-based read keeps receiving while a
// connection is paused, moved to another shard or half-closed by its peer, so bytes must be held
// in order and delivered once; sends come from other threads while connections move. Every
// check is by sequence number (lost, duplicated, reordered), not by byte counts.
// (The whole suite also runs on io_uring with ESOCKETS_BACKEND=io_uring; README "Backends".)
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
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

namespace {

using BackendTest = esockets::test::BackendModeTest;

// Parses "<client> <seq>" and checks that each connection's numbers arrive as 0, 1, 2, ...
class SequenceChecker {
 public:
  void record(ConnectionId id, Bytes m) {
    const std::string s(m.data(), m.size());
    const auto sp = s.find(' ');
    const std::uint64_t seq = std::strtoull(s.c_str() + sp + 1, nullptr, 10);
    std::lock_guard lk(mu_);
    std::uint64_t& next = next_[id.value()];
    if (seq != next) {
      if (errors_.size() < 10) {
        errors_.push_back(s + ": expected " + std::to_string(next));
      }
    }
    next = seq + 1;
  }
  std::vector<std::string> errors() const {
    std::lock_guard lk(mu_);
    return errors_;
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, std::uint64_t> next_;
  std::vector<std::string> errors_;
};

// Echoes every line; every `pause_every`th line pauses the connection, and a resumer thread
// resumes it a moment later through Server::post (so reads stop and start while bytes keep
// arriving). Records each connection's inbound sequence.
class PausingEcho : public esockets::Handler {
 public:
  explicit PausingEcho(unsigned pause_every) : pause_every_(pause_every) {}
  SequenceChecker inbound;
  std::atomic<std::uint64_t> messages{0};
  std::atomic<int> disconnects{0};
  std::atomic<int> peer_closed{0};
  std::mutex mu;
  std::vector<ConnectionId> paused;

  bool raw = false;  // raw framing: echo each message as it is (no sequence to parse)

  void on_message_recv(Connection& c, Bytes m) override {
    if (!raw) inbound.record(c.id(), m);
    c.send(m);
    if (!raw) c.send("\n");
    const std::uint64_t n = ++messages;
    if (pause_every_ != 0 && n % pause_every_ == 0) {
      c.pause_reading();
      std::lock_guard lk(mu);
      paused.push_back(c.id());
    }
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    if (r == CloseReason::peer_closed) ++peer_closed;
    ++disconnects;
  }

 private:
  unsigned pause_every_;
};

// Resumes paused connections every millisecond until stopped.
class Resumer {
 public:
  Resumer(Server& s, PausingEcho& h) : t_([this, &s, &h] {
      while (!stop_.load()) {
        std::vector<ConnectionId> ids;
        {
          std::lock_guard lk(h.mu);
          ids.swap(h.paused);
        }
        for (ConnectionId id : ids) {
          while (s.post(id, [](Connection& c) { c.resume_reading(); }) == SendStatus::backpressure) {
            s.wait_writable(id, 100ms);
          }
        }
        std::this_thread::sleep_for(1ms);
      }
    }) {}
  ~Resumer() {
    stop_ = true;
    t_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread t_;
};

// Each client pipelines `lines` numbered lines in bursts and reads every echo back in order.
void run_clients(std::uint16_t port, unsigned clients, unsigned lines,
                 std::vector<std::string>& failures, std::mutex& fmu) {
  std::vector<std::thread> ts;
  for (unsigned k = 0; k < clients; ++k) {
    ts.emplace_back([&, k] {
      Client c(port);
      unsigned sent = 0, got = 0;
      std::string line;
      while (got < lines) {
        if (sent < lines && sent - got < 64) {
          std::string burst;
          for (unsigned i = 0; i < 16 && sent < lines; ++i, ++sent) {
            burst += "c" + std::to_string(k) + " " + std::to_string(sent) + "\n";
          }
          if (!c.send_all(burst)) break;
          continue;
        }
        if (!c.recv_line(line, 10s)) break;
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
        failures.push_back("client " + std::to_string(k) + " got " + std::to_string(got) + " of " +
                           std::to_string(lines) + " echoes");
      }
    });
  }
  for (auto& t : ts) t.join();
}

TEST_P(BackendTest, ReportsTheBackendItRuns) {
  esockets::test::CountingHandler h;
  h.framed_echo = true;
  Server s(h, options(1));
  s.start();
  EXPECT_EQ(s.backend(), GetParam().backend);
  EXPECT_EQ(s.stats().backend, GetParam().backend);
  Client c(s.port());
  ASSERT_TRUE(c.send_all("ping\n"));
  std::string line;
  ASSERT_TRUE(c.recv_line(line));
  EXPECT_EQ(line, "ping");
  s.stop();
}

// Reads stop and start all the time (pause after every 7th line) while clients pipeline: the
// bytes a completion-based read receives while paused are held and come out in order, once.
TEST_P(BackendTest, PausedReadsKeepEveryByteInOrder) {
  PausingEcho h(7);
  Server s(h, options(2));
  s.start();
  std::vector<std::string> failures;
  std::mutex fmu;
  {
    Resumer r(s, h);
    run_clients(s.port(), 8, static_cast<unsigned>(esockets::test::scaled(3000, 300)), failures,
                fmu);
  }
  for (const auto& f : failures) ADD_FAILURE() << f;
  for (const auto& e : h.inbound.errors()) ADD_FAILURE() << "inbound: " << e;
  s.stop();
}

// Raw framing (each read is a message): bytes held while paused come out as one message, so
// the echoed stream equals the sent one, while reads pause and connections move.
TEST_P(BackendTest, RawFramingHeldBytesArriveOnceInOrder) {
  PausingEcho h(3);
  h.raw = true;
  ServerOptions o = options(2);
  o.framing = esockets::Framing::raw;
  Server s(h, o);
  s.start();
  std::atomic<bool> done{false};
  std::thread resizer([&] {
    const unsigned sizes[] = {3, 1, 2};
    for (unsigned i = 0; !done.load(); ++i) {
      s.set_shards(sizes[i % 3]);
      std::this_thread::sleep_for(25ms);
    }
  });
  std::vector<std::string> failures;
  std::mutex fmu;
  {
    Resumer r(s, h);
    std::vector<std::thread> ts;
    for (unsigned k = 0; k < 6; ++k) {
      ts.emplace_back([&, k] {
        Client c(s.port());
        std::string sent, got;
        const unsigned lines = static_cast<unsigned>(esockets::test::scaled(20000, 2000));
        for (unsigned i = 0; i < lines; ++i) sent += "c" + std::to_string(k) + " " + std::to_string(i) + "\n";
        std::size_t off = 0;
        while (off < sent.size()) {
          const std::size_t n = std::min<std::size_t>(700, sent.size() - off);
          if (!c.send_all(std::string_view(sent).substr(off, n))) break;
          off += n;
          got += c.recv_for(1ms);
        }
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (got.size() < sent.size() && std::chrono::steady_clock::now() < deadline) {
          got += c.recv_for(20ms);
        }
        const std::string& norm = got;
        if (norm != sent) {
          std::lock_guard lk(fmu);
          failures.push_back("client " + std::to_string(k) + ": echoed stream differs (" +
                             std::to_string(norm.size()) + " of " + std::to_string(sent.size()) +
                             " bytes)");
        }
      });
    }
    for (auto& t : ts) t.join();
  }
  done = true;
  resizer.join();
  for (const auto& f : failures) ADD_FAILURE() << f;
  s.stop();
}

// Connections move between shards (set_shards up and down) while clients pipeline and reads
// pause: nothing read on the old shard is lost, duplicated or delivered out of order.
TEST_P(BackendTest, ReshardingWhilePipelinedAndPausedLosesNothing) {
  PausingEcho h(11);
  Server s(h, options(2));
  s.start();
  std::vector<std::string> failures;
  std::mutex fmu;
  std::atomic<bool> done{false};
  std::thread resizer([&] {
    const unsigned sizes[] = {3, 1, 4, 2};
    for (unsigned i = 0; !done.load(); ++i) {
      s.set_shards(sizes[i % 4]);
      std::this_thread::sleep_for(20ms);
    }
  });
  {
    Resumer r(s, h);
    run_clients(s.port(), 12, static_cast<unsigned>(esockets::test::scaled(4000, 400)), failures,
                fmu);
  }
  done = true;
  resizer.join();
  for (const auto& f : failures) ADD_FAILURE() << f;
  for (const auto& e : h.inbound.errors()) ADD_FAILURE() << "inbound: " << e;
  EXPECT_GT(s.stats().resizes, 0u);
  s.stop();
}

// Sends from a thread that is not an engine thread, numbered per connection, while the
// connections move between shards: every one arrives once, in order.
TEST_P(BackendTest, SendsFromAnotherThreadArriveInOrderWhileConnectionsMove) {
  esockets::test::CountingHandler h;
  h.echo = false;
  Server s(h, options(2));
  s.start();
  const unsigned clients = 10;
  const unsigned per = static_cast<unsigned>(esockets::test::scaled(5000, 500));
  std::vector<Client> cs;
  for (unsigned k = 0; k < clients; ++k) cs.emplace_back(s.port());
  ASSERT_TRUE(esockets::test::wait_until([&] { return s.client_count() == clients; }));
  std::vector<ConnectionId> ids;
  s.for_each_client([&](ConnectionId id) { ids.push_back(id); });
  ASSERT_EQ(ids.size(), clients);
  std::atomic<bool> done{false};
  std::thread resizer([&] {
    const unsigned sizes[] = {3, 1, 2};
    for (unsigned i = 0; !done.load(); ++i) {
      s.set_shards(sizes[i % 3]);
      std::this_thread::sleep_for(15ms);
    }
  });
  std::thread sender([&] {
    for (unsigned i = 0; i < per; ++i) {
      for (ConnectionId id : ids) {
        const std::string m = std::to_string(i) + "\n";
        while (s.send(id, m) == SendStatus::backpressure) s.wait_writable(id, 100ms);
      }
    }
  });
  // Each client reads its lines as they come (so its socket never fills and stalls the rest).
  std::vector<std::string> failures;
  std::mutex fmu;
  std::vector<std::thread> readers;
  for (unsigned k = 0; k < clients; ++k) {
    readers.emplace_back([&, k] {
      std::string line;
      for (unsigned i = 0; i < per; ++i) {
        if (!cs[k].recv_line(line, 10s) || line != std::to_string(i)) {
          std::lock_guard lk(fmu);
          failures.push_back("client " + std::to_string(k) + " line " + std::to_string(i) +
                             ": got '" + line + "'");
          return;
        }
      }
    });
  }
  sender.join();
  for (auto& t : readers) t.join();
  done = true;
  resizer.join();
  for (const auto& f : failures) ADD_FAILURE() << f;
  s.stop();
}

// The peer's FIN arrives while reads are paused and lines are held: every line is still
// delivered (and answered) before the connection ends as peer_closed.
TEST_P(BackendTest, PeerCloseBehindPausedLinesDeliversThemFirst) {
  PausingEcho h(1);  // pause after every line
  Server s(h, options(1));
  s.start();
  const unsigned lines = 200;
  Client c(s.port());
  std::string all;
  for (unsigned i = 0; i < lines; ++i) all += "c0 " + std::to_string(i) + "\n";
  ASSERT_TRUE(c.send_all(all));
  c.shutdown_write();
  {
    Resumer r(s, h);
    std::string line;
    for (unsigned i = 0; i < lines; ++i) {
      ASSERT_TRUE(c.recv_line(line, 10s)) << "line " << i;
      ASSERT_EQ(line, "c0 " + std::to_string(i));
    }
    EXPECT_EQ(c.wait_eof(10s), esockets::test::EofResult::eof);
    ASSERT_TRUE(esockets::test::wait_until([&] { return h.disconnects.load() == 1; }));
  }
  EXPECT_EQ(h.peer_closed.load(), 1);
  for (const auto& e : h.inbound.errors()) ADD_FAILURE() << "inbound: " << e;
  s.stop();
}

// A reset from the client ends the connection as reset; a server close after a large reply
// delivers all of it, then EOF.
TEST_P(BackendTest, ResetAndCloseAfterLargeReply) {
  esockets::test::CountingHandler h;
  h.echo = false;
  Server s(h, options(1));
  s.start();
  {
    Client c(s.port());
    ASSERT_TRUE(esockets::test::wait_until([&] { return s.client_count() == 1; }));
    c.reset();
    ASSERT_TRUE(esockets::test::wait_until([&] { return h.disconnects.load() == 1; }));
    EXPECT_EQ(h.reason(CloseReason::reset), 1);
  }
  Client c(s.port());
  ASSERT_TRUE(esockets::test::wait_until([&] { return s.client_count() == 1; }));
  ConnectionId id;
  s.for_each_client([&](ConnectionId x) { id = x; });
  std::string big(4 << 20, 'x');
  for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i / 4096) % 26);
  ASSERT_EQ(s.send(id, big), SendStatus::ok);
  ASSERT_EQ(s.close(id), SendStatus::ok);
  std::string got;
  ASSERT_TRUE(c.recv_exact(big.size(), got, 20s));
  EXPECT_TRUE(got == big);
  EXPECT_EQ(c.wait_eof(10s), esockets::test::EofResult::eof);
  s.stop();
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendTest, esockets::test::all_backend_modes(),
                         esockets::test::backend_mode_name);

// automatic is epoll unless ESOCKETS_BACKEND says otherwise; a bad value is refused.
TEST(BackendChoice, AutomaticFollowsTheEnvironment) {
  const char* saved = std::getenv("ESOCKETS_BACKEND");
  const std::string keep = saved != nullptr ? saved : "";
  esockets::test::CountingHandler h;
  ServerOptions o = esockets::test::loopback_options();
  ::unsetenv("ESOCKETS_BACKEND");
  EXPECT_EQ(Server(h, o).backend(), Backend::epoll);
  ::setenv("ESOCKETS_BACKEND", "kqueue", 1);
  try {
    Server bad(h, o);
    ADD_FAILURE() << "ESOCKETS_BACKEND=kqueue was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("ESOCKETS_BACKEND must be epoll, io_uring or automatic"),
              std::string::npos)
        << e.what();
  }
  if (io_uring_usable()) {
    ::setenv("ESOCKETS_BACKEND", "io_uring", 1);
    EXPECT_EQ(Server(h, o).backend(), Backend::io_uring);
    o.backend = Backend::epoll;  // an explicit choice wins over the environment
    EXPECT_EQ(Server(h, o).backend(), Backend::epoll);
  }
  if (saved != nullptr) {
    ::setenv("ESOCKETS_BACKEND", keep.c_str(), 1);
  } else {
    ::unsetenv("ESOCKETS_BACKEND");
  }
}

}  // namespace

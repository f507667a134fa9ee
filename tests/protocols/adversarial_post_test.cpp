// Adversarial tests of Server::post (include/esockets/server.hpp): a posted function runs exactly
// once, on the thread running the connection's handlers, never concurrently with its callbacks
// nor nested in one, after every earlier send/post from the same thread to the connection was
// applied; when the connection ends first it is destroyed unrun (no leak); stale ids say closed.
// Attacked with numbered posts from a non-engine thread, from handlers of other connections,
// from the connection's own handler, while connections move (set_shards 1->3->2->1, rebalance)
// and while the server stops; inline and with 2 workers.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "adversarial_support.hpp"

namespace esockets::test::adv {
namespace {

struct Seq {
  std::uint64_t next_ext = 0;                      // external poster's next number
  std::unordered_map<std::uint64_t, std::uint64_t> next_from;  // per posting connection
  std::uint64_t next_self = 0;
  std::uint64_t relay_k = 0;  // numbers this connection's handler posts to others
};

class PostHandler : public Handler {
 public:
  Registry reg;
  std::atomic<long> ran{0}, disorder{0}, missing_state{0}, wrong_thread{0}, self_ok{0},
      self_ran{0}, other_ok{0}, other_ran{0}, disconnects{0};
  std::atomic<long> first_bad_expected{-1}, first_bad_got{-1};
  std::vector<ConnectionId> ring;  // set before clients talk (P2)
  std::mutex ring_mu;

  bool on_client_connect(Connection& c) override {
    Rec* r = reg.add(c.id(), c.peer().port);
    c.set_user_data(r);
    c.emplace_state<Seq>();
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    Rec* r = static_cast<Rec*>(c.user_data());
    InCallback g(r);
    thread_of(r) = std::this_thread::get_id();
    if (m.empty() || m[0] != 'm') return;
    const std::uint64_t k = std::strtoull(std::string(m.substr(1)).c_str(), nullptr, 10);
    // To itself: must not run nested in this callback, and in order.
    if (c.server().post(c.id(), [this, r, k, t = Token()](Connection& cc) {
          InCallback g2(r);
          if (std::this_thread::get_id() != thread_of(r)) wrong_thread++;
          auto* s = cc.state<Seq>();
          if (s == nullptr) {
            missing_state++;
          } else {
            if (s->next_self != k) note_disorder(s->next_self, k);
            s->next_self = k + 1;
          }
          self_ran++;
        }) == SendStatus::ok) {
      self_ok++;
    }
    // To the next connection in the ring: another connection's handler (maybe another shard or
    // worker), numbered per sender.
    ConnectionId to;
    {
      std::lock_guard lk(ring_mu);
      for (std::size_t i = 0; i < ring.size(); ++i) {
        if (ring[i] == c.id()) to = ring[(i + 1) % ring.size()];
      }
    }
    if (!to.valid()) return;
    auto* s = c.state<Seq>();
    const std::uint64_t rk = s->relay_k++;
    const std::uint64_t from = c.id().value();
    Rec* tr = reg.find(to);
    const SendStatus st = c.server().post(to, [this, tr, from, rk, t = Token()](Connection& cc) {
      InCallback g2(tr);
      auto* ts = cc.state<Seq>();
      if (ts == nullptr) {
        missing_state++;
      } else {
        auto& nx = ts->next_from[from];
        if (nx != rk) note_disorder(nx, rk);
        nx = rk + 1;
      }
      other_ran++;
    });
    if (st == SendStatus::ok) other_ok++;
  }
  void on_client_disconnect(Connection& c, CloseReason) override {
    Rec* r = static_cast<Rec*>(c.user_data());
    if (r != nullptr) r->gone = true;
    disconnects++;
  }
  void note_disorder(std::uint64_t want, std::uint64_t got) {
    if (disorder++ == 0) {
      first_bad_expected = static_cast<long>(want);
      first_bad_got = static_cast<long>(got);
    }
  }
  static std::atomic<std::thread::id>& thread_of(Rec* r) {
    static std::mutex mu;
    static std::unordered_map<Rec*, std::unique_ptr<std::atomic<std::thread::id>>> m;
    std::lock_guard lk(mu);
    auto& p = m[r];
    if (!p) p = std::make_unique<std::atomic<std::thread::id>>();
    return *p;
  }
};

std::vector<ConnectionId> connect_and_map(Server& s, PostHandler& h, std::vector<Client>& cs,
                                          std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) cs.emplace_back(s.port());
  std::vector<ConnectionId> ids(n);
  EXPECT_TRUE(wait_until([&] {
    for (std::size_t i = 0; i < n; ++i) {
      if (!ids[i].valid()) ids[i] = h.reg.id_of_port(cs[i].local_port());
      if (!ids[i].valid()) return false;
    }
    return true;
  }));
  return ids;
}

SendStatus post_retry(Server& s, ConnectionId id, const std::function<void(Connection&)>& fn) {
  for (int tries = 0;; ++tries) {
    const SendStatus st = s.post(id, fn);
    if (st != SendStatus::backpressure || tries > 1000) return st;
    s.wait_writable(id, 100ms);
  }
}

SendStatus send_retry(Server& s, ConnectionId id, const std::string& b) {
  for (int tries = 0;; ++tries) {
    const SendStatus st = s.send(id, b);
    if (st != SendStatus::backpressure || tries > 1000) return st;
    s.wait_writable(id, 100ms);
  }
}

class AdversarialPost : public ::testing::TestWithParam<Mode> {
 protected:
  void TearDown() override { EXPECT_EQ(Token::live().load(), 0) << "posted functions leaked"; }
};

// A non-engine thread sends a<k>, then posts fn_k (which sends p<k> and checks k in the
// connection's state), to every connection, while shards change. Every ok post runs exactly
// once and in order; the client sees a<k> before p<k>, both without gap or duplicate.
TEST_P(AdversarialPost, ExternalPostsRunOnceInOrderAfterEarlierSendsWhileShardsChange) {
  PostHandler h;
  Server server(h, [] {
    ServerOptions o = loopback_options(1, GetParam().workers);
    o.framing = Framing::line;
    return o;
  }());
  server.start();
  const std::size_t n = scaled(16, 6);
  std::vector<Client> cs;
  const auto ids = connect_and_map(server, h, cs, n);
  ASSERT_EQ(ids.size(), n);

  std::atomic<bool> stop_post{false};
  std::vector<std::uint64_t> ok(n, 0);
  std::atomic<long> post_ok{0}, bad_status{0};
  std::thread poster([&] {
    const auto end = Clock::now() + 3s;
    const std::uint64_t kmax = scaled(6000, 600);
    for (std::uint64_t k = 0; k < kmax && !stop_post && Clock::now() < end; ++k) {
      for (std::size_t i = 0; i < n; ++i) {
        if (send_retry(server, ids[i], "a" + std::to_string(k) + "\n") != SendStatus::ok) {
          bad_status++;
          continue;
        }
        Rec* r = h.reg.find(ids[i]);
        const SendStatus st = post_retry(server, ids[i], [&h, r, k, t = Token()](Connection& c) {
          InCallback g(r);
          auto* s = c.state<Seq>();
          if (s == nullptr) {
            h.missing_state++;
          } else {
            if (s->next_ext != k) h.note_disorder(s->next_ext, k);
            s->next_ext = k + 1;
          }
          h.ran++;
          c.send("p" + std::to_string(k) + "\n");
        });
        if (st == SendStatus::ok) {
          ok[i] = k + 1;
          post_ok++;
        } else {
          bad_status++;
        }
      }
    }
  });
  Reshaper reshaper(server, 30, 15ms);

  std::vector<std::string> partial(n);
  std::vector<bool> eof(n, false);
  std::vector<std::int64_t> last_a(n, -1), last_p(n, -1);
  std::atomic<long> client_errors{0};
  std::string first_error;
  auto on_line = [&](std::size_t i, std::string_view line) {
    const std::int64_t k = std::strtoll(std::string(line.substr(1)).c_str(), nullptr, 10);
    auto fail = [&](const std::string& why) {
      if (client_errors++ == 0) first_error = "client " + std::to_string(i) + ": " + why;
    };
    if (line[0] == 'a') {
      if (k != last_a[i] + 1) fail("a" + std::to_string(k) + " after a" + std::to_string(last_a[i]));
      last_a[i] = k;
    } else if (line[0] == 'p') {
      if (k != last_p[i] + 1) fail("p" + std::to_string(k) + " after p" + std::to_string(last_p[i]));
      if (k > last_a[i]) fail("p" + std::to_string(k) + " before a" + std::to_string(k));
      last_p[i] = k;
    }
  };
  std::atomic<bool> posting_done{false};
  std::thread joiner([&] {
    poster.join();
    posting_done = true;
  });
  read_lines(cs, partial, eof, on_line, [&] { return posting_done.load(); }, 30s);
  joiner.join();
  reshaper.join();
  // Every ok post must have run: wait, while reading what they send.
  read_lines(cs, partial, eof, on_line, [&] { return h.ran.load() >= post_ok.load(); }, 10s);
  read_lines(cs, partial, eof, on_line,
             [&] {
               for (std::size_t i = 0; i < n; ++i) {
                 if (last_p[i] + 1 < static_cast<std::int64_t>(ok[i])) return false;
               }
               return true;
             },
             10s);
  EXPECT_EQ(h.ran.load(), post_ok.load()) << "ok posts that never ran (or ran twice)";
  EXPECT_EQ(h.disorder.load(), 0) << "posts ran out of order: first expected " << h.first_bad_expected
                                  << " got " << h.first_bad_got;
  EXPECT_EQ(h.missing_state.load(), 0);
  EXPECT_EQ(client_errors.load(), 0) << first_error;
  EXPECT_EQ(bad_status.load(), 0);
  EXPECT_EQ(h.reg.total(&Rec::overlaps), 0);
  EXPECT_GT(reshaper.done(), 0);
  server.stop();
  EXPECT_EQ(h.reg.total(&Rec::after_end), 0);
}

// Each message m<k> makes its handler post to itself (must not nest, must run on the handler's
// thread, in order) and to the next connection in a ring (another connection's handler, maybe
// on another shard or worker; numbered per sender). Every ok post runs exactly once.
TEST_P(AdversarialPost, PostsFromHandlersToSelfAndOthersNeverNestAndKeepOrder) {
  PostHandler h;
  Server server(h, [] {
    ServerOptions o = loopback_options(2, GetParam().workers);
    o.framing = Framing::line;
    return o;
  }());
  server.start();
  const std::size_t n = scaled(12, 4);
  std::vector<Client> cs;
  const auto ids = connect_and_map(server, h, cs, n);
  {
    std::lock_guard lk(h.ring_mu);
    h.ring = ids;
  }
  const std::size_t per = scaled(2000, 200);
  for (std::size_t k = 0; k < per; k += 50) {
    for (std::size_t i = 0; i < n; ++i) {
      std::string burst;
      for (std::size_t j = k; j < std::min(per, k + 50); ++j) burst += "m" + std::to_string(j) + "\n";
      ASSERT_TRUE(cs[i].send_all(burst));
    }
  }
  ASSERT_TRUE(wait_until([&] {
    return h.self_ran.load() >= static_cast<long>(n * per) && h.other_ran.load() >= h.other_ok.load() &&
           h.self_ran.load() >= h.self_ok.load();
  }, 30s))
      << "self ran " << h.self_ran << " of " << h.self_ok << ", other ran " << h.other_ran << " of "
      << h.other_ok;
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(h.self_ok.load(), static_cast<long>(n * per));
  EXPECT_EQ(h.self_ran.load(), h.self_ok.load());
  EXPECT_EQ(h.other_ran.load(), h.other_ok.load());
  EXPECT_EQ(h.disorder.load(), 0) << "first expected " << h.first_bad_expected << " got " << h.first_bad_got;
  EXPECT_EQ(h.wrong_thread.load(), 0) << "a post ran off the connection's handler thread";
  EXPECT_EQ(h.reg.total(&Rec::overlaps), 0) << "a post ran nested in / concurrently with a callback";
  server.stop();
  EXPECT_EQ(h.reg.total(&Rec::after_end), 0);
}

// post(fn1), close(id), post(fn2) from one thread while shards change: fn1 was applied before
// the close, so it runs, exactly once; fn2 may run or be destroyed; nothing runs after
// on_client_disconnect and nothing leaks.
TEST_P(AdversarialPost, PostThenCloseRunsThePostExactlyOnceWhileShardsChange) {
  PostHandler h;
  Server server(h, loopback_options(1, GetParam().workers));
  server.start();
  Reshaper reshaper(server, 40, 5ms);
  const std::size_t rounds = scaled(12, 4), per = 20;
  std::atomic<long> fn1_ok{0}, fn1_ran{0}, fn2_ran{0}, fn1_twice{0};
  for (std::size_t r = 0; r < rounds; ++r) {
    std::vector<Client> cs;
    const auto ids = connect_and_map(server, h, cs, per);
    for (std::size_t i = 0; i < per; ++i) {
      Rec* rec = h.reg.find(ids[i]);
      auto once = std::make_shared<std::atomic<int>>(0);
      const SendStatus s1 = post_retry(server, ids[i], [&, rec, once, t = Token()](Connection&) {
        InCallback g(rec);
        if (once->fetch_add(1) != 0) fn1_twice++;
        fn1_ran++;
      });
      if (s1 == SendStatus::ok) fn1_ok++;
      EXPECT_EQ(server.close(ids[i]), SendStatus::ok);
      (void)server.post(ids[i], [&, rec, t = Token()](Connection&) {
        InCallback g(rec);
        fn2_ran++;
      });
    }
    ASSERT_TRUE(wait_until([&] { return h.disconnects.load() >= static_cast<long>((r + 1) * per); }, 20s));
  }
  reshaper.join();
  EXPECT_TRUE(wait_until([&] { return fn1_ran.load() >= fn1_ok.load(); }, 2s));
  EXPECT_EQ(fn1_ran.load(), fn1_ok.load()) << "a post made before close() never ran";
  EXPECT_EQ(fn1_twice.load(), 0);
  EXPECT_EQ(h.reg.total(&Rec::after_end), 0) << "a posted function ran after on_client_disconnect";
  EXPECT_EQ(h.reg.total(&Rec::overlaps), 0);
  server.stop();
}

// Posts from a non-engine thread while stop() runs: no post runs after its connection's
// on_client_disconnect, none runs twice, every function is run or destroyed (no leak).
TEST_P(AdversarialPost, PostsDuringStopRunOrAreDestroyed) {
  for (int round = 0; round < 3; ++round) {
    PostHandler h;
    auto server = std::make_unique<Server>(h, loopback_options(2, GetParam().workers));
    server->start();
    std::vector<Client> cs;
    const auto ids = connect_and_map(*server, h, cs, scaled(10, 4));
    std::atomic<bool> stop{false};
    std::atomic<long> ok{0}, ran{0};
    std::thread poster([&] {
      while (!stop) {
        for (ConnectionId id : ids) {
          Rec* rec = h.reg.find(id);
          if (server->post(id, [&, rec, t = Token()](Connection&) {
                InCallback g(rec);
                ran++;
              }) == SendStatus::ok) {
            ok++;
          }
        }
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + 30 * round));
    server->stop();
    stop = true;
    poster.join();
    EXPECT_LE(ran.load(), ok.load());
    EXPECT_EQ(h.reg.total(&Rec::after_end), 0);
    EXPECT_EQ(h.reg.total(&Rec::overlaps), 0);
    server.reset();
    EXPECT_EQ(Token::live().load(), 0) << "round " << round << ": posted functions leaked";
  }
}

// Stale and invalid ids, and a server not started, answer closed and destroy the function.
TEST_P(AdversarialPost, StaleIdsSayClosedAndDestroyTheFunction) {
  PostHandler h;
  Server server(h, loopback_options(1, GetParam().workers));
  EXPECT_EQ(server.post(ConnectionId{}, [t = Token()](Connection&) {}), SendStatus::closed);
  server.start();
  ConnectionId id;
  {
    std::vector<Client> cs;
    id = connect_and_map(server, h, cs, 1)[0];
  }
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  std::atomic<int> ran{0};
  EXPECT_EQ(server.post(id, [&, t = Token()](Connection&) { ran++; }), SendStatus::closed);
  EXPECT_EQ(server.post(ConnectionId{}, [&, t = Token()](Connection&) { ran++; }), SendStatus::closed);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(ran.load(), 0);
  server.stop();
}

INSTANTIATE_TEST_SUITE_P(Modes, AdversarialPost, ::testing::ValuesIn(modes()), name_of);

}  // namespace
}  // namespace esockets::test::adv

// Live shard-count changes and load-based placement: set_shards grows and shrinks while
// traffic flows, connections keep their bytes, order and ids, least_loaded balances and
// avoids a busy shard, and the API rejects what it must.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "flood/mini_json.hpp"
#include "test_support.hpp"

namespace esockets::test {
namespace {

// Runs esockets-flood in the background; wait() returns its parsed JSON result.
class Flood {
 public:
  Flood(std::uint16_t port, const std::vector<std::string>& args, const std::string& json)
      : json_(json) {
    std::vector<std::string> argv = {ESOCKETS_FLOOD_PATH, "--port", std::to_string(port),
                                     "--quiet", "--json", json};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> p;
      for (auto& a : argv) p.push_back(a.data());
      p.push_back(nullptr);
      int devnull = ::open("/dev/null", O_WRONLY);
      if (devnull >= 0) ::dup2(devnull, 1);
      ::execv(p[0], p.data());
      ::_exit(127);
    }
  }
  ~Flood() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Exit status; the JSON result in out.
  int wait(floodtest::JValue& out) {
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    std::ifstream f(json_);
    std::stringstream ss;
    ss << f.rdbuf();
    floodtest::JParser(ss.str()).parse(out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }

 private:
  pid_t pid_ = -1;
  std::string json_;
};

std::string tmp_json(const char* name) {
  return "/tmp/esockets_reshard_" + std::to_string(::getpid()) + "_" + name + ".json";
}

void expect_clean(const floodtest::JValue& r, const char* what) {
  EXPECT_EQ(r["errors"]["total"].num(), 0) << what << ": the flood saw errors";
  EXPECT_EQ(r["connections"]["established"].num(), r["connections"]["requested"].num()) << what;
  EXPECT_GT(r["connections"]["requested"].num(), 0) << what << ": no JSON result?";
}

// Every live connection is hosted by a live shard. One snapshot: the total counts every
// shard ever started (retired ones too), the list only the live ones, so the two agree
// exactly when the retired shards host nothing. (client_count() read separately would race
// with the storm's accepts.)
void expect_all_on_live_shards(Server& server) {
  Stats st = server.stats();
  std::uint64_t on_live = 0;
  for (const auto& s : st.shards) on_live += s.connections;
  EXPECT_EQ(on_live, st.total.connections) << "connections left on a retired shard";
  EXPECT_EQ(st.shards.size(), server.shards());
}

class ReshardTraffic : public ::testing::TestWithParam<unsigned> {};

TEST_P(ReshardTraffic, GrowAndShrinkUnderPipelinedTrafficAndAStorm) {
  CountingHandler h;
  ServerOptions o = loopback_options(1, GetParam());
  Server server(h, o);
  server.start();
  const std::size_t conns = scaled(2000, 50);
  const std::size_t storm = scaled(5000, 100);
  const int secs = kScale > 1 ? 12 : 8;
  Flood pipe(server.port(),
             {"-c", std::to_string(conns), "--duration", std::to_string(secs), "--verify",
              "--threads", "2", "pipeline", "8"},
             tmp_json("pipe"));
  ASSERT_TRUE(wait_until([&] { return server.client_count() >= conns; }, 20s));
  Flood storm_run(server.port(),
                  {"-c", std::to_string(storm), "--duration", std::to_string(secs - 2),
                   "--threads", "1", "storm"},
                  tmp_json("storm"));
  // One at a time up, one at a time down, then in jumps.
  for (unsigned n : {2u, 3u, 4u, 3u, 2u, 1u, 4u, 1u, 3u, 2u}) {
    server.set_shards(n);
    EXPECT_EQ(server.shards(), n);
    expect_all_on_live_shards(server);
    // Let traffic flow on the new layout before the next change.
    const std::uint64_t seen = server.stats().total.messages_in;
    EXPECT_TRUE(wait_until([&] { return server.stats().total.messages_in > seen + conns; }, 10s))
        << "no traffic after set_shards(" << n << ")";
  }
  floodtest::JValue p, s;
  pipe.wait(p);
  storm_run.wait(s);
  expect_clean(p, "pipeline");
  expect_clean(s, "storm");
  EXPECT_GT(p["throughput"]["msgs_per_sec"].num(), 0);
  server.stop();
  EXPECT_EQ(h.reason(CloseReason::reset), 0) << "a moved connection was reset";
  EXPECT_EQ(h.connects.load(), h.disconnects.load()) << "exactly one disconnect per connect";
}

INSTANTIATE_TEST_SUITE_P(InlineAndWorkers, ReshardTraffic, ::testing::Values(0u, 2u),
                         [](const ::testing::TestParamInfo<unsigned>& p) {
                           return std::string(p.param == 0 ? "inline" : "workers");
                         });

// Remembers every connection's id and the shard its callbacks ran on.
class IdHandler : public CountingHandler {
 public:
  std::mutex mu;
  std::vector<ConnectionId> ids;
  std::map<std::uint16_t, ConnectionId> by_port;  // client's port -> id
  std::map<unsigned, int> connects_on;  // birth shard -> count
  bool on_client_connect(Connection& c) override {
    CountingHandler::on_client_connect(c);
    std::lock_guard lk(mu);
    ids.push_back(c.id());
    by_port[c.peer().port] = c.id();
    connects_on[c.id().shard()]++;
    return true;
  }
};

TEST(Reshard, IdsKeepReachingMovedConnectionsAndStaleIdsStayClosed) {
  for (unsigned workers : {0u, 2u}) {
    IdHandler h;
    Server server(h, loopback_options(3, workers));
    server.start();
    const std::size_t n = scaled(60, 12);
    auto clients = connect_many(server.port(), n);
    ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(n); }));
    // ids[i] belongs to clients[i] (matched by the client's port).
    std::vector<ConnectionId> ids;
    {
      std::lock_guard lk(h.mu);
      for (auto& c : clients) ids.push_back(h.by_port.at(c.local_port()));
    }
    std::set<unsigned> births;
    for (auto id : ids) births.insert(id.shard());
    // Close one connection: its id must be Closed after every move.
    const ConnectionId gone = ids.back();
    clients.back().close();
    ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
    ids.pop_back();
    clients.pop_back();

    for (unsigned shards : {1u, 4u, 2u}) {
      server.set_shards(shards);
      server.rebalance();
      expect_all_on_live_shards(server);
      const std::string msg = "after-" + std::to_string(shards);
      for (auto id : ids) ASSERT_EQ(server.send(id, msg), SendStatus::ok);
      for (auto& c : clients) {
        std::string got;
        ASSERT_TRUE(c.recv_exact(msg.size(), got, 5s)) << "workers=" << workers;
        EXPECT_EQ(got, msg);
        // The connection still echoes through its new shard.
        ASSERT_TRUE(c.send_all("ping"));
        EXPECT_EQ(c.recv_exact(4, 5s), "ping");
      }
      EXPECT_EQ(server.send(gone, "x"), SendStatus::closed);
      EXPECT_EQ(server.close(gone), SendStatus::closed);
    }
    EXPECT_GT(births.size(), 1u) << "connections should have started on several shards";
    EXPECT_EQ(h.disconnects.load(), 1) << "moves must not look like disconnects";
    EXPECT_EQ(h.connects.load(), static_cast<int>(n)) << "moves must not look like connects";
    clients.clear();
    ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == static_cast<int>(n); }));
    server.stop();
  }
}

double held_imbalance(Balance balance, std::size_t n) {
  CountingHandler h;
  ServerOptions o = loopback_options(4, 0);
  o.balance = balance;
  Server server(h, o);
  server.start();
  Flood idle(server.port(), {"-c", std::to_string(n), "--duration", "6", "idle"},
             tmp_json(balance == Balance::hash ? "idle_hash" : "idle_ll"));
  EXPECT_TRUE(wait_until([&] { return server.client_count() >= n; }, 20s));
  const double imb = server.stats().imbalance.connections;
  floodtest::JValue r;
  idle.wait(r);
  expect_clean(r, "idle");
  server.stop();
  return imb;
}

TEST(Reshard, LeastLoadedBalancesBetterThanHash) {
  const std::size_t n = scaled(10000, 1000);
  const double ll = held_imbalance(Balance::least_loaded, n);
  const double hash = held_imbalance(Balance::hash, n);
  std::printf("connection imbalance (max/mean) over %zu connections: least_loaded %.4f, hash %.4f\n",
              n, ll, hash);
  EXPECT_LE(ll, 1.2);
  EXPECT_LT(ll, hash);
}

// Shard 2's handlers block; with least_loaded, new connections avoid it.
class SlowShardHandler : public IdHandler {
 public:
  void on_message_recv(Connection& c, Bytes m) override {
    if (c.id().shard() == 2) std::this_thread::sleep_for(std::chrono::milliseconds(40));
    c.send(m);
  }
};

TEST(Reshard, LeastLoadedAvoidsABusyShard) {
  SlowShardHandler h;
  ServerOptions o = loopback_options(3, 0);
  o.balance = Balance::least_loaded;
  Server server(h, o);
  server.start();
  auto first = connect_many(server.port(), 30);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 30; }));
  // Keep the slow shard busy: its clients keep a message in flight.
  std::atomic<bool> run{true};
  std::thread busy([&] {
    while (run.load()) {
      for (auto& c : first) c.send_all("x");
      for (auto& c : first) c.recv_exact(1, 2s);
    }
  });
  ASSERT_TRUE(wait_until(
      [&] {
        Stats st = server.stats();
        for (const auto& s : st.shards) {
          if (s.shard == 2) return s.busy_ratio > 0.5;
        }
        return false;
      },
      10s));
  std::map<unsigned, int> before;
  {
    std::lock_guard lk(h.mu);
    before = h.connects_on;
  }
  const int more = 300;
  auto later = connect_many(server.port(), more);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 30 + more; }, 20s));
  run.store(false);
  busy.join();
  std::map<unsigned, int> after;
  {
    std::lock_guard lk(h.mu);
    after = h.connects_on;
  }
  const int on_slow = after[2] - before[2];
  std::printf("new connections on the busy shard: %d of %d (an even share is %d)\n", on_slow, more,
              more / 3);
  EXPECT_LT(on_slow, more / 3 / 2);
  server.stop();
}

TEST(Reshard, ApiRejectsWhatItMustAndSerialises) {
  CountingHandler h;
  Server server(h, loopback_options(2, 0));
  EXPECT_THROW(server.set_shards(0), std::invalid_argument);
  EXPECT_THROW(server.set_shards(255), std::invalid_argument);
  server.set_shards(3);  // before start: just the option
  EXPECT_EQ(server.shards(), 3u);
  server.start();
  EXPECT_EQ(server.stats().shards.size(), 3u);
  auto clients = connect_many(server.port(), 20);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 20; }));
  // Concurrent calls are serialised; every call leaves a consistent server.
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (unsigned i = 0; i < 5; ++i) {
        server.set_shards(1 + (t + i) % 4);
        if (i % 2 == 0) server.rebalance();
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_GE(server.shards(), 1u);
  EXPECT_LE(server.shards(), 4u);
  expect_all_on_live_shards(server);
  for (auto& c : clients) {
    ASSERT_TRUE(c.send_all("hello"));
    EXPECT_EQ(c.recv_exact(5, 5s), "hello");
  }
  // set_shards racing stop(): no deadlock; afterwards it says the server is stopping.
  std::atomic<bool> stop_seen{false};
  std::thread resizer([&] {
    for (unsigned i = 0; i < 200 && !stop_seen.load(); ++i) {
      try {
        server.set_shards(1 + i % 3);
      } catch (const std::logic_error&) {
        stop_seen.store(true);
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  server.stop();
  resizer.join();
  EXPECT_THROW(server.set_shards(2), std::logic_error);
  EXPECT_EQ(h.connects.load(), h.disconnects.load());
  EXPECT_EQ(h.reason(CloseReason::reset), 0);
}

// The table is server-wide: an fd closed on one shard can be accepted by another at once.
// Connection churn over several shards must never leave a connection unserved.
TEST(Reshard, FdReuseAcrossShardsNeverLosesAConnection) {
  for (unsigned workers : {0u, 2u}) {
    CountingHandler h;
    Server server(h, loopback_options(3, workers));
    server.start();
    Flood churn(server.port(),
                {"-c", std::to_string(scaled(300, 40)), "--duration", "4", "--verify",
                 "--response-timeout", "2000", "churn", "1"},
                tmp_json(workers == 0 ? "churn0" : "churn2"));
    floodtest::JValue r;
    churn.wait(r);
    EXPECT_EQ(r["errors"]["total"].num(), 0) << "workers=" << workers;
    EXPECT_GT(r["throughput"]["msgs_per_sec"].num(), 0);
    ASSERT_TRUE(wait_until([&] { return server.client_count() == 0; }, 10s));
    server.stop();
    EXPECT_EQ(h.connects.load(), h.disconnects.load());
  }
}

// A handler may not call set_shards (it would wait for its own thread).
class ResizingHandler : public CountingHandler {
 public:
  std::atomic<int> rejected{0};
  void on_message_recv(Connection& c, Bytes m) override {
    try {
      c.server().set_shards(2);
    } catch (const std::logic_error&) {
      rejected++;
    }
    c.send(m);
  }
};

TEST(Reshard, SetShardsFromAHandlerIsRejected) {
  ResizingHandler h;
  Server server(h, loopback_options(1, 0));
  server.start();
  Client c(server.port());
  ASSERT_TRUE(c.send_all("x"));
  EXPECT_EQ(c.recv_exact(1, 5s), "x");
  EXPECT_EQ(h.rejected.load(), 1);
  EXPECT_EQ(server.shards(), 1u);
  server.stop();
}

}  // namespace
}  // namespace esockets::test

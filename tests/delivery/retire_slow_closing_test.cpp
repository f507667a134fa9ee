// Delivery contract, behaviour 6: a retiring shard that hosts a closing connection whose client
// reads very slowly (small SO_RCVBUF). The server queued 2 MiB for it and closed it
// (Server::close: output first, then FIN). set_shards(n - 1) must hand over or finish what the
// shard holds and return within a bound, and so must stop(): DESIGN.md invariant 8, "every wait
// in a stop or hand-over has a bound"; the options name the bounds: linger_timeout ("also the
// longest a closing connection may make no write progress") and shutdown_timeout ("how long
// stop() keeps flushing"). Two readers: 1 byte every 100 ms (the kernel rarely reopens the
// window) and 1 KiB every 100 ms (steady progress that would need ~200 s for 2 MiB).
// Runs in a child process with a deadline: a hang is reported, not waited out.
#include <gtest/gtest.h>

#include <mutex>
#include <unordered_map>

#include "delivery_support.hpp"

namespace esockets::test::delivery {
namespace {

class PortHandler : public CountingHandler {
 public:
  PortHandler() { echo = false; }
  std::mutex mu;
  std::unordered_map<std::uint16_t, ConnectionId> by_port;
  std::atomic<int> slow_reason{-1};
  std::atomic<std::uint16_t> slow_port{0};
  bool on_client_connect(Connection& c) override {
    {
      std::lock_guard lk(mu);
      by_port[c.peer().port] = c.id();
    }
    return CountingHandler::on_client_connect(c);
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    if (c.peer().port == slow_port.load()) slow_reason.store(static_cast<int>(r));
    CountingHandler::on_client_disconnect(c, r);
  }
  ConnectionId id_of(std::uint16_t port) {
    std::lock_guard lk(mu);
    auto it = by_port.find(port);
    return it == by_port.end() ? ConnectionId{} : it->second;
  }
};

struct Reader {
  std::size_t bytes_per_read;
  const char* name;
  friend void PrintTo(const Reader& r, std::ostream* os) { *os << r.name; }
};

class RetireSlowClosing : public ::testing::TestWithParam<Reader> {};

TEST_P(RetireSlowClosing, SetShardsAndStopFinishWithinTheirTimeouts) {
  const Reader rd = GetParam();
  const auto outcome = run_in_child(20s, [&](ChildReport& r) {
    PortHandler h;
    ServerOptions o = loopback_options(2, 0);
    o.linger_timeout = 1000ms;
    o.shutdown_timeout = 2000ms;
    o.write_timeout = 0ms;        // the closing deadline alone must bound it
    o.socket_send_buffer = 4096;  // the output stays queued in the engine, not in the kernel
    Server server(h, o);
    server.start();

    // A connection born on shard 1, the one set_shards(1) retires.
    r.stage("connect until a client lands on shard 1");
    std::vector<int> fds;
    int slow = -1;
    ConnectionId slow_id{};
    for (int k = 0; k < 64 && slow < 0; ++k) {
      const int fd = connect_loopback(server.port(), 2048);
      if (fd < 0) break;
      fds.push_back(fd);
      const std::uint16_t port = local_port_of(fd);
      ConnectionId id{};
      wait_until([&] { return (id = h.id_of(port)).valid(); }, 2s);
      if (id.valid() && id.shard() == 1) {
        slow = fd;
        slow_id = id;
        h.slow_port.store(port);
      }
    }
    if (slow < 0) {
      r.fail("no connection landed on shard 1 in 64 tries");
      return;
    }
    const std::string big(2u << 20, 'x');
    SendStatus st = server.send(slow_id, big);
    if (st != SendStatus::ok) r.fail(std::string("send of 2 MiB returned ") + to_string(st));
    st = server.close(slow_id);
    if (st != SendStatus::ok) r.fail(std::string("close returned ") + to_string(st));

    std::atomic<bool> stop_reading{false};
    std::atomic<std::uint64_t> read_total{0};
    std::thread reader([&] {
      std::vector<char> buf(rd.bytes_per_read);
      const auto until = Clock::now() + 19s;
      while (!stop_reading.load() && Clock::now() < until) {
        ssize_t n = ::recv(slow, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
        if (n > 0) read_total += static_cast<std::uint64_t>(n);
        std::this_thread::sleep_for(100ms);
      }
    });
    std::this_thread::sleep_for(300ms);  // the close is applied; the connection is closing

    r.stage("set_shards(1) retires the shard hosting the closing connection");
    auto t0 = Clock::now();
    server.set_shards(1);
    const double set_ms = ms_since(t0);
    r.note("set_shards(1) took " + std::to_string(static_cast<long>(set_ms)) + " ms; the client had read " +
           std::to_string(read_total.load()) + " bytes");
    if (set_ms > static_cast<double>(o.linger_timeout.count()) + 3000) {
      r.fail("set_shards(1) took " + std::to_string(static_cast<long>(set_ms)) +
             " ms with a slow closing connection on the retiring shard (linger_timeout 1000 ms + 3 s slack)");
    }

    r.stage("stop()");
    t0 = Clock::now();
    server.stop();
    const double stop_ms = ms_since(t0);
    r.note("stop() took " + std::to_string(static_cast<long>(stop_ms)) + " ms; slow client's reason " +
           std::to_string(h.slow_reason.load()));
    if (stop_ms > static_cast<double>(o.shutdown_timeout.count()) + 3000) {
      r.fail("stop() took " + std::to_string(static_cast<long>(stop_ms)) + " ms (shutdown_timeout 2000 ms + 3 s slack)");
    }
    stop_reading.store(true);
    reader.join();
    for (int fd : fds) ::close(fd);
    r.stage("done");
  });
  std::printf("[retire_slow_closing %s] %s\n", rd.name, outcome.describe().c_str());
  EXPECT_TRUE(outcome.ok()) << "reader " << rd.name << ": " << outcome.describe();
}

INSTANTIATE_TEST_SUITE_P(Delivery, RetireSlowClosing,
                         ::testing::Values(Reader{1, "1_byte_per_100ms"}, Reader{1024, "1KiB_per_100ms"}),
                         [](const ::testing::TestParamInfo<Reader>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace esockets::test::delivery

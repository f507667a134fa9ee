// 256 MiB (scaled) echoed through workers with checksums: 16 connections x 16 MiB, each
// client writes and reads concurrently and compares a running hash.
#include <gtest/gtest.h>

#include "test_support.hpp"

namespace esockets::test {
namespace {

// Echo handler with flow control: pause reading while the client's output is above the high
// watermark so the queue never reaches the hard cap.
class FlowEcho : public CountingHandler {
 public:
  void on_message_recv(Connection& c, Bytes m) override {
    bytes_in += m.size();
    c.send(m);
  }
  void on_output_high(Connection& c) override {
    high++;
    c.pause_reading();
  }
  void on_output_low(Connection& c) override {
    low++;
    c.resume_reading();
  }
};

struct Gen {
  std::uint64_t s;
  explicit Gen(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  void fill(char* p, std::size_t n) {
    for (std::size_t i = 0; i < n; i += 8) {
      std::uint64_t v = next();
      std::memcpy(p + i, &v, std::min<std::size_t>(8, n - i));
    }
  }
};

std::uint64_t fnv(std::uint64_t h, const char* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

TEST(BulkEcho, Echo256MiBThroughWorkersWithChecksums) {
  FlowEcho h;
  ServerOptions o = loopback_options(2, 2);
  Server server(h, o);
  server.start();
  constexpr std::size_t kConns = 16;
  const std::size_t per = (std::size_t{16} << 20) / static_cast<std::size_t>(kScale);
  auto clients = connect_many(server.port(), kConns);
  std::atomic<int> failures{0};
  std::vector<std::uint64_t> sent_hash(kConns), recv_hash(kConns);
  std::vector<std::size_t> received(kConns);
  std::vector<std::thread> ts;
  for (std::size_t i = 0; i < kConns; ++i) {
    ts.emplace_back([&, i] {  // writer
      Gen g(i + 1);
      std::vector<char> buf(64 * 1024);
      std::uint64_t hsh = 0xcbf29ce484222325ull;
      for (std::size_t off = 0; off < per; off += buf.size()) {
        std::size_t n = std::min(buf.size(), per - off);
        g.fill(buf.data(), n);
        hsh = fnv(hsh, buf.data(), n);
        if (!clients[i].send_all(std::string_view(buf.data(), n), 60s)) {
          failures++;
          return;
        }
      }
      sent_hash[i] = hsh;
    });
    ts.emplace_back([&, i] {  // reader
      std::uint64_t hsh = 0xcbf29ce484222325ull;
      std::size_t got = 0;
      std::string chunk;
      while (got < per) {
        chunk.clear();
        if (!clients[i].recv_exact(std::min<std::size_t>(64 * 1024, per - got), chunk, 60s)) {
          failures++;
          break;
        }
        hsh = fnv(hsh, chunk.data(), chunk.size());
        got += chunk.size();
      }
      recv_hash[i] = hsh;
      received[i] = got;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  for (std::size_t i = 0; i < kConns; ++i) {
    EXPECT_EQ(received[i], per) << "connection " << i;
    EXPECT_EQ(recv_hash[i], sent_hash[i]) << "connection " << i << ": echoed bytes differ";
  }
  // bytes_out is counted after sendmsg returns: the clients may hold the last bytes before the
  // shard has counted them. Wait for the final totals in one snapshot.
  Stats st;
  EXPECT_TRUE(wait_until([&] {
    st = server.stats();
    return st.total.bytes_in == per * kConns && st.total.bytes_out == per * kConns;
  }));
  EXPECT_EQ(st.total.bytes_in, per * kConns);
  EXPECT_EQ(st.total.bytes_out, per * kConns);
  EXPECT_EQ(st.total.closes_by(CloseReason::slow_consumer), 0u);
  EXPECT_EQ(h.disconnects.load(), 0);
  server.stop();
  EXPECT_EQ(h.disconnects.load(), static_cast<int>(kConns));
}

}  // namespace
}  // namespace esockets::test

// Robustness tests with an in-process esockets::Server and custom handlers: slow readers,
// half-close, RST storms, fairness, dripping clients, throwing handlers, lingering close,
// hang-ups while reading is paused.
#include <esockets/esockets.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <new>
#include <random>
#include <unordered_map>

#include "robust_support.hpp"

using namespace robust;
using esockets::CloseReason;
using esockets::Connection;
using esockets::SendStatus;

namespace {

// Counts callbacks per connection; subclasses add behaviour.
class Recorder : public esockets::Handler {
 public:
  bool on_client_connect(Connection& c) override {
    std::lock_guard<std::mutex> lk(mu_);
    connected_[c.id().value()] = Clock::now();
    ++connects_;
    return true;
  }
  void on_client_disconnect(Connection& c, CloseReason r) override {
    std::lock_guard<std::mutex> lk(mu_);
    const auto id = c.id().value();
    ++disconnects_[id];
    reason_[id] = r;
    closed_at_[id] = Clock::now();
    ++disc_total_;
  }
  int connects() const {
    std::lock_guard<std::mutex> lk(mu_);
    return connects_;
  }
  int disconnects() const {
    std::lock_guard<std::mutex> lk(mu_);
    return disc_total_;
  }
  int count(CloseReason r) const {
    std::lock_guard<std::mutex> lk(mu_);
    int n = 0;
    for (auto& [id, rr] : reason_) n += rr == r ? 1 : 0;
    return n;
  }
  std::string reasons() const {
    std::lock_guard<std::mutex> lk(mu_);
    std::map<std::string, int> m;
    for (auto& [id, r] : reason_) ++m[esockets::to_string(r)];
    std::string s;
    for (auto& [k, v] : m) s += k + "=" + std::to_string(v) + " ";
    return s;
  }
  // Every connected id got exactly one disconnect.
  bool exactly_once(std::string* why) const {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& [id, t] : connected_) {
      auto it = disconnects_.find(id);
      if (it == disconnects_.end() || it->second != 1) {
        *why = "connection " + std::to_string(id) + " got " +
               std::to_string(it == disconnects_.end() ? 0 : it->second) + " disconnects";
        return false;
      }
    }
    if (disconnects_.size() != connected_.size()) {
      *why = "disconnects for unknown ids";
      return false;
    }
    return true;
  }
  struct Close {
    std::uint64_t id;
    Clock::time_point at;
    CloseReason reason;
  };
  std::vector<Close> closes() const {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<Close> v;
    for (auto& [id, t] : closed_at_) v.push_back({id, t, reason_.at(id)});
    return v;
  }

 protected:
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, Clock::time_point> connected_;
  std::unordered_map<std::uint64_t, int> disconnects_;
  std::unordered_map<std::uint64_t, CloseReason> reason_;
  std::unordered_map<std::uint64_t, Clock::time_point> closed_at_;
  int connects_ = 0;
  int disc_total_ = 0;
};

class Echo : public Recorder {
 public:
  void on_message_recv(Connection& c, esockets::Bytes m) override {
    if (c.server().options().framing == esockets::Framing::raw) {
      c.send(m);
    } else {
      c.send_frame(m);
    }
  }
};

esockets::ServerOptions base_opts(unsigned workers = 0) {
  esockets::ServerOptions o;
  o.port = 0;
  o.host = "127.0.0.1";
  o.workers = workers;
  return o;
}

std::uint8_t pattern(std::size_t conn, std::size_t i) {
  return static_cast<std::uint8_t>((i * 131u + conn * 7u + (i >> 8)) & 0xffu);
}

// Fails the test if this process ignores SIGPIPE: the RST tests must prove the engine does
// not raise it.
void expect_sigpipe_default() {
  struct sigaction sa {};
  ::sigaction(SIGPIPE, nullptr, &sa);
  ASSERT_EQ(sa.sa_handler, SIG_DFL) << "SIGPIPE must keep its default action in this test";
}

}  // namespace

// ------------------------------------------------------------------ 4. slow readers

namespace {
// "polite" requests ('p') get 4 x 64 KiB (under the cap; the client never reads, so the
// write deadline must close them); "greedy" ones ('g') get 256 KiB replies until send()
// reports backpressure (the hard cap closes them).
class BigReplies : public Recorder {
 public:
  void on_message_recv(Connection& c, esockets::Bytes m) override {
    static const std::string chunk64(64 * 1024, 'p');
    static const std::string chunk256(256 * 1024, 'g');
    {
      std::lock_guard<std::mutex> lk(mu_);
      greedy_[c.id().value()] = !m.empty() && m[0] == 'g';
      handled_[c.id().value()] = Clock::now();
    }
    if (!m.empty() && m[0] == 'g') {
      for (int i = 0; i < 100; ++i) {
        if (c.send(chunk256) != SendStatus::ok) {
          greedy_backpressure_.fetch_add(1);
          return;
        }
      }
    } else {
      for (int i = 0; i < 4; ++i) c.send(chunk64);
    }
  }
  bool is_greedy(std::uint64_t id) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = greedy_.find(id);
    return it != greedy_.end() && it->second;
  }
  // When the handler ran for this connection (and queued its reply); `otherwise` if its
  // request was never handled.
  Clock::time_point handled_at(std::uint64_t id, Clock::time_point otherwise) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = handled_.find(id);
    return it != handled_.end() ? it->second : otherwise;
  }
  std::atomic<int> greedy_backpressure_{0};

 private:
  std::unordered_map<std::uint64_t, bool> greedy_;
  std::unordered_map<std::uint64_t, Clock::time_point> handled_;
};
}  // namespace

TEST(SlowReaders, BoundedOutputClosedAsSlowConsumerMemoryReturns) {
  const int n = scaled(1000, 50);
  const std::size_t cap = 1024 * 1024;
  BigReplies h;
  auto o = base_opts();
  o.shards = 2;
  o.output_hard_cap = cap;
  o.output_high_watermark = 512 * 1024;
  o.output_low_watermark = 128 * 1024;
  o.write_timeout = ms(2000);
  o.socket_send_buffer = 65536;
  const long rss_before = rss_kb(::getpid());
  esockets::Server srv(h, o);
  srv.start();

  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    set_rcvbuf(fd, 16 * 1024);  // a small window: the kernel must not absorb the replies
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(srv.port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    fds.push_back(fd);
  }
  ASSERT_TRUE(wait_until([&] { return h.connects() == n; }, ms(10000)));

  std::atomic<bool> sampling{true};
  std::atomic<std::uint64_t> max_out{0};
  std::thread sampler([&] {
    while (sampling.load()) {
      auto v = srv.stats().total.output_bytes;
      if (v > max_out.load()) max_out.store(v);
      std::this_thread::sleep_for(ms(5));
    }
  });
  const auto t_req = Clock::now();
  for (int i = 0; i < n; ++i) {
    const char* req = (i % 2 == 0) ? "p" : "g";
    ASSERT_EQ(::send(fds[static_cast<std::size_t>(i)], req, 1, MSG_NOSIGNAL), 1);
  }
  // Deadline: write_timeout + 250 ms sweep + slack.
  const bool all_closed =
      wait_until([&] { return h.disconnects() == n; }, ms(2000 + 250 + 2000 * kScale));
  sampling = false;
  sampler.join();
  // How late a close may come is measured from the moment the handler queued the reply, not
  // from t_req: working through n requests (n/2 of them copying over 1 MiB each) takes a while
  // on a slow or loaded machine, and that backlog is not what the bounds are about. How early
  // it may come is measured from t_req: the shard's clock is read once per pass, so the
  // deadline may start at the beginning of the pass that ran the handler.
  Dist polite, greedy, polite_since_req;
  int not_slow = 0;
  for (auto& c : h.closes()) {
    const double dt =
        std::chrono::duration<double, std::milli>(c.at - h.handled_at(c.id, t_req)).count();
    if (c.reason != CloseReason::slow_consumer) ++not_slow;
    (h.is_greedy(c.id) ? greedy : polite).add(dt);
    if (!h.is_greedy(c.id)) {
      polite_since_req.add(std::chrono::duration<double, std::milli>(c.at - t_req).count());
    }
  }
  std::printf("[slow] %d clients: greedy (hard cap) closed %s after their reply was queued\n", n,
              greedy.summary().c_str());
  std::printf("[slow] polite (write_timeout 2 s) closed %s after their reply was queued, "
              "%.1f-%.1f ms after the requests were sent\n",
              polite.summary().c_str(), polite_since_req.min(), polite_since_req.max());
  std::printf("[slow] max output_bytes sampled %.1f MiB (bound %d x 1 MiB); reasons: %s\n",
              static_cast<double>(max_out.load()) / 1048576.0, n, h.reasons().c_str());
  EXPECT_TRUE(all_closed) << "closed " << h.disconnects() << " of " << n;
  EXPECT_EQ(not_slow, 0);
  EXPECT_EQ(h.count(CloseReason::slow_consumer), n);
  EXPECT_EQ(h.greedy_backpressure_.load(), n / 2) << "every greedy producer must hit backpressure";
  EXPECT_EQ(static_cast<int>(polite.v.size()), n - n / 2);
  EXPECT_LE(greedy.max(), 2000.0 * kScale) << "the hard cap must close at once, not at the deadline";
  EXPECT_GE(polite_since_req.min(), 1900.0) << "closed before write_timeout";
  EXPECT_LE(polite.max(), 2000.0 + 250 + 750.0 * kScale);
  EXPECT_LE(max_out.load(), static_cast<std::uint64_t>(n) * cap);
  EXPECT_TRUE(wait_until([&] { return srv.stats().total.output_bytes == 0; }, ms(3000)));
  EXPECT_EQ(srv.stats().total.closes_by(CloseReason::slow_consumer), static_cast<std::uint64_t>(n));
  for (int fd : fds) ::close(fd);
  EXPECT_TRUE(wait_until([&] { return srv.stats().total.connections == 0; }, ms(5000)));
  // A sweep (every 250 ms) runs malloc_trim after the slow consumers' output was dropped.
  if (kScale == 1) {
    wait_until([&] { return rss_kb(::getpid()) <= rss_before + 32 * 1024; }, ms(3000));
  }
  const long rss_after = rss_kb(::getpid());
  std::printf("[slow] RSS before server %ld KiB, after all closed %ld KiB (delta %ld KiB)\n",
              rss_before, rss_after, rss_after - rss_before);
  if (kScale == 1) {  // sanitizer allocators keep freed memory in quarantine
    EXPECT_LE(rss_after, rss_before + 32 * 1024) << "output memory did not return";
  }
  srv.stop();
}

// ------------------------------------------------------------------ 6. half-close

namespace {
void half_close_run(unsigned workers) {
  const int n = scaled(1000, 50);
  const std::size_t kBytes = 64 * 1024;
  Echo h;
  auto o = base_opts(workers);
  o.shards = 2;
  esockets::Server srv(h, o);
  srv.start();
  std::vector<int> fds = open_many(srv.port(), n, ms(20000));
  ASSERT_EQ(static_cast<int>(fds.size()), n);
  struct St {
    std::size_t idx, sent = 0, got = 0;
    bool shut = false, done = false, bad = false;
    End end = End::timeout;
  };
  std::unordered_map<int, St> st;
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < n; ++i) {
    int fd = fds[static_cast<std::size_t>(i)];
    st[fd] = St{static_cast<std::size_t>(i)};
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.fd = fd;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  int finished = 0;
  std::vector<epoll_event> evs(512);
  std::vector<char> buf(65536);
  const auto until = Clock::now() + ms(30000);
  while (finished < n && Clock::now() < until) {
    int k = ::epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 100);
    for (int i = 0; i < k; ++i) {
      const int fd = evs[static_cast<std::size_t>(i)].data.fd;
      St& s = st[fd];
      if (s.done) continue;
      if ((evs[static_cast<std::size_t>(i)].events & EPOLLOUT) && !s.shut) {
        char out[16384];
        std::size_t m = std::min(sizeof out, kBytes - s.sent);
        for (std::size_t j = 0; j < m; ++j) out[j] = static_cast<char>(pattern(s.idx, s.sent + j));
        ssize_t w = ::send(fd, out, m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) s.sent += static_cast<std::size_t>(w);
        if (s.sent == kBytes) {
          ::shutdown(fd, SHUT_WR);
          s.shut = true;
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.fd = fd;
          ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        }
      }
      while (true) {
        ssize_t r = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (r > 0) {
          for (ssize_t j = 0; j < r; ++j) {
            if (static_cast<std::uint8_t>(buf[static_cast<std::size_t>(j)]) != pattern(s.idx, s.got + static_cast<std::size_t>(j))) s.bad = true;
          }
          s.got += static_cast<std::size_t>(r);
          continue;
        }
        if (r < 0 && errno == EAGAIN) break;
        s.end = r == 0 ? End::eof : (errno == ECONNRESET ? End::reset : End::error);
        s.done = true;
        ++finished;
        ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        break;
      }
    }
  }
  ::close(ep);
  int complete = 0, bad = 0, resets = 0, early_eof = 0, unfinished = 0;
  for (auto& [fd, s] : st) {
    if (!s.done) ++unfinished;
    if (s.bad) ++bad;
    if (s.end == End::reset || s.end == End::error) ++resets;
    if (s.done && s.end == End::eof && s.got == kBytes && !s.bad) ++complete;
    if (s.done && s.end == End::eof && s.got != kBytes) ++early_eof;
  }
  std::printf("[half-close workers=%u] %d clients: complete %d, corrupt %d, resets %d, short %d, "
              "unfinished %d\n", workers, n, complete, bad, resets, early_eof, unfinished);
  EXPECT_EQ(complete, n);
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(resets, 0) << "the reply must end with FIN, not RST";
  EXPECT_EQ(early_eof, 0);
  EXPECT_EQ(unfinished, 0);
  for (int fd : fds) ::close(fd);
  EXPECT_TRUE(wait_until([&] { return h.disconnects() == n; }, ms(5000)));
  EXPECT_EQ(h.count(CloseReason::peer_closed), n) << h.reasons();
  srv.stop();
}
}  // namespace

TEST(HalfClose, EveryReplyThenFinInline) { half_close_run(0); }
TEST(HalfClose, EveryReplyThenFinWorkers) { half_close_run(2); }

// ------------------------------------------------------------------ 7. RST storms

namespace {
// Each complete line is answered with 1 MiB (4 x 256 KiB): the server is writing when the
// client resets.
class BigLineReply : public Recorder {
 public:
  void on_message_recv(Connection& c, esockets::Bytes) override {
    static const std::string chunk(256 * 1024, 'r');
    for (int i = 0; i < 4; ++i) c.send(chunk);
  }
};

void rst_storm_run(unsigned workers) {
  expect_sigpipe_default();
  const int rounds = 5, per_round = scaled(400, 40);
  BigLineReply h;
  auto o = base_opts(workers);
  o.shards = 2;
  o.framing = esockets::Framing::line;
  esockets::Server srv(h, o);
  srv.start();
  int total = 0;
  for (int round = 0; round < rounds; ++round) {
    std::vector<int> fds = open_many(srv.port(), per_round, ms(20000));
    total += static_cast<int>(fds.size());
    for (int fd : fds) {
      set_blocking(fd, true);
      // A complete request (the server starts writing 1 MiB) and half of the next one.
      ASSERT_TRUE(write_all(fd, "req\npar", 7));
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      int fd = fds[i];
      if (i % 3 != 0) {
        // Wait until the reply is flowing, then abort mid-write.
        char b[4096];
        pollfd pf{fd, POLLIN, 0};
        if (::poll(&pf, 1, 2000) == 1) (void)::recv(fd, b, sizeof b, MSG_DONTWAIT);
      }
      set_linger_rst(fd);
      ::close(fd);
    }
  }
  const bool all = wait_until([&] { return h.disconnects() == total; }, ms(10000 * kScale));
  std::printf("[rst workers=%u] %d aborted clients; disconnects %d; reasons: %s\n", workers, total,
              h.disconnects(), h.reasons().c_str());
  EXPECT_TRUE(all);
  std::string why;
  EXPECT_TRUE(h.exactly_once(&why)) << why;
  EXPECT_EQ(h.count(CloseReason::reset) + h.count(CloseReason::peer_closed), total) << h.reasons();
  // Still alive and serving: a well-behaved client gets its whole reply.
  int fd = connect_blocking(srv.port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(write_all(fd, "req\n", 4));
  std::string got(1024 * 1024, '\0');
  EXPECT_TRUE(read_exact(fd, got.data(), got.size(), ms(10000)));
  EXPECT_EQ(got, std::string(1024 * 1024, 'r'));
  ::close(fd);
  EXPECT_TRUE(wait_until([&] { return srv.stats().total.connections == 0; }, ms(5000)));
  srv.stop();
}
}  // namespace

TEST(RstStorm, ServerSurvivesOneDisconnectEachInline) { rst_storm_run(0); }
TEST(RstStorm, ServerSurvivesOneDisconnectEachWorkers) { rst_storm_run(2); }

// ------------------------------------------------------------------ 8. fairness

namespace {
// 100 ping-pong clients driven by one thread; returns RTTs (ms) measured after warm-up.
Dist ping_run(std::uint16_t port, int clients, ms warm, ms measure) {
  std::vector<int> fds = open_many(port, clients, ms(10000));
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  const std::size_t kMsg = 32;
  std::unordered_map<int, std::pair<Clock::time_point, std::size_t>> st;
  char msg[kMsg];
  std::memset(msg, 'q', kMsg);
  for (int fd : fds) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    st[fd] = {Clock::now(), 0};
    (void)::send(fd, msg, kMsg, MSG_NOSIGNAL);
  }
  Dist d;
  const auto t0 = Clock::now();
  const auto t_measure = t0 + warm;
  const auto t_end = t_measure + measure;
  std::vector<epoll_event> evs(256);
  char buf[4096];
  while (Clock::now() < t_end) {
    int k = ::epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 50);
    for (int i = 0; i < k; ++i) {
      int fd = evs[static_cast<std::size_t>(i)].data.fd;
      auto& [sent, got] = st[fd];
      ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r <= 0) continue;
      got += static_cast<std::size_t>(r);
      if (got >= kMsg) {
        const auto now = Clock::now();
        if (now >= t_measure) d.add(std::chrono::duration<double, std::milli>(now - sent).count());
        got -= kMsg;
        sent = now;
        (void)::send(fd, msg, kMsg, MSG_NOSIGNAL);
      }
    }
  }
  ::close(ep);
  for (int fd : fds) ::close(fd);
  return d;
}
}  // namespace

TEST(Fairness, FirehoseDoesNotStarvePingers) {
  Echo h;
  auto o = base_opts();
  o.shards = 1;
  // Diagnostic knob: a smaller read_chunk shrinks the per-event read budget (16 reads).
  if (const char* e = std::getenv("ROBUST_FAIRNESS_READ_CHUNK")) o.read_chunk = std::strtoul(e, nullptr, 10);
  esockets::Server srv(h, o);
  srv.start();
  const int pingers = 100;
  bool passed = false;
  // One noisy-neighbour burst on a shared 2-core machine can put a single run's p99 at 10-20x
  // (seen with the engine behaving); starving the pingers would show in every run.
  constexpr int kAttempts = 5;
  for (int attempt = 1; attempt <= kAttempts && !passed; ++attempt) {
    Dist base = ping_run(srv.port(), pingers, ms(300), ms(1500));
    // The firehose: 64 KiB writes as fast as possible; a second thread discards the echo.
    int fh = connect_blocking(srv.port());
    ASSERT_GE(fh, 0);
    std::atomic<bool> run{true};
    std::atomic<std::uint64_t> fh_bytes{0};
    std::atomic<bool> fh_failed{false};
    std::thread writer([&] {
      std::string chunk(64 * 1024, 'F');
      while (run.load()) {
        ssize_t w = ::send(fh, chunk.data(), chunk.size(), MSG_NOSIGNAL);
        if (w <= 0) {
          if (run.load()) fh_failed = true;  // the server dropped the firehose
          break;
        }
      }
    });
    std::thread reader([&] {
      std::vector<char> b(256 * 1024);
      while (true) {
        ssize_t r = ::recv(fh, b.data(), b.size(), 0);
        if (r <= 0) break;
        fh_bytes += static_cast<std::uint64_t>(r);
      }
    });
    // Ping only once the firehose is flowing (its echo is coming back).
    wait_until([&] { return fh_bytes.load() >= (1u << 20) || fh_failed.load(); }, ms(5000));
    Dist loaded = ping_run(srv.port(), pingers, ms(300), ms(1500));
    run = false;
    ::shutdown(fh, SHUT_RDWR);
    writer.join();
    reader.join();
    ::close(fh);
    const double b99 = base.pct(99), l99 = loaded.pct(99);
    std::printf("[fairness attempt %d] baseline %s\n", attempt, base.summary().c_str());
    std::printf("[fairness attempt %d] firehose %s; firehose echoed %.0f MiB\n", attempt,
                loaded.summary().c_str(), static_cast<double>(fh_bytes.load()) / 1048576.0);
    // A floor on the baseline: sub-0.3 ms p99s make the ratio measure scheduler noise.
    const double ref = std::max(b99, 0.3);
    // Sanitizer builds: the in-process firehose threads run 5-15x slower and the ratio mostly
    // measures CPU contention on the test machine; the bound widens with the scale there.
    const double limit = kScale == 1 ? 3.0 : 1.5 * kScale;
    std::printf("[fairness attempt %d] p99 ratio %.2f (limit %.0f)\n", attempt, l99 / ref, limit);
    EXPECT_FALSE(fh_failed.load()) << "the firehose client was disconnected";
    passed = base.v.size() > 1000 && loaded.v.size() > 1000 && l99 <= limit * ref &&
             fh_bytes.load() > 0 && !fh_failed.load();
  }
  EXPECT_TRUE(passed) << "ping p99 with a firehose exceeded the limit x baseline p99 in "
                      << kAttempts << " attempts";
  srv.stop();
}

// ------------------------------------------------------------------ 9. dripping

TEST(Dripping, UnfinishedLineClosedByFrameTimeout) {
  Echo h;
  auto o = base_opts();
  o.framing = esockets::Framing::line;
  o.frame_timeout = ms(1000);
  esockets::Server srv(h, o);
  srv.start();
  int fd = connect_blocking(srv.port());
  ASSERT_GE(fd, 0);
  const auto t0 = Clock::now();
  End end = End::timeout;
  double closed_ms = 0;
  while (since_ms(t0) < 4000) {
    (void)::send(fd, "a", 1, MSG_NOSIGNAL);
    pollfd pf{fd, POLLIN, 0};
    if (::poll(&pf, 1, 100) == 1) {
      char b[16];
      ssize_t r = ::recv(fd, b, sizeof b, MSG_DONTWAIT);
      if (r <= 0) {
        closed_ms = since_ms(t0);
        end = r == 0 ? End::eof : End::reset;
        break;
      }
    }
  }
  ::close(fd);
  std::printf("[drip] closed after %.0f ms (%s)\n", closed_ms, to_string(end));
  EXPECT_EQ(end, End::eof);
  EXPECT_GE(closed_ms, 985.0);  // the engine's clock ticks are 10 ms
  EXPECT_LE(closed_ms, 1500.0 + (kScale > 1 ? 500.0 : 0.0));
  ASSERT_TRUE(wait_until([&] { return h.disconnects() == 1; }, ms(3000)));
  EXPECT_EQ(h.count(CloseReason::frame_timeout), 1) << h.reasons();
  srv.stop();
}

TEST(Dripping, MaxFrameLineInSmallPiecesIsLinear) {
  Echo h;
  auto o = base_opts();
  o.framing = esockets::Framing::line;
  o.max_frame = 1024 * 1024;
  esockets::Server srv(h, o);
  srv.start();
  int fd = connect_blocking(srv.port());
  ASSERT_GE(fd, 0);
  std::string line(o.max_frame, 'L');  // exactly max_frame: must be accepted
  line.push_back('\n');
  std::string echoed;
  std::thread rd([&] { (void)read_to_end(fd, ms(30000), &echoed); });
  const auto t0 = Clock::now();
  const std::size_t piece = 64;
  for (std::size_t off = 0; off < line.size(); off += piece) {
    ASSERT_TRUE(write_all(fd, line.data() + off, std::min(piece, line.size() - off)));
  }
  const bool got = wait_until([&] { return srv.stats().total.messages_in == 1; }, ms(20000));
  const double ms_taken = since_ms(t0);
  ::shutdown(fd, SHUT_WR);
  rd.join();
  ::close(fd);
  std::printf("[drip] 1 MiB line in %zu-byte pieces delivered in %.0f ms\n", piece, ms_taken);
  EXPECT_TRUE(got);
  EXPECT_EQ(echoed, line);
  EXPECT_LE(ms_taken, 3000.0 * kScale) << "a dripped max-size line costs too much";

  // One byte more than max_frame is a framing error.
  fd = connect_blocking(srv.port());
  ASSERT_GE(fd, 0);
  std::string too_long(o.max_frame + 1, 'L');
  (void)write_all(fd, too_long.data(), too_long.size());
  EXPECT_NE(read_to_end(fd, ms(5000)), End::timeout);
  ::close(fd);
  EXPECT_TRUE(wait_until([&] { return h.count(CloseReason::framing_error) == 1; }, ms(3000)))
      << h.reasons();
  srv.stop();
}

// ------------------------------------------------------------------ 10. throwing handler

namespace {
class ThrowsBadAlloc : public Echo {
 public:
  void on_message_recv(Connection& c, esockets::Bytes m) override {
    if (m.substr(0, 4) == "boom") throw std::bad_alloc();
    Echo::on_message_recv(c, m);
  }
};

void bad_alloc_run(unsigned workers) {
  ThrowsBadAlloc h;
  auto o = base_opts(workers);
  o.shards = 2;
  esockets::Server srv(h, o);
  srv.start();
  std::vector<int> good;
  for (int i = 0; i < 20; ++i) {
    int fd = connect_blocking(srv.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(echo_ok(fd, ms(3000)));
    good.push_back(fd);
  }
  int bad = connect_blocking(srv.port());
  ASSERT_GE(bad, 0);
  ASSERT_TRUE(echo_ok(bad, ms(3000)));
  ASSERT_TRUE(write_all(bad, "boom", 4));
  const End e = read_to_end(bad, ms(5000));
  ::close(bad);
  EXPECT_EQ(e, End::eof);
  ASSERT_TRUE(wait_until([&] { return h.disconnects() == 1; }, ms(3000)));
  EXPECT_EQ(h.count(CloseReason::handler_exception), 1) << h.reasons();
  for (int fd : good) EXPECT_TRUE(echo_ok(fd, ms(3000), "still here"));
  EXPECT_EQ(srv.client_count(), good.size());
  for (int fd : good) ::close(fd);
  srv.stop();
  EXPECT_EQ(srv.stats().total.closes_by(CloseReason::handler_exception), 1u);
}
}  // namespace

TEST(HandlerThrows, BadAllocClosesOnlyThatConnectionInline) { bad_alloc_run(0); }
TEST(HandlerThrows, BadAllocClosesOnlyThatConnectionWorkers) { bad_alloc_run(2); }

// ------------------------------------------------------------------ 11. lingering close

namespace {
class ReplyAndClose : public Recorder {
 public:
  static constexpr std::size_t kReply = 2 * 1024 * 1024;
  void on_message_recv(Connection& c, esockets::Bytes) override {
    if (c.user_data() != nullptr) return;  // answered already
    c.set_user_data(this);
    std::string r(kReply, '\0');
    for (std::size_t i = 0; i < kReply; ++i) r[i] = static_cast<char>(pattern(1, i));
    c.send(r);
    c.close();
  }
};

void linger_run(unsigned workers) {
  ReplyAndClose h;
  auto o = base_opts(workers);
  esockets::Server srv(h, o);
  srv.start();
  for (int round = 0; round < 5; ++round) {
    int fd = connect_blocking(srv.port());
    ASSERT_GE(fd, 0);
    set_blocking(fd, false);
    // The request, then input the server will never read, sent while the reply flows.
    std::string junk(64 * 1024, 'j');
    std::size_t junk_sent = 0;
    ASSERT_EQ(::send(fd, "req", 3, MSG_NOSIGNAL), 3);
    std::string got;
    End end = End::timeout;
    const auto t0 = Clock::now();
    std::vector<char> buf(65536);
    while (since_ms(t0) < 10000) {
      pollfd pf{fd, static_cast<short>(POLLIN | (junk_sent < 8 * 1024 * 1024 ? POLLOUT : 0)), 0};
      ::poll(&pf, 1, 100);
      if (pf.revents & POLLOUT) {
        ssize_t w = ::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) junk_sent += static_cast<std::size_t>(w);
      }
      // Read slowly at first so the close happens with our input still unread on its side.
      if (since_ms(t0) < 100) continue;
      ssize_t r = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (r > 0) {
        got.append(buf.data(), static_cast<std::size_t>(r));
        continue;
      }
      if (r == 0) {
        end = End::eof;
        break;
      }
      if (errno != EAGAIN) {
        end = errno == ECONNRESET ? End::reset : End::error;
        break;
      }
    }
    ::close(fd);
    bool intact = got.size() == ReplyAndClose::kReply;
    for (std::size_t i = 0; intact && i < got.size(); ++i) {
      intact = static_cast<std::uint8_t>(got[i]) == pattern(1, i);
    }
    std::printf("[linger workers=%u] round %d: got %zu of %zu bytes, then %s; sent %zu junk bytes\n",
                workers, round, got.size(), ReplyAndClose::kReply, to_string(end), junk_sent);
    EXPECT_EQ(end, End::eof);
    EXPECT_TRUE(intact);
    EXPECT_GT(junk_sent, 0u);
  }
  EXPECT_TRUE(wait_until([&] { return h.disconnects() == 5; }, ms(5000)));
  EXPECT_EQ(h.count(CloseReason::closed_by_server), 5) << h.reasons();
  srv.stop();
}
}  // namespace

TEST(LingeringClose, WholeReplyThenFinInline) { linger_run(0); }
TEST(LingeringClose, WholeReplyThenFinWorkers) { linger_run(2); }

// ------------------------------------------------------------------ 12. hang-up while paused

namespace {
class PausesAtConnect : public Recorder {
 public:
  bool on_client_connect(Connection& c) override {
    Recorder::on_client_connect(c);
    c.pause_reading();
    return true;
  }
};

void paused_hup_run(unsigned workers) {
  PausesAtConnect h;
  auto o = base_opts(workers);
  esockets::Server srv(h, o);
  srv.start();
  const int n = 50;
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    int fd = connect_blocking(srv.port());
    ASSERT_GE(fd, 0);
    (void)::send(fd, "unread", 6, MSG_NOSIGNAL);
    fds.push_back(fd);
  }
  ASSERT_TRUE(wait_until([&] { return h.connects() == n; }, ms(5000)));
  ASSERT_TRUE(wait_until([&] { return srv.stats().total.paused == static_cast<std::uint64_t>(n); }, ms(5000)));
  for (int fd : fds) {
    set_linger_rst(fd);
    ::close(fd);
  }
  // CPU over the second after the resets (a spinning shard would burn it all).
  const double c0 = self_cpu_seconds();
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(ms(1000));
  const double cpu = (self_cpu_seconds() - c0) / (since_ms(t0) / 1000.0);
  const bool all = wait_until([&] { return h.disconnects() == n; }, ms(5000));
  std::printf("[paused-hup workers=%u] disconnects %d of %d (%s); process CPU after: %.1f%%\n",
              workers, h.disconnects(), n, h.reasons().c_str(), cpu * 100);
  EXPECT_TRUE(all);
  std::string why;
  EXPECT_TRUE(h.exactly_once(&why)) << why;
  EXPECT_EQ(h.count(CloseReason::reset), n) << h.reasons();
  EXPECT_LE(cpu, 0.10) << "busy loop on a hung-up paused connection";
  EXPECT_EQ(srv.stats().total.paused, 0u);
  EXPECT_EQ(srv.stats().total.connections, 0u);
  srv.stop();
}
}  // namespace

TEST(PausedHangup, ResetWhilePausedNoSpinOneDisconnectInline) { paused_hup_run(0); }
TEST(PausedHangup, ResetWhilePausedNoSpinOneDisconnectWorkers) { paused_hup_run(2); }

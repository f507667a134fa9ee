// Delivery contract, behaviour 7: framer re-entrancy (inline handlers, line framing).
//  - handler.hpp: the message "bytes are valid only during the call". A handler that calls
//    conn.close() inside on_message_recv and then reads every byte of `message` must read the
//    frame it was given, also when the frame was assembled in the framer's buffer (the line
//    arrived in two TCP writes) or held there (delivered after a pause); and when the handler
//    throws after touching it. Under ASan the broken case is a heap-use-after-free; in release
//    the freed buffer's first bytes are overwritten by the allocator, so the copy differs.
//  - handler.hpp / README thread rules: "One connection's callbacks never overlap". A handler
//    that calls resume_reading() from on_output_low must not get on_message_recv nested inside
//    on_output_low, and no frame may be delivered twice or out of order.
// The close-and-read scenarios run in child processes (an ASan report ends the child, not the
// test binary).
#include <gtest/gtest.h>

#include <mutex>
#include <stdexcept>

#include "delivery_support.hpp"

namespace esockets::test::delivery {
namespace {

std::string pattern(std::size_t n) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s.push_back(static_cast<char>('A' + (i * 7) % 26));
  return s;
}

// ------------------------------------------------------------ close() inside on_message_recv

class CloseAndRead : public Handler {
 public:
  enum class Mode { close_then_read, close_read_throw, pause_then_close_read };
  explicit CloseAndRead(Mode m) : mode_(m) {}
  std::mutex mu;
  std::vector<std::string> seen;  // every message, copied after the close
  std::atomic<int> messages{0}, disconnects{0}, lows{0};
  std::atomic<int> reason{-1};

  void on_message_recv(Connection& c, Bytes m) override {
    messages++;
    if (mode_ == Mode::pause_then_close_read && m == "p") {
      // Hold the rest of the input in the framer, queue enough output to cross the high
      // watermark; on_output_low resumes reading and the held frames are delivered.
      c.pause_reading();
      c.send(std::string(1024 * 1024, 'f'));
      return;
    }
    if (m.empty() || m[0] != 'c') return;
    c.close();
    // Touch every byte of the message after the close.
    std::string copy;
    copy.reserve(m.size());
    for (char ch : m) copy.push_back(ch);
    {
      std::lock_guard lk(mu);
      seen.push_back(copy);
    }
    if (mode_ == Mode::close_read_throw) throw std::runtime_error("handler failure after close()");
  }
  void on_output_low(Connection& c) override {
    lows++;
    c.resume_reading();
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    disconnects++;
    reason.store(static_cast<int>(r));
  }

 private:
  Mode mode_;
};

void run_close_and_read(CloseAndRead::Mode mode, ChildReport& r) {
  CloseAndRead h(mode);
  ServerOptions o = loopback_options(1, 0);
  o.framing = Framing::line;
  o.socket_send_buffer = 8192;
  o.output_high_watermark = 32 * 1024;
  o.output_low_watermark = 8 * 1024;
  Server server(h, o);
  server.start();
  Client c(server.port());
  std::string frame(1, 'c');
  frame += pattern(199);
  std::string data;
  if (mode == CloseAndRead::Mode::pause_then_close_read) {
    r.stage("send 'p', then the frame, in one write; the frame is held until on_output_low resumes");
    c.send_all("p\n" + frame + "\nx\n");
  } else {
    r.stage("send the frame in two writes so it is assembled in the framer's buffer");
    c.send_all(frame.substr(0, 100));
    if (!wait_until([&] { return server.stats().total.bytes_in >= 100; }, 5s)) r.fail("first part not read");
    std::this_thread::sleep_for(20ms);
    c.send_all(frame.substr(100) + "\n");
  }
  r.stage("read until EOF");
  const EofResult end = c.wait_eof(10s, &data);
  r.stage("checks");
  {
    std::lock_guard lk(h.mu);
    if (h.seen.size() != 1) {
      r.fail("the closing handler ran " + std::to_string(h.seen.size()) + " times");
    } else if (h.seen[0] != frame) {
      std::size_t k = 0;
      while (k < frame.size() && k < h.seen[0].size() && frame[k] == h.seen[0][k]) ++k;
      r.fail("after conn.close() the handler's message no longer holds the frame: first difference at byte " +
             std::to_string(k) + " of " + std::to_string(frame.size()) +
             " (the frame's buffer was freed under the handler)");
    }
  }
  if (end != EofResult::eof) r.fail(std::string("the client got ") + to_string(end) + " instead of EOF");
  if (!wait_until([&] { return h.disconnects.load() == 1; }, 3s)) {
    r.fail("on_client_disconnect ran " + std::to_string(h.disconnects.load()) + " times");
  }
  const int reason = h.reason.load();
  const bool reason_ok = reason == static_cast<int>(CloseReason::closed_by_server) ||
                         (mode == CloseAndRead::Mode::close_read_throw &&
                          reason == static_cast<int>(CloseReason::handler_exception));
  if (!reason_ok) r.fail("disconnect reason " + std::to_string(reason));
  server.stop();
  r.stage("done");
}

TEST(FramerReentrancy, CloseThenReadMessageAssembledInFramerBuffer) {
  const auto out = run_in_child(20s, [](ChildReport& r) { run_close_and_read(CloseAndRead::Mode::close_then_read, r); });
  EXPECT_TRUE(out.ok()) << out.describe();
}

TEST(FramerReentrancy, CloseReadThenThrowWithMessageAssembledInFramerBuffer) {
  const auto out = run_in_child(20s, [](ChildReport& r) { run_close_and_read(CloseAndRead::Mode::close_read_throw, r); });
  EXPECT_TRUE(out.ok()) << out.describe();
}

TEST(FramerReentrancy, CloseThenReadMessageHeldByFramerAfterPause) {
  const auto out =
      run_in_child(20s, [](ChildReport& r) { run_close_and_read(CloseAndRead::Mode::pause_then_close_read, r); });
  EXPECT_TRUE(out.ok()) << out.describe();
}

// ------------------------------------------------------------ resume_reading() from on_output_low

thread_local int tl_depth = 0;
thread_local const char* tl_outer = nullptr;

class NestingProbe : public Handler {
 public:
  struct St {
    bool busy = false;
    const char* in = nullptr;
    std::uint64_t next = 0;
  };
  static constexpr int kEvery = 25;  // every 25th message pauses and queues a filler
  std::atomic<int> messages{0}, lows{0}, highs{0};
  ErrorLog violations;
  ErrorLog order;
  std::mutex mu;
  std::vector<int> count_of;  // deliveries per message number

  explicit NestingProbe(int n) : count_of(static_cast<std::size_t>(n), 0) {}

  class Scope {
   public:
    Scope(NestingProbe& p, Connection& c, const char* name) : st_(static_cast<St*>(c.user_data())) {
      if (tl_depth > 0) {
        p.violations.add(std::string(name) + " called while " + (tl_outer ? tl_outer : "?") +
                         " is still running on this thread (nested callback)");
      }
      if (st_ != nullptr && st_->busy) {
        p.violations.add(std::string(name) + " overlaps " + (st_->in ? st_->in : "?") + " of the same connection");
      }
      saved_outer_ = tl_outer;
      ++tl_depth;
      tl_outer = name;
      if (st_ != nullptr) {
        saved_busy_ = st_->busy;
        saved_in_ = st_->in;
        st_->busy = true;
        st_->in = name;
      }
    }
    ~Scope() {
      --tl_depth;
      tl_outer = saved_outer_;
      if (st_ != nullptr) {
        st_->busy = saved_busy_;
        st_->in = saved_in_;
      }
    }

   private:
    St* st_;
    const char* saved_outer_ = nullptr;
    bool saved_busy_ = false;
    const char* saved_in_ = nullptr;
  };

  bool on_client_connect(Connection& c) override {
    c.set_user_data(new St);
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    Scope s(*this, c, "on_message_recv");
    auto* st = static_cast<St*>(c.user_data());
    messages++;
    if (m.size() != 7 || m[0] != 'm') {
      order.add("unexpected message of " + std::to_string(m.size()) + " bytes");
      return;
    }
    const int k = std::atoi(std::string(m.substr(1)).c_str());
    {
      std::lock_guard lk(mu);
      if (k >= 0 && static_cast<std::size_t>(k) < count_of.size()) count_of[static_cast<std::size_t>(k)]++;
    }
    if (static_cast<std::uint64_t>(k) != st->next) {
      order.add("message m" + std::to_string(k) + " delivered when m" + std::to_string(st->next) + " was next");
    }
    st->next = static_cast<std::uint64_t>(k) + 1;
    if (k % kEvery == 0) {
      c.pause_reading();
      c.send_frame(std::string(64 * 1024, 'f'));
    }
  }
  void on_output_high(Connection& c) override {
    Scope s(*this, c, "on_output_high");
    highs++;
  }
  void on_output_low(Connection& c) override {
    Scope s(*this, c, "on_output_low");
    lows++;
    c.resume_reading();
  }
  void on_client_disconnect(Connection& c, CloseReason) override {
    {
      Scope s(*this, c, "on_client_disconnect");
    }
    delete static_cast<St*>(c.user_data());
    c.set_user_data(nullptr);
  }
};

TEST(FramerReentrancy, ResumeFromOnOutputLowDoesNotNestOrRepeatMessages) {
  const int n = 400;
  NestingProbe h(n);
  ServerOptions o = loopback_options(1, 0);
  o.framing = Framing::line;
  o.socket_send_buffer = 8192;
  o.output_high_watermark = 32 * 1024;
  o.output_low_watermark = 8 * 1024;
  Server server(h, o);
  server.start();
  // A small receive window: a filler never leaves in one write, so every pause crosses the high
  // watermark and on_output_low follows (the resume path under test).
  const int fd = connect_loopback(server.port(), 8192);
  ASSERT_GE(fd, 0);
  std::string all;
  char buf[16];
  for (int i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "m%06d\n", i);
    all += buf;
  }
  std::atomic<bool> done{false};
  std::uint64_t drained = 0;
  std::thread reader([&] {
    char rb[65536];
    while (!done.load()) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const ssize_t k = ::recv(fd, rb, sizeof rb, MSG_DONTWAIT);
      if (k == 0) break;
      if (k > 0) drained += static_cast<std::uint64_t>(k);
    }
  });
  ASSERT_TRUE(write_all_fd(fd, all));  // one write: most lines are read (and held) together
  const bool all_in = wait_until([&] { return h.messages.load() >= n; }, 15s);
  std::this_thread::sleep_for(100ms);  // duplicates, if any, arrive now
  done.store(true);
  reader.join();
  server.stop();
  ::close(fd);

  int missing = 0, repeated = 0;
  {
    std::lock_guard lk(h.mu);
    for (int v : h.count_of) {
      missing += v == 0 ? 1 : 0;
      repeated += v > 1 ? v - 1 : 0;
    }
  }
  std::printf("[framer_reentrancy] %d deliveries of %d messages, %d on_output_high, %d on_output_low, "
              "%llu bytes drained by the client\n",
              h.messages.load(), n, h.highs.load(), h.lows.load(), static_cast<unsigned long long>(drained));
  EXPECT_GE(h.lows.load(), 2) << "the pause / on_output_low / resume cycle did not happen";
  EXPECT_TRUE(all_in) << "only " << h.messages.load() << " of " << n << " messages delivered";
  EXPECT_EQ(h.violations.count(), 0u) << "callbacks of one connection overlapped: " << h.violations.summary();
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(repeated, 0) << "frames delivered more than once";
  EXPECT_EQ(h.order.count(), 0u) << h.order.summary();
}


// A handler may pause and resume its connection inside on_message_recv (e.g. it briefly
// considered throttling). When that frame came from input the framer held during a pause, the
// resume must not start delivering the held input again from its beginning.
class PauseResumeInline : public Handler {
 public:
  static constexpr int kToggleAt = 5;
  std::mutex mu;
  std::vector<int> count_of;
  std::vector<int> sequence;
  std::atomic<int> messages{0};
  bool toggled = false;
  explicit PauseResumeInline(int n) : count_of(static_cast<std::size_t>(n), 0) {}
  void on_message_recv(Connection& c, Bytes m) override {
    messages++;
    const int k = std::atoi(std::string(m.substr(1)).c_str());
    {
      std::lock_guard lk(mu);
      if (k >= 0 && static_cast<std::size_t>(k) < count_of.size()) count_of[static_cast<std::size_t>(k)]++;
      if (sequence.size() < 4096) sequence.push_back(k);
    }
    if (k == 0) {
      // Hold the rest of the input; on_output_low resumes.
      c.pause_reading();
      c.send_frame(std::string(64 * 1024, 'f'));
    } else if (k == kToggleAt && !toggled) {
      toggled = true;
      c.pause_reading();
      c.resume_reading();
    }
  }
  void on_output_low(Connection& c) override { c.resume_reading(); }
};

TEST(FramerReentrancy, PauseThenResumeInsideADeliveryOfHeldInputDoesNotRepeatFrames) {
  const int n = 50;
  const auto out = run_in_child(20s, [&](ChildReport& r) {
    PauseResumeInline h(n);
    ServerOptions o = loopback_options(1, 0);
    o.framing = Framing::line;
    o.socket_send_buffer = 8192;
    o.output_high_watermark = 32 * 1024;
    o.output_low_watermark = 8 * 1024;
    Server server(h, o);
    server.start();
    const int fd = connect_loopback(server.port(), 8192);
    if (fd < 0) {
      r.fail("connect failed");
      return;
    }
    std::string all;
    char buf[16];
    for (int i = 0; i < n; ++i) {
      std::snprintf(buf, sizeof buf, "m%06d\n", i);
      all += buf;
    }
    std::atomic<bool> done{false};
    std::thread reader([&] {
      char rb[65536];
      while (!done.load()) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 20) > 0 && ::recv(fd, rb, sizeof rb, MSG_DONTWAIT) == 0) break;
      }
    });
    r.stage("send 50 lines in one write; m0 pauses, m5 pauses and resumes inside its handler");
    write_all_fd(fd, all);
    wait_until([&] { return h.messages.load() >= n; }, 5s);
    std::this_thread::sleep_for(200ms);
    done.store(true);
    reader.join();
    r.stage("stop");
    server.stop();
    ::close(fd);
    std::lock_guard lk(h.mu);
    int missing = 0, repeated = 0;
    for (int v : h.count_of) {
      missing += v == 0 ? 1 : 0;
      repeated += v > 1 ? v - 1 : 0;
    }
    std::string seq;
    for (std::size_t i = 0; i < h.sequence.size() && i < 40; ++i) seq += " m" + std::to_string(h.sequence[i]);
    if (repeated != 0 || missing != 0 || h.messages.load() != n) {
      r.fail(std::to_string(h.messages.load()) + " deliveries of " + std::to_string(n) + " frames: " +
             std::to_string(repeated) + " repeated, " + std::to_string(missing) + " missing; order:" + seq);
    }
    r.stage("done");
  });
  EXPECT_TRUE(out.ok()) << out.describe();
}

}  // namespace
}  // namespace esockets::test::delivery

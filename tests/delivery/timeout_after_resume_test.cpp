// Delivery contract, behaviour 10: idle_timeout and frame_timeout count the client's silence
// while the server reads it, not the time the server chose not to read. options.hpp:
// idle_timeout "Connections whose reading is paused are not idle"; the shard's sweep skips paused
// connections ("we are not reading: not the client's fault"). So after resume_reading() a
// connection paused for longer than the timeout must not be closed as idle / frame_timeout
// within (timeout - slack) of the resume. The pause is the handler's pause_reading(); the resume
// comes from on_output_low once the client drained a filler it held back.
#include <gtest/gtest.h>

#include "delivery_support.hpp"

namespace esockets::test::delivery {
namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

class PauseResume : public Handler {
 public:
  std::atomic<int> connects{0}, resumes{0}, disconnects{0};
  std::atomic<std::int64_t> paused_at{0}, resumed_at{0}, closed_at{0};
  std::atomic<int> reason{-1};
  bool on_client_connect(Connection&) override {
    connects++;
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "pause") {
      c.pause_reading();
      paused_at.store(now_ms());
      c.send_frame(std::string(1024 * 1024, 'f'));  // held back by the client: reading stays paused
    }
  }
  void on_output_low(Connection& c) override {
    if (resumes++ == 0) {
      resumed_at.store(now_ms());
      c.resume_reading();
    }
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    closed_at.store(now_ms());
    reason.store(static_cast<int>(r));
    disconnects++;
  }
};

struct Case {
  bool frame;  // frame_timeout (a partial frame is pending) instead of idle_timeout
  unsigned workers;
  friend void PrintTo(const Case& c, std::ostream* os) {
    *os << (c.frame ? "frame_timeout" : "idle_timeout") << " workers=" << c.workers;
  }
};

class TimeoutAfterResume : public ::testing::TestWithParam<Case> {};

TEST_P(TimeoutAfterResume, NotClosedRightAfterResume) {
  const Case k = GetParam();
  const auto timeout = 1000ms;
  const auto slack = 300ms;  // the sweep runs every 250 ms
  PauseResume h;
  ServerOptions o = loopback_options(1, k.workers);
  o.framing = Framing::line;
  o.socket_send_buffer = 8192;
  o.output_high_watermark = 32 * 1024;
  o.output_low_watermark = 8 * 1024;
  if (k.frame) {
    o.frame_timeout = timeout;
    o.idle_timeout = 0ms;
  } else {
    o.idle_timeout = timeout;
    o.frame_timeout = 0ms;
  }
  Server server(h, o);
  server.start();
  Client c(server.port());
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }));
  // frame: a partial frame follows the pause request (it waits, held, while reading is paused).
  ASSERT_TRUE(c.send_all(k.frame ? "pause\nabc" : "pause\n"));
  ASSERT_TRUE(wait_until([&] { return h.paused_at.load() != 0; }));
  std::this_thread::sleep_for(timeout + 600ms);  // paused for longer than the timeout
  ASSERT_EQ(h.disconnects.load(), 0) << "closed while its reading was paused (reason "
                                     << to_string(static_cast<CloseReason>(h.reason.load())) << ")";
  // Drain the filler: on_output_low resumes reading.
  std::string sink;
  std::thread reader([&] { (void)c.wait_eof(timeout * 4 + 3s, &sink); });
  const bool resumed = wait_until([&] { return h.resumed_at.load() != 0; }, 5s);
  const bool closed = wait_until([&] { return h.disconnects.load() == 1; }, timeout * 3 + 2s);
  reader.join();
  server.stop();

  ASSERT_TRUE(resumed) << "on_output_low never resumed the connection";
  ASSERT_TRUE(closed) << "the connection was never closed by the timeout after the resume";
  const std::int64_t after_resume = h.closed_at.load() - h.resumed_at.load();
  const CloseReason want = k.frame ? CloseReason::frame_timeout : CloseReason::idle;
  std::printf("[timeout_after_resume %s/%s] paused %lld ms, closed %lld ms after the resume as %s\n",
              k.frame ? "frame_timeout" : "idle_timeout", k.workers == 0 ? "inline" : "workers1",
              static_cast<long long>(h.resumed_at.load() - h.paused_at.load()), static_cast<long long>(after_resume),
              to_string(static_cast<CloseReason>(h.reason.load())));
  EXPECT_EQ(h.reason.load(), static_cast<int>(want));
  EXPECT_GE(after_resume, (timeout - slack).count())
      << "closed as " << to_string(static_cast<CloseReason>(h.reason.load())) << " only " << after_resume
      << " ms after resume_reading(); the client had " << timeout.count()
      << " ms from the moment the server read it again";
}

INSTANTIATE_TEST_SUITE_P(Delivery, TimeoutAfterResume,
                         ::testing::Values(Case{false, 0}, Case{false, 1}, Case{true, 0}, Case{true, 1}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return std::string(i.param.frame ? "frame_timeout" : "idle_timeout") +
                                  (i.param.workers == 0 ? "_inline" : "_workers1");
                         });

}  // namespace
}  // namespace esockets::test::delivery

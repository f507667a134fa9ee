// Claim (include/esockets/handler.hpp on_warning, README "at most 10 warnings/s"): warnings are
// rate-limited per shard, about 10 per second reach on_warning, the rest are summed up in a
// "... similar warnings suppressed" message, and stats().total.warnings counts every one.
//
// A burst of clients each sending a line longer than max_frame makes one framing-error warning
// apiece on one shard; after the one-second window one more does, which lets the summary out.
// Fails if the limiter is removed or loosened (more than 10 delivered in the burst's window,
// more than 20 in any second), if suppressed warnings are not counted in stats (delivered +
// suppressed != total.warnings) or are lost from the summary, or if no summary ever comes.
#include <gtest/gtest.h>

#include <mutex>
#include <string>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class WarningLog : public CountingHandler {
 public:
  struct Entry {
    Clock::time_point at;
    std::string text;
  };
  std::mutex mu;
  std::vector<Entry> log;
  void on_warning(std::string_view m) override {
    std::lock_guard lk(mu);
    log.push_back({Clock::now(), std::string(m)});
  }
  std::vector<Entry> snapshot() {
    std::lock_guard lk(mu);
    return log;
  }
};

bool is_summary(const std::string& s) { return s.find("suppressed") != std::string::npos; }

// The count in "... shard 0: 57 similar warnings suppressed".
std::uint64_t suppressed_count(const std::string& s) {
  const std::size_t end = s.find(" similar warnings suppressed");
  if (end == std::string::npos) return 0;
  std::size_t begin = end;
  while (begin > 0 && s[begin - 1] >= '0' && s[begin - 1] <= '9') --begin;
  return begin == end ? 0 : std::stoull(s.substr(begin, end - begin));
}

// One client that sends an over-long line and waits for the server to close it.
void provoke_framing_error(std::uint16_t port) {
  Client c(port);
  ASSERT_TRUE(c.send_all(std::string(64, 'x')));
  EXPECT_NE(c.wait_eof(10s), EofResult::timeout);
}

TEST(WarningRateLimit, TenPerSecondPerShardReachTheHandlerAndStatsCountAll) {
  WarningLog h;
  auto o = loopback_options(1, 0);
  o.framing = Framing::line;
  o.max_frame = 16;
  Server server(h, o);
  server.start();

  const int burst = static_cast<int>(scaled(120, 40));
  const auto t0 = Clock::now();
  for (int i = 0; i < burst; ++i) provoke_framing_error(server.port());
  ASSERT_TRUE(wait_until([&] { return h.reason(CloseReason::framing_error) == burst; }));
  const auto burst_end = Clock::now();
  ASSERT_GE(server.stats().total.warnings, static_cast<std::uint64_t>(burst));

  auto log = h.snapshot();
  ASSERT_FALSE(log.empty()) << "no warning reached on_warning at all";
  int delivered_in_burst = 0;
  for (const auto& e : log) delivered_in_burst += is_summary(e.text) ? 0 : 1;
  if (burst_end - t0 < 900ms) {
    // The whole burst fell into the limiter's first one-second window.
    EXPECT_LE(delivered_in_burst, 10) << "of " << burst << " warnings in "
                                      << (burst_end - t0) / 1ms << " ms";
  }

  // A warning after the window closes releases the summary of what was suppressed.
  const auto window_end = log.front().at + 1100ms;
  ASSERT_TRUE(wait_until([&] { return Clock::now() >= window_end; }, 5s));
  provoke_framing_error(server.port());
  ASSERT_TRUE(wait_until([&] { return h.reason(CloseReason::framing_error) == burst + 1; }));
  EXPECT_TRUE(wait_until([&] {
    for (const auto& e : h.snapshot()) {
      if (is_summary(e.text)) return true;
    }
    return false;
  }, 5s)) << "no 'suppressed' summary after the window";

  log = h.snapshot();
  const std::uint64_t total = server.stats().total.warnings;
  std::uint64_t delivered = 0, suppressed = 0;
  for (const auto& e : log) {
    if (is_summary(e.text)) {
      suppressed += suppressed_count(e.text);
      EXPECT_GT(suppressed_count(e.text), 0u) << e.text;
    } else {
      ++delivered;
    }
  }
  EXPECT_EQ(total, static_cast<std::uint64_t>(burst + 1)) << "one warning per framing error";
  EXPECT_EQ(delivered + suppressed, total) << "every warning is delivered or summed up";
  EXPECT_GE(suppressed, static_cast<std::uint64_t>(burst - 20));
  // Whatever the timing: no second holds more than two windows' worth.
  for (std::size_t i = 0; i < log.size(); ++i) {
    int in_second = 0;
    for (std::size_t j = i; j < log.size() && log[j].at - log[i].at < 1s; ++j) {
      in_second += is_summary(log[j].text) ? 0 : 1;
    }
    EXPECT_LE(in_second, 20) << "warnings in the second after #" << i;
  }
  server.stop();
}

}  // namespace
}  // namespace esockets::test

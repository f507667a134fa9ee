// Fan-out burst: one client of a 200-member room writes 3,000 MSG lines at once; the
// sender's handler fans every line out to all members, half of them on the other shard.
// Every member must receive all 3,000 lines, once each and in order (600,000 deliveries), and
// no send made by the handler may return backpressure (a shard or worker thread queues past
// a full queue; only foreign threads see backpressure).
#include <algorithm>

#include "fanout_support.hpp"

using namespace fanout;
using esockets::test::wait_until;

namespace {

struct BurstCase {
  unsigned workers;
  FanoutKind kind;
  std::size_t queue_capacity;  // ServerOptions::command_queue_capacity; 0 = default
};

std::string case_name(const ::testing::TestParamInfo<BurstCase>& i) {
  return std::string(i.param.workers == 0 ? "inline" : "workers" + std::to_string(i.param.workers)) +
         "_" + to_string(i.param.kind) +
         (i.param.queue_capacity == 0 ? "" : "_queue" + std::to_string(i.param.queue_capacity));
}
void PrintTo(const BurstCase& c, std::ostream* os) { *os << case_name({c, 0}); }

class Burst : public ::testing::TestWithParam<BurstCase> {};

TEST_P(Burst, EveryMemberGetsEveryMessageOnceInOrder) {
  const BurstCase param = GetParam();
  const std::size_t kMembers = 200;
  const std::size_t kMessages = scaled(3000, 400);
  const std::uint64_t want = kMembers * kMessages;

  ServerOptions o = esockets::test::loopback_options(2, param.workers);
  o.framing = esockets::Framing::line;
  if (param.queue_capacity != 0) o.command_queue_capacity = param.queue_capacity;
  ChatHandler h(param.kind);
  Server s(h, o);
  h.attach(s);
  s.start();

  Fleet fleet;
  ASSERT_TRUE(fleet.connect(s.port(), kMembers));
  SeqBook book(kMembers, 1);
  std::atomic<std::size_t> joined{0};
  fleet.start([&](std::size_t i, std::string_view line) {
    if (line.rfind("JOINED ", 0) == 0) {
      joined++;
      return;
    }
    std::string_view room;
    std::uint64_t sender = 0, seq = 0;
    if (!parse_delivery(line, room, sender, seq) || room != "r0") {
      book.garbage(i, line);
      return;
    }
    book.see(i, static_cast<std::size_t>(sender), seq);
  });
  ASSERT_TRUE(wait_until([&] { return h.reg.connects.load() == static_cast<int>(kMembers); }, 20s))
      << "connected: " << h.reg.connects.load();
  {
    const auto st = s.stats();
    ASSERT_EQ(st.shards.size(), 2u);
    const auto lo = std::min(st.shards[0].connections, st.shards[1].connections);
    std::printf("[burst] members per shard: %llu / %llu\n",
                static_cast<unsigned long long>(st.shards[0].connections),
                static_cast<unsigned long long>(st.shards[1].connections));
    ASSERT_GE(lo, kMembers / 10) << "the room must span both shards";
  }
  for (std::size_t i = 0; i < kMembers; ++i) ASSERT_TRUE(fleet.send(i, "JOIN r0\n"));
  ASSERT_TRUE(wait_until([&] { return joined.load() == kMembers; }, 20s)) << "joined " << joined.load();

  // The burst: every line written at once by member 0.
  std::string burst;
  burst.reserve(kMessages * 40);
  for (std::size_t q = 0; q < kMessages; ++q) {
    burst += "MSG r0 0 " + std::to_string(q) + " hello-from-the-burst\n";
  }
  const auto t0 = Clock::now();
  ASSERT_TRUE(fleet.send(0, burst, 30s));
  const ms limit(std::min<long>(20000L * kScale, 90000L));
  const bool complete = wait_progress([&] { return book.delivered() >= want; },
                                      [&] { return book.delivered(); }, limit, 5s);
  const double secs = since_s(t0);
  std::size_t short_members = 0;
  for (std::size_t i = 0; i < kMembers; ++i) {
    if (book.expected(i, 0) != kMessages) ++short_members;
  }
  const auto st = s.stats();
  std::printf("[burst] %s: delivered %llu of %llu in %.2f s (missing %llu, duplicates %llu); "
              "handler sends: %s; stats: send_backpressure=%llu overflow=%llu warnings=%llu\n",
              case_name({param, 0}).c_str(), static_cast<unsigned long long>(book.delivered()),
              static_cast<unsigned long long>(want), secs,
              static_cast<unsigned long long>(book.missing()),
              static_cast<unsigned long long>(book.duplicates()), h.tally.str().c_str(),
              static_cast<unsigned long long>(st.total.send_backpressure),
              static_cast<unsigned long long>(st.total.overflow),
              static_cast<unsigned long long>(st.total.warnings));

  EXPECT_TRUE(complete) << "delivered " << book.delivered() << " of " << want << ": "
                        << (want > book.delivered() ? want - book.delivered() : 0) << " lost";
  EXPECT_EQ(book.missing(), 0u) << "messages skipped (lost) in some member's stream"
                                << book.first_problems();
  EXPECT_EQ(book.duplicates(), 0u) << "duplicated or reordered deliveries" << book.first_problems();
  EXPECT_EQ(book.garbage_count(), 0u) << book.first_problems();
  EXPECT_EQ(short_members, 0u) << "members that did not get all " << kMessages << " messages";
  EXPECT_EQ(h.fanouts.load(), kMessages) << "MSG lines the sender's handler saw";
  EXPECT_EQ(h.tally.backpressure.load(), 0u)
      << "a send from a handler (shard or worker thread) returned backpressure: " << h.tally.str();
  EXPECT_EQ(h.tally.ok.load(), want) << h.tally.str();
  EXPECT_EQ(h.tally.closed.load() + h.tally.slow_consumer.load(), 0u) << h.tally.str();
  EXPECT_EQ(h.reg.disconnects.load(), 0) << "closes during the burst: " << h.reg.reasons_str();
  EXPECT_EQ(h.bad_lines.load(), 0u);

  fleet.stop();
  s.stop();
}

INSTANTIATE_TEST_SUITE_P(Fanout, Burst,
                         ::testing::Values(BurstCase{0, FanoutKind::per_member_send, 0},
                                           BurstCase{0, FanoutKind::group_send_frame, 0},
                                           BurstCase{2, FanoutKind::per_member_send, 0},
                                           BurstCase{2, FanoutKind::group_send_frame, 0},
                                           // Small queues: the same guarantees, reached sooner.
                                           BurstCase{0, FanoutKind::per_member_send, 1024},
                                           BurstCase{2, FanoutKind::per_member_send, 1024},
                                           BurstCase{2, FanoutKind::group_send_frame, 1024}),
                         case_name);

}  // namespace

// Many rooms, everyone talking: 20 rooms x 30 members spread over 2 shards; every member is
// also a sender and writes its numbered messages all at once. Every member must get every
// message of every sender of its room (itself included) exactly once and in each sender's
// order, and nothing from other rooms. No handler send may return backpressure.
#include <algorithm>

#include "fanout_support.hpp"

using namespace fanout;
using esockets::test::wait_until;

namespace {

struct RoomsCase {
  unsigned workers;
  FanoutKind kind;
};

std::string case_name(const ::testing::TestParamInfo<RoomsCase>& i) {
  return std::string(i.param.workers == 0 ? "inline" : "workers" + std::to_string(i.param.workers)) +
         "_" + to_string(i.param.kind);
}

void PrintTo(const RoomsCase& c, std::ostream* os) { *os << case_name({c, 0}); }

class ManyRooms : public ::testing::TestWithParam<RoomsCase> {};

TEST_P(ManyRooms, EveryMemberGetsEverySenderOnceInOrder) {
  const RoomsCase param = GetParam();
  const std::size_t kRooms = 20;
  const std::size_t kPerRoom = 30;
  const std::size_t kClients = kRooms * kPerRoom;
  const std::size_t kMessages = scaled(60, 8);  // per sender
  const std::uint64_t want = kClients * kPerRoom * kMessages;
  auto room_of = [&](std::size_t client) { return client % kRooms; };

  ServerOptions o = esockets::test::loopback_options(2, param.workers);
  o.framing = esockets::Framing::line;
  ChatHandler h(param.kind);
  Server s(h, o);
  h.attach(s);
  s.start();

  Fleet fleet;
  ASSERT_TRUE(fleet.connect(s.port(), kClients));
  SeqBook book(kClients, kClients);
  std::atomic<std::size_t> joined{0};
  std::atomic<std::uint64_t> foreign{0};
  fleet.start([&](std::size_t i, std::string_view line) {
    if (line.rfind("JOINED ", 0) == 0) {
      joined++;
      return;
    }
    std::string_view room;
    std::uint64_t sender = 0, seq = 0;
    if (!parse_delivery(line, room, sender, seq) || sender >= kClients) {
      book.garbage(i, line);
      return;
    }
    const std::string mine = "r" + std::to_string(room_of(i));
    if (room != mine || room_of(static_cast<std::size_t>(sender)) != room_of(i)) {
      foreign++;
      book.garbage(i, line);
      return;
    }
    book.see(i, static_cast<std::size_t>(sender), seq);
  });
  ASSERT_TRUE(wait_until([&] { return h.reg.connects.load() == static_cast<int>(kClients); }, 30s))
      << "connected: " << h.reg.connects.load();
  {
    const auto st = s.stats();
    ASSERT_EQ(st.shards.size(), 2u);
    ASSERT_GE(std::min(st.shards[0].connections, st.shards[1].connections), kClients / 10)
        << "the rooms must span both shards";
  }
  for (std::size_t i = 0; i < kClients; ++i) {
    ASSERT_TRUE(fleet.send(i, "JOIN r" + std::to_string(room_of(i)) + "\n"));
  }
  ASSERT_TRUE(wait_until([&] { return joined.load() == kClients; }, 30s)) << "joined " << joined.load();

  // Every sender's whole batch is prepared first, then written back to back.
  std::vector<std::string> batches(kClients);
  for (std::size_t i = 0; i < kClients; ++i) {
    const std::string prefix = "MSG r" + std::to_string(room_of(i)) + " " + std::to_string(i) + " ";
    for (std::size_t q = 0; q < kMessages; ++q) batches[i] += prefix + std::to_string(q) + " chat\n";
  }
  const auto t0 = Clock::now();
  for (std::size_t i = 0; i < kClients; ++i) ASSERT_TRUE(fleet.send(i, batches[i], 30s));
  const ms limit(std::min<long>(20000L * kScale, 90000L));
  const bool complete = wait_progress([&] { return book.delivered() >= want; },
                                      [&] { return book.delivered(); }, limit, 5s);
  const double secs = since_s(t0);

  std::size_t incomplete_pairs = 0;
  for (std::size_t r = 0; r < kClients; ++r) {
    for (std::size_t snd = room_of(r); snd < kClients; snd += kRooms) {
      if (book.expected(r, snd) != kMessages) ++incomplete_pairs;
    }
  }
  const auto st = s.stats();
  std::printf("[rooms] %s: delivered %llu of %llu in %.2f s (missing %llu, duplicates %llu, "
              "foreign %llu); (receiver, sender) pairs incomplete: %zu of %zu; handler sends: %s; "
              "stats: send_backpressure=%llu overflow=%llu\n",
              case_name({param, 0}).c_str(), static_cast<unsigned long long>(book.delivered()),
              static_cast<unsigned long long>(want), secs,
              static_cast<unsigned long long>(book.missing()),
              static_cast<unsigned long long>(book.duplicates()),
              static_cast<unsigned long long>(foreign.load()), incomplete_pairs,
              kClients * kPerRoom, h.tally.str().c_str(),
              static_cast<unsigned long long>(st.total.send_backpressure),
              static_cast<unsigned long long>(st.total.overflow));

  EXPECT_TRUE(complete) << "delivered " << book.delivered() << " of " << want;
  EXPECT_EQ(book.missing(), 0u) << "lost messages" << book.first_problems();
  EXPECT_EQ(book.duplicates(), 0u) << "duplicated or reordered" << book.first_problems();
  EXPECT_EQ(foreign.load(), 0u) << "messages from another room" << book.first_problems();
  EXPECT_EQ(book.garbage_count(), 0u) << book.first_problems();
  EXPECT_EQ(incomplete_pairs, 0u);
  EXPECT_EQ(h.fanouts.load(), kClients * kMessages);
  EXPECT_EQ(h.tally.backpressure.load(), 0u)
      << "a send from a handler returned backpressure: " << h.tally.str();
  EXPECT_EQ(h.tally.ok.load(), want) << h.tally.str();
  EXPECT_EQ(h.reg.disconnects.load(), 0) << "closes during the run: " << h.reg.reasons_str();

  fleet.stop();
  s.stop();
}

INSTANTIATE_TEST_SUITE_P(Fanout, ManyRooms,
                         ::testing::Values(RoomsCase{0, FanoutKind::per_member_send},
                                           RoomsCase{0, FanoutKind::group_send_frame},
                                           RoomsCase{2, FanoutKind::per_member_send},
                                           RoomsCase{2, FanoutKind::group_send_frame}),
                         case_name);

}  // namespace

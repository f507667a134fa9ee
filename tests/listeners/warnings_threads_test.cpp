// Structured warnings, thread names and CPU pinning, the handler histograms.
//  - A refused connection raises Warning{connection_refused, warning, shard >= 0, text}, counted
//    in stats().total.warnings_by_code; a handler that overrides only on_warning(string_view)
//    still gets the text; a throwing handler raises handler_exception naming its worker (or
//    shard) and the connection; a throwing on_warning harms nothing.
//  - Threads are named esk-shard-N / esk-worker-N / esk-control (also shards added later, and
//    none is left after stop); cpu_affinity pins them (stats and the kernel agree), automatic
//    pins each to an allowed CPU, the default pins nothing.
//  - handler_time and handoff_wait histograms fill (consistently) with workers; inline there
//    is no hand-off to time.
//
// Fails if a warning loses its code, severity, origin or connection, is not counted, the seed's
// string callback goes silent, a thread is misnamed or pinned elsewhere than stats() says, or a
// histogram's buckets disagree with its count.
#include <sched.h>

#include <numeric>
#include <set>
#include <stdexcept>
#include <thread>

#include "listener_support.hpp"

namespace esockets::test {
namespace {

class WarnP : public ::testing::TestWithParam<unsigned> {};  // param: workers

std::string workers_name(const ::testing::TestParamInfo<unsigned>& i) {
  return i.param == 0 ? "inline" : "workers" + std::to_string(i.param);
}

TEST_P(WarnP, RefusedConnectionRaisesAStructuredWarning) {
  SeqHandler h;
  ServerOptions o = line_options(2, GetParam());
  o.max_connections = 1;
  Server server(h, o);
  server.start();
  const std::string addr = "127.0.0.1:" + std::to_string(server.port());
  Sock first = connect_or_fail(addr);
  ASSERT_TRUE(echo_numbered(first, 0, 3, "first client"));
  Sock second = connect_or_fail(addr);
  EXPECT_NE(second.wait_eof(5s), EofResult::timeout);
  ASSERT_TRUE(wait_until([&] { return !h.warnings_of(WarningCode::connection_refused).empty(); }));
  const auto w = h.warnings_of(WarningCode::connection_refused);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].severity, Severity::warning);
  EXPECT_GE(w[0].shard, 0);
  EXPECT_LT(w[0].shard, 2);
  EXPECT_EQ(w[0].worker, -1);
  EXPECT_FALSE(w[0].connection.valid()) << "a refused socket never had an id";
  EXPECT_FALSE(w[0].text.empty());
  EXPECT_NE(w[0].text.find("max_connections"), std::string::npos) << w[0].text;
  EXPECT_STREQ(to_string(w[0].code), "connection_refused");
  EXPECT_STREQ(to_string(w[0].severity), "warning");
  const Stats st = server.stats();
  EXPECT_EQ(st.total.warnings_of(WarningCode::connection_refused), 1u);
  EXPECT_GE(st.total.warnings, 1u);
  std::uint64_t by_shard = 0;
  for (const auto& s : st.shards) by_shard += s.warnings_of(WarningCode::connection_refused);
  EXPECT_EQ(by_shard, 1u) << "the shard that refused counts it";
  EXPECT_EQ(st.total.refused, 1u);
  EXPECT_EQ(h.connects.load(), 1);
  server.stop();
}

// The seed's callback: overriding only on_warning(string_view) still receives every text.
class TextOnlyHandler : public Handler {
 public:
  using Handler::on_warning;
  void on_warning(std::string_view message) override {
    std::lock_guard lk(mu);
    texts.emplace_back(message);
  }
  std::size_t count() {
    std::lock_guard lk(mu);
    return texts.size();
  }
  std::mutex mu;
  std::vector<std::string> texts;
};

TEST_P(WarnP, TextOnlyHandlerStillGetsTheText) {
  TextOnlyHandler h;
  ServerOptions o = loopback_options(1, GetParam());
  o.max_connections = 1;
  Server server(h, o);
  server.start();
  Client a(server.port());
  ASSERT_TRUE(wait_until([&] { return server.client_count() == 1; }));
  Client b(server.port());
  EXPECT_NE(b.wait_eof(5s), EofResult::timeout);
  ASSERT_TRUE(wait_until([&] { return h.count() >= 1; }));
  std::lock_guard lk(h.mu);
  EXPECT_NE(h.texts[0].find("refused"), std::string::npos) << h.texts[0];
  server.stop();
}

TEST_P(WarnP, ThrowingHandlerRaisesHandlerException) {
  SeqHandler h;
  h.throw_on = "boom";
  ServerOptions o = line_options(2, GetParam());
  Server server(h, o);
  server.start();
  Sock s = connect_or_fail("127.0.0.1:" + std::to_string(server.port()));
  ASSERT_TRUE(echo_numbered(s, 0, 3, "before the throw"));
  ASSERT_TRUE(s.send_all("boom\n"));
  EXPECT_NE(s.wait_eof(5s), EofResult::timeout);
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  EXPECT_EQ(h.reason(CloseReason::handler_exception), 1);
  ASSERT_TRUE(wait_until([&] { return !h.warnings_of(WarningCode::handler_exception).empty(); }));
  const auto w = h.warnings_of(WarningCode::handler_exception);
  const auto conns = h.conns();
  ASSERT_EQ(conns.size(), 1u);
  EXPECT_EQ(w[0].connection, conns[0].id) << "the warning names the connection";
  if (GetParam() > 0) {
    EXPECT_GE(w[0].worker, 0);
    EXPECT_LT(w[0].worker, static_cast<int>(GetParam()));
    EXPECT_EQ(w[0].shard, -1);
  } else {
    EXPECT_GE(w[0].shard, 0);
    EXPECT_EQ(w[0].worker, -1);
  }
  EXPECT_NE(w[0].text.find("test handler throws"), std::string::npos) << w[0].text;
  const Stats st = server.stats();
  EXPECT_EQ(st.total.warnings_of(WarningCode::handler_exception), 1u);
  EXPECT_EQ(st.total.closes_by(CloseReason::handler_exception), 1u);
  server.stop();
}

// An on_warning that throws must not take an engine thread down.
class ThrowingWarningHandler : public SeqHandler {
 public:
  void on_warning(const Warning& w) override {
    SeqHandler::on_warning(w);
    throw std::runtime_error("on_warning throws");
  }
};

TEST_P(WarnP, ThrowingOnWarningIsContained) {
  ThrowingWarningHandler h;
  ServerOptions o = line_options(1, GetParam());
  ListenerOptions capped = listener_at("127.0.0.1:0");
  capped.max_connections = 1;
  o.listeners = {capped};
  Server server(h, o);
  server.start();
  const std::string addr = server.listeners()[0].address;
  Sock keep = connect_or_fail(addr);
  ASSERT_TRUE(echo_numbered(keep, 0, 2, "kept client"));
  for (int i = 0; i < 3; ++i) {
    Sock extra = connect_or_fail(addr);
    EXPECT_NE(extra.wait_eof(5s), EofResult::timeout);
  }
  ASSERT_TRUE(wait_until([&] { return h.warnings.load() >= 3; }));
  EXPECT_TRUE(echo_numbered(keep, 2, 5, "kept client after throwing warnings"));
  keep.close();
  ASSERT_TRUE(wait_until([&] { return server.client_count() == 0; }));
  Sock again = connect_or_fail(addr);
  EXPECT_TRUE(echo_numbered(again, 0, 3, "new client"));
  server.stop();
}

INSTANTIATE_TEST_SUITE_P(Modes, WarnP, ::testing::Values(0u, 2u), workers_name);

// ---- threads -----------------------------------------------------------------------------

std::multiset<std::string> esk_names() {
  std::multiset<std::string> s;
  for (const auto& [tid, name] : thread_names()) {
    if (name.rfind("esk-", 0) == 0) s.insert(name);
  }
  return s;
}

TEST(Threads, NamedWhileRunningAndGoneAfterStop) {
  ASSERT_TRUE(esk_names().empty()) << "engine threads left over from an earlier test";
  SeqHandler h;
  Server server(h, line_options(2, 1));
  server.start();
  // Each thread names itself as it begins: give them a moment.
  EXPECT_TRUE(wait_until([&] { return esk_names().size() == 4; }, 5s));
  auto names = esk_names();
  EXPECT_EQ(names.count("esk-shard-0"), 1u);
  EXPECT_EQ(names.count("esk-shard-1"), 1u);
  EXPECT_EQ(names.count("esk-worker-0"), 1u);
  EXPECT_EQ(names.count("esk-control"), 1u);
  EXPECT_EQ(names.size(), 4u);
  server.set_shards(3);
  EXPECT_TRUE(wait_until([&] { return esk_names().count("esk-shard-2") == 1; }))
      << "a shard added by set_shards is named too";
  server.set_shards(2);
  EXPECT_TRUE(wait_until([&] { return esk_names().count("esk-shard-2") == 0; }))
      << "a retired shard's thread is gone";
  server.set_shards(3);  // the index is revived
  EXPECT_TRUE(wait_until([&] { return esk_names().count("esk-shard-2") == 1; }));
  server.stop();
  EXPECT_TRUE(wait_until([&] { return esk_names().empty(); }, 2s))
      << "engine threads still running after stop()";
}

std::map<std::string, pid_t> esk_tids() {
  std::map<std::string, pid_t> m;
  for (const auto& [tid, name] : thread_names()) {
    if (name.rfind("esk-", 0) == 0) m[name] = tid;
  }
  return m;
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> v;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return v;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) v.push_back(c);
  }
  return v;
}

TEST(Threads, PinnedToTheListedCpu) {
  const auto allowed = allowed_cpus();
  ASSERT_FALSE(allowed.empty());
  const int cpu = allowed.front();
  SeqHandler h;
  ServerOptions o = line_options(2, 1);
  o.cpu_affinity.cpus = {cpu};
  Server server(h, o);
  server.start();
  ASSERT_TRUE(wait_until([&] { return esk_tids().size() == 4; }));
  const Stats st = server.stats();
  ASSERT_EQ(st.shards.size(), 2u);
  ASSERT_TRUE(wait_until([&] {
    const Stats s = server.stats();
    return s.shards[0].cpu == cpu && s.shards[1].cpu == cpu && s.worker_cpus.size() == 1 &&
           s.worker_cpus[0] == cpu;
  })) << "stats() report the pinning";
  EXPECT_EQ(server.stats().total.cpu, -1);
  const auto tids = esk_tids();
  for (const char* n : {"esk-shard-0", "esk-shard-1", "esk-worker-0"}) {
    ASSERT_EQ(tids.count(n), 1u) << n;
    EXPECT_EQ(cpus_allowed_list(tids.at(n)), std::to_string(cpu)) << n;
  }
  // Shards added later (new and revived indexes) are pinned as well.
  server.set_shards(3);
  server.set_shards(2);
  server.set_shards(3);
  ASSERT_TRUE(wait_until([&] {
    const Stats s = server.stats();
    return s.shards.size() == 3 && s.shards[2].cpu == cpu;
  })) << "a shard added by set_shards is pinned";
  ASSERT_TRUE(wait_until([&] { return esk_tids().count("esk-shard-2") == 1; }));
  const auto tids2 = esk_tids();
  ASSERT_EQ(tids2.count("esk-shard-2"), 1u);
  // (A revived index reports its previous thread's CPU until the new thread pins itself.)
  EXPECT_TRUE(wait_until([&] { return cpus_allowed_list(tids2.at("esk-shard-2")) == std::to_string(cpu); }))
      << cpus_allowed_list(tids2.at("esk-shard-2"));
  Sock s = connect_or_fail("127.0.0.1:" + std::to_string(server.port()));
  EXPECT_TRUE(echo_numbered(s, 0, 10, "pinned server"));
  server.stop();
}

TEST(Threads, CpuListIsUsedRoundRobin) {
  const auto allowed = allowed_cpus();
  if (allowed.size() < 2) GTEST_SKIP() << "needs two CPUs";
  SeqHandler h;
  ServerOptions o = line_options(2, 1);
  o.cpu_affinity.cpus = {allowed[1], allowed[0]};
  Server server(h, o);
  server.start();
  // Each thread pins itself as it begins (after naming itself), then reports it in stats().
  ASSERT_TRUE(wait_until([&] {
    const Stats s = server.stats();
    return s.worker_cpus.at(0) >= 0 && s.shards[0].cpu >= 0 && s.shards[1].cpu >= 0;
  }));
  const Stats st = server.stats();
  EXPECT_EQ(st.shards[0].cpu, allowed[1]);
  EXPECT_EQ(st.shards[1].cpu, allowed[0]);
  EXPECT_EQ(st.worker_cpus[0], allowed[1]) << "worker j runs on cpus[(shards + j) % size]";
  const auto tids = esk_tids();
  EXPECT_EQ(cpus_allowed_list(tids.at("esk-shard-0")), std::to_string(allowed[1]));
  EXPECT_EQ(cpus_allowed_list(tids.at("esk-shard-1")), std::to_string(allowed[0]));
  server.stop();
}

TEST(Threads, AutomaticPinsEachThreadToAnAllowedCpu) {
  const auto allowed = allowed_cpus();
  SeqHandler h;
  ServerOptions o = line_options(2, 2);
  o.cpu_affinity.automatic = true;
  Server server(h, o);
  server.start();
  ASSERT_TRUE(wait_until([&] {
    const Stats s = server.stats();
    for (const auto& x : s.shards) {
      if (x.cpu < 0) return false;
    }
    for (int c : s.worker_cpus) {
      if (c < 0) return false;
    }
    return s.worker_cpus.size() == 2;
  })) << "automatic pinning left a thread unpinned";
  ASSERT_TRUE(wait_until([&] { return esk_tids().size() == 5; }));
  const Stats st = server.stats();
  for (std::size_t i = 0; i < st.shards.size(); ++i) {
    EXPECT_EQ(st.shards[i].cpu, allowed[i % allowed.size()]) << "shard " << i;
  }
  for (std::size_t j = 0; j < st.worker_cpus.size(); ++j) {
    EXPECT_EQ(st.worker_cpus[j], allowed[(2 + j) % allowed.size()]) << "worker " << j;
  }
  const auto tids = esk_tids();
  EXPECT_EQ(cpus_allowed_list(tids.at("esk-shard-0")), std::to_string(st.shards[0].cpu));
  server.stop();
}

TEST(Threads, DefaultPinsNothing) {
  SeqHandler h;
  Server server(h, line_options(2, 1));
  server.start();
  const std::string process_cpus = cpus_allowed_list(::getpid());
  ASSERT_TRUE(wait_until([&] { return esk_tids().size() == 4; }));
  const Stats st = server.stats();
  for (const auto& s : st.shards) EXPECT_EQ(s.cpu, -1);
  ASSERT_EQ(st.worker_cpus.size(), 1u);
  EXPECT_EQ(st.worker_cpus[0], -1);
  for (const auto& [name, tid] : esk_tids()) {
    EXPECT_EQ(cpus_allowed_list(tid), process_cpus) << name;
  }
  server.stop();
}

// ---- histograms --------------------------------------------------------------------------

void expect_consistent(const DurationHistogram& hist, const char* what) {
  const std::uint64_t sum = std::accumulate(hist.counts.begin(), hist.counts.end(), std::uint64_t{0});
  EXPECT_EQ(sum, hist.count) << what << ": the buckets do not add up to count";
  if (hist.count > 0) {
    EXPECT_GT(hist.sum_ns, 0u) << what;
  }
}

TEST_P(WarnP, HandlerHistograms) {
  SeqHandler h;
  Server server(h, line_options(2, GetParam()));
  server.start();
  std::vector<Sock> socks;
  for (int i = 0; i < 4; ++i) {
    socks.push_back(connect_or_fail("127.0.0.1:" + std::to_string(server.port())));
  }
  for (int round = 0; round < 10; ++round) {
    for (std::size_t i = 0; i < socks.size(); ++i) {
      ASSERT_TRUE(echo_numbered(socks[i], static_cast<std::uint64_t>(round) * 20, 20,
                                "client " + std::to_string(i)));
    }
  }
  // Every callback is a sample candidate (1 in 8): 800 messages give about 100 samples.
  const Stats st = server.stats();
  EXPECT_GT(st.handler_time.count, 0u);
  expect_consistent(st.handler_time, "handler_time");
  expect_consistent(st.handoff_wait, "handoff_wait");
  if (GetParam() > 0) {
    EXPECT_GT(st.handoff_wait.count, 0u) << "workers: events' hand-off is timed";
  } else {
    EXPECT_EQ(st.handoff_wait.count, 0u) << "inline: nothing is handed off";
    EXPECT_EQ(st.handoff_wait.sum_ns, 0u);
  }
  std::printf("[histograms] handler_time count=%llu mean=%.1f us; handoff_wait count=%llu\n",
              static_cast<unsigned long long>(st.handler_time.count),
              st.handler_time.count ? static_cast<double>(st.handler_time.sum_ns) /
                                          static_cast<double>(st.handler_time.count) / 1000.0
                                    : 0.0,
              static_cast<unsigned long long>(st.handoff_wait.count));
  // Counts never go down.
  for (int round = 10; round < 12; ++round) {
    ASSERT_TRUE(echo_numbered(socks[0], static_cast<std::uint64_t>(round) * 20, 20, "client 0"));
  }
  const Stats later = server.stats();
  EXPECT_GE(later.handler_time.count, st.handler_time.count);
  EXPECT_GE(later.handoff_wait.count, st.handoff_wait.count);
  EXPECT_FALSE(later.draining);
  server.drain();
  EXPECT_TRUE(server.draining());
  EXPECT_TRUE(server.stats().draining);
  EXPECT_TRUE(echo_numbered(socks[1], 200, 5, "client 1 while draining")) << "drain() still serves";
  server.stop();
}

}  // namespace
}  // namespace esockets::test

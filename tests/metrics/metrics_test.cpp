// render_metrics and the admin listener (AdminServer).
//
// Rendering: a synthetic Stats (2 shards, closes, warnings, listeners whose addresses hold
// quotes, backslashes and a newline, histograms with counts in several buckets) in both
// formats. The Prometheus text must pass `promtool check metrics` with no complaint; the
// OpenMetrics text must pass promtool's OpenMetrics parser (a backfill run) and a structural
// check of the rules render_metrics implements. Both are parsed back and compared with the
// Stats fields.
//
// AdminServer: fake hooks on 127.0.0.1:0 and on Unix sockets; status codes, content types,
// the head timeout, the connection cap, binding rules and stop().
//
// Fails if a family loses its HELP/TYPE, a counter its _total, a label value its escaping, a
// histogram its cumulative buckets, or the admin listener answers anything the brief does not
// allow (wrong status, blocking, an unbounded number of connections, a stale socket kept).
#include "esockets/metrics.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "ops/admin.hpp"
#include "child_process.hpp"
#include "test_support.hpp"

namespace esockets::test {
namespace {

// ---- a synthetic snapshot ---------------------------------------------------------------

Stats sample_stats() {
  Stats s;
  for (unsigned i = 0; i < 2; ++i) {
    ShardStats sh;
    sh.shard = i;
    sh.connections = 10 + i;
    sh.accepts = 1000 + 7 * i;
    sh.refused = 3 + i;
    sh.accept_errors = i;
    sh.bytes_in = 123456789ull * (i + 1);
    sh.bytes_out = 987654321ull * (i + 1);
    sh.messages_in = 5000 + i;
    sh.messages_out = 6000 + i;
    sh.worker_queue_depth = 4 * i;
    sh.paused = 2 + i;
    sh.output_bytes = 65536 * (i + 1);
    sh.events_per_sec = 12345 + i;
    sh.busy_ratio = i == 0 ? 0.25 : 0.875;
    sh.wakeups = 77 + i;
    sh.send_backpressure = 5 * i;
    sh.overflow = i;
    sh.cpu = i == 0 ? -1 : 3;
    for (std::size_t r = 0; r < kCloseReasonCount; ++r) sh.closes[r] = (r + 1) * (i + 2);
    s.shards.push_back(sh);
  }
  s.shards[1].closes[static_cast<std::size_t>(CloseReason::peer_closed)] = 4242;
  s.total.connections = 21;
  for (std::size_t c = 0; c < kWarningCodeCount; ++c)
    s.total.warnings_by_code[c] = c % 3 == 0 ? 0 : c * 11;
  s.total.warnings_by_code[static_cast<std::size_t>(WarningCode::framing_error)] = 17;
  s.listeners.push_back({"127.0.0.1:9000", 5, 600, 2, 0, 0});
  s.listeners.push_back({"unix:/tmp/we\"ird\\dir/a.sock", 6, 407, 1, 3, 4});
  s.listeners.push_back({"unix:@two\nlines", 0, 1, 0, 0, 0});
  // handler_time: counts in buckets 0, 3, 7 and past the largest bound.
  s.handler_time.counts[0] = 5;
  s.handler_time.counts[3] = 7;
  s.handler_time.counts[7] = 2;
  s.handler_time.counts[DurationHistogram::kBounds] = 1;
  s.handler_time.count = 15;
  s.handler_time.sum_ns = 1234567890;
  s.handoff_wait.counts[1] = 3;
  s.handoff_wait.counts[10] = 4;
  s.handoff_wait.count = 7;
  s.handoff_wait.sum_ns = 4100000;
  s.resizes = 4;
  s.taken_over_out = 11;
  s.taken_over_in = 12;
  s.takeover_ms = 250;
  s.worker_cpus = {2, -1};
  s.draining = true;
  return s;
}

// ---- parsing the text back -----------------------------------------------------------------

struct Sample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;  // unescaped, in order
  std::string value;
  std::string timestamp;
  std::string label(const std::string& n) const {
    for (const auto& [k, v] : labels) {
      if (k == n) return v;
    }
    return "<none>";
  }
};

struct Meta {
  std::string what;  // TYPE, HELP, UNIT
  std::string name;
  std::string text;
};

struct Exposition {
  std::vector<Sample> samples;
  std::vector<Meta> metas;
  std::vector<std::string> lines;  // every line, in order
  std::string error;               // the first parse error, if any
};

bool name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

Exposition parse(const std::string& text) {
  Exposition e;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) {
      e.error = "last line without '\\n'";
      break;
    }
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    e.lines.push_back(line);
    if (line.rfind("# ", 0) == 0) {
      if (line == "# EOF") continue;
      const std::size_t sp1 = line.find(' ', 2);
      const std::size_t sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
      if (sp2 == std::string::npos) {
        if (e.error.empty()) e.error = "bad metadata line: " + line;
        continue;
      }
      e.metas.push_back(
          {line.substr(2, sp1 - 2), line.substr(sp1 + 1, sp2 - sp1 - 1), line.substr(sp2 + 1)});
      continue;
    }
    Sample s;
    std::size_t i = 0;
    while (i < line.size() && name_char(line[i], i == 0)) ++i;
    s.name = line.substr(0, i);
    if (s.name.empty() && e.error.empty()) e.error = "no metric name: " + line;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const std::size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          if (e.error.empty()) e.error = "bad label: " + line;
          break;
        }
        std::string name = line.substr(i, eq - i), value;
        i = eq + 2;
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\' && i + 1 < line.size()) {
            const char n = line[i + 1];
            value += n == 'n' ? '\n' : n;
            i += 2;
          } else {
            value += line[i++];
          }
        }
        ++i;  // the closing quote
        s.labels.emplace_back(name, value);
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') {
      if (e.error.empty()) e.error = "no value: " + line;
      continue;
    }
    const std::string rest = line.substr(i + 1);
    const std::size_t sp = rest.find(' ');
    s.value = rest.substr(0, sp);
    if (sp != std::string::npos) s.timestamp = rest.substr(sp + 1);
    e.samples.push_back(std::move(s));
  }
  return e;
}

// The value of the one sample named `name` whose labels include `want`.
std::string value_of(const Exposition& e, const std::string& name,
                     const std::map<std::string, std::string>& want = {}) {
  std::string found = "<missing>";
  int n = 0;
  for (const Sample& s : e.samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : want) match = match && s.label(k) == v;
    if (match) {
      found = s.value;
      ++n;
    }
  }
  return n > 1 ? "<ambiguous>" : found;
}

std::string u(std::uint64_t v) { return std::to_string(v); }

// Checks the values of `text` against `s` (either format: the sample names are the same).
void expect_values(const std::string& text, const Stats& s, bool om) {
  const Exposition e = parse(text);
  ASSERT_EQ(e.error, "");
  EXPECT_EQ(value_of(e, "esockets_shards"), "2");
  EXPECT_EQ(value_of(e, "esockets_draining"), "1");
  EXPECT_EQ(value_of(e, "esockets_resizes_total"), "4");
  EXPECT_EQ(value_of(e, "esockets_takeover_connections_total", {{"direction", "out"}}), "11");
  EXPECT_EQ(value_of(e, "esockets_takeover_connections_total", {{"direction", "in"}}), "12");
  EXPECT_EQ(value_of(e, "esockets_worker_cpu", {{"worker", "0"}}), "2");
  EXPECT_EQ(value_of(e, "esockets_worker_cpu", {{"worker", "1"}}), "-1");
  EXPECT_EQ(value_of(e, "esockets_accepts_total", {{"shard", "1"}}), u(s.shards[1].accepts));
  EXPECT_EQ(value_of(e, "esockets_accepts_total", {{"shard", "0"}}), u(s.shards[0].accepts));
  EXPECT_EQ(value_of(e, "esockets_connections", {{"shard", "1"}}), "11");
  EXPECT_EQ(value_of(e, "esockets_received_bytes_total", {{"shard", "1"}}),
            u(s.shards[1].bytes_in));
  EXPECT_EQ(value_of(e, "esockets_sent_bytes_total", {{"shard", "0"}}), u(s.shards[0].bytes_out));
  EXPECT_EQ(value_of(e, "esockets_received_messages_total", {{"shard", "1"}}), "5001");
  EXPECT_EQ(value_of(e, "esockets_sent_messages_total", {{"shard", "1"}}), "6001");
  EXPECT_EQ(value_of(e, "esockets_refused_total", {{"shard", "1"}}), "4");
  EXPECT_EQ(value_of(e, "esockets_accept_errors_total", {{"shard", "1"}}), "1");
  EXPECT_EQ(value_of(e, "esockets_worker_queue_depth", {{"shard", "1"}}), "4");
  EXPECT_EQ(value_of(e, "esockets_paused_connections", {{"shard", "0"}}), "2");
  EXPECT_EQ(value_of(e, "esockets_queued_output_bytes", {{"shard", "1"}}), "131072");
  EXPECT_EQ(value_of(e, "esockets_events_per_second", {{"shard", "0"}}), "12345");
  EXPECT_EQ(value_of(e, "esockets_busy_ratio", {{"shard", "1"}}), "0.875");
  EXPECT_EQ(value_of(e, "esockets_wakeups_total", {{"shard", "0"}}), "77");
  EXPECT_EQ(value_of(e, "esockets_send_backpressure_total", {{"shard", "1"}}), "5");
  EXPECT_EQ(value_of(e, "esockets_overflow_commands", {{"shard", "1"}}), "1");
  EXPECT_EQ(value_of(e, "esockets_shard_cpu", {{"shard", "0"}}), "-1");
  EXPECT_EQ(value_of(e, "esockets_shard_cpu", {{"shard", "1"}}), "3");
  EXPECT_EQ(value_of(e, "esockets_closes_total", {{"shard", "1"}, {"reason", "peer_closed"}}),
            "4242");
  EXPECT_EQ(value_of(e, "esockets_closes_total", {{"shard", "0"}, {"reason", "proxy_timeout"}}),
            u(s.shards[0].closes_by(CloseReason::proxy_timeout)));
  // Every reason of every shard, every warning code (zeros too).
  std::size_t closes = 0, warnings = 0;
  std::set<std::string> reasons, codes;
  for (const Sample& x : e.samples) {
    if (x.name == "esockets_closes_total") ++closes, reasons.insert(x.label("reason"));
    if (x.name == "esockets_warnings_total") ++warnings, codes.insert(x.label("code"));
  }
  EXPECT_EQ(closes, 2 * kCloseReasonCount);
  EXPECT_EQ(reasons.size(), kCloseReasonCount);
  EXPECT_EQ(warnings, kWarningCodeCount);
  EXPECT_EQ(codes.size(), kWarningCodeCount);
  EXPECT_EQ(value_of(e, "esockets_warnings_total", {{"code", "framing_error"}}), "17");
  EXPECT_EQ(value_of(e, "esockets_warnings_total", {{"code", "accept_failed"}}), "0");
  // Listener labels come back exactly, quotes, backslashes and newline included.
  EXPECT_EQ(value_of(e, "esockets_listener_accepts_total", {{"listener", s.listeners[1].address}}),
            "407");
  EXPECT_EQ(
      value_of(e, "esockets_listener_proxy_timeouts_total", {{"listener", s.listeners[1].address}}),
      "4");
  EXPECT_EQ(
      value_of(e, "esockets_listener_proxy_errors_total", {{"listener", s.listeners[1].address}}),
      "3");
  EXPECT_EQ(value_of(e, "esockets_listener_connections", {{"listener", s.listeners[2].address}}),
            "0");
  EXPECT_EQ(value_of(e, "esockets_listener_refused_total", {{"listener", "127.0.0.1:9000"}}), "2");
  EXPECT_NE(text.find(R"(listener="unix:/tmp/we\"ird\\dir/a.sock")"), std::string::npos);
  EXPECT_NE(text.find(R"(listener="unix:@two\nlines")"), std::string::npos);

  // Histograms: cumulative buckets, +Inf = count, _sum in seconds.
  for (const auto& [name, h] :
       {std::pair{std::string("esockets_handler_duration_seconds"), &s.handler_time},
        std::pair{std::string("esockets_handoff_wait_seconds"), &s.handoff_wait}}) {
    std::vector<const Sample*> buckets;
    for (const Sample& x : e.samples) {
      if (x.name == name + "_bucket") buckets.push_back(&x);
    }
    ASSERT_EQ(buckets.size(), DurationHistogram::kBounds + 1) << name;
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < DurationHistogram::kBounds; ++i) {
      cumulative += h->counts[i];
      EXPECT_EQ(buckets[i]->value, u(cumulative)) << name << " bucket " << i;
      EXPECT_EQ(std::strtod(buckets[i]->label("le").c_str(), nullptr),
                DurationHistogram::bound_seconds(i));
    }
    EXPECT_EQ(buckets.back()->label("le"), "+Inf");
    EXPECT_EQ(buckets.back()->value, u(h->count));
    EXPECT_EQ(value_of(e, name + "_count"), u(h->count));
    EXPECT_EQ(std::strtod(value_of(e, name + "_sum").c_str(), nullptr),
              static_cast<double>(h->sum_ns) / 1e9);
  }
  // Go's float spelling in le (shortest digits, exponent below 1e-4); OpenMetrics' canonical
  // form is the same for these bounds (none is an integer).
  (void)om;
  EXPECT_EQ(value_of(e, "esockets_handler_duration_seconds_bucket", {{"le", "4e-06"}}), "5");
  EXPECT_EQ(value_of(e, "esockets_handler_duration_seconds_bucket", {{"le", "8e-06"}}), "12");
  EXPECT_EQ(value_of(e, "esockets_handler_duration_seconds_bucket", {{"le", "6.4e-05"}}), "12");
  EXPECT_EQ(value_of(e, "esockets_handler_duration_seconds_bucket", {{"le", "0.000128"}}), "14");
  EXPECT_EQ(value_of(e, "esockets_handler_duration_seconds_bucket", {{"le", "1e-06"}}), "5");
  EXPECT_EQ(value_of(e, "esockets_handler_duration_seconds_bucket", {{"le", "0.524288"}}), "14");
  EXPECT_EQ(value_of(e, "esockets_handler_duration_seconds_sum"), "1.23456789");
}

// The OpenMetrics rules render_metrics implements, checked on its output: metadata before
// samples (TYPE, UNIT, HELP in that order, each once), every family with HELP and TYPE, unique
// family names, no interleaving, sample names by type (counter: _total; histogram: _bucket with
// le ascending and cumulative, ending at +Inf = _count, and _sum), unique label sets, UNIT a
// suffix of the name, no '\r', and "# EOF\n" as the last line.
void check_openmetrics_structure(const std::string& text) {
  ASSERT_GE(text.size(), 6u);
  EXPECT_EQ(text.substr(text.size() - 6), "# EOF\n");
  EXPECT_EQ(text.find("# EOF"), text.size() - 6) << "# EOF must be last and only once";
  EXPECT_EQ(text.find('\r'), std::string::npos);
  const Exposition e = parse(text);
  ASSERT_EQ(e.error, "");

  struct Family {
    std::string type;
    bool help = false, unit = false;
    std::string unit_text;
  };
  std::map<std::string, Family> families;
  std::string current;      // family whose lines we are in
  bool in_samples = false;  // past its metadata
  std::set<std::string> series;
  std::string last_hist_series;  // labels (without le) of the histogram point being read
  double last_le = -1;
  std::uint64_t last_bucket = 0;
  bool saw_inf = false;
  std::map<std::string, std::string> counts;  // histogram: +Inf value per family
  for (const std::string& line : e.lines) {
    if (line == "# EOF") continue;
    if (line.rfind("# ", 0) == 0) {
      const std::size_t sp1 = line.find(' ', 2), sp2 = line.find(' ', sp1 + 1);
      const std::string what = line.substr(2, sp1 - 2), name = line.substr(sp1 + 1, sp2 - sp1 - 1);
      const std::string rest = line.substr(sp2 + 1);
      if (name != current) {
        ASSERT_EQ(families.count(name), 0u) << "family " << name << " appears twice";
        ASSERT_EQ(what, "TYPE") << "TYPE must come first: " << line;
        current = name;
        in_samples = false;
      }
      ASSERT_FALSE(in_samples) << "metadata after samples: " << line;
      Family& f = families[name];
      if (what == "TYPE") {
        ASSERT_TRUE(f.type.empty()) << line;
        ASSERT_TRUE(rest == "counter" || rest == "gauge" || rest == "histogram") << line;
        EXPECT_FALSE(name.size() > 6 && name.substr(name.size() - 6) == "_total") << line;
        f.type = rest;
      } else if (what == "UNIT") {
        ASSERT_FALSE(f.unit || f.help) << "UNIT once, before HELP: " << line;
        f.unit = true;
        ASSERT_GT(name.size(), rest.size() + 1);
        EXPECT_EQ(name.substr(name.size() - rest.size() - 1), "_" + rest) << line;
      } else if (what == "HELP") {
        ASSERT_FALSE(f.help) << line;
        EXPECT_FALSE(rest.empty()) << line;
        f.help = true;
      } else {
        FAIL() << "unknown metadata: " << line;
      }
      continue;
    }
    ASSERT_FALSE(current.empty()) << "sample before any TYPE: " << line;
    const Family& f = families[current];
    ASSERT_TRUE(f.help) << "family " << current << " without HELP";
    in_samples = true;
    const Exposition one = parse(line + "\n");
    ASSERT_EQ(one.samples.size(), 1u) << line;
    const Sample& s = one.samples[0];
    std::string suffix;
    ASSERT_EQ(s.name.rfind(current, 0), 0u) << "sample " << s.name << " inside family " << current;
    suffix = s.name.substr(current.size());
    std::string key = s.name + "{";
    for (const auto& [k, v] : s.labels) key += k + "=" + v + ",";
    EXPECT_TRUE(series.insert(key).second) << "duplicate series " << key;
    if (f.type == "gauge") {
      EXPECT_EQ(suffix, "") << line;
    } else if (f.type == "counter") {
      EXPECT_EQ(suffix, "_total") << line;
      EXPECT_EQ(s.value.find_first_not_of("0123456789"), std::string::npos) << line;
    } else {
      ASSERT_TRUE(suffix == "_bucket" || suffix == "_sum" || suffix == "_count") << line;
      std::string labels = current + "|";  // a histogram point: family and labels but le
      for (const auto& [k, v] : s.labels) {
        if (k != "le") labels += k + "=" + v + ",";
      }
      if (suffix == "_bucket") {
        const std::string le = s.label("le");
        ASSERT_NE(le, "<none>") << line;
        if (labels != last_hist_series || saw_inf) {
          ASSERT_FALSE(saw_inf && labels == last_hist_series) << "bucket after +Inf: " << line;
          last_hist_series = labels;
          last_le = -1;
          last_bucket = 0;
          saw_inf = false;
        }
        // Canonical: "+Inf", or a float with a '.' or an exponent.
        EXPECT_TRUE(le == "+Inf" || le.find_first_of(".e") != std::string::npos) << line;
        const double v = le == "+Inf" ? HUGE_VAL : std::strtod(le.c_str(), nullptr);
        EXPECT_GT(v, last_le) << "le not ascending: " << line;
        last_le = v;
        const std::uint64_t b = std::strtoull(s.value.c_str(), nullptr, 10);
        EXPECT_GE(b, last_bucket) << "buckets not cumulative: " << line;
        last_bucket = b;
        if (le == "+Inf") {
          saw_inf = true;
          counts[labels] = s.value;
        }
      } else if (suffix == "_count") {
        EXPECT_EQ(counts[labels], s.value) << "+Inf bucket != _count: " << line;
      }
    }
  }
  for (const auto& [name, f] : families) {
    EXPECT_TRUE(f.help) << name;
    EXPECT_FALSE(f.type.empty()) << name;
  }
}

// Prometheus 0.0.4: every family has HELP then TYPE, counters are named with _total.
void check_prometheus_structure(const std::string& text) {
  const Exposition e = parse(text);
  ASSERT_EQ(e.error, "");
  EXPECT_EQ(text.find("# EOF"), std::string::npos);
  std::map<std::string, std::string> types;
  std::set<std::string> helps;
  for (const Meta& m : e.metas) {
    if (m.what == "HELP") helps.insert(m.name);
    if (m.what == "TYPE") {
      EXPECT_TRUE(helps.count(m.name)) << "TYPE before HELP for " << m.name;
      types[m.name] = m.text;
      if (m.text == "counter") {
        EXPECT_EQ(m.name.substr(m.name.size() - 6), "_total") << m.name;
      }
    }
  }
  EXPECT_EQ(helps.size(), types.size());
  for (const Sample& s : e.samples) {
    std::string family = s.name;
    for (const char* sfx : {"_bucket", "_sum", "_count"}) {
      const std::string x = sfx;
      if (!types.count(family) && family.size() > x.size() &&
          family.substr(family.size() - x.size()) == x) {
        family = family.substr(0, family.size() - x.size());
      }
    }
    EXPECT_TRUE(types.count(family)) << "sample without TYPE: " << s.name;
  }
}

std::string temp_path(const char* what) {
  return "/tmp/esockets-metrics-test-" + std::to_string(::getpid()) + "-" + what;
}

void write_file(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(std::fwrite(text.data(), 1, text.size(), f), text.size());
  std::fclose(f);
}

// promtool must be there: the test fails (it does not skip) without it.
void require_promtool() {
  const CommandResult v = run_command("promtool --version", 30);
  ASSERT_EQ(v.code, 0) << "promtool is missing (Debian package 'prometheus', installed by "
                          "tools/install-deps.sh): "
                       << v.output;
}

// `promtool check metrics` on the Prometheus text: exit 0 and nothing printed.
void promtool_check(const std::string& text, const char* tag) {
  require_promtool();
  const std::string path = temp_path(tag);
  write_file(path, text);
  const CommandResult r = run_command("promtool check metrics < " + shell_quote(path), 60);
  ::unlink(path.c_str());
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output, "") << "promtool complained:\n" << r.output;
}

// promtool's OpenMetrics parser (from `promtool tsdb create-blocks-from openmetrics`, which
// wants a timestamp on every sample: one is appended to each, nothing else changes).
void promtool_openmetrics(const std::string& text, const char* tag) {
  require_promtool();
  std::string stamped;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.rfind('#', 0) != 0) line += " 1700000000";
    stamped += line + "\n";
  }
  const std::string path = temp_path(tag), dir = path + "-tsdb";
  write_file(path, stamped);
  const CommandResult r = run_command(
      "promtool tsdb create-blocks-from openmetrics " + shell_quote(path) + " " + shell_quote(dir),
      60);
  ::unlink(path.c_str());
  run_command("rm -rf " + shell_quote(dir), 30);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output.find("rror"), std::string::npos) << r.output;
}

TEST(MetricsRender, PrometheusTextPassesPromtoolAndRoundTrips) {
  const Stats s = sample_stats();
  const std::string text = render_metrics(s, MetricsFormat::prometheus);
  check_prometheus_structure(text);
  expect_values(text, s, false);
  promtool_check(text, "prom");
  EXPECT_NE(text.find("# TYPE esockets_accepts_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE esockets_handler_duration_seconds histogram\n"), std::string::npos);
  EXPECT_NE(text.find("esockets_handler_duration_seconds_bucket{le=\"+Inf\"} 15\n"),
            std::string::npos);
}

TEST(MetricsRender, OpenMetricsTextFollowsTheSpecAndRoundTrips) {
  const Stats s = sample_stats();
  const std::string text = render_metrics(s, MetricsFormat::openmetrics);
  check_openmetrics_structure(text);
  expect_values(text, s, true);
  promtool_openmetrics(text, "om");
  EXPECT_NE(text.find("# TYPE esockets_accepts counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE esockets_received_bytes counter\n# UNIT esockets_received_bytes "
                      "bytes\n# HELP esockets_received_bytes "),
            std::string::npos);
  EXPECT_NE(text.find("# UNIT esockets_handler_duration_seconds seconds\n"), std::string::npos);
}

TEST(MetricsRender, EmptyAndIdleSnapshotsAreValid) {
  // No shards, listeners or workers: families without samples, histograms of zeros.
  const Stats empty;
  const std::string prom = render_metrics(empty);
  check_prometheus_structure(prom);
  promtool_check(prom, "empty-prom");
  const std::string om = render_metrics(empty, MetricsFormat::openmetrics);
  check_openmetrics_structure(om);
  promtool_openmetrics(om, "empty-om");
  EXPECT_NE(prom.find("esockets_handler_duration_seconds_sum 0\n"), std::string::npos);
}

TEST(MetricsRender, LabelValuesAreEscapedAndUtf8) {
  Stats s;
  s.listeners.push_back({"unix:/a\\b\"c\nd\xff\xc3\xa9", 1, 2, 0, 0, 0});
  for (const MetricsFormat f : {MetricsFormat::prometheus, MetricsFormat::openmetrics}) {
    const std::string text = render_metrics(s, f);
    // \\, \", \n escaped; an invalid byte (0xff) replaced by U+FFFD; valid UTF-8 (é) kept.
    EXPECT_NE(text.find("listener=\"unix:/a\\\\b\\\"c\\nd\xef\xbf\xbd\xc3\xa9\"} 2\n"),
              std::string::npos)
        << text;
  }
}

TEST(MetricsRender, PrefixIsValidated) {
  const Stats s = sample_stats();
  for (const char* bad : {"", "1abc", "a-b", "a b", "a:b", "é"}) {
    try {
      render_metrics(s, MetricsFormat::prometheus, bad);
      ADD_FAILURE() << "prefix '" << bad << "' accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos)
          << e.what();
    }
  }
  const std::string text = render_metrics(s, MetricsFormat::prometheus, "my_app9");
  EXPECT_EQ(text.find("esockets_"), std::string::npos);
  EXPECT_NE(text.find("my_app9_accepts_total{shard=\"1\"} 1007\n"), std::string::npos);
  promtool_check(text, "prefix");
  EXPECT_NO_THROW(render_metrics(s, MetricsFormat::openmetrics, "_x"));
}

TEST(MetricsRender, ContentTypes) {
  EXPECT_STREQ(content_type(MetricsFormat::prometheus), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_STREQ(content_type(MetricsFormat::openmetrics),
               "application/openmetrics-text; version=1.0.0; charset=utf-8");
}

// ---- the admin listener -----------------------------------------------------------------

using detail::AdminServer;

// A raw client socket (TCP to 127.0.0.1, or Unix), non-blocking, every wait bounded.
class Raw {
 public:
  // rcvbuf: SO_RCVBUF before connecting (0: the default), to make the server's writes partial.
  explicit Raw(std::uint16_t port, int rcvbuf = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    ::fcntl(fd_, F_SETFL, O_NONBLOCK);
  }
  explicit Raw(const std::string& unix_address) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::string path = unix_address.substr(5);  // after "unix:"
    socklen_t len = sizeof sa;
    if (path[0] == '@') {
      std::memcpy(sa.sun_path + 1, path.data() + 1, path.size() - 1);
      len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
    } else {
      std::memcpy(sa.sun_path, path.data(), path.size());
    }
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&sa), len) == 0;
    ::fcntl(fd_, F_SETFL, O_NONBLOCK);
  }
  ~Raw() {
    if (fd_ >= 0) ::close(fd_);
  }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;

  bool connected() const { return connected_; }

  bool send(std::string_view data, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = Clock::now() + timeout;
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
      if (Clock::now() >= deadline) return false;
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, 10);
    }
    return true;
  }

  // Reads until EOF (true) or `timeout` (false); `out` gets what arrived. A reset counts as EOF.
  bool read_to_eof(std::string& out, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = Clock::now() + timeout;
    char buf[16384];
    while (true) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0) {
        out.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) return true;
      if (errno != EAGAIN && errno != EINTR) return true;
      const auto left = deadline - Clock::now();
      if (left <= 0s) return false;
      pollfd p{fd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count()));
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

std::string_view trim_ws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string raw;
  bool eof = false;
};

Response parse_response(const std::string& raw, bool eof) {
  Response r;
  r.raw = raw;
  r.eof = eof;
  const std::size_t end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos) return r;
  r.status = std::atoi(raw.c_str() + 9);
  std::size_t pos = raw.find("\r\n") + 2;
  while (pos < end) {
    const std::size_t nl = raw.find("\r\n", pos);
    const std::string line = raw.substr(pos, nl - pos);
    const std::size_t colon = line.find(':');
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers[name] = std::string(trim_ws(line.substr(colon + 1)));
    pos = nl + 2;
  }
  r.body = raw.substr(end + 4);
  return r;
}

Response exchange(Raw& c, std::string_view request, std::chrono::milliseconds timeout = 5s) {
  std::string raw;
  if (!c.send(request)) return Response{};
  const bool eof = c.read_to_eof(raw, timeout);
  return parse_response(raw, eof);
}

Response get(std::uint16_t port, std::string_view request) {
  Raw c(port);
  return exchange(c, request);
}

struct FakeHooks {
  std::atomic<bool> draining{false};
  std::atomic<int> metrics_calls{0};
  std::atomic<int> last_format{-1};
  AdminServer::Hooks hooks(std::chrono::milliseconds head_timeout = 5000ms) {
    AdminServer::Hooks h;
    h.metrics = [this](MetricsFormat f) {
      metrics_calls++;
      last_format = static_cast<int>(f);
      return f == MetricsFormat::openmetrics ? std::string("# TYPE x gauge\nx 1\n# EOF\n")
                                             : std::string("# TYPE x gauge\nx 1\n");
    };
    h.draining = [this] { return draining.load(); };
    h.head_timeout = head_timeout;
    return h;
  }
};

void expect_closed_response(const Response& r) {
  EXPECT_TRUE(r.eof) << r.raw;
  EXPECT_EQ(r.headers.count("content-length"), 1u) << r.raw;
  if (r.headers.count("content-length")) {
    EXPECT_EQ(r.headers.at("content-length"), std::to_string(r.body.size())) << r.raw;
  }
  EXPECT_EQ(r.headers.count("connection") ? r.headers.at("connection") : "", "close") << r.raw;
}

TEST(AdminServerTest, MetricsByAcceptHeader) {
  FakeHooks fake;
  AdminServer admin("127.0.0.1:0", fake.hooks());
  admin.start();
  ASSERT_NE(admin.port(), 0);
  EXPECT_EQ(admin.address(), "127.0.0.1:" + std::to_string(admin.port()));

  Response r = get(admin.port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.headers["content-type"], content_type(MetricsFormat::prometheus));
  EXPECT_EQ(r.body, "# TYPE x gauge\nx 1\n");
  expect_closed_response(r);

  // What Prometheus sends when it prefers OpenMetrics.
  r = get(admin.port(),
          "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;"
          "version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;"
          "version=0.0.4;q=0.5,*/*;q=0.1\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.headers["content-type"], content_type(MetricsFormat::openmetrics));
  EXPECT_EQ(r.body, "# TYPE x gauge\nx 1\n# EOF\n");
  expect_closed_response(r);

  // Header names are case-insensitive; q=0 refuses a type; a query string is ignored.
  r = get(admin.port(),
          "GET /metrics?x=1 HTTP/1.0\r\naccept: Application/OpenMetrics-Text\r\n\r\n");
  EXPECT_EQ(r.headers["content-type"], content_type(MetricsFormat::openmetrics)) << r.raw;
  r = get(admin.port(),
          "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; q=0, text/plain\r\n\r\n");
  EXPECT_EQ(r.headers["content-type"], content_type(MetricsFormat::prometheus)) << r.raw;

  // HEAD: the headers of GET, no body.
  r = get(admin.port(), "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.headers["content-length"], "19");
  EXPECT_EQ(r.body, "");
  EXPECT_TRUE(r.eof);
  EXPECT_EQ(fake.metrics_calls.load(), 5);

  // Bare LF line ends are accepted, and empty lines before the request line ignored.
  r = get(admin.port(), "\r\nGET /metrics HTTP/1.1\nHost: x\n\n");
  EXPECT_EQ(r.status, 200) << r.raw;
  admin.stop();
}

TEST(AdminServerTest, HealthFollowsDraining) {
  FakeHooks fake;
  AdminServer admin("127.0.0.1:0", fake.hooks());
  admin.start();
  Response r = get(admin.port(), "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body, "ok\n");
  expect_closed_response(r);
  fake.draining = true;
  r = get(admin.port(), "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 503) << r.raw;
  EXPECT_EQ(r.body, "draining\n");
  expect_closed_response(r);
  r = get(admin.port(), "HEAD /health HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.status, 503) << r.raw;
  EXPECT_EQ(r.body, "");
}

TEST(AdminServerTest, ErrorStatuses) {
  FakeHooks fake;
  AdminServer admin("127.0.0.1:0", fake.hooks());
  admin.start();
  Response r = get(admin.port(), "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 404) << r.raw;
  expect_closed_response(r);

  r = get(admin.port(), "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(r.status, 405) << r.raw;
  EXPECT_EQ(r.headers["allow"], "GET, HEAD");
  expect_closed_response(r);
  r = get(admin.port(), "DELETE /health HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.status, 405) << r.raw;

  for (const char* bad :
       {"garbage\r\n\r\n", "GET /metrics\r\n\r\n", "GET  /metrics HTTP/1.1\r\n\r\n",
        "GET metrics HTTP/1.1\r\n\r\n", "GET /metrics HTTP/1.1\r\nNo colon\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nBad name: x\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", "G(T /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1x\r\n\r\n"}) {
    r = get(admin.port(), bad);
    EXPECT_EQ(r.status, 400) << bad << " -> " << r.raw;
    expect_closed_response(r);
  }
  r = get(admin.port(), "GET /metrics HTTP/2.0\r\n\r\n");
  EXPECT_EQ(r.status, 505) << r.raw;

  // A 9 KiB head: 431, read whole by the client although the server stopped reading at 8 KiB.
  const std::string big =
      "GET /metrics HTTP/1.1\r\nX-Big: " + std::string(9 * 1024, 'a') + "\r\n\r\n";
  r = get(admin.port(), big);
  EXPECT_EQ(r.status, 431) << r.raw.substr(0, 200);
  expect_closed_response(r);
  // Just under the limit is served.
  const std::string fits =
      "GET /health HTTP/1.1\r\nX-Big: " + std::string(8192 - 50, 'a') + "\r\n\r\n";
  ASSERT_LE(fits.size(), 8192u);
  r = get(admin.port(), fits);
  EXPECT_EQ(r.status, 200) << r.raw.substr(0, 200);
  EXPECT_EQ(fake.metrics_calls.load(), 0);
}

TEST(AdminServerTest, LargeBodyToASlowReaderDoesNotBlockOthers) {
  // 4 MiB of metrics to a client with a small receive buffer that reads nothing at first: the
  // server's writes are partial and wait for EPOLLOUT while other clients are answered.
  std::string big(4 << 20, 'm');
  for (std::size_t i = 0; i < big.size(); i += 4096)
    big[i] = static_cast<char>('a' + (i / 4096) % 26);
  AdminServer::Hooks h;
  h.metrics = [&big](MetricsFormat) { return big; };
  AdminServer admin("127.0.0.1:0", h);
  admin.start();
  Raw slow(admin.port(), 4096);
  ASSERT_TRUE(slow.send("GET /metrics HTTP/1.1\r\n\r\n"));
  std::this_thread::sleep_for(100ms);
  const auto start = Clock::now();
  const Response health = get(admin.port(), "GET /health HTTP/1.1\r\n\r\n");
  EXPECT_EQ(health.status, 200) << health.raw;
  EXPECT_LT(Clock::now() - start, 2s);
  std::string raw;
  ASSERT_TRUE(slow.read_to_eof(raw, 20s));
  Response r = parse_response(raw, true);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["content-length"], std::to_string(big.size()));
  EXPECT_TRUE(r.body == big) << "body of " << r.body.size() << " bytes differs";
}

TEST(AdminServerTest, HookExceptionIs500) {
  AdminServer::Hooks h;
  h.metrics = [](MetricsFormat) -> std::string { throw std::runtime_error("boom"); };
  AdminServer admin("127.0.0.1:0", h);  // no draining hook: healthy
  admin.start();
  Response r = get(admin.port(), "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.status, 500) << r.raw;
  expect_closed_response(r);
  r = get(admin.port(), "GET /health HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r.raw;
}

TEST(AdminServerTest, SlowClientIsClosedAfterTheHeadTimeout) {
  FakeHooks fake;
  AdminServer admin("127.0.0.1:0", fake.hooks(300ms));
  admin.start();
  Raw partial(admin.port()), silent(admin.port());
  ASSERT_TRUE(partial.connected() && silent.connected());
  const auto start = Clock::now();
  ASSERT_TRUE(partial.send("GET /metrics HTTP/1.1\r\nHost: x\r\n"));
  std::string got;
  EXPECT_TRUE(partial.read_to_eof(got, 5s));
  const auto waited = Clock::now() - start;
  EXPECT_EQ(got, "");
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 3s);
  EXPECT_TRUE(silent.read_to_eof(got, 5s));
  EXPECT_EQ(got, "");
  EXPECT_EQ(fake.metrics_calls.load(), 0);
  // A complete request after the others timed out is still served.
  EXPECT_EQ(get(admin.port(), "GET /health HTTP/1.1\r\n\r\n").status, 200);
}

TEST(AdminServerTest, AtMost64ConnectionsAtOnce) {
  FakeHooks fake;
  AdminServer admin("127.0.0.1:0", fake.hooks(20s));
  admin.start();
  std::vector<std::unique_ptr<Raw>> clients;
  for (int i = 0; i < 64; ++i) {
    clients.push_back(std::make_unique<Raw>(admin.port()));
    ASSERT_TRUE(clients.back()->connected()) << i;
  }
  // Accepted in order: the 65th finds every slot taken and is closed at once.
  Raw extra(admin.port());
  ASSERT_TRUE(extra.connected());
  std::string got;
  const auto start = Clock::now();
  EXPECT_TRUE(extra.read_to_eof(got, 5s));
  EXPECT_LT(Clock::now() - start, 3s);
  EXPECT_EQ(got, "");
  // The first 64 are still served.
  for (auto& c : clients) ASSERT_TRUE(c->send("GET /health HTTP/1.1\r\n\r\n"));
  int ok = 0;
  for (auto& c : clients) {
    std::string raw;
    const bool eof = c->read_to_eof(raw, 5s);
    const Response r = parse_response(raw, eof);
    ok += r.status == 200 && r.body == "ok\n" ? 1 : 0;
  }
  EXPECT_EQ(ok, 64);
  clients.clear();
  // Slots are freed: new clients are served again.
  EXPECT_TRUE(wait_until(
      [&] { return get(admin.port(), "GET /health HTTP/1.1\r\n\r\n").status == 200; }, 5s));
}

TEST(AdminServerTest, UnixSockets) {
  FakeHooks fake;
  const std::string path = "/tmp/esockets-admin-" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  {
    AdminServer admin("unix:" + path, fake.hooks());
    admin.start();
    EXPECT_EQ(admin.address(), "unix:" + path);
    EXPECT_EQ(admin.port(), 0);
    Raw c("unix:" + path);
    ASSERT_TRUE(c.connected());
    const Response r = exchange(c, "GET /health HTTP/1.1\r\n\r\n");
    EXPECT_EQ(r.status, 200) << r.raw;
    expect_closed_response(r);
    // A live socket is not taken over.
    EXPECT_THROW(AdminServer("unix:" + path, fake.hooks()), std::system_error);
    Raw again("unix:" + path);
    EXPECT_EQ(exchange(again, "GET /health HTTP/1.1\r\n\r\n").status, 200);
  }
  struct stat st {};
  EXPECT_NE(::lstat(path.c_str(), &st), 0) << "the socket file is removed at stop";

  // A stale socket file (its listener is gone) is replaced.
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path.data(), path.size());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ::close(fd);
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    AdminServer admin("unix:" + path, fake.hooks());
    admin.start();
    Raw c("unix:" + path);
    EXPECT_EQ(exchange(c, "GET /health HTTP/1.1\r\n\r\n").status, 200);
  }
  // A file that is not a socket is never removed.
  {
    write_file(path, "precious");
    try {
      AdminServer admin("unix:" + path, fake.hooks());
      ADD_FAILURE() << "bound over a regular file";
    } catch (const std::system_error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    ::unlink(path.c_str());
  }
  // An abstract name.
  {
    const std::string name = "unix:@esockets-admin-" + std::to_string(::getpid());
    AdminServer admin(name, fake.hooks());
    admin.start();
    EXPECT_EQ(admin.address(), name);
    Raw c(name);
    ASSERT_TRUE(c.connected());
    EXPECT_EQ(exchange(c, "GET /health HTTP/1.1\r\n\r\n").status, 200);
  }
}

TEST(AdminServerTest, BadAddressThrowsNamingIt) {
  FakeHooks fake;
  for (const char* bad : {"localhost:9100", "127.0.0.1", "127.0.0.1:99999", "unix:", "[::1:9100"}) {
    try {
      AdminServer admin(bad, fake.hooks());
      ADD_FAILURE() << bad << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  // A taken port: std::system_error naming the address.
  AdminServer first("127.0.0.1:0", fake.hooks());
  const std::string taken = first.address();
  try {
    AdminServer second(taken, fake.hooks());
    ADD_FAILURE() << "bound twice";
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find(taken), std::string::npos) << e.what();
  }
}

TEST(AdminServerTest, StopIsPromptAndIdempotent) {
  FakeHooks fake;
  const std::size_t fds = open_fd_count();
  std::uint16_t port = 0;
  {
    AdminServer admin("127.0.0.1:0", fake.hooks());
    admin.start();
    admin.start();  // no second thread
    port = admin.port();
    Raw idle(port), partial(port);
    ASSERT_TRUE(partial.send("GET /health HTTP/1.1\r\n"));
    ASSERT_EQ(get(port, "GET /health HTTP/1.1\r\n\r\n").status, 200);
    const auto start = Clock::now();
    admin.stop();
    EXPECT_LT(Clock::now() - start, 1s);
    admin.stop();
    EXPECT_THROW(admin.start(), std::logic_error);
    // Its clients were closed and nothing listens any more.
    std::string got;
    EXPECT_TRUE(idle.read_to_eof(got, 2s));
    EXPECT_TRUE(partial.read_to_eof(got, 2s));
    Raw after(port);
    EXPECT_FALSE(after.connected());
  }
  {
    AdminServer never_started("127.0.0.1:0", fake.hooks());
    never_started.stop();
  }
  { AdminServer destroyed_unstarted("127.0.0.1:0", fake.hooks()); }
  {
    AdminServer destroyed_running("127.0.0.1:0", fake.hooks());
    destroyed_running.start();
  }
  EXPECT_EQ(open_fd_count(), fds);
}

}  // namespace
}  // namespace esockets::test

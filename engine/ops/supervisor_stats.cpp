// The Supervisor's stats plumbing: encoding a child's report, and summing reports.
// Thread: any (pure functions of their arguments).
#include "ops/supervisor_stats.hpp"

#include "esockets/supervisor.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace esockets::detail {

namespace {

constexpr std::uint32_t kMagic = 0x45534b52;  // "ESKR"
constexpr std::uint32_t kVersion = 2;  // 2: takeover counters

static_assert(std::is_trivially_copyable_v<ShardStats>);
static_assert(std::is_trivially_copyable_v<DurationHistogram>);
static_assert(std::is_trivially_copyable_v<Imbalance>);

struct Header {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint32_t shard_size;  // sizeof(ShardStats): a mismatch is refused, not misread
  std::uint32_t shards;
  std::uint32_t listeners;
  std::uint32_t workers;
  std::uint64_t resizes;
  std::uint8_t final;
  std::uint8_t draining;
  std::uint8_t handed_over;
  std::uint8_t pad[5];
};

template <typename T>
void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

class Cursor {
 public:
  explicit Cursor(std::string_view b) : b_(b) {}
  template <typename T>
  bool get(T& v) {
    if (b_.size() - pos_ < sizeof v) return false;
    std::memcpy(&v, b_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return true;
  }
  bool get(std::string& s, std::size_t n) {
    if (b_.size() - pos_ < n) return false;
    s.assign(b_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == b_.size(); }

 private:
  std::string_view b_;
  std::size_t pos_ = 0;
};

void add_counters(ShardStats& to, const ShardStats& x) {
  to.accepts += x.accepts;
  to.refused += x.refused;
  to.accept_errors += x.accept_errors;
  to.bytes_in += x.bytes_in;
  to.bytes_out += x.bytes_out;
  to.messages_in += x.messages_in;
  to.messages_out += x.messages_out;
  to.warnings += x.warnings;
  to.wakeups += x.wakeups;
  to.send_backpressure += x.send_backpressure;
  for (std::size_t r = 0; r < kCloseReasonCount; ++r) to.closes[r] += x.closes[r];
  for (std::size_t c = 0; c < kWarningCodeCount; ++c) to.warnings_by_code[c] += x.warnings_by_code[c];
}

void add_gauges(ShardStats& to, const ShardStats& x) {
  to.connections += x.connections;
  to.worker_queue_depth += x.worker_queue_depth;
  to.paused += x.paused;
  to.output_bytes += x.output_bytes;
  to.events_per_sec += x.events_per_sec;
  to.overflow += x.overflow;
}

void clear_gauges(ShardStats& s) {
  s.connections = 0;
  s.worker_queue_depth = 0;
  s.paused = 0;
  s.output_bytes = 0;
  s.events_per_sec = 0;
  s.overflow = 0;
  s.busy_ratio = 0;
}

void add_histogram(DurationHistogram& to, const DurationHistogram& x) {
  for (std::size_t i = 0; i < to.counts.size(); ++i) to.counts[i] += x.counts[i];
  to.count += x.count;
  to.sum_ns += x.sum_ns;
}

}  // namespace

std::string encode_report(const Stats& s, bool final, bool handed_over) {
  std::string out;
  out.reserve(sizeof(Header) + (s.shards.size() + 1) * sizeof(ShardStats) + 512);
  Header h{};
  h.magic = kMagic;
  h.version = kVersion;
  h.shard_size = sizeof(ShardStats);
  h.shards = static_cast<std::uint32_t>(s.shards.size());
  h.listeners = static_cast<std::uint32_t>(s.listeners.size());
  h.workers = static_cast<std::uint32_t>(s.worker_cpus.size());
  h.resizes = s.resizes;
  h.final = final ? 1 : 0;
  h.draining = s.draining ? 1 : 0;
  h.handed_over = handed_over ? 1 : 0;
  put(out, h);
  for (const ShardStats& x : s.shards) put(out, x);
  put(out, s.total);
  put(out, s.imbalance);
  put(out, s.handler_time);
  put(out, s.handoff_wait);
  put(out, s.taken_over_out);
  put(out, s.taken_over_in);
  put(out, s.takeover_ms);
  for (int cpu : s.worker_cpus) put(out, cpu);
  for (const ListenerStats& l : s.listeners) {
    put(out, static_cast<std::uint32_t>(l.address.size()));
    out += l.address;
    put(out, l.connections);
    put(out, l.accepts);
    put(out, l.refused);
    put(out, l.proxy_errors);
    put(out, l.proxy_timeouts);
  }
  return out;
}

std::optional<Report> decode_report(std::string_view bytes) {
  Cursor c(bytes);
  Header h{};
  if (!c.get(h) || h.magic != kMagic || h.version != kVersion || h.shard_size != sizeof(ShardStats)) {
    return std::nullopt;
  }
  // A bound on what one Server reports (254 shards, 255 workers, 64 listeners) before sizing.
  if (h.shards > 4096 || h.listeners > 4096 || h.workers > 4096) return std::nullopt;
  Report r;
  r.final = h.final != 0;
  r.handed_over = h.handed_over != 0;
  r.stats.draining = h.draining != 0;
  r.stats.resizes = h.resizes;
  r.stats.shards.resize(h.shards);
  for (ShardStats& x : r.stats.shards) {
    if (!c.get(x)) return std::nullopt;
  }
  if (!c.get(r.stats.total) || !c.get(r.stats.imbalance) || !c.get(r.stats.handler_time) ||
      !c.get(r.stats.handoff_wait) || !c.get(r.stats.taken_over_out) ||
      !c.get(r.stats.taken_over_in) || !c.get(r.stats.takeover_ms)) {
    return std::nullopt;
  }
  r.stats.worker_cpus.resize(h.workers);
  for (int& cpu : r.stats.worker_cpus) {
    if (!c.get(cpu)) return std::nullopt;
  }
  r.stats.listeners.resize(h.listeners);
  for (ListenerStats& l : r.stats.listeners) {
    std::uint32_t n = 0;
    if (!c.get(n) || !c.get(l.address, n) || !c.get(l.connections) || !c.get(l.accepts) ||
        !c.get(l.refused) || !c.get(l.proxy_errors) || !c.get(l.proxy_timeouts)) {
      return std::nullopt;
    }
  }
  if (!c.done()) return std::nullopt;
  return r;
}

Stats counters_only(const Stats& s) {
  Stats out = s;
  out.shards.clear();
  out.worker_cpus.clear();
  out.imbalance = {};
  out.draining = false;
  clear_gauges(out.total);
  for (ListenerStats& l : out.listeners) l.connections = 0;
  return out;
}

void accumulate(Stats& into, const Stats& s, unsigned& next_shard) {
  for (const ShardStats& x : s.shards) {
    into.shards.push_back(x);
    into.shards.back().shard = next_shard++;
  }
  add_counters(into.total, s.total);
  add_gauges(into.total, s.total);
  for (const ListenerStats& l : s.listeners) {
    ListenerStats* to = nullptr;
    for (ListenerStats& have : into.listeners) {
      if (have.address == l.address) to = &have;
    }
    if (to == nullptr) {
      into.listeners.push_back(ListenerStats{l.address});
      to = &into.listeners.back();
    }
    to->connections += l.connections;
    to->accepts += l.accepts;
    to->refused += l.refused;
    to->proxy_errors += l.proxy_errors;
    to->proxy_timeouts += l.proxy_timeouts;
  }
  add_histogram(into.handler_time, s.handler_time);
  add_histogram(into.handoff_wait, s.handoff_wait);
  into.resizes += s.resizes;
  into.taken_over_out += s.taken_over_out;
  into.taken_over_in += s.taken_over_in;
  into.takeover_ms = std::max(into.takeover_ms, s.takeover_ms);  // the slowest transfer
  into.worker_cpus.insert(into.worker_cpus.end(), s.worker_cpus.begin(), s.worker_cpus.end());
  into.draining = into.draining || s.draining;
}

void finish_sum(Stats& st) {
  st.total.cpu = -1;
  st.total.shard = 0;
  st.total.busy_ratio = 0;
  st.imbalance = {};
  summarize_shards(st);
}

void summarize_shards(Stats& st) {
  if (st.shards.empty()) return;
  double busy_sum = 0;
  for (const auto& x : st.shards) busy_sum += x.busy_ratio;
  st.total.busy_ratio = busy_sum / static_cast<double>(st.shards.size());
  auto imbalance = [&](auto get) {
    double mx = 0, sum = 0;
    for (const auto& x : st.shards) {
      const double v = static_cast<double>(get(x));
      mx = v > mx ? v : mx;
      sum += v;
    }
    const double mean = sum / static_cast<double>(st.shards.size());
    return mean > 0 ? mx / mean : 1.0;
  };
  st.imbalance.connections = imbalance([](const ShardStats& x) { return x.connections; });
  st.imbalance.accepts = imbalance([](const ShardStats& x) { return x.accepts; });
  st.imbalance.events_per_sec = imbalance([](const ShardStats& x) { return x.events_per_sec; });
  st.imbalance.busy_ratio = imbalance([](const ShardStats& x) { return x.busy_ratio; });
}

}  // namespace esockets::detail

// --- the supervisor's metrics: the totals, then one family per process gauge/counter ---

namespace esockets {

std::string render_metrics(const SupervisorStats& s, MetricsFormat format, std::string_view prefix) {
  std::string out = render_metrics(s.total, format, prefix);  // also checks the prefix
  const bool om = format == MetricsFormat::openmetrics;
  constexpr std::string_view kEof = "# EOF\n";
  if (om && out.size() >= kEof.size() && out.compare(out.size() - kEof.size(), kEof.size(), kEof) == 0) {
    out.resize(out.size() - kEof.size());
  }
  auto family = [&](std::string_view name, bool counter, std::string_view help, auto field) {
    std::string full = std::string(prefix) + "_process_" + std::string(name);
    const std::string sample = counter ? full + "_total" : full;
    const std::string& meta = counter && !om ? sample : full;
    const char* type = counter ? "counter" : "gauge";
    if (om) {
      out += "# TYPE " + meta + " " + type + "\n# HELP " + meta + " " + std::string(help) + "\n";
    } else {
      out += "# HELP " + meta + " " + std::string(help) + "\n# TYPE " + meta + " " + type + "\n";
    }
    for (const ProcessStats& p : s.processes) {
      out += sample + "{process=\"" + std::to_string(p.process) + "\"} " +
             std::to_string(static_cast<std::uint64_t>(field(p))) + "\n";
    }
  };
  family("up", false, "1 while the process of this slot runs and has reported, else 0.",
         [](const ProcessStats& p) { return p.pid > 0 && p.ready ? 1 : 0; });
  family("restarts", true, "Times the process of this slot was restarted.",
         [](const ProcessStats& p) { return p.restarts; });
  family("connections", false, "Connections the process of this slot has open now.",
         [](const ProcessStats& p) { return p.stats.total.connections; });
  family("received_messages", true, "Messages delivered to on_message_recv in this slot.",
         [](const ProcessStats& p) { return p.stats.total.messages_in; });
  family("sent_messages", true, "Sends accepted into output queues in this slot.",
         [](const ProcessStats& p) { return p.stats.total.messages_out; });
  family("received_bytes", true, "Bytes read from clients in this slot.",
         [](const ProcessStats& p) { return p.stats.total.bytes_in; });
  family("sent_bytes", true, "Bytes written to clients in this slot.",
         [](const ProcessStats& p) { return p.stats.total.bytes_out; });
  if (om) out += kEof;
  return out;
}

}  // namespace esockets

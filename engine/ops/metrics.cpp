// render_metrics: a Stats snapshot as Prometheus text 0.0.4 or OpenMetrics 1.0.0.
// Thread: any (pure functions of the snapshot given).
#include "esockets/metrics.hpp"

#include <charconv>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>

namespace esockets {

namespace {

enum class Kind : std::uint8_t { counter, gauge, histogram };

struct Label {
  std::string_view name;
  std::string_view value;
};

// A number as text in a caller's buffer (label values "0", "1", ... of shards and workers).
struct Decimal {
  explicit Decimal(std::uint64_t v) {
    len = static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, v).ptr - buf);
  }
  std::string_view view() const { return {buf, len}; }
  char buf[24];
  std::size_t len;
};

// Go's strconv.FormatFloat(v, 'g', -1, 64), which both formats are defined against: the
// shortest digits that round-trip, in exponent form below 1e-4 and from 1e6 on. With
// `canonical`, ".0" is appended to an integer (OpenMetrics' canonical le values: "1.0").
void append_float(std::string& out, double v, bool canonical) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[64];
  const auto sci = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const std::string_view s(buf, static_cast<std::size_t>(sci.ptr - buf));
  int exp = 0;
  const std::size_t e = s.find('e');
  const char* digits = s.data() + e + 1;
  if (*digits == '+') ++digits;  // from_chars takes '-' but not '+'
  std::from_chars(digits, s.data() + s.size(), exp);
  if (exp < -4 || exp >= 6) {
    out += s;  // already "1e-06", "1.5e+07": Go's spelling (two exponent digits at least)
    return;
  }
  const auto fixed = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  const std::string_view f(buf, static_cast<std::size_t>(fixed.ptr - buf));
  out += f;
  if (canonical && f.find('.') == std::string_view::npos) out += ".0";
}

void append_uint(std::string& out, std::uint64_t v) { out += Decimal(v).view(); }

// Appends `s` escaped as a label value (both formats: \\, \", \n), or as HELP text
// (Prometheus: \\ and \n only). Bytes that are not valid UTF-8 become U+FFFD, since both
// formats require UTF-8 and a Unix path may hold anything.
void append_escaped(std::string& out, std::string_view s, bool quote) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c == '\\') {
        out += "\\\\";
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '"' && quote) {
        out += "\\\"";
      } else {
        out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    // Length and smallest code point of the sequence a lead byte starts (0: not a lead byte).
    std::size_t n = 0;
    std::uint32_t cp = 0, min = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 2, cp = c & 0x1Fu, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3, cp = c & 0x0Fu, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4, cp = c & 0x07u, min = 0x10000;
    }
    bool ok = n != 0 && i + n <= s.size();
    for (std::size_t k = 1; ok && k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc & 0xC0u) == 0x80u;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    ok = ok && cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (ok) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
}

// Writes families one after another: metadata first, then their samples, never interleaved.
class Writer {
 public:
  Writer(MetricsFormat format, std::string_view prefix, std::string& out)
      : om_(format == MetricsFormat::openmetrics), prefix_(prefix), out_(out) {}

  // Starts the family `<prefix>_<name>`: `name` without "_total" (added to a counter's
  // samples, and to its family name in the Prometheus format). `unit`, when given, is the
  // name's suffix ("bytes", "seconds"): OpenMetrics states it in a # UNIT line.
  void family(std::string_view name, Kind kind, std::string_view help, std::string_view unit = {}) {
    name_ = name;
    kind_ = kind;
    const char* type = kind == Kind::counter ? "counter"
                       : kind == Kind::gauge ? "gauge"
                                             : "histogram";
    const bool total_in_name = kind == Kind::counter && !om_;
    if (om_) {
      meta("TYPE", total_in_name);
      out_ += type;
      out_ += '\n';
      if (!unit.empty()) {
        meta("UNIT", false);
        out_ += unit;
        out_ += '\n';
      }
      meta("HELP", false);
      append_escaped(out_, help, true);
      out_ += '\n';
    } else {
      meta("HELP", total_in_name);
      append_escaped(out_, help, false);
      out_ += '\n';
      meta("TYPE", total_in_name);
      out_ += type;
      out_ += '\n';
    }
  }

  // One sample of the current family (a counter's gets "_total").
  void value(std::initializer_list<Label> labels, std::uint64_t v) {
    series(kind_ == Kind::counter ? "_total" : "", labels, {});
    append_uint(out_, v);
    out_ += '\n';
  }
  void value(std::initializer_list<Label> labels, std::int64_t v) {
    series("", labels, {});
    if (v < 0) {
      out_ += '-';
      append_uint(out_, static_cast<std::uint64_t>(-(v + 1)) + 1);
    } else {
      append_uint(out_, static_cast<std::uint64_t>(v));
    }
    out_ += '\n';
  }
  void value(std::initializer_list<Label> labels, double v) {
    series("", labels, {});
    append_float(out_, v, false);
    out_ += '\n';
  }

  // The samples of a histogram family without labels: cumulative buckets in seconds, +Inf,
  // _sum and _count.
  void histogram(const DurationHistogram& h) {
    std::uint64_t cumulative = 0;
    std::string le;
    for (std::size_t i = 0; i < DurationHistogram::kBounds; ++i) {
      cumulative += h.counts[i];
      le.clear();
      append_float(le, DurationHistogram::bound_seconds(i), om_);
      series("_bucket", {}, Label{"le", le});
      append_uint(out_, cumulative);
      out_ += '\n';
    }
    // The last bucket holds what is longer than the largest bound; +Inf is every observation.
    series("_bucket", {}, Label{"le", "+Inf"});
    append_uint(out_, h.count);
    out_ += '\n';
    series("_sum", {}, {});
    append_float(out_, static_cast<double>(h.sum_ns) / 1e9, false);
    out_ += '\n';
    series("_count", {}, {});
    append_uint(out_, h.count);
    out_ += '\n';
  }

  void end() {
    if (om_) out_ += "# EOF\n";
  }

 private:
  void meta(const char* what, bool total) {
    out_ += "# ";
    out_ += what;
    out_ += ' ';
    name(total ? "_total" : "");
    out_ += ' ';
  }
  void name(std::string_view suffix) {
    out_ += prefix_;
    out_ += '_';
    out_ += name_;
    out_ += suffix;
  }
  void series(std::string_view suffix, std::initializer_list<Label> labels, Label extra) {
    name(suffix);
    if (labels.size() != 0 || !extra.name.empty()) {
      out_ += '{';
      bool first = true;
      auto put = [&](const Label& l) {
        if (!first) out_ += ',';
        first = false;
        out_ += l.name;
        out_ += "=\"";
        append_escaped(out_, l.value, true);
        out_ += '"';
      };
      for (const Label& l : labels) put(l);
      if (!extra.name.empty()) put(extra);
      out_ += '}';
    }
    out_ += ' ';
  }

  bool om_;
  std::string_view prefix_;
  std::string& out_;
  std::string_view name_;
  Kind kind_ = Kind::gauge;
};

bool valid_prefix(std::string_view p) {
  if (p.empty()) return false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// One per-shard family: a member of ShardStats per shard, labelled shard="N".
template <typename Field>
void per_shard(Writer& w, const Stats& s, std::string_view name, Kind kind, std::string_view help,
               Field field, std::string_view unit = {}) {
  w.family(name, kind, help, unit);
  for (const ShardStats& sh : s.shards) {
    const Decimal shard(sh.shard);
    w.value({{"shard", shard.view()}}, field(sh));
  }
}

template <typename Field>
void per_listener(Writer& w, const Stats& s, std::string_view name, Kind kind,
                  std::string_view help, Field field) {
  w.family(name, kind, help);
  for (const ListenerStats& l : s.listeners) w.value({{"listener", l.address}}, field(l));
}

}  // namespace

const char* content_type(MetricsFormat format) noexcept {
  return format == MetricsFormat::openmetrics
             ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
             : "text/plain; version=0.0.4; charset=utf-8";
}

std::string render_metrics(const Stats& s, MetricsFormat format, std::string_view prefix) {
  if (!valid_prefix(prefix)) {
    throw std::invalid_argument("esockets: metrics prefix '" + std::string(prefix) +
                                "' is not a metric name: use [a-zA-Z_][a-zA-Z0-9_]*");
  }
  std::string out;
  out.reserve(6144 + s.shards.size() * 3072 + s.listeners.size() * 768);
  Writer w(format, prefix, out);
  using U = std::uint64_t;
  using I = std::int64_t;

  w.family("shards", Kind::gauge, "Shards running now.");
  w.value({}, static_cast<U>(s.shards.size()));
  w.family("draining", Kind::gauge, "1 once Server::drain() or stop() began, else 0.");
  w.value({}, static_cast<U>(s.draining ? 1 : 0));
  w.family("resizes", Kind::counter, "set_shards() calls that changed the shard count.");
  w.value({}, s.resizes);
  w.family("takeover_connections", Kind::counter,
           "Connections handed to a new process (direction=out) or received from an old one "
           "(direction=in) by a takeover.");
  w.value({{"direction", "out"}}, s.taken_over_out);
  w.value({{"direction", "in"}}, s.taken_over_in);
  w.family("takeover_last_duration_seconds", Kind::gauge,
           "How long the last takeover's transfer took (0 if none).", "seconds");
  w.value({}, s.takeover_ms / 1000.0);
  w.family("worker_cpu", Kind::gauge, "The CPU a worker thread is pinned to, or -1.");
  for (std::size_t i = 0; i < s.worker_cpus.size(); ++i) {
    const Decimal worker(i);
    w.value({{"worker", worker.view()}}, static_cast<I>(s.worker_cpus[i]));
  }

  per_shard(w, s, "connections", Kind::gauge, "Connections open now.",
            [](const ShardStats& x) { return x.connections; });
  per_shard(w, s, "accepts", Kind::counter, "Connections accepted, refused ones included.",
            [](const ShardStats& x) { return x.accepts; });
  per_shard(w, s, "refused", Kind::counter,
            "Connections closed at once: over max_connections or refused by the handler.",
            [](const ShardStats& x) { return x.refused; });
  per_shard(w, s, "accept_errors", Kind::counter, "accept() failures (EMFILE, ENFILE, ...).",
            [](const ShardStats& x) { return x.accept_errors; });
  per_shard(
      w, s, "received_bytes", Kind::counter, "Bytes read from clients.",
      [](const ShardStats& x) { return x.bytes_in; }, "bytes");
  per_shard(
      w, s, "sent_bytes", Kind::counter, "Bytes written to clients.",
      [](const ShardStats& x) { return x.bytes_out; }, "bytes");
  per_shard(w, s, "received_messages", Kind::counter, "Messages delivered to on_message_recv.",
            [](const ShardStats& x) { return x.messages_in; });
  per_shard(w, s, "sent_messages", Kind::counter, "Sends accepted into output queues.",
            [](const ShardStats& x) { return x.messages_out; });
  per_shard(
      w, s, "queued_output_bytes", Kind::gauge, "Bytes queued for sending.",
      [](const ShardStats& x) { return x.output_bytes; }, "bytes");
  per_shard(w, s, "paused_connections", Kind::gauge,
            "Connections not being read (paused by the user or by flow control).",
            [](const ShardStats& x) { return x.paused; });
  per_shard(w, s, "worker_queue_depth", Kind::gauge,
            "Events waiting in the shard's queues to the workers.",
            [](const ShardStats& x) { return x.worker_queue_depth; });
  per_shard(w, s, "events_per_second", Kind::gauge, "Epoll events handled in the last second.",
            [](const ShardStats& x) { return x.events_per_sec; });
  per_shard(w, s, "busy_ratio", Kind::gauge,
            "Share of the last second the shard spent outside epoll_wait (0 to 1).",
            [](const ShardStats& x) { return x.busy_ratio; });
  per_shard(w, s, "wakeups", Kind::counter, "Times another thread woke the shard from epoll_wait.",
            [](const ShardStats& x) { return x.wakeups; });
  per_shard(w, s, "send_backpressure", Kind::counter,
            "Calls into the shard refused with SendStatus::backpressure (a full command queue).",
            [](const ShardStats& x) { return x.send_backpressure; });
  per_shard(w, s, "overflow_commands", Kind::gauge,
            "Commands to other shards waiting for room in the target's queue.",
            [](const ShardStats& x) { return x.overflow; });
  per_shard(w, s, "shard_cpu", Kind::gauge, "The CPU the shard's thread is pinned to, or -1.",
            [](const ShardStats& x) { return static_cast<I>(x.cpu); });

  w.family("closes", Kind::counter, "Connections closed, by CloseReason.");
  for (const ShardStats& sh : s.shards) {
    const Decimal shard(sh.shard);
    for (std::size_t r = 0; r < kCloseReasonCount; ++r) {
      w.value({{"shard", shard.view()}, {"reason", to_string(static_cast<CloseReason>(r))}},
              sh.closes[r]);
    }
  }
  w.family("warnings", Kind::counter,
           "Warnings raised, by WarningCode (rate-limited ones included).");
  for (std::size_t c = 0; c < kWarningCodeCount; ++c) {
    w.value({{"code", to_string(static_cast<WarningCode>(c))}}, s.total.warnings_by_code[c]);
  }

  per_listener(w, s, "listener_connections", Kind::gauge, "Connections of the listener open now.",
               [](const ListenerStats& l) { return l.connections; });
  per_listener(w, s, "listener_accepts", Kind::counter,
               "Connections the listener accepted, refused ones included.",
               [](const ListenerStats& l) { return l.accepts; });
  per_listener(w, s, "listener_refused", Kind::counter,
               "Connections refused by admission (server or listener max_connections).",
               [](const ListenerStats& l) { return l.refused; });
  per_listener(w, s, "listener_proxy_errors", Kind::counter,
               "Connections closed for a missing, malformed or untrusted PROXY header.",
               [](const ListenerStats& l) { return l.proxy_errors; });
  per_listener(w, s, "listener_proxy_timeouts", Kind::counter,
               "Connections closed for a PROXY header that came too late.",
               [](const ListenerStats& l) { return l.proxy_timeouts; });

  w.family("handler_duration_seconds", Kind::histogram,
           "Time spent in handler callbacks, on every handler thread.", "seconds");
  w.histogram(s.handler_time);
  w.family("handoff_wait_seconds", Kind::histogram,
           "Time events waited in the shard-to-worker queues.", "seconds");
  w.histogram(s.handoff_wait);
  w.end();
  return out;
}

}  // namespace esockets

// fanout_report: samples, medians and ratios of fanout_bench, printed as markdown tables and
// written as JSON.
// Thread: main thread only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "fanout_room.hpp"

namespace fanout {

/// One throughput run of one case (configuration, publisher, variant, payload).
struct Sample {
  std::string config;
  Publisher publisher;
  Variant variant;
  std::size_t payload;
  unsigned rep;
  std::uint64_t messages = 0;
  double seconds = 0;
  double deliveries_per_sec = 0;
  // CPU the server spent per delivery: the process's CPU minus the client threads (reader, and
  // the publishing client in handler mode; a thread publisher's fan-out counts as server work).
  double server_cpu_ns = 0;
  std::uint64_t backpressure_retries = 0;
};
/// One memory sample (one child process).
struct MemSample {
  Publisher publisher;
  Variant variant;
  std::size_t payload;
  unsigned rep;
  long rss_before_kb = 0;
  long rss_after_kb = 0;
  std::uint64_t deliveries = 0;  // K x members
  std::uint64_t queued_bytes = 0;  // stats().total.output_bytes once it stopped growing
  double per_delivery() const {
    return static_cast<double>(rss_after_kb - rss_before_kb) * 1024.0 /
           static_cast<double>(deliveries);
  }
  double queued_deliveries(std::size_t payload_size) const {
    return static_cast<double>(queued_bytes) / static_cast<double>(payload_size);
  }
  double per_queued() const {
    const double q = queued_deliveries(payload);
    return q > 0 ? static_cast<double>(rss_after_kb - rss_before_kb) * 1024.0 / q : 0;
  }
};

// Messages per member for a memory sample: --mem-messages, and at least 64 KiB per member so
// small payloads are not all absorbed by the kernel's socket buffers (~12 KB per connection).
inline std::size_t mem_messages_for(const Options& o, std::size_t payload) {
  return std::max<std::size_t>(o.mem_messages, (64 * 1024) / payload);
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 == 1 ? v[h] : (v[h - 1] + v[h]) / 2;
}

inline std::string human(double x) {
  char b[32];
  if (x >= 1e6) {
    std::snprintf(b, sizeof b, "%.2f M", x / 1e6);
  } else if (x >= 1e3) {
    std::snprintf(b, sizeof b, "%.1f k", x / 1e3);
  } else {
    std::snprintf(b, sizeof b, "%.0f", x);
  }
  return b;
}

/// Medians of one case over the reps, multicast against send.
struct Row {
  std::string config;
  Publisher publisher;
  std::size_t payload;
  double multicast = 0, send = 0, ratio = 0;  // deliveries/s
  double multicast_cpu = 0, send_cpu = 0;      // server CPU ns per delivery
  std::vector<double> ratios;                  // deliveries/s, per rep (same setup)
};

inline std::vector<Row> summarize(const Options& o, const std::vector<Sample>& samples) {
  std::vector<Row> rows;
  for (unsigned sh : o.shards) {
    for (unsigned w : o.workers) {
      const std::string cfg = Config{sh, w}.name();
      for (std::size_t payload : o.payloads) {
        for (Publisher p : o.publishers) {
          Row r;
          r.config = cfg;
          r.publisher = p;
          r.payload = payload;
          std::vector<double> a, b, ac, bc;
          std::map<unsigned, std::pair<double, double>> by_rep;
          for (const Sample& s : samples) {
            if (s.config != cfg || s.publisher != p || s.payload != payload) continue;
            (s.variant == Variant::multicast ? a : b).push_back(s.deliveries_per_sec);
            (s.variant == Variant::multicast ? ac : bc).push_back(s.server_cpu_ns);
            (s.variant == Variant::multicast ? by_rep[s.rep].first : by_rep[s.rep].second) =
                s.deliveries_per_sec;
          }
          if (a.empty() || b.empty()) continue;
          r.multicast = median(a);
          r.send = median(b);
          r.ratio = r.multicast / r.send;
          r.multicast_cpu = median(ac);
          r.send_cpu = median(bc);
          for (const auto& [rep, ab] : by_rep) r.ratios.push_back(ab.first / ab.second);
          rows.push_back(r);
        }
      }
    }
  }
  return rows;
}

/// Medians of one memory case.
struct MemRow {
  Publisher publisher;
  std::size_t payload;
  double multicast = 0, send = 0;           // B per delivery (K x members)
  double multicast_q = 0, send_q = 0;       // B per queued delivery (output_bytes / payload)
  double multicast_share = 0, send_share = 0;  // queued / published deliveries
};

inline std::vector<MemRow> summarize_memory(const Options& o,
                                            const std::vector<MemSample>& ms) {
  std::vector<MemRow> rows;
  for (std::size_t payload : o.mem_payloads) {
    for (Publisher p : o.publishers) {
      MemRow r;
      r.publisher = p;
      r.payload = payload;
      std::vector<double> a, b, aq, bq, as, bs;
      for (const MemSample& m : ms) {
        if (m.publisher != p || m.payload != payload) continue;
        (m.variant == Variant::multicast ? a : b).push_back(m.per_delivery());
        (m.variant == Variant::multicast ? aq : bq).push_back(m.per_queued());
        (m.variant == Variant::multicast ? as : bs)
            .push_back(m.queued_deliveries(payload) / static_cast<double>(m.deliveries));
      }
      if (a.empty() || b.empty()) continue;
      r.multicast = median(a);
      r.send = median(b);
      r.multicast_q = median(aq);
      r.send_q = median(bq);
      r.multicast_share = median(as);
      r.send_share = median(bs);
      rows.push_back(r);
    }
  }
  return rows;
}

inline void print_tables(const Options& o, const std::vector<Row>& rows,
                         const std::vector<MemRow>& mem) {
  if (!rows.empty()) {
    std::printf("\nFan-out to %zu members: deliveries/s, median of %u interleaved reps of %.2g s "
                "(window %u messages); every member got every message in order (lost = 0).\n"
                "ratio = multicast / send (one Server::send per member), same run: > 1 favours "
                "multicast. Server ns/delivery = CPU of the process minus the client threads, per "
                "delivery; CPU ratio < 1 favours multicast.\n\n",
                o.members, o.reps, o.duration, o.window);
    std::printf("| config | publisher | payload | %s deliveries/s | send deliveries/s | ratio | "
                "per-rep ratios | server ns/delivery %s / send | CPU ratio |\n"
                "|---|---|---|---|---|---|---|---|---|\n",
                o.group ? "Group::send" : "multicast", o.group ? "Group::send" : "multicast");
    for (const Row& r : rows) {
      std::string reps;
      for (double x : r.ratios) {
        char b[16];
        std::snprintf(b, sizeof b, "%s%.2f", reps.empty() ? "" : " ", x);
        reps += b;
      }
      std::printf("| %s | %s | %zu B | %s | %s | %.2f | %s | %.0f / %.0f | %.2f |\n",
                  r.config.c_str(), name(r.publisher), r.payload, human(r.multicast).c_str(),
                  human(r.send).c_str(), r.ratio, reps.c_str(), r.multicast_cpu, r.send_cpu,
                  r.send_cpu > 0 ? r.multicast_cpu / r.send_cpu : 0.0);
    }
  }
  if (!mem.empty()) {
    std::printf("\nMemory per queued delivery (%s, %zu members not reading, SO_SNDBUF/SO_RCVBUF "
                "4 KiB, K messages each): RSS growth / (K x members), median of %u.\n"
                "'per queued' divides by the deliveries still in user space (output_bytes / "
                "payload); 'queued' is their share of K x members.\n\n",
                o.mem_config.name().c_str(), o.members, o.mem_reps);
    std::printf("| publisher | payload | K | multicast B/delivery | send B/delivery | ratio | "
                "multicast B/queued | send B/queued | queued multicast / send |\n"
                "|---|---|---|---|---|---|---|---|---|\n");
    for (const MemRow& r : mem) {
      std::printf("| %s | %zu B | %zu | %.0f | %.0f | %.2f | %.0f | %.0f | %.0f%% / %.0f%% |\n",
                  name(r.publisher), r.payload, mem_messages_for(o, r.payload), r.multicast,
                  r.send, r.send > 0 ? r.multicast / r.send : 0.0, r.multicast_q, r.send_q,
                  100 * r.multicast_share, 100 * r.send_share);
    }
  }
}

inline void write_json(const Options& o, const std::vector<Sample>& samples,
                const std::vector<Row>& rows, const std::vector<MemSample>& ms,
                const std::vector<MemRow>& mem) {
  std::ofstream f(o.json);
  if (!f) die("cannot write " + o.json);
  f << "{\n  \"settings\": {\"members\": " << o.members << ", \"reps\": " << o.reps
    << ", \"duration_s\": " << o.duration << ", \"window\": " << o.window
    << ", \"max_messages\": " << o.max_messages << ", \"mem_messages\": " << o.mem_messages
    << ", \"mem_reps\": " << o.mem_reps << ", \"mem_config\": \"" << o.mem_config.name()
    << "\", \"api\": \"" << (o.group ? "Group::send" : "Server::multicast") << "\"},\n";
  f << "  \"runs\": [";
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    f << (i ? ",\n" : "\n") << "    {\"config\": \"" << s.config << "\", \"publisher\": \""
      << name(s.publisher) << "\", \"variant\": \"" << name(s.variant)
      << "\", \"payload\": " << s.payload << ", \"rep\": " << s.rep
      << ", \"messages\": " << s.messages << ", \"seconds\": " << s.seconds
      << ", \"deliveries_per_sec\": " << s.deliveries_per_sec
      << ", \"server_cpu_ns_per_delivery\": " << s.server_cpu_ns << ", \"lost\": 0"
      << ", \"backpressure_retries\": " << s.backpressure_retries << "}";
  }
  f << "\n  ],\n  \"throughput\": [";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    f << (i ? ",\n" : "\n") << "    {\"config\": \"" << r.config << "\", \"publisher\": \""
      << name(r.publisher) << "\", \"payload\": " << r.payload
      << ", \"multicast_deliveries_per_sec\": " << r.multicast
      << ", \"send_deliveries_per_sec\": " << r.send << ", \"ratio\": " << r.ratio
      << ", \"multicast_server_cpu_ns_per_delivery\": " << r.multicast_cpu
      << ", \"send_server_cpu_ns_per_delivery\": " << r.send_cpu << "}";
  }
  f << "\n  ],\n  \"memory_runs\": [";
  for (std::size_t i = 0; i < ms.size(); ++i) {
    const MemSample& m = ms[i];
    f << (i ? ",\n" : "\n") << "    {\"publisher\": \"" << name(m.publisher)
      << "\", \"variant\": \"" << name(m.variant) << "\", \"payload\": " << m.payload
      << ", \"rep\": " << m.rep << ", \"rss_before_kb\": " << m.rss_before_kb
      << ", \"rss_after_kb\": " << m.rss_after_kb << ", \"deliveries\": " << m.deliveries
      << ", \"queued_bytes\": " << m.queued_bytes
      << ", \"bytes_per_delivery\": " << m.per_delivery()
      << ", \"bytes_per_queued_delivery\": " << m.per_queued() << "}";
  }
  f << "\n  ],\n  \"memory\": [";
  for (std::size_t i = 0; i < mem.size(); ++i) {
    const MemRow& r = mem[i];
    f << (i ? ",\n" : "\n") << "    {\"publisher\": \"" << name(r.publisher)
      << "\", \"payload\": " << r.payload << ", \"messages\": " << mem_messages_for(o, r.payload)
      << ", \"multicast_bytes_per_delivery\": " << r.multicast
      << ", \"send_bytes_per_delivery\": " << r.send
      << ", \"multicast_bytes_per_queued_delivery\": " << r.multicast_q
      << ", \"send_bytes_per_queued_delivery\": " << r.send_q
      << ", \"multicast_queued_share\": " << r.multicast_share
      << ", \"send_queued_share\": " << r.send_share << "}";
  }
  f << "\n  ]\n}\n";
}

}  // namespace fanout

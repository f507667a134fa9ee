// esockets-http — GET /stats: the engine's counters (esockets::Stats) as JSON.
#include <cstdio>
#include <string>

#include "http_handler.hpp"

namespace esockets::http {
namespace {

void field(std::string& out, const char* name, std::uint64_t v) {
  char buf[80];
  std::snprintf(buf, sizeof buf, "\"%s\":%llu,", name, static_cast<unsigned long long>(v));
  out.append(buf);
}

void shard_json(std::string& out, const ShardStats& s, bool with_index) {
  out.push_back('{');
  if (with_index) field(out, "shard", s.shard);
  field(out, "connections", s.connections);
  field(out, "accepts", s.accepts);
  field(out, "refused", s.refused);
  field(out, "accept_errors", s.accept_errors);
  field(out, "bytes_in", s.bytes_in);
  field(out, "bytes_out", s.bytes_out);
  field(out, "messages_in", s.messages_in);
  field(out, "messages_out", s.messages_out);
  field(out, "worker_queue_depth", s.worker_queue_depth);
  field(out, "paused", s.paused);
  field(out, "output_bytes", s.output_bytes);
  field(out, "warnings", s.warnings);
  field(out, "events_per_sec", s.events_per_sec);
  field(out, "wakeups", s.wakeups);
  field(out, "send_backpressure", s.send_backpressure);
  char buf[64];
  std::snprintf(buf, sizeof buf, "\"busy_ratio\":%.4f,", s.busy_ratio);
  out.append(buf);
  out.append("\"closes\":{");
  for (std::size_t r = 0; r < kCloseReasonCount; ++r) {
    field(out, to_string(static_cast<CloseReason>(r)), s.closes[r]);
  }
  out.back() = '}';
  out.push_back('}');
}

}  // namespace

std::string stats_json(const Stats& stats) {
  std::string out = "{\"total\":";
  shard_json(out, stats.total, false);
  out.append(",\"shards\":[");
  for (const ShardStats& s : stats.shards) {
    shard_json(out, s, true);
    out.push_back(',');
  }
  if (out.back() == ',') out.pop_back();
  out.append("]}\n");
  return out;
}

}  // namespace esockets::http

#include "stats_print.hpp"

#include <cinttypes>

namespace esockets::tools {

namespace {
void row(std::FILE* out, const char* name, const ShardStats& s) {
  std::fprintf(out,
               "%-6s %8" PRIu64 " %9" PRIu64 " %8" PRIu64 " %12" PRIu64 " %12" PRIu64 " %11" PRIu64
               " %11" PRIu64 " %6" PRIu64 " %6" PRIu64 " %8" PRIu64 "\n",
               name, s.connections, s.accepts, s.refused, s.bytes_in, s.bytes_out, s.messages_in,
               s.messages_out, s.worker_queue_depth, s.paused, s.warnings);
}
}  // namespace

void print_stats(std::FILE* out, const Stats& st) {
  std::fprintf(out, "%-6s %8s %9s %8s %12s %12s %11s %11s %6s %6s %8s\n", "shard", "conns",
               "accepts", "refused", "bytes_in", "bytes_out", "msgs_in", "msgs_out", "queue",
               "paused", "warnings");
  char name[24];
  for (const ShardStats& s : st.shards) {
    std::snprintf(name, sizeof name, "%u", s.shard);
    row(out, name, s);
  }
  row(out, "total", st.total);
  std::fprintf(out, "closes:");
  for (std::size_t r = 0; r < kCloseReasonCount; ++r) {
    std::fprintf(out, " %s=%" PRIu64, to_string(static_cast<CloseReason>(r)), st.total.closes[r]);
  }
  std::fprintf(out, " accept_errors=%" PRIu64 "\n", st.total.accept_errors);
  std::fprintf(out, "load: busy");
  for (const ShardStats& s : st.shards) std::fprintf(out, " %u:%.2f", s.shard, s.busy_ratio);
  std::fprintf(out, "  events/s");
  for (const ShardStats& s : st.shards) std::fprintf(out, " %u:%" PRIu64, s.shard, s.events_per_sec);
  std::fprintf(out, "  imbalance conns=%.2f accepts=%.2f events=%.2f busy=%.2f\n",
               st.imbalance.connections, st.imbalance.accepts, st.imbalance.events_per_sec,
               st.imbalance.busy_ratio);
  std::fprintf(out, "wakeups: %" PRIu64 " (shards and workers woken by another thread)\n",
               st.total.wakeups);
  std::fprintf(out,
               "sends: would_block=%" PRIu64 " (backpressure: a full shard queue; retried by the "
               "sender) closed_slow_consumer=%" PRIu64 " cross_shard_waiting=%" PRIu64 "\n",
               st.total.send_backpressure, st.total.closes_by(CloseReason::slow_consumer),
               st.total.overflow);
  std::fflush(out);
}

void print_process_stats(std::FILE* out, const SupervisorStats& st) {
  print_stats(out, st.total);
  std::fprintf(out, "%-7s %8s %8s %8s %9s %12s %12s %11s %11s\n", "process", "pid", "restarts",
               "conns", "accepts", "bytes_in", "bytes_out", "msgs_in", "msgs_out");
  for (const ProcessStats& p : st.processes) {
    const ShardStats& t = p.stats.total;
    std::fprintf(out,
                 "%-7u %8d %8" PRIu64 " %8" PRIu64 " %9" PRIu64 " %12" PRIu64 " %12" PRIu64
                 " %11" PRIu64 " %11" PRIu64 "\n",
                 p.process, p.pid, p.restarts, t.connections, t.accepts, t.bytes_in, t.bytes_out,
                 t.messages_in, t.messages_out);
  }
  unsigned handed = 0;
  for (const ProcessStats& p : st.processes) handed += p.handed_over ? 1 : 0;
  std::fprintf(out,
               "processes: %zu running=%u restarts=%" PRIu64 " handed_over=%u taken_over_out=%" PRIu64
               " taken_over_in=%" PRIu64 " (totals include processes that ended)\n",
               st.processes.size(), st.running, st.restarts, handed, st.total.taken_over_out,
               st.total.taken_over_in);
  std::fflush(out);
}

}  // namespace esockets::tools

// The Supervisor's stats plumbing: a child's Server::stats() as one datagram to the supervisor,
// and the sums the supervisor keeps (a slot's earlier children, every slot's total).
// Thread: any (pure functions of their arguments).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "esockets/stats.hpp"

namespace esockets::detail {

// A report as the child sends it. Parent and child are one program image (fork without
// exec), so the trivially copyable parts travel as their bytes; the header still carries a
// magic number and the sizes, and decoding checks every length.
// `handed_over`: the child's Server gave everything to a new process (Server::handed_over()),
// so its slot is done rather than to be restarted.
std::string encode_report(const Stats& stats, bool final, bool handed_over = false);

struct Report {
  Stats stats;
  bool final = false;
  bool handed_over = false;
};
// nullopt when the bytes are not a whole report.
std::optional<Report> decode_report(std::string_view bytes);

// `s` without its gauges and its shards: what a child that ended leaves to its slot's sum.
Stats counters_only(const Stats& s);

// Adds `s` to `into`: totals, listeners (by address), histograms, resizes; its shards are
// appended with their index renumbered from `next_shard` on.
void accumulate(Stats& into, const Stats& s, unsigned& next_shard);

// After accumulating: the total's busy ratio (the shards' mean), cpu and the imbalance over
// the shards.
void finish_sum(Stats& sum);
// Over st.shards: the total's busy_ratio (their mean) and st.imbalance (max over mean of
// connections, accepts, events/s and busy ratio); nothing when there is no shard. Used by
// Server::stats() and by finish_sum.
void summarize_shards(Stats& st);

}  // namespace esockets::detail

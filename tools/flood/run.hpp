// esockets-flood: running one process's share (threads) and forking --procs children.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "options.hpp"
#include "stats.hpp"

namespace flood {

// One per-second progress sample (cumulative counters, interval percentiles).
struct Snapshot {
    double t = 0;  // seconds since start
    std::uint64_t msgs = 0, sent = 0, errs = 0, bytes_in = 0, bytes_out = 0;
    std::uint64_t open = 0, requested = 0;
    std::uint64_t p50 = 0, p99 = 0;  // ns, replies in the last interval
    std::uint64_t waiting = 0;       // requests due and not answered at this moment
    std::shared_ptr<const Histogram> hist;  // --hdr-log: the interval's reply latencies (one process only)
    std::string serialize() const;
    bool deserialize(const std::string& s);
};

using SnapshotSink = std::function<void(const Snapshot&)>;

// Runs the whole flood (forking when o.procs > 1) and returns the merged result.
// Returns false (with err) on setup failure.
bool run_flood(const Options& o, Result& out, const SnapshotSink& sink, std::string& err);

}  // namespace flood

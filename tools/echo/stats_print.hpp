// Printing Server::stats() as a per-shard table, and a Supervisor's totals per process
// (used by esockets-echo).
#pragma once

#include <cstdio>

#include "esockets/stats.hpp"
#include "esockets/supervisor.hpp"

namespace esockets::tools {

/// Writes one line per shard and a total line, then closes by reason, to `out`.
void print_stats(std::FILE* out, const Stats& st);

/// --processes: print_stats() of the totals over every process (shards renumbered in process
/// order), then one line per process and the restarts.
void print_process_stats(std::FILE* out, const SupervisorStats& st);

}  // namespace esockets::tools

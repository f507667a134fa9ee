// Printing Server::stats() as a per-shard table (used by esockets-echo).
#pragma once

#include <cstdio>

#include "esockets/stats.hpp"

namespace esockets::tools {

/// Writes one line per shard and a total line, then closes by reason, to `out`.
void print_stats(std::FILE* out, const Stats& st);

}  // namespace esockets::tools

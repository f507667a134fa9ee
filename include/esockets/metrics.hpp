// esockets — metrics: a Stats snapshot as Prometheus / OpenMetrics text.
// Thread: any (pure functions of the snapshot given).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "esockets/stats.hpp"

namespace esockets {

/// The text formats render_metrics can write.
enum class MetricsFormat : std::uint8_t {
  prometheus,   ///< Prometheus text exposition 0.0.4 (text/plain; version=0.0.4)
  openmetrics,  ///< OpenMetrics 1.0.0 text (application/openmetrics-text; version=1.0.0)
};

/// Renders a snapshot (Server::stats()) as metric families named `<prefix>_...`: per-shard
/// gauges and counters labelled shard="N", closes by reason, warnings by code, per-listener
/// counters labelled listener="address", and the handler-time and hand-off histograms in
/// seconds. `prefix` must match [a-zA-Z_][a-zA-Z0-9_]* (std::invalid_argument otherwise).
std::string render_metrics(const Stats& stats, MetricsFormat format = MetricsFormat::prometheus,
                           std::string_view prefix = "esockets");

/// The Content-Type header value of a format.
const char* content_type(MetricsFormat format) noexcept;

}  // namespace esockets

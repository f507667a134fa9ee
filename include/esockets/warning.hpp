// esockets — Warning: a structured record of something that went wrong in the engine.
// Thread: plain values; a Warning (and the text it points to) is valid during the
// Handler::on_warning call that received it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "esockets/types.hpp"

namespace esockets {

/// How bad a warning is.
enum class Severity : std::uint8_t {
  info,     ///< worth a line; nothing was lost (a client broke its protocol, a limit was reached)
  warning,  ///< a client or a request was lost to a limit or a fault (a refused connection)
  error,    ///< the engine could not do its job (accept failing, epoll failing, out of memory)
};

/// What a warning is about. The names (to_string) are stable: alert on them, count them.
enum class WarningCode : std::uint8_t {
  accept_failed,         ///< accept() failed for a reason other than fd exhaustion
  fd_exhausted,          ///< accept() ran out of file descriptors or memory: accepting paused
  connection_refused,    ///< a connection was refused: over max_connections (server or listener)
  io_error,              ///< a read, write or epoll call failed unexpectedly (error has errno)
  handler_exception,     ///< a handler, a timer or a posted function threw
  framing_error,         ///< a client's input broke the framing (the connection closes)
  slow_consumer,         ///< a client's queued output passed output_hard_cap
  proxy_error,           ///< a PROXY header was missing, malformed, oversized or untrusted
  proxy_timeout,         ///< a PROXY header did not arrive within proxy_timeout
  out_of_memory,         ///< an allocation failed; the affected connection closes
  steering_unavailable,  ///< the kernel refused reuseport BPF steering (resizing is less exact)
  engine_error,          ///< epoll_wait or another engine call failed
  suppressed,            ///< warnings dropped by the rate limit since the last one (a summary)
  takeover,              ///< a takeover was refused, failed or lost connections (the text says)
};
/// Number of WarningCode values (sizes per-code counters).
inline constexpr std::size_t kWarningCodeCount = 14;

/// One warning, as Handler::on_warning(const Warning&) receives it.
struct Warning {
  Severity severity = Severity::warning;          ///< how bad it is
  WarningCode code = WarningCode::engine_error;   ///< what it is about (stable)
  int shard = -1;            ///< the shard that raised it, or -1 (a worker, the control thread)
  int worker = -1;           ///< the worker that raised it, or -1
  ConnectionId connection;   ///< the connection concerned, if any (invalid otherwise)
  int error = 0;             ///< errno when a system call failed, else 0
  std::string_view text;     ///< a human-readable line (what on_warning(string_view) gets)
};

/// Stable snake_case name of a code ("accept_failed", ...).
const char* to_string(WarningCode code) noexcept;
/// "info", "warning" or "error".
const char* to_string(Severity severity) noexcept;

}  // namespace esockets

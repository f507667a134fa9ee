#include <arpa/inet.h>
#include <sys/socket.h>

#include "esockets/connection.hpp"
#include "esockets/listener.hpp"
#include "esockets/warning.hpp"
#include "esockets/types.hpp"

namespace esockets {

const char* to_string(CloseReason reason) noexcept {
  switch (reason) {
    case CloseReason::peer_closed: return "peer_closed";
    case CloseReason::reset: return "reset";
    case CloseReason::closed_by_server: return "closed_by_server";
    case CloseReason::refused: return "refused";
    case CloseReason::framing_error: return "framing_error";
    case CloseReason::slow_consumer: return "slow_consumer";
    case CloseReason::idle: return "idle";
    case CloseReason::frame_timeout: return "frame_timeout";
    case CloseReason::shutdown: return "shutdown";
    case CloseReason::handler_exception: return "handler_exception";
    case CloseReason::io_error: return "io_error";
    case CloseReason::proxy_error: return "proxy_error";
    case CloseReason::proxy_timeout: return "proxy_timeout";
    case CloseReason::taken_over: return "taken_over";
  }
  return "unknown";
}

const char* to_string(SendStatus status) noexcept {
  switch (status) {
    case SendStatus::ok: return "ok";
    case SendStatus::closed: return "closed";
    case SendStatus::backpressure: return "backpressure";
    case SendStatus::slow_consumer: return "slow_consumer";
  }
  return "unknown";
}

const char* to_string(WarningCode code) noexcept {
  switch (code) {
    case WarningCode::accept_failed: return "accept_failed";
    case WarningCode::fd_exhausted: return "fd_exhausted";
    case WarningCode::connection_refused: return "connection_refused";
    case WarningCode::io_error: return "io_error";
    case WarningCode::handler_exception: return "handler_exception";
    case WarningCode::framing_error: return "framing_error";
    case WarningCode::slow_consumer: return "slow_consumer";
    case WarningCode::proxy_error: return "proxy_error";
    case WarningCode::proxy_timeout: return "proxy_timeout";
    case WarningCode::takeover: return "takeover";
    case WarningCode::out_of_memory: return "out_of_memory";
    case WarningCode::steering_unavailable: return "steering_unavailable";
    case WarningCode::engine_error: return "engine_error";
    case WarningCode::suppressed: return "suppressed";
  }
  return "unknown";
}

const char* to_string(Severity severity) noexcept {
  switch (severity) {
    case Severity::info: return "info";
    case Severity::warning: return "warning";
    case Severity::error: return "error";
  }
  return "unknown";
}

const char* to_string(ProxyProtocol p) noexcept {
  switch (p) {
    case ProxyProtocol::off: return "off";
    case ProxyProtocol::v1: return "v1";
    case ProxyProtocol::v2: return "v2";
    case ProxyProtocol::any: return "any";
  }
  return "unknown";
}

const char* to_string(Backend b) noexcept {
  switch (b) {
    case Backend::epoll: return "epoll";
    case Backend::io_uring: return "io_uring";
    case Backend::automatic: return "automatic";
  }
  return "unknown";
}

std::string PeerAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == AF_INET) {
    inet_ntop(AF_INET, addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port);
  }
  if (family == AF_INET6) {
    inet_ntop(AF_INET6, addr, buf, sizeof buf);
    return "[" + std::string(buf) + "]:" + std::to_string(port);
  }
  if (family == AF_UNIX) return "unix:";
  return "?:0";
}

}  // namespace esockets

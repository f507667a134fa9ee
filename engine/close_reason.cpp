#include <arpa/inet.h>
#include <sys/socket.h>

#include "esockets/connection.hpp"
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
  return "?:0";
}

}  // namespace esockets

// esockets — ProxyInfo: what a PROXY protocol header (v1 text or v2 binary) said about a client.
// Thread: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "esockets/connection.hpp"

namespace esockets {

/// One v2 TLV (type-length-value) from the header: ALPN, authority, SSL, unique id, ...
struct ProxyTlv {
  std::uint8_t type = 0;  ///< PP2_TYPE_* (0x01 ALPN, 0x02 authority, 0x05 unique id, 0x20 SSL, ...)
  std::string value;      ///< the raw bytes
};

/// A parsed PROXY protocol header.
struct ProxyInfo {
  std::uint8_t version = 0;  ///< 1 or 2
  /// The proxy's own connection (v2 LOCAL, as a health check sends; v1 "UNKNOWN"): the
  /// addresses are the connection's own, source and destination stay empty (family 0).
  bool local = false;
  PeerAddress source;       ///< the client as the proxy saw it (what peer() reports)
  PeerAddress destination;  ///< the address the client connected to on the proxy
  std::vector<ProxyTlv> tlvs;  ///< v2 only, in header order
};

}  // namespace esockets

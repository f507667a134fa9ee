// Parsing PROXY protocol headers (v1 text, v2 binary) and the CIDRs of trusted proxies.
// Thread: any (pure functions over the bytes given; nothing is kept).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "esockets/connection.hpp"
#include "esockets/listener.hpp"
#include "esockets/proxy.hpp"

namespace esockets::detail {

enum class ProxyParse : std::uint8_t {
  need_more,  // a valid prefix of a header: read more (the caller bounds the wait and the size)
  done,       // a whole header: `consumed` bytes are it, what follows is the client's
  malformed,  // not a header this listener accepts: `error` says why
};

struct ProxyParseResult {
  ProxyParse status = ProxyParse::need_more;
  std::size_t consumed = 0;     // done: the header's length
  const char* error = nullptr;  // malformed: a static string naming the fault
};

// Parses the header at the start of `in` (everything read so far) for a listener set to
// `accept` (v1, v2 or any; never off). Decides as early as the bytes allow: a prefix that no
// accepted header can start with is malformed at once, a header longer than `max_header`
// (v1: also over 107 bytes) is malformed ("oversized") as soon as that is known. On done fills
// `out` (version, local, source, destination, TLVs); `out` is unspecified otherwise.
ProxyParseResult parse_proxy_header(std::string_view in, ProxyProtocol accept,
                                    std::size_t max_header, ProxyInfo& out);

// An address range of trusted proxies.
struct Cidr {
  std::uint8_t family = 0;  // AF_INET or AF_INET6
  std::uint8_t prefix = 0;  // bits that must match
  std::uint8_t addr[16] = {};
};

// Parses "a.b.c.d/n", "x:y::z/n" or a single address (a full-length prefix). False with
// `error` set ("'10.0.0.0/33': the prefix must be 0-32", ...) when it is not one.
bool parse_cidr(std::string_view text, Cidr& out, std::string& error);

// True if `peer` is inside `range`. An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) matches IPv4
// ranges as its IPv4 address.
bool cidr_contains(const Cidr& range, const PeerAddress& peer);

// A listener address, as ListenerOptions::address spells it.
struct ListenAddress {
  enum class Kind : std::uint8_t { tcp4, tcp6, unix_path, unix_abstract };
  Kind kind = Kind::tcp4;
  std::string host;       // tcp: the numeric address without brackets
  std::uint16_t port = 0; // tcp
  std::string path;       // unix: the path, or the abstract name without its '@'
};

// Parses "127.0.0.1:9000", "[::1]:9000", "unix:/path" or "unix:@name". False with `error`
// naming the text and what to change when it is none of them (no port, port over 65535, a
// host name instead of a numeric address, an empty or too long path: at most 107 bytes).
bool parse_listen_address(std::string_view text, ListenAddress& out, std::string& error);

}  // namespace esockets::detail

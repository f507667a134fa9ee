// PROXY protocol v1/v2 header parsing, trusted-proxy CIDRs and listener addresses.
// Every check runs on the bytes seen so far, so that a stream that cannot become an accepted
// header is refused at the first byte that shows it, and nothing is ever read past `in`.
#include "io/proxy_header.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

namespace esockets::detail {

namespace {

constexpr std::size_t kV1Max = 107;  // the spec's bound, CRLF included
constexpr std::size_t kV2Fixed = 16;
constexpr char kV1Start[] = "PROXY ";
constexpr unsigned char kV2Sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

ProxyParseResult need_more() { return {}; }
ProxyParseResult malformed(const char* why) { return {ProxyParse::malformed, 0, why}; }
ProxyParseResult done(std::size_t n) { return {ProxyParse::done, n, nullptr}; }

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// True if the first min(size, n) bytes of `s` equal those of `lit`.
bool prefix_matches(std::string_view s, const void* lit, std::size_t n) {
  return std::memcmp(s.data(), lit, std::min(s.size(), n)) == 0;
}

// inet_pton needs a NUL-terminated string; `text` is bounded by the callers.
bool to_addr(int family, std::string_view text, std::uint8_t* out) {
  char buf[INET6_ADDRSTRLEN];
  if (text.empty() || text.size() >= sizeof buf) return false;
  if (text.find('\0') != std::string_view::npos) return false;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  return inet_pton(family, buf, out) == 1;
}

// ---- v1 ----

// Could `p` still grow into a dotted quad inet_pton accepts (glibc: no leading zeros)?
bool ipv4_prefix_ok(std::string_view p) {
  int octets = 1, digits = 0, value = 0;
  char first = 0;
  for (char c : p) {
    if (c == '.') {
      if (digits == 0 || ++octets > 4) return false;
      digits = 0;
      value = 0;
    } else if (is_digit(c)) {
      if (digits == 0) first = c;
      else if (first == '0') return false;
      value = value * 10 + (c - '0');
      if (++digits > 3 || value > 255) return false;
    } else {
      return false;
    }
  }
  return true;
}

// IPv6 text: hex digits, ':' and the '.' of an embedded IPv4; at most 45 characters.
bool ipv6_prefix_ok(std::string_view p) {
  if (p.size() > INET6_ADDRSTRLEN - 1) return false;
  return std::all_of(p.begin(), p.end(), [](char c) { return is_hex(c) || c == ':' || c == '.'; });
}

// A port: decimal 0-65535, no sign, no leading zero (as proxies write it).
bool port_prefix_ok(std::string_view p) {
  if (p.size() > 5 || (p.size() > 1 && p[0] == '0')) return false;
  unsigned v = 0;
  for (char c : p) {
    if (!is_digit(c)) return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  return v <= 65535;
}

enum class Step : std::uint8_t { ok, more, bad };

// A cursor over the v1 bytes available (already cut at the 107-byte bound).
struct V1Cursor {
  std::string_view s;
  std::size_t pos = 0;

  Step literal(std::string_view lit) {
    const std::string_view rest = s.substr(pos);
    if (!prefix_matches(rest, lit.data(), lit.size())) return Step::bad;
    if (rest.size() < lit.size()) return Step::more;
    pos += lit.size();
    return Step::ok;
  }

  // A field made of `allowed` characters and ending at `end` (consumed). `prefix_ok` checks
  // the field so far, `whole_ok` the complete one.
  template <typename Allowed, typename PrefixOk, typename WholeOk>
  Step field(char end, Allowed allowed, PrefixOk prefix_ok, WholeOk whole_ok, std::string_view& tok) {
    std::size_t i = pos;
    while (i < s.size() && allowed(s[i])) ++i;
    tok = s.substr(pos, i - pos);
    if (!prefix_ok(tok)) return Step::bad;
    if (i == s.size()) return Step::more;
    if (s[i] != end || !whole_ok(tok)) return Step::bad;
    pos = i + 1;
    return Step::ok;
  }
};

// Parses "PROXY ...\r\n" from `s`, the bytes available cut at the size bound. `more` from
// here means: a valid prefix so far.
ProxyParseResult parse_v1(std::string_view s, ProxyInfo& out, bool& more) {
  more = false;
  V1Cursor c{s};
  auto wait = [&more] {
    more = true;
    return need_more();
  };
  switch (c.literal(kV1Start)) {
    case Step::ok: break;
    case Step::more: return wait();
    case Step::bad: return malformed("not a PROXY protocol header");
  }

  // The protocol: TCP4, TCP6 or UNKNOWN, told apart by as many bytes as there are.
  const std::string_view rest = s.substr(c.pos);
  int family = 0;
  if (prefix_matches(rest, "UNKNOWN", 7)) {
    if (rest.size() <= 7) return wait();
    if (rest[7] != ' ' && rest[7] != '\r') return malformed("bad v1 protocol (TCP4, TCP6 or UNKNOWN)");
    // The spec: whatever follows UNKNOWN up to the CRLF is ignored.
    const std::size_t crlf = s.find("\r\n", c.pos + 7);
    if (crlf == std::string_view::npos) return wait();
    out.local = true;
    return done(crlf + 2);
  }
  if (prefix_matches(rest, "TCP4 ", 5)) family = AF_INET;
  else if (prefix_matches(rest, "TCP6 ", 5)) family = AF_INET6;
  else return malformed("bad v1 protocol (TCP4, TCP6 or UNKNOWN)");
  if (rest.size() < 5) return wait();  // "TCP" matches both
  c.pos += 5;

  const bool v4 = family == AF_INET;
  auto addr_char = [v4](char ch) { return v4 ? (is_digit(ch) || ch == '.') : (is_hex(ch) || ch == ':' || ch == '.'); };
  auto addr_prefix = [v4](std::string_view p) { return v4 ? ipv4_prefix_ok(p) : ipv6_prefix_ok(p); };
  std::uint8_t src[16] = {}, dst[16] = {};
  auto addr_whole = [family](std::uint8_t* a) {
    return [family, a](std::string_view t) { return to_addr(family, t, a); };
  };
  auto port_whole = [](std::string_view p) { return !p.empty(); };
  std::string_view sport, dport, tok;

  switch (c.field(' ', addr_char, addr_prefix, addr_whole(src), tok)) {
    case Step::ok: break;
    case Step::more: return wait();
    case Step::bad: return malformed("bad v1 source address");
  }
  switch (c.field(' ', addr_char, addr_prefix, addr_whole(dst), tok)) {
    case Step::ok: break;
    case Step::more: return wait();
    case Step::bad: return malformed("bad v1 destination address");
  }
  switch (c.field(' ', is_digit, port_prefix_ok, port_whole, sport)) {
    case Step::ok: break;
    case Step::more: return wait();
    case Step::bad: return malformed("bad v1 source port");
  }
  switch (c.field('\r', is_digit, port_prefix_ok, port_whole, dport)) {
    case Step::ok: break;
    case Step::more: return wait();
    case Step::bad:
      // "... 80 extra\r\n" or "... 80\n": the port is fine, the line does not end there.
      if (c.pos + dport.size() < s.size() && !dport.empty() && port_prefix_ok(dport))
        return malformed("v1 header not ended by CRLF");
      return malformed("bad v1 destination port");
  }
  --c.pos;  // back onto the '\r'
  switch (c.literal("\r\n")) {
    case Step::ok: break;
    case Step::more: return wait();
    case Step::bad: return malformed("v1 header not ended by CRLF");
  }

  auto to_port = [](std::string_view p) {
    unsigned v = 0;
    for (char ch : p) v = v * 10 + static_cast<unsigned>(ch - '0');
    return static_cast<std::uint16_t>(v);
  };
  const std::size_t n = v4 ? 4 : 16;
  out.source.family = out.destination.family = static_cast<std::uint8_t>(family);
  std::memcpy(out.source.addr, src, n);
  std::memcpy(out.destination.addr, dst, n);
  out.source.port = to_port(sport);
  out.destination.port = to_port(dport);
  return done(c.pos);
}

// ---- v2 ----

std::uint16_t be16(const char* p) {
  return static_cast<std::uint16_t>((static_cast<unsigned char>(p[0]) << 8) | static_cast<unsigned char>(p[1]));
}

ProxyParseResult parse_v2(std::string_view in, std::size_t max_header, ProxyInfo& out) {
  if (!prefix_matches(in, kV2Sig, sizeof kV2Sig)) return malformed("not a PROXY protocol header");
  bool proxy_cmd = false;
  if (in.size() > 12) {
    const auto vc = static_cast<unsigned char>(in[12]);
    if ((vc >> 4) != 2) return malformed("bad v2 version");
    if ((vc & 0xF) > 1) return malformed("bad v2 command (LOCAL or PROXY)");
    proxy_cmd = (vc & 0xF) == 1;
  }
  std::size_t addr_len = 0;
  unsigned char fam = 0;
  if (in.size() > 13) {
    fam = static_cast<unsigned char>(in[13]);
    if ((fam >> 4) >= 1 && (fam >> 4) <= 3 && (fam & 0xF) == 2)
      return malformed("v2 datagram transport not supported");
    switch (fam) {
      case 0x00: addr_len = 0; break;    // AF_UNSPEC
      case 0x11: addr_len = 12; break;   // AF_INET, STREAM
      case 0x21: addr_len = 36; break;   // AF_INET6, STREAM
      case 0x31: addr_len = 216; break;  // AF_UNIX, STREAM
      default: return malformed("bad v2 address family");
    }
  }
  if (in.size() < kV2Fixed) {
    if (in.size() >= max_header) return malformed("v2 header over max_proxy_header");
    return need_more();
  }
  const std::size_t len = be16(in.data() + 14);
  const std::size_t total = kV2Fixed + len;
  if (total > max_header) return malformed("v2 header over max_proxy_header");
  if (len < addr_len) return malformed("v2 address block too short");

  // Walk the TLVs as far as the bytes go: an overrun shows as soon as its length does.
  const std::size_t avail = std::min(in.size(), total);
  std::size_t p = kV2Fixed + addr_len, count = 0;
  while (p < total) {
    if (total - p < 3) return malformed("v2 TLV overruns the header");
    if (p + 3 > avail) break;
    const std::size_t vlen = be16(in.data() + p + 1);
    if (vlen > total - p - 3) return malformed("v2 TLV overruns the header");
    p += 3 + vlen;
    ++count;
  }
  if (in.size() < total) return need_more();

  const char* a = in.data() + kV2Fixed;
  if (!proxy_cmd || fam == 0x00) {
    out.local = true;  // LOCAL (the family is skipped, as the spec says) or PROXY over UNSPEC
  } else if (fam == 0x11 || fam == 0x21) {
    const std::size_t n = fam == 0x11 ? 4 : 16;
    out.source.family = out.destination.family = fam == 0x11 ? AF_INET : AF_INET6;
    std::memcpy(out.source.addr, a, n);
    std::memcpy(out.destination.addr, a + n, n);
    out.source.port = be16(a + 2 * n);
    out.destination.port = be16(a + 2 * n + 2);
  }
  // AF_UNIX: a real proxied client, but PeerAddress has no room for a path: family 0.

  out.tlvs.reserve(count);
  for (p = kV2Fixed + addr_len; p < total;) {
    const std::size_t vlen = be16(in.data() + p + 1);
    out.tlvs.push_back(ProxyTlv{static_cast<std::uint8_t>(in[p]), std::string(in.substr(p + 3, vlen))});
    p += 3 + vlen;
  }
  return done(total);
}

// ---- CIDR and listen-address helpers ----

std::string quoted(std::string_view text) {
  std::string q(1, '\'');  // appended, not "'" + ...: GCC 12 warns falsely (-Wrestrict) on that
  q.append(text);
  q += '\'';
  return q;
}

// Decimal digits only, no sign, no leading zero; false if over `max`.
bool parse_decimal(std::string_view s, unsigned max, bool allow_leading_zero, unsigned& out) {
  if (s.empty() || s.size() > 5) return false;
  if (!allow_leading_zero && s.size() > 1 && s[0] == '0') return false;
  unsigned v = 0;
  for (char c : s) {
    if (!is_digit(c)) return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > max) return false;
  out = v;
  return true;
}

bool looks_like_host_name(std::string_view host) {
  return std::any_of(host.begin(), host.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
  });
}

// A v6 range inside ::ffff:0:0/96 as the v4 range it spells; false for any other range.
bool mapped_range_as_v4(const Cidr& r, Cidr& v4) {
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (r.family != AF_INET6 || r.prefix < 96 || std::memcmp(r.addr, kMapped, 12) != 0) return false;
  v4.family = AF_INET;
  v4.prefix = static_cast<std::uint8_t>(r.prefix - 96);
  std::memcpy(v4.addr, r.addr + 12, 4);
  return true;
}

bool prefix_equal(const std::uint8_t* a, const std::uint8_t* b, unsigned bits) {
  const unsigned bytes = bits / 8, rem = bits % 8;
  if (std::memcmp(a, b, bytes) != 0) return false;
  if (rem == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xFF << (8 - rem));
  return (a[bytes] & mask) == (b[bytes] & mask);
}

}  // namespace

ProxyParseResult parse_proxy_header(std::string_view in, ProxyProtocol accept, std::size_t max_header,
                                    ProxyInfo& out) {
  if (in.empty()) return need_more();
  out = ProxyInfo{};
  const bool v1_ok = accept == ProxyProtocol::v1 || accept == ProxyProtocol::any;
  const bool v2_ok = accept == ProxyProtocol::v2 || accept == ProxyProtocol::any;

  if (in[0] == 'P') {
    if (!v1_ok) {
      return malformed(prefix_matches(in, kV1Start, 6) ? "v1 header on a listener accepting v2 only"
                                                       : "not a PROXY protocol header");
    }
    const std::size_t limit = std::min(kV1Max, max_header);
    bool more = false;
    const ProxyParseResult r = parse_v1(in.substr(0, limit), out, more);
    if (more && in.size() >= limit)
      return malformed(limit == kV1Max ? "v1 header over 107 bytes" : "v1 header over max_proxy_header");
    if (r.status == ProxyParse::done) out.version = 1;
    return r;
  }
  if (in[0] == '\r') {
    if (!v2_ok) {
      return malformed(prefix_matches(in, kV2Sig, sizeof kV2Sig) ? "v2 header on a listener accepting v1 only"
                                                                : "not a PROXY protocol header");
    }
    const ProxyParseResult r = parse_v2(in, max_header, out);
    if (r.status == ProxyParse::done) out.version = 2;
    return r;
  }
  return malformed("not a PROXY protocol header");
}

bool parse_cidr(std::string_view text, Cidr& out, std::string& error) {
  if (text.empty()) {
    error = "'': empty; give an address or a CIDR such as 10.0.0.0/8";
    return false;
  }
  const std::size_t slash = text.find('/');
  const std::string_view host = text.substr(0, slash);
  Cidr c;
  c.family = host.find(':') != std::string_view::npos ? AF_INET6 : AF_INET;
  const unsigned max_prefix = c.family == AF_INET ? 32 : 128;
  if (!to_addr(c.family, host, c.addr)) {
    error = quoted(text) + (c.family == AF_INET ? ": not a numeric IPv4 address (a.b.c.d or a.b.c.d/n)"
                                                : ": not a numeric IPv6 address (x:y::z or x:y::z/n)");
    return false;
  }
  unsigned prefix = max_prefix;
  if (slash != std::string_view::npos && !parse_decimal(text.substr(slash + 1), max_prefix, false, prefix)) {
    error = quoted(text) + ": the prefix must be " + (c.family == AF_INET ? "0-32" : "0-128");
    return false;
  }
  c.prefix = static_cast<std::uint8_t>(prefix);
  // Host bits past the prefix are allowed ("10.1.2.3/8") and cleared.
  for (unsigned bit = prefix; bit < max_prefix; ++bit) c.addr[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
  out = c;
  return true;
}

bool cidr_contains(const Cidr& range, const PeerAddress& peer) {
  // IPv4 clients, arriving as IPv4 or as IPv4-mapped IPv6, are compared as IPv4: against IPv4
  // ranges and against ranges inside ::ffff:0:0/96. No other IPv6 range (::/0 included)
  // holds them.
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  std::uint8_t family = peer.family;
  const std::uint8_t* addr = peer.addr;
  if (family == AF_INET6 && std::memcmp(addr, kMapped, 12) == 0) {
    family = AF_INET;
    addr += 12;
  }
  Cidr r = range;
  if (family == AF_INET && !mapped_range_as_v4(range, r) && range.family != AF_INET) return false;
  if (family != r.family || (family != AF_INET && family != AF_INET6)) return false;
  return prefix_equal(r.addr, addr, std::min<unsigned>(r.prefix, family == AF_INET ? 32 : 128));
}

bool parse_listen_address(std::string_view text, ListenAddress& out, std::string& error) {
  const std::string what = "listen address " + quoted(text) + ": ";
  auto fail = [&](const char* why) {
    error = what + why;
    return false;
  };
  if (text.substr(0, 5) == "unix:") {
    std::string_view path = text.substr(5);
    ListenAddress a;
    a.kind = ListenAddress::Kind::unix_path;
    if (!path.empty() && path[0] == '@') {
      a.kind = ListenAddress::Kind::unix_abstract;
      path.remove_prefix(1);
      if (path.empty()) return fail("the abstract name after 'unix:@' is empty");
      if (path.size() > 106) return fail("the abstract name is over 106 bytes");
    } else {
      if (path.empty()) return fail("the path after 'unix:' is empty");
      if (path.size() > 107) return fail("the path is over 107 bytes; use a shorter one");
    }
    if (path.find('\0') != std::string_view::npos) return fail("the path holds a NUL byte");
    a.path = std::string(path);
    out = std::move(a);
    return true;
  }

  ListenAddress a;
  std::string_view host, port;
  if (!text.empty() && text[0] == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) return fail("no ']' closing the IPv6 address; write '[::1]:9000'");
    host = text.substr(1, close - 1);
    const std::string_view after = text.substr(close + 1);
    if (after.empty()) return fail("no port; write '[::1]:9000' (port 0 picks a free one)");
    if (after[0] != ':') return fail("expected ':port' after ']', as in '[::1]:9000'");
    port = after.substr(1);
    a.kind = ListenAddress::Kind::tcp6;
    std::uint8_t buf[16];
    if (!to_addr(AF_INET6, host, buf)) return fail("not a numeric IPv6 address inside '[...]'");
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return fail("no port; write 'a.b.c.d:port', '[v6]:port', 'unix:/path' or 'unix:@name'");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return fail("bracket an IPv6 address, as in '[::1]:9000'");
    if (host.empty()) return fail("no address before ':'; use 0.0.0.0 for every IPv4 interface");
    a.kind = ListenAddress::Kind::tcp4;
    std::uint8_t buf[4];
    if (!to_addr(AF_INET, host, buf)) {
      return fail(looks_like_host_name(host)
                      ? "use a numeric address (127.0.0.1, 0.0.0.0, [::1]), not a host name"
                      : "not a numeric IPv4 address");
    }
  }
  unsigned p = 0;
  if (port.empty()) return fail("no port after ':'");
  if (!parse_decimal(port, 65535, true, p)) return fail("the port must be a decimal number 0-65535");
  a.host = std::string(host);
  a.port = static_cast<std::uint16_t>(p);
  out = std::move(a);
  return true;
}

}  // namespace esockets::detail

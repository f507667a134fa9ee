// esockets-http — request head parser. Strict where leniency lets requests be read two ways
// (request smuggling): no whitespace before a colon, no obs-fold, no Content-Length together
// with Transfer-Encoding, one Host in HTTP/1.1. Lenient where RFC 9112 allows it: a bare LF
// ends a line as well as CRLF.
#include "http_request.hpp"

#include <array>
#include <cstring>

namespace esockets::http {

#ifdef ESOCKETS_HTTP_COUNT_WORK
std::uint64_t g_work = 0;
#endif

namespace {

constexpr std::array<bool, 256> make_tchar() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr std::array<bool, 256> kTchar = make_tchar();

bool is_tchar(char c) { return kTchar[static_cast<unsigned char>(c)]; }
bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && is_ows(v.front())) v.remove_prefix(1);
  while (!v.empty() && is_ows(v.back())) v.remove_suffix(1);
  return v;
}

// Calls fn(token) for each element of a comma-separated list (empty elements skipped).
template <class Fn>
void for_each_token(std::string_view list, Fn&& fn) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    const std::string_view tok = trim_ows(list.substr(0, comma));
    if (!tok.empty()) fn(tok);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

const char* parse_request_line(std::string_view line, RequestHead& h) {
  const std::size_t sp1 = line.find(' ');
  if (sp1 == 0 || sp1 == std::string_view::npos) return "400 malformed request line";
  h.method = line.substr(0, sp1);
  for (char c : h.method) {
    if (!is_tchar(c)) return "400 malformed method";
  }
  const std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return "400 malformed request line";
  h.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  for (char c : h.target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return "400 malformed request target";
  }
  const std::string_view v = line.substr(sp2 + 1);
  if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || v[6] != '.' || v[5] < '0' || v[5] > '9' ||
      v[7] < '0' || v[7] > '9') {
    return "400 malformed HTTP version";
  }
  if (v[5] != '1') return "505 HTTP version not supported";
  h.minor = v[7] == '0' ? 0 : 1;  // HTTP/1.x with x > 1 is served as 1.1 (RFC 9110 2.5)
  return nullptr;
}

const char* parse_content_length(std::string_view v, RequestHead& h) {
  if (v.empty()) return "400 malformed Content-Length";
  std::uint64_t n = 0;
  bool huge = false;
  for (char c : v) {
    if (c < '0' || c > '9') return "400 malformed Content-Length";
    if (n > (std::uint64_t{1} << 56)) {
      huge = true;  // keep validating the digits; the value is over any limit anyway
    } else {
      n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
  }
  if (huge) n = ~std::uint64_t{0};
  if (h.has_content_length && n != h.content_length) return "400 conflicting Content-Length";
  h.has_content_length = true;
  h.content_length = n;
  return nullptr;
}

struct TransferCoding {
  bool present = false, chunked = false, other = false, chunked_not_last = false;
  void add(std::string_view list) {
    present = true;
    for_each_token(list, [&](std::string_view t) {
      if (chunked) chunked_not_last = true;
      if (iequals(t, "chunked")) {
        chunked = true;
      } else {
        other = true;
      }
    });
  }
};

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] + 32) : a[i];
    if (x != b[i]) return false;  // b is lowercase
  }
  return true;
}

const char* parse_head(std::string_view in, const Limits& limits, RequestHead& h) {
  h = RequestHead{};
  std::size_t pos = 0;
  auto next_line = [&](std::string_view& line) {
    const void* nl = std::memchr(in.data() + pos, '\n', in.size() - pos);
    if (nl == nullptr) return false;
    const auto end = static_cast<std::size_t>(static_cast<const char*>(nl) - in.data());
    ESOCKETS_HTTP_WORK(end + 1 - pos);
    line = in.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = end + 1;
    return true;
  };

  // RFC 9112 2.2: ignore blank lines before the request line (some clients send a CRLF
  // after a body); the decoder bounds them by kMaxLeadingBlank.
  while (pos < in.size() && (in[pos] == '\n' || (in[pos] == '\r' && pos + 1 < in.size() &&
                                                  in[pos + 1] == '\n'))) {
    pos += in[pos] == '\n' ? 1 : 2;
  }
  if (pos > kMaxLeadingBlank) return "400 too many blank lines before the request";
  ESOCKETS_HTTP_WORK(pos);
  std::string_view line;
  if (!next_line(line)) return "400 incomplete request head";
  if (const char* err = parse_request_line(line, h)) return err;

  TransferCoding te;
  int hosts = 0;
  while (true) {
    if (!next_line(line)) return "400 incomplete request head";
    if (line.empty()) break;
    if (is_ows(line.front())) return "400 obsolete header line folding";
    if (++h.header_count > limits.max_headers) return "431 too many header fields";
    const std::size_t colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos) return "400 malformed header field";
    const std::string_view name = line.substr(0, colon);
    for (char c : name) {
      if (!is_tchar(c)) return "400 malformed header field name";
    }
    const std::string_view value = trim_ows(line.substr(colon + 1));
    for (char c : value) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return "400 control character in header field";
    }
    switch (name.size()) {
      case 4:
        if (iequals(name, "host")) ++hosts;
        break;
      case 6:
        if (iequals(name, "expect") && iequals(value, "100-continue")) h.expect_continue = true;
        break;
      case 10:
        if (iequals(name, "connection")) {
          for_each_token(value, [&](std::string_view t) {
            if (iequals(t, "close")) h.conn_close = true;
            if (iequals(t, "keep-alive")) h.conn_keep_alive = true;
          });
        }
        break;
      case 12:
        if (iequals(name, "content-type")) h.content_type = value;
        break;
      case 14:
        if (iequals(name, "content-length")) {
          if (const char* err = parse_content_length(value, h)) return err;
        }
        break;
      case 17:
        if (iequals(name, "transfer-encoding")) te.add(value);
        break;
      default:
        break;
    }
  }
  h.head_len = pos;
  if (h.head_len > limits.max_header_bytes) return "431 request header fields too large";
  if (h.minor >= 1 && hosts != 1) return "400 HTTP/1.1 needs exactly one Host header";
  if (te.present) {
    // RFC 9112 6.1 and 6.3: Transfer-Encoding in HTTP/1.0, together with Content-Length, or
    // without chunked last makes the body length unknowable: refuse rather than guess.
    if (h.minor == 0) return "400 Transfer-Encoding in an HTTP/1.0 request";
    if (h.has_content_length) return "400 both Content-Length and Transfer-Encoding";
    if (!te.chunked || te.chunked_not_last) return "400 chunked is not the final transfer coding";
    if (te.other) return "501 transfer coding not implemented";
    h.chunked = true;
  }
  if (h.has_content_length && h.content_length > limits.max_body) {
    return "413 content too large";
  }
  return nullptr;
}

bool dechunk(std::string_view in, std::string& out) {
  std::size_t pos = 0;
  while (true) {
    std::uint64_t size = 0;
    std::size_t digits = 0;
    while (pos < in.size()) {
      const char c = in[pos];
      int d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
        d = (c | 0x20) - 'a' + 10;
      } else {
        break;
      }
      size = size * 16 + static_cast<std::uint64_t>(d);
      ++pos;
      if (++digits > 15) return false;
    }
    const std::size_t nl = in.find('\n', pos);
    if (digits == 0 || nl == std::string_view::npos) return false;
    pos = nl + 1;
    if (size == 0) return true;  // trailers follow; the decoder checked them
    if (in.size() - pos < size + 2) return false;
    out.append(in.substr(pos, size));
    pos += size + 2;
  }
}

}  // namespace esockets::http

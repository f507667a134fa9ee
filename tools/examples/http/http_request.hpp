// esockets-http — the request head: parsing the request line and header fields (RFC 9112).
// Thread: pure functions on borrowed bytes; safe on any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace esockets::http {

/// Limits one request must stay within; the decoder rejects input past them as soon as it
/// knows (before the rest of the head or the body has arrived).
struct Limits {
  std::size_t max_header_bytes = 8192;  ///< request line + header fields + the blank line
  std::size_t max_headers = 100;        ///< header fields in a head (and in chunked trailers)
  std::size_t max_body = 1 << 20;       ///< decoded body bytes (Content-Length or chunked)
};

/// The largest body Limits::max_body may be (progress packs a body size into 29 bits).
inline constexpr std::size_t kMaxBodyLimit = std::size_t{256} << 20;
/// Bytes of blank lines tolerated before a request line (RFC 9112 2.2 says to ignore them).
inline constexpr std::size_t kMaxLeadingBlank = 64;

/// What the server needs of a request head. Views point into the parsed bytes.
struct RequestHead {
  std::string_view method;
  std::string_view target;        ///< as sent (origin-form, absolute-form, ...)
  std::string_view content_type;  ///< empty when absent
  std::uint8_t minor = 1;         ///< HTTP/1.<minor>: 0 or 1
  bool has_content_length = false;
  bool chunked = false;           ///< Transfer-Encoding: chunked
  bool conn_close = false;        ///< a "close" token in Connection
  bool conn_keep_alive = false;   ///< a "keep-alive" token in Connection
  bool expect_continue = false;   ///< Expect: 100-continue
  std::uint64_t content_length = 0;
  std::size_t head_len = 0;       ///< bytes of the head, up to and including the blank line
  std::size_t header_count = 0;

  /// Whether the connection stays open after the response (RFC 9112 9.3).
  bool keep_alive() const { return minor >= 1 ? !conn_close : (conn_keep_alive && !conn_close); }
};

/// Parses a head that starts at input[0] (a request line) and ends with its blank line,
/// which must lie in `input` (bytes after it are ignored). Returns nullptr and fills `out`, or
/// returns why the head is refused, as a literal starting with the HTTP status to answer:
/// "400 ...", "413 ...", "431 ...", "501 ...", "505 ...".
const char* parse_head(std::string_view input, const Limits& limits, RequestHead& out);

/// Decodes a chunked body that the decoder already validated (chunks, extensions, trailers)
/// into `out` (appended). Returns false if `encoded` is not a complete chunked body.
bool dechunk(std::string_view encoded, std::string& out);

/// ASCII case-insensitive equality of `a` with `lower`, which is lowercase.
bool iequals(std::string_view a, std::string_view lower);

#ifdef ESOCKETS_HTTP_COUNT_WORK
/// Test-only (single-threaded tests): bytes examined by the decoder and the head parser.
extern std::uint64_t g_work;
#define ESOCKETS_HTTP_WORK(n) (::esockets::http::g_work += (n))
#else
#define ESOCKETS_HTTP_WORK(n) ((void)0)
#endif

}  // namespace esockets::http

// esockets-http — response formatting into a per-thread buffer, and the per-thread Date.
// Thread: every function works on the calling thread's own buffers (thread_local); the views
// returned stay valid until the next call on the same thread.
#pragma once

#include <cstddef>
#include <string_view>

namespace esockets::http {

/// The Connection header a response carries.
enum class ConnHeader : unsigned char {
  none,        ///< HTTP/1.1 keep-alive: nothing to say
  keep_alive,  ///< an HTTP/1.0 client asked for keep-alive and gets it
  close,       ///< the server closes after this response
};

/// This thread's Date header value, e.g. "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 IMF-fixdate),
/// computed on first use and then only by refresh_date().
std::string_view http_date();
/// Recomputes this thread's Date from the clock (each handler thread's one-second tick).
void refresh_date();

/// The reason phrase of a status code ("OK", "Not Found", ...).
std::string_view reason_phrase(int status);

/// A complete response: status line, Server, Date, Content-Type (if not empty), Content-Length,
/// `extra_headers` (whole lines, each ending in CRLF), Connection (per `conn`), and the body
/// unless `head_only` (a HEAD request gets the headers a GET would).
std::string_view format_response(int status, std::string_view content_type, std::string_view body,
                                 ConnHeader conn, bool head_only = false,
                                 std::string_view extra_headers = {});

}  // namespace esockets::http

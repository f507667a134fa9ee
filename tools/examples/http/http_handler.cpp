// esockets-http — routes and error replies.
#include "http_handler.hpp"

#include <cstdio>
#include <string>

#include "http_response.hpp"

namespace esockets::http {
namespace {

constexpr std::string_view kHello = "Hello, World!";
constexpr std::string_view kJson = "{\"message\":\"Hello, World!\"}";
constexpr std::string_view kTextPlain = "text/plain";
constexpr std::string_view kAppJson = "application/json";

// user_data marker: this connection answered a request that ends it; it reads no more.
char g_closing_marker;

enum class Route { plaintext, json, stats, echo, none };

Route find_route(std::string_view path) {
  if (path == "/plaintext") return Route::plaintext;
  if (path == "/json") return Route::json;
  if (path == "/stats") return Route::stats;
  if (path == "/echo") return Route::echo;
  return Route::none;
}

void send_error(Connection& conn, int status, std::string_view allow = {}) {
  std::string body(reason_phrase(status));
  body.push_back('\n');
  std::string extra;
  if (!allow.empty()) {
    extra = "Allow: ";
    extra.append(allow);
    extra.append("\r\n");
  }
  (void)conn.send(format_response(status, kTextPlain, body, ConnHeader::close, false, extra));
}

}  // namespace

int status_for_reason(std::string_view reason) {
  if (reason == "frame_too_long") return 413;
  if (reason.size() >= 4 && reason[3] == ' ' && reason[0] >= '1' && reason[0] <= '5') {
    int s = 0;
    for (int i = 0; i < 3; ++i) {
      if (reason[i] < '0' || reason[i] > '9') return 400;
      s = s * 10 + (reason[i] - '0');
    }
    return s;
  }
  return 400;
}

std::string_view route_path(std::string_view target) {
  if (!target.empty() && target.front() != '/') {
    // absolute-form: scheme "://" authority path
    const std::size_t scheme = target.find("://");
    if (scheme == std::string_view::npos) return target;  // "*" or authority-form: no route
    const std::size_t slash = target.find('/', scheme + 3);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  const std::size_t q = target.find_first_of("?#");
  return q == std::string_view::npos ? target : target.substr(0, q);
}

void HttpHandler::on_message_recv(Connection& conn, Bytes msg) {
  if (conn.user_data() == &g_closing_marker) return;  // pipelined after a closing response
  RequestHead req;
  if (const char* err = parse_head(msg, limits_, req)) {
    // The decoder parsed this same head, so this is a bug rather than a client error.
    send_error(conn, status_for_reason(err));
    conn.set_user_data(&g_closing_marker);
    (void)conn.close();
    return;
  }
  const bool keep = req.keep_alive();
  const ConnHeader ch = !keep ? ConnHeader::close
                              : (req.minor == 0 ? ConnHeader::keep_alive : ConnHeader::none);
  const bool is_get = req.method == "GET";
  const bool is_head = req.method == "HEAD";
  std::string_view response;
  const Route route = find_route(route_path(req.target));
  switch (route) {
    case Route::plaintext:
    case Route::json:
    case Route::stats:
      if (!is_get && !is_head) {
        response = format_response(405, kTextPlain, "Method Not Allowed\n", ch, is_head,
                                   "Allow: GET, HEAD\r\n");
      } else if (route == Route::plaintext) {
        response = format_response(200, kTextPlain, kHello, ch, is_head);
      } else if (route == Route::json) {
        response = format_response(200, kAppJson, kJson, ch, is_head);
      } else {
        const std::string body = stats_json(conn.server().stats());
        response = format_response(200, kAppJson, body, ch, is_head);
      }
      break;
    case Route::echo: {
      if (req.method != "POST") {
        response = format_response(405, kTextPlain, "Method Not Allowed\n", ch, is_head,
                                   "Allow: POST\r\n");
        break;
      }
      std::string_view body = msg.substr(req.head_len);
      thread_local std::string t_body;
      if (req.chunked) {
        t_body.clear();
        if (!dechunk(body, t_body)) {
          send_error(conn, 400);
          conn.set_user_data(&g_closing_marker);
          (void)conn.close();
          return;
        }
        body = t_body;
      } else {
        body = body.substr(0, static_cast<std::size_t>(req.content_length));
      }
      const std::string_view type =
          req.content_type.empty() ? std::string_view("application/octet-stream") : req.content_type;
      response = format_response(200, type, body, ch);
      if (t_body.capacity() > 64 * 1024) std::string().swap(t_body);
      break;
    }
    case Route::none:
      response = format_response(404, kTextPlain, "Not Found\n", ch, is_head);
      break;
  }
  (void)conn.send(response);
  if (!keep) {
    conn.set_user_data(&g_closing_marker);
    (void)conn.close();
  }
}

void HttpHandler::on_framing_error(Connection& conn, std::string_view reason) {
  if (conn.user_data() == &g_closing_marker) return;  // already answered and closing
  conn.set_user_data(&g_closing_marker);
  send_error(conn, status_for_reason(reason));
}

void HttpHandler::on_warning(std::string_view message) {
  if (log_warnings_) {
    std::fprintf(stderr, "esockets-http: warning: %.*s\n", static_cast<int>(message.size()),
                 message.data());
  }
}

}  // namespace esockets::http

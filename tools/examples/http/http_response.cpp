// esockets-http — responses. The buffer is thread_local and reused, so a response costs no
// heap allocation once the buffer has grown to the largest response the thread sent (it is
// shrunk again after an unusually large one, a big POST /echo).
#include "http_response.hpp"

#include <charconv>
#include <ctime>
#include <string>

namespace esockets::http {
namespace {

constexpr std::size_t kDateLen = 29;  // "Sun, 06 Nov 1994 08:49:37 GMT"
constexpr std::size_t kKeepCapacity = 64 * 1024;

struct DateCache {
  char text[kDateLen + 1] = {};
  bool valid = false;
};
thread_local DateCache t_date;
thread_local std::string t_out;

void append_number(std::string& out, std::size_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

}  // namespace

void refresh_date() {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  // Formatted by hand: strftime's %a/%b follow the locale; HTTP dates are always English.
  char* t = t_date.text;
  auto two = [](char* at, int v) {
    at[0] = static_cast<char>('0' + v / 10);
    at[1] = static_cast<char>('0' + v % 10);
  };
  std::string_view day = kDays[tm.tm_wday], mon = kMonths[tm.tm_mon];
  day.copy(t, 3);
  t[3] = ',';
  t[4] = ' ';
  two(t + 5, tm.tm_mday);
  t[7] = ' ';
  mon.copy(t + 8, 3);
  t[11] = ' ';
  const int year = tm.tm_year + 1900;
  two(t + 12, (year / 100) % 100);
  two(t + 14, year % 100);
  t[16] = ' ';
  two(t + 17, tm.tm_hour);
  t[19] = ':';
  two(t + 20, tm.tm_min);
  t[22] = ':';
  two(t + 23, tm.tm_sec);
  std::string_view(" GMT").copy(t + 25, 4);
  t[kDateLen] = '\0';
  t_date.valid = true;
}

std::string_view http_date() {
  if (!t_date.valid) refresh_date();
  return {t_date.text, kDateLen};
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string_view format_response(int status, std::string_view content_type, std::string_view body,
                                 ConnHeader conn, bool head_only, std::string_view extra_headers) {
  std::string& out = t_out;
  if (out.capacity() > kKeepCapacity && body.size() < kKeepCapacity / 2) {
    std::string().swap(out);
  }
  out.clear();
  out.append("HTTP/1.1 ");
  append_number(out, static_cast<std::size_t>(status));
  out.push_back(' ');
  out.append(reason_phrase(status));
  out.append("\r\nServer: esockets\r\nDate: ");
  out.append(http_date());
  if (!content_type.empty()) {
    out.append("\r\nContent-Type: ");
    out.append(content_type);
  }
  out.append("\r\nContent-Length: ");
  append_number(out, body.size());
  out.append("\r\n");
  out.append(extra_headers);
  if (conn == ConnHeader::close) {
    out.append("Connection: close\r\n");
  } else if (conn == ConnHeader::keep_alive) {
    out.append("Connection: keep-alive\r\n");
  }
  out.append("\r\n");
  if (!head_only) out.append(body);
  return out;
}

}  // namespace esockets::http

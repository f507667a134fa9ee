// esockets-redis — appending RESP2 replies to a buffer.
// Thread: free functions on the caller's buffer.
#pragma once

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

namespace esockets::redis::resp {

inline void integer_to(std::string& out, std::int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

/// "+<s>\r\n"
inline void simple(std::string& out, std::string_view s) {
  out += '+';
  out += s;
  out += "\r\n";
}
inline void ok(std::string& out) { out += "+OK\r\n"; }

/// "-<s>\r\n"; CR and LF inside become spaces, as redis's addReplyErrorFormat does.
inline void error(std::string& out, std::string_view s) {
  out += '-';
  const std::size_t at = out.size();
  out += s;
  for (std::size_t i = at; i < out.size(); ++i) {
    if (out[i] == '\r' || out[i] == '\n') out[i] = ' ';
  }
  out += "\r\n";
}

/// ":<v>\r\n"
inline void integer(std::string& out, std::int64_t v) {
  out += ':';
  integer_to(out, v);
  out += "\r\n";
}

/// "$<len>\r\n<s>\r\n"
inline void bulk(std::string& out, std::string_view s) {
  out += '$';
  integer_to(out, static_cast<std::int64_t>(s.size()));
  out += "\r\n";
  out += s;
  out += "\r\n";
}
inline void null_bulk(std::string& out) { out += "$-1\r\n"; }

/// "*<n>\r\n" (then n replies)
inline void array(std::string& out, std::size_t n) {
  out += '*';
  integer_to(out, static_cast<std::int64_t>(n));
  out += "\r\n";
}

}  // namespace esockets::redis::resp

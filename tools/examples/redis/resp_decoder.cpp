// RESP framing: see resp_decoder.hpp. Error texts are redis-server 7.0's (networking.c),
// except where noted.
#include "resp_decoder.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <climits>
#include <cstring>

namespace esockets::redis {
namespace {

// progress, for a multibulk request: 0 before its header is parsed; then the offset of the
// next element header (low 32 bits, never 0: the header takes at least 4 bytes) and the
// number of elements left (high 32 bits). For an inline request: bytes known to hold no '\n'.
constexpr std::uint64_t pack(std::size_t pos, std::uint64_t left) { return (left << 32) | pos; }

enum class Num { ok, need_more, bad };

// Scans "<integer>\r\n" at input[at...] eagerly, with string2ll's rules, so that a bad header
// is rejected as soon as its first wrong byte arrives and a header is never longer than 22
// bytes: rescanning one after need_more costs O(1).
Num scan_number(Bytes in, std::size_t at, std::int64_t& value, std::size_t& end,
                std::size_t* work) {
  bool neg = false;
  std::uint64_t v = 0;
  std::size_t digits = 0;
  bool zero = false;  // the number is "0": only "\r" may follow
  std::size_t i = at;
  for (; i < in.size(); ++i) {
    if (work != nullptr) ++*work;
    const char c = in[i];
    if (c == '\r') {
      if (digits == 0) return Num::bad;
      if (i + 1 >= in.size()) return Num::need_more;
      if (work != nullptr) ++*work;
      if (in[i + 1] != '\n') return Num::bad;
      end = i + 2;
      value = neg ? static_cast<std::int64_t>(0 - v) : static_cast<std::int64_t>(v);
      return Num::ok;
    }
    if (c == '-' && i == at) {
      neg = true;
      continue;
    }
    if (c < '0' || c > '9' || zero) return Num::bad;
    if (c == '0' && digits == 0) {
      if (neg) return Num::bad;  // "-0" and "-01" are not numbers for string2ll
      zero = true;
    }
    const std::uint64_t limit = neg ? std::uint64_t{1} << 63 : (std::uint64_t{1} << 63) - 1;
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (v > (limit - d) / 10) return Num::bad;
    v = v * 10 + d;
    ++digits;
  }
  return Num::need_more;
}

// "expected '$', got 'X'" for every byte X, as static strings (Decoded::reason must be).
const char* expected_dollar(unsigned char got) {
  static const auto table = [] {
    std::array<std::array<char, 24>, 256> t{};
    for (std::size_t c = 0; c < 256; ++c) {
      std::memcpy(t[c].data(), "expected '$', got ' '", 22);
      t[c][19] = static_cast<char>(c);  // a NUL cuts the text short, as redis's %c does
    }
    return t;
  }();
  return table[got].data();
}

Decoded decode_multibulk(Bytes in, std::uint64_t& progress, const RespLimits& lim,
                         std::size_t* work) {
  std::size_t pos;
  std::uint64_t left;
  if (progress == 0) {
    std::int64_t count = 0;
    std::size_t end = 0;
    switch (scan_number(in, 1, count, end, work)) {
      case Num::need_more:
        return Decoded::need_more(in.size() + 1);
      case Num::bad:
        return Decoded::malformed("invalid multibulk length");
      case Num::ok:
        break;
    }
    if (count <= 0) return Decoded::message(end, end, 0);  // "*0", "*-1": nothing to run
    // Every element takes at least 6 bytes ("$0\r\n\r\n"): a count that cannot fit in
    // max_request is refused now (redis accepts up to INT_MAX and waits).
    if (count > INT_MAX || static_cast<std::uint64_t>(count) > lim.max_request / 6) {
      return Decoded::malformed("invalid multibulk length");
    }
    pos = end;
    left = static_cast<std::uint64_t>(count);
  } else {
    pos = static_cast<std::size_t>(progress & 0xffffffffu);
    left = progress >> 32;
  }
  while (left > 0) {
    if (pos >= in.size()) {
      progress = pack(pos, left);
      return Decoded::need_more(pos + 1);
    }
    if (work != nullptr) ++*work;
    if (in[pos] != '$') return Decoded::malformed(expected_dollar(static_cast<unsigned char>(in[pos])));
    std::int64_t len = 0;
    std::size_t end = 0;
    switch (scan_number(in, pos + 1, len, end, work)) {
      case Num::need_more:
        progress = pack(pos, left);
        return Decoded::need_more(in.size() + 1);
      case Num::bad:
        return Decoded::malformed("invalid bulk length");
      case Num::ok:
        break;
    }
    if (len < 0 || static_cast<std::uint64_t>(len) > lim.max_request) {
      return Decoded::malformed("invalid bulk length");
    }
    const std::size_t next = end + static_cast<std::size_t>(len) + 2;
    if (next > lim.max_request) {
      // Not a redis text: redis has no bound on a whole request below its 1 GB query buffer.
      return Decoded::malformed("request larger than the server's max frame");
    }
    if (next > in.size()) {
      progress = pack(pos, left);  // the header is rescanned next time: at most 22 bytes
      return Decoded::need_more(next);
    }
    if (work != nullptr) *work += 2;
    // Stricter than redis, which skips the two bytes after the data unchecked.
    if (in[next - 2] != '\r' || in[next - 1] != '\n') {
      return Decoded::malformed("expected CRLF after bulk data");
    }
    pos = next;
    --left;
  }
  return Decoded::message(pos);
}

Decoded decode_inline(Bytes in, std::uint64_t& progress, const RespLimits& lim,
                      std::size_t* work) {
  // Never wait for more than max_request bytes (the engine would refuse the claim itself).
  const std::size_t max_inline = std::min(lim.max_inline, lim.max_request - 1);
  const std::size_t from = static_cast<std::size_t>(progress);
  const void* nl = from < in.size() ? std::memchr(in.data() + from, '\n', in.size() - from) : nullptr;
  if (nl == nullptr) {
    if (work != nullptr) *work += in.size() - from;
    if (in.size() > max_inline) return Decoded::malformed("too big inline request");
    progress = in.size();
    return Decoded::need_more(in.size() + 1);
  }
  const std::size_t at = static_cast<std::size_t>(static_cast<const char*>(nl) - in.data());
  if (work != nullptr) *work += at + 1 - from;
  if (at > max_inline) return Decoded::malformed("too big inline request");
  std::size_t len = at;
  if (len > 0 && in[len - 1] == '\r') --len;
  if (work != nullptr) *work += len;
  if (!split_inline(in.substr(0, len), nullptr, nullptr)) {
    return Decoded::malformed("unbalanced quotes in request");
  }
  return Decoded::message(at + 1, 0, len);
}

bool is_space(char c) {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Decoded resp_decode(Bytes input, std::uint64_t& progress, const RespLimits& limits,
                    std::size_t* work) {
  if (input.empty()) return Decoded::need_more(1);
  if (input[0] == '*') return decode_multibulk(input, progress, limits, work);
  return decode_inline(input, progress, limits, work);
}

bool parse_int64(std::string_view s, std::int64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  const std::string_view line = s;
  bool neg = false;
  std::uint64_t v = 0;
  std::size_t i = 0;
  if (line[0] == '-') {
    neg = true;
    i = 1;
    if (line.size() == 1) return false;
  }
  if (line[i] == '0') {
    if (neg || line.size() != 1) return false;
    out = 0;
    return true;
  }
  const std::uint64_t limit = neg ? std::uint64_t{1} << 63 : (std::uint64_t{1} << 63) - 1;
  for (; i < line.size(); ++i) {
    const char c = line[i];
    if (c < '0' || c > '9') return false;
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (v > (limit - d) / 10) return false;
    v = v * 10 + d;
  }
  out = neg ? static_cast<std::int64_t>(0 - v) : static_cast<std::int64_t>(v);
  return true;
}

bool split_inline(std::string_view line, std::vector<std::string_view>* argv,
                  std::string* scratch) {
  if (argv != nullptr) {
    argv->clear();
    scratch->clear();
    scratch->reserve(line.size());  // arguments never outgrow the line: views stay valid
  }
  std::size_t i = 0;
  const std::size_t n = line.size();
  while (true) {
    while (i < n && is_space(line[i])) ++i;
    if (i >= n) return true;
    const std::size_t start = scratch != nullptr ? scratch->size() : 0;
    bool in_dq = false, in_sq = false;
    auto put = [&](char c) {
      if (scratch != nullptr) scratch->push_back(c);
    };
    while (true) {
      if (in_dq) {
        if (i >= n) return false;
        if (line[i] == '\\' && i + 3 < n && line[i + 1] == 'x' && hex_value(line[i + 2]) >= 0 &&
            hex_value(line[i + 3]) >= 0) {
          put(static_cast<char>(hex_value(line[i + 2]) * 16 + hex_value(line[i + 3])));
          i += 3;
        } else if (line[i] == '\\' && i + 1 < n) {
          ++i;
          switch (line[i]) {
            case 'n': put('\n'); break;
            case 'r': put('\r'); break;
            case 't': put('\t'); break;
            case 'b': put('\b'); break;
            case 'a': put('\a'); break;
            default: put(line[i]); break;
          }
        } else if (line[i] == '"') {
          if (i + 1 < n && !is_space(line[i + 1])) return false;  // closing quote + non-space
          in_dq = false;
          ++i;
          break;
        } else {
          put(line[i]);
        }
      } else if (in_sq) {
        if (i >= n) return false;
        if (line[i] == '\\' && i + 1 < n && line[i + 1] == '\'') {
          ++i;
          put('\'');
        } else if (line[i] == '\'') {
          if (i + 1 < n && !is_space(line[i + 1])) return false;
          in_sq = false;
          ++i;
          break;
        } else {
          put(line[i]);
        }
      } else {
        if (i >= n || is_space(line[i])) break;
        if (line[i] == '"') {
          in_dq = true;
        } else if (line[i] == '\'') {
          in_sq = true;
        } else {
          put(line[i]);
        }
      }
      ++i;
    }
    if (argv != nullptr) argv->emplace_back(scratch->data() + start, scratch->size() - start);
  }
}

bool parse_request(Bytes request, std::vector<std::string_view>& argv, std::string& scratch) {
  argv.clear();
  if (request.empty()) return false;
  if (request[0] != '*') {
    split_inline(request, &argv, &scratch);
    return !argv.empty();
  }
  // The decoder validated the whole request: walk it without checks.
  std::size_t i = 1;
  std::size_t count = 0;
  while (request[i] != '\r') count = count * 10 + static_cast<std::size_t>(request[i++] - '0');
  i += 2;
  argv.reserve(count);
  for (std::size_t k = 0; k < count; ++k) {
    std::size_t len = 0;
    ++i;  // '$'
    while (request[i] != '\r') len = len * 10 + static_cast<std::size_t>(request[i++] - '0');
    i += 2;
    argv.emplace_back(request.data() + i, len);
    i += len + 2;
  }
  return count > 0;
}

}  // namespace esockets::redis

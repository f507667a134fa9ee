// esockets-http — RequestDecoder. `progress` (per connection, 0 at each request start) packs
// what the decoder must remember between calls for one request:
//   bits 61-63  state (below)
//   bits 32-60  aux: chunked: body bytes so far / trailer: bytes of trailer already searched
//   bits  0-31  pos: head: where the search for the blank line resumes
//                    fixed: the request's total size (head + Content-Length)
//                    chunked: where the next chunk-size line / CRLF / trailer section starts
#include "http_decoder.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace esockets::http {
namespace {

enum State : unsigned { kHead = 0, kFixed = 1, kChunkLine = 2, kChunkCrlf = 3, kTrailer = 4 };

constexpr std::uint64_t kPosMask = 0xffffffffu;
constexpr std::uint64_t kAuxMask = (std::uint64_t{1} << 29) - 1;

std::uint64_t pack(unsigned state, std::size_t aux, std::size_t pos) {
  return (std::uint64_t{state} << 61) | ((std::uint64_t{aux} & kAuxMask) << 32) |
         (std::uint64_t{pos} & kPosMask);
}

// Looks for the end of a header block (a line break followed by an empty line) in
// p[resume, window). Returns the offset just past the empty line, or 0 with `resume` set to
// where the next call should continue (the last unresolved '\n', examined again then).
std::size_t find_block_end(const char* p, std::size_t window, std::size_t& resume) {
  std::size_t i = resume;
  while (i < window) {
    const void* nl = std::memchr(p + i, '\n', window - i);
    if (nl == nullptr) {
      ESOCKETS_HTTP_WORK(window - i);
      resume = window;
      return 0;
    }
    const auto j = static_cast<std::size_t>(static_cast<const char*>(nl) - p);
    ESOCKETS_HTTP_WORK(j + 1 - i);
    if (j + 1 >= window) {
      resume = j;
      return 0;
    }
    if (p[j + 1] == '\n') return j + 2;
    if (p[j + 1] == '\r') {
      if (j + 2 >= window) {
        resume = j;
        return 0;
      }
      if (p[j + 2] == '\n') return j + 3;
    }
    i = j + 1;
  }
  resume = i;
  return 0;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  const char l = static_cast<char>(c | 0x20);
  if (l >= 'a' && l <= 'f') return l - 'a' + 10;
  return -1;
}

}  // namespace

RequestDecoder::RequestDecoder(Limits limits) : limits_(limits) {
  if (limits_.max_header_bytes == 0 || limits_.max_header_bytes > (std::size_t{1} << 24)) {
    throw std::invalid_argument("max_header_bytes must be between 1 and 16777216");
  }
  if (limits_.max_headers == 0) throw std::invalid_argument("max_headers must be at least 1");
  if (limits_.max_body > kMaxBodyLimit) {
    throw std::invalid_argument("max_body must be at most " + std::to_string(kMaxBodyLimit));
  }
  // Head, then a chunked body whose framing may take as much again as its data (1-byte
  // chunks are refused past that: 413), then trailers as large as a head.
  max_message_ = 2 * limits_.max_header_bytes + 2 * limits_.max_body + 65536;
}

Decoded RequestDecoder::decode(Bytes in, std::uint64_t& progress) const {
  const auto state = static_cast<unsigned>(progress >> 61);
  const std::size_t pos = progress & kPosMask;
  switch (state) {
    case kHead:
      return decode_head(in, progress);
    case kFixed:
      return in.size() >= pos ? Decoded::message(pos) : Decoded::need_more(pos);
    default:
      return decode_chunked(in, progress, state, pos, (progress >> 32) & kAuxMask);
  }
}

Decoded RequestDecoder::decode_head(Bytes in, std::uint64_t& progress) const {
  const char* p = in.data();
  std::size_t resume = progress & kPosMask;
  if (resume == 0) {
    // Blank lines before a request line belong to it (parse_head skips them); the search
    // for the blank line that ends the head starts after them. Rescanned while nothing else
    // arrived, at most kMaxLeadingBlank bytes.
    std::size_t k = 0;
    while (k < in.size() && k <= kMaxLeadingBlank) {
      if (p[k] == '\n') {
        ++k;
      } else if (p[k] == '\r' && (k + 1 == in.size() || p[k + 1] == '\n')) {
        if (k + 1 == in.size()) return Decoded::need_more(k + 2);
        k += 2;
      } else {
        break;
      }
    }
    ESOCKETS_HTTP_WORK(k);
    if (k > kMaxLeadingBlank) return Decoded::malformed("400 too many blank lines before the request");
    if (k == in.size()) return Decoded::need_more(k + 1);
    resume = k;
  }
  const std::size_t window = std::min(in.size(), limits_.max_header_bytes);
  const std::size_t end = find_block_end(p, window, resume);
  if (end == 0) {
    if (in.size() >= limits_.max_header_bytes) {
      if (std::memchr(p, '\n', window) == nullptr) return Decoded::malformed("414 request line too long");
      return Decoded::malformed("431 request header fields too large");
    }
    progress = pack(kHead, 0, resume);
    return Decoded::need_more();
  }
  RequestHead head;
  if (const char* err = parse_head(in.substr(0, end), limits_, head)) return Decoded::malformed(err);
  if (head.chunked) return decode_chunked(in, progress, kChunkLine, end, 0);
  if (head.content_length == 0) return Decoded::message(end);
  const std::size_t total = end + static_cast<std::size_t>(head.content_length);  // <= max_body
  if (in.size() >= total) return Decoded::message(total);
  progress = pack(kFixed, 0, total);
  return Decoded::need_more(total);
}

Decoded RequestDecoder::decode_chunked(Bytes in, std::uint64_t& progress, unsigned state,
                                       std::size_t pos, std::size_t aux) const {
  const char* p = in.data();
  const std::size_t n = in.size();
  while (true) {
    if (pos + 2 > max_message_) return Decoded::malformed("413 chunked body framing too large");
    switch (state) {
      case kChunkLine: {
        const std::size_t window = std::min(n, pos + kMaxChunkLine);
        const void* nl = pos < window ? std::memchr(p + pos, '\n', window - pos) : nullptr;
        if (nl == nullptr) {
          ESOCKETS_HTTP_WORK(window > pos ? window - pos : 0);
          if (n >= pos + kMaxChunkLine) return Decoded::malformed("400 chunk size line too long");
          progress = pack(kChunkLine, aux, pos);
          return Decoded::need_more(std::max(n, pos) + 1);
        }
        const auto eol = static_cast<std::size_t>(static_cast<const char*>(nl) - p);
        ESOCKETS_HTTP_WORK(eol + 1 - pos);
        if (eol == pos || p[eol - 1] != '\r') return Decoded::malformed("400 chunk size line needs CRLF");
        std::size_t i = pos;
        std::uint64_t size = 0;
        for (int d; i < eol - 1 && (d = hex_value(p[i])) >= 0; ++i) {
          size = size * 16 + static_cast<std::uint64_t>(d);
          if (size > limits_.max_body) return Decoded::malformed("413 content too large");
        }
        if (i == pos) return Decoded::malformed("400 malformed chunk size");
        // chunk-ext: BWS ";" ... up to the CR; no control characters (HT allowed).
        while (i < eol - 1 && (p[i] == ' ' || p[i] == '\t')) ++i;
        if (i < eol - 1 && p[i] != ';') return Decoded::malformed("400 malformed chunk size");
        for (; i < eol - 1; ++i) {
          const auto u = static_cast<unsigned char>(p[i]);
          if ((u < 0x20 && p[i] != '\t') || u == 0x7f) return Decoded::malformed("400 malformed chunk extension");
        }
        aux += static_cast<std::size_t>(size);
        if (aux > limits_.max_body) return Decoded::malformed("413 content too large");
        if (size == 0) {
          state = kTrailer;
          pos = eol + 1;
          aux = 0;
        } else {
          state = kChunkCrlf;
          pos = eol + 1 + static_cast<std::size_t>(size);
        }
        break;
      }
      case kChunkCrlf:
        if (n < pos + 2) {
          progress = pack(kChunkCrlf, aux, pos);
          return Decoded::need_more(pos + 2);
        }
        if (p[pos] != '\r' || p[pos + 1] != '\n') return Decoded::malformed("400 chunk data not followed by CRLF");
        pos += 2;
        state = kChunkLine;
        break;
      default: {  // kTrailer: pos = start of the trailer section, aux = bytes searched
        if (aux == 0) {  // an empty trailer section: just the final CRLF
          if (n <= pos) {
            progress = pack(kTrailer, 0, pos);
            return Decoded::need_more(pos + 1);
          }
          if (p[pos] == '\n') return Decoded::message(pos + 1);
          if (p[pos] == '\r') {
            if (n < pos + 2) {
              progress = pack(kTrailer, 0, pos);
              return Decoded::need_more(pos + 2);
            }
            if (p[pos + 1] == '\n') return Decoded::message(pos + 2);
          }
        }
        const std::size_t window = std::min(n, pos + limits_.max_header_bytes);
        std::size_t resume = pos + aux;
        const std::size_t end = find_block_end(p, window, resume);
        if (end != 0) return Decoded::message(end);
        if (n >= pos + limits_.max_header_bytes) return Decoded::malformed("431 trailer fields too large");
        progress = pack(kTrailer, resume - pos, pos);  // resume > pos: p[pos] is no line break
        return Decoded::need_more(n + 1);
      }
    }
  }
}

}  // namespace esockets::http

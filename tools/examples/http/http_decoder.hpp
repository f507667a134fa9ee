// esockets-http — RequestDecoder: where one HTTP/1.1 request ends in a connection's input.
//
// It finds the blank line that ends the head, parses the head once (parse_head) for the body
// length, and then either waits for Content-Length bytes (need_more(head + length): the engine
// does not call again until they arrived) or walks the chunked body. Every limit is enforced
// as soon as it is known: a head longer than max_header_bytes is refused once that many bytes
// arrived without its end (431, or 414 when not even the request line ended), a Content-Length
// over max_body before any of the body arrives (413), a chunk that would take the body over
// max_body as soon as its size line arrives (413).
//
// Linear: the per-connection `progress` remembers where the search for the blank line
// stopped, and for a chunked body where the next chunk starts, so each input byte is
// examined a bounded number of times however the input is split (a chunk-size line, at most
// kMaxChunkLine bytes, is rescanned while incomplete).
//
// Thread: decode() is const and keeps no state of its own; any shard thread may call it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "esockets/decoder.hpp"
#include "http_request.hpp"

namespace esockets::http {

/// A chunk-size line (hex size, extensions, CRLF) longer than this is malformed (400).
inline constexpr std::size_t kMaxChunkLine = 256;

class RequestDecoder final : public Decoder {
 public:
  /// Throws std::invalid_argument if a limit is 0 or max_body is over kMaxBodyLimit.
  explicit RequestDecoder(Limits limits);

  /// Decoded::message(n) for one request of n bytes (head and body as received, leading blank
  /// lines included), need_more, or malformed with a reason starting with the status to answer.
  Decoded decode(Bytes input, std::uint64_t& progress) const override;

  /// The most input one accepted request can take (head, chunk framing, trailers): the value
  /// for ServerOptions::max_frame.
  std::size_t max_message_bytes() const { return max_message_; }
  const Limits& limits() const { return limits_; }

 private:
  Decoded decode_head(Bytes in, std::uint64_t& progress) const;
  Decoded decode_chunked(Bytes in, std::uint64_t& progress, unsigned state, std::size_t pos,
                         std::size_t aux) const;

  Limits limits_;
  std::size_t max_message_;
};

}  // namespace esockets::http

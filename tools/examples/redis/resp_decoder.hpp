// esockets-redis — RESP request framing and parsing.
//
// RespDecoder tells the engine where each request ends in a connection's input: a RESP2
// multibulk ("*<n>\r\n" then n "$<len>\r\n<bytes>\r\n") or an inline command (a line, as
// telnet and `nc` send it). It keeps its place in the engine's per-connection `progress`
// word, so every byte is examined a bounded number of times however the input is split.
// parse_request() then cuts a delivered request into its arguments.
//
// Thread: RespDecoder is immutable after construction; decode() runs on any shard thread.
// parse_request() touches only its arguments.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "esockets/decoder.hpp"

namespace esockets::redis {

/// Limits of one request.
struct RespLimits {
  /// Largest bulk string, and largest request (bytes of input one request takes). Redis's
  /// proto-max-bulk-len is 512 MB; esockets-redis defaults to 64 MB (--max-frame).
  std::size_t max_request = std::size_t{64} << 20;
  /// Longest inline command line (redis: PROTO_INLINE_MAX_SIZE, 64 KB).
  std::size_t max_inline = 64 * 1024;
};

/// Finds the end of the request at the start of `input` (see esockets::Decoder). When `work`
/// is given, adds the number of input bytes examined (for the linearity tests).
/// Malformed reasons are redis-server's texts after "Protocol error: ".
Decoded resp_decode(Bytes input, std::uint64_t& progress, const RespLimits& limits,
                    std::size_t* work = nullptr);

class RespDecoder final : public Decoder {
 public:
  explicit RespDecoder(RespLimits limits = {}) : limits_(limits) {}
  Decoded decode(Bytes input, std::uint64_t& progress) const override {
    return resp_decode(input, progress, limits_);
  }
  const RespLimits& limits() const { return limits_; }

 private:
  RespLimits limits_;
};

/// Splits a request the decoder delivered into `argv` (cleared first). Multibulk arguments
/// point into `request`; inline arguments (which may carry quotes and escapes) into
/// `scratch`. Returns false for a request without arguments (an empty line, "*0"): redis
/// ignores those.
bool parse_request(Bytes request, std::vector<std::string_view>& argv, std::string& scratch);

/// Splits an inline command line as redis's sdssplitargs does ("double quotes" with \n \r \t
/// \b \a \\ \" \xHH escapes, 'single quotes' with \'). argv and scratch may be null (only
/// validate). Returns false on unbalanced quotes (or a closing quote not followed by a space).
bool split_inline(std::string_view line, std::vector<std::string_view>* argv,
                  std::string* scratch);

/// redis's string2ll: an optional '-', no leading zeros, no '+', fits in int64.
bool parse_int64(std::string_view s, std::int64_t& out);

}  // namespace esockets::redis

// The built-in framings as Decoders (include/esockets/decoder.hpp): the same rules as
// Framing::line and Framing::length_prefixed, for protocols that combine them or test them.
#include "esockets/decoder.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace esockets {

Decoded LineDecoder::decode(Bytes input, std::uint64_t& progress) const {
  // `progress` = bytes already searched: each byte is searched once however the line arrives,
  // and never more than max_line + 1 bytes of one line.
  const std::size_t window = std::min(input.size(), max_line_ + 1);
  const std::size_t from = std::min<std::size_t>(progress, window);
  const void* d = std::memchr(input.data() + from, static_cast<unsigned char>(delimiter_), window - from);
  if (d == nullptr) {
    progress = window;
    return window > max_line_ ? Decoded::malformed("line_too_long") : Decoded::need_more();
  }
  const auto end = static_cast<std::size_t>(static_cast<const char*>(d) - input.data());
  return Decoded::message(end + 1, 0, end);
}

LengthPrefixDecoder::LengthPrefixDecoder(unsigned prefix_bytes, std::size_t max_payload)
    : prefix_bytes_(prefix_bytes), max_payload_(max_payload) {
  if (prefix_bytes != 1 && prefix_bytes != 2 && prefix_bytes != 4) {
    throw std::invalid_argument("esockets: LengthPrefixDecoder: prefix_bytes must be 1, 2 or 4");
  }
}

Decoded LengthPrefixDecoder::decode(Bytes input, std::uint64_t& progress) const {
  (void)progress;  // the header says everything; nothing to resume
  if (input.size() < prefix_bytes_) return Decoded::need_more(prefix_bytes_);
  std::uint64_t len = 0;
  for (unsigned i = 0; i < prefix_bytes_; ++i) len = (len << 8) | static_cast<unsigned char>(input[i]);
  if (len > max_payload_) return Decoded::malformed("frame_too_long");
  const std::size_t total = prefix_bytes_ + static_cast<std::size_t>(len);
  if (input.size() < total) return Decoded::need_more(total);
  return Decoded::message(total, prefix_bytes_, static_cast<std::size_t>(len));
}

}  // namespace esockets

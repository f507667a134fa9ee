// esockets — Decoder: a protocol's own framing (RESP arrays, HTTP requests, ...).
//
// With ServerOptions::framing = Framing::custom, the engine asks options.decoder where the next
// message ends in a connection's buffered input. The engine keeps what it does for the built-in
// framings: messages lying wholly in one read are handed to on_message_recv straight from the
// read buffer (no copy); only an unfinished message is buffered, and that buffer grows with the
// bytes that arrived, never with what a header claims; a message longer than
// options.max_frame is rejected before anything is allocated for it.
//
// Thread: decode() runs on the shard thread that reads the connection (the thread that runs the
// handlers with workers == 0), for one connection at a time, but for many connections on
// several shards at once: it must be const in effect (keep per-connection scanning state in
// `progress`, not in the decoder). It must not throw and must not block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "esockets/types.hpp"

namespace esockets {

/// What a decoder found at the start of the buffered input.
struct Decoded {
  /// What the decoder found.
  enum class Status : std::uint8_t {
    complete,   ///< a message: `consumed` bytes leave the input; [offset, offset+length) is it
    need_more,  ///< the input holds only the start of a message
    malformed,  ///< the input cannot be a message: the connection closes (framing_error)
  };
  Status status = Status::need_more;  ///< complete, need_more or malformed
  std::size_t consumed = 0;  ///< complete: bytes of input the message takes (at least 1)
  std::size_t offset = 0;    ///< complete: where the delivered message starts within them
  std::size_t length = 0;    ///< complete: its length (offset + length <= consumed)
  /// need_more: the total input size the message needs at least, when known (0 = unknown). The
  /// engine calls again only once that much has arrived, and rejects the message at once when
  /// it is over options.max_frame. It allocates nothing for the claim.
  std::size_t at_least = 0;
  /// malformed: why, as a string with static storage (a literal). Passed to
  /// Handler::on_framing_error and to on_warning.
  const char* reason = nullptr;

  /// The first `n` bytes are one message, delivered whole.
  static constexpr Decoded message(std::size_t n) { return {Status::complete, n, 0, n, 0, nullptr}; }
  /// The first `consumed` bytes are one message; deliver only [offset, offset + length) of
  /// them (to leave out a header or a delimiter).
  static constexpr Decoded message(std::size_t consumed, std::size_t offset, std::size_t length) {
    return {Status::complete, consumed, offset, length, 0, nullptr};
  }
  /// The input holds only the start of a message; call again once `at_least` bytes are
  /// buffered (0: as soon as anything more arrives).
  static constexpr Decoded need_more(std::size_t at_least = 0) {
    return {Status::need_more, 0, 0, 0, at_least, nullptr};
  }
  /// The input cannot be a message; `reason` must have static storage (a literal).
  static constexpr Decoded malformed(const char* reason) {
    return {Status::malformed, 0, 0, 0, 0, reason};
  }
};

/// Where the messages of a connection end, for ServerOptions::framing == Framing::custom.
/// Implement decode(); one instance serves every connection of the server (shared, const).
class Decoder {
 public:
  /// Destroyed when the last Server holding it (through ServerOptions::decoder) is.
  virtual ~Decoder() = default;
  /// Looks at `input`, which starts where the previous message ended (the view is valid only
  /// during the call). `progress` is per-connection scratch: 0 when a message starts, kept by
  /// the engine (also across a shard hand-over) while decode() keeps answering need_more for
  /// the same message, so that a decoder can resume its scan where it stopped instead of
  /// rescanning the whole input each time more arrives.
  virtual Decoded decode(Bytes input, std::uint64_t& progress) const = 0;
};

/// Framing::line as a decoder: messages end with `delimiter` (not delivered); a line longer
/// than `max_line` bytes is malformed ("line_too_long"). Scans each byte once.
class LineDecoder final : public Decoder {
 public:
  /// Messages end with `delimiter`; lines longer than `max_line` bytes are malformed.
  explicit LineDecoder(char delimiter = '\n', std::size_t max_line = 1024 * 1024)
      : delimiter_(delimiter), max_line_(max_line) {}
  Decoded decode(Bytes input, std::uint64_t& progress) const override;

 private:
  char delimiter_;
  std::size_t max_line_;
};

/// Framing::length_prefixed as a decoder: a big-endian header of `prefix_bytes` (1, 2 or 4)
/// bytes, then that many payload bytes (delivered without the header). A header announcing
/// more than `max_payload` is malformed ("frame_too_long").
class LengthPrefixDecoder final : public Decoder {
 public:
  /// Throws std::invalid_argument unless prefix_bytes is 1, 2 or 4.
  explicit LengthPrefixDecoder(unsigned prefix_bytes = 4, std::size_t max_payload = 1024 * 1024);
  Decoded decode(Bytes input, std::uint64_t& progress) const override;

 private:
  unsigned prefix_bytes_;
  std::size_t max_payload_;
};

}  // namespace esockets

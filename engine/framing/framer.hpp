// Framer: cuts a connection's byte stream into messages (raw, line, length-prefixed).
// Thread: a FrameState is owned by its connection's shard thread only; FramerConfig is
// immutable after construction and may be shared.
//
// The state holds heap bytes only while a frame is partial (or input is held back after the
// sink asked to stop); an idle connection's state owns no buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "esockets/decoder.hpp"
#include "esockets/options.hpp"

namespace esockets::detail {

struct FramerConfig {
  Framing kind = Framing::raw;
  char delimiter = '\n';
  unsigned prefix_bytes = 4;          // 1, 2 or 4 (length_prefixed)
  std::size_t max_frame = 1 << 20;    // max line length (without delimiter) / max payload
                                      // (custom: max input one message consumes)
  const Decoder* decoder = nullptr;   // custom only; owned by the server's options
};

enum class FrameError : std::uint8_t {
  none,
  line_too_long,   // no delimiter within max_frame bytes
  frame_too_long,  // length header announces more than max_frame (custom: message over it)
  malformed,       // custom: the decoder rejected the input (Framer::error_reason says why)
};
const char* to_string(FrameError e) noexcept;

enum class FeedStatus : std::uint8_t {
  ok,       // every complete frame was delivered; a partial frame may be buffered
  stopped,  // the sink returned false; undelivered input is buffered for resume()
  error,    // framing error (see FrameState::error()); terminal: no frame is ever delivered again
};

// Per-connection framing state; small (32 bytes), movable, not copyable.
class FrameState {
 public:
  FrameState() = default;
  ~FrameState();
  FrameState(FrameState&& o) noexcept;
  FrameState& operator=(FrameState&& o) noexcept;
  FrameState(const FrameState&) = delete;
  FrameState& operator=(const FrameState&) = delete;

  std::size_t buffered() const { return len_; }    // bytes held (partial frame + held input)
  bool holds_memory() const { return buf_ != nullptr; }
  FrameError error() const { return error_; }
  bool has_pending_frames() const;  // held input that may contain a complete frame (after stop)
  void clear();                     // frees the buffer, keeps the error

 private:
  friend class Framer;
  // Invariants: buf_ == nullptr iff cap_ == 0. When !held_, buf_[0, len_) is at most one
  // partial frame (line: scan_ == len_ <= max_frame). When held_, len_ > 0 and the held bytes
  // are buf_[scan_, scan_ + len_): scan_ is the read offset, so that stopping after every frame
  // of a large held buffer does not memmove the rest each time.
  char* buf_ = nullptr;
  std::uint32_t len_ = 0;
  std::uint32_t cap_ = 0;
  std::uint64_t progress_ = 0;  // custom: the decoder's scratch for the message in the buffer
  std::uint32_t scan_ = 0;   // line: bytes already searched for the delimiter; custom: the
                             // buffered size the decoder waits for (0 = any new byte)
  FrameError error_ = FrameError::none;
  bool held_ = false;        // input was held back by a stop
};
static_assert(sizeof(FrameState) <= 32, "FrameState is embedded in every connection");

#ifdef ESOCKETS_FRAMER_TEST_COUNTERS
// Test-only instrumentation (define the macro for every TU of the test binary, framer.cpp
// included): lets tests prove linear scanning and bounded allocation without timing anything.
struct FramerTestCounters {
  std::uint64_t scanned = 0;             // bytes handed to the delimiter search
  std::uint64_t allocations = 0;         // malloc/realloc calls
  std::uint64_t largest_allocation = 0;  // bytes
};
inline thread_local FramerTestCounters framer_test_counters;
#endif

// The sink: bool(std::string_view frame). The view is valid only during the call. Return
// false to stop delivery (pause, close); nothing is lost: the rest is buffered.
class Framer {
 public:
  explicit Framer(const FramerConfig& cfg) : cfg_(cfg) {}
  const FramerConfig& config() const { return cfg_; }

  // Feeds freshly read bytes. Complete frames that lie wholly in `data` are delivered without
  // copying. After an error, or if state already has an error, returns error and delivers nothing.
  template <class Sink>
  FeedStatus feed(FrameState& st, const char* data, std::size_t len, Sink&& sink);

  // Why the last feed/resume that returned error failed: the decoder's reason for malformed,
  // else to_string(st.error()). Read right after the call (the decoder's text is not stored
  // per connection).
  const char* error_reason(const FrameState& st) const;

  // Delivers frames held back by an earlier stop (call before reading more).
  template <class Sink>
  FeedStatus resume(FrameState& st, Sink&& sink) { return feed(st, nullptr, 0, sink); }

  // Writes the framing of `payload_len` into hdr (length header or nothing) and returns the
  // header size, plus whether a delimiter must follow. Used by send_frame.
  // For length_prefixed, returns SIZE_MAX (and *trailer = false) when payload_len does not fit
  // in prefix_bytes bytes: the payload cannot be framed. hdr needs room for prefix_bytes bytes.
  std::size_t header_for(std::size_t payload_len, char* hdr, bool* trailer) const;

  // Takeover: the input a connection holds, from a frame boundary on (a partial frame, or
  // input held back by a stop), and the way back: restore() holds `input` in an empty state
  // so that the next resume frames it from its start (a decoder's progress starts over).
  static std::string_view unread(const FrameState& st);
  static void restore(FrameState& st, std::string_view input) {
    hold(st, input.data(), input.size());
  }
  // Holds bytes that arrived while the connection was not reading (a completion-based read
  // cannot leave them in the kernel): after what is held or partly framed, to be framed from
  // that frame boundary by the next resume (a decoder's progress starts over).
  static void stash(FrameState& st, const char* p, std::size_t n) {
    if (n == 0 || st.error_ != FrameError::none) return;
    if (!st.held_) st.progress_ = 0;
    append_held(st, p, n);
  }

 private:
  enum class Outcome : std::uint8_t { partial, stopped, too_long, malformed };
  struct Run {
    Outcome outcome;
    std::size_t pos;  // partial: start of the unfinished frame; stopped: first undelivered byte
  };
  enum class Step : std::uint8_t { need_more, complete, failed };

  std::uint32_t max_frame() const;
  std::uint64_t read_length(const char* p) const;
  const char* find_delimiter(const char* p, std::size_t n) const;

  template <class Sink>
  Run run_lines(const char* p, std::size_t n, Sink& sink) const;
  template <class Sink>
  Run run_prefixed(const char* p, std::size_t n, Sink& sink) const;
  template <class Sink>
  Run run_custom(FrameState& st, const char* p, std::size_t n, Sink& sink);
  template <class Sink>
  Run run(FrameState& st, const char* p, std::size_t n, Sink& sink);
  FeedStatus failed(FrameState& st, Outcome o);
  template <class Sink>
  FeedStatus drain_held(FrameState& st, Sink& sink);
  template <class Sink>
  FeedStatus feed_direct(FrameState& st, const char* data, std::size_t len, Sink& sink);

  // Buffer management, out of line (framer.cpp): the slow paths, shared by every sink type.
  Step complete_line(FrameState& st, const char* p, std::size_t n, std::size_t& used) const;
  Step complete_prefixed(FrameState& st, const char* p, std::size_t n, std::size_t& used) const;
  Step complete_custom(FrameState& st, const char* p, std::size_t n, std::size_t& used);
  Step check_decoded(const Decoded& d, std::size_t avail);
  std::string_view buffered_frame(const FrameState& st) const;
  void store_partial(FrameState& st, const char* p, std::size_t n) const;
  void keep_partial(FrameState& st, std::size_t off) const;
  std::uint32_t line_capacity(std::uint32_t n) const;
  void grow_line(FrameState& st, std::uint32_t need) const;
  void grow_prefixed(FrameState& st, std::uint32_t need, std::uint32_t total) const;
  static void hold(FrameState& st, const char* p, std::size_t n);
  static void append_held(FrameState& st, const char* p, std::size_t n);
  static void drop_front(FrameState& st, std::size_t off);
  static void fail(FrameState& st, FrameError e);
  static void resize(FrameState& st, std::uint32_t cap, bool keep);

  FramerConfig cfg_;
  // custom, transient (set by one call, read by the same feed): what the last need_more asked
  // for, where the message completed from the buffer lies, why the input was rejected.
  std::size_t need_ = 0;
  std::size_t msg_off_ = 0;
  std::size_t msg_len_ = 0;
  const char* reason_ = nullptr;
};

}  // namespace esockets::detail

#include "framing/framer_impl.hpp"

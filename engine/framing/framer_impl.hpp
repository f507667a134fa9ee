// Template half of the framer (the parts that call the sink); included by framer.hpp only.
//
// Layout of a feed: (A) frames held back by an earlier stop are delivered from the buffer;
// (B) a buffered partial frame is completed with just the bytes of `data` it needs; (C) the
// rest of `data` is framed in place (zero-copy) and only its trailing partial frame is copied.
// Because (B) searches the new bytes rather than the buffer, a buffered partial line is always
// fully searched already: no byte is ever searched twice.
//
// The sink must not throw and must not feed/resume the same FrameState: frames delivered
// from the held buffer are only dropped from it once the run over it ends.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstring>
#include <string_view>

namespace esockets::detail {

inline std::uint32_t Framer::max_frame() const {
  // Validated to be < 2^31 elsewhere; the clamp only keeps the arithmetic below in range.
  return static_cast<std::uint32_t>(std::min<std::size_t>(cfg_.max_frame, 0x7fffffffU));
}

inline std::uint64_t Framer::read_length(const char* p) const {
  std::uint64_t v = 0;
  for (unsigned i = 0; i < cfg_.prefix_bytes; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

inline const char* Framer::find_delimiter(const char* p, std::size_t n) const {
  const void* d = std::memchr(p, static_cast<unsigned char>(cfg_.delimiter), n);
#ifdef ESOCKETS_FRAMER_TEST_COUNTERS
  framer_test_counters.scanned += d ? static_cast<std::size_t>(static_cast<const char*>(d) - p) + 1 : n;
#endif
  return static_cast<const char*>(d);
}

template <class Sink>
Framer::Run Framer::run_lines(const char* p, std::size_t n, Sink& sink) const {
  const std::size_t window_max = std::size_t{max_frame()} + 1;
  std::size_t pos = 0;
  while (pos < n) {
    // Searching at most max_frame+1 bytes bounds the work on a hostile over-long line too.
    const std::size_t window = std::min(n - pos, window_max);
    const char* d = find_delimiter(p + pos, window);
    if (d == nullptr) return {window == window_max ? Outcome::too_long : Outcome::partial, pos};
    const std::size_t end = static_cast<std::size_t>(d - p);
    const bool go = static_cast<bool>(sink(std::string_view(p + pos, end - pos)));
    pos = end + 1;
    if (!go) return {Outcome::stopped, pos};
  }
  return {Outcome::partial, pos};
}

template <class Sink>
Framer::Run Framer::run_prefixed(const char* p, std::size_t n, Sink& sink) const {
  const std::size_t hdr = cfg_.prefix_bytes;
  std::size_t pos = 0;
  while (n - pos >= hdr) {
    const std::uint64_t len = read_length(p + pos);
    if (len > max_frame()) return {Outcome::too_long, pos};
    if (n - pos - hdr < len) break;
    const bool go = static_cast<bool>(sink(std::string_view(p + pos + hdr, len)));
    pos += hdr + len;
    if (!go) return {Outcome::stopped, pos};
  }
  return {Outcome::partial, pos};
}

template <class Sink>
Framer::Run Framer::run_custom(FrameState& st, const char* p, std::size_t n, Sink& sink) {
  // The decoder sees everything from the message start to the end of the input; its progress
  // scratch lets it resume its scan. A claim (need_more's at_least) only gates the next call.
  std::size_t pos = 0;
  need_ = 0;
  while (pos < n) {
    const std::size_t avail = n - pos;
    const Decoded d = cfg_.decoder->decode(std::string_view(p + pos, avail), st.progress_);
    const Step step = check_decoded(d, avail);
    if (step == Step::failed) return {reason_ != nullptr ? Outcome::malformed : Outcome::too_long, pos};
    if (step == Step::need_more) {
      need_ = d.at_least > avail ? d.at_least : 0;
      return {Outcome::partial, pos};
    }
    st.progress_ = 0;
    const bool go = static_cast<bool>(sink(std::string_view(p + pos + d.offset, d.length)));
    pos += d.consumed;
    if (!go) return {Outcome::stopped, pos};
  }
  return {Outcome::partial, pos};
}

template <class Sink>
Framer::Run Framer::run(FrameState& st, const char* p, std::size_t n, Sink& sink) {
  switch (cfg_.kind) {
    case Framing::line: return run_lines(p, n, sink);
    case Framing::length_prefixed: return run_prefixed(p, n, sink);
    case Framing::custom: return run_custom(st, p, n, sink);
    case Framing::raw: break;
  }
  return {Outcome::partial, 0};  // raw never gets here (feed delivers each read whole)
}

template <class Sink>
FeedStatus Framer::drain_held(FrameState& st, Sink& sink) {
  // Held bytes start at a frame boundary and were never searched, so framing them in place
  // does not rescan anything.
  const char* held = st.buf_ + st.scan_;
  const Run r = run(st, held, st.len_, sink);
  switch (r.outcome) {
    case Outcome::partial:
      keep_partial(st, r.pos);
      return FeedStatus::ok;
    case Outcome::stopped:
      drop_front(st, r.pos);
      return FeedStatus::stopped;
    case Outcome::too_long:
    case Outcome::malformed:
      break;
  }
  return failed(st, r.outcome);
}

template <class Sink>
FeedStatus Framer::feed_direct(FrameState& st, const char* data, std::size_t len, Sink& sink) {
  const Run r = run(st, data, len, sink);
  switch (r.outcome) {
    case Outcome::partial:
      store_partial(st, data + r.pos, len - r.pos);
      return FeedStatus::ok;
    case Outcome::stopped:
      hold(st, data + r.pos, len - r.pos);
      return FeedStatus::stopped;
    case Outcome::too_long:
    case Outcome::malformed:
      break;
  }
  return failed(st, r.outcome);
}

template <class Sink>
FeedStatus Framer::feed(FrameState& st, const char* data, std::size_t len, Sink&& sink) {
  // prefix_bytes 0 would make every position an empty frame: an endless loop.
  assert(cfg_.kind != Framing::length_prefixed || (cfg_.prefix_bytes >= 1 && cfg_.prefix_bytes <= 4));
  if (st.error_ != FrameError::none) return FeedStatus::error;
  if (cfg_.kind == Framing::raw) {
    if (st.held_) {
      // Held input (bytes a completion-based read received while the connection was not
      // reading, or a takeover's carried input) is one message, delivered first.
      const bool go = static_cast<bool>(sink(std::string_view(st.buf_ + st.scan_, st.len_)));
      resize(st, 0, false);
      st.len_ = st.scan_ = 0;
      st.held_ = false;
      if (!go) {
        hold(st, data, len);
        return FeedStatus::stopped;
      }
    }
    if (len == 0) return FeedStatus::ok;
    return static_cast<bool>(sink(std::string_view(data, len))) ? FeedStatus::ok : FeedStatus::stopped;
  }
  if (st.held_) {
    const FeedStatus s = drain_held(st, sink);
    if (s == FeedStatus::stopped && len != 0) append_held(st, data, len);
    if (s != FeedStatus::ok) return s;
  }
  if (len == 0) return FeedStatus::ok;
  std::size_t used = 0;
  if (st.len_ != 0) {
    const Step step = cfg_.kind == Framing::line              ? complete_line(st, data, len, used)
                      : cfg_.kind == Framing::length_prefixed ? complete_prefixed(st, data, len, used)
                                                              : complete_custom(st, data, len, used);
    if (step == Step::need_more) return FeedStatus::ok;
    if (step == Step::failed) return FeedStatus::error;
    const bool go = static_cast<bool>(sink(buffered_frame(st)));
    // The allocation is kept (len_ = 0) so that feed_direct may reuse it for the next partial.
    st.len_ = 0;
    st.scan_ = 0;
    st.progress_ = 0;
    if (!go) {
      hold(st, data + used, len - used);
      return FeedStatus::stopped;
    }
  }
  return feed_direct(st, data + used, len - used, sink);
}

}  // namespace esockets::detail

// Non-template half of the framer: FrameState lifetime and the buffer slow paths.
#include "framing/framer.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

namespace esockets::detail {

const char* to_string(FrameError e) noexcept {
  switch (e) {
    case FrameError::none: return "none";
    case FrameError::line_too_long: return "line_too_long";
    case FrameError::frame_too_long: return "frame_too_long";
    case FrameError::malformed: return "malformed";
  }
  return "unknown";
}

FrameState::~FrameState() { std::free(buf_); }

FrameState::FrameState(FrameState&& o) noexcept
    : buf_(o.buf_), len_(o.len_), cap_(o.cap_), progress_(o.progress_), scan_(o.scan_),
      error_(o.error_), held_(o.held_) {
  o.buf_ = nullptr;
  o.len_ = o.cap_ = o.scan_ = 0;
  o.progress_ = 0;
  o.held_ = false;
}

FrameState& FrameState::operator=(FrameState&& o) noexcept {
  if (this != &o) {
    std::free(buf_);
    buf_ = o.buf_;
    len_ = o.len_;
    cap_ = o.cap_;
    scan_ = o.scan_;
    progress_ = o.progress_;
    error_ = o.error_;
    held_ = o.held_;
    o.buf_ = nullptr;
    o.len_ = o.cap_ = o.scan_ = 0;
    o.progress_ = 0;
    o.held_ = false;
  }
  return *this;
}

bool FrameState::has_pending_frames() const { return held_; }

void FrameState::clear() {
  std::free(buf_);
  buf_ = nullptr;
  len_ = cap_ = scan_ = 0;
  progress_ = 0;
  held_ = false;
}

std::size_t Framer::header_for(std::size_t payload_len, char* hdr, bool* trailer) const {
  if (trailer != nullptr) *trailer = cfg_.kind == Framing::line;
  if (cfg_.kind != Framing::length_prefixed) return 0;
  const unsigned n = cfg_.prefix_bytes;
  if (n == 0 || n > sizeof(std::uint64_t)) return SIZE_MAX;
  std::uint64_t v = payload_len;
  if (n < sizeof(std::uint64_t) && v >> (8 * n) != 0) return SIZE_MAX;
  for (unsigned i = n; i-- > 0; v >>= 8) hdr[i] = static_cast<char>(static_cast<unsigned char>(v & 0xff));
  return n;
}

// --- buffer management -------------------------------------------------------------------

void Framer::resize(FrameState& st, std::uint32_t cap, bool keep) {
  if (cap == st.cap_) return;
  if (cap == 0 || !keep) {
    std::free(st.buf_);
    st.buf_ = nullptr;
    st.cap_ = 0;
    if (cap == 0) return;
  }
  // realloc(nullptr, n) is malloc(n); realloc only when the contents must survive.
  void* p = std::realloc(st.buf_, cap);
  if (p == nullptr) throw std::bad_alloc();
#ifdef ESOCKETS_FRAMER_TEST_COUNTERS
  ++framer_test_counters.allocations;
  framer_test_counters.largest_allocation = std::max<std::uint64_t>(framer_test_counters.largest_allocation, cap);
#endif
  st.buf_ = static_cast<char*>(p);
  st.cap_ = cap;
}

void Framer::fail(FrameState& st, FrameError e) {
  // The stream cannot be resynchronised, so whatever is buffered is garbage: free it now.
  st.clear();
  st.error_ = e;
}

std::uint32_t Framer::line_capacity(std::uint32_t n) const {
  // Doubling from a small floor keeps a dripped line at O(log n) reallocations, and the
  // max_frame cap holds because a partial line longer than max_frame is already an error.
  const std::uint64_t want = std::max<std::uint64_t>(std::uint64_t{n} * 2, 128);
  return static_cast<std::uint32_t>(std::max<std::uint64_t>(n, std::min<std::uint64_t>(want, max_frame())));
}

void Framer::grow_line(FrameState& st, std::uint32_t need) const {
  if (need <= st.cap_) return;
  const std::uint64_t doubled = std::uint64_t{st.cap_} * 2;
  const auto cap = static_cast<std::uint32_t>(
      std::max<std::uint64_t>(need, std::min<std::uint64_t>(std::max<std::uint64_t>(doubled, 128), max_frame())));
  resize(st, cap, true);
}

void Framer::grow_prefixed(FrameState& st, std::uint32_t need, std::uint32_t total) const {
  // A length header is a claim, not bytes: the buffer doubles as payload actually arrives
  // (O(log n) reallocations), so a client announcing max_frame and sending little costs little.
  if (need <= st.cap_) return;
  const std::uint64_t doubled = std::max<std::uint64_t>(std::uint64_t{st.cap_} * 2, 4096);
  const auto cap = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(total, std::max<std::uint64_t>(need, doubled)));
  resize(st, cap, true);
}

std::string_view Framer::buffered_frame(const FrameState& st) const {
  if (cfg_.kind == Framing::line) return {st.buf_, st.len_};
  if (cfg_.kind == Framing::custom) return {st.buf_ + msg_off_, msg_len_};
  return {st.buf_ + cfg_.prefix_bytes, st.len_ - cfg_.prefix_bytes};
}

Framer::Step Framer::complete_line(FrameState& st, const char* p, std::size_t n, std::size_t& used) const {
  // The buffered part (scan_ == len_ bytes) is known to hold no delimiter: search only p.
  const std::uint32_t room = max_frame() - st.scan_;
  const char* d = find_delimiter(p, std::min<std::size_t>(n, std::size_t{room} + 1));
  const std::size_t take = d != nullptr ? static_cast<std::size_t>(d - p) : n;
  if (take > room) {
    fail(st, FrameError::line_too_long);
    return Step::failed;
  }
  const auto total = static_cast<std::uint32_t>(st.len_ + take);
  grow_line(st, total);
  std::memcpy(st.buf_ + st.len_, p, take);
  st.len_ = st.scan_ = total;
  used = d != nullptr ? take + 1 : take;
  return d != nullptr ? Step::complete : Step::need_more;
}

Framer::Step Framer::complete_prefixed(FrameState& st, const char* p, std::size_t n, std::size_t& used) const {
  const std::uint32_t hdr = cfg_.prefix_bytes;
  used = 0;
  if (st.len_ < hdr) {
    // Only a split header is buffered: its allocation is prefix_bytes; the exact frame size
    // is allocated once the header is complete, and only if it passes the max_frame check.
    if (st.cap_ < hdr) resize(st, hdr, true);
    used = std::min<std::size_t>(hdr - st.len_, n);
    std::memcpy(st.buf_ + st.len_, p, used);
    st.len_ += static_cast<std::uint32_t>(used);
    if (st.len_ < hdr) return Step::need_more;
    const std::uint64_t len = read_length(st.buf_);
    if (len > max_frame()) {
      fail(st, FrameError::frame_too_long);
      return Step::failed;
    }
  }
  const auto total = static_cast<std::uint32_t>(hdr + read_length(st.buf_));
  const std::size_t take = std::min<std::size_t>(total - st.len_, n - used);
  grow_prefixed(st, static_cast<std::uint32_t>(st.len_ + take), total);
  std::memcpy(st.buf_ + st.len_, p + used, take);
  st.len_ += static_cast<std::uint32_t>(take);
  used += take;
  return st.len_ == total ? Step::complete : Step::need_more;
}

const char* Framer::error_reason(const FrameState& st) const {
  if (st.error_ == FrameError::malformed && reason_ != nullptr) return reason_;
  return to_string(st.error_);
}

FeedStatus Framer::failed(FrameState& st, Outcome o) {
  if (o == Outcome::malformed) {
    fail(st, FrameError::malformed);
  } else {
    fail(st, cfg_.kind == Framing::line ? FrameError::line_too_long : FrameError::frame_too_long);
  }
  return FeedStatus::error;
}

Framer::Step Framer::check_decoded(const Decoded& d, std::size_t avail) {
  // A decoder is user code: an answer that does not fit its input is its bug, and costs only
  // this connection.
  reason_ = nullptr;
  const std::size_t limit = max_frame();
  switch (d.status) {
    case Decoded::Status::complete:
      if (d.consumed == 0 || d.consumed > avail || d.offset > d.consumed ||
          d.length > d.consumed - d.offset) {
        reason_ = "decoder answered a message size outside its input";
        return Step::failed;
      }
      return d.consumed > limit ? Step::failed : Step::complete;
    case Decoded::Status::need_more:
      // Over the limit before anything is stored for it: the claim, or what arrived.
      return d.at_least > limit || avail >= limit ? Step::failed : Step::need_more;
    case Decoded::Status::malformed:
      break;
  }
  reason_ = d.reason != nullptr ? d.reason : "malformed input";
  return Step::failed;
}

Framer::Step Framer::complete_custom(FrameState& st, const char* p, std::size_t n, std::size_t& used) {
  // The buffer holds the start of one message (the decoder said need_more for it). New bytes
  // are appended in steps that double (or exactly up to the size the decoder asked for), so
  // the bytes copied past the message's end are bounded by its own size, and the rest of the
  // read is framed in place by the caller.
  const std::uint32_t limit = max_frame();
  const std::uint32_t old_len = st.len_;
  used = 0;
  for (;;) {
    std::size_t want = st.scan_ > st.len_ ? st.scan_ - st.len_ : std::max<std::size_t>(st.len_, 256);
    want = std::min<std::size_t>({want, n - used, std::size_t{limit} - st.len_});
    if (want == 0) return Step::need_more;  // all of p is in (the limit case failed earlier)
    const auto total = static_cast<std::uint32_t>(st.len_ + want);
    grow_line(st, total);
    std::memcpy(st.buf_ + st.len_, p + used, want);
    st.len_ = total;
    used += want;
    if (st.scan_ > st.len_) {
      if (used == n) return Step::need_more;
      continue;
    }
    const Decoded d = cfg_.decoder->decode(std::string_view(st.buf_, st.len_), st.progress_);
    const Step step = check_decoded(d, st.len_);
    if (step == Step::need_more) {
      st.scan_ = d.at_least > st.len_ ? static_cast<std::uint32_t>(d.at_least) : 0;
      if (used == n) return Step::need_more;
      continue;
    }
    if (step == Step::complete && d.consumed <= old_len) {
      // It said need_more for these very bytes before: a decoder whose answers contradict.
      reason_ = "decoder found a message end in input it had called incomplete";
    }
    if (step == Step::failed || reason_ != nullptr) {
      fail(st, reason_ != nullptr ? FrameError::malformed : FrameError::frame_too_long);
      return Step::failed;
    }
    used = d.consumed - old_len;
    msg_off_ = d.offset;
    msg_len_ = d.length;
    return Step::complete;
  }
}

void Framer::store_partial(FrameState& st, const char* p, std::size_t n) const {
  if (n == 0) {
    resize(st, 0, false);
    st.len_ = st.scan_ = 0;
    return;
  }
  // n <= max_frame (line) or < prefix + max_frame (LP): the run that left it checked that.
  const auto len = static_cast<std::uint32_t>(n);
  if (cfg_.kind == Framing::line) {
    const std::uint32_t want = line_capacity(len);
    // Reuse the allocation of the frame just completed unless it is far too big.
    const bool reuse = st.cap_ >= len && std::uint64_t{st.cap_} <= std::min<std::uint64_t>(std::uint64_t{want} * 4, max_frame());
    if (!reuse) resize(st, want, false);
    st.scan_ = len;
  } else if (cfg_.kind == Framing::custom) {
    // Only what arrived; the size the decoder waits for is a claim, kept as a number.
    const bool reuse = st.cap_ >= len && st.cap_ / 4 <= len;
    if (!reuse) resize(st, len, false);
    st.scan_ = static_cast<std::uint32_t>(need_);
  } else {
    // Only what arrived: the header's claim is not trusted with memory (see grow_prefixed).
    resize(st, std::max<std::uint32_t>(len, cfg_.prefix_bytes), false);
    st.scan_ = 0;
  }
  std::memcpy(st.buf_, p, n);
  st.len_ = len;
}

void Framer::drop_front(FrameState& st, std::size_t off) {
  st.len_ -= static_cast<std::uint32_t>(off);
  st.scan_ += static_cast<std::uint32_t>(off);
  if (st.len_ == 0) st.clear();
}

void Framer::keep_partial(FrameState& st, std::size_t off) const {
  drop_front(st, off);
  st.held_ = false;
  if (st.len_ == 0) return;
  if (st.scan_ != 0) std::memmove(st.buf_, st.buf_ + st.scan_, st.len_);
  st.scan_ = 0;
  // The held buffer may be much larger than one partial frame: bring it back to the size a
  // partial frame gets when it is stored by feed_direct.
  if (cfg_.kind == Framing::line) {
    const std::uint32_t want = line_capacity(st.len_);
    if (std::uint64_t{st.cap_} > std::min<std::uint64_t>(std::uint64_t{want} * 4, max_frame())) resize(st, want, true);
    st.scan_ = st.len_;
  } else if (cfg_.kind == Framing::custom) {
    if (st.cap_ / 4 > st.len_) resize(st, st.len_, true);
    st.scan_ = static_cast<std::uint32_t>(need_);
  } else {
    resize(st, std::max<std::uint32_t>(st.len_, cfg_.prefix_bytes), true);
  }
}

std::string_view Framer::unread(const FrameState& st) {
  if (st.len_ == 0) return {};
  return st.held_ ? std::string_view(st.buf_ + st.scan_, st.len_) : std::string_view(st.buf_, st.len_);
}

void Framer::hold(FrameState& st, const char* p, std::size_t n) {
  st.len_ = st.scan_ = 0;
  st.held_ = false;
  if (n == 0) {
    resize(st, 0, false);
    return;
  }
  if (n > UINT32_MAX) throw std::length_error("esockets framer: held input exceeds 4 GiB");
  const auto len = static_cast<std::uint32_t>(n);
  if (st.cap_ < len || st.cap_ / 4 > len) resize(st, len, false);
  std::memcpy(st.buf_, p, n);
  st.len_ = len;
  st.held_ = true;
}

void Framer::append_held(FrameState& st, const char* p, std::size_t n) {
  // Only reached when the caller feeds while input is held (it should resume first); the
  // held total is bounded by what the caller chooses to read, not by max_frame.
  if (!st.held_) st.scan_ = 0;  // a stop that delivered everything left an empty state
  if (n > UINT32_MAX - st.len_) throw std::length_error("esockets framer: held input exceeds 4 GiB");
  const auto need = static_cast<std::uint32_t>(st.len_ + n);
  if (std::uint64_t{st.scan_} + need > st.cap_) {
    if (st.scan_ != 0) std::memmove(st.buf_, st.buf_ + st.scan_, st.len_);
    st.scan_ = 0;
    if (need > st.cap_) {
      const std::uint64_t doubled = std::uint64_t{st.cap_} * 2;
      resize(st, static_cast<std::uint32_t>(std::min<std::uint64_t>(std::max<std::uint64_t>(need, doubled), UINT32_MAX)), true);
    }
  }
  std::memcpy(st.buf_ + st.scan_ + st.len_, p, n);
  st.len_ = need;
  st.held_ = true;
}

}  // namespace esockets::detail

// Framer property checks shared by fuzz/framer_fuzz.cpp and tests/framer_corpus_test.cpp, so
// that every corpus file is also an ordinary test on GCC builds.
//
// Input layout: byte 0 picks the framing and prefix size, bytes 1-2 max_frame (0..4096),
// byte 3 the delimiter, byte 4 seeds the chunking/stop choices; the rest is the stream.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "framing/framer.hpp"

namespace esockets::test {

using detail::FeedStatus;
using detail::FrameError;
using detail::Framer;
using detail::FramerConfig;
using detail::FrameState;

struct FramedStream {
  std::vector<std::string> frames;
  FrameError error = FrameError::none;
  std::size_t partial = 0;  // bytes of the unfinished last frame (meaningless after an error)
};

// Byte-at-a-time model of the contract, written for obviousness rather than speed.
inline FramedStream reference_frames(const FramerConfig& cfg, std::string_view s) {
  FramedStream out;
  std::string cur;
  if (cfg.kind == Framing::line) {
    for (char c : s) {
      if (c == cfg.delimiter) {
        out.frames.push_back(cur);
        cur.clear();
        continue;
      }
      cur.push_back(c);
      if (cur.size() > cfg.max_frame) {
        out.error = FrameError::line_too_long;
        return out;
      }
    }
    out.partial = cur.size();
    return out;
  }
  std::size_t pos = 0;
  while (s.size() - pos >= cfg.prefix_bytes) {
    std::uint64_t len = 0;
    for (unsigned i = 0; i < cfg.prefix_bytes; ++i) len = len << 8 | static_cast<unsigned char>(s[pos + i]);
    if (len > cfg.max_frame) {
      out.error = FrameError::frame_too_long;
      return out;
    }
    if (s.size() - pos - cfg.prefix_bytes < len) break;
    out.frames.emplace_back(s.substr(pos + cfg.prefix_bytes, len));
    pos += cfg.prefix_bytes + len;
  }
  out.partial = s.size() - pos;
  return out;
}

struct FuzzCase {
  FramerConfig cfg;
  std::uint8_t seed = 0;
  std::string_view stream;
};

inline std::optional<FuzzCase> decode_case(const std::uint8_t* data, std::size_t size) {
  if (size < 5) return std::nullopt;
  FuzzCase c;
  static constexpr Framing kinds[] = {Framing::raw, Framing::line, Framing::length_prefixed};
  static constexpr unsigned prefixes[] = {1, 2, 4};
  c.cfg.kind = kinds[data[0] % 3];
  c.cfg.prefix_bytes = prefixes[(data[0] / 3) % 3];
  c.cfg.max_frame = (data[1] | std::size_t{data[2]} << 8) % 4097;
  c.cfg.delimiter = static_cast<char>(data[3]);
  c.seed = data[4];
  c.stream = std::string_view(reinterpret_cast<const char*>(data + 5), size - 5);
  return c;
}

// Deterministic choices derived from the input, so a corpus file always replays identically.
class CaseRng {
 public:
  CaseRng(std::uint8_t seed, std::size_t size) : s_(seed * 0x9E3779B97F4A7C15ULL + size) {}
  std::uint64_t next() {  // splitmix64
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  std::size_t chunk(std::size_t left) {  // mostly tiny chunks: they cut headers and delimiters
    const std::uint64_t r = next();
    const std::size_t max = r % 8 == 0 ? 4096 : r % 8 < 3 ? 64 : 4;
    return std::min<std::size_t>(left, 1 + (r >> 8) % max);
  }
  bool one_in(unsigned n) { return next() % n == 0; }

 private:
  std::uint64_t s_;
};

struct DriveOptions {
  bool chunked = false;          // else the whole stream in one feed
  unsigned stop_one_in = 0;      // sink returns false for ~1/n of the frames (0: never)
  bool feed_while_held = false;  // sometimes feed the next chunk instead of resuming
};

// Feeds the stream as the options say, checking per-call invariants; appends violations to
// `why` and returns what was delivered.
inline FramedStream drive(const FramerConfig& cfg, std::string_view s, CaseRng& rng,
                          const DriveOptions& opt, std::string& why) {
  Framer framer(cfg);
  FrameState st;
  FramedStream out;
  bool errored = false;
  bool stop_requested = false;
  auto fail = [&](const std::string& m) {
    if (why.empty()) why = m;
  };
  auto sink = [&](std::string_view f) {
    if (errored) fail("sink called after an error");
    if (cfg.kind != Framing::raw && f.size() > cfg.max_frame) fail("frame longer than max_frame");
    out.frames.emplace_back(f);
    stop_requested = opt.stop_one_in != 0 && rng.one_in(opt.stop_one_in);
    return !stop_requested;
  };
  auto check = [&](FeedStatus status) {
    if ((status == FeedStatus::stopped) != stop_requested) fail("stopped iff the sink asked: violated");
    if (status == FeedStatus::error) {
      if (st.error() == FrameError::none) fail("error status without error()");
      if (st.holds_memory()) fail("error state still owns memory");
      errored = true;
    } else if (st.error() != FrameError::none) {
      fail("error() set but status is not error");
    }
    if (status == FeedStatus::stopped && st.has_pending_frames() != (st.buffered() != 0))
      fail("stopped: has_pending_frames() disagrees with buffered()");
    if (status == FeedStatus::ok) {
      if (st.has_pending_frames()) fail("ok while holding input");
      if (st.holds_memory() != (st.buffered() != 0)) fail("holds memory without a partial frame");
      const std::size_t bound = cfg.kind == Framing::line ? cfg.max_frame : cfg.prefix_bytes + cfg.max_frame;
      if (st.buffered() > bound) fail("partial frame larger than one frame");
    }
    stop_requested = false;
  };
  // Each stop delivers at least one frame, so the resume loops terminate.
  auto resume_all = [&](FeedStatus status) {
    while (status == FeedStatus::stopped) {
      const std::size_t before = out.frames.size();
      status = framer.resume(st, sink);
      check(status);
      if (status == FeedStatus::stopped && out.frames.size() == before) {
        fail("resume stopped without delivering");
        break;
      }
    }
  };
  std::size_t pos = 0;
  FeedStatus status = FeedStatus::ok;
  while (pos < s.size()) {
    const std::size_t n = opt.chunked ? rng.chunk(s.size() - pos) : s.size() - pos;
    const std::size_t before = out.frames.size();
    status = framer.feed(st, s.data() + pos, n, sink);
    check(status);
    if (cfg.kind == Framing::raw && (out.frames.size() != before + 1 || out.frames.back() != s.substr(pos, n)))
      fail("raw did not deliver the chunk as one message");
    pos += n;
    if (status == FeedStatus::stopped && !(opt.feed_while_held && rng.one_in(2))) resume_all(status);
  }
  resume_all(status);
  if (errored) {  // terminal: neither feeding nor resuming may deliver anything
    const std::size_t before = out.frames.size();
    if (framer.feed(st, s.data(), s.size(), sink) != FeedStatus::error || framer.resume(st, sink) != FeedStatus::error ||
        out.frames.size() != before)
      fail("error is not terminal");
  }
  out.error = st.error();
  out.partial = st.buffered();
  return out;
}

inline std::string compare(const char* what, const FramedStream& want, const FramedStream& got) {
  if (got.error != want.error)
    return std::string(what) + ": error " + detail::to_string(got.error) + ", expected " + detail::to_string(want.error);
  if (got.frames.size() != want.frames.size())
    return std::string(what) + ": " + std::to_string(got.frames.size()) + " frames, expected " +
           std::to_string(want.frames.size());
  for (std::size_t i = 0; i < want.frames.size(); ++i)
    if (got.frames[i] != want.frames[i]) return std::string(what) + ": frame " + std::to_string(i) + " differs";
  if (want.error == FrameError::none && got.partial != want.partial)
    return std::string(what) + ": " + std::to_string(got.partial) + " bytes buffered, expected " +
           std::to_string(want.partial);
  return {};
}

// Returns an empty string when every property holds, else the first violation.
inline std::string check_framer_properties(const std::uint8_t* data, std::size_t size) {
  const std::optional<FuzzCase> c = decode_case(data, size);
  if (!c) return {};
  CaseRng rng(c->seed, size);
  std::string why;
  static constexpr DriveOptions runs[] = {
      {false, 0, false}, {true, 0, false}, {true, 3, false}, {true, 2, true}, {false, 2, true}};
  static constexpr const char* names[] = {"whole", "chunked", "stop/resume", "feed while held", "whole stop/resume"};
  const FramedStream ref = c->cfg.kind == Framing::raw ? FramedStream{} : reference_frames(c->cfg, c->stream);
  for (std::size_t i = 0; i < std::size(runs) && why.empty(); ++i) {
    const FramedStream got = drive(c->cfg, c->stream, rng, runs[i], why);
    if (!why.empty()) return std::string(names[i]) + ": " + why;
    if (c->cfg.kind == Framing::raw) {
      std::string joined;
      for (const std::string& f : got.frames) joined += f;
      if (joined != c->stream || got.partial != 0) why = std::string(names[i]) + ": raw lost or reordered bytes";
    } else {
      why = compare(names[i], ref, got);
    }
  }
  return why;
}

}  // namespace esockets::test

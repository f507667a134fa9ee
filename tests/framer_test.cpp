// Unit tests of the framer. Build with ESOCKETS_FRAMER_TEST_COUNTERS defined for this file and
// engine/framing/framer.cpp compiled into the same target: the scan and allocation counters turn
// "linear" and "never allocates more than ..." into exact assertions instead of timings.
#include <gtest/gtest.h>

#include <cstdint>
#include <algorithm>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "framing/framer.hpp"
#include "framer_properties.hpp"

// Counter assertions compile only with the counters; without them CountersAreCompiledIn
// fails, so a mis-wired build is loud rather than silently weaker.
#ifdef ESOCKETS_FRAMER_TEST_COUNTERS
#define COUNTERS_ONLY(...) __VA_ARGS__
#else
#define COUNTERS_ONLY(...)
#endif

namespace {

using esockets::Framing;
using esockets::detail::FeedStatus;
using esockets::detail::FrameError;
using esockets::detail::Framer;
using esockets::detail::FramerConfig;
using esockets::detail::FrameState;
using esockets::test::reference_frames;
using Frames = std::vector<std::string>;

FramerConfig raw_cfg() { return FramerConfig{Framing::raw, '\n', 4, 1 << 20}; }
FramerConfig line_cfg(std::size_t max_frame = 1 << 20, char delim = '\n') {
  return FramerConfig{Framing::line, delim, 4, max_frame};
}
FramerConfig lp_cfg(unsigned prefix, std::size_t max_frame = 1 << 20) {
  return FramerConfig{Framing::length_prefixed, '\n', prefix, max_frame};
}

// Written independently of Framer::header_for so that one cannot hide a bug in the other.
std::string encode(const FramerConfig& cfg, std::string_view payload) {
  if (cfg.kind == Framing::line) return std::string(payload) + cfg.delimiter;
  std::string out;
  for (unsigned i = cfg.prefix_bytes; i-- > 0;) out.push_back(static_cast<char>((payload.size() >> (8 * i)) & 0xff));
  return out.append(payload);
}

struct Collected {
  Frames frames;
  FeedStatus status = FeedStatus::ok;
  FrameError error = FrameError::none;
  std::size_t buffered = 0;
  bool holds = false;
};

Collected feed_chunks(const FramerConfig& cfg, const std::vector<std::string_view>& chunks) {
  Framer framer(cfg);
  FrameState st;
  Collected c;
  for (std::string_view chunk : chunks) {
    c.status = framer.feed(st, chunk.data(), chunk.size(), [&](std::string_view f) {
      c.frames.emplace_back(f);
      return true;
    });
  }
  c.error = st.error();
  c.buffered = st.buffered();
  c.holds = st.holds_memory();
  return c;
}

Collected feed_whole(const FramerConfig& cfg, std::string_view s) { return feed_chunks(cfg, {s}); }

Collected feed_split(const FramerConfig& cfg, std::string_view s, std::size_t at) {
  return feed_chunks(cfg, {s.substr(0, at), s.substr(at)});
}

Collected drip(const FramerConfig& cfg, std::string_view s) {
  std::vector<std::string_view> chunks;
  for (std::size_t i = 0; i < s.size(); ++i) chunks.push_back(s.substr(i, 1));
  return feed_chunks(cfg, chunks);
}

// Compares a run against the byte-at-a-time reference model of the contract.
void expect_matches_reference(const FramerConfig& cfg, std::string_view s, const Collected& got) {
  const esockets::test::FramedStream want = reference_frames(cfg, s);
  EXPECT_EQ(got.frames, want.frames);
  EXPECT_EQ(got.error, want.error);
  if (want.error == FrameError::none) {
    EXPECT_EQ(got.buffered, want.partial);
    EXPECT_EQ(got.holds, want.partial != 0);
  } else {
    EXPECT_EQ(got.status, FeedStatus::error);
    EXPECT_FALSE(got.holds);
  }
}

#ifdef ESOCKETS_FRAMER_TEST_COUNTERS
using esockets::detail::framer_test_counters;
void reset_counters() { framer_test_counters = esockets::detail::FramerTestCounters{}; }
#else
void reset_counters() {}
#endif

bool points_into(std::string_view f, std::string_view buf) {
  return f.data() >= buf.data() && f.data() + f.size() <= buf.data() + buf.size();
}

TEST(FramerTestSetup, CountersAreCompiledIn) {
#ifndef ESOCKETS_FRAMER_TEST_COUNTERS
  FAIL() << "define ESOCKETS_FRAMER_TEST_COUNTERS for framer_test and compile engine/framing/framer.cpp into it";
#else
  reset_counters();
  FrameState st;
  Framer(line_cfg()).feed(st, "partial", 7, [](std::string_view) { return true; });
  EXPECT_EQ(framer_test_counters.scanned, 7u);
  EXPECT_EQ(framer_test_counters.allocations, 1u)
      << "engine/framing/framer.cpp must be compiled into framer_test with the macro, not taken from the library";
#endif
}

// ---------------------------------------------------------------------------------- raw

TEST(FramerRaw, EachFeedIsOneMessageDeliveredWithoutCopy) {
  Framer framer(raw_cfg());
  FrameState st;
  const std::string a = "abc\ndef\n", b = "x";
  std::vector<std::string_view> got;
  auto sink = [&](std::string_view f) {
    got.push_back(f);
    return true;
  };
  EXPECT_EQ(framer.feed(st, a.data(), a.size(), sink), FeedStatus::ok);
  EXPECT_EQ(framer.feed(st, b.data(), b.size(), sink), FeedStatus::ok);
  EXPECT_EQ(framer.feed(st, b.data(), 0, sink), FeedStatus::ok);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].data(), a.data());
  EXPECT_EQ(got[0].size(), a.size());
  EXPECT_EQ(got[1].data(), b.data());
  EXPECT_FALSE(st.holds_memory());
}

TEST(FramerRaw, StopHoldsNothingAndResumeDeliversNothing) {
  Framer framer(raw_cfg());
  FrameState st;
  int calls = 0;
  auto sink = [&](std::string_view) { return ++calls > 1; };
  const std::string a = "hello";
  EXPECT_EQ(framer.feed(st, a.data(), a.size(), sink), FeedStatus::stopped);
  EXPECT_FALSE(st.has_pending_frames());
  EXPECT_EQ(st.buffered(), 0u);
  EXPECT_EQ(framer.resume(st, sink), FeedStatus::ok);
  EXPECT_EQ(calls, 1);
}

// Bytes stashed while a connection did not read (io_uring) or restored by a takeover: one
// message on the next resume, before anything fed after it; a stop keeps what comes after.
TEST(FramerRaw, StashedBytesAreOneMessageDeliveredFirst) {
  Framer framer(raw_cfg());
  FrameState st;
  std::vector<std::string> got;
  bool go = true;
  auto sink = [&](std::string_view f) {
    got.emplace_back(f);
    return go;
  };
  Framer::stash(st, "ab", 2);
  Framer::stash(st, "cd", 2);
  EXPECT_TRUE(st.has_pending_frames());
  const std::string next = "ef";
  EXPECT_EQ(framer.feed(st, next.data(), next.size(), sink), FeedStatus::ok);
  ASSERT_EQ(got, (std::vector<std::string>{"abcd", "ef"}));
  EXPECT_FALSE(st.holds_memory());
  got.clear();
  Framer::stash(st, "gh", 2);
  go = false;  // the handler pauses on the stashed message: "ij" waits behind it
  EXPECT_EQ(framer.feed(st, "ij", 2, sink), FeedStatus::stopped);
  go = true;
  EXPECT_EQ(framer.resume(st, sink), FeedStatus::ok);
  EXPECT_EQ(got, (std::vector<std::string>{"gh", "ij"}));
  EXPECT_FALSE(st.has_pending_frames());
}

// --------------------------------------------------------------------------------- line

TEST(FramerLine, SingleMessage) {
  const Collected c = feed_whole(line_cfg(), "hello\n");
  EXPECT_EQ(c.frames, Frames{"hello"});
  EXPECT_EQ(c.status, FeedStatus::ok);
  EXPECT_EQ(c.buffered, 0u);
  EXPECT_FALSE(c.holds);
}

TEST(FramerLine, ManyMessagesInOneChunkAreViewsIntoTheInput) {
  Framer framer(line_cfg());
  FrameState st;
  const std::string in = "one\ntwo\nthree\n";
  Frames frames;
  bool all_views = true;
  framer.feed(st, in.data(), in.size(), [&](std::string_view f) {
    frames.emplace_back(f);
    all_views = all_views && points_into(f, in);
    return true;
  });
  EXPECT_EQ(frames, (Frames{"one", "two", "three"}));
  EXPECT_TRUE(all_views);
  EXPECT_FALSE(st.holds_memory());
}

TEST(FramerLine, DelimiterIsStrippedButCarriageReturnIsKept) {
  EXPECT_EQ(feed_whole(line_cfg(), "a\r\nb\n").frames, (Frames{"a\r", "b"}));
}

TEST(FramerLine, EmptyLinesAreEmptyMessages) {
  EXPECT_EQ(feed_whole(line_cfg(), "\n\nx\n\n").frames, (Frames{"", "", "x", ""}));
}

TEST(FramerLine, CustomDelimiters) {
  EXPECT_EQ(feed_whole(line_cfg(100, ';'), "a\nb;c;").frames, (Frames{"a\nb", "c"}));
  const std::string nul("x\0yz\0", 5);
  EXPECT_EQ(feed_whole(line_cfg(100, '\0'), nul).frames, (Frames{"x", "yz"}));
  EXPECT_EQ(feed_whole(line_cfg(100, '\xff'), "p\xffq\xff").frames, (Frames{"p", "q"}));
}

TEST(FramerLine, PartialLineStaysBufferedUntilItsDelimiter) {
  const Collected c = feed_chunks(line_cfg(), {"ab", "cd", "e\nf"});
  EXPECT_EQ(c.frames, Frames{"abcde"});
  EXPECT_EQ(c.buffered, 1u);
  EXPECT_TRUE(c.holds);
}

TEST(FramerLine, MaxFrameExactlyIsAccepted) {
  const std::string in = "12345678\nabc\n";
  for (const Collected& c : {feed_whole(line_cfg(8), in), drip(line_cfg(8), in), feed_split(line_cfg(8), in, 4)}) {
    EXPECT_EQ(c.frames, (Frames{"12345678", "abc"}));
    EXPECT_EQ(c.error, FrameError::none);
  }
}

TEST(FramerLine, MaxFramePlusOneIsAnErrorAfterTheEarlierFrames) {
  const std::string in = "ok\n\n123456789\nafter\n";
  for (std::size_t at = 0; at <= in.size(); ++at) {
    const Collected c = feed_split(line_cfg(8), in, at);
    EXPECT_EQ(c.frames, (Frames{"ok", ""})) << "split at " << at;
    EXPECT_EQ(c.error, FrameError::line_too_long);
    EXPECT_EQ(c.status, FeedStatus::error);
    EXPECT_FALSE(c.holds);
  }
  EXPECT_EQ(drip(line_cfg(8), in).frames, (Frames{"ok", ""}));
}

TEST(FramerLine, OverlongLineIsDetectedAsSoonAsMaxFramePlusOneBytesArrive) {
  Framer framer(line_cfg(8));
  FrameState st;
  auto sink = [](std::string_view) { return true; };
  reset_counters();
  EXPECT_EQ(framer.feed(st, "12345678", 8, sink), FeedStatus::ok);  // no delimiter yet: fine
  EXPECT_EQ(st.buffered(), 8u);
  EXPECT_EQ(framer.feed(st, "9", 1, sink), FeedStatus::error);
  EXPECT_EQ(st.error(), FrameError::line_too_long);
  COUNTERS_ONLY(EXPECT_LE(framer_test_counters.largest_allocation, 9u));

  FrameState st2;
  EXPECT_EQ(framer.feed(st2, "123456789", 9, sink), FeedStatus::error);
  EXPECT_FALSE(st2.holds_memory());
}

TEST(FramerLine, NeverAllocatesMoreThanMaxFramePlusOne) {
  const std::size_t max_frame = 1000;
  const std::string in = std::string(1000, 'a') + "\n" + std::string(999, 'b') + "\n" + std::string(5000, 'c');
  reset_counters();
  const Collected c = drip(line_cfg(max_frame), in);
  EXPECT_EQ(c.frames.size(), 2u);
  EXPECT_EQ(c.error, FrameError::line_too_long);
  COUNTERS_ONLY(EXPECT_LE(framer_test_counters.largest_allocation, max_frame + 1));
  reset_counters();
  feed_chunks(line_cfg(max_frame), {std::string_view(in).substr(0, 10), std::string_view(in).substr(10)});
  COUNTERS_ONLY(EXPECT_LE(framer_test_counters.largest_allocation, max_frame + 1));
}

TEST(FramerLine, DrippedMegabyteLineScansEachByteOnce) {
  const std::size_t n = 1 << 20;
  const std::string in = std::string(n, 'x') + "\n";
  Framer framer(line_cfg(n));
  FrameState st;
  Frames frames;
  auto sink = [&](std::string_view f) {
    frames.emplace_back(f);
    return true;
  };
  reset_counters();
  for (std::size_t i = 0; i < in.size(); ++i) ASSERT_EQ(framer.feed(st, in.data() + i, 1, sink), FeedStatus::ok);
  COUNTERS_ONLY(EXPECT_EQ(framer_test_counters.scanned, in.size()));  // quadratic rescanning would be ~2^39
  COUNTERS_ONLY(EXPECT_LE(framer_test_counters.allocations, 20u));     // geometric growth: ~log2(1 MiB / 128)
  COUNTERS_ONLY(EXPECT_LE(framer_test_counters.largest_allocation, n + 1));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].size(), n);
  EXPECT_EQ(frames[0].find_first_not_of('x'), std::string::npos);
  EXPECT_FALSE(st.holds_memory());
}

TEST(FramerLine, ChunkedInputScansEachByteOnce) {
  std::string in;
  for (int i = 0; i < 200; ++i) in += std::string(static_cast<std::size_t>(i * 7 % 300), 'y') + "\n";
  std::mt19937 rng(7);
  std::vector<std::string_view> chunks;
  for (std::size_t pos = 0; pos < in.size();) {
    const std::size_t n = std::min<std::size_t>(in.size() - pos, 1 + rng() % 97);
    chunks.push_back(std::string_view(in).substr(pos, n));
    pos += n;
  }
  reset_counters();
  const Collected c = feed_chunks(line_cfg(), chunks);
  EXPECT_EQ(c.frames.size(), 200u);
  COUNTERS_ONLY(EXPECT_EQ(framer_test_counters.scanned, in.size()));
}

// ---------------------------------------------------------------------- length-prefixed

class FramerPrefixed : public ::testing::TestWithParam<unsigned> {
 protected:
  FramerConfig cfg(std::size_t max_frame = 200) const { return lp_cfg(GetParam(), max_frame); }
  std::string frame(std::string_view payload) const { return encode(cfg(), payload); }
};

TEST_P(FramerPrefixed, SingleMessageIsThePayloadOnly) {
  const Collected c = feed_whole(cfg(), frame("hello"));
  EXPECT_EQ(c.frames, Frames{"hello"});
  EXPECT_EQ(c.status, FeedStatus::ok);
  EXPECT_FALSE(c.holds);
}

TEST_P(FramerPrefixed, HeaderIsBigEndian) {
  // 258 = 0x0102; read little-endian it would be 0x0201 = 513 > max_frame.
  const std::size_t n = GetParam() == 1 ? 0x7f : 0x0102;
  const std::string in = frame(std::string(n, 'p'));
  const std::string want_hdr = GetParam() == 1 ? std::string("\x7f") : std::string(GetParam() - 2, '\0') + "\x01\x02";
  EXPECT_EQ(in.substr(0, GetParam()), want_hdr);
  EXPECT_EQ(feed_whole(cfg(n), in).frames, Frames{std::string(n, 'p')});
  EXPECT_EQ(feed_whole(cfg(n), std::string(GetParam(), '\0') + in).frames, (Frames{"", std::string(n, 'p')}));
}

TEST_P(FramerPrefixed, ManyMessagesInOneChunkAreViewsIntoTheInput) {
  Framer framer(cfg());
  FrameState st;
  const std::string in = frame("a") + frame("") + frame("ccc");
  Frames frames;
  bool all_views = true;
  EXPECT_EQ(framer.feed(st, in.data(), in.size(),
                        [&](std::string_view f) {
                          frames.emplace_back(f);
                          all_views = all_views && points_into(f, in);
                          return true;
                        }),
            FeedStatus::ok);
  EXPECT_EQ(frames, (Frames{"a", "", "ccc"}));
  EXPECT_TRUE(all_views);
}

TEST_P(FramerPrefixed, ZeroLengthFrameIsAnEmptyMessage) {
  const Collected c = feed_whole(cfg(), frame("") + frame("") + frame("z"));
  EXPECT_EQ(c.frames, (Frames{"", "", "z"}));
  EXPECT_EQ(drip(cfg(), frame("")).frames, Frames{""});
}

TEST_P(FramerPrefixed, HeaderSplitAtEveryByte) {
  const std::string in = frame("payload") + frame("x");
  for (std::size_t at = 1; at < GetParam(); ++at) {
    const Collected c = feed_split(cfg(), in, at);
    EXPECT_EQ(c.frames, (Frames{"payload", "x"})) << "split at " << at;
    EXPECT_FALSE(c.holds);
  }
  EXPECT_EQ(drip(cfg(), in).frames, (Frames{"payload", "x"}));
}

TEST_P(FramerPrefixed, MaxFrameExactlyIsAcceptedAndPlusOneIsAnError) {
  const std::string ok = frame(std::string(200, 'm'));
  EXPECT_EQ(feed_whole(cfg(200), ok).frames.size(), 1u);
  const std::string in = frame("first") + frame(std::string(201, 'm')) + frame("after");
  for (std::size_t at = 0; at <= in.size(); ++at) {
    const Collected c = feed_split(cfg(200), in, at);
    EXPECT_EQ(c.frames, Frames{"first"}) << "split at " << at;
    EXPECT_EQ(c.error, FrameError::frame_too_long);
    EXPECT_EQ(c.status, FeedStatus::error);
    EXPECT_FALSE(c.holds);
  }
}

TEST_P(FramerPrefixed, BufferGrowsWithArrivedBytesNotWithTheClaim) {
  const std::string in = frame(std::string(100, 'e'));
  reset_counters();
  Collected c = feed_chunks(cfg(), {std::string_view(in).substr(0, GetParam() + 1), std::string_view(in).substr(GetParam() + 1)});
  // What arrived first (header + 1 byte), then one growth when the rest arrives.
  COUNTERS_ONLY(EXPECT_EQ(framer_test_counters.allocations, 2u));
  COUNTERS_ONLY(EXPECT_EQ(framer_test_counters.largest_allocation, GetParam() + 100u));
  EXPECT_FALSE(c.holds);
  EXPECT_EQ(c.frames.size(), 1u);
  reset_counters();
  c = feed_split(cfg(), in, 1);
  COUNTERS_ONLY(EXPECT_LE(framer_test_counters.allocations, 3u));
  COUNTERS_ONLY(EXPECT_EQ(framer_test_counters.largest_allocation, GetParam() + 100u));
  EXPECT_EQ(c.frames.size(), 1u);
}

TEST(FramerPrefixed4, MaxFrameClaimWithFewBytesAllocatesFew) {
  // max_frame allows 1 GiB; a client announcing that much and sending 64 bytes must not make
  // the server allocate the gigabyte (it used to, at once, and bad_alloc ended the process).
  const std::string in = std::string("\x40\x00\x00\x00", 4) + std::string(64, 'g');
  reset_counters();
  const Collected c = feed_split(lp_cfg(4, std::size_t{1} << 30), in, 4);
  EXPECT_TRUE(c.frames.empty());
  EXPECT_EQ(c.error, FrameError::none);
  COUNTERS_ONLY(EXPECT_LE(framer_test_counters.largest_allocation, 8192u));
}

INSTANTIATE_TEST_SUITE_P(PrefixBytes, FramerPrefixed, ::testing::Values(1u, 2u, 4u),
                         [](const auto& p) { return std::string("p").append(std::to_string(p.param)); });

TEST(FramerPrefixed4, GigabyteClaimIsRejectedBeforeAllocating) {
  const std::string in = encode(lp_cfg(4), "ok") + std::string("\x40\x00\x00\x00", 4) + std::string(64, 'g');
  for (std::size_t at = 0; at <= 12; ++at) {
    reset_counters();
    const Collected c = feed_split(lp_cfg(4, 1 << 20), in, at);
    EXPECT_EQ(c.frames, Frames{"ok"});
    EXPECT_EQ(c.error, FrameError::frame_too_long);
    EXPECT_FALSE(c.holds);
    COUNTERS_ONLY(EXPECT_LE(framer_test_counters.largest_allocation, 6u) << "split at " << at);
  }
  reset_counters();
  EXPECT_EQ(drip(lp_cfg(4, 1 << 20), in).error, FrameError::frame_too_long);
  COUNTERS_ONLY(EXPECT_LE(framer_test_counters.largest_allocation, 6u));  // the "ok" frame: 4 + 2
}

// ------------------------------------------------------------------ every framing kind

struct Kind {
  const char* name;
  FramerConfig cfg;
};

void PrintTo(const Kind& k, std::ostream* os) { *os << k.name; }

class FramerEvery : public ::testing::TestWithParam<Kind> {
 protected:
  const FramerConfig& cfg() const { return GetParam().cfg; }
  std::string frame(std::string_view payload) const { return encode(cfg(), payload); }
  std::string sample() const {
    return frame("alpha") + frame("") + frame(std::string(70, 'L')) + frame("b") + frame("\r") + frame("tail");
  }
};

TEST_P(FramerEvery, SplitAtEveryPairOfPositions) {
  const std::string in = sample() + frame("gamma").substr(0, 3);
  for (std::size_t i = 0; i <= in.size(); ++i) {
    const std::string_view s(in);
    expect_matches_reference(cfg(), in, feed_split(cfg(), in, i));
    for (std::size_t j = i; j <= in.size(); j += 3)
      expect_matches_reference(cfg(), in, feed_chunks(cfg(), {s.substr(0, i), s.substr(i, j - i), s.substr(j)}));
    if (HasFailure()) return;
  }
  expect_matches_reference(cfg(), in, drip(cfg(), in));
  EXPECT_EQ(feed_whole(cfg(), in).frames.size(), 6u);  // guards the reference model itself
}

TEST_P(FramerEvery, IdleStateOwnsNoMemory) {
  const std::string in = sample();
  for (std::size_t at = 0; at <= in.size(); ++at) {
    const Collected c = feed_split(cfg(), in, at);
    EXPECT_EQ(c.frames.size(), 6u);
    EXPECT_FALSE(c.holds) << "split at " << at;
    EXPECT_EQ(c.buffered, 0u);
  }
}

TEST_P(FramerEvery, ZeroCopyResumesRightAfterABufferedFrame) {
  Framer framer(cfg());
  FrameState st;
  const std::string a = frame("first").substr(0, 4);
  const std::string b = frame("first").substr(4) + frame("second") + frame("third");
  Frames frames;
  std::vector<bool> views;
  auto sink = [&](std::string_view f) {
    frames.emplace_back(f);
    views.push_back(points_into(f, b));
    return true;
  };
  framer.feed(st, a.data(), a.size(), sink);
  EXPECT_TRUE(st.holds_memory());
  framer.feed(st, b.data(), b.size(), sink);
  EXPECT_EQ(frames, (Frames{"first", "second", "third"}));
  EXPECT_EQ(views, (std::vector<bool>{false, true, true}));
  EXPECT_FALSE(st.holds_memory());
}

// Delivers `in` in `chunks`, stopping after every frame and resuming before the next feed.
Collected stop_after_every_frame(const FramerConfig& cfg, const std::vector<std::string_view>& chunks, bool resume_first) {
  Framer framer(cfg);
  FrameState st;
  Collected c;
  auto sink = [&](std::string_view f) {
    c.frames.emplace_back(f);
    return false;
  };
  std::size_t budget = 1;  // every resume delivers a frame, and a frame takes at least a byte
  for (std::string_view chunk : chunks) budget += chunk.size() + 1;
  auto resume_all = [&] {
    while (c.status == FeedStatus::stopped) {
      if (budget-- == 0) {
        ADD_FAILURE() << "resume keeps stopping: frames are delivered again";
        return;
      }
      const std::size_t before = c.frames.size();
      c.status = framer.resume(st, sink);
      if (c.status == FeedStatus::stopped) {
        EXPECT_EQ(c.frames.size(), before + 1);
      } else if (c.status == FeedStatus::ok) {
        EXPECT_FALSE(st.has_pending_frames());
      }
    }
  };
  for (std::string_view chunk : chunks) {
    if (resume_first) resume_all();
    const std::size_t before = c.frames.size();
    c.status = framer.feed(st, chunk.data(), chunk.size(), sink);
    if (c.status == FeedStatus::stopped) {
      EXPECT_EQ(c.frames.size(), before + 1);  // the sink always stops, so one frame per call
    }
  }
  resume_all();
  c.error = st.error();
  c.buffered = st.buffered();
  c.holds = st.holds_memory();
  return c;
}

TEST_P(FramerEvery, StopAfterEachFrameThenResumeIsIdenticalToAnUninterruptedRun) {
  const std::string in = sample() + frame("partial").substr(0, 3);
  const Collected plain = feed_whole(cfg(), in);
  for (std::size_t at = 0; at <= in.size(); ++at) {
    const std::string_view s(in);
    for (bool resume_first : {true, false}) {
      const Collected c = stop_after_every_frame(cfg(), {s.substr(0, at), s.substr(at)}, resume_first);
      EXPECT_EQ(c.frames, plain.frames) << "split at " << at;
      EXPECT_EQ(c.status, FeedStatus::ok);
      EXPECT_EQ(c.buffered, plain.buffered);
      EXPECT_EQ(c.holds, plain.holds);
    }
    if (HasFailure()) return;  // one split point is enough to debug; thousands drown the log
  }
}

TEST_P(FramerEvery, StopOnTheLastFrameLeavesNothingHeld) {
  Framer framer(cfg());
  FrameState st;
  const std::string in = frame("only");
  EXPECT_EQ(framer.feed(st, in.data(), in.size(), [](std::string_view) { return false; }), FeedStatus::stopped);
  EXPECT_FALSE(st.has_pending_frames());
  EXPECT_FALSE(st.holds_memory());
  EXPECT_EQ(framer.resume(st, [](std::string_view) {
    ADD_FAILURE() << "nothing to resume";
    return true;
  }),
            FeedStatus::ok);
}

TEST_P(FramerEvery, HeldPartialFrameStaysBufferedAfterResume) {
  Framer framer(cfg());
  FrameState st;
  const std::string last = frame("partial");
  const std::string a = frame("a") + frame("b") + last.substr(0, last.size() - 2);
  const std::string b = last.substr(last.size() - 2);
  Frames frames;
  bool go = false;
  auto sink = [&](std::string_view f) {
    frames.emplace_back(f);
    return go;
  };
  EXPECT_EQ(framer.feed(st, a.data(), a.size(), sink), FeedStatus::stopped);
  EXPECT_TRUE(st.has_pending_frames());
  EXPECT_EQ(st.buffered(), a.size() - frame("a").size());
  go = true;
  EXPECT_EQ(framer.resume(st, sink), FeedStatus::ok);
  EXPECT_FALSE(st.has_pending_frames());
  EXPECT_EQ(st.buffered(), last.size() - 2);
  EXPECT_EQ(framer.feed(st, b.data(), b.size(), sink), FeedStatus::ok);
  EXPECT_EQ(frames, (Frames{"a", "b", "partial"}));
  EXPECT_FALSE(st.holds_memory());
}

TEST_P(FramerEvery, ErrorIsTerminal) {
  FramerConfig small = cfg();
  small.max_frame = 4;
  Framer framer(small);
  FrameState st;
  const std::string bad = encode(small, "ok") + encode(small, "toolong") + encode(small, "x");
  const std::string good = encode(small, "fine");
  Frames frames;
  auto sink = [&](std::string_view f) {
    frames.emplace_back(f);
    return true;
  };
  EXPECT_EQ(framer.feed(st, bad.data(), bad.size(), sink), FeedStatus::error);
  EXPECT_EQ(frames, Frames{"ok"});
  EXPECT_EQ(framer.feed(st, good.data(), good.size(), sink), FeedStatus::error);
  EXPECT_EQ(framer.resume(st, sink), FeedStatus::error);
  st.clear();
  EXPECT_NE(st.error(), FrameError::none);
  EXPECT_EQ(framer.feed(st, good.data(), good.size(), sink), FeedStatus::error);
  EXPECT_EQ(frames, Frames{"ok"});
}

TEST_P(FramerEvery, ErrorInsideHeldInputIsReportedOnResume) {
  FramerConfig small = cfg();
  small.max_frame = 4;
  Framer framer(small);
  FrameState st;
  const std::string in = encode(small, "a") + encode(small, "b") + encode(small, "toolong");
  Frames frames;
  EXPECT_EQ(framer.feed(st, in.data(), in.size(), [&](std::string_view f) {
    frames.emplace_back(f);
    return false;
  }),
            FeedStatus::stopped);
  EXPECT_EQ(framer.resume(st, [&](std::string_view f) {
    frames.emplace_back(f);
    return true;
  }),
            FeedStatus::error);
  EXPECT_EQ(frames, (Frames{"a", "b"}));
  EXPECT_FALSE(st.holds_memory());
}

TEST_P(FramerEvery, MovedStateKeepsThePartialFrame) {
  Framer framer(cfg());
  const std::string in = frame("moved") + frame("x");
  FrameState a;
  Frames frames;
  auto sink = [&](std::string_view f) {
    frames.emplace_back(f);
    return true;
  };
  framer.feed(a, in.data(), 3, sink);
  FrameState b(std::move(a));
  EXPECT_FALSE(a.holds_memory());  // NOLINT(bugprone-use-after-move): moved-from is specified empty
  FrameState c;
  framer.feed(c, in.data(), 1, sink);
  c = std::move(b);
  framer.feed(c, in.data() + 3, in.size() - 3, sink);
  EXPECT_EQ(frames, (Frames{"moved", "x"}));
  EXPECT_FALSE(c.holds_memory());
}

TEST_P(FramerEvery, RandomChunkingsAndStopsMatchTheReference) {
  std::mt19937 rng(20240601);
  for (int iter = 0; iter < 300; ++iter) {
    FramerConfig c = cfg();
    c.max_frame = 1 + rng() % (c.kind == Framing::length_prefixed && c.prefix_bytes == 1 ? 254 : 300);
    std::string in;
    const int frames = static_cast<int>(rng() % 40);
    for (int i = 0; i < frames; ++i) {
      std::string payload(rng() % (c.max_frame + 1), 'a');
      for (char& ch : payload) ch = static_cast<char>('a' + rng() % 26);
      in += encode(c, payload);
    }
    if (rng() % 4 == 0) in += encode(c, std::string(c.max_frame + 1, 'Z'));  // error at the end
    in += encode(c, "trailing").substr(0, rng() % 6);
    const esockets::test::FramedStream want = reference_frames(c, in);
    std::vector<std::string_view> chunks;
    for (std::size_t pos = 0; pos < in.size();) {
      const std::size_t n = std::min<std::size_t>(in.size() - pos, 1 + rng() % (rng() % 2 ? 8 : 512));
      chunks.push_back(std::string_view(in).substr(pos, n));
      pos += n;
    }
    expect_matches_reference(c, in, feed_chunks(c, chunks));
    const Collected stopped = stop_after_every_frame(c, chunks, rng() % 2 == 0);
    EXPECT_EQ(stopped.frames, want.frames) << "iteration " << iter;
    EXPECT_EQ(stopped.error, want.error);
    if (HasFailure()) break;
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, FramerEvery,
                         ::testing::Values(Kind{"line", line_cfg(100)}, Kind{"semicolon", line_cfg(100, ';')},
                                           Kind{"prefix1", lp_cfg(1, 100)}, Kind{"prefix2", lp_cfg(2, 100)},
                                           Kind{"prefix4", lp_cfg(4, 100)}),
                         [](const auto& p) { return std::string(p.param.name); });

// --------------------------------------------------------------------------- misc API

TEST(FramerHeaderFor, LengthPrefixIsBigEndianAndRejectsWhatDoesNotFit) {
  char hdr[8];
  bool trailer = true;
  EXPECT_EQ(Framer(lp_cfg(4)).header_for(0x01020304, hdr, &trailer), 4u);
  EXPECT_FALSE(trailer);
  EXPECT_EQ(std::string(hdr, 4), std::string("\x01\x02\x03\x04"));
  EXPECT_EQ(Framer(lp_cfg(2)).header_for(0xfffe, hdr, &trailer), 2u);
  EXPECT_EQ(std::string(hdr, 2), std::string("\xff\xfe"));
  EXPECT_EQ(Framer(lp_cfg(1)).header_for(255, hdr, &trailer), 1u);
  EXPECT_EQ(Framer(lp_cfg(1)).header_for(256, hdr, &trailer), SIZE_MAX);
  EXPECT_EQ(Framer(lp_cfg(2)).header_for(65536, hdr, &trailer), SIZE_MAX);
  EXPECT_EQ(Framer(lp_cfg(4)).header_for(std::size_t{1} << 32, hdr, &trailer), SIZE_MAX);
  EXPECT_FALSE(trailer);
  // What header_for writes, the framer reads back.
  const std::string payload(300, 'r');
  const std::size_t n = Framer(lp_cfg(2)).header_for(payload.size(), hdr, &trailer);
  EXPECT_EQ(feed_whole(lp_cfg(2), std::string(hdr, n) + payload).frames, Frames{payload});
}

TEST(FramerHeaderFor, LineNeedsATrailerAndRawNeedsNothing) {
  char hdr[8];
  bool trailer = false;
  EXPECT_EQ(Framer(line_cfg()).header_for(10, hdr, &trailer), 0u);
  EXPECT_TRUE(trailer);
  EXPECT_EQ(Framer(raw_cfg()).header_for(10, hdr, &trailer), 0u);
  EXPECT_FALSE(trailer);
}

TEST(FramerErrors, ToString) {
  EXPECT_STREQ(esockets::detail::to_string(FrameError::none), "none");
  EXPECT_STREQ(esockets::detail::to_string(FrameError::line_too_long), "line_too_long");
  EXPECT_STREQ(esockets::detail::to_string(FrameError::frame_too_long), "frame_too_long");
}

TEST(FramerState, ClearFreesTheBuffer) {
  Framer framer(line_cfg());
  FrameState st;
  framer.feed(st, "abc", 3, [](std::string_view) { return true; });
  EXPECT_TRUE(st.holds_memory());
  st.clear();
  EXPECT_FALSE(st.holds_memory());
  EXPECT_EQ(st.buffered(), 0u);
  EXPECT_EQ(st.error(), FrameError::none);
}

}  // namespace

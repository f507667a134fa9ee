// Framing::custom on the framer itself: the built-in framings written as Decoders frame every
// split of a stream exactly as the built-in framers do; a decoder's work stays linear in the
// bytes that arrive; a claim allocates nothing; answers that do not fit the input, and
// malformed input, are terminal errors with the decoder's reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "esockets/decoder.hpp"
#include "framing/framer.hpp"

namespace esockets::test {
namespace {

using detail::FeedStatus;
using detail::FrameState;
using detail::Framer;
using detail::FramerConfig;

struct FeedRun {
  std::vector<std::string> frames;
  FeedStatus last = FeedStatus::ok;
  std::string reason;
};

// Feeds `stream` cut at the given offsets; stops the sink after every `stop_every`th frame and
// resumes (as the shard does after a pause) so the held-input path is covered too.
FeedRun feed_split(Framer& f, const std::string& stream, const std::vector<std::size_t>& cuts,
               int stop_every = 0) {
  FeedRun r;
  FrameState st;
  int count = 0;
  auto sink = [&](std::string_view m) {
    r.frames.emplace_back(m);
    return stop_every == 0 || ++count % stop_every != 0;
  };
  std::size_t prev = 0;
  std::vector<std::size_t> all = cuts;
  all.push_back(stream.size());
  for (std::size_t cut : all) {
    FeedStatus s = f.feed(st, stream.data() + prev, cut - prev, sink);
    while (s == FeedStatus::stopped) s = f.resume(st, sink);
    r.last = s;
    if (s == FeedStatus::error) {
      r.reason = f.error_reason(st);
      break;
    }
    prev = cut;
  }
  return r;
}

std::string line_stream(std::mt19937& rng, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += "msg" + std::to_string(i) + std::string(rng() % 40, 'x') + "\n";
  }
  return s;
}

std::string lp_stream(std::mt19937& rng, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    std::string p = "p" + std::to_string(i) + std::string(rng() % 300, 'y');
    s += static_cast<char>((p.size() >> 8) & 0xff);
    s += static_cast<char>(p.size() & 0xff);
    s += p;
  }
  return s;
}

TEST(CustomDecoder, LineDecoderFramesEverySplitLikeTheLineFramer) {
  std::mt19937 rng(7);
  const std::string stream = line_stream(rng, 40);
  LineDecoder dec('\n', 1000);
  Framer builtin(FramerConfig{Framing::line, '\n', 4, 1000, nullptr});
  Framer custom(FramerConfig{Framing::custom, '\n', 4, 1001, &dec});
  const FeedRun whole = feed_split(builtin, stream, {});
  ASSERT_EQ(whole.frames.size(), 40u);
  for (std::size_t a = 0; a < stream.size(); a += 7) {
    for (std::size_t b = a; b < stream.size(); b += 53) {
      const FeedRun r = feed_split(custom, stream, {a, b}, static_cast<int>(a % 5));
      ASSERT_EQ(r.last, FeedStatus::ok);
      ASSERT_EQ(r.frames, whole.frames) << "cuts at " << a << ", " << b;
    }
  }
}

TEST(CustomDecoder, LengthPrefixDecoderFramesEverySplitLikeTheLengthPrefixedFramer) {
  std::mt19937 rng(11);
  const std::string stream = lp_stream(rng, 30);
  LengthPrefixDecoder dec(2, 4000);
  Framer builtin(FramerConfig{Framing::length_prefixed, '\n', 2, 4000, nullptr});
  Framer custom(FramerConfig{Framing::custom, '\n', 2, 4002, &dec});
  const FeedRun whole = feed_split(builtin, stream, {});
  ASSERT_EQ(whole.frames.size(), 30u);
  for (std::size_t a = 0; a < stream.size(); a += 13) {
    std::vector<std::size_t> cuts{a, std::min(stream.size(), a + 1),
                                  std::min(stream.size(), a + (a % 97))};
    std::sort(cuts.begin(), cuts.end());
    const FeedRun r = feed_split(custom, stream, cuts, static_cast<int>(a % 4));
    ASSERT_EQ(r.last, FeedStatus::ok);
    ASSERT_EQ(r.frames, whole.frames) << "cut at " << a;
  }
}

// Counts the bytes it examines, resuming from `progress` as a decoder should.
class CountingLineDecoder final : public Decoder {
 public:
  mutable std::size_t examined = 0;
  Decoded decode(Bytes in, std::uint64_t& progress) const override {
    for (std::size_t i = progress; i < in.size(); ++i) {
      ++examined;
      if (in[i] == '\n') return Decoded::message(i + 1, 0, i);
    }
    progress = in.size();
    return Decoded::need_more();
  }
};

TEST(CustomDecoder, ByteAtATimeInputIsExaminedOnce) {
  CountingLineDecoder dec;
  Framer f(FramerConfig{Framing::custom, '\n', 4, 1 << 20, &dec});
  const std::string line = std::string(200000, 'z') + "\n";
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < line.size(); ++i) cuts.push_back(i);
  const FeedRun r = feed_split(f, line, cuts);
  ASSERT_EQ(r.frames.size(), 1u);
  EXPECT_EQ(r.frames[0].size(), 200000u);
  // The engine appends in steps and the decoder resumes: each byte is looked at once (a few
  // more for the last step), not once per arriving byte (that would be 2e10).
  EXPECT_LE(dec.examined, 2 * line.size());
}

// Claims a huge message in its first four bytes, like a hostile length header.
class ClaimDecoder final : public Decoder {
 public:
  Decoded decode(Bytes in, std::uint64_t&) const override {
    if (in.size() < 4) return Decoded::need_more(4);
    return Decoded::need_more(std::size_t{1} << 30);
  }
};

TEST(CustomDecoder, AClaimOverMaxFrameFailsBeforeAnythingIsBuffered) {
  ClaimDecoder dec;
  Framer f(FramerConfig{Framing::custom, '\n', 4, 1 << 20, &dec});
  FrameState st;
  auto sink = [](std::string_view) { return true; };
  ASSERT_EQ(f.feed(st, "ab", 2, sink), FeedStatus::ok);  // need_more(4): buffered 2 bytes
  EXPECT_LE(st.buffered(), 2u);
  EXPECT_EQ(f.feed(st, "cd", 2, sink), FeedStatus::error);
  EXPECT_STREQ(f.error_reason(st), "frame_too_long");
  EXPECT_FALSE(st.holds_memory());
}

TEST(CustomDecoder, AClaimUnderMaxFrameBuffersOnlyWhatArrived) {
  class Claim64k final : public Decoder {
   public:
    Decoded decode(Bytes in, std::uint64_t&) const override {
      return in.size() >= 65536 ? Decoded::message(65536) : Decoded::need_more(65536);
    }
  } dec;
  Framer f(FramerConfig{Framing::custom, '\n', 4, 1 << 20, &dec});
  FrameState st;
  std::vector<std::string> got;
  auto sink = [&](std::string_view m) {
    got.emplace_back(m);
    return true;
  };
  const std::string part(100, 'q');
  ASSERT_EQ(f.feed(st, part.data(), part.size(), sink), FeedStatus::ok);
  EXPECT_EQ(st.buffered(), 100u);
  const std::string rest(65436 + 5, 'r');
  ASSERT_EQ(f.feed(st, rest.data(), rest.size(), sink), FeedStatus::ok);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].size(), 65536u);
  EXPECT_EQ(st.buffered(), 5u);  // the start of the next message
}

TEST(CustomDecoder, MalformedInputIsTerminalWithTheDecodersReason) {
  class Picky final : public Decoder {
   public:
    Decoded decode(Bytes in, std::uint64_t&) const override {
      if (in[0] == '!') return Decoded::malformed("bang is not allowed");
      return Decoded::message(1);
    }
  } dec;
  Framer f(FramerConfig{Framing::custom, '\n', 4, 100, &dec});
  const FeedRun r = feed_split(f, "abc!def", {2});
  EXPECT_EQ(r.last, FeedStatus::error);
  EXPECT_EQ(r.reason, "bang is not allowed");
  EXPECT_EQ(r.frames, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(CustomDecoder, AnAnswerOutsideTheInputIsADecoderBugThatCostsOnlyTheStream) {
  class Liar final : public Decoder {
   public:
    Decoded decode(Bytes in, std::uint64_t&) const override { return Decoded::message(in.size() + 1); }
  } liar;
  Framer f(FramerConfig{Framing::custom, '\n', 4, 100, &liar});
  const FeedRun r = feed_split(f, "hello", {});
  EXPECT_EQ(r.last, FeedStatus::error);
  EXPECT_NE(r.reason.find("decoder"), std::string::npos) << r.reason;
  EXPECT_TRUE(r.frames.empty());

  class Zero final : public Decoder {
   public:
    Decoded decode(Bytes, std::uint64_t&) const override { return Decoded::message(0); }
  } zero;
  Framer g(FramerConfig{Framing::custom, '\n', 4, 100, &zero});
  EXPECT_EQ(feed_split(g, "x", {}).last, FeedStatus::error);  // would loop forever otherwise
}

TEST(CustomDecoder, AMessageExactlyMaxFrameLongPassesOneMoreByteFails) {
  LineDecoder dec('\n', 1 << 20);
  Framer f(FramerConfig{Framing::custom, '\n', 4, 10, &dec});
  const FeedRun ok = feed_split(f, "123456789\n", {3});
  EXPECT_EQ(ok.last, FeedStatus::ok);
  EXPECT_EQ(ok.frames, (std::vector<std::string>{"123456789"}));
  const FeedRun bad = feed_split(f, "1234567890\n", {3});
  EXPECT_EQ(bad.last, FeedStatus::error);
  EXPECT_STREQ(bad.reason.c_str(), "frame_too_long");
}

TEST(CustomDecoder, LineDecoderBoundsItsSearchOnAHostileLine) {
  LineDecoder dec('\n', 100);
  std::uint64_t progress = 0;
  const std::string junk(1 << 20, 'j');
  const Decoded d = dec.decode(junk, progress);
  EXPECT_EQ(d.status, Decoded::Status::malformed);
  EXPECT_LE(progress, 101u);
}

}  // namespace
}  // namespace esockets::test

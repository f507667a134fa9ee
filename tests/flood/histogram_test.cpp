#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "histogram.hpp"

using flood::Histogram;

namespace {

std::uint64_t ref_percentile(std::vector<std::uint64_t> v, double p) {
    std::sort(v.begin(), v.end());
    auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size()) - 1e-9));
    rank = std::clamp<std::size_t>(rank, 1, v.size());
    return v[rank - 1];
}

void expect_close(std::uint64_t got, std::uint64_t want) {
    // Highest-equivalent value of the bucket: never below, at most 1/1024 above.
    EXPECT_GE(got, want);
    EXPECT_LE(static_cast<double>(got), static_cast<double>(want) * (1.0 + 1.0 / 1024) + 1.0) << "want " << want;
}

}  // namespace

TEST(FloodHistogram, IndexRoundTrip) {
    for (std::uint64_t v : {0ull, 1ull, 2047ull, 2048ull, 2049ull, 4095ull, 4096ull, 123456ull, 59'999'999ull,
                            60'000'000ull}) {
        const auto i = Histogram::index_of(v);
        EXPECT_LE(Histogram::lowest_of(i), v);
        EXPECT_GE(Histogram::highest_of(i), v);
        if (v >= 2048) {
            EXPECT_LE(static_cast<double>(Histogram::highest_of(i) - Histogram::lowest_of(i) + 1),
                      static_cast<double>(v) / 1024.0 + 1);
        }
    }
    // Indices are contiguous: the next bucket starts right after the previous one ends.
    for (std::size_t i = 1; i < Histogram::index_of(Histogram::kMaxValue); ++i)
        ASSERT_EQ(Histogram::lowest_of(i), Histogram::highest_of(i - 1) + 1) << i;
}

TEST(FloodHistogram, PercentilesMatchSortedReference) {
    std::mt19937_64 rng(42);
    std::lognormal_distribution<double> dist(6.0, 2.0);
    std::vector<std::uint64_t> v;
    Histogram h;
    for (int k = 0; k < 200000; ++k) {
        auto x = std::min<std::uint64_t>(static_cast<std::uint64_t>(dist(rng)), Histogram::kMaxValue);
        v.push_back(x);
        h.record(x);
    }
    EXPECT_EQ(h.count(), v.size());
    for (double p : {1.0, 50.0, 90.0, 99.0, 99.9, 99.99}) expect_close(h.percentile(p), ref_percentile(v, p));
    EXPECT_EQ(h.percentile(100), *std::max_element(v.begin(), v.end()));
    EXPECT_EQ(h.max(), *std::max_element(v.begin(), v.end()));
    EXPECT_EQ(h.min(), *std::min_element(v.begin(), v.end()));
}

TEST(FloodHistogram, SmallValuesExact) {
    Histogram h;
    for (std::uint64_t x = 1; x <= 1000; ++x) h.record(x);
    EXPECT_EQ(h.percentile(50), 500u);
    EXPECT_EQ(h.percentile(99), 990u);
    EXPECT_EQ(h.percentile(99.9), 999u);
}

TEST(FloodHistogram, ClampsAboveMaxButKeepsTrueMax) {
    Histogram h;
    h.record(100);
    h.record(7'200'000'000'000ull);  // 2 hours in ns (the range ends at 1 hour)
    EXPECT_EQ(h.max(), 7'200'000'000'000u);
    EXPECT_EQ(h.percentile(100), 7'200'000'000'000u);
    EXPECT_LE(h.percentile(99), 7'200'000'000'000u);
    EXPECT_GE(h.percentile(99), Histogram::kMaxValue);
}

// Values are nanoseconds: exact to 1 ns below 2048 ns, so sub-microsecond differences of loopback
// round trips are kept; a 10-30 us round trip is within 1/1024.
TEST(FloodHistogram, SubMicrosecondResolution) {
    Histogram h;
    for (std::uint64_t v : {150ull, 151ull, 999ull, 1000ull, 1001ull, 2047ull}) {
        EXPECT_EQ(Histogram::lowest_of(Histogram::index_of(v)), v);
        EXPECT_EQ(Histogram::highest_of(Histogram::index_of(v)), v);
    }
    h.record(12'345);
    h.record(12'845);
    EXPECT_LT(h.percentile(50), 12'345u + 13);
    EXPECT_GE(h.percentile(100), 12'845u);
    EXPECT_EQ(h.count_at_or_below(12'400), 1u);
}

TEST(FloodHistogram, MergeEqualsCombinedRecording) {
    std::mt19937_64 rng(7);
    std::exponential_distribution<double> d(1.0 / 5000);
    Histogram a, b, all;
    for (int k = 0; k < 50000; ++k) {
        auto x = static_cast<std::uint64_t>(d(rng));
        (k % 3 ? a : b).record(x);
        all.record(x);
    }
    Histogram m;
    m.merge(a);
    m.merge(b);
    EXPECT_EQ(m.count(), all.count());
    EXPECT_EQ(m.max(), all.max());
    EXPECT_EQ(m.min(), all.min());
    EXPECT_DOUBLE_EQ(m.mean(), all.mean());
    for (std::size_t i = 0; i < all.buckets(); ++i) ASSERT_EQ(m.bucket_count(i), all.bucket_count(i));
    for (double p : {50.0, 90.0, 99.0, 99.9, 99.99}) EXPECT_EQ(m.percentile(p), all.percentile(p));
}

TEST(FloodHistogram, SerializeRoundTrip) {
    Histogram h;
    for (std::uint64_t x : {0ull, 5ull, 5ull, 3000ull, 1'000'000ull, 90'000'000ull}) h.record(x);
    Histogram g;
    ASSERT_TRUE(g.deserialize(h.serialize()));
    EXPECT_EQ(g.count(), h.count());
    EXPECT_EQ(g.max(), h.max());
    EXPECT_EQ(g.min(), h.min());
    for (std::size_t i = 0; i < h.buckets(); ++i) ASSERT_EQ(g.bucket_count(i), h.bucket_count(i));
    EXPECT_FALSE(g.deserialize("garbage"));
}

TEST(FloodHistogram, EmptyIsZero) {
    Histogram h;
    EXPECT_EQ(h.percentile(50), 0u);
    EXPECT_EQ(h.max(), 0u);
    EXPECT_EQ(h.min(), 0u);
}

// Unit tests of tools/flood/seq_check: the sequence stamp in payloads and the per-stream tracker.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>

#include "seq_check.hpp"

using flood::decode_stamp;
using flood::encode_stamp;
using flood::kStampChars;
using flood::nearest;
using flood::SeqTracker;

TEST(SeqStamp, RoundTripsEveryLength) {
    for (std::uint32_t k = 1; k <= kStampChars; ++k) {
        for (std::uint64_t seq : {0ull, 1ull, 63ull, 64ull, 4095ull, 123456789ull, 0xfedcba9876543210ull}) {
            unsigned char buf[kStampChars];
            encode_stamp(seq, k, buf);
            for (std::uint32_t j = 0; j < k; ++j) EXPECT_NE(buf[j], '\n');
            std::uint64_t low = 0;
            unsigned digits = 0;
            ASSERT_TRUE(decode_stamp(buf, k, low, digits)) << k << " " << seq;
            EXPECT_EQ(digits, k == 1 ? 1u : k - 1);
            // Read back near the expected number it is the number itself.
            EXPECT_EQ(nearest(low, digits, seq > 5 ? seq - 5 : seq + 5), seq) << k << " " << seq;
        }
    }
}

TEST(SeqStamp, AnyOneChangedByteFailsTheCheck) {
    for (std::uint32_t k = 2; k <= kStampChars; ++k) {
        unsigned char buf[kStampChars];
        encode_stamp(987654321, k, buf);
        for (std::uint32_t j = 0; j < k; ++j) {
            for (int bit = 0; bit < 8; ++bit) {
                unsigned char bad[kStampChars];
                std::copy(buf, buf + k, bad);
                bad[j] = static_cast<unsigned char>(bad[j] ^ (1u << bit));
                std::uint64_t low = 0;
                unsigned digits = 0;
                EXPECT_FALSE(decode_stamp(bad, k, low, digits)) << "k " << k << " byte " << j << " bit " << bit;
            }
        }
    }
}

TEST(SeqStamp, NearestWrapsBothWays) {
    EXPECT_EQ(nearest(1, 1, 62), 65u);   // 65 mod 64 = 1, just above 62
    EXPECT_EQ(nearest(62, 1, 65), 62u);  // just below
    EXPECT_EQ(nearest(63, 1, 0), 63u);   // no number below 0: the one above
    EXPECT_EQ(nearest(5, 11, 1000), 5u);  // all digits known
}

TEST(SeqTracker, ClassifiesInOrderEarlyLateDuplicate) {
    SeqTracker t;
    EXPECT_EQ(t.observe(0), SeqTracker::kInOrder);
    EXPECT_EQ(t.observe(1), SeqTracker::kInOrder);
    EXPECT_EQ(t.observe(1), SeqTracker::kDuplicate);
    EXPECT_EQ(t.observe(4), SeqTracker::kEarly);  // 2, 3 missing
    EXPECT_EQ(t.missing(), 2u);
    EXPECT_EQ(t.next(), 5u);
    EXPECT_EQ(t.observe(3), SeqTracker::kLate);
    EXPECT_EQ(t.observe(3), SeqTracker::kDuplicate);
    EXPECT_EQ(t.missing(), 1u);
    EXPECT_EQ(t.observe(9), SeqTracker::kEarly);  // 5..8 missing
    EXPECT_EQ(t.observe(6), SeqTracker::kLate);   // splits the gap
    EXPECT_EQ(t.observe(5), SeqTracker::kLate);
    EXPECT_EQ(t.observe(8), SeqTracker::kLate);
    EXPECT_EQ(t.missing(), 2u);  // 2 and 7
    EXPECT_EQ(t.observe(7), SeqTracker::kLate);
    EXPECT_EQ(t.observe(2), SeqTracker::kLate);
    EXPECT_EQ(t.missing(), 0u);
    EXPECT_EQ(t.observe(0), SeqTracker::kDuplicate);
    t.reset();
    EXPECT_EQ(t.next(), 0u);
    EXPECT_EQ(t.observe(0), SeqTracker::kInOrder);
}

TEST(SeqTracker, RandomPermutationCountsMatch) {
    // Numbers 0..999 arrive shuffled within windows of 8, some twice, some never.
    std::uint64_t state = 12345;
    auto rnd = [&] { return (state = state * 6364136223846793005ull + 1442695040888963407ull) >> 33; };
    std::vector<std::uint64_t> order;
    for (std::uint64_t b = 0; b < 1000; b += 8) {
        std::vector<std::uint64_t> w;
        for (std::uint64_t x = b; x < b + 8; ++x) w.push_back(x);
        for (std::size_t i = w.size(); i > 1; --i) std::swap(w[i - 1], w[rnd() % i]);
        order.insert(order.end(), w.begin(), w.end());
    }
    std::set<std::uint64_t> dropped, seen;
    SeqTracker t;
    std::uint64_t dups = 0;
    for (std::uint64_t s : order) {
        if (rnd() % 50 == 0) {
            dropped.insert(s);
            continue;
        }
        const bool again = rnd() % 40 == 0;
        for (int k = 0; k < (again ? 2 : 1); ++k) {
            const auto out = t.observe(s);
            if (seen.count(s)) {
                EXPECT_EQ(out, SeqTracker::kDuplicate);
                ++dups;
            } else {
                EXPECT_NE(out, SeqTracker::kDuplicate);
            }
            seen.insert(s);
        }
    }
    EXPECT_GT(dups, 0u);
    // Lost = gaps never filled + the tail after the last arrival.
    EXPECT_EQ(t.missing() + (1000 - t.next()), dropped.size());
}

// esockets-flood: sequence numbers in payloads and the check of what came back.
//
// Stamp (--verify): the first min(size, 12) payload bytes of a request carry its per-connection
// sequence number in a 64-character alphabet (never '\n'), so an echo server returns it:
//   1 byte:     [digit]                       the number mod 64, no check character
//   2..12 bytes [check][d0 d1 ... d(k-2)]     little-endian base-64 digits, then a check
//                                             character over them (any one changed byte fails it)
// 11 digits hold 66 bits, so a 12-byte stamp carries the whole number; a shorter one carries its
// low digits and the reader takes the nearest number to the one it expects (nearest()).
//
// SeqTracker: one stream's arrivals (a connection's replies, one publisher's messages to one
// subscriber). It classifies each number as in order, early (numbers before it are now missing),
// late (fills a gap: a reordering) or duplicate, and keeps the gaps so "lost" can be counted at
// the end: gaps never filled plus numbers sent but never seen.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace flood {

constexpr std::uint32_t kStampChars = 12;

/// Writes the stamp of `seq` for a payload whose first k (1..12) bytes hold it.
void encode_stamp(std::uint64_t seq, std::uint32_t k, unsigned char* out);
/// Reads a stamp of k (1..12) bytes: false if a byte is outside the alphabet or the check fails;
/// otherwise `low` holds the number's low digits and `digits` how many there are (1 for k == 1,
/// k - 1 otherwise).
bool decode_stamp(const unsigned char* in, std::uint32_t k, std::uint64_t& low, unsigned& digits);
/// The number whose low `digits` base-64 digits are `low` that is nearest to `ref`.
std::uint64_t nearest(std::uint64_t low, unsigned digits, std::uint64_t ref);

class SeqTracker {
public:
    enum Outcome : std::uint8_t { kInOrder, kEarly, kLate, kDuplicate };

    /// Records the arrival of `s`.
    Outcome observe(std::uint64_t s);
    /// One past the highest number seen (the next one expected in order).
    std::uint64_t next() const { return next_; }
    /// Numbers below next() that have not arrived (yet).
    std::uint64_t missing() const { return missing_; }
    void reset();

private:
    static constexpr std::size_t kMaxGaps = 1 << 16;  // a hostile stream cannot grow it further
    std::uint64_t next_ = 0;
    std::uint64_t missing_ = 0;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> gaps_;  // [lo, hi), ascending, disjoint
};

}  // namespace flood

#include "seq_check.hpp"

#include <algorithm>

namespace flood {

namespace {

constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
static_assert(sizeof kAlphabet == 65);

int digit_of(unsigned char ch) {
    if (ch >= 'a' && ch <= 'z') return ch - 'a';
    if (ch >= 'A' && ch <= 'Z') return 26 + (ch - 'A');
    if (ch >= '0' && ch <= '9') return 52 + (ch - '0');
    if (ch == '-') return 62;
    if (ch == '_') return 63;
    return -1;
}

// Odd weights: a change of one digit by d (1..63) moves the sum by an odd multiple of d, never a
// multiple of 64.
unsigned check_of(const unsigned* d, std::uint32_t n, std::uint32_t k) {
    unsigned sum = k;
    for (std::uint32_t j = 0; j < n; ++j) sum += (2 * j + 1) * d[j];
    return sum & 63u;
}

}  // namespace

void encode_stamp(std::uint64_t seq, std::uint32_t k, unsigned char* out) {
    if (k == 1) {
        out[0] = static_cast<unsigned char>(kAlphabet[seq & 63u]);
        return;
    }
    unsigned d[kStampChars];
    const std::uint32_t n = k - 1;
    for (std::uint32_t j = 0; j < n; ++j) {
        d[j] = static_cast<unsigned>(seq & 63u);
        seq >>= 6;
        out[1 + j] = static_cast<unsigned char>(kAlphabet[d[j]]);
    }
    out[0] = static_cast<unsigned char>(kAlphabet[check_of(d, n, k)]);
}

bool decode_stamp(const unsigned char* in, std::uint32_t k, std::uint64_t& low, unsigned& digits) {
    if (k == 0 || k > kStampChars) return false;
    if (k == 1) {
        const int v = digit_of(in[0]);
        if (v < 0) return false;
        low = static_cast<std::uint64_t>(v);
        digits = 1;
        return true;
    }
    unsigned d[kStampChars];
    const std::uint32_t n = k - 1;
    low = 0;
    for (std::uint32_t j = 0; j < n; ++j) {
        const int v = digit_of(in[1 + j]);
        if (v < 0) return false;
        d[j] = static_cast<unsigned>(v);
        if (6 * j < 64) low |= static_cast<std::uint64_t>(v) << (6 * j);
    }
    const int c = digit_of(in[0]);
    if (c < 0 || static_cast<unsigned>(c) != check_of(d, n, k)) return false;
    digits = n;
    return true;
}

std::uint64_t nearest(std::uint64_t low, unsigned digits, std::uint64_t ref) {
    if (6u * digits >= 64) return low;
    const std::uint64_t m = std::uint64_t{1} << (6u * digits);
    const std::uint64_t up = (low - ref) & (m - 1);  // distance going up from ref
    if (up < m / 2) return ref + up;
    const std::uint64_t down = m - up;
    return ref >= down ? ref - down : ref + up;
}

SeqTracker::Outcome SeqTracker::observe(std::uint64_t s) {
    if (s == next_) {
        ++next_;
        return kInOrder;
    }
    if (s > next_) {
        if (gaps_.size() >= kMaxGaps) {
            // Merge the two oldest gaps: the numbers between them count as missing from now on.
            missing_ += gaps_[1].first - gaps_[0].second;
            gaps_[1].first = gaps_[0].first;
            gaps_.erase(gaps_.begin());
        }
        gaps_.emplace_back(next_, s);
        missing_ += s - next_;
        next_ = s + 1;
        return kEarly;
    }
    // s < next_: a gap holds it (late) or it came before (duplicate).
    auto it = std::upper_bound(gaps_.begin(), gaps_.end(), s,
                               [](std::uint64_t v, const std::pair<std::uint64_t, std::uint64_t>& g) { return v < g.first; });
    if (it == gaps_.begin()) return kDuplicate;
    --it;
    if (s >= it->second) return kDuplicate;
    if (gaps_.size() >= kMaxGaps && it->first != s && it->second != s + 1) return kLate;  // no room to split
    --missing_;
    if (it->first == s && it->second == s + 1) {
        gaps_.erase(it);
    } else if (it->first == s) {
        ++it->first;
    } else if (it->second == s + 1) {
        --it->second;
    } else {
        const std::uint64_t hi = it->second;
        it->second = s;
        gaps_.insert(it + 1, {s + 1, hi});
    }
    return kLate;
}

void SeqTracker::reset() {
    next_ = 0;
    missing_ = 0;
    gaps_.clear();
}

}  // namespace flood

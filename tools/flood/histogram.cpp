#include "histogram.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace flood {

Histogram::Histogram() : counts_(index_of(kMaxValue) + 1, 0) {}

std::size_t Histogram::index_of(std::uint64_t v) {
    if (v < 2 * kSub) return static_cast<std::size_t>(v);
    const int msb = 63 - __builtin_clzll(v);
    const int k = msb - kSubBits;  // v >> k is in [kSub, 2*kSub)
    return static_cast<std::size_t>(kSub) * static_cast<std::size_t>(k) + static_cast<std::size_t>(v >> k);
}

std::uint64_t Histogram::lowest_of(std::size_t idx) {
    if (idx < 2 * kSub) return idx;
    const std::size_t k = idx / kSub - 1;
    const std::uint64_t sub = idx - kSub * k;
    return sub << k;
}

std::uint64_t Histogram::highest_of(std::size_t idx) {
    if (idx < 2 * kSub) return idx;
    const std::size_t k = idx / kSub - 1;
    const std::uint64_t sub = idx - kSub * k;
    return ((sub + 1) << k) - 1;
}

void Histogram::record_n(std::uint64_t v, std::uint64_t n) {
    if (n == 0) return;
    const std::uint64_t c = std::min(v, kMaxValue);
    counts_[index_of(c)] += n;
    total_ += n;
    sum_ += v * n;
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
}

void Histogram::merge(const Histogram& o) {
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += o.counts_[i];
    total_ += o.total_;
    sum_ += o.sum_;
    min_ = std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
}

void Histogram::reset() {
    std::fill(counts_.begin(), counts_.end(), 0);
    total_ = sum_ = max_ = 0;
    min_ = UINT64_MAX;
}

std::uint64_t Histogram::percentile(double p) const {
    if (total_ == 0) return 0;
    if (p >= 100.0) return max_;
    auto rank = static_cast<std::uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total_) - 1e-9));
    rank = std::clamp<std::uint64_t>(rank, 1, total_);
    std::uint64_t cum = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
        cum += counts_[i];
        if (cum >= rank) return std::min(highest_of(i), max_);
    }
    return max_;
}

std::uint64_t Histogram::count_at_or_below(std::uint64_t v) const {
    const std::size_t last = index_of(std::min(v, kMaxValue));
    std::uint64_t cum = 0;
    for (std::size_t i = 0; i <= last && i < counts_.size(); ++i) cum += counts_[i];
    return cum;
}

double Histogram::stddev() const {
    if (total_ == 0) return 0;
    const double m = mean();
    double acc = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
        if (!counts_[i]) continue;
        const double mid = (static_cast<double>(lowest_of(i)) + static_cast<double>(highest_of(i))) / 2 - m;
        acc += mid * mid * static_cast<double>(counts_[i]);
    }
    return std::sqrt(acc / static_cast<double>(total_));
}

std::string Histogram::serialize() const {
    std::ostringstream os;
    std::size_t nz = 0;
    for (auto c : counts_) nz += c != 0;
    os << total_ << ' ' << sum_ << ' ' << min_ << ' ' << max_ << ' ' << nz;
    for (std::size_t i = 0; i < counts_.size(); ++i)
        if (counts_[i]) os << ' ' << i << ':' << counts_[i];
    return os.str();
}

bool Histogram::deserialize(const std::string& s) {
    reset();
    std::istringstream is(s);
    std::size_t nz = 0;
    if (!(is >> total_ >> sum_ >> min_ >> max_ >> nz)) return false;
    for (std::size_t j = 0; j < nz; ++j) {
        std::size_t i = 0;
        char colon = 0;
        std::uint64_t c = 0;
        if (!(is >> i >> colon >> c) || colon != ':' || i >= counts_.size()) return false;
        counts_[i] += c;
    }
    return true;
}

}  // namespace flood

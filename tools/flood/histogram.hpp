// esockets-flood: HDR-style log-linear latency histogram (values in nanoseconds).
// Values 0..2047 ns are exact (1 ns resolution: loopback round trips are 10-30 us, so
// sub-microsecond differences stay visible); above that each power of two is split into 1024
// sub-buckets, i.e. a relative bucket width of at most 1/1024 (~3 significant digits).
// Range 0 .. kMaxValue (1 hour); larger values are clamped but the true maximum is tracked
// separately. Histograms merge exactly by adding counts (the --procs merge is exact).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace flood {

class Histogram {
public:
    static constexpr std::uint64_t kMaxValue = 3'600'000'000'000ull;  // 1 hour in ns
    static constexpr int kSubBits = 10;                     // 1024 sub-buckets per half-range
    static constexpr std::uint64_t kSub = 1u << kSubBits;

    Histogram();

    void record(std::uint64_t v) { record_n(v, 1); }
    void record_n(std::uint64_t v, std::uint64_t n);
    void merge(const Histogram& o);
    void reset();

    std::uint64_t count() const { return total_; }
    std::uint64_t max() const { return max_; }
    std::uint64_t min() const { return total_ ? min_ : 0; }
    double mean() const { return total_ ? static_cast<double>(sum_) / static_cast<double>(total_) : 0.0; }
    // p in [0,100]. Returns the highest value equivalent to the bucket holding
    // the ceil(p/100*count)-th smallest sample (clamped to the true max).
    std::uint64_t percentile(double p) const;
    // Samples <= v (counted by bucket: all samples of the bucket holding v).
    std::uint64_t count_at_or_below(std::uint64_t v) const;
    double stddev() const;

    static std::size_t index_of(std::uint64_t v);
    static std::uint64_t lowest_of(std::size_t idx);
    static std::uint64_t highest_of(std::size_t idx);
    std::size_t buckets() const { return counts_.size(); }
    std::uint64_t bucket_count(std::size_t idx) const { return counts_[idx]; }

    // Compact text form: "total sum min max n idx:count idx:count ..." (non-zero buckets).
    std::string serialize() const;
    bool deserialize(const std::string& s);

private:
    std::vector<std::uint64_t> counts_;
    std::uint64_t total_ = 0;
    std::uint64_t sum_ = 0;
    std::uint64_t min_ = UINT64_MAX;
    std::uint64_t max_ = 0;
};

}  // namespace flood

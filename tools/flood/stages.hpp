// esockets-flood: --stages for the rate mode, a piecewise-linear rate schedule.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace flood {

// One stage: over `secs` seconds the rate goes linearly from the previous stage's target (the first
// stage: from the rate mode's R, 0 when R is not given) to `rate` msgs/s. Equal rates hold it steady.
struct Stage {
    double secs = 0;
    double rate = 0;
};

// "5s:1000,10s:5000,5s:0" (durations in s or ms, a bare number is seconds). Returns false with a
// message saying what to change.
bool parse_stages(const std::string& text, std::vector<Stage>& out, std::string& err);

// The schedule of arrivals: rate(t), the expected arrivals N(t) = integral of rate from 0 to t, and its
// inverse. After the last stage its rate holds (--duration longer than the stages).
class RateSchedule {
public:
    RateSchedule() = default;
    RateSchedule(double start_rate, const std::vector<Stage>& stages, double scale);
    bool empty() const { return segs_.empty(); }
    double rate_at(double t) const;
    double arrivals_until(double t) const;  // N(t)
    // The time t with N(t) = n, or a negative value when N never reaches n (the rate stays 0).
    double time_of(double n) const;
    // Index of the stage that holds time t (the last one for t after the end).
    std::size_t stage_at(double t) const;

private:
    struct Seg {
        double t0, len, r0, r1, n0;  // start, length, rates at both ends, N(t0)
    };
    std::vector<Seg> segs_;
};

}  // namespace flood

#include "stages.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace flood {

bool parse_stages(const std::string& text, std::vector<Stage>& out, std::string& err) {
    out.clear();
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        const auto colon = item.find(':');
        auto fail = [&](const std::string& what) {
            err = "invalid stage '" + item + "' in --stages: " + what;
            return false;
        };
        if (colon == std::string::npos) return fail("expected DURATION:RATE, e.g. 5s:1000");
        const std::string d = item.substr(0, colon), r = item.substr(colon + 1);
        char* end = nullptr;
        errno = 0;
        double secs = std::strtod(d.c_str(), &end);
        const std::string unit(end);
        if (errno || end == d.c_str() || (unit != "" && unit != "s" && unit != "ms" && unit != "m"))
            return fail("the duration needs a number with s, ms or m, e.g. 5s");
        secs *= unit == "ms" ? 1e-3 : unit == "m" ? 60.0 : 1.0;
        if (!(secs > 0) || secs > 86400) return fail("expected a duration 0 < D <= 86400 s");
        errno = 0;
        const double rate = std::strtod(r.c_str(), &end);
        if (errno || end == r.c_str() || *end || !(rate >= 0) || rate > 1e9)
            return fail("expected a rate 0 <= R <= 1000000000 msgs/s");
        out.push_back({secs, rate});
    }
    if (out.empty() || text.empty() || text.back() == ',') {
        err = "--stages needs DURATION:RATE,... e.g. 5s:1000,10s:5000,5s:0";
        return false;
    }
    return true;
}

RateSchedule::RateSchedule(double start_rate, const std::vector<Stage>& stages, double scale) {
    double t = 0, n = 0, prev = start_rate * scale;
    for (const Stage& s : stages) {
        const double r1 = s.rate * scale;
        segs_.push_back({t, s.secs, prev, r1, n});
        n += (prev + r1) / 2 * s.secs;
        t += s.secs;
        prev = r1;
    }
}

std::size_t RateSchedule::stage_at(double t) const {
    for (std::size_t i = 0; i < segs_.size(); ++i)
        if (t < segs_[i].t0 + segs_[i].len) return i;
    return segs_.empty() ? 0 : segs_.size() - 1;
}

double RateSchedule::rate_at(double t) const {
    if (segs_.empty()) return 0;
    const Seg& s = segs_[stage_at(t)];
    const double x = std::min(std::max(t - s.t0, 0.0), s.len);
    return s.r0 + (s.r1 - s.r0) * x / s.len;
}

double RateSchedule::arrivals_until(double t) const {
    if (segs_.empty() || t <= 0) return 0;
    const Seg& s = segs_[stage_at(t)];
    const double x = std::min(t - s.t0, s.len);
    double n = s.n0 + s.r0 * x + (s.r1 - s.r0) / (2 * s.len) * x * x;
    if (t > s.t0 + s.len) n += s.r1 * (t - s.t0 - s.len);  // after the last stage: its rate holds
    return n;
}

double RateSchedule::time_of(double n) const {
    if (segs_.empty()) return -1;
    for (std::size_t i = 0; i < segs_.size(); ++i) {
        const Seg& s = segs_[i];
        const double total = (s.r0 + s.r1) / 2 * s.len;
        if (n - s.n0 > total && i + 1 < segs_.size()) continue;
        const double m = n - s.n0;  // arrivals into this segment
        if (m <= 0) return s.t0;
        if (m > total) {  // after the last stage
            if (s.r1 <= 0) return -1;
            return s.t0 + s.len + (m - total) / s.r1;
        }
        // Solve r0 x + a/2 x^2 = m with a = (r1 - r0) / len for the root in [0, len].
        // Written as 2m / (r0 + sqrt(r0^2 + 2am)): no cancellation for small or negative a, and exact
        // for a = 0; the denominator is > 0 since m > 0 and m <= total.
        const double a = (s.r1 - s.r0) / s.len;
        const double x = 2 * m / (s.r0 + std::sqrt(std::max(0.0, s.r0 * s.r0 + 2 * a * m)));
        return s.t0 + std::min(std::max(x, 0.0), s.len);
    }
    return -1;
}

}  // namespace flood

#include "report_stages.hpp"

#include <algorithm>
#include <string>
#include <vector>

namespace flood {

namespace {

struct Row {
    double start = 0, secs = 0;        // the part of the stage inside --duration
    double from = 0, to = 0;           // target rates at its start and end
    double expected = 0;               // arrivals the schedule asked for in it
    std::uint64_t sent = 0, answered = 0, received = 0;
    const Histogram* lat = nullptr;    // requests due in the stage
    double achieved() const { return secs > 0 ? static_cast<double>(received) / secs : 0; }
    double target_avg() const { return secs > 0 ? expected / secs : 0; }
};

std::vector<Row> rows_of(const Options& o, const Result& r) {
    std::vector<Row> rows;
    const RateSchedule s(o.rate, o.stages, 1.0);
    double t = 0, prev = o.rate;
    for (std::size_t i = 0; i < o.stages.size(); ++i) {
        Row w;
        w.start = std::min(t, o.duration);
        // The last stage lasts to the end of --duration (its rate holds) when that is longer.
        const double end = i + 1 == o.stages.size() ? o.duration : std::min(t + o.stages[i].secs, o.duration);
        w.secs = end - w.start;
        w.from = prev;
        w.to = o.stages[i].rate;
        w.expected = s.arrivals_until(end) - s.arrivals_until(w.start);
        const std::string pre = "stage." + std::to_string(i) + ".";
        w.sent = r.get(pre + "sent");
        w.answered = r.get(pre + "answered");
        w.received = r.get(pre + "received");
        w.lat = r.find_hist(pre + "lat");
        rows.push_back(w);
        t += o.stages[i].secs;
        prev = o.stages[i].rate;
    }
    return rows;
}

}  // namespace

void stages_json(Json& j, const Options& o, const Result& r) {
    if (o.stages.empty()) return;
    j.open("stages", '[');
    for (const Row& w : rows_of(o, r)) {
        j.open(nullptr, '{').num("start_s", w.start).num("duration_s", w.secs).num("from_rate", w.from);
        j.num("to_rate", w.to).num("target_rate_avg", w.target_avg()).num("expected", w.expected);
        j.u("sent", w.sent).u("answered", w.answered).u("received", w.received).num("achieved_rate", w.achieved());
        j.pcts("latency_us", w.lat ? *w.lat : Histogram());
        j.close('}');
    }
    j.close(']');
}

void print_stages(FILE* f, const Options& o, const Result& r) {
    if (o.stages.empty()) return;
    std::fprintf(f, "stages (target ramps linearly from the previous stage's rate; achieved = replies in the stage / its length):\n");
    int i = 0;
    for (const Row& w : rows_of(o, r)) {
        auto ms = [](std::uint64_t ns) { return static_cast<double>(ns) / 1e6; };
        std::fprintf(f, "  %2d  %6.2f s at %7.2f s  target %.0f -> %.0f (avg %.1f) msgs/s  sent %llu  answered %llu  "
                        "achieved %.1f msgs/s",
                     i++, w.secs, w.start, w.from, w.to, w.target_avg(), static_cast<unsigned long long>(w.sent),
                     static_cast<unsigned long long>(w.answered), w.achieved());
        if (w.lat && w.lat->count())
            std::fprintf(f, "  p50 %.3f p99 %.3f ms", ms(w.lat->percentile(50)), ms(w.lat->percentile(99)));
        std::fprintf(f, "\n");
    }
}

}  // namespace flood

// esockets-flood: --stages, the rate schedule of one worker thread and its counters per stage.
#include <cmath>
#include <limits>

#include "worker.hpp"

namespace flood {

void Worker::set_schedule(const RateSchedule& s, std::size_t nstages) {
    sched_ = s;
    stage_.assign(nstages, StageCounters{});
}

std::uint64_t Worker::scheduled_arrival() const {
    const double t = sched_.time_of(units_);
    if (t < 0 || t > 1e6) return std::numeric_limits<std::uint64_t>::max();
    return sh_.t0 + static_cast<std::uint64_t>(std::llround(t * 1e9));
}

std::size_t Worker::stage_of(std::uint64_t t) const {
    return sched_.stage_at(t > sh_.t0 ? static_cast<double>(t - sh_.t0) / 1e9 : 0.0);
}

void Worker::stage_reply(std::uint64_t now, std::uint64_t intended, std::uint64_t lat) {
    StageCounters& s = stage_[stage_of(intended)];
    ++s.answered;
    s.lat.record(lat);
    if (now < sh_.t_end) ++stage_[stage_of(now)].received;  // replies in the drain belong to no stage
}

void Worker::stage_collect(Result& r) const {
    for (std::size_t i = 0; i < stage_.size(); ++i) {
        const std::string pre = "stage." + std::to_string(i) + ".";
        r.c[pre + "sent"] += stage_[i].sent;
        r.c[pre + "answered"] += stage_[i].answered;
        r.c[pre + "received"] += stage_[i].received;
        r.hist(pre + "lat").merge(stage_[i].lat);
    }
}

}  // namespace flood

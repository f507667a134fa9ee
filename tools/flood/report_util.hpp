// esockets-flood: helpers shared by the report (report.cpp) and the verdict (report_verdict.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "options.hpp"
#include "stats.hpp"

namespace flood {

inline Histogram merged(const Result& r, const std::string& what, std::initializer_list<int> phases) {
    Histogram h;
    for (int p : phases)
        if (auto* x = r.find_hist(std::string(phase_name(p)) + "." + what)) h.merge(*x);
    return h;
}

inline double steady_secs(const Result& r) {
    double s = r.getx("phase.steady.secs");
    return s > 0 ? s : r.getx("wall_s");
}

inline std::uint64_t steady_count(const Result& r, const std::string& what) {
    if (r.getx("phase.steady.secs") > 0) return r.get("steady." + what);
    std::uint64_t n = 0;
    for (int p = 0; p < kPhaseCount; ++p) n += r.get(std::string(phase_name(p)) + "." + what);
    return n;
}

inline bool long_lived(Mode m) {
    return m == Mode::Idle || m == Mode::Pingpong || m == Mode::Pipeline || m == Mode::Rate || m == Mode::Firehose ||
           m == Mode::Storm || m == Mode::Pubsub;
}

// What the sequence checks found (--verify in a mode with replies, or pubsub).
struct Delivery {
    bool checked = false;
    std::uint64_t lost = 0, duplicated = 0, reordered = 0, corrupted = 0;
    std::uint64_t bad() const { return lost + duplicated + reordered + corrupted; }
};

inline Delivery delivery_of(const Options& o, const Result& r) {
    Delivery d;
    const char* pre = o.mode == Mode::Pubsub ? "pubsub." : "verify.";
    d.checked = o.mode == Mode::Pubsub || (o.verify && has_replies(o.mode));
    if (!d.checked) return d;
    d.lost = r.get(std::string(pre) + "lost");
    d.duplicated = r.get(std::string(pre) + "duplicated");
    d.reordered = r.get(std::string(pre) + "reordered");
    d.corrupted = r.get("err.verify_mismatch");
    return d;
}

// pubsub: seconds from the last OK SUB (publishing starts) to the last delivery.
inline double pubsub_secs(const Result& r) {
    const double from = r.getx("pubsub.subscribed_s", 0), to = r.getx("pubsub.last_delivery_s", 0);
    return to > from ? to - from : 0.0;
}

inline std::uint64_t total_errors(const Result& r) {
    std::uint64_t n = 0;
    for (int e = 0; e < kErrCount; ++e) n += r.get(std::string("err.") + err_name(e));
    return n;
}



// Every request that was due, and what became of it (closed-loop and rate modes).
struct Accounting {
    std::uint64_t due = 0;            // requests issued (rate: dispatched by the schedule)
    std::uint64_t answered = 0;       // replies (msgs)
    std::uint64_t dead = 0, end = 0;  // unanswered: lost with a dead connection / still waiting at the end
    std::uint64_t late = 0;           // answered after their response timeout (counted as errors)
    std::uint64_t dropped = 0;        // rate: over the per-connection backlog cap
    std::uint64_t unanswered() const { return dead + end; }
    double unanswered_frac() const { return due ? static_cast<double>(unanswered()) / static_cast<double>(due) : 0; }
};
inline Accounting accounting_of(const Result& r) {
    Accounting a;
    a.due = r.get("requests.issued");
    for (int p = 0; p < kPhaseCount; ++p) a.answered += r.get(std::string(phase_name(p)) + ".msgs");
    a.dead = r.get("unanswered.dead_connection");
    a.end = r.get("unanswered.end_of_run");
    a.late = r.get("late_replies");
    a.dropped = r.get("rate.dropped");
    return a;
}
inline bool tracks_unanswered(Mode m) {
    return m == Mode::Pingpong || m == Mode::Pipeline || m == Mode::Rate || m == Mode::Churn;
}

// One event-loop thread's figures (keys thr.<proc>.<thread>.*), what validity is judged on.
struct ThreadFigures {
    std::string name;  // "<proc>.<thread>"
    double util = 0;   // CPU / wall
    std::uint64_t lag99 = 0, lag90 = 0, dispatch99 = 0;  // ns
    std::uint64_t stall = 0, stall_at = 0, stall_waited = 0;  // ns, ns since start, requests
};
std::vector<ThreadFigures> threads_of(const Result& r);

// The longest stall (no reply while requests were due), over all threads.
struct Stall {
    bool found = false;
    double at_s = 0, len_s = 0;
    bool to_end = false;          // still going on when the run ended
    std::uint64_t waited = 0;     // requests that waited through it (summed over threads)
};
Stall stall_of(const Options& o, const Result& r);
std::string narrative(const Options& o, const Result& r, const struct Verdict& v);
bool write_hgrm(const std::string& path, const Histogram& h);
std::string fmt_lat(std::uint64_t ns);  // "23.4 us", "2.309 ms", "3.021 s"

}  // namespace flood

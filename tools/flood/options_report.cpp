// esockets-flood: thresholds that fail a run and result files (--max-unanswered, --max-p99, --max-pause, --hgrm,
// --csv).
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "options.hpp"

namespace flood {

bool parse_duration_ns(const std::string& s, std::uint64_t& ns) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(s.c_str(), &end);
    if (errno || end == s.c_str() || !(v >= 0) || v > 1e6) return false;
    const std::string unit(end);
    double mult = 0;
    if (unit == "ns") mult = 1;
    else if (unit == "us") mult = 1e3;
    else if (unit == "ms") mult = 1e6;
    else if (unit == "s") mult = 1e9;
    else return false;
    ns = static_cast<std::uint64_t>(std::llround(v * mult));
    return ns > 0;
}

bool is_report_flag(const std::string& f) {
    return f == "--max-unanswered" || f == "--max-p50" || f == "--max-p99" || f == "--max-p999" ||
           f == "--max-latency" || f == "--max-pause" || f == "--hgrm" || f == "--csv" || f == "--hdr-log";
}

bool set_report_flag(const std::string& f, const std::string& val, Options& o, std::string& err) {
    auto bad = [&](const char* what) {
        err = "invalid " + f + " '" + val + "': " + what;
        return false;
    };
    if (f == "--max-unanswered") {
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(val.c_str(), &end);
        if (errno || end == val.c_str() || !(v >= 0)) return bad("expected a percentage such as 0.1% or a count");
        if (std::string(end) == "%") {
            if (v > 100) return bad("expected a percentage 0..100%");
            o.max_unanswered_frac = v / 100;
            o.max_unanswered_count = -1;
        } else if (*end == 0 && v == std::floor(v)) {
            o.max_unanswered_count = static_cast<std::int64_t>(v);
        } else {
            return bad("expected a percentage such as 0.1% or a whole count such as 0");
        }
        o.max_unanswered_text = val;
        return true;
    }
    if (f == "--hgrm") {
        o.hgrm_path = val;
        return true;
    }
    if (f == "--hdr-log") {
        o.hdr_log_path = val;
        return true;
    }
    if (f == "--csv") {
        o.csv_path = val;
        return true;
    }
    std::uint64_t ns = 0;
    if (!parse_duration_ns(val, ns)) return bad("expected a latency with a unit, e.g. 2ms, 500us, 1.5s");
    std::uint64_t& limit = f == "--max-p50"     ? o.max_p50_ns
                           : f == "--max-p99"   ? o.max_p99_ns
                           : f == "--max-p999"  ? o.max_p999_ns
                           : f == "--max-pause" ? o.max_pause_ns
                                                : o.max_latency_ns;
    limit = ns;
    return true;
}

void print_report_help() {
    std::printf(
        "Thresholds and result files:\n"
        "  --max-unanswered X%%|N   exit 7 when more requests than this went unanswered (default 0.1%%\n"
        "                           of the requests due). Unanswered = due but never answered: still\n"
        "                           waiting when the drain ended, or queued on a connection that died.\n"
        "                           Each counts in the latency distribution as a censored value: at\n"
        "                           least the time from its (intended) send to the end of the run\n"
        "  --max-p50 T, --max-p99 T, --max-p999 T, --max-latency T\n"
        "                           exit 8 when that latency percentile (or the maximum) is over T,\n"
        "                           e.g. 2ms, 500us, 1.5s (headline latency, unanswered included)\n"
        "  --max-pause T            exit 8 when the p99 over connections of their pause is over T: a\n"
        "                           connection's pause is its longest wait for the server while it was\n"
        "                           owed a reply (a server hand-over shows here). pingpong, pipeline,\n"
        "                           rate and churn only (other modes owe no replies)\n"
        "  --hgrm FILE              write the latency distribution in HdrHistogram's percentile format\n"
        "                           (columns Value Percentile TotalCount 1/(1-Percentile), ms), which\n"
        "                           HdrHistogram plotters read\n"
        "  --csv FILE               one row per second: time, msgs/s, sent/s, errors, p50/p99 of the\n"
        "                           replies in that second, requests waiting, connections open\n"
        "  --hdr-log FILE           HdrHistogram interval log (format 1.3): per second, the latencies of\n"
        "                           the replies in that second as a base64 compressed V2 histogram (values\n"
        "                           in ns, 3 significant digits; Interval_Max in ms), for HdrHistogram's\n"
        "                           log readers and plotters. One process only (no --procs)\n\n");
}

}  // namespace flood

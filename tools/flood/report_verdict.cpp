// esockets-flood: the verdict (validity per thread, thresholds, exit code), stalls, the
// "what this run shows" paragraph and the HdrHistogram percentile file.
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "report.hpp"
#include "report_util.hpp"

namespace flood {

namespace {
constexpr std::uint64_t kMsNs = 1'000'000;

std::string with_commas(std::uint64_t n) {
    const std::string d = std::to_string(n);
    std::string s;
    for (std::size_t i = 0; i < d.size(); ++i) {
        if (i > 0 && (d.size() - i) % 3 == 0) s += ',';
        s += d[i];
    }
    return s;
}

std::string fmt(const char* f, double a) {
    char b[64];
    std::snprintf(b, sizeof b, f, a);
    return b;
}
}  // namespace

std::string fmt_lat(std::uint64_t ns) {
    char b[48];
    if (ns < 1'000'000) std::snprintf(b, sizeof b, "%.1f us", static_cast<double>(ns) / 1e3);
    else if (ns < 1'000'000'000) std::snprintf(b, sizeof b, "%.3f ms", static_cast<double>(ns) / 1e6);
    else std::snprintf(b, sizeof b, "%.3f s", static_cast<double>(ns) / 1e9);
    return b;
}

std::vector<ThreadFigures> threads_of(const Result& r) {
    std::map<std::string, ThreadFigures> m;
    for (auto& [k, v] : r.c) {
        if (k.rfind("thr.", 0) != 0) continue;
        const std::size_t dot = k.rfind('.');
        const std::string name = k.substr(4, dot - 4), field = k.substr(dot + 1);
        ThreadFigures& t = m[name];
        t.name = name;
        if (field == "cpu_ns") t.util = static_cast<double>(v);  // divided by the wall time below
        else if (field == "lag_steady_p99_ns") t.lag99 = v;
        else if (field == "lag_p90_ns") t.lag90 = v;
        else if (field == "dispatch_p99_ns") t.dispatch99 = v;
        else if (field == "stall_ns") t.stall = v;
        else if (field == "stall_at_ns") t.stall_at = v;
        else if (field == "stall_waited") t.stall_waited = v;
    }
    std::vector<ThreadFigures> out;
    for (auto& [name, t] : m) {
        const std::uint64_t wall = r.get("thr." + name + ".wall_ns");
        t.util = wall ? t.util / static_cast<double>(wall) : 0;
        out.push_back(t);
    }
    return out;
}

Stall stall_of(const Options& o, const Result& r) {
    Stall s;
    if (!tracks_unanswered(o.mode)) return s;
    const auto th = threads_of(r);
    const ThreadFigures* w = nullptr;
    for (auto& t : th)
        if (t.stall && (!w || t.stall > w->stall)) w = &t;
    if (!w) return s;
    // A stall worth naming: at least 200 ms, and 10 times the median service time (from the actual send:
    // the waiting that the stall itself causes does not raise the bar).
    const Histogram svc = merged(r, "svc", {kSteady, kDrain});
    if (w->stall < 200 * kMsNs || w->stall < 10 * svc.percentile(50)) return s;
    s.found = true;
    s.at_s = static_cast<double>(w->stall_at) / 1e9;
    s.len_s = static_cast<double>(w->stall) / 1e9;
    s.to_end = s.at_s + s.len_s >= r.getx("wall_s") - 0.05;
    // Threads whose longest stall overlaps this one saw the same event: add up their waiting requests.
    for (auto& t : th)
        if (t.stall && t.stall_at < w->stall_at + w->stall && w->stall_at < t.stall_at + t.stall) s.waited += t.stall_waited;
    return s;
}

Verdict judge(const Options& o, const Result& r) {
    Verdict v;
    char b[320];
    // Validity, per thread: one saturated or lagging thread is enough (an average over threads hides it).
    for (const ThreadFigures& t : threads_of(r)) {
        if (t.util > 0.9 && t.lag99 > 5 * kMsNs) {
            std::snprintf(b, sizeof b, "generator saturated: thread %s at %.0f%% CPU with event-loop lag p99 %.1f ms",
                          t.name.c_str(), t.util * 100, static_cast<double>(t.lag99) / 1e6);
            v.reasons.push_back(b);
        } else if (t.lag90 > 50 * kMsNs) {
            std::snprintf(b, sizeof b, "event-loop lag p90 %.1f ms on thread %s: timers fired late (machine overloaded?)",
                          static_cast<double>(t.lag90) / 1e6, t.name.c_str());
            v.reasons.push_back(b);
        }
        if (o.mode == Mode::Rate && t.dispatch99 > 25 * kMsNs) {
            std::snprintf(b, sizeof b, "rate schedule fell behind on thread %s: arrival dispatch lag p99 %.1f ms (> 25 ms)",
                          t.name.c_str(), static_cast<double>(t.dispatch99) / 1e6);
            v.reasons.push_back(b);
        }
    }
    if (o.mode == Mode::Rate && r.get("rate.dropped"))
        v.reasons.push_back(std::to_string(r.get("rate.dropped")) +
                            " scheduled requests dropped (per-connection backlog over 65536): add connections");
    v.valid = v.reasons.empty();
    const std::uint64_t errs = total_errors(r);
    const std::uint64_t req = r.get("conn.requested");
    const Accounting a = accounting_of(r);
    const std::uint64_t allowed_unanswered =
        o.max_unanswered_count >= 0 ? static_cast<std::uint64_t>(o.max_unanswered_count)
                                    : static_cast<std::uint64_t>(std::floor(o.max_unanswered_frac * static_cast<double>(a.due)));
    const Histogram lat = merged(r, "lat", {kSteady, kDrain});
    std::string over;
    auto thr = [&](const char* name, std::uint64_t limit, std::uint64_t val) {
        if (limit && val > limit && over.empty())
            over = std::string(name) + " " + fmt_lat(val) + " over " + fmt_lat(limit);
    };
    thr("p50", o.max_p50_ns, lat.percentile(50));
    thr("p99", o.max_p99_ns, lat.percentile(99));
    thr("p99.9", o.max_p999_ns, lat.percentile(99.9));
    thr("max", o.max_latency_ns, lat.max());
    if (const Histogram* ps = r.find_hist("pause")) thr("pause per connection p99", o.max_pause_ns, ps->percentile(99));
    // Long-lived modes: every thread must have had all its connections open at once. The
    // simultaneous peak over threads and processes (`established`) is reported, but is not the
    // test: a thread that finished a --requests share early closes its connections while
    // another is still opening its own, and that is no failure to connect.
    const std::uint64_t threads_short = r.get("conn.threads_not_all_established");
    if (long_lived(o.mode) ? threads_short > 0 : (req > 0 && r.get("conn.connects_ok") == 0)) {
        v.exit_code = kExitConnections;
        v.exit_reason = "requested connections not reached (" + std::to_string(r.get("conn.established")) + " of " +
                        std::to_string(req) + " at the peak";
        if (threads_short > 0) {
            v.exit_reason += "; " + std::to_string(threads_short) + " thread(s) never had all their connections open";
        }
        v.exit_reason += ")";
    } else if (o.max_errors >= 0 && errs > static_cast<std::uint64_t>(o.max_errors)) {
        v.exit_code = kExitErrors;
        v.exit_reason = std::to_string(errs) + " errors, over --max-errors " + std::to_string(o.max_errors);
    } else if (const Delivery d = delivery_of(o, r); d.checked && d.bad() > 0) {
        v.exit_code = kExitDelivery;
        v.exit_reason = "delivery check failed: lost " + std::to_string(d.lost) + ", duplicated " +
                        std::to_string(d.duplicated) + ", reordered " + std::to_string(d.reordered) + ", corrupted " +
                        std::to_string(d.corrupted);
    } else if (o.mode == Mode::Pubsub && r.get("pubsub.confirmed") < r.get("pubsub.subscriptions")) {
        v.exit_code = kExitDelivery;
        v.exit_reason = "delivery check failed: " +
                        std::to_string(r.get("pubsub.subscriptions") - r.get("pubsub.confirmed")) + " of " +
                        std::to_string(r.get("pubsub.subscriptions")) + " subscriptions never confirmed (OK SUB)";
    } else if (tracks_unanswered(o.mode) && a.unanswered() > allowed_unanswered) {
        v.exit_code = kExitUnanswered;
        v.exit_reason = with_commas(a.unanswered()) + " of " + with_commas(a.due) + " requests due were never answered (" +
                        fmt("%.2f", 100 * a.unanswered_frac()) + "%), over --max-unanswered " + o.max_unanswered_text;
    } else if (!over.empty()) {
        v.exit_code = kExitLatency;
        v.exit_reason = "latency threshold exceeded: " + over;
    } else if (!v.valid) {
        v.exit_code = kExitSaturated;
        v.exit_reason = "run invalid: " + v.reasons.front();
    }
    return v;
}

std::string narrative(const Options& o, const Result& r, const Verdict& v) {
    std::ostringstream os;
    const Accounting a = accounting_of(r);
    const Histogram lat = merged(r, "lat", {kSteady, kDrain});
    const Stall s = stall_of(o, r);
    if (s.found) {
        os << "The server stopped answering for " << fmt("%.1f", s.len_s) << " s at " << fmt("%.1f", s.at_s) << " s";
        if (s.to_end) os << " and had not answered again when the run ended";
        os << ": " << with_commas(s.waited) << " requests waited; p99 (" << fmt_lat(lat.percentile(99)) << ") and max ("
           << fmt_lat(lat.max()) << ") include them. ";
    }
    if (tracks_unanswered(o.mode) && a.unanswered()) {
        os << with_commas(a.unanswered()) << " of " << with_commas(a.due) << " requests due (" << fmt("%.2f", 100 * a.unanswered_frac())
           << "%) were never answered (" << with_commas(a.end) << " still waiting when the drain ended, " << with_commas(a.dead)
           << " lost with connections that died); each is in the latency figures as a censored value (its wait until the "
              "end of the run). ";
    }
    if (o.mode == Mode::Rate && a.due > 0 && static_cast<double>(a.answered) < 0.97 * static_cast<double>(a.due) && !s.found) {
        os << "The server did not keep up with the target rate: " << with_commas(a.answered) << " of " << with_commas(a.due)
           << " requests due were answered. ";
    }
    if (const std::uint64_t errs = total_errors(r)) {
        int top = 0;
        for (int e = 1; e < kErrCount; ++e)
            if (r.get(std::string("err.") + err_name(e)) > r.get(std::string("err.") + err_name(top))) top = e;
        os << with_commas(errs) << " errors, most of them " << err_name(top) << " ("
           << with_commas(r.get(std::string("err.") + err_name(top))) << ", first at "
           << fmt("%.3f", r.first[top].t) << " s). ";
    }
    if (!v.valid) os << "The generator itself fell behind (" << v.reasons.front() << "): these latencies are not the server's alone. ";
    if (os.str().empty()) {
        os << "No stall, no errors";
        if (tracks_unanswered(o.mode)) os << ", every request due was answered";
        os << ", and the generator kept up";
        if (lat.count()) os << "; p99 " << fmt_lat(lat.percentile(99)) << ", max " << fmt_lat(lat.max());
        os << ".";
    }
    std::string t = os.str();
    while (!t.empty() && t.back() == ' ') t.pop_back();
    return t;
}

// HdrHistogram's outputPercentileDistribution (5 ticks per half distance), values in ms.
bool write_hgrm(const std::string& path, const Histogram& h) {
    FILE* f = std::fopen(path.c_str(), "w");
    if (!f) return false;
    std::fprintf(f, "%12s %14s %10s %14s\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    const std::uint64_t total = h.count();
    double level = 0;
    for (int guard = 0; total > 0 && guard < 10000; ++guard) {
        const std::uint64_t val = h.percentile(level);
        const std::uint64_t cnt = std::min(total, h.count_at_or_below(val));
        if (cnt >= total || level >= 100) break;
        std::fprintf(f, "%12.3f %2.12f %10" PRIu64 " %14.2f\n", static_cast<double>(val) / 1e6, level / 100, cnt,
                     1 / (1 - level / 100));
        const double ticks = 5 * std::pow(2.0, std::floor(std::log2(100.0 / (100.0 - level))) + 1);
        level += 100.0 / ticks;
    }
    if (total) std::fprintf(f, "%12.3f %2.12f %10" PRIu64 "\n", static_cast<double>(h.max()) / 1e6, 1.0, total);
    std::fprintf(f, "#[Mean    = %12.3f, StdDeviation   = %12.3f]\n", h.mean() / 1e6, h.stddev() / 1e6);
    std::fprintf(f, "#[Max     = %12.3f, Total count    = %12" PRIu64 "]\n", static_cast<double>(h.max()) / 1e6, total);
    std::fprintf(f, "#[Buckets = %12d, SubBuckets     = %12d]\n", 32, static_cast<int>(Histogram::kSub));
    return std::fclose(f) == 0;
}

}  // namespace flood

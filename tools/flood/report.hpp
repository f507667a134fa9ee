// esockets-flood: progress lines, environment/kernel counters, verdict, JSON and human output.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "hdr_log.hpp"
#include "options.hpp"
#include "run.hpp"
#include "stats.hpp"

namespace flood {

// Per-second progress: in place on a terminal, one line per second otherwise; optional JSON lines.
class Progress {
public:
    explicit Progress(const Options& o);
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;
    void operator()(const Snapshot& s);
    void finish();
    bool stream_ok() const { return stream_ok_; }
    bool csv_ok() const { return csv_ok_; }
    bool hdr_ok() const { return o_.hdr_log_path.empty() || hdr_.is_open(); }

private:
    const Options& o_;
    bool tty_;
    FILE* stream_ = nullptr;
    bool stream_ok_ = true;
    FILE* csv_ = nullptr;  // --csv
    HdrLogWriter hdr_;     // --hdr-log
    bool csv_ok_ = true;
    Snapshot prev_{};
    bool printed_ = false;
    // Rate mode: the target rate t seconds in (--stages: the schedule's rate then).
    double target_at(double t) const {
        return o_.stages.empty() ? o_.rate : RateSchedule(o_.rate, o_.stages, 1.0).rate_at(t);
    }
};

// Kernel counters read from /proc (deltas over the run are reported).
struct KernelCounters {
    bool ok = false;
    std::map<std::string, std::int64_t> v;  // ListenOverflows, ListenDrops, tcp_inuse, tcp_tw, tcp_alloc, tcp_orphan
};
KernelCounters read_kernel_counters();

struct Environment {
    std::string kernel;
    std::uint64_t nofile_soft = 0, nofile_hard = 0;
    std::string port_range;
    std::int64_t somaxconn = -1, syn_backlog = -1;
    long cores = 0;
};
Environment read_environment();

struct Verdict {
    bool valid = true;
    std::vector<std::string> reasons;  // why the run is invalid
    int exit_code = kExitOk;
    std::string exit_reason;
};
Verdict judge(const Options& o, const Result& r);

std::string to_json(const Options& o, const Result& r, const Environment& env, const KernelCounters& k0,
                    const KernelCounters& k1, const Verdict& v);
void print_summary(FILE* f, const Options& o, const Result& r, const KernelCounters& k0, const KernelCounters& k1,
                   const Verdict& v);

}  // namespace flood

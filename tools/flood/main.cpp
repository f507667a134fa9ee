// esockets-flood: client flood / load generator. See --help.
#include <csignal>
#include <cstdio>
#include <string>

#include "options.hpp"
#include "report.hpp"
#include "report_util.hpp"
#include "run.hpp"

int main(int argc, char** argv) {
    using namespace flood;
    std::signal(SIGPIPE, SIG_IGN);
    Options o;
    std::string err;
    bool help = false;
    if (!parse_options(argc, argv, o, err, help)) {
        std::fprintf(stderr, "esockets-flood: %s\n", err.c_str());
        return kExitBadArgs;
    }
    if (help) {
        print_help(argv[0]);
        return kExitOk;
    }
    if (!finalize_options(o, err)) {
        std::fprintf(stderr, "esockets-flood: %s\n", err.c_str());
        return kExitBadArgs;
    }
    const Environment env = read_environment();
    Progress progress(o);
    if (!progress.stream_ok()) {
        std::fprintf(stderr, "esockets-flood: cannot write --json-stream file '%s'\n", o.json_stream_path.c_str());
        return kExitBadArgs;
    }
    if (!progress.csv_ok()) {
        std::fprintf(stderr, "esockets-flood: cannot write --csv file '%s'\n", o.csv_path.c_str());
        return kExitBadArgs;
    }
    if (!progress.hdr_ok()) {
        std::fprintf(stderr, "esockets-flood: cannot write --hdr-log file '%s'\n", o.hdr_log_path.c_str());
        return kExitBadArgs;
    }
    if (!o.json_path.empty()) {  // fail early rather than after the run
        FILE* f = std::fopen(o.json_path.c_str(), "w");
        if (!f) {
            std::fprintf(stderr, "esockets-flood: cannot write --json file '%s'\n", o.json_path.c_str());
            return kExitBadArgs;
        }
        std::fclose(f);
    }
    const bool local = o.host.rfind("127.", 0) == 0;
    const KernelCounters k0 = local ? read_kernel_counters() : KernelCounters{};
    Result r;
    const bool ok = run_flood(o, r, [&progress](const Snapshot& s) { progress(s); }, err);
    progress.finish();
    const KernelCounters k1 = local ? read_kernel_counters() : KernelCounters{};
    if (!ok) {
        std::fprintf(stderr, "esockets-flood: %s\n", err.c_str());
        return kExitFailure;
    }
    const Verdict v = judge(o, r);
    print_summary(stdout, o, r, k0, k1, v);
    std::fflush(stdout);
    if (!o.json_path.empty()) {
        FILE* f = std::fopen(o.json_path.c_str(), "w");
        const std::string js = to_json(o, r, env, k0, k1, v);
        if (!f || std::fwrite(js.data(), 1, js.size(), f) != js.size()) {
            std::fprintf(stderr, "esockets-flood: cannot write --json file '%s'\n", o.json_path.c_str());
            if (f) std::fclose(f);
            return kExitFailure;
        }
        std::fclose(f);
    }
    if (!o.hgrm_path.empty()) {
        Histogram lat;
        for (int p : {kSteady, kDrain})
            if (auto* h = r.find_hist(std::string(phase_name(p)) + ".lat")) lat.merge(*h);
        if (!write_hgrm(o.hgrm_path, lat)) {
            std::fprintf(stderr, "esockets-flood: cannot write --hgrm file '%s'\n", o.hgrm_path.c_str());
            return kExitFailure;
        }
    }
    return v.exit_code;
}

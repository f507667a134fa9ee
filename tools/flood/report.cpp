#include "report.hpp"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "json_writer.hpp"
#include "report_stages.hpp"
#include "report_util.hpp"

namespace flood {

namespace {

std::string read_file_trim(const char* path) {
    std::ifstream f(path);
    std::string s, line;
    while (std::getline(f, line)) s += (s.empty() ? "" : " ") + line;
    return s;
}

}  // namespace

Progress::Progress(const Options& o) : o_(o), tty_(isatty(2) != 0) {
    if (!o.json_stream_path.empty()) {
        stream_ = std::fopen(o.json_stream_path.c_str(), "w");
        stream_ok_ = stream_ != nullptr;
    }
    if (!o.csv_path.empty()) {
        csv_ = std::fopen(o.csv_path.c_str(), "w");
        csv_ok_ = csv_ != nullptr;
        if (csv_)
            std::fprintf(csv_, "t_s,msgs_per_sec,sent_per_sec,errors,errors_total,p50_ms,p99_ms,waiting,"
                               "connections_open,target_rate\n");
    }
    if (!o.hdr_log_path.empty()) hdr_.open(o.hdr_log_path);
}

Progress::~Progress() {
    if (stream_) std::fclose(stream_);
    if (csv_) std::fclose(csv_);
}

void Progress::operator()(const Snapshot& s) {
    const double dt = s.t - prev_.t > 0 ? s.t - prev_.t : 1.0;
    const double rate = static_cast<double>(s.msgs - prev_.msgs) / dt;
    const double sent_rate = static_cast<double>(s.sent - prev_.sent) / dt;
    const std::uint64_t errs = s.errs - prev_.errs;
    if (!o_.quiet) {
        char line[256];
        std::snprintf(line, sizeof line,
                      "[%5.1fs] conns %llu/%llu  msgs/s %.0f%s  sent/s %.0f  errors +%llu (total %llu)  p50 %.3fms "
                      "p99 %.3fms  waiting %llu",
                      s.t, static_cast<unsigned long long>(s.open), static_cast<unsigned long long>(s.requested), rate,
                      o_.mode == Mode::Rate ? (" (target " + std::to_string(static_cast<long long>(target_at(s.t))) + ")").c_str()
                                            : "",
                      sent_rate, static_cast<unsigned long long>(errs), static_cast<unsigned long long>(s.errs),
                      static_cast<double>(s.p50) / 1e6, static_cast<double>(s.p99) / 1e6,
                      static_cast<unsigned long long>(s.waiting));
        if (tty_) std::fprintf(stderr, "\r%s\033[K", line);
        else std::fprintf(stderr, "%s\n", line);
        std::fflush(stderr);
        printed_ = true;
    }
    if (stream_) {
        Json j;
        j.open(nullptr, '{').num("t", s.t).num("msgs_per_sec", rate).num("sent_per_sec", sent_rate);
        if (o_.mode == Mode::Rate) j.num("target_rate", target_at(s.t));
        j.u("connections_open", s.open).u("connections_requested", s.requested).u("errors", errs).u("errors_total", s.errs);
        j.num("p50_us", static_cast<double>(s.p50) / 1e3).num("p99_us", static_cast<double>(s.p99) / 1e3);
        j.u("waiting", s.waiting).u("msgs_total", s.msgs).u("bytes_in", s.bytes_in).u("bytes_out", s.bytes_out);
        j.close('}');
        std::fprintf(stream_, "%s\n", j.str().c_str());
        std::fflush(stream_);
    }
    if (csv_) {
        std::fprintf(csv_, "%.3f,%.1f,%.1f,%llu,%llu,%.6f,%.6f,%llu,%llu,%.1f\n", s.t, rate, sent_rate,
                     static_cast<unsigned long long>(errs), static_cast<unsigned long long>(s.errs),
                     static_cast<double>(s.p50) / 1e6, static_cast<double>(s.p99) / 1e6,
                     static_cast<unsigned long long>(s.waiting), static_cast<unsigned long long>(s.open),
                     o_.mode == Mode::Rate ? target_at(s.t) : 0.0);
        std::fflush(csv_);
    }
    if (hdr_.is_open() && s.hist) hdr_.interval(prev_.t, s.t - prev_.t, *s.hist);
    prev_ = s;
}

void Progress::finish() {
    if (tty_ && printed_) std::fprintf(stderr, "\n");
}

KernelCounters read_kernel_counters() {
    KernelCounters k;
    std::ifstream f("/proc/net/netstat");
    std::string h, v;
    while (std::getline(f, h) && std::getline(f, v)) {
        if (h.rfind("TcpExt:", 0) != 0) continue;
        std::istringstream hs(h), vs(v);
        std::string name, val;
        while (hs >> name && vs >> val)
            if (name == "ListenOverflows" || name == "ListenDrops") {
                k.v[name] = std::stoll(val);
                k.ok = true;
            }
    }
    std::ifstream s("/proc/net/sockstat");
    std::string line;
    while (std::getline(s, line)) {
        if (line.rfind("TCP:", 0) != 0) continue;
        std::istringstream ls(line.substr(4));
        std::string name;
        std::int64_t val = 0;
        while (ls >> name >> val) k.v["tcp_" + name] = val;
    }
    return k;
}

Environment read_environment() {
    Environment e;
    utsname u{};
    if (uname(&u) == 0) e.kernel = std::string(u.sysname) + " " + u.release;
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    e.nofile_soft = rl.rlim_cur;
    e.nofile_hard = rl.rlim_max;
    e.port_range = read_file_trim("/proc/sys/net/ipv4/ip_local_port_range");
    for (auto& c : e.port_range)
        if (c == '\t') c = ' ';
    std::string s = read_file_trim("/proc/sys/net/core/somaxconn");
    if (!s.empty()) e.somaxconn = std::stoll(s);
    s = read_file_trim("/proc/sys/net/ipv4/tcp_max_syn_backlog");
    if (!s.empty()) e.syn_backlog = std::stoll(s);
    e.cores = sysconf(_SC_NPROCESSORS_ONLN);
    return e;
}

std::string to_json(const Options& o, const Result& r, const Environment& env, const KernelCounters& k0,
                    const KernelCounters& k1, const Verdict& v) {
    Json j;
    j.open(nullptr, '{').u("schema", 1).str("tool", "esockets-flood").str("mode", mode_name(o.mode));
    j.b("valid", v.valid).open("invalid_reasons", '[');
    for (auto& s : v.reasons) j.str(nullptr, s);
    j.close(']').i("exit_code", v.exit_code).str("exit_reason", v.exit_reason);
    // Config echo.
    j.open("config", '{').str("target", target_label(o)).str("family", target_family(o)).str("host", o.host);
    j.u("port", o.port).u("connections", o.total_conns).b("connections_max", o.conns_max);
    j.u("procs", static_cast<std::uint64_t>(o.procs)).u("threads", static_cast<std::uint64_t>(o.threads));
    j.num("duration_s", o.duration).num("ramp_s", o.ramp).num("warmup_s", o.warmup).num("drain_s", o.drain);
    j.num("connect_rate", o.connect_rate).num("keepalive_s", o.keepalive).u("requests", o.requests);
    if (o.mode == Mode::Rate) j.num("rate", o.rate).b("poisson", o.poisson);
    if (!o.stages.empty()) j.str("stages", o.stages_text);
    if (o.mode == Mode::Pipeline) j.u("depth", o.depth);
    if (o.mode == Mode::Churn) j.u("churn_k", o.churn_k);
    if (o.mode == Mode::Pubsub) {
        j.u("subscribers", o.conns).u("publishers", o.publishers).u("rooms", o.rooms);
        j.u("subscriptions_per_subscriber", o.subscriptions).u("messages_per_publisher", o.messages).u("window", o.window);
    }
    if (o.size_list.empty()) j.u("size_min", o.size_min).u("size_max", o.size_max);
    else {
        j.open("sizes", '[');
        for (auto& s : o.size_list) j.open(nullptr, '{').u("size", s.size).u("weight", s.weight).close('}');
        j.close(']');
    }
    j.str("protocol", protocol_name(o.protocol));
    if (o.protocol == Protocol::Resp) {
        j.str("resp_command", resp_command_name(o.resp_command)).u("key_range", o.key_range);
        j.str("key_pattern", o.key_sequential ? "sequential" : "random");
        if (o.resp_command == RespCommand::Mixed) j.str("ratio", std::to_string(o.ratio_set) + ":" + std::to_string(o.ratio_get));
    }
    if (o.protocol == Protocol::Http) j.str("path", o.http_path).str("host_header", o.host_header);
    if (!o.payload_file.empty()) j.str("payload_file", o.payload_file);
    if (!o.tpl.empty()) j.str("payload_template", o.payload_template_text);
    j.str("payload", o.payload).str("framing", framing_name(o.framing)).u("prefix_bytes", static_cast<std::uint64_t>(o.prefix_bytes));
    j.b("verify", o.verify).u("response_timeout_ms", o.response_timeout_ms).u("connect_timeout_ms", o.connect_timeout_ms);
    j.str("max_unanswered", o.max_unanswered_text);
    j.open("latency_thresholds_us", '{');
    for (auto [name, ns] : {std::pair<const char*, std::uint64_t>{"p50", o.max_p50_ns}, {"p99", o.max_p99_ns},
                            {"p999", o.max_p999_ns}, {"max", o.max_latency_ns}, {"pause_p99", o.max_pause_ns}})
        if (ns) j.num(name, static_cast<double>(ns) / 1e3);
    j.close('}');
    j.i("max_errors", o.max_errors).u("sources", r.get("sources") / std::max<std::uint64_t>(1, r.get("procs")));
    j.num("slow_delay_ms", o.slow_delay_ms).u("slow_read_bytes", o.slow_read_bytes).close('}');
    j.open("environment", '{').str("kernel", env.kernel).u("nofile_soft", env.nofile_soft).u("nofile_hard", env.nofile_hard);
    j.str("ip_local_port_range", env.port_range).i("somaxconn", env.somaxconn).i("tcp_max_syn_backlog", env.syn_backlog);
    j.i("cores", env.cores).close('}');
    // Headline.
    j.open("connections", '{').u("requested", r.get("conn.requested")).u("established", r.get("conn.established"));
    j.u("failed", r.get("conn.failed")).u("failed_attempts", r.get("conn.failed_attempts"));
    j.u("connects_ok", r.get("conn.connects_ok"));
    if (o.mode == Mode::Churn) j.u("churn_cycles", r.get("churn.cycles"));
    if (r.get("conn.threads_not_all_established") == 0 && r.getx("time_to_n_s", -1) >= 0)
        j.num("time_to_n_s", r.getx("time_to_n_s"));
    else j.null("time_to_n_s");
    j.close('}');
    const std::uint64_t errs = total_errors(r);
    j.open("errors", '{').u("total", errs);
    for (int e = 0; e < kErrCount; ++e) j.u(err_name(e), r.get(std::string("err.") + err_name(e)));
    j.open("first", '{');
    for (int e = 0; e < kErrCount; ++e)
        if (r.first[e].set)
            j.open(err_name(e), '{').num("t_s", r.first[e].t).u("connection", r.first[e].conn).str("detail", r.first[e].detail).close('}');
    j.close('}').close('}');
    const double ss = steady_secs(r);
    const double msgs = static_cast<double>(steady_count(r, "msgs"));
    const double bytes = static_cast<double>(steady_count(r, "bytes_in") + steady_count(r, "bytes_out"));
    j.open("throughput", '{').num("msgs_per_sec", ss > 0 ? msgs / ss : 0).num("bytes_per_sec", ss > 0 ? bytes / ss : 0);
    j.num("bytes_in_per_sec", ss > 0 ? static_cast<double>(steady_count(r, "bytes_in")) / ss : 0);
    j.num("bytes_out_per_sec", ss > 0 ? static_cast<double>(steady_count(r, "bytes_out")) / ss : 0);
    std::uint64_t total_msgs = 0, total_sent = 0;
    for (int p = 0; p < kPhaseCount; ++p) {
        total_msgs += r.get(std::string(phase_name(p)) + ".msgs");
        total_sent += r.get(std::string(phase_name(p)) + ".sent");
    }
    j.u("msgs_total", total_msgs).u("requests_sent", total_sent).num("steady_secs", ss);
    if (o.mode == Mode::Rate) {
        const double target = o.stages.empty() ? o.rate
                              : RateSchedule(o.rate, o.stages, 1.0).arrivals_until(o.duration) / o.duration;
        j.num("target_rate", target).u("dispatched", r.get("rate.dispatched")).u("dropped", r.get("rate.dropped"));
    }
    j.u("abandoned", r.get("abandoned")).close('}');
    stages_json(j, o, r);
    const Accounting acc = accounting_of(r);
    if (tracks_unanswered(o.mode)) {
        // Every request that was due: answered, or unanswered (never silently dropped from the figures).
        j.open("requests", '{').u("due", acc.due).u("answered", acc.answered).u("unanswered", acc.unanswered());
        j.u("unanswered_end_of_run", acc.end).u("unanswered_dead_connection", acc.dead);
        j.num("unanswered_fraction", acc.unanswered_frac()).u("answered_after_timeout", acc.late);
        j.u("dropped", acc.dropped).close('}');
    }
    const Stall st = stall_of(o, r);
    j.open("stall", '{').b("found", st.found);
    if (st.found) j.num("at_s", st.at_s).num("length_s", st.len_s).b("until_end", st.to_end).u("requests_waited", st.waited);
    j.close('}');
    const Histogram lat = merged(r, "lat", {kSteady, kDrain});
    j.pcts("latency_us", lat);
    if (auto* h = r.find_hist("censored"); h && h->count()) j.pcts("censored_latency_us", *h);
    else j.pcts("censored_latency_us", Histogram());
    if (o.mode == Mode::Rate) {
        j.pcts("service_latency_us", merged(r, "svc", {kSteady, kDrain}));
        j.pcts("schedule_lag_us", merged(r, "lag", {kSteady, kDrain}));
    }
    {
        // One value per connection: its longest wait for the server while a reply was owed (none in the modes
        // that owe no replies: connections 0, percentiles null).
        const Histogram* ps = r.find_hist("pause");
        const std::uint64_t n = ps ? ps->count() : 0;
        auto ms = [](std::uint64_t ns) { return static_cast<double>(ns) / 1e6; };
        j.open("pause_per_connection_ms", '{');
        if (n) j.num("p50", ms(ps->percentile(50))).num("p99", ms(ps->percentile(99))).num("max", ms(ps->max()));
        else j.null("p50").null("p99").null("max");
        j.u("connections", n).close('}');
    }
    if (auto* h = r.find_hist("connect")) j.pcts("connect_latency_us", *h);
    const Delivery d = delivery_of(o, r);
    j.open("delivery", '{').b("checked", d.checked).u("lost", d.lost).u("duplicated", d.duplicated);
    j.u("reordered", d.reordered).u("corrupted", d.corrupted).close('}');
    if (o.protocol == Protocol::Resp) {
        j.open("resp", '{').u("replies", r.get("resp.replies")).u("set_replies", r.get("resp.set_replies"));
        j.u("get_replies", r.get("resp.get_replies")).u("hits", r.get("resp.hits")).u("misses", r.get("resp.misses"));
        j.u("error_replies", r.get("resp.error_replies")).close('}');
    } else if (o.protocol == Protocol::Http) {
        j.open("http", '{').u("responses", r.get("http.responses")).u("status_2xx", r.get("http.status_2xx"));
        j.u("non_2xx", r.get("http.non_2xx")).u("status_3xx", r.get("http.status_3xx"));
        j.u("status_4xx", r.get("http.status_4xx")).u("status_5xx", r.get("http.status_5xx"));
        j.u("status_other", r.get("http.status_other")).u("chunked", r.get("http.chunked"));
        j.u("reopened", r.get("http.reopened")).u("idle_closed", r.get("http.idle_closed")).close('}');
    }
    if (o.mode == Mode::Pubsub) {
        const double ps = pubsub_secs(r);
        j.open("pubsub", '{').u("subscribers", o.conns).u("publishers", o.publishers).u("rooms", o.rooms);
        j.u("subscriptions", r.get("pubsub.subscriptions")).u("subscriptions_confirmed", r.get("pubsub.confirmed"));
        if (r.getx("pubsub.subscribed_s", -1) >= 0) j.num("subscribed_s", r.getx("pubsub.subscribed_s"));
        else j.null("subscribed_s");
        j.u("published", r.get("pubsub.published")).u("expected_deliveries", r.get("pubsub.expected"));
        j.u("delivered", r.get("pubsub.delivered")).u("lost", r.get("pubsub.lost"));
        j.u("duplicated", r.get("pubsub.duplicated")).u("reordered", r.get("pubsub.reordered"));
        j.u("abandoned", r.get("pubsub.abandoned")).num("publishing_secs", ps);
        j.num("publishes_per_sec", ps > 0 ? static_cast<double>(r.get("pubsub.published")) / ps : 0);
        j.num("deliveries_per_sec", ps > 0 ? static_cast<double>(r.get("pubsub.delivered")) / ps : 0);
        j.pcts("delivery_latency_us", merged(r, "lat", {kRamp, kWarmup, kSteady, kDrain}));
        j.close('}');
    }
    if (is_hostile(o.mode)) {
        j.open("server_behaviour", '{').u("fin", r.get("server.fin")).u("rst", r.get("server.rst"));
        j.u("reply_complete", r.get("server.reply_complete")).u("still_open", r.get("server.still_open"));
        j.u("rst_sent", r.get("server.rst_sent"));
        if (auto* h = r.find_hist("close")) j.pcts("time_to_close_us", *h);
        j.close('}');
    }
    j.open("phases", '{');
    for (int p = 0; p < kPhaseCount; ++p) {
        const std::string pre = std::string(phase_name(p)) + ".";
        const double secs = r.getx("phase." + std::string(phase_name(p)) + ".secs");
        j.open(phase_name(p), '{').num("secs", secs).u("msgs", r.get(pre + "msgs")).u("requests_sent", r.get(pre + "sent"));
        j.num("msgs_per_sec", secs > 0 ? static_cast<double>(r.get(pre + "msgs")) / secs : 0);
        j.u("bytes_in", r.get(pre + "bytes_in")).u("bytes_out", r.get(pre + "bytes_out"));
        j.open("errors", '{');
        for (int e = 0; e < kErrCount; ++e) j.u(err_name(e), r.get(pre + "err." + err_name(e)));
        j.close('}');
        if (auto* h = r.find_hist(pre + "lat")) j.pcts("latency_us", *h);
        if (o.mode == Mode::Rate) {
            if (auto* h = r.find_hist(pre + "svc")) j.pcts("service_latency_us", *h);
            if (auto* h = r.find_hist(pre + "lag")) j.pcts("schedule_lag_us", *h);
        }
        j.close('}');
    }
    j.close('}');
    const double wall = r.getx("wall_s");
    const double threads = static_cast<double>(std::max<std::uint64_t>(1, r.get("threads")));
    const double cpu = static_cast<double>(r.get("cpu.user_us") + r.get("cpu.sys_us")) / 1e6;
    j.open("generator", '{').num("wall_s", wall).num("cpu_user_s", static_cast<double>(r.get("cpu.user_us")) / 1e6);
    j.num("cpu_sys_s", static_cast<double>(r.get("cpu.sys_us")) / 1e6).u("threads", r.get("threads")).u("procs", r.get("procs"));
    j.num("cpu_util_per_thread", wall > 0 ? cpu / (wall * threads) : 0);
    j.open("threads_detail", '[');
    for (const ThreadFigures& t : threads_of(r)) {
        j.open(nullptr, '{').str("thread", t.name).num("cpu_util", t.util);
        j.num("loop_lag_p99_us", static_cast<double>(t.lag99) / 1e3).num("loop_lag_p90_us", static_cast<double>(t.lag90) / 1e3);
        if (o.mode == Mode::Rate) j.num("dispatch_lag_p99_us", static_cast<double>(t.dispatch99) / 1e3);
        j.close('}');
    }
    j.close(']');
    if (auto* h = r.find_hist("loop_lag")) j.pcts("loop_lag_us", *h);
    if (auto* h = r.find_hist("loop_lag_steady")) j.pcts("loop_lag_steady_us", *h);
    if (o.mode == Mode::Rate)
        if (auto* h = r.find_hist("dispatch_lag")) j.pcts("dispatch_lag_us", *h);
    j.close('}');
    j.open("kernel", '{').b("available", k0.ok && k1.ok);
    for (auto& [name, val] : k1.v) {
        auto it = k0.v.find(name);
        const std::int64_t before = it == k0.v.end() ? 0 : it->second;
        if (name == "ListenOverflows" || name == "ListenDrops") j.i((name + "_delta").c_str(), val - before);
        else j.i((name + "_before").c_str(), before).i((name + "_after").c_str(), val);
    }
    j.close('}');
    j.open("histogram", '{').str("metric", "latency (steady+drain, unanswered censored)").str("unit", "ns").u("sub_buckets", Histogram::kSub);
    j.u("count", lat.count()).open("buckets", '[');
    for (std::size_t i = 0; i < lat.buckets(); ++i)
        if (lat.bucket_count(i))
            j.open(nullptr, '[').u(nullptr, Histogram::lowest_of(i)).u(nullptr, Histogram::highest_of(i)).u(nullptr, lat.bucket_count(i)).close(']');
    j.close(']').close('}');
    j.str("summary", narrative(o, r, v));
    j.close('}');
    return j.str() + "\n";
}

void print_summary(FILE* f, const Options& o, const Result& r, const KernelCounters& k0, const KernelCounters& k1,
                   const Verdict& v) {
    auto ms = [](std::uint64_t ns) { return static_cast<double>(ns) / 1e6; };
    auto line = [&](const char* name, const Histogram& h, std::uint64_t censored = 0) {
        if (!h.count()) return;
        std::fprintf(f, "  %-18s p50 %.4f  p90 %.4f  p99 %.4f  p99.9 %.4f  p99.99 %.4f  max %.4f ms  (n=%llu", name,
                     ms(h.percentile(50)), ms(h.percentile(90)), ms(h.percentile(99)), ms(h.percentile(99.9)),
                     ms(h.percentile(99.99)), ms(h.max()), static_cast<unsigned long long>(h.count()));
        if (censored) std::fprintf(f, ", of which %llu unanswered, censored", static_cast<unsigned long long>(censored));
        std::fprintf(f, ")\n");
    };
    std::fprintf(f, "esockets-flood %s%s%s -> %s  (%d procs x %llu threads)\n", mode_name(o.mode),
                 o.protocol == Protocol::Raw ? "" : " --protocol ", o.protocol == Protocol::Raw ? "" : protocol_name(o.protocol),
                 target_label(o).c_str(), o.procs, static_cast<unsigned long long>(r.get("threads") / std::max<std::uint64_t>(1, r.get("procs"))));
    std::fprintf(f, "connections: requested %llu, established %llu, failed %llu (attempts %llu), connects %llu\n",
                 static_cast<unsigned long long>(r.get("conn.requested")), static_cast<unsigned long long>(r.get("conn.established")),
                 static_cast<unsigned long long>(r.get("conn.failed")), static_cast<unsigned long long>(r.get("conn.failed_attempts")),
                 static_cast<unsigned long long>(r.get("conn.connects_ok")));
    if (r.get("conn.threads_not_all_established") == 0 && r.getx("time_to_n_s", -1) >= 0)
        std::fprintf(f, "time to all connections: %.3f s\n", r.getx("time_to_n_s"));
    const double ss = steady_secs(r);
    const double msgs = static_cast<double>(steady_count(r, "msgs"));
    std::fprintf(f, "steady: %.2f s, %.0f msgs, %.1f msgs/s, %.2f MB/s in+out", ss, msgs, ss > 0 ? msgs / ss : 0,
                 ss > 0 ? static_cast<double>(steady_count(r, "bytes_in") + steady_count(r, "bytes_out")) / ss / 1e6 : 0);
    if (o.mode == Mode::Rate && o.stages.empty()) std::fprintf(f, " (target %.1f msgs/s)", o.rate);
    std::fprintf(f, "\n");
    print_stages(f, o, r);
    if (tracks_unanswered(o.mode)) {
        const Accounting a = accounting_of(r);
        std::fprintf(f, "requests: due %llu, answered %llu, unanswered %llu (%.2f%%: %llu still waiting at the end, %llu lost "
                        "with dead connections)\n",
                     static_cast<unsigned long long>(a.due), static_cast<unsigned long long>(a.answered),
                     static_cast<unsigned long long>(a.unanswered()), 100 * a.unanswered_frac(),
                     static_cast<unsigned long long>(a.end), static_cast<unsigned long long>(a.dead));
    }
    if (o.mode == Mode::Pubsub) {
        const double ps = pubsub_secs(r);
        std::fprintf(f, "pubsub: %llu subscribers x %llu rooms each, %llu publishers, %llu rooms; subscriptions confirmed "
                        "%llu of %llu",
                     static_cast<unsigned long long>(o.conns), static_cast<unsigned long long>(o.subscriptions),
                     static_cast<unsigned long long>(o.publishers), static_cast<unsigned long long>(o.rooms),
                     static_cast<unsigned long long>(r.get("pubsub.confirmed")),
                     static_cast<unsigned long long>(r.get("pubsub.subscriptions")));
        if (r.getx("pubsub.subscribed_s", -1) >= 0) std::fprintf(f, " at %.3f s", r.getx("pubsub.subscribed_s"));
        std::fprintf(f, "\n  published %llu, expected deliveries %llu, delivered %llu in %.2f s: %.0f deliveries/s, "
                        "%.0f publishes/s\n",
                     static_cast<unsigned long long>(r.get("pubsub.published")),
                     static_cast<unsigned long long>(r.get("pubsub.expected")),
                     static_cast<unsigned long long>(r.get("pubsub.delivered")), ps,
                     ps > 0 ? static_cast<double>(r.get("pubsub.delivered")) / ps : 0,
                     ps > 0 ? static_cast<double>(r.get("pubsub.published")) / ps : 0);
        if (r.get("pubsub.abandoned"))
            std::fprintf(f, "  abandoned (subscriber connection lost): %llu\n",
                         static_cast<unsigned long long>(r.get("pubsub.abandoned")));
    }
    if (const Delivery d = delivery_of(o, r); d.checked)
        std::fprintf(f, "delivery check%s: lost %llu, duplicated %llu, reordered %llu, corrupted %llu\n",
                     o.mode == Mode::Pubsub ? "" : " (--verify)", static_cast<unsigned long long>(d.lost),
                     static_cast<unsigned long long>(d.duplicated), static_cast<unsigned long long>(d.reordered),
                     static_cast<unsigned long long>(d.corrupted));
    auto llu = [](std::uint64_t x) { return static_cast<unsigned long long>(x); };
    if (o.protocol == Protocol::Resp)
        std::fprintf(f, "resp: %llu replies (SET %llu, GET %llu: %llu hits, %llu misses), %llu error replies\n",
                     llu(r.get("resp.replies")), llu(r.get("resp.set_replies")), llu(r.get("resp.get_replies")),
                     llu(r.get("resp.hits")), llu(r.get("resp.misses")), llu(r.get("resp.error_replies")));
    if (o.protocol == Protocol::Http)
        std::fprintf(f, "http: %llu responses, 2xx %llu, non-2xx %llu (3xx %llu, 4xx %llu, 5xx %llu), chunked %llu, "
                        "re-opened after close %llu, idle closes %llu\n",
                     llu(r.get("http.responses")), llu(r.get("http.status_2xx")), llu(r.get("http.non_2xx")),
                     llu(r.get("http.status_3xx")), llu(r.get("http.status_4xx")), llu(r.get("http.status_5xx")),
                     llu(r.get("http.chunked")), llu(r.get("http.reopened")), llu(r.get("http.idle_closed")));
    std::fprintf(f, "latency (ms):\n");
    if (o.mode == Mode::Pubsub) line("delivery", merged(r, "lat", {kRamp, kWarmup, kSteady, kDrain}));
    else line(o.mode == Mode::Rate ? "corrected" : "reply", merged(r, "lat", {kSteady, kDrain}),
              r.get("unanswered.dead_connection") + r.get("unanswered.end_of_run"));
    if (o.mode == Mode::Rate) {
        line("service", merged(r, "svc", {kSteady, kDrain}));
        line("schedule lag", merged(r, "lag", {kSteady, kDrain}));
    }
    if (auto* h = r.find_hist("connect")) line("connect", *h);
    if (const Histogram* ps = r.find_hist("pause"); ps && ps->count())
        std::fprintf(f, "pause per connection (ms): p50 %.3f  p99 %.3f  max %.3f  (longest wait for a reply while one "
                        "was owed, n=%llu connections)\n",
                     ms(ps->percentile(50)), ms(ps->percentile(99)), ms(ps->max()),
                     static_cast<unsigned long long>(ps->count()));
    if (is_hostile(o.mode)) {
        std::fprintf(f, "server behaviour: fin %llu, rst %llu, reply_complete %llu, still_open %llu, rst_sent %llu\n",
                     static_cast<unsigned long long>(r.get("server.fin")), static_cast<unsigned long long>(r.get("server.rst")),
                     static_cast<unsigned long long>(r.get("server.reply_complete")),
                     static_cast<unsigned long long>(r.get("server.still_open")),
                     static_cast<unsigned long long>(r.get("server.rst_sent")));
        if (auto* h = r.find_hist("close")) line("time to close", *h);
    }
    std::fprintf(f, "errors: %llu\n", static_cast<unsigned long long>(total_errors(r)));
    for (int e = 0; e < kErrCount; ++e) {
        const std::uint64_t n = r.get(std::string("err.") + err_name(e));
        if (!n) continue;
        std::fprintf(f, "  %-17s %llu  (first at %.3f s, connection %llu: %s)\n", err_name(e),
                     static_cast<unsigned long long>(n), r.first[e].t, static_cast<unsigned long long>(r.first[e].conn),
                     r.first[e].detail.c_str());
    }
    if (k0.ok && k1.ok) {
        auto d = [&](const char* n) { return k1.v.at(n) - (k0.v.count(n) ? k0.v.at(n) : 0); };
        std::fprintf(f, "kernel: ListenOverflows +%lld, ListenDrops +%lld\n", static_cast<long long>(d("ListenOverflows")),
                     static_cast<long long>(d("ListenDrops")));
    }
    const double wall = r.getx("wall_s");
    const double cpu = static_cast<double>(r.get("cpu.user_us") + r.get("cpu.sys_us")) / 1e6;
    const Histogram* lag = r.find_hist("loop_lag_steady");
    if (!lag || lag->count() == 0) lag = r.find_hist("loop_lag");
    double busiest = 0;
    for (const ThreadFigures& t : threads_of(r)) busiest = std::max(busiest, t.util);
    std::fprintf(f, "generator: cpu %.2f s over %.2f s wall (%.0f%% per thread, busiest thread %.0f%%), steady loop lag p99 "
                    "%.3f ms\n", cpu, wall,
                 wall > 0 ? 100 * cpu / (wall * static_cast<double>(std::max<std::uint64_t>(1, r.get("threads")))) : 0,
                 100 * busiest, lag ? ms(lag->percentile(99)) : 0.0);
    std::fprintf(f, "valid: %s", v.valid ? "true" : "false");
    for (auto& s : v.reasons) std::fprintf(f, " (%s)", s.c_str());
    std::fprintf(f, "\n");
    if (v.exit_code) std::fprintf(f, "exit %d: %s\n", v.exit_code, v.exit_reason.c_str());
    std::fprintf(f, "\nWhat this run shows: %s\n", narrative(o, r, v).c_str());
}

}  // namespace flood

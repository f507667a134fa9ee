// esockets-flood: the command line, tokenized by CLI11 (flags, values, --flag=value, unknown
// flags, missing values); every value is then checked here so that a bad one names the flag and
// what to change (exit 2). The help text is print_help() (options.cpp), grouped and explained.
#include <arpa/inet.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "options.hpp"

namespace flood {
namespace {

bool parse_u64(const std::string& s, std::uint64_t& v) {
    if (s.empty() || s[0] == '-') return false;
    char* end = nullptr;
    errno = 0;
    unsigned long long x = std::strtoull(s.c_str(), &end, 10);
    if (errno || *end) return false;
    v = x;
    return true;
}

bool parse_double(const std::string& s, double& v) {
    if (s.empty()) return false;
    char* end = nullptr;
    errno = 0;
    double x = std::strtod(s.c_str(), &end);
    if (errno || *end || !(x >= 0) || x > 1e12) return false;
    v = x;
    return true;
}

bool parse_sizes(const std::string& s, Options& o) {
    o.size_list.clear();
    if (s.find(':') != std::string::npos || s.find(',') != std::string::npos) {
        std::stringstream ss(s);
        std::string item;
        while (std::getline(ss, item, ',')) {
            auto colon = item.find(':');
            std::uint64_t sz = 0, w = 1;
            if (!parse_u64(item.substr(0, colon), sz)) return false;
            if (colon != std::string::npos && !parse_u64(item.substr(colon + 1), w)) return false;
            if (sz == 0 || sz > (1u << 24) || w == 0 || w > 1000000) return false;
            o.size_list.push_back({static_cast<std::uint32_t>(sz), static_cast<std::uint32_t>(w)});
        }
        return !o.size_list.empty();
    }
    auto dash = s.find('-');
    std::uint64_t a = 0, b = 0;
    if (dash == std::string::npos) {
        if (!parse_u64(s, a)) return false;
        b = a;
    } else if (!parse_u64(s.substr(0, dash), a) || !parse_u64(s.substr(dash + 1), b)) {
        return false;
    }
    if (a == 0 || b < a || b > (1u << 24)) return false;
    o.size_min = static_cast<std::uint32_t>(a);
    o.size_max = static_cast<std::uint32_t>(b);
    return true;
}

bool parse_mode(const std::string& s, Mode& m) {
    static const std::pair<const char*, Mode> names[] = {
        {"idle", Mode::Idle}, {"pingpong", Mode::Pingpong}, {"pipeline", Mode::Pipeline},
        {"rate", Mode::Rate}, {"firehose", Mode::Firehose}, {"storm", Mode::Storm},
        {"churn", Mode::Churn}, {"slowloris", Mode::Slowloris}, {"slowread", Mode::Slowread},
        {"halfclose", Mode::Halfclose}, {"reset", Mode::Reset}, {"pubsub", Mode::Pubsub}};
    for (auto& [n, mm] : names)
        if (s == n) {
            m = mm;
            return true;
        }
    return false;
}

// One flag with its value, in command-line order. Returns false with err on a bad value.
bool set_flag(const std::string& a, const std::string& val, Options& o, std::string& err) {
    auto bad = [&](const std::string& what) {
        err = "invalid value '" + val + "' for " + a + ": " + what;
        return false;
    };
    std::uint64_t u = 0;
    double d = 0;
    if (a == "--verify") {
        o.verify = true;
    } else if (a == "--poisson") {
        o.poisson = true;
    } else if (a == "--allow-remote") {
        o.allow_remote = true;
    } else if (a == "--quiet") {
        o.quiet = true;
    } else if (a == "--host") {
        return set_host_flag(val, o, err);
    } else if (a == "--unix") {
        if (val.empty()) return bad("expected the path of a unix stream socket");
        o.unix_path = val;
    } else if (a == "--port") {
        if (!parse_u64(val, u) || u == 0 || u > 65535) return bad("expected a port 1..65535");
        o.port = static_cast<std::uint16_t>(u);
        o.port_set = true;
    } else if (a == "-c" || a == "--connections") {
        if (val == "max") {
            o.conns_max = true;
        } else if (!parse_u64(val, u) || u == 0 || u > 10'000'000) {
            return bad("expected a count >= 1 or 'max'");
        } else {
            o.conns = u;
        }
    } else if (a == "--procs") {
        if (!parse_u64(val, u) || u < 1 || u > 64) return bad("expected 1..64");
        o.procs = static_cast<int>(u);
    } else if (a == "--threads") {
        if (!parse_u64(val, u) || u < 1 || u > 256) return bad("expected 1..256");
        o.threads = static_cast<int>(u);
    } else if (a == "--duration" || a == "--ramp" || a == "--warmup" || a == "--connect-rate" ||
               a == "--keepalive" || a == "--slow-delay" || a == "--drain") {
        if (!parse_double(val, d)) return bad("expected a non-negative number");
        if (a == "--duration") {
            if (d <= 0 || d > 86400) return bad("expected 0 < SEC <= 86400");
            o.duration = d;
            o.duration_set = true;
        } else if (a == "--ramp") o.ramp = d;
        else if (a == "--warmup") o.warmup = d;
        else if (a == "--connect-rate") o.connect_rate = d;
        else if (a == "--keepalive") o.keepalive = d;
        else if (a == "--slow-delay") o.slow_delay_ms = d;
        else o.drain = d;
    } else if (a == "--size") {
        if (!parse_sizes(val, o)) return bad("expected S, MIN-MAX or S:W,S:W,... with 1 <= S <= 16777216");
        o.size_set = true;
    } else if (a == "--payload") {
        o.payload = val;
        o.payload_set = true;
    } else if (a == "--payload-file") {
        if (val.empty()) return bad("expected a file whose bytes are the request");
        o.payload_file = val;
    } else if (a == "--payload-template") {
        if (!o.tpl.parse(val, err)) return false;
        o.payload_template_text = val;
    } else if (a == "--framing") {
        if (val == "echo") o.framing = Framing::Echo;
        else if (val == "line") o.framing = Framing::Line;
        else if (val == "length-prefixed" || val == "length") o.framing = Framing::LengthPrefixed;
        else return bad("expected echo, line or length-prefixed");
        o.framing_set = true;
    } else if (a == "--prefix-bytes") {
        if (!parse_u64(val, u) || (u != 1 && u != 2 && u != 4)) return bad("expected 1, 2 or 4");
        o.prefix_bytes = static_cast<int>(u);
        o.framing_set = true;
    } else if (a == "--json") {
        o.json_path = val;
    } else if (a == "--json-stream") {
        o.json_stream_path = val;
    } else if (a == "--sources") {
        if (!parse_u64(val, u) || u < 1 || u > 250) return bad("expected 1..250");
        o.sources = static_cast<int>(u);
    } else if (a == "--source-ips") {
        std::stringstream ss(val);
        std::string ip;
        in_addr tmp{};
        while (std::getline(ss, ip, ','))
            if (inet_pton(AF_INET, ip.c_str(), &tmp) != 1) return bad("expected IPv4 addresses A,B,...");
            else o.source_ips.push_back(ip);
        if (o.source_ips.empty()) return bad("expected IPv4 addresses A,B,...");
    } else if (a == "--response-timeout" || a == "--connect-timeout" || a == "--requests" ||
               a == "--max-errors" || a == "--slow-read-bytes") {
        if (!parse_u64(val, u)) return bad("expected a non-negative integer");
        if (a == "--response-timeout") o.response_timeout_ms = u ? u : 1;
        else if (a == "--connect-timeout") o.connect_timeout_ms = u ? u : 1;
        else if (a == "--requests") o.requests = u;
        else if (a == "--max-errors") o.max_errors = static_cast<std::int64_t>(u);
        else o.slow_read_bytes = static_cast<std::uint32_t>(u);
    } else if (a == "--publishers" || a == "--rooms" || a == "--subscriptions" || a == "--messages" ||
               a == "--window") {
        if (!parse_u64(val, u)) return bad("expected a non-negative integer");
        if (o.pubsub_flag.empty()) o.pubsub_flag = a;
        if (a == "--publishers") {
            if (u < 1 || u > 100000) return bad("expected 1..100000 publisher connections");
            o.publishers = u;
        } else if (a == "--rooms") {
            if (u < 1 || u > 100000) return bad("expected 1..100000 rooms");
            o.rooms = u;
        } else if (a == "--subscriptions") {
            if (u < 1 || u > 1024) return bad("expected 1..1024 rooms per subscriber");
            o.subscriptions = u;
        } else if (a == "--window") {
            if (u < 1 || u > 1'000'000) return bad("expected 1..1000000 messages");
            o.window = u;
        } else {
            o.messages = u;
        }
    } else if (a == "--stages") {
        if (!parse_stages(val, o.stages, err)) return false;
        if (o.stages.size() > 1000) return bad("expected at most 1000 stages");
        o.stages_text = val;
    } else if (is_protocol_flag(a)) {
        return set_protocol_flag(a, val, o, err);
    } else if (is_report_flag(a)) {
        return set_report_flag(a, val, o, err);
    }
    return true;
}

// The mode and its argument.
bool set_mode(const std::vector<std::string>& pos, Options& o, std::string& err) {
    if (pos.empty()) {
        err = "missing MODE (idle, pingpong, pipeline D, rate R, firehose, storm, churn K, slowloris, "
              "slowread, halfclose, reset, pubsub)";
        return false;
    }
    if (!parse_mode(pos[0], o.mode)) {
        err = "unknown mode '" + pos[0] + "' (see --help)";
        return false;
    }
    // rate R: with --stages, R is optional (the rate the first stage ramps from, default 0).
    const bool staged = o.mode == Mode::Rate && !o.stages.empty();
    bool needs_arg = o.mode == Mode::Pipeline || o.mode == Mode::Rate || o.mode == Mode::Churn;
    if (staged && pos.size() < 2) return true;
    if (needs_arg && pos.size() < 2) {
        err = std::string("mode ") + mode_name(o.mode) + " needs an argument (" +
              (o.mode == Mode::Rate ? "R msgs/s" : o.mode == Mode::Pipeline ? "depth D" : "K requests") + ")";
        return false;
    }
    if (pos.size() > (needs_arg ? 2u : 1u)) {
        err = "unexpected argument '" + pos.back() + "'";
        return false;
    }
    if (o.mode == Mode::Pipeline || o.mode == Mode::Churn) {
        std::uint64_t u = 0;
        if (!parse_u64(pos[1], u) || u < 1 || u > 1'000'000) {
            err = "invalid " + pos[0] + " argument '" + pos[1] + "': expected an integer 1..1000000";
            return false;
        }
        (o.mode == Mode::Pipeline ? o.depth : o.churn_k) = u;
    } else if (o.mode == Mode::Rate) {
        double d = 0;
        if (!parse_double(pos[1], d) || (d <= 0 && !staged) || d > 1e9) {
            err = "invalid rate '" + pos[1] + "': expected msgs/s " + (staged ? ">= 0 (the rate the first stage starts from)" : "> 0");
            return false;
        }
        o.rate = d;
    }
    return true;
}

// Flags that take a value (-c / --connections apart); bool flags are --verify, --poisson,
// --allow-remote and --quiet.
constexpr const char* kValueFlags[] = {
    "--host", "--unix", "--port", "--procs", "--threads", "--duration", "--ramp", "--warmup", "--connect-rate",
    "--keepalive", "--slow-delay", "--drain", "--size", "--payload", "--payload-file", "--payload-template",
    "--framing", "--prefix-bytes", "--json", "--json-stream", "--sources", "--source-ips", "--response-timeout",
    "--connect-timeout", "--requests", "--max-errors", "--slow-read-bytes", "--stages",
    // pubsub
    "--publishers", "--rooms", "--subscriptions", "--messages", "--window",
    // options_protocol.cpp
    "--protocol", "--resp-command", "--ratio", "--key-range", "--key-pattern", "--path", "--host-header",
    // options_report.cpp
    "--max-unanswered", "--max-p50", "--max-p99", "--max-p999", "--max-latency", "--max-pause", "--hgrm", "--csv",
    "--hdr-log"};

}  // namespace

bool parse_options(int argc, char** argv, Options& o, std::string& err, bool& want_help) {
    want_help = false;
    for (int i = 1; i < argc; ++i)  // help wins over everything else
        if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
            want_help = true;
            return true;
        }
    CLI::App app{"esockets-flood"};
    app.set_help_flag();  // --help / -h print print_help() (above)
    app.allow_windows_style_options(false);
    // Every flag records (name, value) as it is parsed; set_flag() then checks them in command-line order.
    std::vector<std::pair<std::string, std::string>> given;
    auto flag = [&](const char* name) {
        app.add_flag_callback(name, [&given, name] { given.emplace_back(name, std::string()); })
            ->disable_flag_override()
            ->trigger_on_parse();
    };
    auto value = [&](const std::string& names, const char* canonical) {
        app.add_option_function<std::string>(
               names, [&given, canonical](const std::string& v) { given.emplace_back(canonical, v); })
            ->expected(1)
            ->allow_extra_args(false)
            ->trigger_on_parse();
    };
    for (const char* f : {"--verify", "--poisson", "--allow-remote", "--quiet"}) flag(f);
    value("-c,--connections", "-c");
    for (const char* f : kValueFlags) value(f, f);
    std::vector<std::string> pos;
    app.add_option("mode", pos, "MODE [ARG]");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ExtrasError&) {
        const auto extras = app.remaining();
        err = "unknown option '" + (extras.empty() ? std::string("?") : extras.front()) + "' (see --help)";
        return false;
    } catch (const CLI::ArgumentMismatch& e) {
        const std::string what = e.what();
        if (what.find("flag override") != std::string::npos) {  // --verify=3
            err = "--" + what.substr(0, what.find(' ')) + " is a flag and takes no value";
            return false;
        }
        const auto colon = what.find(':');
        err = "option " + (colon == std::string::npos ? what : what.substr(0, colon)) + " needs a value";
        return false;
    } catch (const CLI::ParseError& e) {
        err = std::string(e.what()) + " (see --help)";
        return false;
    }
    for (auto& [name, val] : given)
        if (!set_flag(name, val, o, err)) return false;
    return set_mode(pos, o, err);
}

}  // namespace flood

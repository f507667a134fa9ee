#include "options.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace flood {

const char* mode_name(Mode m) {
    switch (m) {
    case Mode::Idle: return "idle";
    case Mode::Pingpong: return "pingpong";
    case Mode::Pipeline: return "pipeline";
    case Mode::Rate: return "rate";
    case Mode::Firehose: return "firehose";
    case Mode::Storm: return "storm";
    case Mode::Churn: return "churn";
    case Mode::Slowloris: return "slowloris";
    case Mode::Slowread: return "slowread";
    case Mode::Halfclose: return "halfclose";
    case Mode::Reset: return "reset";
    case Mode::Pubsub: return "pubsub";
    }
    return "?";
}

const char* framing_name(Framing f) {
    switch (f) {
    case Framing::Echo: return "echo";
    case Framing::Line: return "line";
    case Framing::LengthPrefixed: return "length-prefixed";
    }
    return "?";
}

bool is_hostile(Mode m) {
    return m == Mode::Slowloris || m == Mode::Slowread || m == Mode::Halfclose || m == Mode::Reset;
}

bool has_replies(Mode m) {
    return m != Mode::Idle && m != Mode::Storm && m != Mode::Reset && m != Mode::Pubsub;
}

bool counts_lost(Mode m) {
    return m == Mode::Pingpong || m == Mode::Pipeline || m == Mode::Rate || m == Mode::Firehose || m == Mode::Churn;
}

std::uint32_t Options::max_size() const {
    if (size_list.empty()) return size_max;
    std::uint32_t m = 0;
    for (auto& s : size_list) m = s.size > m ? s.size : m;
    return m;
}

void print_help(const char* argv0) {
    std::printf(
        "Usage: %s [options] MODE [ARG]\n"
        "Client flood / load generator speaking plain TCP to any server.\n\n"
        "Modes:\n"
        "  idle            hold connections open (see --keepalive)\n"
        "  pingpong        one request in flight per connection\n"
        "  pipeline D      D requests in flight per connection; latency measured per request from\n"
        "                  its send to its reply\n"
        "  rate R          open loop: R msgs/s in total, spread evenly over connections;\n"
        "                  latency measured from each request's intended send time\n"
        "  firehose        one-way writes as fast as possible, replies read and discarded\n"
        "  storm           open -c connections as fast as possible; time-to-N, connect latency\n"
        "  churn K         connect, K requests, close, repeat\n"
        "  slowloris       send each request one byte at a time (--slow-delay)\n"
        "  slowread        send requests, read replies slowly (--slow-read-bytes per --slow-delay)\n"
        "  halfclose       send a request, shutdown(SHUT_WR), expect the whole reply then EOF\n"
        "  reset           send half a request then abort with RST (SO_LINGER {1,0})\n"
        "  pubsub          publish/subscribe against a line server such as esockets-chat: -c N\n"
        "                  subscriber connections each send SUB <room> and wait for OK SUB <room>;\n"
        "                  then --publishers connections send numbered PUB <room> p<id> <seq> <t> <pad>\n"
        "                  lines; every subscriber checks it gets every message of every publisher of\n"
        "                  its rooms (MSG <room> ...) exactly once and in that publisher's order\n\n"
        "Target and connections:\n"
        "  --host H                 target IPv4 address or name (default 127.0.0.1)\n"
        "  --port P                 target port (required)\n"
        "  --allow-remote           allow non-loopback targets (refused otherwise)\n"
        "  -c N|max                 connections (default 1); max = fd budget (RLIMIT_NOFILE-64) x procs\n"
        "  --procs P                fork P processes, each with its own fd budget (default 1)\n"
        "  --threads T              event-loop threads per process (default: number of cores)\n"
        "  --connect-rate R         limit new connections to R per second (all processes)\n"
        "  --ramp SEC               spread connection setup over SEC seconds\n"
        "                           (connection setup has priority over traffic in every event loop)\n"
        "  --connect-timeout MS     connect timeout (default 3000)\n"
        "  --sources N              spread over source addresses 127.0.0.1..N (default: automatic,\n"
        "                           one per 10000 connections to a loopback target)\n"
        "  --source-ips A,B,...     explicit source addresses\n\n"
        "Duration and phases:\n"
        "  --duration SEC           total sending time incl. ramp and warmup (default 10)\n"
        "  --warmup SEC             time after ramp excluded from the headline numbers\n"
        "  --requests N             stop after N requests in total (count bound)\n"
        "  --drain SEC              max wait for outstanding replies at the end (default 2)\n\n"
        "Messages:\n"
        "  --size S | MIN-MAX | S:W,S:W,...   request size: fixed, uniform range, or weighted list\n"
        "                           (default 64)\n"
        "  --payload text|hex:HEX|file:PATH   request bytes (repeated to the size; default text)\n"
        "  --framing echo|line|length-prefixed  how reply ends are found (default echo):\n"
        "                           echo = same length as request; line = '\\n'-terminated (request\n"
        "                           is payload+'\\n'); length-prefixed = big-endian length header\n"
        "  --prefix-bytes 1|2|4     header size for length-prefixed framing (default 4)\n"
        "  --verify                 stamp a per-connection sequence number into the first min(size,12)\n"
        "                           bytes of every request and check every reply: its number (lost,\n"
        "                           duplicated and reordered replies are counted apart) and its other\n"
        "                           bytes (mismatches count as verify_mismatch); any of them exits 6\n"
        "  --response-timeout MS    count response_timeout for requests hanging longer (default 5000)\n"
        "  --keepalive SEC          idle mode: send one byte every SEC seconds per connection\n"
        "  --poisson                rate mode: Poisson arrivals instead of uniform spacing\n"
        "  --slow-delay MS          slowloris byte interval / slowread read interval (default 100)\n"
        "  --slow-read-bytes N      slowread: bytes read per interval, 0 = never read (default 16)\n\n",
        argv0);
    print_protocol_help();
    std::printf(
        "Publish/subscribe (pubsub mode; -c N = subscribers, --size = PUB text length):\n"
        "  --publishers P           publisher connections, in addition to -c (default 1)\n"
        "  --rooms R                rooms room0..room<R-1>; publisher k publishes to room k mod R\n"
        "                           (default 1)\n"
        "  --subscriptions K        rooms each subscriber joins: subscriber s joins rooms s*K ..\n"
        "                           s*K+K-1 mod R (default 1; K <= R and N x K >= R)\n"
        "  --messages M             messages per publisher, 0 = until --duration (default 0)\n"
        "  --window W               a publisher runs at most W messages ahead of their delivery to\n"
        "                           all subscribers of its room (default 64)\n"
        "  Reported: published, expected and delivered deliveries, lost (never arrived by the end\n"
        "  of --drain), duplicated, reordered (arrived after a later message of the same\n"
        "  publisher), corrupted (verify_mismatch), deliveries/s and delivery latency (PUB written\n"
        "  to MSG read). One process only (no --procs).\n\n"
        "Output:\n"
        "  --json FILE              write the result as JSON (schema 1)\n"
        "  --json-stream FILE       write per-second progress as JSON lines\n"
        "  --max-errors N           exit 3 when more than N errors were counted (default: no limit)\n"
        "  --quiet                  no per-second progress on stderr\n"
        "  --help                   this text\n\n");
    print_report_help();
    std::printf(
        "Exit codes:\n"
        "  0 success; 1 other failure; 2 bad arguments; 3 errors over --max-errors;\n"
        "  4 requested connections not reached; 5 tool saturated or lagging (a thread's event loop\n"
        "  or rate schedule fell behind: result marked \"valid\": false, the numbers are not the server's);\n"
        "  6 delivery check failed (--verify or pubsub: lost, duplicated, reordered or corrupted\n"
        "  messages, or pubsub subscriptions never confirmed); 7 unanswered requests over\n"
        "  --max-unanswered; 8 a latency threshold exceeded. When several apply: 4, 3, 6, 7, 8, 5.\n");
}

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

}  // namespace

bool parse_options(int argc, char** argv, Options& o, std::string& err, bool& want_help) {
    want_help = false;
    std::vector<std::string> pos;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        std::string val;
        bool has_inline = false;
        if (a.rfind("--", 0) == 0) {
            auto eq = a.find('=');
            if (eq != std::string::npos) {
                val = a.substr(eq + 1);
                a = a.substr(0, eq);
                has_inline = true;
            }
        }
        auto need = [&](std::string& out) {
            if (has_inline) {
                out = val;
                return true;
            }
            if (i + 1 >= argc) {
                err = "option " + a + " needs a value";
                return false;
            }
            out = argv[++i];
            return true;
        };
        auto bad = [&](const std::string& what) {
            err = "invalid value '" + val + "' for " + a + ": " + what;
            return false;
        };
        std::uint64_t u = 0;
        double d = 0;
        if (a == "--help" || a == "-h") {
            want_help = true;
            return true;
        } else if (a == "--verify") {
            o.verify = true;
        } else if (a == "--poisson") {
            o.poisson = true;
        } else if (a == "--allow-remote") {
            o.allow_remote = true;
        } else if (a == "--quiet") {
            o.quiet = true;
        } else if (a == "--host") {
            if (!need(val)) return false;
            o.host = val;
        } else if (a == "--port") {
            if (!need(val)) return false;
            if (!parse_u64(val, u) || u == 0 || u > 65535) return bad("expected a port 1..65535");
            o.port = static_cast<std::uint16_t>(u);
            o.port_set = true;
        } else if (a == "-c" || a == "--connections") {
            if (!need(val)) return false;
            if (val == "max") {
                o.conns_max = true;
            } else if (!parse_u64(val, u) || u == 0 || u > 10'000'000) {
                return bad("expected a count >= 1 or 'max'");
            } else {
                o.conns = u;
            }
        } else if (a == "--procs") {
            if (!need(val)) return false;
            if (!parse_u64(val, u) || u < 1 || u > 64) return bad("expected 1..64");
            o.procs = static_cast<int>(u);
        } else if (a == "--threads") {
            if (!need(val)) return false;
            if (!parse_u64(val, u) || u < 1 || u > 256) return bad("expected 1..256");
            o.threads = static_cast<int>(u);
        } else if (a == "--duration" || a == "--ramp" || a == "--warmup" || a == "--connect-rate" ||
                   a == "--keepalive" || a == "--slow-delay" || a == "--drain") {
            if (!need(val)) return false;
            if (!parse_double(val, d)) return bad("expected a non-negative number");
            if (a == "--duration") {
                if (d <= 0 || d > 86400) return bad("expected 0 < SEC <= 86400");
                o.duration = d;
            } else if (a == "--ramp") o.ramp = d;
            else if (a == "--warmup") o.warmup = d;
            else if (a == "--connect-rate") o.connect_rate = d;
            else if (a == "--keepalive") o.keepalive = d;
            else if (a == "--slow-delay") o.slow_delay_ms = d;
            else o.drain = d;
        } else if (a == "--size") {
            if (!need(val)) return false;
            if (!parse_sizes(val, o)) return bad("expected S, MIN-MAX or S:W,S:W,... with 1 <= S <= 16777216");
            o.size_set = true;
        } else if (a == "--payload") {
            if (!need(val)) return false;
            o.payload = val;
        } else if (a == "--framing") {
            if (!need(val)) return false;
            if (val == "echo") o.framing = Framing::Echo;
            else if (val == "line") o.framing = Framing::Line;
            else if (val == "length-prefixed" || val == "length") o.framing = Framing::LengthPrefixed;
            else return bad("expected echo, line or length-prefixed");
            o.framing_set = true;
        } else if (a == "--prefix-bytes") {
            if (!need(val)) return false;
            if (!parse_u64(val, u) || (u != 1 && u != 2 && u != 4)) return bad("expected 1, 2 or 4");
            o.prefix_bytes = static_cast<int>(u);
            o.framing_set = true;
        } else if (a == "--json") {
            if (!need(val)) return false;
            o.json_path = val;
        } else if (a == "--json-stream") {
            if (!need(val)) return false;
            o.json_stream_path = val;
        } else if (a == "--sources") {
            if (!need(val)) return false;
            if (!parse_u64(val, u) || u < 1 || u > 250) return bad("expected 1..250");
            o.sources = static_cast<int>(u);
        } else if (a == "--source-ips") {
            if (!need(val)) return false;
            std::stringstream ss(val);
            std::string ip;
            in_addr tmp{};
            while (std::getline(ss, ip, ','))
                if (inet_pton(AF_INET, ip.c_str(), &tmp) != 1) return bad("expected IPv4 addresses A,B,...");
                else o.source_ips.push_back(ip);
            if (o.source_ips.empty()) return bad("expected IPv4 addresses A,B,...");
        } else if (a == "--response-timeout" || a == "--connect-timeout" || a == "--requests" ||
                   a == "--max-errors" || a == "--slow-read-bytes") {
            if (!need(val)) return false;
            if (!parse_u64(val, u)) return bad("expected a non-negative integer");
            if (a == "--response-timeout") o.response_timeout_ms = u ? u : 1;
            else if (a == "--connect-timeout") o.connect_timeout_ms = u ? u : 1;
            else if (a == "--requests") o.requests = u;
            else if (a == "--max-errors") o.max_errors = static_cast<std::int64_t>(u);
            else o.slow_read_bytes = static_cast<std::uint32_t>(u);
        } else if (a == "--publishers" || a == "--rooms" || a == "--subscriptions" || a == "--messages" ||
                   a == "--window") {
            if (!need(val)) return false;
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
        } else if (is_protocol_flag(a)) {
            if (!need(val) || !set_protocol_flag(a, val, o, err)) return false;
        } else if (is_report_flag(a)) {
            if (!need(val) || !set_report_flag(a, val, o, err)) return false;
        } else if (a.size() > 1 && a[0] == '-' && !(a.size() > 1 && a[1] >= '0' && a[1] <= '9')) {
            err = "unknown option '" + a + "' (see --help)";
            return false;
        } else {
            pos.push_back(a);
        }
    }
    if (pos.empty()) {
        err = "missing MODE (idle, pingpong, pipeline D, rate R, firehose, storm, churn K, slowloris, "
              "slowread, halfclose, reset, pubsub)";
        return false;
    }
    if (!parse_mode(pos[0], o.mode)) {
        err = "unknown mode '" + pos[0] + "' (see --help)";
        return false;
    }
    bool needs_arg = o.mode == Mode::Pipeline || o.mode == Mode::Rate || o.mode == Mode::Churn;
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
        if (!parse_double(pos[1], d) || d <= 0 || d > 1e9) {
            err = "invalid rate '" + pos[1] + "': expected msgs/s > 0";
            return false;
        }
        o.rate = d;
    }
    return true;
}

bool finalize_options(Options& o, std::string& err) {
    if (!o.port_set) {
        err = "missing --port P (the target port)";
        return false;
    }
    if (!finalize_protocol(o, err)) return false;
    // Resolve the target and enforce loopback-only unless --allow-remote.
    in_addr addr{};
    if (inet_pton(AF_INET, o.host.c_str(), &addr) != 1) {
        addrinfo hints{};
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        if (getaddrinfo(o.host.c_str(), nullptr, &hints, &res) != 0 || !res) {
            err = "cannot resolve --host '" + o.host + "' to an IPv4 address";
            return false;
        }
        addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
        freeaddrinfo(res);
        char buf[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &addr, buf, sizeof buf);
        o.host = buf;
    }
    const bool loopback = (ntohl(addr.s_addr) >> 24) == 127;
    if (!loopback && !o.allow_remote) {
        err = "target " + o.host + " is not a loopback address (127.0.0.0/8); pass --allow-remote to flood it";
        return false;
    }
    if (o.threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = n > 0 ? static_cast<int>(n) : 1;
    }
    if (o.ramp + o.warmup >= o.duration) {
        err = "--ramp + --warmup must be shorter than --duration";
        return false;
    }
    const bool pubsub = o.mode == Mode::Pubsub;
    if (!pubsub && !o.pubsub_flag.empty()) {
        err = o.pubsub_flag + " only applies to the pubsub mode";
        return false;
    }
    if (pubsub) {
        if (o.procs != 1) {
            err = "pubsub runs in one process (subscribers check publishers' counts in memory): drop --procs";
            return false;
        }
        if (o.requests != 0) {
            err = "pubsub is bounded by --messages M (per publisher), not --requests";
            return false;
        }
        if (o.subscriptions > o.rooms) {
            err = "--subscriptions " + std::to_string(o.subscriptions) + " is more than --rooms " +
                  std::to_string(o.rooms) + "; a subscriber joins distinct rooms";
            return false;
        }
        const std::uint64_t streams = o.conns * o.subscriptions * ((o.publishers + o.rooms - 1) / o.rooms);
        if (!o.conns_max && streams > 50'000'000) {
            err = "pubsub would check " + std::to_string(streams) +
                  " (subscriber, publisher) streams, more than 50000000; lower -c, --subscriptions or --publishers";
            return false;
        }
        o.framing = Framing::Line;  // the chat protocol is lines
    }
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    const std::uint64_t budget = rl.rlim_cur > 128 ? rl.rlim_cur - 64 : 64;
    const std::uint64_t extra = pubsub ? o.publishers : 0;  // publisher connections on top of -c
    if (o.conns_max) {
        o.conns = budget * static_cast<std::uint64_t>(o.procs);
        if (extra >= o.conns) {
            err = "--publishers " + std::to_string(extra) + " leaves no fd for subscribers (budget " +
                  std::to_string(o.conns) + ")";
            return false;
        }
        o.conns -= extra;
    }
    const std::uint64_t per_proc =
        (o.conns + extra + static_cast<std::uint64_t>(o.procs) - 1) / static_cast<std::uint64_t>(o.procs);
    if (pubsub && o.conns * o.subscriptions < o.rooms) {
        err = "-c " + std::to_string(o.conns) + " subscribers x --subscriptions " + std::to_string(o.subscriptions) +
              " leave some of the " + std::to_string(o.rooms) + " rooms without a subscriber; lower --rooms or raise -c";
        return false;
    }
    if (per_proc > budget) {
        const std::uint64_t need_procs = (o.conns + budget - 1) / budget;
        err = "-c " + std::to_string(o.conns) + " needs " + std::to_string(per_proc) +
              " fds per process but the budget is " + std::to_string(budget) + " (RLIMIT_NOFILE " +
              std::to_string(rl.rlim_cur) + " minus 64); use --procs " + std::to_string(need_procs) +
              " or more, or lower -c";
        return false;
    }
    if (static_cast<std::uint64_t>(o.procs) > o.conns) {
        err = "--procs " + std::to_string(o.procs) + " is more than -c " + std::to_string(o.conns) +
              "; use at most one process per connection";
        return false;
    }
    if (o.framing == Framing::LengthPrefixed && o.prefix_bytes < 4) {
        const std::uint64_t lim = o.prefix_bytes == 1 ? 255u : 65535u;
        if (o.max_size() > lim) {
            err = "--size " + std::to_string(o.max_size()) + " does not fit a " + std::to_string(o.prefix_bytes) +
                  "-byte length prefix (max " + std::to_string(lim) + ")";
            return false;
        }
    }
    // Payload pattern, at least max_size bytes.
    std::vector<unsigned char> unit;
    if (o.payload == "text") {
        const char* t = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        unit.assign(t, t + std::strlen(t));
    } else if (o.payload.rfind("hex:", 0) == 0) {
        std::string h = o.payload.substr(4);
        if (h.empty() || h.size() % 2) {
            err = "--payload hex: needs an even number of hex digits, e.g. hex:DEADBEEF";
            return false;
        }
        for (std::size_t i = 0; i < h.size(); i += 2) {
            char b[3] = {h[i], h[i + 1], 0};
            char* end = nullptr;
            long v = std::strtol(b, &end, 16);
            if (*end) {
                err = "--payload hex: contains a non-hex digit";
                return false;
            }
            unit.push_back(static_cast<unsigned char>(v));
        }
    } else if (o.payload.rfind("file:", 0) == 0) {
        FILE* f = std::fopen(o.payload.substr(5).c_str(), "rb");
        if (!f) {
            err = "--payload file: cannot read '" + o.payload.substr(5) + "'";
            return false;
        }
        unsigned char chunk[4096];
        std::size_t got = 0;
        while ((got = std::fread(chunk, 1, sizeof chunk, f)) > 0 && unit.size() < (1u << 25))
            unit.insert(unit.end(), chunk, chunk + got);
        std::fclose(f);
        if (unit.empty()) {
            err = "--payload file: '" + o.payload.substr(5) + "' is empty";
            return false;
        }
    } else {
        err = "--payload must be text, hex:HEX or file:PATH";
        return false;
    }
    if (o.framing == Framing::Line)
        for (auto& c : unit)
            if (c == '\n' || (pubsub && c == '\r')) c = ' ';  // a line server may strip a trailing '\r'
    if (o.verify && o.mode == Mode::Firehose && o.framing == Framing::Echo &&
        (!o.size_list.empty() || o.size_min != o.size_max)) {
        err = "--verify with firehose and --framing echo needs a fixed --size (replies are split by the size); "
              "or use --framing line or length-prefixed";
        return false;
    }
    const std::uint32_t ms = o.max_size();
    o.payload_bytes.clear();
    o.payload_bytes.reserve(ms + unit.size());
    while (o.payload_bytes.size() < ms) o.payload_bytes.insert(o.payload_bytes.end(), unit.begin(), unit.end());
    o.total_conns = o.conns + extra;
    return true;
}

}  // namespace flood

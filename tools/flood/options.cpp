#include "options.hpp"

#include "hdr_log.hpp"
#include "report_util.hpp"

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
        "Client flood / load generator speaking plain TCP (IPv4, IPv6) or unix stream sockets to any server.\n"
        "Flags take their value as --flag V or --flag=V (-c N or -cN); flags may come before or after\n"
        "MODE; of a repeated flag the last wins (--source-ips lists add up). A bad flag or value\n"
        "exits 2 with a message saying what to change. A value that starts with '-' needs --flag=V.\n\n"
        "Modes:\n"
        "  idle            hold connections open (see --keepalive)\n"
        "  pingpong        one request in flight per connection\n"
        "  pipeline D      D requests in flight per connection; latency measured per request from\n"
        "                  its send to its reply\n"
        "  rate R          open loop: R msgs/s in total, spread evenly over connections;\n"
        "                  latency measured from each request's intended send time\n"
        "  rate [R] --stages D:R,...  open loop with a rate ramp (see --stages)\n"
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
        "  --host H                 target IPv4 or IPv6 address or name (default 127.0.0.1); also\n"
        "                           [V6] or [V6]:PORT (e.g. [::1]:7000), or unix:PATH (= --unix PATH)\n"
        "  --port P                 target port (required for IPv4 / IPv6 unless in --host [V6]:PORT)\n"
        "  --unix PATH              target a unix stream socket instead (every mode but reset; no --port,\n"
        "                           --sources or --source-ips)\n"
        "  --allow-remote           allow non-loopback targets (refused otherwise; loopback = 127.0.0.0/8,\n"
        "                           ::1 and unix sockets)\n"
        "  -c N|max, --connections N|max\n"
        "                           connections (default 1); max = fd budget (RLIMIT_NOFILE-64) x procs\n"
        "  --procs P                fork P processes, each with its own fd budget (default 1)\n"
        "  --threads T              event-loop threads per process (default: number of cores)\n"
        "  --connect-rate R         limit new connections to R per second (all processes)\n"
        "  --ramp SEC               spread connection setup over SEC seconds\n"
        "                           (connection setup has priority over traffic in every event loop)\n"
        "  --connect-timeout MS     connect timeout (default 3000)\n"
        "  --sources N              spread over source addresses 127.0.0.1..N (default: automatic,\n"
        "                           one per 10000 connections to a 127.x target; IPv4 targets only)\n"
        "  --source-ips A,B,...     explicit IPv4 source addresses\n\n"
        "Duration and phases:\n"
        "  --duration SEC           total sending time incl. ramp and warmup (default 10)\n"
        "  --warmup SEC             time after ramp excluded from the headline numbers\n"
        "  --requests N             stop after N requests in total (count bound)\n"
        "  --drain SEC              max wait for outstanding replies at the end (default 2)\n\n"
        "Messages:\n"
        "  --size S | MIN-MAX | S:W,S:W,...   request size: fixed, uniform range, or weighted list\n"
        "                           (default 64)\n"
        "  --payload text|hex:HEX|file:PATH   request bytes (repeated to the size; default text)\n"        "  --payload-file FILE      every request is the whole file (size = file size; max 16 MiB)\n"
        "  --payload-template T     per-request bytes: {seq} = the request's number on its connection\n"
        "                           (from 0, counting on across re-connects), {conn} = the connection's\n"
        "                           global index, {{ = '{'; escapes \\r \\n \\t \\\\ \\xHH. Size = the expanded\n"
        "                           length. With --payload-file: not with --verify (it stamps its own\n"
        "                           bytes), --size, --payload, --protocol resp/http, idle, storm, pubsub,\n"
        "                           nor a '\\n' with --framing line\n"
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
        "  --stages D:R,D:R,...     rate mode: a rate schedule, e.g. 5s:1000,10s:5000,5s:0 (D in s, ms or\n"
        "                           m). Each stage ramps linearly over D from the previous stage's rate\n"
        "                           to R msgs/s (equal rates hold it; the first stage starts from the\n"
        "                           mode's R, which is optional with --stages, default 0). The run lasts\n"
        "                           the sum of D unless --duration is given (the last R then holds, or\n"
        "                           the stages are cut short). Reported per stage: target, sent,\n"
        "                           answered, achieved msgs/s and latency\n"
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
        "  -h, --help               this text (wins over every other argument)\n\n");
    print_report_help();
    std::printf(
        "Exit codes:\n"
        "  0 success; 1 other failure; 2 bad arguments; 3 errors over --max-errors;\n"
        "  4 requested connections not reached; 5 tool saturated or lagging (a thread's event loop\n"
        "  or rate schedule fell behind: result marked \"valid\": false, the numbers are not the server's);\n"
        "  6 delivery check failed (--verify or pubsub: lost, duplicated, reordered or corrupted\n"
        "  messages, or pubsub subscriptions never confirmed); 7 unanswered requests over\n"
        "  --max-unanswered; 8 a latency or pause threshold exceeded. When several apply: 4, 3, 6, 7, 8, 5.\n");
}

bool finalize_options(Options& o, std::string& err) {
    // The target first: an http Host header defaults to it (a unix socket: localhost).
    if (!o.unix_path.empty() && o.host_header.empty() && o.protocol == Protocol::Http) o.host_header = "localhost";
    if (!resolve_target(o, err) || !finalize_protocol(o, err)) return false;
    if (o.threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = n > 0 ? static_cast<int>(n) : 1;
    }
    if (!o.hdr_log_path.empty() && o.procs > 1) {
        err = "--hdr-log writes one process's intervals: drop --procs (or --hdr-log)";
        return false;
    }
    if (!o.hdr_log_path.empty() && !hdr_log_available()) {
        err = "--hdr-log needs zlib, and this esockets-flood was built without it (Debian: zlib1g-dev)";
        return false;
    }
    if (!o.stages.empty()) {
        if (o.mode != Mode::Rate) {
            err = "--stages only applies to the rate mode (rate [R] --stages D:R,...): drop --stages or use rate";
            return false;
        }
        if (!o.duration_set) {  // the run lasts as long as the stages
            o.duration = 0;
            for (const Stage& s : o.stages) o.duration += s.secs;
            if (o.duration > 86400) {
                err = "--stages last longer than 86400 s: shorten them";
                return false;
            }
        }
    }
    if (o.max_pause_ns && !tracks_unanswered(o.mode)) {  // no reply is owed: the threshold could never fail
        err = std::string("--max-pause applies to pingpong, pipeline, rate and churn (the modes that wait for "
                          "replies), not ") + mode_name(o.mode) + ": drop --max-pause";
        return false;
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
    o.total_conns = o.conns + extra;
    bool payload_done = false;
    if (!finalize_payload_source(o, payload_done, err)) return false;
    if (payload_done) return true;
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
    return true;
}

}  // namespace flood

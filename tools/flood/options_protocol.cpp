// esockets-flood: --protocol resp / http and their flags.
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "options.hpp"

namespace flood {

const char* protocol_name(Protocol p) {
    switch (p) {
    case Protocol::Raw: return "raw";
    case Protocol::Resp: return "resp";
    case Protocol::Http: return "http";
    }
    return "?";
}

const char* resp_command_name(RespCommand c) {
    switch (c) {
    case RespCommand::Set: return "set";
    case RespCommand::Get: return "get";
    case RespCommand::Mixed: return "mixed";
    }
    return "?";
}

void print_protocol_help() {
    std::printf(
        "Protocols (pingpong, pipeline D, rate R and churn K; replies framed by the protocol):\n"
        "  --protocol raw|resp|http raw (default) = --payload bytes with --framing, for echo servers;\n"
        "                           resp = Redis commands (RESP arrays), http = HTTP/1.1 GET keep-alive\n"
        "  --resp-command set|get|mixed   resp: SET key:<n> <value>, GET key:<n>, or both (default set)\n"
        "  --ratio S:G              resp mixed (implied): S SETs then G GETs, repeated per thread\n"
        "                           (default 1:10)\n"
        "  --key-range N            resp: keys key:0 .. key:<N-1> (default 100000)\n"
        "  --key-pattern random|sequential  resp: n uniform in [0,N) (default), or sequential: the k-th\n"
        "                           request of connection g (of C) uses n = (g + k*C) mod N\n"
        "  --size S                 resp: SET value size (default 3 bytes, as redis-benchmark); the value\n"
        "                           bytes are the --payload pattern\n"
        "  --path /P                http: request target (default /)\n"
        "  --host-header H          http: Host header (default <--host>:<--port>)\n"
        "  resp: a reply is one RESP value (simple string, error, integer, bulk incl. nil, arrays\n"
        "  nested); an error reply (-ERR ...) counts as error_reply (no latency sample, not a msg).\n"
        "  http: a response is status line + headers + Content-Length or chunked body (or a body to the\n"
        "  close); every status counts as a msg, non-2xx are counted apart (not errors); after\n"
        "  Connection: close the connection is re-opened and unanswered requests are sent again.\n"
        "  Malformed replies, or replies to nothing sent, count as protocol_error (connection closed).\n"
        "  Errors exit 3 only over --max-errors, as for the raw protocol.\n\n");
}

bool is_protocol_flag(const std::string& a) {
    return a == "--protocol" || a == "--resp-command" || a == "--ratio" || a == "--key-range" ||
           a == "--key-pattern" || a == "--path" || a == "--host-header";
}

bool set_protocol_flag(const std::string& a, const std::string& val, Options& o, std::string& err) {
    auto bad = [&](const std::string& what) {
        err = "invalid value '" + val + "' for " + a + ": " + what;
        return false;
    };
    auto u64 = [](const std::string& s, std::uint64_t& v) {
        if (s.empty() || s[0] < '0' || s[0] > '9') return false;
        char* end = nullptr;
        errno = 0;
        v = std::strtoull(s.c_str(), &end, 10);
        return errno == 0 && *end == 0;
    };
    if (a == "--protocol") {
        if (val == "raw") o.protocol = Protocol::Raw;
        else if (val == "resp" || val == "redis") o.protocol = Protocol::Resp;
        else if (val == "http") o.protocol = Protocol::Http;
        else return bad("expected raw, resp or http");
        return true;
    }
    const bool resp = a != "--path" && a != "--host-header";
    std::string& first = resp ? o.resp_flag : o.http_flag;
    if (first.empty()) first = a;
    if (a == "--resp-command") {
        if (val == "set" || val == "SET") o.resp_command = RespCommand::Set;
        else if (val == "get" || val == "GET") o.resp_command = RespCommand::Get;
        else if (val == "mixed") o.resp_command = RespCommand::Mixed;
        else return bad("expected set, get or mixed");
        o.command_given = true;
    } else if (a == "--ratio") {
        const auto colon = val.find(':');
        std::uint64_t s = 0, g = 0;
        if (colon == std::string::npos || !u64(val.substr(0, colon), s) || !u64(val.substr(colon + 1), g) ||
            s > 1'000'000 || g > 1'000'000 || s + g == 0)
            return bad("expected SET:GET, e.g. 1:10 (each 0..1000000, not both 0)");
        o.ratio_set = static_cast<std::uint32_t>(s);
        o.ratio_get = static_cast<std::uint32_t>(g);
        o.ratio_given = true;
    } else if (a == "--key-range") {
        std::uint64_t n = 0;
        if (!u64(val, n) || n < 1 || n > 1'000'000'000'000ull) return bad("expected 1..1000000000000 keys");
        o.key_range = n;
    } else if (a == "--key-pattern") {
        if (val == "random" || val == "R") o.key_sequential = false;
        else if (val == "sequential" || val == "S") o.key_sequential = true;
        else return bad("expected random or sequential");
    } else if (a == "--path") {
        if (val.empty() || val[0] != '/' || val.find_first_of(" \t\r\n") != std::string::npos || val.size() > 4096)
            return bad("expected a path starting with '/' without spaces or line breaks");
        o.http_path = val;
    } else if (a == "--host-header") {
        if (val.empty() || val.find_first_of("\r\n") != std::string::npos || val.size() > 1024)
            return bad("expected a non-empty value without line breaks");
        o.host_header = val;
    }
    return true;
}

bool finalize_protocol(Options& o, std::string& err) {
    const std::string proto = std::string("--protocol ") + protocol_name(o.protocol);
    if (o.protocol != Protocol::Resp && !o.resp_flag.empty()) {
        err = o.resp_flag + " only applies to --protocol resp";
        return false;
    }
    if (o.protocol != Protocol::Http && !o.http_flag.empty()) {
        err = o.http_flag + " only applies to --protocol http";
        return false;
    }
    if (o.protocol == Protocol::Raw) return true;
    if (o.mode != Mode::Pingpong && o.mode != Mode::Pipeline && o.mode != Mode::Rate && o.mode != Mode::Churn) {
        err = proto + " works with the modes pingpong, pipeline D, rate R and churn K, not " + mode_name(o.mode) +
              (o.mode == Mode::Idle || o.mode == Mode::Storm ? " (it sends nothing: drop --protocol)"
                                                            : ": pick one of those modes or drop --protocol");
        return false;
    }
    if (o.verify) {
        err = "--verify checks echoed sequence stamps and does not apply to " + proto +
              " (replies are framed and checked by the protocol parser): drop --verify";
        return false;
    }
    if (o.framing_set) {
        err = "--framing / --prefix-bytes do not apply to " + proto + " (the protocol frames the replies): drop them";
        return false;
    }
    if (o.protocol == Protocol::Http && (o.size_set || o.payload != "text")) {
        err = "--size / --payload do not apply to --protocol http (GET requests have no body): drop them";
        return false;
    }
    if (o.protocol == Protocol::Resp) {
        if (!o.size_set) o.size_min = o.size_max = 3;  // redis-benchmark's default value size
        if (o.ratio_given && !o.command_given) o.resp_command = RespCommand::Mixed;
        if (o.ratio_given && o.resp_command != RespCommand::Mixed) {
            err = "--ratio only applies to --resp-command mixed (not " + std::string(resp_command_name(o.resp_command)) +
                  "): drop --ratio or use --resp-command mixed";
            return false;
        }
    }
    if (o.protocol == Protocol::Http && o.host_header.empty())
        o.host_header = target_label(o);  // 127.0.0.1:P, [::1]:P (a unix socket: set to localhost before)
    return true;
}

}  // namespace flood

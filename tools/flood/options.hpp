// esockets-flood: command-line options.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

#include "payload_template.hpp"
#include "stages.hpp"

namespace flood {

enum class Mode { Idle, Pingpong, Pipeline, Rate, Firehose, Storm, Churn, Slowloris, Slowread, Halfclose, Reset, Pubsub };
enum class Framing { Echo, Line, LengthPrefixed };
// --protocol: raw = the payload bytes and --framing (echo servers); resp = Redis commands; http = GET requests.
enum class Protocol { Raw, Resp, Http };
enum class RespCommand { Set, Get, Mixed };

const char* mode_name(Mode m);
const char* framing_name(Framing f);
const char* protocol_name(Protocol p);
const char* resp_command_name(RespCommand c);
bool is_hostile(Mode m);
// Modes whose replies --verify checks (sequence stamps, bytes).
bool has_replies(Mode m);
// Modes where a reply that never came by the end of the drain counts as lost under --verify
// (the hostile modes end with replies in flight by design).
bool counts_lost(Mode m);

// Exit codes (documented in --help).
enum ExitCode : int {
    kExitOk = 0,
    kExitFailure = 1,
    kExitBadArgs = 2,
    kExitErrors = 3,
    kExitConnections = 4,
    kExitSaturated = 5,
    kExitDelivery = 6,  // --verify / pubsub: lost, duplicated, reordered or corrupted messages
    kExitUnanswered = 7,  // requests due but never answered (connection died, or still waiting at the end)
    kExitLatency = 8,     // a latency threshold (--max-p50 / --max-p99 / --max-p999 / --max-latency / --max-pause) exceeded
};

struct SizeChoice {
    std::uint32_t size;
    std::uint32_t weight;
};

struct Options {
    std::string host = "127.0.0.1";
    std::string unix_path;       // --unix PATH / --host unix:PATH
    sockaddr_storage target{};   // resolved by finalize_options (AF_INET, AF_INET6 or AF_UNIX)
    socklen_t target_len = 0;
    std::uint16_t port = 0;
    bool port_set = false;
    std::uint64_t conns = 1;
    bool conns_max = false;
    int procs = 1;
    int threads = 0;  // 0 = number of cores
    double duration = 10.0;
    double ramp = 0.0;
    double warmup = 0.0;
    double connect_rate = 0.0;  // connections/s over all procs, 0 = unlimited
    double keepalive = 0.0;     // idle: seconds between keepalive bytes, 0 = off
    bool poisson = false;
    // Sizes: either range [size_min, size_max] (uniform) or weighted list.
    std::uint32_t size_min = 64, size_max = 64;
    std::vector<SizeChoice> size_list;
    std::string payload = "text";
    std::vector<unsigned char> payload_bytes;  // resolved pattern (>= max size); --payload-file: the file
    std::string payload_file;                  // --payload-file: each request is the file (size = file size)
    std::string payload_template_text;         // --payload-template as given
    PayloadTemplate tpl;                       // parsed: per request, {seq} and {conn} filled in
    Framing framing = Framing::Echo;
    int prefix_bytes = 4;
    bool verify = false;
    std::string json_path;
    std::string json_stream_path;
    int sources = 0;  // 0 = automatic
    std::vector<std::string> source_ips;
    std::uint64_t response_timeout_ms = 5000;
    std::uint64_t connect_timeout_ms = 3000;
    std::int64_t max_errors = -1;  // -1 = no threshold
    // --max-unanswered: unanswered requests allowed, as a fraction of the requests due (default 0.1%)
    // or as a count (max_unanswered_count >= 0).
    double max_unanswered_frac = 0.001;
    std::int64_t max_unanswered_count = -1;
    std::string max_unanswered_text = "0.1%";
    // Latency thresholds in ns (0 = none), on the headline latency (censored samples included).
    std::uint64_t max_p50_ns = 0, max_p99_ns = 0, max_p999_ns = 0, max_latency_ns = 0;
    std::uint64_t max_pause_ns = 0;  // --max-pause: on the p99 over connections of their longest wait (0 = none)
    std::string hgrm_path;  // --hgrm: HdrHistogram percentile distribution (.hgrm)
    std::string csv_path;   // --csv: one row per second
    std::string hdr_log_path;  // --hdr-log: HdrHistogram interval log, one histogram per second
    bool allow_remote = false;
    std::uint64_t requests = 0;  // 0 = unbounded (duration bound)
    double slow_delay_ms = 100.0;  // slowloris byte interval / slowread read interval
    std::uint32_t slow_read_bytes = 16;  // slowread: bytes per read, 0 = never read
    double drain = 2.0;  // max seconds to wait for outstanding replies at the end
    bool quiet = false;

    Mode mode = Mode::Pingpong;
    std::uint64_t depth = 1;   // pipeline D
    double rate = 0.0;         // rate R (msgs/s); with --stages the rate the first stage starts from
    std::vector<Stage> stages; // --stages: rate mode, piecewise-linear rate schedule
    std::string stages_text;
    bool duration_set = false; // --duration given (else, with --stages, the sum of the stages)
    std::uint64_t churn_k = 1; // churn K
    // pubsub: -c subscribers plus --publishers publisher connections.
    std::uint64_t publishers = 1;
    std::uint64_t rooms = 1;
    std::uint64_t subscriptions = 1;  // rooms each subscriber joins
    std::uint64_t messages = 0;       // per publisher, 0 = until --duration
    std::uint64_t window = 64;        // per publisher: messages not yet delivered to every subscriber
    std::string pubsub_flag;          // first pubsub-only flag given (rejected in other modes)

    // --protocol resp / http (options_protocol.cpp)
    Protocol protocol = Protocol::Raw;
    RespCommand resp_command = RespCommand::Set;
    std::uint32_t ratio_set = 1, ratio_get = 10;  // mixed: SET:GET, issued in this repeating order
    std::uint64_t key_range = 100000;             // keys key:0 .. key:<N-1>
    bool key_sequential = false;                  // --key-pattern sequential
    std::string http_path = "/";
    std::string host_header;                      // empty: "<--host>:<--port>"
    std::string resp_flag, http_flag;             // first resp-only / http-only flag given
    bool size_set = false, framing_set = false;   // given explicitly
    bool payload_set = false;
    bool ratio_given = false, command_given = false;

    // Derived, set by the process driver (per-process share).
    int proc_index = 0;
    std::uint64_t conn_base = 0;  // first global connection index of this process
    std::uint64_t total_conns = 0;  // connections over all processes (pubsub: subscribers + publishers)
    std::uint32_t max_size() const;
};

// Parses argv. On error returns false and sets err to a message saying what to change.
// Sets want_help when --help was given.
bool parse_options(int argc, char** argv, Options& o, std::string& err, bool& want_help);
void print_help(const char* argv0);
// Resolves payload pattern, -c max, defaults. Returns false with err on bad args.
bool finalize_options(Options& o, std::string& err);

// The target (options_target.cpp): --host H | [V6] | [V6]:PORT | unix:PATH, then resolve and check it.
bool set_host_flag(const std::string& val, Options& o, std::string& err);
bool resolve_target(Options& o, std::string& err);
std::string target_label(const Options& o);  // 127.0.0.1:7000, [::1]:7000, unix:/path
const char* target_family(const Options& o);  // ipv4, ipv6, unix

// --payload-file / --payload-template (options_payload.cpp): checks, reads the file. Returns true with
// done = true when the request bytes are set (no --payload pattern to build).
bool finalize_payload_source(Options& o, bool& done, std::string& err);

// --protocol and its flags (options_protocol.cpp).
bool is_protocol_flag(const std::string& flag);
bool set_protocol_flag(const std::string& flag, const std::string& val, Options& o, std::string& err);
bool finalize_protocol(Options& o, std::string& err);  // before --host is resolved (default Host header)
void print_protocol_help();

// Thresholds and result files (options_report.cpp).
bool is_report_flag(const std::string& flag);
bool set_report_flag(const std::string& flag, const std::string& val, Options& o, std::string& err);
void print_report_help();
bool parse_duration_ns(const std::string& s, std::uint64_t& ns);  // 2ms, 500us, 1.5s, 800ns

}  // namespace flood

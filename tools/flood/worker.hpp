// esockets-flood: one event-loop thread driving its share of the connections.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "histogram.hpp"
#include "http_parser.hpp"
#include "options.hpp"
#include "resp_parser.hpp"
#include "seq_check.hpp"
#include "stages.hpp"
#include "stats.hpp"

namespace flood {

std::uint64_t now_ns();
int classify_errno(int e, bool connecting);  // errno -> error class (Err)

// pubsub: one publisher's counters, written by its thread (published) and by the threads of the
// subscribers that read its messages (delivered); a cache line each.
struct alignas(64) PubCounters {
    std::atomic<std::uint64_t> published{0};  // messages fully written to the socket
    std::atomic<std::uint64_t> delivered{0};  // first arrivals at subscribers (duplicates excluded)
};

// pubsub: the layout every thread derives roles from (one process, see finalize_options).
// Connection g < subscribers is subscriber g, joining rooms g..g+K-1 mod R; connection
// subscribers + k is publisher k, publishing to room k mod R.
struct PubsubShared {
    std::uint64_t subscribers = 0, publishers = 0, rooms = 0, per_sub = 0;
    std::uint64_t per_room = 0;            // stream slots per room in a subscriber: ceil(publishers / rooms)
    std::vector<std::uint32_t> fanout;     // per publisher: subscribers of its room
    std::unique_ptr<PubCounters[]> pub;    // per publisher
    std::atomic<std::int64_t> subs_pending{0};   // SUBs not yet answered with OK SUB
    std::atomic<std::uint64_t> subscribed_ns{0};  // when the last OK SUB arrived
    std::atomic<std::uint64_t> pubs_active{0};    // publishers that may still publish
    std::atomic<std::uint64_t> pub_end_ns{0};     // when the last publisher finished
};

// State shared by the workers of one process.
struct Shared {
    explicit Shared(const Options& opts) : o(opts) {}
    const Options& o;
    sockaddr_storage target{};  // Options::target
    socklen_t target_len = 0;
    std::vector<sockaddr_in> sources;  // empty: let the kernel choose
    std::uint64_t t0 = 0, t_ramp_end = 0, t_warm_end = 0, t_end = 0;  // ns, CLOCK_MONOTONIC
    std::uint64_t proc_conns = 0;  // connections of this process
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> open{0}, peak{0};
    // With --procs: open connections and their peak over all processes (shared memory), so that
    // `established` is the simultaneous peak, not the sum of per-process peaks. Null: one process.
    std::atomic<std::uint64_t>* all_open = nullptr;
    std::atomic<std::uint64_t>* all_peak = nullptr;
    PubsubShared ps;
    int phase_at(std::uint64_t t) const {
        return t < t_ramp_end ? kRamp : t < t_warm_end ? kWarmup : t < t_end ? kSteady : kDrain;
    }
};

// Counters the monitor thread reads while the worker runs.
struct Live {
    std::atomic<std::uint64_t> msgs{0}, sent{0}, errs{0}, bytes_in{0}, bytes_out{0};
    std::atomic<std::uint64_t> waiting{0};  // requests due and not answered yet (a gauge)
    std::atomic<bool> done{false};
    std::mutex mu;
    Histogram interval;  // latency of replies since the monitor last took it
};

struct Pending {
    std::uint64_t intended;  // ns
    std::uint64_t sent;      // ns, 0 = not yet written
    std::uint32_t size;      // payload size (resp: SET value size, 0 = GET)
    std::uint32_t wire;      // bytes on the wire
    std::uint64_t seq;       // --verify: the connection's sequence number stamped into the payload; resp: the key
};

// --verify, per connection: what was sent and which replies came back (reset on reconnect).
struct VerifyState {
    std::uint64_t tx_next = 0;     // sequence number of the next request issued
    std::uint64_t tx_written = 0;  // requests fully written (numbers 0..tx_written-1)
    SeqTracker rx;                 // sequence numbers of the replies
    unsigned char stamp[kStampChars] = {};  // first bytes of the reply being read
    // Replies written but not answered yet (outstanding, including the ones a later reply
    // overtook): lost if still so at the end.
    std::uint64_t unanswered() const { return rx.missing() + (tx_written - rx.next()); }
    void reset() {
        tx_next = tx_written = 0;
        rx.reset();
    }
};

// pubsub, per connection.
struct PubsubConn {
    bool publisher = false;
    bool opened = false;    // was established once (a pubsub connection is not re-opened)
    bool finished = false;  // publisher: publishes no more; subscriber: its connection was lost
    std::uint32_t id = 0;   // subscriber or publisher index
    std::string out;        // SUB / PUB lines not yet written
    std::size_t out_off = 0;
    std::string in;         // a partial line
    // publisher
    std::uint64_t formatted = 0;     // PUB lines made (the next sequence number)
    std::uint64_t written = 0;       // PUB bytes written
    std::uint32_t msg_len = 0;       // every PUB line of this publisher has this length
    std::uint32_t room = 0;
    // subscriber
    std::uint32_t confirmed = 0;          // rooms answered with OK SUB
    std::vector<std::uint8_t> joined;     // per room slot: OK SUB seen
    std::vector<SeqTracker> streams;      // per (room slot, publisher of that room)
};

struct Conn {
    int fd = -1;
    std::uint8_t state = 0;
    bool want_write = false, bad = false, to_flagged = false, shut = false, reply_done = false, in_ready = false;
    bool flush_due = false;  // replies completed in the current read: refill once after it, not per reply
    bool failing = false;    // the last connect attempt failed: retries are not counted as new errors
    bool reopen_counts = false;  // HTTP: this connect re-opens after the server's close (http.reopened)
    bool waited = false;     // a wait for the server ended in the measured phases: `pause` holds the longest
    std::uint32_t gen = 0;
    std::uint32_t sent_n = 0;  // entries from head fully written
    std::uint32_t tx_off = 0;  // bytes written of entry head+sent_n
    std::uint32_t rx_off = 0, rx_hdr = 0, rx_len = 0;
    std::uint32_t head = 0;
    std::uint32_t done = 0;  // replies on this connection (churn)
    std::uint32_t fh_size = 0;  // firehose: size of the request being written
    std::uint64_t t_start = 0;  // connect start, then episode start (established)
    // Client-visible pause (modes with replies owed): the connection owes a reply from the first byte of a
    // request written until every request written is answered. Kept across re-connects of the slot.
    std::uint64_t wait_from = 0;  // ns: the last receive, or the send that made it owe a reply; 0 = owes nothing
    std::uint64_t pause = 0;      // ns: its longest wait with a reply owed and nothing received
    std::vector<Pending> q;
    std::size_t queued() const { return q.size() - head; }
};

struct PhaseCounters {
    std::uint64_t msgs = 0, sent = 0, bytes_in = 0, bytes_out = 0;
    std::uint64_t err[kErrCount] = {};
    Histogram lat, svc, lag;
};

class Worker {
public:
    Worker(Shared& sh, int tid, std::uint64_t first_global, std::uint64_t nconns, std::uint64_t req_share,
           double rate_share, double connect_rate_share, std::uint64_t seed);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    void run();
    void collect(Result& r) const;  // after run() returned
    // --stages: this thread's share of the rate schedule (before run()).
    void set_schedule(const RateSchedule& s, std::size_t nstages);
    Live live;

private:
    enum State : std::uint8_t { kIdle, kQueued, kConnecting, kOpen, kRetry, kDead };
    enum TimerKind : std::uint8_t { kTRetry, kTSlow, kTKeepalive };
    struct Timer {
        std::uint64_t at;
        std::uint32_t conn, gen;
        std::uint8_t kind;
        bool operator>(const Timer& o) const { return at > o.at; }
    };

    // connections
    void start_connect(std::uint32_t i);
    void service_connects();  // start queued connects (rate permitting), then handle finished ones
    bool connects_pending() const {
        return connecting_ > 0 || (!draining_ && connect_q_head_ < connect_q_.size());
    }
    void on_connect_event(std::uint32_t i, std::uint32_t ev);
    void on_connected(Conn& c, std::uint32_t i);
    void on_event(std::uint32_t i, std::uint32_t ev);
    void close_conn(Conn& c, bool rst = false);
    void fail_conn(Conn& c, std::uint32_t i, int err_class, const std::string& detail, bool reconnect_now = false);
    void server_closed(Conn& c, std::uint32_t i, bool rst, int err_no);
    void requeue(std::uint32_t i, std::uint64_t delay_ns);
    // I/O
    void fill(Conn& c);  // closed-loop modes: top up the pipeline
    void flush(Conn& c, std::uint32_t i);
    void advance(Conn& c, std::size_t w);
    std::size_t build(Conn& c, unsigned char* out, std::size_t cap);
    void do_read(Conn& c, std::uint32_t i, std::size_t limit);
    void consume(Conn& c, std::uint32_t i, const unsigned char* p, std::size_t n);
    // A reply ended: pops the head request; err_class >= 0 counts that error instead of a message.
    void complete(Conn& c, std::uint32_t i, int err_class = -1, const std::string& detail = {});
    void on_timer(const Timer& t);
    void scan_timeouts();
    void push_timer(std::uint64_t at, std::uint32_t i, TimerKind k);

    std::uint32_t next_size();
    std::uint32_t wire_len(std::uint32_t s) const;
    std::uint32_t inflight_limit() const;
    bool can_issue() const;
    void issue(Conn& c, std::uint64_t intended);
    void error(int cls, std::uint32_t i, const std::string& detail);
    void record_reply(std::uint64_t now, const Pending& p);
    void record_latency(std::uint64_t now, const Pending& p);  // one latency sample, no msg
    // A request that was due and will not be answered (its connection died, or the run ended):
    // kept until the end of the run, then recorded as a censored latency (end - intended start).
    void strand(const Pending& p, bool dead_connection);
    void strand_queue(Conn& c, bool dead_connection);
    bool tracks_unanswered() const;
    std::uint64_t start_of(const Pending& p) const;
    void note_reply(std::uint64_t now);  // stall tracking: a reply ended a gap
    void end_wait(Conn& c);  // pause tracking: c's wait for the server ends at now_ (a receive, or the close)
    void pop_head(Conn& c);
    // conn_g: the request's global connection index (--payload-template {conn}).
    void copy_wire(const Pending& pe, std::uint64_t conn_g, std::uint32_t off, unsigned char* dst, std::uint32_t len) const;
    void mark_ready(Conn& c, std::uint32_t i);
    std::uint32_t index_of(const Conn& c) const { return static_cast<std::uint32_t>(&c - conns_.data()); }
    // --verify (worker_io.cpp)
    void consume_verify(Conn& c, std::uint32_t i, const unsigned char* p, std::size_t n);
    void absorb(Conn& c, VerifyState& v, const unsigned char* p, std::size_t n);
    void finish_reply(Conn& c, std::uint32_t i);
    void bad_reply(Conn& c, std::uint32_t i);
    void reset_rx(Conn& c);
    // --protocol resp / http (worker_proto.cpp)
    void proto_setup();
    void proto_request(Conn& c, Pending& p);  // command, key, size and wire length of a new request
    void proto_copy(const Pending& pe, std::uint32_t off, unsigned char* dst, std::uint32_t len) const;
    void proto_consume(Conn& c, std::uint32_t i, const unsigned char* p, std::size_t n);
    bool proto_eof(Conn& c, std::uint32_t i);  // the server closed: true when that was not an error
    // http: reconnect, keeping the unanswered requests; after_close: counted in http.reopened
    void proto_reopen(Conn& c, std::uint32_t i, bool after_close);
    void proto_collect(Result& r) const;
    // pubsub (worker_pubsub.cpp)
    void ps_setup();
    void ps_open(Conn& c, std::uint32_t i);
    void ps_flush(Conn& c, std::uint32_t i);
    void ps_format(PubsubConn& ps);
    void ps_consume(Conn& c, std::uint32_t i, const unsigned char* p, std::size_t n);
    void ps_line(std::uint32_t i, const char* p, std::size_t n);
    void ps_message(std::uint32_t i, PubsubConn& ps, const char* p, std::size_t n);
    void ps_finish(PubsubConn& ps);
    void ps_lost_connection(std::uint32_t i);
    bool ps_tick();  // true while a local publisher waits for another thread
    bool ps_done(std::uint64_t drain_deadline) const;
    void ps_collect(Result& r) const;
    void ps_flush_delivered();

    Shared& sh_;
    const Options& o_;
    int tid_;
    int ep_ = -1;
    int cep_ = -1;  // connects in progress live in their own epoll set (registered in ep_), see service_connects()
    std::uint64_t connecting_ = 0;  // connections in kConnecting
    std::uint64_t last_connect_service_ = 0;  // ns, last service_connects()
    std::uint64_t first_global_;
    std::vector<Conn> conns_;
    std::vector<std::uint32_t> connect_q_, ready_, ready_work_;
    std::size_t connect_q_head_ = 0;
    std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
    std::vector<unsigned char> rbuf_, wbuf_;
    std::mt19937_64 rng_;
    std::vector<std::uint32_t> size_cdf_;  // weighted list: cumulative weights
    std::uint64_t now_ = 0;
    bool draining_ = false;
    bool bounded_;
    std::uint64_t req_share_, issued_ = 0, outstanding_ = 0;
    double rate_share_, connect_interval_ns_ = 0;
    // --stages (worker_stages.cpp): arrivals at the times the schedule's N(t) reaches units_, units_
    // growing by 1 (or an exponential draw with --poisson) per request; counters per stage.
    struct StageCounters {
        std::uint64_t sent = 0, answered = 0, received = 0;  // sent/answered by intended time, received by now
        Histogram lat;
    };
    RateSchedule sched_;
    double units_ = 0;
    std::vector<StageCounters> stage_;
    bool rate_on() const { return rate_share_ > 0 || !sched_.empty(); }
    std::uint64_t scheduled_arrival() const;  // ns; UINT64_MAX when the rate stays 0
    std::size_t stage_of(std::uint64_t t) const;
    void stage_reply(std::uint64_t now, std::uint64_t intended, std::uint64_t lat);
    void stage_collect(Result& r) const;
    std::uint64_t next_connect_ = 0, next_arrival_ = 0, next_tick_ = 0, last_scan_ = 0;
    std::uint64_t rr_ = 0;
    std::uint64_t open_ = 0, established_ = 0, established_ok_ = 0, connect_fail_ = 0;
    std::uint64_t last_established_ns_ = 0;
    std::uint64_t dispatched_ = 0, dropped_ = 0, abandoned_ = 0, churn_cycles_ = 0;
    std::uint64_t fin_ = 0, rst_ = 0, reply_complete_ = 0, still_open_ = 0, rst_sent_ = 0;
    // Requests that were due and not answered: start times (ns), censored at the end of the run.
    std::vector<std::uint64_t> stranded_;
    std::uint64_t unanswered_dead_ = 0, unanswered_end_ = 0, late_replies_ = 0, failed_conns_ = 0;
    Histogram censored_h_;
    // Stalls: the longest time with requests outstanding and no reply on this thread.
    std::uint64_t gap_from_ = 0;  // last reply, or when the first request became outstanding
    std::uint64_t stall_len_ = 0, stall_at_ = 0, stall_waited_ = 0;
    std::uint64_t cpu0_ = 0, cpu1_ = 0, wall0_ = 0, wall1_ = 0;  // this thread's CPU and wall time (ns)
    PhaseCounters ph_[kPhaseCount];
    Histogram connect_h_, close_h_, loop_lag_h_, loop_lag_steady_h_, dispatch_lag_h_, ivl_;
    FirstError first_[kErrCount];
    std::uint64_t ivl_flush_ = 0;
    // --verify
    std::vector<VerifyState> vs_;  // per connection, only with --verify in a mode with replies
    std::uint64_t lost_ = 0, duplicated_ = 0, reordered_ = 0;
    std::uint64_t fh_unacked_ = 0;  // firehose: requests written whose echo has not come back
    // --protocol resp / http
    std::vector<RespReplyParser> resp_;  // per connection
    std::vector<HttpReplyParser> http_;  // per connection
    std::vector<std::uint64_t> tpl_next_;  // --payload-template: requests issued per connection ({seq})
    mutable std::string tpl_buf_;          // --payload-template: the request being copied
    std::vector<std::uint64_t> key_next_;  // resp --key-pattern sequential: requests issued per connection
    std::string http_req_;               // the GET request
    std::uint64_t mix_pos_ = 0;          // resp mixed: position in the SET:GET cycle
    std::uint64_t resp_replies_[2] = {}, resp_hits_ = 0, resp_misses_ = 0, resp_err_replies_ = 0;
    std::uint64_t http_status_[6] = {}, http_chunked_ = 0, http_reopened_ = 0, http_idle_closed_ = 0;
    // pubsub
    std::vector<PubsubConn> ps_;            // per connection, pubsub mode only
    std::vector<std::uint32_t> ps_pubs_;    // local indices of this thread's publishers
    std::uint64_t ps_dup_ = 0, ps_reordered_ = 0, ps_delivered_ = 0, ps_last_delivery_ = 0;
    std::uint32_t ps_batch_pub_ = UINT32_MAX;  // deliveries counted locally before one atomic add
    std::uint64_t ps_batch_n_ = 0;
};

}  // namespace flood

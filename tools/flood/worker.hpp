// esockets-flood: one event-loop thread driving its share of the connections.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "histogram.hpp"
#include "options.hpp"
#include "stats.hpp"

namespace flood {

std::uint64_t now_ns();

// State shared by the workers of one process.
struct Shared {
    explicit Shared(const Options& opts) : o(opts) {}
    const Options& o;
    sockaddr_in target{};
    std::vector<sockaddr_in> sources;  // empty: let the kernel choose
    std::uint64_t t0 = 0, t_ramp_end = 0, t_warm_end = 0, t_end = 0;  // ns, CLOCK_MONOTONIC
    std::uint64_t proc_conns = 0;  // connections of this process
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> open{0}, peak{0};
    int phase_at(std::uint64_t t) const {
        return t < t_ramp_end ? kRamp : t < t_warm_end ? kWarmup : t < t_end ? kSteady : kDrain;
    }
};

// Counters the monitor thread reads while the worker runs.
struct Live {
    std::atomic<std::uint64_t> msgs{0}, sent{0}, errs{0}, bytes_in{0}, bytes_out{0};
    std::atomic<bool> done{false};
    std::mutex mu;
    Histogram interval;  // latency of replies since the monitor last took it
};

struct Pending {
    std::uint64_t intended;  // ns
    std::uint64_t sent;      // ns, 0 = not yet written
    std::uint32_t size;
};

struct Conn {
    int fd = -1;
    std::uint8_t state = 0;
    bool want_write = false, bad = false, to_flagged = false, shut = false, reply_done = false, in_ready = false;
    bool flush_due = false;  // replies completed in the current read: refill once after it, not per reply
    std::uint32_t gen = 0;
    std::uint32_t sent_n = 0;  // entries from head fully written
    std::uint32_t tx_off = 0;  // bytes written of entry head+sent_n
    std::uint32_t rx_off = 0, rx_hdr = 0, rx_len = 0;
    std::uint32_t head = 0;
    std::uint32_t done = 0;  // replies on this connection (churn)
    std::uint32_t fh_size = 0;  // firehose: size of the request being written
    std::uint64_t t_start = 0;  // connect start, then episode start (established)
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
    void complete(Conn& c, std::uint32_t i);
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
    void pop_head(Conn& c);
    void copy_wire(std::uint32_t s, std::uint32_t off, unsigned char* dst, std::uint32_t len) const;
    void mark_ready(Conn& c, std::uint32_t i);

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
    std::uint64_t next_connect_ = 0, next_arrival_ = 0, next_tick_ = 0, last_scan_ = 0;
    std::uint64_t rr_ = 0;
    std::uint64_t open_ = 0, established_ = 0, established_ok_ = 0, connect_fail_ = 0;
    std::uint64_t last_established_ns_ = 0;
    std::uint64_t dispatched_ = 0, dropped_ = 0, abandoned_ = 0, churn_cycles_ = 0;
    std::uint64_t fin_ = 0, rst_ = 0, reply_complete_ = 0, still_open_ = 0, rst_sent_ = 0;
    PhaseCounters ph_[kPhaseCount];
    Histogram connect_h_, close_h_, loop_lag_h_, loop_lag_steady_h_, dispatch_lag_h_, ivl_;
    FirstError first_[kErrCount];
    std::uint64_t ivl_flush_ = 0;
};

}  // namespace flood

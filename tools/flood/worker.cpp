// esockets-flood: event loop, connection management and timers.
#include "worker.hpp"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>

namespace flood {

std::uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

namespace {
constexpr std::uint64_t kMs = 1'000'000;
constexpr std::uint64_t kTickNs = 10 * kMs;
constexpr std::size_t kMaxQueue = 65536;  // rate mode: per-connection backlog cap
constexpr std::uint64_t kConnectEpollTag = UINT64_MAX;  // ep_ event: cep_ has finished connects
constexpr int kTrafficSlice = 64;   // at most this many traffic events between two service_connects() calls
constexpr std::uint64_t kConnectServiceNs = 1'000'000;  // ... and at most this much time
}  // namespace

Worker::Worker(Shared& sh, int tid, std::uint64_t first_global, std::uint64_t nconns, std::uint64_t req_share,
               double rate_share, double connect_rate_share, std::uint64_t seed)
    : sh_(sh), o_(sh.o), tid_(tid), first_global_(first_global), conns_(nconns), rbuf_(256 * 1024),
      wbuf_(64 * 1024), rng_(seed), bounded_(sh.o.requests != 0), req_share_(req_share), rate_share_(rate_share) {
    if (connect_rate_share > 0) connect_interval_ns_ = 1e9 / connect_rate_share;
    std::uint32_t cum = 0;
    for (auto& s : o_.size_list) size_cdf_.push_back(cum += s.weight);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    cep_ = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;  // level-triggered: readable while a connect completion is waiting in cep_
    ev.data.u64 = kConnectEpollTag;
    epoll_ctl(ep_, EPOLL_CTL_ADD, cep_, &ev);
    if (o_.verify && has_replies(o_.mode)) vs_.resize(nconns);
    if (o_.mode == Mode::Pubsub) ps_setup();
    if (o_.protocol != Protocol::Raw) proto_setup();
}

Worker::~Worker() {
    for (auto& c : conns_)
        if (c.fd >= 0) ::close(c.fd);
    if (ep_ >= 0) ::close(ep_);
    if (cep_ >= 0) ::close(cep_);
}

std::uint32_t Worker::next_size() {
    if (!size_cdf_.empty()) {
        std::uint32_t r = static_cast<std::uint32_t>(rng_() % size_cdf_.back());
        auto it = std::upper_bound(size_cdf_.begin(), size_cdf_.end(), r);
        return o_.size_list[static_cast<std::size_t>(it - size_cdf_.begin())].size;
    }
    if (o_.size_min == o_.size_max) return o_.size_min;
    return o_.size_min + static_cast<std::uint32_t>(rng_() % (o_.size_max - o_.size_min + 1));
}

std::uint32_t Worker::wire_len(std::uint32_t s) const {
    switch (o_.framing) {
    case Framing::Echo: return s;
    case Framing::Line: return s + 1;
    case Framing::LengthPrefixed: return s + static_cast<std::uint32_t>(o_.prefix_bytes);
    }
    return s;
}

std::uint32_t Worker::inflight_limit() const {
    switch (o_.mode) {
    case Mode::Pipeline: return static_cast<std::uint32_t>(o_.depth);
    case Mode::Slowread: return 256;
    default: return 1;
    }
}

bool Worker::can_issue() const { return !draining_ && (!bounded_ || issued_ < req_share_); }

void Worker::error(int cls, std::uint32_t i, const std::string& detail) {
    ph_[sh_.phase_at(now_)].err[cls]++;
    live.errs.fetch_add(1, std::memory_order_relaxed);
    if (!first_[cls].set) {
        first_[cls].set = true;
        first_[cls].t = static_cast<double>(now_ - sh_.t0) / 1e9;
        first_[cls].conn = first_global_ + i;
        first_[cls].detail = detail;
    }
}

void Worker::push_timer(std::uint64_t at, std::uint32_t i, TimerKind k) { timers_.push({at, i, conns_[i].gen, k}); }

void Worker::requeue(std::uint32_t i, std::uint64_t delay_ns) {
    Conn& c = conns_[i];
    if (delay_ns == 0) {
        c.state = kQueued;
        connect_q_.push_back(i);
    } else {
        c.state = kRetry;
        push_timer(now_ + delay_ns, i, kTRetry);
    }
}

void Worker::close_conn(Conn& c, bool rst) {
    if (c.fd >= 0) {
        if (rst) {
            linger lg{1, 0};
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        ::close(c.fd);  // also removes it from the epoll set
        c.fd = -1;
    }
    if (c.wait_from) {  // a wait the close ends (the connection died, or the run ended) is a pause too
        end_wait(c);
        c.wait_from = 0;
    }
    if (c.state == kOpen) {
        --open_;
        sh_.open.fetch_sub(1, std::memory_order_relaxed);
        if (sh_.all_open) sh_.all_open->fetch_sub(1, std::memory_order_relaxed);
    } else if (c.state == kConnecting) {
        --connecting_;
    }
    // Requests still queued on a dead connection are abandoned (rate mode re-issues nothing).
    if (c.queued()) {
        outstanding_ -= c.queued();
        abandoned_ += c.queued();
    }
    if (!vs_.empty()) {  // a new connection starts its sequence over
        VerifyState& v = vs_[index_of(c)];
        if (o_.mode == Mode::Firehose) {
            fh_unacked_ -= v.unanswered();
        } else {  // requests a later reply overtook were outstanding outside c.q
            outstanding_ -= v.rx.missing();
            abandoned_ += v.rx.missing();
        }
        v.reset();
    }
    if (!resp_.empty()) resp_[index_of(c)].reset();
    if (!http_.empty()) http_[index_of(c)].reset();
    c.q.clear();
    c.head = c.sent_n = c.tx_off = c.rx_off = c.rx_hdr = c.rx_len = 0;
    c.want_write = c.bad = c.to_flagged = c.shut = c.reply_done = false;  // in_ready stays: the entry is harmless
    c.done = c.fh_size = 0;
    c.state = kIdle;
    ++c.gen;
}

void Worker::fail_conn(Conn& c, std::uint32_t i, int err_class, const std::string& detail, bool reconnect_now) {
    if (c.state == kConnecting) {
        // A connection that keeps failing to connect is one error (and one failed connection), however
        // many times it is retried (every 200 ms): the totals do not grow with the run's length.
        ++connect_fail_;
        if (!c.failing) {
            c.failing = true;
            ++failed_conns_;
            error(err_class, i, detail);
        }
    } else {
        error(err_class, i, detail);
    }
    if (c.state == kOpen && tracks_unanswered()) strand_queue(c, true);
    close_conn(c);
    if (o_.mode == Mode::Pubsub && ps_[i].opened) {
        // A pubsub connection is not re-opened: its subscriptions and sequence numbers are gone.
        ps_lost_connection(i);
        c.state = kDead;
        return;
    }
    if (!draining_) requeue(i, reconnect_now ? 0 : 200 * kMs);
}

int classify_errno(int e, bool connecting) {
    switch (e) {
    case ECONNREFUSED: return kEconnrefused;
    case ETIMEDOUT: return connecting ? kConnectTimeout : kEtimedout;
    case EADDRNOTAVAIL:
    case EADDRINUSE: return kEaddrnotavail;
    case EMFILE:
    case ENFILE: return kEmfile;
    case ENOBUFS:
    case ENOMEM: return kEnobufs;
    case ECONNRESET: return kEconnreset;
    case EPIPE: return kEpipe;
    default: return kOther;
    }
}


void Worker::server_closed(Conn& c, std::uint32_t i, bool rst, int err_no) {
    const bool hostile = is_hostile(o_.mode);
    if (hostile) {
        (rst ? rst_ : fin_)++;
        close_h_.record(now_ - c.t_start);
        close_conn(c);
        if (!draining_ && can_issue()) requeue(i, 0);
        return;
    }
    if (!rst && o_.protocol != Protocol::Raw && proto_eof(c, i)) return;
    if (rst) {
        fail_conn(c, i, classify_errno(err_no ? err_no : ECONNRESET, false),
                  std::string("connection reset: ") + std::strerror(err_no ? err_no : ECONNRESET));
    } else {
        fail_conn(c, i, kUnexpectedEof, "server closed the connection (EOF)");
    }
}

void Worker::on_event(std::uint32_t i, std::uint32_t ev) {
    Conn& c = conns_[i];
    // Connects complete via cep_ (on_connect_event); a stale traffic event must not complete one.
    if (c.fd < 0 || c.state != kOpen) return;
    if (ev & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        server_closed(c, i, true, err ? err : ECONNRESET);
        return;
    }
    const bool slowread = o_.mode == Mode::Slowread;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
        if (!slowread) {
            do_read(c, i, SIZE_MAX);
            if (c.fd < 0 || c.state != kOpen) return;
        } else if (ev & (EPOLLRDHUP | EPOLLHUP)) {
            server_closed(c, i, false, 0);  // FIN seen without reading the data in front of it
            return;
        }
    }
    if ((ev & EPOLLOUT) && c.want_write) flush(c, i);
}

void Worker::on_timer(const Timer& t) {
    Conn& c = conns_[t.conn];
    if (t.gen != c.gen) return;
    switch (t.kind) {
    case kTRetry:
        if (c.state == kRetry && !draining_) {
            c.state = kQueued;
            connect_q_.push_back(t.conn);
        }
        break;
    case kTKeepalive:
        if (c.state == kOpen && !draining_) {
            char b = 'k';
            ssize_t w = ::send(c.fd, &b, 1, MSG_NOSIGNAL);
            if (w == 1) {
                ph_[sh_.phase_at(now_)].bytes_out++;
            } else if (errno != EAGAIN) {
                server_closed(c, t.conn, true, errno);
                break;
            }
            push_timer(now_ + static_cast<std::uint64_t>(o_.keepalive * 1e9), t.conn, kTKeepalive);
        }
        break;
    case kTSlow:
        if (c.state != kOpen) break;
        if (o_.mode == Mode::Slowloris) {
            if (c.queued() == 0 && can_issue()) issue(c, now_);
            flush(c, t.conn);  // build() writes a single byte in slowloris mode
        } else {
            do_read(c, t.conn, o_.slow_read_bytes);
        }
        if (c.state == kOpen) push_timer(now_ + static_cast<std::uint64_t>(o_.slow_delay_ms * 1e6), t.conn, kTSlow);
        break;
    }
}

void Worker::scan_timeouts() {
    const std::uint64_t rt = o_.response_timeout_ms * kMs, ct = o_.connect_timeout_ms * kMs;
    for (std::uint32_t i = 0; i < conns_.size(); ++i) {
        Conn& c = conns_[i];
        if (c.state == kConnecting && now_ - c.t_start > ct) {
            fail_conn(c, i, kConnectTimeout, "no connect completion within --connect-timeout");
        } else if (c.state == kOpen && !c.to_flagged && c.queued() && c.sent_n > 0) {  // head fully written
            const Pending& p = c.q[c.head];
            if (p.sent && now_ - p.sent > rt) {
                c.to_flagged = true;
                error(kResponseTimeout, i, "no complete reply within --response-timeout");
            }
        }
    }
}

void Worker::run() {
    now_ = now_ns();
    wall0_ = now_;
    {
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        cpu0_ = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
    }
    for (std::uint32_t i = 0; i < conns_.size(); ++i) {
        conns_[i].state = kQueued;
        connect_q_.push_back(i);
    }
    next_connect_ = sh_.t0;
    next_tick_ = now_ + kTickNs;
    last_scan_ = now_;
    ivl_flush_ = now_;
    if (o_.mode == Mode::Rate && rate_on()) {
        // Stagger threads so their arrivals interleave evenly.
        // Stagger every thread of every process (not only the threads of one process: P processes would
        // otherwise send P-fold bursts).
        const double k = static_cast<double>(o_.proc_index * std::max(1, o_.threads) + tid_);
        const double n = static_cast<double>(std::max(1, o_.procs) * std::max(1, o_.threads));
        if (sched_.empty()) next_arrival_ = sh_.t0 + static_cast<std::uint64_t>(1e9 / rate_share_ * k / n);
        units_ = (k + 0.5) / n;  // --stages: half a unit in, so no stage gets a systematic extra arrival
        if (!sched_.empty()) next_arrival_ = scheduled_arrival();
    }
    std::vector<epoll_event> evs(512);
    std::uniform_real_distribution<double> uni(0.0, 1.0);
    std::uint64_t drain_deadline = 0;
    while (!sh_.stop.load(std::memory_order_relaxed)) {
        now_ = now_ns();
        if (!draining_ && now_ >= sh_.t_end) {
            draining_ = true;
            drain_deadline = now_ + static_cast<std::uint64_t>(o_.drain * 1e9);
            // Requests queued on connections that are not up will never be sent: they were due, so they
            // are unanswered (censored latencies at the end), not silently abandoned.
            for (auto& c : conns_)
                if (c.state != kOpen && c.state != kConnecting && c.queued()) {
                    if (tracks_unanswered()) {
                        strand_queue(c, true);
                    } else {
                        outstanding_ -= c.queued();
                        abandoned_ += c.queued();
                    }
                    c.q.clear();
                    c.head = 0;
                    if (!vs_.empty()) vs_[index_of(c)].reset();
                }
        }
        const bool closed_loop = o_.mode == Mode::Pingpong || o_.mode == Mode::Pipeline || o_.mode == Mode::Rate ||
                                 o_.mode == Mode::Churn;
        // --verify firehose: the echoes of what was written are awaited too.
        const bool echoes_due = o_.mode == Mode::Firehose && fh_unacked_ > 0;
        if (o_.mode == Mode::Pubsub) {
            if (ps_done(drain_deadline)) break;
        } else if (draining_) {
            if ((!closed_loop && !echoes_due) || (closed_loop && outstanding_ == 0) || now_ >= drain_deadline) break;
        } else if (bounded_ && issued_ >= req_share_ && outstanding_ == 0 && !echoes_due && o_.mode != Mode::Idle &&
                   o_.mode != Mode::Storm) {
            break;  // count bound reached and every reply is in
        } else if (o_.mode == Mode::Storm && sh_.peak.load(std::memory_order_relaxed) >= sh_.proc_conns) {
            break;  // all connections of this process are up
        }
        // Connection setup first, paced by --connect-rate / --ramp.
        if (connects_pending()) service_connects();
        // pubsub: publishers that wait for subscriptions or for deliveries on other threads.
        const bool ps_waiting = o_.mode == Mode::Pubsub && ps_tick();
        // Open-loop arrivals (rate mode).
        if (o_.mode == Mode::Rate && rate_on()) {
            int n = 0;
            while (can_issue() && next_arrival_ <= now_ && n++ < 4096) {
                const std::uint64_t intended = next_arrival_;
                dispatch_lag_h_.record(now_ - intended);
                const double step = o_.poisson ? -std::log(1.0 - uni(rng_)) : 1.0;
                if (sched_.empty()) next_arrival_ += static_cast<std::uint64_t>(step * 1e9 / rate_share_);
                else {
                    units_ += step;
                    next_arrival_ = scheduled_arrival();
                    ++stage_[stage_of(intended)].sent;
                }
                ++dispatched_;
                // Prefer an open connection, round robin.
                std::uint32_t pick = static_cast<std::uint32_t>(rr_ % conns_.size());
                for (std::size_t k = 0; k < std::min<std::size_t>(16, conns_.size()); ++k) {
                    std::uint32_t cand = static_cast<std::uint32_t>((rr_ + k) % conns_.size());
                    if (conns_[cand].state == kOpen) {
                        pick = cand;
                        rr_ += k;
                        break;
                    }
                }
                ++rr_;
                Conn& c = conns_[pick];
                if (c.queued() >= kMaxQueue) {
                    ++dropped_;
                    ++issued_;
                    continue;
                }
                issue(c, intended);
                if (c.state == kOpen) flush(c, pick);
            }
        }
        // Timers.
        while (!timers_.empty() && timers_.top().at <= now_) {
            Timer t = timers_.top();
            timers_.pop();
            on_timer(t);
        }
        if (now_ >= next_tick_) {
            loop_lag_h_.record(now_ - next_tick_);
            live.waiting.store(outstanding_ + stranded_.size(), std::memory_order_relaxed);
            // Steady-state lag (after this thread's initial connection burst) decides validity.
            if (sh_.phase_at(now_) == kSteady && (last_established_ns_ || connect_q_.empty()))
                loop_lag_steady_h_.record(now_ - next_tick_);
            next_tick_ += kTickNs;
            if (next_tick_ <= now_) next_tick_ = now_ + kTickNs;
            if (now_ - last_scan_ >= 100 * kMs) {
                last_scan_ = now_;
                scan_timeouts();
            }
            if (now_ - ivl_flush_ >= 100 * kMs && ivl_.count()) {
                ivl_flush_ = now_;
                std::lock_guard<std::mutex> lk(live.mu);
                live.interval.merge(ivl_);
                ivl_.reset();
            }
        }
        // Connections that hit their per-call I/O cap get another turn (edge-triggered epoll).
        if (!ready_.empty()) {
            ready_work_.swap(ready_);
            int slice = 0;
            for (std::uint32_t i : ready_work_) {
                if (connects_pending() && (++slice % kTrafficSlice == 0 || now_ - last_connect_service_ >= kConnectServiceNs))
                    service_connects();
                conns_[i].in_ready = false;
                on_event(i, EPOLLIN | EPOLLOUT);
            }
            ready_work_.clear();
        }
        // Sleep until the next deadline.
        std::uint64_t until = ready_.empty() ? next_tick_ : now_;
        if (!timers_.empty()) until = std::min(until, timers_.top().at);
        if (o_.mode == Mode::Rate && can_issue()) until = std::min(until, next_arrival_);
        if (connect_q_head_ < connect_q_.size() && !draining_)
            until = std::min(until, connect_interval_ns_ > 0 ? next_connect_ : now_);
        if (!draining_) until = std::min(until, sh_.t_end);
        if (ps_waiting) until = std::min(until, now_ + 200'000);  // poll what other threads deliver
        now_ = now_ns();
        std::uint64_t wait = until > now_ ? until - now_ : 0;
        timespec ts{static_cast<time_t>(wait / 1'000'000'000ull), static_cast<long>(wait % 1'000'000'000ull)};
        int n = epoll_pwait2(ep_, evs.data(), static_cast<int>(evs.size()), &ts, nullptr);
        if (n < 0 && errno == ENOSYS) {
            n = epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), static_cast<int>((wait + kMs - 1) / kMs));
        }
        now_ = now_ns();
        int slice = 0;
        for (int k = 0; k < n; ++k) {
            const epoll_event& e = evs[static_cast<std::size_t>(k)];
            if (e.data.u64 == kConnectEpollTag) {
                service_connects();
                continue;
            }
            if (connects_pending() && (++slice % kTrafficSlice == 0 || now_ - last_connect_service_ >= kConnectServiceNs))
                service_connects();
            on_event(static_cast<std::uint32_t>(e.data.u64), e.events);
        }
    }
    now_ = now_ns();
    if (o_.mode == Mode::Pubsub) ps_flush_delivered();
    for (std::uint32_t i = 0; i < conns_.size(); ++i) {
        Conn& c = conns_[i];
        if (c.state == kOpen && is_hostile(o_.mode)) {
            ++still_open_;
            close_h_.record(now_ - c.t_start);  // lower bound: still open at the end
        }
        // --verify: written requests still unanswered after the drain are lost (not abandoned).
        const std::uint64_t lost = !vs_.empty() && c.state == kOpen && counts_lost(o_.mode) ? vs_[i].unanswered() : 0;
        const std::uint64_t overtaken = !vs_.empty() && o_.mode != Mode::Firehose ? vs_[i].rx.missing() : 0;
        // Requests still waiting when the run ends (the drain is over) were due: unanswered, censored.
        if (tracks_unanswered() && c.queued()) strand_queue(c, false);
        close_conn(c);
        if (lost) {
            lost_ += lost;
            if (o_.mode != Mode::Firehose) abandoned_ -= std::min(abandoned_, overtaken);  // close_conn counted them
        }
    }
    // Stall still going on at the end: requests waited from the last reply to the end.
    if (!stranded_.empty() && gap_from_ && now_ - gap_from_ > stall_len_) {
        stall_len_ = now_ - gap_from_;
        stall_at_ = gap_from_;
        stall_waited_ = stranded_.size();
    }
    for (std::uint64_t start : stranded_) {
        const std::uint64_t v = now_ > start ? now_ - start : 0;
        ph_[kDrain].lat.record(v);
        censored_h_.record(v);
        ivl_.record(v);
    }
    wall1_ = now_;
    {
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        cpu1_ = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
    }
    {
        std::lock_guard<std::mutex> lk(live.mu);
        live.interval.merge(ivl_);
        ivl_.reset();
    }
    live.done.store(true);
}

void Worker::collect(Result& r) const {
    for (int p = 0; p < kPhaseCount; ++p) {
        const std::string pre = std::string(phase_name(p)) + ".";
        const PhaseCounters& pc = ph_[p];
        r.c[pre + "msgs"] += pc.msgs;
        r.c[pre + "sent"] += pc.sent;
        r.c[pre + "bytes_in"] += pc.bytes_in;
        r.c[pre + "bytes_out"] += pc.bytes_out;
        for (int e = 0; e < kErrCount; ++e) {
            r.c[pre + "err." + err_name(e)] += pc.err[e];
            r.c[std::string("err.") + err_name(e)] += pc.err[e];
        }
        r.hist(pre + "lat").merge(pc.lat);
        r.hist(pre + "svc").merge(pc.svc);
        r.hist(pre + "lag").merge(pc.lag);
    }
    r.hist("connect").merge(connect_h_);
    r.hist("close").merge(close_h_);
    r.hist("loop_lag").merge(loop_lag_h_);
    r.hist("loop_lag_steady").merge(loop_lag_steady_h_);
    r.hist("dispatch_lag").merge(dispatch_lag_h_);
    r.c["conn.requested"] += conns_.size();
    r.c["conn.connects_ok"] += established_ok_;
    r.c["conn.failed"] += failed_conns_;
    r.c["conn.failed_attempts"] += connect_fail_;
    r.c["unanswered.dead_connection"] += unanswered_dead_;
    r.c["unanswered.end_of_run"] += unanswered_end_;
    r.c["late_replies"] += late_replies_;
    r.c["requests.issued"] += issued_;
    r.hist("censored").merge(censored_h_);
    {
        Histogram pause;  // one value per connection that waited for the server in the measured phases
        for (const Conn& c : conns_)
            if (c.waited) pause.record(c.pause);
        r.hist("pause").merge(pause);
    }
    {
        // Per thread: what validity is judged on (one saturated or lagging thread makes the run invalid).
        const std::string pre = "thr." + std::to_string(o_.proc_index) + "." + std::to_string(tid_) + ".";
        r.c[pre + "cpu_ns"] += cpu1_ - cpu0_;
        r.c[pre + "wall_ns"] += wall1_ - wall0_;
        r.c[pre + "lag_steady_p99_ns"] += loop_lag_steady_h_.count() ? loop_lag_steady_h_.percentile(99) : loop_lag_h_.percentile(99);
        r.c[pre + "lag_p90_ns"] += (loop_lag_steady_h_.count() ? loop_lag_steady_h_ : loop_lag_h_).percentile(90);
        if (o_.mode == Mode::Rate) r.c[pre + "dispatch_p99_ns"] += dispatch_lag_h_.percentile(99);
        if (stall_len_) {
            r.c[pre + "stall_ns"] += stall_len_;
            r.c[pre + "stall_at_ns"] += stall_at_ - sh_.t0;
            r.c[pre + "stall_waited"] += stall_waited_;
        }
    }
    stage_collect(r);
    r.c["rate.dispatched"] += dispatched_;
    r.c["rate.dropped"] += dropped_;
    r.c["abandoned"] += abandoned_;
    r.c["churn.cycles"] += churn_cycles_;
    r.c["server.fin"] += fin_;
    r.c["server.rst"] += rst_;
    r.c["server.reply_complete"] += reply_complete_;
    r.c["server.still_open"] += still_open_;
    r.c["server.rst_sent"] += rst_sent_;
    if (!vs_.empty()) {
        r.c["verify.lost"] += lost_;
        r.c["verify.duplicated"] += duplicated_;
        r.c["verify.reordered"] += reordered_;
    }
    if (o_.mode == Mode::Pubsub) ps_collect(r);
    if (o_.protocol != Protocol::Raw) proto_collect(r);
    if (!conns_.empty()) {
        r.mx["time_to_n_s"] = last_established_ns_ ? static_cast<double>(last_established_ns_ - sh_.t0) / 1e9 : -1.0;
        if (!last_established_ns_) r.c["conn.threads_not_all_established"] += 1;
    }
    for (int e = 0; e < kErrCount; ++e)
        if (first_[e].set && (!r.first[e].set || first_[e].t < r.first[e].t)) r.first[e] = first_[e];
}

}  // namespace flood

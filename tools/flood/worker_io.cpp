// esockets-flood: request generation, writing, reading and reply framing.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "worker.hpp"

namespace flood {

namespace {
constexpr int kMaxWritesPerCall = 16;
constexpr std::size_t kMaxReadPerCall = 1 << 20;
// A connection's turn also ends after this many successful reads: in pipeline mode every reply refills the
// pipeline, so against a fast server one connection could otherwise ping-pong for its whole 1 MiB byte budget
// (tens of thousands of small requests) while other connections and pending connects wait.
constexpr int kMaxReadsPerCall = 16;
}  // namespace

void Worker::mark_ready(Conn& c, std::uint32_t i) {
    if (!c.in_ready) {
        c.in_ready = true;
        ready_.push_back(i);
    }
}

void Worker::issue(Conn& c, std::uint64_t intended) {
    Pending p{intended, 0, 0, 0, vs_.empty() ? 0 : vs_[index_of(c)].tx_next++};
    if (!o_.tpl.empty()) {  // --payload-template: p.seq is the request's {seq}
        if (tpl_next_.empty()) tpl_next_.assign(conns_.size(), 0);
        p.seq = tpl_next_[index_of(c)]++;
        p.size = o_.tpl.length(first_global_ + index_of(c), p.seq);
        p.wire = wire_len(p.size);
    } else if (o_.protocol == Protocol::Raw) {
        p.size = next_size();
        p.wire = wire_len(p.size);
    } else {
        proto_request(c, p);
    }
    c.q.push_back(p);
    ++issued_;
    if (outstanding_ == 0) gap_from_ = intended;  // stall tracking: waiting starts now
    ++outstanding_;
}

bool Worker::tracks_unanswered() const {
    return o_.mode == Mode::Pingpong || o_.mode == Mode::Pipeline || o_.mode == Mode::Rate || o_.mode == Mode::Churn;
}

std::uint64_t Worker::start_of(const Pending& p) const {
    // Rate mode (open loop): from the intended send time (coordinated-omission correction). Closed-loop modes:
    // from the time the request's first byte was written (or, never written, from when it was issued).
    return o_.mode == Mode::Rate || p.sent == 0 ? p.intended : p.sent;
}

void Worker::strand(const Pending& p, bool dead_connection) {
    stranded_.push_back(start_of(p));
    ++(dead_connection ? unanswered_dead_ : unanswered_end_);
}

void Worker::strand_queue(Conn& c, bool dead_connection) {
    for (std::size_t k = c.head; k < c.q.size(); ++k) strand(c.q[k], dead_connection);
    outstanding_ -= c.queued();
    c.q.clear();
    c.head = c.sent_n = c.tx_off = 0;
}

void Worker::note_reply(std::uint64_t now) {
    if (outstanding_ > 0 && gap_from_ && now > gap_from_ && now - gap_from_ > stall_len_) {
        stall_len_ = now - gap_from_;
        stall_at_ = gap_from_;
        stall_waited_ = outstanding_ + stranded_.size();
    }
    gap_from_ = now;
}

void Worker::end_wait(Conn& c) {
    // Waits that end in the measured phases count (steady and drain, as for the headline latency), whole even
    // when they began in the warmup.
    if (now_ < sh_.t_warm_end) return;
    const std::uint64_t w = now_ > c.wait_from ? now_ - c.wait_from : 0;
    if (w > c.pause) c.pause = w;
    c.waited = true;
}

void Worker::pop_head(Conn& c) {
    ++c.head;
    if (c.head == c.q.size()) {
        c.q.clear();
        c.head = 0;
    } else if (c.head >= 1024 && 2 * static_cast<std::size_t>(c.head) >= c.q.size()) {
        c.q.erase(c.q.begin(), c.q.begin() + c.head);
        c.head = 0;
    }
}

void Worker::fill(Conn& c) {
    std::size_t limit = o_.mode == Mode::Firehose ? 64 : inflight_limit();
    if (o_.mode == Mode::Churn) {
        const std::uint64_t left = o_.churn_k > c.done ? o_.churn_k - c.done : 0;
        limit = std::min<std::size_t>(limit, left);
    }
    while (can_issue() && c.queued() < limit) issue(c, now_);
}

void Worker::copy_wire(const Pending& pe, std::uint64_t conn_g, std::uint32_t off, unsigned char* dst,
                       std::uint32_t len) const {
    if (o_.protocol != Protocol::Raw) return proto_copy(pe, off, dst, len);
    const std::uint32_t s = pe.size;
    const std::uint32_t h = o_.framing == Framing::LengthPrefixed ? static_cast<std::uint32_t>(o_.prefix_bytes) : 0;
    const unsigned char* pat = o_.payload_bytes.data();
    if (!o_.tpl.empty()) {  // rendered per call: a request written in pieces renders the same bytes each time
        o_.tpl.render(conn_g, pe.seq, tpl_buf_);
        pat = reinterpret_cast<const unsigned char*>(tpl_buf_.data());
    }
    while (len > 0) {
        if (off < h) {
            *dst++ = static_cast<unsigned char>(s >> (8 * (h - 1 - off)));
            ++off;
            --len;
        } else if (off < h + s) {
            const std::uint32_t take = std::min(len, h + s - off);
            std::memcpy(dst, pat + (off - h), take);
            const std::uint32_t k = std::min(s, kStampChars);
            if (!vs_.empty() && off - h < k) {  // --verify: the sequence stamp over the first bytes
                unsigned char stamp[kStampChars];
                encode_stamp(pe.seq, k, stamp);
                const std::uint32_t from = off - h, to = std::min(k, from + take);
                std::memcpy(dst, stamp + from, to - from);
            }
            dst += take;
            off += take;
            len -= take;
        } else {  // line terminator
            *dst++ = '\n';
            ++off;
            --len;
        }
    }
}

std::size_t Worker::build(Conn& c, unsigned char* out, std::size_t cap) {
    std::size_t n = 0;
    std::uint32_t k = c.sent_n, off = c.tx_off;
    const std::uint32_t lim = o_.mode == Mode::Firehose ? UINT32_MAX : inflight_limit();
    while (c.head + k < c.q.size() && k < lim && n < cap) {
        const std::uint32_t wl = c.q[c.head + k].wire;
        std::uint32_t end = wl;
        if (o_.mode == Mode::Slowloris) end = std::min(wl, off + 1);
        if (o_.mode == Mode::Reset) end = std::max(1u, wl / 2);
        if (off >= end) break;
        const std::uint32_t take = static_cast<std::uint32_t>(std::min<std::size_t>(end - off, cap - n));
        copy_wire(c.q[c.head + k], first_global_ + index_of(c), off, out + n, take);
        n += take;
        if (off + take < wl || o_.mode == Mode::Slowloris || o_.mode == Mode::Reset) break;
        off = 0;
        ++k;
    }
    return n;
}

void Worker::advance(Conn& c, std::size_t w) {
    PhaseCounters& pc = ph_[sh_.phase_at(now_)];
    pc.bytes_out += w;
    live.bytes_out.fetch_add(w, std::memory_order_relaxed);
    // Owing nothing until now, the connection waits for the server from this send on (not from its own idle
    // time). Firehose and the hostile modes owe no replies in this sense: they never start a wait.
    if (c.wait_from == 0 && tracks_unanswered()) c.wait_from = now_;
    while (w > 0 && c.head + c.sent_n < c.q.size()) {
        Pending& p = c.q[c.head + c.sent_n];
        const std::uint32_t wl = p.wire;
        if (c.tx_off == 0 && p.sent == 0) {
            p.sent = now_;
            ++pc.sent;
            live.sent.fetch_add(1, std::memory_order_relaxed);
            if (o_.mode == Mode::Rate) pc.lag.record(now_ - p.intended);
        }
        const std::size_t take = std::min<std::size_t>(wl - c.tx_off, w);
        c.tx_off += static_cast<std::uint32_t>(take);
        w -= take;
        if (c.tx_off == wl) {
            c.tx_off = 0;
            if (!vs_.empty()) {
                ++vs_[index_of(c)].tx_written;
                if (o_.mode == Mode::Firehose) ++fh_unacked_;
            }
            if (o_.mode == Mode::Firehose) {  // one-way: a fully written request is a message
                pop_head(c);
                --outstanding_;
                ++pc.msgs;
                live.msgs.fetch_add(1, std::memory_order_relaxed);
            } else {
                ++c.sent_n;
            }
        }
    }
}

void Worker::flush(Conn& c, std::uint32_t i) {
    if (c.state != kOpen || c.fd < 0) return;
    if (o_.mode == Mode::Pubsub) {
        ps_flush(c, i);
        return;
    }
    for (int iter = 0;; ++iter) {
        if (iter >= kMaxWritesPerCall) {
            c.want_write = true;
            mark_ready(c, i);
            return;
        }
        if (o_.mode == Mode::Firehose) fill(c);
        const std::size_t n = build(c, wbuf_.data(), wbuf_.size());
        if (n == 0) {
            c.want_write = false;
            break;
        }
        // Fresh clock per send: requests are stamped with the time they are handed to the kernel, not with the
        // start of the event-loop pass (which may have begun many milliseconds earlier).
        now_ = now_ns();
        const ssize_t w = ::send(c.fd, wbuf_.data(), n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c.want_write = true;
                return;
            }
            server_closed(c, i, true, errno);
            return;
        }
        advance(c, static_cast<std::size_t>(w));
        if (o_.mode == Mode::Reset) {
            // Half a request is out: abort with RST.
            pop_head(c);
            --outstanding_;
            ++rst_sent_;
            ++ph_[sh_.phase_at(now_)].msgs;
            live.msgs.fetch_add(1, std::memory_order_relaxed);
            close_conn(c, true);
            if (!draining_ && can_issue()) requeue(i, 0);
            return;
        }
        if (static_cast<std::size_t>(w) < n) {
            c.want_write = true;
            return;
        }
        if (o_.mode == Mode::Slowloris) break;
    }
    if (o_.mode == Mode::Halfclose && !c.shut && c.sent_n >= 1) {
        ::shutdown(c.fd, SHUT_WR);
        c.shut = true;
    }
}

void Worker::do_read(Conn& c, std::uint32_t i, std::size_t limit) {
    std::size_t total = 0;
    const std::size_t cap = limit == SIZE_MAX ? kMaxReadPerCall : limit;
    for (int reads = 0; total < cap && reads < kMaxReadsPerCall; ++reads) {
        const std::size_t want = std::min(rbuf_.size(), cap - total);
        const ssize_t r = ::recv(c.fd, rbuf_.data(), want, 0);
        if (r > 0) {
            // Fresh clock per read: a reply to a request sent earlier in this same call (pipelining refills
            // the pipeline while reading) must not be stamped with the time the call began, which made such
            // latencies 0.
            now_ = now_ns();
            if (c.wait_from) {  // bytes from the server end the wait; a reply still owed waits on from here
                end_wait(c);
                c.wait_from = now_;
            }
            total += static_cast<std::size_t>(r);
            ph_[sh_.phase_at(now_)].bytes_in += static_cast<std::uint64_t>(r);
            live.bytes_in.fetch_add(static_cast<std::uint64_t>(r), std::memory_order_relaxed);
            consume(c, i, rbuf_.data(), static_cast<std::size_t>(r));
            if (c.fd < 0 || c.state != kOpen) {
                c.flush_due = false;
                return;
            }
            if (c.flush_due) {
                // One send for every request the replies in this read made room for (a pipelined read
                // holds many replies; sending after each one cost a syscall per message).
                c.flush_due = false;
                flush(c, i);
                if (c.fd < 0 || c.state != kOpen) return;
            }
            continue;
        }
        if (r == 0) {
            server_closed(c, i, false, 0);
            return;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) server_closed(c, i, true, errno);
        return;
    }
    if (limit == SIZE_MAX) mark_ready(c, i);  // more may be waiting; no new edge will come
}

void Worker::consume(Conn& c, std::uint32_t i, const unsigned char* p, std::size_t n) {
    if (o_.mode == Mode::Pubsub) return ps_consume(c, i, p, n);
    if (o_.protocol != Protocol::Raw) return proto_consume(c, i, p, n);
    if (!vs_.empty()) return consume_verify(c, i, p, n);
    if (o_.mode == Mode::Idle || o_.mode == Mode::Storm || o_.mode == Mode::Firehose || o_.mode == Mode::Reset)
        return;  // read and discard
    // Without --verify only the reply boundaries matter.
    while (n > 0) {
        if (c.queued() == 0) return;  // unsolicited bytes: nothing to match them with
        const Pending& h = c.q[c.head];
        bool done = false;
        switch (o_.framing) {
        case Framing::Echo: {
            const std::size_t take = std::min<std::size_t>(h.size - c.rx_off, n);
            c.rx_off += static_cast<std::uint32_t>(take);
            p += take;
            n -= take;
            done = c.rx_off == h.size;
            break;
        }
        case Framing::Line: {
            const auto* nl = static_cast<const unsigned char*>(std::memchr(p, '\n', n));
            const std::size_t take = nl ? static_cast<std::size_t>(nl - p) + 1 : n;
            c.rx_off += static_cast<std::uint32_t>(take);
            p += take;
            n -= take;
            done = nl != nullptr;
            break;
        }
        case Framing::LengthPrefixed: {
            const std::uint32_t hb = static_cast<std::uint32_t>(o_.prefix_bytes);
            while (c.rx_hdr < hb && n > 0) {
                c.rx_len = (c.rx_len << 8) | *p++;
                --n;
                ++c.rx_hdr;
            }
            if (c.rx_hdr < hb) return;
            const std::size_t take = std::min<std::size_t>(c.rx_len - c.rx_off, n);
            c.rx_off += static_cast<std::uint32_t>(take);
            p += take;
            n -= take;
            done = c.rx_off == c.rx_len;
            break;
        }
        }
        if (done) {
            complete(c, i);
            if (c.fd < 0 || c.state != kOpen) return;
        }
    }
}

// --verify: replies are split by the framing (echo: by the request's length), their first bytes
// (the stamp) kept, the rest compared with the payload pattern as it arrives; finish_reply()
// then decides which request the reply answers.
void Worker::consume_verify(Conn& c, std::uint32_t i, const unsigned char* p, std::size_t n) {
    VerifyState& v = vs_[i];
    const bool fixed = o_.size_list.empty() && o_.size_min == o_.size_max;
    while (n > 0) {
        std::size_t take = 0;
        bool done = false;
        switch (o_.framing) {
        case Framing::Echo:
            if (c.rx_hdr == 0) {  // length of this reply not known yet
                if (fixed) {
                    c.rx_len = o_.size_min;
                } else if (o_.mode != Mode::Firehose && c.queued()) {
                    c.rx_len = c.q[c.head].size;
                } else {
                    error(kVerifyMismatch, i, "unsolicited bytes with no request outstanding");
                    return;
                }
                c.rx_hdr = 1;
            }
            take = std::min<std::size_t>(c.rx_len - c.rx_off, n);
            absorb(c, v, p, take);
            done = c.rx_off == c.rx_len;
            break;
        case Framing::Line: {
            const auto* nl = static_cast<const unsigned char*>(std::memchr(p, '\n', n));
            const std::size_t body = nl ? static_cast<std::size_t>(nl - p) : n;
            absorb(c, v, p, body);
            take = nl ? body + 1 : body;
            done = nl != nullptr;
            break;
        }
        case Framing::LengthPrefixed: {
            const std::uint32_t hb = static_cast<std::uint32_t>(o_.prefix_bytes);
            while (c.rx_hdr < hb && n > 0) {
                c.rx_len = (c.rx_len << 8) | *p++;
                --n;
                ++c.rx_hdr;
            }
            if (c.rx_hdr < hb) return;
            take = std::min<std::size_t>(c.rx_len - c.rx_off, n);
            absorb(c, v, p, take);
            done = c.rx_off == c.rx_len;
            break;
        }
        }
        p += take;
        n -= take;
        if (done) {
            finish_reply(c, i);
            if (c.fd < 0 || c.state != kOpen) return;
        }
    }
}

void Worker::absorb(Conn& c, VerifyState& v, const unsigned char* p, std::size_t n) {
    std::size_t off = c.rx_off;
    if (off < kStampChars) {
        const std::size_t m = std::min<std::size_t>(n, kStampChars - off);
        std::memcpy(v.stamp + off, p, m);
        off += m;
        p += m;
        n -= m;
    }
    if (n > 0 && !c.bad &&
        (off + n > o_.payload_bytes.size() || std::memcmp(p, o_.payload_bytes.data() + off, n) != 0))
        c.bad = true;
    c.rx_off = static_cast<std::uint32_t>(off + n);
}

void Worker::reset_rx(Conn& c) {
    c.rx_off = c.rx_hdr = c.rx_len = 0;
    c.bad = false;
}

void Worker::finish_reply(Conn& c, std::uint32_t i) {
    VerifyState& v = vs_[i];
    const std::uint32_t len = c.rx_off;
    const bool queued_requests = o_.mode != Mode::Firehose;  // firehose forgets a request once written
    std::uint64_t low = 0;
    unsigned digits = 0;
    if (c.bad || len == 0 || !decode_stamp(v.stamp, std::min(len, kStampChars), low, digits)) return bad_reply(c, i);
    const std::uint64_t r = nearest(low, digits, v.rx.next());
    if (r >= v.tx_written) return bad_reply(c, i);  // answers no request that was sent
    if (queued_requests && r >= v.rx.next()) {
        // Its request is still queued (c.q holds numbers rx.next() up, in order): same length?
        const std::uint64_t j = r - v.rx.next();
        if (j >= c.queued() || c.q[c.head + j].seq != r || c.q[c.head + j].size != len) return bad_reply(c, i);
    }
    switch (v.rx.observe(r)) {
    case SeqTracker::kInOrder:
    case SeqTracker::kEarly:
        if (!queued_requests) {
            --fh_unacked_;
            reset_rx(c);
            return;
        }
        // Requests this reply overtook leave the queue; they stay outstanding (late or lost).
        while (c.q[c.head].seq != r) {
            pop_head(c);
            if (c.sent_n > 0) --c.sent_n;
        }
        complete(c, i);
        return;
    case SeqTracker::kLate:
        ++reordered_;
        if (queued_requests) {
            --outstanding_;
            ++ph_[sh_.phase_at(now_)].msgs;
            live.msgs.fetch_add(1, std::memory_order_relaxed);
        } else {
            --fh_unacked_;
        }
        reset_rx(c);
        return;
    case SeqTracker::kDuplicate:
        ++duplicated_;
        reset_rx(c);
        return;
    }
}

void Worker::bad_reply(Conn& c, std::uint32_t i) {
    VerifyState& v = vs_[i];
    // Taken as the reply expected next, so one bad reply is one error and the pipeline moves on.
    if (v.rx.next() < v.tx_written) {
        v.rx.observe(v.rx.next());
        if (o_.mode != Mode::Firehose) {
            c.bad = true;
            complete(c, i);  // counts the verify_mismatch
            return;
        }
        --fh_unacked_;
    }
    error(kVerifyMismatch, i, "reply differs from every request sent (sequence stamp, length or bytes)");
    reset_rx(c);
}

void Worker::record_reply(std::uint64_t now, const Pending& p) {
    PhaseCounters& pc = ph_[sh_.phase_at(now)];
    ++pc.msgs;
    live.msgs.fetch_add(1, std::memory_order_relaxed);
    record_latency(now, p);
}

void Worker::record_latency(std::uint64_t now, const Pending& p) {
    // Nanoseconds end to end: to the arrival of the reply's last byte.
    PhaseCounters& pc = ph_[sh_.phase_at(now)];
    const std::uint64_t start = start_of(p);
    const std::uint64_t lat = now > start ? now - start : 0;
    pc.lat.record(lat);
    if (!stage_.empty()) stage_reply(now, start, lat);
    if (p.sent) pc.svc.record(now > p.sent ? now - p.sent : 0);
    ivl_.record(lat);
}

void Worker::complete(Conn& c, std::uint32_t i, int err_class, const std::string& detail) {
    const Pending p = c.q[c.head];
    pop_head(c);
    if (c.sent_n > 0) --c.sent_n;
    else c.tx_off = 0;
    if (c.sent_n == 0 && c.tx_off == 0) c.wait_from = 0;  // every request written is answered: owes nothing
    note_reply(now_);
    --outstanding_;
    if (c.bad) error(kVerifyMismatch, i, "reply bytes differ from the request");
    else if (err_class >= 0) error(err_class, i, detail);
    else if (c.to_flagged) {
        // It was counted as a response_timeout error when it hung: one error, not also a msg. Its real
        // latency still goes into the distribution (every due request has exactly one sample).
        ++late_replies_;
        record_latency(now_, p);
    } else record_reply(now_, p);
    c.bad = c.to_flagged = false;
    c.rx_off = c.rx_hdr = c.rx_len = 0;
    ++c.done;
    switch (o_.mode) {
    case Mode::Halfclose:
        ++reply_complete_;
        c.reply_done = true;
        break;
    case Mode::Churn:
        if (c.done >= o_.churn_k && c.queued() == 0) {
            ++churn_cycles_;
            close_conn(c);
            if (!draining_ && can_issue()) requeue(i, 0);
            return;
        }
        fill(c);
        c.flush_due = true;
        break;
    case Mode::Slowloris: break;
    case Mode::Rate: c.flush_due = true; break;
    default:
        fill(c);
        c.flush_due = true;
        break;
    }
}

}  // namespace flood

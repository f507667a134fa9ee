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
    c.q.push_back({intended, 0, next_size()});
    ++issued_;
    ++outstanding_;
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

void Worker::copy_wire(std::uint32_t s, std::uint32_t off, unsigned char* dst, std::uint32_t len) const {
    const std::uint32_t h = o_.framing == Framing::LengthPrefixed ? static_cast<std::uint32_t>(o_.prefix_bytes) : 0;
    const unsigned char* pat = o_.payload_bytes.data();
    while (len > 0) {
        if (off < h) {
            *dst++ = static_cast<unsigned char>(s >> (8 * (h - 1 - off)));
            ++off;
            --len;
        } else if (off < h + s) {
            const std::uint32_t take = std::min(len, h + s - off);
            std::memcpy(dst, pat + (off - h), take);
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
        const std::uint32_t s = c.q[c.head + k].size, wl = wire_len(s);
        std::uint32_t end = wl;
        if (o_.mode == Mode::Slowloris) end = std::min(wl, off + 1);
        if (o_.mode == Mode::Reset) end = std::max(1u, wl / 2);
        if (off >= end) break;
        const std::uint32_t take = static_cast<std::uint32_t>(std::min<std::size_t>(end - off, cap - n));
        copy_wire(s, off, out + n, take);
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
    while (w > 0 && c.head + c.sent_n < c.q.size()) {
        Pending& p = c.q[c.head + c.sent_n];
        const std::uint32_t wl = wire_len(p.size);
        if (c.tx_off == 0 && p.sent == 0) {
            p.sent = now_;
            ++pc.sent;
            live.sent.fetch_add(1, std::memory_order_relaxed);
            if (o_.mode == Mode::Rate) pc.lag.record((now_ - p.intended) / 1000);
        }
        const std::size_t take = std::min<std::size_t>(wl - c.tx_off, w);
        c.tx_off += static_cast<std::uint32_t>(take);
        w -= take;
        if (c.tx_off == wl) {
            c.tx_off = 0;
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
    if (o_.mode == Mode::Idle || o_.mode == Mode::Storm || o_.mode == Mode::Firehose || o_.mode == Mode::Reset)
        return;  // read and discard
    const unsigned char* pat = o_.payload_bytes.data();
    const bool verify = o_.verify;
    while (n > 0) {
        if (c.queued() == 0) {
            if (verify) error(kVerifyMismatch, i, "unsolicited bytes with no request outstanding");
            return;
        }
        const Pending& h = c.q[c.head];
        bool done = false;
        switch (o_.framing) {
        case Framing::Echo: {
            const std::size_t take = std::min<std::size_t>(h.size - c.rx_off, n);
            if (verify && std::memcmp(p, pat + c.rx_off, take) != 0) c.bad = true;
            c.rx_off += static_cast<std::uint32_t>(take);
            p += take;
            n -= take;
            done = c.rx_off == h.size;
            break;
        }
        case Framing::Line: {
            const auto* nl = static_cast<const unsigned char*>(std::memchr(p, '\n', n));
            const std::size_t take = nl ? static_cast<std::size_t>(nl - p) : n;
            if (verify) {
                if (c.rx_off + take > h.size) c.bad = true;
                else if (std::memcmp(p, pat + c.rx_off, take) != 0) c.bad = true;
            }
            c.rx_off += static_cast<std::uint32_t>(take);
            p += take;
            n -= take;
            if (nl) {
                if (verify && c.rx_off != h.size) c.bad = true;
                ++p;
                --n;
                done = true;
            }
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
            if (verify && c.rx_len != h.size) c.bad = true;
            const std::size_t take = std::min<std::size_t>(c.rx_len - c.rx_off, n);
            if (verify && !c.bad) {
                if (c.rx_off + take > h.size || std::memcmp(p, pat + c.rx_off, take) != 0) c.bad = true;
            }
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

void Worker::record_reply(std::uint64_t now, const Pending& p) {
    PhaseCounters& pc = ph_[sh_.phase_at(now)];
    ++pc.msgs;
    live.msgs.fetch_add(1, std::memory_order_relaxed);
    // Rate mode (open loop): from the intended send time (coordinated-omission correction). Closed-loop modes:
    // from the time the request's first byte was written to the arrival of its reply's last byte.
    const std::uint64_t start = o_.mode == Mode::Rate || p.sent == 0 ? p.intended : p.sent;
    const std::uint64_t lat = (now - start) / 1000;
    pc.lat.record(lat);
    if (p.sent) pc.svc.record((now - p.sent) / 1000);
    ivl_.record(lat);
}

void Worker::complete(Conn& c, std::uint32_t i) {
    const Pending p = c.q[c.head];
    pop_head(c);
    if (c.sent_n > 0) --c.sent_n;
    else c.tx_off = 0;
    --outstanding_;
    if (c.bad) error(kVerifyMismatch, i, "reply bytes differ from the request");
    else record_reply(now_, p);
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

// esockets-flood: the pubsub mode (SUB / PUB / MSG lines, e.g. against esockets-chat).
//
// Subscriber s joins rooms (s*K + j) mod R, j < K, and counts "OK SUB" answers in the process-wide
// subs_pending; publishers start when it reaches 0. Publisher k sends fixed-length lines
//   PUB room<k mod R> p<k> <seq, 10 digits> <ns since start, 14 digits> <padding>
// and never runs more than --window messages ahead of their delivery to every subscriber of its
// room (PubCounters::delivered / fan-out). Each subscriber keeps one SeqTracker per publisher of
// its rooms; at the end, lost = gaps never filled + messages published but never seen.
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "worker.hpp"

namespace flood {

namespace {

constexpr int kSeqDigits = 10;
constexpr int kTimeDigits = 14;
constexpr std::size_t kFormatBatch = 32 * 1024;  // bytes of PUB lines made per refill

std::uint32_t decimal_digits(std::uint64_t v) {
    std::uint32_t n = 1;
    while (v >= 10) {
        v /= 10;
        ++n;
    }
    return n;
}

void put_fixed(char* p, std::uint64_t v, int width) {
    for (int k = width - 1; k >= 0; --k) {
        p[k] = static_cast<char>('0' + v % 10);
        v /= 10;
    }
}

// Parses a decimal number at p (at most 20 digits); false if there is none.
bool take_number(const char*& p, const char* end, std::uint64_t& v) {
    const char* start = p;
    v = 0;
    while (p < end && *p >= '0' && *p <= '9' && p - start < 20) v = v * 10 + static_cast<std::uint64_t>(*p++ - '0');
    return p > start;
}

bool take_char(const char*& p, const char* end, char ch) {
    if (p >= end || *p != ch) return false;
    ++p;
    return true;
}

std::string printable(const char* p, std::size_t n) {
    std::string s(p, std::min<std::size_t>(n, 80));
    for (auto& ch : s)
        if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) >= 0x7f) ch = '?';
    return n > 80 ? s + "..." : s;
}

// Length of the text after "PUB room<r> " for publisher `id`: "p<id> <seq> <t> " then padding up
// to --size bytes.
std::uint32_t text_len(std::uint64_t id, std::uint32_t size, std::uint32_t& pad) {
    const std::uint32_t base = 1 + decimal_digits(id) + 1 + kSeqDigits + 1 + kTimeDigits + 1;
    pad = size > base ? size - base : 0;
    return base + pad;
}

}  // namespace

void Worker::ps_setup() {
    const PubsubShared& g = sh_.ps;
    ps_.resize(conns_.size());
    for (std::uint32_t i = 0; i < conns_.size(); ++i) {
        const std::uint64_t gi = first_global_ + i;
        PubsubConn& ps = ps_[i];
        if (gi < g.subscribers) {
            ps.id = static_cast<std::uint32_t>(gi);
            ps.joined.assign(g.per_sub, 0);
            ps.streams.resize(g.per_sub * g.per_room);
        } else {
            ps.publisher = true;
            ps.id = static_cast<std::uint32_t>(gi - g.subscribers);
            ps.room = static_cast<std::uint32_t>(ps.id % g.rooms);
            std::uint32_t pad = 0;
            ps.msg_len = 4 + 4 + decimal_digits(ps.room) + 1 + text_len(ps.id, o_.max_size(), pad) + 1;
            ps_pubs_.push_back(i);
        }
    }
}

void Worker::ps_open(Conn& c, std::uint32_t i) {
    PubsubConn& ps = ps_[i];
    ps.opened = true;
    if (!ps.publisher) {
        const PubsubShared& g = sh_.ps;
        for (std::uint64_t j = 0; j < g.per_sub; ++j)
            ps.out += "SUB room" + std::to_string((ps.id * g.per_sub + j) % g.rooms) + "\n";
    }
    ps_flush(c, i);
}

void Worker::ps_format(PubsubConn& ps) {
    const PubsubShared& g = sh_.ps;
    if (ps.finished || draining_ || g.subs_pending.load(std::memory_order_acquire) > 0) return;
    const std::uint64_t fan = std::max<std::uint64_t>(1, g.fanout[ps.id]);
    const std::uint64_t delivered_msgs = g.pub[ps.id].delivered.load(std::memory_order_relaxed) / fan;
    std::uint64_t room_left = ps.formatted - std::min(ps.formatted, delivered_msgs);
    room_left = room_left >= o_.window ? 0 : o_.window - room_left;
    if (o_.messages) room_left = std::min(room_left, o_.messages - std::min(o_.messages, ps.formatted));
    if (room_left == 0) return;
    std::uint32_t pad = 0;
    text_len(ps.id, o_.max_size(), pad);
    const std::string head = "PUB room" + std::to_string(ps.room) + " p" + std::to_string(ps.id) + " ";
    const std::uint64_t t = now_ns() - sh_.t0;  // one stamp for the batch: they are written together
    const unsigned char* pat = o_.payload_bytes.data();
    while (room_left-- > 0 && ps.out.size() < kFormatBatch) {
        const std::size_t at = ps.out.size();
        ps.out.resize(at + ps.msg_len);
        char* p = ps.out.data() + at;
        std::memcpy(p, head.data(), head.size());
        p += head.size();
        put_fixed(p, ps.formatted, kSeqDigits);
        p += kSeqDigits;
        *p++ = ' ';
        put_fixed(p, t, kTimeDigits);
        p += kTimeDigits;
        *p++ = ' ';
        std::memcpy(p, pat, pad);
        p[pad] = '\n';
        ++ps.formatted;
    }
}

void Worker::ps_flush(Conn& c, std::uint32_t i) {
    PubsubConn& ps = ps_[i];
    for (int iter = 0;; ++iter) {
        if (ps.out_off == ps.out.size()) {
            ps.out.clear();
            ps.out_off = 0;
            if (ps.publisher) ps_format(ps);
            if (ps.out.empty()) break;
        }
        if (iter >= 16) {  // give the other connections a turn
            c.want_write = true;
            mark_ready(c, i);
            return;
        }
        now_ = now_ns();
        const ssize_t w = ::send(c.fd, ps.out.data() + ps.out_off, ps.out.size() - ps.out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c.want_write = true;
                return;
            }
            server_closed(c, i, true, errno);
            return;
        }
        const auto n = static_cast<std::size_t>(w);
        ps.out_off += n;
        PhaseCounters& pc = ph_[sh_.phase_at(now_)];
        pc.bytes_out += n;
        live.bytes_out.fetch_add(n, std::memory_order_relaxed);
        if (ps.publisher) {
            const std::uint64_t before = ps.written / ps.msg_len;
            ps.written += n;
            const std::uint64_t after = ps.written / ps.msg_len;
            if (after != before) {
                sh_.ps.pub[ps.id].published.store(after, std::memory_order_release);
                pc.sent += after - before;
                live.sent.fetch_add(after - before, std::memory_order_relaxed);
            }
        }
        if (ps.out_off < ps.out.size()) {
            c.want_write = true;
            return;
        }
    }
    c.want_write = false;
    if (ps.publisher && (draining_ || (o_.messages && ps.formatted >= o_.messages))) ps_finish(ps);
}

void Worker::ps_finish(PubsubConn& ps) {
    if (ps.finished) return;
    ps.finished = true;
    if (sh_.ps.pubs_active.fetch_sub(1, std::memory_order_acq_rel) == 1)
        sh_.ps.pub_end_ns.store(now_ns(), std::memory_order_release);
}

void Worker::ps_lost_connection(std::uint32_t i) {
    PubsubConn& ps = ps_[i];
    ps.out.clear();
    ps.out_off = 0;
    ps.in.clear();
    if (ps.publisher) {
        ps_finish(ps);
        return;
    }
    // A subscriber that is gone: what it did not get is counted as abandoned, not lost, and the
    // publishers do not wait for the subscriptions it will never confirm.
    ps.finished = true;
    const std::int64_t unconfirmed = static_cast<std::int64_t>(sh_.ps.per_sub) - ps.confirmed;
    if (unconfirmed > 0 && sh_.ps.subs_pending.fetch_sub(unconfirmed, std::memory_order_acq_rel) == unconfirmed)
        sh_.ps.subscribed_ns.store(now_ns(), std::memory_order_release);
}

bool Worker::ps_tick() {
    bool waiting = false;
    for (std::uint32_t i : ps_pubs_) {
        Conn& c = conns_[i];
        PubsubConn& ps = ps_[i];
        if (ps.finished) continue;
        if (c.state != kOpen) {
            if (draining_) ps_finish(ps);  // never got to publish
            continue;
        }
        if (!c.want_write) ps_flush(c, i);  // what the window allows now
        if (!ps.finished && !c.want_write && !draining_) waiting = true;
    }
    return waiting;
}

bool Worker::ps_done(std::uint64_t drain_deadline) const {
    const PubsubShared& g = sh_.ps;
    std::uint64_t deadline = draining_ ? drain_deadline : UINT64_MAX;
    if (g.pubs_active.load(std::memory_order_acquire) == 0) {
        std::uint64_t expected = 0, delivered = 0;
        for (std::uint64_t k = 0; k < g.publishers; ++k) {
            expected += g.pub[k].published.load(std::memory_order_acquire) * g.fanout[k];
            delivered += g.pub[k].delivered.load(std::memory_order_relaxed);
        }
        if (delivered >= expected) return true;  // every message reached every subscriber
        if (const std::uint64_t end = g.pub_end_ns.load(std::memory_order_acquire); end != 0)
            deadline = std::min(deadline, end + static_cast<std::uint64_t>(o_.drain * 1e9));
    }
    return now_ >= deadline;
}

void Worker::ps_consume(Conn& c, std::uint32_t i, const unsigned char* p, std::size_t n) {
    PubsubConn& ps = ps_[i];
    const char* s = reinterpret_cast<const char*>(p);
    const char* end = s + n;
    const std::size_t max_line = o_.max_size() + 4096;
    while (s < end) {
        const auto* nl = static_cast<const char*>(std::memchr(s, '\n', static_cast<std::size_t>(end - s)));
        if (!nl) {
            if (ps.in.size() + static_cast<std::size_t>(end - s) > max_line) {
                error(kVerifyMismatch, i, "line from the server longer than any message sent");
                ps.in.clear();
            } else {
                ps.in.append(s, end);
            }
            break;
        }
        if (ps.in.empty()) {
            ps_line(i, s, static_cast<std::size_t>(nl - s));
        } else {
            ps.in.append(s, nl);
            ps_line(i, ps.in.data(), ps.in.size());
            ps.in.clear();
        }
        s = nl + 1;
        if (c.fd < 0 || c.state != kOpen) break;
    }
    ps_flush_delivered();  // publishers on other threads see the progress at once
}

void Worker::ps_line(std::uint32_t i, const char* p, std::size_t n) {
    PubsubConn& ps = ps_[i];
    if (n >= 4 && std::memcmp(p, "MSG ", 4) == 0 && !ps.publisher) {
        ps_message(i, ps, p + 4, n - 4);
        return;
    }
    if (n > 11 && std::memcmp(p, "OK SUB room", 11) == 0 && !ps.publisher) {
        const PubsubShared& g = sh_.ps;
        const char* q = p + 11;
        std::uint64_t room = 0;
        if (take_number(q, p + n, room) && q == p + n && room < g.rooms) {
            const std::uint64_t slot = (room + g.rooms - (ps.id * g.per_sub) % g.rooms) % g.rooms;
            if (slot < g.per_sub) {
                if (!ps.joined[slot]) {
                    ps.joined[slot] = 1;
                    ++ps.confirmed;
                    if (sh_.ps.subs_pending.fetch_sub(1, std::memory_order_acq_rel) == 1)
                        sh_.ps.subscribed_ns.store(now_, std::memory_order_release);
                }
                return;
            }
        }
    }
    if (n >= 3 && std::memcmp(p, "ERR", 3) == 0) {
        error(kOther, i, "server replied: " + printable(p, n));
        return;
    }
    error(kVerifyMismatch, i, "unexpected line from the server: " + printable(p, n));
}

// "room<r> p<k> <seq> <t> <padding>" (after "MSG ").
void Worker::ps_message(std::uint32_t i, PubsubConn& ps, const char* p, std::size_t n) {
    const PubsubShared& g = sh_.ps;
    const char* q = p;
    const char* end = p + n;
    std::uint64_t room = 0, pub = 0, seq = 0, t = 0;
    bool ok = n > 4 && std::memcmp(q, "room", 4) == 0;
    if (ok) {
        q += 4;
        ok = take_number(q, end, room) && take_char(q, end, ' ') && take_char(q, end, 'p') && take_number(q, end, pub) &&
             take_char(q, end, ' ') && take_number(q, end, seq) && take_char(q, end, ' ') && take_number(q, end, t) &&
             take_char(q, end, ' ');
    }
    std::uint64_t slot = 0;
    if (ok) {
        slot = (room + g.rooms - (ps.id * g.per_sub) % g.rooms) % g.rooms;
        ok = room < g.rooms && pub < g.publishers && pub % g.rooms == room && slot < g.per_sub;
    }
    if (ok) {  // the padding: its length and, with --verify, its bytes
        std::uint32_t pad = 0;
        text_len(pub, o_.max_size(), pad);
        ok = static_cast<std::size_t>(end - q) == pad && (!o_.verify || std::memcmp(q, o_.payload_bytes.data(), pad) == 0);
    }
    if (!ok) {
        error(kVerifyMismatch, i, "corrupt or misrouted message: MSG " + printable(p, n));
        return;
    }
    SeqTracker& tr = ps.streams[slot * g.per_room + pub / g.rooms];
    const SeqTracker::Outcome out = tr.observe(seq);
    if (out == SeqTracker::kDuplicate) {
        ++ps_dup_;
        return;
    }
    if (out == SeqTracker::kLate) ++ps_reordered_;
    ++ps_delivered_;
    if (pub != ps_batch_pub_) {
        ps_flush_delivered();
        ps_batch_pub_ = static_cast<std::uint32_t>(pub);
    }
    ++ps_batch_n_;
    PhaseCounters& pc = ph_[sh_.phase_at(now_)];
    ++pc.msgs;
    live.msgs.fetch_add(1, std::memory_order_relaxed);
    const std::uint64_t sent_at = sh_.t0 + t;
    if (sent_at <= now_) {
        const std::uint64_t lat = now_ - sent_at;
        pc.lat.record(lat);
        ivl_.record(lat);
    }
    ps_last_delivery_ = now_;
}

void Worker::ps_flush_delivered() {
    if (ps_batch_n_ == 0) return;
    sh_.ps.pub[ps_batch_pub_].delivered.fetch_add(ps_batch_n_, std::memory_order_relaxed);
    ps_batch_n_ = 0;
}

void Worker::ps_collect(Result& r) const {
    const PubsubShared& g = sh_.ps;
    std::uint64_t published = 0, expected = 0, lost = 0, abandoned = 0, subscriptions = 0, confirmed = 0;
    for (const PubsubConn& ps : ps_) {
        if (ps.publisher) {
            published += ps.written / ps.msg_len;
            continue;
        }
        subscriptions += g.per_sub;
        confirmed += ps.confirmed;
        const bool gone = ps.finished;  // the subscriber's connection was lost
        for (std::uint64_t j = 0; j < g.per_sub; ++j) {
            const std::uint64_t room = (ps.id * g.per_sub + j) % g.rooms;
            for (std::uint64_t k = 0; k < g.per_room; ++k) {
                const std::uint64_t pub = room + k * g.rooms;
                if (pub >= g.publishers) break;
                const SeqTracker& tr = ps.streams[j * g.per_room + k];
                const std::uint64_t sent = g.pub[pub].published.load(std::memory_order_acquire);
                expected += sent;
                const std::uint64_t missing = tr.missing() + (sent > tr.next() ? sent - tr.next() : 0);
                (gone ? abandoned : lost) += missing;
            }
        }
    }
    r.c["pubsub.published"] += published;
    r.c["pubsub.expected"] += expected;
    r.c["pubsub.delivered"] += ps_delivered_;
    r.c["pubsub.lost"] += lost;
    r.c["pubsub.abandoned"] += abandoned;
    r.c["pubsub.duplicated"] += ps_dup_;
    r.c["pubsub.reordered"] += ps_reordered_;
    r.c["pubsub.subscriptions"] += subscriptions;
    r.c["pubsub.confirmed"] += confirmed;
    const std::uint64_t sub_ns = g.subscribed_ns.load(std::memory_order_acquire);
    if (sub_ns > sh_.t0) r.mx["pubsub.subscribed_s"] = static_cast<double>(sub_ns - sh_.t0) / 1e9;
    if (ps_last_delivery_ > sh_.t0) r.mx["pubsub.last_delivery_s"] = static_cast<double>(ps_last_delivery_ - sh_.t0) / 1e9;
}

}  // namespace flood

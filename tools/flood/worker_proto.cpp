// esockets-flood: --protocol resp (Redis commands) and --protocol http (GET keep-alive): request bytes,
// reply framing with the incremental parsers, and the HTTP re-open after Connection: close.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "worker.hpp"

namespace flood {

namespace {

char* put(char* o, const char* s) {
    const std::size_t n = std::strlen(s);
    std::memcpy(o, s, n);
    return o + n;
}

char* put_num(char* o, std::uint64_t v) { return std::to_chars(o, o + 24, v).ptr; }

std::uint32_t digits(std::uint64_t v) {
    std::uint32_t d = 1;
    while (v >= 10) {
        v /= 10;
        ++d;
    }
    return d;
}

// The bytes of a RESP request before the SET value: "*3\r\n$3\r\nSET\r\n$<k>\r\nkey:<n>\r\n$<size>\r\n",
// or the whole GET "*2\r\n$3\r\nGET\r\n$<k>\r\nkey:<n>\r\n". Returns its length (< 96).
std::uint32_t resp_head(const Pending& p, char* out) {
    char* o = put(out, p.size ? "*3\r\n$3\r\nSET\r\n$" : "*2\r\n$3\r\nGET\r\n$");
    o = put_num(o, 4 + digits(p.seq));
    o = put(o, "\r\nkey:");
    o = put_num(o, p.seq);
    o = put(o, "\r\n");
    if (p.size) {
        *o++ = '$';
        o = put_num(o, p.size);
        o = put(o, "\r\n");
    }
    return static_cast<std::uint32_t>(o - out);
}

std::uint32_t resp_head_len(const Pending& p) {
    const std::uint32_t kd = 4 + digits(p.seq);  // "key:" + digits
    std::uint32_t n = 14 + digits(kd) + 6 + digits(p.seq) + 2;  // "*3\r\n$3\r\nSET\r\n$" <kd> "\r\nkey:" <n> "\r\n"
    if (p.size) n += 1 + digits(p.size) + 2;
    return n;
}

}  // namespace

void Worker::proto_setup() {
    const std::size_t n = conns_.size();
    if (o_.protocol == Protocol::Resp) {
        resp_.resize(n);
        if (o_.key_sequential) key_next_.assign(n, 0);
    } else {
        http_.resize(n);
        http_req_ = "GET " + o_.http_path + " HTTP/1.1\r\nHost: " + o_.host_header + "\r\n\r\n";
    }
}

void Worker::proto_request(Conn& c, Pending& p) {
    if (o_.protocol == Protocol::Http) {
        p.size = 0;
        p.wire = static_cast<std::uint32_t>(http_req_.size());
        return;
    }
    bool set = o_.resp_command == RespCommand::Set;
    if (o_.resp_command == RespCommand::Mixed) set = mix_pos_++ % (o_.ratio_set + o_.ratio_get) < o_.ratio_set;
    const std::uint64_t N = o_.key_range;
    if (!key_next_.empty()) {  // sequential: the k-th request of global connection g uses (g + k*C) mod N
        const std::uint32_t i = index_of(c);
        const std::uint64_t g = first_global_ + i, k = key_next_[i]++;
        p.seq = (g % N + (k % N) * (std::max<std::uint64_t>(1, o_.total_conns) % N)) % N;
    } else {
        p.seq = N > 1 ? rng_() % N : 0;
    }
    p.size = set ? next_size() : 0;
    p.wire = resp_head_len(p) + (set ? p.size + 2 : 0);
}

void Worker::proto_copy(const Pending& pe, std::uint32_t off, unsigned char* dst, std::uint32_t len) const {
    if (o_.protocol == Protocol::Http) {
        std::memcpy(dst, http_req_.data() + off, len);
        return;
    }
    char head[96];
    const std::uint32_t h = resp_head(pe, head), s = pe.size;
    while (len > 0) {
        std::uint32_t take;
        if (off < h) {
            take = std::min(len, h - off);
            std::memcpy(dst, head + off, take);
        } else if (off < h + s) {
            take = std::min(len, h + s - off);
            std::memcpy(dst, o_.payload_bytes.data() + (off - h), take);
        } else {
            take = std::min(len, h + s + 2 - off);
            std::memcpy(dst, "\r\n" + (off - h - s), take);
        }
        dst += take;
        off += take;
        len -= take;
    }
}

void Worker::proto_consume(Conn& c, std::uint32_t i, const unsigned char* p, std::size_t n) {
    const bool resp = o_.protocol == Protocol::Resp;
    while (n > 0) {
        if (c.queued() == 0 || (c.sent_n == 0 && c.tx_off == 0)) {
            fail_conn(c, i, kProtocolError, "reply bytes with no request outstanding");
            return;
        }
        std::size_t used = 0;
        if (resp) {
            RespReplyParser& rp = resp_[i];
            const auto st = rp.feed(p, n, used);
            p += used;
            n -= used;
            if (st == RespReplyParser::kBad) {
                fail_conn(c, i, kProtocolError, std::string("malformed RESP reply: ") + rp.why());
                return;
            }
            if (st == RespReplyParser::kNeedMore) return;
            const bool set = c.q[c.head].size > 0;
            ++resp_replies_[set ? 0 : 1];
            if (rp.is_error()) {
                ++resp_err_replies_;
                complete(c, i, kErrorReply,
                         first_[kErrorReply].set ? std::string() : std::string(set ? "SET" : "GET") + " answered " + rp.text());
            } else {
                if (!set) ++(rp.is_nil() ? resp_misses_ : resp_hits_);
                complete(c, i);
            }
        } else {
            HttpReplyParser& hp = http_[i];
            const auto st = hp.feed(p, n, used);
            p += used;
            n -= used;
            if (st == HttpReplyParser::kBad) {
                fail_conn(c, i, kProtocolError, std::string("malformed HTTP response: ") + hp.why());
                return;
            }
            if (st == HttpReplyParser::kNeedMore) return;
            const int cls = hp.status() / 100;
            ++http_status_[cls >= 1 && cls <= 5 ? cls : 0];
            if (hp.chunked()) ++http_chunked_;
            complete(c, i);
            if (c.fd < 0 || c.state != kOpen) return;
            if (hp.close()) {  // the server closes after this response (the bytes after it are not replies)
                proto_reopen(c, i, true);
                return;
            }
        }
        if (c.fd < 0 || c.state != kOpen) return;
    }
}

bool Worker::proto_eof(Conn& c, std::uint32_t i) {
    if (o_.protocol != Protocol::Http) return false;
    HttpReplyParser& hp = http_[i];
    if (hp.eof()) {  // a response without a length ends with the connection
        const int cls = hp.status() / 100;
        ++http_status_[cls >= 1 && cls <= 5 ? cls : 0];
        complete(c, i);
        if (c.fd >= 0 && c.state == kOpen) {
            proto_reopen(c, i, true);
        }
        return true;
    }
    if (!hp.in_reply() && c.sent_n == 0 && c.tx_off == 0) {  // an idle keep-alive connection timed out
        ++http_idle_closed_;
        proto_reopen(c, i, false);
        return true;
    }
    return false;  // requests written and unanswered: unexpected_eof
}

void Worker::proto_reopen(Conn& c, std::uint32_t i, bool after_close) {
    // Requests not answered yet move to the new connection (sent again; their latency runs on from
    // the first send). close_conn() would abandon them.
    std::vector<Pending> keep(c.q.begin() + c.head, c.q.end());
    const std::uint64_t waiting = c.wait_from;
    c.q.clear();
    c.head = 0;
    close_conn(c);
    if (draining_) {  // no reconnects in the drain: these were due and will not be answered
        for (const Pending& p : keep) strand(p, true);
        outstanding_ -= keep.size();
        return;
    }
    c.q = std::move(keep);
    c.wait_from = waiting;  // the client waits on for these replies: its pause runs on across the re-open
    // Counted once the new connection is up (on_connected): a re-open the end of the run cuts
    // short is not one, and http.reopened + the first connects = connects_ok.
    c.reopen_counts = after_close;
    requeue(i, 0);
}

void Worker::proto_collect(Result& r) const {
    if (o_.protocol == Protocol::Resp) {
        r.c["resp.replies"] += resp_replies_[0] + resp_replies_[1];
        r.c["resp.set_replies"] += resp_replies_[0];
        r.c["resp.get_replies"] += resp_replies_[1];
        r.c["resp.hits"] += resp_hits_;
        r.c["resp.misses"] += resp_misses_;
        r.c["resp.error_replies"] += resp_err_replies_;
        return;
    }
    std::uint64_t all = 0;
    for (auto v : http_status_) all += v;
    r.c["http.responses"] += all;
    r.c["http.status_other"] += http_status_[0];
    for (int k = 1; k <= 5; ++k) r.c["http.status_" + std::to_string(k) + "xx"] += http_status_[k];
    r.c["http.non_2xx"] += all - http_status_[2];
    r.c["http.chunked"] += http_chunked_;
    r.c["http.reopened"] += http_reopened_;
    r.c["http.idle_closed"] += http_idle_closed_;
}

}  // namespace flood

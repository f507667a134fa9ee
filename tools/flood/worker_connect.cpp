// esockets-flood: connection setup (connects in their own epoll set, paced) and establishment.
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "worker.hpp"

namespace flood {

namespace {
constexpr std::uint64_t kMs = 1'000'000;
constexpr int kConnectBatch = 64;  // connects started per service_connects() call
}  // namespace

void Worker::start_connect(std::uint32_t i) {
    Conn& c = conns_[i];
    const std::uint64_t g = first_global_ + i;
    int fd = ::socket(sh_.target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    now_ = now_ns();
    c.t_start = now_;
    c.state = kConnecting;
    ++connecting_;
    if (fd < 0) {
        fail_conn(c, i, classify_errno(errno, true), std::string("socket: ") + std::strerror(errno));
        return;
    }
    c.fd = fd;
    int one = 1;
    if (sh_.target.ss_family != AF_UNIX) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (o_.mode == Mode::Slowread) {
        int small = 4096;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
    if (!sh_.sources.empty()) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        const sockaddr_in& src = sh_.sources[g % sh_.sources.size()];
        if (::bind(fd, reinterpret_cast<const sockaddr*>(&src), sizeof src) != 0) {
            fail_conn(c, i, classify_errno(errno, true), std::string("bind: ") + std::strerror(errno));
            return;
        }
    }
    // Until it is established the socket is watched in cep_ only (level-triggered), so that its completion
    // is not queued behind the traffic events of the open connections in ep_.
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u64 = i;
    if (epoll_ctl(cep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        fail_conn(c, i, kOther, std::string("epoll_ctl: ") + std::strerror(errno));
        return;
    }
    int r = ::connect(fd, reinterpret_cast<const sockaddr*>(&sh_.target), sh_.target_len);
    if (r == 0) {
        on_connect_event(i, EPOLLOUT);
    } else if (errno != EINPROGRESS) {
        fail_conn(c, i, classify_errno(errno, true), std::string("connect: ") + std::strerror(errno));
    }
}

void Worker::on_connect_event(std::uint32_t i, std::uint32_t ev) {
    Conn& c = conns_[i];
    if (c.fd < 0 || c.state != kConnecting) return;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        fail_conn(c, i, classify_errno(err, true), std::string("connect: ") + std::strerror(err));
        return;
    }
    if (!(ev & (EPOLLOUT | EPOLLIN))) return;
    // Established: move the socket from the connect set to the traffic set (edge-triggered; adding it reports
    // its current readiness, so nothing that already arrived is missed).
    epoll_ctl(cep_, EPOLL_CTL_DEL, c.fd, nullptr);
    epoll_event e{};
    e.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    e.data.u64 = i;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &e) != 0) {
        fail_conn(c, i, kOther, std::string("epoll_ctl: ") + std::strerror(errno));
        return;
    }
    on_connected(c, i);
}

// Connection setup has priority over traffic: the loop calls this at the start of every pass and again after
// every kTrafficSlice traffic events while connects are pending, so neither starting a connect (as far as
// --connect-rate / --ramp allow) nor handling its completion waits behind the traffic of open connections.
void Worker::service_connects() {
    now_ = now_ns();
    last_connect_service_ = now_;
    int budget = kConnectBatch;
    while (!draining_ && connect_q_head_ < connect_q_.size() && budget-- > 0) {
        if (connect_interval_ns_ > 0) {
            if (now_ < next_connect_) break;
            next_connect_ += static_cast<std::uint64_t>(connect_interval_ns_);
            if (next_connect_ + 100 * kMs < now_) next_connect_ = now_;  // do not burst after a stall
        }
        std::uint32_t i = connect_q_[connect_q_head_++];
        if (conns_[i].state == kQueued) start_connect(i);
    }
    if (connect_q_head_ == connect_q_.size()) {
        connect_q_.clear();
        connect_q_head_ = 0;
    }
    if (connecting_ == 0) return;
    epoll_event evs[256];
    const int n = epoll_wait(cep_, evs, 256, 0);
    now_ = now_ns();
    for (int k = 0; k < n; ++k) on_connect_event(static_cast<std::uint32_t>(evs[k].data.u64), evs[k].events);
}

void Worker::on_connected(Conn& c, std::uint32_t i) {
    c.state = kOpen;
    c.failing = false;
    connect_h_.record(now_ - c.t_start);
    c.t_start = now_;
    ++open_;
    ++established_ok_;
    if (c.reopen_counts) {
        c.reopen_counts = false;
        ++http_reopened_;
    }
    std::uint64_t cur = sh_.open.fetch_add(1, std::memory_order_relaxed) + 1;
    std::uint64_t pk = sh_.peak.load(std::memory_order_relaxed);
    while (cur > pk && !sh_.peak.compare_exchange_weak(pk, cur, std::memory_order_relaxed)) {
    }
    if (sh_.all_open) {  // --procs: the simultaneous peak over all processes
        const std::uint64_t all = sh_.all_open->fetch_add(1, std::memory_order_relaxed) + 1;
        std::uint64_t apk = sh_.all_peak->load(std::memory_order_relaxed);
        while (all > apk && !sh_.all_peak->compare_exchange_weak(apk, all, std::memory_order_relaxed)) {
        }
    }
    if (open_ > established_) {
        established_ = open_;
        if (established_ == conns_.size()) last_established_ns_ = now_;
    }
    switch (o_.mode) {
    case Mode::Idle:
        if (o_.keepalive > 0) push_timer(now_ + static_cast<std::uint64_t>(o_.keepalive * 1e9), i, kTKeepalive);
        break;
    case Mode::Storm: break;
    case Mode::Slowloris:
        if (can_issue()) issue(c, now_);
        push_timer(now_ + static_cast<std::uint64_t>(o_.slow_delay_ms * 1e6), i, kTSlow);
        break;
    case Mode::Slowread:
        fill(c);
        flush(c, i);
        if (o_.slow_read_bytes) push_timer(now_ + static_cast<std::uint64_t>(o_.slow_delay_ms * 1e6), i, kTSlow);
        break;
    case Mode::Halfclose:
    case Mode::Reset:
        if (can_issue()) issue(c, now_);
        flush(c, i);
        break;
    case Mode::Pubsub: ps_open(c, i); break;
    default:
        if (o_.mode != Mode::Rate) fill(c);  // rate mode only sends what the schedule queued
        flush(c, i);
        break;
    }
}

}  // namespace flood

// Tiny epoll echo server for the esockets-flood tests (single thread, level-triggered).
// Behaviours: plain echo, corrupting echo (flips a bit in every chunk), and echo that
// stalls once (the whole loop sleeps) a given time after the first byte arrives, and echo that holds
// every received chunk back for delay_ms before sending it, and echo that stops reading one connection
// once for a while (the others are served meanwhile).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace floodtest {

struct ServerConfig {
    bool corrupt = false;
    int stall_after_ms = -1;  // < 0: never stall
    int stall_ms = 0;
    int delay_ms = 0;  // > 0: every chunk is echoed delay_ms after it was received
    // hold_conn > 0: the hold_conn-th connection accepted (from 1) is not read for hold_ms, once,
    // starting hold_after_ms after the first byte arrives (at a 5 ms resolution).
    int hold_conn = 0;
    int hold_after_ms = 0;
    int hold_ms = 0;
};

inline int make_listener(std::uint16_t port = 0, int backlog = 4096) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, backlog) != 0) {
        ::close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

// A listener on [::1]:<port> (IPv6 only), or -1 when IPv6 loopback is unavailable.
inline int make_listener6(std::uint16_t port = 0, int backlog = 4096) {
    int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    a.sin6_addr = in6addr_loopback;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, backlog) != 0) {
        ::close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

// A listener on the unix stream socket `path` (replaced if it exists), or -1.
inline int make_unix_listener(const std::string& path, int backlog = 4096) {
    sockaddr_un a{};
    if (path.size() >= sizeof a.sun_path) return -1;
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.data(), path.size());
    ::unlink(path.c_str());
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, backlog) != 0) {
        ::close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

inline std::uint16_t port_of(int fd) {  // IPv4 or IPv6 (0 for a unix socket)
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port);
    if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port);
    return 0;
}

// Runs the echo loop on listen_fd until stop becomes true.
inline void serve(int listen_fd, const ServerConfig& cfg, const std::atomic<bool>& stop) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listen_fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
    struct Peer {
        std::string out;
        bool eof = false;
        std::uint64_t id = 0;
        std::size_t delayed = 0;  // chunks waiting in `later`
    };
    struct Later {  // a delayed chunk; FIFO order is due order because the delay is constant
        std::chrono::steady_clock::time_point due;
        int fd;
        std::uint64_t id;
        std::string data;
    };
    std::deque<Later> later;
    std::uint64_t next_id = 0;
    std::unordered_map<int, Peer> peers;
    std::vector<epoll_event> evs(1024);
    std::vector<char> buf(1 << 16);
    bool stalled = false;
    auto first_byte = std::chrono::steady_clock::time_point{};
    bool got_first = false;
    bool hold_done = false;
    int held_fd = -1;  // the connection not read until hold_end
    auto hold_end = std::chrono::steady_clock::time_point{};
    auto close_peer = [&](int fd) {
        if (fd == held_fd) held_fd = -1;  // the number may come back with a new connection
        ::close(fd);
        peers.erase(fd);
    };
    auto want = [&](int fd, const Peer& p) {
        epoll_event e{};
        e.events = p.out.empty() ? (p.eof ? 0u : static_cast<std::uint32_t>(EPOLLIN)) : static_cast<std::uint32_t>(EPOLLOUT);
        if (fd == held_fd) e.events = 0;
        e.data.fd = fd;
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
    };
    auto try_write = [&](int fd, Peer& p) -> bool {  // false: peer closed
        while (!p.out.empty()) {
            ssize_t w = ::send(fd, p.out.data(), p.out.size(), MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN) break;
                return false;
            }
            p.out.erase(0, static_cast<std::size_t>(w));
        }
        if (p.out.empty() && p.eof && p.delayed == 0) return false;  // reply complete after half-close: FIN
        want(fd, p);
        return true;
    };
    while (!stop.load()) {
        if (!stalled && got_first && cfg.stall_after_ms >= 0 &&
            std::chrono::steady_clock::now() - first_byte > std::chrono::milliseconds(cfg.stall_after_ms)) {
            stalled = true;
            std::this_thread::sleep_for(std::chrono::milliseconds(cfg.stall_ms));
        }
        if (!hold_done && got_first && cfg.hold_conn > 0 &&
            std::chrono::steady_clock::now() - first_byte > std::chrono::milliseconds(cfg.hold_after_ms)) {
            hold_done = true;
            for (auto& [fd, p] : peers)
                if (p.id == static_cast<std::uint64_t>(cfg.hold_conn)) {
                    held_fd = fd;
                    hold_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg.hold_ms);
                    want(fd, p);
                }
        }
        if (held_fd >= 0 && std::chrono::steady_clock::now() >= hold_end) {
            const int fd = held_fd;
            held_fd = -1;
            if (auto it = peers.find(fd); it != peers.end()) want(fd, it->second);
        }
        int timeout_ms = 5;
        if (!later.empty()) {
            const auto left = later.front().due - std::chrono::steady_clock::now();
            const auto us = std::chrono::duration_cast<std::chrono::microseconds>(left).count();
            timeout_ms = us <= 0 ? 0 : std::min<int>(5, static_cast<int>((us + 999) / 1000));
        }
        int n = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), timeout_ms);
        const auto now = std::chrono::steady_clock::now();
        while (!later.empty() && later.front().due <= now) {
            Later l = std::move(later.front());
            later.pop_front();
            auto it = peers.find(l.fd);
            if (it == peers.end() || it->second.id != l.id) continue;  // peer gone
            --it->second.delayed;
            it->second.out += l.data;
            if (!try_write(l.fd, it->second)) close_peer(l.fd);
        }
        for (int k = 0; k < n; ++k) {
            const int fd = evs[static_cast<std::size_t>(k)].data.fd;
            if (fd == listen_fd) {
                for (;;) {
                    int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    epoll_event e{};
                    e.events = EPOLLIN;
                    e.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
                    peers[c].id = ++next_id;
                }
                continue;
            }
            auto it = peers.find(fd);
            if (it == peers.end()) continue;
            Peer& p = it->second;
            if (evs[static_cast<std::size_t>(k)].events & EPOLLOUT) {
                if (!try_write(fd, p)) close_peer(fd);
                continue;
            }
            ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
            if (r > 0) {
                if (!got_first) {
                    got_first = true;
                    first_byte = std::chrono::steady_clock::now();
                }
                if (cfg.corrupt) buf[0] = static_cast<char>(buf[0] ^ 0x20);
                if (cfg.delay_ms > 0) {
                    later.push_back({std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg.delay_ms), fd, p.id,
                                     std::string(buf.data(), static_cast<std::size_t>(r))});
                    ++p.delayed;
                    continue;
                }
                p.out.append(buf.data(), static_cast<std::size_t>(r));
                if (!try_write(fd, p)) close_peer(fd);
            } else if (r == 0) {
                p.eof = true;
                if (!try_write(fd, p)) close_peer(fd);
            } else if (errno != EAGAIN) {
                close_peer(fd);
            }
        }
    }
    for (auto& [fd, p] : peers) ::close(fd);
    ::close(ep);
}

// Echo server on 127.0.0.1:<ephemeral> (or on a given listener) in a background thread.
class TestServer {
public:
    explicit TestServer(ServerConfig cfg = {}) : TestServer(make_listener(), cfg) {}
    // On a listener of make_listener6() / make_unix_listener() (which must not be -1).
    TestServer(int listen_fd, ServerConfig cfg) : cfg_(cfg), lfd_(listen_fd) {
        port_ = port_of(lfd_);
        th_ = std::thread([this] { serve(lfd_, cfg_, stop_); });
    }
    ~TestServer() {
        stop_ = true;
        th_.join();
        ::close(lfd_);
    }
    TestServer(const TestServer&) = delete;
    TestServer& operator=(const TestServer&) = delete;
    std::uint16_t port() const { return port_; }

private:
    ServerConfig cfg_;
    int lfd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread th_;
};

}  // namespace floodtest

// Scripted misbehaving servers for the delivery checks of esockets-flood (--verify, pubsub).
// Each one is correct except on one connection, where it drops one message, sends one twice
// and swaps two neighbours, at positions the test chooses: the tool must count each fault
// exactly once, in its own counter.
//
// FaultEchoServer: echo by records (lines, or fixed-size records), one thread per connection.
// FaultChatServer: a one-thread SUB / PUB / MSG server (the esockets-chat protocol).
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "test_server.hpp"

namespace floodtest {

// Which records of the faulty connection (0-based, in arrival order) to mistreat; -1 = none.
struct Faults {
    long drop = -1;  // never sent
    long dup = -1;   // sent twice in a row
    long swap = -1;  // sent after record swap + 1
};

// Applies Faults to a stream of records; the caller sends what emit() returns, in order.
class FaultScript {
public:
    explicit FaultScript(Faults f) : f_(f) {}
    // Record number n arrived: appends what goes out now to `out`.
    void emit(long n, const std::string& rec, std::string& out) {
        if (n == f_.drop) return;
        if (n == f_.swap) {
            held_ = rec;
            return;
        }
        out += rec;
        if (n == f_.dup) out += rec;
        if (n == f_.swap + 1 && f_.swap >= 0) out += held_;
    }

private:
    Faults f_;
    std::string held_;
};

inline bool send_all_blocking(int fd, const std::string& s) {
    std::size_t off = 0;
    while (off < s.size()) {
        const ssize_t w = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
        if (w <= 0) return false;
        off += static_cast<std::size_t>(w);
    }
    return true;
}

// Echo server splitting the input into records ('\n'-terminated lines, or record_size bytes when
// record_size > 0); the first connection accepted gets the faults.
class FaultEchoServer {
public:
    FaultEchoServer(Faults faults, std::size_t record_size = 0) : faults_(faults), record_size_(record_size) {
        lfd_ = make_listener();
        port_ = port_of(lfd_);
        accept_thread_ = std::thread([this] { accept_loop(); });
    }
    ~FaultEchoServer() {
        stop_ = true;
        accept_thread_.join();
        {
            std::lock_guard<std::mutex> lk(mu_);
            for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
        }
        for (auto& t : conn_threads_) t.join();
        for (int fd : fds_) ::close(fd);
        ::close(lfd_);
    }
    FaultEchoServer(const FaultEchoServer&) = delete;
    FaultEchoServer& operator=(const FaultEchoServer&) = delete;
    std::uint16_t port() const { return port_; }

private:
    void accept_loop() {
        bool first = true;
        while (!stop_) {
            pollfd p{lfd_, POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0) continue;
            const int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) continue;
            std::lock_guard<std::mutex> lk(mu_);
            fds_.push_back(fd);
            conn_threads_.emplace_back([this, fd, first] { serve(fd, first ? faults_ : Faults{}); });
            first = false;
        }
    }
    void serve(int fd, Faults faults) {
        FaultScript script(faults);
        std::string pending, out;
        char buf[65536];
        long n = 0;
        for (;;) {
            const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
            if (r <= 0) return;
            pending.append(buf, static_cast<std::size_t>(r));
            out.clear();
            std::size_t pos = 0;
            for (;;) {
                std::size_t len = 0;
                if (record_size_ > 0) {
                    if (pending.size() - pos < record_size_) break;
                    len = record_size_;
                } else {
                    const std::size_t nl = pending.find('\n', pos);
                    if (nl == std::string::npos) break;
                    len = nl + 1 - pos;
                }
                script.emit(n++, pending.substr(pos, len), out);
                pos += len;
            }
            pending.erase(0, pos);
            if (!send_all_blocking(fd, out)) return;
        }
    }

    Faults faults_;
    std::size_t record_size_;
    int lfd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::vector<int> fds_;
    std::vector<std::thread> conn_threads_;
    std::thread accept_thread_;
};

// SUB <room> -> "OK SUB <room>"; PUB <room> <text> -> "MSG <room> <text>" to the room's members
// in the order they joined. The deliveries to the first connection that subscribed get the faults.
class FaultChatServer {
public:
    explicit FaultChatServer(Faults faults) : faults_(faults), script_(faults) {
        lfd_ = make_listener();
        port_ = port_of(lfd_);
        thread_ = std::thread([this] { loop(); });
    }
    ~FaultChatServer() {
        stop_ = true;
        thread_.join();
        for (auto& c : conns_) ::close(c.fd);
        ::close(lfd_);
    }
    FaultChatServer(const FaultChatServer&) = delete;
    FaultChatServer& operator=(const FaultChatServer&) = delete;
    std::uint16_t port() const { return port_; }

private:
    struct Peer {
        int fd;
        std::string in;
    };
    void deliver(int fd, const std::string& msg) {
        if (fd == victim_) {
            std::string out;
            script_.emit(victim_n_++, msg, out);
            send_all_blocking(fd, out);
        } else {
            send_all_blocking(fd, msg);
        }
    }
    void line(Peer& p, const std::string& l) {
        if (l.rfind("SUB ", 0) == 0) {
            const std::string room = l.substr(4);
            rooms_[room].push_back(p.fd);
            if (victim_ < 0) victim_ = p.fd;
            send_all_blocking(p.fd, "OK SUB " + room + "\n");
        } else if (l.rfind("PUB ", 0) == 0) {
            const std::size_t sp = l.find(' ', 4);
            if (sp == std::string::npos) return;
            const std::string msg = "MSG " + l.substr(4) + "\n";
            for (int fd : rooms_[l.substr(4, sp - 4)]) deliver(fd, msg);
        } else {
            send_all_blocking(p.fd, "ERR unknown command\n");
        }
    }
    void loop() {
        while (!stop_) {
            std::vector<pollfd> pf{{lfd_, POLLIN, 0}};
            for (auto& c : conns_) pf.push_back({c.fd, POLLIN, 0});
            if (::poll(pf.data(), pf.size(), 20) <= 0) continue;
            if (pf[0].revents) {
                const int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);  // blocking: writes block
                if (fd >= 0) conns_.push_back({fd, {}});
            }
            for (std::size_t k = 1; k < pf.size(); ++k) {
                if (!pf[k].revents) continue;
                Peer& p = conns_[k - 1];
                char buf[65536];
                const ssize_t r = ::recv(p.fd, buf, sizeof buf, MSG_DONTWAIT);
                if (r <= 0) continue;  // closed peers stay until the end; poll reports them as readable
                p.in.append(buf, static_cast<std::size_t>(r));
                std::size_t pos = 0, nl;
                while ((nl = p.in.find('\n', pos)) != std::string::npos) {
                    line(p, p.in.substr(pos, nl - pos));
                    pos = nl + 1;
                }
                p.in.erase(0, pos);
            }
        }
    }

    Faults faults_;
    FaultScript script_;
    int victim_ = -1;
    long victim_n_ = 0;
    int lfd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::vector<Peer> conns_;
    std::map<std::string, std::vector<int>> rooms_;
    std::thread thread_;
};

}  // namespace floodtest

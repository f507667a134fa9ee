// Servers in a forked child process for the esockets-flood stall and error-class tests: a child can
// be frozen with SIGSTOP (the kernel still accepts and ACKs for it, as for a real frozen server) and
// is killed at the end. One thread, poll(), loopback, a free port below 32768.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace floodtest {

enum class Behaviour {
    Echo,         // echo every byte
    BlackHole,    // read and never answer
    ResetOnData,  // RST (SO_LINGER 0) as soon as a request arrives
    HalfThenFin,  // echo half of the first chunk, then close (FIN): EOF in the middle of a reply
    ResetAfter,   // echo, but reset every connection reset_after_ms after it was accepted
};

class ChildServer {
public:
    explicit ChildServer(Behaviour b, int reset_after_ms = 300) {
        for (int attempt = 0; attempt < 50 && lfd_ < 0; ++attempt) {
            port_ = static_cast<std::uint16_t>(20000 + (::getpid() * 7 + attempt * 131) % 12000);
            lfd_ = listen_on(port_);
        }
        if (lfd_ < 0) return;
        pid_ = ::fork();
        if (pid_ == 0) {
            run(b, reset_after_ms);
            _exit(0);
        }
        ::close(lfd_);
    }
    ~ChildServer() {
        if (pid_ > 0) {
            ::kill(pid_, SIGCONT);
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    ChildServer(const ChildServer&) = delete;
    ChildServer& operator=(const ChildServer&) = delete;
    bool ok() const { return pid_ > 0; }
    pid_t pid() const { return pid_; }
    std::uint16_t port() const { return port_; }
    std::string port_arg() const { return std::to_string(port_); }
    // Freezes the server at `at` (from now) for `len` (SIGSTOP / SIGCONT); len < 0: until destroyed.
    void freeze(std::chrono::milliseconds at, std::chrono::milliseconds len) const {
        std::this_thread::sleep_for(at);
        ::kill(pid_, SIGSTOP);
        if (len.count() < 0) return;
        std::this_thread::sleep_for(len);
        ::kill(pid_, SIGCONT);
    }

private:
    static int listen_on(std::uint16_t port) {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 1024) != 0) {
            ::close(fd);
            return -1;
        }
        return fd;
    }
    static void reset(int fd) {
        linger lg{1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        ::close(fd);
    }
    [[noreturn]] void run(Behaviour b, int reset_after_ms) {
        struct Peer {
            int fd;
            std::chrono::steady_clock::time_point accepted;
        };
        std::vector<Peer> peers;
        char buf[65536];
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);  // bounded
        while (std::chrono::steady_clock::now() < deadline) {
            std::vector<pollfd> pf{{lfd_, POLLIN, 0}};
            for (auto& p : peers) pf.push_back({p.fd, POLLIN, 0});
            ::poll(pf.data(), pf.size(), 10);
            const auto now = std::chrono::steady_clock::now();
            if (pf[0].revents & POLLIN) {
                int c = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (c >= 0) peers.push_back({c, now});
            }
            std::vector<Peer> keep;
            for (std::size_t k = 0; k < peers.size(); ++k) {
                Peer p = peers[k];
                bool alive = true;
                if (b == Behaviour::ResetAfter && now - p.accepted > std::chrono::milliseconds(reset_after_ms)) {
                    reset(p.fd);
                    continue;
                }
                const short ev = k + 1 < pf.size() ? pf[k + 1].revents : 0;  // a peer accepted just now has none
                if (ev & (POLLIN | POLLHUP | POLLERR)) {
                    const ssize_t n = ::recv(p.fd, buf, sizeof buf, MSG_DONTWAIT);
                    if (n <= 0) {
                        ::close(p.fd);
                        alive = false;
                    } else if (b == Behaviour::ResetOnData) {
                        reset(p.fd);
                        alive = false;
                    } else if (b == Behaviour::HalfThenFin) {
                        (void)::send(p.fd, buf, static_cast<std::size_t>(n) / 2, MSG_NOSIGNAL);
                        ::close(p.fd);
                        alive = false;
                    } else if (b != Behaviour::BlackHole) {
                        (void)::send(p.fd, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL);
                    }
                }
                if (alive) keep.push_back(p);
            }
            peers.swap(keep);
        }
        _exit(0);
    }
    int lfd_ = -1;
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
};

}  // namespace floodtest

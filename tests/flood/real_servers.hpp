// Real redis-server and nginx processes for the --protocol resp / http tests of esockets-flood.
// Each runs in the foreground as a child on a free loopback port below 32768 (random in 20000..32000,
// retried on collision) and is stopped (SIGTERM, then SIGKILL) when the object goes away. Blocking
// helpers with timeouts talk to them: raw RESP commands (framed with the tool's own parser) and
// plain HTTP GETs. Every wait is bounded.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "http_parser.hpp"
#include "resp_parser.hpp"

namespace floodtest {

inline bool have_program(const char* name) {
    const char* path = std::getenv("PATH");
    std::string p = path ? path : "/usr/bin:/bin:/usr/sbin:/sbin";
    p += ":/usr/sbin:/sbin";
    std::size_t pos = 0;
    while (pos <= p.size()) {
        std::size_t c = p.find(':', pos);
        if (c == std::string::npos) c = p.size();
        const std::string f = p.substr(pos, c - pos) + "/" + name;
        if (::access(f.c_str(), X_OK) == 0) return true;
        pos = c + 1;
    }
    return false;
}

// A blocking loopback connection with 5 s send/receive timeouts; -1 when refused.
inline int connect_loopback(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

inline bool port_free(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

inline std::uint16_t random_port() {
    static std::mt19937 rng(static_cast<unsigned>(std::random_device{}() ^ static_cast<unsigned>(::getpid())));
    for (int k = 0; k < 200; ++k) {
        const auto p = static_cast<std::uint16_t>(20000 + rng() % 12000);
        if (port_free(p)) return p;
    }
    return 0;
}

// A child process running argv; stop() ends it (bounded).
class ChildProcess {
public:
    ChildProcess() = default;
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;
    ~ChildProcess() { stop(); }
    bool start(std::vector<std::string> args, const std::string& log) {
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        pid_ = ::fork();
        if (pid_ == 0) {  // only async-signal-safe calls until exec
            const int f = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (f >= 0) {
                dup2(f, 1);
                dup2(f, 2);
            }
            execvp(argv[0], argv.data());
            _exit(127);
        }
        return pid_ > 0;
    }
    bool running() {
        if (pid_ <= 0) return false;
        int st = 0;
        if (waitpid(pid_, &st, WNOHANG) == pid_) {
            pid_ = -1;
            return false;
        }
        return true;
    }
    void stop() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGTERM);
        for (int k = 0; k < 300; ++k) {  // 3 s
            int st = 0;
            if (waitpid(pid_, &st, WNOHANG) == pid_) {
                pid_ = -1;
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        ::kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

private:
    pid_t pid_ = -1;
};

// Sends one command as a RESP array and returns the raw reply ("" on failure).
inline std::string redis_command(std::uint16_t port, const std::vector<std::string>& words) {
    int fd = connect_loopback(port);
    if (fd < 0) return "";
    std::string req = "*" + std::to_string(words.size()) + "\r\n";
    for (auto& w : words) {
        req += '$';
        req += std::to_string(w.size());
        req += "\r\n";
        req += w;
        req += "\r\n";
    }
    std::string reply;
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
        flood::RespReplyParser p;
        char buf[65536];
        for (int reads = 0; reads < 10000; ++reads) {
            const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
            if (r <= 0) {
                reply.clear();
                break;
            }
            std::size_t used = 0;
            const auto st = p.feed(reinterpret_cast<unsigned char*>(buf), static_cast<std::size_t>(r), used);
            reply.append(buf, used);
            if (st == flood::RespReplyParser::kDone) break;
            if (st == flood::RespReplyParser::kBad) {
                reply.clear();
                break;
            }
        }
    }
    ::close(fd);
    return reply;
}

// The number after "<field>:" or "<field>=" in a reply (e.g. INFO text), -1 when absent.
inline long long field_value(const std::string& text, const std::string& field) {
    std::size_t pos = text.find(field);
    if (pos == std::string::npos) return -1;
    pos += field.size();
    return std::strtoll(text.c_str() + pos, nullptr, 10);
}

// "cmdstat_set:calls=N,..." -> N (0 when the command was never called).
inline long long redis_calls(std::uint16_t port, const std::string& cmd) {
    const std::string info = redis_command(port, {"INFO", "commandstats"});
    if (info.empty()) return -1;
    const long long v = field_value(info, "cmdstat_" + cmd + ":calls=");
    return v < 0 ? 0 : v;
}

class RedisServer {
public:
    RedisServer() {
        if (!have_program("redis-server")) {
            why_ = "redis-server is not installed";
            return;
        }
        char tmpl[] = "/tmp/floodredis.XXXXXX";
        dir_ = mkdtemp(tmpl) ? tmpl : "/tmp";
        for (int attempt = 0; attempt < 5 && !port_; ++attempt) {
            const std::uint16_t p = random_port();
            if (!p) break;
            proc_.start({"redis-server", "--port", std::to_string(p), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--daemonize", "no", "--dir", dir_},
                        dir_ + "/redis.log");
            for (int k = 0; k < 500 && proc_.running(); ++k) {  // 5 s
                if (redis_command(p, {"PING"}) == "+PONG\r\n") {
                    port_ = p;
                    break;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
            if (!port_) proc_.stop();  // port taken meanwhile (or a slow start): another one
        }
        if (!port_) why_ = "redis-server did not start (see " + dir_ + "/redis.log)";
    }
    ~RedisServer() {
        proc_.stop();
        ::unlink((dir_ + "/redis.log").c_str());
        ::rmdir(dir_.c_str());
    }
    std::uint16_t port() const { return port_; }
    const std::string& why() const { return why_; }

private:
    ChildProcess proc_;
    std::string dir_, why_;
    std::uint16_t port_ = 0;
};

// GET path over a new connection; returns the whole response ("" on failure).
inline std::string http_get(std::uint16_t port, const std::string& path) {
    int fd = connect_loopback(port);
    if (fd < 0) return "";
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    std::string resp;
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
        char buf[16384];
        for (int reads = 0; reads < 1000; ++reads) {
            const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
            if (r <= 0) break;
            resp.append(buf, static_cast<std::size_t>(r));
        }
    }
    ::close(fd);
    return resp;
}

// nginx, one worker, serving /plaintext (200 "Hello, World!"), /missing (404), /chunked (the same
// text through sub_filter, which sends it chunked) and /status (stub_status: the requests served).
class NginxServer {
public:
    explicit NginxServer(int keepalive_requests = 1000) {
        if (!have_program("nginx")) {
            why_ = "nginx is not installed";
            return;
        }
        char tmpl[] = "/tmp/floodnginx.XXXXXX";
        dir_ = mkdtemp(tmpl) ? tmpl : "/tmp";
        ::mkdir((dir_ + "/tmp").c_str(), 0700);
        for (int attempt = 0; attempt < 5 && !port_; ++attempt) {
            const std::uint16_t p = random_port();
            if (!p) break;
            std::ofstream(dir_ + "/nginx.conf")
                << "worker_processes 1;\nerror_log " << dir_ << "/error.log;\npid " << dir_ << "/nginx.pid;\n"
                << "events { worker_connections 4096; }\nhttp {\n  access_log off;\n"
                << "  keepalive_requests " << keepalive_requests << ";\n"
                << "  client_body_temp_path " << dir_ << "/tmp;\n  proxy_temp_path " << dir_ << "/tmp;\n"
                << "  fastcgi_temp_path " << dir_ << "/tmp;\n  uwsgi_temp_path " << dir_ << "/tmp;\n"
                << "  scgi_temp_path " << dir_ << "/tmp;\n"
                << "  server {\n    listen 127.0.0.1:" << p << ";\n"
                << "    location /plaintext { default_type text/plain; return 200 \"Hello, World!\"; }\n"
                << "    location /missing { return 404; }\n"
                << "    location /chunked { default_type text/plain; sub_filter World nginx; sub_filter_once off;\n"
                << "      sub_filter_types text/plain; return 200 \"Hello, World!\"; }\n"
                << "    location = /status { stub_status; }\n  }\n}\n";
            proc_.start({"nginx", "-p", dir_, "-c", dir_ + "/nginx.conf", "-g", "daemon off;"}, dir_ + "/out.log");
            for (int k = 0; k < 500 && proc_.running(); ++k) {  // 5 s
                if (http_get(p, "/status").rfind("HTTP/1.1 200", 0) == 0) {
                    port_ = p;
                    break;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
            if (!port_) proc_.stop();
        }
        if (!port_) why_ = "nginx did not start (see " + dir_ + "/error.log)";
    }
    ~NginxServer() {
        proc_.stop();
        for (const char* f : {"/nginx.conf", "/error.log", "/out.log", "/nginx.pid"}) ::unlink((dir_ + f).c_str());
        ::rmdir((dir_ + "/tmp").c_str());
        ::rmdir(dir_.c_str());
    }
    std::uint16_t port() const { return port_; }
    const std::string& why() const { return why_; }
    // Requests nginx has served so far (stub_status; this query itself included), -1 on failure.
    long long served() const {
        const std::string r = http_get(port_, "/status");
        const std::size_t h = r.find("handled requests");
        if (h == std::string::npos) return -1;
        long long a = 0, b = 0, n = -1;
        if (std::sscanf(r.c_str() + h + 16, "%lld %lld %lld", &a, &b, &n) != 3) return -1;
        return n;
    }

private:
    ChildProcess proc_;
    std::string dir_, why_;
    std::uint16_t port_ = 0;
};

}  // namespace floodtest

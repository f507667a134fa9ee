// esockets-chat as a subprocess for the tests: started on an ephemeral port (the port is read
// from its "listening on" line), stopped with a signal, its output and exit status kept.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifndef ESOCKETS_CHAT_PATH
#error "ESOCKETS_CHAT_PATH must point at the built esockets-chat"
#endif

extern char** environ;

namespace floodtest {

class ChatProcess {
public:
    // Runs esockets-chat with args (add "--port", "0" for an ephemeral port). When the process is
    // expected to serve, start() waits for its listening line.
    explicit ChatProcess(std::vector<std::string> args) {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, p[1], 1);
        posix_spawn_file_actions_adddup2(&fa, p[1], 2);
        args.insert(args.begin(), ESOCKETS_CHAT_PATH);
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        const int rc = posix_spawn(&pid_, ESOCKETS_CHAT_PATH, &fa, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        ::close(p[1]);
        out_fd_ = p[0];
        if (rc != 0) {
            pid_ = -1;
            throw std::runtime_error("posix_spawn esockets-chat failed");
        }
    }
    ~ChatProcess() {
        if (pid_ > 0 && status_ == -1) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (out_fd_ >= 0) ::close(out_fd_);
    }
    ChatProcess(const ChatProcess&) = delete;
    ChatProcess& operator=(const ChatProcess&) = delete;

    // Waits (up to timeout) for "listening on host:PORT"; the port, or 0.
    std::uint16_t wait_listening(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            const auto at = output_.find("listening on ");
            if (at != std::string::npos) {
                const auto nl = output_.find('\n', at);
                const auto colon = output_.rfind(':', nl);
                if (nl != std::string::npos && colon != std::string::npos && colon > at)
                    return static_cast<std::uint16_t>(std::atoi(output_.c_str() + colon + 1));
            }
            if (!pump(20)) break;
        }
        return 0;
    }
    // Sends sig (if still running) and waits up to timeout for the exit; the exit status (128 +
    // signal for a kill), or -1 on timeout.
    int stop(int sig, std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
        if (status_ != -1) return status_;
        if (sig) ::kill(pid_, sig);
        return wait_exit(timeout);
    }
    int wait_exit(std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            int st = 0;
            if (::waitpid(pid_, &st, WNOHANG) == pid_) {
                while (pump(0)) {
                }
                status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                return status_;
            }
            pump(20);
        }
        return -1;
    }
    const std::string& output() const { return output_; }

private:
    // Reads what is available within ms; false at EOF.
    bool pump(int ms) {
        pollfd p{out_fd_, POLLIN, 0};
        if (::poll(&p, 1, ms) <= 0) return true;
        char buf[4096];
        const ssize_t r = ::read(out_fd_, buf, sizeof buf);
        if (r <= 0) return false;
        output_.append(buf, static_cast<std::size_t>(r));
        return true;
    }

    pid_t pid_ = -1;
    int out_fd_ = -1;
    int status_ = -1;
    std::string output_;
};

}  // namespace floodtest

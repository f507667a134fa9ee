// flood_echo_server [--port P] [--procs N] [--seconds S]: echo server for manual esockets-flood
// measurements. --procs forks N processes sharing one listening socket so that the
// server side gets N fd budgets (e.g. 19,000 connections with RLIMIT_NOFILE 20000).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "test_server.hpp"

int main(int argc, char** argv) {
    int port = 0, procs = 1, seconds = 60;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--port")) port = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--procs")) procs = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--seconds")) seconds = std::atoi(argv[i + 1]);
    }
    int lfd = floodtest::make_listener(static_cast<std::uint16_t>(port));
    if (lfd < 0) {
        std::perror("listen");
        return 1;
    }
    std::printf("%u\n", floodtest::port_of(lfd));
    std::fflush(stdout);
    std::vector<pid_t> kids;
    for (int p = 0; p < procs; ++p) {
        pid_t pid = fork();
        if (pid == 0) {
            std::atomic<bool> stop{false};
            std::thread t([&] { floodtest::serve(lfd, {}, stop); });
            std::this_thread::sleep_for(std::chrono::seconds(seconds));
            stop = true;
            t.join();
            _exit(0);
        }
        kids.push_back(pid);
    }
    for (pid_t k : kids) waitpid(k, nullptr, 0);
    return 0;
}

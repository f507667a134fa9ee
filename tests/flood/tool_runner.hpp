// Runs esockets-flood as a subprocess for the tests: arguments in, exit code, stdout, stderr and
// the parsed --json result out. FloodTest is the fixture (a temp dir for the files).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mini_json.hpp"

#ifndef ESOCKETS_FLOOD_PATH
#error "ESOCKETS_FLOOD_PATH must point at the built esockets-flood"
#endif
#ifndef ESOCKETS_TEST_SCALE
#define ESOCKETS_TEST_SCALE 1
#endif

namespace floodtest {

inline std::string slurp(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

struct ToolRun {
    int code = -1;
    std::string out, err, json_text;
    JValue json;
    bool json_ok = false;
};

class FloodTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/floodtest.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        for (const char* f : {"/out", "/err", "/result.json", "/stream.jsonl"}) ::unlink((dir_ + f).c_str());
        ::rmdir(dir_.c_str());
    }
    std::string path(const char* f) const { return dir_ + f; }

    // Runs the tool with args (plus --json into the temp dir), killing it after timeout_s.
    // during(pid), if given, runs in a thread beside the tool (e.g. to SIGSTOP a server or the tool).
    // nofile > 0: the tool's child process runs with RLIMIT_NOFILE lowered to it.
    ToolRun flood(std::vector<std::string> args, int timeout_s = 30, bool with_json = true,
                  const std::function<void(pid_t)>& during = {}, rlim_t nofile = 0) {
        if (with_json) {
            args.insert(args.begin(), path("/result.json"));
            args.insert(args.begin(), "--json");
        }
        ::unlink(path("/result.json").c_str());
        std::vector<char*> argv;
        std::string exe = ESOCKETS_FLOOD_PATH;
        argv.push_back(exe.data());
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        const std::string out = path("/out"), err = path("/err");
        pid_t pid = fork();
        if (pid == 0) {
            if (nofile > 0) {
                rlimit rl{nofile, nofile};
                if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(126);
            }
            int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            dup2(o, 1);
            dup2(e, 2);
            execv(argv[0], argv.data());
            _exit(127);
        }
        ToolRun r;
        std::thread side;
        if (during) side = std::thread([&during, pid] { during(pid); });
        struct Join {
            std::thread& t;
            ~Join() {
                if (t.joinable()) t.join();
            }
        } join{side};
        int st = 0;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
        for (;;) {
            pid_t w = waitpid(pid, &st, WNOHANG);
            if (w == pid) break;
            if (std::chrono::steady_clock::now() > deadline) {
                kill(pid, SIGKILL);
                waitpid(pid, &st, 0);
                ADD_FAILURE() << "esockets-flood did not finish within " << timeout_s << " s";
                return r;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        r.out = slurp(out);
        r.err = slurp(err);
        if (with_json) {
            r.json_text = slurp(path("/result.json"));
            r.json_ok = !r.json_text.empty() && JParser(r.json_text).parse(r.json);
        }
        return r;
    }
    std::string dir_;
};

inline double errors_total(const ToolRun& r) { return r.json["errors"]["total"].num(); }

// Exit 5 means the tool judged its own measurement invalid (a thread of it saturated or lagging,
// e.g. on an overloaded shared CI machine): the run measured nothing, so it is neither a pass nor a
// failure of what a test checks. ASSERT_VALID_RUN skips the test with the tool's reason; any other
// non-zero exit is a failure. (Tests that provoke exit 5 on purpose check r.code == 5 themselves.)
inline bool ok_exit(const ToolRun& r) { return r.code == 0; }
inline std::string invalid_reason(const ToolRun& r) {
    const auto p = r.out.find("exit 5:");
    return p == std::string::npos ? r.out : r.out.substr(p, r.out.find('\n', p) - p);
}
#define ASSERT_VALID_RUN(r)                                                                        \
    if ((r).code == 5)                                                                             \
        GTEST_SKIP() << "esockets-flood judged this run invalid (the machine was too busy for a "  \
                        "measurement): "                                                           \
                     << ::floodtest::invalid_reason(r);                                            \
    else                                                                                           \
        ASSERT_EQ((r).code, 0)

// Divides a count by ESOCKETS_TEST_SCALE (sanitizer builds run several times slower), at least lo.
inline int scaled(int n, int lo) {
    const int s = n / ESOCKETS_TEST_SCALE;
    return s < lo ? lo : s;
}

}  // namespace floodtest

// tests/processes: the supervisor process under test (supervisor_helper, a program of its own)
// as the tests drive it, and the client helpers they share.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <cstdio>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "child_process.hpp"
#include "test_support.hpp"

namespace esockets::test {

// A private directory for takeover sockets (path() is "P", slot i's socket "P.i"), removed
// with what is left in it.
class SocketDir {
 public:
  SocketDir() {
    char tmpl[] = "/tmp/esk-upgrade-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
  }
  ~SocketDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  SocketDir(const SocketDir&) = delete;
  SocketDir& operator=(const SocketDir&) = delete;
  std::string path() const { return dir_ + "/ctl"; }
  std::string slot(unsigned i) const { return path() + "." + std::to_string(i); }

 private:
  std::string dir_;
};

// The supervisor process (supervisor_helper: a program of its own, so that it forks from a
// single-threaded process) and the lines it writes: "started|ready|exited P PID [STATUS]",
// "all_ready PORT ADMIN", "stopping", "handed_over P PID", "restarting P PID TEXT", then
// "total ...", "process P ..." and "takeover OUT IN HANDED_OVER" after run().
class Supervised {
 public:
  explicit Supervised(const std::vector<std::string>& args) {
    std::vector<std::string> argv{ESOCKETS_SUPERVISOR_HELPER};
    argv.insert(argv.end(), args.begin(), args.end());
    if (!p_.spawn(argv, ChildProcess::Stderr::file)) throw std::runtime_error("spawn supervisor_helper");
  }

  // The next line starting with `prefix` (lines before it are skipped); "" on timeout or end.
  std::string wait_line(const std::string& prefix, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      const std::string& out = p_.output();
      std::size_t nl;
      while ((nl = out.find('\n', pos_)) != std::string::npos) {
        std::string line = out.substr(pos_, nl - pos_);
        pos_ = nl + 1;
        if (line.rfind(prefix, 0) == 0) return line;
      }
      if (Clock::now() >= deadline) return "";
      const bool ended = !p_.alive();
      const std::size_t before = p_.output().size();
      p_.output(20ms);
      if (ended && p_.output().size() == before) return "";
    }
  }
  // SIGTERM (or nothing with send = false), then its exit code once it ended; -1 on timeout.
  int terminate(bool send = true, std::chrono::milliseconds timeout = 15s) {
    if (send) ::kill(p_.pid(), SIGTERM);
    const auto deadline = Clock::now() + timeout;
    while (p_.alive() && Clock::now() < deadline) p_.output(20ms);
    return p_.stop(1s);
  }
  std::string log() { return p_.output() + p_.err(); }
  pid_t pid() const { return p_.pid(); }

 private:
  ChildProcess p_;
  std::size_t pos_ = 0;
};

inline std::vector<std::uint64_t> numbers(const std::string& line) {
  std::istringstream in(line);
  std::string word;
  in >> word;
  std::vector<std::uint64_t> out;
  std::uint64_t v;
  while (in >> v) out.push_back(v);
  return out;
}

// "who" over a client: {process, pid}, or {-1, -1}.
inline std::pair<int, int> who(Client& c) {
  std::string line;
  if (!c.send_line("who") || !c.recv_line(line, 5s)) return {-1, -1};
  int p = -1, pid = -1;
  std::sscanf(line.c_str(), "%d %d", &p, &pid);
  return {p, pid};
}

// `rounds` rounds of `burst` pipelined sequence-numbered lines; true if each came back exactly
// and in order. Adds what it sent to *messages and *bytes.
inline bool echo_rounds(Client& c, std::size_t id, int first, int rounds, int burst,
                        std::uint64_t* messages, std::uint64_t* bytes) {
  for (int r = 0; r < rounds; ++r) {
    std::string out;
    std::vector<std::string> want;
    for (int k = 0; k < burst; ++k) {
      std::string line = "c";  // (appended, not a chain of +: GCC 12 warns -Wrestrict on that)
      line += std::to_string(id);
      line += " s";
      line += std::to_string(first + r * burst + k);
      line += ' ';
      line.append(8 + (id + static_cast<std::size_t>(k)) % 40, 'x');
      want.push_back(std::move(line));
      out += want.back() + "\n";
    }
    if (!c.send_all(out)) return false;
    for (const std::string& w : want) {
      std::string got;
      if (!c.recv_line(got, 5s) || got != w) return false;
    }
    if (messages) *messages += static_cast<std::uint64_t>(burst);
    if (bytes) *bytes += out.size();
  }
  return true;
}

inline const char* source(std::size_t i) {
  static const char* const kSources[] = {"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4",
                                         "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"};
  return kSources[i % 8];
}

}  // namespace esockets::test

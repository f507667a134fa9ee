// Shared pieces of the baseline echo servers: command line, SO_REUSEPORT listeners, and the
// stop-signal handling. Header-only; each baseline is a single .cpp file.
//
// CLI (all baselines):  --host H (default 127.0.0.1)  --port P (0 = ephemeral)
//                       --threads N (default 2)  --buf BYTES (default 65536)  --backlog N
// First stdout line: "<name> listening on HOST:PORT (threads=N buf=B)".
// SIGTERM / SIGINT -> exit 0. Bad flag -> message on stderr, exit 2. Cannot start -> exit 1.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace baseline {

struct Args {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  unsigned threads = 2;
  std::size_t buf = 64 * 1024;
  int backlog = 4096;
};

[[noreturn]] inline void usage_error(const char* name, const std::string& msg) {
  std::fprintf(stderr, "%s: %s\n(run %s --help for the flags)\n", name, msg.c_str(), name);
  std::exit(2);
}

template <class T>
T parse_number(const char* name, std::string_view flag, std::string_view v, T lo, T hi) {
  T out{};
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size() || out < lo || out > hi) {
    usage_error(name, std::string(flag) + " needs a whole number between " + std::to_string(lo) +
                          " and " + std::to_string(hi) + ", not '" + std::string(v) + "'");
  }
  return out;
}

inline Args parse_args(const char* name, const char* what, int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string_view f = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) usage_error(name, std::string(f) + " needs a value");
      return argv[++i];
    };
    if (f == "-h" || f == "--help") {
      std::printf(
          "usage: %s [options]\n"
          "%s\n"
          "  --host H        numeric IPv4 address to bind (default 127.0.0.1)\n"
          "  --port P        port (default 0 = ephemeral; the bound port is printed)\n"
          "  --threads N     event-loop threads, one SO_REUSEPORT listener each (default 2)\n"
          "  --buf BYTES     read buffer size (default 65536)\n"
          "  --backlog N     listen backlog (default 4096)\n"
          "SIGTERM/SIGINT stop it (exit 0); a bad flag exits 2.\n",
          name, what);
      std::exit(0);
    } else if (f == "--host") {
      a.host = std::string(value());
      in_addr tmp{};
      if (::inet_pton(AF_INET, a.host.c_str(), &tmp) != 1) {
        usage_error(name, "--host needs a numeric IPv4 address, not '" + a.host + "'");
      }
    } else if (f == "--port") {
      a.port = parse_number<std::uint16_t>(name, f, value(), 0, 65535);
    } else if (f == "--threads") {
      a.threads = parse_number<unsigned>(name, f, value(), 1, 256);
    } else if (f == "--buf") {
      a.buf = parse_number<std::size_t>(name, f, value(), 512, std::size_t{64} << 20);
    } else if (f == "--backlog") {
      a.backlog = parse_number<int>(name, f, value(), 1, 1 << 20);
    } else {
      usage_error(name, "unknown flag '" + std::string(f) + "'");
    }
  }
  return a;
}

[[noreturn]] inline void die(const char* name, const char* what) {
  std::fprintf(stderr, "%s: %s: %s\n", name, what, std::strerror(errno));
  std::exit(1);
}

/// A bound, listening, non-blocking TCP socket with SO_REUSEPORT. Port 0 picks an ephemeral
/// port; call it again with the returned port for the other threads' listeners.
inline int make_listener(const char* name, const Args& a, std::uint16_t port, std::uint16_t* bound) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die(name, "socket");
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) die(name, "SO_REUSEPORT");
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  ::inet_pton(AF_INET, a.host.c_str(), &sa.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die(name, "bind");
  if (::listen(fd, a.backlog) != 0) die(name, "listen");
  socklen_t len = sizeof sa;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) die(name, "getsockname");
  if (bound != nullptr) *bound = ntohs(sa.sin_port);
  return fd;
}

/// One listener per thread, all on the same port (the first one picks it when port is 0).
inline std::uint16_t make_listeners(const char* name, const Args& a, int* fds) {
  std::uint16_t port = 0;
  fds[0] = make_listener(name, a, a.port, &port);
  for (unsigned i = 1; i < a.threads; ++i) fds[i] = make_listener(name, a, port, nullptr);
  return port;
}

inline void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/// Call before starting threads: they inherit the mask, so only wait_for_stop() sees the signals.
inline void block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

inline void print_listening(const char* name, const Args& a, std::uint16_t port) {
  std::printf("%s listening on %s:%u (threads=%u buf=%zu)\n", name, a.host.c_str(), port, a.threads,
              a.buf);
  std::fflush(stdout);
}

/// Blocks until SIGINT/SIGTERM, then ends the process with status 0. The event loops are not
/// unwound: the kernel closes every socket, which is all an echo server owes its clients.
[[noreturn]] inline void wait_for_stop() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(0);
}

}  // namespace baseline

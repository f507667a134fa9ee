// The takeover control socket: a Unix SOCK_SEQPACKET socket at a path, where a new process
// finds the old one. Listening (replacing only a stale socket file), accepting and connecting
// with deadlines, the liveness probe and the peer-credentials check (takeover_wire.hpp).
// Thread: any.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <thread>

#include "takeover/takeover_wire.hpp"
#include "takeover/wire_util.hpp"

namespace esockets::detail {

using wire::Clock;
using wire::errno_text;
using wire::ms_text;
using wire::wait_fd;

namespace {

std::string where(const std::string& path) { return "takeover control socket '" + path + "'"; }

bool control_address(const std::string& path, sockaddr_un& sun, socklen_t& len,
                     std::string& error) {
  std::memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sun.sun_path || path.find('\0') != std::string::npos) {
    error = where(path) + ": a path of 1 to " + std::to_string(sizeof sun.sun_path - 1) +
            " bytes without NUL is needed; choose a shorter path";
    return false;
  }
  std::memcpy(sun.sun_path, path.data(), path.size());
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return true;
}

int probe_connect(const sockaddr_un& sun, socklen_t len, pid_t* listener = nullptr) {
  const int probe = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) return -errno;
  const int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&sun), len);
  const int err = errno;
  if (rc == 0 && listener != nullptr) {
    ucred cred{};
    socklen_t clen = sizeof cred;
    if (::getsockopt(probe, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) *listener = cred.pid;
  }
  ::close(probe);
  return rc == 0 ? 0 : err;
}

// Someone accepts there: EPROTOTYPE is a live socket of another type.
bool probe_says_live(int err) { return err == 0 || err == EAGAIN || err == EPROTOTYPE; }

// Probes a socket file left at a path: true if it is stale (nobody accepts on it), false with
// `error` if it is live or cannot be judged.
bool is_stale(const std::string& path, const sockaddr_un& sun, socklen_t len, std::string& error) {
  const int err = probe_connect(sun, len);
  if (err < 0) {
    error = where(path) + ": " + errno_text("socket", -err);
    return false;
  }
  if (probe_says_live(err)) {
    error = where(path) +
            ": another process is listening on it (a takeover already under way?); "
            "stop it or choose another path";
    return false;
  }
  if (err != ECONNREFUSED) {
    error = where(path) + ": cannot tell whether the socket file there is stale (" +
            errno_text("connect", err) + "); remove it by hand if nothing uses it";
    return false;
  }
  return true;
}

}  // namespace

bool control_socket_live(const std::string& path) { return control_socket_owner(path) >= 0; }

pid_t control_socket_owner(const std::string& path) {
  sockaddr_un sun{};
  socklen_t len = 0;
  std::string error;
  struct stat st {};
  if (!control_address(path, sun, len, error) || ::lstat(path.c_str(), &st) != 0 ||
      !S_ISSOCK(st.st_mode)) {
    return -1;
  }
  pid_t pid = 0;
  const int err = probe_connect(sun, len, &pid);
  if (!probe_says_live(err)) return -1;
  return pid > 0 ? pid : 0;
}

// ---- control socket ----

int listen_control(const std::string& path, std::string& error) {
  sockaddr_un sun{};
  socklen_t len = 0;
  if (!control_address(path, sun, len, error)) return -1;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      error =
          where(path) + ": the path exists and is not a socket; remove it or choose another path";
      return -1;
    }
    if (!is_stale(path, sun, len, error)) return -1;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      error = where(path) + ": cannot remove the stale socket file (" +
              errno_text("unlink", errno) + "); remove it by hand";
      return -1;
    }
  } else if (errno != ENOENT) {
    error = where(path) + ": " + errno_text("lstat", errno) + "; check the directory";
    return -1;
  }
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = where(path) + ": " + errno_text("socket", errno);
    return -1;
  }
  // The file must never exist with a wider mode than 0600. Linux's bind() gives it the socket
  // inode's mode less the umask, so the inode is narrowed first (fchmod). The umask is left
  // alone: it is process-wide, and the engine's other threads may be creating files. The
  // result is checked below all the same.
  (void)::fchmod(fd, 0600);
  const int rc = ::bind(fd, reinterpret_cast<const sockaddr*>(&sun), len);
  const int err = errno;
  if (rc != 0) {
    ::close(fd);
    error =
        where(path) + ": " + errno_text("bind", err) +
        (err == EADDRINUSE ? "; another process created it just now: retry or choose another path"
         : err == EACCES   ? "; no permission to create a file in that directory"
         : err == ENOENT   ? "; the directory does not exist"
                           : "");
    return -1;
  }
  if (::lstat(path.c_str(), &st) != 0 || (st.st_mode & 07777) != 0600 || st.st_uid != ::geteuid()) {
    ::close(fd);
    (void)::unlink(path.c_str());
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    error = where(path) + ": the socket file came out with mode " + mode + " and uid " +
            std::to_string(st.st_uid) + ", not 0600 and uid " + std::to_string(::geteuid()) +
            "; put it on a filesystem that keeps Unix permissions";
    return -1;
  }
  if (::listen(fd, 8) != 0) {
    const int lerr = errno;
    ::close(fd);
    (void)::unlink(path.c_str());
    error = where(path) + ": " + errno_text("listen", lerr);
    return -1;
  }
  return fd;
}

int accept_control(int listen_fd, std::chrono::milliseconds timeout, std::string& error) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return fd;
    const int err = errno;
    if (err == EINTR || err == ECONNABORTED) continue;
    if (err != EAGAIN && err != EWOULDBLOCK) {
      error = "takeover control socket: " + errno_text("accept", err);
      return -1;
    }
    const int w = wait_fd(listen_fd, POLLIN, deadline);
    if (w == 0) {
      error = "takeover control socket: no new process connected within " + ms_text(timeout);
      return -1;
    }
    if (w < 0) {
      error = "takeover control socket: " + errno_text("poll", errno);
      return -1;
    }
  }
}

int connect_control(const std::string& path, std::chrono::milliseconds timeout,
                    std::string& error) {
  sockaddr_un sun{};
  socklen_t len = 0;
  if (!control_address(path, sun, len, error)) return -1;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      error = where(path) + ": " + errno_text("socket", errno);
      return -1;
    }
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&sun), len) == 0) return fd;
    const int err = errno;
    ::close(fd);
    if (err == EINTR) continue;
    // A full backlog: a non-blocking Unix connect fails with EAGAIN instead of waiting.
    if (err == EAGAIN && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    error = where(path) + ": " + errno_text("connect", err);
    if (err == ENOENT) error += "; is the old process running with takeover enabled on this path?";
    if (err == ECONNREFUSED) {
      error += "; nothing listens on it (a stale file): enable takeover in the old process first";
    }
    if (err == EACCES || err == EPERM) error += "; run as the same user as the old process";
    if (err == EPROTOTYPE) error += "; that socket is not a takeover control socket";
    if (err == EAGAIN) error += "; the old process did not accept within " + ms_text(timeout);
    return -1;
  }
}

bool peer_is_user(int fd, std::uint32_t expected_uid, std::string& why) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    why = "takeover peer: " + errno_text("SO_PEERCRED", errno);
    return false;
  }
  if (cred.uid != expected_uid) {
    why = "takeover peer refused: pid " + std::to_string(cred.pid) + " runs as uid " +
          std::to_string(cred.uid) + ", this process as uid " + std::to_string(expected_uid) +
          "; run both processes as the same user";
    return false;
  }
  return true;
}

bool peer_is_same_user(int fd, std::string& why) { return peer_is_user(fd, ::geteuid(), why); }

}  // namespace esockets::detail

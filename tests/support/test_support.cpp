#include "test_support.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <system_error>

namespace esockets::test {

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(1ms);
  }
}

int watchdog_seconds() {
  if (const char* e = std::getenv("ESOCKETS_TEST_WATCHDOG")) {
    int v = std::atoi(e);
    if (v > 0) return v;
  }
  return 120;
}

const char* to_string(EofResult r) {
  switch (r) {
    case EofResult::eof: return "eof";
    case EofResult::reset: return "reset";
    case EofResult::timeout: return "timeout";
    case EofResult::data: return "data";
  }
  return "?";
}

namespace {

// Per-test watchdog: a gtest listener arms a deadline at each test start; a thread kills the
// process (with a message naming the test) if a test outlives it. No test can hang the suite.
// The state is leaked on purpose: gtest deletes its listeners at exit, and destroying a
// condition variable the watchdog thread still waits on would block exit forever.
struct WatchdogState {
  std::mutex mu;
  std::condition_variable cv;
  std::string name;
  Clock::time_point deadline{};
  bool armed = false;

  void run() {
    std::unique_lock lk(mu);
    while (true) {
      if (!armed) {
        cv.wait(lk);
        continue;
      }
      auto d = deadline;
      if (cv.wait_until(lk, d) == std::cv_status::timeout && armed && deadline == d) {
        std::fprintf(stderr, "\nWATCHDOG: test %s still running after %d s: aborting\n",
                     name.c_str(), watchdog_seconds());
        std::fflush(stderr);
        std::_Exit(3);
      }
    }
  }
};

class Watchdog : public ::testing::EmptyTestEventListener {
 public:
  Watchdog() : st_(new WatchdogState) {
    std::thread([s = st_] { s->run(); }).detach();
  }
  void OnTestStart(const ::testing::TestInfo& info) override {
    std::lock_guard lk(st_->mu);
    st_->name = std::string(info.test_suite_name()) + "." + info.name();
    st_->deadline = Clock::now() + std::chrono::seconds(watchdog_seconds());
    st_->armed = true;
    st_->cv.notify_all();
  }
  void OnTestEnd(const ::testing::TestInfo&) override {
    std::lock_guard lk(st_->mu);
    st_->armed = false;
    st_->cv.notify_all();
  }

 private:
  WatchdogState* st_;  // never freed (see above)
};

const bool watchdog_registered = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new Watchdog);
  return true;
}();

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

// Waits for `events` on fd until deadline; true if ready.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

}  // namespace

Client::Client(std::uint16_t port, const char* src) {
  if (!connect(port, src)) {
    throw std::system_error(errno, std::generic_category(), "test client connect");
  }
}

Client::~Client() { close(); }

Client& Client::operator=(Client&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    o.fd_ = -1;
    pending_ = std::move(o.pending_);
  }
  return *this;
}

bool Client::connect(std::uint16_t port, const char* src) {
  close();
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  if (src != nullptr) {
    int one = 1;
    ::setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    ::inet_pton(AF_INET, src, &a.sin_addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      int e = errno;
      ::close(fd);
      errno = e;
      return false;
    }
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return false;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fd_ = fd;
  return true;
}

std::string Client::local_address() const {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
  return std::string(buf) + ":" + std::to_string(ntohs(a.sin_port));
}

namespace {

// The sockaddr of a listener address as Server::listeners() spells it.
int resolve(const std::string& address, sockaddr_storage& ss, socklen_t& len) {
  ss = sockaddr_storage{};
  if (address.rfind("unix:", 0) == 0) {
    const std::string path = address.substr(5);
    auto* sun = reinterpret_cast<sockaddr_un*>(&ss);
    sun->sun_family = AF_UNIX;
    if (!path.empty() && path[0] == '@') {
      std::memcpy(sun->sun_path + 1, path.data() + 1, path.size() - 1);
      len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
    } else {
      std::memcpy(sun->sun_path, path.data(), path.size());
      len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    }
    return AF_UNIX;
  }
  if (!address.empty() && address[0] == '[') {
    const auto close_b = address.find(']');
    const std::string host = address.substr(1, close_b - 1);
    const auto port = static_cast<std::uint16_t>(std::stoi(address.substr(close_b + 2)));
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    ::inet_pton(AF_INET6, host == "::" ? "::1" : host.c_str(), &a->sin6_addr);
    len = sizeof(sockaddr_in6);
    return AF_INET6;
  }
  const auto colon = address.rfind(':');
  const std::string host = address.substr(0, colon);
  const auto port = static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1)));
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  ::inet_pton(AF_INET, host == "0.0.0.0" ? "127.0.0.1" : host.c_str(), &a->sin_addr);
  len = sizeof(sockaddr_in);
  return AF_INET;
}

}  // namespace

bool Client::prepare(const std::string& address) {
  close();
  sockaddr_storage ss{};
  socklen_t len = 0;
  const int family = resolve(address, ss, len);
  fd_ = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  return fd_ >= 0;
}

bool Client::connect_prepared(const std::string& address) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  const int family = resolve(address, ss, len);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0) return false;
  if (family != AF_UNIX) {
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return true;
}

bool Client::connect(const std::string& address) {
  if (!prepare(address)) return false;
  if (!connect_prepared(address)) {
    const int e = errno;
    close();
    errno = e;
    return false;
  }
  return true;
}

std::uint16_t Client::local_port() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

bool Client::send_all(std::string_view data, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!data.empty()) {
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_fd(fd_, POLLOUT, deadline)) return false;
      continue;
    }
    return false;
  }
  return true;
}

bool Client::recv_exact(std::size_t n, std::string& out, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  if (!pending_.empty()) {
    std::size_t k = std::min(n, pending_.size());
    out.append(pending_, 0, k);
    pending_.erase(0, k);
    n -= k;
  }
  char buf[65536];
  while (n > 0) {
    ssize_t r = ::recv(fd_, buf, std::min(n, sizeof buf), MSG_DONTWAIT);
    if (r > 0) {
      out.append(buf, static_cast<std::size_t>(r));
      n -= static_cast<std::size_t>(r);
      continue;
    }
    if (r == 0) return false;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(fd_, POLLIN, deadline)) return false;
      continue;
    }
    return false;
  }
  return true;
}

std::string Client::recv_exact(std::size_t n, std::chrono::milliseconds timeout) {
  std::string out;
  recv_exact(n, out, timeout);
  return out;
}

bool Client::recv_line(std::string& line, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  char buf[65536];
  while (true) {
    auto pos = pending_.find('\n');
    if (pos != std::string::npos) {
      line.assign(pending_, 0, pos);
      pending_.erase(0, pos + 1);
      return true;
    }
    ssize_t r = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) {
      pending_.append(buf, static_cast<std::size_t>(r));
      continue;
    }
    if (r == 0) return false;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(fd_, POLLIN, deadline)) return false;
      continue;
    }
    return false;
  }
}

std::string Client::recv_for(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string out = std::move(pending_);
  pending_.clear();
  char buf[65536];
  while (true) {
    ssize_t r = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) {
      out.append(buf, static_cast<std::size_t>(r));
      continue;
    }
    if (r == 0) return out;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(fd_, POLLIN, deadline)) return out;
      continue;
    }
    return out;
  }
}

EofResult Client::wait_eof(std::chrono::milliseconds timeout, std::string* data) {
  const auto deadline = Clock::now() + timeout;
  if (data != nullptr) {
    data->append(pending_);
  }
  pending_.clear();
  char buf[65536];
  while (true) {
    ssize_t r = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) {
      if (data != nullptr) data->append(buf, static_cast<std::size_t>(r));
      continue;
    }
    if (r == 0) return EofResult::eof;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(fd_, POLLIN, deadline)) return EofResult::timeout;
      continue;
    }
    return EofResult::reset;
  }
}

EofResult Client::poll_once(std::chrono::milliseconds timeout) {
  if (!pending_.empty()) return EofResult::data;
  if (!wait_fd(fd_, POLLIN, Clock::now() + timeout)) return EofResult::timeout;
  char c;
  ssize_t r = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (r > 0) return EofResult::data;
  if (r == 0) return EofResult::eof;
  return EofResult::reset;
}

void Client::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

void Client::reset() {
  if (fd_ < 0) return;
  linger l{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd_);
  fd_ = -1;
}

void Client::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  pending_.clear();
}

void Client::set_rcvbuf(int bytes) {
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

std::vector<Client> connect_many(std::uint16_t port, std::size_t n, bool spread_sources) {
  std::vector<Client> out;
  out.reserve(n);
  constexpr std::size_t kPerSource = 2000;
  char src[32];
  for (std::size_t i = 0; i < n; ++i) {
    Client c;
    bool ok;
    if (spread_sources) {
      std::snprintf(src, sizeof src, "127.0.0.%zu", 2 + i / kPerSource);
      ok = c.connect(port, src);
    } else {
      ok = c.connect(port);
    }
    if (!ok) {
      throw std::system_error(errno, std::generic_category(),
                              "connect_many: connection " + std::to_string(i));
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::string mode_name(const ::testing::TestParamInfo<Mode>& i) {
  return "shards" + std::to_string(i.param.shards) + "_workers" + std::to_string(i.param.workers);
}

int occupy_loopback_port(std::uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 16) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return -1;
  }
  port = ntohs(a.sin_port);
  return fd;
}

ServerOptions loopback_options(unsigned shards, unsigned workers) {
  ServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.shards = shards;
  o.workers = workers;
  // Clients in tests often stay open across stop(): do not wait the default 2 s for their FIN.
  o.linger_timeout = std::chrono::milliseconds(300);
  return o;
}

std::size_t open_fd_count() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
  }
  return n;
}

}  // namespace esockets::test

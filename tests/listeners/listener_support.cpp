#include "listener_support.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace esockets::test {

namespace {

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

bool wait_fd(int fd, short events, Clock::time_point deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

void put16(std::string& s, std::uint16_t v) {
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v & 0xff));
}

const char kV2Sig[12] = {'\x0D', '\x0A', '\x0D', '\x0A', '\x00', '\x0D',
                         '\x0A', '\x51', '\x55', '\x49', '\x54', '\x0A'};

std::string tlv_bytes(const std::vector<std::pair<std::uint8_t, std::string>>& tlvs) {
  std::string out;
  for (const auto& [type, value] : tlvs) {
    out.push_back(static_cast<char>(type));
    put16(out, static_cast<std::uint16_t>(value.size()));
    out += value;
  }
  return out;
}

}  // namespace

// ---- TempDir -----------------------------------------------------------------------------

TempDir::TempDir() {
  char tmpl[] = "/tmp/esk-listen-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  if (DIR* d = ::opendir(path_.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      (void)::unlink((path_ + "/" + n).c_str());
    }
    ::closedir(d);
  }
  (void)::rmdir(path_.c_str());
}

std::string unique_abstract_name(std::string_view tag) {
  static std::atomic<int> counter{0};
  return "esk-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
         std::string(tag);
}

// ---- Sock --------------------------------------------------------------------------------

Sock::~Sock() { close(); }

Sock& Sock::operator=(Sock&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    o.fd_ = -1;
    pending_ = std::move(o.pending_);
  }
  return *this;
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

bool Sock::prepare(const std::string& address) {
  close();
  sockaddr_storage ss{};
  socklen_t len = 0;
  const int family = resolve(address, ss, len);
  fd_ = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  return fd_ >= 0;
}

bool Sock::connect_prepared(const std::string& address) {
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

bool Sock::connect(const std::string& address) {
  if (!prepare(address)) return false;
  if (!connect_prepared(address)) {
    const int e = errno;
    close();
    errno = e;
    return false;
  }
  return true;
}

std::uint16_t Sock::local_port() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

bool Sock::send_all(std::string_view data, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!data.empty()) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
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

bool Sock::recv_exact(std::size_t n, std::string& out, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  if (!pending_.empty()) {
    const std::size_t k = std::min(n, pending_.size());
    out.append(pending_, 0, k);
    pending_.erase(0, k);
    n -= k;
  }
  char buf[65536];
  while (n > 0) {
    const ssize_t r = ::recv(fd_, buf, std::min(n, sizeof buf), MSG_DONTWAIT);
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

EofResult Sock::wait_eof(std::chrono::milliseconds timeout, std::string* data) {
  const auto deadline = Clock::now() + timeout;
  if (data != nullptr) data->append(pending_);
  pending_.clear();
  char buf[65536];
  while (true) {
    const ssize_t r = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
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

EofResult Sock::poll_once(std::chrono::milliseconds timeout) {
  if (!pending_.empty()) return EofResult::data;
  if (!wait_fd(fd_, POLLIN, Clock::now() + timeout)) return EofResult::timeout;
  char c;
  const ssize_t r = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (r > 0) return EofResult::data;
  if (r == 0) return EofResult::eof;
  return EofResult::reset;
}

void Sock::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

void Sock::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  pending_.clear();
}

Sock connect_or_fail(const std::string& address) {
  Sock s;
  if (!s.connect(address)) {
    ADD_FAILURE() << "connect to " << address << " failed: " << std::strerror(errno);
  }
  return s;
}

// ---- traffic -----------------------------------------------------------------------------

std::string numbered_lines(std::uint64_t first, std::uint64_t n) {
  std::string s;
  for (std::uint64_t i = first; i < first + n; ++i) {
    s += std::to_string(i);
    s.push_back('\n');
  }
  return s;
}

bool echo_numbered(Sock& s, std::uint64_t first, std::uint64_t n, const std::string& what,
                   std::chrono::milliseconds timeout) {
  const std::string want = numbered_lines(first, n);
  if (!s.send_all(want, timeout)) {
    ADD_FAILURE() << what << ": send of lines " << first << ".." << first + n - 1 << " failed: "
                  << std::strerror(errno);
    return false;
  }
  std::string got;
  const bool whole = s.recv_exact(want.size(), got, timeout);
  if (!whole || got != want) {
    ADD_FAILURE() << what << ": echo of lines " << first << ".." << first + n - 1
                  << (whole ? " differs" : " incomplete") << " (got " << got.size() << " of "
                  << want.size() << " bytes; first 80: '" << got.substr(0, 80) << "')";
    return false;
  }
  return true;
}

// ---- PROXY headers -----------------------------------------------------------------------

std::string proxy_v1_tcp4(const std::string& src, const std::string& dst, std::uint16_t sport,
                          std::uint16_t dport) {
  return "PROXY TCP4 " + src + " " + dst + " " + std::to_string(sport) + " " +
         std::to_string(dport) + "\r\n";
}

std::string proxy_v2_prefix(std::uint8_t ver_cmd, std::uint8_t fam, std::uint16_t len) {
  std::string s(kV2Sig, sizeof kV2Sig);
  s.push_back(static_cast<char>(ver_cmd));
  s.push_back(static_cast<char>(fam));
  put16(s, len);
  return s;
}

std::string proxy_v2_tcp4(const std::string& src, const std::string& dst, std::uint16_t sport,
                          std::uint16_t dport,
                          const std::vector<std::pair<std::uint8_t, std::string>>& tlvs) {
  std::string body;
  in_addr a{}, b{};
  ::inet_pton(AF_INET, src.c_str(), &a);
  ::inet_pton(AF_INET, dst.c_str(), &b);
  body.append(reinterpret_cast<const char*>(&a), 4);
  body.append(reinterpret_cast<const char*>(&b), 4);
  put16(body, sport);
  put16(body, dport);
  body += tlv_bytes(tlvs);
  return proxy_v2_prefix(0x21, 0x11, static_cast<std::uint16_t>(body.size())) + body;
}

std::string proxy_v2_tcp6(const std::string& src, const std::string& dst, std::uint16_t sport,
                          std::uint16_t dport,
                          const std::vector<std::pair<std::uint8_t, std::string>>& tlvs) {
  std::string body;
  in6_addr a{}, b{};
  ::inet_pton(AF_INET6, src.c_str(), &a);
  ::inet_pton(AF_INET6, dst.c_str(), &b);
  body.append(reinterpret_cast<const char*>(&a), 16);
  body.append(reinterpret_cast<const char*>(&b), 16);
  put16(body, sport);
  put16(body, dport);
  body += tlv_bytes(tlvs);
  return proxy_v2_prefix(0x21, 0x21, static_cast<std::uint16_t>(body.size())) + body;
}

std::string proxy_v2_local() { return proxy_v2_prefix(0x20, 0x00, 0); }

// ---- SeqHandler --------------------------------------------------------------------------

namespace {
struct NextSeq {
  std::uint64_t next = 0;
};
}  // namespace

bool SeqHandler::on_client_connect(Connection& c) {
  connects++;
  if (c.listener() < 8) per_listener[c.listener()]++;
  c.emplace_state<NextSeq>();
  SeenConn s;
  s.id = c.id();
  s.listener = c.listener();
  s.peer = c.getip();
  s.family = c.peer().family;
  if (const ProxyInfo* p = c.proxy()) s.proxy = *p;
  s.thread = this_thread_name();
  s.connects = 1;
  std::lock_guard lk(mu_);
  auto [it, fresh] = conns_.emplace(c.id().value(), s);
  if (!fresh) {
    double_connects++;
    it->second.connects++;
  }
  return true;
}

void SeqHandler::on_message_recv(Connection& c, Bytes m) {
  messages++;
  if (!throw_on.empty() && m == throw_on) throw std::runtime_error("test handler throws");
  std::uint64_t v = 0;
  const auto [p, ec] = std::from_chars(m.data(), m.data() + m.size(), v);
  NextSeq* st = c.state<NextSeq>();
  if (ec != std::errc() || p != m.data() + m.size() || st == nullptr || v != st->next) {
    seq_errors++;
  }
  if (st != nullptr) st->next = v + 1;
  {
    std::lock_guard lk(mu_);
    auto it = conns_.find(c.id().value());
    if (it != conns_.end()) {
      SeenConn& s = it->second;
      s.messages++;
      if (s.messages == 1) s.proxy_in_message = c.proxy() != nullptr;
      if (s.proxy.has_value() != (c.proxy() != nullptr)) s.proxy_in_message = false;
      if (c.listener() != s.listener) s.listener_in_message = false;
    }
  }
  if (echo) (void)c.send_frame(m);
}

void SeqHandler::on_client_disconnect(Connection& c, CloseReason r) {
  reasons[static_cast<std::size_t>(r)]++;
  disconnects++;
  std::lock_guard lk(mu_);
  auto it = conns_.find(c.id().value());
  if (it == conns_.end()) {
    unknown_disconnects++;
    return;
  }
  it->second.disconnects++;
  it->second.reason = r;
  it->second.proxy_at_disconnect = c.proxy() != nullptr;
  ended_.push_back(it->second);
  conns_.erase(it);
}

void SeqHandler::on_warning(const Warning& w) {
  warnings++;
  SeenWarning s{w.severity, w.code, w.shard, w.worker, w.connection, w.error, std::string(w.text)};
  std::lock_guard lk(mu_);
  warnings_.push_back(std::move(s));
}

std::vector<SeenConn> SeqHandler::conns() const {
  std::lock_guard lk(mu_);
  std::vector<SeenConn> v = ended_;
  for (const auto& [k, s] : conns_) v.push_back(s);
  return v;
}

std::vector<SeenWarning> SeqHandler::warnings_seen() const {
  std::lock_guard lk(mu_);
  return warnings_;
}

std::vector<SeenWarning> SeqHandler::warnings_of(WarningCode code) const {
  std::lock_guard lk(mu_);
  std::vector<SeenWarning> v;
  for (const auto& w : warnings_) {
    if (w.code == code) v.push_back(w);
  }
  return v;
}

std::optional<SeenConn> SeqHandler::by_peer(const std::string& peer) const {
  for (const SeenConn& s : conns()) {
    if (s.peer == peer) return s;
  }
  return std::nullopt;
}

// ---- options, threads --------------------------------------------------------------------

ServerOptions line_options(unsigned shards, unsigned workers) {
  ServerOptions o = loopback_options(shards, workers);
  o.framing = Framing::line;
  o.max_frame = 4096;
  o.shutdown_timeout = std::chrono::milliseconds(2000);
  return o;
}

ListenerOptions listener_at(std::string address) {
  ListenerOptions l;
  l.address = std::move(address);
  return l;
}

std::string this_thread_name() {
  char buf[32] = {};
  (void)::pthread_getname_np(::pthread_self(), buf, sizeof buf);
  return buf;
}

std::vector<std::pair<pid_t, std::string>> thread_names() {
  std::vector<std::pair<pid_t, std::string>> v;
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return v;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const pid_t tid = static_cast<pid_t>(std::atoi(e->d_name));
    std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string name;
    std::getline(f, name);
    if (f || !name.empty()) v.emplace_back(tid, name);
  }
  ::closedir(d);
  return v;
}

std::string cpus_allowed_list(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Cpus_allowed_list:", 0) == 0) {
      std::string v = line.substr(std::strlen("Cpus_allowed_list:"));
      const auto b = v.find_first_not_of(" \t");
      return b == std::string::npos ? "" : v.substr(b);
    }
  }
  return "";
}

}  // namespace esockets::test

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

// ---- clients ---------------------------------------------------------------------------

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

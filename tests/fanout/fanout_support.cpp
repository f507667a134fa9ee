#include "fanout_support.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <optional>
#include <sstream>

namespace fanout {

// ------------------------------------------------------------------ /proc

long self_rss_kb() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  long kb = -1;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) {
      kb = std::strtol(line + 6, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kb;
}

std::size_t self_fd_count() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
    if (n > 0) --n;  // the directory stream's own fd
  }
  return n;
}

std::vector<pid_t> self_tids() {
  std::vector<pid_t> v;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      v.push_back(static_cast<pid_t>(std::atol(e->d_name)));
    }
    ::closedir(d);
  }
  return v;
}

pid_t gettid_now() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// ------------------------------------------------------------------ outcomes

void StatusTally::add(SendStatus s) {
  switch (s) {
    case SendStatus::ok: ok++; break;
    case SendStatus::closed: closed++; break;
    case SendStatus::backpressure: backpressure++; break;
    case SendStatus::slow_consumer: slow_consumer++; break;
  }
}

void StatusTally::add(const MulticastResult& r) {
  ok += r.ok;
  closed += r.closed;
  backpressure += r.backpressure;
  slow_consumer += r.slow_consumer;
}

std::string StatusTally::str() const {
  return "ok=" + std::to_string(ok.load()) + " closed=" + std::to_string(closed.load()) +
         " backpressure=" + std::to_string(backpressure.load()) +
         " slow_consumer=" + std::to_string(slow_consumer.load());
}

void Registry::on_connect(const Connection& c) {
  {
    std::lock_guard lk(mu);
    by_port[c.peer().port] = c.id();
  }
  connects++;
}

void Registry::on_disconnect(CloseReason r) {
  reasons[static_cast<std::size_t>(r)]++;
  disconnects++;
}

ConnectionId Registry::id_of(std::uint16_t port) const {
  std::lock_guard lk(mu);
  auto it = by_port.find(port);
  return it == by_port.end() ? ConnectionId{} : it->second;
}

std::string Registry::reasons_str() const {
  std::string s;
  for (std::size_t i = 0; i < esockets::kCloseReasonCount; ++i) {
    const int v = reasons[i].load();
    if (v == 0) continue;
    if (!s.empty()) s += ' ';
    s += esockets::to_string(static_cast<CloseReason>(i));
    s += '=';
    s += std::to_string(v);
  }
  return s.empty() ? "none" : s;
}

// ------------------------------------------------------------------ chat handler

const char* to_string(FanoutKind k) {
  return k == FanoutKind::per_member_send ? "per_member_send" : "group_send_frame";
}

bool ChatHandler::on_client_connect(Connection& c) {
  reg.on_connect(c);
  return true;
}

ChatHandler::Room& ChatHandler::room_locked(const std::string& name) {
  Room& r = rooms_[name];
  if (!r.group) r.group = std::make_unique<esockets::Group>(*server_);
  return r;
}

void ChatHandler::on_message_recv(Connection& c, Bytes m) {
  if (m.rfind("JOIN ", 0) == 0) {
    const std::string name(m.substr(5));
    {
      std::lock_guard lk(mu_);
      Room& r = room_locked(name);
      if (kind_ == FanoutKind::per_member_send) {
        r.members.push_back(c.id());
      } else {
        r.group->add(c.id());
      }
    }
    c.send_frame("JOINED " + name);
    return;
  }
  if (m.rfind("MSG ", 0) == 0) {
    const Bytes rest = m.substr(4);
    const std::size_t sp = rest.find(' ');
    if (sp == Bytes::npos) {
      bad_lines++;
      return;
    }
    const std::string name(rest.substr(0, sp));
    const Bytes out = rest;  // "<room> <text>"
    fanouts++;
    if (kind_ == FanoutKind::per_member_send) {
      thread_local std::vector<ConnectionId> snapshot;
      {
        std::lock_guard lk(mu_);
        auto it = rooms_.find(name);
        if (it == rooms_.end()) {
          bad_lines++;
          return;
        }
        snapshot.assign(it->second.members.begin(), it->second.members.end());
      }
      for (ConnectionId id : snapshot) tally.add(server_->send_frame(id, out));
    } else {
      esockets::Group* g = nullptr;
      {
        std::lock_guard lk(mu_);
        auto it = rooms_.find(name);
        if (it == rooms_.end()) {
          bad_lines++;
          return;
        }
        g = it->second.group.get();  // rooms are never erased: the pointer stays valid
      }
      tally.add(g->send_frame(out));
    }
    return;
  }
  bad_lines++;
}

void ChatHandler::on_client_disconnect(Connection& c, CloseReason r) {
  reg.on_disconnect(r);
  if (kind_ != FanoutKind::per_member_send) return;  // groups forget closed members
  std::lock_guard lk(mu_);
  for (auto& [name, room] : rooms_) {
    auto& v = room.members;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (v[i] == c.id()) {
        v[i] = v.back();
        v.pop_back();
        break;
      }
    }
  }
}

void ChatHandler::on_warning(std::string_view w) {
  warnings++;
  std::lock_guard lk(warn_mu);
  if (first_warnings.size() < 5) first_warnings.emplace_back(w);
}

// ------------------------------------------------------------------ Fleet

Fleet::~Fleet() {
  stop();
  for (int fd : fds_) {
    if (fd >= 0) ::close(fd);
  }
  if (ep_ >= 0) ::close(ep_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

bool Fleet::connect(std::uint16_t port, std::size_t n, int rcvbuf) {
  if (running_.load()) return false;  // the reader owns the vectors once started
  for (std::size_t k = 0; k < n; ++k) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      return false;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    sockaddr_in me{};
    socklen_t len = sizeof me;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len);
    fds_.push_back(fd);
    ports_.push_back(ntohs(me.sin_port));
    partial_.emplace_back();
    ended_flags_.push_back(std::make_unique<std::atomic<bool>>(false));
  }
  return true;
}

void Fleet::start(LineFn on_line) {
  on_line_ = std::move(on_line);
  ep_ = ::epoll_create1(EPOLL_CLOEXEC);
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = UINT64_MAX;
  ::epoll_ctl(ep_, EPOLL_CTL_ADD, stop_fd_, &ev);
  for (std::size_t i = 0; i < fds_.size(); ++i) {
    epoll_event e{};
    e.events = EPOLLIN | EPOLLRDHUP;
    e.data.u64 = i;
    ::epoll_ctl(ep_, EPOLL_CTL_ADD, fds_[i], &e);
  }
  running_.store(true);
  reader_ = std::thread([this] { run(); });
}

void Fleet::stop() {
  if (!running_.exchange(false)) return;
  std::uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof one);
  if (reader_.joinable()) reader_.join();
}

void Fleet::run() {
  std::vector<char> buf(256 * 1024);
  epoll_event evs[256];
  while (running_.load(std::memory_order_relaxed)) {
    const int n = ::epoll_wait(ep_, evs, 256, 100);
    for (int k = 0; k < n; ++k) {
      const std::uint64_t i = evs[k].data.u64;
      if (i == UINT64_MAX) return;
      const int fd = fds_[i];
      for (int rounds = 0; rounds < 16; ++rounds) {
        const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
        if (r > 0) {
          bytes_in_ += static_cast<std::uint64_t>(r);
          std::string& part = partial_[i];
          const char* p = buf.data();
          const char* end = p + r;
          while (p < end) {
            const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)));
            if (nl == nullptr) {
              part.append(p, static_cast<std::size_t>(end - p));
              break;
            }
            if (part.empty()) {
              on_line_(i, std::string_view(p, static_cast<std::size_t>(nl - p)));
            } else {
              part.append(p, static_cast<std::size_t>(nl - p));
              on_line_(i, part);
              part.clear();
            }
            p = nl + 1;
          }
          if (static_cast<std::size_t>(r) < buf.size()) break;
          continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r < 0 && errno == EINTR) continue;
        // EOF or error: this client is done.
        if (r < 0) resets_++;
        ::epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
        if (!ended_flags_[i]->exchange(true)) ended_++;
        break;
      }
    }
  }
}

bool Fleet::send(std::size_t i, std::string_view data, ms timeout) {
  const auto deadline = Clock::now() + timeout;
  const int fd = fds_[i];
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
    const auto left = std::chrono::duration_cast<ms>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, static_cast<int>(left < 50 ? left : 50));
  }
  return true;
}

void Fleet::close(std::size_t i) {
  // FIN to the server; the descriptor itself stays ours until the Fleet ends, so the reader
  // never touches a number another socket reused.
  ::shutdown(fds_[i], SHUT_RDWR);
}

// ------------------------------------------------------------------ SeqBook

SeqBook::SeqBook(std::size_t receivers, std::size_t senders)
    : senders_(senders), next_(receivers * senders) {}

void SeqBook::see(std::size_t receiver, std::size_t sender, std::uint64_t seq) {
  if (sender >= senders_ || receiver * senders_ + sender >= next_.size()) {
    garbage(receiver, "sender " + std::to_string(sender) + " out of range");
    return;
  }
  auto& e = next_[receiver * senders_ + sender];
  const std::uint64_t want = e.load(std::memory_order_relaxed);
  delivered_.fetch_add(1, std::memory_order_relaxed);
  if (seq == want) {
    e.store(want + 1, std::memory_order_relaxed);
    return;
  }
  std::string what;
  if (seq > want) {
    missing_.fetch_add(seq - want, std::memory_order_relaxed);
    e.store(seq + 1, std::memory_order_relaxed);
    what = "gap";
  } else {
    backwards_.fetch_add(1, std::memory_order_relaxed);
    what = "duplicate or reordered";
  }
  std::lock_guard lk(mu_);
  if (problems_.size() < 6) {
    problems_.push_back(what + ": receiver " + std::to_string(receiver) + " got seq " +
                        std::to_string(seq) + " from sender " + std::to_string(sender) +
                        ", expected " + std::to_string(want));
  }
}

void SeqBook::garbage(std::size_t receiver, std::string_view line) {
  garbage_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lk(mu_);
  if (problems_.size() < 6) {
    problems_.push_back("unexpected line at receiver " + std::to_string(receiver) + ": '" +
                        std::string(line.substr(0, 80)) + "'");
  }
}

std::uint64_t SeqBook::expected(std::size_t receiver, std::size_t sender) const {
  return next_[receiver * senders_ + sender].load(std::memory_order_relaxed);
}

std::string SeqBook::first_problems() const {
  std::lock_guard lk(mu_);
  std::string s;
  for (const auto& p : problems_) s += "\n    " + p;
  return s.empty() ? " (none)" : s;
}

bool parse_u64(std::string_view s, std::uint64_t& v) {
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool parse_delivery(std::string_view line, std::string_view& room, std::uint64_t& sender,
                    std::uint64_t& seq) {
  const std::size_t a = line.find(' ');
  if (a == std::string_view::npos) return false;
  const std::size_t b = line.find(' ', a + 1);
  if (b == std::string_view::npos) return false;
  std::size_t c = line.find(' ', b + 1);  // optional padding after the sequence number
  if (c == std::string_view::npos) c = line.size();
  room = line.substr(0, a);
  return parse_u64(line.substr(a + 1, b - a - 1), sender) &&
         parse_u64(line.substr(b + 1, c - b - 1), seq);
}

bool wait_progress(const std::function<bool()>& pred, const std::function<std::uint64_t()>& progress,
                   ms timeout, ms stall) {
  const auto deadline = Clock::now() + timeout;
  std::uint64_t last = progress();
  auto last_change = Clock::now();
  while (!pred()) {
    const auto now = Clock::now();
    if (now >= deadline) return pred();
    const std::uint64_t p = progress();
    if (p != last) {
      last = p;
      last_change = now;
    } else if (now - last_change >= stall) {
      return pred();
    }
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// ------------------------------------------------------------------ relay

bool RelayHandler::on_client_connect(Connection& c) {
  reg.on_connect(c);
  return true;
}

void RelayHandler::on_client_disconnect(Connection&, CloseReason r) { reg.on_disconnect(r); }

void RelayHandler::on_message_recv(Connection& c, Bytes m) {
  if (m.rfind("PAIR ", 0) == 0) {
    std::uint64_t port = 0;
    if (!parse_u64(m.substr(5), port)) {
      bad++;
      return;
    }
    const ConnectionId p = reg.id_of(static_cast<std::uint16_t>(port));
    if (!p.valid()) {
      bad++;
      return;
    }
    c.set_user_data(reinterpret_cast<void*>(static_cast<std::uintptr_t>(p.value())));
    c.send_frame("PAIRED");
    return;
  }
  const ConnectionId partner =
      ConnectionId::from_value(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(c.user_data())));
  if (!partner.valid()) {
    bad++;
    return;
  }
  SendStatus st = server_->send_frame(partner, m);
  first.add(st);
  if (retry_ && st == SendStatus::backpressure) {
    const auto t0 = Clock::now();
    while (st == SendStatus::backpressure) {
      retries++;
      if (Clock::now() - t0 > retry_limit_) {
        gave_up++;
        break;
      }
      std::this_thread::yield();
      st = server_->send_frame(partner, m);
    }
  }
  final.add(st);
  if (st == SendStatus::ok && partner.slot() < ok_to_slot.size()) ok_to_slot[partner.slot()]++;
  relayed++;
}

bool PairRig::setup(Server& s, Registry& reg, std::size_t pairs, ChildLog& log) {
  std::vector<std::size_t> on0, on1;
  std::size_t tries = 0;
  while ((on0.size() < pairs || on1.size() < pairs) && tries < 8 * pairs) {
    const std::size_t i = fleet.size();
    if (!fleet.connect(s.port(), 1)) {
      log.fail("connect failed");
      return false;
    }
    ++tries;
    ConnectionId id;
    const auto until = Clock::now() + 10s;
    while (!(id = reg.id_of(fleet.local_port(i))).valid() && Clock::now() < until) {
      std::this_thread::sleep_for(1ms);
    }
    if (!id.valid()) {
      log.fail("the server never saw client " + std::to_string(i));
      return false;
    }
    (id.shard() == 0 ? on0 : on1).push_back(i);
  }
  if (on0.size() < pairs || on1.size() < pairs) {
    log.fail("could not place " + std::to_string(pairs) + " clients on each shard (" +
             std::to_string(on0.size()) + " / " + std::to_string(on1.size()) + ")");
    return false;
  }
  partner.assign(fleet.size(), SIZE_MAX);
  mute.assign(fleet.size(), 0);
  next_.assign(fleet.size(), 0);
  for (std::size_t k = 0; k < pairs; ++k) {
    partner[on0[k]] = on1[k];
    partner[on1[k]] = on0[k];
    active.push_back(on0[k]);
    active.push_back(on1[k]);
  }
  book = std::make_unique<SeqBook>(fleet.size(), fleet.size());
  auto paired = std::make_shared<std::atomic<std::size_t>>(0);
  fleet.start([this, paired](std::size_t i, std::string_view line) {
    if (line == "PAIRED") {
      (*paired)++;
      return;
    }
    const std::size_t sp = line.find(' ');
    std::uint64_t seq = 0;
    if (partner[i] == SIZE_MAX || !parse_u64(line.substr(0, sp), seq)) {
      book->garbage(i, line);
      return;
    }
    book->see(i, partner[i], seq);
  });
  for (std::size_t i : active) {
    if (!fleet.send(i, "PAIR " + std::to_string(fleet.local_port(partner[i])) + "\n")) {
      log.fail("PAIR write failed");
      return false;
    }
  }
  const auto until = Clock::now() + 20s;
  while (paired->load() < active.size() && Clock::now() < until) std::this_thread::sleep_for(1ms);
  if (paired->load() < active.size()) {
    log.fail("only " + std::to_string(paired->load()) + " of " + std::to_string(active.size()) +
             " clients paired");
    return false;
  }
  return true;
}

void PairRig::write(const std::atomic<bool>& stop, std::uint64_t limit, std::uint64_t window) {
  const std::string pad(40, 'x');
  std::vector<std::string> pending(fleet.size());
  std::vector<std::size_t> off(fleet.size(), 0);
  std::vector<char> dead(fleet.size(), 0);
  std::vector<pollfd> pfds;
  std::optional<Clock::time_point> flush_deadline;
  for (;;) {
    const bool stopping = stop.load(std::memory_order_relaxed);
    if (stopping && !flush_deadline) flush_deadline = Clock::now() + 15s;
    if (flush_deadline && Clock::now() > *flush_deadline) break;
    bool progress = false, busy = false;
    pfds.clear();
    for (std::size_t i : active) {
      if (dead[i] || mute[i]) continue;
      std::string& p = pending[i];
      if (off[i] == p.size() && !stopping && next_[i] < limit) {
        p.clear();
        off[i] = 0;
        std::uint64_t room = 256;
        if (window > 0) {
          const std::uint64_t seen = book->expected(partner[i], i);
          const std::uint64_t inflight = next_[i] > seen ? next_[i] - seen : 0;
          room = inflight >= window ? 0 : std::min<std::uint64_t>(room, window - inflight);
        }
        room = std::min<std::uint64_t>(room, limit - next_[i]);
        for (std::uint64_t k = 0; k < room; ++k) {
          p += std::to_string(next_[i]++);
          p += ' ';
          p += pad;
          p += '\n';
        }
        written_live.fetch_add(room, std::memory_order_relaxed);
        if (room == 0) busy = true;  // window full: wait for the partner
      }
      if (off[i] < p.size()) {
        const ssize_t n = ::send(fleet.fd(i), p.data() + off[i], p.size() - off[i],
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          off[i] += static_cast<std::size_t>(n);
          progress = true;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          // The server closed this client (stop): what was not written is not owed.
          dead[i] = true;
          p.clear();
          off[i] = 0;
          continue;
        }
        if (off[i] < p.size()) pfds.push_back(pollfd{fleet.fd(i), POLLOUT, 0});
      }
    }
    bool all_done = true;
    for (std::size_t i : active) {
      if (dead[i] || mute[i]) continue;
      if (off[i] < pending[i].size() || (!stopping && next_[i] < limit)) all_done = false;
    }
    if (all_done) break;
    if (!progress) {
      if (!pfds.empty()) {
        ::poll(pfds.data(), pfds.size(), 5);
      } else if (busy) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    }
  }
  writer_done_.store(true);
}

std::uint64_t PairRig::written_total() const {
  std::uint64_t t = 0;
  for (std::size_t i : active) t += next_[i];
  return t;
}

bool PairRig::drained() const { return undelivered() == 0; }

std::uint64_t PairRig::undelivered() const {
  std::uint64_t left = 0;
  for (std::size_t i : active) {
    const std::uint64_t seen = book->expected(partner[i], i);
    if (seen < next_[i]) left += next_[i] - seen;
  }
  return left;
}

// ------------------------------------------------------------------ child

void ChildLog::line(char tag, const std::string& s) {
  std::string l;
  l.reserve(s.size() + 3);
  l += tag;
  l += ' ';
  for (char ch : s) l += ch == '\n' ? '|' : ch;
  l += '\n';
  const char* p = l.data();
  std::size_t n = l.size();
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void ChildLog::note(const std::string& s) { line('N', s); }
void ChildLog::fail(const std::string& s) {
  ++failures_;
  line('F', s);
}
bool ChildLog::check(bool cond, const std::string& what) {
  if (!cond) fail(what);
  return cond;
}

std::string ChildOutcome::describe() const {
  std::ostringstream o;
  if (timed_out) {
    o << "child killed at its deadline after " << seconds << " s (hang)";
  } else if (term_signal != 0) {
    o << "child died of signal " << term_signal << " (" << strsignal(term_signal) << ") after "
      << seconds << " s";
  } else {
    o << "child exited " << exit_code << " after " << seconds << " s";
  }
  return o.str();
}

std::string thread_stacks(pid_t pid) {
  if (::access("/usr/bin/gdb", X_OK) != 0) return "(no gdb: no stacks)";
  const std::string cmd = "timeout 25 /usr/bin/gdb -p " + std::to_string(pid) +
                          " -batch -nx -ex 'set pagination off' -ex 'thread apply all bt 25' 2>&1";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return "(popen failed)";
  std::string text;
  char line[1024];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    // Keep the frames, drop gdb's chatter.
    if (line[0] == '#' || std::strncmp(line, "Thread ", 7) == 0) text += line;
    if (text.size() > 60000) break;
  }
  ::pclose(f);
  return text.empty() ? "(gdb printed no stack)" : text;
}

namespace {

// Sanitizer runtimes do not support a forked child of a multi-threaded process that starts
// threads: under TSan signal handlers stop running in blocking calls and thread ids collide;
// under ASan (GCC 12) the child can inherit an allocator lock held by another thread at the
// fork and deadlock in its first pthread_create. There the body runs in this process, on a
// thread, and a hang ends the whole test binary instead.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr bool kFork = false;
#else
constexpr bool kFork = true;
#endif

void parse_log(const std::string& buf, ChildOutcome& out) {
  std::size_t pos = 0;
  while (pos < buf.size()) {
    std::size_t nl = buf.find('\n', pos);
    if (nl == std::string::npos) nl = buf.size();
    const std::string l = buf.substr(pos, nl - pos);
    pos = nl + 1;
    if (l.size() < 2) continue;
    (l[0] == 'F' ? out.failures : out.notes).push_back(l.substr(2));
  }
}

ChildOutcome run_in_thread(const std::function<void(ChildLog&)>& body, ms deadline) {
  ChildOutcome out;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    out.failures.push_back(std::string("pipe: ") + std::strerror(errno));
    return out;
  }
  const auto t0 = Clock::now();
  std::atomic<int> code{0};
  std::thread runner([&] {
    ChildLog log(p[1]);
    try {
      body(log);
    } catch (const std::exception& e) {
      log.fail(std::string("body threw: ") + e.what());
      code = 1;
    } catch (...) {
      log.fail("body threw a non-std exception");
      code = 1;
    }
    ::close(p[1]);
  });
  std::string buf;
  char tmp[4096];
  bool eof = false;
  const auto until = t0 + deadline;
  while (!eof) {
    const auto left = std::chrono::duration_cast<ms>(until - Clock::now()).count();
    if (left <= 0) break;
    pollfd pf{p[0], POLLIN, 0};
    if (::poll(&pf, 1, static_cast<int>(left > 200 ? 200 : left)) > 0) {
      const ssize_t n = ::read(p[0], tmp, sizeof tmp);
      if (n > 0) buf.append(tmp, static_cast<std::size_t>(n));
      if (n == 0) eof = true;
    }
  }
  out.seconds = since_s(t0);
  parse_log(buf, out);
  if (!eof) {
    // A hang in this process: nothing can stop that thread. Report and end the binary.
    out.timed_out = true;
    out.stacks = thread_stacks(::getpid());
    for (const auto& n : out.notes) std::fprintf(stderr, "note: %s\n", n.c_str());
    for (const auto& f : out.failures) std::fprintf(stderr, "failure: %s\n", f.c_str());
    std::fprintf(stderr, "%s\nHANG: the scenario did not finish within %.1f s (in-process under "
                 "a sanitizer): aborting the test binary\n", out.stacks.c_str(), out.seconds);
    std::fflush(stderr);
    std::_Exit(3);
  }
  runner.join();
  ::close(p[0]);
  out.finished = true;
  out.exit_code = code.load();
  return out;
}

}  // namespace

ChildOutcome run_in_child(const std::function<void(ChildLog&)>& body, ms deadline) {
  if (!kFork) return run_in_thread(body, deadline);
  ChildOutcome out;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    out.failures.push_back(std::string("pipe: ") + std::strerror(errno));
    return out;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  const auto t0 = Clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) {
    out.failures.push_back(std::string("fork: ") + std::strerror(errno));
    ::close(p[0]);
    ::close(p[1]);
    return out;
  }
  if (pid == 0) {
    ::close(p[0]);
    ::signal(SIGPIPE, SIG_IGN);
    ChildLog log(p[1]);
    int code = 0;
    try {
      body(log);
    } catch (const std::exception& e) {
      log.fail(std::string("child body threw: ") + e.what());
      code = 1;
    } catch (...) {
      log.fail("child body threw a non-std exception");
      code = 1;
    }
    ::_exit(code);
  }
  ::close(p[1]);
  std::string buf;
  char tmp[4096];
  bool eof = false;
  const auto until = t0 + deadline;
  while (!eof) {
    const auto left = std::chrono::duration_cast<ms>(until - Clock::now()).count();
    if (left <= 0) break;
    pollfd pf{p[0], POLLIN, 0};
    const int r = ::poll(&pf, 1, static_cast<int>(left > 200 ? 200 : left));
    if (r > 0) {
      const ssize_t n = ::read(p[0], tmp, sizeof tmp);
      if (n > 0) {
        buf.append(tmp, static_cast<std::size_t>(n));
      } else if (n == 0) {
        eof = true;
      }
    }
  }
  int st = 0;
  if (!eof) {
    // Still running at the deadline (or a grandchild holds the pipe): record where its threads
    // are (for the hang's diagnosis), then kill it.
    if (::waitpid(pid, &st, WNOHANG) == 0) {
      out.timed_out = true;
      out.stacks = thread_stacks(pid);
      ::kill(pid, SIGKILL);
    }
    ::waitpid(pid, &st, 0);
  } else {
    // The pipe closed: the child is exiting. Give it a bounded moment.
    const auto stop_by = Clock::now() + 10s;
    pid_t w = 0;
    while ((w = ::waitpid(pid, &st, WNOHANG)) == 0 && Clock::now() < stop_by) {
      std::this_thread::sleep_for(5ms);
    }
    if (w == 0) {
      out.timed_out = true;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
    }
  }
  // Whatever is left in the pipe.
  for (;;) {
    const ssize_t n = ::read(p[0], tmp, sizeof tmp);
    if (n <= 0) break;
    buf.append(tmp, static_cast<std::size_t>(n));
  }
  ::close(p[0]);
  out.seconds = since_s(t0);
  if (!out.timed_out) {
    out.finished = true;
    if (WIFEXITED(st)) out.exit_code = WEXITSTATUS(st);
    if (WIFSIGNALED(st)) out.term_signal = WTERMSIG(st);
  }
  parse_log(buf, out);
  return out;
}

void expect_child_ok(const ChildOutcome& o, const std::string& what) {
  for (const auto& n : o.notes) std::printf("[%s] %s\n", what.c_str(), n.c_str());
  std::fflush(stdout);
  for (const auto& f : o.failures) ADD_FAILURE() << what << ": " << f;
  if (!o.stacks.empty()) {
    std::printf("[%s] thread stacks of the hung child:\n%s\n", what.c_str(), o.stacks.c_str());
    std::fflush(stdout);
  }
  if (o.timed_out || o.term_signal != 0 || o.exit_code != 0) {
    ADD_FAILURE() << what << ": " << o.describe()
                  << (o.notes.empty() ? std::string() : "; last note: " + o.notes.back());
  }
}

}  // namespace fanout

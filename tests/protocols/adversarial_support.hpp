// Shared by tests/protocols/adversarial_*_test.cpp: a per-connection record kept by the test
// handler (busy flag to catch overlapping callbacks, disconnect flag to catch callbacks after
// the end), a reader that checks numbered lines on many clients at once, a reshaper thread that
// cycles set_shards / rebalance, and a live-object counter for functions that must be run or
// destroyed exactly once.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../support/test_support.hpp"

namespace esockets::test::adv {

inline std::vector<Mode> modes() { return {{1, 0}, {1, 2}}; }
inline std::string name_of(const ::testing::TestParamInfo<Mode>& i) {
  return i.param.workers == 0 ? "inline" : "workers2";
}

/// Counts live copies of whatever holds it (captured in a std::function: every copy counts).
struct Token {
  static std::atomic<long>& live() {
    static std::atomic<long> n{0};
    return n;
  }
  Token() { live()++; }
  Token(const Token&) { live()++; }
  Token(Token&&) noexcept { live()++; }
  Token& operator=(const Token&) = default;
  ~Token() { live()--; }
};

/// The test's view of one connection. `busy` is raised for the length of every callback of the
/// connection (message, timer, post): a second raise means two callbacks overlapped.
struct Rec {
  ConnectionId id{};
  std::atomic<int> busy{0};
  std::atomic<bool> gone{false};  // on_client_disconnect ran
  std::atomic<int> overlaps{0};
  std::atomic<int> after_end{0};  // callbacks seen after on_client_disconnect
  std::atomic<int> nested{0};
};

/// RAII guard around a callback body: counts overlap and after-the-end runs.
class InCallback {
 public:
  explicit InCallback(Rec* r) : r_(r) {
    if (r_ == nullptr) return;
    if (r_->busy.fetch_add(1) != 0) r_->overlaps++;
    if (r_->gone.load()) r_->after_end++;
  }
  ~InCallback() {
    if (r_ != nullptr) r_->busy.fetch_sub(1);
  }
  InCallback(const InCallback&) = delete;
  InCallback& operator=(const InCallback&) = delete;

 private:
  Rec* r_;
};

/// Records, kept for the whole test (never freed while the server runs, so a late callback
/// finds its record instead of freed memory).
class Registry {
 public:
  Rec* add(ConnectionId id, std::uint16_t peer_port) {
    std::lock_guard lk(mu_);
    auto r = std::make_unique<Rec>();
    r->id = id;
    Rec* p = r.get();
    by_id_[id.value()] = std::move(r);
    by_port_[peer_port] = id;
    return p;
  }
  Rec* find(ConnectionId id) {
    std::lock_guard lk(mu_);
    auto it = by_id_.find(id.value());
    return it == by_id_.end() ? nullptr : it->second.get();
  }
  ConnectionId id_of_port(std::uint16_t port) {
    std::lock_guard lk(mu_);
    auto it = by_port_.find(port);
    return it == by_port_.end() ? ConnectionId{} : it->second;
  }
  template <class F>
  void for_each(F&& f) {
    std::lock_guard lk(mu_);
    for (auto& [k, r] : by_id_) f(*r);
  }
  int total(std::atomic<int> Rec::*field) {
    int n = 0;
    for_each([&](Rec& r) { n += (r.*field).load(); });
    return n;
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::uint64_t, std::unique_ptr<Rec>> by_id_;
  std::map<std::uint16_t, ConnectionId> by_port_;
};

/// Cycles set_shards(1 -> 3 -> 1) and rebalance() on its own thread, `cycles` times at most,
/// until stopped.
class Reshaper {
 public:
  Reshaper(Server& s, int cycles, std::chrono::milliseconds pause = 20ms)
      : t_([this, &s, cycles, pause] {
          for (int i = 0; i < cycles && !stop_.load(); ++i) {
            s.set_shards(3);
            std::this_thread::sleep_for(pause);
            s.rebalance();
            std::this_thread::sleep_for(pause);
            s.set_shards(2);
            s.rebalance();
            s.set_shards(1);
            std::this_thread::sleep_for(pause);
            done_++;
          }
        }) {}
  ~Reshaper() { join(); }
  void stop() { stop_ = true; }
  void join() {
    stop_ = true;
    if (t_.joinable()) t_.join();
  }
  int done() const { return done_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> done_{0};
  std::thread t_;
};

/// Reads lines from many clients at once (poll), handing each complete line to `on_line(i, line)`.
/// Returns when `until()` holds or the deadline passes; reports EOF per client in `eof`.
template <class OnLine, class Until>
void read_lines(std::vector<Client>& cs, std::vector<std::string>& partial, std::vector<bool>& eof,
                OnLine&& on_line, Until&& until, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::vector<pollfd> pfd(cs.size());
  char buf[65536];
  while (!until() && Clock::now() < deadline) {
    for (std::size_t i = 0; i < cs.size(); ++i) {
      pfd[i].fd = eof[i] ? -1 : cs[i].fd();
      pfd[i].events = POLLIN;
      pfd[i].revents = 0;
    }
    if (::poll(pfd.data(), pfd.size(), 20) <= 0) continue;
    for (std::size_t i = 0; i < cs.size(); ++i) {
      if (pfd[i].revents == 0) continue;
      ssize_t r = ::recv(cs[i].fd(), buf, sizeof buf, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        eof[i] = true;
        continue;
      }
      if (r < 0) continue;
      partial[i].append(buf, static_cast<std::size_t>(r));
      std::size_t pos = 0, nl;
      while ((nl = partial[i].find('\n', pos)) != std::string::npos) {
        on_line(i, std::string_view(partial[i]).substr(pos, nl - pos));
        pos = nl + 1;
      }
      partial[i].erase(0, pos);
    }
  }
}

}  // namespace esockets::test::adv

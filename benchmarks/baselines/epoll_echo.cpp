// epoll_echo: the floor of cost for an echo server on this model. One thread per event loop,
// one SO_REUSEPORT listener per thread, level-triggered epoll, one shared 64 KiB read buffer per
// thread, write() straight back; leftovers are kept (and reading paused) only on EAGAIN.
#include <sys/epoll.h>

#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kName = "epoll_echo";
constexpr std::uint64_t kListenTag = ~std::uint64_t{0};

class Loop {
 public:
  Loop(int listen_fd, std::size_t buf) : lfd_(listen_fd), buf_(buf) {
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) baseline::die(kName, "epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenTag;
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, lfd_, &ev) != 0) baseline::die(kName, "epoll_ctl");
  }

  void run() {
    std::vector<epoll_event> events(512);
    while (true) {
      int n = ::epoll_wait(ep_, events.data(), static_cast<int>(events.size()), -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        baseline::die(kName, "epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        const epoll_event& ev = events[static_cast<std::size_t>(i)];
        if (ev.data.u64 == kListenTag) {
          accept_all();
        } else if (ev.events & EPOLLOUT) {
          writable(static_cast<int>(ev.data.u64));
        } else {
          readable(static_cast<int>(ev.data.u64));
        }
      }
    }
  }

 private:
  void accept_all() {
    for (int k = 0; k < 256; ++k) {
      int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or EMFILE etc.: level-triggered, we come back
      baseline::set_nodelay(fd);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = static_cast<std::uint64_t>(fd);
      if (::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) ::close(fd);
    }
  }

  void close_conn(int fd) {
    pending_.erase(fd);
    ::close(fd);
  }

  void readable(int fd) {
    ssize_t n = ::read(fd, buf_.data(), buf_.size());
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      close_conn(fd);
      return;
    }
    if (n < 0) return;
    std::size_t len = static_cast<std::size_t>(n);
    std::size_t off = 0;
    while (off < len) {
      ssize_t w = ::write(fd, buf_.data() + off, len - off);
      if (w > 0) {
        off += static_cast<std::size_t>(w);
      } else if (w < 0 && errno == EINTR) {
        continue;
      } else if (w < 0 && errno == EAGAIN) {
        pending_[fd].assign(buf_.data() + off, len - off);
        epoll_event ev{};
        ev.events = EPOLLOUT;  // stop reading until the leftovers are gone
        ev.data.u64 = static_cast<std::uint64_t>(fd);
        ::epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &ev);
        return;
      } else {
        close_conn(fd);
        return;
      }
    }
  }

  void writable(int fd) {
    auto it = pending_.find(fd);
    if (it == pending_.end()) return;
    std::string& p = it->second;
    while (!p.empty()) {
      ssize_t w = ::write(fd, p.data(), p.size());
      if (w > 0) {
        p.erase(0, static_cast<std::size_t>(w));
      } else if (w < 0 && errno == EINTR) {
        continue;
      } else if (w < 0 && errno == EAGAIN) {
        return;
      } else {
        close_conn(fd);
        return;
      }
    }
    pending_.erase(it);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = static_cast<std::uint64_t>(fd);
    ::epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &ev);
  }

  int lfd_;
  int ep_ = -1;
  std::vector<char> buf_;
  std::unordered_map<int, std::string> pending_;
};

}  // namespace

int main(int argc, char** argv) {
  baseline::Args a = baseline::parse_args(kName, "Raw epoll echo server (baseline: the floor of cost).",
                                          argc, argv);
  std::vector<int> fds(a.threads);
  const std::uint16_t port = baseline::make_listeners(kName, a, fds.data());
  baseline::block_stop_signals();
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < a.threads; ++i) {
    threads.emplace_back([fd = fds[i], &a] {
      Loop loop(fd, a.buf);
      loop.run();
    });
  }
  baseline::print_listening(kName, a, port);
  baseline::wait_for_stop();
}

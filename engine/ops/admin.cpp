// AdminServer: GET /metrics and GET /health over HTTP/1.1 on a thread of its own.
//
// One epoll loop (level-triggered) over the listening socket, an eventfd that stop() writes,
// and at most kMaxConnections client slots. A slot goes reading (the request head, at most
// kMaxHead bytes, within Hooks::head_timeout) -> writing (the response, kWriteTimeout) ->
// lingering (write side shut, unread input drained until the client's FIN or kLingerTimeout,
// so that bytes it sent past the head do not turn our close into a reset that destroys the
// response) -> free. Every response carries "Connection: close". Deadlines are swept after
// each epoll_wait pass; the loop sleeps until the nearest one.
#include "ops/admin.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <system_error>

#include "io/listeners.hpp"
#include "io/proxy_header.hpp"
#include "core/threads.hpp"

namespace esockets::detail {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxConnections = 64;  // more at once are closed as soon as accepted
constexpr std::size_t kMaxHead = 8192;       // request line + headers + blank line
constexpr auto kWriteTimeout = std::chrono::seconds(10);
constexpr auto kLingerTimeout = std::chrono::seconds(1);
constexpr auto kAcceptPause = std::chrono::milliseconds(100);  // after EMFILE and the like
constexpr int kAcceptBudget = 64;                              // accepts per listener event
constexpr std::uint64_t kListenTag = ~std::uint64_t{0};
constexpr std::uint64_t kStopTag = ~std::uint64_t{0} - 1;

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), "esockets: admin listener: " + what);
}

// ---- the request -----------------------------------------------------------------------

bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_tchar(c)) return false;
  }
  return true;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// True if an Accept header value asks for application/openmetrics-text with a q above 0.
bool accepts_openmetrics(std::string_view value) {
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    std::string_view range = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
    const std::size_t semi = range.find(';');
    if (!iequals(trim(range.substr(0, semi)), "application/openmetrics-text")) continue;
    bool zero = false;
    std::string_view params =
        semi == std::string_view::npos ? std::string_view{} : range.substr(semi);
    while (!params.empty()) {
      params.remove_prefix(1);  // the ';'
      const std::size_t next = params.find(';');
      const std::string_view p = trim(params.substr(0, next));
      params = next == std::string_view::npos ? std::string_view{} : params.substr(next);
      if (p.size() >= 2 && lower(p[0]) == 'q' && p[1] == '=') {
        const std::string_view q = p.substr(2);
        zero = !q.empty() && q[0] == '0' && q.find_first_not_of("0.", 1) == std::string_view::npos;
      }
    }
    if (!zero) return true;
  }
  return false;
}

struct Request {
  std::string_view method;
  std::string_view path;  // without the query
  bool openmetrics = false;
};

// Parses a request head (up to and including its blank line). 0 when it is well-formed, else
// the status to answer with (400, or 505 for an HTTP major version other than 1).
int parse_request(std::string_view head, Request& req) {
  std::size_t pos = 0;
  auto next_line = [&](std::string_view& line) {
    const std::size_t nl = head.find('\n', pos);
    if (nl == std::string_view::npos) return false;
    line = head.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return true;
  };
  std::string_view line;
  if (!next_line(line)) return 400;
  // method SP request-target SP HTTP-version, single spaces.
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return 400;
  req.method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!token(req.method)) return 400;
  if (target.empty() || target[0] != '/') return 400;
  for (char c : target) {
    if (c <= 0x20 || c >= 0x7F) return 400;
  }
  req.path = target.substr(0, target.find('?'));
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
    return 400;
  }
  if (version[5] != '1') return 505;
  while (next_line(line)) {
    if (line.empty()) return 0;
    if (line[0] == ' ' || line[0] == '\t') return 400;  // obsolete line folding
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || !token(line.substr(0, colon))) return 400;
    const std::string_view value = trim(line.substr(colon + 1));
    for (char c : value) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7F) return 400;
    }
    if (iequals(line.substr(0, colon), "accept") && accepts_openmetrics(value)) {
      req.openmetrics = true;
    }
  }
  return 400;  // no blank line (the caller passes whole heads only)
}

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
  }
  return "Error";
}

// ---- a client ------------------------------------------------------------------------------

struct Client {
  enum class State : std::uint8_t { free, reading, writing, lingering };
  State state = State::free;
  int fd = -1;
  std::uint32_t generation = 0;  // tells a slot's uses apart in epoll data
  std::uint32_t armed = 0;       // epoll events registered
  std::unique_ptr<char[]> buf;   // reading: the request head; writing: the response head
  std::size_t len = 0;           // bytes in buf
  std::string body;              // a rendered body (metrics) that out_body points into
  std::string_view out_body;     // writing: the body to send (empty for HEAD)
  std::size_t sent = 0;          // writing: bytes of buf[0, len) + out_body written
  Clock::time_point deadline;
};

}  // namespace

struct AdminServer::Impl {
  Hooks hooks;
  std::string address;  // as bound
  std::uint16_t port = 0;
  std::unique_ptr<ListenerState> unix_listener;  // a Unix admin address (its file is ours)
  int listen_fd = -1;
  int epoll_fd = -1;
  int stop_fd = -1;
  std::thread thread;
  bool started = false;
  bool stopped = false;
  // Owned by the admin thread once it runs.
  std::array<Client, kMaxConnections> conns;
  std::size_t live = 0;
  bool accept_paused = false;
  Clock::time_point accept_resume;

  ~Impl() { close_fds(); }

  void close_fds() {
    if (unix_listener) {
      close_unix_listener(*unix_listener);  // closes listen_fd, removes the file if ours
      unix_listener.reset();
      listen_fd = -1;
    }
    for (int* fd : {&listen_fd, &epoll_fd, &stop_fd}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  }

  void bind(const std::string& text);
  void bind_unix(const ListenAddress& a, const std::string& text);
  void run();
  void accept_ready(Clock::time_point now);
  void on_event(Client& c, std::uint32_t events, Clock::time_point now);
  void read_head(Client& c, Clock::time_point now);
  void respond(Client& c, int status, const Request* req, Clock::time_point now);
  void flush(Client& c, Clock::time_point now);
  void drain(Client& c);
  void arm(Client& c, std::uint32_t events);
  void close_conn(Client& c);
  int next_timeout_ms(Clock::time_point now) const;
  static std::uint64_t tag(const Client& c, std::size_t index) {
    return (std::uint64_t{c.generation} << 8) | index;
  }
};

void AdminServer::Impl::bind(const std::string& text) {
  ListenAddress a;
  std::string error;
  if (!parse_listen_address(text, a, error)) {
    throw std::invalid_argument("esockets: admin " + error);
  }
  if (a.kind == ListenAddress::Kind::unix_path || a.kind == ListenAddress::Kind::unix_abstract) {
    bind_unix(a, text);
  } else {
    const bool v6 = a.kind == ListenAddress::Kind::tcp6;
    listen_fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0) throw_errno(errno, "socket() for '" + text + "'");
    const int one = 1;
    ::setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // restarts in TIME_WAIT
    // A process taking over (ServerOptions::take_over) binds the same admin port while this one
    // still serves it; the old one closes its socket when it stops.
    if (hooks.reuse_port) ::setsockopt(listen_fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (v6) {
      auto* sa = reinterpret_cast<sockaddr_in6*>(&ss);
      sa->sin6_family = AF_INET6;
      sa->sin6_port = htons(a.port);
      ::inet_pton(AF_INET6, a.host.c_str(), &sa->sin6_addr);
      len = sizeof(sockaddr_in6);
    } else {
      auto* sa = reinterpret_cast<sockaddr_in*>(&ss);
      sa->sin_family = AF_INET;
      sa->sin_port = htons(a.port);
      ::inet_pton(AF_INET, a.host.c_str(), &sa->sin_addr);
      len = sizeof(sockaddr_in);
    }
    if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
      throw_errno(errno, "cannot bind '" + text + "'");
    }
    socklen_t got = sizeof ss;
    ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&ss), &got);
    port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                    : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    address = (v6 ? "[" + a.host + "]" : a.host) + ":" + std::to_string(port);
  }
  if (::listen(listen_fd, 64) != 0) throw_errno(errno, "listen() on '" + text + "'");
}

void AdminServer::Impl::bind_unix(const ListenAddress& a, const std::string& text) {
  // The server's own Unix listener code: stale-file removal, and at stop the file is removed
  // only if it is still the one bound here.
  unix_listener = std::make_unique<ListenerState>();
  unix_listener->opts.address = text;
  unix_listener->addr = a;
  unix_listener->backlog = 64;
  open_unix_listener(*unix_listener, AcceptedSocketOptions{false, 0, 0});
  listen_fd = unix_listener->shared_fd;
  address = unix_listener->bound;
}

int AdminServer::Impl::next_timeout_ms(Clock::time_point now) const {
  Clock::time_point next = Clock::time_point::max();
  for (const Client& c : conns) {
    if (c.state != Client::State::free && c.deadline < next) next = c.deadline;
  }
  if (accept_paused && accept_resume < next) next = accept_resume;
  if (next == Clock::time_point::max()) return -1;
  if (next <= now) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
  return ms > 60000 ? 60000 : static_cast<int>(ms);
}

void AdminServer::Impl::run() {
  (void)name_and_pin_thread("esk-admin", -1);
  epoll_event events[32];
  for (;;) {
    const int n = ::epoll_wait(epoll_fd, events, 32, next_timeout_ms(Clock::now()));
    if (n < 0 && errno != EINTR) break;  // cannot happen with valid fds; nothing to serve then
    const Clock::time_point now = Clock::now();
    bool stop = false;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t t = events[i].data.u64;
      if (t == kStopTag) {
        stop = true;
      } else if (t == kListenTag) {
        accept_ready(now);
      } else {
        Client& c = conns[t & 0xFF];
        if (c.state != Client::State::free && tag(c, t & 0xFF) == t)
          on_event(c, events[i].events, now);
      }
    }
    if (stop) break;
    for (Client& c : conns) {
      if (c.state != Client::State::free && c.deadline <= now) close_conn(c);
    }
    if (accept_paused && accept_resume <= now) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kListenTag;
      if (::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, listen_fd, &ev) == 0)
        accept_paused = false;
      else
        accept_resume = now + kAcceptPause;
    }
  }
  for (Client& c : conns) {
    if (c.state != Client::State::free) close_conn(c);
  }
}

void AdminServer::Impl::accept_ready(Clock::time_point now) {
  for (int i = 0; i < kAcceptBudget; ++i) {
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // Out of fds or memory (or worse): stop listening for a moment instead of spinning on a
      // readable listener.
      epoll_event ev{};
      ev.data.u64 = kListenTag;
      ::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, listen_fd, &ev);
      accept_paused = true;
      accept_resume = now + kAcceptPause;
      return;
    }
    if (live == kMaxConnections) {
      ::close(fd);
      continue;
    }
    std::size_t index = 0;
    while (conns[index].state != Client::State::free) ++index;
    Client& c = conns[index];
    c.fd = fd;
    ++c.generation;
    c.state = Client::State::reading;
    c.len = 0;
    c.deadline = now + hooks.head_timeout;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag(c, index);
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      c.fd = -1;
      c.state = Client::State::free;
      continue;
    }
    c.armed = EPOLLIN;
    ++live;
  }
}

void AdminServer::Impl::on_event(Client& c, std::uint32_t events, Clock::time_point now) {
  switch (c.state) {
    case Client::State::reading: read_head(c, now); break;
    case Client::State::writing:
      if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) flush(c, now);
      break;
    case Client::State::lingering: drain(c); break;
    case Client::State::free: break;
  }
}

void AdminServer::Impl::read_head(Client& c, Clock::time_point now) {
  if (!c.buf) c.buf = std::make_unique_for_overwrite<char[]>(kMaxHead);
  const ssize_t n = ::recv(c.fd, c.buf.get() + c.len, kMaxHead - c.len, 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {  // the client left (or failed) before its request was complete
    close_conn(c);
    return;
  }
  std::size_t from = c.len;
  c.len += static_cast<std::size_t>(n);
  // Empty lines before the request line are ignored (RFC 9112 section 2.2).
  std::size_t skip = 0;
  if (from == 0) {
    while (skip < c.len && (c.buf[skip] == '\r' || c.buf[skip] == '\n')) ++skip;
    if (skip != 0) {
      std::memmove(c.buf.get(), c.buf.get() + skip, c.len - skip);
      c.len -= skip;
    }
  }
  // The head ends with an empty line: "\n\r\n" or "\n\n".
  const std::string_view text(c.buf.get(), c.len);
  for (std::size_t i = from >= 2 ? from - 2 : 0; i < text.size(); ++i) {
    if (text[i] != '\n') continue;
    std::size_t end = 0;
    if (i + 1 < text.size() && text[i + 1] == '\n') end = i + 2;
    if (i + 2 < text.size() && text[i + 1] == '\r' && text[i + 2] == '\n') end = i + 3;
    if (end == 0) continue;
    Request req;
    const int status = parse_request(text.substr(0, end), req);
    respond(c, status, status == 0 ? &req : nullptr, now);
    return;
  }
  if (c.len == kMaxHead) respond(c, 431, nullptr, now);
}

void AdminServer::Impl::respond(Client& c, int status, const Request* req, Clock::time_point now) {
  const char* type = "text/plain; charset=utf-8";
  bool head_only = false;
  bool allow = false;
  c.out_body = {};
  if (req != nullptr) {
    const bool get = req->method == "GET";
    head_only = req->method == "HEAD";
    const bool metrics = req->path == "/metrics";
    if (!metrics && req->path != "/health") {
      status = 404;
    } else if (!get && !head_only) {
      status = 405;
      allow = true;
    } else {
      // The hooks are the server's: whatever they throw must not end this thread.
      try {
        if (metrics) {
          const MetricsFormat f =
              req->openmetrics ? MetricsFormat::openmetrics : MetricsFormat::prometheus;
          if (!hooks.metrics) throw std::logic_error("no metrics hook");
          c.body = hooks.metrics(f);
          c.out_body = c.body;
          type = content_type(f);
          status = 200;
        } else {
          status = hooks.draining && hooks.draining() ? 503 : 200;
        }
      } catch (...) {
        status = 500;
        c.out_body = {};
        c.body.clear();
        type = "text/plain; charset=utf-8";
      }
    }
  }
  if (c.out_body.empty()) {
    switch (status) {
      case 200: c.out_body = "ok\n"; break;
      case 503: c.out_body = "draining\n"; break;
      case 404: c.out_body = "not found: try /metrics or /health\n"; break;
      case 405: c.out_body = "method not allowed: use GET or HEAD\n"; break;
      case 431: c.out_body = "request head over 8 KiB\n"; break;
      case 500: c.out_body = "internal server error\n"; break;
      case 505: c.out_body = "HTTP/1.x only\n"; break;
      default: c.out_body = "bad request\n"; break;
    }
  }
  if (!c.buf) c.buf = std::make_unique_for_overwrite<char[]>(kMaxHead);
  const int w = std::snprintf(c.buf.get(), kMaxHead,
                              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                              "Connection: close\r\n\r\n",
                              status, reason_phrase(status), type, c.out_body.size(),
                              allow ? "Allow: GET, HEAD\r\n" : "");
  c.len = static_cast<std::size_t>(w);
  if (head_only) c.out_body = {};
  c.sent = 0;
  c.state = Client::State::writing;
  c.deadline = now + kWriteTimeout;
  flush(c, now);  // most responses fit the socket buffer: EPOLLOUT only when they do not
}

void AdminServer::Impl::flush(Client& c, Clock::time_point now) {
  const std::size_t total = c.len + c.out_body.size();
  while (c.sent < total) {
    iovec iov[2];
    int n = 0;
    if (c.sent < c.len) iov[n++] = {c.buf.get() + c.sent, c.len - c.sent};
    const std::size_t body_off = c.sent > c.len ? c.sent - c.len : 0;
    if (body_off < c.out_body.size()) {
      iov[n++] = {const_cast<char*>(c.out_body.data() + body_off), c.out_body.size() - body_off};
    }
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = static_cast<std::size_t>(n);
    const ssize_t w = ::sendmsg(c.fd, &m, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        arm(c, EPOLLOUT);
        return;
      }
      close_conn(c);
      return;
    }
    c.sent += static_cast<std::size_t>(w);
  }
  ::shutdown(c.fd, SHUT_WR);
  c.state = Client::State::lingering;
  c.deadline = now + kLingerTimeout;
  c.out_body = {};
  std::string().swap(c.body);
  c.buf.reset();
  arm(c, EPOLLIN);
}

void AdminServer::Impl::drain(Client& c) {
  char scratch[4096];
  const ssize_t n = ::recv(c.fd, scratch, sizeof scratch, 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) close_conn(c);  // the client's FIN (or an error): done
}

void AdminServer::Impl::arm(Client& c, std::uint32_t events) {
  if (c.armed == events) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = tag(c, static_cast<std::size_t>(&c - conns.data()));
  if (::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c.fd, &ev) != 0) {
    close_conn(c);
    return;
  }
  c.armed = events;
}

void AdminServer::Impl::close_conn(Client& c) {
  ::close(c.fd);  // also leaves the epoll set
  c.fd = -1;
  c.state = Client::State::free;
  c.armed = 0;
  c.len = 0;
  c.sent = 0;
  c.out_body = {};
  std::string().swap(c.body);
  c.buf.reset();
  --live;
}

AdminServer::AdminServer(const std::string& address, Hooks hooks)
    : impl_(std::make_unique<Impl>()) {
  impl_->hooks = std::move(hooks);
  impl_->bind(address);
  impl_->epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (impl_->epoll_fd < 0) throw_errno(errno, "epoll_create1");
  impl_->stop_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl_->stop_fd < 0) throw_errno(errno, "eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenTag;
  if (::epoll_ctl(impl_->epoll_fd, EPOLL_CTL_ADD, impl_->listen_fd, &ev) != 0) {
    throw_errno(errno, "epoll_ctl");
  }
  ev.data.u64 = kStopTag;
  if (::epoll_ctl(impl_->epoll_fd, EPOLL_CTL_ADD, impl_->stop_fd, &ev) != 0) {
    throw_errno(errno, "epoll_ctl");
  }
}

AdminServer::~AdminServer() { stop(); }

void AdminServer::start() {
  if (impl_->stopped) throw std::logic_error("esockets: AdminServer::start() after stop()");
  if (impl_->started) return;
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
  impl_->started = true;
}

void AdminServer::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  if (impl_->thread.joinable()) {
    const std::uint64_t one = 1;
    while (::write(impl_->stop_fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
    impl_->thread.join();
  }
  impl_->close_fds();
}

std::string AdminServer::address() const { return impl_->address; }

std::uint16_t AdminServer::port() const { return impl_->port; }

}  // namespace esockets::detail

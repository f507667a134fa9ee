// Takeover between two servers (ServerOptions::takeover_socket / take_over), in one process:
// the listeners and every live connection pass through the control socket exactly as they do
// between processes (SCM_RIGHTS does not care). Each client numbers its lines and checks every
// echo (loss, duplication, order) across the hand-over, and that it never saw EOF or a reset.
// Failure cases use a hand-written peer on the control socket (engine/takeover/takeover_wire.hpp).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "esockets/esockets.hpp"
#include "takeover/takeover_wire.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using esockets::Bytes;
using esockets::CloseReason;
using esockets::Connection;
using esockets::Server;
using esockets::ServerOptions;
using esockets::test::Client;
using esockets::test::wait_until;
namespace d = esockets::detail;

std::string temp_path(const char* name) {
  static std::string dir = [] {
    char tmpl[] = "/tmp/esk-takeover-XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    return std::string(p != nullptr ? p : "/tmp");
  }();
  return dir + "/" + name + "-" + std::to_string(::getpid());
}

// Echoes each line as "<count> <line>", where count is how many lines this connection sent
// so far: a state that must survive the takeover (saved and restored through the hooks).
class CountingEcho : public esockets::Handler {
 public:
  std::atomic<int> connects{0}, restores{0}, taken{0}, other_closes{0}, warnings{0};
  std::string last_warning;
  std::mutex mu;

  bool on_client_connect(Connection& c) override {
    c.emplace_state<long>(0);
    connects++;
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    long& n = *c.state<long>();
    ++n;
    if (m.rfind("BIG ", 0) == 0) {
      // A reply far larger than the socket buffers: it stays queued for a slow reader.
      const std::size_t size = std::strtoul(std::string(m.substr(4)).c_str(), nullptr, 10);
      c.send(std::string(size, 'x') + "\n");
      return;
    }
    c.send(std::to_string(n) + " " + std::string(m) + "\n");
  }
  std::string on_client_takeover(Connection& c) override {
    taken++;
    return std::to_string(*c.state<long>());
  }
  bool on_client_restore(Connection& c, std::string_view state) override {
    restores++;
    c.emplace_state<long>(std::strtol(std::string(state).c_str(), nullptr, 10));
    return true;
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    if (r != CloseReason::taken_over) other_closes++;
  }
  void on_warning(const esockets::Warning& w) override {
    warnings++;
    std::lock_guard lk(mu);
    last_warning = w.text;
  }
};

ServerOptions options(unsigned shards, unsigned workers) {
  ServerOptions o = esockets::test::loopback_options(shards, workers);
  o.framing = esockets::Framing::line;
  return o;
}

// Sends line k of client i, checks the echo "<k+1> c<i>-<k>".
bool round_trip(Client& c, std::size_t i, long k, std::string& why) {
  const std::string line = "c" + std::to_string(i) + "-" + std::to_string(k);
  if (!c.send_line(line, 5s)) {
    why = "send failed at " + line;
    return false;
  }
  std::string got;
  if (!c.recv_line(got, 10s)) {
    why = "no echo for " + line;
    return false;
  }
  const std::string want = std::to_string(k + 1) + " " + line;
  if (got != want) {
    why = "got '" + got + "', want '" + want + "'";
    return false;
  }
  return true;
}

struct Mode {
  unsigned shards_old, shards_new, workers;
};

class Takeover : public ::testing::TestWithParam<Mode> {};

TEST_P(Takeover, EveryConnectionMovesWithItsStateAndNothingIsLost) {
  const Mode m = GetParam();
  const std::string path = temp_path("basic");
  CountingEcho h_old, h_new;
  ServerOptions oo = options(m.shards_old, m.workers);
  oo.takeover_socket = path;
  Server old_srv(h_old, oo);
  old_srv.start();
  const std::uint16_t port = old_srv.port();

  const std::size_t kClients = esockets::test::scaled(64, 8);
  std::vector<Client> clients;
  for (std::size_t i = 0; i < kClients; ++i) clients.emplace_back(port);
  std::vector<long> next(kClients, 0);
  std::string why;
  for (std::size_t i = 0; i < kClients; ++i) {
    for (int k = 0; k < 3; ++k) ASSERT_TRUE(round_trip(clients[i], i, next[i]++, why)) << why;
  }
  // Some clients have lines in flight (sent, not yet echoed) while the takeover runs, and one
  // has half a line buffered in the old server.
  for (std::size_t i = 0; i < kClients; i += 2) {
    ASSERT_TRUE(clients[i].send_line("c" + std::to_string(i) + "-" + std::to_string(next[i])));
  }
  ASSERT_TRUE(clients[1].send_all("c1-"));

  ServerOptions no = options(m.shards_new, m.workers);
  no.port = 0;
  no.take_over = path;
  Server new_srv(h_new, no);
  new_srv.start();
  // The old server holds nothing any more and stops by itself.
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 15s)) << "the old server still runs";
  old_srv.wait();
  EXPECT_EQ(new_srv.port(), port);
  EXPECT_EQ(new_srv.shards(), m.shards_new);
  EXPECT_TRUE(wait_until([&] { return new_srv.client_count() == kClients; }, 5s))
      << new_srv.client_count();
  EXPECT_EQ(h_old.taken.load(), static_cast<int>(kClients));
  EXPECT_EQ(h_old.other_closes.load(), 0);
  // (With workers, on_client_restore runs on a worker, after start() returned.)
  EXPECT_TRUE(wait_until([&] { return h_new.restores.load() == static_cast<int>(kClients); }, 5s))
      << h_new.restores.load();
  EXPECT_EQ(h_new.connects.load(), 0);
  EXPECT_EQ(h_old.warnings.load(), 0) << h_old.last_warning;
  EXPECT_EQ(h_new.warnings.load(), 0) << h_new.last_warning;

  // The lines in flight are answered (by whichever server read them), in order.
  for (std::size_t i = 0; i < kClients; i += 2) {
    std::string got;
    ASSERT_TRUE(clients[i].recv_line(got, 10s)) << "client " << i;
    const std::string want = std::to_string(next[i] + 1) + " c" + std::to_string(i) + "-" +
                             std::to_string(next[i]);
    ASSERT_EQ(got, want);
    ++next[i];
  }
  // The rest of the half line reaches the new server, which frames it whole.
  {
    const std::string line = "c1-" + std::to_string(next[1]);
    ASSERT_TRUE(clients[1].send_all(std::to_string(next[1]) + "\n"));
    std::string got;
    ASSERT_TRUE(clients[1].recv_line(got, 10s));
    ASSERT_EQ(got, std::to_string(next[1] + 1) + " " + line);
    ++next[1];
  }
  for (std::size_t i = 0; i < kClients; ++i) {
    for (int k = 0; k < 3; ++k) ASSERT_TRUE(round_trip(clients[i], i, next[i]++, why)) << why;
  }
  // New clients reach the new server on the same port.
  Client late(port);
  ASSERT_TRUE(round_trip(late, 999, 0, why)) << why;
  EXPECT_EQ(h_new.connects.load(), 1);
  new_srv.stop();
}

INSTANTIATE_TEST_SUITE_P(Modes, Takeover,
                         ::testing::Values(Mode{2, 2, 0}, Mode{2, 2, 2}, Mode{3, 1, 0},
                                           Mode{1, 3, 2}),
                         [](const ::testing::TestParamInfo<Mode>& i) {
                           return "old" + std::to_string(i.param.shards_old) + "_new" +
                                  std::to_string(i.param.shards_new) + "_workers" +
                                  std::to_string(i.param.workers);
                         });

TEST(TakeoverCases, QueuedOutputForASlowReaderArrivesWhole) {
  const std::string path = temp_path("slow");
  CountingEcho h_old, h_new;
  ServerOptions oo = options(2, 0);
  oo.takeover_socket = path;
  oo.socket_send_buffer = 16 * 1024;
  Server old_srv(h_old, oo);
  old_srv.start();
  Client c(old_srv.port());
  c.set_rcvbuf(16 * 1024);
  const std::size_t kBig = 4u << 20;  // far more than the two socket buffers hold
  ASSERT_TRUE(c.send_line("BIG " + std::to_string(kBig)));
  ASSERT_TRUE(wait_until([&] { return old_srv.stats().total.output_bytes > 0; }, 5s));

  ServerOptions no = options(1, 0);
  no.take_over = path;
  Server new_srv(h_new, no);
  new_srv.start();
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 15s));
  old_srv.wait();
  std::string got;
  ASSERT_TRUE(c.recv_exact(kBig + 1, got, 20s)) << got.size();
  EXPECT_EQ(got, std::string(kBig, 'x') + "\n");
  std::string why;
  ASSERT_TRUE(round_trip(c, 0, 1, why)) << why;
  EXPECT_EQ(h_old.other_closes.load(), 0);
  new_srv.stop();
}

TEST(TakeoverCases, HalfClosedClientGetsEveryReplyThenFin) {
  const std::string path = temp_path("half");
  CountingEcho h_old, h_new;
  ServerOptions oo = options(1, 1);
  oo.takeover_socket = path;
  Server old_srv(h_old, oo);
  old_srv.start();
  Client c(old_srv.port());
  std::string why;
  ASSERT_TRUE(round_trip(c, 0, 0, why)) << why;

  ServerOptions no = options(1, 1);
  no.take_over = path;
  Server new_srv(h_new, no);
  new_srv.start();
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 15s));
  // After the takeover: lines, then FIN; every reply comes, then the server's FIN.
  ASSERT_TRUE(c.send_all("c0-1\nc0-2\n"));
  c.shutdown_write();
  std::string got;
  ASSERT_TRUE(c.recv_line(got, 10s));
  EXPECT_EQ(got, "2 c0-1");
  ASSERT_TRUE(c.recv_line(got, 10s));
  EXPECT_EQ(got, "3 c0-2");
  EXPECT_EQ(c.wait_eof(10s), esockets::test::EofResult::eof);
  new_srv.stop();
}

// Echoes "<peer> <line>": the peer a PROXY header named.
class PeerEcho : public esockets::Handler {
 public:
  void on_message_recv(Connection& c, Bytes m) override { c.send(c.getip() + " " + std::string(m) + "\n"); }
};

TEST(TakeoverCases, ConnectionInItsProxyStageMovesWithItsDeadline) {
  const std::string path = temp_path("proxy");
  PeerEcho h_old, h_new;
  const auto proxy_options = [](const std::string& address) {
    ServerOptions o = options(1, 0);
    esockets::ListenerOptions l;
    l.address = address;
    l.proxy_protocol = esockets::ProxyProtocol::v1;
    l.proxy_timeout = 5000ms;
    o.listeners = {l};
    return o;
  };
  ServerOptions oo = proxy_options("127.0.0.1:0");
  oo.takeover_socket = path;
  Server old_srv(h_old, oo);
  old_srv.start();
  Client c(old_srv.port());  // in the PROXY stage: nothing sent yet
  ASSERT_TRUE(c.send_all("PROXY TCP4 192.0.2.7 127.0.0.1 4000 80"));  // half a header
  ServerOptions no = proxy_options("127.0.0.1:0");
  no.take_over = path;
  Server new_srv(h_new, no);
  new_srv.start();
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 15s));
  ASSERT_TRUE(c.send_all("\r\nhello\n"));
  std::string got;
  ASSERT_TRUE(c.recv_line(got, 5s));
  EXPECT_EQ(got, "192.0.2.7:4000 hello");
  EXPECT_EQ(new_srv.stats().taken_over_in, 1u);
  new_srv.stop();
}

TEST(TakeoverCases, PeerOfAnotherUserIsRefusedAndChangesNothing) {
  // The socket file is 0600 (the first wall); behind it the server checks the peer's uid
  // (SO_PEERCRED). Opened up to everyone here, a client running as another user connects and
  // must be refused with a warning naming its uid, while everything keeps being served.
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another user";
  const std::string path = temp_path("foreign");
  CountingEcho h_old;
  ServerOptions oo = options(1, 0);
  oo.takeover_socket = path;
  oo.takeover_timeout = 2000ms;
  Server old_srv(h_old, oo);
  old_srv.start();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << std::oct << (st.st_mode & 0777);
  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
  ASSERT_EQ(::chmod(path.substr(0, path.rfind('/')).c_str(), 0755), 0);
  Client c(old_srv.port());
  std::string why;
  ASSERT_TRUE(round_trip(c, 0, 0, why)) << why;
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Raw system calls only (another thread may hold a lock the child would need).
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) ::_exit(3);
    char buf[256];
    while (::read(fd, buf, sizeof buf) > 0) {
    }
    ::_exit(0);  // the server closed on us
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  ASSERT_TRUE(wait_until([&] { return h_old.warnings.load() >= 1; }, 5s));
  {
    std::lock_guard lk(h_old.mu);
    EXPECT_NE(h_old.last_warning.find("uid 65534"), std::string::npos) << h_old.last_warning;
  }
  EXPECT_TRUE(old_srv.running());
  ASSERT_TRUE(round_trip(c, 0, 1, why)) << why;
  Client late(old_srv.port());
  ASSERT_TRUE(round_trip(late, 1, 0, why)) << why;
  EXPECT_EQ(old_srv.client_count(), 2u);
  old_srv.stop();
}

// A hand-written new process: handshake, listeners, then whatever `after` does.
struct FakeNew {
  d::Channel ch;
  std::vector<int> listener_fds;
  explicit FakeNew(int fd) : ch(fd) {}
  ~FakeNew() {
    for (int f : listener_fds) ::close(f);
  }
};

std::unique_ptr<FakeNew> fake_new(const std::string& path, std::string& err) {
  const int fd = d::connect_control(path, 5s, err);
  if (fd < 0) return nullptr;
  auto f = std::make_unique<FakeNew>(fd);
  if (!d::handshake_client(f->ch, err)) return nullptr;
  d::Message m;
  if (!f->ch.recv(m, 5s, err)) return nullptr;
  if (m.type != d::MsgType::listeners) {
    err = "got " + d::type_name(m.type);
    return nullptr;
  }
  f->listener_fds = m.fds;
  d::Message ack;
  ack.type = d::MsgType::ack;
  if (!f->ch.send(ack, 5s, err)) return nullptr;
  return f;
}

TEST(TakeoverCases, NewProcessDyingMidTransferLeavesTheOldServingEverything) {
  const std::string path = temp_path("newdies");
  CountingEcho h_old;
  ServerOptions oo = options(2, 0);
  oo.takeover_socket = path;
  oo.takeover_timeout = 2000ms;
  Server old_srv(h_old, oo);
  old_srv.start();
  const std::size_t kClients = 12;
  std::vector<Client> clients;
  std::vector<long> next(kClients, 0);
  std::string why;
  for (std::size_t i = 0; i < kClients; ++i) {
    clients.emplace_back(old_srv.port());
    ASSERT_TRUE(round_trip(clients[i], i, next[i]++, why)) << why;
  }
  {
    std::string err;
    auto f = fake_new(path, err);
    ASSERT_TRUE(f) << err;
    // It takes the first batch of connections and dies without acknowledging it.
    d::Message m;
    ASSERT_TRUE(f->ch.recv(m, 5s, err)) << err;
    EXPECT_EQ(m.type, d::MsgType::connections);
    d::close_fds(m);
  }
  // The old server takes back what was not acknowledged and serves every client again.
  ASSERT_TRUE(wait_until([&] { return h_old.warnings.load() > 0; }, 10s));
  {
    std::lock_guard lk(h_old.mu);
    EXPECT_NE(h_old.last_warning.find("failed"), std::string::npos) << h_old.last_warning;
  }
  EXPECT_TRUE(old_srv.running());
  for (std::size_t i = 0; i < kClients; ++i) {
    for (int k = 0; k < 2; ++k) ASSERT_TRUE(round_trip(clients[i], i, next[i]++, why)) << why;
  }
  Client late(old_srv.port());
  ASSERT_TRUE(round_trip(late, 99, 0, why)) << why;
  EXPECT_EQ(old_srv.client_count(), kClients + 1);
  EXPECT_EQ(h_old.other_closes.load(), 0);

  // And a real takeover still works afterwards.
  CountingEcho h_new;
  ServerOptions no = options(1, 0);
  no.take_over = path;
  Server new_srv(h_new, no);
  new_srv.start();
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 15s));
  for (std::size_t i = 0; i < kClients; ++i) ASSERT_TRUE(round_trip(clients[i], i, next[i]++, why)) << why;
  new_srv.stop();
}

TEST(TakeoverCases, OldProcessDyingMidTransferLeavesTheNewWithWhatItGot) {
  // A hand-written old process: one listener, one live connection handed over, then it dies.
  const std::string path = temp_path("olddies");
  std::string err;
  const int lfd = d::listen_control(path, err);
  ASSERT_GE(lfd, 0) << err;
  std::uint16_t port = 0;
  const int listen_sock = esockets::test::occupy_loopback_port(port);
  ASSERT_GE(listen_sock, 0);
  ASSERT_EQ(::fcntl(listen_sock, F_SETFL, ::fcntl(listen_sock, F_GETFL) | O_NONBLOCK), 0);
  Client c(port);
  int conn = -1;  // the fake old server's connection: accepted before it hands anything over
  ASSERT_TRUE(wait_until([&] { return (conn = ::accept(listen_sock, nullptr, nullptr)) >= 0; }, 5s));
  std::thread old_side([&] {
    std::string e;
    const int fd = d::accept_control(lfd, 10s, e);
    if (fd < 0) return;
    d::Channel ch(fd);
    if (!d::handshake_server(ch, e)) return;
    d::Writer w;
    w.u16(1);
    w.u8(0);
    w.u16(1);
    w.bytes("127.0.0.1:" + std::to_string(port));
    d::Message m;
    m.type = d::MsgType::listeners;
    m.payload = w.take();
    m.fds = {listen_sock};
    if (!ch.send(m, 5s, e)) return;
    d::Message ack;
    if (!ch.recv(ack, 5s, e)) return;
    d::ConnRecord r;
    r.peer.family = AF_INET;
    r.input = "c0-";  // half a line the old server had read
    r.output = "pending\n";
    r.app_state = "41";
    d::Message cm;
    cm.type = d::MsgType::connections;
    cm.payload = d::write_batch({r});
    cm.fds = {conn};
    (void)ch.send(cm, 5s, e);
    (void)ch.recv(ack, 5s, e);
    ::close(conn);
    // ... and it dies here, before "done".
  });
  CountingEcho h_new;
  ServerOptions no = options(1, 0);  // one shard: the fake's socket is not SO_REUSEPORT
  no.take_over = path;
  no.takeover_timeout = 3000ms;
  Server new_srv(h_new, no);
  new_srv.start();
  old_side.join();
  ::close(listen_sock);
  ::close(lfd);
  EXPECT_EQ(new_srv.port(), port);
  EXPECT_GE(h_new.warnings.load(), 1);
  ASSERT_TRUE(wait_until([&] { return new_srv.client_count() == 1; }, 5s));
  std::string got;
  ASSERT_TRUE(c.recv_line(got, 5s));
  EXPECT_EQ(got, "pending");
  ASSERT_TRUE(c.send_all("0\n"));
  ASSERT_TRUE(c.recv_line(got, 5s));
  EXPECT_EQ(got, "42 c0-0");
  Client late(port);
  std::string why;
  ASSERT_TRUE(round_trip(late, 1, 0, why)) << why;
  new_srv.stop();
}

TEST(TakeoverCases, GarbageAndIncompatiblePeersAreRefusedAndChangeNothing) {
  const std::string path = temp_path("garbage");
  CountingEcho h_old;
  ServerOptions oo = options(1, 0);
  oo.takeover_socket = path;
  oo.takeover_timeout = 1000ms;
  Server old_srv(h_old, oo);
  old_srv.start();
  Client c(old_srv.port());
  std::string why;
  ASSERT_TRUE(round_trip(c, 0, 0, why)) << why;
  std::string err;
  {
    // Garbage on the control socket.
    const int fd = d::connect_control(path, 5s, err);
    ASSERT_GE(fd, 0) << err;
    const char junk[] = "GET / HTTP/1.1\r\n\r\n";
    ASSERT_GT(::send(fd, junk, sizeof junk - 1, 0), 0);
    ASSERT_TRUE(wait_until([&] { return h_old.warnings.load() >= 1; }, 5s));
    ::close(fd);
  }
  {
    // A newer process that speaks only protocol v9.
    const int fd = d::connect_control(path, 5s, err);
    ASSERT_GE(fd, 0) << err;
    d::Channel ch(fd);
    d::Hello ours;
    ours.min_version = 9;
    ours.max_version = 9;
    EXPECT_FALSE(d::handshake_client(ch, err, nullptr, ours));
    EXPECT_NE(err.find("incompatible"), std::string::npos) << err;
    ASSERT_TRUE(wait_until([&] { return h_old.warnings.load() >= 2; }, 5s));
  }
  EXPECT_TRUE(old_srv.running());
  ASSERT_TRUE(round_trip(c, 0, 1, why)) << why;
  EXPECT_EQ(old_srv.stats().total.warnings_by_code[static_cast<std::size_t>(
                esockets::WarningCode::takeover)],
            2u);
  // A mismatched configuration is refused by the new side with a message saying what to do.
  CountingEcho h_new;
  ServerOptions no = options(1, 0);
  no.take_over = path;
  no.listeners = {esockets::ListenerOptions{}, esockets::ListenerOptions{}};
  no.listeners[0].address = "127.0.0.1:0";
  no.listeners[1].address = "127.0.0.1:0";
  Server new_srv(h_new, no);
  try {
    new_srv.start();
    FAIL() << "start() took over with two listeners from a server that has one";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("configure the same listeners"), std::string::npos)
        << e.what();
  }
  // The old server took its listeners back and serves on.
  ASSERT_TRUE(wait_until([&] { return h_old.warnings.load() >= 3; }, 5s));
  EXPECT_TRUE(old_srv.running());
  ASSERT_TRUE(round_trip(c, 0, 2, why)) << why;
  Client late(old_srv.port());
  ASSERT_TRUE(round_trip(late, 1, 0, why)) << why;
  old_srv.stop();
}

}  // namespace

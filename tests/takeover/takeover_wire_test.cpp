// Takeover wire (engine/takeover/takeover_wire.hpp): the control socket, peer credentials, message
// framing with fds, garbage peers, the version handshake and the record serialisation.
// Every socket file lives in a temporary directory removed at the end; every wait is bounded.
#include "takeover/takeover_wire.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "esockets/version.hpp"

namespace esockets::detail {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 5000ms;

::testing::AssertionResult contains(std::string_view text, std::string_view part) {
  if (text.find(part) != std::string_view::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

// ---- helpers ----

class TempDir {
 public:
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "esk-takeover-XXXXXX").string();
    if (::mkdtemp(t.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    path_ = t;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const char* name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

std::pair<Channel, Channel> channel_pair() {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  return {Channel(sv[0]), Channel(sv[1])};
}

// A raw peer: a socketpair whose one end is a Channel and whose other end the test writes
// hand-made records into.
struct RawPair {
  RawPair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    raw = sv[0];
    ch = std::make_unique<Channel>(sv[1]);
  }
  ~RawPair() { close_raw(); }
  void close_raw() {
    if (raw >= 0) ::close(raw);
    raw = -1;
  }
  int raw = -1;
  std::unique_ptr<Channel> ch;
};

std::string header(std::uint32_t magic, std::uint16_t version, std::uint8_t type,
                   std::uint8_t flags, std::uint32_t seq, std::uint32_t nfds, std::uint64_t total) {
  Writer w;
  w.u32(magic);
  w.u16(version);
  w.u8(type);
  w.u8(flags);
  w.u32(seq);
  w.u32(nfds);
  w.u64(total);
  return w.take();
}

std::string good(std::uint8_t flags, std::uint32_t seq, std::uint32_t nfds, std::uint64_t total,
                 std::string_view body) {
  return header(kMagic, kFrameVersion, static_cast<std::uint8_t>(MsgType::connections), flags, seq,
                nfds, total) +
         std::string(body);
}

void send_raw(int fd, const std::string& bytes, const std::vector<int>& fds = {}) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    ASSERT_NE(c, nullptr);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ASSERT_EQ(::sendmsg(fd, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()))
      << std::strerror(errno);
}

struct Pipe {
  Pipe() { EXPECT_EQ(::pipe2(fd, O_CLOEXEC), 0); }
  ~Pipe() {
    for (int f : fd) ::close(f);
  }
  int fd[2] = {-1, -1};
};

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 65521) & 0xFF);
  return s;
}

int bound_not_listening(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0) << std::strerror(errno);
  return fd;
}

// ---- control socket ----

TEST(TakeoverControl, SocketIsOwnerOnlyWhateverTheUmask) {
  TempDir dir;
  const std::string path = dir.file("ctl");
  const mode_t old = ::umask(0);  // the widest umask: the file must still come out 0600
  std::string error;
  const int fd = listen_control(path, error);
  ::umask(old);
  ASSERT_GE(fd, 0) << error;
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_NE(::fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  int type = 0;
  socklen_t len = sizeof type;
  ASSERT_EQ(::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len), 0);
  EXPECT_EQ(type, SOCK_SEQPACKET);
  ::close(fd);
}

TEST(TakeoverControl, StaleSocketFileIsReplaced) {
  TempDir dir;
  const std::string path = dir.file("ctl");
  ::close(bound_not_listening(path));  // the file stays; connecting to it is refused
  std::string error;
  const int lfd = listen_control(path, error);
  ASSERT_GE(lfd, 0) << error;
  const int cfd = connect_control(path, kWait, error);
  ASSERT_GE(cfd, 0) << error;
  const int afd = accept_control(lfd, kWait, error);
  ASSERT_GE(afd, 0) << error;
  for (int f : {afd, cfd, lfd}) ::close(f);
}

TEST(TakeoverControl, BoundButNotListeningIsStaleToo) {
  TempDir dir;
  const std::string path = dir.file("ctl");
  const int holder = bound_not_listening(path);
  std::string error;
  const int lfd = listen_control(path, error);
  EXPECT_GE(lfd, 0) << error;
  ::close(lfd);
  ::close(holder);
}

TEST(TakeoverControl, LiveSocketIsRefusedAndKeepsWorking) {
  TempDir dir;
  const std::string path = dir.file("ctl");
  std::string error;
  const int first = listen_control(path, error);
  ASSERT_GE(first, 0) << error;
  EXPECT_EQ(listen_control(path, error), -1);
  EXPECT_TRUE(contains(error, path));
  EXPECT_TRUE(contains(error, "another process is listening"));
  const int cfd = connect_control(path, kWait, error);  // the first one still answers
  ASSERT_GE(cfd, 0) << error;
  ::close(cfd);
  ::close(first);
}

TEST(TakeoverControl, LiveStreamSocketOfAnotherKindIsRefused) {
  TempDir dir;
  const std::string path = dir.file("ctl");
  const int other = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  ASSERT_EQ(::bind(other, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
  ASSERT_EQ(::listen(other, 1), 0);
  std::string error;
  EXPECT_EQ(listen_control(path, error), -1);
  EXPECT_TRUE(contains(error, "another process is listening"));
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_EQ(connect_control(path, 100ms, error), -1);
  EXPECT_TRUE(contains(error, "not a takeover control socket"));
  ::close(other);
}

TEST(TakeoverControl, NonSocketIsLeftAlone) {
  TempDir dir;
  const std::string path = dir.file("ctl");
  std::ofstream(path) << "precious";
  std::string error;
  EXPECT_EQ(listen_control(path, error), -1);
  EXPECT_TRUE(contains(error, path));
  EXPECT_TRUE(contains(error, "is not a socket"));
  std::ifstream in(path);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST(TakeoverControl, BadPathsAreNamed) {
  TempDir dir;
  std::string error;
  EXPECT_EQ(listen_control(std::string(200, 'x'), error), -1);
  EXPECT_TRUE(contains(error, "choose a shorter path"));
  EXPECT_EQ(listen_control(dir.file("missing/ctl"), error), -1);
  EXPECT_TRUE(contains(error, "directory does not exist"));
  EXPECT_EQ(connect_control(dir.file("none"), 100ms, error), -1);
  EXPECT_TRUE(contains(error, dir.file("none")));
  EXPECT_TRUE(contains(error, "takeover enabled"));
  const std::string stale = dir.file("stale");
  ::close(bound_not_listening(stale));
  EXPECT_EQ(connect_control(stale, 100ms, error), -1);
  EXPECT_TRUE(contains(error, "nothing listens"));
}

TEST(TakeoverControl, AcceptTimesOut) {
  TempDir dir;
  std::string error;
  const int lfd = listen_control(dir.file("ctl"), error);
  ASSERT_GE(lfd, 0) << error;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(accept_control(lfd, 50ms, error), -1);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);
  EXPECT_TRUE(contains(error, "within 50 ms"));
  ::close(lfd);
}

// ---- peer credentials ----

TEST(TakeoverPeer, SameUserPassesBothWays) {
  TempDir dir;
  const std::string path = dir.file("ctl");
  std::string error;
  const int lfd = listen_control(path, error);
  ASSERT_GE(lfd, 0) << error;
  const int cfd = connect_control(path, kWait, error);
  ASSERT_GE(cfd, 0) << error;
  const int afd = accept_control(lfd, kWait, error);
  ASSERT_GE(afd, 0) << error;
  std::string why;
  EXPECT_TRUE(peer_is_same_user(afd, why)) << why;
  EXPECT_TRUE(peer_is_same_user(cfd, why)) << why;
  for (int f : {afd, cfd, lfd}) ::close(f);
}

TEST(TakeoverPeer, OtherUserIsRefusedWithBothUidsAndPid) {
  auto [a, b] = channel_pair();
  const std::uint32_t other = ::geteuid() + 4242;
  std::string why;
  EXPECT_FALSE(peer_is_user(a.fd(), other, why));
  EXPECT_TRUE(contains(why, "pid " + std::to_string(::getpid())));
  EXPECT_TRUE(contains(why, "uid " + std::to_string(::geteuid())));
  EXPECT_TRUE(contains(why, "uid " + std::to_string(other)));
  EXPECT_FALSE(peer_is_same_user(-1, why));
  EXPECT_TRUE(contains(why, "SO_PEERCRED"));
}

// ---- messages ----

class TakeoverPayload : public ::testing::TestWithParam<std::size_t> {};

TEST_P(TakeoverPayload, RoundTripsAndKeepsTheSequence) {
  const std::size_t size = GetParam();
  auto [a, b] = channel_pair();
  const std::string body = pattern(size);
  std::string send_error;
  bool sent = false;
  std::thread sender([&, &a = a] {
    sent = a.send(Message{MsgType::connections, body, {}}, kWait, send_error) &&
           a.send(Message{MsgType::done, "x", {}}, kWait, send_error);
  });
  Message m;
  std::string error;
  const bool got = b.recv(m, kWait, error);
  Message tail;
  const bool got_tail = got && b.recv(tail, kWait, error);
  sender.join();
  ASSERT_TRUE(sent) << send_error;
  ASSERT_TRUE(got) << error;
  ASSERT_TRUE(got_tail) << error;
  EXPECT_EQ(m.type, MsgType::connections);
  EXPECT_EQ(m.payload.size(), size);
  EXPECT_TRUE(m.payload == body);
  EXPECT_TRUE(m.fds.empty());
  EXPECT_EQ(tail.type, MsgType::done);
  EXPECT_EQ(tail.payload, "x");
}

INSTANTIATE_TEST_SUITE_P(Sizes, TakeoverPayload,
                         ::testing::Values(0, 1, kMaxChunk, kMaxChunk + 1, 3 * kMaxChunk,
                                           std::size_t{1} << 20, std::size_t{10} << 20));

class TakeoverFds : public ::testing::TestWithParam<std::size_t> {};

TEST_P(TakeoverFds, TravelAndStayUsable) {
  const std::size_t n = GetParam();
  const std::size_t before = open_fds();
  {
    auto [a, b] = channel_pair();
    std::vector<Pipe> pipes((n + 1) / 2);
    Message out{MsgType::listeners, "fds", {}};
    for (std::size_t k = 0; k < n; ++k) out.fds.push_back(pipes[k / 2].fd[k % 2]);
    std::string error;
    ASSERT_TRUE(a.send(out, kWait, error)) << error;
    Message in;
    ASSERT_TRUE(b.recv(in, kWait, error)) << error;
    ASSERT_EQ(in.fds.size(), n);
    EXPECT_EQ(in.payload, "fds");
    for (std::size_t k = 0; k < n; ++k) {
      EXPECT_NE(::fcntl(in.fds[k], F_GETFD) & FD_CLOEXEC, 0);
      // A received read end reads what the original write end wrote; a received write end
      // writes what the original read end reads.
      const bool read_end = k % 2 == 0;
      const int w = read_end ? pipes[k / 2].fd[1] : in.fds[k];
      const int r = read_end ? in.fds[k] : pipes[k / 2].fd[0];
      const char c = static_cast<char>(k);
      char got = 0;
      ASSERT_EQ(::write(w, &c, 1), 1);
      ASSERT_EQ(::read(r, &got, 1), 1);
      EXPECT_EQ(got, c);
    }
    close_fds(in);
  }
  EXPECT_EQ(open_fds(), before);
}

INSTANTIATE_TEST_SUITE_P(Counts, TakeoverFds, ::testing::Values(0, 1, 2, kMaxFds));

TEST(TakeoverChannel, FdsWithAMultiRecordPayload) {
  auto [a, b] = channel_pair();
  Pipe p;
  const std::string body = pattern(5 * kMaxChunk / 2);
  std::string error;
  std::thread sender([&, &a = a] {
    std::string e;
    EXPECT_TRUE(a.send(Message{MsgType::connections, body, {p.fd[0], p.fd[1]}}, kWait, e)) << e;
  });
  Message in;
  const bool ok = b.recv(in, kWait, error);
  sender.join();
  ASSERT_TRUE(ok) << error;
  EXPECT_EQ(in.fds.size(), 2u);
  EXPECT_TRUE(in.payload == body);
  close_fds(in);
}

TEST(TakeoverChannel, TooManyFdsIsRefusedBeforeSending) {
  auto [a, b] = channel_pair();
  Pipe p;
  Message out{MsgType::connections, "x", std::vector<int>(kMaxFds + 1, p.fd[0])};
  std::string error;
  EXPECT_FALSE(a.send(out, kWait, error));
  EXPECT_TRUE(contains(error, "at most 250"));
  EXPECT_FALSE(a.failed());  // nothing went out: the channel is still good
  ASSERT_TRUE(a.send(Message{MsgType::done, {}, {}}, kWait, error)) << error;
  Message in;
  ASSERT_TRUE(b.recv(in, kWait, error)) << error;
  EXPECT_EQ(in.type, MsgType::done);
}

TEST(TakeoverChannel, PeerClosedBeforeAMessage) {
  auto [a, b] = channel_pair();
  { Channel gone = std::move(a); }
  Message in;
  std::string error;
  EXPECT_FALSE(b.recv(in, kWait, error));
  EXPECT_TRUE(contains(error, "peer closed"));
  EXPECT_FALSE(b.send(Message{MsgType::done, {}, {}}, kWait, error));
  EXPECT_TRUE(contains(error, "peer closed"));  // the first failure sticks
}

TEST(TakeoverChannel, SendToAClosedPeer) {
  auto [a, b] = channel_pair();
  { Channel gone = std::move(b); }
  std::string error;
  EXPECT_FALSE(a.send(Message{MsgType::done, {}, {}}, kWait, error));
  EXPECT_TRUE(contains(error, "peer closed"));
  EXPECT_TRUE(a.failed());
}

TEST(TakeoverChannel, RecvAndSendTimeOut) {
  auto [a, b] = channel_pair();
  Message in;
  std::string error;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(b.recv(in, 50ms, error));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);
  EXPECT_TRUE(contains(error, "timed out"));
  // Nobody reads b: a big message fills the socket and then waits out its timeout.
  EXPECT_FALSE(a.send(Message{MsgType::connections, pattern(8 << 20), {}}, 100ms, error));
  EXPECT_TRUE(contains(error, "timed out"));
}

TEST(TakeoverChannel, PeerClosesMidMessageAndItsFdsAreClosed) {
  const std::size_t before = open_fds();
  {
    RawPair rp;
    Pipe p;
    const std::size_t with_pipe = open_fds();
    send_raw(rp.raw, good(kFirst, 0, 2, 2 * kMaxChunk, pattern(kMaxChunk)), {p.fd[0], p.fd[1]});
    rp.close_raw();
    Message in;
    std::string error;
    EXPECT_FALSE(rp.ch->recv(in, kWait, error));
    EXPECT_TRUE(contains(error, "peer closed mid-message"));
    EXPECT_TRUE(
        contains(error, std::to_string(kMaxChunk) + " of " + std::to_string(2 * kMaxChunk)));
    EXPECT_TRUE(in.fds.empty());
    EXPECT_EQ(open_fds(), with_pipe - 1);  // minus the raw end; the two received fds closed
  }
  EXPECT_EQ(open_fds(), before);
}

// ---- garbage peers ----

struct Garbage {
  const char* name;
  std::vector<std::string> records;  // sent in order
  int fds_on;                        // the record that carries two pipe ends, or -1
  const char* error;
};

std::vector<Garbage> garbage_cases() {
  const auto conn = static_cast<std::uint8_t>(MsgType::connections);
  const std::string full = pattern(kMaxChunk);
  return {
      {"wrong magic",
       {header(0xDEADBEEF, kFrameVersion, conn, kFirst | kLast, 0, 2, 0)},
       0,
       "bad magic 0xdeadbeef"},
      {"http", {"GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, -1, "bad magic"},
      {"newer frame version",
       {header(kMagic, kFrameVersion + 1, conn, kFirst | kLast, 0, 2, 0)},
       0,
       "takeover frame version 2, this build understands 1"},
      {"sequence skipped",
       {good(kFirst | kLast, 5, 2, 0, "")},
       0,
       "out-of-order record: sequence 5, expected 0"},
      {"sequence repeated",
       {good(kFirst, 0, 2, 2 * kMaxChunk, full), good(kLast, 0, 0, 2 * kMaxChunk, full)},
       0,
       "out-of-order record: sequence 0, expected 1"},
      {"short record", {std::string(10, 'E')}, 0, "short record: 10 bytes"},
      {"oversized record",
       {good(kFirst | kLast, 0, 2, kMaxRecord + 100, pattern(kMaxRecord + 100))},
       0,
       "truncated"},
      {"over the cap", {good(kFirst, 0, 2, kMaxPayload + 1, full)}, 0, "over the 256 MiB cap"},
      {"more than announced",
       {good(kFirst | kLast, 0, 2, 5, "0123456789")},
       0,
       "carries 10 bytes, more than announced"},
      {"more than announced later",
       {good(kFirst, 0, 0, kMaxChunk + 5, full), good(kLast, 1, 0, kMaxChunk + 5, "0123456789")},
       -1,
       "more than announced"},
      {"last record short",
       {good(kFirst | kLast, 0, 2, 10, "01234")},
       0,
       "ends the message short (5 of 10 bytes)"},
      {"complete but not last", {good(kFirst, 0, 2, 5, "01234")}, 0, "completes the message"},
      {"middle record not full", {good(kFirst, 0, 0, 100, "01234")}, -1, "is not full"},
      {"fd count lies", {good(kFirst | kLast, 0, 1, 0, "")}, 0, "announces 1 fds but carries 2"},
      {"fds on a continuation",
       {good(kFirst, 0, 0, kMaxChunk + 1, full), good(kLast, 1, 2, kMaxChunk + 1, "x")},
       1,
       "fds on a continuation record"},
      {"no first flag", {good(kLast, 0, 2, 0, "")}, 0, "never started"},
      {"two firsts",
       {good(kFirst, 0, 2, 2 * kMaxChunk, full), good(kFirst | kLast, 1, 0, 1, "x")},
       0,
       "a new message started before the previous one ended"},
      {"type changes",
       {good(kFirst, 0, 0, kMaxChunk + 1, full),
        header(kMagic, kFrameVersion, 1, kLast, 1, 0, kMaxChunk + 1) + "x"},
       -1,
       "changes the type or length"},
      {"unknown type",
       {header(kMagic, kFrameVersion, 99, kFirst | kLast, 0, 2, 0)},
       0,
       "unknown message type 99"},
      {"unknown flags", {good(kFirst | kLast | 0x80, 0, 2, 0, "")}, 0, "unknown record flags"},
  };
}

class TakeoverGarbage : public ::testing::TestWithParam<Garbage> {};

TEST_P(TakeoverGarbage, IsRefusedPreciselyAndLeaksNoFd) {
  const Garbage& g = GetParam();
  RawPair rp;
  Pipe p;
  const std::size_t before = open_fds();
  for (std::size_t i = 0; i < g.records.size(); ++i) {
    send_raw(
        rp.raw, g.records[i],
        static_cast<int>(i) == g.fds_on ? std::vector<int>{p.fd[0], p.fd[1]} : std::vector<int>{});
  }
  Message in;
  std::string error;
  EXPECT_FALSE(rp.ch->recv(in, kWait, error));
  EXPECT_TRUE(contains(error, g.error)) << g.name;
  EXPECT_TRUE(in.fds.empty());
  EXPECT_TRUE(in.payload.empty());
  EXPECT_EQ(open_fds(), before) << g.name;
  EXPECT_TRUE(rp.ch->failed());
  std::string again;
  EXPECT_FALSE(rp.ch->recv(in, 10ms, again));
  EXPECT_EQ(again, error);  // later calls repeat the first error
}

INSTANTIATE_TEST_SUITE_P(Cases, TakeoverGarbage, ::testing::ValuesIn(garbage_cases()),
                         [](const ::testing::TestParamInfo<Garbage>& i) {
                           std::string n = i.param.name;
                           for (char& c : n) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return n;
                         });

TEST(TakeoverChannel, MoreFdsThanTheControlBufferAreAllClosed) {
  RawPair rp;
  Pipe p;
  const std::size_t before = open_fds();
  // 253 is the kernel's own limit per SCM_RIGHTS message (SCM_MAX_FD); we read 250 at most.
  send_raw(rp.raw, good(kFirst | kLast, 0, 253, 0, ""), std::vector<int>(253, p.fd[1]));
  Message in;
  std::string error;
  EXPECT_FALSE(rp.ch->recv(in, kWait, error));
  EXPECT_TRUE(contains(error, "control data truncated"));
  EXPECT_EQ(open_fds(), before);
}

// ---- handshake ----

struct HandshakeRun {
  bool client_ok = false, server_ok = false;
  std::string client_error, server_error;
  Agreement client_agreed, server_agreed;
};

HandshakeRun run_handshake(const Hello& client, const Hello& server) {
  auto [c, s] = channel_pair();
  HandshakeRun r;
  std::thread t([&, &s = s] {
    r.server_ok = handshake_server(s, r.server_error, &r.server_agreed, server, kWait);
  });
  r.client_ok = handshake_client(c, r.client_error, &r.client_agreed, client, kWait);
  t.join();
  return r;
}

TEST(TakeoverHandshake, SameBuildAgrees) {
  const HandshakeRun r = run_handshake(our_hello(), our_hello());
  ASSERT_TRUE(r.client_ok) << r.client_error;
  ASSERT_TRUE(r.server_ok) << r.server_error;
  EXPECT_EQ(r.client_agreed.version, kProtocolMax);
  EXPECT_EQ(r.server_agreed.version, kProtocolMax);
  EXPECT_EQ(r.client_agreed.peer.build_id, std::string("esockets ") + esockets::version());
  EXPECT_EQ(r.server_agreed.peer.build_id, r.client_agreed.peer.build_id);
}

TEST(TakeoverHandshake, OverlappingRangesPickTheHighestCommonVersion) {
  const HandshakeRun r = run_handshake(Hello{1, 3, 0, "new"}, Hello{2, 5, 0, "old"});
  ASSERT_TRUE(r.client_ok) << r.client_error;
  ASSERT_TRUE(r.server_ok) << r.server_error;
  EXPECT_EQ(r.client_agreed.version, 3);
  EXPECT_EQ(r.server_agreed.version, 3);
  EXPECT_EQ(r.client_agreed.peer.build_id, "old");
  EXPECT_EQ(r.server_agreed.peer.build_id, "new");
}

TEST(TakeoverHandshake, DisjointRangesFailOnBothSidesWithTheRanges) {
  const HandshakeRun r =
      run_handshake(Hello{3, 4, 0, "esockets 9.0"}, Hello{1, 1, 0, "esockets 0.3"});
  EXPECT_FALSE(r.client_ok);
  EXPECT_FALSE(r.server_ok);
  EXPECT_TRUE(contains(r.server_error,
                       "incompatible takeover protocol: peer speaks v3..v4, we speak v1..v1"));
  EXPECT_TRUE(contains(r.server_error, "esockets 9.0"));
  EXPECT_TRUE(contains(r.client_error,
                       "incompatible takeover protocol: peer speaks v1..v1, we speak v3..v4"));
  EXPECT_TRUE(contains(r.client_error, "esockets 0.3"));
}

TEST(TakeoverHandshake, ServerRefusesAWrongFirstMessageAndSaysWhy) {
  auto [c, s] = channel_pair();
  std::string error;
  ASSERT_TRUE(c.send(Message{MsgType::connections, "hi", {}}, kWait, error)) << error;
  EXPECT_FALSE(handshake_server(s, error));
  EXPECT_TRUE(contains(error, "expected a hello message, got 'connections'"));
  Message m;
  ASSERT_TRUE(c.recv(m, kWait, error)) << error;
  EXPECT_EQ(m.type, MsgType::abort);
  EXPECT_TRUE(contains(m.payload, "expected a hello message"));
}

TEST(TakeoverHandshake, MalformedHellosAreRefused) {
  const auto hello_bytes = [](std::uint16_t lo, std::uint16_t hi, std::string id,
                              std::string tail) {
    Writer w;
    w.u16(lo);
    w.u16(hi);
    w.u16(0);
    w.bytes(id);
    return w.take() + tail;
  };
  const std::pair<std::string, const char*> cases[] = {
      {hello_bytes(1, 1, "x", "!"), "1 trailing bytes"},
      {hello_bytes(2, 1, "x", ""), "version range v2..v1"},
      {hello_bytes(0, 1, "x", ""), "version range v0..v1"},
      {hello_bytes(1, 1, std::string(kMaxBuildId + 1, 'b'), ""), "build id of 257 bytes"},
      {"\x01\x00", "truncated"},
  };
  for (const auto& [payload, want] : cases) {
    auto [c, s] = channel_pair();
    std::string error;
    ASSERT_TRUE(c.send(Message{MsgType::hello, payload, {}}, kWait, error)) << error;
    EXPECT_FALSE(handshake_server(s, error));
    EXPECT_TRUE(contains(error, "malformed hello"));
    EXPECT_TRUE(contains(error, want));
  }
}

TEST(TakeoverHandshake, ClientRefusesAPickOutsideTheCommonRange) {
  auto [c, s] = channel_pair();
  std::thread fake_server([&, &s = s] {
    Message m;
    std::string e;
    ASSERT_TRUE(s.recv(m, kWait, e)) << e;
    Writer w;
    w.u16(1);
    w.u16(9);
    w.u16(7);  // we speak v1..v1
    w.bytes("liar");
    EXPECT_TRUE(s.send(Message{MsgType::hello, w.take(), {}}, kWait, e)) << e;
  });
  std::string error;
  EXPECT_FALSE(handshake_client(c, error));
  fake_server.join();
  EXPECT_TRUE(contains(error, "picked v7, outside what both speak"));
}

TEST(TakeoverHandshake, ClientReportsAnAbort) {
  auto [c, s] = channel_pair();
  std::string error;
  ASSERT_TRUE(s.send(Message{MsgType::abort, "shutting down", {}}, kWait, error)) << error;
  EXPECT_FALSE(handshake_client(c, error));
  EXPECT_TRUE(contains(error, "the old process refused: shutting down"));
}

TEST(TakeoverHandshake, OverTheRealControlSocket) {
  TempDir dir;
  const std::string path = dir.file("ctl");
  std::string error;
  const int lfd = listen_control(path, error);
  ASSERT_GE(lfd, 0) << error;
  bool server_ok = false;
  std::string server_error;
  std::thread old_process([&] {
    const int fd = accept_control(lfd, kWait, server_error);
    if (fd < 0) return;
    Channel ch(fd);
    server_ok = handshake_server(ch, server_error);
  });
  const int fd = connect_control(path, kWait, error);
  ASSERT_GE(fd, 0) << error;
  Channel ch(fd);
  Agreement agreed;
  EXPECT_TRUE(handshake_client(ch, error, &agreed)) << error;
  old_process.join();
  EXPECT_TRUE(server_ok) << server_error;
  EXPECT_EQ(agreed.version, kProtocolMax);
  ::close(lfd);
}

// ---- serialisation ----

TEST(TakeoverSerial, IntegersAndBytesRoundTripLittleEndian) {
  Writer w;
  w.u8(0xAB);
  w.u16(0x1234);
  w.u32(0xDEADBEEF);
  w.u64(0x0102030405060708ull);
  w.bytes("hello");
  w.bytes("");
  EXPECT_EQ(w.data().substr(0, 3), std::string("\xAB\x34\x12", 3));
  Reader r(w.data());
  EXPECT_EQ(r.u8(), 0xAB);
  EXPECT_EQ(r.u16(), 0x1234);
  EXPECT_EQ(r.u32(), 0xDEADBEEFu);
  EXPECT_EQ(r.u64(), 0x0102030405060708ull);
  std::string s;
  EXPECT_TRUE(r.bytes(s));
  EXPECT_EQ(s, "hello");
  EXPECT_TRUE(r.bytes(s));
  EXPECT_EQ(s, "");
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(r.at_end());
  EXPECT_EQ(r.u8(), 0);  // past the end: fails, and stays failed
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.what(), "truncated"));
}

TEST(TakeoverSerial, AHugeLengthClaimFailsWithoutAllocating) {
  Writer w;
  w.u32(0xFFFFFFFF);
  w.raw("abc");
  Reader r(w.data());
  std::string s;
  EXPECT_FALSE(r.bytes(s));
  EXPECT_TRUE(s.empty());
  EXPECT_TRUE(contains(r.what(), "claims 4294967295 bytes, 3 left"));
  EXPECT_EQ(r.u16(), 0);  // sticky
  EXPECT_TRUE(contains(r.what(), "claims"));
}

ProxyInfo sample_proxy() {
  ProxyInfo p;
  p.version = 2;
  p.source.family = AF_INET6;
  p.source.port = 40000;
  EXPECT_EQ(::inet_pton(AF_INET6, "2001:db8::1", p.source.addr), 1);
  p.destination.family = AF_INET6;
  p.destination.port = 443;
  EXPECT_EQ(::inet_pton(AF_INET6, "2001:db8::2", p.destination.addr), 1);
  p.tlvs = {{0x01, "h2"}, {0x05, std::string("\0id\xff", 4)}, {0x20, ""}};
  return p;
}

ConnRecord sample_record() {
  ConnRecord c;
  c.listener = 3;
  c.peer.family = AF_INET;
  c.peer.port = 51234;
  EXPECT_EQ(::inet_pton(AF_INET, "10.1.2.3", c.peer.addr), 1);
  c.frame_progress = 0x1122334455667788ull;
  c.input = "partial fra";
  c.output = std::string("queued\0bytes", 12);
  c.flags = 0x80000005;
  c.app_state = "session=42";
  c.proxy = encode_proxy(sample_proxy());
  return c;
}

void expect_same(const ConnRecord& a, const ConnRecord& b) {
  EXPECT_EQ(a.listener, b.listener);
  EXPECT_EQ(a.peer.family, b.peer.family);
  EXPECT_EQ(a.peer.port, b.peer.port);
  EXPECT_EQ(std::memcmp(a.peer.addr, b.peer.addr, sizeof a.peer.addr), 0);
  EXPECT_EQ(a.frame_progress, b.frame_progress);
  EXPECT_EQ(a.input, b.input);
  EXPECT_EQ(a.output, b.output);
  EXPECT_EQ(a.flags, b.flags);
  EXPECT_EQ(a.app_state, b.app_state);
  EXPECT_EQ(a.proxy, b.proxy);
}

TEST(TakeoverSerial, ProxyInfoRoundTrips) {
  const ProxyInfo p = sample_proxy();
  ProxyInfo q;
  ASSERT_TRUE(decode_proxy(encode_proxy(p), q));
  EXPECT_EQ(q.version, 2);
  EXPECT_FALSE(q.local);
  EXPECT_EQ(q.source.to_string(), p.source.to_string());
  EXPECT_EQ(q.destination.to_string(), p.destination.to_string());
  ASSERT_EQ(q.tlvs.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(q.tlvs[i].type, p.tlvs[i].type);
    EXPECT_EQ(q.tlvs[i].value, p.tlvs[i].value);
  }
  ProxyInfo local;
  local.version = 1;
  local.local = true;
  ASSERT_TRUE(decode_proxy(encode_proxy(local), q));
  EXPECT_TRUE(q.local);
  EXPECT_TRUE(q.tlvs.empty());
}

TEST(TakeoverSerial, EveryMalformedProxyInfoFails) {
  const std::string full = encode_proxy(sample_proxy());
  ProxyInfo q;
  for (std::size_t n = 0; n < full.size(); ++n) {
    EXPECT_FALSE(decode_proxy(std::string_view(full).substr(0, n), q)) << "prefix " << n;
  }
  EXPECT_FALSE(decode_proxy(full + "x", q));
  std::string bad_version = full;
  bad_version[0] = 3;
  EXPECT_FALSE(decode_proxy(bad_version, q));
  std::string many = full;
  many[2 + 19 + 19] = '\xff';  // the TLV count's low byte: more TLVs than bytes could hold
  EXPECT_FALSE(decode_proxy(many, q));
}

TEST(TakeoverSerial, ConnRecordRoundTrips) {
  Writer w;
  const ConnRecord a = sample_record();
  write_record(w, a);
  write_record(w, ConnRecord{});
  Reader r(w.data());
  ConnRecord b, c;
  ASSERT_TRUE(read_record(r, b)) << r.what();
  ASSERT_TRUE(read_record(r, c)) << r.what();
  EXPECT_TRUE(r.at_end());
  expect_same(a, b);
  expect_same(ConnRecord{}, c);
  EXPECT_EQ(w.data()[0], static_cast<char>(kRecordVersion));
}

TEST(TakeoverSerial, EveryTruncationOfARecordFailsCleanly) {
  Writer w;
  write_record(w, sample_record());
  const std::string full = w.data();
  for (std::size_t n = 0; n < full.size(); ++n) {
    const std::string prefix = full.substr(0, n);  // its own allocation, so ASan sees overreads
    Reader r(prefix);
    ConnRecord c;
    EXPECT_FALSE(read_record(r, c)) << "prefix " << n;
    EXPECT_FALSE(r.ok());
    EXPECT_FALSE(r.what().empty());
  }
}

TEST(TakeoverSerial, AnotherRecordVersionOrFamilyIsRefused) {
  Writer w;
  write_record(w, sample_record());
  std::string v = w.data();
  v[0] = static_cast<char>(kRecordVersion + 1);
  Reader r(v);
  ConnRecord c;
  EXPECT_FALSE(read_record(r, c));
  EXPECT_TRUE(contains(r.what(), "connection record version 2, this build reads 1"));
  std::string f = w.data();
  f[3] = 99;  // peer.family
  Reader rf(f);
  EXPECT_FALSE(read_record(rf, c));
  EXPECT_TRUE(contains(rf.what(), "unknown address family 99"));
  ConnRecord bad_proxy = sample_record();
  bad_proxy.proxy = "nonsense";
  Writer wp;
  write_record(wp, bad_proxy);
  Reader rp(wp.data());
  EXPECT_FALSE(read_record(rp, c));
  EXPECT_TRUE(contains(rp.what(), "proxy"));
}

TEST(TakeoverSerial, BatchesRoundTripAndEveryTruncationFails) {
  std::vector<ConnRecord> batch(3, sample_record());
  batch[1].input = pattern(70000);
  batch[2] = ConnRecord{};
  const std::string payload = write_batch(batch);
  std::vector<ConnRecord> out;
  std::string error;
  ASSERT_TRUE(read_batch(payload, 3, out, error)) << error;
  ASSERT_EQ(out.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) expect_same(batch[i], out[i]);

  EXPECT_FALSE(read_batch(payload, 2, out, error));
  EXPECT_TRUE(contains(error, "3 records for 2 fds"));
  EXPECT_FALSE(read_batch(payload + "x", 3, out, error));
  EXPECT_TRUE(contains(error, "1 bytes after the last record"));
  for (std::size_t n = 0; n < payload.size();
       n += (n < 200 || payload.size() - n < 200) ? 1 : 997) {
    const std::string prefix = payload.substr(0, n);
    error.clear();
    EXPECT_FALSE(read_batch(prefix, 3, out, error)) << "prefix " << n;
    EXPECT_FALSE(error.empty());
    EXPECT_TRUE(out.empty());
  }
  Writer lie;
  lie.u32(200);  // 200 records claimed in 4 bytes
  EXPECT_FALSE(read_batch(lie.data(), 200, out, error));
  EXPECT_TRUE(contains(error, "more records claimed"));
}

TEST(TakeoverSerial, ABatchTravelsWithItsFds) {
  auto [a, b] = channel_pair();
  std::vector<Pipe> pipes(3);
  std::vector<ConnRecord> batch(3, sample_record());
  Message out{MsgType::connections, write_batch(batch), {}};
  for (const Pipe& p : pipes) out.fds.push_back(p.fd[1]);
  std::string error;
  ASSERT_TRUE(a.send(out, kWait, error)) << error;
  Message in;
  ASSERT_TRUE(b.recv(in, kWait, error)) << error;
  std::vector<ConnRecord> got;
  EXPECT_TRUE(read_batch(in.payload, in.fds.size(), got, error)) << error;
  EXPECT_EQ(got.size(), 3u);
  close_fds(in);
}

}  // namespace
}  // namespace esockets::detail

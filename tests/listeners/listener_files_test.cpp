// Unix socket files: a stale socket file (its process gone) is removed and the server starts; a
// live socket, a regular file, or a stale file with unlink_stale off make start() throw
// std::system_error naming the path and leave the file alone; unix_mode is applied; the file
// is removed by stop(), but only if it is still the one the server made; a failed start()
// leaves no socket file of the listeners it had already bound. Abstract names: a name another
// socket holds fails start() with the name in the message.
//
// Fails if a live listener or a regular file is removed, the error does not say which path,
// start() blocks on a live listener that does not accept, unix_mode is ignored, or a file is
// left behind (or someone else's file removed) at stop.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <future>
#include <system_error>
#include <thread>

#include "listener_support.hpp"

namespace esockets::test {
namespace {

// A Unix stream socket bound at `path` (listening when backlog >= 0); the fd.
int bind_unix(const std::string& path, int backlog) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path, path.data(), path.size());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
    ADD_FAILURE() << "bind " << path << ": " << std::strerror(errno);
  }
  if (backlog >= 0) ::listen(fd, backlog);
  return fd;
}

int bind_abstract(const std::string& name) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sun), len) != 0) {
    ADD_FAILURE() << "bind @" << name << ": " << std::strerror(errno);
  }
  ::listen(fd, 16);
  return fd;
}

bool is_socket(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

ServerOptions unix_options(const std::string& address) {
  ServerOptions o = line_options(2, 0);
  o.listeners = {listener_at(address)};
  return o;
}

// start() must throw std::system_error naming `what`.
void expect_start_fails(Server& s, const std::string& what) {
  try {
    s.start();
    ADD_FAILURE() << "start() succeeded";
    s.stop();
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos)
        << "'" << e.what() << "' does not name " << what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "start() threw something else than std::system_error: " << e.what();
  }
}

TEST(UnixFiles, StaleSocketFileIsRemovedAndServed) {
  TempDir dir;
  const std::string path = dir.file("stale.sock");
  ::close(bind_unix(path, 4));  // the file stays; nobody listens any more
  ASSERT_TRUE(is_socket(path));
  SeqHandler h;
  Server server(h, unix_options("unix:" + path));
  ASSERT_NO_THROW(server.start());
  Sock s = connect_or_fail("unix:" + path);
  EXPECT_TRUE(echo_numbered(s, 0, 20, "client of a path that held a stale socket"));
  s.close();
  server.stop();
  EXPECT_FALSE(is_socket(path)) << "stop() removes the socket file";
  EXPECT_EQ(::access(path.c_str(), F_OK), -1);
}

TEST(UnixFiles, BoundButNeverListeningSocketIsStale) {
  TempDir dir;
  const std::string path = dir.file("bound.sock");
  const int fd = bind_unix(path, -1);  // bound, still open, not listening: connect is refused
  SeqHandler h;
  Server server(h, unix_options("unix:" + path));
  ASSERT_NO_THROW(server.start());
  Sock s = connect_or_fail("unix:" + path);
  EXPECT_TRUE(echo_numbered(s, 0, 5, "client"));
  server.stop();
  ::close(fd);
}

TEST(UnixFiles, LiveSocketMakesStartThrowAndIsLeftAlone) {
  TempDir dir;
  const std::string path = dir.file("live.sock");
  const int live = bind_unix(path, 16);
  SeqHandler h;
  Server server(h, unix_options("unix:" + path));
  expect_start_fails(server, path);
  EXPECT_TRUE(is_socket(path)) << "a live socket's file must not be removed";
  Sock s;
  EXPECT_TRUE(s.connect("unix:" + path)) << "the other listener still answers at the path";
  ::close(live);
  EXPECT_FALSE(server.running());
}

// A live listener whose accept queue is full: connect() to it would block. start() must not.
TEST(UnixFiles, LiveSocketWithFullBacklogDoesNotBlockStart) {
  TempDir dir;
  const std::string path = dir.file("full.sock");
  const int live = bind_unix(path, 0);
  std::vector<int> fill;
  for (int i = 0; i < 64; ++i) {
    const int c = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::memcpy(sun.sun_path, path.data(), path.size());
    const int rc = ::connect(c, reinterpret_cast<sockaddr*>(&sun), sizeof sun);
    fill.push_back(c);
    if (rc != 0 && errno == EAGAIN) break;  // the queue is full now
  }
  SeqHandler h;
  Server server(h, unix_options("unix:" + path));
  auto started = Clock::now();
  auto fut = std::async(std::launch::async, [&] {
    try {
      server.start();
      return std::string("started");
    } catch (const std::system_error& e) {
      return std::string(e.what());
    }
  });
  const bool prompt = fut.wait_for(3s) == std::future_status::ready;
  EXPECT_TRUE(prompt) << "start() blocked for 3 s probing a live socket whose backlog is full";
  if (!prompt) {
    // Unblock it: accepting one frees a place in the queue for the blocked probe.
    const int a = ::accept(live, nullptr, nullptr);
    if (a >= 0) ::close(a);
  }
  const std::string what = fut.get();
  std::printf("[full backlog] start() returned after %lld ms: %s\n", ms_since(started), what.c_str());
  EXPECT_NE(what, "started") << "a live listener's path was taken over";
  EXPECT_NE(what.find(path), std::string::npos) << what;
  EXPECT_TRUE(is_socket(path));
  server.stop();
  for (int c : fill) ::close(c);
  ::close(live);
}

TEST(UnixFiles, RegularFileMakesStartThrowAndIsUntouched) {
  TempDir dir;
  const std::string path = dir.file("regular");
  {
    std::ofstream f(path);
    f << "keep me";
  }
  SeqHandler h;
  Server server(h, unix_options("unix:" + path));
  expect_start_fails(server, path);
  std::ifstream f(path);
  std::string text;
  std::getline(f, text);
  EXPECT_EQ(text, "keep me");
}

TEST(UnixFiles, UnlinkStaleOffMakesStartThrow) {
  TempDir dir;
  const std::string path = dir.file("keep.sock");
  ::close(bind_unix(path, 4));
  SeqHandler h;
  ServerOptions o = unix_options("unix:" + path);
  o.listeners[0].unlink_stale = false;
  Server server(h, o);
  expect_start_fails(server, path);
  EXPECT_TRUE(is_socket(path)) << "unlink_stale=false leaves the stale file";
}

TEST(UnixFiles, UnixModeIsApplied) {
  TempDir dir;
  const std::string path = dir.file("mode.sock");
  SeqHandler h;
  ServerOptions o = unix_options("unix:" + path);
  o.listeners[0].unix_mode = 0660;
  Server server(h, o);
  server.start();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  Sock s = connect_or_fail("unix:" + path);
  EXPECT_TRUE(echo_numbered(s, 0, 3, "client"));
  server.stop();
  EXPECT_EQ(::access(path.c_str(), F_OK), -1);
}

TEST(UnixFiles, MissingDirectoryMakesStartThrow) {
  TempDir dir;
  const std::string path = dir.file("nodir") + "/x.sock";
  SeqHandler h;
  Server server(h, unix_options("unix:" + path));
  expect_start_fails(server, path);
}

// A file that replaced ours while serving is someone else's: stop() must leave it.
TEST(UnixFiles, StopLeavesAFileThatIsNoLongerOurs) {
  TempDir dir;
  const std::string path = dir.file("replaced.sock");
  SeqHandler h;
  Server server(h, unix_options("unix:" + path));
  server.start();
  ASSERT_EQ(::unlink(path.c_str()), 0);
  const int other = bind_unix(path, 4);
  server.stop();
  EXPECT_TRUE(is_socket(path)) << "stop() removed a socket file the server did not make";
  ::close(other);
}

// A start() that fails on its second listener leaves no file of the first, and no bound port.
TEST(UnixFiles, FailedStartCleansUpEarlierListeners) {
  TempDir dir;
  const std::string first = dir.file("first.sock");
  const std::string second = dir.file("second");
  {
    std::ofstream f(second);
    f << "x";
  }
  SeqHandler h;
  ServerOptions o = line_options(2, 0);
  o.listeners = {listener_at("unix:" + first), listener_at("unix:" + second),
                 listener_at("127.0.0.1:0")};
  const std::size_t fds_before = open_fd_count();
  {
    Server server(h, o);
    expect_start_fails(server, second);
    EXPECT_EQ(::access(first.c_str(), F_OK), -1) << "the first listener's file was left behind";
  }
  EXPECT_EQ(open_fd_count(), fds_before) << "a failed start() leaked descriptors";
  EXPECT_EQ(h.connects.load(), 0);
}

TEST(UnixFiles, AbstractNameTakenMakesStartThrow) {
  const std::string name = unique_abstract_name("taken");
  const int other = bind_abstract(name);
  SeqHandler h;
  Server server(h, unix_options("unix:@" + name));
  expect_start_fails(server, "@" + name);
  ::close(other);
  // Once free, the same name serves, and is free again after stop.
  Server again(h, unix_options("unix:@" + name));
  again.start();
  Sock s = connect_or_fail("unix:@" + name);
  EXPECT_TRUE(echo_numbered(s, 0, 3, "abstract client"));
  s.close();
  again.stop();
  const int rebound = bind_abstract(name);
  ::close(rebound);
}

}  // namespace
}  // namespace esockets::test

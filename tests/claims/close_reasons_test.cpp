// Claim (README limits table, "client resets, or the socket errors"): a client reset ends its
// connection with CloseReason::reset, an unexpected socket error with CloseReason::io_error
// (the errno reported through on_warning), each counted in stats().closes, and SIGPIPE never
// fires.
//
// Fails if a reset is reported as another reason (peer_closed, io_error), if the server writing
// to a reset peer raises SIGPIPE (the default action kills this test process) or reports
// anything but reset, or if a failing write on a non-socket is not io_error with a warning that
// names the errno.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <mutex>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class ReasonLog : public CountingHandler {
 public:
  std::mutex mu;
  std::vector<ConnectionId> ids;
  std::vector<std::string> warning_texts;
  bool on_client_connect(Connection& c) override {
    {
      std::lock_guard lk(mu);
      ids.push_back(c.id());
    }
    return CountingHandler::on_client_connect(c);
  }
  void on_warning(std::string_view m) override {
    {
      std::lock_guard lk(mu);
      warning_texts.emplace_back(m);
    }
    CountingHandler::on_warning(m);
  }
  // A message "break" replaces the connection's socket by /dev/null under the engine (the
  // fileno is public): the engine's next write to it fails with ENOTSOCK, an errno that is
  // neither "again" nor a peer reset.
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "break") {
      const int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
      ASSERT_GE(devnull, 0);
      ASSERT_EQ(::dup2(devnull, c.fileno()), c.fileno());
      ::close(devnull);
      c.send("after the break");
      return;
    }
    CountingHandler::on_message_recv(c, m);
  }
  std::string warnings_joined() {
    std::lock_guard lk(mu);
    std::string s;
    for (const auto& w : warning_texts) s += w + "\n";
    return s;
  }
};

class CloseReasons : public ::testing::TestWithParam<unsigned> {};

TEST_P(CloseReasons, ClientResetGivesReset) {
  ReasonLog h;
  Server server(h, loopback_options(1, GetParam()));
  server.start();
  Client c(server.port());
  ASSERT_TRUE(c.send_all("hello"));
  ASSERT_EQ(c.recv_exact(5), "hello");
  c.reset();
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  EXPECT_EQ(h.reason(CloseReason::reset), 1)
      << "peer_closed=" << h.reason(CloseReason::peer_closed)
      << " io_error=" << h.reason(CloseReason::io_error);
  server.stop();
  EXPECT_EQ(server.stats().total.closes_by(CloseReason::reset), 1u);
}

TEST_P(CloseReasons, PeerResetWhileTheServerWritesGivesResetAndNoSigpipe) {
  // SIGPIPE at its default action: if the engine ever wrote without MSG_NOSIGNAL to a socket
  // whose peer is gone, this process would die here.
  struct sigaction old {};
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGPIPE, &dfl, &old);
  ReasonLog h;
  Server server(h, loopback_options(1, GetParam()));
  server.start();
  {
    Client c(server.port());
    ASSERT_TRUE(wait_until([&] { return h.connects.load() == 1; }));
    ConnectionId id;
    {
      std::lock_guard lk(h.mu);
      id = h.ids[0];
    }
    // Output keeps flowing; the client reads part of it, then closes with the rest unread
    // (RST). Sends continue until the server notices.
    const std::string chunk(16 * 1024, 'w');
    for (int i = 0; i < 8; ++i) ASSERT_EQ(server.send(id, chunk), SendStatus::ok);
    ASSERT_EQ(c.recv_exact(chunk.size()).size(), chunk.size());
    // Close only with bytes unread, so the kernel sends RST (an empty queue would send FIN).
    ASSERT_EQ(c.poll_once(10s), EofResult::data);
    c.close();
    EXPECT_TRUE(wait_until([&] {
      const SendStatus st = server.send(id, chunk);
      return st == SendStatus::closed;
    })) << "sends to a reset peer never reported closed";
  }
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  EXPECT_EQ(h.reason(CloseReason::reset), 1)
      << "peer_closed=" << h.reason(CloseReason::peer_closed)
      << " io_error=" << h.reason(CloseReason::io_error);
  server.stop();
  ::sigaction(SIGPIPE, &old, nullptr);
}

INSTANTIATE_TEST_SUITE_P(Workers, CloseReasons, ::testing::Values(0u, 2u),
                         [](const auto& i) { return "workers" + std::to_string(i.param); });

TEST(CloseReasonsIoError, WriteErrorThatIsNotAResetGivesIoErrorAndAWarning) {
  ReasonLog h;
  Server server(h, loopback_options(1, 0));  // inline: the handler runs on the shard thread
  server.start();
  Client c(server.port());
  ASSERT_TRUE(c.send_all("break"));
  ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
  EXPECT_EQ(h.reason(CloseReason::io_error), 1)
      << "reset=" << h.reason(CloseReason::reset) << "\nwarnings:\n" << h.warnings_joined();
  EXPECT_EQ(server.stats().total.closes_by(CloseReason::io_error), 1u);
  EXPECT_NE(h.warnings_joined().find(std::strerror(ENOTSOCK)), std::string::npos)
      << "the errno is reported through on_warning:\n" << h.warnings_joined();
  // The socket went away with the dup2: the client sees the end of the stream.
  EXPECT_NE(c.wait_eof(5s), EofResult::timeout);
  server.stop();
}

}  // namespace
}  // namespace esockets::test

// Claim (README options table, connection.hpp): `host` may be a numeric IPv6 address; a server
// bound to "::1" serves IPv6 clients on every shard, including shards added while serving, and
// getip() is "[ip]:port" for IPv6 peers.
//
// Fails if an IPv6 host is rejected or bound as IPv4, if an IPv6 client is not served or not
// echoed, if getip() is not "[::1]:<client port>", or if a shard added by set_shards binds
// another address family. Skipped (with the reason) when the machine has no IPv6 loopback.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>

#include "test_support.hpp"

namespace esockets::test {
namespace {

// Why "::1" cannot be used here, or "" when it can.
std::string ipv6_loopback_missing() {
  const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::string("socket(AF_INET6): ") + std::strerror(errno);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  std::string why;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    why = std::string("bind([::1]:0): ") + std::strerror(errno);
  }
  ::close(fd);
  return why;
}

// A blocking IPv6 loopback client (the shared test Client is IPv4 only).
class Client6 {
 public:
  explicit Client6(std::uint16_t port) {
    fd_ = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    a.sin6_port = htons(port);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ADD_FAILURE() << "connect([::1]:" << port << "): " << std::strerror(errno);
      return;
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Client6() {
    if (fd_ >= 0) ::close(fd_);
  }
  Client6(const Client6&) = delete;
  Client6& operator=(const Client6&) = delete;
  Client6(Client6&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }

  std::uint16_t local_port() const {
    sockaddr_in6 a{};
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin6_port);
  }
  bool send_all(const std::string& s) {
    std::size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  }
  /// Exactly n bytes, or what arrived before EOF / error / 10 s.
  std::string recv_exact(std::size_t n) {
    std::string out;
    const auto deadline = Clock::now() + 10s;
    char buf[4096];
    while (out.size() < n && Clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const ssize_t r = ::recv(fd_, buf, std::min(sizeof buf, n - out.size()), 0);
      if (r <= 0) break;
      out.append(buf, static_cast<std::size_t>(r));
    }
    return out;
  }

 private:
  int fd_ = -1;
};

class PeerLog : public CountingHandler {
 public:
  std::mutex mu;
  std::set<std::string> ips;
  std::set<int> families;
  std::set<unsigned> shards;
  bool on_client_connect(Connection& c) override {
    {
      std::lock_guard lk(mu);
      ips.insert(c.getip());
      families.insert(c.peer().family);
      shards.insert(c.id().shard());
    }
    return CountingHandler::on_client_connect(c);
  }
};

TEST(Ipv6Host, ServerOnLoopbackV6ServesEchoesAndReportsBracketedAddress) {
  const std::string missing = ipv6_loopback_missing();
  if (!missing.empty()) GTEST_SKIP() << "no IPv6 loopback on this machine: " << missing;

  PeerLog h;
  auto o = loopback_options(2, 0);
  o.host = "::1";
  o.balance = Balance::least_loaded;  // both shards get clients
  Server server(h, o);
  server.start();
  ASSERT_NE(server.port(), 0);

  std::vector<Client6> clients;
  std::set<std::string> expected_ips;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back(server.port());
    expected_ips.insert("[::1]:" + std::to_string(clients.back().local_port()));
  }
  server.set_shards(3);  // a shard added while serving binds the same IPv6 address
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back(server.port());
    expected_ips.insert("[::1]:" + std::to_string(clients.back().local_port()));
  }
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(clients.size()); }));
  for (std::size_t i = 0; i < clients.size(); ++i) {
    const std::string msg = "v6-" + std::to_string(i);
    ASSERT_TRUE(clients[i].send_all(msg));
    EXPECT_EQ(clients[i].recv_exact(msg.size()), msg) << "client " << i;
  }
  {
    std::lock_guard lk(h.mu);
    EXPECT_EQ(h.ips, expected_ips);
    EXPECT_EQ(h.families, std::set<int>{AF_INET6});
    EXPECT_EQ(h.shards.size(), 3u) << "every shard, the added one too, served IPv6 clients";
  }
  // An IPv4 client cannot reach a server bound to ::1 only.
  Client v4;
  EXPECT_FALSE(v4.connect(server.port()));
  server.stop();
  EXPECT_EQ(h.disconnects.load(), static_cast<int>(clients.size()));
}

}  // namespace
}  // namespace esockets::test

// Stale ids after fd reuse: an old id whose fd now belongs to a new client reaches nobody.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <map>
#include <mutex>

#include "test_support.hpp"

namespace esockets::test {
namespace {

class FdHandler : public CountingHandler {
 public:
  std::mutex mu;
  std::map<std::string, std::pair<ConnectionId, int>> by_addr;  // id, fileno
  bool on_client_connect(Connection& c) override {
    {
      std::lock_guard lk(mu);
      by_addr[c.getip()] = {c.id(), c.fileno()};
    }
    return CountingHandler::on_client_connect(c);
  }
  std::pair<ConnectionId, int> of(const Client& cl) {
    std::lock_guard lk(mu);
    auto it = by_addr.find(cl.local_address());
    return it == by_addr.end() ? std::pair<ConnectionId, int>{} : it->second;
  }
};

class StaleId : public ::testing::TestWithParam<unsigned> {};

TEST_P(StaleId, OldIdAfterFdReuseReachesNobody) {
  for (bool server_side_close : {false, true}) {
    SCOPED_TRACE(server_side_close ? "closed by server" : "closed by peer");
    FdHandler h;
    Server server(h, loopback_options(1, GetParam()));
    server.start();
    Client keep(server.port());  // an unrelated live connection
    Client old(server.port());
    ASSERT_TRUE(wait_until([&] { return h.connects.load() == 2; }));
    auto [old_id, old_fd] = h.of(old);
    ASSERT_TRUE(old_id.valid());
    ASSERT_EQ(old_id.slot(), static_cast<std::uint32_t>(old_fd));
    if (server_side_close) {
      ASSERT_EQ(server.close(old_id), SendStatus::ok);
      EXPECT_EQ(old.wait_eof(5s), EofResult::eof);
      old.close();
    } else {
      old.close();
    }
    ASSERT_TRUE(wait_until([&] { return h.disconnects.load() == 1; }));
    ASSERT_TRUE(wait_until([&] { return server.client_count() == 1; }));
    // The count drops when the connection retires; the fd is closed just after (or, closed by
    // the server, once the lingering close has seen our FIN). Wait for the number to be free:
    // a client socket opened before that would take it once it is freed, and the server
    // could never get it back.
    const int gone_fd = old_fd;
    ASSERT_TRUE(wait_until([&] { return ::fcntl(gone_fd, F_GETFD) == -1 && errno == EBADF; }))
        << "the server never closed fd " << gone_fd;
    // Open connections until one gets the same fd (the kernel hands out the lowest free fd,
    // once the server really closed the old socket).
    std::vector<Client> opened;
    opened.reserve(200);
    Client* reused = nullptr;
    ConnectionId new_id;
    for (int attempt = 0; attempt < 200 && reused == nullptr; ++attempt) {
      // Our client sockets live in this process too: one made while old_fd is the lowest free
      // number would take it before the server's accept (which runs later, on its thread), and
      // keep it. Move such a socket to a high number before connecting.
      const std::string address = "127.0.0.1:" + std::to_string(server.port());
      Client fresh;
      ASSERT_TRUE(fresh.prepare(address));
      if (fresh.fd() == old_fd) {
        const int high = ::fcntl(fresh.fd(), F_DUPFD_CLOEXEC, 512);
        ASSERT_GE(high, 0);
        fresh.close();
        fresh = Client::adopt(high);
      }
      ASSERT_TRUE(fresh.connect_prepared(address));
      opened.push_back(std::move(fresh));
      ASSERT_TRUE(wait_until([&] { return h.of(opened.back()).first.valid(); }));
      auto [id, fd] = h.of(opened.back());
      if (fd == old_fd) {
        reused = &opened.back();
        new_id = id;
      }
      if (attempt % 10 == 9) std::this_thread::sleep_for(50ms);  // let a lingering close finish
    }
    ASSERT_NE(reused, nullptr) << "fd " << old_fd << " was never reused";
    EXPECT_EQ(new_id.slot(), old_id.slot());
    EXPECT_NE(new_id.generation(), old_id.generation());
    EXPECT_EQ(new_id.generation() % 2, 1u);
    EXPECT_EQ(server.send(old_id, "X"), SendStatus::closed);
    EXPECT_EQ(server.send_frame(old_id, "X"), SendStatus::closed);
    EXPECT_EQ(server.close(old_id), SendStatus::closed);
    EXPECT_EQ(reused->poll_once(200ms), EofResult::timeout) << "the stale id reached the new client";
    // The new connection still works, through the new id and through echo.
    ASSERT_EQ(server.send(new_id, "new"), SendStatus::ok);
    EXPECT_EQ(reused->recv_exact(3), "new");
    ASSERT_TRUE(reused->send_all("echo"));
    EXPECT_EQ(reused->recv_exact(4), "echo");
    ASSERT_TRUE(keep.send_all("k"));
    EXPECT_EQ(keep.recv_exact(1), "k");
  }
}

INSTANTIATE_TEST_SUITE_P(Workers, StaleId, ::testing::Values(0u, 2u),
                         [](const auto& i) { return "workers" + std::to_string(i.param); });

}  // namespace
}  // namespace esockets::test

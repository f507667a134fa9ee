// Delivery contract, behaviour 8: a length header is a claim, not bytes. With length_prefixed
// framing (4-byte header) and max_frame = 1 GiB, clients that announce a 1 GiB frame and send
// only a few bytes must not make the server allocate 1 GiB each (DESIGN.md, Framing: "buffers
// grow with bytes that arrived, never with a claim"), must not end the process (invariant 5:
// "Bad input costs one connection, not the server"), and other clients keep being served.
// Measured in a child process through /proc/self/status: VmRSS (the resident memory) and VmPeak
// (the address space reserved for the claims); and, outside sanitizer builds, under an address
// space limit where allocating for the claim fails.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include "delivery_support.hpp"

namespace esockets::test::delivery {
namespace {

class EchoFrames : public Handler {
 public:
  std::atomic<int> connects{0};
  bool on_client_connect(Connection&) override {
    connects++;
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override { c.send_frame(m); }
};

ServerOptions claim_options() {
  ServerOptions o = loopback_options(1, 0);
  o.framing = Framing::length_prefixed;
  o.length_prefix_bytes = 4;
  o.max_frame = std::size_t{1} << 30;
  return o;
}

const std::string kClaim1GiB("\x40\x00\x00\x00", 4);  // big-endian 1,073,741,824

bool echo_roundtrip(Client& c, const std::string& payload) {
  if (!c.send_all(wire_frame(Wire::lp4, payload), 2s)) return false;
  std::string got;
  return c.recv_exact(4 + payload.size(), got, 3s) && got == wire_frame(Wire::lp4, payload);
}

TEST(HugeFrameClaim, AnnouncedGibibyteIsNotAllocatedAndOthersAreServed) {
  const auto out = run_in_child(30s, [](ChildReport& r) {
    EchoFrames h;
    Server server(h, claim_options());
    server.start();
    Client normal(server.port());
    if (!echo_roundtrip(normal, "warm-up")) r.fail("no echo before the attack");
    const long rss0 = proc_status_kb("VmRSS"), peak0 = proc_status_kb("VmPeak");
    const std::uint64_t in0 = server.stats().total.bytes_in;

    r.stage("8 clients announce a 1 GiB frame and send 3 bytes (4 in one write, 4 with a split header)");
    std::vector<Client> attackers;
    for (int i = 0; i < 8; ++i) {
      attackers.emplace_back(server.port());
      if (i % 2 == 0) {
        attackers.back().send_all(kClaim1GiB + "abc");
      } else {
        attackers.back().send_all(kClaim1GiB.substr(0, 2));
      }
    }
    std::this_thread::sleep_for(100ms);
    for (int i = 1; i < 8; i += 2) attackers[static_cast<std::size_t>(i)].send_all(kClaim1GiB.substr(2) + "abc");
    if (!wait_until([&] { return server.stats().total.bytes_in >= in0 + 8 * 7; }, 5s)) {
      r.fail("the server did not read the claims");
    }
    std::this_thread::sleep_for(200ms);

    r.stage("a normal client is still served");
    if (!echo_roundtrip(normal, "still here")) r.fail("the normal client got no echo after the claims");
    Client late(server.port());
    if (!echo_roundtrip(late, "new client")) r.fail("a new client got no echo after the claims");

    const long rss1 = proc_status_kb("VmRSS"), peak1 = proc_status_kb("VmPeak");
    r.note("VmRSS " + std::to_string(rss0 / 1024) + " -> " + std::to_string(rss1 / 1024) + " MiB, VmPeak " +
           std::to_string(peak0 / 1024) + " -> " + std::to_string(peak1 / 1024) + " MiB");
    if (rss1 - rss0 > 64 * 1024) {
      r.fail("VmRSS grew by " + std::to_string((rss1 - rss0) / 1024) + " MiB for 8 claims of 24 bytes in all");
    }
    if (peak1 - peak0 > 256 * 1024) {
      r.fail("VmPeak grew by " + std::to_string((peak1 - peak0) / 1024) +
             " MiB: the server reserved memory for the announced 1 GiB frames (8 x 1024 MiB), not for "
             "the bytes that arrived");
    }
    r.stage("stop");
    server.stop();
    r.stage("done");
  });
  EXPECT_TRUE(out.ok()) << out.describe();
}

TEST(HugeFrameClaim, ClaimUnderAddressSpaceLimitDoesNotEndTheProcess) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "RLIMIT_AS cannot be used with sanitizers (their shadow memory is reserved address space)";
#else
  const auto out = run_in_child(30s, [](ChildReport& r) {
    EchoFrames h;
    Server server(h, claim_options());
    server.start();
    Client normal(server.port());
    if (!echo_roundtrip(normal, "warm-up")) r.fail("no echo before the attack");
    // 768 MiB of address space to spare: plenty for everything but a 1 GiB buffer.
    rlimit lim{};
    ::getrlimit(RLIMIT_AS, &lim);
    const rlim_t vm = static_cast<rlim_t>(proc_status_kb("VmSize")) * 1024;
    lim.rlim_cur = vm + (rlim_t{768} << 20);
    if (::setrlimit(RLIMIT_AS, &lim) != 0) {
      r.fail("setrlimit failed");
      return;
    }
    r.stage("one client announces a 1 GiB frame (address space limited to VmSize + 768 MiB)");
    Client attacker(server.port());
    attacker.send_all(kClaim1GiB + "abc");
    std::this_thread::sleep_for(300ms);
    r.stage("a normal client is still served");
    if (!echo_roundtrip(normal, "still here")) r.fail("the normal client got no echo after the claim");
    r.stage("stop");
    server.stop();
    r.stage("done");
  });
  EXPECT_TRUE(out.ok()) << out.describe();
#endif
}

}  // namespace
}  // namespace esockets::test::delivery

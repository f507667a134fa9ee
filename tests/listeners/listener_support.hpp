// Helpers of the listener tests: a blocking client for every listener kind (TCP over IPv4 and
// IPv6, Unix paths, abstract names), a temporary directory, hand-made PROXY headers, numbered
// line traffic checked for loss, duplication and order on both sides, and a handler that
// records what each connection looked like (listener, peer, PROXY info, thread).
// Thread: Sock and TempDir belong to the thread using them; SeqHandler is called by engine
// threads and read by the test thread (atomics, or its mutex).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "esockets/esockets.hpp"
#include "esockets/proxy.hpp"
#include "test_support.hpp"

namespace esockets::test {

/// A fresh directory under /tmp, removed (with the files in it) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

/// An abstract Unix socket name unique to this process and call ("esk-test-<pid>-<n>-<tag>").
std::string unique_abstract_name(std::string_view tag);

/// A blocking client of one listener address as Server::listeners() spells it
/// ("127.0.0.1:p", "[::1]:p", "unix:/path", "unix:@name"): test_support's Client.
using Sock = Client;

/// Connects or fails the test (ADD_FAILURE) and returns an unopened Sock.
Sock connect_or_fail(const std::string& address);

/// n numbered lines "<first>\n" ... "<first+n-1>\n" (what the server checks and echoes).
std::string numbered_lines(std::uint64_t first, std::uint64_t n);
/// Sends numbered lines [first, first+n) and reads back exactly the same stream; false (with a
/// test failure naming `what`) if anything differs, is missing or comes late.
bool echo_numbered(Sock& s, std::uint64_t first, std::uint64_t n, const std::string& what,
                   std::chrono::milliseconds timeout = std::chrono::seconds(10));

/// A v1 header "PROXY TCP4 src dst sport dport\r\n".
std::string proxy_v1_tcp4(const std::string& src, const std::string& dst, std::uint16_t sport,
                          std::uint16_t dport);
/// A v2 PROXY header over TCP/IPv4 (addresses as dotted quads) with TLVs {type, value}.
std::string proxy_v2_tcp4(const std::string& src, const std::string& dst, std::uint16_t sport,
                          std::uint16_t dport,
                          const std::vector<std::pair<std::uint8_t, std::string>>& tlvs = {});
/// A v2 PROXY header over TCP/IPv6 with TLVs.
std::string proxy_v2_tcp6(const std::string& src, const std::string& dst, std::uint16_t sport,
                          std::uint16_t dport,
                          const std::vector<std::pair<std::uint8_t, std::string>>& tlvs = {});
/// A v2 LOCAL header (health check): no addresses.
std::string proxy_v2_local();
/// The 12-byte v2 signature, then version/command, family and a length, and nothing else.
std::string proxy_v2_prefix(std::uint8_t ver_cmd, std::uint8_t fam, std::uint16_t len);

/// What one connection looked like to the handler.
struct SeenConn {
  ConnectionId id;
  std::uint16_t listener = 0;
  std::string peer;          // getip()
  std::uint8_t family = 0;   // peer().family
  std::optional<ProxyInfo> proxy;  // a copy of *proxy() in on_client_connect
  bool proxy_in_message = false;   // proxy() was non-null (and the same) in on_message_recv
  bool listener_in_message = true; // listener() in on_message_recv matched on_client_connect
  bool proxy_at_disconnect = false; // proxy() was non-null in on_client_disconnect
  std::string thread;        // name of the thread that ran on_client_connect
  int connects = 0;
  int disconnects = 0;
  CloseReason reason = CloseReason::peer_closed;
  std::uint64_t messages = 0;
};

/// A copy of a Warning (its text outlives the call).
struct SeenWarning {
  Severity severity = Severity::info;
  WarningCode code = WarningCode::engine_error;
  int shard = -1;
  int worker = -1;
  ConnectionId connection;
  int error = 0;
  std::string text;
};

/// Line framing is expected: each message is a decimal sequence number, which must be the
/// previous one + 1 on its connection (from 0); the handler echoes it with send_frame.
class SeqHandler : public Handler {
 public:
  std::atomic<int> connects{0}, disconnects{0}, seq_errors{0}, unknown_disconnects{0},
      double_connects{0}, warnings{0};
  std::atomic<std::uint64_t> messages{0};
  std::atomic<int> reasons[kCloseReasonCount] = {};
  std::atomic<int> per_listener[8] = {};
  bool echo = true;
  /// Throw from on_message_recv when the message equals this (empty = never).
  std::string throw_on;

  bool on_client_connect(Connection& c) override;
  void on_message_recv(Connection& c, Bytes m) override;
  void on_client_disconnect(Connection& c, CloseReason r) override;
  void on_warning(const Warning& w) override;

  int reason(CloseReason r) const { return reasons[static_cast<std::size_t>(r)].load(); }
  std::vector<SeenConn> conns() const;
  std::vector<SeenWarning> warnings_seen() const;
  /// The warnings with this code so far.
  std::vector<SeenWarning> warnings_of(WarningCode code) const;
  /// The connection whose peer string is `peer`, if seen.
  std::optional<SeenConn> by_peer(const std::string& peer) const;

 private:
  mutable std::mutex mu_;
  std::map<std::uint64_t, SeenConn> conns_;  // by id value
  std::vector<SeenConn> ended_;
  std::vector<SeenWarning> warnings_;
};

/// Options for line framing with linger and stop bounded for tests.
ServerOptions line_options(unsigned shards, unsigned workers);
/// A TCP or Unix ListenerOptions with an address.
ListenerOptions listener_at(std::string address);

/// Name of the calling thread (pthread_getname_np).
std::string this_thread_name();
/// Names of this process's threads (/proc/self/task/*/comm), one per thread, with their tids.
std::vector<std::pair<pid_t, std::string>> thread_names();
/// The Cpus_allowed_list line of a thread's /proc/self/task/<tid>/status ("0-1", "0").
std::string cpus_allowed_list(pid_t tid);

/// Milliseconds since `t`.
inline long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

}  // namespace esockets::test

// ChildContext: a supervised child's side of the Supervisor (engine/ops/supervisor.cpp): its
// stats reports over the SOCK_SEQPACKET channel and serve(), which waits for the stop signals
// the supervisor sends.
// Thread: the child's main thread (the one that runs the child function).
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>

#include "esockets/server.hpp"
#include "esockets/supervisor.hpp"
#include "ops/supervisor_stats.hpp"

namespace esockets {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

void ChildContext::report(const Stats& stats, bool final, bool handed_over) const {
  if (channel_ < 0) return;
  const std::string msg = detail::encode_report(stats, final, handed_over);
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (::send(channel_, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) return;
    if (!final || (errno != EAGAIN && errno != EWOULDBLOCK)) return;
    // A handed-over child has nothing left to serve: it waits (for a busy or stopped
    // supervisor) rather than lose the report that keeps its slot from being restarted.
    pollfd p{channel_, POLLOUT, 0};
    if (::poll(&p, 1, handed_over ? 60000 : 1000) <= 0) return;
  }
}

int ChildContext::serve(Server& server) const {
  sigset_t stops;
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stops, nullptr);
  // Waits up to `d` for a stop signal: true if one came.
  auto wait_signal = [&](milliseconds d) {
    timespec ts{static_cast<time_t>(d.count() / 1000), static_cast<long>(d.count() % 1000) * 1000000L};
    while (true) {
      const int sig = ::sigtimedwait(&stops, nullptr, &ts);
      if (sig > 0) return true;
      if (errno != EINTR) return false;
    }
  };
  report(server.stats());
  while (server.running() && !wait_signal(interval_)) report(server.stats());
  if (drain_.count() > 0 && server.running()) {
    server.drain();
    const auto until = Clock::now() + drain_;
    while (server.running()) {
      const auto left = std::chrono::duration_cast<milliseconds>(until - Clock::now());
      if (left.count() <= 0) break;
      report(server.stats());
      if (wait_signal(std::min(left, interval_))) break;  // a second signal: stop now
    }
  }
  server.stop();
  report(server.stats(), true, server.handed_over());
  return 0;
}

}  // namespace esockets

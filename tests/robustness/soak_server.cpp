// soak_server: the server soak.sh drives (ASan/LSan build). Line framing, echo; a message
// starting with "THROW" makes the handler throw; "BIG n" answers n KiB (slow-consumer bait).
// Prints "soak_server listening on 127.0.0.1:PORT" then, on SIGINT/SIGTERM, a stats line and
// exits 0 (LSan runs at exit).
#include <signal.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "esockets/esockets.hpp"

namespace {
class SoakHandler : public esockets::Handler {
 public:
  void on_message_recv(esockets::Connection& c, esockets::Bytes m) override {
    if (m.substr(0, 5) == "THROW") throw std::runtime_error("soak: marker message");
    if (m.substr(0, 4) == "BIG ") {
      const long kib = std::strtol(std::string(m.substr(4)).c_str(), nullptr, 10);
      static const std::string chunk(1024, 'b');
      for (long i = 0; i < kib; ++i) {
        if (c.send(chunk) != esockets::SendStatus::ok) return;
      }
      return;
    }
    c.send_frame(m);
  }
};
}  // namespace

int main(int argc, char** argv) {
  esockets::ServerOptions o;
  o.port = argc > 1 ? static_cast<std::uint16_t>(std::atoi(argv[1])) : 0;
  o.shards = 2;
  o.workers = argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 2;
  o.framing = esockets::Framing::line;
  o.max_frame = 64 * 1024;
  o.idle_timeout = std::chrono::milliseconds(3000);
  o.frame_timeout = std::chrono::milliseconds(2000);
  o.write_timeout = std::chrono::milliseconds(2000);
  o.output_hard_cap = 4 * 1024 * 1024;
  o.output_high_watermark = 1024 * 1024;
  o.socket_send_buffer = 65536;

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  SoakHandler h;
  esockets::Server server(h, o);
  server.start();
  std::printf("soak_server listening on 127.0.0.1:%u\n", server.port());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  server.stop();
  const auto t = server.stats().total;
  std::printf("soak_server stats: accepts=%" PRIu64 " conns=%" PRIu64 " output_bytes=%" PRIu64, t.accepts,
              t.connections, t.output_bytes);
  for (std::size_t r = 0; r < esockets::kCloseReasonCount; ++r) {
    std::printf(" %s=%" PRIu64, esockets::to_string(static_cast<esockets::CloseReason>(r)), t.closes[r]);
  }
  std::printf("\n");
  std::fflush(stdout);
  return 0;
}

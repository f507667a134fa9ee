// A project outside the build tree that uses esockets (find_package, add_subdirectory,
// FetchContent or pkg-config: tests/consumer/run.sh): starts an echo server on port 0, sends it
// one line over a plain socket, checks the echo, stops the server.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include <esockets/esockets.hpp>

static_assert(ESOCKETS_VERSION_MAJOR >= 0 && ESOCKETS_VERSION >= 300, "esockets/version.hpp");

namespace {

struct Echo : esockets::Handler {
  void on_message_recv(esockets::Connection& c, esockets::Bytes msg) override { c.send_frame(msg); }
};

// Connects to 127.0.0.1:port, writes `line`, reads until '\n' (5 s timeout). "" on failure.
std::string round_trip(std::uint16_t port, const std::string& line) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string got;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::send(fd, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size())) {
    char buf[256];
    while (got.find('\n') == std::string::npos) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return got;
}

}  // namespace

int main() {
  Echo handler;
  esockets::ServerOptions opts;
  opts.port = 0;
  opts.shards = 2;
  opts.framing = esockets::Framing::line;
  esockets::Server server(handler, opts);
  server.start();
  if (server.port() == 0) {
    std::fprintf(stderr, "consumer: port() is 0 after start()\n");
    return 1;
  }
  const std::string reply = round_trip(server.port(), "hello esockets\n");
  server.stop();
  if (reply != "hello esockets\n") {
    std::fprintf(stderr, "consumer: expected the line echoed, got '%s'\n", reply.c_str());
    return 1;
  }
  std::printf("consumer: esockets %s echoed one line on port %u\n", esockets::version(),
              server.port());
  return server.running() ? 1 : 0;
}

// A project outside the build tree: find_package(esockets), start a server on port 0, stop it.
#include <cstdio>

#include <esockets/esockets.hpp>

namespace {
struct Quiet : esockets::Handler {};
}  // namespace

int main() {
  Quiet h;
  esockets::ServerOptions o;
  o.port = 0;
  esockets::Server server(h, o);
  server.start();
  if (server.port() == 0) {
    std::fprintf(stderr, "consumer: port() is 0 after start()\n");
    return 1;
  }
  std::printf("consumer: esockets server listened on port %u\n", server.port());
  server.stop();
  return server.running() ? 1 : 0;
}

// The seed README's example (ESocketS, Python) ported to esockets: print every event.
//   esockets-seed-example [port]     (default 1234, bound on 127.0.0.1)
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "esockets/esockets.hpp"

class Socket : public esockets::Handler {
 public:
  void on_start(esockets::Server& s) override {
    std::printf("Server started on:  %s %u\n", s.options().host.c_str(), s.port());
  }
  bool on_client_connect(esockets::Connection& c) override {
    std::printf("%s Connected\n", c.getip().c_str());
    return true;
  }
  void on_message_recv(esockets::Connection& c, esockets::Bytes msg) override {
    std::printf("%s :  %.*s\n", c.getip().c_str(), static_cast<int>(msg.size()), msg.data());
  }
  void on_client_disconnect(esockets::Connection& c, esockets::CloseReason r) override {
    std::printf("%s Disconnected (%s)\n", c.getip().c_str(), esockets::to_string(r));
  }
  void on_server_shutting_down(esockets::Server&) override {
    std::printf("Server shutdown sequence started\n");
  }
  void on_server_shut_down(esockets::Server&) override { std::printf("Server closed\n"); }
  void on_warning(std::string_view msg) override {
    std::printf("Warning:  %.*s\n", static_cast<int>(msg.size()), msg.data());
  }
};

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  esockets::ServerOptions o;
  o.port = 1234;
  if (argc > 1) {
    char* end = nullptr;
    long p = std::strtol(argv[1], &end, 10);
    if (*end != '\0' || p < 0 || p > 65535) {
      std::fprintf(stderr, "esockets-seed-example: port must be 0..65535, not '%s'\n", argv[1]);
      return 2;
    }
    o.port = static_cast<std::uint16_t>(p);
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  Socket handler;
  try {
    esockets::Server s(handler, o);
    s.start();
    int sig = 0;
    sigwait(&set, &sig);
    s.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "esockets-seed-example: %s\n", e.what());
    return 1;
  }
  return 0;
}

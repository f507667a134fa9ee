// esockets-http: an HTTP/1.1 server on the esockets engine (see http_handler.hpp for the routes).
// SIGINT or SIGTERM stops it gracefully.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "esockets/esockets.hpp"
#include "http_decoder.hpp"
#include "http_handler.hpp"
#include "http_response.hpp"
#include "server_cli.hpp"

namespace {

constexpr const char* kUsage =
    "usage: esockets-http [options]\n"
    "  --host H                numeric address to bind (default 127.0.0.1)\n"
    "  --port P                port (default 8080; 0 = ephemeral, the bound port is printed)\n"
    "  --shards N              reactor threads (default 1)\n"
    "  --workers N             handler threads, 0 = inline on the shards (default 0)\n"
    "  --backend B             epoll | io_uring | automatic (default automatic: epoll,\n"
    "                          or $ESOCKETS_BACKEND)\n"
    "  --max-connections N     connections served at once (default: fd limit - 64)\n"
    "  --max-header-bytes N    request line + headers, larger heads get 431/414 (default 8192)\n"
    "  --max-headers N         header fields per request, more get 431 (default 100)\n"
    "  --max-body BYTES        request body (Content-Length or chunked), larger get 413\n"
    "                          (default 1048576, at most 268435456)\n"
    "  --header-timeout SEC    close a client that started a request and did not finish it\n"
    "                          (head and body) in this long, 0 = never (default 10)\n"
    "  --keepalive-timeout SEC close a client that sent nothing for this long, 0 = never\n"
    "                          (default 75)\n"
    "  --takeover-socket PATH  offer a takeover on this Unix socket: a new process started\n"
    "                          with --take-over PATH gets the listeners and every client;\n"
    "                          this one then exits 0\n"
    "  --take-over PATH        take over from the server offering PATH instead of binding\n"
    "  -q, --quiet             do not print the listening line or warnings\n"
    "  -h, --help              this text\n"
    "Routes: GET|HEAD /plaintext, /json, /stats; POST /echo; other paths 404, other methods 405.\n"
    "Exit status: 0 after a clean stop (SIGINT/SIGTERM), 2 for a bad flag, 1 if it cannot start.\n";

}  // namespace

int main(int argc, char** argv) {
  esockets::ServerOptions o;
  o.port = 8080;
  o.frame_timeout = std::chrono::seconds(10);
  o.idle_timeout = std::chrono::seconds(75);
  esockets::http::Limits limits;
  esockets::tools::ServerCli cli("esockets-http", kUsage);
  cli.add_server_flags(o);  // no --max-frame: the decoder's limits set it
  cli.option("--max-header-bytes", [&](const char* f, const std::string& v) {
    limits.max_header_bytes = cli.number<std::size_t>(f, v, 64, std::size_t{1} << 24);
  });
  cli.option("--max-headers", [&](const char* f, const std::string& v) {
    limits.max_headers = cli.number<std::size_t>(f, v, 1, 100000);
  });
  cli.option("--max-body", [&](const char* f, const std::string& v) {
    limits.max_body = cli.number<std::size_t>(f, v, 0, esockets::http::kMaxBodyLimit);
  });
  cli.option("--header-timeout", [&](const char* f, const std::string& v) { o.frame_timeout = cli.seconds(f, v); });
  cli.option("--keepalive-timeout", [&](const char* f, const std::string& v) { o.idle_timeout = cli.seconds(f, v); });
  cli.parse(argc, argv);
  const bool quiet = cli.quiet();

  esockets::tools::StopSignals stop;  // engine threads inherit a mask without SIGINT/SIGTERM
  return cli.run([&] {
    auto decoder = std::make_shared<esockets::http::RequestDecoder>(limits);
    o.framing = esockets::Framing::custom;
    o.decoder = decoder;
    o.max_frame = decoder->max_message_bytes();
    // A response is small next to what a client may send (an echo of max_body): let the
    // output queue hold a few of them before it counts as a slow consumer.
    if (o.output_hard_cap < 4 * limits.max_body) o.output_hard_cap = 4 * limits.max_body;
    if (o.output_total_cap < o.output_hard_cap) o.output_total_cap = o.output_hard_cap;

    esockets::http::HttpHandler handler(limits, !quiet);
    esockets::Server server(handler, o);
    server.tick_every(std::chrono::seconds(1), [] { esockets::http::refresh_date(); });
    server.start();
    cli.print_listening(server,
                        "shards=" + std::to_string(o.shards) + " workers=" + std::to_string(o.workers));
    stop.arm(server);
    server.wait();  // a stop signal ends it (request_stop from the handler)
    stop.disarm();
    const esockets::ShardStats t = server.stats().total;
    if (!quiet) {
      std::printf("esockets-http: %s, stopped: %llu requests, %llu connections accepted\n",
                  stop.name(), static_cast<unsigned long long>(t.messages_in),
                  static_cast<unsigned long long>(t.accepts));
    }
  });
}

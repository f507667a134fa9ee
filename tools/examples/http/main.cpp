// esockets-http: an HTTP/1.1 server on the esockets engine (see http_handler.hpp for the routes).
// SIGINT or SIGTERM stops it gracefully.
#include <signal.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "esockets/esockets.hpp"
#include "http_decoder.hpp"
#include "http_handler.hpp"
#include "http_response.hpp"

namespace {

constexpr const char* kUsage =
    "usage: esockets-http [options]\n"
    "  --host H                numeric address to bind (default 127.0.0.1)\n"
    "  --port P                port (default 8080; 0 = ephemeral, the bound port is printed)\n"
    "  --shards N              reactor threads (default 1)\n"
    "  --workers N             handler threads, 0 = inline on the shards (default 0)\n"
    "  --max-connections N     connections served at once (default: fd limit - 64)\n"
    "  --max-header-bytes N    request line + headers, larger heads get 431/414 (default 8192)\n"
    "  --max-headers N         header fields per request, more get 431 (default 100)\n"
    "  --max-body BYTES        request body (Content-Length or chunked), larger get 413\n"
    "                          (default 1048576, at most 268435456)\n"
    "  --header-timeout SEC    close a client that started a request and did not finish it\n"
    "                          (head and body) in this long, 0 = never (default 10)\n"
    "  --keepalive-timeout SEC close a client that sent nothing for this long, 0 = never\n"
    "                          (default 75)\n"
    "  -q, --quiet             do not print the listening line or warnings\n"
    "  -h, --help              this text\n"
    "Routes: GET|HEAD /plaintext, /json, /stats; POST /echo; other paths 404, other methods 405.\n"
    "Exit status: 0 after a clean stop (SIGINT/SIGTERM), 2 for a bad flag, 1 if it cannot start.\n";

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "esockets-http: %s\n(run esockets-http --help for the flags)\n", msg.c_str());
  std::exit(2);
}

template <class T>
T parse_number(std::string_view flag, std::string_view v, T lo, T hi) {
  T out{};
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size() || out < lo || out > hi) {
    usage_error(std::string(flag) + " needs a whole number between " + std::to_string(lo) +
                " and " + std::to_string(hi) + ", not '" + std::string(v) + "'");
  }
  return out;
}

std::chrono::milliseconds parse_seconds(std::string_view flag, std::string_view v) {
  std::string text(v);
  char* end = nullptr;
  double secs = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(secs >= 0) || secs > 86400.0 * 365) {
    usage_error(std::string(flag) + " needs a number of seconds >= 0 (fractions allowed), not '" +
                text + "'");
  }
  return std::chrono::milliseconds(static_cast<long long>(secs * 1000.0 + 0.5));
}

}  // namespace

int main(int argc, char** argv) {
  esockets::ServerOptions o;
  o.port = 8080;
  o.frame_timeout = std::chrono::seconds(10);
  o.idle_timeout = std::chrono::seconds(75);
  esockets::http::Limits limits;
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) usage_error(std::string(a) + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--host") {
      o.host = std::string(value());
    } else if (a == "--port") {
      o.port = parse_number<std::uint16_t>(a, value(), 0, 65535);
    } else if (a == "--shards") {
      o.shards = parse_number<unsigned>(a, value(), 1, 254);
    } else if (a == "--workers") {
      o.workers = parse_number<unsigned>(a, value(), 0, 255);
    } else if (a == "--max-connections") {
      o.max_connections = parse_number<std::size_t>(a, value(), 1, std::size_t{1} << 24);
    } else if (a == "--max-header-bytes") {
      limits.max_header_bytes = parse_number<std::size_t>(a, value(), 64, std::size_t{1} << 24);
    } else if (a == "--max-headers") {
      limits.max_headers = parse_number<std::size_t>(a, value(), 1, 100000);
    } else if (a == "--max-body") {
      limits.max_body = parse_number<std::size_t>(a, value(), 0, esockets::http::kMaxBodyLimit);
    } else if (a == "--header-timeout") {
      o.frame_timeout = parse_seconds(a, value());
    } else if (a == "--keepalive-timeout") {
      o.idle_timeout = parse_seconds(a, value());
    } else if (a == "-q" || a == "--quiet") {
      quiet = true;
    } else {
      usage_error("unknown flag '" + std::string(a) + "'");
    }
  }

  // Engine threads inherit this mask: only the main thread takes the stop signals.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  try {
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
    if (!quiet) {
      std::printf("esockets-http listening on %s:%u (shards=%u workers=%u)\n", o.host.c_str(),
                  server.port(), o.shards, o.workers);
      std::fflush(stdout);
    }
    siginfo_t info;
    int sig;
    do {
      sig = sigwaitinfo(&set, &info);
    } while (sig != SIGINT && sig != SIGTERM);
    if (!quiet) {
      std::printf("esockets-http: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
      std::fflush(stdout);
    }
    server.stop();
    const esockets::ShardStats t = server.stats().total;
    if (!quiet) {
      std::printf("esockets-http: stopped: %llu requests, %llu connections accepted\n",
                  static_cast<unsigned long long>(t.messages_in),
                  static_cast<unsigned long long>(t.accepts));
    }
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "esockets-http: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "esockets-http: cannot start: %s\n", e.what());
    return 1;
  }
  return 0;
}

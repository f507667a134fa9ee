#include "server_cli.hpp"

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <utility>

#include <CLI/CLI.hpp>

#include "esockets/server.hpp"

namespace esockets::tools {

ServerCli::ServerCli(std::string program, std::string usage)
    : program_(std::move(program)), usage_(std::move(usage)), app_(std::make_unique<CLI::App>(program_)) {
  app_->set_help_flag();  // -h / --help print usage_ (see parse)
  app_->allow_windows_style_options(false);
  app_->add_flag("-q,--quiet", quiet_);
}

ServerCli::~ServerCli() = default;

void ServerCli::add_server_flags(ServerOptions& o, const ServerFlags& which) {
  opts_ = &o;
  option("--host", [this, &o](const char*, const std::string& v) {
    o.host = v;
    host_or_port_ = true;
  });
  option("--port", [this, &o](const char* f, const std::string& v) {
    o.port = number<std::uint16_t>(f, v, 0, 65535);
    host_or_port_ = true;
  });
  app_->add_option_function<std::vector<std::string>>("--listen", [this](const std::vector<std::string>& v) {
    listen_.insert(listen_.end(), v.begin(), v.end());
  })->expected(1, 1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app_->add_option_function<std::vector<std::string>>("--trusted-proxy", [this](const std::vector<std::string>& v) {
    trusted_.insert(trusted_.end(), v.begin(), v.end());
  })->expected(1, 1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app_->add_flag("--proxy-protocol", proxy_);
  option("--admin", [&o](const char*, const std::string& v) { o.admin = v; });
  option("--takeover-socket", [this, &o](const char* f, const std::string& v) {
    if (v.empty() || v.size() > 107) usage_error(std::string(f) + " needs a Unix socket path of 1 to 107 bytes");
    o.takeover_socket = v;
  });
  option("--take-over", [this, &o](const char* f, const std::string& v) {
    if (v.empty() || v.size() > 107) usage_error(std::string(f) + " needs a Unix socket path of 1 to 107 bytes");
    o.take_over = v;
  });
  option("--cpus", [this, &o](const char* f, const std::string& v) {
    o.cpu_affinity = {};
    if (v == "auto") {
      o.cpu_affinity.automatic = true;
      return;
    }
    std::string_view rest(v);
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      o.cpu_affinity.cpus.push_back(number<int>(f, rest.substr(0, comma), 0, 1023));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
    if (o.cpu_affinity.cpus.empty()) usage_error(std::string(f) + " needs auto or a list like 0,1");
  });
  option("--shards", [this, &o, max = which.max_shards](const char* f, const std::string& v) {
    o.shards = number<unsigned>(f, v, 1, max);
  });
  option("--workers", [this, &o](const char* f, const std::string& v) {
    o.workers = number<unsigned>(f, v, 0, 255);
  });
  option("--backend", [this, &o](const char* f, const std::string& v) {
    if (v == "epoll") {
      o.backend = Backend::epoll;
    } else if (v == "io_uring" || v == "io-uring") {
      o.backend = Backend::io_uring;
    } else if (v == "automatic" || v == "auto") {
      o.backend = Backend::automatic;
    } else {
      usage_error(std::string(f) + " must be epoll, io_uring or automatic, not '" + v + "'");
    }
  });
  if (which.max_connections) {
    option("--max-connections", [this, &o](const char* f, const std::string& v) {
      o.max_connections = number<std::size_t>(f, v, 1, std::size_t{1} << 24);
    });
  }
  if (which.min_max_frame > 0) {
    option("--max-frame", [this, &o, min = which.min_max_frame](const char* f, const std::string& v) {
      o.max_frame = number<std::size_t>(f, v, min, std::size_t{1} << 30);
    });
  }
}

void ServerCli::option(const char* name,
                       std::function<void(const char* flag, const std::string& value)> apply) {
  app_->add_option_function<std::string>(
          name, [name, apply = std::move(apply)](const std::string& v) { apply(name, v); })
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
}

void ServerCli::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {  // help wins over everything else
    if (std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[i], "--help") == 0) {
      std::fputs(usage_.c_str(), stdout);
      std::exit(0);
    }
  }
  try {
    app_->parse(argc, argv);
  } catch (const CLI::ExtrasError& e) {
    const auto extras = app_->remaining();
    usage_error("unknown flag '" + (extras.empty() ? std::string(e.what()) : extras.front()) + "'");
  } catch (const CLI::ArgumentMismatch& e) {
    std::string flag = e.what();
    const auto colon = flag.find(':');
    usage_error((colon == std::string::npos ? flag : flag.substr(0, colon)) + " needs a value");
  } catch (const CLI::ParseError& e) {
    usage_error(e.what());
  }
  if (opts_ == nullptr) return;
  if (!listen_.empty() && host_or_port_) {
    usage_error("--listen replaces --host and --port: give the address as --listen HOST:PORT");
  }
  if (!trusted_.empty() && !proxy_) {
    usage_error("--trusted-proxy is used only with --proxy-protocol");
  }
  if (listen_.empty() && proxy_) {
    // The --host/--port listener, spelled as an address.
    const std::string& h = opts_->host;
    listen_.push_back((h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" +
                      std::to_string(opts_->port));
  }
  for (const std::string& a : listen_) {
    ListenerOptions l;
    l.address = a;
    if (proxy_) {
      l.proxy_protocol = ProxyProtocol::any;
      if (!trusted_.empty()) l.trusted_proxies = trusted_;
    }
    opts_->listeners.push_back(std::move(l));
  }
}

void ServerCli::usage_error(const std::string& msg) const {
  std::fprintf(stderr, "%s: %s\n(run %s --help for the flags)\n", program_.c_str(), msg.c_str(),
               program_.c_str());
  std::exit(2);
}

std::chrono::milliseconds ServerCli::seconds(std::string_view flag, std::string_view v) const {
  std::string text(v);
  char* end = nullptr;
  double secs = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(secs >= 0) || secs > 86400.0 * 365) {
    usage_error(std::string(flag) + " needs a number of seconds >= 0 (fractions allowed), not '" +
                text + "'");
  }
  return std::chrono::milliseconds(static_cast<long long>(secs * 1000.0 + 0.5));
}

void ServerCli::print_listening(const Server& server, const std::string& detail) const {
  if (quiet_) return;
  std::string where;
  for (const ListenerInfo& l : server.listeners()) {
    if (!where.empty()) where += ", ";
    where += l.address;
    if (l.proxy_protocol != ProxyProtocol::off) where += " (PROXY)";
  }
  std::string more = detail + " backend=" + to_string(server.backend());
  const std::string admin = server.admin_address();
  if (!admin.empty()) more += " admin=" + admin;
  if (opts_ != nullptr && !opts_->take_over.empty()) {
    const Stats st = server.stats();
    char buf[160];
    std::snprintf(buf, sizeof buf, " took over %llu connections in %.1f ms",
                  static_cast<unsigned long long>(st.taken_over_in), st.takeover_ms);
    more += buf;
  }
  if (opts_ != nullptr && !opts_->takeover_socket.empty()) more += " takeover-socket=" + opts_->takeover_socket;
  std::printf("%s listening on %s (%s)\n", program_.c_str(), where.c_str(), more.c_str());
  std::fflush(stdout);
}

int ServerCli::run(const std::function<void()>& serve) const {
  try {
    serve();
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s: %s\n", program_.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: cannot start: %s\n", program_.c_str(), e.what());
    return 1;
  }
  return 0;
}

namespace {

std::atomic<Server*> g_server{nullptr};
volatile sig_atomic_t g_signal = 0;
static_assert(std::atomic<Server*>::is_always_lock_free);

extern "C" void on_stop_signal(int sig) {
  g_signal = sig;
  // request_stop is async-signal-safe (one eventfd write); the atomic load is lock-free.
  if (Server* s = g_server.load()) s->request_stop();
}

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

StopSignals::StopSignals() {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

StopSignals::~StopSignals() { disarm(); }

void StopSignals::arm(Server& server) {
  g_server.store(&server);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);  // a signal that came early is delivered now
}

void StopSignals::disarm() {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  g_server.store(nullptr);
}

int StopSignals::received() const { return g_signal; }

const char* StopSignals::name(const char* otherwise) const {
  const int sig = g_signal;
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : otherwise;
}

}  // namespace esockets::tools

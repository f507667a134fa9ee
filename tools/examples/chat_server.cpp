// esockets-chat: a publish/subscribe line server on the esockets engine.
//
// Protocol (Framing::line, one command per line, a trailing '\r' is ignored):
//   SUB <room>           join a room; reply "OK SUB <room>" once the subscription is in place
//                        (joining twice is not an error and does not double the delivery)
//   UNSUB <room>         leave it; reply "OK UNSUB <room>", or "ERR not subscribed to <room>"
//   PUB <room> <text>    deliver "MSG <room> <text>" to every subscriber of the room, the
//                        publisher included if it is subscribed; no reply
// Anything else gets "ERR <reason>" and the connection stays open; a line longer than
// --max-frame closes it (the engine's framing limit).
//
// Each room is one esockets::Group: a PUB is one multicast issued on the publisher's handler
// thread, so the messages of one publisher reach every subscriber in the order published.
// "OK SUB" is sent after the connection joined the group: a PUB the server reads after the
// client saw "OK SUB" reaches it (a PUB racing the SUB may deliver before the "OK SUB" line).
#include <signal.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "esockets/esockets.hpp"
#include "esockets/group.hpp"

namespace {

constexpr const char* kUsage =
    "usage: esockets-chat [options]\n"
    "A publish/subscribe line server. Commands, one per line:\n"
    "  SUB <room>   UNSUB <room>   PUB <room> <text>\n"
    "PUB sends \"MSG <room> <text>\" to every subscriber of the room; SUB and UNSUB are\n"
    "answered \"OK SUB <room>\" / \"OK UNSUB <room>\"; a bad command gets \"ERR <reason>\".\n"
    "Options:\n"
    "  --host H           numeric address to bind (default 127.0.0.1)\n"
    "  --port P           port (default 0 = ephemeral; the bound port is printed)\n"
    "  --shards N         reactor threads (default 1)\n"
    "  --workers N        handler threads, 0 = inline on the shards (default 0)\n"
    "  --max-frame BYTES  longest command line; a longer one closes the connection\n"
    "                     (default 65536)\n"
    "  -q, --quiet        do not print the listening line\n"
    "  -h, --help         this text\n"
    "SIGINT/SIGTERM stop it gracefully (request_stop from the signal handler) and print a\n"
    "summary. SIGUSR1 adds a shard, SIGUSR2 retires one (never below 1), SIGHUP rebalances:\n"
    "subscribers keep every message, in order, while shards change. Exit status: 0 after a\n"
    "clean stop, 2 for a bad flag, 1 if the server cannot start.\n";

constexpr std::size_t kMaxRoomName = 200;
constexpr std::size_t kMaxRoomsPerConnection = 1024;

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "esockets-chat: %s\n(run esockets-chat --help for the flags)\n", msg.c_str());
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

bool valid_room(std::string_view room) {
  if (room.empty() || room.size() > kMaxRoomName) return false;
  for (unsigned char ch : room) {
    if (ch <= ' ' || ch == 0x7f) return false;  // no spaces or control characters
  }
  return true;
}

// A short, printable rendering of client input for an ERR line.
std::string quoted(std::string_view s) {
  std::string out = "'";
  for (unsigned char ch : s.substr(0, 32)) out += (ch < ' ' || ch >= 0x7f) ? '?' : static_cast<char>(ch);
  if (s.size() > 32) out += "...";
  return out + "'";
}

class ChatHandler : public esockets::Handler {
 public:
  std::size_t rooms() const {
    std::shared_lock lk(mu_);
    return rooms_.size();
  }

  bool on_client_connect(esockets::Connection& conn) override {
    conn.set_user_data(new Session);
    return true;
  }

  void on_message_recv(esockets::Connection& conn, esockets::Bytes line) override {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto* session = static_cast<Session*>(conn.user_data());
    const std::size_t sp = line.find(' ');
    const std::string_view cmd = line.substr(0, sp);
    const std::string_view rest = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
    if (cmd == "PUB") {
      const std::size_t sp2 = rest.find(' ');
      if (sp2 == std::string_view::npos) return reply(conn, "ERR usage: PUB <room> <text>");
      const std::string_view room = rest.substr(0, sp2);
      if (!valid_room(room)) return reply(conn, "ERR bad room name " + quoted(room));
      publish(room, rest.substr(sp2 + 1));
    } else if (cmd == "SUB" || cmd == "UNSUB") {
      if (rest.empty() || rest.find(' ') != std::string_view::npos) {
        return reply(conn, "ERR usage: " + std::string(cmd) + " <room>");
      }
      if (!valid_room(rest)) return reply(conn, "ERR bad room name " + quoted(rest));
      if (session == nullptr) return;  // not admitted; cannot happen after on_client_connect
      if (cmd == "SUB") {
        subscribe(conn, *session, rest);
      } else {
        unsubscribe(conn, *session, rest);
      }
    } else if (cmd.empty()) {
      reply(conn, "ERR empty command (SUB <room>, UNSUB <room>, PUB <room> <text>)");
    } else {
      reply(conn, "ERR unknown command " + quoted(cmd) + " (SUB, UNSUB or PUB)");
    }
  }

  void on_client_disconnect(esockets::Connection& conn, esockets::CloseReason) override {
    auto* session = static_cast<Session*>(conn.user_data());
    if (session == nullptr) return;
    for (const std::string& room : session->rooms) leave(room, conn.id());
    delete session;
    conn.set_user_data(nullptr);
  }

  void on_warning(std::string_view msg) override {
    std::fprintf(stderr, "esockets-chat: warning: %.*s\n", static_cast<int>(msg.size()), msg.data());
  }

 private:
  // One room: its group and how many connections joined it (the group forgets closed members
  // by itself; the count lets the room be dropped when its last member leaves).
  struct Room {
    explicit Room(esockets::Server& s) : group(s) {}
    esockets::Group group;
    std::size_t members = 0;
  };
  // Per connection, touched only by that connection's handlers (never concurrently).
  struct Session {
    std::vector<std::string> rooms;
  };

  static void reply(esockets::Connection& conn, const std::string& text) { conn.send_frame(text); }

  void subscribe(esockets::Connection& conn, Session& session, std::string_view room) {
    for (const std::string& r : session.rooms) {
      if (r == room) return reply(conn, "OK SUB " + std::string(room));  // already in: idempotent
    }
    if (session.rooms.size() >= kMaxRoomsPerConnection) {
      return reply(conn, "ERR too many rooms (at most " + std::to_string(kMaxRoomsPerConnection) +
                             " per connection)");
    }
    {
      std::unique_lock lk(mu_);
      auto& slot = rooms_[std::string(room)];
      if (!slot) slot = std::make_shared<Room>(conn.server());
      slot->group.add(conn.id());
      ++slot->members;
    }
    session.rooms.emplace_back(room);
    // After the add: whoever sees this line is reached by every PUB read after it.
    reply(conn, "OK SUB " + std::string(room));
  }

  void unsubscribe(esockets::Connection& conn, Session& session, std::string_view room) {
    for (std::size_t k = 0; k < session.rooms.size(); ++k) {
      if (session.rooms[k] != room) continue;
      leave(session.rooms[k], conn.id());
      session.rooms[k] = std::move(session.rooms.back());
      session.rooms.pop_back();
      return reply(conn, "OK UNSUB " + std::string(room));
    }
    reply(conn, "ERR not subscribed to " + std::string(room));
  }

  void leave(const std::string& room, esockets::ConnectionId id) {
    std::unique_lock lk(mu_);
    auto it = rooms_.find(std::string_view(room));
    if (it == rooms_.end()) return;
    it->second->group.remove(id);
    if (--it->second->members == 0) rooms_.erase(it);  // a PUB holding it finishes first
  }

  void publish(std::string_view room, std::string_view text) {
    std::shared_ptr<Room> target;
    {
      std::shared_lock lk(mu_);
      auto it = rooms_.find(room);     // transparent lookup: no string built per PUB
      if (it == rooms_.end()) return;  // nobody listens
      target = it->second;
    }
    thread_local std::string msg;
    msg.clear();
    msg.reserve(4 + room.size() + 1 + text.size());
    msg.append("MSG ").append(room).append(" ").append(text);
    target->group.send_frame(msg);  // one multicast, from this (the publisher's) handler thread
  }

  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };

  mutable std::shared_mutex mu_;  // guards rooms_ (not the groups: each has its own lock)
  std::unordered_map<std::string, std::shared_ptr<Room>, NameHash, std::equal_to<>> rooms_;
};

std::atomic<esockets::Server*> g_server{nullptr};
volatile sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int sig) {
  g_signal = sig;
  // request_stop is async-signal-safe (one eventfd write); the atomic load is lock-free.
  if (esockets::Server* s = g_server.load()) s->request_stop();
}

}  // namespace

int main(int argc, char** argv) {
  static_assert(std::atomic<esockets::Server*>::is_always_lock_free);
  esockets::ServerOptions o;
  o.framing = esockets::Framing::line;
  o.max_frame = 65536;
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
    } else if (a == "--max-frame") {
      o.max_frame = parse_number<std::size_t>(a, value(), 16, std::size_t{1} << 30);
    } else if (a == "-q" || a == "--quiet") {
      quiet = true;
    } else {
      usage_error("unknown flag '" + std::string(a) + "'");
    }
  }

  // Engine threads inherit a mask without the stop signals, so the handler runs on the main
  // thread (which waits in server.wait()).
  sigset_t stop_set;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGINT);
  sigaddset(&stop_set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_set, nullptr);
  // The resize signals are taken by the main thread with sigtimedwait (set_shards blocks, so it
  // cannot run in a signal handler); every thread inherits them blocked.
  sigset_t resize_set;
  sigemptyset(&resize_set);
  sigaddset(&resize_set, SIGUSR1);
  sigaddset(&resize_set, SIGUSR2);
  sigaddset(&resize_set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &resize_set, nullptr);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  ChatHandler handler;
  try {
    esockets::Server server(handler, o);
    server.start();
    g_server.store(&server);
    if (!quiet) {
      std::printf("esockets-chat listening on %s:%u (shards=%u workers=%u max-frame=%zu)\n",
                  o.host.c_str(), server.port(), o.shards, o.workers, o.max_frame);
      std::fflush(stdout);
    }
    pthread_sigmask(SIG_UNBLOCK, &stop_set, nullptr);  // a signal that came early is delivered now
    while (server.running()) {
      siginfo_t info;
      const timespec tick{0, 100 * 1000 * 1000};
      const int sig = sigtimedwait(&resize_set, &info, &tick);
      if (sig < 0 || !server.running()) continue;
      try {
        const unsigned n = server.shards();
        if (sig == SIGUSR1 && n < 254) server.set_shards(n + 1);
        if (sig == SIGUSR2 && n > 1) server.set_shards(n - 1);
        if (sig == SIGHUP) server.rebalance();
        if (!quiet) {
          std::printf("esockets-chat: %s: %u -> %u shards\n",
                      sig == SIGUSR1 ? "SIGUSR1" : sig == SIGUSR2 ? "SIGUSR2" : "SIGHUP", n,
                      server.shards());
          std::fflush(stdout);
        }
      } catch (const std::logic_error&) {
        // The server began stopping meanwhile.
      }
    }
    server.wait();
    pthread_sigmask(SIG_BLOCK, &stop_set, nullptr);
    g_server.store(nullptr);
    const esockets::Stats st = server.stats();
    const int sig = g_signal;
    std::printf("esockets-chat: %s: %llu connections, %llu messages in, %llu messages out, %zu rooms left\n",
                sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "stopped",
                static_cast<unsigned long long>(st.total.accepts),
                static_cast<unsigned long long>(st.total.messages_in),
                static_cast<unsigned long long>(st.total.messages_out), handler.rooms());
    std::fflush(stdout);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "esockets-chat: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "esockets-chat: cannot start: %s\n", e.what());
    return 1;
  }
  return 0;
}

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

#include <cstdio>
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
#include "server_cli.hpp"

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
    "  --takeover-socket PATH  offer a takeover on this Unix socket: a new process started\n"
    "                     with --take-over PATH gets the listeners and every client with its\n"
    "                     rooms; this one then exits 0\n"
    "  --take-over PATH   take over from the server offering PATH instead of binding\n"
    "  -q, --quiet        do not print the listening line\n"
    "  -h, --help         this text\n"
    "SIGINT/SIGTERM stop it gracefully (request_stop from the signal handler) and print a\n"
    "summary. SIGUSR1 adds a shard, SIGUSR2 retires one (never below 1), SIGHUP rebalances:\n"
    "subscribers keep every message, in order, while shards change. Exit status: 0 after a\n"
    "clean stop, 2 for a bad flag, 1 if the server cannot start.\n";

constexpr std::size_t kMaxRoomName = 200;
constexpr std::size_t kMaxRoomsPerConnection = 1024;

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

  // Takeover (--takeover-socket / --take-over): a connection's rooms go with it, one per line;
  // the new process joins them again before its first message.
  std::string on_client_takeover(esockets::Connection& conn) override {
    std::string out;
    if (const auto* session = static_cast<const Session*>(conn.user_data())) {
      for (const std::string& room : session->rooms) out.append(room).append("\n");
    }
    return out;
  }
  bool on_client_restore(esockets::Connection& conn, std::string_view state) override {
    auto* session = new Session;
    conn.set_user_data(session);  // on_client_disconnect frees it, also after a refusal
    while (!state.empty()) {
      const std::size_t nl = state.find('\n');
      const std::string_view room = state.substr(0, nl);
      state.remove_prefix(nl == std::string_view::npos ? state.size() : nl + 1);
      if (!valid_room(room) || session->rooms.size() >= kMaxRoomsPerConnection) return false;
      join(conn, *session, room);
    }
    return true;
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
    join(conn, session, room);
    // After the add: whoever sees this line is reached by every PUB read after it.
    reply(conn, "OK SUB " + std::string(room));
  }

  void join(esockets::Connection& conn, Session& session, std::string_view room) {
    {
      std::unique_lock lk(mu_);
      auto& slot = rooms_[std::string(room)];
      if (!slot) slot = std::make_shared<Room>(conn.server());
      slot->group.add(conn.id());
      ++slot->members;
    }
    session.rooms.emplace_back(room);
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

}  // namespace

int main(int argc, char** argv) {
  esockets::ServerOptions o;
  o.framing = esockets::Framing::line;
  o.max_frame = 65536;
  esockets::tools::ServerCli cli("esockets-chat", kUsage);
  cli.add_server_flags(o, {.max_connections = false, .min_max_frame = 16});
  cli.parse(argc, argv);
  const bool quiet = cli.quiet();

  // Engine threads inherit a mask without the stop signals, so their handler (request_stop)
  // runs on the main thread.
  esockets::tools::StopSignals stop;
  // The resize signals are taken by the main thread with sigtimedwait (set_shards blocks, so it
  // cannot run in a signal handler); every thread inherits them blocked.
  sigset_t resize_set;
  sigemptyset(&resize_set);
  sigaddset(&resize_set, SIGUSR1);
  sigaddset(&resize_set, SIGUSR2);
  sigaddset(&resize_set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &resize_set, nullptr);

  ChatHandler handler;
  return cli.run([&] {
    esockets::Server server(handler, o);
    server.start();
    stop.arm(server);
    cli.print_listening(server,
                        "shards=" + std::to_string(o.shards) + " workers=" + std::to_string(o.workers) +
                            " max-frame=" + std::to_string(o.max_frame));
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
    stop.disarm();
    const esockets::Stats st = server.stats();
    std::printf("esockets-chat: %s: %llu connections, %llu messages in, %llu messages out, %zu rooms left\n",
                stop.name(), static_cast<unsigned long long>(st.total.accepts),
                static_cast<unsigned long long>(st.total.messages_in),
                static_cast<unsigned long long>(st.total.messages_out), handler.rooms());
    std::fflush(stdout);
  });
}

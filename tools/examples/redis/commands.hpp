// esockets-redis — command dispatch: the command table, redis's arity and context rules, and
// the state every command sees.
// Thread: execute() runs on the calling connection's handler thread; Context is shared by all
// of them (its members are thread-safe or immutable).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "esockets/connection.hpp"
#include "keyspace.hpp"
#include "pubsub.hpp"
#include "resp_decoder.hpp"

namespace esockets::redis {

/// What the server-wide commands need; built once in main.
struct Context {
  Keyspace& keys;
  PubSub& pubsub;
  RespLimits limits;
  std::string host;
  unsigned workers = 0;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

/// Per-connection state (Connection::emplace_state).
struct ClientState {
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  std::unordered_set<std::string, Hash, std::equal_to<>> channels;  // SUBSCRIBEd
  std::vector<std::string_view> argv;  // the current request's arguments (reused)
  std::string scratch;                 // unescaped inline arguments (reused)
  bool closing = false;                // QUIT: ignore whatever else was pipelined
};

/// One request being executed.
struct Request {
  Context& ctx;
  Connection& conn;
  ClientState& client;
  std::span<const std::string_view> argv;  // argv[0] is the command name as sent
  std::string& out;                        // replies are appended here
  bool close_after = false;                // QUIT
};

/// Runs one request (unknown command, arity and subscribed-context errors included).
void execute(Request& req);

/// The commands (for COMMAND COUNT / INFO / LIST).
struct CommandSpec {
  const char* name;  // lowercase; "config|get" for a subcommand
  int arity;         // redis's convention: n exact, -n at least n
  void (*run)(Request&);
  bool pubsub_ok;    // allowed in subscribed mode (RESP2)
  int first_key, last_key, step;
  std::span<const CommandSpec> subcommands;
};
std::span<const CommandSpec> command_table();

// Implementations, by family (commands_*.cpp).
void cmd_get(Request&);
void cmd_set(Request&);
void cmd_mget(Request&);
void cmd_mset(Request&);
void cmd_del(Request&);
void cmd_exists(Request&);
void cmd_incr(Request&);
void cmd_decr(Request&);
void cmd_incrby(Request&);
void cmd_decrby(Request&);
void cmd_expire(Request&);
void cmd_pexpire(Request&);
void cmd_ttl(Request&);
void cmd_pttl(Request&);
void cmd_persist(Request&);
void cmd_dbsize(Request&);
void cmd_flushall(Request&);

void cmd_ping(Request&);
void cmd_echo(Request&);
void cmd_select(Request&);
void cmd_quit(Request&);
void cmd_info(Request&);
void cmd_config_get(Request&);
void cmd_config_resetstat(Request&);
void cmd_config_help(Request&);
void cmd_command(Request&);
void cmd_command_count(Request&);
void cmd_command_docs(Request&);
void cmd_command_info(Request&);
void cmd_command_list(Request&);
void cmd_command_help(Request&);

void cmd_publish(Request&);
void cmd_subscribe(Request&);
void cmd_unsubscribe(Request&);
/// Drops every subscription of a connection (on disconnect).
void unsubscribe_all(Context& ctx, ConnectionId id, ClientState& client);

/// Case-insensitive ASCII equality.
bool iequals(std::string_view a, std::string_view b);
/// "value is not an integer or out of range" unless s is an int64 (redis's string2ll).
bool int_arg_or_reply(Request& req, std::string_view s, std::int64_t& out);

}  // namespace esockets::redis

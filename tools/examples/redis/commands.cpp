// Command table and dispatch, with redis-server 7.0's error texts (server.c processCommand).
#include "commands.hpp"

#include <array>
#include <cctype>
#include <cstring>
#include <vector>

#include "resp_writer.hpp"

namespace esockets::redis {
namespace {

constexpr CommandSpec kConfigSub[] = {
    {"config|get", -3, cmd_config_get, false, 0, 0, 0, {}},
    {"config|resetstat", 2, cmd_config_resetstat, false, 0, 0, 0, {}},
    {"config|help", 2, cmd_config_help, false, 0, 0, 0, {}},
};

constexpr CommandSpec kCommandSub[] = {
    {"command|count", 2, cmd_command_count, false, 0, 0, 0, {}},
    {"command|docs", -2, cmd_command_docs, false, 0, 0, 0, {}},
    {"command|info", -2, cmd_command_info, false, 0, 0, 0, {}},
    {"command|list", -2, cmd_command_list, false, 0, 0, 0, {}},
    {"command|help", 2, cmd_command_help, false, 0, 0, 0, {}},
};

constexpr CommandSpec kCommands[] = {
    {"ping", -1, cmd_ping, true, 0, 0, 0, {}},
    {"echo", 2, cmd_echo, false, 0, 0, 0, {}},
    {"get", 2, cmd_get, false, 1, 1, 1, {}},
    {"set", -3, cmd_set, false, 1, 1, 1, {}},
    {"mget", -2, cmd_mget, false, 1, -1, 1, {}},
    {"mset", -3, cmd_mset, false, 1, -1, 2, {}},
    {"del", -2, cmd_del, false, 1, -1, 1, {}},
    {"exists", -2, cmd_exists, false, 1, -1, 1, {}},
    {"incr", 2, cmd_incr, false, 1, 1, 1, {}},
    {"decr", 2, cmd_decr, false, 1, 1, 1, {}},
    {"incrby", 3, cmd_incrby, false, 1, 1, 1, {}},
    {"decrby", 3, cmd_decrby, false, 1, 1, 1, {}},
    {"expire", -3, cmd_expire, false, 1, 1, 1, {}},
    {"pexpire", -3, cmd_pexpire, false, 1, 1, 1, {}},
    {"ttl", 2, cmd_ttl, false, 1, 1, 1, {}},
    {"pttl", 2, cmd_pttl, false, 1, 1, 1, {}},
    {"persist", 2, cmd_persist, false, 1, 1, 1, {}},
    {"dbsize", 1, cmd_dbsize, false, 0, 0, 0, {}},
    {"flushall", -1, cmd_flushall, false, 0, 0, 0, {}},
    {"flushdb", -1, cmd_flushall, false, 0, 0, 0, {}},
    {"select", 2, cmd_select, false, 0, 0, 0, {}},
    {"quit", -1, cmd_quit, true, 0, 0, 0, {}},
    {"info", -1, cmd_info, false, 0, 0, 0, {}},
    {"config", -2, nullptr, false, 0, 0, 0, kConfigSub},
    {"command", -1, cmd_command, false, 0, 0, 0, kCommandSub},
    {"publish", 3, cmd_publish, false, 0, 0, 0, {}},
    {"subscribe", -2, cmd_subscribe, true, 0, 0, 0, {}},
    {"unsubscribe", -1, cmd_unsubscribe, true, 0, 0, 0, {}},
};

// Lowercases `name` into buf; empty when it is too long to be any command.
std::string_view lowered(std::string_view name, std::array<char, 32>& buf) {
  if (name.size() >= buf.size()) return {};
  for (std::size_t i = 0; i < name.size(); ++i) {
    buf[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(name[i])));
  }
  return {buf.data(), name.size()};
}

const CommandSpec* find_in(std::span<const CommandSpec> table, std::string_view prefix,
                           std::string_view name) {
  std::array<char, 32> buf;
  const std::string_view low = lowered(name, buf);
  if (low.empty()) return nullptr;
  for (const CommandSpec& c : table) {
    std::string_view full = c.name;
    if (!prefix.empty()) {
      if (full.size() <= prefix.size() + 1) continue;
      full.remove_prefix(prefix.size() + 1);
    }
    if (full == low) return &c;
  }
  return nullptr;
}

const CommandSpec* find_command(std::string_view name) {
  // Commands bucketed by name length: a lookup compares the lowered name with the two or
  // three commands of its length (cheaper than hashing it).
  static const auto by_length = [] {
    std::array<std::vector<const CommandSpec*>, 32> t;
    for (const CommandSpec& c : kCommands) t[std::string_view(c.name).size()].push_back(&c);
    return t;
  }();
  std::array<char, 32> buf;
  const std::string_view low = lowered(name, buf);
  if (low.empty()) return nullptr;
  for (const CommandSpec* c : by_length[low.size()]) {
    if (std::memcmp(c->name, low.data(), low.size()) == 0) return c;
  }
  return nullptr;
}

void unknown_command(Request& req) {
  std::string args;
  for (std::size_t i = 1; i < req.argv.size() && args.size() < 128; ++i) {
    const std::size_t room = 128 - args.size();  // redis: '%.*s' with 128 - sdslen(args)
    args += '\'';
    args += req.argv[i].substr(0, room);
    args += "' ";
  }
  std::string msg = "ERR unknown command '";
  msg += req.argv[0].substr(0, 128);
  msg += "', with args beginning with: ";
  msg += args;
  resp::error(req.out, msg);
}

}  // namespace

std::span<const CommandSpec> command_table() { return kCommands; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

bool int_arg_or_reply(Request& req, std::string_view s, std::int64_t& out) {
  if (parse_int64(s, out)) return true;
  resp::error(req.out, "ERR value is not an integer or out of range");
  return false;
}

void execute(Request& req) {
  const CommandSpec* cmd = find_command(req.argv[0]);
  if (cmd == nullptr) return unknown_command(req);
  if (!cmd->subcommands.empty() && req.argv.size() >= 2) {
    const CommandSpec* sub = find_in(cmd->subcommands, cmd->name, req.argv[1]);
    if (sub == nullptr) {
      std::string upper = cmd->name;
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      std::string msg = "ERR unknown subcommand '";
      msg += req.argv[1].substr(0, 128);
      msg += "'. Try " + upper + " HELP.";
      return resp::error(req.out, msg);
    }
    cmd = sub;
  }
  const auto argc = static_cast<int>(req.argv.size());
  if ((cmd->arity > 0 && cmd->arity != argc) || argc < -cmd->arity) {
    return resp::error(req.out, std::string("ERR wrong number of arguments for '") + cmd->name +
                                    "' command");
  }
  if (!req.client.channels.empty() && !cmd->pubsub_ok) {
    return resp::error(req.out, std::string("ERR Can't execute '") + cmd->name +
                                    "': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
                                    "RESET are allowed in this context");
  }
  cmd->run(req);
}

}  // namespace esockets::redis

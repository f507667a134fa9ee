// Connection and server commands: PING ECHO SELECT QUIT INFO CONFIG COMMAND.
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

#include "commands.hpp"
#include "esockets/server.hpp"
#include "resp_writer.hpp"

namespace esockets::redis {
namespace {

// redis's stringmatchlen for '*' and '?' (and a literal everything else), case-insensitive.
bool glob_match(std::string_view pat, std::string_view s) {
  std::size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
  auto low = [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); };
  while (i < s.size()) {
    if (p < pat.size() && (pat[p] == '?' || low(pat[p]) == low(s[i]))) {
      ++p;
      ++i;
    } else if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = i;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

std::size_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

void line(std::string& s, const char* key, std::uint64_t v) {
  s += key;
  s += ':';
  s += std::to_string(v);
  s += "\r\n";
}

void line(std::string& s, const char* key, std::string_view v) {
  s += key;
  s += ':';
  s += v;
  s += "\r\n";
}

bool wanted(std::span<const std::string_view> args, std::string_view section) {
  if (args.empty()) return true;
  for (std::string_view a : args) {
    if (iequals(a, "all") || iequals(a, "everything") || iequals(a, "default") ||
        iequals(a, section)) {
      return true;
    }
  }
  return false;
}

void command_entry(std::string& out, const CommandSpec& c) {
  resp::array(out, 10);
  resp::bulk(out, c.name);
  resp::integer(out, c.arity);
  resp::array(out, 0);  // flags
  resp::integer(out, c.first_key);
  resp::integer(out, c.last_key);
  resp::integer(out, c.step);
  resp::array(out, 0);  // ACL categories
  resp::array(out, 0);  // tips
  resp::array(out, 0);  // key specs
  resp::array(out, c.subcommands.size());
  for (const CommandSpec& s : c.subcommands) command_entry(out, s);
}

const CommandSpec* lookup(std::string_view name) {
  for (const CommandSpec& c : command_table()) {
    if (iequals(c.name, name)) return &c;
  }
  return nullptr;
}

}  // namespace

void cmd_ping(Request& req) {
  if (req.argv.size() > 2) {
    return resp::error(req.out, "ERR wrong number of arguments for 'ping' command");
  }
  if (!req.client.channels.empty()) {  // RESP2 subscribed mode: ["pong", message]
    resp::array(req.out, 2);
    resp::bulk(req.out, "pong");
    resp::bulk(req.out, req.argv.size() == 2 ? req.argv[1] : std::string_view());
  } else if (req.argv.size() == 2) {
    resp::bulk(req.out, req.argv[1]);
  } else {
    req.out += "+PONG\r\n";
  }
}

void cmd_echo(Request& req) { resp::bulk(req.out, req.argv[1]); }

void cmd_select(Request& req) {
  std::int64_t db = 0;
  if (!int_arg_or_reply(req, req.argv[1], db)) return;
  if (db < INT32_MIN || db > INT32_MAX) {
    return resp::error(req.out,
                       "ERR value is out of range, value must between -2147483648 and 2147483647");
  }
  // One database (redis has 16 by default): only 0 is in range.
  if (db != 0) return resp::error(req.out, "ERR DB index is out of range");
  resp::ok(req.out);
}

void cmd_quit(Request& req) {
  resp::ok(req.out);
  req.close_after = true;
}

void cmd_info(Request& req) {
  const auto args = req.argv.subspan(1);
  Server& server = req.conn.server();
  const Stats st = server.stats();
  std::string s;
  if (wanted(args, "server")) {
    utsname u{};
    uname(&u);
    const auto up = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::steady_clock::now() - req.ctx.started)
                        .count();
    s += "# Server\r\n";
    line(s, "redis_version", "7.0.15");
    line(s, "redis_git_sha1", "00000000");
    line(s, "redis_git_dirty", 0);
    line(s, "redis_mode", "standalone");
    line(s, "server_name", "esockets-redis");
    line(s, "os", std::string(u.sysname) + " " + u.release + " " + u.machine);
    line(s, "arch_bits", sizeof(void*) * 8);
    line(s, "multiplexing_api", "epoll");
    line(s, "process_id", static_cast<std::uint64_t>(getpid()));
    line(s, "tcp_port", server.port());
    line(s, "uptime_in_seconds", static_cast<std::uint64_t>(up));
    line(s, "uptime_in_days", static_cast<std::uint64_t>(up / 86400));
    line(s, "hz", 10);
    line(s, "io_threads_active", 0);
    line(s, "esockets_shards", server.shards());
    line(s, "esockets_workers", req.ctx.workers);
    line(s, "esockets_keyspace_stripes", req.ctx.keys.stripes());
    line(s, "proto_max_request", req.ctx.limits.max_request);
    s += "\r\n";
  }
  if (wanted(args, "clients")) {
    s += "# Clients\r\n";
    line(s, "connected_clients", st.total.connections);
    line(s, "blocked_clients", 0);
    s += "\r\n";
  }
  if (wanted(args, "memory")) {
    const std::size_t rss = rss_bytes();
    s += "# Memory\r\n";
    line(s, "used_memory", rss);
    line(s, "used_memory_rss", rss);
    s += "\r\n";
  }
  if (wanted(args, "persistence")) {
    s += "# Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:0\r\naof_enabled:0\r\n\r\n";
  }
  if (wanted(args, "stats")) {
    s += "# Stats\r\n";
    line(s, "total_connections_received", st.total.accepts);
    line(s, "total_commands_processed", st.total.messages_in);
    line(s, "total_net_input_bytes", st.total.bytes_in);
    line(s, "total_net_output_bytes", st.total.bytes_out);
    line(s, "rejected_connections", st.total.refused);
    line(s, "pubsub_channels", req.ctx.pubsub.channels());
    line(s, "pubsub_patterns", 0);
    s += "\r\n";
  }
  if (wanted(args, "replication")) {
    s += "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n";
  }
  if (wanted(args, "esockets")) {
    s += "# Esockets\r\n";
    for (const ShardStats& sh : st.shards) {
      char buf[320];
      std::snprintf(buf, sizeof buf,
                    "shard%u:connections=%llu,accepts=%llu,messages_in=%llu,messages_out=%llu,"
                    "bytes_in=%llu,bytes_out=%llu,busy_ratio=%.3f,wakeups=%llu,warnings=%llu\r\n",
                    sh.shard, static_cast<unsigned long long>(sh.connections),
                    static_cast<unsigned long long>(sh.accepts),
                    static_cast<unsigned long long>(sh.messages_in),
                    static_cast<unsigned long long>(sh.messages_out),
                    static_cast<unsigned long long>(sh.bytes_in),
                    static_cast<unsigned long long>(sh.bytes_out), sh.busy_ratio,
                    static_cast<unsigned long long>(sh.wakeups),
                    static_cast<unsigned long long>(sh.warnings));
      s += buf;
    }
    // Which shard serves this very connection (its birth shard): lets clients and tests see
    // where they landed.
    line(s, "client_shard", req.conn.id().shard());
    s += "\r\n";
  }
  if (wanted(args, "keyspace")) {
    s += "# Keyspace\r\n";
    const std::size_t keys = req.ctx.keys.size();
    if (keys > 0) {
      s += "db0:keys=" + std::to_string(keys) + ",expires=" +
           std::to_string(req.ctx.keys.expires()) + ",avg_ttl=0\r\n";
    }
    s += "\r\n";
  }
  if (s.size() >= 2) s.resize(s.size() - 2);  // no blank line after the last section
  resp::bulk(req.out, s);
}

void cmd_config_get(Request& req) {
  const std::string max_request = std::to_string(req.ctx.limits.max_request);
  const std::string port = std::to_string(req.conn.server().port());
  const std::pair<const char*, std::string_view> params[] = {
      {"save", ""},
      {"appendonly", "no"},
      {"databases", "1"},
      {"maxmemory", "0"},
      {"maxclients", "0"},
      {"io-threads", "1"},
      {"port", port},
      {"bind", req.ctx.host},
      {"proto-max-bulk-len", max_request},
  };
  // As redis 7.0: a pattern without glob characters names one parameter and the reply
  // repeats it as given; a glob pattern lists the matching parameters by their own names.
  std::string body;
  std::size_t n = 0;
  std::vector<bool> done(std::size(params), false);
  for (std::size_t i = 2; i < req.argv.size(); ++i) {
    const std::string_view pat = req.argv[i];
    const bool glob = pat.find_first_of("*?[") != std::string_view::npos;
    for (std::size_t k = 0; k < std::size(params); ++k) {
      if (done[k] || !(glob ? glob_match(pat, params[k].first) : iequals(pat, params[k].first))) {
        continue;
      }
      done[k] = true;
      resp::bulk(body, glob ? std::string_view(params[k].first) : pat);
      resp::bulk(body, params[k].second);
      n += 2;
    }
  }
  resp::array(req.out, n);
  req.out += body;
}

void cmd_config_resetstat(Request& req) { resp::ok(req.out); }

void cmd_config_help(Request& req) {
  resp::array(req.out, 2);
  req.out += "+CONFIG GET <pattern>\r\n+CONFIG RESETSTAT\r\n";
}

void cmd_command(Request& req) {
  const auto table = command_table();
  resp::array(req.out, table.size());
  for (const CommandSpec& c : table) command_entry(req.out, c);
}

void cmd_command_count(Request& req) {
  resp::integer(req.out, static_cast<std::int64_t>(command_table().size()));
}

// redis-cli 7 asks COMMAND DOCS at start for its hints; an empty reply makes it use its own.
void cmd_command_docs(Request& req) { resp::array(req.out, 0); }

void cmd_command_info(Request& req) {
  resp::array(req.out, req.argv.size() - 2);
  for (std::size_t i = 2; i < req.argv.size(); ++i) {
    const CommandSpec* c = lookup(req.argv[i]);
    if (c == nullptr) {
      resp::null_bulk(req.out);
    } else {
      command_entry(req.out, *c);
    }
  }
}

void cmd_command_list(Request& req) {
  const auto table = command_table();
  resp::array(req.out, table.size());
  for (const CommandSpec& c : table) resp::bulk(req.out, c.name);
}

void cmd_command_help(Request& req) {
  resp::array(req.out, 4);
  req.out +=
      "+COMMAND\r\n+COMMAND COUNT\r\n+COMMAND INFO [<command-name> ...]\r\n+COMMAND LIST\r\n";
}

}  // namespace esockets::redis

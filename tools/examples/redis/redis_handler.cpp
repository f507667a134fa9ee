// RedisHandler: see redis_handler.hpp.
#include "redis_handler.hpp"

#include <charconv>
#include <cstdio>
#include <string>
#include <system_error>

#include "resp_writer.hpp"

namespace esockets::redis {

bool RedisHandler::on_client_connect(Connection& conn) {
  conn.emplace_state<ClientState>();
  return true;
}

void RedisHandler::on_message_recv(Connection& conn, Bytes message) {
  ClientState* client = conn.state<ClientState>();
  if (client == nullptr || client->closing) return;
  if (!parse_request(message, client->argv, client->scratch)) return;  // empty: ignored
  // One reply buffer per handler thread, reused: no allocation per reply once warm.
  thread_local std::string out;
  out.clear();
  Request req{ctx_, conn, *client, client->argv, out};
  execute(req);
  if (!out.empty()) conn.send(out);
  if (req.close_after) {
    client->closing = true;
    conn.close();
  }
  if (out.capacity() > (std::size_t{1} << 20)) std::string().swap(out);  // after a big GET
  if (client->scratch.capacity() > (std::size_t{64} << 10)) std::string().swap(client->scratch);
}

void RedisHandler::on_framing_error(Connection& conn, std::string_view reason) {
  std::string out;
  resp::error(out, "ERR Protocol error: " + std::string(reason));
  conn.send(out);
}

void RedisHandler::on_client_disconnect(Connection& conn, CloseReason) {
  if (ClientState* client = conn.state<ClientState>()) {
    unsubscribe_all(ctx_, conn.id(), *client);
  }
}

std::string RedisHandler::on_client_takeover(Connection& conn) {
  std::string out;
  if (const ClientState* client = conn.state<ClientState>()) {
    for (const std::string& ch : client->channels) {
      out += std::to_string(ch.size());
      out += ':';
      out += ch;
    }
  }
  return out;
}

bool RedisHandler::on_client_restore(Connection& conn, std::string_view state) {
  ClientState& client = conn.emplace_state<ClientState>();
  while (!state.empty()) {
    const std::size_t colon = state.find(':');
    std::size_t len = 0;
    const auto [end, ec] = std::from_chars(state.data(), state.data() + (colon == std::string_view::npos ? 0 : colon), len);
    if (colon == std::string_view::npos || ec != std::errc() || end != state.data() + colon ||
        len > state.size() - colon - 1) {
      return false;  // not what on_client_takeover wrote: refuse rather than guess
    }
    const std::string_view ch = state.substr(colon + 1, len);
    state.remove_prefix(colon + 1 + len);
    if (client.channels.emplace(ch).second) ctx_.pubsub.subscribe(ch, conn.id());
  }
  return true;
}

void RedisHandler::on_warning(std::string_view message) {
  std::fprintf(stderr, "esockets-redis: warning: %.*s\n", static_cast<int>(message.size()),
               message.data());
}

}  // namespace esockets::redis

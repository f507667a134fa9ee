// PUBLISH, SUBSCRIBE, UNSUBSCRIBE (RESP2 replies as redis-server 7.0's pubsub.c).
#include "commands.hpp"
#include "esockets/server.hpp"
#include "resp_writer.hpp"

namespace esockets::redis {
namespace {

void confirmation(std::string& out, std::string_view kind, std::string_view channel, bool nil,
                  std::size_t count) {
  resp::array(out, 3);
  resp::bulk(out, kind);
  if (nil) {
    resp::null_bulk(out);
  } else {
    resp::bulk(out, channel);
  }
  resp::integer(out, static_cast<std::int64_t>(count));
}

}  // namespace

void cmd_publish(Request& req) {
  thread_local std::string payload;
  payload.clear();
  encode_message(payload, req.argv[1], req.argv[2]);
  const std::size_t n = req.ctx.pubsub.publish(req.conn.server(), req.argv[1], payload);
  if (payload.capacity() > (1u << 20)) std::string().swap(payload);
  resp::integer(req.out, static_cast<std::int64_t>(n));
}

void cmd_subscribe(Request& req) {
  for (std::size_t i = 1; i < req.argv.size(); ++i) {
    const std::string_view ch = req.argv[i];
    if (req.client.channels.find(ch) == req.client.channels.end()) {
      req.client.channels.emplace(ch);
      // The confirmation leaves under the channel's lock, before any message published to
      // the channel after this subscription (see PubSub::subscribe).
      req.ctx.pubsub.subscribe(ch, req.conn.id(), [&] {
        confirmation(req.out, "subscribe", ch, false, req.client.channels.size());
        req.conn.send(req.out);
        req.out.clear();
      });
    } else {
      confirmation(req.out, "subscribe", ch, false, req.client.channels.size());
    }
  }
}

void cmd_unsubscribe(Request& req) {
  auto drop = [&](std::string_view ch) {
    auto it = req.client.channels.find(ch);
    if (it != req.client.channels.end()) {
      req.ctx.pubsub.unsubscribe(ch, req.conn.id());
      req.client.channels.erase(it);
    }
    confirmation(req.out, "unsubscribe", ch, false, req.client.channels.size());
  };
  if (req.argv.size() > 1) {
    for (std::size_t i = 1; i < req.argv.size(); ++i) drop(req.argv[i]);
    return;
  }
  if (req.client.channels.empty()) {
    confirmation(req.out, "unsubscribe", {}, true, 0);
    return;
  }
  while (!req.client.channels.empty()) {
    const std::string ch = *req.client.channels.begin();
    drop(ch);
  }
}

void unsubscribe_all(Context& ctx, ConnectionId id, ClientState& client) {
  for (const std::string& ch : client.channels) ctx.pubsub.unsubscribe(ch, id);
  client.channels.clear();
}

}  // namespace esockets::redis

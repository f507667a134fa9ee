// esockets-redis — RedisHandler: the esockets::Handler that runs RESP requests.
// Thread: one instance serves every connection; its callbacks run concurrently on the shard
// (workers == 0) or worker threads and touch only the connection's own state and the
// thread-safe Context.
#pragma once

#include "commands.hpp"
#include "esockets/handler.hpp"

namespace esockets::redis {

class RedisHandler : public Handler {
 public:
  explicit RedisHandler(Context& ctx) : ctx_(ctx) {}

  bool on_client_connect(Connection& conn) override;
  /// One request (the decoder delivers exactly one): parse, execute, one send of the reply.
  void on_message_recv(Connection& conn, Bytes message) override;
  /// Bad RESP: "-ERR Protocol error: <reason>", then the engine closes this connection only.
  void on_framing_error(Connection& conn, std::string_view reason) override;
  void on_client_disconnect(Connection& conn, CloseReason reason) override;
  /// Takeover (--takeover-socket / --take-over): a client's SUBSCRIBEd channels go with it,
  /// as "<length>:<name>" for each; the new process subscribes it again.
  std::string on_client_takeover(Connection& conn) override;
  bool on_client_restore(Connection& conn, std::string_view state) override;
  void on_warning(std::string_view message) override;

 private:
  Context& ctx_;
};

}  // namespace esockets::redis

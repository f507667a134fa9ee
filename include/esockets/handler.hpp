// esockets — Handler: the ESocketS callbacks. Subclass it and override what you need.
//
// Threads: with options.workers == 0 every connection callback runs on the connection's shard
// thread; with workers > 0 it runs on the worker the connection is bound to. For one
// connection the callbacks never overlap and come in order: on_client_connect, then
// on_message_recv in arrival order, then exactly one on_client_disconnect. Callbacks of
// different connections may run concurrently on different threads. on_start,
// on_server_shutting_down and on_server_shut_down run on the thread calling start()/stop().
// on_warning runs on the engine thread that noticed the problem, possibly concurrently.
// A callback that throws closes its connection with CloseReason::handler_exception.
#pragma once

#include <string>
#include <string_view>

#include "esockets/connection.hpp"
#include "esockets/types.hpp"
#include "esockets/warning.hpp"

namespace esockets {

class Server;

/// The callbacks of a Server, to override (each default does nothing, and on_client_connect
/// accepts). The handler must outlive the Server; see the top of this file for the threads.
class Handler {
 public:
  virtual ~Handler() = default;

  /// The listeners are bound (server.port() is valid) and serving is about to begin.
  virtual void on_start(Server& server) { (void)server; }
  /// A client connected. Return false to refuse it: it is closed and
  /// on_client_disconnect(refused) follows; no message of it reaches on_message_recv.
  virtual bool on_client_connect(Connection& conn) {
    (void)conn;
    return true;
  }
  /// One message (a read in raw framing, a frame otherwise). The bytes are valid only
  /// during the call.
  virtual void on_message_recv(Connection& conn, Bytes message) {
    (void)conn;
    (void)message;
  }
  /// The client's input broke the framing (a decoder said malformed, a line or frame was over
  /// max_frame): no further message of it will come. Sends made here (an error reply) are
  /// flushed, then the connection closes with CloseReason::framing_error. `reason` is the
  /// decoder's text, or "line_too_long" / "frame_too_long".
  virtual void on_framing_error(Connection& conn, std::string_view reason) {
    (void)conn;
    (void)reason;
  }
  /// The connection ended; called exactly once per on_client_connect.
  virtual void on_client_disconnect(Connection& conn, CloseReason reason) {
    (void)conn;
    (void)reason;
  }
  /// Takeover, old process: `conn` is about to be handed to the new process (see
  /// ServerOptions::takeover_socket). Return the connection's own state as bytes; the new
  /// process gets them in on_client_restore. Called once, on the thread that runs this
  /// connection's handlers, after every message it was given was handled and while no other
  /// callback of it runs; on_client_disconnect(taken_over) follows. The default saves nothing.
  virtual std::string on_client_takeover(Connection& conn) {
    (void)conn;
    return {};
  }
  /// Takeover, new process: a connection handed over by the old process, in place of
  /// on_client_connect; `state` is what on_client_takeover returned there. Its unread input
  /// follows as messages. Return false to close it (on_client_disconnect(refused) follows).
  /// The default calls on_client_connect.
  virtual bool on_client_restore(Connection& conn, std::string_view state) {
    (void)state;
    return on_client_connect(conn);
  }
  /// Queued output crossed options.output_high_watermark: stop producing for this client.
  virtual void on_output_high(Connection& conn) { (void)conn; }
  /// Queued output fell below options.output_low_watermark after on_output_high.
  virtual void on_output_low(Connection& conn) { (void)conn; }
  /// stop() began: listeners still open; sends made here are flushed before connections close.
  virtual void on_server_shutting_down(Server& server) { (void)server; }
  /// Every connection is closed and every engine thread has ended.
  virtual void on_server_shut_down(Server& server) { (void)server; }
  /// Something went wrong that is not one connection's business (or is, and is worth a line),
  /// as a record: severity, a stable code, the shard or worker, the connection, errno, text.
  /// Rate-limited per thread (a WarningCode::suppressed record says how many were dropped);
  /// every warning is counted in stats() (warnings, and warnings_by_code per code). The
  /// default passes the text to on_warning(std::string_view).
  virtual void on_warning(const Warning& warning) { on_warning(warning.text); }
  /// The text of each warning (the seed's callback); called by the default of the above.
  virtual void on_warning(std::string_view message) { (void)message; }
};

}  // namespace esockets

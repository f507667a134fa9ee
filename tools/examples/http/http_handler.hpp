// esockets-http — HttpHandler: answers the requests RequestDecoder frames.
//
// Routes: GET|HEAD /plaintext, /json (TechEmpower rules: Server, Date, Content-Length),
// GET|HEAD /stats (the engine's counters as JSON), POST /echo (the body back); a known path
// with another method gets 405 with Allow, anything else 404. Keep-alive per RFC 9112 9.3:
// HTTP/1.1 unless "Connection: close", HTTP/1.0 only with "Connection: keep-alive"; after a
// response that closes, later pipelined requests on that connection are not answered.
//
// Thread: callbacks run on the engine's handler threads; the handler holds no mutable state
// (per-thread buffers are thread_local, per-connection state is the connection's user_data).
#pragma once

#include <string>
#include <string_view>

#include "esockets/esockets.hpp"
#include "http_request.hpp"

namespace esockets::http {

/// The status answered for a framing error: the leading number of a decoder reason ("413 ...")
/// or 413 for the engine's "frame_too_long"; 400 otherwise.
int status_for_reason(std::string_view reason);

/// The path a request target routes on: the origin-form path without its query, or the path
/// of an absolute-form target ("http://host/x?y" -> "/x").
std::string_view route_path(std::string_view target);

/// The engine's stats as one JSON object (totals, close reasons, per shard).
std::string stats_json(const Stats& stats);

class HttpHandler : public Handler {
 public:
  /// `limits` must be the decoder's; `log_warnings` prints engine warnings to stderr.
  HttpHandler(Limits limits, bool log_warnings) : limits_(limits), log_warnings_(log_warnings) {}

  void on_message_recv(Connection& conn, Bytes message) override;
  void on_framing_error(Connection& conn, std::string_view reason) override;
  void on_warning(std::string_view message) override;

 private:
  Limits limits_;
  bool log_warnings_;
};

}  // namespace esockets::http

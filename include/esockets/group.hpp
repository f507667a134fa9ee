// esockets — Group: a set of connections that receive the same messages (a chat room, a
// pub/sub channel). Sending to a group is one multicast: the payload is copied once and shared.
// Thread: every method is safe from any thread, including handlers; members are guarded by a
// mutex that is never held while the engine runs a callback.
#pragma once

#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "esockets/types.hpp"

namespace esockets {

class Server;

/// A set of connections that receive the same messages; one multicast per send. Thread: any.
class Group {
 public:
  /// The server must outlive the group.
  explicit Group(Server& server) : server_(server) {}
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  /// Adds a connection; false if it is already a member or not connected.
  bool add(ConnectionId id);
  /// Removes a connection; false if it was not a member.
  bool remove(ConnectionId id);
  /// True if `id` is a member (it may have closed since; size() and send() forget those).
  bool contains(ConnectionId id) const;
  /// Members still connected (closed ones are forgotten by this call).
  std::size_t size();
  /// A copy of the members still connected.
  std::vector<ConnectionId> members();

  /// Sends bytes to every member (Server::multicast). Members whose connection closed are
  /// forgotten first, so a group never needs on_client_disconnect bookkeeping.
  MulticastResult send(Bytes bytes);
  /// As send(), framed with the server's framing.
  MulticastResult send_frame(Bytes message);

 private:
  void prune_locked();
  MulticastResult send_impl(Bytes bytes, bool framed);

  Server& server_;
  mutable std::mutex mu_;
  std::vector<ConnectionId> ids_;
  std::unordered_map<ConnectionId, std::size_t> index_;  // id -> position in ids_
};

}  // namespace esockets

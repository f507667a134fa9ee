// esockets-redis — PubSub: the channel registry (channel -> subscribed connections).
//
// Striped like the keyspace: a channel lives in the stripe its hash picks, each stripe behind a
// std::shared_mutex. PUBLISH holds its stripe's lock shared while it snapshots the subscribers
// and issues one Server::multicast (one shared copy of the message for every subscriber, on
// any shard); SUBSCRIBE/UNSUBSCRIBE hold it exclusively. Because a publisher's connection runs
// on one handler thread and multicasts from one thread reach each connection in call order,
// every subscriber receives one publisher's messages in publish order, whatever shards they
// are on.
//
// Thread: every method is safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "esockets/server.hpp"
#include "esockets/types.hpp"

namespace esockets::redis {

class PubSub {
 public:
  explicit PubSub(std::size_t stripes = 64);
  ~PubSub();
  PubSub(const PubSub&) = delete;
  PubSub& operator=(const PubSub&) = delete;

  /// Adds `id` to `channel`; false if it was already there. `then`, if given, runs under the
  /// channel's lock after the change (a SUBSCRIBE sends its confirmation there, so that no
  /// message published after the subscription is queued ahead of it on the same thread).
  bool subscribe(std::string_view channel, ConnectionId id,
                 const std::function<void()>& then = nullptr);
  /// Removes `id` from `channel`; false if it was not there.
  bool unsubscribe(std::string_view channel, ConnectionId id);
  /// Sends `payload` (an already encoded RESP message) to every subscriber of `channel`;
  /// returns how many it was queued for.
  std::size_t publish(Server& server, std::string_view channel, Bytes payload);
  /// Channels with at least one subscriber.
  std::size_t channels() const;

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  // Subscribers of one channel: a dense array (what multicast takes) plus each id's place in
  // it, so that a removal is O(1).
  struct Channel {
    std::vector<ConnectionId> ids;
    std::unordered_map<ConnectionId, std::size_t> where;
  };
  struct alignas(64) Stripe {
    mutable std::shared_mutex mu;
    std::unordered_map<std::string, Channel, Hash, std::equal_to<>> channels;
  };
  Stripe& stripe_of(std::string_view channel);

  std::size_t count_;
  std::unique_ptr<Stripe[]> stripes_;
};

/// The RESP push of one message: *3 $7 message $<channel> $<payload>.
void encode_message(std::string& out, std::string_view channel, std::string_view payload);

}  // namespace esockets::redis

// PubSub: see pubsub.hpp.
#include "pubsub.hpp"

#include <mutex>

#include "resp_writer.hpp"

namespace esockets::redis {

PubSub::PubSub(std::size_t stripes)
    : count_(stripes == 0 ? 1 : stripes), stripes_(new Stripe[count_]) {}

PubSub::~PubSub() = default;

PubSub::Stripe& PubSub::stripe_of(std::string_view channel) {
  const std::uint64_t h = std::hash<std::string_view>{}(channel) * 0x9E3779B97F4A7C15ull;
  return stripes_[static_cast<std::size_t>(h >> 32) % count_];
}

bool PubSub::subscribe(std::string_view channel, ConnectionId id,
                       const std::function<void()>& then) {
  Stripe& s = stripe_of(channel);
  std::unique_lock lk(s.mu);
  auto it = s.channels.find(channel);
  if (it == s.channels.end()) it = s.channels.emplace(std::string(channel), Channel{}).first;
  Channel& ch = it->second;
  const bool added = ch.where.emplace(id, ch.ids.size()).second;
  if (added) ch.ids.push_back(id);
  if (then) then();
  return added;
}

bool PubSub::unsubscribe(std::string_view channel, ConnectionId id) {
  Stripe& s = stripe_of(channel);
  std::unique_lock lk(s.mu);
  auto it = s.channels.find(channel);
  if (it == s.channels.end()) return false;
  Channel& ch = it->second;
  auto w = ch.where.find(id);
  if (w == ch.where.end()) return false;
  const std::size_t at = w->second;
  ch.where.erase(w);
  if (at + 1 != ch.ids.size()) {
    ch.ids[at] = ch.ids.back();
    ch.where[ch.ids[at]] = at;
  }
  ch.ids.pop_back();
  if (ch.ids.empty()) s.channels.erase(it);
  return true;
}

std::size_t PubSub::publish(Server& server, std::string_view channel, Bytes payload) {
  Stripe& s = stripe_of(channel);
  std::shared_lock lk(s.mu);
  auto it = s.channels.find(channel);
  if (it == s.channels.end()) return 0;
  // Under the lock: a SUBSCRIBE that completed before this PUBLISH took the lock is included,
  // and its confirmation (sent under the exclusive lock) was queued before this message.
  const MulticastResult r = server.multicast(it->second.ids, payload);
  return r.ok;
}

std::size_t PubSub::channels() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < count_; ++i) {
    std::shared_lock lk(stripes_[i].mu);
    n += stripes_[i].channels.size();
  }
  return n;
}

void encode_message(std::string& out, std::string_view channel, std::string_view payload) {
  out += "*3\r\n$7\r\nmessage\r\n";
  resp::bulk(out, channel);
  resp::bulk(out, payload);
}

}  // namespace esockets::redis

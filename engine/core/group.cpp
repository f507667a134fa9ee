// Group: members in a vector (for one multicast call) with an index for O(1) removal.
#include "esockets/group.hpp"

#include "esockets/server.hpp"

namespace esockets {

bool Group::add(ConnectionId id) {
  if (!server_.connected(id)) return false;
  std::lock_guard lk(mu_);
  if (index_.count(id) != 0) return false;
  index_.emplace(id, ids_.size());
  ids_.push_back(id);
  return true;
}

bool Group::remove(ConnectionId id) {
  std::lock_guard lk(mu_);
  auto it = index_.find(id);
  if (it == index_.end()) return false;
  const std::size_t pos = it->second;
  index_.erase(it);
  if (pos + 1 != ids_.size()) {
    ids_[pos] = ids_.back();
    index_[ids_[pos]] = pos;
  }
  ids_.pop_back();
  return true;
}

bool Group::contains(ConnectionId id) const {
  std::lock_guard lk(mu_);
  return index_.count(id) != 0;
}

void Group::prune_locked() {
  // Closed connections leave by themselves: ids are checked against the live table.
  std::size_t keep = 0;
  for (std::size_t i = 0; i < ids_.size(); ++i) {
    if (server_.connected(ids_[i])) {
      if (keep != i) ids_[keep] = ids_[i];
      index_[ids_[keep]] = keep;
      ++keep;
    } else {
      index_.erase(ids_[i]);
    }
  }
  ids_.resize(keep);
}

std::size_t Group::size() {
  std::lock_guard lk(mu_);
  prune_locked();
  return ids_.size();
}

std::vector<ConnectionId> Group::members() {
  std::lock_guard lk(mu_);
  prune_locked();
  return ids_;
}

MulticastResult Group::send_impl(Bytes bytes, bool framed) {
  // The members are copied out so the lock is not held while the engine routes the payload
  // (another shard's handler may be sending to the same group).
  thread_local std::vector<ConnectionId> snapshot;
  {
    std::lock_guard lk(mu_);
    prune_locked();
    snapshot.assign(ids_.begin(), ids_.end());
  }
  return framed ? server_.multicast_frame(snapshot, bytes) : server_.multicast(snapshot, bytes);
}

MulticastResult Group::send(Bytes bytes) { return send_impl(bytes, false); }
MulticastResult Group::send_frame(Bytes message) { return send_impl(message, true); }

}  // namespace esockets

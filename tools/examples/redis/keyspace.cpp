// Keyspace: see keyspace.hpp.
#include "keyspace.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <vector>

#include "resp_decoder.hpp"
#include "resp_writer.hpp"

namespace esockets::redis {

class Keyspace::MultiLock {
 public:
  MultiLock(Keyspace& ks, std::span<const std::string_view> keys, std::size_t step) : ks_(ks) {
    idx_.clear();
    for (std::size_t i = 0; i < keys.size(); i += step) {
      idx_.push_back(static_cast<std::uint32_t>(ks.stripe_of(keys[i])));
    }
    std::sort(idx_.begin(), idx_.end());
    idx_.erase(std::unique(idx_.begin(), idx_.end()), idx_.end());
    for (std::uint32_t i : idx_) ks_.stripes_[i].mu.lock();
  }
  ~MultiLock() {
    for (auto i = idx_.rbegin(); i != idx_.rend(); ++i) ks_.stripes_[*i].mu.unlock();
  }
  MultiLock(const MultiLock&) = delete;
  MultiLock& operator=(const MultiLock&) = delete;

 private:
  Keyspace& ks_;
  // Per thread, reused: no allocation per command once warm. A MultiLock never nests.
  static thread_local std::vector<std::uint32_t> idx_;
};
thread_local std::vector<std::uint32_t> Keyspace::MultiLock::idx_;

Keyspace::Keyspace(std::size_t stripes)
    : count_(stripes == 0 ? 1 : stripes), stripes_(new Stripe[count_]) {}

Keyspace::~Keyspace() = default;

std::int64_t Keyspace::now_ms() {
  // The coarse monotonic clock (one tick, 1-4 ms, per kernel jiffy) costs a few ns where the
  // precise one reads the TSC; redis too reads its clock once per event-loop pass, not per
  // command. A key may be seen alive up to one tick past its deadline, never before it.
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

std::size_t Keyspace::stripe_of(std::string_view key) const {
  // Mixed again so that the stripe and the map's bucket do not use the same hash bits.
  const std::uint64_t h = std::hash<std::string_view>{}(key) * 0x9E3779B97F4A7C15ull;
  return static_cast<std::size_t>(h >> 32) % count_;
}

Keyspace::Map::iterator Keyspace::find_live(Stripe& s, std::string_view key, std::int64_t now) {
  auto it = s.map.find(key);
  if (it != s.map.end() && it->second.expire_at != 0 && now > it->second.expire_at) {
    erase(s, it);
    return s.map.end();
  }
  return it;
}

void Keyspace::erase(Stripe& s, Map::iterator it) {
  if (it->second.expire_at != 0) s.index.erase(it->second.in_index);
  s.map.erase(it);
}

void Keyspace::set_deadline(Stripe& s, Map::iterator it, std::int64_t at) {
  Entry& e = it->second;
  if (e.expire_at != 0) s.index.erase(e.in_index);
  e.expire_at = at;
  if (at != 0) e.in_index = s.index.emplace(at, &it->first);
}

void Keyspace::store(Stripe& s, std::string_view key, std::string_view value, std::int64_t now,
                     bool keep_ttl, std::int64_t expire_at) {
  auto it = find_live(s, key, now);
  if (it == s.map.end()) {
    it = s.map.emplace(std::string(key), Entry{}).first;
  }
  it->second.value.assign(value.data(), value.size());
  if (!keep_ttl) set_deadline(s, it, expire_at);
}

bool Keyspace::set(std::string_view key, std::string_view value, const SetArgs& args,
                   std::int64_t now, std::string* old_reply) {
  Stripe& s = stripes_[stripe_of(key)];
  std::lock_guard lk(s.mu);
  auto it = find_live(s, key, now);
  const bool found = it != s.map.end();
  if (old_reply != nullptr) {
    if (found) {
      resp::bulk(*old_reply, it->second.value);
    } else {
      resp::null_bulk(*old_reply);
    }
  }
  if ((args.cond == Cond::nx && found) || (args.cond == Cond::xx && !found)) return false;
  store(s, key, value, now, args.keep_ttl, args.expire_at);
  return true;
}

bool Keyspace::get(std::string_view key, std::int64_t now, std::string& out) {
  Stripe& s = stripes_[stripe_of(key)];
  std::lock_guard lk(s.mu);
  auto it = find_live(s, key, now);
  if (it == s.map.end()) {
    resp::null_bulk(out);
    return false;
  }
  resp::bulk(out, it->second.value);
  return true;
}

void Keyspace::mget(std::span<const std::string_view> keys, std::int64_t now, std::string& out) {
  MultiLock lk(*this, keys, 1);
  resp::array(out, keys.size());
  for (std::string_view k : keys) {
    Stripe& s = stripes_[stripe_of(k)];
    auto it = find_live(s, k, now);
    if (it == s.map.end()) {
      resp::null_bulk(out);
    } else {
      resp::bulk(out, it->second.value);
    }
  }
}

void Keyspace::mset(std::span<const std::string_view> pairs, std::int64_t now) {
  MultiLock lk(*this, pairs, 2);
  for (std::size_t i = 0; i + 1 < pairs.size(); i += 2) {
    store(stripes_[stripe_of(pairs[i])], pairs[i], pairs[i + 1], now, false, 0);
  }
}

std::size_t Keyspace::del(std::span<const std::string_view> keys, std::int64_t now) {
  MultiLock lk(*this, keys, 1);
  std::size_t n = 0;
  for (std::string_view k : keys) {
    Stripe& s = stripes_[stripe_of(k)];
    auto it = find_live(s, k, now);
    if (it != s.map.end()) {
      erase(s, it);
      ++n;
    }
  }
  return n;
}

std::size_t Keyspace::exists(std::span<const std::string_view> keys, std::int64_t now) {
  MultiLock lk(*this, keys, 1);
  std::size_t n = 0;
  for (std::string_view k : keys) {
    Stripe& s = stripes_[stripe_of(k)];
    if (find_live(s, k, now) != s.map.end()) ++n;
  }
  return n;
}

Keyspace::Incr Keyspace::incr_by(std::string_view key, std::int64_t delta, std::int64_t now,
                                 std::int64_t& result) {
  Stripe& s = stripes_[stripe_of(key)];
  std::lock_guard lk(s.mu);
  auto it = find_live(s, key, now);
  std::int64_t v = 0;
  if (it != s.map.end() && !parse_int64(it->second.value, v)) return Incr::not_integer;
  if ((delta > 0 && v > INT64_MAX - delta) || (delta < 0 && v < INT64_MIN - delta)) {
    return Incr::overflow;
  }
  result = v + delta;
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, result);
  const std::string_view text(buf, static_cast<std::size_t>(r.ptr - buf));
  if (it == s.map.end()) {
    s.map.emplace(std::string(key), Entry{std::string(text), 0, {}});
  } else {
    it->second.value.assign(text);
  }
  return Incr::ok;
}

bool Keyspace::expire_at(std::string_view key, std::int64_t at, unsigned cond,
                         std::int64_t now) {
  Stripe& s = stripes_[stripe_of(key)];
  std::lock_guard lk(s.mu);
  auto it = find_live(s, key, now);
  if (it == s.map.end()) return false;
  const std::int64_t cur = it->second.expire_at;  // 0: none, i.e. infinite
  if ((cond & nx) && cur != 0) return false;
  if ((cond & xx) && cur == 0) return false;
  if ((cond & gt) && (cur == 0 || at <= cur)) return false;
  if ((cond & lt) && cur != 0 && at >= cur) return false;
  if (at <= now) {
    erase(s, it);
  } else {
    set_deadline(s, it, at);
  }
  return true;
}

bool Keyspace::persist(std::string_view key, std::int64_t now) {
  Stripe& s = stripes_[stripe_of(key)];
  std::lock_guard lk(s.mu);
  auto it = find_live(s, key, now);
  if (it == s.map.end() || it->second.expire_at == 0) return false;
  set_deadline(s, it, 0);
  return true;
}

std::int64_t Keyspace::pttl(std::string_view key, std::int64_t now) {
  Stripe& s = stripes_[stripe_of(key)];
  std::lock_guard lk(s.mu);
  auto it = find_live(s, key, now);
  if (it == s.map.end()) return -2;
  if (it->second.expire_at == 0) return -1;
  return it->second.expire_at - now;
}

std::size_t Keyspace::size() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < count_; ++i) {
    std::lock_guard lk(stripes_[i].mu);
    n += stripes_[i].map.size();
  }
  return n;
}

std::size_t Keyspace::expires() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < count_; ++i) {
    std::lock_guard lk(stripes_[i].mu);
    n += stripes_[i].index.size();
  }
  return n;
}

void Keyspace::clear() {
  for (std::size_t i = 0; i < count_; ++i) {
    Map dead;
    {
      std::lock_guard lk(stripes_[i].mu);
      stripes_[i].index.clear();
      dead.swap(stripes_[i].map);
    }
    // Freed outside the lock: a big stripe does not stall the threads waiting for it.
  }
}

std::size_t Keyspace::sweep(std::int64_t now, std::size_t per_stripe) {
  std::size_t removed = 0;
  for (std::size_t i = 0; i < count_; ++i) {
    Stripe& s = stripes_[i];
    std::lock_guard lk(s.mu);
    for (std::size_t k = 0; k < per_stripe && !s.index.empty(); ++k) {
      auto first = s.index.begin();
      if (first->first >= now) break;  // alive until now > deadline
      auto it = s.map.find(std::string_view(*first->second));
      erase(s, it);
      ++removed;
    }
  }
  return removed;
}

}  // namespace esockets::redis

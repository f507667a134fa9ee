// esockets-redis — Keyspace: the string keys shared by every shard and worker.
//
// A striped concurrent map: `stripes` independent std::unordered_maps, each behind its own
// mutex, a key living in the stripe its hash picks. Commands on different stripes never wait
// for each other, so with stripes >> threads two handler threads rarely meet on one lock;
// `--stripes 1` gives the single-lock baseline the benchmark compares against. Commands on
// several keys (MGET, MSET, DEL, EXISTS) lock their stripes in ascending order, all at once,
// so they are atomic like redis's and cannot deadlock.
//
// Expiry: every stripe keeps an index (deadline -> key) of its keys with a TTL. A read finds
// an expired key dead and removes it (lazy expiry); sweep() removes what nobody reads, at a
// cost of O(keys removed + stripes), never O(keys). Times are milliseconds of the steady clock.
//
// Thread: every method is safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

namespace esockets::redis {

class Keyspace {
 public:
  /// stripes >= 1.
  explicit Keyspace(std::size_t stripes = 256);
  ~Keyspace();
  Keyspace(const Keyspace&) = delete;
  Keyspace& operator=(const Keyspace&) = delete;

  std::size_t stripes() const { return count_; }
  /// Milliseconds of the steady clock: the time base of every deadline here.
  static std::int64_t now_ms();

  enum class Cond : std::uint8_t { none, nx, xx };
  struct SetArgs {
    Cond cond = Cond::none;
    std::int64_t expire_at = 0;  ///< absolute deadline in ms; 0 = none
    bool keep_ttl = false;
  };
  /// SET. Returns whether the value was stored. When old_reply is given, appends the previous
  /// value to it as a RESP bulk string (or nil).
  bool set(std::string_view key, std::string_view value, const SetArgs& args, std::int64_t now,
           std::string* old_reply = nullptr);
  /// GET: appends the value as a RESP bulk string, or nil. True if the key exists.
  bool get(std::string_view key, std::int64_t now, std::string& out);
  /// MGET: appends an array of bulk strings / nils, read atomically.
  void mget(std::span<const std::string_view> keys, std::int64_t now, std::string& out);
  /// MSET: key, value, key, value, ...; atomic; clears their TTLs.
  void mset(std::span<const std::string_view> pairs, std::int64_t now);
  /// DEL: keys removed (a key named twice counts once).
  std::size_t del(std::span<const std::string_view> keys, std::int64_t now);
  /// EXISTS: keys that exist (a key named twice counts twice, as redis).
  std::size_t exists(std::span<const std::string_view> keys, std::int64_t now);

  enum class Incr : std::uint8_t { ok, not_integer, overflow };
  /// INCRBY: a missing key counts as 0; keeps the key's TTL.
  Incr incr_by(std::string_view key, std::int64_t delta, std::int64_t now, std::int64_t& result);

  /// EXPIRE's conditions, combinable (XX GT): bits of ExpireCond.
  enum ExpireCond : unsigned { none = 0, nx = 1, xx = 2, gt = 4, lt = 8 };
  /// EXPIRE/PEXPIRE with an absolute deadline: false if the key is missing or a condition
  /// refuses;
  /// a deadline not after `now` deletes the key (true).
  bool expire_at(std::string_view key, std::int64_t at, unsigned cond, std::int64_t now);
  /// PERSIST: removes the key's TTL; false if it is missing or had none.
  bool persist(std::string_view key, std::int64_t now);
  /// PTTL: -2 missing, -1 no TTL, else milliseconds left (>= 0).
  std::int64_t pttl(std::string_view key, std::int64_t now);

  /// Keys stored (including expired keys not yet removed, as redis's DBSIZE).
  std::size_t size() const;
  /// Keys with a TTL.
  std::size_t expires() const;
  void clear();
  /// Active expiry: removes up to `per_stripe` expired keys from every stripe; returns how
  /// many it removed.
  std::size_t sweep(std::int64_t now, std::size_t per_stripe);

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  struct Entry;
  using Index = std::multimap<std::int64_t, const std::string*>;
  struct Entry {
    std::string value;
    std::int64_t expire_at = 0;  // 0: persistent
    Index::iterator in_index{};
  };
  using Map = std::unordered_map<std::string, Entry, Hash, std::equal_to<>>;
  struct alignas(64) Stripe {
    mutable std::mutex mu;
    Map map;
    Index index;
  };

  std::size_t stripe_of(std::string_view key) const;
  /// The live entry of key (removes it if it expired), or map.end(). Stripe locked.
  static Map::iterator find_live(Stripe& s, std::string_view key, std::int64_t now);
  static void erase(Stripe& s, Map::iterator it);
  static void set_deadline(Stripe& s, Map::iterator it, std::int64_t at);
  static void store(Stripe& s, std::string_view key, std::string_view value, std::int64_t now,
                    bool keep_ttl, std::int64_t expire_at);

  /// Locks the stripes of `keys` (every `step`-th element) in ascending order.
  class MultiLock;

  std::size_t count_;
  std::unique_ptr<Stripe[]> stripes_;
};

}  // namespace esockets::redis

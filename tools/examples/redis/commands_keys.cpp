// String and key commands: GET SET MGET MSET DEL EXISTS INCR* DECR* EXPIRE PEXPIRE TTL PTTL
// PERSIST DBSIZE FLUSHALL. Argument checks and error texts follow redis-server 7.0 (t_string.c,
// expire.c, db.c).
#include <chrono>
#include <climits>

#include "commands.hpp"
#include "resp_writer.hpp"

namespace esockets::redis {
namespace {

constexpr const char* kSyntax = "ERR syntax error";

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void incr_common(Request& req, std::int64_t delta) {
  std::int64_t result = 0;
  switch (req.ctx.keys.incr_by(req.argv[1], delta, Keyspace::now_ms(), result)) {
    case Keyspace::Incr::ok: return resp::integer(req.out, result);
    case Keyspace::Incr::not_integer:
      return resp::error(req.out, "ERR value is not an integer or out of range");
    case Keyspace::Incr::overflow:
      return resp::error(req.out, "ERR increment or decrement would overflow");
  }
}

// EXPIRE / PEXPIRE key n [NX|XX|GT|LT]
void expire_common(Request& req, std::int64_t unit_ms, const char* name) {
  bool nx = false, xx = false, gt = false, lt = false;
  for (std::size_t i = 3; i < req.argv.size(); ++i) {
    const std::string_view o = req.argv[i];
    if (iequals(o, "nx")) {
      nx = true;
    } else if (iequals(o, "xx")) {
      xx = true;
    } else if (iequals(o, "gt")) {
      gt = true;
    } else if (iequals(o, "lt")) {
      lt = true;
    } else {
      return resp::error(req.out, "ERR Unsupported option " + std::string(o));
    }
  }
  if (nx && (xx || gt || lt)) {
    return resp::error(req.out,
                       "ERR NX and XX, GT or LT options at the same time are not compatible");
  }
  if (gt && lt) {
    return resp::error(req.out, "ERR GT and LT options at the same time are not compatible");
  }
  const unsigned cond = (nx ? Keyspace::nx : 0u) | (xx ? Keyspace::xx : 0u) |
                        (gt ? Keyspace::gt : 0u) | (lt ? Keyspace::lt : 0u);
  std::int64_t n = 0;
  if (!int_arg_or_reply(req, req.argv[2], n)) return;
  const std::int64_t now = Keyspace::now_ms();
  std::int64_t ms = 0, at = 0;
  if (__builtin_mul_overflow(n, unit_ms, &ms) || __builtin_add_overflow(ms, now, &at)) {
    return resp::error(req.out, std::string("ERR invalid expire time in '") + name + "' command");
  }
  // Redis bases deadlines on the wall clock; ours are on the steady clock, so the overflow
  // check above also allows for the wall clock's larger base.
  std::int64_t check = 0;
  if (__builtin_add_overflow(ms, wall_ms(), &check)) {
    return resp::error(req.out, std::string("ERR invalid expire time in '") + name + "' command");
  }
  resp::integer(req.out, req.ctx.keys.expire_at(req.argv[1], at, cond, now) ? 1 : 0);
}

}  // namespace

void cmd_get(Request& req) { req.ctx.keys.get(req.argv[1], Keyspace::now_ms(), req.out); }

// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]
void cmd_set(Request& req) {
  enum : unsigned { NX = 1, XX = 2, GET = 4, KEEPTTL = 8, EX = 16, PX = 32, EXAT = 64, PXAT = 128 };
  unsigned flags = 0;
  std::string_view expire_arg;
  const std::size_t argc = req.argv.size();
  for (std::size_t j = 3; j < argc; ++j) {
    const std::string_view o = req.argv[j];
    const bool has_next = j + 1 < argc;
    const unsigned any_expire = EX | PX | EXAT | PXAT;
    if (iequals(o, "nx") && !(flags & XX)) {
      flags |= NX;
    } else if (iequals(o, "xx") && !(flags & NX)) {
      flags |= XX;
    } else if (iequals(o, "get")) {
      flags |= GET;
    } else if (iequals(o, "keepttl") && !(flags & any_expire)) {
      flags |= KEEPTTL;
    } else if (has_next && iequals(o, "ex") && !(flags & (KEEPTTL | PX | EXAT | PXAT))) {
      flags |= EX;
      expire_arg = req.argv[++j];
    } else if (has_next && iequals(o, "px") && !(flags & (KEEPTTL | EX | EXAT | PXAT))) {
      flags |= PX;
      expire_arg = req.argv[++j];
    } else if (has_next && iequals(o, "exat") && !(flags & (KEEPTTL | EX | PX | PXAT))) {
      flags |= EXAT;
      expire_arg = req.argv[++j];
    } else if (has_next && iequals(o, "pxat") && !(flags & (KEEPTTL | EX | PX | EXAT))) {
      flags |= PXAT;
      expire_arg = req.argv[++j];
    } else {
      return resp::error(req.out, kSyntax);
    }
  }
  const std::int64_t now = Keyspace::now_ms();
  Keyspace::SetArgs args;
  args.cond = (flags & NX) ? Keyspace::Cond::nx : (flags & XX) ? Keyspace::Cond::xx : Keyspace::Cond::none;
  args.keep_ttl = (flags & KEEPTTL) != 0;
  if (flags & (EX | PX | EXAT | PXAT)) {
    std::int64_t v = 0;
    if (!int_arg_or_reply(req, expire_arg, v)) return;
    const bool seconds = (flags & (EX | EXAT)) != 0;
    if (v <= 0 || (seconds && v > LLONG_MAX / 1000)) {
      return resp::error(req.out, "ERR invalid expire time in 'set' command");
    }
    if (seconds) v *= 1000;
    std::int64_t at = 0;
    if (flags & (EX | PX)) {
      std::int64_t check = 0;
      if (__builtin_add_overflow(v, wall_ms(), &check)) {
        return resp::error(req.out, "ERR invalid expire time in 'set' command");
      }
      at = now + v;
    } else {
      at = now + (v - wall_ms());  // absolute wall-clock time onto the steady clock
      if (at <= now) at = now - 1;  // already past: the key is stored dead, as redis deletes it
    }
    args.expire_at = at != 0 ? at : -1;  // 0 means "no TTL" to the keyspace
  }
  const bool stored = req.ctx.keys.set(req.argv[1], req.argv[2], args, now,
                                       (flags & GET) ? &req.out : nullptr);
  if (flags & GET) return;  // the old value (or nil) is the reply
  if (stored) {
    resp::ok(req.out);
  } else {
    resp::null_bulk(req.out);
  }
}

void cmd_mget(Request& req) {
  req.ctx.keys.mget(req.argv.subspan(1), Keyspace::now_ms(), req.out);
}

void cmd_mset(Request& req) {
  if (req.argv.size() % 2 == 0) {
    return resp::error(req.out, "ERR wrong number of arguments for 'mset' command");
  }
  req.ctx.keys.mset(req.argv.subspan(1), Keyspace::now_ms());
  resp::ok(req.out);
}

void cmd_del(Request& req) {
  resp::integer(req.out, static_cast<std::int64_t>(
                             req.ctx.keys.del(req.argv.subspan(1), Keyspace::now_ms())));
}

void cmd_exists(Request& req) {
  resp::integer(req.out, static_cast<std::int64_t>(
                             req.ctx.keys.exists(req.argv.subspan(1), Keyspace::now_ms())));
}

void cmd_incr(Request& req) { incr_common(req, 1); }
void cmd_decr(Request& req) { incr_common(req, -1); }

void cmd_incrby(Request& req) {
  std::int64_t d = 0;
  if (int_arg_or_reply(req, req.argv[2], d)) incr_common(req, d);
}

void cmd_decrby(Request& req) {
  std::int64_t d = 0;
  if (!int_arg_or_reply(req, req.argv[2], d)) return;
  if (d == LLONG_MIN) return resp::error(req.out, "ERR decrement would overflow");
  incr_common(req, -d);
}

void cmd_expire(Request& req) { expire_common(req, 1000, "expire"); }
void cmd_pexpire(Request& req) { expire_common(req, 1, "pexpire"); }

void cmd_ttl(Request& req) {
  const std::int64_t ms = req.ctx.keys.pttl(req.argv[1], Keyspace::now_ms());
  resp::integer(req.out, ms < 0 ? ms : (ms + 500) / 1000);
}

void cmd_pttl(Request& req) {
  resp::integer(req.out, req.ctx.keys.pttl(req.argv[1], Keyspace::now_ms()));
}

void cmd_persist(Request& req) {
  resp::integer(req.out, req.ctx.keys.persist(req.argv[1], Keyspace::now_ms()) ? 1 : 0);
}

void cmd_dbsize(Request& req) {
  resp::integer(req.out, static_cast<std::int64_t>(req.ctx.keys.size()));
}

void cmd_flushall(Request& req) {
  if (req.argv.size() > 2 ||
      (req.argv.size() == 2 && !iequals(req.argv[1], "sync") && !iequals(req.argv[1], "async"))) {
    return resp::error(req.out, kSyntax);
  }
  req.ctx.keys.clear();
  resp::ok(req.out);
}

}  // namespace esockets::redis

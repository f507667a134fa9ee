#include "takeover/takeover_wire.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <utility>

#include "esockets/version.hpp"
#include "takeover/wire_util.hpp"

namespace esockets::detail {

using wire::Clock;
using wire::errno_text;
using wire::ms_text;
using wire::wait_fd;

namespace {

std::string hex32(std::uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}

bool known_type(std::uint8_t t) {
  return t >= static_cast<std::uint8_t>(MsgType::hello) &&
         t <= static_cast<std::uint8_t>(MsgType::abort);
}

void put_header(char* out, MsgType type, std::uint8_t flags, std::uint32_t seq, std::uint32_t nfds,
                std::uint64_t total) {
  Writer w;
  w.u32(kMagic);
  w.u16(kFrameVersion);
  w.u8(static_cast<std::uint8_t>(type));
  w.u8(flags);
  w.u32(seq);
  w.u32(nfds);
  w.u64(total);
  std::memcpy(out, w.data().data(), kHeaderSize);
}

}  // namespace

// ---- records and messages ----

std::string type_name(MsgType t) {
  switch (t) {
    case MsgType::hello: return "hello";
    case MsgType::listeners: return "listeners";
    case MsgType::connections: return "connections";
    case MsgType::ack: return "ack";
    case MsgType::done: return "done";
    case MsgType::abort: return "abort";
  }
  return "type " + std::to_string(static_cast<unsigned>(t));
}

void close_fds(Message& m) {
  for (int fd : m.fds) ::close(fd);
  m.fds.clear();
}

Channel::Channel(int fd) : fd_(fd) {
  const int fl = ::fcntl(fd_, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK) == 0) (void)::fcntl(fd_, F_SETFL, fl | O_NONBLOCK);
}

Channel::~Channel() {
  if (fd_ >= 0) ::close(fd_);
}

Channel::Channel(Channel&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)),
      send_seq_(o.send_seq_),
      recv_seq_(o.recv_seq_),
      failure_(std::move(o.failure_)) {}

Channel& Channel::operator=(Channel&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    send_seq_ = o.send_seq_;
    recv_seq_ = o.recv_seq_;
    failure_ = std::move(o.failure_);
  }
  return *this;
}

bool Channel::fail(std::string why, std::string& error) {
  failure_ = std::move(why);
  error = failure_;
  return false;
}

bool Channel::send(const Message& m, std::chrono::milliseconds timeout, std::string& error) {
  if (failed()) {
    error = failure_;
    return false;
  }
  // Refusals that send nothing leave the channel usable.
  if (!known_type(static_cast<std::uint8_t>(m.type))) {
    error = "takeover send: unknown message " + type_name(m.type);
    return false;
  }
  if (m.fds.size() > kMaxFds) {
    error = "takeover send: " + std::to_string(m.fds.size()) + " fds in one message, at most " +
            std::to_string(kMaxFds) + ": split the batch";
    return false;
  }
  if (m.payload.size() > kMaxPayload) {
    error = "takeover send: a payload of " + std::to_string(m.payload.size()) +
            " bytes is over the " + std::to_string(kMaxPayload >> 20) + " MiB cap";
    return false;
  }
  const auto deadline = Clock::now() + timeout;
  const std::size_t total = m.payload.size();
  std::size_t offset = 0;
  do {
    const bool first = offset == 0;
    const std::size_t chunk = std::min(kMaxChunk, total - offset);
    const auto flags =
        static_cast<std::uint8_t>((first ? kFirst : 0) | (offset + chunk == total ? kLast : 0));
    const auto nfds = static_cast<std::uint32_t>(first ? m.fds.size() : 0);
    char header[kHeaderSize];
    put_header(header, m.type, flags, send_seq_, nfds, total);
    iovec iov[2] = {{header, kHeaderSize}, {const_cast<char*>(m.payload.data() + offset), chunk}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = chunk == 0 ? 1 : 2;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    if (nfds != 0) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      std::memcpy(CMSG_DATA(c), m.fds.data(), sizeof(int) * nfds);
    }
    for (;;) {
      const ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) {
        // SOCK_SEQPACKET sends a record whole or not at all.
        if (static_cast<std::size_t>(n) != kHeaderSize + chunk) {
          return fail("takeover send: the kernel took " + std::to_string(n) + " of " +
                          std::to_string(kHeaderSize + chunk) + " bytes of a record",
                      error);
        }
        break;
      }
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        const int w = wait_fd(fd_, POLLOUT, deadline);
        if (w == 0) {
          return fail(
              "takeover send: timed out after " + ms_text(timeout) + " (the peer does not read)",
              error);
        }
        if (w < 0) return fail("takeover send: " + errno_text("poll", errno), error);
        continue;
      }
      if (err == EPIPE || err == ECONNRESET || err == ENOTCONN) {
        return fail("takeover send: peer closed", error);
      }
      if (err == EBADF && nfds != 0) {
        return fail("takeover send: a fd of the " + type_name(m.type) + " message is not open",
                    error);
      }
      return fail("takeover send: " + errno_text("sendmsg", err), error);
    }
    ++send_seq_;
    offset += chunk;
  } while (offset < total);
  return true;
}

bool Channel::recv(Message& m, std::chrono::milliseconds timeout, std::string& error) {
  m = Message{};
  if (failed()) {
    error = failure_;
    return false;
  }
  const auto deadline = Clock::now() + timeout;
  Message got;
  std::uint64_t total = 0;
  bool started = false;
  std::string record(kMaxRecord, '\0');
  // Every failure closes the fds of the message so far, those of the failing record included.
  auto bad = [&](const std::string& why) {
    close_fds(got);
    return fail("takeover recv: " + why, error);
  };
  auto progress = [&] {
    return std::to_string(got.payload.size()) + " of " + std::to_string(total) + " bytes";
  };
  for (;;) {
    iovec iov{record.data(), record.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        const int w = wait_fd(fd_, POLLIN, deadline);
        if (w == 0) {
          return bad("timed out after " + ms_text(timeout) + " waiting for " +
                     (started ? "the rest of a message (" + progress() + ")" : "a message"));
        }
        if (w < 0) return bad(errno_text("poll", errno));
        continue;
      }
      if (err == ECONNRESET) {
        return bad(started ? "peer closed mid-message (" + progress() + ")" : "peer closed");
      }
      return bad(errno_text("recvmsg", err));
    }
    std::size_t nfds = 0;
    bool other_control = false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
        other_control = true;
        continue;
      }
      const std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < k; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        got.fds.push_back(fd);
      }
      nfds += k;
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0) {
      return bad("control data truncated: the peer passed more than " + std::to_string(kMaxFds) +
                 " fds in one record, or this process ran out of fds (RLIMIT_NOFILE)");
    }
    if (other_control) return bad("unexpected control message (only SCM_RIGHTS is used)");
    if (n == 0) {
      return bad(started ? "peer closed mid-message (" + progress() + ")" : "peer closed");
    }
    if ((msg.msg_flags & MSG_TRUNC) != 0) {
      return bad("record longer than " + std::to_string(kMaxRecord) + " bytes (truncated)");
    }
    const auto size = static_cast<std::size_t>(n);
    if (size < kHeaderSize) {
      return bad("short record: " + std::to_string(size) + " bytes, the header alone is " +
                 std::to_string(kHeaderSize));
    }
    Reader h(std::string_view(record.data(), kHeaderSize));
    const std::uint32_t magic = h.u32();
    const std::uint16_t version = h.u16();
    const std::uint8_t type = h.u8();
    const std::uint8_t flags = h.u8();
    const std::uint32_t seq = h.u32();
    const std::uint32_t announced_fds = h.u32();
    const std::uint64_t announced_total = h.u64();
    if (magic != kMagic) {
      return bad("bad magic " + hex32(magic) + " (expected " + hex32(kMagic) +
                 "): the peer is not an esockets takeover peer");
    }
    if (version != kFrameVersion) {
      return bad("the peer frames records as takeover frame version " + std::to_string(version) +
                 ", this build understands " + std::to_string(kFrameVersion) +
                 " only: these two esockets builds cannot hand over; restart instead");
    }
    if (!known_type(type)) return bad("unknown message type " + std::to_string(type));
    if ((flags & ~(kFirst | kLast)) != 0) return bad("unknown record flags " + hex32(flags));
    if (seq != recv_seq_) {
      return bad("out-of-order record: sequence " + std::to_string(seq) + ", expected " +
                 std::to_string(recv_seq_));
    }
    ++recv_seq_;
    if (!started) {
      if ((flags & kFirst) == 0) {
        return bad("record " + std::to_string(seq) + " continues a message that never started");
      }
      if (announced_total > kMaxPayload) {
        return bad("a " + type_name(static_cast<MsgType>(type)) + " message announces " +
                   std::to_string(announced_total) + " bytes, over the " +
                   std::to_string(kMaxPayload >> 20) + " MiB cap");
      }
      if (announced_fds != nfds) {
        return bad("the record announces " + std::to_string(announced_fds) + " fds but carries " +
                   std::to_string(nfds));
      }
      if (nfds > kMaxFds) return bad(std::to_string(nfds) + " fds in one message, at most 250");
      started = true;
      got.type = static_cast<MsgType>(type);
      total = announced_total;
      got.payload.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(total, 1u << 20)));
    } else {
      if ((flags & kFirst) != 0) {
        return bad("a new message started before the previous one ended (" + progress() + ")");
      }
      if (static_cast<MsgType>(type) != got.type || announced_total != total) {
        return bad("record " + std::to_string(seq) + " changes the type or length of its message");
      }
      if (announced_fds != 0 || nfds != 0) return bad("fds on a continuation record");
    }
    const std::size_t chunk = size - kHeaderSize;
    if (chunk > total - got.payload.size()) {
      return bad("record " + std::to_string(seq) + " carries " + std::to_string(chunk) +
                 " bytes, more than announced (" + progress() + " so far)");
    }
    got.payload.append(record.data() + kHeaderSize, chunk);
    const bool complete = got.payload.size() == total;
    if ((flags & kLast) != 0 && !complete) {
      return bad("the last record ends the message short (" + progress() + ")");
    }
    if ((flags & kLast) == 0 && (complete || chunk != kMaxChunk)) {
      return bad("record " + std::to_string(seq) + " is not marked last but " +
                 (complete ? "completes the message" : "is not full"));
    }
    if (complete) {
      m = std::move(got);
      return true;
    }
  }
}

// ---- handshake ----

namespace {

std::string range(std::uint16_t lo, std::uint16_t hi) {
  std::string s = "v";  // appended piecewise: "v" + to_string() trips GCC 12's -Wrestrict
  s += std::to_string(lo);
  s += "..v";
  s += std::to_string(hi);
  return s;
}

std::string range(const Hello& h) { return range(h.min_version, h.max_version); }

std::string encode_hello(const Hello& h) {
  Writer w;
  w.u16(h.min_version);
  w.u16(h.max_version);
  w.u16(h.chosen);
  w.bytes(h.build_id);
  return w.take();
}

bool decode_hello(std::string_view in, Hello& h, std::string& error) {
  Reader r(in);
  h.min_version = r.u16();
  h.max_version = r.u16();
  h.chosen = r.u16();
  r.bytes(h.build_id);
  if (r.ok() && !r.at_end()) r.fail(std::to_string(r.remaining()) + " trailing bytes");
  if (r.ok() && (h.min_version == 0 || h.min_version > h.max_version)) {
    r.fail("version range " + range(h));
  }
  if (r.ok() && h.build_id.size() > kMaxBuildId) {
    r.fail("a build id of " + std::to_string(h.build_id.size()) + " bytes");
  }
  if (!r.ok()) error = "takeover handshake: malformed hello: " + r.what();
  return r.ok();
}

std::string printable(std::string_view s) {
  std::string out(s.substr(0, kMaxBuildId));
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

std::string incompatible(const Hello& peer, const Hello& ours) {
  return "incompatible takeover protocol: peer speaks " + range(peer) + ", we speak " +
         range(ours) + " (peer build '" + printable(peer.build_id) + "', ours '" +
         printable(ours.build_id) + "')";
}

bool check_ours(const Hello& ours, std::string& error) {
  if (ours.min_version == 0 || ours.min_version > ours.max_version ||
      ours.build_id.size() > kMaxBuildId) {
    error = "takeover handshake: our own hello is invalid (" + range(ours) + ", build id of " +
            std::to_string(ours.build_id.size()) + " bytes)";
    return false;
  }
  return true;
}

// Reads the peer's hello; a wrong message is closed and reported.
bool recv_hello(Channel& ch, Hello& peer, std::chrono::milliseconds timeout, bool client,
                std::string& error) {
  Message m;
  if (!ch.recv(m, timeout, error)) return false;
  const bool has_fds = !m.fds.empty();
  close_fds(m);
  if (client && m.type == MsgType::abort) {
    error = "takeover handshake: the old process refused: " + printable(m.payload);
    return false;
  }
  if (m.type != MsgType::hello || has_fds) {
    error = "takeover handshake: expected a hello message, got '" + type_name(m.type) + "'" +
            (has_fds ? " with fds" : "");
    return false;
  }
  return decode_hello(m.payload, peer, error);
}

}  // namespace

Hello our_hello() {
  Hello h;
  h.build_id = std::string("esockets ") + esockets::version();
  return h;
}

bool handshake_client(Channel& ch, std::string& error, Agreement* agreed, const Hello& ours,
                      std::chrono::milliseconds timeout) {
  if (!check_ours(ours, error) || !peer_is_same_user(ch.fd(), error)) return false;
  Hello mine = ours;
  mine.chosen = 0;
  if (!ch.send(Message{MsgType::hello, encode_hello(mine), {}}, timeout, error)) return false;
  Hello peer;
  if (!recv_hello(ch, peer, timeout, true, error)) return false;
  if (peer.chosen == 0) {
    error = incompatible(peer, ours);
    return false;
  }
  if (peer.chosen < std::max(peer.min_version, ours.min_version) ||
      peer.chosen > std::min(peer.max_version, ours.max_version)) {
    error = "takeover handshake: the old process picked v" + std::to_string(peer.chosen) +
            ", outside what both speak (peer " + range(peer) + ", we " + range(ours) + ")";
    return false;
  }
  if (agreed != nullptr) *agreed = Agreement{peer.chosen, peer};
  return true;
}

bool handshake_server(Channel& ch, std::string& error, Agreement* agreed, const Hello& ours,
                      std::chrono::milliseconds timeout) {
  // A stranger is told nothing: the caller closes the channel.
  if (!check_ours(ours, error) || !peer_is_same_user(ch.fd(), error)) return false;
  Hello peer;
  if (!recv_hello(ch, peer, timeout, false, error)) {
    if (!ch.failed()) {  // a well-framed but wrong message: say why before the caller hangs up
      std::string ignored;
      (void)ch.send(Message{MsgType::abort, error, {}}, timeout, ignored);
    }
    return false;
  }
  Hello reply = ours;
  const std::uint16_t lo = std::max(peer.min_version, ours.min_version);
  const std::uint16_t hi = std::min(peer.max_version, ours.max_version);
  reply.chosen = lo <= hi ? hi : 0;
  // Answered even without a common version, so the new process can say why too.
  if (!ch.send(Message{MsgType::hello, encode_hello(reply), {}}, timeout, error)) return false;
  if (reply.chosen == 0) {
    error = incompatible(peer, ours);
    return false;
  }
  if (agreed != nullptr) *agreed = Agreement{reply.chosen, peer};
  return true;
}

// ---- serialisation ----

void Writer::put(std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

void Writer::bytes(std::string_view b) {
  // Payloads are capped far below this; a bigger string is a caller bug, not input.
  if (b.size() > UINT32_MAX) throw std::length_error("esockets: takeover field over 4 GiB");
  u32(static_cast<std::uint32_t>(b.size()));
  out_.append(b);
}

void Reader::fail(std::string why) {
  if (what_.empty()) what_ = why.empty() ? "failed" : std::move(why);
}

std::uint64_t Reader::get(int n) {
  if (!ok()) return 0;
  const auto need = static_cast<std::size_t>(n);
  if (remaining() < need) {
    fail("truncated: " + std::to_string(need) + " bytes needed at offset " + std::to_string(pos_) +
         ", " + std::to_string(remaining()) + " left");
    return 0;
  }
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) {
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(in_[pos_ + i])) << (8 * i);
  }
  pos_ += need;
  return v;
}

bool Reader::raw(void* dst, std::size_t n) {
  if (!ok()) return false;
  if (remaining() < n) {
    fail("truncated: " + std::to_string(n) + " bytes needed at offset " + std::to_string(pos_) +
         ", " + std::to_string(remaining()) + " left");
    return false;
  }
  std::memcpy(dst, in_.data() + pos_, n);
  pos_ += n;
  return true;
}

bool Reader::bytes(std::string& out) {
  out.clear();
  const std::size_t at = pos_;
  const std::uint32_t n = u32();
  if (!ok()) return false;
  if (n > remaining()) {  // checked before allocating: a length is a claim, not a fact
    fail("a field at offset " + std::to_string(at) + " claims " + std::to_string(n) + " bytes, " +
         std::to_string(remaining()) + " left");
    return false;
  }
  out.assign(in_.data() + pos_, n);
  pos_ += n;
  return true;
}

void write_peer(Writer& w, const PeerAddress& a) {
  w.u8(a.family);
  w.u16(a.port);
  w.raw(std::string_view(reinterpret_cast<const char*>(a.addr), sizeof a.addr));
}

bool read_peer(Reader& r, PeerAddress& a) {
  a.family = r.u8();
  a.port = r.u16();
  r.raw(a.addr, sizeof a.addr);
  if (r.ok() && a.family != 0 && a.family != AF_INET && a.family != AF_INET6 &&
      a.family != AF_UNIX) {
    r.fail("unknown address family " + std::to_string(a.family));
  }
  return r.ok();
}

void write_record(Writer& w, const ConnRecord& c) {
  w.u8(kRecordVersion);
  w.u16(c.listener);
  write_peer(w, c.peer);
  w.u64(c.frame_progress);
  w.u32(c.flags);
  w.bytes(c.input);
  w.bytes(c.output);
  w.bytes(c.app_state);
  w.bytes(c.proxy);
}

bool read_record(Reader& r, ConnRecord& c) {
  const std::uint8_t version = r.u8();
  if (r.ok() && version != kRecordVersion) {
    r.fail("connection record version " + std::to_string(version) + ", this build reads " +
           std::to_string(kRecordVersion));
  }
  c.listener = r.u16();
  read_peer(r, c.peer);
  c.frame_progress = r.u64();
  c.flags = r.u32();
  r.bytes(c.input);
  r.bytes(c.output);
  r.bytes(c.app_state);
  r.bytes(c.proxy);
  if (r.ok() && !c.proxy.empty()) {
    ProxyInfo p;
    if (!decode_proxy(c.proxy, p)) r.fail("malformed proxy info in a connection record");
  }
  return r.ok();
}

namespace {
constexpr std::size_t kMinTlv = 1 + 4;
constexpr std::size_t kMinRecord = 1 + 2 + (1 + 2 + 16) + 8 + 4 + 4 * 4;
}  // namespace

std::string encode_proxy(const ProxyInfo& p) {
  Writer w;
  w.u8(p.version);
  w.u8(p.local ? 1 : 0);
  write_peer(w, p.source);
  write_peer(w, p.destination);
  w.u32(static_cast<std::uint32_t>(p.tlvs.size()));
  for (const ProxyTlv& t : p.tlvs) {
    w.u8(t.type);
    w.bytes(t.value);
  }
  return w.take();
}

bool decode_proxy(std::string_view in, ProxyInfo& p) {
  Reader r(in);
  p = ProxyInfo{};
  p.version = r.u8();
  const std::uint8_t local = r.u8();
  read_peer(r, p.source);
  read_peer(r, p.destination);
  const std::uint32_t n = r.u32();
  if (r.ok() && (p.version < 1 || p.version > 2 || local > 1 || n > r.remaining() / kMinTlv)) {
    r.fail("bad proxy info");
  }
  if (!r.ok()) return false;
  p.local = local == 1;
  p.tlvs.resize(n);
  for (ProxyTlv& t : p.tlvs) {
    t.type = r.u8();
    r.bytes(t.value);
  }
  return r.ok() && r.at_end();
}

std::string write_batch(const std::vector<ConnRecord>& batch) {
  Writer w;
  w.u32(static_cast<std::uint32_t>(batch.size()));
  for (const ConnRecord& c : batch) write_record(w, c);
  return w.take();
}

bool read_batch(std::string_view in, std::size_t expected, std::vector<ConnRecord>& out,
                std::string& error) {
  out.clear();
  Reader r(in);
  const std::uint32_t n = r.u32();
  if (r.ok() && n != expected) {
    r.fail(std::to_string(n) + " records for " + std::to_string(expected) + " fds");
  }
  if (r.ok() && n > r.remaining() / kMinRecord) r.fail("more records claimed than bytes hold");
  if (r.ok()) out.resize(n);
  std::size_t i = 0;
  for (; r.ok() && i < out.size(); ++i) {
    if (!read_record(r, out[i])) break;
  }
  if (r.ok() && !r.at_end()) r.fail(std::to_string(r.remaining()) + " bytes after the last record");
  if (r.ok()) return true;
  error =
      "takeover batch: " + (i < out.size() ? "record " + std::to_string(i) + ": " : "") + r.what();
  out.clear();
  return false;
}

}  // namespace esockets::detail

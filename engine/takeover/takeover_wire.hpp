// Takeover wire (issue 15): the control socket, the record framing and the serialisation that
// move listeners and live connections from an old process to a new one.
// Thread: any. Functions are stateless; a Channel is used by one thread at a time.
//
// Transport. The old process listens on a Unix-domain SOCK_SEQPACKET path (mode 0600); the new
// one connects. Both check that the peer runs as the same user, then exchange hellos that fix
// a protocol version (handshake_client / handshake_server).
//
// Records. A Message travels as one or more records of at most kMaxRecord bytes, each a fixed
// kHeaderSize-byte header then a slice of the payload. Header, little endian:
//   u32 magic (kMagic)  u16 frame version (kFrameVersion)  u8 type (MsgType)  u8 flags
//   u32 sequence (per direction, counts records from 0)  u32 fd count  u64 total payload length
// flags: kFirst on a message's first record, kLast on its last (both on a one-record message).
// The fds ride on the first record (SCM_RIGHTS) and its header announces how many; other
// records announce 0. The frame version describes this header only and changes only with it;
// what payloads mean is the negotiated protocol version.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "esockets/connection.hpp"
#include "esockets/proxy.hpp"

namespace esockets::detail {

// ---- control socket ----

/// Listens on `path` (AF_UNIX SOCK_SEQPACKET, non-blocking, close-on-exec, mode 0600 from the
/// start). A socket file nobody listens on is replaced; a live socket or a non-socket is not.
/// Returns the fd, or -1 with `error` naming the path and what to do.
int listen_control(const std::string& path, std::string& error);
/// True if a process listens on the control socket at `path` (a probe connect succeeds); false
/// for no file, a stale one, or one that cannot be judged.
bool control_socket_live(const std::string& path);
/// The pid of the process listening on the control socket at `path`: -1 if nobody is (as
/// control_socket_live), 0 if someone is but the probe could not learn who.
pid_t control_socket_owner(const std::string& path);

/// Accepts one peer on a listen_control fd, waiting at most `timeout`. Returns a non-blocking
/// close-on-exec fd, or -1 with `error`.
int accept_control(int listen_fd, std::chrono::milliseconds timeout, std::string& error);

/// Connects to the control socket at `path`, retrying a full backlog until `timeout`. Returns
/// a non-blocking close-on-exec fd, or -1 with `error` naming the path and what to do.
int connect_control(const std::string& path, std::chrono::milliseconds timeout, std::string& error);

/// True if the peer of the connected Unix socket `fd` has effective uid `expected_uid`;
/// otherwise false and `why` names both uids and the peer's pid.
bool peer_is_user(int fd, std::uint32_t expected_uid, std::string& why);

/// peer_is_user(fd, geteuid(), why).
bool peer_is_same_user(int fd, std::string& why);

// ---- records and messages ----

inline constexpr std::uint32_t kMagic = 0x4B545345;  // "ESTK" on the wire
inline constexpr std::uint16_t kFrameVersion = 1;
inline constexpr std::size_t kHeaderSize = 24;
inline constexpr std::size_t kMaxRecord = 64 * 1024;  ///< header included
inline constexpr std::size_t kMaxChunk = kMaxRecord - kHeaderSize;
inline constexpr std::size_t kMaxFds = 250;  ///< per message; the caller splits bigger batches
inline constexpr std::uint64_t kMaxPayload = 256ull << 20;
inline constexpr std::uint8_t kFirst = 1;
inline constexpr std::uint8_t kLast = 2;

enum class MsgType : std::uint8_t {
  hello = 1,        ///< versions and build id (handshake)
  listeners = 2,    ///< listener fds, old -> new
  connections = 3,  ///< a batch of connections: fds + write_batch() payload, old -> new
  ack = 4,          ///< receipt of a batch, new -> old
  done = 5,         ///< nothing more to send
  abort = 6,        ///< the sender gives up; the payload says why
};

/// Name of a type for messages ("hello", ..., or "type 9").
std::string type_name(MsgType t);

/// One message. After a successful Channel::recv the caller owns `fds`; Channel::send only
/// borrows them (the sender still closes its copies).
struct Message {
  MsgType type = MsgType::done;
  std::string payload;
  std::vector<int> fds;
};

/// Closes every fd of `m` and clears the list.
void close_fds(Message& m);

/// A connected control socket (owned; closed on destruction). Every failure is final: later
/// calls fail with the first error. Thread: one at a time.
class Channel {
 public:
  /// Takes ownership of a connected SOCK_SEQPACKET fd (made non-blocking here).
  explicit Channel(int fd);
  ~Channel();
  Channel(Channel&& o) noexcept;
  Channel& operator=(Channel&& o) noexcept;
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  /// Sends `m` whole within `timeout`. False with `error` on a peer that closed, a timeout,
  /// more than kMaxFds fds or a payload over kMaxPayload (nothing sent in those two cases).
  bool send(const Message& m, std::chrono::milliseconds timeout, std::string& error);
  /// Receives one whole message within `timeout`. False with a precise `error` on a peer that
  /// closed ("peer closed"), a timeout, or anything malformed; the fds of a failed message are
  /// closed, `m` is left empty.
  bool recv(Message& m, std::chrono::milliseconds timeout, std::string& error);

  int fd() const { return fd_; }
  bool failed() const { return !failure_.empty(); }

 private:
  bool fail(std::string why, std::string& error);

  int fd_ = -1;
  std::uint32_t send_seq_ = 0;
  std::uint32_t recv_seq_ = 0;
  std::string failure_;
};

// ---- handshake ----

inline constexpr std::uint16_t kProtocolMin = 1;
inline constexpr std::uint16_t kProtocolMax = 1;
inline constexpr std::size_t kMaxBuildId = 256;
inline constexpr std::chrono::milliseconds kHandshakeTimeout{5000};

/// What a side says in its hello. `chosen` is the server's pick (0: none in common); a client
/// sends 0.
struct Hello {
  std::uint16_t min_version = kProtocolMin;
  std::uint16_t max_version = kProtocolMax;
  std::uint16_t chosen = 0;
  std::string build_id;  ///< free-form, at most kMaxBuildId bytes
};

/// This build's hello: kProtocolMin..kProtocolMax, build id "esockets <version>".
Hello our_hello();

/// The outcome of a handshake.
struct Agreement {
  std::uint16_t version = 0;  ///< the protocol version both sides now speak
  Hello peer;
};

/// New process side: checks the peer's uid, sends our hello, reads the old process's answer.
/// False with e.g. "incompatible takeover protocol: peer speaks v3..v4, we speak v1..v1 (peer
/// build ...)".
bool handshake_client(Channel& ch, std::string& error, Agreement* agreed = nullptr,
                      const Hello& ours = our_hello(),
                      std::chrono::milliseconds timeout = kHandshakeTimeout);
/// Old process side: checks the peer's uid (a stranger is told nothing), reads its hello and
/// answers with ours and the pick, also when there is none, so both sides can say why.
bool handshake_server(Channel& ch, std::string& error, Agreement* agreed = nullptr,
                      const Hello& ours = our_hello(),
                      std::chrono::milliseconds timeout = kHandshakeTimeout);

// ---- serialisation ----

/// Appends little-endian integers and u32-length-prefixed bytes to a string.
class Writer {
 public:
  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(std::uint16_t v) { put(v, 2); }
  void u32(std::uint32_t v) { put(v, 4); }
  void u64(std::uint64_t v) { put(v, 8); }
  void raw(std::string_view b) { out_.append(b); }
  void bytes(std::string_view b);  ///< u32 length, then the bytes

  const std::string& data() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void put(std::uint64_t v, int n);
  std::string out_;
};

/// Reads what Writer wrote. Every read is bounds-checked; the first failure sticks (ok() turns
/// false, reads return 0 / empty, what() says why) and nothing allocates beyond the input left.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  std::uint8_t u8() { return static_cast<std::uint8_t>(get(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(get(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(get(4)); }
  std::uint64_t u64() { return get(8); }
  bool raw(void* dst, std::size_t n);
  bool bytes(std::string& out);  ///< u32 length, then the bytes

  bool ok() const { return what_.empty(); }
  bool at_end() const { return pos_ == in_.size(); }
  std::size_t remaining() const { return in_.size() - pos_; }
  /// Marks the reader failed (keeps the first reason).
  void fail(std::string why);
  const std::string& what() const { return what_; }

 private:
  std::uint64_t get(int n);
  std::string_view in_;
  std::size_t pos_ = 0;
  std::string what_;
};

inline constexpr std::uint8_t kRecordVersion = 1;

/// One live connection as the old process hands it over (its fd travels beside it).
struct ConnRecord {
  std::uint16_t listener = 0;
  PeerAddress peer;
  std::uint64_t frame_progress = 0;
  std::string input;   ///< read, not yet delivered
  std::string output;  ///< queued, not yet written
  std::uint32_t flags = 0;
  std::string app_state;  ///< the application's own bytes
  std::string proxy;      ///< encode_proxy() of its ProxyInfo, or empty
};

void write_peer(Writer& w, const PeerAddress& a);
bool read_peer(Reader& r, PeerAddress& a);

/// Appends one record, kRecordVersion first.
void write_record(Writer& w, const ConnRecord& c);
/// Reads one record; false (and r failed) on a short buffer, another record version or a bad
/// field.
bool read_record(Reader& r, ConnRecord& c);

std::string encode_proxy(const ProxyInfo& p);
/// False unless `in` is exactly one well-formed encode_proxy() output.
bool decode_proxy(std::string_view in, ProxyInfo& p);

/// A connections payload: u32 count, then the records.
std::string write_batch(const std::vector<ConnRecord>& batch);
/// Reads a whole connections payload that must hold `expected` records (one per fd of the
/// message) and nothing more. False with `error` otherwise.
bool read_batch(std::string_view in, std::size_t expected, std::vector<ConnRecord>& out,
                std::string& error);

}  // namespace esockets::detail

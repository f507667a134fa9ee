// esockets — ServerOptions: everything a Server is built from.
// Thread: plain value; copied into the Server at construction.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "esockets/decoder.hpp"
#include "esockets/listener.hpp"

namespace esockets {

/// How the byte stream of a connection is cut into messages for on_message_recv.
enum class Framing : std::uint8_t {
  raw,              ///< each read is one message (the seed's behaviour)
  line,             ///< messages end with line_delimiter (not included); max_frame bounds a line
  length_prefixed,  ///< big-endian length header of length_prefix_bytes (1, 2 or 4), then payload
  custom,           ///< ServerOptions::decoder says where each message ends (RESP, HTTP, ...)
};

/// Where new connections go.
enum class Balance : std::uint8_t {
  hash,          ///< the kernel's SO_REUSEPORT hash picks the shard
  least_loaded,  ///< each accepted socket goes to the shard with the least load (connections
                 ///< weighted by busy time); accepted on one shard, handed to another if needed
};

/// Which CPUs the engine's threads run on.
struct CpuAffinity {
  /// Pin shard i to cpus[i % size] and worker j to cpus[(shards + j) % size]; empty = no
  /// pinning (unless automatic). Each entry must be a CPU this process may run on.
  std::vector<int> cpus;
  /// Pin shards and workers round-robin over the CPUs this process may run on (its
  /// sched_getaffinity set), shards first. Ignored when cpus is not empty.
  bool automatic = false;
};

/// Options of a Server. Every field has a safe default; Server's constructor validates them
/// and throws std::invalid_argument naming the field and what to change.
struct ServerOptions {
  /// The listeners (TCP over IPv4 / IPv6, Unix-domain sockets), each with its own options;
  /// see ListenerOptions. Empty = one TCP listener on host:port with default options.
  std::vector<ListenerOptions> listeners;
  std::string host = "127.0.0.1";  ///< without listeners: numeric IPv4/IPv6 address to bind
  std::uint16_t port = 0;          ///< without listeners: 0 = ephemeral (see Server::port())
  unsigned shards = 1;             ///< reactor threads, each with its own epoll and listener
  Balance balance = Balance::hash; ///< placement of new connections over shards
  unsigned workers = 0;            ///< 0 = handlers run inline on shard threads
  int backlog = 4096;              ///< listen() backlog of each shard's listener
  std::size_t read_chunk = 64 * 1024;  ///< size of the per-shard read buffer (one read call)
  /// The kernel interface of the shards. io_uring on a kernel without what it needs makes the
  /// constructor throw std::invalid_argument saying why; Server::backend() tells which one runs.
  Backend backend = Backend::automatic;

  Framing framing = Framing::raw;       ///< how input is cut into messages
  char line_delimiter = '\n';           ///< Framing::line only
  unsigned length_prefix_bytes = 4;     ///< Framing::length_prefixed only: 1, 2 or 4
  std::size_t max_frame = 1024 * 1024;  ///< largest line / payload accepted; checked before allocating
  /// Framing::custom only (required there): the protocol's decoder, shared by every shard.
  /// With it, max_frame bounds the input one message takes (consumed bytes).
  std::shared_ptr<const Decoder> decoder;

  /// Most connections served at once over all shards; 0 = the fd limit minus a reserve of 64.
  /// Connections past it are accepted and closed at once (counted as refused).
  std::size_t max_connections = 0;

  std::size_t output_high_watermark = 1024 * 1024;  ///< on_output_high fires when crossing it
  std::size_t output_low_watermark = 256 * 1024;    ///< on_output_low fires when drained below
  std::size_t output_hard_cap = 16 * 1024 * 1024;   ///< a send past it closes as slow_consumer
  /// Output queued over all connections of the server (split evenly between shards); a send
  /// past a shard's share returns backpressure and closes that connection as slow_consumer.
  std::size_t output_total_cap = std::size_t{1} << 30;

  /// Close connections that sent nothing for this long (reason idle); 0 = never. Connections
  /// whose reading is paused are not idle.
  std::chrono::milliseconds idle_timeout{0};
  /// Close connections that started a frame and did not finish it in this long
  /// (reason frame_timeout; defeats clients dripping a byte at a time); 0 = never.
  std::chrono::milliseconds frame_timeout{30000};
  /// Close connections whose queued output made no progress for this long
  /// (reason slow_consumer; the client stopped reading); 0 = never.
  std::chrono::milliseconds write_timeout{30000};

  std::size_t worker_queue_capacity = 8192;    ///< events per (shard, worker) queue
  std::size_t command_queue_capacity = 32768;  ///< commands per queue into a shard
  /// With workers: how long a worker keeps polling its queues after its last event, and a
  /// shard its command queues after its last hand-off, before going to sleep. Polling saves
  /// the thread wake-ups a hand-off otherwise costs (tens of microseconds each on a virtual
  /// machine) and spends CPU while traffic is sparse; 0 = sleep at once. At most 1 s.
  std::chrono::microseconds handoff_poll{50};

  /// How long stop() keeps flushing output that send() accepted before closing anyway.
  std::chrono::milliseconds shutdown_timeout{5000};
  /// After a server-side close flushed its output, how long unread input is drained (so the
  /// peer gets FIN, not RST) before the socket is closed.
  std::chrono::milliseconds linger_timeout{2000};

  bool tcp_nodelay = true;  ///< set TCP_NODELAY on accepted sockets
  /// SO_SNDBUF / SO_RCVBUF for accepted sockets in bytes; 0 = the kernel's autotuning.
  int socket_send_buffer = 0;
  int socket_receive_buffer = 0;  ///< SO_RCVBUF; see socket_send_buffer
  /// Other processes share these TCP listeners' SO_REUSEPORT groups (the Supervisor's
  /// multi-process mode sets it through ChildContext::options()): set_shards() shrinking then
  /// attaches no BPF steering program to a group, since the program's positions would count
  /// only this process's sockets and misdirect the other processes' connections. A retiring
  /// shard still hands over what its listener accepted during its grace period.
  bool reuseport_shared = false;

  /// Serve GET /metrics (Prometheus / OpenMetrics text, render_metrics) and GET /health
  /// (200, or 503 once Server::drain() or stop() began) on this address, from a thread of its
  /// own: "127.0.0.1:9100", "[::1]:9100" or "unix:/path". Empty = no admin listener.
  std::string admin;
  /// CPU pinning of shard and worker threads (threads are named esk-shard-N / esk-worker-N
  /// either way); the choice is reported in stats().
  CpuAffinity cpu_affinity;

  /// Takeover, old side: listen on this Unix socket path (mode 0600) for a new process of
  /// the same user that takes over. It receives the listeners first, then every live
  /// connection with its unread input, queued output and the state on_client_takeover
  /// returns; this server then stops (Server::wait() returns) once it holds nothing more.
  /// If the new process fails mid-way, this one keeps serving what it still holds. Empty =
  /// no takeover socket.
  std::string takeover_socket;
  /// Takeover, new side: instead of binding, take over from the server listening on this
  /// takeover_socket path. start() receives its listeners (listeners, or host and port, must
  /// name as many, of the same kinds; a TCP port other than 0 must match), serves them at
  /// once, receives its connections (on_client_restore replaces on_client_connect), and
  /// returns when the old server handed over everything or failed. Empty = bind as usual.
  std::string take_over;
  /// Takeover: how long one step (handshake, a batch and its acknowledgement) may take before
  /// the side that waits gives up.
  std::chrono::milliseconds takeover_timeout{10000};
};

}  // namespace esockets

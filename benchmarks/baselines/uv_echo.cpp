// uv_echo: libuv echo server as a strong libuv user writes it for this model: one uv_loop per
// thread, one SO_REUSEPORT listener per loop (uv_tcp_open on our socket), TCP_NODELAY,
// uv_read_start with an alloc callback handing out the loop's one 64 KiB buffer (--buf),
// uv_try_write first and a heap-copied uv_write only for what the socket did not take.
// Reading pauses while more than 1 MiB waits in a connection's write queue.
#include <uv.h>

#include <cstdlib>
#include <thread>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kName = "uv_echo";
constexpr std::size_t kPauseAbove = 1 << 20;

struct LoopCtx {
  std::vector<char> buf;
};

struct WriteReq {
  uv_write_t req;
  uv_buf_t buf;
};

void on_close(uv_handle_t* h) { std::free(h); }

void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* out) {
  auto* ctx = static_cast<LoopCtx*>(h->loop->data);
  *out = uv_buf_init(ctx->buf.data(), static_cast<unsigned>(ctx->buf.size()));
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);

void on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  uv_stream_t* s = req->handle;
  std::free(w->buf.base);
  std::free(w);
  if (status < 0) {
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(s))) {
      uv_close(reinterpret_cast<uv_handle_t*>(s), on_close);
    }
    return;
  }
  if (s->data != nullptr && s->write_queue_size <= kPauseAbove / 2 &&
      !uv_is_closing(reinterpret_cast<uv_handle_t*>(s))) {
    s->data = nullptr;  // was paused
    uv_read_start(s, on_alloc, on_read);
  }
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  if (nread < 0) {
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(s))) {
      uv_close(reinterpret_cast<uv_handle_t*>(s), on_close);
    }
    return;
  }
  if (nread == 0) return;
  const auto len = static_cast<std::size_t>(nread);
  uv_buf_t b = uv_buf_init(buf->base, static_cast<unsigned>(len));
  int r = uv_try_write(s, &b, 1);
  std::size_t done = 0;
  if (r >= 0) {
    done = static_cast<std::size_t>(r);
  } else if (r != UV_EAGAIN) {
    uv_close(reinterpret_cast<uv_handle_t*>(s), on_close);
    return;
  }
  if (done == len) return;
  // The loop's buffer is reused by the next read: the rest must be copied.
  auto* w = static_cast<WriteReq*>(std::malloc(sizeof(WriteReq)));
  char* copy = static_cast<char*>(std::malloc(len - done));
  if (w == nullptr || copy == nullptr) std::abort();
  std::memcpy(copy, buf->base + done, len - done);
  w->buf = uv_buf_init(copy, static_cast<unsigned>(len - done));
  if (uv_write(&w->req, s, &w->buf, 1, on_write) != 0) {
    std::free(copy);
    std::free(w);
    uv_close(reinterpret_cast<uv_handle_t*>(s), on_close);
    return;
  }
  if (s->write_queue_size > kPauseAbove) {
    uv_read_stop(s);
    s->data = s;  // mark paused
  }
}

void on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  auto* client = static_cast<uv_tcp_t*>(std::malloc(sizeof(uv_tcp_t)));
  if (client == nullptr) std::abort();
  uv_tcp_init(server->loop, client);
  client->data = nullptr;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(client)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(client), on_close);
    return;
  }
  uv_tcp_nodelay(client, 1);
  uv_read_start(reinterpret_cast<uv_stream_t*>(client), on_alloc, on_read);
}

void run_loop(int fd, const baseline::Args& a) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) baseline::die(kName, "uv_loop_init");
  LoopCtx ctx{std::vector<char>(a.buf)};
  loop.data = &ctx;
  uv_tcp_t server;
  uv_tcp_init(&loop, &server);
  if (uv_tcp_open(&server, fd) != 0) baseline::die(kName, "uv_tcp_open");
  if (uv_listen(reinterpret_cast<uv_stream_t*>(&server), a.backlog, on_connection) != 0) {
    baseline::die(kName, "uv_listen");
  }
  uv_run(&loop, UV_RUN_DEFAULT);
}

}  // namespace

int main(int argc, char** argv) {
  baseline::Args a = baseline::parse_args(kName, "libuv echo server (baseline), uv_loop per thread.", argc, argv);
  std::vector<int> fds(a.threads);
  const std::uint16_t port = baseline::make_listeners(kName, a, fds.data());
  baseline::block_stop_signals();
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < a.threads; ++i) threads.emplace_back([fd = fds[i], &a] { run_loop(fd, a); });
  baseline::print_listening(kName, a, port);
  baseline::wait_for_stop();
}

// asio_echo: Boost.Asio echo server as a strong Asio user writes it for this model: one
// io_context per thread (concurrency hint 1, no strands needed), one SO_REUSEPORT acceptor per
// thread, TCP_NODELAY, async_read_some into a per-connection buffer (--buf, default 64 KiB:
// with 16 KiB reads Asio loses bulk throughput), async_write of exactly what was read. The
// buffer is left uninitialised, as a careful user allocates it: zero-filling 64 KiB per
// connection made every idle connection resident (66 KB each) and slowed accepts enough to
// overflow the listen queue at 19,000 connections.
// GCC 12 reports -Wnull-dereference inside Asio's own scheduler (inlined system-header code).
#pragma GCC diagnostic ignored "-Wnull-dereference"

#include <utility>  // before Asio: Boost 1.74 awaitable.hpp misses it in C++20

#include <boost/asio.hpp>
#include <memory>
#include <thread>
#include <vector>

#include "common.hpp"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

constexpr const char* kName = "asio_echo";

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket s, std::size_t buf)
      : sock_(std::move(s)), buf_(new char[buf]), size_(buf) {}

  void start() { read(); }

 private:
  void read() {
    sock_.async_read_some(asio::buffer(buf_.get(), size_),
                          [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                            if (!ec) self->write(n);
                          });
  }
  void write(std::size_t n) {
    asio::async_write(sock_, asio::buffer(buf_.get(), n),
                      [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                        if (!ec) self->read();
                      });
  }

  tcp::socket sock_;
  std::unique_ptr<char[]> buf_;  // new char[n]: not zero-filled, pages untouched until read into
  std::size_t size_;
};

class Acceptor {
 public:
  Acceptor(asio::io_context& io, int fd, std::size_t buf) : acc_(io), buf_(buf) {
    acc_.assign(tcp::v4(), fd);
  }
  void start() {
    acc_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (!ec) {
        boost::system::error_code ignored;
        s.set_option(tcp::no_delay(true), ignored);
        std::make_shared<Session>(std::move(s), buf_)->start();
      }
      start();
    });
  }

 private:
  tcp::acceptor acc_;
  std::size_t buf_;
};

}  // namespace

int main(int argc, char** argv) {
  baseline::Args a =
      baseline::parse_args(kName, "Boost.Asio echo server (baseline), io_context per thread.", argc, argv);
  std::vector<int> fds(a.threads);
  const std::uint16_t port = baseline::make_listeners(kName, a, fds.data());
  baseline::block_stop_signals();
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < a.threads; ++i) {
    threads.emplace_back([fd = fds[i], &a] {
      asio::io_context io(1);
      Acceptor acc(io, fd, a.buf);
      acc.start();
      auto guard = asio::make_work_guard(io);
      io.run();
    });
  }
  baseline::print_listening(kName, a, port);
  baseline::wait_for_stop();
}

#include "esockets/server.hpp"

#include "core/server_core.hpp"

namespace esockets {

Server::Server(Handler& handler, ServerOptions options)
    : core_(std::make_unique<detail::ServerCore>(*this, handler, std::move(options))) {}

Server::~Server() {
  // Stop while *this is still whole: the handler's shutdown callbacks receive it.
  core_->stop();
}

void Server::start() { core_->start(); }
void Server::stop() { core_->stop(); }
void Server::request_stop() noexcept { core_->request_stop(); }
void Server::wait() { core_->wait(); }
bool Server::running() const { return core_->running(); }
std::uint16_t Server::port() const { return core_->port(); }
std::vector<ListenerInfo> Server::listeners() const { return core_->listener_infos(); }
std::string Server::admin_address() const { return core_->admin_address(); }
void Server::drain() { core_->drain(); }
bool Server::draining() const { return core_->draining(); }
bool Server::handed_over() const { return core_->handed_over(); }
const ServerOptions& Server::options() const { return core_->options(); }

SendStatus Server::send(ConnectionId id, Bytes bytes) { return core_->send(id, bytes, false); }
SendStatus Server::send_frame(ConnectionId id, Bytes message) {
  return core_->send(id, message, true);
}
SendStatus Server::close(ConnectionId id) { return core_->close(id, CloseReason::closed_by_server); }
std::size_t Server::broadcast(Bytes bytes) { return core_->broadcast(bytes); }
MulticastResult Server::multicast(std::span<const ConnectionId> ids, Bytes bytes) {
  return core_->multicast(ids, bytes, false);
}
MulticastResult Server::multicast_frame(std::span<const ConnectionId> ids, Bytes message) {
  return core_->multicast(ids, message, true);
}
bool Server::wait_writable(ConnectionId id, std::chrono::milliseconds timeout) {
  return core_->wait_writable(id, timeout);
}
bool Server::connected(ConnectionId id) const { return core_->connected(id); }
void Server::set_shards(unsigned n) { core_->set_shards(n); }
unsigned Server::shards() const { return core_->shards(); }
Backend Server::backend() const { return core_->backend(); }
void Server::rebalance() { core_->rebalance(); }
std::size_t Server::client_count() const { return core_->client_count(); }
void Server::for_each_client(const std::function<void(ConnectionId)>& fn) const {
  core_->for_each_client(fn);
}
Stats Server::stats() const { return core_->stats(); }

}  // namespace esockets

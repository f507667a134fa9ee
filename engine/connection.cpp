#include "esockets/connection.hpp"

#include "server_core.hpp"

namespace esockets {

Server& Connection::server() const { return core_->server(); }
SendStatus Connection::send(Bytes bytes) { return core_->send(id_, bytes, false); }
SendStatus Connection::send_frame(Bytes message) { return core_->send(id_, message, true); }
SendStatus Connection::close() { return core_->close(id_, CloseReason::closed_by_server); }
void Connection::pause_reading() { (void)core_->set_paused(id_, true); }
void Connection::resume_reading() { (void)core_->set_paused(id_, false); }

}  // namespace esockets

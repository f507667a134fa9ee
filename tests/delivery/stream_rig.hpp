// The server side of the streaming tests (publisher_reshard, concurrent_movers): a handler that
// checks every client message arrives once and in order and echoes it, pauses some clients
// (resumed from on_output_low once a filler drained), and publisher threads that send numbered
// records to every client from a thread that is not an engine thread, retrying on
// backpressure as Server::send documents.
#pragma once

#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "delivery_support.hpp"

namespace esockets::test::delivery {

class StreamHandler : public Handler {
 public:
  struct St {
    std::atomic<std::uint64_t> next{0};
    std::atomic<std::uint64_t> received{0};
    std::uint16_t port = 0;
  };

  StreamHandler(Wire w, std::size_t filler_bytes) : wire_(w) {
    filler_ = "F" + std::string(filler_bytes, 'f');
  }

  std::atomic<int> connects{0}, disconnects{0}, pauses{0}, resumes{0};
  std::atomic<int> reasons[kCloseReasonCount] = {};
  std::atomic<bool> stopping{false};
  ErrorLog errors;

  ConnectionId id_of_port(std::uint16_t port) {
    std::lock_guard lk(mu_);
    auto it = by_port_.find(port);
    return it == by_port_.end() ? ConnectionId{} : it->second;
  }
  /// Messages the server received from the client on `port` (0 if unknown).
  std::uint64_t received_from(std::uint16_t port) {
    std::lock_guard lk(mu_);
    auto it = state_by_port_.find(port);
    return it == state_by_port_.end() ? 0 : it->second->received.load();
  }

  bool on_client_connect(Connection& c) override {
    auto s = std::make_unique<St>();
    s->port = c.peer().port;
    c.set_user_data(s.get());
    {
      std::lock_guard lk(mu_);
      by_port_[s->port] = c.id();
      state_by_port_[s->port] = s.get();
      owned_.push_back(std::move(s));
    }
    connects++;
    return true;
  }

  void on_message_recv(Connection& c, Bytes m) override {
    auto* s = static_cast<St*>(c.user_data());
    char type = 0;
    std::uint64_t seq = 0;
    if (!parse_record(wire_, m, type, seq)) {
      errors.add("server: unparseable message of " + std::to_string(m.size()) + " bytes from port " +
                 std::to_string(s->port));
      return;
    }
    const std::uint64_t want = s->next.load(std::memory_order_relaxed);
    if (seq != want) {
      errors.add("server: client port " + std::to_string(s->port) + " message #" + std::to_string(seq) +
                 " arrived when #" + std::to_string(want) + " was expected");
    }
    s->next.store(seq + 1, std::memory_order_relaxed);
    s->received.fetch_add(1, std::memory_order_relaxed);
    SendStatus st = c.send_frame(record_payload(wire_, 'E', seq));
    if (st != SendStatus::ok) {
      errors.add("server: echo send_frame from the handler returned " + std::string(to_string(st)));
    }
    if (type == 'P') {
      pauses++;
      c.pause_reading();
      st = c.send_frame(filler_);
      if (st != SendStatus::ok) {
        errors.add("server: filler send_frame from the handler returned " + std::string(to_string(st)));
      }
    }
  }

  void on_output_low(Connection& c) override {
    resumes++;
    c.resume_reading();
  }

  void on_client_disconnect(Connection& c, CloseReason r) override {
    reasons[static_cast<std::size_t>(r)]++;
    disconnects++;
    if (!stopping.load()) {
      errors.add("server: client " + c.getip() + " disconnected before stop: " + to_string(r));
    }
  }

  void on_warning(std::string_view msg) override {
    std::lock_guard lk(mu_);
    if (warnings_.size() < 10) warnings_.emplace_back(msg);
  }
  std::vector<std::string> warnings() {
    std::lock_guard lk(mu_);
    return warnings_;
  }

 private:
  Wire wire_;
  std::string filler_;
  std::mutex mu_;
  std::unordered_map<std::uint16_t, ConnectionId> by_port_;
  std::unordered_map<std::uint16_t, St*> state_by_port_;
  std::vector<std::unique_ptr<St>> owned_;
  std::vector<std::string> warnings_;
};

/// Sends numbered records of stream `type` to every id, round after round, until `stop`;
/// retries a record on backpressure (after wait_writable), as the API asks. ok[i] counts the
/// records that returned SendStatus::ok for ids[i]: each must reach client i exactly once.
struct PublisherStats {
  std::uint64_t ok = 0, backpressure = 0, rounds = 0;
};

inline PublisherStats publish(Server& server, Wire wire, char type, const std::vector<ConnectionId>& ids,
                              std::vector<std::uint64_t>& ok, const std::atomic<bool>& stop,
                              ErrorLog& errors, std::chrono::microseconds between_rounds) {
  PublisherStats ps;
  std::vector<bool> dead(ids.size(), false);
  while (!stop.load(std::memory_order_relaxed)) {
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (dead[i]) continue;
      const std::string payload = record_payload(wire, type, ok[i]);
      const auto first = Clock::now();
      for (;;) {
        const SendStatus st =
            wire == Wire::raw8 ? server.send(ids[i], payload) : server.send_frame(ids[i], payload);
        if (st == SendStatus::ok) {
          ++ok[i];
          ++ps.ok;
          break;
        }
        if (st == SendStatus::backpressure) {
          ++ps.backpressure;
          if (Clock::now() - first > 5s) {
            errors.add(std::string("publisher ") + type + ": still backpressure after 5 s for client " +
                       std::to_string(i));
            dead[i] = true;
            break;
          }
          (void)server.wait_writable(ids[i], 200ms);
          continue;
        }
        errors.add(std::string("publisher ") + type + ": send to live client " + std::to_string(i) +
                   " returned " + to_string(st) + " at record #" + std::to_string(ok[i]));
        dead[i] = true;
        break;
      }
    }
    ++ps.rounds;
    if (between_rounds.count() > 0) std::this_thread::sleep_for(between_rounds);
  }
  return ps;
}

}  // namespace esockets::test::delivery

// Delivery contract, behaviour 1: a publisher thread that is not an engine thread sends numbered
// records to ~300 clients with Server::send / send_frame (retrying on backpressure) while another
// thread cycles set_shards(4 -> 3 -> 2 -> 1 -> 4) and rebalance(). Every record that returned
// SendStatus::ok must reach its client exactly once and in order (DESIGN.md invariant 8; the
// README: "No connection is reset, no byte is lost or reordered").
// Variants: inline and 2 workers; raw framing (publisher only); line and length-prefixed framing
// where the clients also send numbered messages (checked in order by the handler and echoed) and
// some clients are paused by their handler (resumed from on_output_low), so framing state,
// unread input, queued output and paused connections are in flight during the hand-overs.
#include <gtest/gtest.h>

#include <cstdlib>

#include "stream_rig.hpp"

namespace esockets::test::delivery {
namespace {

struct Variant {
  unsigned workers;
  Wire wire;
  friend void PrintTo(const Variant& v, std::ostream* os) {
    *os << (v.workers == 0 ? "inline" : "workers2") << "/" << wire_name(v.wire);
  }
};

std::string variant_name(const ::testing::TestParamInfo<Variant>& i) {
  return std::string(i.param.workers == 0 ? "inline" : "workers2") + "_" + wire_name(i.param.wire);
}

class PublisherReshard : public ::testing::TestWithParam<Variant> {};

TEST_P(PublisherReshard, EveryOkRecordArrivesOnceAndInOrderWhileShardsChange) {
  const Variant v = GetParam();
  const bool clients_send = v.wire != Wire::raw8;
  StreamHandler h(v.wire, 128 * 1024);
  ServerOptions o = loopback_options(4, v.workers);
  o.framing = framing_of(v.wire);
  // Small socket buffers and watermarks keep output queued in the engine (it travels with the
  // connections) and make the pause/resume cycle of the paused clients happen.
  o.socket_send_buffer = 8192;
  o.output_high_watermark = 32 * 1024;
  o.output_low_watermark = 8 * 1024;
  Server server(h, o);
  server.start();

  const std::size_t n = scaled(300, 40);
  // A 32 KiB receive window: a 128 KiB filler never leaves in one write, so each pause crosses
  // the high watermark and on_output_low (which resumes) follows.
  ClientFleet fleet(server.port(), n, v.wire, 32 * 1024);
  ASSERT_TRUE(wait_until([&] { return h.connects.load() == static_cast<int>(n); }, 20s))
      << "connected " << h.connects.load() << " of " << n;
  std::vector<ConnectionId> ids(n);
  for (std::size_t i = 0; i < n; ++i) {
    ids[i] = h.id_of_port(fleet.port_of(i));
    ASSERT_TRUE(ids[i].valid()) << "no connection for client " << i;
  }

  // Clients (line / lp4): one numbered message every 10 ms each; every 4th client asks to be
  // paused on every 64th message ('P': the handler pauses reading and queues a 128 KiB filler;
  // on_output_low resumes it).
  const Wire w = v.wire;
  fleet.start(
      [w](std::size_t i, std::uint64_t k) {
        const char type = (i % 4 == 0 && k % 64 == 63) ? 'P' : 'C';
        return wire_frame(w, record_payload(w, type, k));
      },
      10ms);
  fleet.set_sending(clients_send);

  std::atomic<bool> stop_pub{false};
  ErrorLog pub_errors;
  std::vector<std::uint64_t> pub_ok(n, 0);
  PublisherStats ps;
  std::thread publisher([&] { ps = publish(server, v.wire, 'R', ids, pub_ok, stop_pub, pub_errors, 0us); });

  // 50 shard-count changes and rebalances: 4 -> 3 -> rebalance -> 2 -> rebalance -> 1 -> 4 -> rebalance ...
  // DELIVERY_NO_RESIZE=1 runs the same traffic for 7 s without changing shards: a control run
  // that shows the harness itself loses nothing.
  const bool control = std::getenv("DELIVERY_NO_RESIZE") != nullptr;
  const std::size_t ops = control ? 0 : scaled(50, 14);
  ErrorLog resize_errors;
  std::size_t done_ops = 0;
  const auto t_resize = Clock::now();
  std::thread resizer([&] {
    if (control) std::this_thread::sleep_for(7s);
    const int cycle[] = {3, 0, 2, 0, 1, 4, 0};  // 0 = rebalance()
    for (std::size_t k = 0; k < ops; ++k) {
      const int op = cycle[k % 7];
      try {
        if (op == 0) {
          server.rebalance();
        } else {
          server.set_shards(static_cast<unsigned>(op));
        }
        ++done_ops;
      } catch (const std::exception& e) {
        resize_errors.add(std::string("op ") + std::to_string(k) + ": " + e.what());
      }
    }
  });
  resizer.join();
  const double resize_ms = ms_since(t_resize);
  std::this_thread::sleep_for(200ms);
  stop_pub.store(true);
  publisher.join();
  fleet.set_sending(false);

  // Every ok record, every client message and every echo must arrive (bounded wait).
  auto all_in = [&] {
    return fleet.with_lock([&] {
      for (std::size_t i = 0; i < n; ++i) {
        if (fleet.ended(i)) continue;
        if (fleet.track(i, 'R').received < pub_ok[i]) return false;
        if (clients_send) {
          if (fleet.track(i, 'E').received < fleet.generated(i)) return false;
        }
      }
      return true;
    });
  };
  const bool arrived = wait_until(all_in, 8s);

  std::size_t lost_clients = 0, disordered_clients = 0, extra_clients = 0, ended_clients = 0,
              echo_bad = 0, server_short = 0;
  std::uint64_t lost_records = 0;
  std::string examples;
  fleet.with_lock([&] {
    for (std::size_t i = 0; i < n; ++i) {
      const SeqTrack& r = fleet.track(i, 'R');
      const bool bad_order = !r.clean();
      const bool short_count = r.received < pub_ok[i];
      const bool extra = r.received > pub_ok[i];
      if (fleet.ended(i)) {
        ++ended_clients;
        if (examples.size() < 1500) examples += "\n  client " + std::to_string(i) + ": " + fleet.end_note(i);
      }
      if (short_count) {
        ++lost_clients;
        lost_records += pub_ok[i] - r.received;
      }
      if (bad_order) ++disordered_clients;
      if (extra) ++extra_clients;
      if ((bad_order || short_count || extra) && examples.size() < 1500) {
        examples += "\n  client " + std::to_string(i) + ": ok=" + std::to_string(pub_ok[i]) +
                    " received=" + std::to_string(r.received) + " skipped=" + std::to_string(r.gaps) +
                    " late/dup=" + std::to_string(r.backwards) + "; first: " + r.first_error;
      }
      if (clients_send) {
        const SeqTrack& e = fleet.track(i, 'E');
        if (!e.clean() || e.received != fleet.generated(i)) {
          ++echo_bad;
          if (examples.size() < 1500) {
            examples += "\n  client " + std::to_string(i) + " echoes: sent=" + std::to_string(fleet.generated(i)) +
                        " echoed=" + std::to_string(e.received) + " " + e.first_error;
          }
        }
        if (h.received_from(fleet.port_of(i)) != fleet.generated(i)) ++server_short;
      }
    }
    return 0;
  });

  const Stats st = server.stats();
  std::printf("[publisher_reshard %s/%s] %zu clients, %zu resize ops in %.0f ms, %llu records ok "
              "(%llu backpressure retries, %llu rounds), pauses=%d resumes=%d, shards now %u, warnings=%llu\n",
              v.workers == 0 ? "inline" : "workers2", wire_name(v.wire), n, done_ops, resize_ms,
              static_cast<unsigned long long>(ps.ok), static_cast<unsigned long long>(ps.backpressure),
              static_cast<unsigned long long>(ps.rounds), h.pauses.load(), h.resumes.load(), server.shards(),
              static_cast<unsigned long long>(st.total.warnings));
  for (const auto& wmsg : h.warnings()) std::printf("  warning: %s\n", wmsg.c_str());
  if (!examples.empty()) std::printf("  examples:%s\n", examples.c_str());

  EXPECT_EQ(resize_errors.count(), 0u) << resize_errors.summary();
  EXPECT_EQ(pub_errors.count(), 0u) << "publisher: " << pub_errors.summary();
  EXPECT_TRUE(arrived) << "not every ok'd record / echo arrived within 8 s";
  EXPECT_EQ(lost_clients, 0u) << lost_records << " records that returned ok never arrived, on "
                              << lost_clients << " clients (examples above)";
  EXPECT_EQ(disordered_clients, 0u) << "records skipped, duplicated or out of order on " << disordered_clients
                                    << " clients (examples above)";
  EXPECT_EQ(extra_clients, 0u) << "more records than sent on " << extra_clients << " clients (examples above)";
  EXPECT_EQ(ended_clients, 0u) << "connections ended by the server during the test (examples above)";
  if (clients_send) {
    EXPECT_EQ(echo_bad, 0u) << "client messages / echoes lost, duplicated or reordered (examples above)";
    EXPECT_EQ(server_short, 0u) << "the handler did not receive every client message";
  }
  EXPECT_EQ(h.errors.count(), 0u) << h.errors.summary();
  EXPECT_EQ(h.disconnects.load(), 0) << "connections ended before stop()";

  h.stopping.store(true);
  server.stop();
  fleet.stop();
  EXPECT_EQ(h.disconnects.load(), h.connects.load());
}

INSTANTIATE_TEST_SUITE_P(Delivery, PublisherReshard,
                         ::testing::Values(Variant{0, Wire::raw8}, Variant{2, Wire::raw8},
                                           Variant{0, Wire::line}, Variant{2, Wire::line},
                                           Variant{0, Wire::lp4}, Variant{2, Wire::lp4}),
                         variant_name);

}  // namespace
}  // namespace esockets::test::delivery

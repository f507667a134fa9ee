// Adversarial takeover tests (ServerOptions::takeover_socket / take_over): two Servers in one
// process hand over through the control socket as two processes would, while other threads
// keep sending (Server::send, Server::post), handlers fan out across shards, clients connect in
// a storm, pause, half-close, or read slowly, and the servers are stopped or resized
// concurrently. Every stream carries sequence numbers that the client checks for loss,
// duplication and order, and every client checks that it never saw EOF or a reset.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "esockets/esockets.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using esockets::Bytes;
using esockets::CloseReason;
using esockets::Connection;
using esockets::ConnectionId;
using esockets::SendStatus;
using esockets::Server;
using esockets::ServerOptions;
using esockets::test::Client;
using esockets::test::wait_until;
using Clock = std::chrono::steady_clock;

std::string temp_dir() {
  static std::string dir = [] {
    char tmpl[] = "/tmp/esk-tkadv-XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    return std::string(p != nullptr ? p : "/tmp");
  }();
  return dir;
}
std::string temp_path(const std::string& name) {
  return temp_dir() + "/" + name + "-" + std::to_string(::getpid());
}

ServerOptions line_options(unsigned shards, unsigned workers) {
  ServerOptions o = esockets::test::loopback_options(shards, workers);
  o.framing = esockets::Framing::line;
  o.takeover_timeout = 5000ms;
  return o;
}

// "<tag><i>:<k>" -> tag, i, k.
bool parse_tagged(std::string_view s, char& tag, long& i, long& k) {
  if (s.size() < 4) return false;
  tag = s[0];
  const std::string rest(s.substr(1));
  const auto colon = rest.find(':');
  if (colon == std::string::npos) return false;
  char* end = nullptr;
  i = std::strtol(rest.c_str(), &end, 10);
  if (end != rest.c_str() + colon) return false;
  k = std::strtol(rest.c_str() + colon + 1, &end, 10);
  return true;
}
std::string tagged(char tag, long i, long k) {
  return std::string(1, tag) + std::to_string(i) + ":" + std::to_string(k);
}

// ------------------------------------------------------------------------- client side

// Reads every client's lines on one thread (poll) and checks, per client and per tag, that
// the numbers arrive 0, 1, 2, ... exactly once each and in order; any EOF or reset is an error.
// Tag 'F' (fan-out) is checked per (client, source) pair: strictly increasing, counted.
class Checker {
 public:
  explicit Checker(std::vector<Client>& clients) : clients_(clients) {
    for (std::size_t i = 0; i < clients.size(); ++i) bufs_.emplace_back();
    th_ = std::thread([this] { run(); });
  }
  ~Checker() { stop(); }
  void stop() {
    done_ = true;
    if (th_.joinable()) th_.join();
  }
  // How many numbered lines with `tag` client i got (the next expected number).
  long next(std::size_t i, char tag) {
    std::lock_guard lk(mu_);
    return next_[{i, tag}];
  }
  long fanout_count(std::size_t i) {
    std::lock_guard lk(mu_);
    return fan_count_[i];
  }
  std::string errors() {
    std::lock_guard lk(mu_);
    return errors_;
  }
  bool ok() {
    std::lock_guard lk(mu_);
    return errors_.empty();
  }
  void expect_eof(std::size_t i) {
    std::lock_guard lk(mu_);
    eof_ok_.insert(i);
  }
  bool saw_eof(std::size_t i) {
    std::lock_guard lk(mu_);
    return eofs_.count(i) != 0;
  }
  long lines() {
    std::lock_guard lk(mu_);
    return lines_;
  }

 private:
  void error(const std::string& e) {
    if (errors_.size() < 2000) errors_ += e + "\n";
  }
  void line(std::size_t i, std::string_view l) {
    std::lock_guard lk(mu_);
    ++lines_;
    char tag = 0;
    long who = 0, k = 0;
    if (!parse_tagged(l, tag, who, k)) {
      error("client " + std::to_string(i) + ": unparsable line '" + std::string(l) + "'");
      return;
    }
    if (tag == 'F') {
      long& last = fan_last_[{i, who}];
      if (fan_seen_.count({i, who}) != 0 && k <= last) {
        error("client " + std::to_string(i) + ": fan-out from " + std::to_string(who) +
              " went back or repeated: " + std::to_string(k) + " after " + std::to_string(last));
      }
      fan_seen_.insert({i, who});
      last = k;
      ++fan_count_[i];
      return;
    }
    if (static_cast<std::size_t>(who) != i) {
      error("client " + std::to_string(i) + ": got a line for client " + std::to_string(who) +
            ": '" + std::string(l) + "'");
      return;
    }
    long& n = next_[{i, tag}];
    if (k != n) {
      error("client " + std::to_string(i) + " stream " + std::string(1, tag) + ": got " +
            std::to_string(k) + ", want " + std::to_string(n) +
            (k > n ? " (lost " + std::to_string(k - n) + ")" : " (duplicate or reordered)"));
    }
    n = k + 1;
  }
  void run() {
    std::vector<pollfd> p(clients_.size());
    std::vector<bool> closed(clients_.size(), false);
    char buf[65536];
    while (!done_) {
      for (std::size_t i = 0; i < clients_.size(); ++i) {
        p[i].fd = closed[i] ? -1 : clients_[i].fd();
        p[i].events = POLLIN;
        p[i].revents = 0;
      }
      const int r = ::poll(p.data(), p.size(), 20);
      if (r <= 0) continue;
      for (std::size_t i = 0; i < clients_.size(); ++i) {
        if (p[i].revents == 0) continue;
        const ssize_t n = ::recv(p[i].fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
          std::string& b = bufs_[i];
          b.append(buf, static_cast<std::size_t>(n));
          std::size_t at = 0, nl;
          while ((nl = b.find('\n', at)) != std::string::npos) {
            line(i, std::string_view(b).substr(at, nl - at));
            at = nl + 1;
          }
          b.erase(0, at);
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          std::lock_guard lk(mu_);
          closed[i] = true;
          eofs_.insert(i);
          if (eof_ok_.count(i) == 0) {
            error("client " + std::to_string(i) + ": " +
                  (n == 0 ? std::string("EOF") : std::string("error ") + std::strerror(errno)) +
                  " from the server");
          }
        }
      }
    }
  }

  std::vector<Client>& clients_;
  std::vector<std::string> bufs_;
  std::thread th_;
  std::atomic<bool> done_{false};
  std::mutex mu_;
  std::map<std::pair<std::size_t, char>, long> next_;
  std::map<std::pair<std::size_t, long>, long> fan_last_;
  std::set<std::pair<std::size_t, long>> fan_seen_;
  std::map<std::size_t, long> fan_count_;
  std::set<std::size_t> eof_ok_, eofs_;
  std::string errors_;
  long lines_ = 0;
};

// Sends "P<i>:<k>" lines from one thread to every client, k counting per client.
class Pinger {
 public:
  Pinger(std::vector<Client>& clients, std::chrono::microseconds pace = 1000us)
      : clients_(clients), sent_(clients.size(), 0) {
    th_ = std::thread([this, pace] {
      while (!done_) {
        for (std::size_t i = 0; i < clients_.size() && !done_; ++i) {
          const std::string l = tagged('P', static_cast<long>(i), sent_[i]) + "\n";
          if (!clients_[i].send_all(l, 2s)) {
            std::lock_guard lk(mu_);
            failed_ = "pinger: send to client " + std::to_string(i) + " failed";
            return;
          }
          std::lock_guard lk(mu_);
          ++sent_[i];
        }
        std::this_thread::sleep_for(pace);
      }
    });
  }
  ~Pinger() { stop(); }
  void stop() {
    done_ = true;
    if (th_.joinable()) th_.join();
  }
  long sent(std::size_t i) {
    std::lock_guard lk(mu_);
    return sent_[i];
  }
  std::string failed() {
    std::lock_guard lk(mu_);
    return failed_;
  }

 private:
  std::vector<Client>& clients_;
  std::vector<long> sent_;
  std::thread th_;
  std::atomic<bool> done_{false};
  std::mutex mu_;
  std::string failed_;
};

// ------------------------------------------------------------------------- server side

// Per connection: the client's index (from "H<i>:0") and a count of fan-outs sent.
struct Session {
  long idx = -1;
  long fan_k = 0;
  std::deque<long> delayed;  // "D" messages whose reply a timer will send
};

// "H<i>:0" registers client i; "P<i>:<k>" echoes "E<i>:<k>"; "M<i>:<k>" replies "A", "B" and
// "C<i>:<k>" (three replies) and, with fan_out, sends "F<i>:<n>" to client (i+1) % n through
// Server::send; "D<i>:<k>" replies "E<i>:<k>" from a 2 ms timer. The state (index, fan-out
// count, delayed replies not yet sent) is carried over by the takeover hooks.
class Hub : public esockets::Handler {
 public:
  explicit Hub(std::size_t n) : ids(n), fan_ok(n) {
    for (auto& a : ids) a = 0;
    for (auto& a : fan_ok) a = 0;
  }
  std::vector<std::atomic<std::uint64_t>> ids;   // client index -> this server's id
  std::vector<std::atomic<long>>* shared_fan_ok = nullptr;  // counts across both servers
  std::vector<std::atomic<long>> fan_ok;
  Server* server = nullptr;
  bool fan_out = false;
  bool throw_on_takeover_odd = false;   // on_client_takeover throws for odd indexes
  bool refuse_restore_mod3 = false;     // on_client_restore returns false for idx % 3 == 0
  std::atomic<int> connects{0}, restores{0}, taken{0}, other_closes{0}, warnings{0},
      refused{0}, empty_restores{0};
  std::mutex mu;
  std::string last_warning;

  bool on_client_connect(Connection& c) override {
    c.emplace_state<Session>();
    connects++;
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    Session& s = *c.state<Session>();
    char tag = 0;
    long i = 0, k = 0;
    if (!parse_tagged(m, tag, i, k)) return;
    switch (tag) {
      case 'H':
        s.idx = i;
        if (static_cast<std::size_t>(i) < ids.size()) ids[i] = c.id().value();
        return;
      case 'P':
        c.send(tagged('E', i, k) + "\n");
        return;
      case 'M': {
        c.send(tagged('A', i, k) + "\n");
        c.send(tagged('B', i, k) + "\n");
        c.send(tagged('C', i, k) + "\n");
        if (fan_out && server != nullptr) {
          const std::size_t j = (static_cast<std::size_t>(i) + 1) % ids.size();
          const std::uint64_t to = ids[j].load();
          if (to != 0) {
            const SendStatus st = server->send(ConnectionId::from_value(to),
                                               tagged('F', i, s.fan_k) + "\n");
            if (st == SendStatus::ok) {
              ++s.fan_k;
              (shared_fan_ok != nullptr ? (*shared_fan_ok)[j] : fan_ok[j])++;
            }
          }
        }
        return;
      }
      case 'D':
        s.delayed.push_back(k);
        c.after(2ms, [i](Connection& cc) {
          Session& ss = *cc.state<Session>();
          if (ss.delayed.empty()) return;
          // Only a reply the engine accepted is done; any other stays pending (carried over).
          if (cc.send(tagged('E', i, ss.delayed.front()) + "\n") == SendStatus::ok) {
            ss.delayed.pop_front();
          }
        });
        return;
      default:
        return;
    }
  }
  std::string on_client_takeover(Connection& c) override {
    taken++;
    const Session& s = *c.state<Session>();
    if (throw_on_takeover_odd && s.idx % 2 == 1) throw std::runtime_error("odd one");
    std::string out = std::to_string(s.idx) + " " + std::to_string(s.fan_k);
    for (long d : s.delayed) out += " " + std::to_string(d);
    return out;
  }
  bool on_client_restore(Connection& c, std::string_view state) override {
    restores++;
    Session& s = c.emplace_state<Session>();
    if (state.empty()) {
      empty_restores++;
      return true;  // the client registers again with "H"
    }
    std::istringstream in{std::string(state)};
    in >> s.idx >> s.fan_k;
    long d;
    while (in >> d) s.delayed.push_back(d);
    if (refuse_restore_mod3 && s.idx % 3 == 0) {
      refused++;
      return false;
    }
    if (s.idx >= 0 && static_cast<std::size_t>(s.idx) < ids.size()) ids[s.idx] = c.id().value();
    // Delayed replies that did not go out in the old process go out from here, in order.
    const long i = s.idx;
    for (std::size_t n = 0; n < s.delayed.size(); ++n) {
      c.after(2ms, [i](Connection& cc) {
        Session& ss = *cc.state<Session>();
        if (ss.delayed.empty()) return;
        // Only a reply the engine accepted is done; any other stays pending (carried over).
        if (cc.send(tagged('E', i, ss.delayed.front()) + "\n") == SendStatus::ok) {
          ss.delayed.pop_front();
        }
      });
    }
    return true;
  }
  void on_client_disconnect(Connection&, CloseReason r) override {
    if (r != CloseReason::taken_over) other_closes++;
  }
  void on_warning(const esockets::Warning& w) override {
    warnings++;
    std::lock_guard lk(mu);
    last_warning = w.text;
  }
  std::string warning() {
    std::lock_guard lk(mu);
    return last_warning;
  }
};

// Connects n clients and registers each ("H<i>:0") with the hub; waits until all are known.
std::vector<Client> connect_registered(std::uint16_t port, std::size_t n, Hub& h) {
  std::vector<Client> clients;
  for (std::size_t i = 0; i < n; ++i) {
    clients.emplace_back(port);
    EXPECT_TRUE(clients.back().send_line(tagged('H', static_cast<long>(i), 0)));
  }
  EXPECT_TRUE(wait_until([&] {
    for (auto& a : h.ids) {
      if (a.load() == 0) return false;
    }
    return true;
  }, 10s));
  return clients;
}

// Waits until every client's stream `tag` reached `want(i)`; returns a description of those
// that did not.
std::string wait_streams(Checker& chk, std::size_t n, char tag,
                         const std::function<long(std::size_t)>& want,
                         std::chrono::milliseconds timeout = 10s) {
  wait_until([&] {
    for (std::size_t i = 0; i < n; ++i) {
      if (chk.next(i, tag) < want(i)) return false;
    }
    return true;
  }, timeout);
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    if (chk.next(i, tag) != want(i)) {
      out += "client " + std::to_string(i) + " stream " + std::string(1, tag) + ": got up to " +
             std::to_string(chk.next(i, tag)) + ", sent " + std::to_string(want(i)) + "\n";
    }
  }
  return out;
}

// ------------------------------------------------------------------------- foreign senders

struct Mode {
  unsigned old_shards, old_workers, new_shards, new_workers;
};
std::string mode_name(const ::testing::TestParamInfo<Mode>& i) {
  return "old" + std::to_string(i.param.old_shards) + "w" + std::to_string(i.param.old_workers) +
         "_new" + std::to_string(i.param.new_shards) + "w" + std::to_string(i.param.new_workers);
}

// A thread that is not an engine thread sends "<tag><i>:<k>" to every client, k counting per
// client, through the old server until a send returns closed (the connection left), then
// through the new server (the ids its on_client_restore published). With use_post the line is
// sent by a function given to Server::post. Counts only what returned ok.
class ForeignSender {
 public:
  ForeignSender(Server& old_srv, Hub& h_old, Hub& h_new, std::atomic<Server*>& new_srv,
                bool use_post)
      : n_(h_old.ids.size()), sent_(n_, 0), switched_(n_, false) {
    th_ = std::thread([&, use_post] {
      const char tag = use_post ? 'Q' : 'S';
      while (!done_) {
        for (std::size_t i = 0; i < n_ && !done_; ++i) {
          Server* srv = &old_srv;
          std::uint64_t id = 0;
          if (!switched_[i]) {
            id = h_old.ids[i].load();
          } else {
            srv = new_srv.load();
            if (srv == nullptr) continue;
            id = h_new.ids[i].load();
            if (id == 0) continue;
          }
          long k;
          {
            std::lock_guard lk(mu_);
            k = sent_[i];
          }
          const std::string l = tagged(tag, static_cast<long>(i), k) + "\n";
          SendStatus st;
          if (use_post) {
            const bool to_old = !switched_[i];
            st = srv->post(ConnectionId::from_value(id), [this, l, to_old](Connection& c) {
              if (to_old) ran_old_++;
              if (c.send(l) != SendStatus::ok) send_not_ok_++;
            });
          } else {
            st = srv->send(ConnectionId::from_value(id), l);
          }
          std::lock_guard lk(mu_);
          if (st == SendStatus::ok) {
            ++sent_[i];
            if (!switched_[i]) ++ok_old_;
          } else if (st == SendStatus::closed) {
            if (!switched_[i]) {
              switched_[i] = true;
              ++switches_;
            } else {
              errors_ += "client " + std::to_string(i) + ": the new server said closed\n";
            }
          }
        }
        std::this_thread::sleep_for(300us);
      }
    });
  }
  ~ForeignSender() { stop(); }
  void stop() {
    done_ = true;
    if (th_.joinable()) th_.join();
  }
  long sent(std::size_t i) {
    std::lock_guard lk(mu_);
    return sent_[i];
  }
  std::size_t switches() {
    std::lock_guard lk(mu_);
    return switches_;
  }
  std::string errors() {
    std::lock_guard lk(mu_);
    return errors_;
  }
  // With posts: how many returned ok from the old server, how many of their functions ran
  // there, and how many sends inside them did not return ok.
  std::string post_counts() {
    std::lock_guard lk(mu_);
    return "posts ok via the old server: " + std::to_string(ok_old_) +
           ", their functions run: " + std::to_string(ran_old_.load()) +
           ", sends in them not ok: " + std::to_string(send_not_ok_.load());
  }

 private:
  long ok_old_ = 0;
  std::atomic<long> ran_old_{0}, send_not_ok_{0};
  std::size_t n_;
  std::vector<long> sent_;
  std::vector<bool> switched_;
  std::size_t switches_ = 0;
  std::thread th_;
  std::atomic<bool> done_{false};
  std::mutex mu_;
  std::string errors_;
};

class ForeignDuringTakeover : public ::testing::TestWithParam<Mode> {
 protected:
  void run(bool use_post) {
    const Mode m = GetParam();
    const std::string path = temp_path(use_post ? "fpost" : "fsend");
    const std::size_t kClients = 24;
    Hub h_old(kClients), h_new(kClients);
    ServerOptions oo = line_options(m.old_shards, m.old_workers);
    oo.takeover_socket = path;
    Server old_srv(h_old, oo);
    old_srv.start();
    std::vector<Client> clients = connect_registered(old_srv.port(), kClients, h_old);
    Checker chk(clients);
    Pinger ping(clients);
    std::atomic<Server*> new_ptr{nullptr};
    ForeignSender sender(old_srv, h_old, h_new, new_ptr, use_post);
    const char tag = use_post ? 'Q' : 'S';
    ASSERT_TRUE(wait_until([&] { return sender.sent(kClients - 1) > 20; }, 5s));

    ServerOptions no = line_options(m.new_shards, m.new_workers);
    no.take_over = path;
    Server new_srv(h_new, no);
    new_ptr = &new_srv;
    new_srv.start();
    ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 10s));
    old_srv.wait();
    // Every connection switched to the new server and its stream goes on there.
    ASSERT_TRUE(wait_until([&] { return sender.switches() == kClients; }, 5s))
        << sender.switches();
    const long base = sender.sent(0);
    ASSERT_TRUE(wait_until([&] { return sender.sent(0) > base + 20; }, 5s));
    sender.stop();
    ping.stop();
    EXPECT_EQ(ping.failed(), "");
    EXPECT_EQ(sender.errors(), "");
    EXPECT_EQ(wait_streams(chk, kClients, tag, [&](std::size_t i) { return sender.sent(i); }), "");
    EXPECT_EQ(wait_streams(chk, kClients, 'E', [&](std::size_t i) { return ping.sent(i); }), "");
    chk.stop();
    EXPECT_EQ(chk.errors(), "") << (use_post ? sender.post_counts() : std::string());
    EXPECT_EQ(h_old.other_closes.load(), 0);
    EXPECT_EQ(h_new.other_closes.load(), 0);
    EXPECT_EQ(h_new.restores.load(), static_cast<int>(kClients));
    EXPECT_EQ(h_old.warnings.load(), 0) << h_old.warning();
    EXPECT_EQ(h_new.warnings.load(), 0) << h_new.warning();
    new_srv.stop();
  }
};

// Server::send from a foreign thread to every connection, continuously, across the takeover:
// every send that returned ok arrives exactly once, in order, and the stream continues on the
// new server with no gap; the clients' own echo stream is checked the same way.
TEST_P(ForeignDuringTakeover, SendsThatReturnedOkArriveExactlyOnceInOrder) { run(false); }

// The same with Server::post(id, fn) where fn sends the line: a post that returned ok ran
// its function (exactly once, in order) in one of the two servers.
TEST_P(ForeignDuringTakeover, PostsThatReturnedOkRunExactlyOnceInOrder) { run(true); }

INSTANTIATE_TEST_SUITE_P(Modes, ForeignDuringTakeover,
                         ::testing::Values(Mode{2, 0, 2, 0}, Mode{2, 2, 1, 2}, Mode{1, 0, 3, 2},
                                           Mode{3, 2, 2, 0}),
                         mode_name);

// ------------------------------------------------------------------------- workers, fan-out

// Workers: each message gets three replies and a fan-out to the next client (another shard,
// through Server::send from the worker); clients also send "D" messages answered from a
// connection timer 2 ms later (the pending ones are carried in the state). Messages keep
// flowing while the takeover runs. Each reply stream is exact; fan-out streams are ordered per
// source and their count equals the sends that returned ok.
class WorkersDuringTakeover : public ::testing::TestWithParam<Mode> {};

TEST_P(WorkersDuringTakeover, MultiReplyFanOutAndDelayedRepliesAreExact) {
  const Mode m = GetParam();
  const std::string path = temp_path("workers");
  const std::size_t kClients = 16;
  std::vector<std::atomic<long>> fan_ok(kClients);
  for (auto& a : fan_ok) a = 0;
  Hub h_old(kClients), h_new(kClients);
  h_old.fan_out = h_new.fan_out = true;
  h_old.shared_fan_ok = h_new.shared_fan_ok = &fan_ok;
  ServerOptions oo = line_options(m.old_shards, m.old_workers);
  oo.takeover_socket = path;
  Server old_srv(h_old, oo);
  h_old.server = &old_srv;
  old_srv.start();
  std::vector<Client> clients = connect_registered(old_srv.port(), kClients, h_old);
  Checker chk(clients);
  std::atomic<bool> done{false};
  std::vector<long> msent(kClients, 0), dsent(kClients, 0);
  std::string wfail;
  std::thread writer([&] {
    while (!done) {
      for (std::size_t i = 0; i < kClients; ++i) {
        const long li = static_cast<long>(i);
        std::string out = tagged('M', li, msent[i]) + "\n" + tagged('D', li, dsent[i]) + "\n";
        if (!clients[i].send_all(out, 2s)) {
          wfail = "write to client " + std::to_string(i) + " failed";
          return;
        }
        ++msent[i];
        ++dsent[i];
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  ASSERT_TRUE(wait_until([&] { return chk.next(kClients - 1, 'C') > 20; }, 5s));
  ServerOptions no = line_options(m.new_shards, m.new_workers);
  no.take_over = path;
  Server new_srv(h_new, no);
  h_new.server = &new_srv;
  new_srv.start();
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 10s));
  old_srv.wait();
  const long base = chk.next(0, 'C');
  EXPECT_TRUE(wait_until([&] { return chk.next(0, 'C') > base + 20; }, 5s));
  done = true;
  writer.join();
  EXPECT_EQ(wfail, "");
  for (char tag : {'A', 'B', 'C'}) {
    EXPECT_EQ(wait_streams(chk, kClients, tag, [&](std::size_t i) { return msent[i]; }), "");
  }
  EXPECT_EQ(wait_streams(chk, kClients, 'E', [&](std::size_t i) { return dsent[i]; }), "");
  wait_until([&] {
    for (std::size_t i = 0; i < kClients; ++i) {
      if (chk.fanout_count(i) < fan_ok[i].load()) return false;
    }
    return true;
  }, 5s);
  for (std::size_t i = 0; i < kClients; ++i) {
    EXPECT_EQ(chk.fanout_count(i), fan_ok[i].load()) << "fan-out lines to client " << i;
  }
  chk.stop();
  EXPECT_EQ(chk.errors(), "");
  EXPECT_EQ(h_old.other_closes.load(), 0);
  EXPECT_EQ(h_new.other_closes.load(), 0);
  EXPECT_EQ(h_old.warnings.load(), 0) << h_old.warning();
  EXPECT_EQ(h_new.warnings.load(), 0) << h_new.warning();
  new_srv.stop();
}

INSTANTIATE_TEST_SUITE_P(Modes, WorkersDuringTakeover,
                         ::testing::Values(Mode{2, 2, 2, 2}, Mode{2, 0, 2, 2}, Mode{2, 2, 3, 0},
                                           Mode{3, 0, 1, 0}),
                         mode_name);

// ------------------------------------------------------------------------- connect storm

// Clients keep connecting while the takeover runs: none is refused or reset, and every one is
// answered afterwards (by whichever server holds it).
TEST(TakeoverAdversarial, ConnectStormDuringTakeoverLosesNoClient) {
  const std::string path = temp_path("storm");
  const std::size_t kMax = esockets::test::scaled(400, 50);
  Hub h_old(kMax), h_new(kMax);
  ServerOptions oo = line_options(3, 0);
  oo.takeover_socket = path;
  oo.backlog = 1024;
  Server old_srv(h_old, oo);
  old_srv.start();
  const std::uint16_t port = old_srv.port();
  std::vector<Client> clients;
  std::atomic<bool> stop_storm{false};
  std::string storm_err;
  std::thread storm([&] {
    while (!stop_storm && clients.size() < kMax) {
      Client c;
      if (!c.connect(port)) {
        storm_err = std::string("connect failed: ") + std::strerror(errno);
        return;
      }
      const long i = static_cast<long>(clients.size());
      if (!c.send_line(tagged('P', i, 0), 2s)) {
        storm_err = "send failed on client " + std::to_string(i);
        return;
      }
      clients.push_back(std::move(c));
      if (clients.size() % 8 == 0) std::this_thread::sleep_for(1ms);
    }
  });
  ASSERT_TRUE(wait_until([&] { return h_old.connects.load() > 40; }, 5s));
  ServerOptions no = line_options(2, 2);
  no.take_over = path;
  Server new_srv(h_new, no);
  new_srv.start();
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 10s));
  old_srv.wait();
  std::this_thread::sleep_for(50ms);  // a few more connects after the hand-over
  stop_storm = true;
  storm.join();
  EXPECT_EQ(storm_err, "");
  std::size_t bad = 0;
  std::string first;
  for (std::size_t i = 0; i < clients.size(); ++i) {
    std::string got;
    const long li = static_cast<long>(i);
    bool ok = clients[i].recv_line(got, 5s) && got == tagged('E', li, 0);
    ok = ok && clients[i].send_line(tagged('P', li, 1)) && clients[i].recv_line(got, 5s) &&
         got == tagged('E', li, 1);
    if (!ok) {
      if (bad++ == 0) first = "client " + std::to_string(i) + " got '" + got + "'";
    }
  }
  EXPECT_EQ(bad, 0u) << first << " (of " << clients.size() << ")";
  EXPECT_EQ(h_old.other_closes.load(), 0);
  EXPECT_EQ(h_new.other_closes.load(), 0);
  EXPECT_TRUE(wait_until([&] { return new_srv.client_count() == clients.size(); }, 5s))
      << new_srv.client_count() << " of " << clients.size();
  new_srv.stop();
}

// ------------------------------------------------------------------------- chained, Unix

// A -> B -> C, each offering the same control path again, with a TCP and a Unix listener;
// clients on both keep their numbered streams through both hand-overs.
TEST(TakeoverAdversarial, ChainedTakeoversOverTcpAndUnixListeners) {
  const std::string path = temp_path("chain");
  const std::string upath = temp_path("chain-unix.sock");
  const auto opts = [&](unsigned shards, unsigned workers) {
    ServerOptions o = line_options(shards, workers);
    esockets::ListenerOptions t, u;
    t.address = "127.0.0.1:0";
    u.address = "unix:" + upath;
    o.listeners = {t, u};
    o.takeover_socket = path;
    return o;
  };
  const std::size_t kClients = 12;
  Hub ha(kClients), hb(kClients), hc(kClients);
  ServerOptions oa = opts(2, 0);
  auto a = std::make_unique<Server>(ha, oa);
  a->start();
  std::vector<Client> clients;
  for (std::size_t i = 0; i < kClients; ++i) {
    Client c;
    if (i % 2 == 0) {
      ASSERT_TRUE(c.connect(a->port()));
    } else {
      ASSERT_TRUE(c.connect("unix:" + upath)) << std::strerror(errno);
    }
    ASSERT_TRUE(c.send_line(tagged('H', static_cast<long>(i), 0)));
    clients.push_back(std::move(c));
  }
  Checker chk(clients);
  Pinger ping(clients);
  ASSERT_TRUE(wait_until([&] { return chk.next(kClients - 1, 'E') > 10; }, 5s));
  ServerOptions ob = opts(1, 2);
  ob.take_over = path;
  auto b = std::make_unique<Server>(hb, ob);
  b->start();
  ASSERT_TRUE(wait_until([&] { return !a->running(); }, 10s));
  a->wait();
  long at = chk.next(0, 'E');
  ASSERT_TRUE(wait_until([&] { return chk.next(0, 'E') > at + 10; }, 5s));
  ServerOptions oc = opts(3, 0);
  oc.take_over = path;
  auto c = std::make_unique<Server>(hc, oc);
  c->start();
  ASSERT_TRUE(wait_until([&] { return !b->running(); }, 10s));
  b->wait();
  at = chk.next(0, 'E');
  EXPECT_TRUE(wait_until([&] { return chk.next(0, 'E') > at + 10; }, 5s));
  // A late client on each listener reaches C.
  Client lt, lu;
  ASSERT_TRUE(lt.connect(c->port()));
  ASSERT_TRUE(lu.connect("unix:" + upath)) << std::strerror(errno);
  std::string got;
  ASSERT_TRUE(lt.send_line("P0:99"));
  ASSERT_TRUE(lt.recv_line(got, 5s));
  EXPECT_EQ(got, "E0:99");
  ASSERT_TRUE(lu.send_line("P0:98"));
  ASSERT_TRUE(lu.recv_line(got, 5s));
  EXPECT_EQ(got, "E0:98");
  ping.stop();
  EXPECT_EQ(ping.failed(), "");
  EXPECT_EQ(wait_streams(chk, kClients, 'E', [&](std::size_t i) { return ping.sent(i); }), "");
  chk.stop();
  EXPECT_EQ(chk.errors(), "");
  EXPECT_EQ(hb.restores.load(), static_cast<int>(kClients));
  EXPECT_EQ(hc.restores.load(), static_cast<int>(kClients));
  EXPECT_EQ(ha.other_closes.load() + hb.other_closes.load(), 0);
  EXPECT_EQ(hc.warnings.load(), 0) << hc.warning();
  c->stop();
}

// ------------------------------------------------------------------------- hooks misbehaving

// on_client_takeover throws for odd clients (they move without state: the new server sees an
// empty state); on_client_restore refuses clients whose index is a multiple of 3 (they get a
// FIN, not a reset, and everything queued for them before).
class HooksMisbehave : public ::testing::TestWithParam<unsigned> {};

TEST_P(HooksMisbehave, ThrowingTakeoverAndRefusingRestoreCostOnlyThoseClients) {
  const unsigned workers = GetParam();
  const std::string path = temp_path("hooks");
  const std::size_t kClients = 12;
  Hub h_old(kClients), h_new(kClients);
  h_old.throw_on_takeover_odd = true;
  h_new.refuse_restore_mod3 = true;
  ServerOptions oo = line_options(2, workers);
  oo.takeover_socket = path;
  Server old_srv(h_old, oo);
  old_srv.start();
  std::vector<Client> clients = connect_registered(old_srv.port(), kClients, h_old);
  for (std::size_t i = 0; i < kClients; ++i) {
    std::string got;
    ASSERT_TRUE(clients[i].send_line(tagged('P', static_cast<long>(i), 0)));
    ASSERT_TRUE(clients[i].recv_line(got, 5s));
  }
  ServerOptions no = line_options(2, workers);
  no.take_over = path;
  Server new_srv(h_new, no);
  new_srv.start();
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 10s));
  old_srv.wait();
  EXPECT_TRUE(wait_until([&] { return h_new.restores.load() == static_cast<int>(kClients); }, 5s));
  // Odd clients whose index is a multiple of 3 threw in the old one: empty state, not refused.
  int want_refused = 0;
  for (std::size_t i = 0; i < kClients; ++i) want_refused += (i % 2 == 0 && i % 3 == 0) ? 1 : 0;
  EXPECT_EQ(h_new.refused.load(), want_refused);
  EXPECT_EQ(h_new.empty_restores.load(), static_cast<int>(kClients / 2));
  for (std::size_t i = 0; i < kClients; ++i) {
    const long li = static_cast<long>(i);
    if (i % 2 == 1) {
      ASSERT_TRUE(clients[i].send_line(tagged('H', li, 0)));  // registers again
    }
    std::string got;
    if (i % 2 == 0 && i % 3 == 0) {
      EXPECT_EQ(clients[i].wait_eof(5s), esockets::test::EofResult::eof) << "client " << i;
      continue;
    }
    ASSERT_TRUE(clients[i].send_line(tagged('P', li, 1)));
    ASSERT_TRUE(clients[i].recv_line(got, 5s)) << "client " << i;
    EXPECT_EQ(got, tagged('E', li, 1));
  }
  EXPECT_TRUE(old_srv.stats().total.warnings_by_code[static_cast<std::size_t>(
                  esockets::WarningCode::handler_exception)] >= kClients / 2);
  new_srv.stop();
}

INSTANTIATE_TEST_SUITE_P(Workers, HooksMisbehave, ::testing::Values(0u, 2u),
                         [](const ::testing::TestParamInfo<unsigned>& i) {
                           return "workers" + std::to_string(i.param);
                         });

// ------------------------------------------------------------------------- stop / resize races

// Each client's echo stream must stay exact; a client may end with a clean EOF (a server
// stopped) but never with a reset or a hang: after the races, each client either round-trips
// with the next number or sees EOF.
void expect_answered_or_eof(std::vector<Client>& clients, std::vector<long>& next,
                            bool allow_eof) {
  std::size_t eofs = 0;
  for (std::size_t i = 0; i < clients.size(); ++i) {
    const long li = static_cast<long>(i);
    std::string got;
    const bool sent = clients[i].send_line(tagged('P', li, next[i]), 2s);
    if (sent && clients[i].recv_line(got, 5s)) {
      EXPECT_EQ(got, tagged('E', li, next[i])) << "client " << i;
      ++next[i];
      continue;
    }
    const auto r = clients[i].wait_eof(2s);
    if (allow_eof && r == esockets::test::EofResult::eof) {
      ++eofs;
      continue;
    }
    ADD_FAILURE() << "client " << i << ": no answer to " << tagged('P', li, next[i])
                  << ", then " << esockets::test::to_string(r);
  }
  (void)eofs;
}

// The old server is stopped (from another thread) while a new one takes over: no crash or
// hang; every client is answered by one of them or closed cleanly by the old one's stop.
TEST(TakeoverAdversarial, StopOfTheOldServerDuringTheTakeover) {
  for (int round = 0; round < 4; ++round) {
    const std::string path = temp_path("stopold" + std::to_string(round));
    const std::size_t kClients = 16;
    Hub h_old(kClients), h_new(kClients);
    ServerOptions oo = line_options(2, round % 2 == 0 ? 0 : 2);
    oo.takeover_socket = path;
    Server old_srv(h_old, oo);
    old_srv.start();
    std::vector<Client> clients = connect_registered(old_srv.port(), kClients, h_old);
    std::vector<long> next(kClients, 0);
    expect_answered_or_eof(clients, next, false);
    ServerOptions no = line_options(2, 0);
    no.take_over = path;
    Server new_srv(h_new, no);
    std::thread stopper([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(300 * round));
      old_srv.stop();
    });
    bool started = true;
    try {
      new_srv.start();
    } catch (const std::exception& e) {
      started = false;  // the old server stopped first: refused
    }
    stopper.join();
    EXPECT_FALSE(old_srv.running());
    expect_answered_or_eof(clients, next, true);
    if (started) {
      Client late(new_srv.port());
      ASSERT_TRUE(late.send_line("P0:7"));
      std::string got;
      ASSERT_TRUE(late.recv_line(got, 5s)) << "round " << round;
      EXPECT_EQ(got, "E0:7");
      new_srv.stop();
    }
  }
}

// The new server is stopped right after start() returns: every client gets the replies to
// what it sent, then a clean EOF (shutdown), never a reset.
TEST(TakeoverAdversarial, StopOfTheNewServerRightAfterStart) {
  for (unsigned workers : {0u, 2u}) {
    const std::string path = temp_path("stopnew" + std::to_string(workers));
    const std::size_t kClients = 16;
    Hub h_old(kClients), h_new(kClients);
    ServerOptions oo = line_options(2, workers);
    oo.takeover_socket = path;
    Server old_srv(h_old, oo);
    old_srv.start();
    std::vector<Client> clients = connect_registered(old_srv.port(), kClients, h_old);
    // Lines in flight during the takeover.
    for (std::size_t i = 0; i < kClients; ++i) {
      std::string burst;
      for (long k = 0; k < 20; ++k) burst += tagged('P', static_cast<long>(i), k) + "\n";
      ASSERT_TRUE(clients[i].send_all(burst));
    }
    ServerOptions no = line_options(1, workers);
    no.take_over = path;
    Server new_srv(h_new, no);
    new_srv.start();
    new_srv.stop();
    ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 10s));
    old_srv.wait();
    for (std::size_t i = 0; i < kClients; ++i) {
      std::string data;
      const auto r = clients[i].wait_eof(5s, &data);
      EXPECT_EQ(r, esockets::test::EofResult::eof) << "client " << i << " workers " << workers;
      std::string want;
      for (long k = 0; k < 20; ++k) want += tagged('E', static_cast<long>(i), k) + "\n";
      EXPECT_EQ(data, want) << "client " << i << " workers " << workers;
    }
  }
}

// set_shards() on the old server from another thread while the takeover runs (they take the
// same lock): no deadlock, nothing lost; resizing the new server right after start() too.
TEST(TakeoverAdversarial, ConcurrentSetShardsOnBothSides) {
  const std::string path = temp_path("resize");
  const std::size_t kClients = 24;
  Hub h_old(kClients), h_new(kClients);
  ServerOptions oo = line_options(2, 0);
  oo.takeover_socket = path;
  Server old_srv(h_old, oo);
  old_srv.start();
  std::vector<Client> clients = connect_registered(old_srv.port(), kClients, h_old);
  Checker chk(clients);
  Pinger ping(clients);
  std::atomic<bool> done{false};
  std::thread resizer([&] {
    unsigned n = 3;
    while (!done && old_srv.running()) {
      try {
        old_srv.set_shards(n);
      } catch (...) {
      }
      n = n == 3 ? 1 : 3;
      std::this_thread::sleep_for(2ms);
    }
  });
  ASSERT_TRUE(wait_until([&] { return chk.next(kClients - 1, 'E') > 10; }, 5s));
  ServerOptions no = line_options(2, 2);
  no.take_over = path;
  Server new_srv(h_new, no);
  new_srv.start();
  std::thread new_resizer([&] {
    for (unsigned n : {3u, 1u, 4u, 2u}) {
      new_srv.set_shards(n);
      new_srv.rebalance();
    }
  });
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 10s));
  done = true;
  resizer.join();
  new_resizer.join();
  old_srv.wait();
  const long at = chk.next(0, 'E');
  EXPECT_TRUE(wait_until([&] { return chk.next(0, 'E') > at + 10; }, 5s));
  ping.stop();
  EXPECT_EQ(ping.failed(), "");
  EXPECT_EQ(wait_streams(chk, kClients, 'E', [&](std::size_t i) { return ping.sent(i); }), "");
  chk.stop();
  EXPECT_EQ(chk.errors(), "");
  EXPECT_EQ(h_old.other_closes.load() + h_new.other_closes.load(), 0);
  EXPECT_EQ(new_srv.client_count(), kClients);
  new_srv.stop();
}

// ------------------------------------------------------------------------- flow control

// A producer driven by the watermarks: on "GO" it sends numbered lines until on_output_high,
// and resumes on on_output_low, up to kTotal lines. The client reads until the old server's
// queue sits between the low and the high watermark (the producer is waiting for
// on_output_low), stops reading, and the takeover runs. The producer's state (next number,
// waiting) is carried over; the new server must tell it when to resume, or the stream stalls.
class Producer : public esockets::Handler {
 public:
  static constexpr long kTotal = 4000;
  struct St {
    long next = 0;
    bool waiting = false;
    bool running = false;
    bool scheduled = false;
  };
  std::atomic<int> highs{0}, lows{0}, restores{0};
  // Sends a batch of 100 lines, then again 1 ms later, until told to wait or done.
  static void pump(Connection& c) {
    St& s = *c.state<St>();
    if (!s.running || s.waiting || s.next >= kTotal) {
      s.scheduled = false;
      return;
    }
    for (int n = 0; n < 100 && s.next < kTotal; ++n) {
      const std::string l = tagged('S', 0, s.next) + std::string(200, '.') + "\n";
      if (c.send(l) != SendStatus::ok) return;
      ++s.next;
    }
    s.scheduled = true;
    c.after(1ms, [](Connection& cc) { pump(cc); });
  }
  bool on_client_connect(Connection& c) override {
    c.emplace_state<St>();
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    if (m == "GO") {
      c.state<St>()->running = true;
      if (!c.state<St>()->scheduled) pump(c);
    }
  }
  void on_output_high(Connection& c) override {
    highs++;
    c.state<St>()->waiting = true;
  }
  void on_output_low(Connection& c) override {
    lows++;
    St& s = *c.state<St>();
    s.waiting = false;
    if (!s.scheduled) pump(c);
  }
  std::string on_client_takeover(Connection& c) override {
    const St& s = *c.state<St>();
    return std::to_string(s.next) + " " + (s.waiting ? "1" : "0") + " " + (s.running ? "1" : "0");
  }
  bool on_client_restore(Connection& c, std::string_view state) override {
    restores++;
    St& s = c.emplace_state<St>();
    int w = 0, r = 0;
    std::istringstream in{std::string(state)};
    in >> s.next >> w >> r;
    s.waiting = w != 0;
    s.running = r != 0;
    if (!s.waiting) pump(c);  // it was not told to wait: go on producing
    return true;
  }
};

TEST(TakeoverAdversarial, WatermarkDrivenProducerResumesAfterTakeover) {
  const std::string path = temp_path("watermark");
  Producer h_old, h_new;
  const auto opts = [] {
    ServerOptions o = line_options(1, 0);
    o.output_high_watermark = 256 * 1024;
    o.output_low_watermark = 64 * 1024;
    o.socket_send_buffer = 16 * 1024;
    return o;
  };
  ServerOptions oo = opts();
  oo.takeover_socket = path;
  Server old_srv(h_old, oo);
  old_srv.start();
  Client c(old_srv.port());
  // 64 KiB: with less, loopback TCP (MSS 32 KiB) can leave the window below one segment and
  // send only on its persist timer, a few hundred KiB a second whatever the server does.
  c.set_rcvbuf(64 * 1024);
  ASSERT_TRUE(c.send_line("GO"));
  ASSERT_TRUE(wait_until([&] { return h_old.highs.load() == 1; }, 5s));
  // Read until the old server's queue is below the high watermark but above the low one.
  std::string rx;
  const auto in_band = [&] {
    const auto q = old_srv.stats().total.output_bytes;
    return q < oo.output_high_watermark - 32 * 1024 && q > oo.output_low_watermark + 32 * 1024;
  };
  const auto deadline = Clock::now() + 5s;
  while (!in_band() && Clock::now() < deadline) {
    std::string chunk;
    (void)c.recv_exact(4096, chunk, 1s);
    rx += chunk;
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(in_band()) << old_srv.stats().total.output_bytes;
  ASSERT_EQ(h_old.lows.load(), 0);
  ServerOptions no = opts();
  no.take_over = path;
  Server new_srv(h_new, no);
  new_srv.start();
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 10s));
  old_srv.wait();
  // Read everything: every line 0 .. kTotal-1, exactly once, in order.
  const std::size_t kLine = tagged('S', 0, 0).size() + 200 + 1;  // grows with the number
  (void)kLine;
  long next = 0;
  std::string buf = rx;
  const auto end = Clock::now() + 3s;
  std::string err;
  while (next < Producer::kTotal && Clock::now() < end && err.empty()) {
    std::size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      const std::string l = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      char tag;
      long i, k;
      if (!parse_tagged(l.substr(0, l.find('.')), tag, i, k) || k != next) {
        err = "got '" + l.substr(0, 20) + "', want S0:" + std::to_string(next);
        break;
      }
      ++next;
    }
    const std::string more = c.recv_for(50ms);
    buf += more;
  }
  EXPECT_EQ(err, "");
  EXPECT_EQ(next, Producer::kTotal) << "the stream stalled after the takeover (lows in the new "
                                       "server: "
                                    << h_new.lows.load() << ", highs: " << h_new.highs.load()
                                    << ", queued: " << new_srv.stats().total.output_bytes << ")";
  new_srv.stop();
}

// ------------------------------------------------------------------------- framing, pause

// A decoder for "<n>:<payload of n bytes>" messages (netstring-like, no trailing comma).
class ColonDecoder : public esockets::Decoder {
 public:
  esockets::Decoded decode(Bytes in, std::uint64_t& progress) const override {
    (void)progress;
    const auto colon = in.find(':');
    if (colon == std::string_view::npos) {
      if (in.size() > 10) return esockets::Decoded::malformed("no colon");
      return esockets::Decoded::need_more();
    }
    const std::size_t n = std::strtoul(std::string(in.substr(0, colon)).c_str(), nullptr, 10);
    if (in.size() < colon + 1 + n) return esockets::Decoded::need_more(colon + 1 + n);
    return esockets::Decoded::message(colon + 1 + n, colon + 1, n);
  }
};

// Mid-frame input in length-prefixed and custom framing, and a paused connection with whole
// messages waiting: after the takeover the partial messages complete, the paused client's
// messages come once it is resumed (through Server::post on the new server), all in order.
class FramingAcross : public ::testing::TestWithParam<int> {};

class FrameEcho : public esockets::Handler {
 public:
  std::atomic<int> restores{0};
  std::vector<std::atomic<std::uint64_t>> ids = std::vector<std::atomic<std::uint64_t>>(4);
  bool custom = false;
  bool on_client_connect(Connection&) override { return true; }
  void on_message_recv(Connection& c, Bytes m) override {
    if (m.rfind("PAUSE", 0) == 0) {
      ids[std::strtoul(std::string(m.substr(5)).c_str(), nullptr, 10)] = c.id().value();
      c.pause_reading();
      c.send("paused\n");
      return;
    }
    if (m.rfind("ID", 0) == 0) {
      ids[std::strtoul(std::string(m.substr(2)).c_str(), nullptr, 10)] = c.id().value();
      return;
    }
    c.send(std::string(m) + "\n");
  }
  std::string on_client_takeover(Connection& c) override { return std::to_string(c.id().value()); }
  bool on_client_restore(Connection& c, std::string_view s) override {
    const std::uint64_t old_id = std::strtoull(std::string(s).c_str(), nullptr, 10);
    (void)old_id;
    restores++;
    std::lock_guard lk(mu);
    restored.push_back(c.id().value());
    return true;
  }
  std::mutex mu;
  std::vector<std::uint64_t> restored;
};

std::string frame_of(int kind, const std::string& payload) {
  if (kind == 0) {
    std::string f(4, '\0');
    const auto n = static_cast<std::uint32_t>(payload.size());
    f[0] = static_cast<char>(n >> 24);
    f[1] = static_cast<char>(n >> 16);
    f[2] = static_cast<char>(n >> 8);
    f[3] = static_cast<char>(n);
    return f + payload;
  }
  return std::to_string(payload.size()) + ":" + payload;
}

TEST_P(FramingAcross, PartialFramesAndPausedInputCompleteInTheNewServer) {
  const int kind = GetParam();  // 0 length-prefixed, 1 custom decoder
  const std::string path = temp_path("framing" + std::to_string(kind));
  FrameEcho h_old, h_new;
  const auto opts = [&] {
    ServerOptions o = esockets::test::loopback_options(2, kind == 1 ? 2 : 0);
    if (kind == 0) {
      o.framing = esockets::Framing::length_prefixed;
      o.length_prefix_bytes = 4;
    } else {
      o.framing = esockets::Framing::custom;
      o.decoder = std::make_shared<ColonDecoder>();
    }
    return o;
  };
  ServerOptions oo = opts();
  oo.takeover_socket = path;
  Server old_srv(h_old, oo);
  old_srv.start();
  Client a(old_srv.port()), p(old_srv.port());
  // a: one whole message answered, then a message cut inside its header and one cut inside
  // its payload follow in pieces across the takeover.
  ASSERT_TRUE(a.send_all(frame_of(kind, "a-0")));
  std::string got;
  ASSERT_TRUE(a.recv_line(got, 5s));
  ASSERT_EQ(got, "a-0");
  const std::string f1 = frame_of(kind, "a-1-" + std::string(3000, 'x'));
  const std::string f2 = frame_of(kind, "a-2");
  ASSERT_TRUE(a.send_all(f1.substr(0, 2)));
  // p: paused, then whole messages wait in its input.
  ASSERT_TRUE(p.send_all(frame_of(kind, "PAUSE1")));
  ASSERT_TRUE(p.recv_line(got, 5s));
  ASSERT_EQ(got, "paused");
  std::string pending;
  for (int k = 0; k < 50; ++k) pending += frame_of(kind, "p-" + std::to_string(k));
  ASSERT_TRUE(p.send_all(pending));
  ASSERT_TRUE(wait_until([&] { return old_srv.stats().total.bytes_in > 0; }, 2s));
  std::this_thread::sleep_for(20ms);  // let the old server read some of it
  ASSERT_TRUE(a.send_all(f1.substr(2, 1500)));
  std::this_thread::sleep_for(20ms);

  ServerOptions no = opts();
  no.take_over = path;
  Server new_srv(h_new, no);
  new_srv.start();
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 10s));
  old_srv.wait();
  ASSERT_TRUE(a.send_all(f1.substr(1502) + f2));
  ASSERT_TRUE(a.recv_line(got, 5s));
  EXPECT_EQ(got, "a-1-" + std::string(3000, 'x'));
  ASSERT_TRUE(a.recv_line(got, 5s));
  EXPECT_EQ(got, "a-2");
  // The paused client still is paused: nothing comes until it is resumed.
  EXPECT_EQ(p.poll_once(100ms), esockets::test::EofResult::timeout);
  ASSERT_TRUE(wait_until([&] { return h_new.restores.load() == 2; }, 5s));
  std::vector<std::uint64_t> ids;
  {
    std::lock_guard lk(h_new.mu);
    ids = h_new.restored;
  }
  for (std::uint64_t id : ids) {
    (void)new_srv.post(ConnectionId::from_value(id), [](Connection& c) { c.resume_reading(); });
  }
  for (int k = 0; k < 50; ++k) {
    ASSERT_TRUE(p.recv_line(got, 5s)) << k;
    ASSERT_EQ(got, "p-" + std::to_string(k));
  }
  new_srv.stop();
}

INSTANTIATE_TEST_SUITE_P(Kinds, FramingAcross, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return i.param == 0 ? std::string("length_prefixed")
                                               : std::string("custom_decoder");
                         });

// ------------------------------------------------------------------------- half close, reset

// Clients that half-close (with lines still unanswered) or reset just before / while the
// takeover runs: the half-closed ones get every reply and then a FIN, from whichever server;
// the resets cost nobody else anything.
TEST(TakeoverAdversarial, HalfClosedAndResettingClientsAtTheMomentOfTakeover) {
  for (unsigned workers : {0u, 2u}) {
    const std::string path = temp_path("halfreset" + std::to_string(workers));
    const std::size_t kClients = 24;
    Hub h_old(kClients), h_new(kClients);
    ServerOptions oo = line_options(2, workers);
    oo.takeover_socket = path;
    Server old_srv(h_old, oo);
    old_srv.start();
    std::vector<Client> clients = connect_registered(old_srv.port(), kClients, h_old);
    ServerOptions no = line_options(2, workers);
    no.take_over = path;
    Server new_srv(h_new, no);
    std::thread taker([&] { new_srv.start(); });
    for (std::size_t i = 0; i < kClients; ++i) {
      std::string burst;
      for (long k = 0; k < 10; ++k) burst += tagged('P', static_cast<long>(i), k) + "\n";
      (void)clients[i].send_all(burst);
      if (i % 3 == 0) clients[i].shutdown_write();
      if (i % 3 == 1) clients[i].reset();
    }
    taker.join();
    ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 10s));
    old_srv.wait();
    for (std::size_t i = 0; i < kClients; ++i) {
      const long li = static_cast<long>(i);
      if (i % 3 == 1) continue;
      std::string want;
      for (long k = 0; k < 10; ++k) want += tagged('E', li, k) + "\n";
      if (i % 3 == 0) {
        std::string data;
        EXPECT_EQ(clients[i].wait_eof(5s, &data), esockets::test::EofResult::eof)
            << "client " << i << " workers " << workers;
        EXPECT_EQ(data, want) << "client " << i << " workers " << workers;
      } else {
        std::string data;
        EXPECT_TRUE(clients[i].recv_exact(want.size(), data, 5s))
            << "client " << i << " workers " << workers;
        EXPECT_EQ(data, want);
        std::string got;
        ASSERT_TRUE(clients[i].send_line(tagged('P', li, 10)));
        ASSERT_TRUE(clients[i].recv_line(got, 5s)) << "client " << i;
        EXPECT_EQ(got, tagged('E', li, 10));
      }
    }
    EXPECT_TRUE(wait_until([&] { return new_srv.client_count() == kClients / 3; }, 5s))
        << new_srv.client_count();
    new_srv.stop();
  }
}

// A takeover that fails at once (the new server has a listener too many) and then one that
// works, with clients sending throughout: no client notices either.
TEST(TakeoverAdversarial, TakeoverRightAfterAFailedOneUnderTraffic) {
  const std::string path = temp_path("refail");
  const std::size_t kClients = 12;
  Hub h_old(kClients), h_bad(kClients), h_new(kClients);
  ServerOptions oo = line_options(2, 2);
  oo.takeover_socket = path;
  Server old_srv(h_old, oo);
  old_srv.start();
  std::vector<Client> clients = connect_registered(old_srv.port(), kClients, h_old);
  Checker chk(clients);
  Pinger ping(clients);
  ASSERT_TRUE(wait_until([&] { return chk.next(kClients - 1, 'E') > 5; }, 5s));
  {
    ServerOptions bo = line_options(1, 0);
    bo.take_over = path;
    bo.listeners = {esockets::ListenerOptions{}, esockets::ListenerOptions{}};
    bo.listeners[0].address = "127.0.0.1:0";
    bo.listeners[1].address = "127.0.0.1:0";
    Server bad(h_bad, bo);
    EXPECT_THROW(bad.start(), std::exception);
  }
  // Immediately (the old server may not even have listened on the path again).
  ServerOptions no = line_options(3, 0);
  no.take_over = path;
  std::unique_ptr<Server> new_holder;
  const auto deadline = Clock::now() + 5s;
  int attempts = 0;
  while (!new_holder && Clock::now() < deadline) {
    auto s = std::make_unique<Server>(h_new, no);
    ++attempts;
    try {
      s->start();
      new_holder = std::move(s);
    } catch (const std::exception&) {
      std::this_thread::sleep_for(5ms);  // the path is not offered again yet
    }
  }
  ASSERT_TRUE(new_holder) << attempts << " attempts";
  Server& new_srv = *new_holder;
  ASSERT_TRUE(wait_until([&] { return !old_srv.running(); }, 10s));
  old_srv.wait();
  const long at = chk.next(0, 'E');
  EXPECT_TRUE(wait_until([&] { return chk.next(0, 'E') > at + 10; }, 5s));
  ping.stop();
  EXPECT_EQ(ping.failed(), "");
  EXPECT_EQ(wait_streams(chk, kClients, 'E', [&](std::size_t i) { return ping.sent(i); }), "");
  chk.stop();
  EXPECT_EQ(chk.errors(), "");
  EXPECT_EQ(h_new.restores.load(), static_cast<int>(kClients));
  new_srv.stop();
}

}  // namespace

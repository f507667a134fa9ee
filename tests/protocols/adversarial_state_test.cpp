// Adversarial tests of typed per-connection state (Connection::emplace_state / state /
// reset_state): every state object is destroyed exactly once, after on_client_disconnect (or by
// a later emplace_state / reset_state), on the thread that ran on_client_disconnect; it follows
// the connection across hand-overs; refused connections and connections whose on_client_connect
// threw destroy theirs too. Inline and with 2 workers, while shards change and the server stops.
#include <gtest/gtest.h>

#include <cstdlib>

#include "adversarial_support.hpp"

namespace esockets::test::adv {
namespace {

struct Book {
  std::mutex mu;
  std::unordered_map<std::uint64_t, std::thread::id> disconnect_thread;  // id -> thread
  std::atomic<long> made{0}, destroyed{0}, bad{0}, early{0}, wrong_thread{0};
  std::string first_bad;
  void fail(const std::string& why) {
    std::lock_guard lk(mu);
    if (bad++ == 0) first_bad = why;
  }
};

struct Tracked {
  static constexpr std::uint64_t kMagic = 0x5eed5eed5eed5eedULL;
  Book* book;
  std::uint64_t id;
  std::uint64_t magic = kMagic;
  bool replaced = false;  // destroyed by a later emplace_state / reset_state, not by the end
  Tracked(Book* b, std::uint64_t i) : book(b), id(i) { book->made++; }
  ~Tracked() {
    if (magic != kMagic) {
      book->fail("destroyed twice or corrupt");
      return;
    }
    magic = 0;
    book->destroyed++;
    if (replaced) return;
    std::lock_guard lk(book->mu);
    auto it = book->disconnect_thread.find(id);
    if (it == book->disconnect_thread.end()) {
      book->early++;  // destroyed before on_client_disconnect
    } else if (it->second != std::this_thread::get_id()) {
      book->wrong_thread++;
    }
  }
};

class StateHandler : public Handler {
 public:
  Book book;
  Registry reg;
  std::atomic<long> connects{0}, disconnects{0}, refused{0}, threw{0};
  bool on_client_connect(Connection& c) override {
    c.set_user_data(reg.add(c.id(), c.peer().port));
    connects++;
    c.emplace_state<Tracked>(&book, c.id().value());
    switch ((c.peer().port / 2) % 6) {  // ephemeral ports advance by 2
      case 0:
        refused++;
        return false;  // refused after emplace_state
      case 1:
        threw++;
        throw std::runtime_error("connect throws after emplace_state");
      case 2: {
        c.state<Tracked>()->replaced = true;
        c.emplace_state<Tracked>(&book, c.id().value());  // the first is destroyed now
        break;
      }
      default:
        break;
    }
    return true;
  }
  void on_message_recv(Connection& c, Bytes m) override {
    InCallback g(static_cast<Rec*>(c.user_data()));
    Tracked* t = c.state<Tracked>();
    if (t == nullptr || t->magic != Tracked::kMagic || t->id != c.id().value()) {
      book.fail("state lost or foreign in on_message_recv");
      return;
    }
    if (c.state<int>() != nullptr) book.fail("state<int>() answered for a Tracked");
    if (!m.empty() && m.back() == 'R') {
      t->replaced = true;
      c.reset_state();
      if (c.state<Tracked>() != nullptr) book.fail("reset_state left a state");
      c.emplace_state<Tracked>(&book, c.id().value());
    }
    c.send(m);
  }
  void on_client_disconnect(Connection& c, CloseReason) override {
    {
      std::lock_guard lk(book.mu);
      book.disconnect_thread[c.id().value()] = std::this_thread::get_id();
    }
    Tracked* t = c.state<Tracked>();
    if (t == nullptr || t->magic != Tracked::kMagic) book.fail("state gone before on_client_disconnect");
    static_cast<Rec*>(c.user_data())->gone = true;
    disconnects++;
  }
};

class AdversarialState : public ::testing::TestWithParam<Mode> {};

TEST_P(AdversarialState, StateDestroyedOnceAfterDisconnectOnItsThreadAcrossHandOversAndStop) {
  StateHandler h;
  Server server(h, loopback_options(1, GetParam().workers));
  server.start();
  Reshaper rs(server, scaled(10, 3), 10ms);
  const std::size_t rounds = scaled(8, 3), per = 30;
  std::vector<Client> keep;
  for (std::size_t r = 0; r < rounds; ++r) {
    std::vector<Client> cs;
    for (std::size_t i = 0; i < per; ++i) cs.emplace_back(server.port());
    for (int k = 0; k < 20; ++k) {
      for (std::size_t i = 0; i < cs.size(); ++i) {
        if (cs[i].is_open()) (void)cs[i].send_all(k % 7 == 3 ? "xR" : "xx", 1s);
      }
    }
    for (std::size_t i = 0; i < cs.size(); ++i) {
      if (i % 3 == 0) cs[i].close();
      else if (i % 3 == 1) cs[i].reset();
      else keep.push_back(std::move(cs[i]));  // ended by stop
    }
  }
  rs.join();
  server.stop();
  EXPECT_EQ(h.disconnects.load(), h.connects.load());
  EXPECT_GT(h.refused.load(), 0);
  EXPECT_GT(h.threw.load(), 0);
  EXPECT_EQ(h.book.made.load(), h.book.destroyed.load()) << "state objects leaked or destroyed twice";
  EXPECT_EQ(h.book.bad.load(), 0) << h.book.first_bad;
  EXPECT_EQ(h.book.early.load(), 0) << "state destroyed before on_client_disconnect";
  EXPECT_EQ(h.book.wrong_thread.load(), 0) << "state destroyed off the on_client_disconnect thread";
  EXPECT_EQ(h.reg.total(&Rec::overlaps), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, AdversarialState, ::testing::ValuesIn(modes()), name_of);

}  // namespace
}  // namespace esockets::test::adv

// esockets-chat (tools/examples/chat_server.cpp) driven by blocking clients: SUB / PUB / UNSUB,
// ERR for bad commands (the connection stays open), an over-long line closes the connection,
// disconnects leave rooms, one publisher's messages arrive in order across shards and workers,
// flags and signals.
#include <signal.h>
#include <stdlib.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "chat_process.hpp"
#include "test_support.hpp"

namespace {

using esockets::test::Client;
using esockets::test::EofResult;
using floodtest::ChatProcess;
using namespace std::chrono_literals;

std::string line_of(Client& c, std::chrono::milliseconds timeout = 5s) {
    std::string l;
    if (!c.recv_line(l, timeout)) return "<nothing>";
    return l;
}

bool silent(Client& c, std::chrono::milliseconds wait = 150ms) {
    std::string l;
    return !c.recv_line(l, wait);
}

struct Chat {
    explicit Chat(std::vector<std::string> extra = {}) : proc(with_port(std::move(extra))) {
        port = proc.wait_listening();
    }
    static std::vector<std::string> with_port(std::vector<std::string> a) {
        a.insert(a.begin(), {"--port", "0"});
        return a;
    }
    ChatProcess proc;
    std::uint16_t port = 0;
};

}  // namespace

TEST(ChatServer, SubPubUnsubAndErrors) {
    Chat chat;
    ASSERT_NE(chat.port, 0) << chat.proc.output();
    Client a(chat.port), b(chat.port);

    ASSERT_TRUE(a.send_line("SUB lobby"));
    EXPECT_EQ(line_of(a), "OK SUB lobby");
    ASSERT_TRUE(b.send_line("PUB lobby hello there"));
    EXPECT_EQ(line_of(a), "MSG lobby hello there");
    EXPECT_TRUE(silent(b)) << "the publisher is not subscribed";

    // A subscribed publisher gets its own message; SUB twice is no error and no double delivery.
    ASSERT_TRUE(a.send_line("PUB lobby to myself"));
    EXPECT_EQ(line_of(a), "MSG lobby to myself");
    ASSERT_TRUE(a.send_line("SUB lobby"));
    EXPECT_EQ(line_of(a), "OK SUB lobby");
    ASSERT_TRUE(b.send_line("PUB lobby once\r"));  // a trailing CR is ignored
    EXPECT_EQ(line_of(a), "MSG lobby once");
    EXPECT_TRUE(silent(a));

    // Rooms are separate.
    ASSERT_TRUE(b.send_line("SUB other"));
    EXPECT_EQ(line_of(b), "OK SUB other");
    ASSERT_TRUE(a.send_line("PUB other for b"));
    EXPECT_EQ(line_of(b), "MSG other for b");
    EXPECT_TRUE(silent(a));

    ASSERT_TRUE(a.send_line("UNSUB lobby"));
    EXPECT_EQ(line_of(a), "OK UNSUB lobby");
    ASSERT_TRUE(b.send_line("PUB lobby nobody listens"));
    EXPECT_TRUE(silent(a));
    ASSERT_TRUE(a.send_line("UNSUB lobby"));
    EXPECT_EQ(line_of(a), "ERR not subscribed to lobby");

    // Bad commands: an ERR line each, and the connection stays usable.
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"HELLO", "ERR unknown command 'HELLO'"},
        {"", "ERR empty command"},
        {"SUB", "ERR usage: SUB <room>"},
        {"SUB two words", "ERR usage: SUB <room>"},
        {"UNSUB", "ERR usage: UNSUB <room>"},
        {"PUB lobby", "ERR usage: PUB <room> <text>"},
        {"sub lobby", "ERR unknown command 'sub'"},
    };
    for (auto& [cmd, want] : bad) {
        ASSERT_TRUE(a.send_line(cmd));
        EXPECT_EQ(line_of(a).rfind(want, 0), 0u) << "command '" << cmd << "' expected " << want;
    }
    ASSERT_TRUE(a.send_line("SUB again"));
    EXPECT_EQ(line_of(a), "OK SUB again");

    a.close();
    b.close();
    EXPECT_EQ(chat.proc.stop(SIGINT), 0) << chat.proc.output();
    EXPECT_NE(chat.proc.output().find("SIGINT: 2 connections"), std::string::npos) << chat.proc.output();
    EXPECT_NE(chat.proc.output().find("0 rooms left"), std::string::npos) << chat.proc.output();
}

TEST(ChatServer, OverlongLineClosesOnlyThatConnection) {
    Chat chat({"--max-frame", "64"});
    ASSERT_NE(chat.port, 0) << chat.proc.output();
    Client a(chat.port), b(chat.port);
    ASSERT_TRUE(b.send_line("SUB r"));
    EXPECT_EQ(line_of(b), "OK SUB r");
    ASSERT_TRUE(a.send_line("PUB r " + std::string(200, 'x')));
    EXPECT_EQ(a.wait_eof(5s), EofResult::eof);
    a.close();  // the server lingers until our FIN
    EXPECT_TRUE(silent(b));
    Client c(chat.port);
    ASSERT_TRUE(c.send_line("PUB r still fine"));
    EXPECT_EQ(line_of(b), "MSG r still fine");
    b.close();
    c.close();
    EXPECT_EQ(chat.proc.stop(SIGTERM), 0) << chat.proc.output();
}

TEST(ChatServer, DisconnectLeavesRooms) {
    Chat chat;
    ASSERT_NE(chat.port, 0) << chat.proc.output();
    Client pub(chat.port), stay(chat.port);
    {
        Client gone(chat.port);
        ASSERT_TRUE(gone.send_line("SUB r"));
        EXPECT_EQ(line_of(gone), "OK SUB r");
    }
    ASSERT_TRUE(stay.send_line("SUB r"));
    EXPECT_EQ(line_of(stay), "OK SUB r");
    for (int k = 0; k < 20; ++k) ASSERT_TRUE(pub.send_line("PUB r m" + std::to_string(k)));
    for (int k = 0; k < 20; ++k) EXPECT_EQ(line_of(stay), "MSG r m" + std::to_string(k));
    stay.close();
    pub.close();
    EXPECT_EQ(chat.proc.stop(SIGTERM), 0);
    EXPECT_NE(chat.proc.output().find("0 rooms left"), std::string::npos) << chat.proc.output();
}

TEST(ChatServer, TakeoverCarriesEachConnectionsRooms) {
    // esockets-chat --takeover-socket, then another with --take-over: the subscriber keeps its
    // rooms in the new process, and the old one exits 0.
    char dir[] = "/tmp/esk-chat-takeover-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    const std::string path = std::string(dir) + "/ctl";
    ChatProcess old_proc({"--port", "0", "--shards", "2", "--takeover-socket", path});
    const std::uint16_t port = old_proc.wait_listening();
    ASSERT_NE(port, 0) << old_proc.output();
    Client sub(port);
    ASSERT_TRUE(sub.send_line("SUB a"));
    EXPECT_EQ(line_of(sub), "OK SUB a");
    ASSERT_TRUE(sub.send_line("SUB b"));
    EXPECT_EQ(line_of(sub), "OK SUB b");
    ChatProcess new_proc({"--port", "0", "--workers", "1", "--take-over", path});
    ASSERT_EQ(new_proc.wait_listening(), port) << new_proc.output();
    EXPECT_EQ(old_proc.wait_exit(std::chrono::seconds(10)), 0) << old_proc.output();
    Client pub(port);
    ASSERT_TRUE(pub.send_line("PUB b after"));
    ASSERT_TRUE(pub.send_line("PUB a again"));
    EXPECT_EQ(line_of(sub), "MSG b after");
    EXPECT_EQ(line_of(sub), "MSG a again");
    sub.close();
    pub.close();
    EXPECT_EQ(new_proc.stop(SIGTERM), 0) << new_proc.output();
}

// One publisher's messages, fanned out from its handler thread to subscribers on every shard,
// arrive complete and in order.
TEST(ChatServer, PublisherOrderAcrossShardsAndWorkers) {
    Chat chat({"--shards", "2", "--workers", "2"});
    ASSERT_NE(chat.port, 0) << chat.proc.output();
    std::vector<Client> subs;
    for (int k = 0; k < 6; ++k) {
        subs.emplace_back(chat.port);
        ASSERT_TRUE(subs.back().send_line("SUB news"));
        EXPECT_EQ(line_of(subs.back()), "OK SUB news");
    }
    Client pub(chat.port);
    const int n = static_cast<int>(esockets::test::scaled(2000, 200));
    std::string batch;
    for (int k = 0; k < n; ++k) batch += "PUB news " + std::to_string(k) + "\n";
    ASSERT_TRUE(pub.send_all(batch));
    for (auto& s : subs)
        for (int k = 0; k < n; ++k) ASSERT_EQ(line_of(s), "MSG news " + std::to_string(k));
    // Clients hang up first: a graceful stop waits (linger_timeout) for the FIN of clients it closed.
    subs.clear();
    pub.close();
    EXPECT_EQ(chat.proc.stop(SIGTERM), 0) << chat.proc.output();
}

TEST(ChatServer, FlagsAndHelp) {
    {
        ChatProcess p({"--shards", "0"});
        EXPECT_EQ(p.wait_exit(10s), 2);
        EXPECT_NE(p.output().find("--shards needs a whole number between 1 and 254"), std::string::npos) << p.output();
    }
    {
        ChatProcess p({"--frobnicate"});
        EXPECT_EQ(p.wait_exit(10s), 2);
        EXPECT_NE(p.output().find("unknown flag '--frobnicate'"), std::string::npos) << p.output();
    }
    {
        ChatProcess p({"--port"});
        EXPECT_EQ(p.wait_exit(10s), 2);
        EXPECT_NE(p.output().find("--port needs a value"), std::string::npos) << p.output();
    }
    {
        ChatProcess p({"--help"});
        EXPECT_EQ(p.wait_exit(10s), 0);
        for (const char* s : {"SUB <room>", "UNSUB <room>", "PUB <room> <text>", "--max-frame", "--workers"})
            EXPECT_NE(p.output().find(s), std::string::npos) << s;
    }
    {
        int fd_port = 0;
        std::uint16_t port = 0;
        fd_port = esockets::test::occupy_loopback_port(port);
        ASSERT_GE(fd_port, 0);
        ChatProcess p({"--port", std::to_string(port)});
        EXPECT_EQ(p.wait_exit(10s), 1) << p.output();
        EXPECT_NE(p.output().find("cannot start"), std::string::npos) << p.output();
        ::close(fd_port);
    }
}

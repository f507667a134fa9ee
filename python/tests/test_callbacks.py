"""Every callback fires, in the documented order, on engine threads."""

import threading
import time

import pytest

import esockets
from conftest import Recorder, TIMEOUT, connect, recv_exactly, recv_until_eof, wait_until


@pytest.mark.parametrize("workers", [0, 1])
def test_callback_order(server_factory, workers):
    s = server_factory(workers=workers)
    assert s.port != 0 and s.events == [("start", s.port)]
    a = connect(s.port)
    a_ip = "%s:%d" % a.getsockname()
    a.sendall(b"hello")
    assert recv_exactly(a, 5) == b"hello"
    a.close()
    wait_until(lambda: s.count("disconnect") == 1, what="a's disconnect")
    b = connect(s.port)
    b_ip = "%s:%d" % b.getsockname()
    wait_until(lambda: s.count("connect") == 2, what="b's connect")
    s.stop()
    assert not s.running
    assert recv_until_eof(b) == b""
    ev = s.events
    fa, fb = ev[1][1], ev[4][1]
    assert ev == [
        ("start", s.port),
        ("connect", fa, a_ip),
        ("recv", fa, b"hello"),
        ("disconnect", fa, a_ip, "peer_closed"),
        ("connect", fb, b_ip),
        ("shutting_down",),
        ("disconnect", fb, b_ip, "shutdown"),
        ("shut_down",),
    ]
    assert isinstance(fa, esockets.Fileno) and isinstance(fa, int)
    assert type(ev[2][2]) is bytes
    assert s.clients == {}
    assert s.warnings == []


def test_callbacks_run_off_the_calling_thread(server_factory):
    seen = []

    class S(esockets.Socket):
        def on_message_recv(self, fileno, msg):
            seen.append(threading.current_thread() is threading.main_thread())
            self.send(fileno, msg)

    s = server_factory(S)
    c = connect(s.port)
    c.sendall(b"x")
    assert recv_exactly(c, 1) == b"x"
    assert seen == [False]


def test_clients_dict_and_connection(server_factory):
    got = {}

    class S(esockets.Socket):
        def on_client_connect(self, fileno):
            c = self.clients[fileno]
            got["conn"] = (fileno in self.clients, c.getip(), c.address, c.fileno() is fileno,
                           c.connected, self.clients.get(int(fileno)) is c)

        def on_message_recv(self, fileno, msg):
            self.clients[fileno].send(msg * 2)

        def on_client_disconnect(self, fileno):
            c = self.clients[fileno]
            got["disc"] = (c.getip(), c.connected, c.close_reason, fileno in self.clients)

    s = server_factory(S)
    c = connect(s.port)
    ip, port = c.getsockname()
    c.sendall(b"ab")
    assert recv_exactly(c, 4) == b"abab"
    assert got["conn"] == (True, f"{ip}:{port}", (ip, port), True, True, True)
    assert len(s.clients) == 1 and s.client_count == 1
    c.close()
    wait_until(lambda: "disc" in got, what="disconnect")
    assert got["disc"] == (f"{ip}:{port}", False, "peer_closed", True)
    wait_until(lambda: len(s.clients) == 0, what="clients emptied")


def test_refuse_with_false(server_factory):
    class Refuse(Recorder):
        def on_client_connect(self, fileno):
            super().on_client_connect(fileno)
            return False

    r = server_factory(Refuse)
    c = connect(r.port)
    c.sendall(b"ignored")
    assert recv_until_eof(c) == b""
    wait_until(lambda: r.count("disconnect") == 1, what="refused disconnect")
    assert r.events[-1][3] == "refused"
    assert r.count("recv") == 0


def test_server_callbacks_and_start_errors():
    class Boom(esockets.Socket):
        def on_start(self):
            raise RuntimeError("no start")

    s = Boom(port=0)
    with pytest.raises(RuntimeError, match="no start"):
        s.start()
    assert not s.running
    with pytest.raises(RuntimeError, match="twice"):
        s.start()


def test_stop_from_a_handler(server_factory):
    class S(Recorder):
        def on_message_recv(self, fileno, msg):
            super().on_message_recv(fileno, msg)
            if msg == b"stop":
                self.stop()  # only requests it from an engine thread

    s = server_factory(S, shutdown_timeout=5)
    c = connect(s.port)
    t0 = time.monotonic()
    c.sendall(b"stop")
    assert recv_until_eof(c) == b"stop"
    c.close()
    assert s.wait(TIMEOUT)
    # Nothing waited for shutdown_timeout (stop() from a handler must not join the engine).
    assert time.monotonic() - t0 < 4
    assert not s.running
    assert s.kinds()[-3:] == ["shutting_down", "disconnect", "shut_down"]

"""Engine options as keyword arguments, the seed's constructor arguments, framing, auto_register."""

import socket
import struct

import pytest

import esockets
from conftest import Recorder, TIMEOUT, connect, recv_exactly, recv_until_eof, wait_until


def test_bad_options_raise():
    with pytest.raises(ValueError, match="shards"):
        esockets.Socket(port=0, shards=0)
    with pytest.raises(ValueError, match="framing"):
        esockets.Socket(port=0, framing="json")
    with pytest.raises(TypeError):
        esockets.Socket(port=0, no_such_option=1)
    with pytest.raises(TypeError):
        esockets.Socket(port=0, idle_timeout="soon")
    with pytest.raises(TypeError):
        esockets.Socket(port=0, clients_class=dict)


def test_bind_failure_is_oserror():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        s = esockets.Socket(port=holder.getsockname()[1])
        with pytest.raises(OSError):
            s.start()
        assert not s.running
    finally:
        holder.close()


def test_seed_positional_arguments(server_factory):
    class MyConn(esockets.Connection):
        pass

    s = Recorder(0, "127.0.0.1", 4096, 128, 10, 1, True, MyConn, linger_timeout=0.2)
    try:
        s.start()
        assert s.host == "127.0.0.1" and s.port > 0
        c = connect(s.port)
        c.sendall(b"queued")
        assert recv_exactly(c, 6) == b"queued"
        f = s.events[1][1]
        assert isinstance(s.clients[f], MyConn)
        assert s.clients[f].recv_buffer.get(timeout=TIMEOUT) == b"queued"
    finally:
        s.stop()


def test_line_framing_and_send_frame(server_factory):
    class Lines(esockets.Socket):
        def on_message_recv(self, fileno, msg):
            self.send_frame(fileno, msg.upper())

    s = server_factory(Lines, framing="line", max_frame=100)
    c = connect(s.port)
    c.sendall(b"one\ntwo\nthr")
    c.sendall(b"ee\n")
    assert recv_exactly(c, 14) == b"ONE\nTWO\nTHREE\n"
    c.sendall(b"x" * 200 + b"\n")
    assert recv_until_eof(c) == b""


def test_length_prefixed(server_factory):
    s = server_factory(Recorder, framing="length_prefixed", length_prefix_bytes=2, echo=False)
    c = connect(s.port)
    c.sendall(struct.pack(">H", 3) + b"abc" + struct.pack(">H", 0))
    wait_until(lambda: s.count("recv") == 2, what="two frames")
    assert [e[2] for e in s.events if e[0] == "recv"] == [b"abc", b""]


def test_idle_timeout(server_factory):
    s = server_factory(Recorder, idle_timeout=0.2)
    c = connect(s.port)
    assert recv_until_eof(c) == b""
    wait_until(lambda: s.count("disconnect") == 1, what="idle close")
    assert s.events[-1][3] == "idle"


def test_auto_register_false(server_factory):
    class Manual(Recorder):
        def on_message_recv(self, fileno, msg):
            super().on_message_recv(fileno, msg)

    s = server_factory(Manual, auto_register=False, framing="line")
    c = connect(s.port)
    c.sendall(b"1\n")
    wait_until(lambda: s.count("recv") == 1, what="first message")
    f = s.events[-1][1]
    c.sendall(b"2\n")
    assert recv_exactly(c, 1) == b"1"
    import time
    time.sleep(0.2)
    assert s.count("recv") == 1  # not read again until register()
    s.register(f)
    wait_until(lambda: s.count("recv") == 2, what="second message")
    assert recv_exactly(c, 1) == b"2"


def test_max_connections_refuses(server_factory):
    s = server_factory(Recorder, max_connections=1)
    a = connect(s.port)
    wait_until(lambda: s.count("connect") == 1, what="a")
    b = connect(s.port)
    assert recv_until_eof(b) == b""
    a.sendall(b"ok")
    assert recv_exactly(a, 2) == b"ok"


def test_stats_and_shards(server_factory):
    s = server_factory(Recorder, shards=2)
    assert s.shards == 2
    c = connect(s.port)
    c.sendall(b"hi")
    assert recv_exactly(c, 2) == b"hi"
    st = s.stats()
    assert st["messages_in"] == 1 and len(st["shards"]) == 2
    s.set_shards(1)
    assert s.shards == 1
    c.sendall(b"again")
    assert recv_exactly(c, 5) == b"again"


def test_package_ships_types():
    import os
    d = os.path.dirname(esockets.__file__)
    for f in ("py.typed", "__init__.pyi", "_esockets.pyi"):
        assert os.path.isfile(os.path.join(d, f)), f

"""An exception in a callback is reported through on_warning and closes only that connection."""

import pytest

import esockets
from conftest import Recorder, TIMEOUT, connect, recv_exactly, recv_until_eof, wait_until


class Picky(Recorder):
    def on_message_recv(self, fileno, msg):
        if msg == b"boom":
            raise ValueError("boom from the handler")
        super().on_message_recv(fileno, msg)


@pytest.mark.parametrize("workers", [0, 1])
def test_exception_closes_only_that_connection(server_factory, workers):
    s = server_factory(Picky, workers=workers)
    good = connect(s.port)
    bad = connect(s.port)
    wait_until(lambda: s.count("connect") == 2, what="connects")
    bad_ip = "%s:%d" % bad.getsockname()
    bad.sendall(b"boom")
    assert recv_until_eof(bad) == b""
    wait_until(lambda: s.count("disconnect") == 1, what="bad's disconnect")
    disc = [e for e in s.events if e[0] == "disconnect"][0]
    assert disc[2:] == (bad_ip, "handler_exception")
    wait_until(lambda: s.warnings, what="the warning")
    w = s.warnings[0]
    assert "on_message_recv raised ValueError: boom from the handler" in w
    assert bad_ip in w and "Traceback" in w and "test_exceptions.py" in w
    # The other connection is untouched.
    good.sendall(b"still here")
    assert recv_exactly(good, 10) == b"still here"
    assert s.count("disconnect") == 1
    assert s.stats()["closes"]["handler_exception"] == 1


def test_exception_in_connect_and_disconnect(server_factory):
    class S(Recorder):
        def on_client_connect(self, fileno):
            super().on_client_connect(fileno)
            if len(self.clients) == 1:
                raise KeyError("first one")

        def on_client_disconnect(self, fileno):
            super().on_client_disconnect(fileno)
            raise RuntimeError("in disconnect")

    s = server_factory(S)
    a = connect(s.port)
    assert recv_until_eof(a) == b""
    wait_until(lambda: s.count("disconnect") == 1, what="disconnect")
    assert s.events[-1][3] == "handler_exception"
    wait_until(lambda: len(s.warnings) == 2, what="two warnings")
    assert "on_client_connect raised KeyError" in s.warnings[0]
    assert "on_client_disconnect raised RuntimeError: in disconnect" in s.warnings[1]
    assert len(s.clients) == 0  # removed even though on_client_disconnect raised


def test_default_on_warning_logs(server_factory, caplog):
    class S(esockets.Socket):
        def on_message_recv(self, fileno, msg):
            raise ZeroDivisionError("logged")

    s = server_factory(S)
    c = connect(s.port)
    c.sendall(b"x")
    assert recv_until_eof(c) == b""
    wait_until(lambda: any("ZeroDivisionError: logged" in r.getMessage() for r in caplog.records),
               what="a log record")
    assert all(r.name == "esockets" for r in caplog.records)

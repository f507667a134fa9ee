"""Filenos are safe against fd reuse: a stale one raises StaleFileno, never reaches another
client."""

import os
import socket
import time

import pytest

import esockets
from conftest import Recorder, TIMEOUT, connect, recv_exactly, wait_until


def fill_fds_below(target):
    """Opens /dev/null until every fd below `target` is taken and `target` itself is free (the
    kernel hands out the lowest free number, so the next socket accepted gets `target`).
    Returns the fds opened, or None while `target` is still in use."""
    taken = []
    while True:
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd == target:
            os.close(fd)
            return taken
        taken.append(fd)
        if fd > target:
            for t in taken:
                os.close(t)
            return None


@pytest.mark.parametrize("workers", [0, 1])
def test_stale_fileno_never_reaches_the_next_client(server_factory, workers):
    s = server_factory(Recorder, echo=False, workers=workers)
    a = connect(s.port)
    wait_until(lambda: s.count("connect") == 1, what="a connects")
    fa = s.events[-1][1]
    b = socket.socket()  # b's own fd is taken now, before a's number is given back
    a.close()
    wait_until(lambda: s.count("disconnect") == 1, what="a disconnects")

    # Make the server's next accepted socket get a's fd number.
    deadline = time.monotonic() + TIMEOUT
    filler = fill_fds_below(int(fa))
    while filler is None and time.monotonic() < deadline:
        time.sleep(0.01)
        filler = fill_fds_below(int(fa))
    assert filler is not None, f"fd {int(fa)} was never released"
    try:
        b.settimeout(TIMEOUT)
        b.connect(("127.0.0.1", s.port))
        wait_until(lambda: s.count("connect") == 2, what="b connects")
    finally:
        for fd in filler:
            os.close(fd)
    fb = s.events[-1][1]
    assert fb is not fa
    assert int(fb) == int(fa), "the accepted socket did not reuse a's fd number"
    assert fa == fb and hash(fa) == hash(fb)  # equal as ints, as the seed's filenos were

    with pytest.raises(esockets.StaleFileno) as ei:
        s.send(fa, b"for a")
    assert isinstance(ei.value, KeyError)
    assert "stale" in str(ei.value) and str(int(fa)) in str(ei.value)
    with pytest.raises(esockets.StaleFileno):
        s.close(fa)
    with pytest.raises(esockets.StaleFileno):
        s.clients[fa]
    with pytest.raises(KeyError):
        s.clients[fa]
    assert fa not in s.clients and fb in s.clients
    assert s.clients.get(fa) is None
    assert not s.connected(fa) and s.connected(fb)

    # b got nothing meant for a, and b's own fileno works.
    s.send(fb, b"for b")
    assert recv_exactly(b, 5) == b"for b"
    # A plain int names whoever holds that fd now (the seed's semantics).
    s.send(int(fb), b"!")
    assert recv_exactly(b, 1) == b"!"
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(10)


def test_plain_int_without_client(server_factory):
    s = server_factory(Recorder)
    with pytest.raises(esockets.StaleFileno, match="no connected client"):
        s.send(12345, b"x")
    with pytest.raises(TypeError):
        s.send("7", b"x")


def test_fileno_stale_while_disconnecting(server_factory):
    """In on_client_disconnect the client is readable, but sending to it reports it ended."""
    out = {}

    class S(esockets.Socket):
        def on_client_disconnect(self, fileno):
            out["ip"] = self.clients[fileno].getip()
            try:
                self.send(fileno, b"late")
            except esockets.StaleFileno as e:
                out["err"] = str(e)

    s = server_factory(S)
    c = connect(s.port)
    ip = "%s:%d" % c.getsockname()
    c.close()
    wait_until(lambda: "err" in out, what="disconnect")
    assert out["ip"] == ip and ip in out["err"]

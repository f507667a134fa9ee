"""Helpers shared by the esockets tests. Every wait is bounded; only 127.0.0.1 is used and
servers bind port 0 (the engine picks the port) unless a test says otherwise."""

import socket
import threading
import time

import pytest

import esockets

TIMEOUT = 10.0  # seconds: the bound on every wait in these tests


def wait_until(pred, timeout=TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def connect(port, timeout=TIMEOUT):
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def recv_exactly(sock, n, timeout=TIMEOUT):
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def recv_until_eof(sock, timeout=TIMEOUT, limit=1 << 24):
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk
    raise AssertionError("no EOF")


class Recorder(esockets.Socket):
    """Records every callback as a tuple, echoes messages unless told otherwise."""

    def __init__(self, *args, echo=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = []
        self.warnings = []
        self.threads = set()
        self.echo = echo
        self.lock = threading.Lock()

    def _add(self, *ev):
        with self.lock:
            self.events.append(ev)
            self.threads.add(threading.current_thread().name)

    def on_start(self):
        self._add("start", self.port)

    def on_client_connect(self, fileno):
        self._add("connect", fileno, self.clients[fileno].getip())

    def on_message_recv(self, fileno, msg):
        self._add("recv", fileno, msg)
        if self.echo:
            self.send(fileno, msg)

    def on_client_disconnect(self, fileno):
        c = self.clients[fileno]
        self._add("disconnect", fileno, c.getip(), c.close_reason)

    def on_server_shutting_down(self):
        self._add("shutting_down")

    def on_server_shut_down(self):
        self._add("shut_down")

    def on_warning(self, msg):
        with self.lock:
            self.warnings.append(msg)

    def kinds(self):
        with self.lock:
            return [e[0] for e in self.events]

    def count(self, kind):
        return self.kinds().count(kind)


@pytest.fixture
def server_factory():
    """Builds and starts servers; stops every one of them at the end of the test."""
    made = []

    def make(cls=Recorder, **kwargs):
        kwargs.setdefault("port", 0)
        # stop() waits up to linger_timeout for clients that keep their end open; the tests'
        # clients often do, so keep that short.
        kwargs.setdefault("linger_timeout", 0.2)
        s = cls(**kwargs)
        made.append(s)
        s.start()
        return s

    yield make
    for s in made:
        s.stop()
        assert s.wait(TIMEOUT), "server did not stop"

"""10,000 connections held at once.

The server runs in this process; the clients run in a child process, because one process
holds at most ~19,900 sockets here (RLIMIT_NOFILE hard limit 20,000) and client + server ends of
10,000 connections in one process would need ~20,000."""

import os
import resource
import subprocess
import sys
import time

import pytest

import esockets
from conftest import wait_until

N = int(os.environ.get("ESOCKETS_PY_MANY", "10000"))

CLIENT = r"""
import resource, selectors, socket, sys, time
n, port = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
deadline = time.monotonic() + 60
for i in range(n):
    s = socket.socket()
    # Two source addresses: stay far from one source's ephemeral-port scan cost.
    s.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
    s.bind(("127.0.0.%d" % (2 + i % 2), 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    socks.append(s)
    assert time.monotonic() < deadline, "connect phase over 60 s"
print("connected", len(socks), flush=True)
sel = selectors.DefaultSelector()
for s in socks:
    s.setblocking(False)
    s.send(b"p")
    sel.register(s, selectors.EVENT_READ)
got = 0
while got < n and time.monotonic() < deadline:
    for key, _ in sel.select(1.0):
        if key.fileobj.recv(16) == b"p":
            got += 1
            sel.unregister(key.fileobj)
print("echoed", got, flush=True)
sys.stdin.readline()
for s in socks:
    s.close()
print("closed", flush=True)
"""


class Counter(esockets.Socket):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.connects = 0
        self.disconnects = 0
        self.reasons = {}

    def on_client_connect(self, fileno):
        self.connects += 1

    def on_message_recv(self, fileno, msg):
        self.send(fileno, msg)

    def on_client_disconnect(self, fileno):
        self.disconnects += 1
        r = self.clients[fileno].close_reason
        self.reasons[r] = self.reasons.get(r, 0) + 1


def test_ten_thousand_connections(server_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < N + 200:
        pytest.skip(f"RLIMIT_NOFILE is {soft} (hard {hard}): {N} server sockets do not fit")
    s = server_factory(Counter, shards=2)
    t0 = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", CLIENT, str(N), str(s.port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline().split()
        assert line == ["connected", str(N)], line
        wait_until(lambda: s.connects == N, timeout=60, what=f"{N} connects")
        line = child.stdout.readline().split()
        assert line == ["echoed", str(N)], line
        assert len(s.clients) == N and s.client_count == N
        assert len({int(f) for f in s.clients}) == N
        held = time.monotonic() - t0
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "closed"
        wait_until(lambda: s.disconnects == N, timeout=60, what=f"{N} disconnects")
        assert s.reasons == {"peer_closed": N}
        assert len(s.clients) == 0
        print(f"{N} connections connected and echoed in {held:.1f} s")
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)

"""send / close from other Python threads."""

import threading

import esockets
from conftest import TIMEOUT, connect, recv_exactly, recv_until_eof, wait_until


class Keep(esockets.Socket):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.filenos = []

    def on_client_connect(self, fileno):
        self.filenos.append(fileno)


def test_send_and_close_from_another_thread(server_factory):
    s = server_factory(Keep)
    c = connect(s.port)
    wait_until(lambda: len(s.filenos) == 1, what="connect")
    f = s.filenos[0]
    n, size = 2000, 100

    def producer():
        for i in range(n):
            s.send(f, (b"%06d" % i).ljust(size, b"."))
        s.close(f)

    t = threading.Thread(target=producer)
    t.start()
    data = recv_until_eof(c)
    t.join(TIMEOUT)
    assert len(data) == n * size
    assert [int(data[i * size:i * size + 6]) for i in range(n)] == list(range(n))
    wait_until(lambda: f not in s.clients, what="disconnect")


def test_concurrent_senders_keep_their_own_order(server_factory):
    s = server_factory(Keep, workers=2, shards=2, framing="line")
    clients = [connect(s.port) for _ in range(4)]
    wait_until(lambda: len(s.filenos) == 4, what="connects")
    per_thread = 500

    def producer(tid):
        for f in s.filenos:
            for i in range(per_thread):
                s.send_frame(f, b"%d %d" % (tid, i))

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    for c in clients:
        want = 3 * per_thread
        buf = b""
        c.settimeout(TIMEOUT)
        while buf.count(b"\n") < want:
            chunk = c.recv(65536)
            assert chunk, "EOF"
            buf += chunk
        lines = buf.split(b"\n")[:want]
        for tid in range(3):
            got = [int(l.split()[1]) for l in lines if l.split()[0] == b"%d" % tid]
            assert got == list(range(per_thread))


def test_send_types(server_factory):
    s = server_factory(Keep)
    c = connect(s.port)
    wait_until(lambda: len(s.filenos) == 1, what="connect")
    f = s.filenos[0]
    s.send(f, b"a")
    s.send(f, bytearray(b"b"))
    s.send(f, memoryview(b"xcx")[1:2])
    s.send(f, "d\u00e9")  # str: UTF-8
    assert recv_exactly(c, 6) == b"abcd\xc3\xa9"
    try:
        s.send(f, 5)
    except TypeError as e:
        assert "bytes" in str(e)
    else:
        raise AssertionError("send(int) did not raise TypeError")
    assert s.broadcast(b"!") == 1
    assert recv_exactly(c, 1) == b"!"

"""Helpers shared by redis_bench.py and http_bench.py."""
import random
import socket


def free_port():
    """A loopback port in 20000-32000 (below the ephemeral range) that binds now."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in 20000-32000")

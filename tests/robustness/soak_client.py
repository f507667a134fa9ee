#!/usr/bin/env python3
"""Churn driver for soak_server (stdlib only).

Threads open connections in a loop and end each one a different way: FIN, RST, half-close,
idle (server idle timeout), oversize frame (framing error), slow consumer (never reads a big
reply), handler throw (marker message), dripping (frame timeout). Every session checks what
it got back; the summary is printed as one line per kind and the exit status is 1 if any
session saw something it should not have (wrong echo, RST where FIN was owed, a hang).
"""
import argparse
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter

KINDS = ["fin", "rst", "halfclose", "idle", "oversize", "slow", "throw", "drip"]
WEIGHTS = [30, 20, 20, 4, 8, 4, 8, 6]  # long kinds (idle, slow, drip) take seconds each

stats = Counter()
bad = Counter()
lock = threading.Lock()


def note(kind, ok, why=""):
    with lock:
        stats[kind] += 1
        if not ok:
            bad[kind] += 1
            if bad[kind] <= 5:
                print(f"soak_client: {kind}: {why}", file=sys.stderr, flush=True)


def connect(port, src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
    s.bind((src, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def read_to_end(s, limit=1 << 30):
    """Returns (bytes, how) with how in eof/reset/timeout."""
    buf = bytearray()
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return bytes(buf), "eof"
            if len(buf) < limit:
                buf += chunk
    except ConnectionResetError:
        return bytes(buf), "reset"
    except socket.timeout:
        return bytes(buf), "timeout"


def lines(rng, n):
    return [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(1, 200))) + b"\n"
            for _ in range(n)]


def session(kind, port, src, rng):
    s = connect(port, src)
    try:
        if kind in ("fin", "rst", "halfclose"):
            ls = lines(rng, rng.randint(1, 20))
            payload = b"".join(ls)
            s.sendall(payload)
            if kind == "halfclose":
                s.shutdown(socket.SHUT_WR)
                got, how = read_to_end(s)
                note(kind, got == payload and how == "eof", f"got {len(got)}/{len(payload)} then {how}")
                return
            got = recv_exact(s, len(payload))
            if kind == "rst":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            note(kind, got == payload, f"echo mismatch {len(got)}/{len(payload)}")
            return
        if kind == "idle":
            s.sendall(b"hello\n")
            s.settimeout(8)
            got, how = read_to_end(s)
            note(kind, got == b"hello\n" and how == "eof", f"got {got[:20]!r} then {how}")
            return
        if kind == "oversize":
            try:
                s.sendall(b"x" * (70 * 1024))  # max_frame is 64 KiB, no newline
            except (BrokenPipeError, ConnectionResetError):
                pass
            got, how = read_to_end(s)
            note(kind, got == b"" and how in ("eof", "reset"), f"got {len(got)} then {how}")
            return
        if kind == "slow":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            big = rng.choice([2048, 8192])  # under the 4 MiB cap (write timeout) / over it
            s.sendall(b"BIG %d\n" % big)
            time.sleep(3.0)  # never read: the server must give up on us
            s.settimeout(10)
            got, how = read_to_end(s)
            note(kind, how in ("eof", "reset") and len(got) < big * 1024, f"got {len(got)} then {how}")
            return
        if kind == "throw":
            s.sendall(b"ping\nTHROW now\n")
            got, how = read_to_end(s)
            note(kind, got == b"ping\n" and how == "eof", f"got {got[:20]!r} then {how}")
            return
        if kind == "drip":
            s.settimeout(8)
            t0 = time.monotonic()
            how = "timeout"
            while time.monotonic() - t0 < 6:
                try:
                    s.send(b"d")
                except (BrokenPipeError, ConnectionResetError):
                    how = "reset"
                    break
                s.settimeout(0.2)
                try:
                    chunk = s.recv(16)
                    if not chunk:
                        how = "eof"
                        break
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    how = "reset"
                    break
            note(kind, how == "eof", f"drip ended with {how}")
            return
    finally:
        s.close()


def worker(port, deadline, seed, idx):
    rng = random.Random(seed)
    src = f"127.0.0.{2 + idx % 8}"
    while time.monotonic() < deadline:
        kind = rng.choices(KINDS, WEIGHTS)[0]
        try:
            session(kind, port, src, rng)
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            note(kind, False, f"{type(e).__name__}: {e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--threads", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    deadline = time.monotonic() + a.duration
    ts = [threading.Thread(target=worker, args=(a.port, deadline, a.seed * 1000 + i, i), daemon=True)
          for i in range(a.threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(a.duration + 60)
    total = sum(stats.values())
    print("soak_client: sessions=%d %s" % (total, " ".join(
        f"{k}={stats[k]}/bad={bad[k]}" for k in KINDS)), flush=True)
    return 1 if sum(bad.values()) > 0 or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())

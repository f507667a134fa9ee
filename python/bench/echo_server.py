"""A Python echo server on esockets, for bench.py (and by hand).

    python echo_server.py [--shards N] [--workers N] [--framing raw|line|length_prefixed]

Prints "listening PORT" once serving; SIGINT/SIGTERM stop it gracefully, then it prints the
engine's message counters as one JSON line and exits 0.
"""

import argparse
import json
import signal
import sys

import esockets


class Echo(esockets.Socket):
    def on_message_recv(self, fileno, msg):
        self.send(fileno, msg)


class FrameEcho(esockets.Socket):
    def on_message_recv(self, fileno, msg):
        self.send_frame(fileno, msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--framing", default="raw")
    a = ap.parse_args()
    cls = Echo if a.framing == "raw" else FrameEcho
    s = cls(port=a.port, shards=a.shards, workers=a.workers, framing=a.framing)
    signal.signal(signal.SIGTERM, lambda *_: s.stop())
    signal.signal(signal.SIGINT, lambda *_: s.stop())
    s.start()
    print("listening", s.port, flush=True)
    s.wait()
    st = s.stats()
    print(json.dumps({k: st[k] for k in ("messages_in", "messages_out", "bytes_in", "bytes_out")}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

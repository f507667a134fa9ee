"""The seed README's example (SEED.md, verbatim) runs with only its import changed."""

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import TIMEOUT

# ESocketS README, "Integration" (the line `import ESocketS` is the only one changed below).
SEED_EXAMPLE = """#!/bin/env python3
import ESocketS
class Socket(ESocketS.Socket):
    def on_client_connect(self, fileno):
        print(self.clients[fileno].getip(), 'Connected')

    def on_start(self):
        print('Server started on: ', self.host, self.port)

    def on_message_recv(self, fileno, msg):
        print(self.clients[fileno].getip(), ': ', msg)

    def on_client_disconnect(self, fileno):
        print(self.clients[fileno].getip(), 'Disconnected')

    def on_server_shutting_down(self):
        print('Server shutdown sequence started')

    def on_server_shut_down(self):
        print('Server closed')

    def on_warning(self, msg):
        print('Warning: ', msg)
        
s = Socket(port=1234)
s.start()
"""

PORT = 1234  # the example's own port


def port_free(port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_seed_example_runs_with_only_the_import_changed(tmp_path):
    script = SEED_EXAMPLE.replace("import ESocketS\n", "import esockets as ESocketS\n", 1)
    assert script.count("\n") == SEED_EXAMPLE.count("\n")
    if not port_free(PORT):
        pytest.skip(f"port {PORT} (the example's) is in use on 127.0.0.1")
    path = tmp_path / "seed_example.py"
    path.write_text(script)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # SIGINT stops it as Ctrl-C would (default handler even if our parent ignores SIGINT).
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l.rstrip("\n")) for l in proc.stdout],
                     daemon=True).start()
    seen = []

    def expect(pred, what):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if proc.poll() is not None and lines.empty():
                    break
                continue
            seen.append(line)
            if pred(line):
                return line
        raise AssertionError(f"no {what} in output {seen!r}; stderr: "
                             f"{proc.stderr.read() if proc.poll() is not None else ''}")

    try:
        expect(lambda l: l == f"Server started on:  127.0.0.1 {PORT}", "start line")
        c = socket.create_connection(("127.0.0.1", PORT), timeout=TIMEOUT)
        ip = "%s:%d" % c.getsockname()
        expect(lambda l: l == f"{ip} Connected", "connect line")
        c.sendall(b"hello seed")
        expect(lambda l: l == f"{ip} :  b'hello seed'", "message line")
        c.close()
        expect(lambda l: l == f"{ip} Disconnected", "disconnect line")
        # start() returned long ago: the process is alive only because the server is.
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        expect(lambda l: l == "Server shutdown sequence started", "shutdown line")
        expect(lambda l: l == "Server closed", "closed line")
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any(l.startswith("Warning") for l in seen), seen

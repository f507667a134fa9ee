#!/usr/bin/env python3
"""esockets-redis vs redis-server 7 under redis-benchmark (SET and GET, 50 clients).

Each run starts its server on a free loopback port (20000-32000), runs one
`redis-benchmark -t set,get -c 50 -P <p> -n <n> --csv`, and stops it. Servers are interleaved
(A, B, C, A, B, C, ...) for --reps repetitions; the table gives medians and the ratio of
esockets-redis to the best redis-server setup. Both servers get two threads of the 2-core
machine: esockets-redis --shards 2; redis-server with its defaults (one main thread; its
background threads idle with persistence off). --redis-io-threads adds redis-server with
--io-threads 2 --io-threads-do-reads yes: its I/O threads spin while waiting, which on two
cores shared with redis-benchmark made it 5-15x slower here, so it is not the default baseline.
Persistence is off for redis-server (--save '' --appendonly no).

  benchmarks/protocols/redis_bench.py [--esockets PATH] [--reps 3] [--json out.json]
  benchmarks/protocols/redis_bench.py --stripes 1,256 --random-keys 100000   # lock stripes

Python 3 standard library only.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def find_esockets():
    for d in ("build/release", "build/h-redis", "build"):
        p = os.path.join(ROOT, d, "tools/examples/redis/esockets-redis")
        if os.access(p, os.X_OK):
            return p
    return None


def wait_ready(port, proc, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


class Server:
    def __init__(self, name, argv_for_port):
        self.name = name
        self.argv_for_port = argv_for_port
        self.proc = None
        self.port = None

    def __enter__(self):
        for _ in range(10):
            self.port = free_port()
            self.proc = subprocess.Popen(self.argv_for_port(self.port), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            if wait_ready(self.port, self.proc):
                return self
            self.stop()
        raise RuntimeError(f"{self.name} did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc):
        self.stop()


def bench(port, pipeline, requests, clients, keyspace):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get", "-c",
           str(clients), "-P", str(pipeline), "-n", str(requests), "--csv"]
    if keyspace:
        cmd += ["-r", str(keyspace)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0 or "rror" in out.stderr:
        raise RuntimeError(f"redis-benchmark failed: {out.stdout}{out.stderr}")
    rps = {}
    for line in out.stdout.splitlines():
        cells = [c.strip('"') for c in line.split('","')]
        if len(cells) >= 2 and cells[0] in ("SET", "GET"):
            rps[cells[0]] = float(cells[1])
    if set(rps) != {"SET", "GET"}:
        raise RuntimeError(f"unexpected redis-benchmark output: {out.stdout}")
    return rps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--esockets", default=find_esockets(), help="esockets-redis binary")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=200000, help="-n for -P 1 (x8 for -P 16)")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--random-keys", type=int, default=0,
                    help="redis-benchmark -r N: spread over N keys (default: its one key)")
    ap.add_argument("--stripes", default=None,
                    help="comma list: compare esockets-redis keyspace stripe counts instead")
    ap.add_argument("--redis-io-threads", action="store_true",
                    help="also run redis-server --io-threads 2 --io-threads-do-reads yes")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()
    if not a.esockets or not os.access(a.esockets, os.X_OK):
        sys.exit("redis_bench.py: build esockets-redis first or pass --esockets PATH")

    def esockets(stripes=None):
        extra = ["--stripes", str(stripes)] if stripes else []
        return lambda p: [a.esockets, "--port", str(p), "--shards", str(a.shards), "-q"] + extra

    def redis(io_threads):
        extra = ["--io-threads", str(io_threads), "--io-threads-do-reads", "yes"] \
            if io_threads > 1 else []
        return lambda p: [a.redis_server, "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no"] + extra

    if a.stripes:
        setups = [(f"esockets-redis --stripes {s}", esockets(int(s))) for s in a.stripes.split(",")]
    else:
        setups = [("esockets-redis", esockets()), ("redis-server", redis(1))]
        if a.redis_io_threads:
            setups.append(("redis-server io-threads 2", redis(2)))
    pipelines = [1, 16]
    results = {name: {p: {"SET": [], "GET": []} for p in pipelines} for name, _ in setups}
    for rep in range(a.reps):
        for p in pipelines:
            n = a.requests * (8 if p > 1 else 1)
            for name, argv in setups:
                with Server(name, argv) as s:
                    r = bench(s.port, p, n, a.clients, a.random_keys)
                for t in ("SET", "GET"):
                    results[name][p][t].append(r[t])
                print(f"rep {rep + 1}/{a.reps} -P {p:<2} {name:<28} SET {r['SET']:>11,.0f}  "
                      f"GET {r['GET']:>11,.0f}", file=sys.stderr, flush=True)

    med = {name: {p: {t: statistics.median(v) for t, v in d.items()} for p, d in byp.items()}
           for name, byp in results.items()}
    base_names = [n for n, _ in setups[1:]]
    first = setups[0][0]
    head = "| test | -P | " + " | ".join(n for n, _ in setups) + " | " + \
        " | ".join(f"{first} / {b}" for b in base_names) + " |"
    keys = f"-r {a.random_keys}" if a.random_keys else "one key"
    print(f"\nredis-benchmark -c {a.clients} ({keys}), medians of {a.reps} interleaved runs, "
          f"requests per second\n")
    print(head)
    print("|" + "---|" * (2 + len(setups) + len(base_names)))
    for p in pipelines:
        for t in ("SET", "GET"):
            cells = [f"{med[n][p][t]:,.0f}" for n, _ in setups]
            ratios = [f"{med[first][p][t] / med[b][p][t]:.2f}x" for b in base_names]
            print(f"| {t} | {p} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"clients": a.clients, "reps": a.reps, "requests": a.requests,
                       "runs": results, "medians": med}, f, indent=2)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""esockets-http against nginx, driven by wrk (keep-alive) and h2load (HTTP/1.1 pipelining).

Both servers are started by this script on free loopback ports with two threads / worker
processes, serve GET /plaintext ("Hello, World!", text/plain), and are measured in turns
(esockets, nginx, esockets, nginx, ...) so that a change in the machine's load hits both.
Reports medians, the ratio esockets/nginx, and each server's CPU time per request.

python3 stdlib only.  Example:
    benchmarks/protocols/http_bench.py --binary build/release/tools/examples/http/esockets-http
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK_TCK = os.sysconf("SC_CLK_TCK")

NGINX_CONF = """
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /plaintext {{ return 200 "Hello, World!"; }}
    }}
}}
"""


def wait_listening(port, proc, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
                return True
            except OSError:
                time.sleep(0.05)
    return False


def proc_cpu_seconds(pids):
    """utime+stime of the given processes and all their threads (seconds)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


class Server:
    def __init__(self, name, argv, port, pids_fn, scratch=None):
        self.name, self.argv, self.port, self.scratch = name, argv, port, scratch
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pids_fn = pids_fn
        if not wait_listening(port, self.proc):
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"{name} did not start on port {port}: {err}")

    def pids(self):
        return self.pids_fn(self.proc.pid)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if self.name != "nginx" else signal.SIGQUIT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


def children(pid):
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def start_esockets(binary, shards, workers):
    port = free_port()
    argv = [binary, "--port", str(port), "--shards", str(shards), "--workers", str(workers), "-q"]
    return Server("esockets-http", argv, port, lambda pid: [pid])


def start_nginx(workers):
    prefix = tempfile.mkdtemp(prefix="esockets-nginx-")
    port = free_port()
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(workers=workers, prefix=prefix, port=port))
    return Server("nginx", ["nginx", "-p", prefix, "-c", conf], port, children, scratch=prefix)


def run_wrk(url, connections, duration):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError("wrk output not understood:\n" + out)
    errors = 0
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if se:
        errors += sum(int(x) for x in se.groups())
    n2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if n2:
        errors += int(n2.group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return float(m.group(1)), total, errors


def run_h2load(url, connections, depth, n):
    cmd = ["h2load", "--h1", "-c", str(connections), "-m", str(depth), "-n", str(n), "-T", "30", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    r = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    s = re.search(r"status codes: (\d+) 2xx", out)
    if not (m and r and s):
        raise RuntimeError("h2load output not understood:\n" + out)
    errors = int(r.group(2)) + int(r.group(3)) + int(r.group(4)) + (n - int(s.group(1)))
    return float(m.group(3)), int(r.group(1)), errors


def measure(server, kind, args, h2_n):
    cpu0 = proc_cpu_seconds(server.pids())
    if kind == "wrk":
        rps, total, errors = run_wrk(server.url("/plaintext"), args.connections, args.duration)
    else:
        rps, total, errors = run_h2load(server.url("/plaintext"), args.connections, args.depth, h2_n)
    cpu = proc_cpu_seconds(server.pids()) - cpu0
    return {"rps": rps, "requests": total, "errors": errors,
            "cpu_us_per_req": (cpu * 1e6 / total) if total else 0.0}


def default_binary():
    for d in ("build/release", "build/h-http", "build"):
        p = os.path.join(ROOT, d, "tools/examples/http/esockets-http")
        if os.access(p, os.X_OK):
            return p
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=default_binary(), help="esockets-http executable")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per server and tool (>= 3)")
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--depth", type=int, default=16, help="h2load -m (pipelined requests)")
    ap.add_argument("--threads", type=int, default=2, help="esockets shards = nginx workers")
    ap.add_argument("--workers", type=int, default=0, help="esockets-http --workers")
    ap.add_argument("--tools", default="wrk,h2load", help="comma-separated: wrk, h2load")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' = stdout)")
    args = ap.parse_args()
    if not args.binary or not os.access(args.binary, os.X_OK):
        sys.exit("http_bench: no esockets-http binary (build it, or pass --binary)")
    for tool in ("wrk", "h2load", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"http_bench: {tool} is not installed (apt-get install wrk nghttp2-client nginx-light)")
    tools = [t for t in args.tools.split(",") if t]

    servers = {"esockets": start_esockets(args.binary, args.threads, args.workers),
               "nginx": start_nginx(args.threads)}
    results = {t: {s: [] for s in servers} for t in tools}
    try:
        # h2load runs a request count, not a time: size it for ~duration s on the faster one.
        h2_n = 0
        if "h2load" in tools:
            rates = [run_h2load(s.url("/plaintext"), args.connections, args.depth, 200000)[0]
                     for s in servers.values()]
            h2_n = max(100000, int(max(rates) * args.duration) // 1000 * 1000)
        for rep in range(args.reps):
            for tool in tools:
                order = list(servers) if rep % 2 == 0 else list(reversed(servers))
                for name in order:
                    r = measure(servers[name], tool, args, h2_n)
                    results[tool][name].append(r)
                    print(f"  rep {rep + 1} {tool:6} {name:8} {r['rps']:>10.0f} req/s  "
                          f"{r['cpu_us_per_req']:.2f} us CPU/req  errors {r['errors']}",
                          file=sys.stderr, flush=True)
    finally:
        for s in servers.values():
            s.stop()

    summary = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
               "settings": {"connections": args.connections, "depth": args.depth,
                            "threads": args.threads, "workers": args.workers,
                            "duration": args.duration, "h2load_requests": h2_n, "reps": args.reps},
               "runs": results, "medians": {}}
    rows = []
    for tool in tools:
        med = {s: statistics.median(r["rps"] for r in results[tool][s]) for s in servers}
        cpu = {s: statistics.median(r["cpu_us_per_req"] for r in results[tool][s]) for s in servers}
        errs = {s: sum(r["errors"] for r in results[tool][s]) for s in servers}
        ratio = med["esockets"] / med["nginx"] if med["nginx"] else float("nan")
        summary["medians"][tool] = {"rps": med, "cpu_us_per_req": cpu, "errors": errs, "ratio": ratio}
        label = (f"wrk -t1 -c{args.connections} -d{args.duration}s" if tool == "wrk" else
                 f"h2load --h1 -c{args.connections} -m{args.depth} -n{h2_n}")
        rows.append(f"| {label} | {med['esockets']:,.0f} | {med['nginx']:,.0f} | {ratio:.2f}x | "
                    f"{cpu['esockets']:.2f} / {cpu['nginx']:.2f} | {errs['esockets']} / {errs['nginx']} |")
    print(f"\nesockets-http (--shards {args.threads} --workers {args.workers}) vs nginx "
          f"({args.threads} workers), GET /plaintext, median of {args.reps}\n")
    print("| load | esockets-http req/s | nginx req/s | esockets/nginx | CPU us/req (esockets / nginx) | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    if args.json:
        text = json.dumps(summary, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

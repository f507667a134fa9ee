#!/usr/bin/env python3
"""The Python package against the C++ engine: an echo handler written in Python
(python/bench/echo_server.py, esockets.Socket) vs the C++ esockets-echo, both driven by
esockets-flood.

    python3 python/bench/bench.py [--build-dir build/h-py] [--python build/python-venv/bin/python]
                                  [--duration 5] [--reps 3] [--json out.json]

Workloads: 64-byte ping-pong over 50 connections (one request in flight each), the same
pipelined (16 in flight each; raw framing, so Python sees one call per read), and pipelined
with line framing (one Python call per request). Server configurations: 1 and 2 shards, handlers inline
(workers=0) for both; Python additionally with 1 shard + 1 worker thread. Every (workload,
server) pair runs --reps times, interleaved (A B C A B C ...), each on a fresh server; the
report gives medians, the server's CPU microseconds per message, and the ratios Python / C++
with the same shard count (py-1s1w against cpp-1s) of both. On a shared, busy machine the
throughput ratio is noisy; CPU per message is the steadier measure of what Python costs. esockets-flood runs with one thread (it takes about one of the two
cores). Build the tools first:

    cmake -S . -B build/h-py -DCMAKE_BUILD_TYPE=Release
    cmake --build build/h-py -j2 --target esockets-echo esockets-flood

Standard library only.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLK_TCK = os.sysconf("SC_CLK_TCK")

# name -> (server framing, flood arguments). With raw framing (the seed's) a read is one
# message, so pipelined requests reach Python a read at a time; line framing makes every
# request its own on_message_recv call (63 B + '\n').
WORKLOADS = {
    "pingpong": ("raw", ["--size", "64", "pingpong"]),
    "pipeline16": ("raw", ["--size", "64", "pipeline", "16"]),
    "pipeline16-line": ("line", ["--size", "63", "--framing", "line", "pipeline", "16"]),
}
# name -> (kind, shards, workers)
SERVERS = {
    "cpp-1s": ("cpp", 1, 0),
    "py-1s": ("py", 1, 0),
    "cpp-2s": ("cpp", 2, 0),
    "py-2s": ("py", 2, 0),
    "py-1s1w": ("py", 1, 1),
}
BASELINE = {"py-1s": "cpp-1s", "py-2s": "cpp-2s", "py-1s1w": "cpp-1s"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def find(build_dir, name, subdirs):
    for d in subdirs:
        p = os.path.join(build_dir, d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    sys.exit(f"bench.py: {name} not found under {build_dir}; build it first:\n"
             f"  cmake -S {ROOT} -B {build_dir} -DCMAKE_BUILD_TYPE=Release && "
             f"cmake --build {build_dir} -j2 --target esockets-echo esockets-flood")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_server(args, kind, shards, workers, framing):
    if kind == "cpp":
        cmd = [args.echo, "--port", "0", "--shards", str(shards), "--workers", str(workers),
               "--framing", framing]
    else:
        cmd = [args.python, os.path.join(HERE, "echo_server.py"), "--shards", str(shards),
               "--workers", str(workers), "--framing", framing]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 20
    port = None
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        if kind == "cpp" and "listening on" in line:
            port = int(line.split("listening on", 1)[1].split()[0].rsplit(":", 1)[1])
            break
        if kind == "py" and line.startswith("listening"):
            port = int(line.split()[1])
            break
    if port is None:
        p.kill()
        sys.exit(f"bench.py: the server did not start: {' '.join(cmd)}")
    return p, port


def stop_server(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        log("bench.py: a server ignored SIGTERM for 20 s and was killed")


def run_one(args, workload, server):
    kind, shards, workers = SERVERS[server]
    framing, flood_args = WORKLOADS[workload]
    p, port = start_server(args, kind, shards, workers, framing)
    try:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
            out = tf.name
        cmd = [args.flood, "--port", str(port), "-c", str(args.conns), "--threads", "1",
               "--duration", str(args.duration), "--warmup", "1", "--quiet", "--json", out]
        cmd += flood_args
        cpu0 = cpu_seconds(p.pid)
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=args.duration + 60)
        cpu1 = cpu_seconds(p.pid)
        if r.returncode not in (0, 5):
            sys.exit(f"bench.py: esockets-flood exited {r.returncode}: {r.stderr[-2000:]}")
        with open(out) as f:
            res = json.load(f)
        os.unlink(out)
    finally:
        stop_server(p)
    thr = res.get("throughput", {})
    msgs = thr.get("msgs_per_sec") or res.get("msgs_per_sec")
    lat = res.get("latency_us", {})
    p99 = lat.get("p99") if isinstance(lat, dict) else None
    total_msgs = msgs * args.duration if msgs else 0
    return {
        "msgs_per_sec": msgs,
        "p99_us": p99,
        "server_cpu_s": cpu1 - cpu0,
        "cpu_us_per_msg": (cpu1 - cpu0) * 1e6 / total_msgs if total_msgs else None,
        "valid": res.get("valid", True),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build", "h-py"))
    ap.add_argument("--python", default=os.path.join(ROOT, "build", "python-venv", "bin", "python"),
                    help="an interpreter that imports esockets (default: python/test.sh's venv)")
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--json", help="write every run and the medians here")
    args = ap.parse_args()
    args.echo = find(args.build_dir, "esockets-echo", ["tools", "tools/echo"])
    args.flood = find(args.build_dir, "esockets-flood", ["tools/flood", "tools"])
    workloads = args.workloads.split(",")
    servers = args.servers.split(",")
    runs = {(w, s): [] for w in workloads for s in servers}
    for rep in range(args.reps):
        for w in workloads:
            for s in servers:
                r = run_one(args, w, s)
                runs[(w, s)].append(r)
                log(f"rep {rep + 1}/{args.reps} {w:10s} {s:8s} {r['msgs_per_sec'] or 0:10.0f} msgs/s"
                    f"  cpu {r['cpu_us_per_msg'] or 0:.2f} us/msg")

    def med(w, s, key):
        vals = [r[key] for r in runs[(w, s)] if r[key] is not None]
        return statistics.median(vals) if vals else None

    load = os.getloadavg()
    print(f"\nesockets Python package vs C++ engine: median of {args.reps} interleaved runs, "
          f"{args.conns} connections, 64 B, {args.duration:g} s each (load average "
          f"{load[0]:.1f} at the end)\n")
    print("| workload | server | msgs/s | p99 latency (us) | server CPU us/msg | msgs/s vs C++ | CPU/msg vs C++ |")
    print("|---|---|---:|---:|---:|---:|---:|")
    summary = {}
    for w in workloads:
        for s in servers:
            m = med(w, s, "msgs_per_sec")
            base = BASELINE.get(s)
            ratio = cpu_ratio = None
            p99 = med(w, s, "p99_us")
            cpu = med(w, s, "cpu_us_per_msg")
            if base in servers and m and med(w, base, "msgs_per_sec"):
                ratio = m / med(w, base, "msgs_per_sec")
            if base in servers and cpu and med(w, base, "cpu_us_per_msg"):
                cpu_ratio = cpu / med(w, base, "cpu_us_per_msg")
            summary[f"{w}/{s}"] = {"msgs_per_sec": m, "p99_us": p99, "cpu_us_per_msg": cpu,
                                   "ratio_vs_cpp": ratio, "cpu_ratio_vs_cpp": cpu_ratio}
            print(f"| {w} | {s} | {m or 0:,.0f} | {p99 if p99 is not None else '-'} | "
                  f"{cpu or 0:.2f} | {f'{ratio:.2f}x' if ratio else '-'} | "
                  f"{f'{cpu_ratio:.2f}x' if cpu_ratio else '-'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": {f"{w}/{s}": v for (w, s), v in runs.items()}, "medians": summary,
                       "loadavg": load}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

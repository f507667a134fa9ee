#!/usr/bin/env python3
"""End-to-end comparison of esockets-echo against Boost.Asio, libuv and raw-epoll echo servers.

Builds nothing: point --build-dir at a configured and built tree (default build/release).
Each run starts one server on an ephemeral port, drives it with esockets-flood --json, samples
the server's CPU (utime+stime from /proc/PID/stat) and RSS (VmRSS from /proc/PID/status), then
stops it with SIGTERM. Configurations are interleaved (A/B/A/B ...) for --reps repetitions and
the medians are compared: ratio = esockets / baseline with the same thread count.

Standard library only. The chart is a PNG via matplotlib when it is importable, otherwise a
hand-written SVG bar chart.
"""

import argparse
import json
import math
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# name -> (flood args, duration factor, headline metric)
WORKLOADS = {
    "pingpong": {"desc": "64 B requests, one in flight per connection, 50 connections",
                 "conns": 50, "args": ["--size", "64", "pingpong"], "metric": "msgs_per_sec"},
    "pipeline": {"desc": "64 B requests, 16 in flight per connection, 200 connections",
                 "conns": 200, "args": ["--size", "64", "pipeline", "16"], "metric": "msgs_per_sec"},
    "bulk": {"desc": "16 KiB requests, 4 in flight per connection, 20 connections",
             "conns": 20, "args": ["--size", "16384", "pipeline", "4"], "metric": "bytes_per_sec"},
    "rate": {"desc": "open-loop 64 B requests at 50% of the slowest server's measured peak, "
                     "50 connections (latency from intended send time)",
             "conns": 50, "args": ["--size", "64", "rate"], "metric": "latency_p99_us"},
    "storm": {"desc": "connect storm: open 10,000 connections as fast as possible",
              "conns": 10000, "args": ["storm"], "metric": "connects_per_sec"},
    "idle": {"desc": "hold 19,000 idle connections (2 client processes); server RSS per connection",
             "conns": 19000, "procs": 2, "args": ["idle"], "metric": "rss_per_conn_bytes"},
}
ORDER = ["pingpong", "pipeline", "bulk", "rate", "storm", "idle"]
# Which direction is better for each headline metric.
HIGHER_IS_BETTER = {"msgs_per_sec": True, "bytes_per_sec": True, "connects_per_sec": True,
                    "latency_p99_us": False, "rss_per_conn_bytes": False}

SMOKE_CONNS = {"pingpong": 4, "pipeline": 8, "bulk": 2, "rate": 4, "storm": 200, "idle": 200}


class Fatal(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Binaries and configurations

def find_binary(build_dir, name, candidates):
    for c in candidates:
        p = os.path.join(build_dir, c, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def locate(build_dir):
    bins = {
        "esockets-echo": find_binary(build_dir, "esockets-echo", ["tools", "tools/echo", "bin", "."]),
        "esockets-flood": find_binary(build_dir, "esockets-flood", ["tools/flood", "tools", "bin", "."]),
    }
    for b in ("asio_echo", "uv_echo", "epoll_echo"):
        bins[b] = find_binary(build_dir, b, ["benchmarks", "benchmarks/baselines", "bin", "."])
    return bins


def make_configs(bins, shards, worker_modes, baselines, backends=("epoll",)):
    """Each config: name, group (thread count), kind (esockets/baseline), argv. With more than
    one backend, each esockets config runs on each (named ...-uring for io_uring)."""
    configs = []
    for n in shards:
        for w in worker_modes:
            for be in backends:
                name = "esockets-s%d-%s%s" % (n, "inline" if w == 0 else "w%d" % w,
                                              "-uring" if be == "io_uring" else "")
                configs.append({"name": name, "threads": n, "kind": "esockets", "backend": be,
                                "argv": [bins["esockets-echo"], "--port", "0", "--shards", str(n),
                                         "--workers", str(w), "--backend", be]})
        for b in baselines:
            exe = bins.get(b + "_echo")
            if exe is None:
                log("warning: %s_echo not built, skipping that baseline" % b)
                continue
            configs.append({"name": "%s-t%d" % (b, n), "threads": n, "kind": "baseline", "base": b,
                            "argv": [exe, "--port", "0", "--threads", str(n)]})
    return configs


# ---------------------------------------------------------------------------------------------
# Server process handling

def proc_cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK  # fields 14 and 15: utime, stime


def proc_rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Server:
    def __init__(self, config, logdir):
        self.config = config
        self.errpath = os.path.join(logdir, "server-%s.stderr" % config["name"])
        self.err = open(self.errpath, "a")
        self.proc = subprocess.Popen(config["argv"], stdout=subprocess.PIPE, stderr=self.err,
                                     stdin=subprocess.DEVNULL)
        self.port = None
        line = b""
        deadline = time.monotonic() + 10
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                break
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                break
            ch = os.read(fd, 1)
            if not ch:
                break
            line += ch
        m = re.search(rb"listening on [^\s]*:(\d+)", line)
        if not m:
            self.kill()
            raise Fatal("%s did not start (first line %r, exit %s); see %s" %
                        (config["name"], line, self.proc.poll(), self.errpath))
        self.port = int(m.group(1))
        # Drain the rest of stdout (esockets-echo prints stats at exit) so it never blocks.
        self.out_tail = []
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        for line in self.proc.stdout:
            self.out_tail.append(line)
            del self.out_tail[:-50]

    @property
    def pid(self):
        return self.proc.pid

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()

    def stop(self):
        """SIGTERM; returns the exit status (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.reader.join(timeout=2)
        self.err.close()
        return rc


class RssSampler(threading.Thread):
    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.max_kb = 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            v = proc_rss_kb(self.pid)
            if v is not None:
                self.max_kb = max(self.max_kb, v)
            self.stop_ev.wait(self.interval)

    def finish(self):
        self.stop_ev.set()
        self.join()
        return self.max_kb


# ---------------------------------------------------------------------------------------------
# One run

def run_one(opts, bins, config, workload, rep, rate, logdir):
    wl = WORKLOADS[workload]
    conns = SMOKE_CONNS[workload] if opts.smoke else wl["conns"]
    procs = 1 if opts.smoke else wl.get("procs", 1)
    duration = opts.duration
    if workload == "idle" and not opts.smoke:
        duration = max(duration, 8)  # time to open 19,000 connections and let RSS settle
    server = Server(config, logdir)
    rec = {"workload": workload, "config": config["name"], "threads": config["threads"],
           "kind": config["kind"], "rep": rep, "connections_requested": conns}
    try:
        time.sleep(0.2)
        rss0 = proc_rss_kb(server.pid)
        cpu0 = proc_cpu_s(server.pid)
        jpath = os.path.join(logdir, "flood-%s-%s-%d.json" % (workload, config["name"], rep))
        if os.path.exists(jpath):
            os.unlink(jpath)
        argv = [bins["esockets-flood"], "--host", "127.0.0.1", "--port", str(server.port),
                "-c", str(conns), "--procs", str(procs), "--duration", str(duration),
                "--quiet", "--json", jpath]
        if opts.flood_threads:
            argv += ["--threads", str(opts.flood_threads)]
        if opts.verify and workload in ("pingpong", "pipeline", "bulk"):
            argv.append("--verify")
        argv += wl["args"]
        if workload == "rate":
            argv.append(str(int(max(1, rate))))
        rec["flood_argv"] = argv
        sampler = RssSampler(server.pid)
        sampler.start()
        t0 = time.monotonic()
        with open(os.path.join(logdir, "flood.stderr"), "a") as ferr:
            ferr.write("\n=== %s %s rep %d: %s\n" % (workload, config["name"], rep, " ".join(argv)))
            ferr.flush()
            try:
                fr = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=ferr,
                                    timeout=duration + 60)
                rec["flood_exit"] = fr.returncode
            except subprocess.TimeoutExpired:
                rec["flood_exit"] = None
        wall = time.monotonic() - t0
        rss_max = sampler.finish()
        cpu1 = proc_cpu_s(server.pid)
        rss1 = proc_rss_kb(server.pid)
        if server.proc.poll() is not None:
            rec["server_died"] = server.proc.returncode
    finally:
        rc = server.stop()
    rec["server_exit"] = rc
    rec["wall_s"] = wall
    if cpu0 is not None and cpu1 is not None:
        rec["server_cpu_s"] = cpu1 - cpu0
        rec["server_cpu_util"] = (cpu1 - cpu0) / wall if wall > 0 else None
    rec["rss_before_kb"], rec["rss_after_kb"], rec["rss_max_kb"] = rss0, rss1, rss_max
    try:
        with open(jpath) as f:
            j = json.load(f)
    except (OSError, ValueError) as e:
        rec["error"] = "flood wrote no JSON (exit %s): %s" % (rec.get("flood_exit"), e)
        return rec
    th, lat, cn = j.get("throughput", {}), j.get("latency_us", {}), j.get("connections", {})
    rec["valid"] = j.get("valid")
    rec["invalid_reasons"] = j.get("invalid_reasons", [])
    rec["errors_total"] = j.get("errors", {}).get("total", 0)
    rec["connections_established"] = cn.get("established")
    rec["connections_failed"] = cn.get("failed")
    rec["msgs_per_sec"] = th.get("msgs_per_sec")
    rec["bytes_per_sec"] = th.get("bytes_per_sec")
    rec["latency_us"] = {k: lat.get(k) for k in ("p50", "p90", "p99", "p999", "max")}
    rec["latency_p99_us"] = lat.get("p99")
    if workload == "rate":
        rec["target_rate"] = rate
    ttn = cn.get("time_to_n_s")
    rec["time_to_n_s"] = ttn
    if workload == "storm" and ttn:
        rec["connects_per_sec"] = (cn.get("established") or 0) / ttn
    if workload in ("storm", "idle"):
        # No request traffic: the echo metrics are meaningless here.
        rec["msgs_per_sec"] = rec["bytes_per_sec"] = rec["latency_p99_us"] = None
        rec["latency_us"] = {}
        cl = j.get("connect_latency_us") or {}
        rec["connect_latency_us"] = {k: cl.get(k) for k in ("p50", "p99", "max")}
    if workload == "idle" and rss0 and rss_max and cn.get("established"):
        rec["rss_per_conn_bytes"] = (rss_max - rss0) * 1024.0 / cn["established"]
    if rec.get("server_cpu_s") is not None and rec.get("msgs_per_sec") and workload != "idle":
        steady = th.get("msgs_total") or 0
        if steady:
            rec["server_cpu_us_per_msg"] = rec["server_cpu_s"] * 1e6 / steady
    return rec


def run_problem(rec):
    """A reason this run counts as failed (server or tool trouble), or None. Speed never fails."""
    if rec.get("error"):
        return rec["error"]
    if rec.get("server_died") is not None:
        return "server exited during the run (status %s)" % rec["server_died"]
    if rec.get("server_exit") not in (0,):
        return "server did not exit 0 on SIGTERM (status %s)" % rec.get("server_exit")
    if rec.get("errors_total"):
        return "flood counted %s errors" % rec["errors_total"]
    # 0 ok, 5 = run marked invalid because the generator/machine was saturated (not an error).
    if rec.get("flood_exit") not in (0, 5):
        return "esockets-flood exited %s" % rec.get("flood_exit")
    return None


# ---------------------------------------------------------------------------------------------
# Aggregation

def metric_of(rec, metric):
    v = rec.get(metric)
    return v if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else None


def median_of(recs, metric):
    vals = [v for v in (metric_of(r, metric) for r in recs) if v is not None]
    return statistics.median(vals) if vals else None


def summarize(records, configs, workloads):
    summary = {}
    for w in workloads:
        for c in configs:
            recs = [r for r in records if r["workload"] == w and r["config"] == c["name"]]
            if not recs:
                continue
            s = {"runs": len(recs), "failed_runs": sum(1 for r in recs if run_problem(r))}
            for m in ("msgs_per_sec", "bytes_per_sec", "connects_per_sec", "rss_per_conn_bytes",
                      "server_cpu_util", "server_cpu_us_per_msg", "rss_max_kb", "time_to_n_s"):
                s[m] = median_of(recs, m)
            s["latency_us"] = {}
            for p in ("p50", "p90", "p99", "p999", "max"):
                vals = [r["latency_us"][p] for r in recs
                        if r.get("latency_us") and r["latency_us"].get(p) is not None]
                s["latency_us"][p] = statistics.median(vals) if vals else None
            s["latency_p99_us"] = s["latency_us"]["p99"]
            if w == "rate":
                s["target_rate"] = recs[0].get("target_rate")
            s["valid_runs"] = sum(1 for r in recs if r.get("valid"))
            summary.setdefault(w, {})[c["name"]] = s
    return summary


def ratios(summary, configs):
    """esockets config / baseline config with the same thread count, per workload and metric."""
    out = []
    for w, per in summary.items():
        metric = WORKLOADS[w]["metric"]
        extra = ["server_cpu_us_per_msg"] if w not in ("idle", "storm") else []
        if w in ("pingpong", "pipeline", "bulk"):
            extra.append("latency_p99_us")
        for e in configs:
            if e["kind"] != "esockets" or e["name"] not in per:
                continue
            for b in configs:
                if b["kind"] != "baseline" or b["threads"] != e["threads"] or b["name"] not in per:
                    continue
                for m in [metric] + extra:
                    ev, bv = per[e["name"]].get(m), per[b["name"]].get(m)
                    if ev is None or not bv:
                        continue
                    out.append({"workload": w, "metric": m, "esockets": e["name"], "baseline": b["name"],
                                "esockets_value": ev, "baseline_value": bv, "ratio": ev / bv,
                                "higher_is_better": HIGHER_IS_BETTER.get(m, False)})
    return out


# ---------------------------------------------------------------------------------------------
# Output

def fmt(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 1e9:
        return "%.2fG%s" % (v / 1e9, unit)
    if abs(v) >= 1e6:
        return "%.2fM%s" % (v / 1e6, unit)
    if abs(v) >= 1e4:
        return "%.1fk%s" % (v / 1e3, unit)
    if abs(v) >= 100:
        return "%.0f%s" % (v, unit)
    return "%.3g%s" % (v, unit)


def print_tables(summary, rats, configs, out=sys.stdout):
    names = [c["name"] for c in configs]
    hdr = "%-10s %-20s %10s %10s %9s %9s %9s %8s %10s %9s %5s" % (
        "workload", "config", "msgs/s", "MB/s", "p50 us", "p99 us", "p99.9 us", "cpu%",
        "conn/s", "B/conn", "ok")
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for w in ORDER:
        if w not in summary:
            continue
        for n in names:
            s = summary[w].get(n)
            if s is None:
                continue
            lat = s["latency_us"]
            mbs = s["bytes_per_sec"] / 1e6 if s.get("bytes_per_sec") is not None else None
            cpu = s["server_cpu_util"] * 100 if s.get("server_cpu_util") is not None else None
            print("%-10s %-20s %10s %10s %9s %9s %9s %8s %10s %9s %5s" % (
                w, n, fmt(s.get("msgs_per_sec")), fmt(mbs), fmt(lat.get("p50")), fmt(lat.get("p99")),
                fmt(lat.get("p999")), fmt(cpu), fmt(s.get("connects_per_sec")),
                fmt(s.get("rss_per_conn_bytes")), "%d/%d" % (s["runs"] - s["failed_runs"], s["runs"])),
                file=out)
        if w == "rate" and summary[w]:
            tr = next(iter(summary[w].values())).get("target_rate")
            print("%-10s (offered load %s msgs/s)" % ("", fmt(tr)), file=out)
    if rats:
        print("", file=out)
        print("Ratios esockets / baseline (medians; same thread count). "
              "For throughput >1 is better, for latency/RSS/CPU <1 is better.", file=out)
        print("%-10s %-22s %-20s %-12s %12s %12s %7s" % (
            "workload", "metric", "esockets", "baseline", "esockets", "baseline", "ratio"), file=out)
        for r in rats:
            print("%-10s %-22s %-20s %-12s %12s %12s %7.2f" % (
                r["workload"], r["metric"], r["esockets"], r["baseline"], fmt(r["esockets_value"]),
                fmt(r["baseline_value"]), r["ratio"]), file=out)


def chart_series(summary, configs):
    """Throughput panels (one per throughput workload) and a latency panel (rate workload)."""
    names = [c["name"] for c in configs]
    panels = []
    for w, metric, label, scale in (("pingpong", "msgs_per_sec", "pingpong msgs/s (k)", 1e3),
                                    ("pipeline", "msgs_per_sec", "pipeline msgs/s (k)", 1e3),
                                    ("bulk", "bytes_per_sec", "bulk MB/s", 1e6),
                                    ("storm", "connects_per_sec", "storm connects/s (k)", 1e3),
                                    ("idle", "rss_per_conn_bytes", "idle RSS bytes/conn", 1)):
        if w in summary:
            vals = [(n, (summary[w][n].get(metric) or 0) / scale) for n in names if n in summary[w]]
            panels.append({"title": label, "groups": [n for n, _ in vals], "series": [("median", [v for _, v in vals])]})
    lat_w = "rate" if "rate" in summary else next((w for w in ("pingpong", "pipeline") if w in summary), None)
    if lat_w:
        groups = [n for n in names if n in summary[lat_w]]
        series = []
        for p in ("p50", "p90", "p99", "p999"):
            series.append((p, [(summary[lat_w][n]["latency_us"].get(p) or 0) for n in groups]))
        panels.append({"title": "%s latency (us)" % lat_w, "groups": groups, "series": series})
    return panels


def write_png(panels, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.9 * max(len(p["groups"]) for p in panels) + 3),
                                                        3.2 * len(panels)), squeeze=False)
    for ax, p in zip(axes[:, 0], panels):
        k = len(p["series"])
        width = 0.8 / k
        for i, (label, vals) in enumerate(p["series"]):
            xs = [g + (i - (k - 1) / 2) * width for g in range(len(p["groups"]))]
            ax.bar(xs, vals, width, label=label)
        ax.set_xticks(range(len(p["groups"])))
        ax.set_xticklabels(p["groups"], rotation=30, ha="right", fontsize=8)
        ax.set_title(p["title"])
        if k > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_svg(panels, path):
    colors = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f"]
    pw, ph, top, left, bottom = 900, 260, 30, 70, 90
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="11">' % (pw, ph * len(panels))]
    out.append('<rect width="100%" height="100%" fill="white"/>')
    for pi, p in enumerate(panels):
        y0 = pi * ph
        plot_h = ph - top - bottom
        plot_w = pw - left - 20
        vmax = max([v for _, vals in p["series"] for v in vals] + [1e-9])
        out.append('<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>' % (left, y0 + 18, esc(p["title"])))
        base = y0 + top + plot_h
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, base, left + plot_w, base))
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, y0 + top, left, base))
        for t in range(5):
            v = vmax * t / 4
            y = base - plot_h * t / 4
            out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (left - 4, y + 4, esc(fmt(v))))
            out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (left, y, left + plot_w, y))
        ng, ns = max(1, len(p["groups"])), len(p["series"])
        gw = plot_w / ng
        bw = gw * 0.8 / ns
        for gi, g in enumerate(p["groups"]):
            gx = left + gi * gw + gw * 0.1
            for si, (_, vals) in enumerate(p["series"]):
                h = plot_h * vals[gi] / vmax
                out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>' % (
                    gx + si * bw, base - h, bw, h, colors[si % len(colors)], esc("%s %s" % (g, fmt(vals[gi])))))
            cx = left + gi * gw + gw / 2
            out.append('<text x="%.1f" y="%d" text-anchor="end" transform="rotate(-30 %.1f %d)">%s</text>' % (
                cx, base + 14, cx, base + 14, esc(g)))
        if ns > 1:
            for si, (label, _) in enumerate(p["series"]):
                lx = pw - 80
                ly = y0 + top + si * 14
                out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>' % (lx, ly, colors[si % len(colors)]))
                out.append('<text x="%d" y="%d">%s</text>' % (lx + 14, ly + 9, esc(label)))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_chart(panels, chart_path, force_svg):
    if not panels:
        return None, "no data to chart"
    if not force_svg:
        try:
            import matplotlib  # noqa: F401
            png = os.path.splitext(chart_path)[0] + ".png"
            write_png(panels, png)
            return png, "matplotlib PNG"
        except ImportError:
            pass
    svg = os.path.splitext(chart_path)[0] + ".svg"
    write_svg(panels, svg)
    return svg, "hand-written SVG (matplotlib not importable)" if not force_svg else "hand-written SVG"


# ---------------------------------------------------------------------------------------------

def parse_list(s, conv=str):
    return [conv(x) for x in s.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build", "release"),
                    help="built tree holding esockets-echo, esockets-flood and the baselines "
                         "(default: build/release)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only these workloads (repeatable or comma-separated): " + ", ".join(ORDER))
    ap.add_argument("--shards", default="1,2,4", help="esockets shard counts = baseline thread counts (default 1,2,4)")
    ap.add_argument("--workers", default="0,2", help="esockets worker modes, 0 = inline (default 0,2)")
    ap.add_argument("--baselines", default="asio,uv,epoll", help="baselines to compare (default asio,uv,epoll)")
    ap.add_argument("--backends", default="epoll",
                    help="esockets backends to run, comma-separated: epoll, io_uring (default epoll)")
    ap.add_argument("--rate", type=float, default=None, help="rate workload: msgs/s to offer (default: 50%% of peak)")
    ap.add_argument("--flood-threads", type=int, default=None, help="esockets-flood --threads (default: its own)")
    ap.add_argument("--verify", action="store_true", help="pass --verify to the flood tool for echo workloads")
    ap.add_argument("--out", default="results.json", help="JSON results file (default results.json)")
    ap.add_argument("--chart", default=None, help="chart path without extension decides the name "
                                                 "(default: next to --out); .png with matplotlib, else .svg")
    ap.add_argument("--svg", action="store_true", help="write the SVG chart even if matplotlib is available")
    ap.add_argument("--logdir", default=None, help="where server stderr and flood JSON go (default: a temp dir)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny CI run: 1 rep, 1 s runs, few connections, esockets 1 shard (inline and "
                         "2 workers) vs the epoll baseline; fails only if something does not work")
    opts = ap.parse_args()

    workloads = ORDER
    if opts.only:
        wanted = [w for o in opts.only for w in parse_list(o)]
        bad = [w for w in wanted if w not in WORKLOADS]
        if bad:
            ap.error("unknown workload(s) %s; choose from %s" % (", ".join(bad), ", ".join(ORDER)))
        workloads = [w for w in ORDER if w in wanted]
    if opts.smoke:
        opts.reps = 1
        opts.duration = 1.0 if opts.duration == ap.get_default("duration") else opts.duration
        shards, worker_modes, baselines = [1], [0, 2], ["epoll"]
    else:
        shards = parse_list(opts.shards, int)
        worker_modes = parse_list(opts.workers, int)
        baselines = parse_list(opts.baselines)
    if opts.reps < 1 or opts.duration <= 0:
        ap.error("--reps must be >= 1 and --duration > 0")

    build_dir = os.path.abspath(opts.build_dir)
    bins = locate(build_dir)
    for need in ("esockets-echo", "esockets-flood"):
        if bins[need] is None:
            log("e2e: %s not found under %s (build the project first)" % (need, build_dir))
            return 1
    if opts.smoke and bins.get("epoll_echo") is None:
        log("e2e: epoll_echo not found under %s" % build_dir)
        return 1
    backends = parse_list(opts.backends)
    bad = [b for b in backends if b not in ("epoll", "io_uring")]
    if bad or not backends:
        ap.error("--backends takes epoll and/or io_uring, not %s" % ", ".join(bad or ["nothing"]))
    configs = make_configs(bins, shards, worker_modes, baselines, backends)

    logdir = opts.logdir or tempfile.mkdtemp(prefix="esockets-e2e-")
    os.makedirs(logdir, exist_ok=True)
    log("e2e: %d configs x %d workloads x %d reps, %.0f s runs; logs in %s" %
        (len(configs), len(workloads), opts.reps, opts.duration, logdir))

    records, problems = [], []
    peaks = {}  # config -> [peak msgs/s] from pingpong/pipeline, feeds the rate workload
    try:
        for rep in range(opts.reps):
            for w in workloads:
                # Rotate the start so no configuration always runs first (A/B/A/B interleaving).
                order = configs[rep % len(configs):] + configs[:rep % len(configs)]
                rate = None
                if w == "rate":
                    rate = opts.rate or rate_target(peaks, configs, opts, bins, logdir)
                for c in order:
                    log("e2e: rep %d/%d  %-9s %-20s ..." % (rep + 1, opts.reps, w, c["name"]))
                    try:
                        rec = run_one(opts, bins, c, w, rep, rate, logdir)
                    except Fatal as e:
                        rec = {"workload": w, "config": c["name"], "threads": c["threads"], "kind": c["kind"],
                               "rep": rep, "error": str(e)}
                    records.append(rec)
                    p = run_problem(rec)
                    if p:
                        problems.append("%s / %s / rep %d: %s" % (w, c["name"], rep, p))
                        log("e2e:   PROBLEM: %s" % p)
                    else:
                        log("e2e:   msgs/s %s  MB/s %s  p99 %s us  conn/s %s  B/conn %s  valid %s" % (
                            fmt(rec.get("msgs_per_sec")), fmt((rec.get("bytes_per_sec") or 0) / 1e6),
                            fmt(rec.get("latency_p99_us")), fmt(rec.get("connects_per_sec")),
                            fmt(rec.get("rss_per_conn_bytes")), rec.get("valid")))
                    if w in ("pingpong", "pipeline") and rec.get("msgs_per_sec"):
                        peaks.setdefault(w, {}).setdefault(c["name"], []).append(rec["msgs_per_sec"])
    except KeyboardInterrupt:
        log("e2e: interrupted; reporting what ran")

    summary = summarize(records, configs, workloads)
    rats = ratios(summary, configs)
    print_tables(summary, rats, configs)

    chart_base = opts.chart or os.path.splitext(opts.out)[0]
    chart, how = write_chart(chart_series(summary, configs), chart_base, opts.svg)
    result = {
        "schema": 1,
        "tool": "esockets e2e.py",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": os.cpu_count(), "uname": " ".join(os.uname())},
        "settings": {"reps": opts.reps, "duration_s": opts.duration, "smoke": opts.smoke,
                     "workloads": workloads, "configs": [{k: c[k] for k in ("name", "threads", "kind", "argv")}
                                                         for c in configs],
                     "build_dir": build_dir},
        "workloads": {w: WORKLOADS[w]["desc"] for w in workloads},
        "runs": records,
        "summary": summary,
        "ratios": rats,
        "problems": problems,
        "chart": chart,
    }
    with open(opts.out, "w") as f:
        json.dump(result, f, indent=2)
    print("", flush=True)
    print("results: %s   chart: %s (%s)   logs: %s" % (opts.out, chart, how, logdir))
    if problems:
        print("%d run(s) had problems:" % len(problems))
        for p in problems:
            print("  " + p)
        return 1
    return 0


def rate_target(peaks, configs, opts, bins, logdir):
    """50% of the slowest configuration's median peak, the same offered load for every server.

    The peak is the closed-loop pingpong rate over the same connection count (the pipeline peak
    if pingpong did not run): what every server can sustain, so 50% of it is a fair load."""
    if opts.smoke:
        return 2000.0  # keep the tiny run far from saturation on a shared CI machine
    src = peaks.get("pingpong") or peaks.get("pipeline") or {}
    meds = [statistics.median(v) for v in src.values() if v]
    if not meds:
        # Nothing measured yet (e.g. --only rate): calibrate with one pingpong run per config.
        for c in configs:
            try:
                rec = run_one(opts, bins, c, "pingpong", -1, None, logdir)
            except Fatal:
                continue
            if rec.get("msgs_per_sec"):
                meds.append(rec["msgs_per_sec"])
    if not meds:
        return 1000.0
    return max(100.0, 0.5 * min(meds))


if __name__ == "__main__":
    sys.exit(main())

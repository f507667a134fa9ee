#!/bin/bash
# Who reports a server stall? redis-server and nginx are frozen (SIGSTOP) for STALL seconds in the
# middle of a run, and each tool's own summary is kept: redis-benchmark and esockets-flood
# --protocol resp against redis-server; wrk and esockets-flood --protocol http against nginx.
# esockets-flood runs twice: closed loop (pingpong, what redis-benchmark and wrk do) and open loop
# (rate R: wrk2-style correction from the intended send time, plus its censored unanswered requests).
# usage: run.sh FLOOD [SECS=6] [STALL=2] [RATE=20000]   (loopback only; servers on free ports < 32768)
set -u
FLOOD=${1:?usage: run.sh path/to/esockets-flood [SECS] [STALL] [RATE]}
SECS=${2:-6} STALL=${3:-2} RATE=${4:-20000}
AT=$(awk "BEGIN{print $SECS/2}")
work=$(mktemp -d /tmp/flood_stall.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port" >&2; exit 1
}
# freeze PID: SIGSTOP at $AT s for $STALL s (in the background)
freeze() { (sleep "$AT"; kill -STOP "$1"; sleep "$STALL"; kill -CONT "$1") & FZ=$!; }

RP=$(free_port)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --dir "$work" >"$work/redis.log" 2>&1 &
RPID=$!; pids+=($RPID)
NP=$(free_port)
mkdir -p "$work/tmp"
cat >"$work/nginx.conf" <<EOF2
worker_processes 1;
error_log $work/error.log;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  server { listen 127.0.0.1:$NP; location / { default_type text/plain; return 200 "Hello, World!"; } }
}
EOF2
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
NMASTER=$!; pids+=($NMASTER)
for _ in $(seq 100); do
  redis-cli -p "$RP" ping >/dev/null 2>&1 && curl -sf "http://127.0.0.1:$NP/" >/dev/null && break
  sleep 0.1
done
NWORKER=$(pgrep -P "$NMASTER" | head -1)  # the worker that serves (its parent is our master)
echo "# $(date -u +%F) load $(cut -d' ' -f1-3 /proc/loadavg); runs of ${SECS} s, server frozen at ${AT} s for ${STALL} s"

echo; echo "## redis-benchmark -t set -c 50 (count sized for ~${SECS} s; it has no duration flag)"
freeze "$RPID"
redis-benchmark -p "$RP" -t set -c 50 -n $((25000 * ${SECS%.*})) -r 100000 2>&1 | tr '\r' '\n' | grep -E "requests completed|throughput summary|latency summary|avg|^ +[0-9]" | tail -6
wait "$FZ"
echo; echo "## esockets-flood --protocol resp pingpong (closed loop, like redis-benchmark)"
freeze "$RPID"
"$FLOOD" --port "$RP" --protocol resp -c 50 --threads 1 --duration "$SECS" --quiet pingpong 2>&1 | grep -E "^steady|^requests|reply|^valid|^exit|What this run"
wait "$FZ"
echo; echo "## esockets-flood --protocol resp rate $RATE (open loop, wrk2-style correction)"
freeze "$RPID"
"$FLOOD" --port "$RP" --protocol resp -c 50 --threads 1 --duration "$SECS" --quiet rate "$RATE" 2>&1 | grep -E "^steady|^requests|corrected|service|^valid|^exit|What this run"
wait "$FZ"

echo; echo "## wrk -t1 -c50 -d${SECS}s --latency"
freeze "$NWORKER"
wrk -t1 -c50 -d"${SECS}s" --latency "http://127.0.0.1:$NP/" 2>&1 | grep -E "Latency|50%|99%|requests in|Requests/sec|Socket errors|timeout"
wait "$FZ"
echo; echo "## esockets-flood --protocol http pingpong (closed loop, like wrk)"
freeze "$NWORKER"
"$FLOOD" --port "$NP" --protocol http -c 50 --threads 1 --duration "$SECS" --quiet pingpong 2>&1 | grep -E "^steady|^requests|reply|^valid|^exit|What this run"
wait "$FZ"
echo; echo "## esockets-flood --protocol http rate $RATE (open loop, wrk2-style correction)"
freeze "$NWORKER"
"$FLOOD" --port "$NP" --protocol http -c 50 --threads 1 --duration "$SECS" --quiet rate "$RATE" 2>&1 | grep -E "^steady|^requests|corrected|service|^valid|^exit|What this run"
wait "$FZ"

#!/usr/bin/env bash
# Compares esockets-flood --protocol resp / http with redis-benchmark and wrk on the same real
# redis-server and nginx (started here on free loopback ports, stopped at the end).
# Usage: tools/flood/compare_real.sh PATH/TO/esockets-flood [SECONDS] [ROUNDS]
# Prints one line per run: tool, target, rps, p50 ms, p99 ms. The two tools alternate, ROUNDS times.
set -euo pipefail
FLOOD=${1:?usage: $0 PATH/TO/esockets-flood [SECONDS] [ROUNDS]}
SECS=${2:-3}
ROUNDS=${3:-2}
PY=/usr/bin/python3
work=$(mktemp -d /tmp/flood-compare.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port" >&2; exit 1
}

RP=$(free_port)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
NP=$(free_port)
mkdir -p "$work/tmp"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
error_log $work/error.log;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  server {
    listen 127.0.0.1:$NP;
    location /plaintext { default_type text/plain; return 200 "Hello, World!"; }
  }
}
EOF
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 100); do
  redis-cli -p "$RP" ping >/dev/null 2>&1 && curl -sf "http://127.0.0.1:$NP/plaintext" >/dev/null && break
  sleep 0.1
done
echo "redis-server 127.0.0.1:$RP, nginx 127.0.0.1:$NP; ${SECS} s per run; load: $(cut -d' ' -f1-3 /proc/loadavg)"

flood_line() {  # label, then esockets-flood arguments
  local label=$1; shift
  "$FLOOD" --quiet --json "$work/r.json" --duration "$SECS" "$@" >/dev/null || true
  $PY - "$work/r.json" "$label" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
l = j["latency_us"]
print(f'{sys.argv[2]:<44} {j["throughput"]["msgs_per_sec"]:>10.0f} rps  p50 {l["p50"]/1000:.3f} ms  '
      f'p99 {l["p99"]/1000:.3f} ms  errors {j["errors"]["total"]}')
EOF
}

rb_line() {  # label, test (set|get), pipeline
  local label=$1 t=$2 P=$3 n
  n=$(( P == 1 ? 100000 * SECS : 1000000 * SECS ))
  redis-benchmark -p "$RP" -t "$t" -c 50 -P "$P" -r 100000 -n "$n" --csv 2>/dev/null | tail -1 | tr -d '"' |
    awk -F, -v l="$label" '{ printf "%-44s %10.0f rps  p50 %.3f ms  p99 %.3f ms\n", l, $2, $5, $7 }'
}

wrk_line() {  # label
  local label=$1
  wrk -t1 -c100 -d"${SECS}s" --latency "http://127.0.0.1:$NP/plaintext" >"$work/wrk.txt"
  $PY - "$work/wrk.txt" "$label" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
def ms(v):
    m = re.match(r'([\d.]+)(us|ms|s)', v)
    return float(m.group(1)) * {'us': 1e-3, 'ms': 1.0, 's': 1e3}[m.group(2)]
rps = float(re.search(r'Requests/sec:\s+([\d.]+)', t).group(1))
p50 = ms(re.search(r'50%\s+(\S+)', t).group(1))
p99 = ms(re.search(r'99%\s+(\S+)', t).group(1))
non2xx = re.search(r'Non-2xx or 3xx responses: (\d+)', t)
print(f'{sys.argv[2]:<44} {rps:>10.0f} rps  p50 {p50:.3f} ms  p99 {p99:.3f} ms  non-2xx {non2xx.group(1) if non2xx else 0}')
EOF
}

for round in $(seq "$ROUNDS"); do
  echo "--- round $round"
  for t in set get; do
    for P in 1 16; do
      rb_line "redis-benchmark -t $t -c 50 -P $P" "$t" "$P"
      mode=(pingpong); [ "$P" -gt 1 ] && mode=(pipeline "$P")
      flood_line "flood resp $t -c 50 --threads 1 ${mode[*]}" --port "$RP" --protocol resp --resp-command "$t" \
        --key-range 100000 -c 50 --threads 1 "${mode[@]}"
      flood_line "flood resp $t -c 50 --threads 2 ${mode[*]}" --port "$RP" --protocol resp --resp-command "$t" \
        --key-range 100000 -c 50 --threads 2 "${mode[@]}"
    done
  done
  wrk_line "wrk -t1 -c100 /plaintext"
  flood_line "flood http -c 100 --threads 1 pingpong" --port "$NP" --protocol http --path /plaintext -c 100 --threads 1 pingpong
  flood_line "flood http -c 100 --threads 2 pingpong" --port "$NP" --protocol http --path /plaintext -c 100 --threads 2 pingpong
done

#!/usr/bin/env bash
# Run from the repository root after tools/run.sh (or a Release build in $BUILD_DIR); results go to $OUT_DIR (default /tmp).
# Connect storm of 19,000: time until all are established, esockets inline (2 shards) vs Asio and libuv (2 threads),
# interleaved, $REPS repetitions (default 3).
B=${BUILD_DIR:-build/release}
OUT=${OUT_DIR:-/tmp}
declare -A srv=( [esockets]="$B/tools/esockets-echo --port 0 --shards 2" [asio]="$B/benchmarks/asio_echo --port 0 --threads 2" [uv]="$B/benchmarks/uv_echo --port 0 --threads 2" )
for rep in $(seq 1 "${REPS:-3}"); do for name in esockets asio uv; do
  log=$(mktemp)
  ${srv[$name]} > "$log" 2>&1 &
  pid=$!; sleep 0.5
  port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -1)
  json=$OUT/storm19k_${name}_$rep.json
  $B/tools/flood/esockets-flood --port "$port" --procs 2 -c 19000 --duration 4 --quiet --json "$json" storm > /dev/null 2>&1
  code=$?
  python3 - "$json" "$name" "$rep" "$code" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
c = j["connections"]
print(f'{sys.argv[2]:9s} rep{sys.argv[3]} exit {sys.argv[4]}  established {c["established"]}/{c["requested"]}  '
      f'time_to_n {c.get("time_to_n_s")} s  errors {j["errors"]["total"]}')
PY
  kill -TERM $pid; wait $pid 2>/dev/null; rm -f "$log"
done; done

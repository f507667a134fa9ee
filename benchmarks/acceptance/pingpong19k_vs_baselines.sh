#!/usr/bin/env bash
# Run from the repository root after tools/run.sh (or a Release build in $BUILD_DIR); results go to $OUT_DIR (default /tmp).
# 19,000 connections each ping-ponging 64 B: esockets inline (2 shards) vs Asio and libuv (2 threads).
B=${BUILD_DIR:-build/release}
declare -A srv=( [esockets]="$B/tools/esockets-echo --port 0 --shards 2" [asio]="$B/benchmarks/asio_echo --port 0 --threads 2" [uv]="$B/benchmarks/uv_echo --port 0 --threads 2" )
for rep in $(seq 1 "${REPS:-2}"); do for name in esockets asio uv; do
  out=$(mktemp)
  ${srv[$name]} > $out 2>&1 &
  pid=$!; sleep 0.5
  port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' $out | head -1)
  $B/tools/flood/esockets-flood --port $port --procs 2 -c 19000 --duration 6 --warmup 1 --quiet --json ${OUT_DIR:-/tmp}/pp19k_${name}_$rep.json pingpong > ${OUT_DIR:-/tmp}/pp19k_${name}_$rep.txt 2>&1
  echo "$name rep$rep exit $? $(grep -E 'steady' ${OUT_DIR:-/tmp}/pp19k_${name}_$rep.txt) $(grep -E 'errors:' ${OUT_DIR:-/tmp}/pp19k_${name}_$rep.txt)"
  kill -TERM $pid; wait $pid 2>/dev/null
done; done

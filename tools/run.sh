#!/usr/bin/env bash
# The main job: install what is missing, build (Release), start esockets-echo, flood it with
# esockets-flood, print the flood tool's summary and the server's per-shard stats.
# Usage: tools/run.sh [seconds] [connections]     (defaults: 10 s, 1000 connections)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh

secs=${1:-10}
conns=${2:-1000}
dir=${ESOCKETS_BUILD_ROOT:-build}/release   # the release preset of CMakePresets.json
cmake --preset release -B "$dir" >/dev/null
cmake --build "$dir" -j"$(nproc)" --target esockets-echo esockets-flood

out=$(mktemp)
"$dir/tools/esockets-echo" --port 0 --shards 2 >"$out" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$out" | head -1)
[ -n "$port" ] || { cat "$out"; echo "esockets: the echo server did not start" >&2; exit 1; }
echo "esockets: echo server (2 shards, inline) on 127.0.0.1:$port; flooding $conns connections for $secs s"

status=0
"$dir/tools/flood/esockets-flood" --port "$port" -c "$conns" --duration "$secs" --verify \
  --json "$dir/flood-result.json" pipeline 4 || status=$?

kill -TERM $server
wait $server || true
echo "--- server ---"
cat "$out"
echo "esockets: flood JSON result in $dir/flood-result.json (exit status $status)"
exit $status

#!/usr/bin/env bash
# Run from the repository root after tools/run.sh (or a Release build in $BUILD_DIR); results go to $OUT_DIR (default /tmp).
# Issue 7 note: time a retire takes at 10,000 connections, and the worst stall a connection saw.
B=${BUILD_DIR:-build/release}
out=$(mktemp)
$B/tools/esockets-echo --port 0 --shards 2 > $out 2>&1 &
pid=$!; sleep 0.4
port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' $out | head -1)
$B/tools/flood/esockets-flood --port $port -c 10000 --duration 12 --verify --quiet --json ${OUT_DIR:-/tmp}/r10k.json --json-stream ${OUT_DIR:-/tmp}/r10k.jsonl pingpong > ${OUT_DIR:-/tmp}/r10k.txt 2>&1 &
fp=$!
sleep 5
kill -USR2 $pid
sleep 3
wait $fp; echo "flood exit $?"
grep -E "connections:|errors:|steady|reply|valid" ${OUT_DIR:-/tmp}/r10k.txt
grep SIGUSR2 $out
kill -INT $pid; wait $pid

#!/usr/bin/env bash
# Run from the repository root after tools/run.sh (or a Release build in $BUILD_DIR); results go to $OUT_DIR (default /tmp).
# Issue 7 acceptance: esockets-echo --shards 4 under flood -c 2000 --verify pipeline 8 for 20 s,
# SIGUSR2 and SIGUSR1 ten times each; then the same with a connect storm running.
B=${BUILD_DIR:-build/release}
for storm in no yes; do
  out=$(mktemp)
  $B/tools/esockets-echo --port 0 --shards 4 > $out 2>&1 &
  pid=$!; sleep 0.4
  port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' $out | head -1)
  $B/tools/flood/esockets-flood --port $port -c 2000 --duration 20 --verify --quiet --json ${OUT_DIR:-/tmp}/a7_$storm.json pipeline 8 > ${OUT_DIR:-/tmp}/a7_$storm.txt 2>&1 &
  fp=$!
  if [ $storm = yes ]; then
    $B/tools/flood/esockets-flood --port $port -c 5000 --duration 16 --quiet --json ${OUT_DIR:-/tmp}/a7_storm.json storm > ${OUT_DIR:-/tmp}/a7_stormrun.txt 2>&1 &
    sp=$!
  fi
  sleep 2
  for i in $(seq 10); do kill -USR2 $pid; sleep 0.8; kill -USR1 $pid; sleep 0.8; done
  wait $fp; echo "storm=$storm pipeline flood exit $?"; grep -E "connections:|errors:|steady|reply|valid" ${OUT_DIR:-/tmp}/a7_$storm.txt
  if [ $storm = yes ]; then wait $sp; echo "storm flood exit $?"; grep -E "connections:|errors:|connect |valid" ${OUT_DIR:-/tmp}/a7_stormrun.txt; fi
  grep -c "shards" $out; grep -E "SIGUSR" $out | awk '{print $NF, $(NF-1)}' | sort -n | tail -2
  kill -INT $pid; wait $pid; grep -E "closes:" $out
done

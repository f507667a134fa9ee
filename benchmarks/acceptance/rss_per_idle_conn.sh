#!/usr/bin/env bash
# Run from the repository root after tools/run.sh (or a Release build in $BUILD_DIR); results go to $OUT_DIR (default /tmp).
B=${BUILD_DIR:-build/release}
for workers in 0 2; do
  out=$(mktemp)
  $B/tools/esockets-echo --port 0 --shards 2 --workers $workers > $out 2>&1 &
  pid=$!; sleep 0.5
  port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' $out | head -1)
  rss0=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  $B/tools/flood/esockets-flood --port $port --procs 2 -c 19000 --duration 6 --quiet idle > ${OUT_DIR:-/tmp}/rss_idle_w$workers.txt 2>&1 &
  fp=$!
  for i in $(seq 40); do n=$(ls /proc/$pid/fd | wc -l); [ $n -ge 19000 ] && break; sleep 0.25; done
  sleep 1.5
  rss1=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  fds=$(ls /proc/$pid/fd | wc -l)
  echo "workers=$workers fds=$fds rss_before=${rss0}KiB rss_at_19000=${rss1}KiB per_conn=$(( (rss1-rss0)*1024/19000 ))B"
  wait $fp; grep -E "connections:" ${OUT_DIR:-/tmp}/rss_idle_w$workers.txt
  kill -INT $pid; wait $pid
done

#!/usr/bin/env bash
# Run from the repository root after a Release build in $BUILD_DIR (default build/release);
# results go to $OUT_DIR (default /tmp). Issue "Every send that returned ok arrives": the
# publish/subscribe flood against esockets-chat while its shard count changes 40+ times
# (SIGUSR1 adds a shard, SIGUSR2 retires one, SIGHUP rebalances), inline and with 2 workers.
# The flood exits 6 if any subscriber lost, duplicated or reordered a publisher's message.
set -u
B=${BUILD_DIR:-build/release}
OUT=${OUT_DIR:-/tmp}
SUBS=${SUBS:-200} PUBS=${PUBS:-4} ROOMS=${ROOMS:-4} SECS=${SECS:-20} RESIZES=${RESIZES:-48}
for workers in 0 2; do
  log=$(mktemp)
  $B/tools/esockets-chat --port 0 --shards 2 --workers $workers > "$log" 2>&1 &
  pid=$!
  port=""
  for _ in $(seq 50); do
    port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  $B/tools/flood/esockets-flood --port "$port" -c "$SUBS" --publishers "$PUBS" --rooms "$ROOMS" \
    --duration "$SECS" --drain 10 --json "$OUT/pubsub_resize_w$workers.json" pubsub \
    > "$OUT/pubsub_resize_w$workers.txt" 2>&1 &
  fp=$!
  sleep 1.5  # subscriptions confirmed, publishing under way
  # Resize while publishing: up to 4 shards and back down, with rebalances, spread over the run.
  gap=$(awk -v s="$SECS" -v n="$RESIZES" 'BEGIN { printf "%.3f", (s - 3) / n }')
  sigs=(USR1 USR1 HUP USR2 USR1 HUP USR2 USR2)
  for i in $(seq 0 $((RESIZES - 1))); do
    kill -"${sigs[$((i % 8))]}" "$pid" 2>/dev/null
    sleep "$gap"
  done
  wait $fp
  rc=$?
  kill -INT "$pid"
  wait "$pid"
  changes=$(grep -c -- "-> " "$log")
  echo "workers=$workers resize signals=$RESIZES applied=$changes flood exit=$rc"
  grep -E "pubsub|lost|duplicated|reordered|deliver" "$OUT/pubsub_resize_w$workers.txt" | head -12
  rm -f "$log"
done

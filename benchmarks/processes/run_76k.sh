#!/usr/bin/env bash
# Issue 15 acceptance (multi-process mode): esockets-echo --processes 4 holds 76,000
# connections, each process under its own fd limit (20,000 here), and ping-pongs over all of
# them with 0 errors. Run at 19,000, 38,000 and 76,000 connections to see how the cost grows.
#
# Run from the repository root after a Release build (build/release, or $BUILD_DIR); results
# go to $OUT_DIR (default /tmp/esockets-76k). Heavy: up to 152,000 loopback sockets. Not run
# in CI. Needs ~28,000 ephemeral ports per source address: the flood spreads its connections
# over 8 sources (127.0.0.1..8) and 4 processes (each under its own fd limit too).
#
# Reported per run: time until every connection was established (the flood's connect time),
# steady ping-pong messages/s, errors, server RSS per connection (the children's VmRSS summed,
# minus their sum before the flood, over connections) and kernel memory per connection (the
# growth of /proc/meminfo Slab plus the TCP buffer pages of /proc/net/sockstat, over
# connections; both ends of every connection are on this machine, so this is client + server).
set -u
B=${BUILD_DIR:-build/release}
OUT=${OUT_DIR:-/tmp/esockets-76k}
PROCS=${PROCESSES:-4}
COUNTS=${COUNTS:-"19000 38000 76000"}
DURATION=${DURATION:-10}
mkdir -p "$OUT"
for bin in "$B/tools/esockets-echo" "$B/tools/flood/esockets-flood"; do
  [ -x "$bin" ] || { echo "run_76k.sh: $bin not found: build Release first (tools/run.sh) or set BUILD_DIR" >&2; exit 2; }
done

slab_kb() { awk '/^Slab:/{print $2}' /proc/meminfo; }
tcp_pages() { awk '/^TCP:/{for(i=1;i<NF;i++) if($i=="mem") print $(i+1)}' /proc/net/sockstat; }
children_rss_kb() { local s=0 p; for p in $(pgrep -P "$1"); do s=$((s + $(awk '/VmRSS/{print $2}' /proc/$p/status 2>/dev/null || echo 0))); done; echo $s; }
children_fds() { local s=0 p; for p in $(pgrep -P "$1"); do s=$((s + $(ls /proc/$p/fd 2>/dev/null | wc -l))); done; echo $s; }

printf '%-8s %-10s %-12s %-8s %-12s %-14s %-14s %s\n' conns connect_s msgs_per_s errors rss_per_conn kernel_per_conn max_per_proc valid | tee "$OUT/summary.txt"
status=0
for n in $COUNTS; do
  log="$OUT/echo_$n.txt"
  "$B/tools/esockets-echo" --port 0 --processes "$PROCS" --shards 1 > "$log" 2>&1 &
  pid=$!
  port=
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "esockets-echo did not start: $(cat "$log")" >&2; kill -9 $pid; exit 1; }
  sleep 0.5
  base_fds=$(children_fds $pid)
  rss0=$(children_rss_kb $pid); slab0=$(slab_kb); tcp0=$(tcp_pages)
  # Client fds: 19,000 per flood process at most (its own limit is 20,000).
  fprocs=$(( (n + 18999) / 19000 ))
  "$B/tools/flood/esockets-flood" --port "$port" --procs "$fprocs" --sources 8 -c "$n" \
    --duration "$DURATION" --verify --quiet --json "$OUT/pingpong_$n.json" pingpong > "$OUT/flood_$n.txt" 2>&1 &
  fpid=$!
  # Sample once every connection is up (bounded wait), a second into the ping-pong.
  for _ in $(seq 240); do
    [ $(( $(children_fds $pid) - base_fds )) -ge "$n" ] && break
    kill -0 $fpid 2>/dev/null || break
    sleep 0.25
  done
  sleep 1
  rss1=$(children_rss_kb $pid); slab1=$(slab_kb); tcp1=$(tcp_pages)
  per_proc=$(for p in $(pgrep -P $pid); do echo $(( $(ls /proc/$p/fd | wc -l) - base_fds / PROCS )); done | sort -n | tail -1)
  wait $fpid; frc=$?
  kill -TERM $pid; wait $pid; erc=$?
  connect=$(sed -n 's/^time to all connections: \([0-9.]*\) s.*/\1/p' "$OUT/flood_$n.txt")
  rate=$(sed -n 's/^steady: .*, \([0-9.]*\) msgs\/s.*/\1/p' "$OUT/flood_$n.txt")
  errors=$(sed -n 's/^errors: \([0-9]*\).*/\1/p' "$OUT/flood_$n.txt")
  valid=$(sed -n 's/^valid: \(.*\)/\1/p' "$OUT/flood_$n.txt")
  rss_b=$(( (rss1 - rss0) * 1024 / n ))
  kern_b=$(( ((slab1 - slab0) * 1024 + (tcp1 - tcp0) * 4096) / n ))
  printf '%-8s %-10s %-12s %-8s %-12s %-14s %-14s %s\n' "$n" "${connect:-?}" "${rate:-?}" "${errors:-?}" \
    "${rss_b}B" "${kern_b}B" "${per_proc:-?}" "${valid:-?} (flood exit $frc, echo exit $erc)" | tee -a "$OUT/summary.txt"
  [ "$frc" -eq 0 ] && [ "$erc" -eq 0 ] && [ "${errors:-1}" = 0 ] || status=1
  sleep 2  # let TIME_WAIT and freed slabs settle before the next size
done
echo "details: $OUT (flood_N.txt, pingpong_N.json, echo_N.txt)"
exit $status

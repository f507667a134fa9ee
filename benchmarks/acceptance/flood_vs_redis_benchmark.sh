#!/usr/bin/env bash
# Run from the repository root after tools/run.sh (or a Release build in $BUILD_DIR); results go to $OUT_DIR (default /tmp).
# Issue 4: esockets-flood vs redis-benchmark (independent generator) on the same server:
# redis-server, inline PING ("PING\r\n" -> "+PONG\r\n"), 50 connections, one in flight each,
# one generator thread each; then the same pipelined 16 deep (redis-benchmark -P 16, flood
# pipeline 16). Interleaved, 3 reps each.
B=${BUILD_DIR:-build/release}
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port $port --bind 127.0.0.1 --save '' --appendonly no > ${OUT_DIR:-/tmp}/redis.log 2>&1 &
rp=$!; sleep 0.5
for rep in 1 2 3; do
  redis-benchmark -h 127.0.0.1 -p $port -c 50 -n 400000 -t ping_inline -P 1 --threads 1 --csv 2>/dev/null | tail -1 | sed "s/^/redis-benchmark rep$rep: /"
  $B/tools/flood/esockets-flood --port $port -c 50 --threads 1 --duration 4 --framing line --payload hex:50494e470d --size 5 --quiet --json ${OUT_DIR:-/tmp}/indep_$rep.json pingpong > ${OUT_DIR:-/tmp}/indep_$rep.txt 2>&1
  echo "flood rep$rep exit $? $(grep -E 'steady' ${OUT_DIR:-/tmp}/indep_$rep.txt) $(grep -E 'reply' ${OUT_DIR:-/tmp}/indep_$rep.txt)"
done
for rep in 1 2 3; do
  redis-benchmark -h 127.0.0.1 -p $port -c 50 -n 4000000 -t ping_inline -P 16 --threads 1 --csv 2>/dev/null | tail -1 | sed "s/^/redis-benchmark -P 16 rep$rep: /"
  $B/tools/flood/esockets-flood --port $port -c 50 --threads 1 --duration 4 --framing line --payload hex:50494e470d --size 5 --quiet --json ${OUT_DIR:-/tmp}/indep_p16_$rep.json pipeline 16 > ${OUT_DIR:-/tmp}/indep_p16_$rep.txt 2>&1
  echo "flood pipeline 16 rep$rep exit $? $(grep -E 'steady' ${OUT_DIR:-/tmp}/indep_p16_$rep.txt) $(grep -E 'reply' ${OUT_DIR:-/tmp}/indep_p16_$rep.txt)"
done
kill $rp

#!/bin/sh
# The frozen-server run of issue 17: esockets-flood rate 20000 -c 50 for 4 s against esockets-echo;
# at 3.5 s the server is stopped (SIGSTOP) for 3 s, then resumed.
# usage: frozen_echo.sh FLOOD ECHO OUT_PREFIX [PORT]
set -u
FLOOD=$1 ECHO=$2 OUT=$3 PORT=${4:-23517}
"$ECHO" --port "$PORT" -q & SRV=$!
sleep 0.3
"$FLOOD" --port "$PORT" -c 50 --duration 4 --quiet --json "$OUT.json" rate 20000 > "$OUT.txt" 2>&1 & FL=$!
sleep 3.5; kill -STOP $SRV; sleep 3; kill -CONT $SRV
wait $FL; echo "exit status: $?" >> "$OUT.txt"
kill -INT $SRV; wait $SRV 2>/dev/null
cat "$OUT.txt"

#!/bin/sh
# Soak test (not in CI): minutes of connection churn with every kind of ending against an
# ASan/LSan build of soak_server, then: no leaks (LSan at exit), flat RSS, fds back to baseline.
#
#   tests/robustness/soak.sh [seconds=300] [build-dir=build-robust-asan] [client-threads=24]
#
# The build dir must be an ESOCKETS_SANITIZE=address build that includes tests/robustness
# (it is configured and soak_server built if missing). Exit status 0 = all checks passed.
set -eu

DURATION=${1:-300}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${2:-$ROOT/build-robust-asan}
THREADS=${3:-24}
SAMPLE=10

if [ ! -x "$BUILD/robustness/soak_server" ] && [ ! -x "$BUILD/tests/robustness/soak_server" ]; then
  echo "soak: building soak_server in $BUILD (ASan)"
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESOCKETS_SANITIZE=address \
      -DESOCKETS_TEST_SCALE=4 -DESOCKETS_BUILD_BENCHMARKS=OFF >/dev/null
  fi
  cmake --build "$BUILD" --target soak_server -j2 >/dev/null
fi
SERVER=$BUILD/robustness/soak_server
[ -x "$SERVER" ] || SERVER=$BUILD/tests/robustness/soak_server
grep -q 'ESOCKETS_SANITIZE:STRING=address' "$BUILD/CMakeCache.txt" ||
  echo "soak: WARNING: $BUILD is not an ASan build; the leak check proves nothing" >&2

WORK=$(mktemp -d /tmp/esockets-soak.XXXXXX)
OUT=$WORK/server.out
ERR=$WORK/server.err
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23:quarantine_size_mb=8 \
LSAN_OPTIONS=exitcode=23 \
  "$SERVER" 0 2 >"$OUT" 2>"$ERR" &
PID=$!
cleanup() { kill -9 "$PID" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

i=0
while ! grep -q listening "$OUT" 2>/dev/null; do
  i=$((i + 1))
  [ $i -gt 200 ] && { echo "soak: server did not start"; cat "$ERR"; exit 1; }
  sleep 0.1
done
PORT=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$OUT" | head -1)
FD0=$(ls /proc/$PID/fd | wc -l)
echo "soak: server pid $PID port $PORT, baseline fds $FD0; churning for $DURATION s ($THREADS client threads)"

python3 "$HERE/soak_client.py" --port "$PORT" --duration "$DURATION" --threads "$THREADS" \
  >"$WORK/client.out" 2>"$WORK/client.err" &
CPID=$!

# RSS every $SAMPLE s while the client runs. Single samples swing +-15% with the churn, so
# the check compares the median of the first three samples (taken under load, after allocator
# warm-up) with the median of the last ones (up to five each).
RSS_ALL=""
T=0
while kill -0 "$CPID" 2>/dev/null; do
  sleep $SAMPLE
  T=$((T + SAMPLE))
  kill -0 "$PID" 2>/dev/null || { echo "soak: FAIL: server died"; tail -50 "$ERR"; exit 1; }
  RSS=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
  FDS=$(ls /proc/$PID/fd | wc -l)
  echo "soak: t+${T}s rss=${RSS} KiB fds=$FDS"
  RSS_ALL="$RSS_ALL $RSS"
done
# Median of the first k and of the last k samples, k = min(5, n/2).
read RSS_FIRST RSS_LAST <<EOF2
$(echo $RSS_ALL | awk '{ n = NF; k = int(n / 2); if (k > 5) k = 5; if (k < 1) { print ""; exit }
  for (i = 1; i <= k; i++) { a[i] = $i; b[i] = $(n - k + i) }
  for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
  for (i = 2; i <= k; i++) for (j = i; j > 1 && b[j - 1] > b[j]; j--) { t = b[j]; b[j] = b[j - 1]; b[j - 1] = t }
  print a[int((k + 1) / 2)], b[int((k + 1) / 2)] }')
EOF2
CLIENT_RC=0
wait "$CPID" || CLIENT_RC=$?
cat "$WORK/client.out"
tail -20 "$WORK/client.err"

# Connections end within idle/write/linger timeouts (<= ~5 s); then fds must be back.
FDS=$(ls /proc/$PID/fd | wc -l)
for _ in $(seq 1 100); do
  FDS=$(ls /proc/$PID/fd | wc -l)
  [ "$FDS" -le "$FD0" ] && break
  sleep 0.1
done
echo "soak: fds after churn $FDS (baseline $FD0)"

kill -TERM "$PID"
SERVER_RC=0
wait "$PID" || SERVER_RC=$?
trap - EXIT INT TERM
cat "$OUT" | tail -1

FAIL=0
if [ "$CLIENT_RC" -ne 0 ]; then echo "soak: FAIL: client saw unexpected outcomes (rc $CLIENT_RC)"; FAIL=1; fi
if [ "$SERVER_RC" -ne 0 ]; then echo "soak: FAIL: server exit status $SERVER_RC (23 = leaks/ASan)"; FAIL=1; fi
if grep -q -E 'LeakSanitizer|AddressSanitizer|runtime error' "$ERR"; then
  echo "soak: FAIL: sanitizer report:"; grep -A30 -E 'LeakSanitizer|AddressSanitizer|runtime error' "$ERR" | head -60; FAIL=1
fi
if [ "$FDS" -gt "$FD0" ]; then echo "soak: FAIL: fds $FDS > baseline $FD0"; FAIL=1; fi
if [ -n "$RSS_FIRST" ] && [ "$RSS_LAST" -gt $((RSS_FIRST + RSS_FIRST / 10)) ]; then
  echo "soak: FAIL: RSS grew from $RSS_FIRST to $RSS_LAST KiB (> 10%)"; FAIL=1
fi
echo "soak: rss first=${RSS_FIRST:-?} last=${RSS_LAST:-?} KiB; logs in $WORK"
[ $FAIL -eq 0 ] && echo "soak: PASS"
exit $FAIL

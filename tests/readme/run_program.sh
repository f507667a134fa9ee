#!/bin/sh
# Runs one README program the way a user would: start it, let it serve for a moment, send it
# SIGTERM (the README's servers stop gracefully on SIGINT/SIGTERM), and require exit status 0
# within 20 s. Programs that end by themselves are just waited for.
# In a private network namespace when the kernel allows it (unshare -n), so that the fixed
# ports of the README's examples (9000, ...) cannot collide with anything else on the machine.
# usage: run_program.sh EXE
set -u
exe=$1
if [ "${ESOCKETS_README_NETNS:-}" != 1 ] && command -v unshare >/dev/null && command -v ip >/dev/null; then
  for flags in -n -rn; do
    if unshare $flags true 2>/dev/null; then
      ESOCKETS_README_NETNS=1 exec unshare $flags sh "$0" "$@"
    fi
  done
fi
if [ "${ESOCKETS_README_NETNS:-}" = 1 ]; then
  ip link set lo up || exit 1
  listening() { [ -n "$(ss -Hltn 2>/dev/null)" ]; }  # the namespace holds only this program
else
  echo "run_program.sh: no private network namespace; the program's ports must be free"
  listening() { false; }
fi

"$exe" &
pid=$!
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ] && ! listening; do
  sleep 0.1
  i=$((i + 1))
done
if kill -0 "$pid" 2>/dev/null; then
  sleep 0.5  # past start(): the signal handlers are installed
  echo "run_program.sh: SIGTERM to $(basename "$exe")"
  kill -TERM "$pid" 2>/dev/null
fi
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do
  sleep 0.1
  i=$((i + 1))
done
if kill -0 "$pid" 2>/dev/null; then
  echo "run_program.sh: still running 20 s later: killed"
  kill -KILL "$pid"
fi
wait "$pid"
status=$?
echo "run_program.sh: $(basename "$exe") exited with status $status"
exit $status

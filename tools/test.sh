#!/usr/bin/env bash
# Builds esockets and runs the whole test suite three times: Release, ASan+UBSan, TSan.
# Heavy tests scale their counts down under the sanitizers (ESOCKETS_TEST_SCALE).
# Then a short libFuzzer run of the framers and the PROXY header parser (clang), replaying
# each corpus first.
# tests/backend runs both backends in every configuration; ESOCKETS_URING_PASS=1 adds a second
# pass of the integration tests on io_uring in release and ASan (ESOCKETS_BACKEND=io_uring
# tools/test.sh runs everything on it). CI leaves it out: its 45 minutes do not hold it.
# Each configuration fails if ctest finds no tests or fewer than tests/expected_test_count.txt
# expects for it (tests that silently dropped out of the build). The release configuration also
# builds the API reference (the `docs` target: Doxygen, failing on undocumented public API).
# Each configuration is a CMake preset (CMakePresets.json) built in build/<name>;
# ESOCKETS_BUILD_ROOT=DIR builds in DIR/<name> instead (a second checkout's builds, or yours
# beside someone else's). Then python/test.sh, when the Python package is there.
# Usage: tools/test.sh [release|asan|tsan|fuzz|python ...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh

jobs=$(nproc)
build_root=${ESOCKETS_BUILD_ROOT:-build}
configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
  configs=(release asan tsan fuzz)
  [ -f python/test.sh ] && configs+=(python)
fi

# TSan needs a low-entropy mmap layout; where vm.mmap_rnd_bits is 32 run without ASLR.
tsan_prefix=()
if [ "$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)" -gt 28 ]; then
  tsan_prefix=(setarch "$(uname -m)" -R)
fi

# Fails unless ctest finds at least the number of tests tests/expected_test_count.txt gives for
# this configuration: a test file, directory or target that drops out of the build is caught
# even though the tests that remain pass. Discovery runs the test binaries, hence the prefix.
check_test_count() {
  local name=$1 dir=$2; shift 2
  local floor found
  floor=$(awk -v c="$name" '$1 == c { print $2 }' tests/expected_test_count.txt)
  if [ -z "$floor" ]; then
    echo "tools/test.sh: no test count for '$name' in tests/expected_test_count.txt" >&2
    return 1
  fi
  found=$("$@" ctest --test-dir "$dir" -N | sed -n 's/^Total Tests: *//p') || found=""
  if [ -z "$found" ] || [ "$found" -lt "$floor" ]; then
    echo "tools/test.sh: $name: ctest finds ${found:-no} tests, expected at least $floor" \
      "(tests/expected_test_count.txt): tests are missing from the build" >&2
    return 1
  fi
}

run_config() {
  local name=$1 dir=$build_root/$1
  echo "=== esockets: $name build ==="
  cmake --preset "$name" -B "$dir" >/dev/null
  cmake --build "$dir" -j"$jobs"
  if [ "$name" = release ] && [ -f "$dir/docs/Doxyfile" ]; then
    echo "=== esockets: API reference (doxygen) ==="
    cmake --build "$dir" --target docs
  fi
  echo "=== esockets: $name tests ==="
  local start=$SECONDS
  local run=()
  if [ "$name" = tsan ]; then
    # TSan sleeps a second at every exit by default (atexit_sleep_ms) to catch races with
    # threads still running; our tests join their threads, and 750 processes would sleep
    # over six minutes of CI. Reports still halt the test.
    run=(env "TSAN_OPTIONS=halt_on_error=1 second_deadlock_stack=1 atexit_sleep_ms=0" "${tsan_prefix[@]}")
  else
    run=(env "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1" "UBSAN_OPTIONS=print_stacktrace=1")
  fi
  check_test_count "$name" "$dir" "${run[@]}"
  # Two at a time (most tests wait on sockets); tests that measure throughput, memory or
  # timing are RUN_SERIAL (esockets_add_test SERIAL) and run alone.
  # Not built in every configuration (tests/CMakeLists.txt says why): under TSan the load
  # tool's tests and the single-threaded parsers'; under both sanitizers the load tool's
  # scenario tests and the HAProxy tests (release only).
  "${run[@]}" ctest --test-dir "$dir" --output-on-failure --timeout 600 --no-tests=error -j2
  echo "=== esockets: $name passed in $((SECONDS - start)) s ==="
  # tests/backend runs both backends in every configuration. With ESOCKETS_URING_PASS=1, in
  # release and under ASan, the engine's integration tests run a second time with every server
  # on io_uring (ESOCKETS_BACKEND: automatic means io_uring then), where the kernel can run it.
  # The whole suite on io_uring is `ESOCKETS_BACKEND=io_uring tools/test.sh`. Neither is in
  # CI's run: its 45 minutes do not hold every configuration twice (the two passes took 6).
  if [ "${ESOCKETS_URING_PASS:-0}" = 1 ] && { [ "$name" = release ] || [ "$name" = asan ]; } &&
     [ "${ESOCKETS_BACKEND:-}" != io_uring ]; then
    if uring_supported "$dir"; then
      echo "=== esockets: $name tests again on the io_uring backend ==="
      start=$SECONDS
      ESOCKETS_BACKEND=io_uring "${run[@]}" ctest --test-dir "$dir" --output-on-failure \
        --timeout 600 --no-tests=error -j2 -L '^integration$'
      echo "=== esockets: $name on io_uring passed in $((SECONDS - start)) s ==="
    else
      echo "=== esockets: this kernel cannot run the io_uring backend; its second pass is skipped ==="
    fi
  fi
}

# True if esockets-echo starts on the io_uring backend here (Linux >= 6.1, io_uring allowed).
uring_supported() {
  local out
  out=$(timeout -s INT 2 "$1/tools/esockets-echo" --port 0 --backend io_uring 2>&1 | head -n 1) || true
  case $out in
    *backend=io_uring*) return 0 ;;
    *) echo "tools/test.sh: io_uring backend unavailable: $out" >&2; return 1 ;;
  esac
}

run_fuzz() {
  local dir=$build_root/fuzz secs=${ESOCKETS_FUZZ_SECONDS:-12}
  echo "=== esockets: fuzz build (clang, libFuzzer) ==="
  cmake --preset fuzz -B "$dir" >/dev/null
  cmake --build "$dir" -j"$jobs" --target framer_fuzz proxy_fuzz
  local scratch
  scratch=$(mktemp -d)
  echo "=== esockets: fuzzing the framers for $secs s ==="
  "$dir/fuzz/framer_fuzz" -runs=0 fuzz/corpus
  "$dir/fuzz/framer_fuzz" -max_total_time="$secs" -print_final_stats=1 "$scratch" fuzz/corpus
  rm -rf "$scratch"
  # The PROXY header parser: a small input space, a shorter run (ESOCKETS_FUZZ_PROXY_SECONDS).
  local proxy_secs=${ESOCKETS_FUZZ_PROXY_SECONDS:-10}
  scratch=$(mktemp -d)
  echo "=== esockets: fuzzing the PROXY header parser for $proxy_secs s ==="
  "$dir/fuzz/proxy_fuzz" -runs=0 fuzz/corpus/proxy
  "$dir/fuzz/proxy_fuzz" -max_total_time="$proxy_secs" -print_final_stats=1 "$scratch" fuzz/corpus/proxy
  rm -rf "$scratch"
  echo "=== esockets: fuzz passed ==="
}

for c in "${configs[@]}"; do
  case $c in
    release|asan|tsan) run_config "$c" ;;  # the presets of CMakePresets.json
    fuzz) run_fuzz ;;
    python)
      if [ ! -f python/test.sh ]; then
        echo "tools/test.sh: no python/test.sh" >&2
        exit 2
      fi
      echo "=== esockets: python ==="
      bash python/test.sh
      echo "=== esockets: python passed ===" ;;
    *) echo "tools/test.sh: unknown configuration '$c' (use release, asan, tsan, fuzz or python)" >&2; exit 2 ;;
  esac
done
echo "esockets: all test configurations passed (${configs[*]})"

#!/usr/bin/env bash
# Builds esockets and runs the whole test suite three times: Release, ASan+UBSan, TSan.
# Heavy tests scale their counts down under the sanitizers (ESOCKETS_TEST_SCALE).
# Then a short libFuzzer run of the framers (clang), replaying the corpus first.
# Usage: tools/test.sh [release|asan|tsan|fuzz ...]   (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh

jobs=$(nproc)
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(release asan tsan fuzz)

# TSan needs a low-entropy mmap layout; where vm.mmap_rnd_bits is 32 run without ASLR.
tsan_prefix=()
if [ "$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)" -gt 28 ]; then
  tsan_prefix=(setarch "$(uname -m)" -R)
fi

run_config() {
  local name=$1 dir=build/$1; shift
  echo "=== esockets: $name build ==="
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  echo "=== esockets: $name tests ==="
  local start=$SECONDS
  if [ "$name" = tsan ]; then
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
      "${tsan_prefix[@]}" ctest --test-dir "$dir" --output-on-failure --timeout 600
  else
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1" \
      ctest --test-dir "$dir" --output-on-failure --timeout 600
  fi
  echo "=== esockets: $name passed in $((SECONDS - start)) s ==="
}

run_fuzz() {
  local dir=build/fuzz secs=${ESOCKETS_FUZZ_SECONDS:-30}
  echo "=== esockets: fuzz build (clang, libFuzzer) ==="
  cmake -S . -B "$dir" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DESOCKETS_BUILD_FUZZERS=ON -DESOCKETS_BUILD_TESTS=OFF -DESOCKETS_BUILD_BENCHMARKS=OFF \
    -DESOCKETS_BUILD_TOOLS=OFF >/dev/null
  cmake --build "$dir" -j"$jobs" --target framer_fuzz
  local scratch
  scratch=$(mktemp -d)
  echo "=== esockets: fuzzing the framers for $secs s ==="
  "$dir/fuzz/framer_fuzz" -runs=0 fuzz/corpus
  "$dir/fuzz/framer_fuzz" -max_total_time="$secs" -print_final_stats=1 "$scratch" fuzz/corpus
  rm -rf "$scratch"
  echo "=== esockets: fuzz passed ==="
}

for c in "${configs[@]}"; do
  case $c in
    release) run_config release -DCMAKE_BUILD_TYPE=Release -DESOCKETS_BUILD_BENCHMARKS=ON ;;
    asan) run_config asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESOCKETS_SANITIZE=address \
            -DESOCKETS_TEST_SCALE=4 -DESOCKETS_BUILD_BENCHMARKS=OFF ;;
    tsan) run_config tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESOCKETS_SANITIZE=thread \
            -DESOCKETS_TEST_SCALE=8 -DESOCKETS_BUILD_BENCHMARKS=OFF ;;
    fuzz) run_fuzz ;;
    *) echo "tools/test.sh: unknown configuration '$c' (use release, asan, tsan or fuzz)" >&2; exit 2 ;;
  esac
done
echo "esockets: all test configurations passed (${configs[*]})"

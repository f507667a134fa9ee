#!/usr/bin/env bash
# Installs the Debian 12 packages esockets needs to build, test and benchmark.
# As root: apt-get update, then apt-get install -y of what is missing. Otherwise: prints the
# exact command to run and exits 1. On a system without dpkg/apt-get: prints what to install
# and exits 1; once it is installed, ESOCKETS_SKIP_DEPS=1 skips this check.
set -euo pipefail

packages=(cmake make g++ libboost-dev libgtest-dev libgmock-dev libbenchmark-dev libuv1-dev
          clang libclang-rt-14-dev python3 iproute2 procps util-linux
          redis-server redis-tools wrk nghttp2-client nginx-light curl
          doxygen pkg-config libcli11-dev nlohmann-json3-dev
          python3-venv python3-dev python3-setuptools python3-wheel python3-pybind11 pybind11-dev
          python3-pytest zlib1g-dev haproxy prometheus)

[ "${ESOCKETS_SKIP_DEPS:-}" = 1 ] && exit 0

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  cat >&2 <<MSG
esockets: this is not a Debian-like system (no dpkg-query / apt-get), so tools/install-deps.sh
cannot install what esockets needs. Install with your package manager:
  to build:      a C++20 compiler (g++ >= 12 or clang >= 14), CMake >= 3.25, make,
                 Boost >= 1.74 headers (Boost.Lockfree); CLI11 and nlohmann-json (the
                 example servers)
  to test:       GoogleTest and GoogleMock, Python 3, iproute2 (ip, ss), procps, util-linux
                 (prlimit, unshare, setarch), pkg-config, dpkg (dpkg -x, for the package test)
  sanitizers and fuzzing: clang 14 with its compiler-rt runtime (libFuzzer)
  benchmarks:    Google Benchmark, libuv
  protocol tests: redis-server and redis-tools, wrk, h2load (nghttp2), nginx, curl
  production tests: haproxy (PROXY protocol, drain), promtool (the prometheus package)
  API reference: doxygen
  Python package: Python 3 headers, venv, setuptools, wheel, pybind11, pytest
(their Debian 12 names: ${packages[*]})
Then run again with ESOCKETS_SKIP_DEPS=1 set, e.g. ESOCKETS_SKIP_DEPS=1 tools/test.sh
MSG
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  echo "esockets: installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y "${missing[@]}"
else
  echo "esockets: missing packages: ${missing[*]}" >&2
  echo "run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi

#!/usr/bin/env bash
# Installs the Debian 12 packages esockets needs to build, test and benchmark.
# As root: apt-get update, then apt-get install -y of what is missing. Otherwise: prints the
# exact command to run and exits 1.
set -euo pipefail

packages=(cmake make g++ libboost-dev libgtest-dev libgmock-dev libbenchmark-dev libuv1-dev
          clang libclang-rt-14-dev python3 iproute2 procps util-linux
          redis-server redis-tools wrk nghttp2-client nginx-light curl)

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

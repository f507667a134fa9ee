#!/usr/bin/env bash
# Builds the esockets Python package into a scratch venv, offline, and runs its tests.
#   python/test.sh [pytest args...]
# The venv (build/python-venv) is made from Debian's /usr/bin/python3 with
# --system-site-packages, so Debian's pybind11, setuptools, wheel and pytest are used and no
# package index is needed. Objects are kept in build/python-setuptools: an unchanged tree is
# not recompiled. Needs: python3-venv python3-dev python3-setuptools python3-wheel
# python3-pybind11 pybind11-dev python3-pytest g++ libboost-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
py=/usr/bin/python3
venv=build/python-venv
missing=()
for p in python3-venv python3-dev python3-setuptools python3-wheel python3-pybind11 pybind11-dev \
         python3-pytest g++ libboost-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "python/test.sh: missing Debian packages; as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
start=$SECONDS
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv --system-site-packages "$venv"
fi
echo "=== esockets python: building and installing (offline) ==="
ESOCKETS_BUILD_JOBS=${ESOCKETS_BUILD_JOBS:-2} \
  "$venv/bin/pip" install --no-build-isolation --no-index --quiet python/
echo "=== esockets python: installed in $((SECONDS - start)) s; running pytest ==="
cd python/tests   # import the installed package, not python/src
"../../$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
echo "=== esockets python: passed in $((SECONDS - start)) s ==="

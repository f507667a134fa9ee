#!/bin/sh
# Installs the current build into a temp prefix, then configures, builds and runs a tiny
# consumer project that uses find_package(esockets).
# usage: run.sh CMAKE BUILD_DIR CONSUMER_SRC PREFIX CONSUMER_BUILD CXX
set -eu
CMAKE=$1 BUILD=$2 SRC=$3 PREFIX=$4 CBUILD=$5 CXX=$6
rm -rf "$PREFIX" "$CBUILD"
echo "== install $BUILD -> $PREFIX"
"$CMAKE" --install "$BUILD" --prefix "$PREFIX"
test -f "$PREFIX"/lib*/cmake/esockets/esocketsConfig.cmake || { echo "no esocketsConfig.cmake installed"; exit 1; }
echo "== configure consumer"
"$CMAKE" -S "$SRC" -B "$CBUILD" -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=Release
echo "== build consumer"
"$CMAKE" --build "$CBUILD" -j 2
echo "== run consumer"
timeout 60 "$CBUILD"/consumer

#!/bin/sh
# Builds and runs tests/consumer/main.cpp (an echo round trip through esockets) the four ways a
# C++ project takes esockets:
#   install       cmake --install BUILD into WORK/prefix; the consumer does find_package(esockets)
#   subdirectory  the consumer does add_subdirectory(SOURCE) (no build type: none may be forced)
#   fetchcontent  the consumer does FetchContent_Declare(esockets SOURCE_DIR SOURCE) (Release)
#   deb           cpack -G DEB in BUILD; dpkg -x the package into WORK/root (no root needed);
#                 compile with the flags of `pkg-config --cflags --libs esockets`, where
#                 PKG_CONFIG_LIBDIR points into WORK/root and PKG_CONFIG_SYSROOT_DIR=WORK/root
#                 maps the package's prefix=/usr onto it
# Subprojects build only the library (esockets' tests, tools, benchmarks are off there).
# usage: run.sh MODE CMAKE BUILD SOURCE CONSUMER_SRC WORK CXX
set -eu
MODE=$1 CMAKE=$2 BUILD=$3 SOURCE=$4 SRC=$5 WORK=$6 CXX=$7
rm -rf "$WORK"
mkdir -p "$WORK"
start=$(date +%s)

build_consumer() {  # CONSUMER_MODE [configure arguments...]
  cmode=$1
  shift
  echo "== configure consumer ($cmode)"
  "$CMAKE" -S "$SRC" -B "$WORK/consumer-build" -DCMAKE_CXX_COMPILER="$CXX" \
    -DESOCKETS_CONSUMER_MODE="$cmode" "$@" >"$WORK/configure.log" 2>&1 ||
    { cat "$WORK/configure.log"; exit 1; }
  echo "== build consumer"
  "$CMAKE" --build "$WORK/consumer-build" -j 2 >"$WORK/build.log" 2>&1 ||
    { cat "$WORK/build.log"; exit 1; }
  CONSUMER=$WORK/consumer-build/consumer
}

case $MODE in
  install)
    echo "== install $BUILD -> $WORK/prefix"
    "$CMAKE" --install "$BUILD" --prefix "$WORK/prefix" >/dev/null
    test -f "$WORK"/prefix/lib*/cmake/esockets/esocketsConfig.cmake ||
      { echo "no esocketsConfig.cmake installed"; exit 1; }
    test -f "$WORK"/prefix/lib*/pkgconfig/esockets.pc || { echo "no esockets.pc installed"; exit 1; }
    grep -qx "prefix=$WORK/prefix" "$WORK"/prefix/lib*/pkgconfig/esockets.pc ||
      { echo "esockets.pc does not name the install prefix:"; cat "$WORK"/prefix/lib*/pkgconfig/esockets.pc; exit 1; }
    build_consumer find_package -DCMAKE_PREFIX_PATH="$WORK/prefix" -DCMAKE_BUILD_TYPE=Release
    ;;
  subdirectory)
    build_consumer subdirectory -DESOCKETS_SOURCE_DIR="$SOURCE"
    ;;
  fetchcontent)
    build_consumer fetchcontent -DESOCKETS_SOURCE_DIR="$SOURCE" -DCMAKE_BUILD_TYPE=Release
    ;;
  deb)
    for tool in dpkg dpkg-deb pkg-config; do
      command -v $tool >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
    done
    echo "== cpack -G DEB ($BUILD)"
    "$(dirname "$CMAKE")/cpack" -G DEB --config "$BUILD/CPackConfig.cmake" -B "$WORK/pkg" \
      >"$WORK/cpack.log" 2>&1 || { cat "$WORK/cpack.log"; exit 1; }
    deb=$(ls "$WORK"/pkg/esockets_*.deb)
    dpkg-deb -f "$deb" Package Version Architecture Maintainer Depends
    dpkg-deb -c "$deb" >"$WORK/contents.txt"
    for f in include/esockets/esockets.hpp include/esockets/version.hpp libesockets.a \
             cmake/esockets/esocketsConfig.cmake cmake/esockets/esocketsTargets.cmake \
             pkgconfig/esockets.pc bin/esockets-echo bin/esockets-flood doc/esockets/LICENSE; do
      grep -q "/usr/.*$f\$" "$WORK/contents.txt" || { echo "the package lacks $f:"; cat "$WORK/contents.txt"; exit 1; }
    done
    echo "== dpkg -x into $WORK/root"
    dpkg -x "$deb" "$WORK/root"
    pc=$(find "$WORK/root" -name esockets.pc)
    grep -qx "prefix=/usr" "$pc" || { echo "esockets.pc in the package:"; cat "$pc"; exit 1; }
    "$WORK/root/usr/bin/esockets-echo" --help >/dev/null
    "$WORK/root/usr/bin/esockets-flood" --help >/dev/null
    PKG_CONFIG_LIBDIR=$(dirname "$pc") PKG_CONFIG_PATH= PKG_CONFIG_SYSROOT_DIR="$WORK/root"
    export PKG_CONFIG_LIBDIR PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
    flags=$(pkg-config --cflags --libs esockets)
    std=$(pkg-config --variable=cxx_std esockets)
    echo "== pkg-config --cflags --libs esockets: $flags (-std=$std)"
    mkdir -p "$WORK/consumer-build"
    # shellcheck disable=SC2086
    "$CXX" -std="$std" -O1 "$SRC/main.cpp" $flags -o "$WORK/consumer-build/consumer"
    CONSUMER=$WORK/consumer-build/consumer
    ;;
  *) echo "run.sh: unknown mode '$MODE'"; exit 2 ;;
esac

echo "== run consumer"
timeout 60 "$CONSUMER"
echo "== $MODE consumer passed in $(( $(date +%s) - start )) s"

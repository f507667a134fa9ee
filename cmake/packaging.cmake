# CPack: `cpack -G DEB` (run in a configured and built build directory) makes
# esockets_<version>_<arch>.deb holding what `cmake --install` installs: the headers, the
# static library, the CMake package (find_package(esockets)), esockets.pc, the programs that
# were built (esockets-echo, esockets-flood, the examples) and the license.
# No dpkg-dev needed: Depends is written here rather than computed by dpkg-shlibdeps (the
# programs link only libc, libm, libstdc++ and libgcc_s; GLIBCXX_3.4.30 is GCC 12's
# libstdc++, GLIBC_2.35 brings epoll_pwait2, which esockets-flood uses).
set(ESOCKETS_PACKAGE_MAINTAINER "the esockets authors <esockets@example.org>" CACHE STRING
    "Maintainer field of the packages cpack builds")

set(CPACK_PACKAGE_NAME esockets)
set(CPACK_PACKAGE_VENDOR "the esockets authors")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_CONTACT "${ESOCKETS_PACKAGE_MAINTAINER}")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_RESOURCE_FILE_README ${PROJECT_SOURCE_DIR}/README.md)
set(CPACK_GENERATOR DEB)
# Install into the staging directory with DESTDIR and CMAKE_INSTALL_PREFIX=/usr (rather than
# with the staging directory as the prefix), so that esockets.pc, written while installing,
# says prefix=/usr: where the files are on the system that installs the package.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_SOURCE_IGNORE_FILES "/build/" "/\\\\.git/")

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${ESOCKETS_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6 (>= 2.35), libstdc++6 (>= 12), libgcc-s1 (>= 3.0)")
# Building against it needs a C++20 compiler (g++ 12 or clang 14 and later).
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "g++ (>= 4:12) | clang (>= 1:14), pkg-config")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "${PROJECT_DESCRIPTION}
 esockets serves tens of thousands of TCP clients per process: N shard threads, each
 with its own epoll instance and SO_REUSEPORT listener, optional worker threads for
 handlers, live resharding, and bounded memory per client.
 .
 This package holds the C++ headers, the static library, the CMake package
 (find_package(esockets)), the pkg-config file (esockets.pc), and the programs
 esockets-echo (an echo server) and esockets-flood (a load generator).")

include(CPack)

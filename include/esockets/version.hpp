// esockets — the library's version. These numbers are the CMake project version
// (project(esockets VERSION ...) in CMakeLists.txt); configuring fails if the two disagree.
// Thread: constants; any thread.
#pragma once

/// \file
/// The esockets version as macros (for the preprocessor) and as esockets::version().

/// Major version: changes with incompatible API changes.
#define ESOCKETS_VERSION_MAJOR 0
/// Minor version: changes with additions (while the major version is 0, also with API changes).
#define ESOCKETS_VERSION_MINOR 3
/// Patch version: fixes only.
#define ESOCKETS_VERSION_PATCH 0
/// The version as text, "MAJOR.MINOR.PATCH".
#define ESOCKETS_VERSION_STRING "0.3.0"
/// The version as one number for comparisons: MAJOR * 10000 + MINOR * 100 + PATCH.
#define ESOCKETS_VERSION \
  (ESOCKETS_VERSION_MAJOR * 10000 + ESOCKETS_VERSION_MINOR * 100 + ESOCKETS_VERSION_PATCH)

namespace esockets {

/// The version of these headers, "MAJOR.MINOR.PATCH" (ESOCKETS_VERSION_STRING). Any thread.
constexpr const char* version() noexcept { return ESOCKETS_VERSION_STRING; }

}  // namespace esockets

// The scaffold README fragments compile in (tests/readme/extract_cpp_blocks.py): the headers a
// fragment may rely on and the types of the names it may use without declaring them.
// A fragment is compiled, never run: these only have to make it well-formed.
#pragma once

#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <esockets/esockets.hpp>

namespace readme {

// `pool` in a fragment: the user's own thread pool.
struct Pool {
  void submit(std::function<void()> fn) { fn(); }
};

}  // namespace readme

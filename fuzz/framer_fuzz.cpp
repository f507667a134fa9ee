// libFuzzer harness for the framer. The input layout and the properties live in
// tests/framer_properties.hpp, shared with tests/framer_corpus_test.cpp.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "framer_properties.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string why = esockets::test::check_framer_properties(data, size);
  if (!why.empty()) {
    std::fprintf(stderr, "framer property violated: %s\n", why.c_str());
    std::abort();
  }
  return 0;
}

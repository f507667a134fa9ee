// libFuzzer harness for the PROXY protocol header parser (engine/io/proxy_header.cpp). The
// properties live in tests/proxy/proxy_properties.hpp, shared with tests/proxy/proxy_corpus_test.cpp.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "proxy/proxy_properties.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string why = esockets::test::check_proxy_properties(data, size);
  if (!why.empty()) {
    std::fprintf(stderr, "proxy header property violated: %s\n", why.c_str());
    std::abort();
  }
  return 0;
}

// Replays every file of fuzz/corpus/proxy through the fuzzer's property checks, so the corpus
// (seeds plus every crash ever fixed) runs on every ctest, GCC builds included.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "proxy_properties.hpp"

#ifndef ESOCKETS_PROXY_CORPUS_DIR
#error "define ESOCKETS_PROXY_CORPUS_DIR as the path of fuzz/corpus/proxy"
#endif

namespace {

std::vector<std::filesystem::path> corpus_files() {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(ESOCKETS_PROXY_CORPUS_DIR, ec))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

class ProxyCorpus : public ::testing::TestWithParam<std::filesystem::path> {};

TEST_P(ProxyCorpus, PropertiesHold) {
  std::ifstream in(GetParam(), std::ios::binary);
  ASSERT_TRUE(in) << GetParam();
  std::string bytes(std::filesystem::file_size(GetParam()), '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_EQ(in.gcount(), static_cast<std::streamsize>(bytes.size())) << GetParam();
  EXPECT_EQ(esockets::test::check_proxy_properties(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()),
            "")
      << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Files, ProxyCorpus, ::testing::ValuesIn(corpus_files()), [](const auto& p) {
  std::string name = p.param.filename().string();
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name + "_" + std::to_string(p.index);  // the index keeps sanitised names unique
});
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ProxyCorpus);

TEST(ProxyCorpusDir, HasSeeds) { EXPECT_GE(corpus_files().size(), 8u) << ESOCKETS_PROXY_CORPUS_DIR; }

}  // namespace

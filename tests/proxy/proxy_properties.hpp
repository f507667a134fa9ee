// PROXY header parser properties, shared by fuzz/proxy_fuzz.cpp and tests/proxy/proxy_corpus_test.cpp
// so that every file of fuzz/corpus/proxy is also an ordinary test on GCC builds.
//
// Input: the raw bytes a client sent, parsed with each accept mode (v1, v2, any) and several
// max_proxy_header: 28 (one v2 TCP4 header), 232 (the least a listener allows), 4096 (the
// default), 65551 (the largest), the input's size and one less.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "io/proxy_header.hpp"

namespace esockets::test {

inline bool same_peer(const PeerAddress& a, const PeerAddress& b) {
  return a.family == b.family && a.port == b.port && std::memcmp(a.addr, b.addr, sizeof a.addr) == 0;
}

inline bool same_info(const ProxyInfo& a, const ProxyInfo& b) {
  if (a.version != b.version || a.local != b.local || !same_peer(a.source, b.source) ||
      !same_peer(a.destination, b.destination) || a.tlvs.size() != b.tlvs.size())
    return false;
  for (std::size_t i = 0; i < a.tlvs.size(); ++i)
    if (a.tlvs[i].type != b.tlvs[i].type || a.tlvs[i].value != b.tlvs[i].value) return false;
  return true;
}

// Every prefix shorter than `n` must be a valid prefix (need_more): all of the first 128, then
// about 64 more spread evenly, and n - 1.
inline std::string check_prefixes(std::string_view in, std::size_t n, ProxyProtocol accept, std::size_t max) {
  const std::size_t step = n > 128 ? std::max<std::size_t>(1, (n - 128) / 64) : 1;
  for (std::size_t k = 0; k < n; k = k < 128 ? k + 1 : k + step) {
    const std::size_t len = std::min(k, n - 1);
    ProxyInfo info;
    const auto r = detail::parse_proxy_header(in.substr(0, len), accept, max, info);
    if (r.status != detail::ProxyParse::need_more)
      return "prefix of " + std::to_string(len) + " bytes (of " + std::to_string(n) + ") is not need_more";
    if (len == n - 1) break;
  }
  if (n > 0) {
    ProxyInfo info;
    if (detail::parse_proxy_header(in.substr(0, n - 1), accept, max, info).status != detail::ProxyParse::need_more)
      return "prefix of n - 1 bytes is not need_more";
  }
  return {};
}

inline std::string check_one(std::string_view in, ProxyProtocol accept, std::size_t max, ProxyInfo& info,
                             detail::ProxyParseResult& r) {
  r = detail::parse_proxy_header(in, accept, max, info);
  const std::string where = " (accept " + std::to_string(static_cast<int>(accept)) + ", max " + std::to_string(max) + ")";
  switch (r.status) {
    case detail::ProxyParse::malformed:
      if (r.error == nullptr || r.error[0] == '\0') return "malformed without an error" + where;
      return {};
    case detail::ProxyParse::need_more: {
      if (r.error != nullptr) return "need_more with an error" + where;
      if (!in.empty() && in.size() >= max) return "need_more at or over max_header" + where;
      if (!in.empty() && in[0] == 'P' && in.size() >= 107) return "v1 need_more at 107 bytes" + where;
      const std::string why = check_prefixes(in, in.size(), accept, max);
      return why.empty() ? why : why + where;
    }
    case detail::ProxyParse::done: break;
    default: return "unknown status" + where;
  }
  const std::size_t n = r.consumed;
  if (n > in.size() || n > max) return "done consumed past the input or max_header" + where;
  if (info.version == 1) {
    if (accept == ProxyProtocol::v2) return "v1 header accepted by a v2 listener" + where;
    if (n < 15 || n > 107 || in[0] != 'P' || in.substr(n - 2, 2) != "\r\n") return "v1 header size or ending" + where;
    if (!info.tlvs.empty()) return "v1 header with TLVs" + where;
  } else if (info.version == 2) {
    if (accept == ProxyProtocol::v1) return "v2 header accepted by a v1 listener" + where;
    if (n < 16) return "v2 header under 16 bytes" + where;
    std::size_t tlv_bytes = 0;
    for (const auto& t : info.tlvs) tlv_bytes += 3 + t.value.size();
    if (tlv_bytes > n - 16) return "v2 TLVs larger than the header" + where;
  } else {
    return "done with version " + std::to_string(info.version) + where;
  }
  for (const PeerAddress* p : {&info.source, &info.destination}) {
    if (p->family != 0 && p->family != AF_INET && p->family != AF_INET6) return "bad family" + where;
    if (info.local && p->family != 0) return "local with addresses" + where;
  }
  if (info.source.family != info.destination.family) return "source and destination families differ" + where;
  // The header alone parses the same; what follows it is not looked at.
  ProxyInfo alone;
  const auto r2 = detail::parse_proxy_header(in.substr(0, n), accept, max, alone);
  if (r2.status != detail::ProxyParse::done || r2.consumed != n || !same_info(info, alone))
    return "the header alone parses differently" + where;
  const std::string why = check_prefixes(in, n, accept, max);
  return why.empty() ? why : why + where;
}

// Empty when every property holds, else what broke.
inline std::string check_proxy_properties(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  // The input's own size and one less put a whole header exactly at and just over the bound.
  const std::size_t own = std::max<std::size_t>(size, 1);
  for (std::size_t max : {std::size_t{28}, std::size_t{232}, std::size_t{4096}, std::size_t{65551}, own, own - 1}) {
    ProxyInfo by_mode[3];
    detail::ProxyParseResult r[3];
    const ProxyProtocol modes[3] = {ProxyProtocol::v1, ProxyProtocol::v2, ProxyProtocol::any};
    for (int m = 0; m < 3; ++m) {
      const std::string why = check_one(in, modes[m], max, by_mode[m], r[m]);
      if (!why.empty()) return why;
    }
    // any agrees with the mode of the version it found, and that mode with any.
    for (int m = 0; m < 2; ++m) {
      if (r[m].status == detail::ProxyParse::done &&
          (r[2].status != detail::ProxyParse::done || r[2].consumed != r[m].consumed || !same_info(by_mode[m], by_mode[2])))
        return "accept any disagrees with a single version";
    }
    if (r[2].status != detail::ProxyParse::done) {
      if (r[0].status == detail::ProxyParse::need_more && r[2].status != detail::ProxyParse::need_more)
        return "v1 waits where any does not";
      if (r[1].status == detail::ProxyParse::need_more && r[2].status != detail::ProxyParse::need_more)
        return "v2 waits where any does not";
    } else {
      const int m = by_mode[2].version == 1 ? 0 : 1;
      if (r[m].status != detail::ProxyParse::done) return "accept any found a header its version's mode refuses";
    }
  }
  return {};
}

}  // namespace esockets::test

// esockets-flood: counters, error taxonomy and the mergeable per-process result.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "histogram.hpp"

namespace flood {

enum Err : int {
    kEconnrefused,
    kConnectTimeout,
    kEaddrnotavail,
    kEmfile,
    kEconnreset,
    kEtimedout,      // ETIMEDOUT on an established connection (retransmissions / keepalive gave up)
    kEnobufs,        // ENOBUFS / ENOMEM: the kernel ran out of buffers or memory
    kEpipe,
    kUnexpectedEof,
    kResponseTimeout,
    kVerifyMismatch,
    kErrorReply,     // --protocol resp: an error reply (-ERR ...)
    kProtocolError,  // --protocol resp/http: a malformed reply, or one that answers nothing sent
    kOther,
    kErrCount
};
const char* err_name(int e);

enum Phase : int { kRamp, kWarmup, kSteady, kDrain, kPhaseCount };
const char* phase_name(int p);

struct FirstError {
    bool set = false;
    double t = 0;            // seconds since run start
    std::uint64_t conn = 0;  // global connection index
    std::string detail;
};

// Mergeable result of one process (or of all of them after merge()).
//  c:  counters, merged by adding        (e.g. "steady.msgs", "err.econnreset")
//  mx: values merged by taking the max   (e.g. "time_to_n_s")
//  h:  histograms, merged by adding counts
struct Result {
    std::map<std::string, std::uint64_t> c;
    std::map<std::string, double> mx;
    std::map<std::string, Histogram> h;
    std::array<FirstError, kErrCount> first{};

    std::uint64_t get(const std::string& k) const {
        auto it = c.find(k);
        return it == c.end() ? 0 : it->second;
    }
    double getx(const std::string& k, double dflt = 0) const {
        auto it = mx.find(k);
        return it == mx.end() ? dflt : it->second;
    }
    Histogram& hist(const std::string& k) { return h[k]; }
    const Histogram* find_hist(const std::string& k) const {
        auto it = h.find(k);
        return it == h.end() ? nullptr : &it->second;
    }
    void merge(const Result& o);
    std::string serialize() const;  // text, one item per line, ends with "end\n"
    bool deserialize(const std::string& s);
};

}  // namespace flood

// esockets-flood --hdr-log: an HdrHistogram interval log (format version 1.3), one line per second
// with that second's reply latencies as a base64 compressed V2 histogram, readable by HdrHistogram's
// HistogramLogReader / plotters. The histogram's layout (exact below 2048 ns, 1024 sub-buckets per
// power of two) is HdrHistogram's for 3 significant digits and lowest value 1, so counts map 1:1.
#pragma once

#include <cstdio>
#include <string>

#include "histogram.hpp"

namespace flood {

bool hdr_log_available();  // built with zlib
// The V2 compressed encoding of h, base64 ("HISTFAAA...").
std::string hdr_encode_base64(const Histogram& h);

class HdrLogWriter {
public:
    // Writes the header; false when the file cannot be written.
    bool open(const std::string& path);
    // One interval: start seconds (since the run start), its length, its latencies in ns.
    void interval(double start_s, double len_s, const Histogram& h);
    ~HdrLogWriter();
    bool is_open() const { return f_ != nullptr; }

private:
    FILE* f_ = nullptr;
};

}  // namespace flood

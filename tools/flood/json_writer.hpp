// esockets-flood: a minimal JSON writer for the result and the progress stream.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "histogram.hpp"

namespace flood {

class Json {
public:
    Json& open(const char* k, char br) {
        key(k);
        s_ += br;
        first_.push_back(true);
        return *this;
    }
    Json& close(char br) {
        s_ += br;
        first_.pop_back();
        return *this;
    }
    Json& num(const char* k, double v) {
        key(k);
        if (!std::isfinite(v)) {
            s_ += "null";
        } else {
            char b[64];
            std::snprintf(b, sizeof b, "%.6f", v);
            std::string t = b;
            while (t.back() == '0') t.pop_back();
            if (t.back() == '.') t.pop_back();
            s_ += t;
        }
        return *this;
    }
    Json& u(const char* k, std::uint64_t v) {
        key(k);
        s_ += std::to_string(v);
        return *this;
    }
    Json& i(const char* k, std::int64_t v) {
        key(k);
        s_ += std::to_string(v);
        return *this;
    }
    Json& b(const char* k, bool v) {
        key(k);
        s_ += v ? "true" : "false";
        return *this;
    }
    Json& null(const char* k) {
        key(k);
        s_ += "null";
        return *this;
    }
    Json& str(const char* k, const std::string& v) {
        key(k);
        s_ += '"';
        for (unsigned char c : v) {
            if (c == '"' || c == '\\') {
                s_ += '\\';
                s_ += static_cast<char>(c);
            } else if (c < 0x20) {
                char e[8];
                std::snprintf(e, sizeof e, "\\u%04x", c);
                s_ += e;
            } else {
                s_ += static_cast<char>(c);
            }
        }
        s_ += '"';
        return *this;
    }
    Json& pcts(const char* k, const Histogram& h) {
        open(k, '{');
        u("count", h.count()).u("p50", h.percentile(50)).u("p90", h.percentile(90)).u("p99", h.percentile(99));
        u("p999", h.percentile(99.9)).u("p9999", h.percentile(99.99)).u("max", h.max()).num("mean", h.mean());
        return close('}');
    }
    const std::string& str() const { return s_; }

private:
    void key(const char* k) {
        if (!first_.empty()) {
            if (!first_.back()) s_ += ',';
            first_.back() = false;
        }
        if (k) {
            s_ += '"';
            s_ += k;
            s_ += "\":";
        }
    }
    std::string s_;
    std::vector<bool> first_;
};

}  // namespace flood

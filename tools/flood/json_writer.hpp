// esockets-flood: the JSON of the result and the progress stream, built with nlohmann-json
// (ordered, so the keys keep the order in which the report writes them). A small chaining
// front end keeps report.cpp readable: open/close a container, then add members.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "histogram.hpp"

namespace flood {

class Json {
public:
    using value = nlohmann::ordered_json;
    Json& open(const char* k, char br) {
        value& v = add(k, br == '{' ? value::object() : value::array());
        stack_.push_back(&v);
        return *this;
    }
    Json& close(char) {
        stack_.pop_back();
        return *this;
    }
    Json& num(const char* k, double v) {
        if (!std::isfinite(v)) return null(k);
        add(k, std::round(v * 1e6) / 1e6);  // 6 decimals, as before
        return *this;
    }
    Json& u(const char* k, std::uint64_t v) {
        add(k, v);
        return *this;
    }
    Json& i(const char* k, std::int64_t v) {
        add(k, v);
        return *this;
    }
    Json& b(const char* k, bool v) {
        add(k, v);
        return *this;
    }
    Json& null(const char* k) {
        add(k, nullptr);
        return *this;
    }
    Json& str(const char* k, const std::string& v) {
        // Invalid UTF-8 (e.g. a server's bytes in an error detail) is replaced, never thrown on.
        add(k, v);
        return *this;
    }
    // Latency percentiles of a histogram recorded in ns, written in microseconds (fractional: the
    // histogram is exact to 1 ns below 2048 ns and to 1/1024 above).
    Json& pcts(const char* k, const Histogram& h) {
        open(k, '{');
        auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
        u("count", h.count()).num("p50", us(h.percentile(50))).num("p90", us(h.percentile(90)));
        num("p99", us(h.percentile(99))).num("p999", us(h.percentile(99.9))).num("p9999", us(h.percentile(99.99)));
        num("max", us(h.max())).num("mean", h.mean() / 1000.0);
        return close('}');
    }
    std::string str() const {
        return root_.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    }

private:
    template <class T>
    value& add(const char* k, T&& v) {
        if (stack_.empty()) {
            root_ = value(std::forward<T>(v));
            return root_;
        }
        value& top = *stack_.back();
        if (top.is_array() || !k) {
            top.push_back(value(std::forward<T>(v)));
            return top.back();
        }
        top[k] = value(std::forward<T>(v));
        return top[k];
    }
    value root_;
    std::vector<value*> stack_;
};

}  // namespace flood

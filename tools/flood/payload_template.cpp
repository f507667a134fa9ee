#include "payload_template.hpp"

#include <cstdlib>

namespace flood {

namespace {

std::uint32_t digits(std::uint64_t v) {
    std::uint32_t n = 1;
    while (v >= 10) {
        v /= 10;
        ++n;
    }
    return n;
}

int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

bool PayloadTemplate::parse(const std::string& t, std::string& err) {
    parts_.clear();
    std::string lit;
    auto flush = [&] {
        if (!lit.empty()) parts_.push_back({kText, lit});
        lit.clear();
    };
    for (std::size_t i = 0; i < t.size(); ++i) {
        const char c = t[i];
        if (c == '\\') {
            if (i + 1 >= t.size()) {
                err = "--payload-template ends with a lone '\\' (write \\\\ for a backslash)";
                return false;
            }
            const char e = t[++i];
            if (e == 'r') lit += '\r';
            else if (e == 'n') lit += '\n';
            else if (e == 't') lit += '\t';
            else if (e == '\\') lit += '\\';
            else if (e == 'x' && i + 2 < t.size() && hex(t[i + 1]) >= 0 && hex(t[i + 2]) >= 0) {
                lit += static_cast<char>(hex(t[i + 1]) * 16 + hex(t[i + 2]));
                i += 2;
            } else {
                err = std::string("--payload-template has an unknown escape '\\") + e +
                      "' (known: \\r \\n \\t \\\\ \\xHH)";
                return false;
            }
        } else if (c == '{') {
            if (t.compare(i, 2, "{{") == 0) {
                lit += '{';
                ++i;
            } else if (t.compare(i, 5, "{seq}") == 0) {
                flush();
                parts_.push_back({kSeq, {}});
                i += 4;
            } else if (t.compare(i, 6, "{conn}") == 0) {
                flush();
                parts_.push_back({kConn, {}});
                i += 5;
            } else {
                err = "--payload-template has an unknown placeholder at '" + t.substr(i, 12) +
                      "' (known: {seq} {conn}; {{ for a literal '{')";
                return false;
            }
        } else {
            lit += c;
        }
    }
    flush();
    if (parts_.empty()) {
        err = "--payload-template is empty";
        return false;
    }
    if (max_length() > (1u << 24)) {
        err = "--payload-template is longer than 16777216 bytes";
        return false;
    }
    return true;
}

std::uint32_t PayloadTemplate::length(std::uint64_t conn, std::uint64_t seq) const {
    std::uint32_t n = 0;
    for (const Part& p : parts_)
        n += p.kind == kText ? static_cast<std::uint32_t>(p.text.size()) : digits(p.kind == kSeq ? seq : conn);
    return n;
}

std::uint32_t PayloadTemplate::max_length() const {
    std::uint64_t n = 0;
    for (const Part& p : parts_) n += p.kind == kText ? p.text.size() : 20;
    return n > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(n);
}

void PayloadTemplate::render(std::uint64_t conn, std::uint64_t seq, std::string& out) const {
    out.clear();
    for (const Part& p : parts_) {
        if (p.kind == kText) out += p.text;
        else out += std::to_string(p.kind == kSeq ? seq : conn);
    }
}

bool PayloadTemplate::contains(char ch) const {
    for (const Part& p : parts_)
        if (p.kind == kText && p.text.find(ch) != std::string::npos) return true;
    return false;
}

bool PayloadTemplate::has_placeholders() const {
    for (const Part& p : parts_)
        if (p.kind != kText) return true;
    return false;
}

}  // namespace flood

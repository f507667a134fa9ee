// esockets-flood: --payload-template, request bytes with {seq} (the request's number on its
// connection) and {conn} (the global connection index) filled in per request.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace flood {

class PayloadTemplate {
public:
    // Escapes \r \n \t \\ \xHH and the placeholders {seq} {conn}; "{{" is a literal '{'. Returns false
    // with a message saying what to change.
    bool parse(const std::string& text, std::string& err);
    bool empty() const { return parts_.empty(); }
    // Bytes of the request for (conn, seq), without building it.
    std::uint32_t length(std::uint64_t conn, std::uint64_t seq) const;
    std::uint32_t max_length() const;  // over every conn and seq (20 digits each)
    void render(std::uint64_t conn, std::uint64_t seq, std::string& out) const;
    bool contains(char ch) const;      // in the literal text
    bool has_placeholders() const;

private:
    enum Kind { kText, kSeq, kConn };
    struct Part {
        Kind kind;
        std::string text;
    };
    std::vector<Part> parts_;
};

}  // namespace flood

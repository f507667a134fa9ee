// esockets-flood: incremental RESP reply framing (--protocol resp).
// Finds where one reply ends in a byte stream that may be split at any byte: RESP2 simple strings (+),
// errors (-), integers (:), bulk strings ($, incl. the nil $-1) and arrays (*, incl. *-1, nested to any
// depth up to kMaxDepth), plus the RESP3 scalars/aggregates a server may send (_ , # ( ! = % ~ >).
// It keeps no reply data except the first bytes of a top-level simple string or error (for messages).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace flood {

class RespReplyParser {
public:
    enum Status { kNeedMore, kDone, kBad };
    static constexpr std::size_t kMaxDepth = 64;
    static constexpr std::size_t kTextKeep = 120;             // bytes of a simple string / error kept
    static constexpr std::int64_t kMaxBulk = 512ll << 20;     // redis' proto-max-bulk-len default
    static constexpr std::int64_t kMaxElements = 1ll << 32;

    // Consumes bytes of the current reply from p[0, n). Returns kDone when a reply ended (after
    // `used` bytes; the rest belongs to the next reply), kNeedMore when all n bytes were consumed and
    // the reply goes on, kBad on a protocol violation (why() says what; the stream cannot be resynced).
    Status feed(const unsigned char* p, std::size_t n, std::size_t& used);
    void reset();  // new connection

    // The reply that last ended (valid after kDone until the next feed()).
    char type() const { return top_type_; }        // its first byte: '+', '-', ':', '$', '*', ...
    bool is_error() const { return top_type_ == '-' || top_type_ == '!'; }
    bool is_nil() const { return top_nil_; }       // $-1, *-1 or RESP3 _
    const std::string& text() const { return text_; }  // start of a simple string / error reply
    bool in_reply() const { return state_ != kType || !stack_.empty(); }  // a reply is partly read
    const char* why() const { return why_; }

private:
    enum State : std::uint8_t { kType, kLine, kLineLF, kBulk, kBulkCR, kBulkLF };
    Status bad(const char* w) {
        why_ = w;
        return kBad;
    }
    bool line_done();  // false: protocol error (why_ set)
    void element_done();

    State state_ = kType;
    char type_ = 0;            // type byte of the element being read
    char top_type_ = 0;
    bool top_nil_ = false;
    bool done_ = false;
    bool neg_ = false;
    int digits_ = 0;
    std::int64_t num_ = 0;     // the number of a length / count / integer line
    std::int64_t bulk_left_ = 0;
    std::vector<std::int64_t> stack_;  // elements left per open aggregate
    std::string text_;
    const char* why_ = "";
};

}  // namespace flood

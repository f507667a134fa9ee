#include "resp_parser.hpp"

#include <algorithm>
#include <cstring>

namespace flood {

namespace {
bool text_type(char t) { return t == '+' || t == '-' || t == ',' || t == '(' || t == '#' || t == '_'; }
bool bulk_type(char t) { return t == '$' || t == '=' || t == '!'; }
bool aggregate_type(char t) { return t == '*' || t == '~' || t == '%' || t == '>'; }
}  // namespace

void RespReplyParser::reset() {
    state_ = kType;
    type_ = top_type_ = 0;
    top_nil_ = done_ = neg_ = false;
    digits_ = 0;
    num_ = bulk_left_ = 0;
    stack_.clear();
    text_.clear();
    why_ = "";
}

void RespReplyParser::element_done() {
    state_ = kType;
    while (!stack_.empty()) {
        if (--stack_.back() > 0) return;
        stack_.pop_back();  // the aggregate is complete: it is an element of its parent
    }
    done_ = true;
}

bool RespReplyParser::line_done() {
    if (text_type(type_)) {
        if (type_ == '_' && stack_.empty()) top_nil_ = true;
        element_done();
        return true;
    }
    if (digits_ == 0) {
        why_ = "RESP length/integer line without digits";
        return false;
    }
    if (type_ == ':') {
        element_done();
        return true;
    }
    if (neg_) {  // only -1 (nil) is valid for lengths and counts
        if (num_ != 1) {
            why_ = "RESP negative length other than -1";
            return false;
        }
        if (stack_.empty()) top_nil_ = true;
        element_done();
        return true;
    }
    if (bulk_type(type_)) {
        if (num_ > kMaxBulk) {
            why_ = "RESP bulk length over 512 MiB";
            return false;
        }
        bulk_left_ = num_;
        state_ = num_ == 0 ? kBulkCR : kBulk;
        return true;
    }
    // aggregate
    if (num_ > kMaxElements) {
        why_ = "RESP aggregate with more than 2^32 elements";
        return false;
    }
    const std::int64_t elems = type_ == '%' ? 2 * num_ : num_;
    if (elems == 0) {
        element_done();
        return true;
    }
    if (stack_.size() >= kMaxDepth) {
        why_ = "RESP aggregates nested deeper than 64";
        return false;
    }
    stack_.push_back(elems);
    state_ = kType;
    return true;
}

RespReplyParser::Status RespReplyParser::feed(const unsigned char* p, std::size_t n, std::size_t& used) {
    done_ = false;
    std::size_t i = 0;
    while (i < n) {
        const unsigned char c = p[i];
        switch (state_) {
        case kType:
            if (!text_type(static_cast<char>(c)) && !bulk_type(static_cast<char>(c)) && c != ':' &&
                !aggregate_type(static_cast<char>(c))) {
                used = i;
                return bad("not a RESP reply (unknown type byte)");
            }
            type_ = static_cast<char>(c);
            if (stack_.empty()) {
                top_type_ = type_;
                top_nil_ = false;
                text_.clear();
            }
            neg_ = false;
            digits_ = 0;
            num_ = 0;
            state_ = kLine;
            ++i;
            break;
        case kLine:
            if (text_type(type_)) {  // scan to the CR
                const auto* cr = static_cast<const unsigned char*>(std::memchr(p + i, '\r', n - i));
                const std::size_t end = cr ? static_cast<std::size_t>(cr - p) : n;
                if (const void* lf = std::memchr(p + i, '\n', end - i)) {
                    used = static_cast<std::size_t>(static_cast<const unsigned char*>(lf) - p);
                    return bad("RESP line with LF but no CR");
                }
                if (stack_.empty() && text_.size() < kTextKeep)
                    text_.append(reinterpret_cast<const char*>(p + i), std::min(end - i, kTextKeep - text_.size()));
                i = end;
                if (cr) {
                    state_ = kLineLF;
                    ++i;
                }
                break;
            }
            if (c == '\r') {
                state_ = kLineLF;
            } else if (c == '-' && digits_ == 0 && !neg_) {
                neg_ = true;
            } else if (c >= '0' && c <= '9' && digits_ < 19) {
                if (digits_ < 18) num_ = num_ * 10 + (c - '0');
                else num_ = kMaxElements + kMaxBulk + 1;  // 19 digits: over any limit
                ++digits_;
            } else {
                used = i;
                return bad("RESP length/integer line with a non-digit");
            }
            ++i;
            break;
        case kLineLF:
            if (c != '\n') {
                used = i;
                return bad("RESP line with CR not followed by LF");
            }
            ++i;
            if (!line_done()) {
                used = i;
                return kBad;
            }
            break;
        case kBulk: {
            const std::size_t take = static_cast<std::size_t>(std::min<std::int64_t>(bulk_left_, static_cast<std::int64_t>(n - i)));
            i += take;
            bulk_left_ -= static_cast<std::int64_t>(take);
            if (bulk_left_ == 0) state_ = kBulkCR;
            break;
        }
        case kBulkCR:
            if (c != '\r') {
                used = i;
                return bad("RESP bulk string longer than its length");
            }
            state_ = kBulkLF;
            ++i;
            break;
        case kBulkLF:
            if (c != '\n') {
                used = i;
                return bad("RESP bulk string not ended by CRLF");
            }
            ++i;
            element_done();
            break;
        }
        if (done_) {
            used = i;
            return kDone;
        }
    }
    used = n;
    return kNeedMore;
}

}  // namespace flood

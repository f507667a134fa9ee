#include "http_parser.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace flood {

namespace {

std::string lower_trim(const std::string& s) {
    std::size_t a = 0, b = s.size();
    while (a < b && (s[a] == ' ' || s[a] == '\t')) ++a;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) --b;
    std::string r = s.substr(a, b - a);
    for (auto& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return r;
}

// True when the comma-separated list has the token (already lower case).
bool has_token(const std::string& list, const char* tok) {
    std::size_t pos = 0;
    while (pos <= list.size()) {
        std::size_t comma = list.find(',', pos);
        if (comma == std::string::npos) comma = list.size();
        if (lower_trim(list.substr(pos, comma - pos)) == tok) return true;
        pos = comma + 1;
    }
    return false;
}

}  // namespace

void HttpReplyParser::reset() {
    state_ = kStatusLine;
    line_.clear();
    line_len_ = head_ = 0;
    status_ = 0;
    minor_ = 1;
    close_ = keep_alive_ = chunked_ = has_length_ = false;
    length_ = 0;
    why_ = "";
}

void HttpReplyParser::start_reply() {
    status_ = 0;
    minor_ = 1;
    close_ = keep_alive_ = chunked_ = has_length_ = false;
    length_ = 0;
}

bool HttpReplyParser::status_line() {
    // HTTP/1.x SSS [reason]
    const std::string& l = line_;
    if (l.size() < 12 || l.compare(0, 7, "HTTP/1.") != 0 || !std::isdigit(static_cast<unsigned char>(l[7])) ||
        l[8] != ' ' || !std::isdigit(static_cast<unsigned char>(l[9])) ||
        !std::isdigit(static_cast<unsigned char>(l[10])) || !std::isdigit(static_cast<unsigned char>(l[11])) ||
        (l.size() > 12 && l[12] != ' ')) {
        why_ = "not an HTTP/1.x status line";
        return false;
    }
    minor_ = l[7] - '0';
    status_ = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    if (status_ < 100) {
        why_ = "HTTP status code below 100";
        return false;
    }
    return true;
}

bool HttpReplyParser::header_line() {
    if (line_[0] == ' ' || line_[0] == '\t') return true;  // obsolete line folding: a continuation, ignored
    const std::size_t colon = line_.find(':');
    if (colon == std::string::npos || colon == 0) {
        why_ = "HTTP header line without a name and ':'";
        return false;
    }
    const std::string name = lower_trim(line_.substr(0, colon));
    if (name.size() != colon) {
        why_ = "HTTP header name with whitespace";
        return false;
    }
    const std::string value = lower_trim(line_.substr(colon + 1));
    if (name == "content-length") {
        if (value.empty() || value.size() > 18 || value.find_first_not_of("0123456789") != std::string::npos) {
            why_ = "HTTP Content-Length is not a number";
            return false;
        }
        const std::uint64_t v = std::stoull(value);
        if (has_length_ && v != length_) {
            why_ = "HTTP response with two different Content-Length";
            return false;
        }
        has_length_ = true;
        length_ = v;
    } else if (name == "transfer-encoding") {
        // chunked must be the last coding; a response with another final coding is delimited by the close
        const std::size_t comma = value.rfind(',');
        chunked_ = lower_trim(comma == std::string::npos ? value : value.substr(comma + 1)) == "chunked";
        if (!chunked_) has_length_ = false, close_ = true;
    } else if (name == "connection") {
        if (has_token(value, "close")) close_ = true;
        if (has_token(value, "keep-alive")) keep_alive_ = true;
    }
    return true;
}

bool HttpReplyParser::end_of_head(bool& done) {
    if (status_ >= 100 && status_ < 200) {
        if (status_ == 101) {
            why_ = "HTTP 101 Switching Protocols (not requested)";
            return false;
        }
        start_reply();  // interim response: the real one follows
        head_ = 0;
        state_ = kStatusLine;
        return true;
    }
    if (minor_ == 0 && !keep_alive_) close_ = true;
    head_ = 0;
    if (status_ == 204 || status_ == 304) {
        done = true;
    } else if (chunked_) {  // Transfer-Encoding overrides Content-Length
        state_ = kChunkSize;
    } else if (has_length_) {
        if (length_ == 0) done = true;
        else state_ = kBody;
    } else {
        close_ = true;
        state_ = kUntilClose;
    }
    if (done) state_ = kStatusLine;
    return true;
}

bool HttpReplyParser::line(bool& done) {
    switch (state_) {
    case kStatusLine:
        if (line_.empty() && line_len_ == 0) return true;  // tolerate empty lines before a response
        if (!status_line()) return false;
        state_ = kHeader;
        return true;
    case kHeader:
        if (line_len_ == 0) return end_of_head(done);
        return header_line();
    case kChunkSize: {
        std::size_t k = 0;
        std::uint64_t v = 0;
        while (k < line_.size() && std::isxdigit(static_cast<unsigned char>(line_[k]))) {
            if (k >= 15) {
                why_ = "HTTP chunk size too large";
                return false;
            }
            const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(line_[k])));
            v = v * 16 + static_cast<std::uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
            ++k;
        }
        while (k < line_.size() && (line_[k] == ' ' || line_[k] == '\t')) ++k;
        if (k == 0 || (k < line_.size() && line_[k] != ';')) {
            why_ = "HTTP chunk size line is not hex";
            return false;
        }
        length_ = v;
        state_ = v == 0 ? kTrailer : kChunkData;
        return true;
    }
    case kTrailer:
        if (line_len_ == 0) {
            head_ = 0;
            state_ = kStatusLine;
            done = true;
        }
        return true;
    default: return true;
    }
}

HttpReplyParser::Status HttpReplyParser::feed(const unsigned char* p, std::size_t n, std::size_t& used) {
    std::size_t i = 0;
    if (state_ == kStatusLine && line_len_ == 0 && head_ == 0) start_reply();
    while (i < n) {
        switch (state_) {
        case kStatusLine:
        case kHeader:
        case kChunkSize:
        case kTrailer: {
            const auto* nl = static_cast<const unsigned char*>(std::memchr(p + i, '\n', n - i));
            const std::size_t end = nl ? static_cast<std::size_t>(nl - p) : n;
            const std::size_t take = end - i;
            if (line_.size() < kLineKeep)
                line_.append(reinterpret_cast<const char*>(p + i), std::min(take, kLineKeep - line_.size()));
            line_len_ += take;
            if (state_ != kChunkSize) head_ += take + (nl ? 1 : 0);
            if (head_ > kMaxHead) {
                used = i;
                return bad("HTTP response head over 64 KiB");
            }
            if (state_ == kChunkSize && line_len_ > 4096) {
                used = i;
                return bad("HTTP chunk size line over 4 KiB");
            }
            i = end;
            if (!nl) break;
            ++i;
            if (line_len_ > 0 && line_len_ <= kLineKeep && !line_.empty() && line_.back() == '\r') {
                line_.pop_back();
                --line_len_;
            } else if (line_len_ > kLineKeep) {
                --line_len_;  // the CR beyond what was kept
            }
            if (line_.find('\r') != std::string::npos) {
                used = i;
                return bad("HTTP line with a CR inside");
            }
            bool done = false;
            const bool ok = line(done);
            line_.clear();
            line_len_ = 0;
            if (!ok) {
                used = i;
                return kBad;
            }
            if (done) {
                used = i;
                return kDone;
            }
            break;
        }
        case kBody: {
            const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(length_, n - i));
            i += take;
            length_ -= take;
            if (length_ == 0) {
                state_ = kStatusLine;
                used = i;
                return kDone;
            }
            break;
        }
        case kChunkData: {
            const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(length_, n - i));
            i += take;
            length_ -= take;
            if (length_ == 0) state_ = kChunkCR;
            break;
        }
        case kChunkCR:
            if (p[i] == '\n') {  // bare LF tolerated
                state_ = kChunkSize;
            } else if (p[i] == '\r') {
                state_ = kChunkLF;
            } else {
                used = i;
                return bad("HTTP chunk longer than its size");
            }
            ++i;
            break;
        case kChunkLF:
            if (p[i] != '\n') {
                used = i;
                return bad("HTTP chunk not ended by CRLF");
            }
            state_ = kChunkSize;
            ++i;
            break;
        case kUntilClose: i = n; break;
        }
    }
    used = n;
    return kNeedMore;
}

}  // namespace flood

// esockets-flood: incremental HTTP/1.x response framing (--protocol http).
// Finds where one response ends in a byte stream that may be split at any byte: status line, headers,
// then a body delimited by Content-Length, Transfer-Encoding: chunked (chunk extensions and trailers
// skipped), or the end of the connection (no length: the response ends at EOF, see eof()). 1xx interim
// responses (100 Continue, 103 Early Hints) are skipped; 204 and 304 have no body. It keeps the status
// code and whether the server will close the connection after this response (Connection: close, or an
// HTTP/1.0 response without Connection: keep-alive, or a body ended by the close).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace flood {

class HttpReplyParser {
public:
    enum Status { kNeedMore, kDone, kBad };
    static constexpr std::size_t kMaxHead = 64 * 1024;  // status line + headers (+ trailers)
    static constexpr std::size_t kLineKeep = 512;       // bytes of one line kept (enough for the fields used)

    // Consumes bytes of the current response from p[0, n). Returns kDone when a response ended (after
    // `used` bytes), kNeedMore when all n bytes were consumed, kBad on a protocol violation (why()).
    Status feed(const unsigned char* p, std::size_t n, std::size_t& used);
    // The connection reached EOF: true when that ends the response being read (body to the close).
    bool eof() {
        if (state_ != kUntilClose) return false;
        close_ = true;
        return true;
    }
    void reset();  // new connection

    // The response that last ended (valid after kDone / a true eof() until the next feed()).
    int status() const { return status_; }
    bool close() const { return close_; }      // the server closes the connection after it
    bool chunked() const { return chunked_; }
    bool in_reply() const { return state_ != kStatusLine || !line_.empty() || head_ > 0; }
    const char* why() const { return why_; }

private:
    enum State : std::uint8_t { kStatusLine, kHeader, kBody, kChunkSize, kChunkData, kChunkCR, kChunkLF, kTrailer, kUntilClose };
    Status bad(const char* w) {
        why_ = w;
        return kBad;
    }
    bool line(bool& done);  // a complete line is in line_; false: protocol error
    bool status_line();
    bool header_line();
    bool end_of_head(bool& done);
    void start_reply();

    State state_ = kStatusLine;
    std::string line_;
    std::size_t line_len_ = 0;  // full length of the line being read (line_ keeps kLineKeep)
    std::size_t head_ = 0;      // bytes of head read so far
    int status_ = 0;
    int minor_ = 1;
    bool close_ = false, keep_alive_ = false, chunked_ = false, has_length_ = false;
    std::uint64_t length_ = 0;  // Content-Length, then bytes of body / chunk left
    const char* why_ = "";
};

}  // namespace flood

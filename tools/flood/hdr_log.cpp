#include "hdr_log.hpp"

#include <sys/time.h>

#include <cstdint>
#include <ctime>
#include <vector>

#ifdef ESOCKETS_FLOOD_ZLIB
#include <zlib.h>
#endif

namespace flood {

namespace {

constexpr std::uint32_t kV2Cookie = 0x1c849303u | 0x10u;            // V2 encoding, 8-byte words
constexpr std::uint32_t kV2CompressedCookie = 0x1c849304u | 0x10u;  // its zlib-compressed form

void put32(std::vector<unsigned char>& b, std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
}
void put64(std::vector<unsigned char>& b, std::uint64_t v) {
    for (int s = 56; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
}
// HdrHistogram's ZigZag LEB128: 7 bits a byte, the 9th byte (if any) carries 8.
void put_zigzag(std::vector<unsigned char>& b, std::int64_t value) {
    std::uint64_t v = (static_cast<std::uint64_t>(value) << 1) ^ static_cast<std::uint64_t>(value >> 63);
    for (int i = 0; i < 8; ++i) {
        if (v < 0x80) {
            b.push_back(static_cast<unsigned char>(v));
            return;
        }
        b.push_back(static_cast<unsigned char>((v & 0x7f) | 0x80));
        v >>= 7;
    }
    b.push_back(static_cast<unsigned char>(v));
}

std::string base64(const std::vector<unsigned char>& in) {
    static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        const std::uint32_t v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
        for (int s = 18; s >= 0; s -= 6) out += t[(v >> s) & 63];
    }
    if (i + 1 == in.size()) {
        const std::uint32_t v = in[i] << 16;
        out += t[(v >> 18) & 63];
        out += t[(v >> 12) & 63];
        out += "==";
    } else if (i + 2 == in.size()) {
        const std::uint32_t v = (in[i] << 16) | (in[i + 1] << 8);
        out += t[(v >> 18) & 63];
        out += t[(v >> 12) & 63];
        out += t[(v >> 6) & 63];
        out += '=';
    }
    return out;
}

}  // namespace

#ifdef ESOCKETS_FLOOD_ZLIB
bool hdr_log_available() { return true; }

std::string hdr_encode_base64(const Histogram& h) {
    std::size_t len = 0;  // counts up to the last non-zero one
    for (std::size_t i = h.buckets(); i > 0; --i)
        if (h.bucket_count(i - 1)) {
            len = i;
            break;
        }
    std::vector<unsigned char> enc;
    put32(enc, kV2Cookie);
    put32(enc, 0);  // payload length, below
    put32(enc, 0);  // normalizing index offset
    put32(enc, 3);  // significant digits
    put64(enc, 1);  // lowest discernible value
    put64(enc, Histogram::kMaxValue);
    const double ratio = 1.0;
    std::uint64_t bits = 0;
    static_assert(sizeof bits == sizeof ratio);
    __builtin_memcpy(&bits, &ratio, sizeof bits);
    put64(enc, bits);
    const std::size_t start = enc.size();
    for (std::size_t i = 0; i < len;) {
        const std::uint64_t c = h.bucket_count(i++);
        if (c != 0) {
            put_zigzag(enc, static_cast<std::int64_t>(c));
            continue;
        }
        std::int64_t zeros = 1;
        while (i < len && h.bucket_count(i) == 0) {
            ++zeros;
            ++i;
        }
        put_zigzag(enc, zeros > 1 ? -zeros : 0);
    }
    const std::uint32_t payload = static_cast<std::uint32_t>(enc.size() - start);
    for (int k = 0; k < 4; ++k) enc[4 + static_cast<std::size_t>(k)] = static_cast<unsigned char>(payload >> (24 - 8 * k));
    uLongf zlen = compressBound(static_cast<uLong>(enc.size()));
    std::vector<unsigned char> out(8 + zlen);
    if (compress2(out.data() + 8, &zlen, enc.data(), static_cast<uLong>(enc.size()), Z_DEFAULT_COMPRESSION) != Z_OK)
        return {};
    out.resize(8 + zlen);
    std::vector<unsigned char> head;
    put32(head, kV2CompressedCookie);
    put32(head, static_cast<std::uint32_t>(zlen));
    std::copy(head.begin(), head.end(), out.begin());
    return base64(out);
}
#else
bool hdr_log_available() { return false; }
std::string hdr_encode_base64(const Histogram&) { return {}; }
#endif

bool HdrLogWriter::open(const std::string& path) {
    f_ = std::fopen(path.c_str(), "w");
    if (!f_) return false;
    timeval tv{};
    gettimeofday(&tv, nullptr);
    char date[64];
    const std::time_t now = tv.tv_sec;
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(date, sizeof date, "%a %b %d %H:%M:%S UTC %Y", &tm);
    const double start = static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
    std::fprintf(f_, "#[Logged with esockets-flood: reply latency per interval, values in ns]\n");
    std::fprintf(f_, "#[Histogram log format version 1.3]\n");
    std::fprintf(f_, "#[StartTime: %.3f (seconds since epoch), %s]\n", start, date);
    std::fprintf(f_, "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n");
    std::fflush(f_);
    return true;
}

void HdrLogWriter::interval(double start_s, double len_s, const Histogram& h) {
    if (!f_) return;
    // Interval_Max in ms (HdrHistogram's default max value unit ratio 1e6 for ns values).
    std::fprintf(f_, "%.3f,%.3f,%.3f,%s\n", start_s, len_s, static_cast<double>(h.max()) / 1e6,
                 hdr_encode_base64(h).c_str());
    std::fflush(f_);
}

HdrLogWriter::~HdrLogWriter() {
    if (f_) std::fclose(f_);
}

}  // namespace flood

// esockets-flood: --payload-file FILE (every request is the file) and --payload-template T
// (per request: {seq} = its number on its connection, {conn} = the global connection index).
#include <algorithm>
#include <cstdio>

#include "options.hpp"

namespace flood {

bool finalize_payload_source(Options& o, bool& done, std::string& err) {
    done = false;
    const bool file = !o.payload_file.empty(), tpl = !o.tpl.empty();
    if (!file && !tpl) return true;
    const std::string flag = file ? "--payload-file" : "--payload-template";
    auto fail = [&](const std::string& what) {
        err = what;
        return false;
    };
    if (file && tpl) return fail("--payload-file and --payload-template both set the request bytes: keep one");
    if (o.protocol != Protocol::Raw)
        return fail(flag + " does not apply to --protocol " + protocol_name(o.protocol) +
                    " (the protocol builds the requests): drop " + flag);
    if (o.mode == Mode::Idle || o.mode == Mode::Storm || o.mode == Mode::Pubsub)
        return fail(flag + " does not apply to the " + mode_name(o.mode) + " mode (" +
                    (o.mode == Mode::Pubsub ? "it builds its own PUB lines" : "it sends no requests") + "): drop " +
                    flag);
    if (o.verify)
        return fail("--verify stamps its own sequence bytes into every request and checks the echo against its "
                    "pattern, so it cannot be combined with " + flag + ": drop one of them");
    if (o.payload_set) return fail(flag + " replaces --payload: drop --payload");
    if (o.size_set)
        return fail(flag + " sets the request size (" + (file ? "the file's size" : "the expanded template's length") +
                    "): drop --size");
    std::uint64_t max_len = 0;
    if (file) {
        FILE* f = std::fopen(o.payload_file.c_str(), "rb");
        if (!f) return fail("--payload-file: cannot read '" + o.payload_file + "'");
        o.payload_bytes.clear();
        unsigned char chunk[65536];
        std::size_t got = 0;
        while ((got = std::fread(chunk, 1, sizeof chunk, f)) > 0 && o.payload_bytes.size() <= (1u << 24))
            o.payload_bytes.insert(o.payload_bytes.end(), chunk, chunk + got);
        std::fclose(f);
        if (o.payload_bytes.empty()) return fail("--payload-file: '" + o.payload_file + "' is empty");
        if (o.payload_bytes.size() > (1u << 24))
            return fail("--payload-file: '" + o.payload_file + "' is larger than 16777216 bytes");
        max_len = o.payload_bytes.size();
        o.size_min = o.size_max = static_cast<std::uint32_t>(max_len);
    } else {
        max_len = o.tpl.max_length();
        // A fixed template is a fixed size; with placeholders each request has its own length.
        o.size_min = o.size_max = o.tpl.length(0, 0);
    }
    o.size_list.clear();
    const bool newline = file ? std::find(o.payload_bytes.begin(), o.payload_bytes.end(), '\n') != o.payload_bytes.end()
                              : o.tpl.contains('\n');
    if (o.framing == Framing::Line && newline)
        return fail(flag + " contains a '\\n', which --framing line takes as the end of a request: use --framing "
                           "echo or length-prefixed, or remove the line break");
    if (o.framing == Framing::LengthPrefixed && o.prefix_bytes < 4) {
        const std::uint64_t lim = o.prefix_bytes == 1 ? 255u : 65535u;
        if (max_len > lim)
            return fail(flag + " makes requests of up to " + std::to_string(max_len) + " bytes, which do not fit a " +
                        std::to_string(o.prefix_bytes) + "-byte length prefix (max " + std::to_string(lim) + ")");
    }
    done = true;
    return true;
}

}  // namespace flood

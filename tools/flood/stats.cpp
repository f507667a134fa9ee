#include "stats.hpp"

#include <algorithm>
#include <sstream>

namespace flood {

const char* err_name(int e) {
    static const char* names[kErrCount] = {"econnrefused", "connect_timeout", "eaddrnotavail", "emfile",
                                           "econnreset",   "etimedout", "enobufs", "epipe",           "unexpected_eof", "response_timeout",
                                           "verify_mismatch", "error_reply", "protocol_error", "other"};
    return e >= 0 && e < kErrCount ? names[e] : "?";
}

const char* phase_name(int p) {
    static const char* names[kPhaseCount] = {"ramp", "warmup", "steady", "drain"};
    return p >= 0 && p < kPhaseCount ? names[p] : "?";
}

void Result::merge(const Result& o) {
    for (auto& [k, v] : o.c) c[k] += v;
    for (auto& [k, v] : o.mx) {
        auto it = mx.find(k);
        if (it == mx.end()) mx[k] = v;
        else it->second = std::max(it->second, v);
    }
    for (auto& [k, v] : o.h) h[k].merge(v);
    for (int e = 0; e < kErrCount; ++e)
        if (o.first[e].set && (!first[e].set || o.first[e].t < first[e].t)) first[e] = o.first[e];
}

std::string Result::serialize() const {
    std::ostringstream os;
    os.precision(17);
    for (auto& [k, v] : c) os << "c " << k << ' ' << v << '\n';
    for (auto& [k, v] : mx) os << "x " << k << ' ' << v << '\n';
    for (auto& [k, v] : h) os << "h " << k << ' ' << v.serialize() << '\n';
    for (int e = 0; e < kErrCount; ++e) {
        if (!first[e].set) continue;
        std::string d = first[e].detail;
        std::replace(d.begin(), d.end(), '\n', ' ');
        os << "f " << e << ' ' << first[e].t << ' ' << first[e].conn << ' ' << d << '\n';
    }
    os << "end\n";
    return os.str();
}

bool Result::deserialize(const std::string& s) {
    std::istringstream is(s);
    std::string line;
    while (std::getline(is, line)) {
        if (line == "end") return true;
        std::istringstream ls(line);
        std::string kind, key;
        ls >> kind;
        if (kind == "c") {
            std::uint64_t v = 0;
            if (!(ls >> key >> v)) return false;
            c[key] += v;
        } else if (kind == "x") {
            double v = 0;
            if (!(ls >> key >> v)) return false;
            mx[key] = v;
        } else if (kind == "h") {
            if (!(ls >> key)) return false;
            std::string rest;
            std::getline(ls, rest);
            if (!h[key].deserialize(rest)) return false;
        } else if (kind == "f") {
            int e = 0;
            FirstError f;
            if (!(ls >> e >> f.t >> f.conn) || e < 0 || e >= kErrCount) return false;
            std::getline(ls, f.detail);
            if (!f.detail.empty() && f.detail[0] == ' ') f.detail.erase(0, 1);
            f.set = true;
            first[e] = f;
        } else {
            return false;
        }
    }
    return false;
}

}  // namespace flood

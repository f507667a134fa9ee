// esockets-flood: the target: IPv4, IPv6 (--host ::1, --host [::1]:PORT) or a unix socket
// (--host unix:/path, --unix PATH), resolved once into Options::target.
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/un.h>

#include <cstring>

#include "options.hpp"

namespace flood {

bool set_host_flag(const std::string& val, Options& o, std::string& err) {
    auto bad = [&](const std::string& what) {
        err = "invalid value '" + val + "' for --host: " + what;
        return false;
    };
    if (val.rfind("unix:", 0) == 0) {
        o.unix_path = val.substr(5);
        if (o.unix_path.empty()) return bad("expected unix:/path/to/socket");
        return true;
    }
    o.unix_path.clear();
    if (!val.empty() && val[0] == '[') {  // [v6] or [v6]:port
        const auto close = val.find(']');
        if (close == std::string::npos || close == 1) return bad("expected [IPv6] or [IPv6]:PORT, e.g. [::1]:7000");
        o.host = val.substr(1, close - 1);
        const std::string rest = val.substr(close + 1);
        if (rest.empty()) return true;
        char* end = nullptr;
        const unsigned long p = rest[0] == ':' && rest.size() > 1 ? std::strtoul(rest.c_str() + 1, &end, 10) : 0;
        if (rest[0] != ':' || rest.size() < 2 || !end || *end || p == 0 || p > 65535 || rest[1] < '0' || rest[1] > '9')
            return bad("expected [IPv6]:PORT with a port 1..65535, e.g. [::1]:7000");
        o.port = static_cast<std::uint16_t>(p);
        o.port_set = true;
        return true;
    }
    if (val.empty()) return bad("expected an address or name");
    o.host = val;
    return true;
}

std::string target_label(const Options& o) {
    if (o.target.ss_family == AF_UNIX) return "unix:" + o.unix_path;
    if (o.target.ss_family == AF_INET6) return "[" + o.host + "]:" + std::to_string(o.port);
    return o.host + ":" + std::to_string(o.port);
}

const char* target_family(const Options& o) {
    return o.target.ss_family == AF_UNIX ? "unix" : o.target.ss_family == AF_INET6 ? "ipv6" : "ipv4";
}

bool resolve_target(Options& o, std::string& err) {
    o.target = sockaddr_storage{};
    if (!o.unix_path.empty()) {
        sockaddr_un un{};
        if (o.unix_path.size() >= sizeof un.sun_path) {
            err = "unix socket path '" + o.unix_path + "' is longer than " + std::to_string(sizeof un.sun_path - 1) +
                  " bytes: use a shorter path";
            return false;
        }
        if (o.port_set) {
            err = "--port does not apply to a unix socket target (unix:" + o.unix_path + "): drop --port";
            return false;
        }
        if (o.sources || !o.source_ips.empty()) {
            err = "--sources / --source-ips do not apply to a unix socket target: drop them";
            return false;
        }
        if (o.mode == Mode::Reset) {
            err = "the reset mode aborts TCP connections with RST, which a unix socket does not have: use a TCP target";
            return false;
        }
        un.sun_family = AF_UNIX;
        std::memcpy(un.sun_path, o.unix_path.data(), o.unix_path.size());
        std::memcpy(&o.target, &un, sizeof un);
        o.target_len = static_cast<socklen_t>(sizeof un);
        return true;
    }
    if (!o.port_set) {
        err = "missing --port P (the target port), or give --host [IPv6]:PORT or --unix PATH";
        return false;
    }
    bool loopback = false;
    in_addr a4{};
    in6_addr a6{};
    if (inet_pton(AF_INET, o.host.c_str(), &a4) == 1) {
        sockaddr_in& s = *reinterpret_cast<sockaddr_in*>(&o.target);
        s.sin_family = AF_INET;
        s.sin_addr = a4;
    } else if (inet_pton(AF_INET6, o.host.c_str(), &a6) == 1) {
        sockaddr_in6& s = *reinterpret_cast<sockaddr_in6*>(&o.target);
        s.sin6_family = AF_INET6;
        s.sin6_addr = a6;
    } else {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        if (getaddrinfo(o.host.c_str(), nullptr, &hints, &res) != 0 || !res) {
            err = "cannot resolve --host '" + o.host + "' to an IPv4 or IPv6 address";
            return false;
        }
        const addrinfo* pick = res;  // IPv4 first (as before), else the first IPv6 address
        for (const addrinfo* p = res; p; p = p->ai_next)
            if (p->ai_family == AF_INET) {
                pick = p;
                break;
            }
        std::memcpy(&o.target, pick->ai_addr, pick->ai_addrlen);
        freeaddrinfo(res);
        char buf[INET6_ADDRSTRLEN];
        if (o.target.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&o.target)->sin_addr, buf, sizeof buf);
        else inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&o.target)->sin6_addr, buf, sizeof buf);
        o.host = buf;
    }
    if (o.target.ss_family == AF_INET) {
        sockaddr_in& s = *reinterpret_cast<sockaddr_in*>(&o.target);
        s.sin_port = htons(o.port);
        o.target_len = sizeof s;
        loopback = (ntohl(s.sin_addr.s_addr) >> 24) == 127;
    } else {
        sockaddr_in6& s = *reinterpret_cast<sockaddr_in6*>(&o.target);
        s.sin6_port = htons(o.port);
        o.target_len = sizeof s;
        const in6_addr& a = s.sin6_addr;
        loopback = IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
        if (o.sources || !o.source_ips.empty()) {
            err = "--sources / --source-ips are IPv4 source addresses and need an IPv4 target: drop them";
            return false;
        }
    }
    if (!loopback && !o.allow_remote) {
        err = "target " + o.host + " is not a loopback address (127.0.0.0/8 or ::1); pass --allow-remote to flood it";
        return false;
    }
    return true;
}

}  // namespace flood

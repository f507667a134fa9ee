// Segments a TCP socket has received (tcpi_segs_in). glibc's <netinet/tcp.h> tcp_info stops short of
// that field and cannot be included together with the kernel's <linux/tcp.h>, so this lives in its
// own translation unit.
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tcp_segments.hpp"

namespace floodtest {

long tcp_segments_in(int fd) {
    tcp_info ti{};
    socklen_t len = sizeof ti;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return -1;
    return static_cast<long>(ti.tcpi_segs_in);
}

}  // namespace floodtest

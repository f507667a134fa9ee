#pragma once

namespace floodtest {

// tcpi_segs_in of a connected TCP socket, -1 on error.
long tcp_segments_in(int fd);

}  // namespace floodtest

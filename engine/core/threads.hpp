// Naming and pinning the engine's threads.
// Thread: called by each engine thread on itself, first thing.
#pragma once

#include <pthread.h>
#include <sched.h>

#include <string>

namespace esockets::detail {

// Names the calling thread (at most 15 characters show in top/ps/perf) and pins it to `cpu`
// when cpu >= 0. Returns the CPU it is pinned to, or -1 (none asked, or the kernel refused).
inline int name_and_pin_thread(const std::string& name, int cpu) {
  (void)::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
  if (cpu < 0) return -1;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set) == 0 ? cpu : -1;
}

}  // namespace esockets::detail

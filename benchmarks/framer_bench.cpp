// Framer throughput (bytes/s, frames/s) for each framing kind over realistic read chunkings.
// Every case frames the same pre-built 4 MiB stream per iteration; the chunk boundaries are
// fixed (seeded) so runs are comparable.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "framing/framer.hpp"

namespace {

using esockets::Framing;
using esockets::detail::FeedStatus;
using esockets::detail::Framer;
using esockets::detail::FramerConfig;
using esockets::detail::FrameState;

constexpr std::size_t kStreamBytes = 4 << 20;

struct Workload {
  FramerConfig cfg;
  std::string stream;
  std::vector<std::size_t> reads;  // sizes of the successive read() results
};

std::string payload(std::size_t n, std::mt19937& rng) {
  std::string p(n, 'a');
  for (char& c : p) c = static_cast<char>('a' + rng() % 26);
  return p;
}

std::string encode(const FramerConfig& cfg, const std::string& p) {
  if (cfg.kind == Framing::line) return p + cfg.delimiter;
  std::string out;
  for (unsigned i = cfg.prefix_bytes; i-- > 0;) out.push_back(static_cast<char>((p.size() >> (8 * i)) & 0xff));
  return out + p;
}

// frame_payload: payload bytes per frame; read_min..read_max: uniform read sizes.
Workload make(Framing kind, std::size_t frame_payload, std::size_t read_min, std::size_t read_max) {
  Workload w;
  w.cfg.kind = kind;
  w.cfg.max_frame = 1 << 20;
  std::mt19937 rng(42);
  if (kind == Framing::raw) {
    w.stream = payload(kStreamBytes, rng);
  } else {
    while (w.stream.size() < kStreamBytes) w.stream += encode(w.cfg, payload(frame_payload, rng));
  }
  std::uniform_int_distribution<std::size_t> size(read_min, read_max);
  for (std::size_t left = w.stream.size(); left != 0;) {
    const std::size_t n = std::min(left, size(rng));
    w.reads.push_back(n);
    left -= n;
  }
  return w;
}

void run(benchmark::State& state, const Workload& w) {
  Framer framer(w.cfg);
  std::uint64_t frames = 0, bytes = 0;
  for (auto _ : state) {
    FrameState st;
    const char* p = w.stream.data();
    for (std::size_t n : w.reads) {
      const FeedStatus s = framer.feed(st, p, n, [&](std::string_view f) {
        ++frames;
        bytes += f.size();
        return true;
      });
      if (s != FeedStatus::ok) state.SkipWithError("framing failed");
      p += n;
    }
    benchmark::DoNotOptimize(bytes);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * w.stream.size()));
  state.counters["frames/s"] = benchmark::Counter(static_cast<double>(frames), benchmark::Counter::kIsRate);
}

void BM_Raw_16KiBReads(benchmark::State& state) {
  static const Workload w = make(Framing::raw, 0, 16 << 10, 16 << 10);
  run(state, w);
}

void BM_Line_64B_16KiBReads(benchmark::State& state) {
  static const Workload w = make(Framing::line, 63, 16 << 10, 16 << 10);
  run(state, w);
}

void BM_Line_1KiB_RandomReads(benchmark::State& state) {  // most lines straddle two reads
  static const Workload w = make(Framing::line, 1023, 1, 2048);
  run(state, w);
}

void BM_Line_64KiB_1500BReads(benchmark::State& state) {  // long lines trickling in: buffered path
  static const Workload w = make(Framing::line, (64 << 10) - 1, 1500, 1500);
  run(state, w);
}

void BM_Prefixed_64B_16KiBReads(benchmark::State& state) {
  static const Workload w = make(Framing::length_prefixed, 60, 16 << 10, 16 << 10);
  run(state, w);
}

void BM_Prefixed_1KiB_RandomReads(benchmark::State& state) {
  static const Workload w = make(Framing::length_prefixed, 1020, 1, 2048);
  run(state, w);
}

void BM_Prefixed_16KiB_AcrossReads(benchmark::State& state) {  // every frame spans 2-4 reads
  static const Workload w = make(Framing::length_prefixed, 16 << 10, 4 << 10, 12 << 10);
  run(state, w);
}

BENCHMARK(BM_Raw_16KiBReads);
BENCHMARK(BM_Line_64B_16KiBReads);
BENCHMARK(BM_Line_1KiB_RandomReads);
BENCHMARK(BM_Line_64KiB_1500BReads);
BENCHMARK(BM_Prefixed_64B_16KiBReads);
BENCHMARK(BM_Prefixed_1KiB_RandomReads);
BENCHMARK(BM_Prefixed_16KiB_AcrossReads);

}  // namespace

BENCHMARK_MAIN();

#include "run.hpp"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <new>
#include <sstream>
#include <thread>
#include <vector>

#include "worker.hpp"

namespace flood {

std::string Snapshot::serialize() const {
    std::ostringstream os;
    os.precision(9);
    os << "S " << t << ' ' << msgs << ' ' << sent << ' ' << errs << ' ' << bytes_in << ' ' << bytes_out << ' ' << open
       << ' ' << requested << ' ' << p50 << ' ' << p99 << ' ' << waiting << '\n';
    return os.str();
}

bool Snapshot::deserialize(const std::string& s) {
    std::istringstream is(s);
    std::string tag;
    return static_cast<bool>(is >> tag >> t >> msgs >> sent >> errs >> bytes_in >> bytes_out >> open >> requested >>
                             p50 >> p99 >> waiting) &&
           tag == "S";
}

namespace {

std::uint64_t share(std::uint64_t total, std::uint64_t parts, std::uint64_t idx) {
    return total / parts + (idx < total % parts ? 1 : 0);
}

std::uint64_t share_base(std::uint64_t total, std::uint64_t parts, std::uint64_t idx) {
    std::uint64_t b = 0;
    for (std::uint64_t k = 0; k < idx; ++k) b += share(total, parts, k);
    return b;
}

std::uint64_t tv_us(const timeval& tv) {
    return static_cast<std::uint64_t>(tv.tv_sec) * 1'000'000ull + static_cast<std::uint64_t>(tv.tv_usec);
}

// --procs: open connections and their peak over all processes, in memory shared by the fork.
std::atomic<std::uint64_t>* g_all = nullptr;  // [0] open, [1] peak

// Runs this process's share in o.threads threads. t0: common start (CLOCK_MONOTONIC ns).
void run_process(const Options& o, std::uint64_t t0, std::uint64_t conns, std::uint64_t conn_base,
                 std::uint64_t requests, Result& r, const SnapshotSink& sink) {
    Shared sh(o);
    if (g_all) {
        sh.all_open = &g_all[0];
        sh.all_peak = &g_all[1];
    }
    sh.target = o.target;
    sh.target_len = o.target_len;
    // Source addresses: explicit, --sources N, or automatic (one per 10000 loopback connections).
    std::vector<std::string> ips = o.source_ips;
    const bool loopback = o.target.ss_family == AF_INET &&
                          (ntohl(reinterpret_cast<const sockaddr_in*>(&o.target)->sin_addr.s_addr) >> 24) == 127;
    int nsrc = o.sources;
    if (ips.empty() && nsrc == 0 && loopback && o.total_conns > 10000)
        nsrc = static_cast<int>((o.total_conns + 9999) / 10000);
    if (ips.empty() && nsrc > 1)
        for (int k = 0; k < nsrc; ++k) ips.push_back("127.0.0." + std::to_string(1 + k));
    for (auto& ip : ips) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
        sh.sources.push_back(a);
    }
    sh.t0 = t0;
    sh.proc_conns = conns;
    sh.t_ramp_end = t0 + static_cast<std::uint64_t>(o.ramp * 1e9);
    sh.t_warm_end = sh.t_ramp_end + static_cast<std::uint64_t>(o.warmup * 1e9);
    sh.t_end = t0 + static_cast<std::uint64_t>(o.duration * 1e9);
    if (o.mode == Mode::Pubsub) {  // one process (finalize_options): this process has every role
        PubsubShared& g = sh.ps;
        g.subscribers = o.conns;
        g.publishers = o.publishers;
        g.rooms = o.rooms;
        g.per_sub = o.subscriptions;
        g.per_room = (o.publishers + o.rooms - 1) / o.rooms;
        std::vector<std::uint32_t> subs_in_room(o.rooms, 0);
        for (std::uint64_t s = 0; s < g.subscribers; ++s)
            for (std::uint64_t j = 0; j < g.per_sub; ++j) ++subs_in_room[(s * g.per_sub + j) % g.rooms];
        g.fanout.resize(g.publishers);
        for (std::uint64_t k = 0; k < g.publishers; ++k) g.fanout[k] = subs_in_room[k % g.rooms];
        g.pub = std::make_unique<PubCounters[]>(g.publishers);
        g.subs_pending.store(static_cast<std::int64_t>(g.subscribers * g.per_sub));
        g.pubs_active.store(g.publishers);
    }

    const std::uint64_t nthreads = std::max<std::uint64_t>(1, std::min<std::uint64_t>(static_cast<std::uint64_t>(o.threads), conns));
    double connect_rate = o.connect_rate;
    if (o.ramp > 0 && o.total_conns) {
        const double ramp_rate = static_cast<double>(o.total_conns) / o.ramp;
        connect_rate = connect_rate > 0 ? std::min(connect_rate, ramp_rate) : ramp_rate;
    }
    std::vector<std::unique_ptr<Worker>> workers;
    for (std::uint64_t k = 0; k < nthreads; ++k) {
        const std::uint64_t n = share(conns, nthreads, k);
        const double frac = o.total_conns ? static_cast<double>(n) / static_cast<double>(o.total_conns) : 0.0;
        workers.push_back(std::make_unique<Worker>(sh, static_cast<int>(k), conn_base + share_base(conns, nthreads, k), n,
                                                   share(requests, nthreads, k), o.rate * frac, connect_rate * frac,
                                                   0x9e3779b97f4a7c15ull * (conn_base + k + 1)));
        if (o.mode == Mode::Rate && !o.stages.empty())
            workers.back()->set_schedule(RateSchedule(o.rate, o.stages, frac), o.stages.size());
    }
    rusage ru0{};
    getrusage(RUSAGE_SELF, &ru0);
    while (now_ns() < t0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    std::vector<std::thread> th;
    for (auto& w : workers) th.emplace_back([&w] { w->run(); });

    Histogram ivl;
    std::uint64_t next = t0 + 1'000'000'000ull;
    std::uint64_t last_emit = t0;
    auto emit = [&](std::uint64_t now) {
        Snapshot s;
        s.t = static_cast<double>(now - t0) / 1e9;
        ivl.reset();
        for (auto& w : workers) {
            s.msgs += w->live.msgs.load(std::memory_order_relaxed);
            s.sent += w->live.sent.load(std::memory_order_relaxed);
            s.errs += w->live.errs.load(std::memory_order_relaxed);
            s.bytes_in += w->live.bytes_in.load(std::memory_order_relaxed);
            s.bytes_out += w->live.bytes_out.load(std::memory_order_relaxed);
            s.waiting += w->live.waiting.load(std::memory_order_relaxed);
            std::lock_guard<std::mutex> lk(w->live.mu);
            ivl.merge(w->live.interval);
            w->live.interval.reset();
        }
        s.open = sh.open.load(std::memory_order_relaxed);
        s.requested = conns;
        s.p50 = ivl.percentile(50);
        s.p99 = ivl.percentile(99);
        if (!o.hdr_log_path.empty()) s.hist = std::make_shared<const Histogram>(ivl);
        last_emit = now;
        if (sink) sink(s);
    };
    for (;;) {
        bool all_done = true;
        for (auto& w : workers) all_done = all_done && w->live.done.load();
        if (all_done) break;
        const std::uint64_t now = now_ns();
        if (now < next) {
            // 10 ms: the end of the run (wall_s, which a stall "until the end" is compared with) is noticed
            // within 10 ms of the last worker finishing, not up to 50 ms later.
            std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<std::uint64_t>(next - now, 10'000'000)));
            continue;
        }
        next += 1'000'000'000ull;
        emit(now);
    }
    // The last, partial second is reported too (a run shorter than a second gets one line).
    if (const std::uint64_t now = now_ns(); now - last_emit > 50'000'000ull) emit(now);
    for (auto& t : th) t.join();
    const std::uint64_t t_fin = now_ns();
    rusage ru1{};
    getrusage(RUSAGE_SELF, &ru1);
    for (auto& w : workers) w->collect(r);
    r.c["conn.requested"] = conns;  // also set for 0-connection processes
    r.c["conn.established"] = sh.peak.load();
    r.c["threads"] = nthreads;
    r.c["procs"] = 1;
    r.c["cpu.user_us"] = tv_us(ru1.ru_utime) - tv_us(ru0.ru_utime);
    r.c["cpu.sys_us"] = tv_us(ru1.ru_stime) - tv_us(ru0.ru_stime);
    r.c["sources"] = sh.sources.empty() ? 1 : sh.sources.size();
    auto secs = [](std::uint64_t a, std::uint64_t b) { return b > a ? static_cast<double>(b - a) / 1e9 : 0.0; };
    r.mx["wall_s"] = secs(t0, t_fin);
    r.mx["phase.ramp.secs"] = secs(t0, std::min(t_fin, sh.t_ramp_end));
    r.mx["phase.warmup.secs"] = secs(sh.t_ramp_end, std::min(t_fin, sh.t_warm_end));
    r.mx["phase.steady.secs"] = secs(sh.t_warm_end, std::min(t_fin, sh.t_end));
    r.mx["phase.drain.secs"] = secs(sh.t_end, t_fin);
}

bool write_all(int fd, const std::string& s) {
    std::size_t off = 0;
    while (off < s.size()) {
        ssize_t w = ::write(fd, s.data() + off, s.size() - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        off += static_cast<std::size_t>(w);
    }
    return true;
}

}  // namespace

bool run_flood(const Options& o, Result& out, const SnapshotSink& sink, std::string& err) {
    const std::uint64_t P = static_cast<std::uint64_t>(o.procs);
    const std::uint64_t t0 = now_ns() + 20'000'000ull * P;
    if (P == 1) {
        run_process(o, t0, o.total_conns, 0, o.requests, out, sink);
        return true;
    }
    void* shm = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) {
        err = std::string("mmap: ") + std::strerror(errno);
        return false;
    }
    static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared counters need lock-free atomics");
    g_all = new (shm) std::atomic<std::uint64_t>[2]{};
    struct Child {
        pid_t pid;
        int fd;
        std::string buf;
        Snapshot last;
        bool eof = false;
    };
    std::vector<Child> kids;
    for (std::uint64_t p = 0; p < P; ++p) {
        int pfd[2];
        if (pipe(pfd) != 0) {
            err = std::string("pipe: ") + std::strerror(errno);
            return false;
        }
        std::fflush(nullptr);
        pid_t pid = fork();
        if (pid < 0) {
            err = std::string("fork: ") + std::strerror(errno);
            return false;
        }
        if (pid == 0) {
            ::close(pfd[0]);
            for (auto& k : kids) ::close(k.fd);
            signal(SIGPIPE, SIG_IGN);
            Options co = o;
            co.proc_index = static_cast<int>(p);
            Result r;
            const int wfd = pfd[1];
            run_process(co, t0, share(o.total_conns, P, p), share_base(o.total_conns, P, p), share(o.requests, P, p), r,
                        [wfd](const Snapshot& s) { write_all(wfd, s.serialize()); });
            const bool ok = write_all(wfd, "R\n" + r.serialize());
            ::close(wfd);
            _exit(ok ? 0 : 1);
        }
        ::close(pfd[1]);
        kids.push_back({pid, pfd[0], {}, {}, false});
    }
    // Parent: forward merged per-second snapshots, collect the results.
    std::uint64_t last_emit_sec = 0;
    std::size_t live_kids = kids.size();
    while (live_kids > 0) {
        std::vector<pollfd> pf;
        for (auto& k : kids)
            if (!k.eof) pf.push_back({k.fd, POLLIN, 0});
        int n = poll(pf.data(), pf.size(), 1000);
        if (n < 0 && errno != EINTR) break;
        for (auto& k : kids) {
            if (k.eof) continue;
            bool readable = false;
            for (auto& q : pf)
                if (q.fd == k.fd && q.revents) readable = true;
            if (!readable) continue;
            char b[65536];
            ssize_t r = ::read(k.fd, b, sizeof b);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                k.eof = true;
                --live_kids;
                continue;
            }
            k.buf.append(b, static_cast<std::size_t>(r));
            // Consume complete snapshot lines until the result marker.
            std::size_t pos = 0;
            while (true) {
                if (k.buf.compare(pos, 2, "R\n") == 0) break;
                auto nl = k.buf.find('\n', pos);
                if (nl == std::string::npos) break;
                Snapshot s;
                if (s.deserialize(k.buf.substr(pos, nl - pos))) k.last = s;
                pos = nl + 1;
            }
            k.buf.erase(0, pos);
        }
        // Emit a merged line once every running child has reported the second.
        std::uint64_t sec = UINT64_MAX;
        Snapshot m;
        bool any = false;
        for (auto& k : kids) {
            if (!k.eof) sec = std::min<std::uint64_t>(sec, static_cast<std::uint64_t>(k.last.t + 0.5));
            if (k.last.t <= 0) continue;
            any = true;
            m.t = std::max(m.t, k.last.t);
            m.msgs += k.last.msgs;
            m.sent += k.last.sent;
            m.errs += k.last.errs;
            m.bytes_in += k.last.bytes_in;
            m.bytes_out += k.last.bytes_out;
            m.open += k.last.open;
            m.p50 = std::max(m.p50, k.last.p50);
            m.p99 = std::max(m.p99, k.last.p99);
            m.waiting += k.last.waiting;
        }
        m.requested = o.total_conns;
        if (any && sec != UINT64_MAX && sec > last_emit_sec && sink) {
            last_emit_sec = sec;
            sink(m);
        }
    }
    bool ok = true;
    for (auto& k : kids) {
        ::close(k.fd);
        int st = 0;
        waitpid(k.pid, &st, 0);
        Result r;
        if (k.buf.compare(0, 2, "R\n") != 0 || !r.deserialize(k.buf.substr(2))) {
            err = "a child process (pid " + std::to_string(k.pid) + ") did not deliver its result";
            ok = false;
            continue;
        }
        out.merge(r);
    }
    out.c["conn.established"] = g_all[1].load();  // simultaneous peak over all processes
    munmap(shm, 4096);
    g_all = nullptr;
    return ok;
}

}  // namespace flood

/*
 * bench_global.c - global limiters (scope = global, daemon/global.c): what a lease from Redis
 * costs a client's try, next to a local limiter and to Redis GCRA per decision, and how shares
 * follow demand across three hosts (global_shift.c).
 *
 *   bench_global [--quick] [--daemon PATH] [--out DIR [--prefix NAME]] [--rounds N]
 *                [--tries N] [--phase S] [--callgrind]
 *
 * Part 1, the hot path: one throttled with a real redis-server, its leases renewing every 50 ms,
 * limiters api (global) and local with the same numbers; this process times thr_limiter_try on
 * one key admitted (rate 10^9/s, burst 10^6) and one key denied (1/s, burst 1), in interleaved
 * rounds (which of global and local goes first alternates), and reports the median ns per try
 * and global/local. A global limiter's buckets are ordinary GCRA records at a share of the rate:
 * the try is the same CAS, so the ratio should be 1 within noise.
 * Part 2: the same process deciding by Redis GCRA per call (bench_scale's redis-tcp backend:
 * EVALSHA of the usual GCRA script over loopback TCP, its own redis-server): ns per decision.
 * Part 3 (global_shift.c): three hosts, demand moving between them; convergence, overshoot
 * against the bound of daemon/global.c, a plot.
 * --callgrind: instructions per try of part 1's four loops (valgrind, a fixed loop each).
 *
 * Benchmarks report and never assert. Every process started here (redis-server, throttled, the
 * clients) dies with this one (PR_SET_PDEATHSIG) and is stopped on every exit path, SIGINT
 * included; arenas are removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "backend.h"
#include "global_bench.h"
#include "redis_run.h"
#include "sysinfo.h"
#include "throttle/throttle.h"

volatile sig_atomic_t gb_stop;
static FILE *txt; /* --out: the tables */

pid_t tfork(void)
{
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid == 0 && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent))
                _exit(99);
        return pid;
}

void gb_out(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        if (txt) {
                va_start(ap, fmt);
                vfprintf(txt, fmt, ap);
                va_end(ap);
        }
        fflush(stdout);
}

double gb_now(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void on_signal(int sig)
{
        (void)sig;
        gb_stop = 1;
}

/* ---------------------------------------------------------------- a host: one throttled */

static void log_tail(const struct gb_host *h)
{
        char buf[2048];
        FILE *f = fopen(h->log, "re");
        if (!f)
                return;
        fseek(f, 0, SEEK_END);
        long end = ftell(f);
        fseek(f, end > (long)sizeof(buf) - 1 ? end - (long)sizeof(buf) + 1 : 0, SEEK_SET);
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = 0;
        fclose(f);
        fprintf(stderr, "throttled %s, its log's end:\n%s\n", h->name, buf);
}

static int write_conf(const struct gb_host *h, int idx, int port, const char *limiters)
{
        FILE *f = fopen(h->conf, "we");
        if (!f)
                return -errno;
        fprintf(f,
                "[arena]\nname = %s\nhugepages = off\nmode = 0600\n\n[daemon]\nmetrics =\n\n"
                "[global]\nredis = 127.0.0.1:%d\nhost_id = host-%d\nprefix = gb%d\n"
                "interval = 50ms\nlease_ttl = 500ms\n\n%s",
                h->name, port, idx, (int)getpid(), limiters);
        return fclose(f) == 0 ? 0 : -errno;
}

/* Whether H's "api" holds a lease, in the arena file as it is now (re-mapped every time: the
 * daemon may have replaced the file since the last look). */
static bool leased(struct gb_host *h)
{
        char err[256];
        shm_arena_detach(&h->map);
        memset(&h->map, 0, sizeof(h->map));
        if (access(h->arena, F_OK) != 0 ||
            shm_arena_attach(h->arena, false, &h->map, err, sizeof(err)) < 0) {
                memset(&h->map, 0, sizeof(h->map));
                return false;
        }
        const struct thr_dir_entry *e = gb_entry(h, "api");
        return e && (atomic_load(&e->global_state) & 0xff) == THR_GLOBAL_LEASED;
}

int gb_host_start(struct gb_host *h, const struct gb_opts *o, int idx, int redis_port,
                  const char *limiters)
{
        memset(h, 0, sizeof(*h));
        snprintf(h->name, sizeof(h->name), "bench_global_%d_%d", (int)getpid(), idx);
        snprintf(h->arena, sizeof(h->arena), "/dev/shm/throttle.%s", h->name);
        snprintf(h->dir, sizeof(h->dir), "/tmp/bench-global-XXXXXX");
        if (!mkdtemp(h->dir))
                return -errno;
        snprintf(h->conf, sizeof(h->conf), "%s/throttled.conf", h->dir);
        snprintf(h->log, sizeof(h->log), "%s/throttled.log", h->dir);
        int rc = write_conf(h, idx, redis_port, limiters);
        if (rc < 0)
                return rc;
        h->pid = tfork();
        if (h->pid < 0)
                return h->pid = 0, -errno;
        if (h->pid == 0) {
                int fd = open(h->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                }
                execl(o->daemon, "throttled", "-c", h->conf, (char *)NULL);
                _exit(127);
        }
        for (double end = gb_now() + 15; gb_now() < end && !gb_stop; usleep(20000)) {
                if (waitpid(h->pid, NULL, WNOHANG) == h->pid) {
                        h->pid = 0;
                        log_tail(h);
                        return -ECHILD;
                }
                if (leased(h))
                        return 0;
        }
        log_tail(h);
        return gb_stop ? -EINTR : -ETIMEDOUT;
}

void gb_host_stop(struct gb_host *h)
{
        if (h->pid > 0) {
                kill(h->pid, SIGTERM);
                bool gone = false;
                for (int ms = 0; ms < 5000 && !gone; ms += 10) {
                        gone = waitpid(h->pid, NULL, WNOHANG) == h->pid;
                        if (!gone)
                                usleep(10000);
                }
                if (!gone) { /* never signal a pid once reaped */
                        kill(h->pid, SIGKILL);
                        waitpid(h->pid, NULL, 0);
                }
                h->pid = 0;
        }
        shm_arena_detach(&h->map);
        memset(&h->map, 0, sizeof(h->map));
        if (h->name[0])
                unlink(h->arena);
        if (h->dir[0]) {
                unlink(h->conf);
                unlink(h->log);
                rmdir(h->dir);
        }
        h->name[0] = h->dir[0] = 0;
}

const struct thr_dir_entry *gb_entry(const struct gb_host *h, const char *name)
{
        if (!h->map.base)
                return NULL;
        int idx = shm_dir_find_state(&h->map, name, THR_DIR_LIVE);
        if (idx < 0)
                return NULL;
        return (const struct thr_dir_entry *)shm_at(h->map.base, shm_hdr(&h->map)->dir_off) + idx;
}

/* ---------------------------------------------------------------- part 1: the hot path */

enum { C_GHOT, C_LHOT, C_GDENY, C_LDENY, NCASES };
static const char *const case_lim[NCASES] = {"api", "local", "api_deny", "local_deny"};
static const char *const case_key[NCASES] = {"hot", "hot", "deny", "deny"};

#define HOT_LIMITERS                                                                               \
        "[api]\nrate = 1000000000/s\nburst = 1000000\nscope = global\nexpected_hosts = 3\n\n"      \
        "[local]\nrate = 1000000000/s\nburst = 1000000\n\n"                                        \
        "[api_deny]\nrate = 1/s\nburst = 1\nscope = global\nexpected_hosts = 3\n\n"                \
        "[local_deny]\nrate = 1/s\nburst = 1\n"

#define MAX_ROUNDS 64

struct hot {
        double ns[NCASES][MAX_ROUNDS]; /* ns per try, per round */
        double admitted[NCASES];       /* fraction admitted, all rounds */
        double ir[NCASES];             /* --callgrind: instructions per try, or -1 */
};

/* The timed loop (callgrind collects exactly this function). */
__attribute__((noinline)) static uint64_t cg_loop(thr_limiter *l, const char *key, uint64_t n)
{
        struct thr_result r;
        uint64_t yes = 0;
        size_t len = strlen(key);
        for (uint64_t i = 0; i < n; i++)
                yes += thr_limiter_try(l, key, len, 1, &r) == 1; /* 1 admitted, 0 denied */
        return yes;
}

static double time_case(thr_limiter *l, int c, uint64_t n, uint64_t *yes)
{
        double t0 = gb_now();
        *yes += cg_loop(l, case_key[c], n);
        return (gb_now() - t0) * 1e9 / (double)n;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static double median(const double *v, int n, double *lo, double *hi)
{
        double s[MAX_ROUNDS];
        memcpy(s, v, (size_t)n * sizeof(double));
        qsort(s, (size_t)n, sizeof(double), cmp_double);
        *lo = s[0];
        *hi = s[n - 1];
        return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Wait (up to 5 s) until both global limiters of H run at the whole share (one host alone). */
static void wait_whole(const struct gb_host *h)
{
        for (double end = gb_now() + 5; gb_now() < end && !gb_stop; usleep(20000)) {
                const struct thr_dir_entry *a = gb_entry(h, "api"), *d = gb_entry(h, "api_deny");
                if (a && d && atomic_load(&a->global_share) == 1000000 &&
                    atomic_load(&d->global_share) == 1000000)
                        return;
        }
}

static int hot_measure(const struct gb_opts *o, const struct gb_host *h, struct hot *res)
{
        thr_arena *a = NULL;
        thr_limiter *l[NCASES] = {0};
        int rc = thr_arena_open(h->name, 0, &a);
        for (int c = 0; c < NCASES && rc == 0; c++)
                rc = thr_limiter_open(a, case_lim[c], &l[c]);
        if (rc < 0) {
                fprintf(stderr, "bench_global: arena %s: %s\n", h->name, thr_strerror(rc));
                goto out;
        }
        uint64_t yes[NCASES] = {0}, warm = 0;
        for (int c = 0; c < NCASES; c++)
                time_case(l[c], c, o->tries / 10 + 1, &warm); /* keys inserted, caches warm */
        for (int r = 0; r < o->rounds && !gb_stop; r++)
                for (int pair = 0; pair < 2; pair++) {
                        int g = pair ? C_GDENY : C_GHOT, first = r % 2 ? g + 1 : g;
                        int second = first == g ? g + 1 : g;
                        res->ns[first][r] = time_case(l[first], first, o->tries, &yes[first]);
                        res->ns[second][r] = time_case(l[second], second, o->tries, &yes[second]);
                }
        for (int c = 0; c < NCASES; c++)
                res->admitted[c] = (double)yes[c] / (double)(o->tries * (uint64_t)o->rounds);
out:
        for (int c = 0; c < NCASES; c++)
                thr_limiter_close(l[c]);
        thr_arena_close(a);
        return rc;
}

/* ---------------------------------------------------------------- --callgrind */

/* Inside valgrind: "ARENA,CASE,N": open, one try outside the loop, then the loop. */
static int cg_child(const char *run)
{
        char arena[128];
        int c = -1;
        unsigned long long n = 0;
        if (sscanf(run, "%127[^,],%d,%llu", arena, &c, &n) != 3 || c < 0 || c >= NCASES)
                return 2;
        thr_arena *a = NULL;
        thr_limiter *l = NULL;
        if (thr_arena_open(arena, 0, &a) < 0 || thr_limiter_open(a, case_lim[c], &l) < 0)
                return 1;
        uint64_t yes = 0;
        cg_loop(l, case_key[c], 1);
        yes = cg_loop(l, case_key[c], n);
        printf("admitted %" PRIu64 " of %llu\n", yes, n);
        thr_limiter_close(l);
        thr_arena_close(a);
        return 0;
}

static double cg_one(const struct gb_host *h, int c, uint64_t n)
{
        char outf[128], cmd[1024], line[512];
        double ir = -1;
        snprintf(outf, sizeof(outf), "/tmp/bench_global.cg.%ld", (long)getpid());
        snprintf(cmd, sizeof(cmd),
                 "valgrind --tool=callgrind --toggle-collect=cg_loop --callgrind-out-file=%s "
                 "/proc/%ld/exe --cg-run %s,%d,%" PRIu64 " >/dev/null 2>&1",
                 outf, (long)getpid(), h->name, c, n);
        FILE *f = system(cmd) == 0 ? fopen(outf, "r") : NULL;
        while (f && fgets(line, sizeof(line), f))
                if (!strncmp(line, "summary:", 8) || !strncmp(line, "totals:", 7))
                        ir = strtod(strchr(line, ':') + 1, NULL);
        if (f)
                fclose(f);
        unlink(outf);
        return ir < 0 ? -1 : ir / (double)(n + 1);
}

/* ---------------------------------------------------------------- part 2: Redis GCRA */

struct rgcra {
        double ns[2][MAX_ROUNDS]; /* [0] admitted key, [1] denied key */
        double admitted[2];
        char note[256];
        bool ran;
};

static int redis_measure(const struct gb_opts *o, struct rgcra *res)
{
        for (int k = 0; k < 2 && !gb_stop; k++) {
                struct bench_cfg cfg = {.keys = 1,
                                        .rate_n = k ? 1 : 1000000000,
                                        .period_ns = 1000000000,
                                        .burst = k ? 1 : 1000000,
                                        .procs = 1,
                                        .backing = "auto"};
                void *st = bench_redis_tcp.setup(&cfg);
                if (!st) {
                        snprintf(res->note, sizeof(res->note), "%s", cfg.err);
                        return -ENOENT;
                }
                if (bench_redis_tcp.describe)
                        bench_redis_tcp.describe(st, res->note, sizeof(res->note));
                void *hd = bench_redis_tcp.attach(st);
                uint64_t yes = 0;
                for (uint64_t i = 0; hd && i < o->redis_tries / 10 + 1; i++)
                        bench_redis_tcp.try_key(hd, 0, "key:0", 5, 1);
                for (int r = 0; hd && r < o->rounds && !gb_stop; r++) {
                        double t0 = gb_now();
                        for (uint64_t i = 0; i < o->redis_tries; i++)
                                yes += bench_redis_tcp.try_key(hd, 0, "key:0", 5, 1) == 1;
                        res->ns[k][r] = (gb_now() - t0) * 1e9 / (double)o->redis_tries;
                }
                res->admitted[k] = (double)yes / (double)(o->redis_tries * (uint64_t)o->rounds);
                if (hd)
                        bench_redis_tcp.detach(hd);
                bench_redis_tcp.teardown(st);
                if (!hd)
                        return -ECONNREFUSED;
        }
        res->ran = true;
        return 0;
}

/* ---------------------------------------------------------------- the report of parts 1 and 2 */

static void row(const char *what, const double *ns, int n, double admitted, double ir)
{
        double lo, hi, med = median(ns, n, &lo, &hi);
        gb_out("%-34s %9.1f %9.1f %9.1f %12.2f %9.1f%%", what, med, lo, hi, 1e3 / med,
               100 * admitted);
        if (ir >= 0)
                gb_out(" %9.1f", ir);
        gb_out("\n");
}

static void ratio_row(const char *what, const double *g, const double *l, int n)
{
        double glo, llo, lo, hi, mg = median(g, n, &glo, &hi), ml = median(l, n, &llo, &hi);
        double r[MAX_ROUNDS] = {0};
        for (int i = 0; i < n; i++)
                r[i] = g[i] / l[i];
        double rm = median(r, n, &lo, &hi);
        gb_out("%-34s %9.3f   (of the minima %.3f; per round: median %.3f, min %.3f, max %.3f)\n",
               what, mg / ml, glo / llo, rm, lo, hi);
}

static void report_hot(const struct gb_opts *o, const struct hot *h, const struct rgcra *rg,
                       const char *lease)
{
        gb_out("\n## Part 1 and 2: ns per decision, one process (%d interleaved rounds; part 1 "
               "%" PRIu64 " tries per case and round, global and local alternating first)\n",
               o->rounds, o->tries);
        gb_out("lease of api at the end of part 1: %s\n\n", lease);
        gb_out("%-34s %9s %9s %9s %12s %10s%s\n", "decision", "median ns", "min", "max",
               "Mdecisions/s", "admitted", o->callgrind ? "  Ir/try" : "");
        static const char *const what[NCASES] = {
            "try, key admitted, global (api)", "try, key admitted, local",
            "try, key denied, global", "try, key denied, local"};
        for (int c = 0; c < NCASES; c++)
                row(what[c], h->ns[c], o->rounds, h->admitted[c], o->callgrind ? h->ir[c] : -1);
        gb_out("ratio global/local: of the medians (target <= 1.10), of the minima (the least "
               "disturbed rounds)\n");
        ratio_row("ratio global/local, admitted", h->ns[C_GHOT], h->ns[C_LHOT], o->rounds);
        ratio_row("ratio global/local, denied", h->ns[C_GDENY], h->ns[C_LDENY], o->rounds);
        if (o->callgrind)
                gb_out("Ir/try: instructions per try, valgrind --tool=callgrind "
                       "--toggle-collect=cg_loop,\n200000 tries after a first one; under "
                       "valgrind clock_gettime is a real syscall, its kernel side not counted\n");
        if (!rg->ran) {
                gb_out("Redis GCRA per call: not run (%s)\n", rg->note);
                return;
        }
        row("Redis GCRA EVALSHA, key admitted", rg->ns[0], o->rounds, rg->admitted[0], -1);
        row("Redis GCRA EVALSHA, key denied", rg->ns[1], o->rounds, rg->admitted[1], -1);
        double lo, hi;
        gb_out("Redis GCRA / global try, admitted: %.0fx (%" PRIu64 " decisions per round; %s)\n",
               median(rg->ns[0], o->rounds, &lo, &hi) / median(h->ns[C_GHOT], o->rounds, &lo, &hi),
               o->redis_tries, rg->note);
}

/* ---------------------------------------------------------------- options, main */

static void usage(FILE *f)
{
        fprintf(f, "usage: bench_global [--quick] [--daemon PATH] [--out DIR [--prefix NAME]]\n"
                   "                    [--rounds N] [--tries N] [--phase S] [--callgrind]\n"
                   "  --daemon: throttled (default ../daemon/throttled next to this program)\n"
                   "  --out: write NAME.txt (the tables), NAME.dat (part 3's samples), NAME.gp\n"
                   "         and NAME.png (its plot) into DIR; NAME defaults to bench_global\n");
}

static int parse(int argc, char **argv, struct gb_opts *o)
{
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        self[n > 0 ? n : 0] = 0;
        *o = (struct gb_opts){.rounds = 7, .tries = 2000000, .redis_tries = 20000, .phase_s = 3};
        snprintf(o->daemon, sizeof(o->daemon), "%s/../daemon/throttled", dirname(self));
        snprintf(o->prefix, sizeof(o->prefix), "bench_global");
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!strcmp(a, "--quick")) {
                        o->quick = true;
                        o->rounds = 3;
                        o->tries = 200000;
                        o->redis_tries = 2000;
                        o->phase_s = 1;
                } else if (!strcmp(a, "--callgrind")) {
                        o->callgrind = true;
                } else if (!v) {
                        return -1;
                } else if (!strcmp(a, "--daemon")) {
                        snprintf(o->daemon, sizeof(o->daemon), "%s", v), i++;
                } else if (!strcmp(a, "--out")) {
                        snprintf(o->out, sizeof(o->out), "%s", v), i++;
                } else if (!strcmp(a, "--prefix")) {
                        snprintf(o->prefix, sizeof(o->prefix), "%s", v), i++;
                } else if (!strcmp(a, "--rounds")) {
                        o->rounds = atoi(v), i++;
                } else if (!strcmp(a, "--tries")) {
                        o->tries = strtoull(v, NULL, 10), i++;
                } else if (!strcmp(a, "--phase")) {
                        o->phase_s = atof(v), i++;
                } else if (!strcmp(a, "--cg-run")) {
                        o->cg_run = v, i++;
                } else {
                        return -1;
                }
        }
        bool ok = o->rounds >= 1 && o->rounds <= MAX_ROUNDS && o->tries > 0 && o->phase_s >= 0.5;
        return ok ? 0 : -1;
}

static void print_method(const struct gb_opts *o, int argc, char **argv)
{
        struct sysinfo si;
        sysinfo_read(&si);
        gb_out("# bench_global: global limiters (issue 15)%s\n", o->quick ? " --quick" : "");
        gb_out("command:");
        for (int i = 0; i < argc; i++)
                gb_out(" %s", argv[i]);
        gb_out("\n");
        gb_out("machine: %s, %ld CPUs, kernel %s, clocksource %s, %s\n", si.cpu, si.cpus, si.kernel,
               si.clocksource, si.date);
        gb_out("method: real redis-server and throttled processes (%s), [global] interval 50 ms, "
               "lease_ttl 500 ms.\n"
               " 1. one host: thr_limiter_try on api (scope = global) and local (same rate and "
               "burst), one key admitted\n    (10^9/s, burst 10^6) and one denied (1/s, burst 1), "
               "in this process, interleaved rounds.\n"
               " 2. Redis GCRA per decision from this process (bench_scale's redis-tcp: EVALSHA "
               "over loopback TCP).\n"
               " 3. three hosts, one client process each on key k of api (R = %d/s, B = %d, "
               "expected_hosts 3),\n    a try every ~25 us while its host is busy; phases of "
               "%.1f s: 0 alone, 1 alone, all, 2 alone;\n    samples every 20 ms of each "
               "host's share (its arena's directory entry) and admissions.\n",
               o->daemon, GB_RATE, GB_BURST, o->phase_s);
}

/* The mean round trip of 1000 PINGs to Redis on PORT, in seconds (-1: none). */
static double ping_rtt(int port)
{
        redisContext *c = redisConnect("127.0.0.1", port);
        if (!c || c->err) {
                redisFree(c);
                return -1;
        }
        double t0 = gb_now();
        for (int i = 0; i < 1000; i++)
                freeReplyObject(redisCommand(c, "PING"));
        double rtt = (gb_now() - t0) / 1000;
        redisFree(c);
        return rtt;
}

/* Parts 1 and 2 (and --callgrind) on one host of Redis R. */
static int part_hot(const struct gb_opts *o, const struct tredis *r)
{
        static struct hot h;
        static struct rgcra rg;
        struct gb_host host;
        int rc = gb_host_start(&host, o, 0, r->port, HOT_LIMITERS);
        if (rc == 0) {
                wait_whole(&host);
                rc = hot_measure(o, &host, &h);
        }
        const struct thr_dir_entry *e = gb_entry(&host, "api");
        char lease[128] = "none";
        if (e)
                snprintf(lease, sizeof(lease), "share %.1f%%, %s, %u host(s)",
                         atomic_load(&e->global_share) / 1e4,
                         (atomic_load(&e->global_state) & 0xff) == THR_GLOBAL_LEASED ? "leased"
                                                                                     : "not leased",
                         atomic_load(&e->global_state) >> 8);
        for (int c = 0; c < NCASES; c++)
                h.ir[c] = rc == 0 && o->callgrind && !gb_stop ? cg_one(&host, c, 200000) : -1;
        gb_host_stop(&host);
        if (rc < 0 || gb_stop)
                return rc < 0 ? rc : -EINTR;
        if (redis_measure(o, &rg) < 0)
                fprintf(stderr, "bench_global: Redis GCRA: %s\n", rg.note);
        report_hot(o, &h, &rg, lease);
        return 0;
}

static int open_txt(const struct gb_opts *o)
{
        if (!o->out[0])
                return 0;
        char p[PATH_MAX + 80];
        mkdir(o->out, 0755);
        snprintf(p, sizeof(p), "%s/%s.txt", o->out, o->prefix);
        txt = fopen(p, "we");
        return txt ? 0 : -errno;
}

int main(int argc, char **argv)
{
        struct gb_opts o;
        if (parse(argc, argv, &o) < 0) {
                usage(stderr);
                return 2;
        }
        if (o.cg_run)
                return cg_child(o.cg_run);
        char why[256];
        if (!tredis_available(why, sizeof(why))) {
                printf("bench_global: skipped: redis-server is not available (%s)\n", why);
                return 0;
        }
        if (access(o.daemon, X_OK) != 0) {
                fprintf(stderr, "bench_global: no throttled at %s (--daemon)\n", o.daemon);
                return 1;
        }
        struct sigaction sa = {.sa_handler = on_signal};
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        if (open_txt(&o) < 0) {
                fprintf(stderr, "bench_global: %s/%s.txt: %s\n", o.out, o.prefix, strerror(errno));
                return 1;
        }
        print_method(&o, argc, argv);
        struct tredis r = {0};
        int rc = tredis_start(&r, NULL);
        if (rc == 0) {
                double rtt = ping_rtt(r.port);
                gb_out("Redis: redis-server on 127.0.0.1:%d, PING round trip %.1f us\n", r.port,
                       rtt * 1e6);
                rc = part_hot(&o, &r);
                if (rc == 0 && !gb_stop)
                        rc = gb_shift(&o, r.port, rtt);
                tredis_stop(&r);
        }
        if (txt)
                fclose(txt);
        if (rc < 0 || gb_stop)
                fprintf(stderr, "bench_global: %s\n", gb_stop ? "interrupted" : strerror(-rc));
        return rc < 0 || gb_stop ? 1 : 0;
}

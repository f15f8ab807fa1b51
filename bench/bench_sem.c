/*
 * bench_sem.c - acquire+release pairs per second on one semaphore key, for 1, 2 and 8 processes,
 * throttle's thr_sem_acquire next to the two things a C programmer would otherwise reach for.
 *
 *   bench_sem [--seconds S] [--runs R] [--backing auto|hugetlbfs|shm] [--json] [--quick]
 *             [--callgrind [--cg-ops N]]
 *
 * Backends, each on one key of at most MAX units (1: a mutex; 4), every worker a forked process
 * looping "acquire 1 unit (blocking); note the holders; release":
 *   throttle  thr_sem_acquire(lim, "k", 1, 1, ttl 1 s, timeout 30 s) + thr_sem_release; FIFO;
 *             a dead holder's lease is reclaimed (its process gone, or the ttl passed);
 *   sem_open  a POSIX named semaphore of initial value MAX: sem_wait + sem_post; not FIFO; a
 *             holder that dies leaks its unit for good (nothing can tell who held it);
 *   mutex     MAX = 1: a PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST mutex in a MAP_SHARED
 *             page (EOWNERDEAD handled with pthread_mutex_consistent); MAX > 1: a count guarded
 *             by that mutex and a process-shared condvar ("mutex+cond"): the mutex survives a
 *             dead owner, a dead holder's units leak as with sem_open.
 * and a `try` row: one process, uncontended, thr_sem_try / sem_trywait / pthread_mutex_trylock
 * + release: the cost of a pair that never waits.
 *
 * Method: one configuration (MAX, processes) at a time; R runs of it, each run measuring every
 * backend once, S seconds each, starting with a different backend each run (rotating), so drift
 * hits all alike and the ratios are taken within a run. A measurement forks the workers, which
 * open their backend (the arena, the named semaphore) before a start barrier; the parent opens
 * the barrier, sleeps S, raises a stop flag read once per pair, and divides the pairs done by
 * the time between the two. Correctness is checked all along: inside the critical section each
 * worker increments a shared holders counter and records the highest value seen; above MAX is
 * a violation, reported, and the exit status is 3. A worker still running 45 s after the stop
 * is a hang: reported with how to reproduce it, killed, exit status 3. This file sets up and
 * measures; sem_report.c prints what it measured (table, per-run lines, JSON).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <throttle/throttle.h>

#include "sem_bench.h"

/* ---------------------------------------------------------------- types */

#define WATCHDOG_NS (45ull * 1000000000ull)
#define READY_NS    (10ull * 1000000000ull)
#define CG_OPS      100000ull

const struct cfg sem_cfgs[NCFG] = {{1, 1, false}, {1, 2, false}, {1, 8, false}, {4, 1, false},
                                   {4, 2, false}, {4, 8, false}, {1, 1, true}};

/* What one worker did, in the shared page (one cache line each). */
struct wstat {
        alignas(64) uint64_t pairs;
        uint64_t busy;   /* try: -EAGAIN (should stay 0: nobody else holds) */
        uint64_t errors; /* calls that failed otherwise; the worker stops at the first */
        uint64_t nvcsw;  /* voluntary context switches over the loop */
        uint64_t wait_max_ns;
        uint32_t dead; /* EOWNERDEAD recoveries (mutex) */
        int32_t first_err, setup_rc;
};

/* The page every worker maps: barrier, holders check, the mutex backend's state, results. */
struct shared {
        alignas(64) _Atomic uint32_t ready;
        _Atomic uint32_t go, stop;
        alignas(64) _Atomic int32_t holders;
        _Atomic int32_t max_seen;
        alignas(64) pthread_mutex_t mtx;
        pthread_cond_t cond;
        uint32_t count; /* mutex+cond: units free, under mtx */
        struct wstat w[MAX_PROCS];
};

/* What the whole program shares: the arena (by path), the shared page, the semaphore's name. */
struct ctx {
        struct opts o;
        struct shared *sh;
        char path[512];
        char backing[64];
        char sem_name[64];
};

/* One worker's open backend. */
struct handle {
        thr_arena *a;
        thr_limiter *l;
        struct thr_lease lease;
        thr_peer *peer;
        sem_t *sem;
        struct shared *sh;
        unsigned max;
        uint32_t dead;
        uint64_t wait_max_ns; /* throttle: the longest lease.waited_ns */
};

struct backend {
        int (*open)(const struct ctx *c, const struct cfg *cf, struct handle *h);
        void (*close)(struct handle *h);
        int (*acquire)(struct handle *h);
        int (*try_)(struct handle *h);
        int (*release)(struct handle *h);
};

static struct results res;

/* ---------------------------------------------------------------- backends */

static int thr_open_h(const struct ctx *c, const struct cfg *cf, struct handle *h)
{
        int rc = thr_arena_open(c->path, 0, &h->a);
        if (rc == 0)
                rc = thr_limiter_open(h->a, cf->max == 1 ? "max1" : "max4", &h->l);
        return rc;
}

static void thr_close_h(struct handle *h)
{
        if (h->l)
                thr_limiter_close(h->l);
        if (h->a)
                thr_arena_close(h->a);
}

static int thr_acquire_h(struct handle *h)
{
        int rc = thr_sem_acquire(h->l, "k", 1, 1, TTL_NS, TIMEOUT_NS, &h->lease);
        if (rc == 0 && h->lease.waited_ns > h->wait_max_ns)
                h->wait_max_ns = h->lease.waited_ns;
        return rc;
}

static int thr_try_h(struct handle *h)
{
        return thr_sem_try(h->l, "k", 1, 1, TTL_NS, &h->lease);
}

static int thr_release_h(struct handle *h)
{
        return thr_sem_release(&h->lease);
}

/* Through a peer: the same semaphore, one peer a worker (its expiry beyond the run). */
static int peer_open(const struct ctx *c, const struct cfg *cf, struct handle *h)
{
        int rc = thr_open_h(c, cf, h);
        return rc ? rc : thr_peer_open(h->a, 3600 * 1000000000ull, &h->peer);
}

static void peer_close(struct handle *h)
{
        if (h->peer)
                thr_peer_close(h->peer);
        thr_close_h(h);
}

static int peer_acquire(struct handle *h)
{
        return thr_peer_acquire(h->peer, h->l, "k", 1, 1, TIMEOUT_NS, 0);
}

static int peer_try(struct handle *h)
{
        return thr_peer_acquire(h->peer, h->l, "k", 1, 1, 0, 0);
}

static int peer_release(struct handle *h)
{
        return thr_peer_release(h->peer, h->l, "k", 1);
}

static int posix_open(const struct ctx *c, const struct cfg *cf, struct handle *h)
{
        (void)cf;
        h->sem = sem_open(c->sem_name, 0);
        return h->sem == SEM_FAILED ? -errno : 0;
}

static void posix_close(struct handle *h)
{
        if (h->sem && h->sem != SEM_FAILED)
                sem_close(h->sem);
}

static int posix_acquire(struct handle *h)
{
        while (sem_wait(h->sem) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

static int posix_try(struct handle *h)
{
        return sem_trywait(h->sem) < 0 ? -errno : 0;
}

static int posix_release(struct handle *h)
{
        return sem_post(h->sem) < 0 ? -errno : 0;
}

static int mutex_open(const struct ctx *c, const struct cfg *cf, struct handle *h)
{
        h->sh = c->sh;
        h->max = cf->max;
        return 0;
}

static void mutex_close(struct handle *h)
{
        (void)h;
}

/* A pthread result (positive errno, EOWNERDEAD: the owner died holding it) as 0 or -errno. */
static int robust(struct handle *h, int rc)
{
        if (rc == EOWNERDEAD) {
                h->dead++;
                rc = pthread_mutex_consistent(&h->sh->mtx);
        }
        return -rc;
}

static int mutex_acquire(struct handle *h)
{
        int rc = robust(h, pthread_mutex_lock(&h->sh->mtx));
        if (rc < 0 || h->max == 1)
                return rc;
        while (rc == 0 && h->sh->count == 0)
                rc = robust(h, pthread_cond_wait(&h->sh->cond, &h->sh->mtx));
        if (rc == 0)
                h->sh->count--;
        pthread_mutex_unlock(&h->sh->mtx);
        return rc;
}

static int mutex_try(struct handle *h)
{
        if (h->max == 1)
                return robust(h, pthread_mutex_trylock(&h->sh->mtx));
        int rc = robust(h, pthread_mutex_lock(&h->sh->mtx));
        if (rc == 0 && h->sh->count == 0)
                rc = -EAGAIN;
        else if (rc == 0)
                h->sh->count--;
        pthread_mutex_unlock(&h->sh->mtx);
        return rc;
}

static int mutex_release(struct handle *h)
{
        if (h->max == 1)
                return -pthread_mutex_unlock(&h->sh->mtx);
        int rc = robust(h, pthread_mutex_lock(&h->sh->mtx));
        if (rc < 0)
                return rc;
        h->sh->count++;
        pthread_cond_signal(&h->sh->cond);
        return -pthread_mutex_unlock(&h->sh->mtx);
}

static const struct backend backends[NB] = {
    {thr_open_h, thr_close_h, thr_acquire_h, thr_try_h, thr_release_h},
    {posix_open, posix_close, posix_acquire, posix_try, posix_release},
    {mutex_open, mutex_close, mutex_acquire, mutex_try, mutex_release},
    {peer_open, peer_close, peer_acquire, peer_try, peer_release},
};

/* Parent, before a measurement: the backend's state at MAX units free. */
static int backend_prepare(struct ctx *c, int b, unsigned max)
{
        if (b == B_POSIX) {
                sem_unlink(c->sem_name);
                sem_t *s = sem_open(c->sem_name, O_CREAT | O_EXCL, 0600, max);
                if (s == SEM_FAILED)
                        return -errno;
                sem_close(s);
        }
        if (b == B_MUTEX) {
                pthread_mutexattr_t ma;
                pthread_condattr_t ca;
                pthread_mutexattr_init(&ma);
                pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
                pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
                pthread_condattr_init(&ca);
                pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
                int rc = pthread_mutex_init(&c->sh->mtx, &ma);
                if (rc == 0)
                        rc = pthread_cond_init(&c->sh->cond, &ca);
                c->sh->count = max;
                pthread_mutexattr_destroy(&ma);
                pthread_condattr_destroy(&ca);
                return -rc;
        }
        return 0;
}

static void backend_finish(struct ctx *c, int b)
{
        if (b == B_POSIX)
                sem_unlink(c->sem_name);
        if (b == B_MUTEX) {
                pthread_cond_destroy(&c->sh->cond);
                pthread_mutex_destroy(&c->sh->mtx);
        }
}

/* The arena: one key's worth of two semaphore limiters, "max1" and "max4". */
static int arena_make(struct ctx *c, char *err, size_t errlen)
{
        struct shm_limiter_spec lims[2];
        for (int i = 0; i < 2; i++) {
                lims[i] = (struct shm_limiter_spec){.kind = THR_KIND_SEMAPHORE,
                                                    .rate_n = i ? 4 : 1,
                                                    .capacity = 16,
                                                    .leases = LEASES};
                snprintf(lims[i].name, sizeof(lims[i].name), "max%d", i ? 4 : 1);
        }
        struct shm_arena_spec spec = {.hugepages = c->o.huge,
                                      .mode = 0600,
                                      .gid = (gid_t)-1,
                                      .clock = THR_CLOCK_MONOTONIC,
                                      .max_limiters = 2,
                                      .max_readers = 256,
                                      .nlimiters = 2,
                                      .limiters = lims};
        snprintf(spec.name, sizeof(spec.name), "bench-sem.%ld", (long)getpid());
        struct shm_map m = {0};
        int rc = shm_arena_create(&spec, &m, err, errlen);
        if (rc < 0)
                return rc;
        const struct thr_hdr *h = shm_hdr(&m);
        snprintf(c->backing, sizeof(c->backing), "%s%s",
                 h->backing == THR_BACKING_HUGETLBFS ? "hugetlbfs"
                 : h->thp_bytes                      ? "/dev/shm+thp"
                                                     : "/dev/shm",
                 rc == 1 ? " (fell back: hugetlbfs pool too small)" : "");
        snprintf(c->path, sizeof(c->path), "%s", m.path);
        shm_arena_detach(&m);
        return 0;
}

/* ---------------------------------------------------------------- workers */

static double now_s(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Inside the critical section: count the holders, remember the most ever seen. */
static inline void hold(struct shared *sh)
{
        int32_t n = atomic_fetch_add_explicit(&sh->holders, 1, memory_order_acq_rel) + 1;
        int32_t m = atomic_load_explicit(&sh->max_seen, memory_order_relaxed);
        while (n > m && !atomic_compare_exchange_weak_explicit(
                            &sh->max_seen, &m, n, memory_order_relaxed, memory_order_relaxed))
                ;
        atomic_fetch_sub_explicit(&sh->holders, 1, memory_order_acq_rel);
}

static void work(const struct backend *b, struct handle *h, struct shared *sh, bool try_,
                 struct wstat *ws)
{
        int (*take)(struct handle *) = try_ ? b->try_ : b->acquire;
        while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
                int rc = take(h);
                if (rc == -EAGAIN) {
                        ws->busy++;
                        continue;
                }
                if (rc == 0) {
                        hold(sh);
                        rc = b->release(h);
                }
                if (rc < 0) {
                        ws->errors++;
                        ws->first_err = rc;
                        return;
                }
                ws->pairs++;
        }
}

__attribute__((noreturn)) static void worker(const struct ctx *c, const struct cfg *cf, int b,
                                             unsigned w)
{
        struct shared *sh = c->sh;
        struct wstat *ws = &sh->w[w];
        struct handle h = {0};
        struct rusage r0, r1;
        ws->setup_rc = backends[b].open(c, cf, &h);
        atomic_fetch_add_explicit(&sh->ready, 1, memory_order_release);
        if (ws->setup_rc == 0) {
                while (!atomic_load_explicit(&sh->go, memory_order_acquire))
                        sched_yield();
                getrusage(RUSAGE_SELF, &r0);
                work(&backends[b], &h, sh, cf->try_, ws);
                getrusage(RUSAGE_SELF, &r1);
                ws->nvcsw = (uint64_t)(r1.ru_nvcsw - r0.ru_nvcsw);
                ws->dead = h.dead;
                ws->wait_max_ns = h.wait_max_ns;
        }
        backends[b].close(&h);
        _exit(0);
}

/* ---------------------------------------------------------------- one measurement */

/* Wait for every worker to exit within LIMIT_NS; 0, or the number still running (killed). */
static unsigned reap(pid_t *pids, unsigned n, uint64_t limit_ns)
{
        double end = now_s() + (double)limit_ns / 1e9;
        unsigned left = 0;
        for (unsigned i = 0; i < n; i++)
                left += pids[i] > 0;
        while (left && now_s() < end) {
                for (unsigned i = 0; i < n; i++)
                        if (pids[i] > 0 && waitpid(pids[i], NULL, WNOHANG) == pids[i]) {
                                pids[i] = 0;
                                left--;
                        }
                if (left)
                        usleep(1000);
        }
        for (unsigned i = 0; i < n; i++)
                if (pids[i] > 0) {
                        kill(pids[i], SIGKILL);
                        waitpid(pids[i], NULL, 0);
                }
        return left;
}

static void report_hang(const struct ctx *c, const struct cfg *cf, int b, unsigned left)
{
        fprintf(stderr,
                "bench_sem: HANG: %s, max %u, %u processes, %s: %u worker(s) still inside a call "
                "%.0f s after the stop (holders now %d); killed. Reproduce: bench_sem --seconds "
                "%g --runs 1 --backing %s\n",
                sem_bname(b, cf->max), cf->max, cf->procs, cf->try_ ? "try" : "acquire", left,
                (double)WATCHDOG_NS / 1e9, atomic_load(&c->sh->holders), c->o.seconds,
                c->o.backing_name);
        res.hangs++;
}

/* Workers forked and at the barrier (or failed): 0, or -1 with S->failed set. */
static int start(struct ctx *c, const struct cfg *cf, int b, pid_t *pids)
{
        struct shared *sh = c->sh;
        for (unsigned w = 0; w < cf->procs; w++) {
                pids[w] = fork();
                if (pids[w] == 0)
                        worker(c, cf, b, w);
                if (pids[w] < 0) {
                        pids[w] = 0;
                        return -1;
                }
        }
        double end = now_s() + (double)READY_NS / 1e9;
        while (atomic_load_explicit(&sh->ready, memory_order_acquire) < cf->procs)
                if (now_s() > end)
                        return -1;
                else
                        usleep(100);
        for (unsigned w = 0; w < cf->procs; w++)
                if (sh->w[w].setup_rc < 0) {
                        fprintf(stderr, "bench_sem: %s: worker setup: %s\n", sem_bname(b, cf->max),
                                thr_strerror(sh->w[w].setup_rc));
                        return -1;
                }
        return 0;
}

static void collect(const struct shared *sh, const struct cfg *cf, double secs, struct sample *s)
{
        uint64_t lo = UINT64_MAX, hi = 0, cs = 0;
        *s = (struct sample){.max_seen = atomic_load(&sh->max_seen)};
        for (unsigned w = 0; w < cf->procs; w++) {
                const struct wstat *ws = &sh->w[w];
                s->pairs += ws->pairs;
                s->busy += ws->busy;
                s->errors += ws->errors;
                s->dead += ws->dead;
                if (ws->wait_max_ns > s->wait_max_ns)
                        s->wait_max_ns = ws->wait_max_ns;
                cs += ws->nvcsw;
                if (ws->errors && !s->first_err)
                        s->first_err = ws->first_err;
                lo = ws->pairs < lo ? ws->pairs : lo;
                hi = ws->pairs > hi ? ws->pairs : hi;
        }
        s->pairs_s = (double)s->pairs / secs;
        s->fair = hi ? (double)lo / (double)hi : 0;
        s->cs_per_pair = s->pairs ? (double)cs / (double)s->pairs : 0;
}

static void measure(struct ctx *c, const struct cfg *cf, int b, struct sample *s)
{
        struct shared *sh = c->sh;
        pid_t pids[MAX_PROCS] = {0};
        memset(sh->w, 0, sizeof(sh->w));
        atomic_store(&sh->ready, 0);
        atomic_store(&sh->go, 0);
        atomic_store(&sh->stop, 0);
        atomic_store(&sh->holders, 0);
        atomic_store(&sh->max_seen, 0);
        *s = (struct sample){.failed = true};
        int rc = backend_prepare(c, b, cf->max);
        if (rc < 0) {
                fprintf(stderr, "bench_sem: %s: %s\n", sem_bname(b, cf->max), strerror(-rc));
                return;
        }
        int ok = start(c, cf, b, pids);
        double t0 = now_s();
        atomic_store_explicit(&sh->go, 1, memory_order_release);
        if (ok == 0) {
                struct timespec d = {(time_t)c->o.seconds,
                                     (long)((c->o.seconds - (double)(time_t)c->o.seconds) * 1e9)};
                nanosleep(&d, NULL);
        }
        atomic_store_explicit(&sh->stop, 1, memory_order_release);
        double t1 = now_s();
        unsigned left = reap(pids, cf->procs, WATCHDOG_NS);
        backend_finish(c, b);
        if (left)
                report_hang(c, cf, b, left);
        if (ok < 0 || left)
                return;
        collect(sh, cf, t1 - t0, s);
        if (s->max_seen > (int32_t)cf->max) {
                fprintf(stderr, "bench_sem: VIOLATION: %s, max %u, %u processes: %d holders seen\n",
                        sem_bname(b, cf->max), cf->max, cf->procs, s->max_seen);
                res.violations++;
        }
}

/* Every configuration, RUNS runs each, every backend once a run, the first one rotating. */
static void run_all(struct ctx *c)
{
        for (unsigned k = 0; k < NCFG; k++)
                for (unsigned r = 0; r < c->o.runs; r++)
                        for (int i = 0; i < NB; i++) {
                                int b = (int)((r + (unsigned)i) % NB);
                                measure(c, &sem_cfgs[k], b, &res.s[k][b][r]);
                        }
}

/* ---------------------------------------------------------------- --callgrind */

/* The loop callgrind collects (--toggle-collect=cg_loop): N uncontended try+release pairs. */
__attribute__((noinline)) static uint64_t cg_loop(const struct backend *b, struct handle *h,
                                                  uint64_t n)
{
        uint64_t bad = 0;
        for (uint64_t i = 0; i < n; i++)
                bad += b->try_(h) != 0 || b->release(h) != 0;
        return bad;
}

/* Inside valgrind: the backend named by --cg-run, max 1, its first pair outside cg_loop. */
static int cg_child(struct ctx *c)
{
        static const struct cfg one = {1, 1, true};
        char err[512] = "";
        int b = 0;
        while (b < NB && strcmp(sem_bname(b, 1), c->o.cg_run) != 0)
                b++;
        bool thr = b == B_THR || b == B_PEER;
        if (b == NB || (thr && arena_make(c, err, sizeof(err)) < 0) || backend_prepare(c, b, 1) < 0)
                return 1;
        struct handle h = {0};
        int rc = backends[b].open(c, &one, &h);
        if (rc == 0)
                rc = cg_loop(&backends[b], &h, 1) ? -EIO : 0; /* first use: key, records */
        uint64_t bad = rc == 0 ? cg_loop(&backends[b], &h, c->o.cg_ops) : 1;
        backends[b].close(&h);
        backend_finish(c, b);
        if (thr)
                unlink(c->path);
        printf("errors %" PRIu64 "\n", bad);
        return bad ? 1 : 0;
}

static double cg_one(const struct ctx *c, const char *backend)
{
        char out[96], cmd[1024], line[512];
        double ir = -1;
        snprintf(out, sizeof(out), "/tmp/bench_sem.cg.%ld", (long)getpid());
        snprintf(cmd, sizeof(cmd),
                 "valgrind --tool=callgrind --toggle-collect=cg_loop --callgrind-out-file=%s "
                 "/proc/%ld/exe --cg-run %s --cg-ops %" PRIu64 " --backing %s >/dev/null "
                 "2>&1",
                 out, (long)getpid(), backend, c->o.cg_ops, c->o.backing_name);
        FILE *f = system(cmd) == 0 ? fopen(out, "r") : NULL;
        while (f && fgets(line, sizeof(line), f))
                if (!strncmp(line, "summary:", 8) || !strncmp(line, "totals:", 7))
                        ir = strtod(strchr(line, ':') + 1, NULL);
        if (f)
                fclose(f);
        unlink(out);
        return ir;
}

static void cg_report(const struct ctx *c, FILE *out)
{
        fprintf(out,
                "\ninstructions per uncontended try+release pair (valgrind --tool=callgrind "
                "--toggle-collect=cg_loop, %" PRIu64 " pairs,\n1 process, max 1; set-up and the "
                "first pair not counted; the clock read is a syscall under valgrind):\n",
                c->o.cg_ops);
        for (int b = 0; b < NB; b++) {
                double ir = cg_one(c, sem_bname(b, 1));
                if (ir < 0)
                        fprintf(out, "  %-10s failed\n", sem_bname(b, 1));
                else
                        fprintf(out, "  %-10s %8.1f\n", sem_bname(b, 1), ir / (double)c->o.cg_ops);
        }
}

/* ---------------------------------------------------------------- options, main */

static void usage(FILE *f)
{
        fprintf(f, "usage: bench_sem [--seconds S] [--runs R] [--backing auto|hugetlbfs|shm] "
                   "[--json] [--quick] [--callgrind [--cg-ops N]]\n");
}

static int parse_backing(const char *s, struct opts *o)
{
        o->backing_name = s;
        if (!strcmp(s, "auto"))
                o->huge = SHM_HUGE_AUTO;
        else if (!strcmp(s, "hugetlbfs"))
                o->huge = SHM_HUGE_REQUIRE;
        else if (!strcmp(s, "shm"))
                o->huge = SHM_HUGE_OFF;
        else
                return -1;
        return 0;
}

static int parse(int argc, char **argv, struct opts *o)
{
        static const struct option lo[] = {
            {"seconds", required_argument, 0, 's'}, {"runs", required_argument, 0, 'r'},
            {"backing", required_argument, 0, 'b'}, {"json", no_argument, 0, 'j'},
            {"quick", no_argument, 0, 'q'},         {"callgrind", no_argument, 0, 'c'},
            {"cg-run", required_argument, 0, 'C'},  {"cg-ops", required_argument, 0, 'o'},
            {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
        double secs = 0;
        unsigned runs = 0;
        int c;
        *o = (struct opts){.huge = SHM_HUGE_AUTO, .backing_name = "auto", .cg_ops = CG_OPS};
        while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
                switch (c) {
                case 's':
                        secs = strtod(optarg, NULL);
                        break;
                case 'r':
                        runs = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'b':
                        if (parse_backing(optarg, o) < 0)
                                return -1;
                        break;
                case 'j':
                        o->json = true;
                        break;
                case 'q':
                        o->quick = true;
                        break;
                case 'c':
                        o->callgrind = true;
                        break;
                case 'C':
                        o->cg_run = optarg;
                        break;
                case 'o':
                        o->cg_ops = strtoull(optarg, NULL, 10);
                        break;
                case 'h':
                        return 1;
                default:
                        return -1;
                }
        }
        o->seconds = secs > 0 ? secs : o->quick ? 0.05 : 1.0;
        o->runs = runs ? runs : o->quick ? 2 : 5;
        return optind == argc && o->runs <= MAX_RUNS && o->seconds < 3600 && o->cg_ops ? 0 : -1;
}

int main(int argc, char **argv)
{
        static struct ctx c;
        struct sysinfo si;
        char err[512] = "";
        int rc = parse(argc, argv, &c.o);
        if (rc != 0) {
                usage(rc > 0 ? stdout : stderr);
                return rc > 0 ? 0 : 2;
        }
        snprintf(c.sem_name, sizeof(c.sem_name), "/bench-sem.%ld", (long)getpid());
        c.sh = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                    -1, 0);
        if (c.sh == MAP_FAILED)
                return 1;
        if (c.o.cg_run)
                return cg_child(&c);
        if (arena_make(&c, err, sizeof(err)) < 0) {
                fprintf(stderr, "bench_sem: arena: %s\n", err);
                return 1;
        }
        sysinfo_read(&si);
        run_all(&c);
        unlink(c.path);
        struct run_info ri = {&c.o, &si, c.backing, argc, argv};
        (c.o.json ? sem_print_json : sem_print_text)(&ri, &res);
        if (c.o.callgrind)
                cg_report(&c, c.o.json ? stderr : stdout); /* stdout holds the JSON */
        return res.violations || res.hangs ? 3 : 0;
}

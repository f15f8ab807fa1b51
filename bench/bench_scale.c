/*
 * bench_scale.c - aggregate throughput and latency of throttle across processes, next to the
 * floor and the alternatives a user would otherwise pick, measured in one run on one machine.
 *
 * For each scenario (key set and access pattern), each backend (backend.h) and each process count,
 * the parent sets the backend up once, forks the workers (each attaches after fork, pins itself
 * round-robin when asked, and builds its own precomputed key sequence), then runs one warm-up
 * sample and R measured samples. Every sample starts all workers together (a barrier in a shared
 * anonymous mapping), lasts a fixed time, and each worker counts its operations, its wall and CPU
 * time, and times 1 operation in 64 with a clock_gettime pair into its own latency histogram in
 * shared memory; the parent merges. Benchmarks report and never assert: the exit status is 1 only
 * when the command line is wrong or nothing could be set up. The churn scenario walks an endless
 * stream of new keys instead (scale_churn.h) and reads each backend's eviction counters before
 * and after every sample. The window backend (throttle's window kind, backend_throttle.c) runs
 * every scenario it has memory for (up to 100 000 keys) like any other, after the others, so the
 * rows and callgrind columns of the others are where they were before it existed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "scale.h"
#include "scale_churn.h"
#include "scale_keys.h"

/* Weak: a baseline that is not linked in is reported as not built, not a link error. */
extern const struct bench_backend bench_nginx_hash __attribute__((weak));
extern const struct bench_backend bench_nginx_real __attribute__((weak));
extern const struct bench_backend bench_mutex_local __attribute__((weak));
extern const struct bench_backend bench_sharded_mutex __attribute__((weak));
extern const struct bench_backend bench_cas_local __attribute__((weak));
extern const struct bench_backend bench_redis_tcp __attribute__((weak));
extern const struct bench_backend bench_redis_unix __attribute__((weak));

/* ---------------------------------------------------------------- scenarios */

enum dist { D_UNIFORM, D_ZIPF, D_CHURN };

struct scen {
        const char *name;
        uint64_t keys, quick_keys;
        enum dist dist;
        int denied; /* rate 1/h, burst 1: every try after the first is denied */
        const char *skip;
        uint64_t rate, burst; /* per key per second, burst; 0: 1e9/s burst 1e9 (never denies) */
};

static const struct scen scens[] = {
    {"hot", 1, 1, D_UNIFORM, 0, NULL, 0, 0},
    {"10k", 10000, 100, D_UNIFORM, 0, NULL, 0, 0},
    {"1m", 1000000, 1000, D_UNIFORM, 0, NULL, 0, 0},
    {"1m-zipf", 1000000, 1000, D_ZIPF, 0, NULL, 0, 0},
    {"denied", 1, 1, D_UNIFORM, 1, NULL, 0, 0},
    /* realistic rates: each key's arrivals (ops/s / keys) are above its rate at full speed, near
     * it with 1 us of work: the mix of admitted and denied depends on the throughput */
    {"10k@100/s", 10000, 100, D_UNIFORM, 0, NULL, 100, 10},
    {"1k@10k/s", 1000, 100, D_UNIFORM, 0, NULL, 10000, 10},
    {"churn", 100000, 1000, D_CHURN, 0, NULL, 0, 0}, /* keys: the capacity */
};
#define NSCENS (sizeof(scens) / sizeof(scens[0]))

#define SEQ_LEN       (1u << 18) /* ops per worker sequence (walked cyclically) */
#define SEQ_LEN_QUICK (1u << 12)
#define CHUNK         64u /* one op in CHUNK is timed; the stop flag is read per chunk */
#define MAX_RESULTS   2048u
#define MAX_BACKENDS  24u
#define MAX_WAIT      8u

/* ---------------------------------------------------------------- shared control block */

struct wslot {
        uint64_t ops[MAX_SAMPLES + 1];
        uint64_t new_keys[MAX_SAMPLES + 1]; /* churn */
        double secs[MAX_SAMPLES + 1];
        double cpu[MAX_SAMPLES + 1];
        uint64_t admitted, denied, errors;
        int attach_failed;
        struct hist hist; /* measured samples only */
} __attribute__((aligned(64)));

struct ctl {
        _Atomic int ready;
        _Atomic unsigned go;
        char pad1[56];
        _Atomic unsigned stop; /* own line: read by every worker once per chunk */
        char pad2[60];
        struct wslot w[];
};

struct tally {
        uint64_t ops, yes, no, bad;
};

static const struct bench_backend *all_backends[MAX_BACKENDS];
static unsigned nall;

/* ---------------------------------------------------------------- time */

static double mono_s(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
        struct timespec t;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
        return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static inline uint64_t mono_ns(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void sleep_s(double s)
{
        struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
        while (nanosleep(&t, &t) < 0 && errno == EINTR)
                ;
}

/* ---------------------------------------------------------------- the worker */

static inline void tally_rc(struct tally *t, int rc)
{
        t->yes += rc == 1;
        t->no += rc == 0;
        t->bad += rc < 0;
}

/*
 * One chunk: the first op timed with a clock_gettime pair, the other CHUNK-1 not; after every op,
 * WORK steps of the work knob's chain (outside the timed pair: latencies are the decision's). The
 * callers pass WORK = 0 as a constant in their own loop, so the no-work path has no work code.
 */
static inline __attribute__((always_inline)) size_t
run_chunk(const struct bench_backend *b, void *h, const struct op *ops, size_t pos, size_t mask,
          struct tally *t, struct hist *hist, uint64_t work)
{
        const struct op *op = &ops[pos];
        uint64_t t0 = mono_ns();
        int rc = b->try_key(h, op->idx, op->key, op->len, 1);
        hist_add(hist, mono_ns() - t0);
        tally_rc(t, rc);
        if (work)
                work_spin(work);
        for (unsigned i = 1; i < CHUNK; i++) {
                op = &ops[(pos + i) & mask];
                tally_rc(t, b->try_key(h, op->idx, op->key, op->len, 1));
                if (work)
                        work_spin(work);
        }
        t->ops += CHUNK;
        return (pos + CHUNK) & mask;
}

/* The same for the churn stream: the key is the stream's next one. */
static inline __attribute__((always_inline)) void churn_chunk(const struct bench_backend *b,
                                                              void *h, struct churn *ch,
                                                              struct tally *t, struct hist *hist,
                                                              uint64_t work)
{
        const struct ckey *k = churn_next(ch);
        uint64_t t0 = mono_ns();
        int rc = b->try_key(h, k->idx, k->key, k->len, 1);
        hist_add(hist, mono_ns() - t0);
        tally_rc(t, rc);
        if (work)
                work_spin(work);
        for (unsigned i = 1; i < CHUNK; i++) {
                k = churn_next(ch);
                tally_rc(t, b->try_key(h, k->idx, k->key, k->len, 1));
                if (work)
                        work_spin(work);
        }
        t->ops += CHUNK;
}

/* What a worker walks: a cyclic sequence of op records, or (churn) the endless key stream. */
struct stream {
        const struct op *ops;
        size_t mask;
        struct churn *ch; /* churn: non-NULL */
};

/*
 * The fixed-time ops loop of one sample: until the parent raises STOP to GEN. WORK steps of the
 * work knob after every op; the loops without work are separate, with no work code in them.
 */
static __attribute__((noinline)) void timed_loop(const struct bench_backend *b, void *h,
                                                 const struct stream *sq, struct ctl *c,
                                                 unsigned gen, struct tally *t, struct hist *hist,
                                                 uint64_t work)
{
        size_t pos = 0;
        if (sq->ch && !work) {
                while (atomic_load_explicit(&c->stop, memory_order_relaxed) < gen)
                        churn_chunk(b, h, sq->ch, t, hist, 0);
        } else if (sq->ch) {
                while (atomic_load_explicit(&c->stop, memory_order_relaxed) < gen)
                        churn_chunk(b, h, sq->ch, t, hist, work);
        } else if (!work) {
                while (atomic_load_explicit(&c->stop, memory_order_relaxed) < gen)
                        pos = run_chunk(b, h, sq->ops, pos, sq->mask, t, hist, 0);
        } else {
                while (atomic_load_explicit(&c->stop, memory_order_relaxed) < gen)
                        pos = run_chunk(b, h, sq->ops, pos, sq->mask, t, hist, work);
        }
}

/* The fixed-count ops loop that --callgrind collects (--toggle-collect=fixed_loop). */
__attribute__((noinline)) void fixed_loop(const struct bench_backend *b, void *h,
                                          const struct op *ops, size_t mask, uint64_t n,
                                          struct tally *t);
__attribute__((noinline)) void fixed_loop(const struct bench_backend *b, void *h,
                                          const struct op *ops, size_t mask, uint64_t n,
                                          struct tally *t)
{
        for (uint64_t i = 0; i < n; i++) {
                const struct op *op = &ops[i & mask];
                tally_rc(t, b->try_key(h, op->idx, op->key, op->len, 1));
        }
        t->ops += n;
}

/* The same for churn (--callgrind collects fixed_loop*). */
__attribute__((noinline)) void fixed_loop_churn(const struct bench_backend *b, void *h,
                                                struct churn *ch, uint64_t n, struct tally *t);
__attribute__((noinline)) void fixed_loop_churn(const struct bench_backend *b, void *h,
                                                struct churn *ch, uint64_t n, struct tally *t)
{
        for (uint64_t i = 0; i < n; i++) {
                const struct ckey *k = churn_next(ch);
                tally_rc(t, b->try_key(h, k->idx, k->key, k->len, 1));
        }
        t->ops += n;
}

static void wait_go(struct ctl *c, unsigned gen)
{
        atomic_fetch_add_explicit(&c->ready, 1, memory_order_acq_rel);
        while (atomic_load_explicit(&c->go, memory_order_acquire) < gen)
                sched_yield();
}

static void pin_to(int cpu)
{
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(n > 0 ? cpu % (int)n : 0, &set);
        sched_setaffinity(0, sizeof(set), &set);
}

static void worker_samples(const struct bench_backend *b, void *h, const struct stream *sq,
                           struct ctl *c, struct wslot *w, unsigned nsamples, uint64_t work)
{
        static struct hist scratch;
        for (unsigned s = 0; s <= nsamples; s++) {
                struct tally t = {0};
                uint64_t n0 = sq->ch ? sq->ch->n : 0;
                wait_go(c, s + 1);
                double t0 = mono_s(), c0 = cpu_s();
                if (h)
                        timed_loop(b, h, sq, c, s + 1, &t, s ? &w->hist : &scratch, work);
                w->secs[s] = mono_s() - t0;
                w->cpu[s] = cpu_s() - c0;
                w->ops[s] = t.ops;
                w->new_keys[s] = sq->ch ? sq->ch->n - n0 : 0;
                if (s) {
                        w->admitted += t.yes;
                        w->denied += t.no;
                        w->errors += t.bad;
                }
        }
        wait_go(c, nsamples + 2); /* done, still attached: the parent reads the counters */
}

struct run_spec {
        const struct scen *sc;
        uint64_t keys;
        const struct bench_backend *b;
        void *state;
        int procs;
        const struct opts *o;
        unsigned config; /* index of (procs, work) in a set-up: churn's fresh ids differ */
        uint64_t work;   /* work knob steps after every op */
};

static void worker_main(const struct run_spec *rs, struct ctl *c, int wi)
{
        size_t n = rs->o->quick ? SEQ_LEN_QUICK : SEQ_LEN;
        struct wslot *w = &c->w[wi];
        struct churn ch = {0};
        struct stream sq = {.mask = n - 1};
        if (rs->o->pin)
                pin_to(wi);
        int ok = 0;
        if (rs->sc->dist == D_CHURN) {
                ok = churn_init(&ch, rs->keys, n, wi, rs->procs, rs->config) == 0;
                sq.ch = &ch;
        } else {
                sq.ops = seq_build(rs->sc->dist == D_ZIPF, rs->keys, n, wi);
                ok = sq.ops != NULL;
        }
        void *h = ok ? rs->b->attach(rs->state) : NULL;
        w->attach_failed = h == NULL;
        worker_samples(rs->b, h, &sq, c, w, rs->o->samples, rs->work);
        if (h)
                rs->b->detach(h);
        free((void *)sq.ops);
        churn_free(&ch);
        _exit(0);
}

/* ---------------------------------------------------------------- the parent's side */

/* Wait until every worker is ready for generation GEN; 0, or -ETIMEDOUT after 120 s. */
static int wait_ready(struct ctl *c, int want)
{
        double t0 = mono_s();
        while (atomic_load_explicit(&c->ready, memory_order_acquire) < want) {
                if (mono_s() - t0 > 120)
                        return -ETIMEDOUT;
                sleep_s(0.0002);
        }
        return 0;
}

/* Churn: the backend's eviction counters now (zeros when it has none). */
struct ev_pair {
        struct bench_evictions at[MAX_SAMPLES + 1]; /* when sample s was released */
        struct bench_evictions to[MAX_SAMPLES + 1]; /* when every worker had stopped it */
};

static void ev_read(const struct run_spec *rs, struct bench_evictions *e)
{
        *e = (struct bench_evictions){0};
        if (rs->sc->dist == D_CHURN && rs->b->evictions && rs->b->evictions(rs->state, e) < 0)
                *e = (struct bench_evictions){0};
}

static int drive_samples(const struct run_spec *rs, struct ctl *c, struct ev_pair *ev)
{
        for (unsigned s = 0; s <= rs->o->samples; s++) {
                if (wait_ready(c, rs->procs * (int)(s + 1)) < 0)
                        return -ETIMEDOUT;
                if (s > 0)
                        ev_read(rs, &ev->to[s - 1]);
                ev_read(rs, &ev->at[s]);
                atomic_store_explicit(&c->go, s + 1, memory_order_release);
                sleep_s(s ? rs->o->seconds
                          : (rs->o->seconds < WARMUP_MAX_S ? rs->o->seconds : WARMUP_MAX_S));
                atomic_store_explicit(&c->stop, s + 1, memory_order_release);
        }
        /* the last sample's counters while the workers are still attached (live keys) */
        if (wait_ready(c, rs->procs * (int)(rs->o->samples + 2)) < 0)
                return -ETIMEDOUT;
        ev_read(rs, &ev->to[rs->o->samples]);
        atomic_store_explicit(&c->go, rs->o->samples + 2, memory_order_release);
        return 0;
}

static int fork_workers(const struct run_spec *rs, struct ctl *c, pid_t *pids)
{
        fflush(NULL);
        for (int i = 0; i < rs->procs; i++) {
                pids[i] = fork();
                if (pids[i] == 0)
                        worker_main(rs, c, i);
                if (pids[i] < 0)
                        return -errno;
        }
        return 0;
}

static void reap(pid_t *pids, int n, int kill_them)
{
        for (int i = 0; i < n; i++) {
                if (pids[i] <= 0)
                        continue;
                if (kill_them)
                        kill(pids[i], SIGKILL);
                waitpid(pids[i], NULL, 0);
        }
}

/*
 * Churn: what each measured sample evicted (counter differences), and the live keys after it,
 * from index AT of R's per-sample arrays on.
 */
static void collect_evictions(const struct run_spec *rs, const struct ctl *c,
                              const struct ev_pair *ev, struct result *r, unsigned at)
{
        for (unsigned s = 1; s <= rs->o->samples; s++) {
                const struct bench_evictions *a = &ev->at[s], *b = &ev->to[s];
                r->ev[at + s - 1] =
                    (struct bench_evictions){.idle = b->idle - a->idle,
                                             .full = b->full - a->full,
                                             .reclaimed = b->reclaimed - a->reclaimed,
                                             .insert_fail = b->insert_fail - a->insert_fail,
                                             .live = b->live,
                                             .passes = b->passes - a->passes,
                                             .gp_failed = b->gp_failed - a->gp_failed,
                                             .empty = b->empty,
                                             .miss_probe = b->miss_probe,
                                             .lock_waits = b->lock_waits - a->lock_waits,
                                             .repairs = b->repairs - a->repairs,
                                             .has = b->has};
                r->ev_has = b->has;
                for (int i = 0; i < rs->procs; i++)
                        r->new_keys[at + s - 1] += c->w[i].new_keys[s];
        }
}

/*
 * Per-sample figures of round ROUND from the workers' slots, appended to R's samples; the round's
 * medians and percentiles into R's r_ arrays.
 */
static void collect(const struct run_spec *rs, const struct ctl *c, const struct ev_pair *ev,
                    struct result *r, unsigned round)
{
        struct hist *m = calloc(1, sizeof(*m));
        unsigned at = r->nsamples, ns = rs->o->samples;
        if (rs->sc->dist == D_CHURN)
                collect_evictions(rs, c, ev, r, at);
        for (unsigned s = 1; s <= ns; s++) {
                double rate = 0, nsop = 0, cpu = 0, ops = 0;
                for (int i = 0; i < rs->procs; i++) {
                        const struct wslot *w = &c->w[i];
                        rate += w->secs[s] > 0 ? (double)w->ops[s] / w->secs[s] : 0;
                        nsop += w->ops[s] ? w->secs[s] * 1e9 / (double)w->ops[s] : 0;
                        cpu += w->cpu[s];
                        ops += (double)w->ops[s];
                        r->ops += w->ops[s];
                }
                r->mops[at + s - 1] = rate / 1e6;
                r->nsop[at + s - 1] = nsop / rs->procs;
                r->cpuns[at + s - 1] = ops > 0 ? cpu * 1e9 / ops : 0;
        }
        r->nsamples = at + ns;
        r->r_mops[round] = stat_of(&r->mops[at], ns).med;
        r->r_nsop[round] = stat_of(&r->nsop[at], ns).med;
        r->r_cpuns[round] = stat_of(&r->cpuns[at], ns).med;
        r->rmask |= 1u << round;
        for (int i = 0; m && i < rs->procs; i++) {
                r->admitted += c->w[i].admitted;
                r->denied += c->w[i].denied;
                r->errors += c->w[i].errors;
                hist_merge(m, &c->w[i].hist);
        }
        if (m) {
                r->lat_n += hist_count(m);
                r->r_p50[round] = hist_quantile(m, 0.5);
                r->r_p99[round] = hist_quantile(m, 0.99);
                r->r_p999[round] = hist_quantile(m, 0.999);
                r->pmax = hist_max(m) > r->pmax ? hist_max(m) : r->pmax;
        }
        free(m);
}

static int any_attach_failed(const struct ctl *c, int n)
{
        for (int i = 0; i < n; i++)
                if (c->w[i].attach_failed)
                        return 1;
        return 0;
}

static void run_config(const struct run_spec *rs, struct result *r, unsigned round)
{
        size_t sz = sizeof(struct ctl) + (size_t)rs->procs * sizeof(struct wslot);
        pid_t pids[256] = {0};
        static struct ev_pair ev;
        struct ctl *c = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (c == MAP_FAILED) {
                snprintf(r->note, sizeof(r->note), "mmap: %s", strerror(errno));
                return;
        }
        int rc = fork_workers(rs, c, pids);
        if (rc == 0)
                rc = drive_samples(rs, c, &ev);
        reap(pids, rs->procs, rc < 0);
        if (rc < 0)
                snprintf(r->note, sizeof(r->note), "run failed (round %u): %s", round + 1,
                         strerror(-rc));
        else if (any_attach_failed(c, rs->procs))
                snprintf(r->note, sizeof(r->note), "attach failed in a worker (round %u)",
                         round + 1);
        else {
                collect(rs, c, &ev, r, round);
                r->ok = 1;
        }
        munmap(c, sz);
}

/* ---------------------------------------------------------------- scenarios x backends */

static struct result results[MAX_RESULTS];
static unsigned nresults;
static int setup_failed; /* a backend that should run could not be set up: exit status 1 */
static struct run_env env;

static void cfg_for(const struct opts *o, const struct scen *sc, uint64_t keys,
                    struct bench_cfg *cfg)
{
        int maxp = 1;
        for (unsigned i = 0; i < o->nprocs; i++)
                maxp = o->procs[i] > maxp ? o->procs[i] : maxp;
        *cfg = (struct bench_cfg){.keys = keys, .procs = maxp, .backing = o->backing};
        if (sc->dist == D_CHURN) {
                cfg->idle_ttl_ns = CHURN_TTL_NS;
                cfg->driver = 1;
        }
        if (sc->denied) {
                cfg->rate_n = 1;
                cfg->period_ns = 3600ull * 1000000000ull;
                cfg->burst = 1;
        } else if (sc->rate) { /* a realistic rate per key: admits some, denies the rest */
                cfg->rate_n = sc->rate;
                cfg->period_ns = 1000000000ull;
                cfg->burst = sc->burst;
        } else { /* 1e9/s, burst 1e9: never denies, every op takes the full admit path */
                cfg->rate_n = 1000000000ull;
                cfg->period_ns = 1000000000ull;
                cfg->burst = 1000000000ull;
        }
}

static uint64_t scen_keys(const struct opts *o, const struct scen *sc)
{
        return o->quick ? sc->quick_keys : sc->keys;
}

/* The result of (SC, B, PROCS, WORK): the one earlier rounds made, else a new one. */
static struct result *result_get(const struct scen *sc, const struct bench_backend *b, int procs,
                                 uint64_t work)
{
        const char *bn = b ? b->name : "-";
        for (unsigned i = 0; i < nresults; i++)
                if (results[i].procs == procs && results[i].work_ns == work &&
                    results[i].scenario == sc->name && strcmp(results[i].backend, bn) == 0)
                        return &results[i];
        if (nresults == MAX_RESULTS)
                return NULL;
        struct result *r = &results[nresults++];
        *r = (struct result){.scenario = sc->name, .backend = bn, .procs = procs, .work_ns = work};
        return r;
}

static void skip_all(const struct opts *o, const struct scen *sc, const struct bench_backend *b,
                     const char *why)
{
        for (unsigned p = 0; p < o->nprocs; p++)
                for (unsigned w = 0; w < o->nwork; w++) {
                        struct result *r = result_get(sc, b, o->procs[p], o->work_ns[w]);
                        if (!r)
                                return;
                        if (!r->ok)
                                snprintf(r->note, sizeof(r->note), "%.*s", (int)sizeof(r->note) - 1,
                                         why);
                }
}

static int is_shm_backend(const struct bench_backend *b)
{
        return b == &bench_throttle || b == &bench_window || b == &bench_floor ||
               b == &bench_floor_none || b == &bench_floor_coarse || b == &bench_floor_tsc ||
               b == &bench_throttle_coarse || b == &bench_throttle_tsc || b == &bench_throttle_key;
}

/* One backend of one scenario in round ROUND: fresh set-up, every (procs, work), teardown. */
static void run_backend(const struct opts *o, const struct scen *sc, const struct bench_backend *b,
                        unsigned round)
{
        struct bench_cfg cfg;
        char desc[160] = "";
        cfg_for(o, sc, scen_keys(o, sc), &cfg);
        void *st = b->setup(&cfg);
        if (!st) {
                setup_failed |= strncmp(cfg.err, "skip:", 5) != 0;
                skip_all(o, sc, b, cfg.err[0] ? cfg.err : "setup failed");
                return;
        }
        if (is_shm_backend(b))
                bench_throttle_describe(st, desc, sizeof(desc));
        else if (b->describe)
                b->describe(st, desc, sizeof(desc));
        for (unsigned p = 0; p < o->nprocs; p++)
                for (unsigned w = 0; w < o->nwork; w++) {
                        struct run_spec rs = {sc,
                                              cfg.keys,
                                              b,
                                              st,
                                              o->procs[p],
                                              o,
                                              p * o->nwork + w,
                                              env.cal.iters[w]};
                        struct result *r = result_get(sc, b, o->procs[p], o->work_ns[w]);
                        if (!r)
                                break;
                        if (!r->ok)
                                snprintf(r->note, sizeof(r->note), "%s", desc);
                        if (strstr(desc, "FELL BACK"))
                                r->fell_back |= 1u << round;
                        run_config(&rs, r, round);
                }
        b->teardown(st);
}

static int in_list(const char *list, const char *name)
{
        size_t n = strlen(name);
        for (const char *p = list; p && *p;) {
                size_t l = strcspn(p, ",");
                if (l == n && strncmp(p, name, n) == 0)
                        return 1;
                p += l + (p[l] == ',');
        }
        return list == NULL;
}

/*
 * One scenario in round ROUND: the selected backends in an order rotated by the round (round r
 * starts at backend r mod n), each set up afresh.
 */
static void run_scenario(const struct opts *o, const struct scen *sc, unsigned round)
{
        const struct bench_backend *sel[MAX_BACKENDS];
        unsigned n = 0;
        if (sc->skip) {
                skip_all(o, sc, NULL, sc->skip);
                return;
        }
        if (sc->dist == D_ZIPF && zipf_build(scen_keys(o, sc)) < 0) {
                skip_all(o, sc, NULL, "no memory for the Zipf table");
                return;
        }
        for (unsigned i = 0; i < nall; i++)
                if (in_list(o->backends, all_backends[i]->name))
                        sel[n++] = all_backends[i];
        double t0 = mono_s();
        fprintf(stderr, "bench_scale: round %u/%u %-9s", round + 1, o->rounds, sc->name);
        for (unsigned k = 0; k < n; k++) {
                const struct bench_backend *b = sel[(k + round) % n];
                fprintf(stderr, " %s", b->name);
                run_backend(o, sc, b, round);
        }
        fprintf(stderr, " (%.1f s)\n", mono_s() - t0);
}

/* After every round: the medians across rounds, and each backend's ratio to the floor. */
static const struct result *find_result(const char *scen, const char *backend, int procs,
                                        uint64_t work)
{
        for (unsigned i = 0; i < nresults; i++)
                if (results[i].ok && results[i].procs == procs && results[i].work_ns == work &&
                    strcmp(results[i].scenario, scen) == 0 &&
                    strcmp(results[i].backend, backend) == 0)
                        return &results[i];
        return NULL;
}

static void finalize(void)
{
        for (unsigned i = 0; i < nresults; i++) {
                struct result *r = &results[i];
                if (!r->ok)
                        continue;
                r->p50 = round_stat(r, r->r_p50).med;
                r->p99 = round_stat(r, r->r_p99).med;
                r->p999 = round_stat(r, r->r_p999).med;
        }
        for (unsigned i = 0; i < nresults; i++) {
                struct result *r = &results[i];
                const struct result *f = find_result(r->scenario, "floor", r->procs, r->work_ns);
                if (!f || !r->ok)
                        continue;
                double fm = round_stat(f, f->r_mops).med, m = round_stat(r, r->r_mops).med;
                r->floor_ratio = m > 0 ? fm / m : 0;
                r->floor_over_ns = round_stat(r, r->r_nsop).med - round_stat(f, f->r_nsop).med;
        }
}

/* The table: per scenario, per work level, the backends in their order, per process count. */
static void print_table(const struct opts *o)
{
        report_table_head(o->rounds);
        for (unsigned i = 0; i < NSCENS; i++) {
                if (!in_list(o->scenarios, scens[i].name) || !strcmp(scens[i].name, "wait"))
                        continue;
                if (scens[i].dist == D_CHURN)
                        report_churn_head(scen_keys(o, &scens[i]));
                for (unsigned w = 0; w < o->nwork; w++)
                        for (unsigned b = 0; b <= nall; b++)
                                for (unsigned p = 0; p < o->nprocs; p++)
                                        for (unsigned k = 0; k < nresults; k++) {
                                                const struct result *r = &results[k];
                                                const char *bn =
                                                    b < nall ? all_backends[b]->name : "-";
                                                if (r->scenario == scens[i].name &&
                                                    r->procs == o->procs[p] &&
                                                    r->work_ns == o->work_ns[w] &&
                                                    !strcmp(r->backend, bn))
                                                        report_row(r);
                                        }
        }
}

/*
 * The floor's variants, listed right after it: the clock isolated (backend_throttle.c).
 * Then floor-tsc, and throttle on the cheap clocks (shm/clock.h) next to them.
 */
static void floors_init(void)
{
        const struct bench_backend *floors[] = {&bench_floor_none,   &bench_floor_coarse,
                                                &bench_floor_tsc,    &bench_throttle_coarse,
                                                &bench_throttle_tsc, &bench_throttle_key};
        for (unsigned i = 0; i < sizeof(floors) / sizeof(floors[0]); i++)
                all_backends[nall++] = floors[i];
}

/*
 * Floor first: every other backend's ratio to it is known when its row is printed. Window last:
 * added after the others, it leaves their rows and columns where they were.
 */
static void backends_init(void)
{
        const struct bench_backend *cand[] = {
            &bench_floor,     &bench_throttle,  &bench_nginx_hash, &bench_mutex_local,
            &bench_redis_tcp, &bench_window,    &bench_nginx_real, &bench_sharded_mutex,
            &bench_cas_local, &bench_redis_unix};
        _Static_assert(sizeof(cand) <= sizeof(all_backends), "all_backends holds every candidate");
        for (unsigned i = 0; i < sizeof(cand) / sizeof(cand[0]); i++)
                if (cand[i]) {
                        all_backends[nall++] = cand[i];
                        if (cand[i] == &bench_floor)
                                floors_init();
                }
}

static void methods_text(char *out, size_t len)
{
        size_t at = 0;
        out[0] = '\0';
        for (unsigned i = 0; i < nall && at < len; i++)
                at += (size_t)snprintf(out + at, len - at, "  %-15s %s\n", all_backends[i]->name,
                                       all_backends[i]->what);
        const char *miss[] = {"nginx-hash", "nginx-real", "mutex-local", "sharded-mutex",
                              "cas-local",  "redis-tcp",  "redis-unix"};
        const void *have[] = {&bench_nginx_hash,    &bench_nginx_real, &bench_mutex_local,
                              &bench_sharded_mutex, &bench_cas_local,  &bench_redis_tcp,
                              &bench_redis_unix};
        for (unsigned i = 0; i < sizeof(miss) / sizeof(miss[0]) && at < len; i++)
                if (!have[i])
                        at += (size_t)snprintf(out + at, len - at,
                                               "  %-15s not built into this binary\n", miss[i]);
}

/* ---------------------------------------------------------------- --callgrind */

static const struct scen *scen_by_name(const char *name, size_t len)
{
        for (unsigned i = 0; i < NSCENS; i++)
                if (strlen(scens[i].name) == len && strncmp(scens[i].name, name, len) == 0)
                        return &scens[i];
        return NULL;
}

static const struct bench_backend *backend_by_name(const char *name)
{
        for (unsigned i = 0; i < nall; i++)
                if (strcmp(all_backends[i]->name, name) == 0)
                        return all_backends[i];
        return NULL;
}

/*
 * Churn under callgrind: worker 0 of 1; its first key (a hot one's set-up) outside the loop, and
 * in place of the driver process, one eviction pass (b->maintain) after every CG_BATCH tries,
 * outside fixed_loop_churn too.
 */
#define CG_BATCH 4096u
static void cg_churn(const struct bench_backend *b, void *st, void *h, uint64_t keys, uint64_t n,
                     struct tally *t)
{
        struct churn ch;
        if (churn_init(&ch, keys, SEQ_LEN_QUICK, 0, 1, 0) < 0)
                return;
        b->try_key(h, ch.hot[0].idx, ch.hot[0].key, ch.hot[0].len, 1); /* first-use set-up */
        for (uint64_t done = 0; done < n; done += CG_BATCH) {
                fixed_loop_churn(b, h, &ch, n - done < CG_BATCH ? n - done : CG_BATCH, t);
                if (b->maintain)
                        b->maintain(st);
        }
        churn_free(&ch);
}

/*
 * Inside valgrind: one process, CG_OPS tries in fixed_loop or fixed_loop_churn (the only
 * functions collected). Churn's eviction passes are made in this process (cg_churn).
 */
static int cg_child(const struct opts *o)
{
        const char *comma = strchr(o->cg_run, ',');
        const struct scen *sc = comma ? scen_by_name(o->cg_run, (size_t)(comma - o->cg_run)) : 0;
        const struct bench_backend *b = comma ? backend_by_name(comma + 1) : NULL;
        struct bench_cfg cfg;
        struct tally t = {0};
        struct op *ops = NULL;
        if (!sc || !b || (sc->dist == D_ZIPF && zipf_build(scen_keys(o, sc)) < 0))
                return 1;
        cfg_for(o, sc, scen_keys(o, sc), &cfg);
        cfg.procs = 1;
        cfg.driver = 0;
        void *st = b->setup(&cfg);
        if (sc->dist != D_CHURN)
                ops = seq_build(sc->dist == D_ZIPF, cfg.keys, SEQ_LEN_QUICK, 0);
        void *h = st && (ops || sc->dist == D_CHURN) ? b->attach(st) : NULL;
        if (h && sc->dist == D_CHURN) {
                cg_churn(b, st, h, cfg.keys, o->cg_ops, &t);
        } else if (h && ops) {
                b->try_key(h, ops[0].idx, ops[0].key, ops[0].len, 1); /* first-use set-up */
                fixed_loop(b, h, ops, SEQ_LEN_QUICK - 1, o->cg_ops, &t);
        }
        if (h)
                b->detach(h);
        if (st)
                b->teardown(st);
        free(ops);
        printf("ops %" PRIu64 " admitted %" PRIu64 " denied %" PRIu64 " errors %" PRIu64 "\n",
               t.ops, t.yes, t.no, t.bad);
        return h ? 0 : 1;
}

/* Total Ir from a callgrind output file ("summary:" or "totals:" line); -1 if absent. */
static double cg_total(const char *path)
{
        char line[512];
        double v = -1;
        FILE *f = fopen(path, "r");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, "summary:", 8) == 0 || strncmp(line, "totals:", 7) == 0)
                        v = strtod(strchr(line, ':') + 1, NULL);
        fclose(f);
        return v;
}

/* What the child's collected tries returned (its last stdout line); 0, or -1 if unreadable. */
static int cg_counts(const char *path, struct tally *t)
{
        unsigned long long ops, yes, no, bad;
        FILE *f = fopen(path, "r");
        int rc = -1;
        if (!f)
                return -1;
        if (fscanf(f, "ops %llu admitted %llu denied %llu errors %llu", &ops, &yes, &no, &bad) ==
            4) {
                *t = (struct tally){.ops = ops, .yes = yes, .no = no, .bad = bad};
                rc = 0;
        }
        fclose(f);
        return rc;
}

static double cg_one(const struct opts *o, const char *scen, const char *backend, unsigned n,
                     struct tally *t)
{
        char out[128], counts[160], cmd[1024];
        snprintf(out, sizeof(out), "/tmp/bench_scale.cg.%ld.%u", (long)getpid(), n);
        snprintf(counts, sizeof(counts), "%s.counts", out);
        snprintf(cmd, sizeof(cmd),
                 "valgrind --tool=callgrind '--toggle-collect=fixed_loop*' --callgrind-out-file=%s "
                 "/proc/%ld/exe --cg-run %s,%s --cg-ops %" PRIu64 " --backing %s%s "
                 ">%s 2>/dev/null",
                 out, (long)getpid(), scen, backend, o->cg_ops, o->backing,
                 o->quick ? " --quick" : "", counts);
        int rc = system(cmd);
        double ir = rc == 0 ? cg_total(out) : -1;
        if (cg_counts(counts, t) < 0)
                *t = (struct tally){0};
        unlink(out);
        unlink(counts);
        return ir;
}

/* The admitted/denied counts of every collected run, printed below the table. */
static char cg_mix[4096];
static size_t cg_mix_at;

static void cg_mix_add(const char *scen, const char *backend, const struct tally *t, int first)
{
        if (cg_mix_at >= sizeof(cg_mix))
                return;
        if (first)
                cg_mix_at += (size_t)snprintf(cg_mix + cg_mix_at, sizeof(cg_mix) - cg_mix_at,
                                              "  %-8s", scen);
        if (cg_mix_at < sizeof(cg_mix))
                cg_mix_at += (size_t)snprintf(cg_mix + cg_mix_at, sizeof(cg_mix) - cg_mix_at,
                                              "%s %s %" PRIu64 "/%" PRIu64 "%s", first ? "" : ",",
                                              backend, t->yes, t->no, t->bad ? " ERRORS" : "");
}

static void cg_scenario(const struct opts *o, const struct scen *sc, unsigned *n, FILE *out)
{
        int first = 1;
        fprintf(out, "%-9s", sc->name);
        for (unsigned i = 0; i < nall; i++) {
                const struct bench_backend *b = all_backends[i];
                struct bench_cfg cfg;
                struct tally t;
                if (!in_list(o->backends, b->name))
                        continue;
                cfg_for(o, sc, scen_keys(o, sc), &cfg);
                if (strncmp(b->name, "redis", 5) == 0 || sc->skip || (b->skip && b->skip(&cfg))) {
                        fprintf(out, " %12s", "-");
                        continue;
                }
                fflush(out);
                double ir = cg_one(o, sc->name, b->name, (*n)++, &t);
                if (ir < 0)
                        fprintf(out, " %12s", "failed");
                else
                        fprintf(out, " %12.1f", ir / (double)o->cg_ops);
                cg_mix_add(sc->name, b->name, &t, first);
                first = 0;
        }
        fprintf(out, "\n");
        if (!first && cg_mix_at < sizeof(cg_mix))
                cg_mix_at += (size_t)snprintf(cg_mix + cg_mix_at, sizeof(cg_mix) - cg_mix_at, "\n");
}

static int cg_driver(const struct opts *o, FILE *out)
{
        unsigned n = 0;
        fprintf(out,
                "\ninstructions per acquisition (valgrind --tool=callgrind --toggle-collect="
                "fixed_loop*, %" PRIu64 " tries\nper run, 1 process; keys inserted and set-up done "
                "outside fixed_loop). Valgrind does not run the\nvDSO: clock_gettime is a real "
                "syscall there, and its kernel-side work is not counted. redis: its\nwork is in "
                "another process, not counted. The loop's own cost (reading the op record, the\n"
                "indirect call, counting) is included for every backend alike. churn: the key "
                "stream's\nnew keys are inserts; throttle's eviction pass (the driver's) runs in "
                "the process every %u\ntries, outside the count, with no reader inside a call: "
                "its table stays emptier than with\nthe timed run's driver, so that count is a "
                "lower bound (idle eviction also depends on\nvalgrind's speed).\n\n%-9s",
                o->cg_ops, CG_BATCH, "scenario");
        for (unsigned i = 0; i < nall; i++)
                if (in_list(o->backends, all_backends[i]->name))
                        fprintf(out, " %12s", all_backends[i]->name);
        fprintf(out, "\n");
        for (unsigned i = 0; i < NSCENS; i++)
                if (in_list(o->scenarios, scens[i].name))
                        cg_scenario(o, &scens[i], &n, out);
        if (cg_mix_at)
                fprintf(out,
                        "\nadmitted/denied of the collected tries, the mix each count was made "
                        "on ('-' above: not run;\nredis: its work is elsewhere; window: not above "
                        "100000 keys):\n%s",
                        cg_mix);
        return 0;
}

/* ---------------------------------------------------------------- main */

static void run_wait(const struct opts *o, struct wait_result *w, unsigned *nw)
{
        if (!in_list(o->backends, "throttle") || !in_list(o->scenarios, "wait"))
                return;
        for (unsigned p = 0; p < o->nprocs && *nw < MAX_WAIT; p++)
                bench_throttle_wait(o->backing, o->procs[p], o->wait_rate, o->quick ? 0.2 : 1.0,
                                    o->pin, &w[(*nw)++]);
}

static void finish(const struct opts *o, const struct sysinfo *si, const struct wait_result *w,
                   unsigned nw)
{
        const char *names[MAX_BACKENDS];
        for (unsigned i = 0; i < nall; i++)
                names[i] = all_backends[i]->name;
        if (o->json)
                report_json(stdout, o, si, &env, results, nresults, w, nw);
        else {
                report_run_notes(o, &env, results, nresults);
                print_table(o);
                report_floors(o, results, nresults);
                report_leads(o, results, nresults, names, nall);
                if (nw)
                        report_wait(w, nw);
                report_targets(o, results, nresults);
                report_mix(results, nresults);
        }
        if (o->out_dir)
                report_out_dir(o, si, &env, results, nresults, w, nw);
        if (o->baseline)
                baseline_compare(o->baseline, results, nresults);
        if (o->baseline_save && baseline_save(o->baseline_save, results, nresults) < 0)
                fprintf(stderr, "bench_scale: cannot write %s\n", o->baseline_save);
}

int main(int argc, char **argv)
{
        static struct wait_result w[MAX_WAIT];
        struct opts o;
        struct sysinfo si;
        char methods[8192];
        unsigned nw = 0;
        int rc = opts_parse(argc, argv, &o);
        if (rc != 0) {
                opts_usage(rc > 0 ? stdout : stderr);
                return rc > 0 ? 0 : 1;
        }
        backends_init();
        if (o.cg_run)
                return cg_child(&o);
        scale_sysinfo_read(&si);
        clocks_measure(&env.clk);
        work_calibrate(o.work_ns, o.nwork, &env.cal);
        methods_text(methods, sizeof(methods));
        if (!o.json)
                report_header(&o, &si, methods, &env);
        struct steal_snap s0, sa, sb;
        double t0 = mono_s();
        steal_read(&s0);
        for (unsigned round = 0; round < o.rounds; round++) {
                steal_read(&sa);
                for (unsigned i = 0; i < NSCENS; i++)
                        if (in_list(o.scenarios, scens[i].name))
                                run_scenario(&o, &scens[i], round);
                steal_read(&sb);
                env.steal_round[round] = steal_pct(&sa, &sb);
                env.other_round[round] = other_pct(&sa, &sb);
        }
        env.rounds = o.rounds;
        run_wait(&o, w, &nw);
        steal_read(&sb);
        env.steal_all = steal_pct(&s0, &sb);
        env.other_all = other_pct(&s0, &sb);
        env.secs = mono_s() - t0;
        finalize();
        finish(&o, &si, w, nw);
        if (o.callgrind) /* with --json, stdout holds the document: the table goes to stderr */
                cg_driver(&o, o.json ? stderr : stdout);
        return setup_failed;
}

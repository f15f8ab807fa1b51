/*
 * bench_compose.c - what a composed call costs: thr_compose_try of 3 members, next to the 3
 * separate thr_limiter_try calls it replaces and to 3 times the CAS floor, for 1 key and 10 000
 * keys, with 1, 2 and 8 processes, measured side by side in one run.
 *
 *   bench_compose [--seconds S] [--runs R] [--procs LIST] [--mix mixed|gcra3|both]
 *                 [--backing auto|hugetlbfs|shm] [--out DIR] [--quick] [--callgrind [--cg-ops N]]
 *
 * Mixes (--mix; default both, one after the other):
 *   mixed  members: a GCRA limiter (10^9 a second, burst 10^9), a window limiter (100 units per
 *          1 us: no key is tried that often, it never denies), a budget limiter (initial balance
 *          2^61: never runs out); throttle-net's requests / tokens / budget composition.
 *   gcra3  three GCRA limiters of those parameters: the members' decisions are the floor's (GCRA
 *          on one word), so the ratio to the floor is the protocol's cost alone.
 * Methods, each on the same three keys (key "key:<i>" of each of the 3 member limiters; the same
 * i for the three, drawn at random per call, uniform over the key set; 1 key: always key 0):
 *   compose  thr_compose_try of the 3 members, cost 1 each, through thr_arena_open and
 *            thr_limiter_open in each process (the public path);
 *   tries    thr_limiter_try on each of the 3 (cost 1, a struct thr_result each), all three made
 *            every call (none denies here; a caller composing by hand would also need to give
 *            back what a later denial wasted, which is not possible with tries);
 *   floor3   3 x bench_scale's floor: per member, read the arena clock (shm_now_ns: the vDSO
 *            clock_gettime the library makes), load one 64-bit word, GCRA in whole ns, CAS it;
 *            direct-indexed (no hash, no key compare, no reader section) over the slots of three
 *            further GCRA tables of the same geometry in the same arena (same backing, pages).
 * Every key of the three member limiters is inserted before any timing, so a call measures
 * lookup + decision + CAS (and for compose: journal, marks, status CAS, replacements).
 *
 * Method: per mix and key set, one arena (6 limiters: the 3 members, the 3 floor tables); per
 * process count, the workers are forked once (each attaches after fork and builds its own key
 * sequence, a cyclic array of 2^18 precomputed 16-byte records), then R + 1 runs, the first a
 * warm-up not reported. A run measures every method once for S seconds, the first method
 * rotating from run to run, so drift hits all three alike and the ratios are taken within a run.
 * A measurement starts every worker together (a barrier in a shared anonymous mapping), lasts S
 * seconds (the parent sleeps, then raises a stop flag read once per 64 calls), and each worker
 * counts its calls and its wall and CPU time. Reported, median (min-max) over the R runs:
 *   ns/call   wall ns per call in one process (its seconds / its calls), averaged over workers;
 *   ratios    per run, compose ns/call / tries ns/call and / floor3 ns/call; median of those;
 *   cpu ns    CPU time of all workers / all calls (robust to time-sharing with 8 processes on
 *             fewer CPUs); Mcalls/s: all calls / S, aggregate.
 * and per method the admitted fraction, denials, -EBUSY (compose: other calls kept settling its
 * keys) and errors. Benchmarks report and never assert: exit 1 only if nothing could be set up.
 *
 * --callgrind: afterwards, for each mix, key set and method, valgrind --tool=callgrind
 * --toggle-collect='cg_loop*' runs this program on a fixed number of calls in one process (set-up,
 * key inserts and the first call outside the collected loop): instructions per call.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <throttle/throttle.h>

#include "scale_keys.h"
#include "shm.h"
#include "sysinfo.h"

/* ---------------------------------------------------------------- parameters */

#define NMEM          3
#define MAX_RUNS      31
#define MAX_PROCS     64
#define MAX_PLIST     8
#define SEQ_LEN       (1u << 18)
#define SEQ_LEN_QUICK (1u << 12)
#define CHUNK         64u
#define CG_OPS        100000ull
#define MIN_CAPACITY  16u

#define GCRA_RATE   1000000000ull /* per second, burst as much: never denies */
#define WINDOW_N    100u          /* units per WINDOW_W_NS: never reached by one key */
#define WINDOW_W_NS 1000u
#define BUDGET_INIT (1ull << 61) /* a new key's balance: never runs out */

enum mix { MIX_MIXED, MIX_GCRA3, NMIX };
enum meth { M_COMPOSE, M_TRIES, M_FLOOR, NMETH };

static const char *const mix_name[NMIX] = {"mixed", "gcra3"};
static const char *const meth_name[NMETH] = {"compose", "tries", "floor3"};
static const char *const member_name[NMEM] = {"m0", "m1", "m2"};
static const char *const floor_name[NMEM] = {"f0", "f1", "f2"};

struct keyset {
        const char *name;
        uint64_t keys;
};
static const struct keyset keysets[] = {{"1", 1}, {"10k", 10000}};
#define NKEYSETS (sizeof(keysets) / sizeof(keysets[0]))

struct opts {
        double seconds;
        unsigned runs;
        int procs[MAX_PLIST];
        unsigned nprocs;
        unsigned mixes; /* bit per enum mix */
        const char *backing;
        const char *out_dir;
        bool quick, callgrind;
        uint64_t cg_ops;
        const char *cg_run; /* internal: "MIX,KEYSET,METHOD" inside valgrind */
        char cmdline[1024];
};

/* ---------------------------------------------------------------- output (stdout, and --out) */

static FILE *tee;

static void __attribute__((format(printf, 1, 2))) out(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        if (tee) {
                va_start(ap, fmt);
                vfprintf(tee, fmt, ap);
                va_end(ap);
        }
}

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

static void sleep_s(double s)
{
        struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
        while (nanosleep(&t, &t) < 0 && errno == EINTR)
                ;
}

/* ---------------------------------------------------------------- the arena */

struct arena_info {
        char path[256];
        char desc[200];
        uint64_t keys;
};

static enum shm_hugepages huge_of(const char *backing)
{
        if (strcmp(backing, "hugetlbfs") == 0)
                return SHM_HUGE_REQUIRE;
        if (strcmp(backing, "shm") == 0)
                return SHM_HUGE_OFF;
        return SHM_HUGE_AUTO;
}

static void gcra_spec(struct shm_limiter_spec *l, const char *name, uint64_t cap)
{
        *l = (struct shm_limiter_spec){.kind = THR_KIND_GCRA,
                                       .rate_n = GCRA_RATE,
                                       .period_ns = 1000000000ull,
                                       .burst = GCRA_RATE,
                                       .initial = GCRA_RATE,
                                       .capacity = cap,
                                       .on_full = THR_FULL_DENY};
        snprintf(l->name, sizeof(l->name), "%s", name);
}

/* Member I of MIX: mixed is GCRA, window, budget; gcra3 three GCRA. */
static void member_spec(struct shm_limiter_spec *l, enum mix mix, int i, uint64_t cap)
{
        gcra_spec(l, member_name[i], cap);
        if (mix == MIX_GCRA3 || i == 0)
                return;
        if (i == 1) {
                *l = (struct shm_limiter_spec){.kind = THR_KIND_WINDOW,
                                               .rate_n = WINDOW_N,
                                               .period_ns = WINDOW_W_NS,
                                               .capacity = cap,
                                               .on_full = THR_FULL_DENY};
        } else {
                *l = (struct shm_limiter_spec){.kind = THR_KIND_BUDGET,
                                               .initial = BUDGET_INIT,
                                               .capacity = cap,
                                               .on_full = THR_FULL_DENY};
        }
        snprintf(l->name, sizeof(l->name), "%s", member_name[i]);
}

/* The slots of table NAME of M, and how many. */
static struct thr_slot *table_slots(const struct shm_map *m, const char *name, uint64_t *nslots)
{
        int d = shm_dir_find(m, name);
        if (d < 0)
                return NULL;
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(m->base, shm_hdr(m)->dir_off) + d;
        const struct thr_table *tb = shm_at(m->base, de->table_off);
        *nslots = (uint64_t)tb->nshards * tb->shard_slots;
        return shm_at(m->base, tb->slots_off);
}

static unsigned arena_seq;

/* Insert every key of the 3 member limiters through the client (one call of cost 1 each). */
static int insert_all(const struct arena_info *ai, char *err, size_t errlen)
{
        thr_arena *a = NULL;
        thr_limiter *l[NMEM] = {0};
        char key[32];
        int rc = thr_arena_open(ai->path, 0, &a);
        for (int i = 0; rc == 0 && i < NMEM; i++)
                rc = thr_limiter_open(a, member_name[i], &l[i]);
        for (uint64_t k = 0; rc >= 0 && k < ai->keys; k++) {
                int n = snprintf(key, sizeof(key), "key:%" PRIu64, k);
                for (int i = 0; rc >= 0 && i < NMEM; i++) {
                        rc = thr_limiter_try(l[i], key, (size_t)n, 1, NULL);
                        if (rc < 0)
                                snprintf(err, errlen, "inserting %s into %s: %s", key,
                                         member_name[i], thr_strerror(rc));
                }
        }
        for (int i = 0; i < NMEM; i++)
                if (l[i])
                        thr_limiter_close(l[i]);
        if (a)
                thr_arena_close(a);
        if (rc < 0 && !err[0])
                snprintf(err, errlen, "opening %.200s: %s", ai->path, thr_strerror(rc));
        return rc < 0 ? rc : 0;
}

/* The arena of MIX for KEYS keys: 3 member limiters, 3 floor tables (words zeroed), keys in. */
static int arena_build(enum mix mix, uint64_t keys, const char *backing, struct arena_info *ai,
                       char *err, size_t errlen)
{
        uint64_t cap = keys < MIN_CAPACITY ? MIN_CAPACITY : keys;
        struct shm_limiter_spec lims[2 * NMEM];
        for (int i = 0; i < NMEM; i++) {
                member_spec(&lims[i], mix, i, cap);
                gcra_spec(&lims[NMEM + i], floor_name[i], cap);
        }
        struct shm_arena_spec spec = {.hugepages = huge_of(backing),
                                      .mode = 0600,
                                      .gid = (gid_t)-1,
                                      .clock = THR_CLOCK_MONOTONIC,
                                      .max_limiters = 2 * NMEM,
                                      .max_readers = 256,
                                      .nlimiters = 2 * NMEM,
                                      .limiters = lims};
        struct shm_map m = {0};
        snprintf(spec.name, sizeof(spec.name), "bench-compose.%ld.%u", (long)getpid(), arena_seq++);
        int rc = shm_arena_create(&spec, &m, err, errlen);
        if (rc < 0)
                return rc;
        const struct thr_hdr *h = shm_hdr(&m);
        *ai = (struct arena_info){.keys = keys};
        snprintf(ai->path, sizeof(ai->path), "%s", m.path);
        snprintf(ai->desc, sizeof(ai->desc), "%s, page %" PRIu64 " kB, arena %.1f MiB%s",
                 h->backing == THR_BACKING_HUGETLBFS ? "hugetlbfs"
                 : h->thp_bytes                      ? "shm+thp"
                                                     : "shm",
                 h->page_size / 1024, (double)h->arena_size / 1048576.0,
                 rc == 1 ? " (FELL BACK from hugetlbfs: pool too small)" : "");
        for (int i = 0; i < NMEM; i++) {
                uint64_t n = 0;
                struct thr_slot *s = table_slots(&m, floor_name[i], &n);
                uint64_t scale = s ? (n << 32) / keys : 0;
                for (uint64_t k = 0; s && k < keys; k++)
                        atomic_store_explicit(&s[(k * scale) >> 32].state, 0, memory_order_relaxed);
        }
        shm_arena_detach(&m);
        err[0] = '\0';
        rc = insert_all(ai, err, errlen);
        if (rc < 0)
                unlink(ai->path);
        return rc;
}

/* ---------------------------------------------------------------- a process's handles */

struct handle {
        thr_arena *a;
        thr_limiter *l[NMEM];
        struct shm_map fm; /* the floor's mapping */
        const struct thr_hdr *h;
        struct thr_slot *fs[NMEM];
        uint64_t scale; /* floor word of key i: (i * scale) >> 32, as bench_scale's floor */
};

static void handle_close(struct handle *h)
{
        for (int i = 0; i < NMEM; i++)
                if (h->l[i])
                        thr_limiter_close(h->l[i]);
        if (h->a)
                thr_arena_close(h->a);
        shm_arena_detach(&h->fm);
        *h = (struct handle){0};
}

static int handle_open(const struct arena_info *ai, struct handle *h)
{
        char err[256];
        uint64_t n = 0;
        *h = (struct handle){0};
        int rc = thr_arena_open(ai->path, 0, &h->a);
        for (int i = 0; rc == 0 && i < NMEM; i++)
                rc = thr_limiter_open(h->a, member_name[i], &h->l[i]);
        if (rc == 0)
                rc = shm_arena_attach(ai->path, true, &h->fm, err, sizeof(err));
        if (rc == 0) {
                h->h = shm_hdr(&h->fm);
                for (int i = 0; rc == 0 && i < NMEM; i++)
                        if (!(h->fs[i] = table_slots(&h->fm, floor_name[i], &n)))
                                rc = -ENOENT;
                h->scale = (n << 32) / ai->keys;
        }
        if (rc < 0)
                handle_close(h);
        return rc;
}

/* ---------------------------------------------------------------- the three methods */

/* This process's composed denials by the first denying member (res.denied). */
static uint64_t denied_by[NMEM];

static inline int call_compose(const struct handle *h, const struct op *op)
{
        struct thr_member m[NMEM];
        struct thr_compose_result r;
        for (int i = 0; i < NMEM; i++)
                m[i] =
                    (struct thr_member){.lim = h->l[i], .key = op->key, .len = op->len, .cost = 1};
        int rc = thr_compose_try(m, NMEM, &r);
        if (__builtin_expect(rc == 0, 0) && r.denied < NMEM)
                denied_by[r.denied]++;
        return rc;
}

static inline int call_tries(const struct handle *h, const struct op *op)
{
        struct thr_result r;
        int a = thr_limiter_try(h->l[0], op->key, op->len, 1, &r);
        int b = thr_limiter_try(h->l[1], op->key, op->len, 1, &r);
        int c = thr_limiter_try(h->l[2], op->key, op->len, 1, &r);
        return a < 0 ? a : b < 0 ? b : c < 0 ? c : a & b & c;
}

/* bench_scale's floor on one word: clock, load, GCRA in whole ns (T 1, B*T 1e9), CAS. */
static inline int floor_one(const struct thr_hdr *hd, _Atomic uint64_t *w)
{
        uint64_t now = shm_now_ns(hd);
        uint64_t old = atomic_load_explicit(w, memory_order_acquire);
        for (;;) {
                uint64_t nv = (old > now ? old : now) + 1;
                if (nv - now > GCRA_RATE)
                        return 0;
                if (atomic_compare_exchange_weak_explicit(w, &old, nv, memory_order_acq_rel,
                                                          memory_order_acquire))
                        return 1;
        }
}

static inline int call_floor3(const struct handle *h, const struct op *op)
{
        uint64_t s = ((uint64_t)op->idx * h->scale) >> 32;
        int a = floor_one(h->h, &h->fs[0][s].state);
        int b = floor_one(h->h, &h->fs[1][s].state);
        int c = floor_one(h->h, &h->fs[2][s].state);
        return a & b & c;
}

struct tally {
        uint64_t calls, yes, no, busy, bad;
        uint64_t by[NMEM]; /* compose: denials by the first denying member */
        int first_err;
};

static inline void tally_rc(struct tally *t, int rc)
{
        t->yes += rc == 1;
        t->no += rc == 0;
        t->busy += rc == -EBUSY;
        if (__builtin_expect(rc < 0 && rc != -EBUSY, 0)) {
                t->bad++;
                if (!t->first_err)
                        t->first_err = rc;
        }
}

/* ---------------------------------------------------------------- shared control block */

#define MAX_GEN ((MAX_RUNS + 1) * NMETH)

struct wslot {
        uint64_t calls[MAX_GEN + 1];
        double secs[MAX_GEN + 1];
        double cpu[MAX_GEN + 1];
        struct tally t[NMETH]; /* measured runs only */
        int attach_rc;
} __attribute__((aligned(64)));

struct ctl {
        _Atomic int ready;
        _Atomic unsigned go;
        char pad1[56];
        _Atomic unsigned stop; /* own line: read by every worker once per chunk */
        char pad2[60];
        int method[MAX_GEN + 1];
        int measured[MAX_GEN + 1];
        struct wslot w[];
};

/* The timed loops (until STOP reaches GEN) and the fixed-count ones callgrind collects. */
#define DEFINE_LOOPS(NAME, CALL)                                                                   \
        static __attribute__((noinline)) void timed_##NAME(                                        \
            const struct handle *h, const struct op *ops, size_t mask, struct ctl *c,              \
            unsigned gen, struct tally *t)                                                         \
        {                                                                                          \
                size_t pos = 0;                                                                    \
                while (atomic_load_explicit(&c->stop, memory_order_relaxed) < gen) {               \
                        for (unsigned i = 0; i < CHUNK; i++)                                       \
                                tally_rc(t, CALL(h, &ops[(pos + i) & mask]));                      \
                        pos = (pos + CHUNK) & mask;                                                \
                        t->calls += CHUNK;                                                         \
                }                                                                                  \
        }                                                                                          \
        __attribute__((noinline)) void cg_loop_##NAME(const struct handle *h,                      \
                                                      const struct op *ops, size_t mask,           \
                                                      uint64_t n, struct tally *t);                \
        __attribute__((noinline)) void cg_loop_##NAME(const struct handle *h,                      \
                                                      const struct op *ops, size_t mask,           \
                                                      uint64_t n, struct tally *t)                 \
        {                                                                                          \
                for (uint64_t i = 0; i < n; i++)                                                   \
                        tally_rc(t, CALL(h, &ops[i & mask]));                                      \
                t->calls += n;                                                                     \
        }

DEFINE_LOOPS(compose, call_compose)
DEFINE_LOOPS(tries, call_tries)
DEFINE_LOOPS(floor3, call_floor3)

static void timed(int m, const struct handle *h, const struct op *ops, size_t mask, struct ctl *c,
                  unsigned gen, struct tally *t)
{
        if (m == M_COMPOSE)
                timed_compose(h, ops, mask, c, gen, t);
        else if (m == M_TRIES)
                timed_tries(h, ops, mask, c, gen, t);
        else
                timed_floor3(h, ops, mask, c, gen, t);
}

static void cg_loop(int m, const struct handle *h, const struct op *ops, size_t mask, uint64_t n,
                    struct tally *t)
{
        if (m == M_COMPOSE)
                cg_loop_compose(h, ops, mask, n, t);
        else if (m == M_TRIES)
                cg_loop_tries(h, ops, mask, n, t);
        else
                cg_loop_floor3(h, ops, mask, n, t);
}

/* ---------------------------------------------------------------- workers */

static void wait_go(struct ctl *c, unsigned gen)
{
        atomic_fetch_add_explicit(&c->ready, 1, memory_order_acq_rel);
        while (atomic_load_explicit(&c->go, memory_order_acquire) < gen)
                sched_yield();
}

static void tally_add(struct tally *into, const struct tally *t)
{
        into->calls += t->calls;
        into->yes += t->yes;
        into->no += t->no;
        into->busy += t->busy;
        into->bad += t->bad;
        for (int i = 0; i < NMEM; i++)
                into->by[i] += t->by[i];
        if (!into->first_err)
                into->first_err = t->first_err;
}

__attribute__((noreturn)) static void worker(const struct opts *o, const struct arena_info *ai,
                                             struct ctl *c, int wi, unsigned ngen)
{
        size_t n = o->quick ? SEQ_LEN_QUICK : SEQ_LEN;
        struct wslot *w = &c->w[wi];
        struct handle h;
        struct op *ops = seq_build(0, ai->keys, n, wi);
        w->attach_rc = ops ? handle_open(ai, &h) : -ENOMEM;
        for (unsigned g = 1; g <= ngen; g++) {
                struct tally t = {0};
                uint64_t by0[NMEM];
                memcpy(by0, denied_by, sizeof(by0));
                wait_go(c, g);
                double t0 = mono_s(), c0 = cpu_s();
                if (w->attach_rc == 0)
                        timed(c->method[g], &h, ops, n - 1, c, g, &t);
                w->secs[g] = mono_s() - t0;
                w->cpu[g] = cpu_s() - c0;
                for (int i = 0; i < NMEM; i++)
                        t.by[i] = denied_by[i] - by0[i];
                w->calls[g] = t.calls;
                if (c->measured[g])
                        tally_add(&w->t[c->method[g]], &t);
        }
        wait_go(c, ngen + 1);
        if (w->attach_rc == 0)
                handle_close(&h);
        free(ops);
        _exit(0);
}

/* ---------------------------------------------------------------- one configuration */

struct result {
        enum mix mix;
        const struct keyset *ks;
        int procs;
        bool ok;
        char note[160];
        unsigned nruns;
        double ns[NMETH][MAX_RUNS];  /* wall ns per call in one process, mean over workers */
        double cpu[NMETH][MAX_RUNS]; /* CPU ns per call, all workers */
        double mc[NMETH][MAX_RUNS];  /* aggregate M calls/s */
        struct tally t[NMETH];
};

static struct result results[NMIX * NKEYSETS * MAX_PLIST];
static unsigned nresults;

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

static int drive(const struct opts *o, struct ctl *c, int procs, unsigned ngen)
{
        unsigned g = 0;
        for (unsigned r = 0; r <= o->runs; r++)
                for (unsigned i = 0; i < NMETH; i++) {
                        g++;
                        c->method[g] = (int)((r + i) % NMETH);
                        c->measured[g] = r > 0;
                        if (wait_ready(c, procs * (int)g) < 0)
                                return -ETIMEDOUT;
                        atomic_store_explicit(&c->go, g, memory_order_release);
                        sleep_s(o->seconds);
                        atomic_store_explicit(&c->stop, g, memory_order_release);
                }
        if (wait_ready(c, procs * (int)(ngen + 1)) < 0)
                return -ETIMEDOUT;
        atomic_store_explicit(&c->go, ngen + 1, memory_order_release);
        return 0;
}

static void collect(const struct opts *o, const struct ctl *c, struct result *r)
{
        unsigned g = NMETH; /* the warm-up run's generations come first */
        r->nruns = o->runs;
        for (unsigned run = 0; run < o->runs; run++)
                for (unsigned i = 0; i < NMETH; i++) {
                        int m = c->method[++g];
                        double ns = 0, cpu = 0, calls = 0, secs = 0;
                        for (int p = 0; p < r->procs; p++) {
                                const struct wslot *w = &c->w[p];
                                ns += w->calls[g] ? w->secs[g] * 1e9 / (double)w->calls[g] : 0;
                                cpu += w->cpu[g];
                                calls += (double)w->calls[g];
                                secs = w->secs[g] > secs ? w->secs[g] : secs;
                        }
                        r->ns[m][run] = ns / r->procs;
                        r->cpu[m][run] = calls > 0 ? cpu * 1e9 / calls : 0;
                        r->mc[m][run] = secs > 0 ? calls / secs / 1e6 : 0;
                }
        for (int m = 0; m < NMETH; m++)
                for (int p = 0; p < r->procs; p++)
                        tally_add(&r->t[m], &c->w[p].t[m]);
}

static void run_config(const struct opts *o, const struct arena_info *ai, struct result *r)
{
        unsigned ngen = (o->runs + 1) * NMETH;
        size_t sz = sizeof(struct ctl) + (size_t)r->procs * sizeof(struct wslot);
        pid_t pids[MAX_PROCS] = {0};
        struct ctl *c = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        int rc = 0;
        if (c == MAP_FAILED) {
                snprintf(r->note, sizeof(r->note), "mmap: %s", strerror(errno));
                return;
        }
        fflush(NULL);
        for (int i = 0; i < r->procs && rc == 0; i++) {
                pids[i] = fork();
                if (pids[i] == 0)
                        worker(o, ai, c, i, ngen);
                if (pids[i] < 0)
                        rc = -errno;
        }
        if (rc == 0)
                rc = drive(o, c, r->procs, ngen);
        for (int i = 0; i < r->procs; i++)
                if (pids[i] > 0) {
                        if (rc < 0)
                                kill(pids[i], SIGKILL);
                        waitpid(pids[i], NULL, 0);
                }
        for (int i = 0; rc == 0 && i < r->procs; i++)
                rc = c->w[i].attach_rc;
        if (rc < 0)
                snprintf(r->note, sizeof(r->note), "run failed: %s", thr_strerror(rc));
        else {
                collect(o, c, r);
                r->ok = true;
        }
        munmap(c, sz);
}

/* ---------------------------------------------------------------- statistics, report */

struct stat3 {
        double med, lo, hi;
};

static int cmp_d(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static struct stat3 stat_of(const double *v, unsigned n)
{
        double s[MAX_RUNS];
        if (n == 0)
                return (struct stat3){0};
        memcpy(s, v, n * sizeof(*v));
        qsort(s, n, sizeof(*s), cmp_d);
        double med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
        return (struct stat3){med, s[0], s[n - 1]};
}

static void fmt_stat(char *buf, size_t len, struct stat3 s, int prec)
{
        snprintf(buf, len, "%.*f (%.*f-%.*f)", prec, s.med, prec, s.lo, prec, s.hi);
}

static void ratio_runs(const struct result *r, int a, int b, const double (*v)[MAX_RUNS],
                       double *out)
{
        for (unsigned i = 0; i < r->nruns; i++)
                out[i] = v[b][i] > 0 ? v[a][i] / v[b][i] : 0;
}

static void report_header(const struct opts *o, const struct sysinfo *si, double load0)
{
        out("# bench_compose: thr_compose_try of 3 members vs 3 x thr_limiter_try vs 3 x floor\n");
        out("# command: %s\n", o->cmdline);
        out("# machine: %s, %ld cpus, kernel %s, clocksource %s, %s; load average %.2f at the "
            "start\n",
            si->cpu, si->cpus, si->kernel, si->clocksource, si->date, load0);
        out("# method: per mix, key set and process count: workers forked once, then 1 warm-up "
            "run + %u runs,\n#   each run measuring every method for %.3g s (first method "
            "rotating per run); median (min-max) over the runs.\n",
            o->runs, o->seconds);
        out("#   ns/call: wall ns per call in one process, mean over the workers; ratios: per "
            "run, then the median;\n#   cpu ns: all workers' CPU time / all calls; Mcalls/s: "
            "aggregate. The machine may be shared and noisy:\n#   compare within a run (the "
            "ratios), not across machines.\n");
        out("# mixed: members GCRA (1e9/s, burst 1e9), window (%u units per %u ns), budget "
            "(initial balance 2^61);\n#   gcra3: three GCRA limiters (1e9/s, burst 1e9). Every "
            "member cost 1; nothing should be denied.\n",
            WINDOW_N, WINDOW_W_NS);
        out("# compose: thr_compose_try(3 members); tries: thr_limiter_try x 3 (same keys); "
            "floor3: 3 x (shm_now_ns + load +\n#   GCRA in ns + CAS) on 3 words, direct-indexed "
            "over 3 GCRA tables of the same geometry in the same arena.\n#   Keys: \"key:<i>\", "
            "the same i for the 3 members, uniform at random per call (1 key: key 0); inserted "
            "before timing.\n");
}

static void report_table(const struct opts *o)
{
        char b[NMETH + 2][64];
        out("\nns per call (median (min-max) over %u runs; compose/x: per-run ratio of ns/call, "
            "median (min-max))\n",
            o->runs);
        out("%-6s %-5s %-5s %-24s %-24s %-24s %-19s %-19s\n", "mix", "keys", "procs",
            "compose ns/call", "3 tries ns/call", "3 floor ns/call", "compose/3tries",
            "compose/3floor");
        for (unsigned i = 0; i < nresults; i++) {
                const struct result *r = &results[i];
                if (!r->ok) {
                        out("%-6s %-5s %-5d %s\n", mix_name[r->mix], r->ks->name, r->procs,
                            r->note);
                        continue;
                }
                double rt[MAX_RUNS], rf[MAX_RUNS];
                ratio_runs(r, M_COMPOSE, M_TRIES, r->ns, rt);
                ratio_runs(r, M_COMPOSE, M_FLOOR, r->ns, rf);
                for (int m = 0; m < NMETH; m++)
                        fmt_stat(b[m], sizeof(b[m]), stat_of(r->ns[m], r->nruns), 1);
                fmt_stat(b[NMETH], sizeof(b[NMETH]), stat_of(rt, r->nruns), 2);
                fmt_stat(b[NMETH + 1], sizeof(b[NMETH + 1]), stat_of(rf, r->nruns), 2);
                out("%-6s %-5s %-5d %-24s %-24s %-24s %-19s %-19s\n", mix_name[r->mix], r->ks->name,
                    r->procs, b[0], b[1], b[2], b[3], b[4]);
        }
        out("\nCPU ns per call and aggregate M calls/s (medians), and what the measured calls "
            "returned\n(adm: admitted fraction; denied; busy: -EBUSY; err: other errors)\n");
        out("%-6s %-5s %-5s %-8s %9s %9s %9s %8s %10s %10s %6s\n", "mix", "keys", "procs", "method",
            "ns/call", "cpu ns", "Mcalls/s", "adm", "denied", "busy", "err");
        for (unsigned i = 0; i < nresults; i++) {
                const struct result *r = &results[i];
                for (int m = 0; r->ok && m < NMETH; m++) {
                        const struct tally *t = &r->t[m];
                        uint64_t all = t->yes + t->no + t->busy + t->bad;
                        out("%-6s %-5s %-5d %-8s %9.1f %9.1f %9.2f %8.6f %10" PRIu64 " %10" PRIu64
                            " %6" PRIu64 "%s%s\n",
                            mix_name[r->mix], r->ks->name, r->procs, meth_name[m],
                            stat_of(r->ns[m], r->nruns).med, stat_of(r->cpu[m], r->nruns).med,
                            stat_of(r->mc[m], r->nruns).med, all ? (double)t->yes / (double)all : 0,
                            t->no, t->busy, t->bad, t->first_err ? " first error: " : "",
                            t->first_err ? thr_strerror(t->first_err) : "");
                        if (m == M_COMPOSE && t->no)
                                out("%-6s %-5s %-5d   denied by member 0/1/2 (%s): %" PRIu64
                                    "/%" PRIu64 "/%" PRIu64 "\n",
                                    mix_name[r->mix], r->ks->name, r->procs,
                                    r->mix == MIX_MIXED ? "gcra/window/budget" : "gcra x3",
                                    t->by[0], t->by[1], t->by[2]);
                }
        }
        out("\nper run, compose/tries/floor3 ns/call (run r starts with method r mod 3):\n");
        for (unsigned i = 0; i < nresults; i++) {
                const struct result *r = &results[i];
                if (!r->ok)
                        continue;
                out("  %-6s %-4s %d proc:", mix_name[r->mix], r->ks->name, r->procs);
                for (unsigned k = 0; k < r->nruns; k++)
                        out(" %.0f/%.0f/%.0f", r->ns[M_COMPOSE][k], r->ns[M_TRIES][k],
                            r->ns[M_FLOOR][k]);
                out("\n");
        }
}

/* ---------------------------------------------------------------- --callgrind */

static int find_name(const char *const *names, int n, const char *s, size_t len)
{
        for (int i = 0; i < n; i++)
                if (strlen(names[i]) == len && strncmp(names[i], s, len) == 0)
                        return i;
        return -1;
}

/* Inside valgrind: "MIX,KEYSET,METHOD"; set-up and the first call outside cg_loop_*. */
static int cg_child(const struct opts *o)
{
        const char *c1 = strchr(o->cg_run, ','), *c2 = c1 ? strchr(c1 + 1, ',') : NULL;
        if (!c2)
                return 1;
        int mix = find_name(mix_name, NMIX, o->cg_run, (size_t)(c1 - o->cg_run));
        int m = find_name(meth_name, NMETH, c2 + 1, strlen(c2 + 1));
        int k = -1;
        for (unsigned i = 0; i < NKEYSETS; i++)
                if (strlen(keysets[i].name) == (size_t)(c2 - c1 - 1) &&
                    strncmp(keysets[i].name, c1 + 1, (size_t)(c2 - c1 - 1)) == 0)
                        k = (int)i;
        if (mix < 0 || m < 0 || k < 0)
                return 1;
        struct arena_info ai;
        struct handle h;
        struct tally t = {0};
        char err[256] = "";
        if (arena_build((enum mix)mix, keysets[k].keys, o->backing, &ai, err, sizeof(err)) < 0) {
                fprintf(stderr, "bench_compose: %s\n", err);
                return 1;
        }
        struct op *ops = seq_build(0, ai.keys, SEQ_LEN_QUICK, 0);
        int rc = ops ? handle_open(&ai, &h) : -ENOMEM;
        if (rc == 0) {
                struct tally first = {0};
                cg_loop(m, &h, ops, SEQ_LEN_QUICK - 1, 1, &first); /* first use: reader record */
                cg_loop(m, &h, ops, SEQ_LEN_QUICK - 1, o->cg_ops, &t);
                handle_close(&h);
        }
        unlink(ai.path);
        free(ops);
        printf("calls %" PRIu64 " admitted %" PRIu64 " denied %" PRIu64 " busy %" PRIu64
               " errors %" PRIu64 "\n",
               t.calls, t.yes, t.no, t.busy, t.bad);
        return rc == 0 ? 0 : 1;
}

static double cg_one(const struct opts *o, const char *run, struct tally *t)
{
        char outf[128], counts[160], cmd[1024], line[512];
        double ir = -1;
        unsigned long long calls, yes, no, busy, bad;
        snprintf(outf, sizeof(outf), "/tmp/bench_compose.cg.%ld", (long)getpid());
        snprintf(counts, sizeof(counts), "%s.counts", outf);
        snprintf(cmd, sizeof(cmd),
                 "valgrind --tool=callgrind '--toggle-collect=cg_loop_*' --callgrind-out-file=%s "
                 "/proc/%ld/exe --cg-run %s --cg-ops %" PRIu64 " --backing %s >%s 2>/dev/null",
                 outf, (long)getpid(), run, o->cg_ops, o->backing, counts);
        FILE *f = system(cmd) == 0 ? fopen(outf, "r") : NULL;
        while (f && fgets(line, sizeof(line), f))
                if (!strncmp(line, "summary:", 8) || !strncmp(line, "totals:", 7))
                        ir = strtod(strchr(line, ':') + 1, NULL);
        if (f)
                fclose(f);
        *t = (struct tally){0};
        f = fopen(counts, "r");
        if (f && fscanf(f, "calls %llu admitted %llu denied %llu busy %llu errors %llu", &calls,
                        &yes, &no, &busy, &bad) == 5)
                *t = (struct tally){.calls = calls, .yes = yes, .no = no, .busy = busy, .bad = bad};
        if (f)
                fclose(f);
        unlink(outf);
        unlink(counts);
        return ir;
}

static void cg_report(const struct opts *o)
{
        char mixline[2048] = "";
        size_t at = 0;
        out("\ninstructions per call (valgrind --tool=callgrind --toggle-collect='cg_loop_*', "
            "%" PRIu64 " calls per run,\n1 process; arena set-up, key inserts and the first call "
            "not counted; keys as above). Valgrind does\nnot run the vDSO: clock_gettime is a "
            "real syscall there and its kernel side is not counted. The loop's\nown cost "
            "(reading the op record, building the members, counting) is included for every "
            "method.\n\n",
            o->cg_ops);
        out("%-6s %-5s %10s %10s %10s %15s %15s\n", "mix", "keys", "compose", "3 tries", "3 floor",
            "compose/3tries", "compose/3floor");
        for (int mix = 0; mix < NMIX; mix++) {
                if (!(o->mixes & (1u << mix)))
                        continue;
                for (unsigned k = 0; k < NKEYSETS; k++) {
                        double ir[NMETH];
                        char run[64];
                        for (int m = 0; m < NMETH; m++) {
                                struct tally t;
                                snprintf(run, sizeof(run), "%s,%s,%s", mix_name[mix],
                                         keysets[k].name, meth_name[m]);
                                double v = cg_one(o, run, &t);
                                ir[m] = v < 0 ? -1 : v / (double)o->cg_ops;
                                if (at < sizeof(mixline))
                                        at += (size_t)snprintf(mixline + at, sizeof(mixline) - at,
                                                               "  %-28s admitted %" PRIu64
                                                               " denied %" PRIu64 " busy %" PRIu64
                                                               " errors %" PRIu64 "\n",
                                                               run, t.yes, t.no, t.busy, t.bad);
                        }
                        out("%-6s %-5s", mix_name[mix], keysets[k].name);
                        for (int m = 0; m < NMETH; m++)
                                if (ir[m] < 0)
                                        out(" %10s", "failed");
                                else
                                        out(" %10.1f", ir[m]);
                        if (ir[0] > 0 && ir[1] > 0 && ir[2] > 0)
                                out(" %15.2f %15.2f", ir[0] / ir[1], ir[0] / ir[2]);
                        out("\n");
                }
        }
        out("\nwhat the collected calls returned:\n%s", mixline);
}

/* ---------------------------------------------------------------- options, main */

static void usage(FILE *f)
{
        fprintf(f, "usage: bench_compose [--seconds S] [--runs R] [--procs LIST] "
                   "[--mix mixed|gcra3|both]\n"
                   "                     [--backing auto|hugetlbfs|shm] [--out DIR] [--quick] "
                   "[--callgrind [--cg-ops N]]\n"
                   "  defaults: 0.5 s per measurement, 5 runs (+1 warm-up), processes 1,2,8, "
                   "both mixes, backing auto;\n"
                   "  --quick: 0.05 s, 2 runs, processes 1,2 (explicit values win)\n");
}

static int parse_procs(const char *s, struct opts *o)
{
        o->nprocs = 0;
        while (*s && o->nprocs < MAX_PLIST) {
                char *end;
                long v = strtol(s, &end, 10);
                if (end == s || v < 1 || v > MAX_PROCS)
                        return -1;
                o->procs[o->nprocs++] = (int)v;
                s = *end == ',' ? end + 1 : end;
                if (*end && *end != ',')
                        return -1;
        }
        return o->nprocs ? 0 : -1;
}

static int parse(int argc, char **argv, struct opts *o)
{
        static const struct option lo[] = {
            {"seconds", 1, 0, 's'}, {"runs", 1, 0, 'r'},      {"procs", 1, 0, 'p'},
            {"mix", 1, 0, 'm'},     {"backing", 1, 0, 'b'},   {"out", 1, 0, 'o'},
            {"quick", 0, 0, 'q'},   {"callgrind", 0, 0, 'c'}, {"cg-ops", 1, 0, 'n'},
            {"cg-run", 1, 0, 'C'},  {"help", 0, 0, 'h'},      {0, 0, 0, 0}};
        double secs = 0;
        unsigned runs = 0;
        const char *procs = NULL;
        int c;
        *o = (struct opts){.backing = "auto", .cg_ops = CG_OPS, .mixes = 3};
        size_t at = 0;
        for (int i = 0; i < argc && at < sizeof(o->cmdline); i++)
                at += (size_t)snprintf(o->cmdline + at, sizeof(o->cmdline) - at, "%s%s",
                                       i ? " " : "", argv[i]);
        while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
                switch (c) {
                case 's':
                        secs = strtod(optarg, NULL);
                        break;
                case 'r':
                        runs = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'p':
                        procs = optarg;
                        break;
                case 'm':
                        o->mixes = !strcmp(optarg, "mixed")   ? 1u
                                   : !strcmp(optarg, "gcra3") ? 2u
                                   : !strcmp(optarg, "both")  ? 3u
                                                              : 0u;
                        if (!o->mixes)
                                return -1;
                        break;
                case 'b':
                        if (strcmp(optarg, "auto") && strcmp(optarg, "hugetlbfs") &&
                            strcmp(optarg, "shm"))
                                return -1;
                        o->backing = optarg;
                        break;
                case 'o':
                        o->out_dir = optarg;
                        break;
                case 'q':
                        o->quick = true;
                        break;
                case 'c':
                        o->callgrind = true;
                        break;
                case 'n':
                        o->cg_ops = strtoull(optarg, NULL, 10);
                        break;
                case 'C':
                        o->cg_run = optarg;
                        break;
                case 'h':
                        return 1;
                default:
                        return -1;
                }
        }
        o->seconds = secs > 0 ? secs : o->quick ? 0.05 : 0.5;
        o->runs = runs ? runs : o->quick ? 2 : 5;
        if (parse_procs(procs ? procs : o->quick ? "1,2" : "1,2,8", o) < 0)
                return -1;
        return optind == argc && o->runs <= MAX_RUNS && o->seconds < 3600 && o->cg_ops ? 0 : -1;
}

static double loadavg(void)
{
        double v = -1;
        FILE *f = fopen("/proc/loadavg", "r");
        if (f && fscanf(f, "%lf", &v) != 1)
                v = -1;
        if (f)
                fclose(f);
        return v;
}

static int open_out(const struct opts *o)
{
        char path[1024];
        if (!o->out_dir)
                return 0;
        if (mkdir(o->out_dir, 0755) < 0 && errno != EEXIST) {
                fprintf(stderr, "bench_compose: mkdir %s: %s\n", o->out_dir, strerror(errno));
                return -1;
        }
        snprintf(path, sizeof(path), "%s/bench_compose.txt", o->out_dir);
        tee = fopen(path, "w");
        if (!tee)
                fprintf(stderr, "bench_compose: %s: %s\n", path, strerror(errno));
        return tee ? 0 : -1;
}

int main(int argc, char **argv)
{
        static struct opts o;
        struct sysinfo si;
        int failed = 0, rc = parse(argc, argv, &o);
        if (rc != 0) {
                usage(rc > 0 ? stdout : stderr);
                return rc > 0 ? 0 : 1;
        }
        if (o.cg_run)
                return cg_child(&o);
        if (open_out(&o) < 0)
                return 1;
        sysinfo_read(&si);
        report_header(&o, &si, loadavg());
        for (int mix = 0; mix < NMIX; mix++) {
                if (!(o.mixes & (1u << mix)))
                        continue;
                for (unsigned k = 0; k < NKEYSETS; k++) {
                        struct arena_info ai;
                        char err[256] = "";
                        if (arena_build((enum mix)mix, keysets[k].keys, o.backing, &ai, err,
                                        sizeof(err)) < 0) {
                                out("# %s %s: set-up failed: %s\n", mix_name[mix], keysets[k].name,
                                    err);
                                failed = 1;
                                continue;
                        }
                        out("#   (%s %s arena: %s)\n", mix_name[mix], keysets[k].name, ai.desc);
                        for (unsigned p = 0; p < o.nprocs; p++) {
                                struct result *r = &results[nresults++];
                                *r = (struct result){
                                    .mix = (enum mix)mix, .ks = &keysets[k], .procs = o.procs[p]};
                                fprintf(stderr, "bench_compose: %s, %s keys, %d procs...\n",
                                        mix_name[mix], keysets[k].name, r->procs);
                                run_config(&o, &ai, r);
                        }
                        unlink(ai.path);
                }
        }
        report_table(&o);
        out("\nload average %.2f at the end\n", loadavg());
        if (o.callgrind)
                cg_report(&o);
        if (tee)
                fclose(tee);
        return failed;
}

/*
 * bench_try.c - nanoseconds per thr_limiter_try, next to a floor measured in the same run.
 *
 * The question it answers: what does one admission cost, through the public API a user calls,
 * over the least that any shared-memory limiter could do for the same keys? Each scenario (1 key,
 * 10 000 keys, 1 000 000 keys) builds one arena holding two limiters of identical geometry:
 *
 *   real   thr_limiter_try(lim, "key:<i>", len, 1, &res) on a real-clock arena;
 *   floor  one CAS per op on a 64-bit word of the other limiter's table, direct-indexed (no hash,
 *          no key compare, no statistics, no reader section), reading the same clock, with the
 *          words spread over the same bytes and backed by the same pages as the real slots.
 *
 * So the ratio is what throttle adds (hashing, probing, key compare, GCRA arithmetic, reader
 * sections, statistics) on top of the memory traffic and the clock read it cannot avoid.
 *
 * Scenarios of at most WIN_MAX_KEYS keys (one key and 10 000 keys) hold a third limiter in the
 * same arena, of kind window (bench_report.h: WIN_N units per WIN_W_NS ns, which no key reaches,
 * so it never denies, as the GCRA side never does), timed in the same runs as a third side:
 *
 *   window thr_limiter_try(win, "key:<i>", len, 1, &res) on that limiter, same keys, same ops.
 *
 * Its rows report it against the same floor runs as the GCRA row of that scenario, and against
 * the GCRA side run by run. The 1M-key scenario has no window side (its logs would not fit the
 * hugepage pool beside the two tables: see WIN_MAX_KEYS), so it is measured exactly as before.
 *
 * Fairness: both sides walk the same precomputed sequence of per-op records, sequentially, so the
 * harness costs them the same; runs alternate between the sides, and which goes first, so drift
 * in clock speed or in neighbours on the host hits both. Benchmarks report and never assert: the
 * exit status is 1 only when setup failed. This file sets up and measures; bench_report.c prints
 * what it measured (method, machine, table, per-run lines, JSON).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <throttle/throttle.h>

#include "bench_report.h"
#include "shm.h"

/* ---------------------------------------------------------------- types */

#define NSCENARIOS   3
#define DEFAULT_RUNS 7u
#define DEFAULT_OPS  2000000ull
#define QUICK_RUNS   3u
#define QUICK_OPS    20000ull
#define MIN_CAPACITY 16u

static const uint32_t default_keys[NSCENARIOS] = {1, 10000, 1000000};
static const uint32_t quick_keys[NSCENARIOS] = {1, 1000, 10000};

/*
 * One precomputed operation, 16 bytes. Both sides read these records in order (the floor uses
 * slot, real the key string), so walking them costs the same on both sides, and the key bytes are
 * never a cache miss of their own: a caller's key, just parsed from a request, would not be one.
 */
struct op {
        uint32_t slot; /* floor: index of this key's word in the floor table */
        uint8_t len;
        char key[11]; /* "key:9999999" at most, no NUL needed */
};
static_assert(sizeof(struct op) == 16, "op record is 16 bytes");

/* Everything one scenario's runs touch. */
struct sides {
        thr_arena *arena;
        thr_limiter *lim;
        thr_limiter *win;    /* the window side, NULL in scenarios without it */
        struct shm_map fmap; /* the floor's own mapping, made the way the client makes its */
        const struct thr_hdr *fh;
        struct thr_slot *slots;
        uint64_t nslots;
        uint32_t keys;
        struct op *ops;
        size_t nops;
};

/* ---------------------------------------------------------------- options */

static void usage(FILE *f)
{
        fprintf(f,
                "usage: bench_try [--runs N] [--ops N] [--backing auto|hugetlbfs|shm] "
                "[--pin CPU] [--json] [--quick]\n"
                "  ns per thr_limiter_try for 1, 10 000 and 1 000 000 keys, next to a CAS "
                "floor over the same memory;\n"
                "  up to %u keys also on a window limiter (%u units per %u ns) in the same "
                "runs.\n"
                "  --quick: 1, 1000, 10000 keys, %llu ops, %u runs (CI smoke run).\n",
                WIN_MAX_KEYS, WIN_N, WIN_W_NS, QUICK_OPS, QUICK_RUNS);
}

static int parse_backing(const char *s, struct opts *o)
{
        static const struct {
                const char *name;
                enum shm_hugepages huge;
        } map[] = {{"auto", SHM_HUGE_AUTO}, {"hugetlbfs", SHM_HUGE_REQUIRE}, {"shm", SHM_HUGE_OFF}};
        for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
                if (strcmp(s, map[i].name) == 0) {
                        o->huge = map[i].huge;
                        o->backing_name = map[i].name;
                        return 0;
                }
        }
        return -EINVAL;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || *end || *s == '-' || v < lo || v > hi)
                return -EINVAL;
        *out = v;
        return 0;
}

static int parse_opt(int c, const char *arg, struct opts *o, uint64_t *runs, uint64_t *ops)
{
        uint64_t pin;
        switch (c) {
        case 'r':
                return parse_u64(arg, 1, MAX_RUNS, runs);
        case 'o':
                return parse_u64(arg, 1, 1000000000ull, ops);
        case 'b':
                return parse_backing(arg, o);
        case 'p':
                if (parse_u64(arg, 0, CPU_SETSIZE - 1, &pin) < 0)
                        return -EINVAL;
                o->pin = (int)pin;
                return 0;
        case 'j':
                o->json = true;
                return 0;
        case 'q':
                o->quick = true;
                return 0;
        case 'h':
                return 1;
        default:
                return -EINVAL;
        }
}

/* Returns 0, 1 for --help, -EINVAL. Explicit --runs and --ops win over --quick in any order. */
static int parse_args(int argc, char **argv, struct opts *o)
{
        static const struct option lo[] = {
            {"runs", required_argument, NULL, 'r'},    {"ops", required_argument, NULL, 'o'},
            {"backing", required_argument, NULL, 'b'}, {"pin", required_argument, NULL, 'p'},
            {"json", no_argument, NULL, 'j'},          {"quick", no_argument, NULL, 'q'},
            {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
        uint64_t runs = 0, ops = 0;
        int c, li = -1;
        *o = (struct opts){.pin = -1, .huge = SHM_HUGE_AUTO, .backing_name = "auto"};
        while ((c = getopt_long(argc, argv, "", lo, &li)) != -1) {
                int rc = parse_opt(c, optarg, o, &runs, &ops);
                if (rc < 0 && optarg && li >= 0)
                        fprintf(stderr, "bench_try: bad value for --%s: '%s'\n", lo[li].name,
                                optarg);
                if (rc != 0)
                        return rc;
        }
        if (optind < argc)
                return -EINVAL;
        o->runs = runs ? (unsigned)runs : o->quick ? QUICK_RUNS : DEFAULT_RUNS;
        o->ops = ops ? ops : o->quick ? QUICK_OPS : DEFAULT_OPS;
        return 0;
}

static int pin_cpu(int cpu)
{
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) < 0) {
                fprintf(stderr, "bench_try: cannot pin to CPU %d: %s\n", cpu, strerror(errno));
                return -errno;
        }
        return 0;
}

/* ---------------------------------------------------------------- the op sequence */

static unsigned key_format(uint32_t i, char *buf, size_t len)
{
        int n = snprintf(buf, len, "key:%" PRIu32, i);
        return n < 0 ? 0 : (unsigned)n;
}

/* xorshift64: cheap, and the same seed gives both sides (and every run) the same keys. */
static uint64_t xorshift64(uint64_t *s)
{
        uint64_t x = *s;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return *s = x;
}

/*
 * Key I's floor word: slot I * slots / keys, so the KEYS words are spread evenly over the whole
 * table, the bytes the real keys' home slots are scattered over. (An integer stride slots / keys
 * would leave a third of the table untouched: tables hold 1.5 slots per key.)
 */
static uint32_t floor_slot(const struct sides *s, uint32_t i)
{
        return (uint32_t)((uint64_t)i * s->nslots / s->keys);
}

static struct op *ops_build(const struct sides *s, size_t n)
{
        struct op *ops = aligned_alloc(64, (n * sizeof(*ops) + 63) & ~(size_t)63);
        uint64_t seed = SEQ_SEED;
        char buf[16];
        if (!ops)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                /* multiply-high maps 32 random bits onto [0, keys) without a division */
                uint32_t idx = (uint32_t)(((xorshift64(&seed) >> 32) * s->keys) >> 32);
                unsigned len = key_format(idx, buf, sizeof(buf));
                ops[i] = (struct op){.slot = floor_slot(s, idx), .len = (uint8_t)len};
                memcpy(ops[i].key, buf, len);
        }
        return ops;
}

/* ---------------------------------------------------------------- the sides */

/* thr_limiter_try over every op record: the path users call, insert never taken (keys exist). */
static inline __attribute__((always_inline)) void try_batch(const struct sides *s, thr_limiter *lim,
                                                            struct acc *acc)
{
        struct thr_result res = {0};
        uint64_t yes = 0, no = 0, bad = 0, sum = 0;
        for (size_t i = 0; i < s->nops; i++) {
                const struct op *op = &s->ops[i];
                int rc = thr_limiter_try(lim, op->key, op->len, 1, &res);
                yes += rc == 1;
                no += rc == 0;
                bad += rc < 0;
                sum += res.remaining;
        }
        acc->admitted += yes;
        acc->denied += no;
        acc->errors += bad;
        acc->checksum += sum;
}

/* The GCRA side ("real"). */
static __attribute__((noinline)) void real_batch(const struct sides *s, struct acc *acc)
{
        try_batch(s, s->lim, acc);
}

/* The window side: the same loop on the window limiter. */
static __attribute__((noinline)) void window_batch(const struct sides *s, struct acc *acc)
{
        try_batch(s, s->win, acc);
}

static inline _Atomic uint64_t *floor_word(const struct sides *s, uint32_t slot)
{
        return &s->slots[slot].state;
}

/*
 * The floor: per op, read the arena clock, then advance one word to max(old, now) + 1 by CAS,
 * retrying on conflict - the shape of a GCRA update with every lookup and every check removed.
 * acq_rel on success like a real state update; the result is summed so nothing is dead code.
 */
static __attribute__((noinline)) void floor_batch(const struct sides *s, struct acc *acc)
{
        uint64_t sum = 0;
        for (size_t i = 0; i < s->nops; i++) {
                _Atomic uint64_t *w = floor_word(s, s->ops[i].slot);
                uint64_t now = shm_now_ns(s->fh);
                uint64_t old = atomic_load_explicit(w, memory_order_relaxed);
                uint64_t nv;
                do {
                        nv = (old > now ? old : now) + 1;
                } while (!atomic_compare_exchange_weak_explicit(w, &old, nv, memory_order_acq_rel,
                                                                memory_order_relaxed));
                sum += nv;
        }
        acc->admitted += s->nops;
        acc->checksum += sum;
}

typedef void (*batch_fn)(const struct sides *, struct acc *);

static double time_batch(batch_fn fn, const struct sides *s, struct acc *acc)
{
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        fn(s, acc);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
        return ns / (double)s->nops;
}

/* ---------------------------------------------------------------- setup and teardown */

static void limiter_spec(struct shm_limiter_spec *l, const char *name, uint32_t keys)
{
        *l = (struct shm_limiter_spec){
            .rate_n = 1000000000ull, /* 1e9 per second: T = 1 ns, never denies here */
            .period_ns = 1000000000ull,
            .burst = 1000000000ull,
            .initial = 1000000000ull,
            .max_reserve_ns = 0,
            .capacity = keys < MIN_CAPACITY ? MIN_CAPACITY : keys,
            .shards = 0,
        };
        snprintf(l->name, sizeof(l->name), "%s", name);
}

/* The window side's limiter: WIN_N units per WIN_W_NS ns (burst and initial do not apply). */
static void window_spec(struct shm_limiter_spec *l, uint32_t keys)
{
        *l = (struct shm_limiter_spec){
            .kind = THR_KIND_WINDOW,
            .serialize = false,
            .rate_n = WIN_N,
            .period_ns = WIN_W_NS,
            .capacity = keys < MIN_CAPACITY ? MIN_CAPACITY : keys,
            .shards = 0,
        };
        snprintf(l->name, sizeof(l->name), "window");
}

/*
 * Build the scenario's arena: two limiters of identical geometry, "real" and "floor", and with the
 * window side a third, "window", after them (the first two are laid out as without it).
 */
static int arena_build(const struct opts *o, struct scenario *sc, unsigned i, struct shm_map *m)
{
        struct shm_limiter_spec lims[3];
        struct shm_arena_spec spec = {
            .dir = NULL,
            .hugepages = o->huge,
            .mode = 0600,
            .gid = (gid_t)-1,
            .clock = THR_CLOCK_MONOTONIC,
            .max_limiters = 4,
            .max_readers = 64,
            .spare_bytes = 0,
            .nlimiters = sc->window ? 3 : 2,
            .limiters = lims,
        };
        limiter_spec(&lims[0], "real", sc->keys);
        limiter_spec(&lims[1], "floor", sc->keys);
        window_spec(&lims[2], sc->keys);
        snprintf(spec.name, sizeof(spec.name), "bench.%ld.%u", (long)getpid(), i);
        int rc = shm_arena_create(&spec, m, sc->err, sizeof(sc->err));
        if (rc < 0)
                return rc;
        const struct thr_hdr *h = shm_hdr(m);
        sc->fell_back = rc == 1;
        sc->backing = h->backing;
        sc->page_size = h->page_size;
        sc->thp_bytes = h->thp_bytes;
        sc->arena_size = h->arena_size;
        if (sc->fell_back)
                memcpy(sc->note, sc->err, sizeof(sc->note));
        sc->err[0] = '\0';
        return 0;
}

/* The floor limiter's slots, over which the keys' words are spread (see floor_slot). */
static int floor_locate(struct sides *s, struct scenario *sc)
{
        int d = shm_dir_find(&s->fmap, "floor");
        if (d < 0) {
                snprintf(sc->err, sizeof(sc->err), "limiter 'floor' not found in the new arena");
                return d;
        }
        const struct thr_hdr *h = shm_hdr(&s->fmap);
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(s->fmap.base, h->dir_off) + d;
        const struct thr_table *tb = shm_at(s->fmap.base, de->table_off);
        sc->slots = (uint64_t)tb->nshards * tb->shard_slots;
        if (sc->slots < sc->keys) {
                snprintf(sc->err, sizeof(sc->err),
                         "table has %" PRIu64 " slots for %" PRIu32 " keys", sc->slots, sc->keys);
                return -EBADMSG;
        }
        s->fh = h;
        s->slots = shm_at(s->fmap.base, tb->slots_off);
        s->nslots = sc->slots;
        s->keys = sc->keys;
        sc->spacing = (double)sc->slots / sc->keys;
        return 0;
}

/* The window table's per-slot log size, for the report. */
static int window_locate(struct sides *s, struct scenario *sc)
{
        int d = shm_dir_find(&s->fmap, "window");
        if (d < 0) {
                snprintf(sc->err, sizeof(sc->err), "limiter 'window' not found in the new arena");
                return d;
        }
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(s->fmap.base, s->fh->dir_off) + d;
        const struct thr_table *tb = shm_at(s->fmap.base, de->table_off);
        sc->win_aux = tb->aux_stride;
        return 0;
}

/*
 * Open both sides on the arena at PATH: the client through the public API, the floor through an
 * attach of its own (so its mapping is made like the client's, not the creator's pre-faulted one).
 */
static int sides_open(struct sides *s, struct scenario *sc, const char *path)
{
        int rc = thr_arena_open(path, 0, &s->arena);
        if (rc == 0)
                rc = thr_limiter_open(s->arena, "real", &s->lim);
        if (rc == 0 && sc->window)
                rc = thr_limiter_open(s->arena, "window", &s->win);
        if (rc < 0) {
                snprintf(sc->err, sizeof(sc->err), "opening %s through libthrottle-client: %s",
                         path, thr_strerror(rc));
                return rc;
        }
        rc = shm_arena_attach(path, true, &s->fmap, sc->err, sizeof(sc->err));
        if (rc == 0)
                rc = floor_locate(s, sc);
        return rc < 0 || !sc->window ? rc : window_locate(s, sc);
}

static void sides_close(struct sides *s)
{
        if (s->lim)
                thr_limiter_close(s->lim);
        if (s->win)
                thr_limiter_close(s->win);
        if (s->arena)
                thr_arena_close(s->arena);
        shm_arena_detach(&s->fmap);
        free(s->ops);
}

/* Insert every key (the insert path is not what is timed) and zero every floor word. */
static int sides_warm(struct sides *s, struct scenario *sc)
{
        char buf[16];
        for (uint32_t i = 0; i < sc->keys; i++) {
                unsigned len = key_format(i, buf, sizeof(buf));
                int rc = thr_limiter_try(s->lim, buf, len, 1, NULL);
                if (rc >= 0 && s->win)
                        rc = thr_limiter_try(s->win, buf, len, 1, NULL);
                if (rc < 0) {
                        snprintf(sc->err, sizeof(sc->err),
                                 "inserting key %u of %" PRIu32 " ('%s'): %s", i + 1, sc->keys, buf,
                                 thr_strerror(rc));
                        return rc;
                }
                atomic_store_explicit(floor_word(s, floor_slot(s, i)), 0, memory_order_relaxed);
        }
        struct acc scratch = {0};
        real_batch(s, &scratch); /* one untimed pass each: caches, TLB, branch predictors */
        floor_batch(s, &scratch);
        if (s->win)
                window_batch(s, &scratch);
        return 0;
}

/* ---------------------------------------------------------------- one scenario */

/*
 * R runs per side; even runs start with real, odd ones with floor, so neither always goes first.
 * With the window side: real, floor, window in even runs, window, floor, real in odd ones, so the
 * floor run is next to both, and real then floor run in the same order as without it.
 */
static void measure(const struct opts *o, struct sides *s, struct scenario *sc)
{
        for (unsigned r = 0; r < o->runs; r++) {
                if (r & 1) {
                        if (s->win)
                                sc->win_ns[r] = time_batch(window_batch, s, &sc->win_acc);
                        sc->floor_ns[r] = time_batch(floor_batch, s, &sc->floor_acc);
                        sc->real_ns[r] = time_batch(real_batch, s, &sc->real_acc);
                } else {
                        sc->real_ns[r] = time_batch(real_batch, s, &sc->real_acc);
                        sc->floor_ns[r] = time_batch(floor_batch, s, &sc->floor_acc);
                        if (s->win)
                                sc->win_ns[r] = time_batch(window_batch, s, &sc->win_acc);
                }
        }
}

/*
 * The file is unlinked as soon as both sides have it mapped: the mappings keep it alive, and a
 * benchmark killed half-way leaves no arena (nor hugepages) behind.
 */
static int scenario_run(const struct opts *o, struct scenario *sc, unsigned i)
{
        struct shm_map cm = {0};
        struct sides s = {.nops = o->ops};
        int rc = arena_build(o, sc, i, &cm);
        if (rc < 0)
                return sc->rc = rc;
        rc = sides_open(&s, sc, cm.path);
        unlink(cm.path);
        shm_arena_detach(&cm);
        if (rc == 0 && !(s.ops = ops_build(&s, s.nops))) {
                snprintf(sc->err, sizeof(sc->err), "no memory for %zu op records", s.nops);
                rc = -ENOMEM;
        }
        if (rc == 0)
                rc = sides_warm(&s, sc);
        if (rc == 0)
                measure(o, &s, sc);
        sides_close(&s);
        if (rc < 0 && !sc->err[0])
                snprintf(sc->err, sizeof(sc->err), "%s", strerror(-rc));
        return sc->rc = rc;
}

/* ---------------------------------------------------------------- main */

static void label_for(uint32_t keys, char *out, size_t len)
{
        if (keys == 1)
                snprintf(out, len, "one key");
        else if (keys % 1000000 == 0)
                snprintf(out, len, "%" PRIu32 "M keys", keys / 1000000);
        else if (keys % 1000 == 0)
                snprintf(out, len, "%" PRIu32 "k keys", keys / 1000);
        else
                snprintf(out, len, "%" PRIu32 " keys", keys);
}

/* The window row's label: "window 1 key", "window 10k" (never containing a GCRA row's label). */
static void window_label_for(uint32_t keys, char *out, size_t len)
{
        if (keys == 1)
                snprintf(out, len, "window 1 key");
        else if (keys % 1000 == 0)
                snprintf(out, len, "window %" PRIu32 "k", keys / 1000);
        else
                snprintf(out, len, "window %" PRIu32, keys);
}

int main(int argc, char **argv)
{
        static struct scenario sc[NSCENARIOS]; /* large: kept off the stack */
        struct opts o;
        struct sysinfo si;
        int rc = parse_args(argc, argv, &o), failed = 0;
        if (rc != 0) {
                usage(rc > 0 ? stdout : stderr);
                return rc > 0 ? 0 : 1;
        }
        if (o.pin >= 0 && pin_cpu(o.pin) < 0)
                return 1;
        sysinfo_read(&si);
        for (unsigned i = 0; i < NSCENARIOS; i++) {
                sc[i].keys = o.quick ? quick_keys[i] : default_keys[i];
                label_for(sc[i].keys, sc[i].label, sizeof(sc[i].label));
                sc[i].window = sc[i].keys <= WIN_MAX_KEYS;
                window_label_for(sc[i].keys, sc[i].wlabel, sizeof(sc[i].wlabel));
                if (scenario_run(&o, &sc[i], i) < 0) {
                        fprintf(stderr, "bench_try: %s: setup failed: %s\n", sc[i].label,
                                sc[i].err);
                        failed = 1;
                }
        }
        if (o.json)
                print_json(&o, &si, sc, NSCENARIOS);
        else
                print_text(&o, &si, sc, NSCENARIOS);
        return failed;
}

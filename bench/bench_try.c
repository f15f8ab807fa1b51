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
 * Fairness: both sides walk the same precomputed sequence of per-op records, sequentially, so the
 * harness costs them the same; runs alternate between the sides, and which goes first, so drift
 * in clock speed or in neighbours on the host hits both. Benchmarks report and never assert: the
 * exit status is 1 only when setup failed.
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
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <throttle/throttle.h>

#include "shm.h"

/* ---------------------------------------------------------------- types */

#define MAX_RUNS     101
#define NSCENARIOS   3
#define SEQ_SEED     0x9e3779b97f4a7c15ull /* fixed: every run of the program uses one sequence */
#define ERR_LEN      512
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

struct opts {
        unsigned runs;
        uint64_t ops;
        int pin; /* -1: not pinned */
        enum shm_hugepages huge;
        const char *backing_name;
        bool json;
        bool quick;
};

/* What one side's batches returned: used, so the compiler cannot drop the work. */
struct acc {
        uint64_t admitted;
        uint64_t denied;
        uint64_t errors;
        uint64_t checksum;
};

struct scenario {
        char label[24];
        uint32_t keys;
        int rc;             /* 0, or the -errno that stopped its setup */
        char err[ERR_LEN];  /* why setup failed */
        char note[ERR_LEN]; /* why the backing fell back to /dev/shm */
        bool fell_back;
        uint32_t backing;
        uint64_t page_size;
        uint64_t thp_bytes;
        uint64_t arena_size;
        uint64_t slots; /* slots per table (nshards * shard_slots) */
        double spacing; /* floor: slots between two keys' words (slots / keys) */
        double real_ns[MAX_RUNS];
        double floor_ns[MAX_RUNS];
        struct acc real_acc;
        struct acc floor_acc;
};

/* Everything one scenario's runs touch. */
struct sides {
        thr_arena *arena;
        thr_limiter *lim;
        struct shm_map fmap; /* the floor's own mapping, made the way the client makes its */
        const struct thr_hdr *fh;
        struct thr_slot *slots;
        uint64_t nslots;
        uint32_t keys;
        struct op *ops;
        size_t nops;
};

struct sysinfo {
        char cpu[128];
        char kernel[4 * 65 + 8];
        char date[32];
        char clocksource[32];
        long cpus;
        long huge_total;
        long huge_free;
        long huge_kb;
};

struct summary {
        double med;
        double min;
        double max;
};

/* ---------------------------------------------------------------- options */

static void usage(FILE *f)
{
        fprintf(f,
                "usage: bench_try [--runs N] [--ops N] [--backing auto|hugetlbfs|shm] "
                "[--pin CPU] [--json] [--quick]\n"
                "  ns per thr_limiter_try for 1, 10 000 and 1 000 000 keys, next to a CAS "
                "floor over the same memory.\n"
                "  --quick: 1, 1000, 10000 keys, %llu ops, %u runs (CI smoke run).\n",
                QUICK_OPS, QUICK_RUNS);
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

/* ---------------------------------------------------------------- the system we ran on */

static void read_line_value(const char *path, const char *key, char *out, size_t len)
{
        char line[512];
        FILE *f = fopen(path, "r");
        if (!f)
                return;
        while (fgets(line, sizeof(line), f)) {
                char *colon = strchr(line, ':');
                if (key && (strncmp(line, key, strlen(key)) != 0 || !colon))
                        continue;
                char *v = key ? colon + 1 : line;
                v += strspn(v, " \t");
                v[strcspn(v, "\n")] = '\0';
                snprintf(out, len, "%s", v);
                break;
        }
        fclose(f);
}

static long meminfo_long(const char *key)
{
        char v[64] = "";
        read_line_value("/proc/meminfo", key, v, sizeof(v));
        return v[0] ? strtol(v, NULL, 10) : -1;
}

static void sysinfo_read(struct sysinfo *si)
{
        struct utsname u;
        time_t t = time(NULL);
        *si = (struct sysinfo){.cpu = "unknown", .clocksource = "unknown"};
        read_line_value("/proc/cpuinfo", "model name", si->cpu, sizeof(si->cpu));
        read_line_value("/sys/devices/system/clocksource/clocksource0/current_clocksource", NULL,
                        si->clocksource, sizeof(si->clocksource));
        if (uname(&u) == 0)
                snprintf(si->kernel, sizeof(si->kernel), "%s %s %s %s", u.sysname, u.release,
                         u.version, u.machine);
        strftime(si->date, sizeof(si->date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        si->cpus = sysconf(_SC_NPROCESSORS_ONLN);
        si->huge_total = meminfo_long("HugePages_Total");
        si->huge_free = meminfo_long("HugePages_Free");
        si->huge_kb = meminfo_long("Hugepagesize");
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

/* ---------------------------------------------------------------- the two sides */

/* thr_limiter_try over every op record: the path users call, insert never taken (keys exist). */
static __attribute__((noinline)) void real_batch(const struct sides *s, struct acc *acc)
{
        struct thr_result res = {0};
        uint64_t yes = 0, no = 0, bad = 0, sum = 0;
        for (size_t i = 0; i < s->nops; i++) {
                const struct op *op = &s->ops[i];
                int rc = thr_limiter_try(s->lim, op->key, op->len, 1, &res);
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

/* Build the scenario's arena: two limiters of identical geometry, "real" and "floor". */
static int arena_build(const struct opts *o, struct scenario *sc, unsigned i, struct shm_map *m)
{
        struct shm_limiter_spec lims[2];
        struct shm_arena_spec spec = {
            .dir = NULL,
            .hugepages = o->huge,
            .mode = 0600,
            .gid = (gid_t)-1,
            .clock = THR_CLOCK_MONOTONIC,
            .max_limiters = 4,
            .max_readers = 64,
            .spare_bytes = 0,
            .nlimiters = 2,
            .limiters = lims,
        };
        limiter_spec(&lims[0], "real", sc->keys);
        limiter_spec(&lims[1], "floor", sc->keys);
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

/*
 * Open both sides on the arena at PATH: the client through the public API, the floor through an
 * attach of its own (so its mapping is made like the client's, not the creator's pre-faulted one).
 */
static int sides_open(struct sides *s, struct scenario *sc, const char *path)
{
        int rc = thr_arena_open(path, 0, &s->arena);
        if (rc == 0)
                rc = thr_limiter_open(s->arena, "real", &s->lim);
        if (rc < 0) {
                snprintf(sc->err, sizeof(sc->err), "opening %s through libthrottle-client: %s",
                         path, thr_strerror(rc));
                return rc;
        }
        rc = shm_arena_attach(path, true, &s->fmap, sc->err, sizeof(sc->err));
        return rc < 0 ? rc : floor_locate(s, sc);
}

static void sides_close(struct sides *s)
{
        if (s->lim)
                thr_limiter_close(s->lim);
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
        return 0;
}

/* ---------------------------------------------------------------- one scenario */

/* R runs per side; even runs start with real, odd ones with floor, so neither always goes first. */
static void measure(const struct opts *o, struct sides *s, struct scenario *sc)
{
        for (unsigned r = 0; r < o->runs; r++) {
                if (r & 1) {
                        sc->floor_ns[r] = time_batch(floor_batch, s, &sc->floor_acc);
                        sc->real_ns[r] = time_batch(real_batch, s, &sc->real_acc);
                } else {
                        sc->real_ns[r] = time_batch(real_batch, s, &sc->real_acc);
                        sc->floor_ns[r] = time_batch(floor_batch, s, &sc->floor_acc);
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

/* ---------------------------------------------------------------- statistics */

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static struct summary summarize(const double *v, unsigned n)
{
        double t[MAX_RUNS];
        memcpy(t, v, n * sizeof(*v));
        qsort(t, n, sizeof(*t), cmp_double);
        double med = n & 1 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
        return (struct summary){.med = med, .min = t[0], .max = t[n - 1]};
}

static struct summary pair_ratios(const struct scenario *sc, unsigned n, double *out)
{
        for (unsigned r = 0; r < n; r++)
                out[r] = sc->real_ns[r] / sc->floor_ns[r];
        return summarize(out, n);
}

/* ---------------------------------------------------------------- text report */

static const char *backing_name(const struct scenario *sc)
{
        if (sc->backing == THR_BACKING_HUGETLBFS)
                return "hugetlbfs";
        return sc->thp_bytes ? "shm+thp" : "shm";
}

static void print_method(const struct opts *o, const struct sysinfo *si)
{
        char pin[32] = "not pinned";
        if (o->pin >= 0)
                snprintf(pin, sizeof(pin), "pinned to CPU %d", o->pin);
        printf("bench_try: ns per thr_limiter_try, next to a CAS floor measured in the same run\n"
               "  real     thr_limiter_try(lim, \"key:<i>\", len, cost 1, &res): the public path, "
               "keys already inserted\n"
               "  floor    clock read + CAS of max(old, now) + 1 on one 64-bit word per key, "
               "direct-indexed (no hash,\n"
               "           no key compare), words spread over the slots of an identical table "
               "in the same arena\n"
               "  clock    both: arena clock THR_CLOCK_MONOTONIC (clock_gettime via vDSO; "
               "clocksource %s)\n",
               si->clocksource);
        printf("  method   per scenario: insert every key and one untimed pass per side, then %u "
               "runs per side of\n"
               "           %" PRIu64 " ops, alternating (real first in even runs, floor first in "
               "odd), each batch timed\n"
               "           with clock_gettime(CLOCK_MONOTONIC); keys drawn by xorshift64 "
               "(seed %#" PRIx64 "), same\n"
               "           sequence for both sides; rate 1e9/s, burst 1e9 (never denies); "
               "one process, one thread, %s\n",
               o->runs, o->ops, (uint64_t)SEQ_SEED, pin);
        printf("  cpu      %s (%ld online)\n  kernel   %s\n  date     %s\n", si->cpu, si->cpus,
               si->kernel, si->date);
        printf("  hugepages pool %ld x %ld kB, %ld free at start; --backing %s\n", si->huge_total,
               si->huge_kb, si->huge_free, o->backing_name);
}

/* Sizes the way a person reads them: KiB below a MiB. */
static const char *fmt_bytes(uint64_t b, char *buf, size_t len)
{
        if (b < 1048576)
                snprintf(buf, len, "%.0f KiB", (double)b / 1024.0);
        else
                snprintf(buf, len, "%.1f MiB", (double)b / 1048576.0);
        return buf;
}

/* A fallback changes what the numbers mean (4 KiB pages, more TLB misses), so it is loud. */
static void print_fallback(const struct sysinfo *si, const struct scenario *sc)
{
        char b[32];
        uint64_t huge = si->huge_kb > 0 ? (uint64_t)si->huge_kb * 1024 : 2097152;
        printf("NOTE: %s: hugetlbfs could not hold its %s arena, so it FELL BACK to /dev/shm:\n"
               "      %s\n"
               "      It needs %" PRIu64 " free %" PRIu64 " kB hugepages (%ld were free at start); "
               "to measure it on\n"
               "      hugepages, raise the pool as root, e.g. echo 256 > "
               "/proc/sys/vm/nr_hugepages\n",
               sc->label, fmt_bytes(sc->arena_size, b, sizeof(b)), sc->note,
               (sc->arena_size + huge - 1) / huge, huge / 1024, si->huge_free);
}

static void print_backing(const struct sysinfo *si, const struct scenario *sc, unsigned n)
{
        char b[32];
        printf("  backing\n");
        for (unsigned i = 0; i < n; i++) {
                if (sc[i].rc < 0)
                        continue;
                printf("    %-9s %-9s page %" PRIu64 " kB, THP %" PRIu64 " kB, arena %s, "
                       "%" PRIu64 " slots/table, floor spacing %.2f\n",
                       sc[i].label, backing_name(&sc[i]), sc[i].page_size / 1024,
                       sc[i].thp_bytes / 1024, fmt_bytes(sc[i].arena_size, b, sizeof(b)),
                       sc[i].slots, sc[i].spacing);
        }
        for (unsigned i = 0; i < n; i++)
                if (sc[i].rc == 0 && sc[i].fell_back)
                        print_fallback(si, &sc[i]);
}

static void print_row(const struct opts *o, const struct scenario *sc)
{
        double pr[MAX_RUNS];
        struct summary r = summarize(sc->real_ns, o->runs);
        struct summary f = summarize(sc->floor_ns, o->runs);
        struct summary p = pair_ratios(sc, o->runs, pr);
        char rs[48], fs[48];
        snprintf(rs, sizeof(rs), "%.1f (%.1f-%.1f)", r.med, r.min, r.max);
        snprintf(fs, sizeof(fs), "%.1f (%.1f-%.1f)", f.med, f.min, f.max);
        printf("%-13s %-9" PRIu32 " %-10s %-23s %-23s %5.2f   %.2f (%.2f-%.2f)\n", sc->label,
               sc->keys, backing_name(sc), rs, fs, r.med / f.med, p.med, p.min, p.max);
}

static void print_runs(const struct opts *o, const struct scenario *sc)
{
        printf("  %-9s", sc->label);
        for (unsigned r = 0; r < o->runs; r++)
                printf(" %.1f/%.1f", sc->real_ns[r], sc->floor_ns[r]);
        printf("\n  %-9s real: admitted %" PRIu64 " denied %" PRIu64 " errors %" PRIu64
               " checksum %" PRIu64 "; floor: ops %" PRIu64 " checksum %" PRIu64 "\n",
               "", sc->real_acc.admitted, sc->real_acc.denied, sc->real_acc.errors,
               sc->real_acc.checksum, sc->floor_acc.admitted, sc->floor_acc.checksum);
}

static void print_text(const struct opts *o, const struct sysinfo *si, const struct scenario *sc,
                       unsigned n)
{
        print_method(o, si);
        print_backing(si, sc, n);
        printf("\n%-13s %-9s %-10s %-23s %-23s %-7s %s\n", "scenario", "keys", "backing",
               "real ns/op (min-max)", "floor ns/op (min-max)", "ratio",
               "pair ratio median (min-max)");
        for (unsigned i = 0; i < n; i++) {
                if (sc[i].rc == 0)
                        print_row(o, &sc[i]);
                else
                        printf("%-13s %-9" PRIu32 " SETUP FAILED: %s\n", sc[i].label, sc[i].keys,
                               sc[i].err);
        }
        printf("\nper run, real/floor ns/op (run order alternates), and what the batches "
               "returned:\n");
        for (unsigned i = 0; i < n; i++)
                if (sc[i].rc == 0)
                        print_runs(o, &sc[i]);
}

/* ---------------------------------------------------------------- JSON report */

static void json_str(const char *s)
{
        putchar('"');
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (c == '"' || c == '\\')
                        printf("\\%c", c);
                else if (c < 0x20)
                        printf("\\u%04x", c);
                else
                        putchar(c);
        }
        putchar('"');
}

static void json_side(const char *name, const double *v, unsigned n, const struct acc *a)
{
        struct summary s = summarize(v, n);
        printf("\"%s\": {\"median_ns\": %.3f, \"min_ns\": %.3f, \"max_ns\": %.3f, \"runs_ns\": [",
               name, s.med, s.min, s.max);
        for (unsigned r = 0; r < n; r++)
                printf("%s%.3f", r ? ", " : "", v[r]);
        printf("], \"admitted\": %" PRIu64 ", \"denied\": %" PRIu64 ", \"errors\": %" PRIu64
               ", \"checksum\": %" PRIu64 "}",
               a->admitted, a->denied, a->errors, a->checksum);
}

static void json_scenario(const struct opts *o, const struct scenario *sc)
{
        double pr[MAX_RUNS];
        printf("    {\"scenario\": ");
        json_str(sc->label);
        printf(", \"keys\": %" PRIu32 ", \"ok\": %s, \"error\": ", sc->keys,
               sc->rc == 0 ? "true" : "false");
        json_str(sc->rc == 0 ? "" : sc->err);
        if (sc->rc != 0) {
                printf("}");
                return;
        }
        printf(", \"backing\": \"%s\", \"fell_back\": %s, \"fallback_reason\": ", backing_name(sc),
               sc->fell_back ? "true" : "false");
        json_str(sc->note);
        printf(", \"page_size\": %" PRIu64 ", \"thp_bytes\": %" PRIu64 ", \"arena_bytes\": %" PRIu64
               ", \"slots_per_table\": %" PRIu64 ", \"floor_spacing\": %.3f,\n      ",
               sc->page_size, sc->thp_bytes, sc->arena_size, sc->slots, sc->spacing);
        json_side("real", sc->real_ns, o->runs, &sc->real_acc);
        printf(",\n      ");
        json_side("floor", sc->floor_ns, o->runs, &sc->floor_acc);
        struct summary p = pair_ratios(sc, o->runs, pr);
        printf(",\n      \"ratio_of_medians\": %.4f, \"pair_ratio\": {\"median\": %.4f, "
               "\"min\": %.4f, \"max\": %.4f, \"runs\": [",
               summarize(sc->real_ns, o->runs).med / summarize(sc->floor_ns, o->runs).med, p.med,
               p.min, p.max);
        for (unsigned r = 0; r < o->runs; r++)
                printf("%s%.4f", r ? ", " : "", pr[r]);
        printf("]}}");
}

static void print_json(const struct opts *o, const struct sysinfo *si, const struct scenario *sc,
                       unsigned n)
{
        printf("{\n  \"benchmark\": \"bench_try\",\n  \"measures\": \"ns per thr_limiter_try "
               "(real) next to a clock read + CAS on one direct-indexed word per key (floor)\",\n");
        printf("  \"runs\": %u, \"ops_per_run\": %" PRIu64 ", \"seed\": %" PRIu64
               ", \"clock\": \"CLOCK_MONOTONIC\", \"clocksource\": ",
               o->runs, o->ops, (uint64_t)SEQ_SEED);
        json_str(si->clocksource);
        printf(",\n  \"backing_requested\": \"%s\", \"pin\": %d, \"quick\": %s,\n  \"cpu\": ",
               o->backing_name, o->pin, o->quick ? "true" : "false");
        json_str(si->cpu);
        printf(", \"cpus_online\": %ld, \"kernel\": ", si->cpus);
        json_str(si->kernel);
        printf(", \"date\": \"%s\",\n  \"hugepages\": {\"total\": %ld, \"free_at_start\": %ld, "
               "\"size_kb\": %ld},\n  \"scenarios\": [\n",
               si->date, si->huge_total, si->huge_free, si->huge_kb);
        for (unsigned i = 0; i < n; i++) {
                json_scenario(o, &sc[i]);
                printf("%s\n", i + 1 < n ? "," : "");
        }
        printf("  ]\n}\n");
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

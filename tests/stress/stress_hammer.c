/*
 * stress_hammer.c - multi-process torture of the key table and the GCRA hot path on a real clock.
 *
 *   stress_hammer --procs N --seconds S --keys K [--seed X] [--kill-every-ms M]
 *
 * Builds its own real-clock arena in a private /dev/shm directory, forks N workers that hammer
 * thr_limiter_try over K keys (inserted on first use) plus one hot key, and SIGKILLs a random
 * worker every M ms (default 50; 0: never), replacing it at once. At the end it checks:
 *   - every shard mutex is usable: one new key is inserted into every shard;
 *   - no key has two live slots; the table's live counter (a capacity reservation) is never below
 *     a walk over all slots, and equals it after shm_table_reconcile;
 *   - no slot is left BUSY (every interrupted insert was repaired);
 *   - the hot key admitted at most B + floor(elapsed / T), elapsed read on the arena clock before
 *     the first worker started and after the last one ended (counted by the workers after each
 *     admission, so a kill can only under-count), and no more than its TAT accounts for;
 *   - no key's TAT lies beyond now + B*T.
 * Prints a summary and exits 0 only if every check holds (1 otherwise, 2 on bad arguments).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"
#include "stress_common.h"
#include "throttle/throttle.h"

#define RATE     1000 /* per second on every key: T = 1 ms */
#define BURST    20
#define HOT_KEY  "hot"
#define MAX_PROC 256

struct opts {
        int procs;
        double seconds;
        uint64_t keys;
        uint64_t seed;
        unsigned kill_every_ms;
};

/* One cache line per worker slot: each worker writes only its own. */
struct slot_stats {
        _Alignas(64) _Atomic uint64_t hot_admitted;
        _Atomic uint64_t attempts;
};

struct ctl {
        _Atomic int stop;
        _Atomic int nerr;
        char err[256];
        struct slot_stats slot[MAX_PROC];
};

static struct {
        struct opts o;
        char dir[64];
        struct shm_map map;
        thr_arena *a;
        thr_limiter *l;
        struct thr_table *tb;
        const struct thr_params *p;
        struct ctl *c;
        pid_t pid[MAX_PROC];
        int failures;
} g;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void check(bool ok, const char *fmt, ...)
{
        if (ok)
                return;
        va_list ap;
        va_start(ap, fmt);
        fputs("stress_hammer: FAIL: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        g.failures++;
}

static void die(const char *what, int rc)
{
        fprintf(stderr, "stress_hammer: %s: %s\n", what,
                rc < 0 ? thr_strerror(rc) : strerror(errno));
        exit(1);
}

static uint64_t arena_now(void)
{
        uint64_t t;
        thr_clock_now(g.a, &t);
        return t;
}

/* ---------------------------------------------------------------- arguments */

static void usage(FILE *f)
{
        fprintf(f, "usage: stress_hammer --procs N --seconds S --keys K [--seed X] "
                   "[--kill-every-ms M]\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
        static const struct option lo[] = {{"procs", required_argument, 0, 'p'},
                                           {"seconds", required_argument, 0, 's'},
                                           {"keys", required_argument, 0, 'k'},
                                           {"seed", required_argument, 0, 'x'},
                                           {"kill-every-ms", required_argument, 0, 'm'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        *o = (struct opts){.procs = 4, .seconds = 2, .keys = 1000, .kill_every_ms = 50};
        o->seed = ((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull) ^ (uint64_t)getpid();
        int c;
        while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
                switch (c) {
                case 'p':
                        o->procs = atoi(optarg);
                        break;
                case 's':
                        o->seconds = atof(optarg);
                        break;
                case 'k':
                        o->keys = strtoull(optarg, NULL, 0);
                        break;
                case 'x':
                        o->seed = strtoull(optarg, NULL, 0);
                        break;
                case 'm':
                        o->kill_every_ms = (unsigned)atoi(optarg);
                        break;
                case 'h':
                        usage(stdout);
                        exit(0);
                default:
                        return -1;
                }
        }
        o->seed |= 1;
        if (optind != argc || o->procs < 1 || o->procs > MAX_PROC || o->seconds <= 0 ||
            o->seconds > 3600 || o->keys < 1 || o->keys > (1u << 24))
                return -1;
        return 0;
}

/* ---------------------------------------------------------------- arena */

static void build_arena(void)
{
        snprintf(g.dir, sizeof(g.dir), "/dev/shm/thrstress.XXXXXX");
        if (!mkdtemp(g.dir))
                die("mkdtemp", 0);
        uint64_t kills = g.o.kill_every_ms ? (uint64_t)(g.o.seconds * 1000) / g.o.kill_every_ms : 0;
        struct shm_limiter_spec l = {.rate_n = RATE,
                                     .period_ns = 1000000000ull,
                                     .burst = BURST,
                                     .initial = BURST,
                                     .max_reserve_ns = 1000000000ull,
                                     .capacity = g.o.keys + 4096,
                                     .shards = 16};
        snprintf(l.name, sizeof(l.name), "h");
        struct shm_arena_spec s = {.dir = g.dir,
                                   .hugepages = SHM_HUGE_OFF,
                                   .mode = 0600,
                                   .gid = (gid_t)-1,
                                   .clock = THR_CLOCK_MONOTONIC,
                                   .max_limiters = 2,
                                   /* killed workers keep their records (no daemon here) */
                                   .max_readers = (uint32_t)(g.o.procs + 2 * kills + 64 < 1u << 20
                                                                 ? g.o.procs + 2 * kills + 64
                                                                 : 1u << 20),
                                   .spare_bytes = 1 << 20,
                                   .nlimiters = 1,
                                   .limiters = &l};
        snprintf(s.name, sizeof(s.name), "hammer");
        char err[512];
        int rc = shm_arena_create(&s, &g.map, err, sizeof(err));
        if (rc < 0) {
                fprintf(stderr, "stress_hammer: shm_arena_create: %s\n", err);
                exit(1);
        }
        if ((rc = thr_arena_open(g.map.path, 0, &g.a)) < 0)
                die("thr_arena_open", rc);
        if ((rc = thr_limiter_open(g.a, "h", &g.l)) < 0)
                die("thr_limiter_open", rc);
        int idx = shm_dir_find(&g.map, "h");
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(g.map.base, shm_hdr(&g.map)->dir_off) + idx;
        g.tb = shm_at(g.map.base, de->table_off);
        g.p = shm_at(g.map.base, atomic_load(&de->params_off));
}

/* At exit of the parent (workers end with _exit): the arena goes, whatever the outcome. */
static void remove_arena(void)
{
        if (!g.map.base)
                return;
        thr_limiter_close(g.l);
        thr_arena_close(g.a);
        unlink(g.map.path);
        shm_arena_detach(&g.map);
        memset(&g.map, 0, sizeof(g.map));
        rmdir(g.dir);
}

/* ---------------------------------------------------------------- workers */

__attribute__((noreturn)) static void worker_fail(const char *key, int rc)
{
        if (atomic_fetch_add(&g.c->nerr, 1) == 0)
                snprintf(g.c->err, sizeof(g.c->err), "worker %d: try %s: %s", (int)getpid(), key,
                         thr_strerror(rc));
        _exit(3);
}

__attribute__((noreturn)) static void worker(int slot)
{
        struct slot_stats *st = &g.c->slot[slot];
        uint64_t rng = g.o.seed ^ ((uint64_t)getpid() << 32);
        char key[32];
        for (uint64_t i = 0; !atomic_load_explicit(&g.c->stop, memory_order_relaxed); i++) {
                bool hot = i % 4 == 0;
                int len =
                    hot ? snprintf(key, sizeof(key), HOT_KEY)
                        : snprintf(key, sizeof(key), "k%" PRIu64, stress_rng_next(&rng) % g.o.keys);
                int rc = thr_limiter_try(g.l, key, (size_t)len, 1, NULL);
                if (rc < 0)
                        worker_fail(key, rc);
                if (hot && rc == 1) /* after the CAS: a kill in between only under-counts */
                        atomic_fetch_add_explicit(&st->hot_admitted, 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&st->attempts, 1, memory_order_relaxed);
        }
        _exit(0);
}

static void spawn(int slot)
{
        pid_t pid = stress_fork_tied();
        if (pid < 0)
                die("fork", 0);
        if (pid == 0)
                worker(slot);
        g.pid[slot] = pid;
}

/* Kill a random worker every M ms (on a fixed schedule) until the time is up; returns kills. */
static unsigned run(void)
{
        uint64_t rng = g.o.seed, kills = 0;
        uint64_t step = (uint64_t)(g.o.kill_every_ms ? g.o.kill_every_ms : 50) * 1000000;
        uint64_t end = (uint64_t)(g.o.seconds * 1e9);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (uint64_t at = step; at < end && !atomic_load(&g.c->nerr); at += step) {
                uint64_t abs = (uint64_t)t0.tv_sec * 1000000000ull + (uint64_t)t0.tv_nsec + at;
                struct timespec ts = {(time_t)(abs / 1000000000ull), (long)(abs % 1000000000ull)};
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                        ;
                struct timespec t;
                clock_gettime(CLOCK_MONOTONIC, &t);
                if ((uint64_t)(t.tv_sec - t0.tv_sec) * 1000000000ull + (uint64_t)t.tv_nsec >=
                    (uint64_t)t0.tv_nsec + end)
                        break; /* kills fell behind the schedule: the time is up anyway */
                if (!g.o.kill_every_ms)
                        continue;
                int slot = (int)(stress_rng_next(&rng) % (uint64_t)g.o.procs);
                int st;
                kill(g.pid[slot], SIGKILL);
                waitpid(g.pid[slot], &st, 0);
                check(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
                      "worker %d ended by itself (status %#x): %s", (int)g.pid[slot], st, g.c->err);
                spawn(slot);
                kills++;
        }
        uint64_t abs = (uint64_t)t0.tv_sec * 1000000000ull + (uint64_t)t0.tv_nsec + end;
        struct timespec ts = {(time_t)(abs / 1000000000ull), (long)(abs % 1000000000ull)};
        while (!atomic_load(&g.c->nerr) &&
               clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
        atomic_store(&g.c->stop, 1);
        for (int i = 0; i < g.o.procs; i++) {
                int st;
                waitpid(g.pid[i], &st, 0);
                check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d status %#x: %s",
                      (int)g.pid[i], st, g.c->err);
        }
        return (unsigned)kills;
}

/* ---------------------------------------------------------------- checks */

/* One new key into every shard: each insert takes (and, after a death, takes over) the lock. */
static void check_every_shard(void)
{
        bool *got = calloc(g.tb->nshards, sizeof(*got));
        uint32_t filled = 0;
        alarm(60); /* a lock that never comes back ends the run (SIGALRM) */
        for (unsigned i = 0; got && filled < g.tb->nshards; i++) {
                char key[32];
                int len = snprintf(key, sizeof(key), "probe-%u", i);
                uint64_t h = shm_hash(shm_hdr(&g.map)->hash_key, key, (size_t)len);
                uint32_t sh = (uint32_t)(h >> 32) & (g.tb->nshards - 1);
                if (got[sh])
                        continue;
                int rc = thr_limiter_try(g.l, key, (size_t)len, 1, NULL);
                check(rc == 1, "insert into shard %u: %d (%s)", sh, rc,
                      rc < 0 ? thr_strerror(rc) : "");
                got[sh] = true;
                filled++;
        }
        alarm(0);
        free(got);
}

static bool known_key(const struct stress_key *k)
{
        char *end;
        if (!strcmp(k->key, HOT_KEY))
                return true;
        if (k->key[0] == 'k' && strtoull(k->key + 1, &end, 10) < g.o.keys && !*end)
                return true;
        return !strncmp(k->key, "probe-", 6);
}

static void two_live_slots(const char *key)
{
        check(false, "two live slots for key '%s'", key);
}

/* Walk every slot: duplicates, BUSY leftovers, unknown keys, TATs beyond now + B*T. */
static size_t check_table(uint64_t now_units)
{
        const struct thr_slot *s = shm_at(g.map.base, g.tb->slots_off);
        uint64_t n = (uint64_t)g.tb->nshards * g.tb->shard_slots, count[4];
        struct stress_key *keys = calloc(n, sizeof(*keys));
        if (!keys)
                die("calloc", 0);
        size_t live = stress_walk(s, n, count, keys);
        uint64_t busy = count[THR_SLOT_BUSY];
        for (size_t i = 0; i < live; i++)
                check(known_key(&keys[i]), "unknown live key '%s'", keys[i].key);
        stress_duplicates(keys, live, two_live_slots);
        for (uint64_t i = 0; i < n; i++) {
                if (THR_META_STATUS(atomic_load(&s[i].meta)) != THR_SLOT_LIVE)
                        continue;
                uint64_t tat = atomic_load(&s[i].state);
                check(tat == THR_TAT_FRESH || tat <= now_units + g.p->bt_units,
                      "slot %" PRIu64 ": TAT %" PRIu64 " beyond now + B*T (%" PRIu64 ")", i, tat,
                      now_units + g.p->bt_units);
        }
        check(busy == 0, "%" PRIu64 " slots left BUSY", busy);
        check(shm_table_count(g.map.base, g.tb) == (int64_t)live,
              "shm_table_count %" PRId64 " != walk %" PRIu64, shm_table_count(g.map.base, g.tb),
              live);
        /* The live counter is a capacity reservation: a worker killed mid-insert may leave it one
         * unit high (never low), until the reconcile that the daemon would run. */
        uint64_t reserved = atomic_load(&g.tb->live);
        check(reserved >= live, "table live counter %" PRIu64 " below the walk %" PRIu64, reserved,
              live);
        struct thr_table geo = *g.tb;
        uint64_t me = shm_lock_daemon(atomic_load(&shm_hdr(&g.map)->attach_count));
        int rc =
            shm_table_reconcile(&g.map, (uint64_t)((char *)g.tb - (char *)g.map.base), &geo, me);
        check(rc == 0, "shm_table_reconcile: %s", thr_strerror(rc));
        check(atomic_load(&g.tb->live) == live,
              "table live counter %" PRIu64 " != walk %" PRIu64 " after reconcile",
              atomic_load(&g.tb->live), live);
        free(keys);
        return live;
}

/*
 * The hot key. Every admission moves its TAT to max(TAT, now) + T and the first one started from
 * now >= t0, so n admissions leave TAT >= t0 + n*T; the last one, at now <= t1, had TAT - now <=
 * B*T. So n <= B + floor((t1 - t0) / T), and the counted admissions are at most n.
 */
static uint64_t check_hot(uint64_t t0, uint64_t t1, uint64_t *bound)
{
        uint64_t counted = 0;
        for (int i = 0; i < g.o.procs; i++)
                counted += atomic_load(&g.c->slot[i].hot_admitted);
        *bound = BURST + (t1 - t0) * RATE / 1000000000ull;
        check(counted <= *bound, "hot key: %" PRIu64 " admitted in %" PRIu64 " ns, bound %" PRIu64,
              counted, t1 - t0, *bound);
        uint64_t h = shm_hash(shm_hdr(&g.map)->hash_key, HOT_KEY, strlen(HOT_KEY));
        struct thr_slot *s = shm_table_lookup(g.map.base, g.tb, h, HOT_KEY, strlen(HOT_KEY));
        check(s != NULL, "hot key missing");
        if (s) {
                uint64_t tat = atomic_load(&s->state), base = t0 * g.p->k;
                uint64_t by_tat = tat > base ? (tat - base) / g.p->t_units : 0;
                check(counted <= by_tat,
                      "hot key: %" PRIu64 " admissions counted, its TAT "
                      "accounts for %" PRIu64,
                      counted, by_tat);
        }
        return counted;
}

static uint64_t total_repairs(void)
{
        const struct thr_shard *sh = shm_at(g.map.base, g.tb->shards_off);
        uint64_t r = 0;
        for (uint32_t i = 0; i < g.tb->nshards; i++)
                r += atomic_load(&sh[i].repairs);
        return r;
}

int main(int argc, char **argv)
{
        if (parse(argc, argv, &g.o) < 0) {
                usage(stderr);
                return 2;
        }
        printf("stress_hammer: procs %d seconds %.1f keys %" PRIu64 " seed %#" PRIx64
               " kill-every-ms %u\n",
               g.o.procs, g.o.seconds, g.o.keys, g.o.seed, g.o.kill_every_ms);
        fflush(stdout);
        build_arena();
        atexit(remove_arena);
        g.c = mmap(NULL, sizeof(*g.c), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (g.c == MAP_FAILED)
                die("mmap", 0);
        uint64_t t0 = arena_now();
        for (int i = 0; i < g.o.procs; i++)
                spawn(i);
        unsigned kills = run();
        uint64_t t1 = arena_now();
        check(atomic_load(&g.c->nerr) == 0, "worker error: %s", g.c->err);

        check_every_shard();
        size_t live = check_table(arena_now() * g.p->k);
        uint64_t bound, hot = check_hot(t0, t1, &bound), attempts = 0;
        for (int i = 0; i < g.o.procs; i++)
                attempts += atomic_load(&g.c->slot[i].attempts);
        printf("stress_hammer: %.3f s, %u kills, %" PRIu64 " attempts, %zu live keys, %" PRIu64
               " shard repairs, hot key %" PRIu64 " admitted (bound %" PRIu64 "): %s\n",
               (double)(t1 - t0) / 1e9, kills, attempts, live, total_repairs(), hot, bound,
               g.failures ? "FAIL" : "ok");
        return g.failures ? 1 : 0;
}

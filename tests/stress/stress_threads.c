/*
 * stress_threads.c - many threads of one process on one arena, checked exactly: the program
 * ThreadSanitizer runs (Criterion cannot start under TSan), and a plain stress test otherwise.
 *
 *   stress_threads [--threads N] [--rounds R] [--keys K]
 *
 * On a manual-clock arena, N threads (a) hammer one hot key, (b) insert and charge the same K new
 * keys at once, (c) mix reservations, cancellations and tries, (d) try a window key (N units per
 * 2 s) with costs 1 and 2, (e) take turns holding a serialized window key; between rounds the
 * main thread advances the clock by 1 s. Checks: the hot key admitted exactly burst + rounds *
 * per-round refill; one live slot per key; every key's consumption equals its admissions; the
 * window key never more than N units in two consecutive rounds (a window) and its unit count
 * equal to what was admitted; the serialized key never held by two threads, every hold counted.
 * Exit 0 only if all hold.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shm.h"
#include "throttle/throttle.h"

#define SEC 1000000000ull

#define WIN_N 20

struct shared {
        thr_limiter *hot, *many, *win, *ser;
        _Atomic uint64_t win_round[1024]; /* window units admitted per round */
        _Atomic uint64_t ser_holds;
        _Atomic int ser_inside, ser_overlap, ser_errors;
        pthread_barrier_t start, done;
        int threads, rounds, keys;
        _Atomic uint64_t hot_admitted, tries_admitted, many_admitted, cancelled_back;
        _Atomic int stop;
};

static void charge_many(struct shared *g, unsigned seed)
{
        struct thr_result r;
        char key[32];
        for (int i = 0; i < g->keys; i++) {
                int k = (int)(((unsigned)i * 2654435761u + seed) % (unsigned)g->keys);
                int n = snprintf(key, sizeof(key), "key-%d", k);
                if (thr_limiter_try(g->many, key, (size_t)n, 1, &r) == 1)
                        atomic_fetch_add(&g->many_admitted, 1);
        }
}

static void reserve_and_cancel(struct shared *g)
{
        struct thr_reservation rv;
        if (thr_limiter_reserve(g->hot, "hot", 3, 1, 10 * SEC, &rv) != 0)
                return;
        if (rv.wait_ns == 0) { /* due at once: it is an admission, keep it */
                atomic_fetch_add(&g->hot_admitted, 1);
                return;
        }
        if (thr_reservation_cancel(&rv) == 1)
                atomic_fetch_add(&g->cancelled_back, 1);
        else
                atomic_fetch_add(&g->hot_admitted, 1); /* kept: it will be served */
}

static void window_and_serial(struct shared *g, int round, unsigned seed)
{
        struct thr_result r;
        for (int i = 0; i < 8; i++) {
                uint64_t c = (seed + (unsigned)i) % 3 == 0 ? 2 : 1;
                if (thr_limiter_try(g->win, "w", 1, c, &r) == 1)
                        atomic_fetch_add(&g->win_round[round], c);
        }
        for (int i = 0; i < 3; i++) {
                struct thr_hold h;
                if (thr_serial_begin(g->ser, "s", 1, 1, 60 * SEC, &h) != 0) {
                        atomic_fetch_add(&g->ser_errors, 1);
                        return;
                }
                if (atomic_fetch_add(&g->ser_inside, 1) != 0)
                        atomic_fetch_add(&g->ser_overlap, 1);
                atomic_fetch_sub(&g->ser_inside, 1);
                atomic_fetch_add(&g->ser_holds, 1);
                if (thr_serial_end(&h) != 0)
                        atomic_fetch_add(&g->ser_errors, 1);
        }
}

static void *worker(void *arg)
{
        struct shared *g = arg;
        unsigned seed = (unsigned)(uintptr_t)pthread_self();
        struct thr_result r;
        for (int round = 0; round < g->rounds; round++) {
                pthread_barrier_wait(&g->start);
                for (int i = 0; i < 200; i++) {
                        if (thr_limiter_try(g->hot, "hot", 3, 1, &r) == 1) {
                                atomic_fetch_add(&g->hot_admitted, 1);
                                atomic_fetch_add(&g->tries_admitted, 1);
                        }
                }
                if (round % 4 == 3)
                        reserve_and_cancel(g);
                charge_many(g, seed + (unsigned)round);
                window_and_serial(g, round, seed);
                pthread_barrier_wait(&g->done);
        }
        return NULL;
}

static int fail(const char *what, long long got, long long want)
{
        fprintf(stderr, "stress_threads: FAIL: %s: got %lld, expected %lld\n", what, got, want);
        return 1;
}

/* Every live slot of TB holds a distinct key. */
static int unique_keys(const struct shm_map *m, const struct thr_table *tb)
{
        const struct thr_slot *s = shm_at(m->base, tb->slots_off);
        uint64_t n = (uint64_t)tb->nshards * tb->shard_slots;
        for (uint64_t i = 0; i < n; i++) {
                if (THR_META_STATUS(s[i].meta) != THR_SLOT_LIVE)
                        continue;
                struct thr_slot *f = shm_table_lookup(
                    m->base, tb, shm_stored_hash(shm_hdr(m)->hash_key, s[i].key, s[i].key_len),
                    s[i].key, s[i].key_len);
                if (f != &s[i])
                        return fail("a key with two live slots", (long long)i, -1);
        }
        return 0;
}

/*
 * Every round drains the hot key, so its TAT never falls behind the clock after round 0 and each
 * admission (a try, or a reservation kept) moved it by exactly T: admissions == TAT / T. Lost or
 * doubled updates under concurrency would break the equality. Tries alone can never exceed the
 * burst plus the refills of the rounds that were tried.
 */
static int check(struct shared *g, const struct shm_map *m, uint64_t tries_admitted)
{
        int bad = 0;
        const struct thr_dir_entry *dir = shm_at(m->base, m->g.dir_off);
        const struct thr_table *hot = shm_at(m->base, dir[0].table_off);
        const struct thr_params *p = shm_at(m->base, dir[0].params_off);
        struct thr_slot *s =
            shm_table_lookup(m->base, hot, shm_hash(shm_hdr(m)->hash_key, "hot", 3), "hot", 3);
        uint64_t tat = s ? atomic_load(&s->state) : 0;
        uint64_t admitted = atomic_load(&g->hot_admitted);
        if (!s || tat / p->t_units != admitted || tat % p->t_units)
                bad |= fail("hot key admissions vs TAT/T", (long long)admitted,
                            (long long)(tat / p->t_units));
        uint64_t bound = p->burst + (uint64_t)(g->rounds - 1) * 10;
        if (tries_admitted > bound)
                bad |= fail("tries admitted above burst + refills", (long long)tries_admitted,
                            (long long)bound);
        const struct thr_table *tb = shm_at(m->base, dir[1].table_off);
        int64_t live = shm_table_count(m->base, tb);
        if (live != g->keys)
                bad |= fail("live keys", live, g->keys);
        bad |= unique_keys(m, tb);
        /* The window: W = 2 s, the clock moves 1 s a round: any two consecutive rounds are in
         * one window; its state word counts every unit admitted. */
        uint64_t total = 0;
        for (int r = 0; r < g->rounds; r++) {
                uint64_t two =
                    atomic_load(&g->win_round[r]) + (r ? atomic_load(&g->win_round[r - 1]) : 0);
                if (two > WIN_N)
                        bad |=
                            fail("window units in two consecutive rounds", (long long)two, WIN_N);
                total += atomic_load(&g->win_round[r]);
        }
        const struct thr_table *wt = shm_at(m->base, dir[2].table_off);
        struct thr_slot *ws =
            shm_table_lookup(m->base, wt, shm_hash(shm_hdr(m)->hash_key, "w", 1), "w", 1);
        if (!ws || atomic_load(&ws->state) != total)
                bad |= fail("window units counted vs admitted",
                            ws ? (long long)atomic_load(&ws->state) : -1, (long long)total);
        const struct thr_table *st = shm_at(m->base, dir[3].table_off);
        struct thr_slot *ss =
            shm_table_lookup(m->base, st, shm_hash(shm_hdr(m)->hash_key, "s", 1), "s", 1);
        uint64_t holds = atomic_load(&g->ser_holds);
        if (atomic_load(&g->ser_overlap) || atomic_load(&g->ser_errors))
                bad |= fail("serialized holds overlapping or failed",
                            atomic_load(&g->ser_overlap) + atomic_load(&g->ser_errors), 0);
        if (!ss || atomic_load(&ss->state) != holds)
                bad |= fail("serialized completions vs holds",
                            ss ? (long long)atomic_load(&ss->state) : -1, (long long)holds);
        /* Burst 1e6 never runs out: every attempt on "many" is admitted exactly once. */
        uint64_t many = atomic_load(&g->many_admitted);
        if (many != (uint64_t)g->threads * g->rounds * g->keys)
                bad |= fail("admissions over many keys", (long long)many,
                            (long long)g->threads * g->rounds * g->keys);
        return bad;
}

static int build(struct shm_map *m, char *dir, int keys)
{
        struct shm_limiter_spec s[4] = {{.rate_n = 10,
                                         .period_ns = SEC,
                                         .burst = 50,
                                         .initial = 50,
                                         .max_reserve_ns = 60 * SEC,
                                         .capacity = 16,
                                         .lock_wait_ns = THR_LOCK_WAIT_MAX_NS},
                                        {.rate_n = 1,
                                         .period_ns = SEC,
                                         .burst = 1000000,
                                         .initial = 1000000,
                                         .max_reserve_ns = 0,
                                         .capacity = (uint64_t)keys + 16,
                                         .shards = 8,
                                         /* exact counts: an insert must never give up on a
                                          * holder slowed down (ThreadSanitizer: 10x), only on
                                          * one that does not run, which none here is */
                                         .lock_wait_ns = THR_LOCK_WAIT_MAX_NS},
                                        {.kind = THR_KIND_WINDOW,
                                         .rate_n = WIN_N,
                                         .period_ns = 2 * SEC,
                                         .capacity = 16,
                                         .lock_wait_ns = THR_LOCK_WAIT_MAX_NS},
                                        {.kind = THR_KIND_WINDOW,
                                         .serialize = true,
                                         .rate_n = 10000,
                                         .period_ns = SEC,
                                         .capacity = 16,
                                         .lock_wait_ns = THR_LOCK_WAIT_MAX_NS}};
        snprintf(s[0].name, sizeof(s[0].name), "hot");
        snprintf(s[1].name, sizeof(s[1].name), "many");
        snprintf(s[2].name, sizeof(s[2].name), "win");
        snprintf(s[3].name, sizeof(s[3].name), "ser");
        struct shm_arena_spec a = {.dir = dir,
                                   .hugepages = SHM_HUGE_OFF,
                                   .mode = 0600,
                                   .gid = (gid_t)-1,
                                   .clock = THR_CLOCK_MANUAL,
                                   .max_limiters = 8,
                                   .max_readers = 128,
                                   .nlimiters = 4,
                                   .limiters = s};
        snprintf(a.name, sizeof(a.name), "st%d", (int)getpid());
        char err[256] = "";
        int rc = shm_arena_create(&a, m, err, sizeof(err));
        if (rc < 0)
                fprintf(stderr, "stress_threads: cannot build the arena: %s\n", err);
        return rc;
}

static void parse(int argc, char **argv, struct shared *g)
{
        static const struct option o[] = {
            {"threads", 1, 0, 't'}, {"rounds", 1, 0, 'r'}, {"keys", 1, 0, 'k'}, {0, 0, 0, 0}};
        int c;
        while ((c = getopt_long(argc, argv, "", o, NULL)) != -1) {
                int v = atoi(optarg);
                if (v <= 0) {
                        fprintf(stderr, "usage: stress_threads [--threads N] [--rounds R] "
                                        "[--keys K]\n");
                        exit(64);
                }
                *(c == 't' ? &g->threads : c == 'r' ? &g->rounds : &g->keys) = v;
        }
}

int main(int argc, char **argv)
{
        static struct shared g = {.threads = 4, .rounds = 40, .keys = 500};
        parse(argc, argv, &g);
        char dir[] = "/dev/shm/thrstress.XXXXXX";
        struct shm_map m;
        thr_arena *a;
        if (!mkdtemp(dir) || build(&m, dir, g.keys) < 0)
                return 1;
        int rc = thr_arena_open(m.path, 0, &a);
        if (rc == 0)
                rc = thr_limiter_open(a, "hot", &g.hot);
        if (rc == 0)
                rc = thr_limiter_open(a, "many", &g.many);
        if (rc == 0)
                rc = thr_limiter_open(a, "win", &g.win);
        if (rc == 0)
                rc = thr_limiter_open(a, "ser", &g.ser);
        if (g.rounds > 1024)
                g.rounds = 1024;
        if (rc < 0) {
                fprintf(stderr, "stress_threads: %s\n", thr_strerror(rc));
                return 1;
        }
        pthread_barrier_init(&g.start, NULL, (unsigned)g.threads + 1);
        pthread_barrier_init(&g.done, NULL, (unsigned)g.threads + 1);
        pthread_t th[64];
        g.threads = g.threads > 64 ? 64 : g.threads;
        for (int i = 0; i < g.threads; i++)
                pthread_create(&th[i], NULL, worker, &g);
        /* Per round, 1 s at 10/s refills 10 tokens; 200 tries by each thread drain them. */
        for (int round = 0; round < g.rounds; round++) {
                pthread_barrier_wait(&g.start);
                pthread_barrier_wait(&g.done);
                thr_clock_advance(a, SEC);
        }
        for (int i = 0; i < g.threads; i++)
                pthread_join(th[i], NULL);
        int bad = check(&g, &m, atomic_load(&g.tries_admitted));
        printf("stress_threads: %d threads, %d rounds, %d keys: hot %llu admitted (%llu by try), "
               "%llu reservations given back, %llu admissions over many keys: %s\n",
               g.threads, g.rounds, g.keys, (unsigned long long)atomic_load(&g.hot_admitted),
               (unsigned long long)atomic_load(&g.tries_admitted),
               (unsigned long long)atomic_load(&g.cancelled_back),
               (unsigned long long)atomic_load(&g.many_admitted), bad ? "FAIL" : "ok");
        thr_arena_close(a);
        unlink(m.path);
        shm_arena_detach(&m);
        rmdir(dir);
        return bad;
}

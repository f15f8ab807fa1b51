/*
 * test_window.c - the window kind through the public API, on a manual clock: exact decisions
 * (remaining, retry_after, reset_after) against an independent model, costs and c > N, FIFO
 * reservations, a sliding (not aligned) window, eviction and its floor, reloads that may and may
 * not change a window; then real forked processes (some SIGKILLed at random) sharing keys, the
 * count checked in every window position from the arena's own state word; and the serialized
 * mode: one holder at a time (checked by the holders themselves and from a shared log), FIFO
 * grants, completions per window <= N, timeouts, a killed holder released within the bound.
 *
 * Children report through a shared anonymous mapping and end with _exit(); the parent drives the
 * arena clock. Nothing sleeps for time to pass on the manual clock.
 */
#include <criterion/criterion.h>
#include <sched.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"

#define MS     1000000ull
#define RACE_N 16384 /* units of limiter "big": the largest N */

static struct tarena T;

static struct shm_limiter_spec wspec(const char *name, uint64_t n, uint64_t w, bool serialize)
{
        struct shm_limiter_spec s = tspec(name, n, w, 1, 1);
        s.kind = THR_KIND_WINDOW;
        s.serialize = serialize;
        s.burst = s.initial = 0;
        s.max_reserve_ns = 60 * SEC;
        return s;
}

static void setup(void)
{
        struct shm_limiter_spec s[] = {wspec("w", 5, 2 * SEC, false), wspec("s", 3, 10 * SEC, true),
                                       wspec("tiny", 2, SEC, false), wspec("f", 100, SEC, true),
                                       wspec("big", RACE_N, SEC, false)};
        s[2].capacity = 4;
        s[2].on_full = THR_FULL_EVICT;
        s[4].capacity = 16; /* 128 KiB a slot */
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 5);
}

#define MAX_KIDS 8
static pid_t g_kids[MAX_KIDS];

static void teardown(void)
{
        for (int i = 0; i < MAX_KIDS; i++) {
                if (g_kids[i] > 0) {
                        kill(g_kids[i], SIGKILL);
                        waitpid(g_kids[i], NULL, 0);
                }
                g_kids[i] = 0;
        }
        tarena_free(&T);
}

TestSuite(window, .init = setup, .fini = teardown);

static void advance(uint64_t ns)
{
        cr_assert_eq(thr_clock_advance(T.a, ns), 0);
}

static uint64_t now_ns(void)
{
        uint64_t t;
        thr_clock_now(T.a, &t);
        return t;
}

/* ---------------------------------------------------------------- a model, independent */

/* Admission times of one key, oldest first; the model admits c at t iff the window (t - W, t]
 * holds at most N - c units and nothing is logged after t. */
struct model {
        uint64_t n, w;
        uint64_t *t;
        size_t len, cap;
};

static uint64_t m_in_window(const struct model *m, uint64_t t)
{
        uint64_t c = 0;
        for (size_t i = 0; i < m->len; i++)
                c += m->t[i] <= t && m->t[i] + m->w > t;
        return c;
}

static void m_log(struct model *m, uint64_t t, uint64_t c)
{
        for (uint64_t i = 0; i < c; i++) {
                if (m->len == m->cap) {
                        m->cap = m->cap ? m->cap * 2 : 64;
                        m->t = realloc(m->t, m->cap * sizeof(*m->t));
                }
                m->t[m->len++] = t;
        }
}

/* The earliest time >= T at which C more units fit (no unit after it is logged). */
static uint64_t m_fits_at(const struct model *m, uint64_t t, uint64_t c)
{
        uint64_t at = t;
        if (m->len && m->t[m->len - 1] > at)
                at = m->t[m->len - 1];
        for (;;) {
                if (m_in_window(m, at) + c <= m->n)
                        return at;
                /* the next time a unit leaves the window after AT */
                uint64_t next = UINT64_MAX;
                for (size_t i = 0; i < m->len; i++)
                        if (m->t[i] + m->w > at && m->t[i] + m->w < next)
                                next = m->t[i] + m->w;
                at = next;
        }
}

/* ---------------------------------------------------------------- single process */

Test(window, fills_and_slides_exactly)
{
        thr_limiter *l = tlim(&T, "w");
        struct thr_result r;
        for (int i = 0; i < 3; i++)
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 1);
        cr_assert_eq(r.limit, 5);
        cr_assert_eq(r.remaining, 2);
        cr_assert_eq(r.reset_after_ns, 2 * SEC, "empty W after the newest unit");
        advance(SEC);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 2, &r), 1);
        cr_assert_eq(r.remaining, 0);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0, "5 units in (t - 2s, t]");
        cr_assert_eq(r.retry_after_ns, SEC, "the three at 0 leave the window at 2 s");
        cr_assert_eq(r.reset_after_ns, 2 * SEC, "the two at 1 s leave at 3 s");
        advance(SEC - 1);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0, "1 ns early: still full");
        cr_assert_eq(r.retry_after_ns, 1);
        advance(1);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 3, &r), 1, "at exactly 2 s the first three left");
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0, "no burst at the edge: 5 in (0, 2s]");
        cr_assert_eq(r.retry_after_ns, SEC, "the two at 1 s leave at 3 s");
        thr_limiter_close(l);
}

Test(window, cost_above_limit_is_refused_at_once)
{
        thr_limiter *l = tlim(&T, "w");
        struct thr_result r;
        struct thr_reservation rv;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 6, &r), -ERANGE);
        cr_assert_eq(thr_limiter_reserve(l, "k", 1, 6, UINT64_MAX, &rv), -ERANGE);
        cr_assert_eq(thr_limiter_acquire(l, "k", 1, 6, UINT64_MAX, &r), -ERANGE);
        cr_assert(strstr(thr_strerror(-ERANGE), "limit"));
        cr_assert_eq(thr_limiter_try(l, "k", 1, 5, &r), 1, "c = N fits an empty window");
        cr_assert_eq(thr_limiter_try(l, "k", 1, 0, &r), 1, "a peek asks for nothing");
        cr_assert_eq(r.remaining, 0, "and tells what is left");
        cr_assert_eq(r.reset_after_ns, 2 * SEC);
        thr_limiter_close(l);
}

Test(window, peek_inserts_nothing_and_reports_the_window)
{
        thr_limiter *l = tlim(&T, "w");
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, "new", 3, 0, &r), 1);
        cr_assert_eq(r.remaining, 5);
        cr_assert_eq(r.reset_after_ns, 0);
        cr_assert_eq(shm_table_count(T.map.base, ttable(&T, "w")), 0);
        thr_limiter_close(l);
}

/* Random schedules of tries and peeks on a few keys, each decision compared with the model. */
Test(window, random_schedules_match_the_model)
{
        thr_limiter *l = tlim(&T, "w");
        for (unsigned seed = 1; seed <= 6; seed++) {
                srandom(seed);
                struct model m[3] = {
                    {.n = 5, .w = 2 * SEC}, {.n = 5, .w = 2 * SEC}, {.n = 5, .w = 2 * SEC}};
                char key[3][16];
                for (int k = 0; k < 3; k++)
                        snprintf(key[k], sizeof(key[k]), "s%u-%d", seed, k);
                for (int step = 0; step < 400; step++) {
                        static const uint64_t steps[] = {0,   1,       250 * MS, SEC - 1,
                                                         SEC, 2 * SEC, 3 * SEC};
                        if (random() % 3 == 0)
                                advance(steps[random() % 7]);
                        int k = (int)(random() % 3);
                        uint64_t c = (uint64_t)(random() % 6);
                        uint64_t t = now_ns();
                        struct thr_result r;
                        int rc = thr_limiter_try(l, key[k], strlen(key[k]), c, &r);
                        uint64_t at = m_fits_at(&m[k], t, c);
                        int want = at == t;
                        cr_assert_eq(rc, want, "seed %u step %d key %d cost %lu at %lu", seed, step,
                                     k, (unsigned long)c, (unsigned long)t);
                        if (want && c)
                                m_log(&m[k], t, c);
                        uint64_t used = m_in_window(&m[k], t);
                        cr_assert_eq(r.remaining, 5 - used, "seed %u step %d remaining", seed,
                                     step);
                        cr_assert_eq(r.retry_after_ns, want ? 0 : at - t, "seed %u step %d retry",
                                     seed, step);
                        uint64_t last = m[k].len ? m[k].t[m[k].len - 1] + m[k].w : 0;
                        cr_assert_eq(r.reset_after_ns, last > t ? last - t : 0,
                                     "seed %u step %d reset", seed, step);
                }
                for (int k = 0; k < 3; k++)
                        free(m[k].t);
        }
        thr_limiter_close(l);
}

Test(window, reservations_are_fifo_and_exact)
{
        thr_limiter *l = tlim(&T, "w");
        struct model m = {.n = 5, .w = 2 * SEC};
        struct thr_reservation rv;
        uint64_t t0 = now_ns();
        for (int i = 0; i < 12; i++) {
                uint64_t c = (uint64_t)(i % 3) + 1;
                uint64_t due = m_fits_at(&m, now_ns(), c);
                cr_assert_eq(thr_limiter_reserve(l, "k", 1, c, 60 * SEC, &rv), 0, "place %d", i);
                cr_assert_eq(rv.due_ns, due, "place %d due at the model's time", i);
                cr_assert_eq(rv.wait_ns, due - now_ns());
                m_log(&m, due, c);
        }
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0, "a try does not overtake the queue");
        cr_assert_eq(r.retry_after_ns, m_fits_at(&m, t0, 1) - t0, "after the last place");
        uint64_t far = m_fits_at(&m, now_ns(), 5) - now_ns();
        cr_assert_eq(thr_limiter_reserve(l, "k", 1, 5, far - 1, &rv), -EAGAIN, "past max_wait");
        cr_assert_eq(rv.wait_ns, far, "says when it would have been due");
        cr_assert_eq(thr_reservation_cancel(&rv), -EINVAL, "nothing to give back");
        cr_assert_eq(thr_limiter_reserve(l, "k", 1, 1, 60 * SEC, &rv), 0);
        cr_assert_eq(thr_reservation_cancel(&rv), 0, "a window's place is kept, not given back");
        thr_limiter_close(l);
}

Test(window, table_full_evicts_and_the_floor_keeps_the_limit)
{
        thr_limiter *l = tlim(&T, "tiny"); /* N = 2 per 1 s, 4 keys, on_full = evict */
        struct thr_result r;
        char key[16];
        const struct thr_table *tb = ttable(&T, "tiny");
        cr_assert_eq(thr_limiter_try(l, "k0", 2, 2, &r), 1);
        advance(100 * MS);
        for (int i = 1; i < 4; i++) {
                int n = snprintf(key, sizeof(key), "k%d", i);
                cr_assert_eq(thr_limiter_try(l, key, (size_t)n, 1, &r), 1, "key %d", i);
        }
        cr_assert_eq(shm_table_count(T.map.base, tb), 4, "the table is full");
        /* a fifth key evicts the one whose window empties first (k0, at 1 s), and starts at the
         * floor it left: as if N units were admitted at k0's newest time, 0 */
        cr_assert_eq(thr_limiter_try(l, "k4", 2, 1, &r), 0, "new keys wait out the floor");
        cr_assert_eq(r.retry_after_ns, 900 * MS);
        uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, "k0", 2);
        cr_assert_null(shm_table_lookup(T.map.base, tb, h, "k0", 2), "k0 was evicted");
        /* back within its window, k0 must not get what its evicted self could not */
        cr_assert_eq(thr_limiter_try(l, "k0", 2, 1, &r), 0, "k0 spent its window at 0");
        cr_assert_eq(r.retry_after_ns, 900 * MS);
        advance(900 * MS);
        cr_assert_eq(thr_limiter_try(l, "k0", 2, 2, &r), 1, "a window after 0 it may");
        cr_assert_eq(shm_table_count(T.map.base, tb), 4);
        thr_limiter_close(l);
}

Test(window, try_on_serialized_and_begin_on_plain_are_refused)
{
        thr_limiter *s = tlim(&T, "s"), *w = tlim(&T, "w");
        struct thr_result r;
        struct thr_hold h;
        cr_assert_eq(thr_limiter_try(s, "k", 1, 1, &r), -EOPNOTSUPP);
        cr_assert_eq(thr_serial_begin(w, "k", 1, 1, 0, &h), -EOPNOTSUPP);
        cr_assert_eq(thr_serial_begin(s, "k", 1, 4, 0, &h), -ERANGE, "cost > N");
        cr_assert_eq(thr_serial_begin(s, "k", 1, 0, 0, &h), -EINVAL);
        cr_assert_eq(thr_serial_end(&h), -EINVAL, "no hold");
        thr_limiter_close(s);
        thr_limiter_close(w);
}

/* ---------------------------------------------------------------- reloads */

static struct thr_dir_entry *tdir_entry_of(const char *name)
{
        int idx = shm_dir_find(&T.map, name);
        cr_assert_geq(idx, 0);
        return (struct thr_dir_entry *)shm_at(T.map.base, T.map.g.dir_off) + idx;
}

/* The specs of setup(), for shm_arena_configure (what a reload does). */
static struct shm_arena_spec respec(struct shm_limiter_spec *s)
{
        s[0] = wspec("w", 5, 2 * SEC, false);
        s[1] = wspec("s", 3, 10 * SEC, true);
        s[2] = wspec("tiny", 2, SEC, false);
        s[2].capacity = 4;
        s[2].on_full = THR_FULL_EVICT;
        s[3] = wspec("f", 100, SEC, true);
        struct shm_arena_spec as = {.hugepages = SHM_HUGE_OFF,
                                    .mode = 0600,
                                    .gid = (gid_t)-1,
                                    .clock = THR_CLOCK_MANUAL,
                                    .max_limiters = 16,
                                    .max_readers = 256,
                                    .nlimiters = 4,
                                    .limiters = s};
        snprintf(as.name, sizeof(as.name), "%s", shm_hdr(&T.map)->name);
        return as;
}

Test(window, reload_changes_the_length_keeps_the_log_and_refuses_the_rest)
{
        thr_limiter *l = tlim(&T, "w");
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 5, &r), 1, "5 units at 0");
        advance(SEC);
        struct shm_limiter_spec s[4];
        struct shm_arena_spec as = respec(s);
        char err[512] = "";
        s[0].period_ns = SEC; /* W 2 s -> 1 s: the units at 0 are out of the window at 1 s */
        cr_assert_eq(shm_arena_configure(&T.map, &as, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 5, &r), 1, "the kept log, judged with the new W");
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0);
        cr_assert_eq(r.retry_after_ns, SEC);
        uint64_t top = shm_hdr(&T.map)->heap_top;
        struct thr_dir_entry *de = tdir_entry_of("w");
        uint64_t params = de->params_off;
        as = respec(s);
        s[0].period_ns = SEC;
        s[0].rate_n = 6;
        cr_assert_eq(shm_arena_configure(&T.map, &as, err, sizeof(err)), -EBUSY);
        cr_assert(strstr(err, "limit cannot change"), "%s", err);
        as = respec(s);
        s[0].period_ns = SEC;
        s[0].kind = THR_KIND_GCRA;
        s[0].burst = s[0].initial = 5;
        cr_assert_eq(shm_arena_configure(&T.map, &as, err, sizeof(err)), -EBUSY);
        cr_assert(strstr(err, "kind cannot change"), "%s", err);
        as = respec(s);
        s[0].period_ns = SEC;
        s[0].serialize = true;
        cr_assert_eq(shm_arena_configure(&T.map, &as, err, sizeof(err)), -EBUSY);
        cr_assert(strstr(err, "serialize cannot change"), "%s", err);
        cr_assert_eq(de->params_off, params, "nothing changed");
        cr_assert_eq(shm_hdr(&T.map)->heap_top, top, "nothing allocated");
        thr_limiter_close(l);
}

/* ---------------------------------------------------------------- serialized: one process */

static struct thr_serial *serial_hdr(const char *lim, const char *key)
{
        const struct thr_table *tb = ttable(&T, lim);
        uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, key, strlen(key));
        struct thr_slot *s = shm_table_lookup(T.map.base, tb, h, key, (uint32_t)strlen(key));
        cr_assert_not_null(s, "key %s exists", key);
        return shm_serial(shm_slot_aux(T.map.base, tb, s));
}

static uint64_t units_of(const char *lim, const char *key)
{
        const struct thr_table *tb = ttable(&T, lim);
        uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, key, strlen(key));
        struct thr_slot *s = shm_table_lookup(T.map.base, tb, h, key, (uint32_t)strlen(key));
        cr_assert_not_null(s, "key %s exists", key);
        return atomic_load(&s->state);
}

Test(window, serial_counts_completions_in_the_window)
{
        thr_limiter *s = tlim(&T, "s"); /* N = 3 per 10 s */
        struct thr_hold h;
        for (int i = 0; i < 3; i++) {
                cr_assert_eq(thr_serial_begin(s, "k", 1, 1, 0, &h), 0, "hold %d", i);
                cr_assert_eq(serial_hdr("s", "k")->hold_pid, (uint64_t)getpid());
                advance(SEC);
                cr_assert_eq(thr_serial_end(&h), 0);
                cr_assert_eq(thr_serial_end(&h), -EINVAL, "ended once only");
        }
        cr_assert_eq(units_of("s", "k"), 3, "three completions logged");
        /* completions at 1, 2, 3 s: the next one fits when the first leaves, at 11 s */
        cr_assert_eq(thr_serial_begin(s, "k", 1, 1, 0, &h), -ETIMEDOUT, "no room, no wait");
        cr_assert_eq(serial_hdr("s", "k")->waiters, 0, "a timed out waiter leaves the queue");
        advance(8 * SEC - 1);
        cr_assert_eq(thr_serial_begin(s, "k", 1, 1, 0, &h), -ETIMEDOUT, "1 ns early");
        advance(1);
        cr_assert_eq(thr_serial_begin(s, "k", 1, 1, 0, &h), 0, "at 11 s");
        struct thr_hold h2;
        cr_assert_eq(thr_serial_begin(s, "k2", 2, 3, 0, &h2), 0, "a thread may hold two keys");
        cr_assert_eq(thr_serial_begin(s, "k2", 2, 1, SEC, &(struct thr_hold){0}), -EDEADLK,
                     "but a key only once: it would wait for itself");
        cr_assert_eq(thr_serial_end(&h2), 0);
        cr_assert_eq(thr_serial_end(&h), 0);
        cr_assert_eq(units_of("s", "k2"), 3);
        thr_limiter_close(s);
}

/* ---------------------------------------------------------------- processes */

static void *shared_map(size_t len)
{
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(p, MAP_FAILED);
        return p;
}

static double mono_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reap child I (bounded): it must exit 0. */
static void reap(int i)
{
        int st = 0;
        double t0 = mono_s();
        while (waitpid(g_kids[i], &st, WNOHANG) == 0) {
                cr_assert_lt(mono_s() - t0, 60.0, "child %d stuck", i);
                usleep(1000);
        }
        g_kids[i] = 0;
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed (status %#x)", i, st);
}

static void kill_kid(int i)
{
        kill(g_kids[i], SIGKILL);
        waitpid(g_kids[i], NULL, 0);
        g_kids[i] = 0;
}

#define ROUNDS 60
#define WKEYS  3
#define TRIES  12

/* What the processes of a round share: the parent's round, each child's last finished round. */
struct rounds {
        _Atomic uint64_t round;
        _Atomic uint64_t done[MAX_KIDS];
        _Atomic uint64_t attempts[ROUNDS + 1][WKEYS];
        _Atomic uint64_t admitted[ROUNDS + 1][WKEYS];
};

static const char *const wkeys[WKEYS] = {"a", "b", "c"};

/* A child from round FIRST on: TRIES tries a round on random keys, cost 1 or 1..3. */
static void round_child(struct rounds *sh, thr_limiter *l, int me, uint64_t first, bool mixed)
{
        srandom((unsigned)getpid());
        for (uint64_t r = first; r <= ROUNDS; r++) {
                while (atomic_load(&sh->round) < r)
                        sched_yield();
                for (int i = 0; i < TRIES; i++) {
                        int k = (int)(random() % WKEYS);
                        uint64_t c = mixed ? (uint64_t)(random() % 3) + 1 : 1;
                        struct thr_result res;
                        atomic_fetch_add(&sh->attempts[r][k], c);
                        int rc = thr_limiter_try(l, wkeys[k], 1, c, &res);
                        if (rc < 0)
                                _exit(2);
                        if (rc == 1)
                                atomic_fetch_add(&sh->admitted[r][k], c);
                }
                atomic_store(&sh->done[me], r);
        }
        _exit(0);
}

/*
 * KIDS processes; the parent starts each round at a clock it then moves by a random step, and
 * reads each key's unit count from the arena's state word after the round. KILLS: a child is
 * SIGKILLed at a random moment of some rounds (a new one takes its place next round). Checks, for
 * each key, every window position over the rounds' times: at most N units. EXACT (cost 1, no
 * kills): each round admits exactly min(asked, room) per key.
 */
static void run_rounds(int kids, bool mixed, bool kills, bool exact)
{
        thr_limiter *l = tlim(&T, "w"); /* N = 5 per 2 s */
        struct rounds *sh = shared_map(sizeof(*sh));
        uint64_t t[ROUNDS + 1], got[ROUNDS + 1][WKEYS], prev[WKEYS] = {0};
        for (int i = 0; i < kids; i++) {
                g_kids[i] = tfork();
                if (g_kids[i] == 0)
                        round_child(sh, l, i, 1, mixed);
        }
        srandom(7);
        static const uint64_t steps[] = {0, 1, 100 * MS, 500 * MS, SEC - 1, SEC, 2 * SEC};
        for (uint64_t r = 1; r <= ROUNDS; r++) {
                t[r] = now_ns();
                atomic_store(&sh->round, r);
                int victim = kills && r % 3 == 0 ? (int)(random() % kids) : -1;
                if (victim >= 0) {
                        usleep((useconds_t)(random() % 300));
                        kill_kid(victim);
                }
                double t0 = mono_s();
                for (int i = 0; i < kids; i++) {
                        while (i != victim && atomic_load(&sh->done[i]) < r) {
                                cr_assert_lt(mono_s() - t0, 30.0, "round %lu: child %d blocked",
                                             (unsigned long)r, i);
                                sched_yield();
                        }
                }
                if (victim >= 0) {
                        g_kids[victim] = tfork();
                        if (g_kids[victim] == 0)
                                round_child(sh, l, victim, r + 1, mixed);
                }
                for (int k = 0; k < WKEYS; k++) {
                        uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, wkeys[k], 1);
                        const struct thr_table *tb = ttable(&T, "w");
                        struct thr_slot *s = shm_table_lookup(T.map.base, tb, h, wkeys[k], 1);
                        uint64_t u = s ? atomic_load(&s->state) : 0;
                        got[r][k] = u - prev[k];
                        prev[k] = u;
                }
                advance(steps[random() % 7]);
        }
        for (int i = 0; i < kids; i++)
                reap(i);
        for (int k = 0; k < WKEYS; k++) {
                for (uint64_t r = 1; r <= ROUNDS; r++) {
                        uint64_t in = 0; /* units of rounds in (t_r - W, t_r] */
                        for (uint64_t q = 1; q <= r; q++)
                                in += t[q] + 2 * SEC > t[r] ? got[q][k] : 0;
                        cr_assert_leq(in, 5, "key %d: %lu units in the window ending at round %lu",
                                      k, (unsigned long)in, (unsigned long)r);
                        if (!exact)
                                continue;
                        uint64_t room = 5 - (in - got[r][k]);
                        uint64_t ask = atomic_load(&sh->attempts[r][k]);
                        cr_assert_eq(got[r][k], ask < room ? ask : room,
                                     "key %d round %lu: %lu asked, room %lu", k, (unsigned long)r,
                                     (unsigned long)ask, (unsigned long)room);
                        cr_assert_eq(got[r][k], atomic_load(&sh->admitted[r][k]),
                                     "what the callers were told is what the arena counts");
                }
        }
        munmap(sh, sizeof(*sh));
        thr_limiter_close(l);
}

/*
 * Two processes race on one key with room for all their tries (the manual clock stands still, so
 * every unit stays in the window): any denial is spurious. A process whose loaded state is stale
 * reads the log words the winner has already raised for its next units; it must not deny on
 * them (client.c: a denial is reported only on a state unchanged after its words were read).
 */
Test(window, racing_processes_are_never_denied_while_there_is_room)
{
        enum { KIDS = 2, EACH = RACE_N / KIDS };
        thr_limiter *l = tlim(&T, "big");
        struct race {
                _Atomic int ready, go;
                _Atomic uint64_t admitted[KIDS], denied[KIDS];
        } *sh = shared_map(sizeof(*sh));
        cr_assert_eq(thr_limiter_try(l, "k", 1, 0, NULL), 1); /* the key exists before the race */
        for (int i = 0; i < KIDS; i++) {
                g_kids[i] = tfork();
                if (g_kids[i] == 0) {
                        atomic_fetch_add(&sh->ready, 1);
                        while (!atomic_load(&sh->go))
                                ;
                        for (int n = 0; n < EACH; n++) {
                                int rc = thr_limiter_try(l, "k", 1, 1, NULL);
                                if (rc < 0)
                                        _exit(2);
                                atomic_fetch_add(rc ? &sh->admitted[i] : &sh->denied[i], 1);
                        }
                        _exit(0);
                }
        }
        while (atomic_load(&sh->ready) < KIDS)
                sched_yield();
        atomic_store(&sh->go, 1);
        for (int i = 0; i < KIDS; i++)
                reap(i);
        uint64_t yes = 0, no = 0;
        for (int i = 0; i < KIDS; i++) {
                yes += atomic_load(&sh->admitted[i]);
                no += atomic_load(&sh->denied[i]);
        }
        cr_assert_eq(no, 0, "%lu of %u tries denied with room in the window (%lu admitted)",
                     (unsigned long)no, RACE_N, (unsigned long)yes);
        cr_assert_eq(yes, RACE_N);
        cr_assert_eq(units_of("big", "k"), RACE_N, "the arena counts what was admitted");
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 0, "and now the window is full");
        munmap(sh, sizeof(*sh));
        thr_limiter_close(l);
}

Test(window, processes_admit_exactly_the_room_cost_one)
{
        run_rounds(4, false, false, true);
}

Test(window, processes_never_exceed_n_in_any_window_mixed_costs)
{
        run_rounds(4, true, false, false);
}

Test(window, processes_killed_at_random_never_over_admit)
{
        run_rounds(4, true, true, false);
        /* what kills cost is bounded: a window after the last round, every key has its N again */
        advance(2 * SEC + 500 * MS);
        thr_limiter *l = tlim(&T, "w");
        for (int k = 0; k < WKEYS; k++)
                cr_assert_eq(thr_limiter_try(l, wkeys[k], 1, 5, NULL), 1, "key %d recovered", k);
        thr_limiter_close(l);
}

/* ---------------------------------------------------------------- serialized: processes */

#define SLOG 512

/* What serialized holders share: who holds (pid, 0: nobody), violations, the completions. */
struct serial_log {
        _Atomic int holder;
        _Atomic int overlaps;
        _Atomic int clock_lock; /* the parent moves the clock only while it has this */
        _Atomic uint64_t n;
        uint64_t end_ns[SLOG]; /* arena time of each completion */
        _Atomic uint64_t order[SLOG];
        _Atomic uint64_t granted;
        _Atomic int ready;
        _Atomic int errors;
        double grant_real[MAX_KIDS]; /* CLOCK_MONOTONIC at each child's grant */
};

static void spin_lock(_Atomic int *l)
{
        int zero = 0;
        while (!atomic_compare_exchange_weak(l, &zero, 1)) {
                zero = 0;
                sched_yield();
        }
}

/* Take the hold, check nobody else has it, complete: M times. Completion times are exact:
 * the parent moves the clock only under the clock lock, which a holder has around its end. */
static void holder_child(struct serial_log *sl, thr_limiter *l, const char *key, int m)
{
        for (int i = 0; i < m; i++) {
                struct thr_hold h;
                int rc = thr_serial_begin(l, key, strlen(key), 1, UINT64_MAX / 2, &h);
                if (rc < 0) {
                        atomic_fetch_add(&sl->errors, 1);
                        _exit(3);
                }
                int was = atomic_exchange(&sl->holder, getpid());
                if (was && !tpid_exited(was))
                        atomic_fetch_add(&sl->overlaps, 1);
                usleep((useconds_t)(random() % 200));
                spin_lock(&sl->clock_lock);
                atomic_store(&sl->holder, 0);
                uint64_t n = atomic_fetch_add(&sl->n, 1);
                if (n < SLOG)
                        thr_clock_now(T.a, &sl->end_ns[n]);
                rc = thr_serial_end(&h);
                atomic_store(&sl->clock_lock, 0);
                if (rc < 0) {
                        atomic_fetch_add(&sl->errors, 1);
                        _exit(4);
                }
        }
        _exit(0);
}

/* Every window of length W over the completion times T[0..N) holds at most LIMIT of them. */
static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

static void check_windows(uint64_t *t, uint64_t n, uint64_t w, uint64_t limit)
{
        qsort(t, n, sizeof(*t), cmp_u64);
        for (uint64_t i = limit; i < n; i++)
                cr_assert_geq(t[i] - t[i - limit], w,
                              "completions %lu and %lu are %lu ns apart: %lu in a window",
                              (unsigned long)(i - limit), (unsigned long)i,
                              (unsigned long)(t[i] - t[i - limit]), (unsigned long)limit + 1);
}

Test(window, serial_one_holder_at_a_time_and_n_completions_per_window)
{
        thr_limiter *l = tlim(&T, "s"); /* N = 3 per 10 s */
        struct serial_log *sl = shared_map(sizeof(*sl));
        int kids = 4, m = 12;
        for (int i = 0; i < kids; i++) {
                g_kids[i] = tfork();
                if (g_kids[i] == 0)
                        holder_child(sl, l, "k", m);
        }
        /* the window, not the holders, is what limits: move the clock a second at a time */
        double t0 = mono_s();
        while ((int)atomic_load(&sl->n) < kids * m && !atomic_load(&sl->errors)) {
                cr_assert_lt(mono_s() - t0, 120.0, "stuck at %lu completions",
                             (unsigned long)atomic_load(&sl->n));
                usleep(2000);
                spin_lock(&sl->clock_lock);
                advance(SEC);
                atomic_store(&sl->clock_lock, 0);
        }
        for (int i = 0; i < kids; i++)
                reap(i);
        cr_assert_eq(atomic_load(&sl->overlaps), 0, "two holders at once");
        cr_assert_eq(units_of("s", "k"), (uint64_t)(kids * m), "every completion logged once");
        check_windows(sl->end_ns, (uint64_t)(kids * m), 10 * SEC, 3);
        munmap(sl, sizeof(*sl));
        thr_limiter_close(l);
}

/* Queue children one by one behind the parent's hold: they are granted in that order. */
Test(window, serial_waiters_are_granted_in_fifo_order)
{
        thr_limiter *l = tlim(&T, "f"); /* N = 100 per 1 s: room for all */
        struct serial_log *sl = shared_map(sizeof(*sl));
        struct thr_hold h;
        cr_assert_eq(thr_serial_begin(l, "q", 1, 1, 0, &h), 0);
        struct thr_serial *hdr = serial_hdr("f", "q");
        int kids = 6;
        for (int i = 0; i < kids; i++) {
                g_kids[i] = tfork();
                if (g_kids[i] == 0) {
                        struct thr_hold mine;
                        if (thr_serial_begin(l, "q", 1, 1, UINT64_MAX / 2, &mine) < 0)
                                _exit(3);
                        sl->order[atomic_fetch_add(&sl->granted, 1)] = (uint64_t)i;
                        _exit(thr_serial_end(&mine) == 0 ? 0 : 4);
                }
                double t0 = mono_s();
                while (atomic_load(&hdr->waiters) != (uint32_t)i + 1)
                        cr_assert_lt(mono_s() - t0, 10.0, "child %d never queued", i);
        }
        cr_assert_eq(thr_serial_end(&h), 0);
        for (int i = 0; i < kids; i++)
                reap(i);
        cr_assert_eq(atomic_load(&sl->granted), (uint64_t)kids);
        for (int i = 0; i < kids; i++)
                cr_assert_eq(sl->order[i], (uint64_t)i, "grant %d went to child %lu", i,
                             (unsigned long)sl->order[i]);
        cr_assert_eq(hdr->waiters, 0);
        munmap(sl, sizeof(*sl));
        thr_limiter_close(l);
}

/* A holder and a queued waiter are SIGKILLed: the next waiter gets the hold within the bound. */
Test(window, serial_killed_holder_and_waiter_are_released)
{
        thr_limiter *l = tlim(&T, "f");
        struct serial_log *sl = shared_map(sizeof(*sl));
        struct thr_serial *hdr = NULL;
        /* child 0 holds, child 1 and child 2 queue */
        for (int i = 0; i < 3; i++) {
                g_kids[i] = tfork();
                if (g_kids[i] == 0) {
                        struct thr_hold mine;
                        if (thr_serial_begin(l, "d", 1, 2, UINT64_MAX / 2, &mine) < 0)
                                _exit(3);
                        sl->grant_real[i] = mono_s();
                        atomic_fetch_add(&sl->granted, 1);
                        if (i == 0)
                                pause(); /* holds until killed */
                        _exit(thr_serial_end(&mine) == 0 ? 0 : 4);
                }
                double t0 = mono_s();
                if (i == 0) {
                        while (!atomic_load(&sl->granted))
                                cr_assert_lt(mono_s() - t0, 10.0, "never granted");
                        hdr = serial_hdr("f", "d");
                        continue;
                }
                while (atomic_load(&hdr->waiters) != (uint32_t)i)
                        cr_assert_lt(mono_s() - t0, 10.0, "child %d never queued", i);
        }
        uint64_t before = units_of("f", "d");
        kill_kid(1); /* a dead waiter is skipped */
        double killed = mono_s();
        kill_kid(0);
        reap(2);
        double bound = (double)THR_SERIAL_POLL_NS / 1e9 + 1.0; /* poll + a loaded machine */
        cr_assert_lt(sl->grant_real[2] - killed, bound, "granted %.3f s after the holder died",
                     sl->grant_real[2] - killed);
        cr_assert_eq(units_of("f", "d"), before + 4,
                     "the dead holder's 2 units are counted at its death, then the waiter's 2");
        cr_assert_eq(hdr->hold_token, 0);
        cr_assert_eq(hdr->waiters, 0);
        cr_assert_geq(hdr->released, 1);
        munmap(sl, sizeof(*sl));
        thr_limiter_close(l);
}

/* ---------------------------------------------------------------- the example */

/* examples/serial_downstream.c against a real throttled on the real clock: every call alone, at
 * most N per window, none lost. */
Test(window_example, serial_downstream_runs_clean, .timeout = 120)
{
        struct tdaemon d;
        tdaemon_init(&d);
        int i = tdaemon_start_real(
            &d, "[downstream]\nkind = window\nlimit = 5\nwindow = 200ms\nserialize = yes\n"
                "capacity = 16\n");
        char cmd[768], line[256] = "";
        snprintf(cmd, sizeof(cmd),
                 "%s/examples/thr-serial-downstream -a %s -l downstream -p 4 -j 8 -n 5 -w 200",
                 getenv("THR_TEST_BUILD_DIR"), d.name);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        char *got = fgets(line, sizeof(line), p);
        int st = pclose(p);
        cr_assert_not_null(got, "no output from %s", cmd);
        unsigned calls = 0, overlaps = 1, bad = 1, timeouts = 1;
        cr_assert_eq(sscanf(line, "calls %u overlaps %u window_violations %u timeouts %u", &calls,
                            &overlaps, &bad, &timeouts),
                     4, "output: %s", line);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit %#x: %s", st, line);
        cr_assert_eq(calls, 32, "%s", line);
        cr_assert_eq(overlaps, 0, "%s", line);
        cr_assert_eq(bad, 0, "%s", line);
        tdaemon_stop(&d, i);
        tdaemon_fini(&d);
}

/* ---------------------------------------------------------------- serialized: SIGKILL storm */

/* Real clock: holders and waiters SIGKILLed at random moments of begin, hold and end, replaced at
 * once. Never two live holders; no waiter waits out its timeout (a dead holder or a dead waiter
 * ahead of it is got past within the bound); the key ends with no holder and no waiter. */
static void storm_child(struct serial_log *sl, thr_limiter *l)
{
        srandom((unsigned)getpid());
        for (;;) {
                struct thr_hold h;
                int rc = thr_serial_begin(l, "x", 1, 1, 5 * SEC, &h);
                if (rc < 0) {
                        fprintf(stderr, "storm: begin: %s\n", thr_strerror(rc));
                        atomic_fetch_add(&sl->errors, 1);
                        _exit(3);
                }
                int was = atomic_exchange(&sl->holder, getpid());
                if (was && !tpid_exited(was))
                        atomic_fetch_add(&sl->overlaps, 1);
                atomic_fetch_add(&sl->granted, 1);
                usleep((useconds_t)(random() % 300));
                atomic_store(&sl->holder, 0);
                if ((rc = thr_serial_end(&h)) < 0) {
                        fprintf(stderr, "storm: end: %s\n", thr_strerror(rc));
                        atomic_fetch_add(&sl->errors, 1);
                        _exit(4);
                }
        }
}

Test(window_storm, serial_holders_killed_at_random, .timeout = 180)
{
        struct shm_limiter_spec s = wspec("x", 16384, 1000, true); /* the window never limits */
        struct tarena rt;
        tarena_make(&rt, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim(&rt, "x");
        struct serial_log *sl = shared_map(sizeof(*sl));
        int kids = 5;
        for (int i = 0; i < kids; i++) {
                g_kids[i] = tfork();
                if (g_kids[i] == 0)
                        storm_child(sl, l);
        }
        srandom(11);
        uint64_t kills = 0;
        double t0 = mono_s();
        while (mono_s() - t0 < (tunder_instrumentation() ? 6.0 : 3.0)) {
                usleep((useconds_t)(random() % 3000));
                int v = (int)(random() % kids);
                kill_kid(v);
                kills++;
                if (kills % 16 == 0)
                        shm_readers_reap(&rt.map); /* the daemon's job: free dead records */
                g_kids[v] = tfork();
                if (g_kids[v] == 0)
                        storm_child(sl, l);
                cr_assert_eq(atomic_load(&sl->errors), 0, "a begin timed out or failed");
        }
        uint64_t before = atomic_load(&sl->granted);
        usleep(200000);
        cr_assert_gt(atomic_load(&sl->granted), before, "holds still granted after the storm");
        for (int i = 0; i < kids; i++)
                kill_kid(i);
        cr_assert_eq(atomic_load(&sl->overlaps), 0, "two live holders at once");
        cr_assert_eq(atomic_load(&sl->errors), 0);
        cr_assert_gt(atomic_load(&sl->granted), kills, "%lu holds for %lu kills",
                     (unsigned long)atomic_load(&sl->granted), (unsigned long)kills);
        /* everyone is dead: one serve (a begin) releases what they held and finds no waiter */
        struct thr_hold h;
        cr_assert_eq(thr_serial_begin(l, "x", 1, 1, SEC, &h), 0);
        cr_assert_eq(thr_serial_end(&h), 0);
        const struct thr_table *tb = ttable(&rt, "x");
        uint64_t hh = shm_hash(shm_hdr(&rt.map)->hash_key, "x", 1);
        struct thr_slot *slot = shm_table_lookup(rt.map.base, tb, hh, "x", 1);
        cr_assert_not_null(slot);
        struct thr_serial *hdr = shm_serial(shm_slot_aux(rt.map.base, tb, slot));
        cr_assert_eq(hdr->hold_token, 0);
        cr_assert_eq(hdr->waiters, 0);
        munmap(sl, sizeof(*sl));
        thr_limiter_close(l);
        tarena_free(&rt);
}

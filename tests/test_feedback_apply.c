/*
 * test_feedback_apply.c - issue 16: what a downstream said, applied to a shared GCRA key
 * (thr_limiter_hold, thr_limiter_cap, thr_feedback_apply), on manual-clock arenas.
 *
 * The semantics under test (throttle.h): a hold of D at time h admits nothing before h + D and one
 * request of cost 1 at h + D (if nothing held the key longer), then the configured rate; a cap of
 * N leaves at most N tokens now, refilling at the configured rate; neither ever admits more than
 * the key would have without it. Each is checked by what tries get at the exact nanoseconds
 * around the boundary, not by reading the state word: a formula off by one emission interval, or
 * by one nanosecond, fails.
 *
 * The processes test is the issue's: forked workers hammer one key while the parent moves the
 * clock; one response saying "nothing left, reset in 2 s" is applied; no worker is admitted after
 * that until the reset, and the rate after it is exactly the configured one.
 */
#include <criterion/criterion.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "throttle/throttle.h"

#define SEC 1000000000ull
#define MS  1000000ull

TestSuite(feedback_apply, .timeout = 120);

static uint64_t now_of(thr_arena *a)
{
        uint64_t n;
        cr_assert_eq(thr_clock_now(a, &n), 0);
        return n;
}

/* Move the manual clock to arena time T (never back). */
static void clock_to(thr_arena *a, uint64_t t)
{
        uint64_t n = now_of(a);
        cr_assert_geq(t, n, "the clock never goes back (%lu < %lu)", (unsigned long)t,
                      (unsigned long)n);
        cr_assert_eq(thr_clock_advance(a, t - n), 0);
}

static int try1(thr_limiter *l, const char *key)
{
        struct thr_result r;
        int rc = thr_limiter_try(l, key, strlen(key), 1, &r);
        cr_assert_geq(rc, 0, "try %s: %d", key, rc);
        return rc;
}

/* The first time from FROM (arena ns) at which a try of cost 1 on KEY is admitted is exactly AT:
 * denied at AT - 1 (when AT > FROM), admitted at AT; then the next one is T later. */
static void first_admission_at(thr_arena *a, thr_limiter *l, const char *key, uint64_t at,
                               uint64_t t_ns)
{
        if (at > now_of(a)) {
                clock_to(a, at - 1);
                struct thr_result r;
                cr_assert_eq(thr_limiter_try(l, key, strlen(key), 1, &r), 0,
                             "%s admitted 1 ns before %lu", key, (unsigned long)at);
                cr_assert_eq(r.retry_after_ns, 1, "%s: retry after %lu ns, not 1", key,
                             (unsigned long)r.retry_after_ns);
                clock_to(a, at);
        }
        cr_assert_eq(try1(l, key), 1, "%s not admitted at %lu", key, (unsigned long)at);
        cr_assert_eq(try1(l, key), 0, "%s: a second one at once", key);
        clock_to(a, at + t_ns);
        cr_assert_eq(try1(l, key), 1, "%s: the configured rate after", key);
}

/* A hold of 2 s on a full key: nothing for 2 s, one at 2 s, the burst back (B-1)*T after. */
Test(feedback_apply, hold_exact)
{
        struct shm_limiter_spec s[] = {tspec("api", 10, SEC, 5, 5)}; /* T = 100 ms, B = 5 */
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        clock_to(t.a, 10 * SEC);
        uint64_t h = now_of(t.a);
        cr_assert_eq(try1(l, "a"), 1); /* a key that exists, 4 tokens left */
        struct thr_result r;
        cr_assert_eq(thr_limiter_hold(l, "a", 1, 2 * SEC, &r), 0);
        cr_assert(r.admitted == 0 && r.remaining == 0 && r.retry_after_ns == 2 * SEC &&
                      r.limit == 5,
                  "after the hold: admitted %d remaining %lu retry %lu", r.admitted,
                  (unsigned long)r.remaining, (unsigned long)r.retry_after_ns);
        cr_assert_eq(try1(l, "a"), 0, "admitted right after the hold");
        clock_to(t.a, h + SEC);
        cr_assert_eq(try1(l, "a"), 0);
        first_admission_at(t.a, l, "a", h + 2 * SEC, 100 * MS);

        /* a key held but not used: its whole burst at h2 + 2 s + (B-1)*T, not 1 ns earlier */
        uint64_t h2 = now_of(t.a);
        cr_assert_eq(thr_limiter_hold(l, "b", 1, 2 * SEC, NULL), 0); /* a new key: inserted held */
        cr_assert_eq(tcount(&t, "api", THR_SLOT_LIVE, "b", NULL), 1);
        uint64_t full = h2 + 2 * SEC + 4 * 100 * MS;
        clock_to(t.a, full - 1);
        cr_assert_eq(thr_limiter_try(l, "b", 1, 5, &r), 0, "the whole burst 1 ns early");
        clock_to(t.a, full);
        cr_assert_eq(thr_limiter_try(l, "b", 1, 5, &r), 1, "the whole burst back");
        tarena_free(&t);
}

/* Holds and caps at random, each against what the key would have done without it: the first
 * admission comes at max(its own time, the hold's end), and a cap leaves min(left, N) now. */
Test(feedback_apply, random_against_the_key_without_it)
{
        struct shm_limiter_spec s[] = {tspec("x", 1, 1, 1, 1)};
        srand(12345);
        for (int round = 0; round < 60; round++) {
                static const uint64_t rates[] = {1, 5, 8, 10, 40, 125, 400, 1000, 4000};
                uint64_t b = 1 + (uint64_t)(rand() % 12);
                uint64_t rate = rates[rand() % 9];
                s[0] = tspec("x", rate, SEC, b, b);
                struct tarena t;
                tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
                thr_limiter *l = tlim_kept(&t, "x");
                uint64_t step = SEC / rate; /* T, a whole number of ns */
                clock_to(t.a, SEC);
                uint64_t used = (uint64_t)rand() % (b + 1); /* 0..B used at h */
                for (uint64_t i = 0; i < used; i++)
                        cr_assert_eq(try1(l, "k"), 1);
                uint64_t h = now_of(t.a);
                /* without the hold, the next admission is at h (used < B) or h + T */
                uint64_t own = used < b ? h : h + step;
                if (rand() % 2) {
                        uint64_t d = (uint64_t)(rand() % 3000) * MS / 10; /* 0 to 300 ms */
                        struct thr_result r;
                        cr_assert_geq(thr_limiter_hold(l, "k", 1, d, &r), 0);
                        uint64_t at = own > h + d ? own : h + d;
                        cr_assert_eq(r.retry_after_ns, at - h,
                                     "round %d: B %lu T %lu used %lu D %lu", round,
                                     (unsigned long)b, (unsigned long)step, (unsigned long)used,
                                     (unsigned long)d);
                        first_admission_at(t.a, l, "k", at, step);
                } else {
                        uint64_t n = (uint64_t)rand() % (b + 3);
                        struct thr_result r;
                        cr_assert_eq(thr_limiter_cap(l, "k", 1, n, &r), 0);
                        uint64_t left = b - used < n ? b - used : n;
                        cr_assert_eq(r.remaining, left, "round %d: cap %lu of %lu left", round,
                                     (unsigned long)n, (unsigned long)(b - used));
                        for (uint64_t i = 0; i < left; i++)
                                cr_assert_eq(try1(l, "k"), 1, "round %d: token %lu of %lu", round,
                                             (unsigned long)i, (unsigned long)left);
                        cr_assert_eq(try1(l, "k"), 0, "round %d: more than the cap", round);
                }
                tarena_free(&t);
        }
}

/* A hold never gives capacity back: a key reserved past the hold's end keeps its reservations. */
Test(feedback_apply, never_lowers)
{
        struct shm_limiter_spec s[] = {tspec("api", 10, SEC, 2, 2)}; /* T = 100 ms */
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        clock_to(t.a, SEC);
        uint64_t h = now_of(t.a);
        struct thr_reservation rv;
        for (int i = 0; i < 12; i++) /* 2 now, then one every 100 ms: the TAT at h + 1.2 s */
                cr_assert_eq(thr_limiter_reserve(l, "k", 1, 1, 10 * SEC, &rv), 0);
        struct thr_slot *sl;
        cr_assert_eq(tcount(&t, "api", THR_SLOT_LIVE, "k", &sl), 1);
        uint64_t before = atomic_load(&sl->state);
        struct thr_result r;
        cr_assert_eq(thr_limiter_hold(l, "k", 1, 500 * MS, &r), 0);
        cr_assert_eq(atomic_load(&sl->state), before, "a shorter hold moved the TAT");
        cr_assert_eq(r.retry_after_ns, 1100 * MS, "the reservations' end: %lu",
                     (unsigned long)r.retry_after_ns);
        cr_assert_eq(thr_limiter_cap(l, "k", 1, 1, &r), 0);
        cr_assert_eq(atomic_load(&sl->state), before, "a cap above what is left moved the TAT");
        /* a cap of a full key's whole burst, or more, changes nothing and inserts nothing */
        cr_assert_eq(thr_limiter_cap(l, "new", 3, 2, &r), 0);
        cr_assert_eq(r.remaining, 2);
        cr_assert_eq(thr_limiter_cap(l, "new", 3, UINT64_MAX, &r), 0);
        cr_assert_eq(tcount(&t, "api", THR_SLOT_LIVE, "new", NULL), 0, "a cap of nothing inserted");
        /* a cap of 0 on a full key: none now, one a T later */
        cr_assert_eq(thr_limiter_cap(l, "z", 1, 0, &r), 0);
        cr_assert(r.remaining == 0 && r.retry_after_ns == 100 * MS);
        first_admission_at(t.a, l, "z", h + 100 * MS, 100 * MS);
        tarena_free(&t);
}

/* A hold longer than the limiter's reach (B*T + max_reserve) is shortened to it, and said so. */
Test(feedback_apply, clipped_to_the_reach)
{
        struct shm_limiter_spec s[] = {tspec("api", 10, SEC, 3, 3)}; /* T = 100 ms */
        s[0].max_reserve_ns = SEC;
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        clock_to(t.a, SEC);
        uint64_t h = now_of(t.a);
        struct thr_result r;
        cr_assert_eq(thr_limiter_hold(l, "k", 1, 3600 * SEC, &r), 1);
        /* TAT = h + B*T + R: one fits at h + T + R */
        cr_assert_eq(r.retry_after_ns, 1100 * MS, "%lu", (unsigned long)r.retry_after_ns);
        cr_assert_eq(thr_limiter_hold(l, "k", 1, UINT64_MAX, &r), 1, "the largest delay");
        cr_assert_eq(thr_limiter_hold(l, "k", 1, SEC + 100 * MS, &r), 0, "exactly the reach");
        first_admission_at(t.a, l, "k", h + 1100 * MS, 100 * MS);
        tarena_free(&t);
}

/* Errors: other kinds, bad arguments, a full table (nothing held, whatever on_full says). */
Test(feedback_apply, errors)
{
        struct shm_limiter_spec s[4];
        s[0] = tspec("w", 9, SEC, 1, 1);
        s[0].kind = THR_KIND_WINDOW;
        s[0].burst = s[0].initial = 0;
        s[1] = tspec_budget("b", 10);
        s[2] = tspec("full", 10, SEC, 2, 2);
        s[2].capacity = 1;
        s[2].shards = 1;
        s[2].on_full = THR_FULL_ALLOW;
        s[2].lock_wait_ns = 0;
        s[3] = tspec("s", 6, 0, 0, 0);
        s[3].kind = THR_KIND_SEMAPHORE;
        s[3].leases = 4;
        s[3].max_reserve_ns = 0;
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 4);
        struct thr_result r;
        struct thr_feedback fb;
        thr_feedback_init(&fb);
        const char *kinds[] = {"w", "b", "s"};
        for (int i = 0; i < 3; i++) {
                thr_limiter *l = tlim_kept(&t, kinds[i]);
                cr_assert_eq(thr_limiter_hold(l, "k", 1, SEC, &r), -EOPNOTSUPP, "%s", kinds[i]);
                cr_assert_eq(thr_limiter_cap(l, "k", 1, 0, &r), -EOPNOTSUPP, "%s", kinds[i]);
                cr_assert_eq(thr_feedback_apply(l, "k", 1, &fb, 0, &r), -EOPNOTSUPP, "%s",
                             kinds[i]);
        }
        thr_limiter *l = tlim_kept(&t, "full");
        cr_assert_eq(thr_limiter_hold(l, NULL, 1, SEC, &r), -EINVAL);
        cr_assert_eq(thr_limiter_hold(l, "k", 0, SEC, &r), -EINVAL);
        cr_assert_eq(thr_limiter_hold(NULL, "k", 1, SEC, &r), -EINVAL);
        cr_assert_eq(thr_feedback_apply(l, "k", 1, NULL, 0, &r), -EINVAL);
        cr_assert_eq(thr_feedback_apply(l, "k", 1, &fb, 2, &r), -EINVAL);
        cr_assert_eq(try1(l, "one"), 1); /* the table's only key */
        cr_assert_eq(thr_limiter_hold(l, "two", 3, SEC, &r), -ENOSPC);
        cr_assert_eq(try1(l, "two"), 1, "on_full = allow: the key was never held");
        cr_assert_eq(thr_limiter_hold(l, "one", 3, SEC, &r), 0, "an existing key still is");
        cr_assert_eq(try1(l, "one"), 0);
        tarena_free(&t);
}

static void header(struct thr_feedback *fb, const char *name, const char *value)
{
        cr_assert_eq(thr_feedback_header(fb, name, strlen(name), value, strlen(value),
                                         1700000000 * (int64_t)SEC),
                     1, "%s: %s", name, value);
}

/* From response headers to the shared key, each form of the issue. */
Test(feedback_apply, from_headers)
{
        struct shm_limiter_spec s[] = {tspec("api", 10, SEC, 5, 5)}; /* T = 100 ms */
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        clock_to(t.a, SEC);
        uint64_t h = now_of(t.a);
        struct thr_feedback fb;
        struct thr_result r;

        thr_feedback_init(&fb); /* 429 with Retry-After: 2 */
        header(&fb, "Retry-After", "2");
        cr_assert_eq(thr_feedback_apply(l, "ra", 2, &fb, 0, &r), 0);
        cr_assert_eq(r.retry_after_ns, 2 * SEC);

        thr_feedback_init(&fb); /* nothing left, the window resets in 3 s */
        header(&fb, "X-RateLimit-Remaining", "0");
        header(&fb, "X-RateLimit-Reset", "3");
        cr_assert_eq(thr_feedback_apply(l, "xr", 2, &fb, 0, &r), 0);
        cr_assert_eq(r.retry_after_ns, 3 * SEC);

        thr_feedback_init(&fb); /* both: the longer */
        header(&fb, "Retry-After", "4");
        header(&fb, "RateLimit", "\"default\";r=0;t=1");
        cr_assert_eq(thr_feedback_apply(l, "both", 4, &fb, 0, &r), 0);
        cr_assert_eq(r.retry_after_ns, 4 * SEC);

        thr_feedback_init(&fb); /* two left in this window: a cap */
        header(&fb, "RateLimit", "\"default\";r=2;t=10");
        cr_assert_eq(thr_feedback_apply(l, "cap", 3, &fb, 0, &r), 0);
        cr_assert_eq(r.remaining, 2);
        cr_assert_eq(try1(l, "cap"), 1);
        cr_assert_eq(try1(l, "cap"), 1);
        cr_assert_eq(try1(l, "cap"), 0, "a third one after remaining 2");

        thr_feedback_init(&fb); /* an LLM API's tokens run out: only with USE_TOKENS */
        header(&fb, "x-ratelimit-remaining-tokens", "0");
        header(&fb, "x-ratelimit-reset-tokens", "1.5s");
        header(&fb, "x-ratelimit-remaining-requests", "99");
        cr_assert_eq(thr_feedback_apply(l, "req", 3, &fb, 0, &r), 0);
        cr_assert_eq(r.remaining, 5, "the requests dimension (99 left) caps nothing");
        cr_assert_eq(thr_feedback_apply(l, "tok", 3, &fb, THR_FEEDBACK_USE_TOKENS, &r), 0);
        cr_assert_eq(r.retry_after_ns, 1500 * MS);

        thr_feedback_init(&fb); /* a limit alone says nothing to apply; a bad value is refused */
        header(&fb, "X-RateLimit-Limit", "1");
        cr_assert_eq(thr_feedback_header(&fb, "Retry-After", 11, "soon", 4, 0), -EINVAL);
        cr_assert_eq(thr_feedback_apply(l, "lim", 3, &fb, 0, &r), 0);
        cr_assert_eq(r.remaining, 5);
        cr_assert_eq(tcount(&t, "api", THR_SLOT_LIVE, "lim", NULL), 0);

        first_admission_at(t.a, l, "ra", h + 2 * SEC, 100 * MS);
        first_admission_at(t.a, l, "xr", h + 3 * SEC, 100 * MS);
        first_admission_at(t.a, l, "both", h + 4 * SEC, 100 * MS);
        tarena_free(&t);
}

/* ---------------------------------------------------------------- many processes, one key */

#define NW      4
#define TRIES   3         /* each worker's tries at each step */
#define STEP_NS (10 * MS) /* the clock's step; the limiter's T too (100/s) */
#define HOLD_AT 50        /* the step at which the response is applied */
#define STEPS   400

struct sh {
        _Atomic uint64_t go;               /* the step the workers may try at */
        _Atomic uint64_t done[NW];         /* the last step each worker has tried at */
        _Atomic uint64_t admit[STEPS + 1]; /* admissions by the clock the try read */
        _Atomic int stop;
        _Atomic int bad;
};

/* TRIES tries at each step the parent allows; none spans a move of the clock (the parent moves
 * it only once every worker is done), so the step read before and after is the try's own. */
static void worker(const char *arena, struct sh *sh, int w, uint64_t t0)
{
        thr_arena *a;
        thr_limiter *l;
        if (thr_arena_open(arena, 0, &a) != 0 || thr_limiter_open(a, "api", &l) != 0)
                _exit(2);
        uint64_t next = 0;
        while (!atomic_load(&sh->stop)) {
                uint64_t go = atomic_load(&sh->go);
                if (go < next) {
                        sched_yield();
                        continue;
                }
                for (int i = 0; i < TRIES; i++) {
                        uint64_t before, after;
                        thr_clock_now(a, &before);
                        int rc = thr_limiter_try(l, "api", 3, 1, NULL);
                        thr_clock_now(a, &after);
                        if (rc < 0 || before != after || before != t0 + go * STEP_NS)
                                atomic_store(&sh->bad, rc < 0 ? rc : 1);
                        else if (rc == 1)
                                atomic_fetch_add(&sh->admit[go], 1);
                }
                atomic_store(&sh->done[w], go);
                next = go + 1;
        }
        _exit(0);
}

/*
 * Four workers hammer one key (100/s, burst 5) while the parent moves the clock 10 ms a step and
 * waits, each step, until every worker has tried three times at that time: so every step's
 * capacity is used. At step 50 the parent applies "X-RateLimit-Remaining: 0, X-RateLimit-Reset:
 * 2" (as one worker would on a 429). Then: no admission at any step after it before the reset
 * (steps 51 to 249), exactly one per step from step 250 on (the configured rate, the bucket kept
 * empty), and before it the burst plus one per step.
 */
Test(feedback_apply, processes_hammering_one_key)
{
        struct shm_limiter_spec s[] = {tspec("api", 100, SEC, 5, 5)};
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        struct sh *sh =
            mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(sh, MAP_FAILED);
        memset(sh, 0, sizeof(*sh));
        clock_to(t.a, SEC);
        uint64_t t0 = now_of(t.a);
        pid_t pids[NW];
        for (int w = 0; w < NW; w++)
                atomic_store(&sh->done[w], UINT64_MAX);
        for (int w = 0; w < NW; w++) {
                pids[w] = tfork();
                cr_assert_geq(pids[w], 0);
                if (pids[w] == 0)
                        worker(t.path, sh, w, t0);
        }
        for (uint64_t tick = 0; tick <= STEPS; tick++) {
                if (tick) {
                        cr_assert_eq(thr_clock_advance(t.a, STEP_NS), 0);
                        atomic_store(&sh->go, tick);
                }
                if (tick == HOLD_AT) { /* while the workers try at this step */
                        struct thr_feedback fb;
                        thr_feedback_init(&fb);
                        header(&fb, "X-RateLimit-Remaining", "0");
                        header(&fb, "X-RateLimit-Reset", "2");
                        cr_assert_eq(thr_feedback_apply(l, "api", 3, &fb, 0, NULL), 0);
                }
                struct timespec t1;
                clock_gettime(CLOCK_MONOTONIC, &t1);
                for (int w = 0; w < NW; w++)
                        while (atomic_load(&sh->done[w]) != tick) {
                                cr_assert_lt(telapsed_s(&t1), 30.0, "worker %d stuck at %lu", w,
                                             (unsigned long)tick);
                                cr_assert_eq(atomic_load(&sh->bad), 0);
                                sched_yield();
                        }
        }
        atomic_store(&sh->stop, 1);
        for (int w = 0; w < NW; w++) {
                int st;
                cr_assert_eq(waitpid(pids[w], &st, 0), pids[w]);
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d: %#x", w, st);
        }
        cr_assert_eq(atomic_load(&sh->bad), 0);
        uint64_t before = 0;
        for (int k = 0; k < HOLD_AT; k++)
                before += atomic_load(&sh->admit[k]);
        cr_assert_eq(before, 5 + (HOLD_AT - 1), "before the response: the burst, then the rate");
        for (int k = HOLD_AT + 1; k < HOLD_AT + 200; k++)
                cr_assert_eq(atomic_load(&sh->admit[k]), 0, "admitted at step %d, before the reset",
                             k);
        for (int k = HOLD_AT + 200; k <= STEPS; k++)
                cr_assert_eq(atomic_load(&sh->admit[k]), 1, "step %d after the reset: %lu", k,
                             (unsigned long)atomic_load(&sh->admit[k]));
        munmap(sh, sizeof(*sh));
        tarena_free(&t);
}

/* ---------------------------------------------------------------- the example */

static void run_pool(struct tdaemon *d, const char *extra, char *line, size_t len, int *st)
{
        char cmd[768];
        snprintf(cmd, sizeof(cmd), "%s/examples/thr-api-pool -a %s -p 4 -s 2 %s",
                 getenv("THR_TEST_BUILD_DIR"), d->name, extra);
        texample_line(cmd, line, len, st);
}

/*
 * examples/api_pool.c against a real throttled on the real clock: four workers, a limiter twice
 * as fast as the API's quota. Sharing the key, no window of the API sees more 429s than there are
 * workers and the retries stay within the retry limiter's bound (the example checks both and
 * exits 1 otherwise; the figures are checked here again). Each worker on its own key learns
 * alone: the API is told "no" more often.
 */
Test(feedback_example, api_pool_honours_429_host_wide, .timeout = 120)
{
        struct tdaemon d;
        tdaemon_init(&d);
        int i = tdaemon_start_real(&d, "[api]\nrate = 200/s\nburst = 5\ncapacity = 16\n\n"
                                       "[retries]\nrate = 10/s\nburst = 5\ncapacity = 16\n");
        char line[512];
        int st;
        unsigned long calls, ok, h429, h503, retries, refused, bound, alone429;
        unsigned windows, max429;
        run_pool(&d, "", line, sizeof(line), &st);
        cr_assert_eq(sscanf(line,
                            "calls %lu ok %lu http429 %lu http503 %lu windows %u "
                            "max429_per_window %u retries %lu retry_refused %lu retry_bound %lu",
                            &calls, &ok, &h429, &h503, &windows, &max429, &retries, &refused,
                            &bound),
                     9, "output: %s", line);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit %#x: %s", st, line);
        cr_log_info("shared key: %s", line);
        cr_assert_gt(ok, 40, "the API was used: %s", line);
        cr_assert_leq(max429, 4, "%s", line);
        cr_assert_leq(retries, bound, "%s", line);
        run_pool(&d, "--no-share", line, sizeof(line), &st);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit %#x: %s", st, line);
        cr_assert_eq(sscanf(line, "calls %*u ok %*u http429 %lu", &alone429), 1, "%s", line);
        cr_log_info("a key each: %s", line);
        cr_assert_geq(alone429, h429, "learning alone did better: %s", line);
        tdaemon_stop(&d, i);
        tdaemon_fini(&d);
}

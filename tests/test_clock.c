/*
 * test_clock.c - the cheap clocks of shm/clock.h: a lagging reading never admits more than the
 * bound allows, across processes of different lags; the coarse and TSC readings are never ahead
 * of CLOCK_MONOTONIC; the auto rule; the config's refusals.
 *
 * The bound (clock.h): readings that lag true time by at most L give, for a key of burst B and
 * emission interval T, at most B + (d + L) / T units in any interval of d ns of true time. On a
 * manual-clock arena a test build subtracts thr_test_clock_lag_ns from this process's coarse and
 * TSC readings, so each forked process gets its own lag, and every decision of a step is made at
 * one known true time: the check is exact. A control run with one process AHEAD of true time
 * must break the same check, or the check proves nothing.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "helpers.h"
#include "testhook.h"

#define US 1000ull
#define MS 1000000ull

static double mono_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *x)
{
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        return *x;
}

/* ---------------------------------------------------------------- (1) one state, two readings */

/* In any state, a reading that lags admits a request only if the true time admits it. */
Test(clock, lagging_reading_never_admits_what_true_time_denies)
{
        uint64_t x = 88172645463325252ull;
        const uint64_t rates[][3] = {{1, 1000, 1}, {3, 7000, 5}, {100, SEC, 10}, {7, 29, 3}};
        uint64_t checked = 0, differ = 0;
        for (size_t r = 0; r < 4; r++) {
                struct shm_limiter_spec s =
                    tspec("g", rates[r][0], rates[r][1], rates[r][2], rates[r][2]);
                struct thr_params p;
                char err[256];
                cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0, "%s", err);
                for (int i = 0; i < 200000; i++) {
                        uint64_t now = 3 * p.bt_units + 1000 + rnd(&x) % (50 * p.bt_units + 1000);
                        uint64_t tat = rnd(&x) % 4 == 0
                                           ? THR_TAT_FRESH
                                           : now - 2 * p.bt_units + rnd(&x) % (5 * p.bt_units + 1);
                        uint64_t lag = rnd(&x) % (3 * p.bt_units + 2) % now; /* now - lag >= 1 */
                        uint64_t cost = 1 + rnd(&x) % p.burst;
                        struct shm_gcra at, lagged;
                        shm_gcra_step(&p, tat, now, cost, &at);
                        shm_gcra_step(&p, tat, now - lag, cost, &lagged);
                        cr_assert(!lagged.admitted || at.admitted,
                                  "rate %zu: TAT %llu, cost %llu admitted at %llu - %llu but "
                                  "denied at %llu",
                                  r, (unsigned long long)tat, (unsigned long long)cost,
                                  (unsigned long long)now, (unsigned long long)lag,
                                  (unsigned long long)now);
                        checked++;
                        differ += at.admitted != lagged.admitted;
                }
        }
        /* the lag matters in some states (else the property was never exercised) */
        cr_assert_gt(differ, 1000, "only %llu of %llu states told the two readings apart",
                     (unsigned long long)differ, (unsigned long long)checked);
}

/* ---------------------------------------------------------------- (2) processes of different lags
 */

#define STEPS    2400u
#define PHASE    25u /* steps a phase lasts: one process alone, or all of them */
#define PROCS    3
#define TRIES    2 /* per process per step */
#define T_NS     1000ull
#define BURST    4ull
#define WAIT_SEC 30.0

struct sched {
        _Atomic uint64_t step; /* steps released (step s is released when step >= s + 1) */
        _Atomic uint64_t done; /* process-steps finished */
        _Atomic uint64_t adm[STEPS];
        uint64_t at[STEPS]; /* true (manual) time of step s */
};

/* Which processes try in step S: phases of PHASE steps, each process alone in turn, then all. */
static bool tries_in(unsigned s, int i)
{
        unsigned ph = (s / PHASE) % (PROCS + 1);
        return ph == PROCS || ph == (unsigned)i;
}

/*
 * Run the schedule with these per-process lags on a fresh key of limiter NAME; return how many
 * (i, j) step intervals admitted more than B + (t_j - t_i + L) / T units, L the largest lag.
 */
static uint64_t run_schedule(const char *name, uint32_t how, const int64_t lags[PROCS],
                             uint64_t seed, uint64_t *admitted)
{
        struct shm_limiter_spec spec = tspec(name, 1, T_NS, BURST, BURST);
        spec.clock_read = how;
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &spec, 1);
        struct thr_hdr *h = shm_hdr(&t.map);
        struct shm_lim_snap snap;
        cr_assert_eq(shm_dir_snapshot(&t.map, (uint32_t)shm_dir_find(&t.map, name), &snap), 0);
        cr_assert_eq(THR_PARAM_CLOCK(snap.params.flags), how, "limiter %s reads clock %u", name,
                     THR_PARAM_CLOCK(snap.params.flags));
        thr_limiter *l = tlim_kept(&t, name);
        struct sched *sc =
            mmap(NULL, sizeof(*sc), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(sc, MAP_FAILED);
        uint64_t now = 1000 * T_NS; /* above every lag: no reading clamps at 0 */
        for (unsigned s = 0; s < STEPS; s++) {
                sc->at[s] = now;
                now += rnd(&seed) % (T_NS + T_NS / 5 + 1);
        }
        pid_t pids[PROCS];
        for (int i = 0; i < PROCS; i++) {
                pids[i] = tfork();
                cr_assert_geq(pids[i], 0);
                if (pids[i] == 0) {
                        /* a process sits out the steps that are not its (tries_in) */
                        atomic_store(&thr_test_clock_lag_ns, lags[i]);
                        double t0 = mono_s();
                        for (unsigned s = 0; s < STEPS; s++) {
                                while (atomic_load_explicit(&sc->step, memory_order_acquire) <
                                       s + 1) {
                                        if (mono_s() - t0 > WAIT_SEC)
                                                _exit(2);
                                        sched_yield();
                                }
                                for (int k = 0; k < TRIES && tries_in(s, i); k++) {
                                        struct thr_result res;
                                        if (thr_limiter_try(l, "k", 1, 1, &res) < 0)
                                                _exit(3);
                                        if (res.admitted)
                                                atomic_fetch_add(&sc->adm[s], 1);
                                }
                                atomic_fetch_add_explicit(&sc->done, 1, memory_order_release);
                        }
                        _exit(0);
                }
        }
        double t0 = mono_s();
        bool late = false;
        for (unsigned s = 0; s < STEPS && !late; s++) {
                atomic_store_explicit(&h->manual_now_ns, sc->at[s], memory_order_release);
                atomic_store_explicit(&sc->step, s + 1, memory_order_release);
                while (atomic_load_explicit(&sc->done, memory_order_acquire) <
                       (uint64_t)PROCS * (s + 1)) {
                        if (mono_s() - t0 > WAIT_SEC) {
                                late = true;
                                break;
                        }
                        sched_yield();
                }
        }
        for (int i = 0; i < PROCS; i++) {
                int st = 0;
                if (late)
                        kill(pids[i], SIGKILL);
                cr_assert_eq(waitpid(pids[i], &st, 0), pids[i]);
                cr_assert(late || (WIFEXITED(st) && WEXITSTATUS(st) == 0),
                          "child %d ended with status %#x", i, st);
        }
        cr_assert(!late, "the schedule did not finish in %.0f s", WAIT_SEC);
        int64_t lmax = 0;
        for (int i = 0; i < PROCS; i++)
                lmax = lags[i] > lmax ? lags[i] : lmax;
        /* prefix sums; interval [i, j] of steps admits pre[j + 1] - pre[i] units */
        static uint64_t pre[STEPS + 1];
        pre[0] = 0;
        for (unsigned s = 0; s < STEPS; s++)
                pre[s + 1] = pre[s] + atomic_load(&sc->adm[s]);
        uint64_t bad = 0;
        for (unsigned i = 0; i < STEPS; i++)
                for (unsigned j = i; j < STEPS; j++) {
                        /* units <= B + (d + L) / T, in integers: (units - B) * T <= d + L */
                        uint64_t units = pre[j + 1] - pre[i];
                        uint64_t d = sc->at[j] - sc->at[i] + (uint64_t)lmax;
                        if (units > BURST && (units - BURST) * T_NS > d)
                                bad++;
                }
        *admitted = pre[STEPS];
        munmap(sc, sizeof(*sc));
        tarena_free(&t);
        return bad;
}

static void bound_holds_for(uint32_t how)
{
        const int64_t lags[PROCS] = {0, 700, 2500};
        uint64_t adm = 0;
        uint64_t bad = run_schedule("lagged", how, lags, 0x9e3779b97f4a7c15ull, &adm);
        cr_assert_eq(bad, 0,
                     "clock %s: %llu intervals admitted more than B + (d + L) / T (lags 0, 700, "
                     "2500 ns; %llu admitted)",
                     shm_clock_read_name(how), (unsigned long long)bad, (unsigned long long)adm);
        /* the key was kept busy: about one unit per T of the schedule's span, the burst aside */
        cr_assert_gt(adm, STEPS / 3, "only %llu admitted: the schedule did not saturate the key",
                     (unsigned long long)adm);
}

Test(clock, lagging_processes_keep_the_bound_coarse, .timeout = 120)
{
        bound_holds_for(THR_CLOCK_READ_COARSE);
}

Test(clock, lagging_processes_keep_the_bound_tsc, .timeout = 120)
{
        bound_holds_for(THR_CLOCK_READ_TSC);
}

/* The same check fails when a process reads AHEAD of true time: it can fail. */
Test(clock, a_process_ahead_breaks_the_bound, .timeout = 120)
{
        const int64_t lags[PROCS] = {0, 700, -10000};
        const uint32_t hows[] = {THR_CLOCK_READ_COARSE, THR_CLOCK_READ_TSC};
        for (int i = 0; i < 2; i++) {
                uint64_t adm = 0;
                uint64_t bad = run_schedule("ahead", hows[i], lags, 0x2545f4914f6cdd1dull, &adm);
                cr_assert_gt(bad, 0,
                             "clock %s: a process 10 us ahead admitted no more than the lagging "
                             "bound allows: the check cannot catch a clock that runs ahead (%llu "
                             "admitted)",
                             shm_clock_read_name(hows[i]), (unsigned long long)adm);
        }
}

/* ---------------------------------------------------------------- real clocks */

struct reads {
        const struct thr_hdr *h;
        struct shm_tsc_cal cal;
        uint64_t n;
        _Atomic uint64_t *bad; /* coarse or tsc reading above the precise one read after it */
        _Atomic uint64_t *backwards;
};

static void *read_loop(void *arg)
{
        struct reads *r = arg;
        uint64_t last_tsc = 0;
        for (uint64_t i = 0; i < r->n; i++) {
                uint64_t c = shm_now_coarse(r->h);
                uint64_t t = r->cal.mult ? shm_now_tsc(r->h, &r->cal) : 0;
                uint64_t p = shm_now_ns(r->h);
                if (c > p || t > p)
                        atomic_fetch_add(r->bad, 1);
                if (t < last_tsc)
                        atomic_fetch_add(r->backwards, 1);
                last_tsc = t;
        }
        return NULL;
}

/* Coarse and TSC readings, read before a precise one, never exceed it: in 2 processes of 2
 * threads each, a million reads each. */
Test(clock, cheap_readings_never_ahead_of_the_precise_clock, .timeout = 120)
{
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, NULL, 0);
        const struct thr_hdr *h = shm_hdr(&t.map);
        cr_assert_gt(h->coarse_lag_ns, 0);
        if (!h->tsc_mult)
                cr_log_info("this machine's TSC is not usable (clock.h's rule): only the coarse "
                            "clock is checked");
        _Atomic uint64_t *cnt =
            mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(cnt, MAP_FAILED);
        uint64_t n = tunder_instrumentation() ? 100000 : 1000000;
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        pthread_t th[2];
        struct reads r[2];
        for (int i = 0; i < 2; i++) {
                r[i] = (struct reads){h, shm_tsc_cal_of(h), n, &cnt[0], &cnt[1]};
                cr_assert_eq(pthread_create(&th[i], NULL, read_loop, &r[i]), 0);
        }
        for (int i = 0; i < 2; i++)
                pthread_join(th[i], NULL);
        if (pid == 0) {
                cnt[2] = atomic_load(&shm_tsc_broken);
                _exit(0);
        }
        int st = 0;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        cr_assert_eq(atomic_load(&cnt[0]), 0, "%llu cheap readings were ahead of CLOCK_MONOTONIC",
                     (unsigned long long)atomic_load(&cnt[0]));
        cr_assert_eq(atomic_load(&cnt[1]), 0, "a thread's TSC readings went backwards %llu times",
                     (unsigned long long)atomic_load(&cnt[1]));
        cr_assert_eq(atomic_load(&shm_tsc_broken) | cnt[2], 0,
                     "a re-anchor found the TSC clock ahead: its rate margin is too small");
        if (h->tsc_mult)
                cr_log_info("TSC: %.4f ns a cycle (margin applied), anchor window <= %llu cycles, "
                            "lag bound %llu ns; coarse lag bound %llu ns",
                            (double)h->tsc_mult / 4294967296.0, (unsigned long long)h->tsc_gap,
                            (unsigned long long)h->tsc_lag_ns,
                            (unsigned long long)h->coarse_lag_ns);
        munmap(cnt, 4096);
        tarena_free(&t);
}

/* Real clock, 3 processes hammering one key read the coarse or the TSC clock: never more than
 * B + (elapsed + L) / T admitted (a bound, not a timing). */
static void real_bound(uint32_t how)
{
        struct shm_limiter_spec spec = tspec("r", 2000, SEC, 5, 5); /* T = 500 us */
        spec.clock_read = how;
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, &spec, 1);
        struct shm_clock_facts cf;
        shm_clock_facts(THR_CLOCK_MONOTONIC, &cf, NULL, 0);
        uint64_t lag = 0;
        uint32_t got = shm_clock_choose(&cf, THR_KIND_GCRA, how, 500.0 * US, &lag);
        if (got != how) {
                cr_log_info("clock %s is not usable here: skipped", shm_clock_read_name(how));
                tarena_free(&t);
                return;
        }
        thr_limiter *l = tlim_kept(&t, "r");
        _Atomic uint64_t *adm =
            mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(adm, MAP_FAILED);
        double t0 = mono_s();
        pid_t pids[3];
        for (int i = 0; i < 3; i++) {
                pids[i] = tfork();
                cr_assert_geq(pids[i], 0);
                if (pids[i] == 0) {
                        /* 0.2 s from the parent's start, and on until more than the burst was
                         * admitted (up to 30 s): children forked late or descheduled on a loaded
                         * or paused VM got nothing past the burst in a fixed window. The upper
                         * bound is on the parent's measured elapsed time, which covers it all; a
                         * clock that never moves still admits only the burst and fails below. */
                        while (mono_s() - t0 < 0.2 ||
                               (atomic_load(adm) <= 5 && mono_s() - t0 < 30.0)) {
                                struct thr_result res;
                                if (thr_limiter_try(l, "k", 1, 1, &res) < 0)
                                        _exit(3);
                                if (res.admitted)
                                        atomic_fetch_add(adm, 1);
                        }
                        _exit(0);
                }
        }
        for (int i = 0; i < 3; i++) {
                int st = 0;
                cr_assert_eq(waitpid(pids[i], &st, 0), pids[i]);
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        double secs = mono_s() - t0;
        double bound = 5 + (secs * 1e9 + (double)lag) / (500.0 * US);
        uint64_t got_n = atomic_load(adm);
        cr_assert_leq((double)got_n, bound,
                      "clock %s: %llu admitted in %.3f s, more than B + (elapsed + L) / T = %.1f",
                      shm_clock_read_name(how), (unsigned long long)got_n, secs, bound);
        cr_assert_gt(got_n, 5, "nothing beyond the burst was admitted in %.3f s", secs);
        munmap(adm, 4096);
        tarena_free(&t);
}

Test(clock, real_clock_bound_coarse, .timeout = 60)
{
        real_bound(THR_CLOCK_READ_COARSE);
}

Test(clock, real_clock_bound_tsc, .timeout = 60)
{
        real_bound(THR_CLOCK_READ_TSC);
}

/* ---------------------------------------------------------------- choice and refusals */

Test(clock, auto_rule)
{
        struct shm_clock_facts h;
        memset(&h, 0, sizeof(h));
        h.coarse_lag_ns = 4 * MS;
        h.tsc_mult = 1ull << 31;
        h.tsc_lag_ns = 1000;
        uint64_t lag = 1;
        /* T >= 64 * 4 ms: coarse; T >= 64 * 1 us: tsc; faster: precise */
        cr_assert_eq(shm_clock_choose(&h, THR_KIND_GCRA, THR_CLOCK_READ_AUTO, 256.0 * MS, &lag),
                     THR_CLOCK_READ_COARSE);
        cr_assert_eq(lag, 4 * MS);
        cr_assert_eq(shm_clock_choose(&h, THR_KIND_GCRA, THR_CLOCK_READ_AUTO, 255.9 * MS, &lag),
                     THR_CLOCK_READ_TSC);
        cr_assert_eq(lag, 1000);
        cr_assert_eq(shm_clock_choose(&h, THR_KIND_GCRA, THR_CLOCK_READ_AUTO, 64.0 * US, NULL),
                     THR_CLOCK_READ_TSC);
        cr_assert_eq(shm_clock_choose(&h, THR_KIND_GCRA, THR_CLOCK_READ_AUTO, 63.9 * US, &lag),
                     THR_CLOCK_READ_PRECISE);
        cr_assert_eq(lag, 0);
        /* explicit choices stand, except a TSC the machine does not have */
        cr_assert_eq(shm_clock_choose(&h, THR_KIND_GCRA, THR_CLOCK_READ_COARSE, 10.0, NULL),
                     THR_CLOCK_READ_COARSE);
        cr_assert_eq(shm_clock_choose(&h, THR_KIND_GCRA, THR_CLOCK_READ_PRECISE, 1e12, NULL),
                     THR_CLOCK_READ_PRECISE);
        h.tsc_mult = 0;
        cr_assert_eq(shm_clock_choose(&h, THR_KIND_GCRA, THR_CLOCK_READ_TSC, 1e9, NULL),
                     THR_CLOCK_READ_PRECISE);
        cr_assert_eq(shm_clock_choose(&h, THR_KIND_GCRA, THR_CLOCK_READ_AUTO, 100.0 * US, NULL),
                     THR_CLOCK_READ_PRECISE);
        /* other kinds: always precise */
        h.tsc_mult = 1ull << 31;
        cr_assert_eq(shm_clock_choose(&h, THR_KIND_WINDOW, THR_CLOCK_READ_AUTO, 1e12, NULL),
                     THR_CLOCK_READ_PRECISE);
        cr_assert_eq(shm_clock_choose(&h, THR_KIND_SEMAPHORE, THR_CLOCK_READ_TSC, 1e12, NULL),
                     THR_CLOCK_READ_PRECISE);
}

Test(clock, only_rate_limiters_take_a_cheap_clock)
{
        struct shm_limiter_spec s = tspec("w", 10, SEC, 0, 0);
        s.kind = THR_KIND_WINDOW;
        s.clock_read = THR_CLOCK_READ_COARSE;
        struct thr_params p;
        char err[256] = "";
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), -EINVAL);
        cr_assert(strstr(err, "clock_read = coarse applies to rate limiters only"), "%s", err);
        s.clock_read = THR_CLOCK_READ_AUTO;
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(THR_PARAM_CLOCK(p.flags), THR_CLOCK_READ_PRECISE);
        s = tspec("g", 10, SEC, 1, 1);
        s.clock_read = 7;
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), -EINVAL);
        cr_assert(strstr(err, "clock_read must be"), "%s", err);
}

/* ---------------------------------------------------------------- the review's attacks */

static int hook_stalls;   /* TSC anchor reads still to stall */
static uint64_t stall_ns; /* for this long, between the clock read and the cycle count */

static void stall_hook(enum thr_hook_point point, void *arg)
{
        (void)arg;
        if (point != THR_HOOK_TSC_ANCHOR_READ || hook_stalls <= 0)
                return;
        hook_stalls--;
        double t0 = mono_s();
        while (mono_s() - t0 < (double)stall_ns / 1e9)
                ;
}

static int64_t mono_abs_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Run FN in a child (its TLS anchor and shm_tsc_broken are its own); assert it exited 0. */
static void in_child(void (*fn)(const struct thr_hdr *), const struct thr_hdr *h)
{
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                fn(h);
                _exit(0);
        }
        int st = 0;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x", st);
}

static void stale_child(const struct thr_hdr *h)
{
        struct shm_tsc_cal cal = shm_tsc_cal_of(h);
        thr_test_hook = stall_hook;
        stall_ns = 2 * MS;
        /* a thread stopped 2 ms between its anchor's two reads: that pair is refused, and the
         * next (unstopped) read is the anchor */
        hook_stalls = 1;
        shm_tsc_tls.tsc0 = 0;
        int64_t before = mono_abs_ns();
        shm_now_tsc(h, &cal);
        if (shm_tsc_tls.tsc0 == 0 || shm_tsc_tls.mono0 < before + (int64_t)stall_ns)
                _exit(10); /* anchored on the stale pair: its clock value predates the stop */
        /* stopped at every try: no anchor at all, the precise clock answers */
        hook_stalls = 4;
        shm_tsc_tls.tsc0 = 0;
        before = mono_abs_ns();
        uint64_t r = shm_now_tsc(h, &cal);
        if (shm_tsc_tls.tsc0 != 0)
                _exit(11);
        if ((int64_t)r + h->epoch_ns < before + 4 * (int64_t)stall_ns)
                _exit(12); /* not a reading taken after the stops */
        thr_test_hook = NULL;
}

/* A re-anchor stopped between its CLOCK_MONOTONIC read and its cycle count never anchors on that
 * stale pair (it would lag by the whole stop, for a whole span, not by tsc_lag_ns). */
Test(clock, a_stopped_anchor_read_is_refused, .timeout = 60)
{
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, NULL, 0);
        if (!shm_tsc_cal_of(shm_hdr(&t.map)).mult)
                cr_log_info("no usable TSC here: the anchor cannot be checked");
        else
                in_child(stale_child, shm_hdr(&t.map));
        tarena_free(&t);
}

static void wrong_rate_child(const struct thr_hdr *h)
{
        struct shm_tsc_cal cal = shm_tsc_cal_of(h);
        cal.mult = cal.mult * 3 / 2; /* 1.5 times too fast: still "sane" at open */
        for (int i = 0; i < 2000; i++)
                shm_now_tsc(h, &cal);
        double t0 = mono_s();
        while (mono_s() - t0 < 0.04) /* idle for 40 ms: the anchor is 100 spans old */
                ;
        uint64_t r = shm_now_tsc(h, &cal);
        if (!atomic_load(&shm_tsc_broken))
                _exit(20); /* the rate went unnoticed */
        uint64_t p = shm_now_ns(h);
        if (r > p)
                _exit(21);
        for (int i = 0; i < 1000; i++) {
                r = shm_now_tsc(h, &cal);
                if (r > shm_now_ns(h))
                        _exit(22); /* still ahead after it was found out */
        }
}

/* A TSC rate that runs ahead is found out at the next anchor however old the last one is. */
Test(clock, a_wrong_rate_is_caught_after_idle, .timeout = 60)
{
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, NULL, 0);
        if (!shm_tsc_cal_of(shm_hdr(&t.map)).mult)
                cr_log_info("no usable TSC here: the rate check cannot be shown");
        else
                in_child(wrong_rate_child, shm_hdr(&t.map));
        tarena_free(&t);
}

/* A client scribbling the header's clock fields changes neither the clock a reconfiguration
 * chooses nor, after it, the fields. */
Test(clock, a_scribbled_header_does_not_choose_the_clock)
{
        struct shm_limiter_spec spec = tspec("fast", 100000, SEC, 10, 10); /* T = 10 us */
        spec.clock_read = THR_CLOCK_READ_AUTO;
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, &spec, 1);
        struct thr_hdr *h = shm_hdr(&t.map);
        struct shm_clock_facts cf;
        shm_clock_facts(THR_CLOCK_MONOTONIC, &cf, NULL, 0);
        uint32_t want = shm_clock_choose(&cf, THR_KIND_GCRA, THR_CLOCK_READ_AUTO, 10.0 * US, NULL);
        struct shm_lim_snap snap;
        cr_assert_eq(shm_dir_snapshot(&t.map, (uint32_t)shm_dir_find(&t.map, "fast"), &snap), 0);
        cr_assert_eq(THR_PARAM_CLOCK(snap.params.flags), want);
        atomic_store(&h->coarse_lag_ns, 1); /* "coarse lags 1 ns": would make it coarse */
        atomic_store(&h->tsc_lag_ns, 1);
        atomic_store(&h->tsc_mult, 7);
        spec.burst = 11; /* a reload with a change, so a new record is written */
        struct shm_arena_spec as = {.hugepages = SHM_HUGE_OFF,
                                    .mode = 0600,
                                    .gid = (gid_t)-1,
                                    .clock = THR_CLOCK_MONOTONIC,
                                    .max_limiters = 16,
                                    .max_readers = 256,
                                    .spare_bytes = 1 << 20,
                                    .nlimiters = 1,
                                    .limiters = &spec};
        snprintf(as.name, sizeof(as.name), "%s", h->name);
        char err[256] = "";
        cr_assert_eq(shm_arena_configure(&t.map, &as, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(shm_dir_snapshot(&t.map, (uint32_t)shm_dir_find(&t.map, "fast"), &snap), 0);
        cr_assert_eq(snap.params.burst, 11);
        cr_assert_eq(THR_PARAM_CLOCK(snap.params.flags), want, "chose %s from a scribbled header",
                     shm_clock_read_name(THR_PARAM_CLOCK(snap.params.flags)));
        cr_assert_eq(atomic_load(&h->coarse_lag_ns), cf.coarse_lag_ns, "header not rewritten");
        cr_assert_eq(atomic_load(&h->tsc_mult), cf.tsc_mult);
        cr_assert_eq(atomic_load(&h->tsc_lag_ns), cf.tsc_lag_ns);
        tarena_free(&t);
}

/* ---------------------------------------------------------------- a denial's second reading */

static _Atomic uint64_t *rr_now; /* the manual clock the hook moves */
static uint64_t rr_step;
static int rr_calls;

static void advance_hook(enum thr_hook_point point, void *arg)
{
        (void)arg;
        if (point == THR_HOOK_CLOCK_READ && rr_calls > 0) {
                rr_calls--;
                atomic_fetch_add(rr_now, rr_step);
        }
}

/* A denied try reads the clock again when its deficit is small enough for the time since its
 * first reading to matter (others' admissions may be newer than that reading); a deficit above
 * THR_REREAD_NS stands on the first reading, as a clock lagging by the stop would decide. */
Test(clock, a_denial_reads_the_clock_again_only_when_it_can_help)
{
        struct shm_limiter_spec spec = tspec("g", 1, MS, 1, 1); /* T = 1 ms, burst 1 */
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &spec, 1);
        thr_limiter *l = tlim_kept(&t, "g");
        rr_now = &shm_hdr(&t.map)->manual_now_ns;
        uint64_t base = 10 * MS;
        atomic_store(rr_now, base);
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 1); /* TAT = base + 1 ms */
        thr_test_hook = advance_hook;
        /* 500 ns short; 600 ns pass between the reading and the state: the second reading admits */
        atomic_store(rr_now, base + MS - 500);
        rr_step = 600;
        rr_calls = 1;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 1, "a small deficit was not read again");
        cr_assert_eq(rr_calls, 0, "the hook did not run between the reading and the state");
        /* TAT = base + 2 ms + 100 ns; 0.5 ms short, 0.6 ms pass: the denial stands */
        atomic_store(rr_now, base + 1500 * US + 100);
        rr_step = 600 * US;
        rr_calls = 1;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0,
                     "a deficit of 0.5 ms was decided again on a second reading");
        cr_assert_eq(r.retry_after_ns, 500 * US, "retry after %llu ns",
                     (unsigned long long)r.retry_after_ns);
        thr_test_hook = NULL;
        /* and the next try, on the clock as it is now, is admitted */
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 1);
        tarena_free(&t);
}

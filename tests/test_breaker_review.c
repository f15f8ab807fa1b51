/*
 * test_breaker_review.c - a hostile review of kind = breaker, as programs: the findings that were
 * fixed (a report of a call out across 64 periods is ignored, a fork child's copy of a ticket is
 * refused, a late window add no longer resets the next period's bucket) and what held (probes
 * under threads, holders SIGKILLed at random, the end of the 20-year horizon).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "breaker.h"
#include "client_internal.h"
#include "helpers.h"

#define MS (1000000ull)
#define U  (1ull << THR_BRK_TIME_SHIFT)

static struct tarena T;

static struct shm_limiter_spec brk_spec(const char *name, uint64_t failures, uint64_t rate,
                                        uint64_t min_calls, uint64_t window, uint64_t probes,
                                        uint64_t successes)
{
        struct shm_limiter_spec s = tspec(name, 0, window, 0, 0);
        s.kind = THR_KIND_BREAKER;
        s.max_reserve_ns = 0;
        s.failures = failures;
        s.failure_rate = rate;
        s.min_calls = min_calls;
        s.cooldown_ns = 64 * U;
        s.probe_timeout_ns = 128 * U;
        s.probes = probes;
        s.successes = successes;
        s.idle_ttl_ns = SEC;
        return s;
}

static void setup(void)
{
        struct shm_limiter_spec s[] = {
            brk_spec("one", 1, 0, 0, 0, 1, 1),
            brk_spec("two", 1, 0, 0, 0, 2, 15),
            brk_spec("rate", 0, 50, 4, 800 * MS, 1, 1),
        };
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, sizeof(s) / sizeof(s[0]));
}

static void teardown(void)
{
        tarena_free(&T);
}

TestSuite(breaker_review, .init = setup, .fini = teardown, .timeout = 120);

static uint64_t now_of(void)
{
        uint64_t n;
        cr_assert_eq(thr_clock_now(T.a, &n), 0);
        return n;
}

static void adv(uint64_t d)
{
        cr_assert_eq(thr_clock_advance(T.a, d), 0);
}

/* Trip KEY (failures = 1) and wait out the cooldown: half-open. */
static void to_half_open(thr_limiter *l, const char *key)
{
        uint64_t n = now_of();
        adv((n + U - 1) / U * U - n);
        struct thr_breaker_ticket t;
        cr_assert_eq(thr_breaker_allow(l, key, strlen(key), &t, NULL), 0);
        cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_FAILURE), 0);
        adv(64 * U);
}

/* F1: the 6-bit generation wraps after 64 give-ups: a probe ticket given up 64 periods ago
 * reports into the current period, frees the current holder's place and closes the breaker. */
Test(breaker_review, a_probe_given_up_64_periods_ago_is_ignored)
{
        thr_limiter *l = tlim_kept(&T, "one");
        const char *k = "k";
        to_half_open(l, k);
        struct thr_breaker_ticket stale, cur;
        cr_assert_eq(thr_breaker_allow(l, k, 1, &stale, NULL), 0);
        cr_assert_eq(stale.probe, 1);
        for (int i = 0; i < 64; i++) { /* 64 give-ups, each handing a new probe to a dead holder */
                adv(128 * U);
                cr_assert_eq(thr_breaker_allow(l, k, 1, &cur, NULL), 0);
                cr_assert_eq(cur.probe, 1);
        }
        /* 'cur' holds the one probe place. The stale ticket is 64 * probe_timeout (8.6 s) old. */
        int rc = thr_breaker_report(l, &stale, THR_OUTCOME_IGNORE);
        struct thr_breaker_ticket extra;
        int rc2 = thr_breaker_allow(l, k, 1, &extra, NULL);
        cr_expect_eq(rc, 1, "a report given up 64 periods ago was counted (rc %d)", rc);
        cr_assert_neq(rc2 == 0 && extra.probe, 1,
                      "probes = 1 but two probes are out: cur and extra");
}

/* F1b: the same wrap for a closed-period call: a failure reported after the breaker went through
 * 21 trip cycles and one give-up (64 transitions) trips the new closed period. */
Test(breaker_review, a_closed_call_from_64_periods_ago_does_not_trip_it)
{
        thr_limiter *l = tlim_kept(&T, "one");
        const char *k = "c";
        struct thr_breaker_ticket stale, t, t2;
        cr_assert_eq(thr_breaker_allow(l, k, 1, &stale, NULL), 0); /* closed, gen 0 */
        int transitions = 0;
        while (transitions < 64) {
                to_half_open(l, k); /* +2 */
                transitions += 2;
                cr_assert_eq(thr_breaker_allow(l, k, 1, &t, NULL), 0);
                cr_assert_eq(t.probe, 1);
                if (transitions == 62) { /* one give-up: +1 */
                        adv(128 * U);
                        cr_assert_eq(thr_breaker_allow(l, k, 1, &t2, NULL), 0);
                        transitions++;
                        t = t2;
                }
                cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_SUCCESS), 0); /* close: +1 */
                transitions++;
        }
        struct thr_breaker_status st;
        cr_assert_eq(thr_breaker_stat(l, k, 1, &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_CLOSED);
        int rc = thr_breaker_report(l, &stale, THR_OUTCOME_FAILURE);
        cr_assert_eq(thr_breaker_stat(l, k, 1, &st), 0);
        cr_expect_eq(rc, 1, "a closed call from 64 periods ago was counted");
        cr_assert_eq(st.state, THR_BREAKER_CLOSED, "a stale failure tripped the new period");
}

/* F2b: the same through fork: the child reports the parent's ticket, and so does the parent. */
Test(breaker_review, a_fork_childs_report_of_its_parents_probe_is_refused)
{
        thr_limiter *l = tlim_kept(&T, "two");
        const char *k = "f";
        to_half_open(l, k);
        struct thr_breaker_ticket a, b, c, d;
        cr_assert_eq(thr_breaker_allow(l, k, 1, &a, NULL), 0);
        cr_assert_eq(thr_breaker_allow(l, k, 1, &b, NULL), 0);
        pid_t pid = tfork();
        if (pid == 0) {
                thr_breaker_report(l, &a, THR_OUTCOME_IGNORE);
                _exit(0);
        }
        int ws;
        cr_assert_eq(waitpid(pid, &ws, 0), pid);
        cr_assert_eq(thr_breaker_report(l, &a, THR_OUTCOME_IGNORE), 0,
                     "the parent's own report: its place was taken back by the child");
        int n = 1;
        if (thr_breaker_allow(l, k, 1, &c, NULL) == 0 && c.probe)
                n++;
        if (thr_breaker_allow(l, k, 1, &d, NULL) == 0 && d.probe)
                n++;
        cr_assert_leq(n, 2, "probes = 2 but %d probes out", n);
}

/* Held: the 20-year horizon. Trip at 19.99 years with cooldown and probe_timeout at the horizon:
 * no early half-open, no wrap. */
Test(breaker_review, late_in_the_horizon_nothing_ends_early)
{
        thr_limiter *l = tlim_kept(&T, "one");
        adv(THR_HORIZON_NS - 3600 * SEC - now_of());
        to_half_open(l, "h");
        struct thr_breaker_ticket t, t2;
        cr_assert_eq(thr_breaker_allow(l, "h", 1, &t, NULL), 0);
        cr_assert_eq(t.probe, 1);
        adv(128 * U - 1);
        cr_assert_eq(thr_breaker_allow(l, "h", 1, &t2, NULL), -EAGAIN);
        adv(1);
        cr_assert_eq(thr_breaker_allow(l, "h", 1, &t2, NULL), 0);
}

/* Held (probe bound under threads): 6 threads on probes = 2; the clock moves only while the
 * breaker is open (no give-ups), by 64 U each time, so every half-open period has its own hand-out
 * time. The holders of one period, counted outside, must never exceed 2. (Holders of different
 * periods may overlap: a probe's failure opens the breaker while the other probe is still out,
 * and that probe's report then belongs to a period that has ended. A first version counted all
 * holders together and failed under ASan's slower threads with 3.) */
#include <pthread.h>
#define PERIODS 1024
static _Atomic int HOLD[PERIODS], MAXHOLD, STOP;
static thr_limiter *SL;
/* The hand-out time a ticket carries (struct brk_priv in libclient/breaker.c: slot, lim, meta,
 * gen and magic, then handout_ns). */
static unsigned ticket_period(const struct thr_breaker_ticket *t)
{
        return (unsigned)(t->priv[4] / (64 * U) % PERIODS);
}
static void *stress_thread(void *arg)
{
        uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
        while (!atomic_load(&STOP)) {
                struct thr_breaker_ticket t;
                if (thr_breaker_allow(SL, "s", 1, &t, NULL) != 0)
                        continue;
                if (t.probe) {
                        _Atomic int *hold = &HOLD[ticket_period(&t)];
                        int h = atomic_fetch_add(hold, 1) + 1;
                        int m = atomic_load(&MAXHOLD);
                        while (h > m && !atomic_compare_exchange_weak(&MAXHOLD, &m, h))
                                ;
                        for (volatile int i = 0; i < 200; i++)
                                ;
                        atomic_fetch_sub(hold, 1);
                }
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                uint32_t out = t.probe ? 1 + (uint32_t)(x % 3) : (x % 4 ? 2 : 1);
                thr_breaker_report(SL, &t, out);
        }
        return NULL;
}

Test(breaker_review, threads_never_hold_more_than_probes_without_give_ups)
{
        SL = tlim_kept(&T, "two");
        struct thr_breaker_ticket c;
        adv(5 * 64 * U + 3);
        cr_assert_eq(thr_breaker_allow(SL, "check", 5, &c, NULL), 0);
        cr_assert_eq(c.priv[4], now_of(), "ticket_period reads the hand-out time");
        thr_breaker_report(SL, &c, THR_OUTCOME_SUCCESS);
        pthread_t th[6];
        for (uintptr_t i = 0; i < 6; i++)
                pthread_create(&th[i], NULL, stress_thread, (void *)i);
        int opened = 0;
        for (int i = 0; i < 20000; i++) {
                struct thr_breaker_status st;
                cr_assert_eq(thr_breaker_stat(SL, "s", 1, &st), 0);
                if (st.state == THR_BREAKER_OPEN) {
                        opened++;
                        adv(64 * U);
                }
                usleep(10);
        }
        atomic_store(&STOP, 1);
        for (int i = 0; i < 6; i++)
                pthread_join(th[i], NULL);
        cr_log_info("opened %d times, max holders %d", opened, atomic_load(&MAXHOLD));
        cr_assert_gt(opened, 10);
        cr_assert_leq(atomic_load(&MAXHOLD), 2);
}

/* Held (no wedge): forked callers with random clock moves, SIGKILLed at random; once they are
 * all dead and probe_timeout + cooldown have passed, a probe is handed out (or it is closed). */
Test(breaker_review, holders_killed_at_random_never_wedge_the_breaker)
{
        thr_limiter *pl = tlim_kept(&T, "two");
        for (int round = 0; round < 20; round++) {
                pid_t kids[6];
                for (int i = 0; i < 6; i++) {
                        kids[i] = tfork();
                        if (kids[i] == 0) {
                                thr_limiter *cl = tlim(&T, "two");
                                uint64_t x = (uint64_t)getpid() * 2654435761u + 1;
                                for (;;) {
                                        struct thr_breaker_ticket t;
                                        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                                        if (x % 7 == 0)
                                                thr_clock_advance(T.a, (x >> 8) % (80 * U));
                                        if (thr_breaker_allow(cl, "z", 1, &t, NULL) == 0)
                                                thr_breaker_report(cl, &t, 1 + (uint32_t)(x % 3));
                                }
                        }
                }
                usleep((useconds_t)(1000 + random() % 20000));
                for (int i = 0; i < 6; i++) {
                        kill(kids[i], SIGKILL);
                        waitpid(kids[i], NULL, 0);
                }
                adv(128 * U + 64 * U);
                struct thr_breaker_ticket t;
                struct thr_breaker_status st;
                int rc = thr_breaker_allow(pl, "z", 1, &t, &st);
                cr_assert_eq(rc, 0, "round %d: wedged: state %u, in flight %u, retry %llu", round,
                             st.state, st.probes_in_flight, (unsigned long long)st.retry_after_ns);
                thr_breaker_report(pl, &t, THR_OUTCOME_IGNORE);
        }
}

/* F5 (pure): a report that passed shm_brk_counts in period g and adds after the breaker moved on
 * to a closed period g' (a process preempted between the two) resets g''s bucket of that slice:
 * the current period's counts are lost (not just "a bucket of an old generation"). */
Test(breaker_review, a_stale_generation_add_leaves_the_current_periods_bucket)
{
        struct shm_brk_cfg c = {.rate = 50, .min_calls = 4, .window_ns = 800 * MS};
        _Atomic uint64_t bk[8] = {0};
        uint64_t now = 10 * SEC;
        for (int i = 0; i < 3; i++)
                shm_brk_window_add(&c, bk, 3, now, true, NULL); /* period 3: 3 failures */
        uint64_t calls, fails;
        shm_brk_window_sum(&c, bk, 3, now, &calls, &fails);
        cr_assert_eq(calls, 3);
        struct shm_brk b3 = {.state = SHM_BRK_CLOSED, .gen = 3};
        _Atomic uint64_t word = shm_brk_encode(&b3);      /* the breaker is in period 3 now */
        shm_brk_window_add(&c, bk, 0, now, false, &word); /* a late add from period 0 */
        shm_brk_window_sum(&c, bk, 3, now, &calls, &fails);
        cr_assert_eq(calls, 3, "period 3's calls after a stale add: %llu",
                     (unsigned long long)calls);
}

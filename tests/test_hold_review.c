/* test_hold_review.c - hostile review of thr_limiter_hold / thr_limiter_cap (manual clock). */
#include <criterion/criterion.h>
#include <string.h>
#include <stdatomic.h>
#include <unistd.h>
#include "layout.h"
#include "helpers.h"
#include "throttle/throttle.h"
#define SEC 1000000000ull
#define MS  1000000ull
TestSuite(hold_review, .timeout = 60);
static uint64_t now_of(thr_arena *a)
{
        uint64_t n;
        cr_assert_eq(thr_clock_now(a, &n), 0);
        return n;
}
static int try1(thr_limiter *l, const char *k)
{
        struct thr_result r;
        int rc = thr_limiter_try(l, k, strlen(k), 1, &r);
        cr_assert_geq(rc, 0);
        return rc;
}

/* K > 1 (7/s), large max_reserve, clock 19.9 years in, hold UINT64_MAX: clipped, exact boundary */
Test(hold_review, k_gt_1_late_clock_max_delay)
{
        struct shm_limiter_spec s[] = {tspec("api", 7, SEC, 1000, 1000)};
        s[0].max_reserve_ns = 3600 * SEC;
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        uint64_t late = 19ull * 365 * 24 * 3600 * SEC + 300ull * 24 * 3600 * SEC;
        cr_assert_eq(thr_clock_advance(t.a, late), 0);
        struct thr_result r;
        int rc = thr_limiter_hold(l, "k", 1, UINT64_MAX, &r);
        cr_assert_eq(rc, 1, "rc %d", rc);
        uint64_t h = now_of(t.a);
        /* reach = B*T + R: one fits after T + R (T = 1/7 s, rounded up in ns) */
        uint64_t want = 3600 * SEC + (SEC + 6) / 7;
        cr_assert(r.retry_after_ns >= want - 1 && r.retry_after_ns <= want + 1,
                  "retry %lu want %lu", (unsigned long)r.retry_after_ns, (unsigned long)want);
        cr_assert_eq(thr_clock_advance(t.a, r.retry_after_ns - 1), 0);
        cr_assert_eq(try1(l, "k"), 0, "early at %lu", (unsigned long)(now_of(t.a) - h));
        cr_assert_eq(thr_clock_advance(t.a, 1), 0);
        cr_assert_eq(try1(l, "k"), 1, "due");
        cr_assert_eq(try1(l, "k"), 0, "only one");
        tarena_free(&t);
}

/* cap 0 on B = 1 : nothing now, one after T */
Test(hold_review, cap0_b1)
{
        struct shm_limiter_spec s[] = {tspec("api", 7, SEC, 1, 1)};
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        cr_assert_eq(thr_clock_advance(t.a, SEC), 0);
        struct thr_result r;
        cr_assert_eq(thr_limiter_cap(l, "k", 1, 0, &r), 0);
        cr_assert_eq(r.remaining, 0);
        cr_assert_eq(try1(l, "k"), 0);
        cr_assert_eq(thr_clock_advance(t.a, (SEC + 6) / 7), 0);
        cr_assert_eq(try1(l, "k"), 1);
        cr_assert_eq(thr_limiter_cap(l, "k", 1, UINT64_MAX, &r), 0, "cap above B: nothing");
        tarena_free(&t);
}

/* reserve, hold, cancel: the cancel must not give back capacity the hold took */
Test(hold_review, cancel_after_hold)
{
        struct shm_limiter_spec s[] = {tspec("api", 10, SEC, 2, 2)}; /* T = 100 ms */
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        cr_assert_eq(thr_clock_advance(t.a, SEC), 0);
        struct thr_reservation rv;
        cr_assert_eq(thr_limiter_reserve(l, "k", 1, 2, 0, &rv), 0);
        struct thr_result r;
        cr_assert_eq(thr_limiter_hold(l, "k", 1, 500 * MS, &r), 0);
        int crc = thr_reservation_cancel(&rv);
        (void)crc;
        cr_assert_eq(thr_clock_advance(t.a, 500 * MS - 1), 0);
        cr_assert_eq(try1(l, "k"), 0, "a cancel gave back what the hold took (cancel rc %d)", crc);
        cr_assert_eq(thr_clock_advance(t.a, 1), 0);
        cr_assert_eq(try1(l, "k"), 1);
        cr_assert_eq(try1(l, "k"), 0);
        tarena_free(&t);
}

/* a hold on a key already held longer: nothing written, so it was not "shortened" */
Test(hold_review, clipped_when_already_held)
{
        struct shm_limiter_spec s[] = {tspec("api", 10, SEC, 3, 3)};
        s[0].max_reserve_ns = SEC;
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        cr_assert_eq(thr_clock_advance(t.a, SEC), 0);
        struct thr_result r;
        cr_assert_eq(thr_limiter_hold(l, "k", 1, 3600 * SEC, &r), 1);
        int rc = thr_limiter_hold(l, "k", 1, 3600 * SEC, &r);
        cr_log_info("second clipped hold on an already-held key: rc %d", rc);
        tarena_free(&t);
}

/* a held key is not evicted by the idle pass before its hold ends */
Test(hold_review, held_key_survives_idle_pass)
{
        struct shm_limiter_spec s[] = {tspec("api", 10, SEC, 2, 2)};
        s[0].max_reserve_ns = 3600 * SEC;
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        cr_assert_eq(thr_clock_advance(t.a, SEC), 0);
        struct thr_result r;
        cr_assert_eq(thr_limiter_hold(l, "k", 1, 600 * SEC, &r), 0);
        for (int i = 0; i < 10; i++) {
                cr_assert_eq(thr_clock_advance(t.a, 59 * SEC), 0);
                tmaint(&t, "api", 0, NULL);
                cr_assert_eq(tcount(&t, "api", THR_SLOT_LIVE, "k", NULL), 1, "evicted at step %d",
                             i);
                cr_assert_eq(try1(l, "k"), 0, "admitted during the hold at step %d", i);
        }
        tarena_free(&t);
}

/* scribbled state words, then hold: no crash, no hang, TAT never lowered, never a mark written */
static void scribble_then_hold(uint64_t word, const char *what)
{
        struct shm_limiter_spec s[] = {tspec("api", 10, SEC, 2, 2)};
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        cr_assert_eq(thr_clock_advance(t.a, SEC), 0);
        cr_assert_eq(try1(l, "k"), 1);
        struct thr_slot *sl;
        cr_assert_eq(tcount(&t, "api", THR_SLOT_LIVE, "k", &sl), 1);
        atomic_store(&sl->state, word);
        struct thr_result r;
        alarm(5);
        int rc = thr_limiter_hold(l, "k", 1, 500 * MS, &r);
        alarm(0);
        uint64_t after = atomic_load(&sl->state);
        cr_log_info("%s (%#lx): hold rc %d, state after %#lx", what, (unsigned long)word, rc,
                    (unsigned long)after);
        if (word <= THR_TAT_LIMIT)
                cr_assert_geq(after, word, "%s: TAT lowered", what);
        tarena_free(&t);
}
Test(hold_review, scribble_zero)
{
        scribble_then_hold(0, "zero");
}
Test(hold_review, scribble_limit)
{
        scribble_then_hold(THR_TAT_LIMIT, "LIMIT");
}
Test(hold_review, scribble_mark)
{
        scribble_then_hold(THR_TAT_MARK_MIN + 5, "mark");
}
Test(hold_review, scribble_dead)
{
        scribble_then_hold(THR_TAT_DEAD, "DEAD");
}
Test(hold_review, scribble_free)
{
        scribble_then_hold(THR_TAT_FREE, "FREE");
}

/* a key found DEAD (evicted between lookup and CAS, or scribbled): the hold must land somewhere */
static void dead_or_free(uint64_t word, const char *what)
{
        struct shm_limiter_spec s[] = {tspec("api", 10, SEC, 2, 2)};
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        cr_assert_eq(thr_clock_advance(t.a, SEC), 0);
        cr_assert_eq(try1(l, "k"), 1);
        struct thr_slot *sl;
        cr_assert_eq(tcount(&t, "api", THR_SLOT_LIVE, "k", &sl), 1);
        atomic_store(&sl->state, word);
        struct thr_result r;
        int rc = thr_limiter_hold(l, "k", 1, 500 * MS, &r);
        int live = tcount(&t, "api", THR_SLOT_LIVE, "k", NULL);
        struct thr_result r2;
        int trc = thr_limiter_try(l, "k", 1, 1, &r2);
        cr_log_info("%s: hold rc %d, live slots of k %d, try right after rc %d", what, rc, live,
                    trc);
        if (rc == 0)
                cr_expect_eq(trc, 0, "%s: hold said applied, yet a try is admitted at once", what);
        tarena_free(&t);
}
Test(hold_review, dead_then_hold)
{
        dead_or_free(THR_TAT_DEAD, "DEAD");
}
Test(hold_review, free_then_hold)
{
        dead_or_free(THR_TAT_FREE, "FREE");
}

/* examples/api_pool.c under more processes than the shipped test's 4: does max429 <= workers hold?
 */
#include <stdio.h>
#include <sys/wait.h>
static void pool_n(int procs)
{
        struct tdaemon d;
        tdaemon_init(&d);
        char text[1024];
        snprintf(text, sizeof(text),
                 "[arena]\nname = %s\nclock = monotonic\nhugepages = off\nmode = 0600\n"
                 "max_limiters = 4\nmax_readers = 128\n\n[daemon]\nheartbeat_ms = 20\nmetrics =\n\n"
                 "[api]\nrate = 200/s\nburst = 5\ncapacity = 16\n\n"
                 "[retries]\nrate = 10/s\nburst = 5\ncapacity = 16\n",
                 d.name);
        tdaemon_config_raw(&d, text);
        snprintf(d.arena, sizeof(d.arena), "/dev/shm/throttle.%s", d.name);
        int i = tdaemon_start(&d, NULL);
        tdaemon_wait_ready(&d, i, 1);
        char cmd[768], line[512];
        snprintf(cmd, sizeof(cmd), "%s/examples/thr-api-pool -a %s -p %d -s 3",
                 getenv("THR_TEST_BUILD_DIR"), d.name, procs);
        FILE *p = popen(cmd, "r");
        char *got = fgets(line, sizeof(line), p);
        int st = pclose(p);
        cr_log_info("procs %d: exit %#x: %s", procs, st, got ? line : "(none)");
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "procs %d exit %#x: %s", procs, st, line);
        tdaemon_stop(&d, i);
        tdaemon_fini(&d);
}
Test(hold_review, pool_12, .timeout = 60)
{
        pool_n(12);
}
Test(hold_review, pool_32, .timeout = 60)
{
        pool_n(32);
}

/* on_full = evict: held keys evicted for room leave their debt as the shard's floor; a new key
 * then inherits a hold it was never given */
Test(hold_review, evicted_hold_becomes_floor)
{
        struct shm_limiter_spec s[] = {tspec("api", 10, SEC, 2, 2)};
        s[0].capacity = 2;
        s[0].shards = 1;
        s[0].on_full = THR_FULL_EVICT;
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        cr_assert_eq(thr_clock_advance(t.a, SEC), 0);
        struct thr_result r;
        cr_assert_geq(thr_limiter_hold(l, "a", 1, 30 * SEC, &r), 0);
        cr_assert_geq(thr_limiter_hold(l, "b", 1, 40 * SEC, &r), 0);
        int rc = thr_limiter_try(l, "c", 1, 1, &r);
        cr_log_info("new key c in a full shard of held keys: try rc %d retry %lu ms", rc,
                    (unsigned long)(r.retry_after_ns / MS));
        int first = -1;
        for (int s10 = 1; s10 <= 45; s10++) {
                cr_assert_eq(thr_clock_advance(t.a, SEC), 0);
                if (try1(l, "c")) {
                        first = s10;
                        break;
                }
        }
        cr_log_info("new key c first admitted after %d s (never held itself)", first);
        tarena_free(&t);
}

/* SIGKILL children looping holds/caps/tries on one key at random moments; then the key has one
 * live slot, a plain TAT (no mark, no DEAD), within now + B*T + R, and try/hold still work */
#include <signal.h>
#include <time.h>
Test(hold_review, sigkill_mid_hold, .timeout = 60)
{
        struct shm_limiter_spec s[] = {tspec("api", 1000, SEC, 10, 10)};
        s[0].max_reserve_ns = SEC;
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
        thr_limiter *l = tlim_kept(&t, "api");
        cr_assert_eq(thr_clock_advance(t.a, SEC), 0);
        srand(42);
        for (int round = 0; round < 200; round++) {
                pid_t pids[3];
                for (int c = 0; c < 3; c++) {
                        pids[c] = tfork();
                        if (pids[c] == 0) {
                                struct thr_result r;
                                for (uint64_t i = 0;; i++) {
                                        if (i % 3 == 0)
                                                thr_limiter_hold(l, "k", 1, (i * 7919) % (2 * SEC),
                                                                 &r);
                                        else if (i % 3 == 1)
                                                thr_limiter_cap(l, "k", 1, i % 12, &r);
                                        else
                                                thr_limiter_try(l, "k", 1, 1, &r);
                                }
                        }
                }
                struct timespec ts = {0, (rand() % 2000) * 1000};
                nanosleep(&ts, NULL);
                for (int c = 0; c < 3; c++) {
                        kill(pids[c], SIGKILL);
                        waitpid(pids[c], NULL, 0);
                }
                struct thr_slot *sl;
                cr_assert_eq(tcount(&t, "api", THR_SLOT_LIVE, "k", &sl), 1, "round %d", round);
                uint64_t st = atomic_load(&sl->state), now = now_of(t.a);
                cr_assert(st == THR_TAT_FRESH || (st <= THR_TAT_LIMIT && st <= now + 10 * MS + SEC),
                          "round %d: state %#lx now %#lx", round, (unsigned long)st,
                          (unsigned long)now);
                cr_assert_eq(thr_clock_advance(t.a, 3 * SEC), 0);
                cr_assert_eq(try1(l, "k"), 1, "round %d: not admitted after every hold ended",
                             round);
        }
        tarena_free(&t);
}

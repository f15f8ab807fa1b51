/*
 * test_compose_review.c - composed calls (thr_compose_try), a hostile review: each test is a
 * reproduction of a finding, failing until it is fixed.
 *
 * seq_wrap_helper_settles_from_another_call: a helper (any caller that meets a mark) reads the
 * owner's journal entry for the marked slot BEFORE it waits out the owner's patience and aborts
 * it, and then stores that entry's old/next by a CAS from the mark value. The mark names the call
 * by only 20 bits of its sequence (32 since the fix: the test advances the owner's counter by
 * 2^32 - 1 instead of making the calls): a helper delayed across 2^20 calls of the same owner
 * (stopped, preempted, swapped out) finds the same mark value again on the same slot, now belonging
 * to a later call whose entries are laid out differently, aborts that call, and stores ANOTHER
 * key's old state into this key. Here: a GCRA key with its burst spent gets a fresh key's TAT and
 * admits its whole burst again on a frozen clock (over-admission).
 *
 * cancel_meets_a_mark_keeps_the_place: thr_reservation_cancel CASes the key's TAT from the one its
 * reservation set back to the one before, and takes a failed CAS as "something was stacked on
 * it": it never settles a composed call's mark first. A composed call in flight on the key (here
 * a stopped one, whose peek stacks nothing and which the next caller aborts) makes the cancel
 * return 0, kept, although nothing was stacked: the place is lost (over-denial).
 */
#include <criterion/criterion.h>
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
#include "compose.h"
#include "helpers.h"
#include "reclaim.h"
#include "testhook.h"

static struct tarena T;

static void setup(void)
{
        struct shm_limiter_spec s[] = {
            tspec("g", 3, SEC, 3, 3), /* GCRA: 3 a second, burst 3 */
        };
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 1);
}

static void teardown(void)
{
        thr_test_hook = NULL;
        tarena_free(&T);
}

TestSuite(compose_review, .init = setup, .fini = teardown, .timeout = 240);

static struct thr_slot *slot_of(thr_limiter *l, const char *key)
{
        struct thr_reservation_priv loc;
        cr_assert_eq(thr_op_locate_plain(l, key, strlen(key), &loc), 0);
        return (struct thr_slot *)loc.slot;
}

static struct thr_member mem(thr_limiter *l, const char *key, uint64_t cost)
{
        return (struct thr_member){.lim = l, .key = key, .len = strlen(key), .cost = cost};
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait (bounded) for child PID to stop; false on timeout or if it exited. */
static bool wait_stopped(pid_t pid, double secs)
{
        double t0 = now_s();
        while (now_s() - t0 < secs) {
                int st;
                pid_t r = waitpid(pid, &st, WUNTRACED | WNOHANG);
                if (r == pid)
                        return WIFSTOPPED(st);
                if (r < 0)
                        return false;
                usleep(1000);
        }
        return false;
}

/* Wait (bounded) for child PID to exit; its status, or -1 (killed after the bound). */
static int wait_exit(pid_t pid, double secs)
{
        double t0 = now_s();
        while (now_s() - t0 < secs) {
                int st;
                pid_t r = waitpid(pid, &st, WNOHANG | WUNTRACED);
                if (r == pid) {
                        if (WIFSTOPPED(st)) {
                                kill(pid, SIGCONT);
                                continue;
                        }
                        return st;
                }
                if (r < 0)
                        return -1;
                usleep(1000);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
}

/* ---------------------------------------------------------------- 20-bit sequence reuse */

struct shared {
        _Atomic int h_blocked; /* the helper waits in its abort hook */
        _Atomic int h_release;
        _Atomic int h_admitted; /* tries the helper got admitted on the spent key */
        _Atomic int h_done;
        _Atomic uint64_t o_calls; /* calls the owner made between its two stops */
};

static struct shared *g_sh;
static struct thr_journal *g_j; /* the owner's journal, found through its first mark */
static int g_marks;

static void owner_hook(enum thr_hook_point p, void *arg)
{
        if (p != THR_HOOK_COMPOSE_MARKED)
                return;
        if (!g_j) /* the first mark of a call is its entry 0 */
                g_j = (struct thr_journal *)((char *)arg - offsetof(struct thr_journal, e));
        if (++g_marks == 2)
                raise(SIGSTOP); /* both members marked, undecided */
}

static void helper_hook(enum thr_hook_point p, void *arg)
{
        (void)arg;
        static int once;
        if (p != THR_HOOK_COMPOSE_ABORTING || once++)
                return;
        /* a helper that has read the journal and waited its patience, about to abort: delayed
         * here (preempted, stopped) while its owner goes on */
        atomic_store(&g_sh->h_blocked, 1);
        double t0 = now_s();
        while (!atomic_load(&g_sh->h_release) && now_s() - t0 < 120)
                usleep(1000);
}

Test(compose_review, seq_wrap_helper_settles_from_another_call)
{
        thr_limiter *g = tlim_kept(&T, "g");
        g_sh = mmap(NULL, sizeof(*g_sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(g_sh, MAP_FAILED);
        /* three keys in slot order W < X < Z */
        char keys[12][8];
        struct thr_slot *sl[12];
        for (int i = 0; i < 12; i++) {
                snprintf(keys[i], sizeof(keys[i]), "k%d", i);
                sl[i] = slot_of(g, keys[i]);
        }
        int ord[12];
        for (int i = 0; i < 12; i++)
                ord[i] = i;
        for (int i = 0; i < 12; i++)
                for (int k = i + 1; k < 12; k++)
                        if (sl[ord[k]] < sl[ord[i]]) {
                                int t = ord[i];
                                ord[i] = ord[k];
                                ord[k] = t;
                        }
        const char *W = keys[ord[0]], *X = keys[ord[5]], *Z = keys[ord[11]];
        struct thr_slot *xs = sl[ord[5]];
        /* X's burst spent; the clock never moves: X admits nothing more, ever */
        struct thr_result tr;
        for (int i = 0; i < 3; i++)
                cr_assert_eq(thr_limiter_try(g, X, strlen(X), 1, &tr), 1);
        cr_assert_eq(thr_limiter_try(g, X, strlen(X), 1, &tr), 0);
        uint64_t x_before = atomic_load(&xs->state);

        pid_t owner = tfork();
        if (owner == 0) {
                thr_test_hook = owner_hook;
                struct thr_compose_result r;
                /* call S: X is its entry 0 (peeks: nothing consumed either way) */
                struct thr_member m1[] = {mem(g, X, 0), mem(g, Z, 0)};
                int rc = thr_compose_try(m1, 2, &r);
                if (rc < 0)
                        _exit(10);
                /* (stopped above, then continued) S is over; 2^20 - 1 more calls ... */
                thr_test_hook = NULL;
                uint64_t s0 = atomic_load(&g_j->status) >> 2;
                struct thr_member w[] = {mem(g, W, 0)};
                if (thr_compose_try(w, 1, &r) < 0)
                        _exit(11);
                /* 2^32 - 2 calls more, as the journal's counter says (the mark's sequence has
                 * THR_MARK_SEQ_BITS bits: a real loop would take the better part of an hour) */
                atomic_store(&g_j->status,
                             (s0 + (1ull << THR_MARK_SEQ_BITS) - 1) << 2 | THR_JOURNAL_IDLE);
                atomic_fetch_add(&g_sh->o_calls, (1ull << THR_MARK_SEQ_BITS) - 1);
                /* ... and call S + 2^32: the same mark value on X, but W is entry 0 now */
                g_marks = 0;
                thr_test_hook = owner_hook;
                struct thr_member m2[] = {mem(g, W, 0), mem(g, X, 0)};
                rc = thr_compose_try(m2, 2, &r);
                _exit(rc < 0 ? 12 : 0);
        }
        cr_assert(wait_stopped(owner, 10), "the owner stopped holding its marks");
        uint64_t mark = atomic_load(&xs->state);
        cr_assert(shm_is_mark(mark), "X is marked by call S");

        pid_t helper = tfork();
        if (helper == 0) {
                thr_test_hook = helper_hook;
                struct thr_result hr;
                int rc = thr_limiter_try(g, X, strlen(X), 1, &hr); /* meets the mark */
                if (rc == 1)
                        atomic_fetch_add(&g_sh->h_admitted, 1);
                thr_test_hook = NULL;
                for (int i = 0; i < 3; i++)
                        if (thr_limiter_try(g, X, strlen(X), 1, &hr) == 1)
                                atomic_fetch_add(&g_sh->h_admitted, 1);
                atomic_store(&g_sh->h_done, 1);
                _exit(0);
        }
        double t0 = now_s();
        while (!atomic_load(&g_sh->h_blocked) && now_s() - t0 < 10)
                usleep(1000);
        cr_assert(atomic_load(&g_sh->h_blocked), "the helper is about to abort call S");
        kill(owner, SIGCONT);
        bool stopped = wait_stopped(owner, 120);
        if (!stopped) {
                atomic_store(&g_sh->h_release, 1);
                wait_exit(helper, 10);
                wait_exit(owner, 10);
                cr_assert_fail("the owner did not reach call S + 2^20 (%lu calls)",
                               (unsigned long)atomic_load(&g_sh->o_calls));
        }
        cr_log_info("owner made %lu calls between its stops",
                    (unsigned long)atomic_load(&g_sh->o_calls));
        cr_assert_eq(atomic_load(&xs->state), mark, "X holds the same mark value again");
        atomic_store(&g_sh->h_release, 1);
        int hst = wait_exit(helper, 30);
        kill(owner, SIGCONT);
        int ost = wait_exit(owner, 30);
        cr_assert(WIFEXITED(hst) && WEXITSTATUS(hst) == 0, "helper %#x", hst);
        cr_assert(WIFEXITED(ost) && WEXITSTATUS(ost) == 0, "owner %#x", ost);
        uint64_t x_after = atomic_load(&xs->state);
        int more = 0;
        for (int i = 0; i < 3; i++)
                more += thr_limiter_try(g, X, strlen(X), 1, &tr) == 1;
        cr_assert_eq(atomic_load(&g_sh->h_admitted) + more, 0,
                     "X's burst was spent on a frozen clock (TAT %lu), yet it admitted %d more: "
                     "a helper of call S stored W's state (entry 0 of call S + 2^20) into X "
                     "(TAT %lu after those admissions)",
                     (unsigned long)x_before, atomic_load(&g_sh->h_admitted) + more,
                     (unsigned long)x_after);
        munmap(g_sh, sizeof(*g_sh));
}

/* ---------------------------------------------------------------- cancel across a mark */

static void stop_at_first_mark(enum thr_hook_point p, void *arg)
{
        (void)arg;
        static int once;
        if (p == THR_HOOK_COMPOSE_MARKED && !once++)
                raise(SIGSTOP);
}

Test(compose_review, cancel_meets_a_mark_keeps_the_place)
{
        thr_limiter *g = tlim_kept(&T, "g");
        struct thr_slot *s = slot_of(g, "r");
        struct thr_result tr;
        for (int i = 0; i < 3; i++)
                cr_assert_eq(thr_limiter_try(g, "r", 1, 1, &tr), 1);
        uint64_t before = atomic_load(&s->state);
        struct thr_reservation rv;
        cr_assert_eq(thr_limiter_reserve(g, "r", 1, 1, 10 * SEC, &rv), 0);
        cr_assert_gt(rv.wait_ns, 0, "due later: it may be given back");
        uint64_t reserved = atomic_load(&s->state);
        pid_t kid = tfork();
        if (kid == 0) {
                thr_test_hook = stop_at_first_mark;
                struct thr_compose_result r;
                struct thr_member m[] = {mem(g, "r", 0)}; /* a peek: stacks nothing */
                _exit(thr_compose_try(m, 1, &r) < 0 ? 3 : 0);
        }
        cr_assert(wait_stopped(kid, 10), "stopped holding its mark");
        cr_assert(shm_is_mark(atomic_load(&s->state)));
        int rc = thr_reservation_cancel(&rv);
        /* what a cancel should have found, once the mark is settled: the TAT it set */
        cr_assert_geq(thr_limiter_try(g, "r", 1, 0, &tr), 0, "a peek settles the mark");
        uint64_t after = atomic_load(&s->state);
        kill(kid, SIGCONT);
        int st = wait_exit(kid, 10);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%#x", st);
        cr_assert_eq(rc, 1,
                     "cancel kept the place (rc %d) although nothing was stacked on it: the TAT is "
                     "%s the reservation's (%lu; before it %lu, now %lu)",
                     rc, after == reserved ? "still" : "not", (unsigned long)reserved,
                     (unsigned long)before, (unsigned long)after);
}

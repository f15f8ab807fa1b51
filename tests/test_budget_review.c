/*
 * test_budget_review.c - reproductions from a hostile review of the budget protocol (budget.h).
 * Each test states what must hold; those that fail show a bug in shm/ or libclient/.
 *
 *   - a state word rewritten to THR_TAT_FRESH (a value at or above THR_TAT_LIMIT) makes a spender
 *     spin for ever in enqueue() holding the key's shard lock (spend_locked refuses the word,
 *     shm_budget_balance reads it as the initial balance, which fits: the loop never ends);
 *   - a journal rewritten in one key's header makes an honest process's repair grant a waiter of
 *     ANOTHER key (shm_budget_repair never checks that the record waits on this key);
 * And a guard: a try with a result on a queued key never waits for a stopped shard lock holder.
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

#include "budget.h"
#include "client_internal.h"
#include "helpers.h"
#include "serial.h"

#define MS 1000000ull

static struct tarena T;

static void setup(void)
{
        struct shm_limiter_spec s[] = {tspec_budget("b0", 0), tspec_budget("b10", 10)};
        tarena_make(&T, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, s, 2);
}

static void teardown(void)
{
        tarena_free(&T);
}

TestSuite(budget_review, .init = setup, .fini = teardown, .timeout = 60);

static double mono_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *shared_map(size_t n)
{
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(p, MAP_FAILED);
        return p;
}

static struct thr_budget_stat stat_of(thr_limiter *l, const char *key)
{
        struct thr_budget_stat st;
        cr_assert_eq(thr_budget_stat(l, key, strlen(key), &st), 0);
        return st;
}

static void wait_waiters(thr_limiter *l, const char *key, uint64_t n)
{
        double t0 = mono_s();
        while (stat_of(l, key).waiters != n) {
                cr_assert_lt(mono_s() - t0, 10.0, "%s: %lu waiters never came", key,
                             (unsigned long)n);
                usleep(1000);
        }
}

static struct thr_slot *slot_of(thr_limiter *l, const char *key)
{
        struct thr_reservation_priv loc;
        cr_assert_eq(thr_op_find(l, key, strlen(key), &loc), 0, "%s exists", key);
        return (struct thr_slot *)loc.slot;
}

/* A child's result, 99 until it is there. */
struct box {
        _Atomic int rc, done, ready;
        _Atomic uint64_t ns;
};

/* Wait up to SECS for B->done. */
static bool done_within(struct box *b, double secs)
{
        double t0 = mono_s();
        while (!atomic_load(&b->done)) {
                if (mono_s() - t0 > secs)
                        return atomic_load(&b->done); /* once more: the test may have stalled */
                usleep(1000);
        }
        return true;
}

/* A spender process: thr_budget_spend(KEY, COST, TIMEOUT) into B. */
static pid_t spend_child(thr_limiter *l, const char *key, uint64_t cost, uint64_t timeout,
                         struct box *b)
{
        atomic_store(&b->rc, 99);
        pid_t p = tfork();
        if (p == 0) {
                struct thr_budget_result r;
                double t0 = mono_s();
                atomic_store(&b->rc, thr_budget_spend(l, key, strlen(key), cost, timeout, &r));
                atomic_store(&b->ns, (uint64_t)((mono_s() - t0) * 1e9));
                atomic_store(&b->done, 1);
                _exit(0);
        }
        return p;
}

static void kill_reap(pid_t p)
{
        kill(p, SIGKILL);
        waitpid(p, NULL, 0);
}

/* ---------------------------------------------------------------- finding 1 */

/*
 * A client rewrites key k's state word to THR_TAT_FRESH (reserved: "inserted by a tool and never
 * charged"; any value >= THR_TAT_LIMIT but DEAD/FREE does the same) while another process's spend
 * waits for the shard lock. bop_lock accepts FRESH (it only refuses DEAD and FREE); the serve
 * breaks out (cur >= THR_TAT_LIMIT), spend_locked refuses (cur >= THR_TAT_LIMIT), and enqueue()
 * loops: !shm_budget_queued(FRESH), shm_budget_balance(FRESH) = initial >= cost, spend_locked
 * refuses again, for ever: the spender spins holding the shard lock, cancellation disabled, its
 * 2 s timeout never honoured, and every other key of the shard is locked out with it.
 */
Test(budget_review, a_state_rewritten_to_fresh_never_spins_a_spender_holding_the_lock)
{
        thr_limiter *l = tlim(&T, "b10");
        struct thr_budget_result r;
        cr_assert_eq(thr_budget_add(l, "k", 1, 1, &r), 0); /* the key exists: 11 */
        struct thr_slot *s = slot_of(l, "k");
        struct shm_probe p;
        tprobe(&T.map, ttable(&T, "b10"), "k", &p);
        uint64_t me = tlock_me(T.a);
        cr_assert_eq(shm_shard_lock(&T.map, &p, me, SEC), 0);
        /* looks queued: the spender's lock-free try is refused, it goes for the lock */
        atomic_store(&s->state, THR_BUDGET_WAITERS | 0);
        struct box *b = shared_map(sizeof(*b));
        pid_t kid = spend_child(l, "k", 1, 2 * SEC, b);
        usleep(300000); /* it waits for the lock now (lock_wait 10 s) */
        cr_assert_not(atomic_load(&b->done), "the spender did not wait for the lock: %d",
                      atomic_load(&b->rc));
        atomic_store(&s->state, THR_TAT_FRESH); /* the rewrite */
        shm_shard_unlock(&p, me);
        bool done = done_within(b, 5.0);
        /* whatever it returned, the shard lock must be free again */
        int locked = shm_shard_trylock(&T.map, &p, me);
        if (locked == 0)
                shm_shard_unlock(&p, me);
        kill_reap(kid);
        munmap(b, sizeof(*b));
        thr_limiter_close(l);
        cr_assert(done,
                  "a 2 s spend on a key whose state word reads THR_TAT_FRESH has not returned "
                  "after 5 s: it spins in enqueue() holding the shard lock (trylock: %d)",
                  locked);
        cr_assert_eq(locked, 0, "the shard lock was left held");
}

/* ---------------------------------------------------------------- finding 2 */

/*
 * A client rewrites the grant journal of ITS OWN key "attacker" (j_idx, j_word, j_before,
 * j_after): j_idx names the reader record of a waiter on key "victim", j_word its wait word,
 * j_after the attacker's state word and j_before one more. The next honest serve of "attacker" (a
 * thr_budget_stat here; an add, a waiter's poll or the daemon's pass as well) repairs the
 * "journal": cur == j_after, so shm_wait_to(record, word, GRANTED) - and the victim's waiter
 * returns success for 5 units that "victim" never had (nothing is debited from it). A rewritten
 * header hurts another key, through another process's write to a reader record outside the key.
 * Fix: in shm_budget_repair, complete the grant only if the record waits on this key (owner set,
 * wait_slot == the slot's offset, wait_gen == its generation, as shm_waiters_sum checks);
 * otherwise only the give-back branch (this key's own balance) may apply.
 */
Test(budget_review, a_rewritten_journal_never_grants_another_keys_waiter)
{
        thr_limiter *l = tlim(&T, "b0");
        struct box *b = shared_map(sizeof(*b));
        pid_t w = spend_child(l, "victim", 5, 20 * SEC, b);
        wait_waiters(l, "victim", 1);
        /* the victim's waiter record */
        struct thr_slot *vs = slot_of(l, "victim");
        uint64_t voff = (uint64_t)((char *)vs - (char *)T.a->map.base);
        struct thr_reader *rec = shm_at(T.a->map.base, T.a->map.g.reader_off);
        uint32_t idx = UINT32_MAX, word = 0;
        for (uint32_t i = 0; i < T.a->map.g.reader_count; i++) {
                uint32_t wd = atomic_load(&rec[i].wait_state);
                if (atomic_load(&rec[i].wait_slot) == voff && shm_wait_waiting(wd)) {
                        idx = i;
                        word = wd;
                }
        }
        cr_assert_neq(idx, UINT32_MAX, "the waiter's record");
        /* the attacker's own key, and its header rewritten */
        struct thr_budget_result r;
        cr_assert_eq(thr_budget_add(l, "attacker", 8, 7, &r), 0);
        struct thr_slot *as = slot_of(l, "attacker");
        struct thr_budget *h = shm_budget(shm_slot_aux(T.a->map.base, &l->geo, as));
        uint64_t st = atomic_load(&as->state);
        atomic_store(&h->j_word, word);
        atomic_store(&h->j_after, st);
        atomic_store(&h->j_before, st + 1);
        atomic_store(&h->j_idx, idx + 1);
        (void)stat_of(l, "attacker"); /* an honest serve of the attacker's key */
        bool early = done_within(b, 0.3);
        int early_rc = atomic_load(&b->rc);
        uint64_t vbal = stat_of(l, "victim").balance;
        /* clean up: the victim's waiter gets its 5 the honest way (if it still waits) */
        cr_assert_eq(thr_budget_add(l, "victim", 6, 5, &r), 0);
        done_within(b, 5.0);
        kill_reap(w);
        munmap(b, sizeof(*b));
        thr_limiter_close(l);
        cr_assert_not(early,
                      "the victim's waiter returned %d after a serve of ANOTHER key whose journal "
                      "was rewritten; the victim's balance is %lu: 5 units spent that the victim "
                      "never had",
                      early_rc, (unsigned long)vbal);
}

/* ---------------------------------------------------------------- a guard (no finding) */

/*
 * thr_budget_try is documented "lock-free". With a result and spenders queued it asks
 * thr_budget_stat for the waiter count, which locks the key's shard (THR_LOCK_WAIT_MAX_NS): a
 * suspect with a SIGSTOPped holder of that lock. Observed: the try returns -EAGAIN within about
 * 1 ms all the same (while a direct thr_budget_stat waits for the holder). Kept as a guard.
 */
Test(budget_review, a_try_never_waits_for_a_stopped_shard_lock_holder)
{
        thr_limiter *l = tlim(&T, "b0");
        struct box *w = shared_map(sizeof(*w));
        pid_t wp = spend_child(l, "q", 5, 20 * SEC, w);
        wait_waiters(l, "q", 1);
        struct box *hb = shared_map(sizeof(*hb));
        pid_t holder = tfork();
        if (holder == 0) { /* takes the shard lock of "q" and is stopped holding it */
                struct shm_probe p;
                tprobe(&T.map, ttable(&T, "b0"), "q", &p);
                if (shm_shard_lock(&T.map, &p, tlock_me(T.a), SEC) != 0)
                        _exit(3);
                atomic_store(&hb->ready, 1);
                for (;;)
                        pause(); /* stopped here by the parent */
        }
        double t0 = mono_s();
        while (!atomic_load(&hb->ready))
                cr_assert_lt(mono_s() - t0, 10.0, "the holder never locked");
        kill(holder, SIGSTOP);
        usleep(20000);
        struct box *t1 = shared_map(sizeof(*t1)), *t2 = shared_map(sizeof(*t2));
        atomic_store(&t1->rc, 99);
        atomic_store(&t2->rc, 99);
        pid_t tp1 = tfork();
        if (tp1 == 0) { /* no result: lock-free */
                atomic_store(&t1->rc, thr_budget_try(l, "q", 1, 1, NULL));
                atomic_store(&t1->done, 1);
                _exit(0);
        }
        pid_t tp2 = tfork();
        if (tp2 == 0) { /* with a result */
                struct thr_budget_result r;
                double s0 = mono_s();
                atomic_store(&t2->rc, thr_budget_try(l, "q", 1, 1, &r));
                atomic_store(&t2->ns, (uint64_t)((mono_s() - s0) * 1e9));
                atomic_store(&t2->done, 1);
                _exit(0);
        }
        /* 10 s, not 2 s: a try is at once, but children descheduled on a paused VM must not
         * fail it; one that waits for the stopped holder waits until it is killed below (or
         * THR_LOCK_WAIT_MAX_NS, 60 s) */
        bool d1 = done_within(t1, 10.0), d2 = done_within(t2, 10.0);
        int rc1 = atomic_load(&t1->rc), rc2 = atomic_load(&t2->rc);
        double secs2 = (double)atomic_load(&t2->ns) / 1e9;
        kill_reap(holder); /* a dead holder: taken over */
        done_within(t2, 5.0);
        kill_reap(tp1);
        kill_reap(tp2);
        kill_reap(wp);
        munmap(w, sizeof(*w));
        munmap(hb, sizeof(*hb));
        munmap(t1, sizeof(*t1));
        munmap(t2, sizeof(*t2));
        thr_limiter_close(l);
        cr_assert(d1 && rc1 == -EAGAIN, "a try without a result: %d (done %d)", rc1, d1);
        cr_assert(d2, "a try with a result has not returned after 10 s: it waits (up to "
                      "THR_LOCK_WAIT_MAX_NS) for the stopped holder of the shard lock");
        cr_assert_eq(rc2, -EAGAIN, "%d", rc2);
        cr_log_info("try with a result: %d in %.3f s", rc2, secs2);
}

/*
 * test_budget.c - budget keys (kind = budget) through the public API: budget-executor's own
 * example (spends of 1, 5, 1 and 25 from a balance of 0, a controller adding 5 each time the task
 * pauses, remaining 3), tries and adds with their errors, FIFO service of waiting spenders (a
 * large head never overtaken, a try refused while any wait), timeouts that spend nothing and leave
 * no flag behind, a waiter SIGKILLed while queued never granted, a granter killed at each step of
 * a grant (journal written, balance spent, waiter told) completed or undone exactly once, and the
 * eviction rule (a balance other than the initial one is never evicted).
 *
 * Waiting spenders are real threads or forked processes on a manual-clock arena: the test moves
 * the time (timeouts) and adds; nothing sleeps for a result but bounded polls. The many-process
 * reference log with SIGKILL at random is in test_budget_procs.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
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
#include "reclaim.h"
#include "testhook.h"

static struct tarena T;

static void setup(void)
{
        struct shm_limiter_spec s[] = {tspec_budget("b", 0), tspec_budget("b10", 10),
                                       tspec_budget("tiny", 10), tspec("g", 10, SEC, 10, 10)};
        s[2].capacity = 2;
        s[2].on_full = THR_FULL_EVICT;
        s[2].idle_ttl_ns = SEC;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 4);
}

/* Limiter handles opened by a test, closed by its teardown (LeakSanitizer). */
static void teardown(void)
{
        thr_test_hook = NULL;
        tarena_free(&T);
}

TestSuite(budget, .init = setup, .fini = teardown, .timeout = 60);

static double mono_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct thr_budget_stat stat_of(thr_limiter *l, const char *key)
{
        struct thr_budget_stat st;
        cr_assert_eq(thr_budget_stat(l, key, strlen(key), &st), 0);
        return st;
}

/* Wait (bounded, 10 s) until KEY has N spenders queued. */
static void wait_waiters(thr_limiter *l, const char *key, uint64_t n)
{
        double t0 = mono_s();
        while (stat_of(l, key).waiters != n) {
                cr_assert_lt(mono_s() - t0, 10.0, "%s: %lu waiters never came (now %lu)", key,
                             (unsigned long)n, (unsigned long)stat_of(l, key).waiters);
                usleep(1000);
        }
}

static void *shared_map(size_t n)
{
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(p, MAP_FAILED);
        return p;
}

/* ---------------------------------------------------------------- one process */

Test(budget, tries_and_adds)
{
        thr_limiter *l = tlim_kept(&T, "b10");
        struct thr_budget_result r;
        cr_assert_eq(thr_budget_try(l, "k", 1, 0, &r), 0, "a peek");
        cr_assert_eq(r.balance, 10, "a new key has the initial balance");
        cr_assert_eq(thr_budget_try(l, "k", 1, 4, &r), 0);
        cr_assert_eq(r.balance, 6);
        cr_assert_eq(thr_budget_try(l, "k", 1, 7, &r), -EAGAIN, "no budget");
        cr_assert_eq(r.balance, 6);
        cr_assert_eq(r.shortfall, 1);
        cr_assert_eq(thr_budget_add(l, "k", 1, 5, &r), 0);
        cr_assert_eq(r.balance, 11);
        cr_assert_eq(thr_budget_spend(l, "k", 1, 11, SEC, &r), 0);
        cr_assert_eq(r.balance, 0);
        cr_assert_eq(thr_budget_add(l, "k", 1, THR_BUDGET_MAX_BALANCE, &r), 0);
        cr_assert_eq(r.balance, THR_BUDGET_MAX_BALANCE);
        cr_assert_eq(thr_budget_add(l, "k", 1, 1, &r), -EOVERFLOW, "nothing past the maximum");
        cr_assert_eq(stat_of(l, "k").balance, THR_BUDGET_MAX_BALANCE, "and nothing added");
        cr_assert_eq(thr_budget_try(l, "k", 1, THR_BUDGET_MAX_BALANCE + 1, &r), -ERANGE);
        cr_assert_eq(thr_budget_add(l, "k", 1, 0, &r), -EINVAL);
        cr_assert_eq(thr_budget_spend(l, "k", 1, 0, SEC, &r), -EINVAL);
        /* the generic try works on a budget: admitted while it lasts, never "retry later" */
        struct thr_result tr;
        cr_assert_eq(thr_limiter_try(l, "t", 1, 10, &tr), 1);
        cr_assert_eq(tr.remaining, 0);
        cr_assert_eq(thr_limiter_try(l, "t", 1, 1, &tr), 0);
        cr_assert_eq(tr.retry_after_ns, UINT64_MAX, "only an add makes room");
        struct thr_reservation rv;
        cr_assert_eq(thr_limiter_reserve(l, "t", 1, 1, SEC, &rv), -EOPNOTSUPP);
        /* a GCRA limiter is not a budget */
        thr_limiter *g = tlim_kept(&T, "g");
        cr_assert_eq(thr_budget_try(g, "k", 1, 1, &r), -EOPNOTSUPP);
        cr_assert_eq(thr_budget_add(g, "k", 1, 1, &r), -EOPNOTSUPP);
        struct thr_budget_stat st;
        cr_assert_eq(thr_budget_stat(g, "k", 1, &st), -EOPNOTSUPP);
        /* a key nobody used has the initial balance, and stat does not create it */
        cr_assert_eq(stat_of(l, "never").balance, 10);
        struct thr_reservation_priv loc;
        cr_assert_eq(thr_op_find(l, "never", 5, &loc), -ENOENT);
}

/* budget-executor's example: spends of 1, 5, 1, 25 from a balance of 0; the controller adds 5
 * each time the task pauses; the task ends with 3 remaining. */
struct task {
        thr_limiter *l;
        _Atomic int done;
        int rc[4];
        uint64_t left;
};

static void *task_run(void *arg)
{
        struct task *t = arg;
        static const uint64_t costs[] = {1, 5, 1, 25};
        struct thr_budget_result r = {0};
        for (int i = 0; i < 4; i++)
                t->rc[i] = thr_budget_spend(t->l, "task", 4, costs[i], 3600 * SEC, &r);
        t->left = r.balance;
        atomic_store(&t->done, 1);
        return NULL;
}

Test(budget, budget_executor_example)
{
        struct task t = {.l = tlim_kept(&T, "b")};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, task_run, &t), 0);
        int adds = 0;
        double t0 = mono_s();
        while (!atomic_load(&t.done)) {
                cr_assert_lt(mono_s() - t0, 20.0, "the task never finished (%d adds)", adds);
                if (stat_of(t.l, "task").waiters == 1) { /* paused: "no budget" */
                        struct thr_budget_result r;
                        cr_assert_eq(thr_budget_add(t.l, "task", 4, 5, &r), 0);
                        adds++;
                        /* granted or still short; either way the task's turn comes before the
                         * next look */
                        while (stat_of(t.l, "task").waiters == 1 && r.waiters == 0)
                                usleep(100);
                }
                usleep(200);
        }
        pthread_join(th, NULL);
        for (int i = 0; i < 4; i++)
                cr_assert_eq(t.rc[i], 0, "spend %d: %d", i, t.rc[i]);
        cr_assert_eq(t.left, 3, "remaining %lu", (unsigned long)t.left);
        cr_assert_eq(stat_of(t.l, "task").balance, 3);
        /* 1 (for 1), 1 (for 5: 4 left), none (1), 5 (for 25: 3, 8, 13, 18, 23, 28) */
        cr_assert_eq(adds, 7, "the controller added %d times", adds);
        cr_log_info("budget-executor: spends 1, 5, 1, 25 from 0 with %d adds of 5: remaining %lu",
                    adds, (unsigned long)t.left);
}

struct spender {
        thr_limiter *l;
        const char *key;
        uint64_t cost, timeout;
        _Atomic int rc, done;
        pthread_t th;
};

static void *spender_run(void *arg)
{
        struct spender *s = arg;
        struct thr_budget_result r;
        atomic_store(&s->rc,
                     thr_budget_spend(s->l, s->key, strlen(s->key), s->cost, s->timeout, &r));
        atomic_store(&s->done, 1);
        return NULL;
}

static void spender_start(struct spender *s, thr_limiter *l, const char *key, uint64_t cost,
                          uint64_t timeout)
{
        *s = (struct spender){.l = l, .key = key, .cost = cost, .timeout = timeout};
        cr_assert_eq(pthread_create(&s->th, NULL, spender_run, s), 0);
}

/* Wait (bounded) until S is done. */
static void spender_join(struct spender *s)
{
        double t0 = mono_s();
        while (!atomic_load(&s->done)) {
                cr_assert_lt(mono_s() - t0, 10.0, "a spender never returned");
                usleep(500);
        }
        pthread_join(s->th, NULL);
}

Test(budget, waiting_spenders_are_served_oldest_first)
{
        thr_limiter *l = tlim_kept(&T, "b");
        struct spender a, b, c;
        spender_start(&a, l, "q", 5, 3600 * SEC);
        wait_waiters(l, "q", 1);
        spender_start(&b, l, "q", 1, 3600 * SEC);
        wait_waiters(l, "q", 2);
        spender_start(&c, l, "q", 2, 3600 * SEC);
        wait_waiters(l, "q", 3);
        struct thr_budget_stat st = stat_of(l, "q");
        cr_assert_eq(st.need, 8);
        cr_assert_eq(st.head_need, 5);
        struct thr_budget_result r;
        cr_assert_eq(thr_budget_add(l, "q", 1, 1, &r), 0);
        cr_assert_eq(r.balance, 1, "the head needs 5: nobody behind it goes first");
        cr_assert_eq(r.waiters, 3);
        cr_assert_eq(thr_budget_try(l, "q", 1, 1, &r), -EAGAIN, "a try never overtakes the queue");
        cr_assert_eq(r.shortfall, 8, "what the queue needs, then the try's 1, less the 1 there");
        cr_assert_eq(thr_budget_add(l, "q", 1, 4, &r), 0);
        cr_assert_eq(r.balance, 0);
        cr_assert_eq(r.waiters, 2);
        spender_join(&a);
        cr_assert_eq(atomic_load(&a.rc), 0);
        cr_assert_not(atomic_load(&b.done), "b was not granted");
        cr_assert_eq(thr_budget_add(l, "q", 1, 3, &r), 0);
        spender_join(&b);
        spender_join(&c);
        cr_assert_eq(atomic_load(&b.rc), 0);
        cr_assert_eq(atomic_load(&c.rc), 0);
        st = stat_of(l, "q");
        cr_assert_eq(st.balance, 0);
        cr_assert_eq(st.waiters, 0);
        cr_assert_eq(st.granted, 3);
        cr_assert_eq(thr_budget_add(l, "q", 1, 2, &r), 0, "lock-free again: nobody queued");
        cr_assert_eq(thr_budget_try(l, "q", 1, 2, &r), 0, "the flag went with the last waiter");
}

Test(budget, a_timed_out_spender_spends_nothing_and_leaves_no_flag)
{
        thr_limiter *l = tlim_kept(&T, "b");
        struct spender a;
        spender_start(&a, l, "t", 5, 2 * SEC);
        wait_waiters(l, "t", 1);
        struct thr_budget_result r;
        cr_assert_eq(thr_budget_add(l, "t", 1, 3, &r), 0);
        cr_assert_eq(thr_budget_try(l, "t", 1, 1, &r), -EAGAIN, "queued: refused");
        cr_assert_eq(thr_clock_advance(T.a, 3 * SEC), 0);
        spender_join(&a);
        cr_assert_eq(atomic_load(&a.rc), -ETIMEDOUT);
        struct thr_budget_stat st = stat_of(l, "t");
        cr_assert_eq(st.balance, 3, "nothing spent");
        cr_assert_eq(st.waiters, 0);
        cr_assert_eq(thr_budget_try(l, "t", 1, 3, &r), 0, "no flag left behind");
}

Test(budget, a_waiter_killed_while_queued_is_never_granted)
{
        thr_limiter *l = tlim_kept(&T, "b");
        pid_t kid = tfork();
        if (kid == 0) {
                struct thr_budget_result r;
                _exit(thr_budget_spend(l, "d", 1, 4, 3600 * SEC, &r) == 0 ? 0 : 3);
        }
        wait_waiters(l, "d", 1);
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
        struct thr_budget_result r;
        cr_assert_eq(thr_budget_add(l, "d", 1, 10, &r), 0);
        cr_assert_eq(r.balance, 10, "the dead waiter got nothing");
        cr_assert_eq(r.waiters, 0);
        cr_assert_eq(thr_budget_try(l, "d", 1, 10, &r), 0);
}

/* ---------------------------------------------------------------- a granter killed mid-grant */

static enum thr_hook_point g_die_at;
static void die_at(enum thr_hook_point p, void *arg)
{
        (void)arg;
        if (p == g_die_at)
                raise(SIGKILL);
}

/* A waiter (a process) wants 3 of a key at 0; a granter process adds 5 and is SIGKILLed at step
 * POINT of the grant, holding the key's shard lock. GIVE_UP: the waiter's deadline passes before
 * anyone else locks the key. Returns the final balance; *RC the waiter's result. */
static uint64_t killed_granter(enum thr_hook_point point, bool give_up, int *rc)
{
        thr_limiter *l = tlim_kept(&T, "b");
        _Atomic int *out = shared_map(4096);
        atomic_store(out, 99);
        pid_t w = tfork();
        if (w == 0) {
                struct thr_budget_result r;
                atomic_store(out, thr_budget_spend(l, "j", 1, 3, 2 * SEC, &r));
                _exit(0);
        }
        wait_waiters(l, "j", 1);
        if (give_up) /* stopped: its own polls would complete the grant before its deadline */
                kill(w, SIGSTOP);
        pid_t g = tfork();
        if (g == 0) {
                g_die_at = point;
                thr_test_hook = die_at;
                struct thr_budget_result r;
                thr_budget_add(l, "j", 1, 5, &r);
                _exit(7); /* the hook never fired */
        }
        int st;
        waitpid(g, &st, 0);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the granter died at its step");
        if (give_up) {
                cr_assert_eq(thr_clock_advance(T.a, 3 * SEC), 0);
                kill(w, SIGCONT);
        } else { /* anyone who locks the key next completes the grant: here, a look */
                stat_of(l, "j");
        }
        double t0 = mono_s();
        while (atomic_load(out) == 99) {
                cr_assert_lt(mono_s() - t0, 10.0, "the waiter never returned");
                usleep(1000);
        }
        waitpid(w, NULL, 0);
        *rc = atomic_load(out);
        struct thr_budget_stat bs = stat_of(l, "j");
        cr_assert_eq(bs.waiters, 0);
        cr_assert_eq(bs.need, 0);
        return bs.balance;
}

Test(budget, a_granter_killed_after_its_journal_is_completed_once)
{
        int rc;
        uint64_t bal = killed_granter(THR_HOOK_BUDGET_JOURNALED, false, &rc);
        cr_assert_eq(rc, 0, "granted by the next locker");
        cr_assert_eq(bal, 2, "5 added, 3 spent once");
}

Test(budget, a_granter_killed_after_spending_is_completed_once)
{
        int rc;
        uint64_t bal = killed_granter(THR_HOOK_BUDGET_SPENT, false, &rc);
        cr_assert_eq(rc, 0, "told by the repair");
        cr_assert_eq(bal, 2, "5 added, 3 spent once");
}

Test(budget, a_granter_killed_after_telling_is_not_spent_twice)
{
        int rc;
        uint64_t bal = killed_granter(THR_HOOK_BUDGET_GRANTED, false, &rc);
        cr_assert_eq(rc, 0);
        cr_assert_eq(bal, 2, "5 added, 3 spent once");
}

Test(budget, a_waiter_that_gives_up_under_a_dead_granter_gets_its_cost_back)
{
        int rc;
        uint64_t bal = killed_granter(THR_HOOK_BUDGET_SPENT, true, &rc);
        cr_assert_eq(rc, -ETIMEDOUT, "it gave up before the grant reached it");
        cr_assert_eq(bal, 5, "the spend made for it was given back");
}

/* ---------------------------------------------------------------- eviction */

static void maint_pass(const char *name)
{
        struct shm_lim_snap snap;
        int idx = shm_dir_find(&T.map, name);
        cr_assert_geq(idx, 0);
        cr_assert_eq(shm_dir_snapshot(&T.map, (uint32_t)idx, &snap), 0);
        struct thr_hdr *h = shm_hdr(&T.map);
        struct shm_maint_args a = {.now_units = shm_now_ns(h) * snap.params.k,
                                   .ttl_units = snap.params.idle_ttl_ns * snap.params.k,
                                   .tag = shm_retire_tag(h),
                                   .me = shm_lock_daemon(0)};
        uint32_t cursor = 0;
        struct shm_maint_stats st = {0};
        shm_table_maintain(&T.map, &snap, &a, &cursor, UINT64_MAX, &st);
}

Test(budget, only_keys_at_their_initial_balance_are_evicted)
{
        thr_limiter *l = tlim_kept(&T, "tiny"); /* initial 10, capacity 2, on_full = evict */
        struct thr_budget_result r;
        struct thr_reservation_priv loc;
        cr_assert_eq(thr_budget_try(l, "spent", 5, 4, &r), 0);
        cr_assert_eq(thr_budget_add(l, "whole", 5, 1, &r), 0);
        cr_assert_eq(thr_budget_try(l, "whole", 5, 1, &r), 0); /* back at 10 */
        cr_assert_eq(thr_budget_try(l, "new", 3, 1, &r), 0, "room made: 'whole' had nothing");
        cr_assert_eq(thr_op_find(l, "whole", 5, &loc), -ENOENT, "evicted for room");
        cr_assert_eq(thr_op_find(l, "spent", 5, &loc), 0, "a balance is never evicted");
        cr_assert_eq(thr_budget_try(l, "third", 5, 1, &r), -ENOSPC,
                     "both keys hold balances: a new one has no room");
        cr_assert_eq(thr_budget_add(l, "third", 5, 1, &r), -ENOSPC, "and nothing is added");
        cr_assert_eq(thr_budget_add(l, "new", 3, 1, &r), 0); /* back at 10: idle */
        cr_assert_eq(thr_clock_advance(T.a, 2 * SEC), 0);
        maint_pass("tiny");
        cr_assert_eq(thr_op_find(l, "new", 3, &loc), -ENOENT, "the daemon evicts it");
        cr_assert_eq(thr_op_find(l, "spent", 5, &loc), 0, "never this one");
        cr_assert_eq(stat_of(l, "spent").balance, 6);
        cr_assert_eq(stat_of(l, "new").balance, 10, "created again, it has what it had");
}

Test(budget, the_daemon_pass_clears_a_dead_waiters_flag)
{
        thr_limiter *l = tlim_kept(&T, "b");
        pid_t kid = tfork();
        if (kid == 0) {
                struct thr_budget_result r;
                _exit(thr_budget_spend(l, "f", 1, 4, 3600 * SEC, &r) == 0 ? 0 : 3);
        }
        wait_waiters(l, "f", 1);
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
        struct thr_budget_result r;
        cr_assert_eq(thr_budget_try(l, "f", 1, 0, &r), -EAGAIN, "flagged: refused until served");
        cr_assert_eq(r.waiters, 1, "as last counted");
        cr_assert_eq(thr_budget_try(l, "f", 1, 0, NULL), -EAGAIN, "a try never serves the key");
        maint_pass("b");
        cr_assert_eq(thr_budget_try(l, "f", 1, 0, &r), 0, "the pass found nobody waiting");
}

/* ---------------------------------------------------------------- the example */

static struct tarena R;

static void real_setup(void)
{
        struct shm_limiter_spec s[] = {tspec_budget("scripts", 20)};
        tarena_make(&R, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, s, 1);
}

static void real_teardown(void)
{
        tarena_free(&R);
}

Test(budget_example, the_interpreter_example_balances_its_books, .init = real_setup,
     .fini = real_teardown, .timeout = 120)
{
        char cmd[768], line[256] = "", last[256] = "";
        snprintf(cmd, sizeof(cmd),
                 "%s/examples/thr-budget-interp -a %s -l scripts -s 4 -n 3000 -q 40",
                 getenv("THR_TEST_BUILD_DIR"), R.path);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        while (fgets(line, sizeof(line), p))
                snprintf(last, sizeof(last), "%s", line);
        int st = pclose(p);
        unsigned scripts = 0, errors = 1;
        unsigned long ops = 0, spent = 0, added = 0, remaining = 0, pauses = 0;
        char balanced[8] = "";
        cr_assert_eq(sscanf(last,
                            "scripts %u ops %lu spent %lu added %lu remaining %lu pauses %lu "
                            "errors %u balanced %7s",
                            &scripts, &ops, &spent, &added, &remaining, &pauses, &errors, balanced),
                     8, "output: %s", last);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit %#x: %s", st, last);
        cr_assert_eq(ops, 4 * 3000ul, "%s", last);
        cr_assert_eq(errors, 0, "%s", last);
        cr_assert_str_eq(balanced, "yes", "%s", last);
        cr_assert_eq(spent + remaining, 4 * 20ul + added, "%s", last);
        cr_assert_gt(pauses, 0, "the scripts ran out and were topped up: %s", last);
        cr_log_info("%s", last);
}

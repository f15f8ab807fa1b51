/*
 * test_compose.c - composed calls (thr_compose_try): several limits of different kinds decided
 * all together or not at all. In one process: what is admitted is what the separate tries would
 * admit, a denial consumes nothing (every state word exactly as before), the result names the
 * first denying member and the longest retry. A caller SIGKILLed at every step of a call (its
 * journal written, each member marked, its decision made, each mark replaced) leaves the keys as
 * if the call never happened (killed before its decision) or as if it completed (after), once a
 * caller that meets a key, or the daemon's reap of its record, settles it; a caller stopped with
 * its marks in place is aborted by the next caller within microseconds and completes later. Many
 * processes composing at random on a frozen manual clock, some SIGKILLed: no key ever gives more
 * than its limit, no mark is left, and every key's consumption is its confirmed calls plus some
 * of the killed ones.
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

#include "compose.h"
#include "client_internal.h"
#include "helpers.h"
#include "reclaim.h"
#include "testhook.h"

static struct tarena T;

static struct shm_limiter_spec kind_spec(const char *name, uint32_t kind, uint64_t n,
                                         uint64_t period)
{
        if (kind == THR_KIND_BUDGET)
                return tspec_budget(name, n);
        struct shm_limiter_spec s = tspec(name, n, period, n, n);
        s.kind = kind;
        return s;
}

static void setup(void)
{
        struct shm_limiter_spec s[] = {
            kind_spec("req", THR_KIND_GCRA, 3, SEC),     /* 3 a second, burst 3 */
            kind_spec("tok", THR_KIND_WINDOW, 100, SEC), /* 100 units a second */
            kind_spec("bud", THR_KIND_BUDGET, 50, 0),    /* a balance of 50 */
            kind_spec("sem", THR_KIND_SEMAPHORE, 4, 0),  /* no try form: refused */
        };
        s[3].leases = 4;
        s[3].max_reserve_ns = 0;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 4);
}

static void teardown(void)
{
        thr_test_hook = NULL;
        tarena_free(&T);
}

TestSuite(compose, .init = setup, .fini = teardown, .timeout = 120);

/* The raw state word of KEY in L (created if new, charged nothing). */
static uint64_t state_of(thr_limiter *l, const char *key)
{
        struct thr_reservation_priv loc;
        cr_assert_eq(thr_op_locate_plain(l, key, strlen(key), &loc), 0);
        return atomic_load(&((struct thr_slot *)loc.slot)->state);
}

static struct thr_member mem(thr_limiter *l, const char *key, uint64_t cost)
{
        return (struct thr_member){.lim = l, .key = key, .len = strlen(key), .cost = cost};
}

Test(compose, all_admitted_or_none_consumed)
{
        thr_limiter *req = tlim_kept(&T, "req"), *tok = tlim_kept(&T, "tok"),
                    *bud = tlim_kept(&T, "bud");
        struct thr_compose_result r;
        struct thr_member m[] = {mem(req, "t1", 1), mem(tok, "t1", 30), mem(bud, "t1", 20)};
        cr_assert_eq(thr_compose_try(m, 3, &r), 1);
        cr_assert_eq(r.remaining[0], 2);
        cr_assert_eq(r.remaining[1], 70);
        cr_assert_eq(r.remaining[2], 30);
        cr_assert_eq(thr_compose_try(m, 3, &r), 1);
        /* the budget has 10 left: the third call is denied by it, and nothing else moves */
        uint64_t before[3] = {state_of(req, "t1"), state_of(tok, "t1"), state_of(bud, "t1")};
        cr_assert_eq(thr_compose_try(m, 3, &r), 0);
        cr_assert_eq(r.denied, 2, "the budget denied");
        cr_assert_eq(r.retry_after_ns, UINT64_MAX, "only an add helps a budget");
        cr_assert_eq(state_of(req, "t1"), before[0], "the GCRA key is exactly as before");
        cr_assert_eq(state_of(tok, "t1"), before[1], "the window key too");
        cr_assert_eq(state_of(bud, "t1"), before[2], "and the budget");
        /* a window that is short: it is the first to deny, and says when it would fit */
        struct thr_member w[] = {mem(req, "t2", 1), mem(tok, "t2", 100)};
        cr_assert_eq(thr_compose_try(w, 2, &r), 1);
        struct thr_member w2[] = {mem(req, "t2", 1), mem(tok, "t2", 1)};
        cr_assert_eq(thr_compose_try(w2, 2, &r), 0);
        cr_assert_eq(r.denied, 1);
        cr_assert_eq(r.retry_after_ns, SEC, "the window's units leave in 1 s");
        /* the GCRA key of t2 was not charged by the denied call: 2 more fit alone */
        struct thr_result tr;
        cr_assert_eq(thr_limiter_try(req, "t2", 2, 2, &tr), 1);
        cr_assert_eq(thr_limiter_try(req, "t2", 2, 1, &tr), 0);
}

Test(compose, bad_calls_are_refused)
{
        thr_limiter *req = tlim_kept(&T, "req"), *tok = tlim_kept(&T, "tok"),
                    *sem = tlim_kept(&T, "sem");
        struct thr_compose_result r;
        struct thr_member twice[] = {mem(req, "k", 1), mem(req, "k", 1)};
        cr_assert_eq(thr_compose_try(twice, 2, &r), -EINVAL, "the same key twice");
        struct thr_member s[] = {mem(req, "k", 1), mem(sem, "k", 1)};
        cr_assert_eq(thr_compose_try(s, 2, &r), -EOPNOTSUPP, "a semaphore has no try form");
        cr_assert_eq(state_of(req, "k") < THR_TAT_LIMIT, 1, "and nothing is left marked");
        struct thr_member big[] = {mem(req, "k", 1), mem(tok, "k", 101)};
        cr_assert_eq(thr_compose_try(big, 2, &r), -ERANGE);
        cr_assert_eq(thr_compose_try(big, 0, &r), -EINVAL);
        cr_assert_eq(thr_compose_try(big, 9, &r), -EINVAL);
        struct thr_result tr;
        cr_assert_eq(thr_limiter_try(req, "k", 1, 3, &tr), 1, "nothing was consumed");
}

Test(compose, a_refund_gives_back_what_each_kind_can)
{
        thr_limiter *req = tlim_kept(&T, "req"), *tok = tlim_kept(&T, "tok"),
                    *bud = tlim_kept(&T, "bud");
        struct thr_compose_result r;
        struct thr_compose_ticket t;
        struct thr_member m[] = {mem(req, "r", 1), mem(tok, "r", 30), mem(bud, "r", 20)};
        uint64_t b[3] = {state_of(req, "r"), state_of(tok, "r"), state_of(bud, "r")};
        cr_assert_eq(thr_compose_take(m, 3, &r, &t), 1);
        uint64_t given[3];
        cr_assert_eq(thr_compose_refund(&t, given), 3, "all three given back in full");
        cr_assert_eq(given[0], 1);
        cr_assert_eq(given[1], 30);
        cr_assert_eq(given[2], 20);
        cr_assert_eq(state_of(tok, "r"), b[1], "the window's count as before");
        cr_assert_eq(state_of(bud, "r"), b[2], "the budget's balance as before");
        struct thr_result tr;
        cr_assert_eq(thr_limiter_try(req, "r", 1, 3, &tr), 1, "the GCRA key's 3 tokens are back");
        cr_assert_eq(thr_compose_refund(&t, given), -EINVAL, "once");
        /* a window unit admitted since: the window keeps the call's units */
        struct thr_member w[] = {mem(tok, "w", 30), mem(bud, "w", 5)};
        cr_assert_eq(thr_compose_take(w, 2, &r, &t), 1);
        cr_assert_eq(thr_limiter_try(tok, "w", 1, 1, &tr), 1);
        cr_assert_eq(thr_compose_refund(&t, given), 1, "only the budget in full");
        cr_assert_eq(given[0], 0, "the window's units stay counted");
        cr_assert_eq(given[1], 5);
        cr_assert_eq(thr_limiter_try(tok, "w", 1, 0, &tr), 1);
        cr_assert_eq(tr.remaining, 69);
        /* a GCRA charge that has drained comes back by itself: nothing to give */
        struct thr_member g[] = {mem(req, "g", 1)};
        cr_assert_eq(thr_compose_take(g, 1, &r, &t), 1);
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
        cr_assert_eq(thr_compose_refund(&t, given), 0);
        cr_assert_eq(given[0], 0);
        cr_assert_eq(thr_limiter_try(req, "g", 1, 3, &tr), 1, "and never more than the burst");
        cr_assert_eq(thr_limiter_try(req, "g", 1, 1, &tr), 0);
        /* half drained: the rest is given back, never more (3/s: T = 1/3 s) */
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
        struct thr_member g2[] = {mem(req, "g", 3)};
        cr_assert_eq(thr_compose_take(g2, 1, &r, &t), 1);
        cr_assert_eq(thr_clock_advance(T.a, SEC / 3), 0);
        cr_assert_eq(thr_compose_refund(&t, given), 0, "not in full");
        cr_assert_eq(given[0], 2, "two of its three tokens had not drained");
        cr_assert_eq(thr_limiter_try(req, "g", 1, 3, &tr), 1);
        cr_assert_eq(thr_limiter_try(req, "g", 1, 1, &tr), 0, "3 a burst, never 4");
}

struct waiter {
        struct thr_member m[2];
        size_t n;
        uint64_t timeout;
        _Atomic int rc, done;
};

static void *wait_run(void *arg)
{
        struct waiter *w = arg;
        struct thr_compose_result r;
        atomic_store(&w->rc, thr_compose_acquire(w->m, w->n, w->timeout, &r, NULL));
        atomic_store(&w->done, 1);
        return NULL;
}

Test(compose, the_waiting_form_waits_for_the_slowest)
{
        thr_limiter *req = tlim_kept(&T, "req"), *tok = tlim_kept(&T, "tok"),
                    *bud = tlim_kept(&T, "bud");
        struct thr_result tr;
        cr_assert_eq(thr_limiter_try(req, "a", 1, 3, &tr), 1);   /* empty: the next in 1/3 s */
        cr_assert_eq(thr_limiter_try(tok, "a", 1, 100, &tr), 1); /* empty for 1 s */
        struct waiter w = {.m = {mem(req, "a", 1), mem(tok, "a", 1)}, .n = 2, .timeout = 5 * SEC};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, wait_run, &w), 0);
        usleep(20000);
        cr_assert_eq(thr_clock_advance(T.a, SEC / 2), 0);
        usleep(20000);
        cr_assert_not(atomic_load(&w.done), "the window is the slowest: not yet");
        cr_assert_eq(thr_clock_advance(T.a, SEC / 2), 0);
        for (int i = 0; i < 2000 && !atomic_load(&w.done); i++)
                usleep(1000);
        pthread_join(th, NULL);
        cr_assert_eq(atomic_load(&w.rc), 1);
        /* a budget short for good: the timeout ends it, nothing consumed */
        struct waiter b = {.m = {mem(req, "b", 1), mem(bud, "b", 60)}, .n = 2, .timeout = SEC};
        cr_assert_eq(pthread_create(&th, NULL, wait_run, &b), 0);
        usleep(20000);
        cr_assert_eq(thr_clock_advance(T.a, 2 * SEC), 0);
        for (int i = 0; i < 2000 && !atomic_load(&b.done); i++)
                usleep(1000);
        pthread_join(th, NULL);
        cr_assert_eq(atomic_load(&b.rc), -ETIMEDOUT);
        cr_assert_eq(thr_limiter_try(req, "b", 1, 3, &tr), 1, "nothing consumed");
}

/* ---------------------------------------------------------------- killed at each step */

static enum thr_hook_point g_die_at;
static int g_die_nth, g_seen;
static void die_at(enum thr_hook_point p, void *arg)
{
        (void)arg;
        if (p == g_die_at && ++g_seen == g_die_nth)
                raise(SIGKILL);
}

/* A child composes (req 1, tok 30, bud 10) on key K and is SIGKILLed at the NTH hit of POINT.
 * Returns whether the call counts as completed: every member consumed, or none. DAEMON: the keys
 * are settled by the daemon's reap of the dead record, nobody touching them first. */
static thr_limiter *g_req, *g_tok, *g_bud;

static bool killed_at(enum thr_hook_point point, int nth, const char *k, bool daemon)
{
        thr_limiter *req = g_req, *tok = g_tok, *bud = g_bud;
        uint64_t b[3] = {state_of(req, k), state_of(tok, k), state_of(bud, k)};
        pid_t kid = tfork();
        if (kid == 0) {
                g_die_at = point;
                g_die_nth = nth;
                thr_test_hook = die_at;
                struct thr_compose_result r;
                struct thr_member m[] = {mem(req, k, 1), mem(tok, k, 30), mem(bud, k, 10)};
                int rc = thr_compose_try(m, 3, &r);
                _exit(rc == 1 ? 0 : 3); /* the hook did not fire */
        }
        int st;
        waitpid(kid, &st, 0);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the call died at its step");
        if (daemon) {
                shm_readers_reap(&T.map); /* the record of the dead: its call settled */
                struct thr_reservation_priv loc;
                thr_limiter *ls[3] = {req, tok, bud};
                for (int i = 0; i < 3; i++) {
                        cr_assert_eq(thr_op_locate_plain(ls[i], k, strlen(k), &loc), 0);
                        uint64_t s = atomic_load(&((struct thr_slot *)loc.slot)->state);
                        cr_assert_not(shm_is_mark(s), "member %d still marked after the reap", i);
                }
        }
        /* a peek settles whatever the daemon did not */
        uint64_t a[3] = {state_of(req, k), state_of(tok, k), state_of(bud, k)};
        struct thr_result tr;
        cr_assert_geq(thr_limiter_try(req, k, strlen(k), 0, &tr), 0);
        cr_assert_geq(thr_limiter_try(tok, k, strlen(k), 0, &tr), 0);
        cr_assert_geq(thr_limiter_try(bud, k, strlen(k), 0, &tr), 0);
        a[0] = state_of(req, k);
        a[1] = state_of(tok, k);
        a[2] = state_of(bud, k);
        bool same = a[0] == b[0] && a[1] == b[1] && a[2] == b[2];
        bool done = a[0] != b[0] && a[1] == b[1] + 30 && a[2] == b[2] - 10;
        cr_assert(same || done, "partly consumed: req %lu -> %lu, tok %lu -> %lu, bud %lu -> %lu",
                  (unsigned long)b[0], (unsigned long)a[0], (unsigned long)b[1],
                  (unsigned long)a[1], (unsigned long)b[2], (unsigned long)a[2]);
        return done;
}

Test(compose, killed_at_each_step_never_partly_consumed)
{
        g_req = tlim_kept(&T, "req");
        g_tok = tlim_kept(&T, "tok");
        g_bud = tlim_kept(&T, "bud");
        static const struct {
                enum thr_hook_point p;
                int nth;
                bool done;
        } steps[] = {
            {THR_HOOK_COMPOSE_JOURNALED, 1, false},  {THR_HOOK_COMPOSE_MARKED, 1, false},
            {THR_HOOK_COMPOSE_MARKED, 2, false},     {THR_HOOK_COMPOSE_MARKED, 3, false},
            {THR_HOOK_COMPOSE_DECIDED, 1, true},     {THR_HOOK_COMPOSE_SETTLED_ONE, 1, true},
            {THR_HOOK_COMPOSE_SETTLED_ONE, 2, true}, {THR_HOOK_COMPOSE_SETTLED_ONE, 3, true},
        };
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
                for (int daemon = 0; daemon < 2; daemon++) {
                        char k[16];
                        snprintf(k, sizeof(k), "k%zu.%d", i, daemon);
                        bool done = killed_at(steps[i].p, steps[i].nth, k, daemon);
                        cr_assert_eq(done, steps[i].done, "step %zu (%s): %s", i,
                                     daemon ? "the daemon's reap" : "a caller",
                                     done ? "completed" : "never happened");
                }
}

static void stop_at_second_mark(enum thr_hook_point p, void *arg)
{
        (void)arg;
        static int n;
        if (p == THR_HOOK_COMPOSE_MARKED && ++n == 2)
                raise(SIGSTOP);
}

Test(compose, a_stopped_caller_is_aborted_then_completes)
{
        thr_limiter *req = tlim_kept(&T, "req"), *bud = tlim_kept(&T, "bud");
        uint64_t b = state_of(bud, "s");
        pid_t kid = tfork();
        if (kid == 0) {
                struct thr_compose_result r;
                struct thr_member m[] = {mem(req, "s", 1), mem(bud, "s", 10)};
                thr_test_hook = stop_at_second_mark; /* stopped with both members marked */
                int rc = thr_compose_try(m, 2, &r);
                _exit(rc == 1 ? 0 : 3);
        }
        int st;
        cr_assert_eq(waitpid(kid, &st, WUNTRACED), kid);
        cr_assert(WIFSTOPPED(st), "stopped holding its marks");
        /* a try meets a mark, waits its patience, aborts the call and is decided */
        struct thr_budget_result br;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        cr_assert_eq(thr_budget_try(bud, "s", 1, 5, &br), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        cr_log_info("a try that met a stopped caller's mark took %.6f s (patience %llu ns)", took,
                    (unsigned long long)SHM_COMPOSE_PATIENCE_NS);
        /* patience is 20 us; the bound is 5 s for a test descheduled on a paused VM, and still
         * half the 10 s lock wait, so a try that waits for the lock or the stopped caller fails */
        cr_assert_lt(took, 5.0, "a stopped caller never holds a key for long");
        cr_assert_eq(br.balance, 50 - 5 - (b == 50 ? 0 : 50 - b));
        kill(kid, SIGCONT);
        cr_assert_eq(waitpid(kid, &st, 0), kid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "it saw its abort and completed: %#x", st);
        cr_assert_eq(state_of(bud, "s"), 35, "50 - 5 (the try) - 10 (the call, once)");
}

/* ---------------------------------------------------------------- many processes */

#define KEYS    24
#define PROCS   5
#define LOG_MAX 1000000

struct clog {
        _Atomic uint64_t n;
        struct {
                _Atomic uint32_t state; /* 1 started, 2 admitted, 3 denied */
                uint16_t mask;          /* members: bit 0 req, 1 tok, 2 bud */
                uint16_t key;
                uint16_t cost[3];
        } e[LOG_MAX];
};

static void composer(struct clog *g, uint64_t seed)
{
        thr_limiter *ls[3];
        const char *names[3] = {"req", "tok", "bud"};
        for (int i = 0; i < 3; i++)
                if (thr_limiter_open(T.a, names[i], &ls[i]) < 0)
                        _exit(4);
        for (;;) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                uint64_t i = atomic_fetch_add(&g->n, 1);
                if (i >= LOG_MAX)
                        _exit(0);
                uint16_t mask = (uint16_t)(1 + seed % 7), key = (uint16_t)((seed >> 8) % KEYS);
                char k[8];
                snprintf(k, sizeof(k), "c%u", key);
                struct thr_member m[3];
                size_t n = 0;
                g->e[i].mask = mask;
                g->e[i].key = key;
                for (int j = 0; j < 3; j++) {
                        g->e[i].cost[j] = (uint16_t)(1 + (seed >> (16 + 4 * j)) % (j == 0 ? 1 : 9));
                        if (mask & (1u << j))
                                m[n++] = mem(ls[j], k, g->e[i].cost[j]);
                }
                atomic_store(&g->e[i].state, 1);
                struct thr_compose_result r;
                int rc = thr_compose_try(m, n, &r);
                if (rc < 0 && rc != -EBUSY)
                        _exit(5);
                atomic_store(&g->e[i].state, rc == 1 ? 2 : 3);
                if (seed % 4 == 0)
                        usleep(20); /* others get in between */
        }
}

Test(compose, processes_killed_at_random_never_over_admit_nor_leave_marks, .timeout = 120)
{
        struct clog *g =
            mmap(NULL, sizeof(*g), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(g, MAP_FAILED);
        pid_t kids[PROCS];
        uint64_t seed = (uint64_t)time(NULL);
        for (int i = 0; i < PROCS; i++) {
                kids[i] = tfork();
                if (kids[i] == 0)
                        composer(g, seed * 2654435761u + (uint64_t)i + 1);
        }
        int kills = 0;
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                clock_gettime(CLOCK_MONOTONIC, &t);
                if (t.tv_sec - t0.tv_sec >= 3)
                        break;
                usleep((useconds_t)(2000 + rand() % 8000));
                int v = rand() % PROCS;
                kill(kids[v], SIGKILL);
                waitpid(kids[v], NULL, 0);
                kills++;
                kids[v] = tfork();
                if (kids[v] == 0)
                        composer(g, seed * 40503u + (uint64_t)kills);
        }
        for (int i = 0; i < PROCS; i++) {
                kill(kids[i], SIGKILL);
                waitpid(kids[i], NULL, 0);
        }
        shm_readers_reap(&T.map);
        thr_limiter *ls[3] = {tlim_kept(&T, "req"), tlim_kept(&T, "tok"), tlim_kept(&T, "bud")};
        uint64_t n = atomic_load(&g->n);
        if (n > LOG_MAX)
                n = LOG_MAX;
        uint64_t conf[3][KEYS] = {{0}}, amb[3][KEYS] = {{0}}, admitted = 0, denied = 0, open = 0;
        for (uint64_t i = 0; i < n; i++) {
                uint32_t s = atomic_load(&g->e[i].state);
                admitted += s == 2;
                denied += s == 3;
                open += s == 1;
                for (int j = 0; j < 3; j++)
                        if (g->e[i].mask & (1u << j)) {
                                if (s == 2)
                                        conf[j][g->e[i].key] += g->e[i].cost[j];
                                if (s == 1)
                                        amb[j][g->e[i].key] += g->e[i].cost[j];
                        }
        }
        /* the clock never moved: GCRA gives at most 3 a key, the window 100, the budget 50 */
        static const uint64_t cap[3] = {3, 100, 50};
        for (int k = 0; k < KEYS; k++) {
                char key[8];
                snprintf(key, sizeof(key), "c%d", k);
                uint64_t used[3];
                for (int j = 0; j < 3; j++) {
                        uint64_t st = state_of(ls[j], key);
                        cr_assert_not(shm_is_mark(st), "key %s of %d left marked", key, j);
                }
                struct thr_result tr;
                cr_assert_eq(thr_limiter_try(ls[0], key, strlen(key), 0, &tr), 1);
                used[0] = 3 - tr.remaining;
                cr_assert_eq(thr_limiter_try(ls[1], key, strlen(key), 0, &tr), 1);
                used[1] = 100 - tr.remaining;
                struct thr_budget_stat bs;
                cr_assert_eq(thr_budget_stat(ls[2], key, strlen(key), &bs), 0);
                used[2] = 50 - bs.balance;
                for (int j = 0; j < 3; j++) {
                        cr_assert_leq(used[j], cap[j], "member %d key %s over its limit", j, key);
                        cr_assert_geq(used[j], conf[j][k], "member %d key %s: confirmed calls lost",
                                      j, key);
                        cr_assert_leq(used[j], conf[j][k] + amb[j][k],
                                      "member %d key %s: consumed by nobody", j, key);
                }
        }
        cr_log_info("%lu calls (%lu admitted, %lu denied, %lu cut by %d kills)", (unsigned long)n,
                    (unsigned long)admitted, (unsigned long)denied, (unsigned long)open, kills);
        cr_assert_gt(admitted, 0);
        cr_assert_gt(kills, 10);
}

/* ---------------------------------------------------------------- named groups */

static struct tdaemon D;

static void gconfig(const char *groups)
{
        char text[2048];
        snprintf(D.arena, sizeof(D.arena), "%s/throttle.%s", D.dir, D.name);
        D.in_dir = true;
        snprintf(text, sizeof(text),
                 "[arena]\nname = %s\ndir = %s\nclock = manual\nhugepages = off\nmode = 0600\n"
                 "max_limiters = 8\nmax_readers = 64\nspare = 1MiB\n\n"
                 "[daemon]\nheartbeat_ms = 20\nmaintenance_ms = 20\nmetrics =\n\n"
                 "[llm_requests]\nrate = 60/min\n\n"
                 "[llm_input]\nkind = window\nlimit = 10000\nwindow = 1min\ncapacity = 16\n\n"
                 "[host]\nkind = budget\ninitial = 1000000\n\n%s",
                 D.name, D.dir, groups);
        tdaemon_config_raw(&D, text);
}

static void gsetup(void)
{
        tdaemon_init(&D);
}

static void gteardown(void)
{
        tdaemon_fini(&D);
}

Test(compose_group, a_group_of_the_config_is_called_by_name, .init = gsetup, .fini = gteardown)
{
        gconfig("[llm]\ncompose = llm_requests, llm_input, host\n");
        int d = tdaemon_start(&D, NULL);
        tdaemon_wait_ready(&D, d, 1);
        thr_group *g;
        cr_assert_eq(thr_group_open(D.a, "nope", &g), -ENOENT);
        cr_assert_eq(thr_group_open(D.a, "llm", &g), 0);
        cr_assert_eq(thr_group_size(g), 3);
        struct thr_group_arg args[] = {
            {"tenant-a", 8, 1}, {NULL, 0, 400}, {"host", 4, 4000}}; /* input keyed as the first */
        struct thr_compose_result r;
        for (int i = 0; i < 25; i++)
                cr_assert_eq(thr_group_try(g, args, &r), 1, "call %d", i);
        cr_assert_eq(r.remaining[1], 0, "10 000 input tokens a minute: all used");
        cr_assert_eq(r.remaining[2], 1000000 - 25 * 4000);
        cr_assert_eq(thr_group_try(g, args, &r), 0);
        cr_assert_eq(r.denied, 1, "the input tokens denied");
        cr_assert_eq(r.remaining[2], 1000000 - 25 * 4000, "the host budget was not charged");
        thr_group_close(g);
        tdaemon_stop(&D, d);
}

Test(compose_group, a_group_s_faults_are_refused_at_their_line, .init = gsetup, .fini = gteardown)
{
        gconfig("[bad]\ncompose = llm_requests, nothing\n");
        int d = tdaemon_start(&D, "--check");
        cr_assert_neq(tdaemon_exit_code(&D, d), 0);
        cr_assert(strstr(tdaemon_log(&D, d), "no limiter 'nothing'"), "log:\n%s",
                  tdaemon_log(&D, d));
}

Test(compose_group, the_llm_tenants_example_keeps_every_limit, .init = gsetup, .fini = gteardown,
     .timeout = 120)
{
        char text[2048];
        snprintf(D.arena, sizeof(D.arena), "%s/throttle.%s", D.dir, D.name);
        D.in_dir = true;
        snprintf(text, sizeof(text),
                 "[arena]\nname = %s\ndir = %s\nclock = monotonic\nhugepages = off\nmode = 0600\n"
                 "max_limiters = 8\nmax_readers = 64\nspare = 1MiB\n\n"
                 "[daemon]\nheartbeat_ms = 20\nmaintenance_ms = 20\nmetrics =\n\n"
                 "[llm_requests]\nrate = 60/min\ncapacity = 64\n\n"
                 "[llm_input]\nkind = window\nlimit = 10000\nwindow = 1min\ncapacity = 16\n\n"
                 "[llm_output]\nrate = 20000/min\ncapacity = 64\n\n"
                 "[llm_host]\nrate = 100/s\ncapacity = 4\n\n"
                 "[llm]\ncompose = llm_requests, llm_input, llm_output, llm_host\n",
                 D.name, D.dir);
        tdaemon_config_raw(&D, text);
        int d = tdaemon_start(&D, NULL);
        tdaemon_wait_ready(&D, d, 1);
        char cmd[768], line[256] = "", last[256] = "";
        snprintf(cmd, sizeof(cmd), "%s/examples/thr-llm-tenants -a %s -g llm -t 3 -d 2",
                 getenv("THR_TEST_BUILD_DIR"), D.arena);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        while (fgets(line, sizeof(line), p))
                snprintf(last, sizeof(last), "%s", line);
        int st = pclose(p);
        unsigned tenants = 0;
        unsigned long req = 0, adm = 0, den = 0, by[4] = {0}, viol = 1;
        cr_assert_eq(sscanf(last,
                            "tenants %u requests %lu admitted %lu denied %lu by_member "
                            "%lu/%lu/%lu/%lu violations %lu",
                            &tenants, &req, &adm, &den, &by[0], &by[1], &by[2], &by[3], &viol),
                     9, "output: %s", last);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit %#x: %s", st, last);
        cr_assert_eq(viol, 0, "%s", last);
        cr_assert_gt(adm, 0, "%s", last);
        cr_assert_gt(den, 0, "the limits were reached: %s", last);
        cr_log_info("%s", last);
        tdaemon_stop(&D, d);
}

/* The bound on how long a killed caller's keys stay marked when nobody touches them: the daemon
 * settles a dead reader's call when it reaps its record, at its heartbeat (20 ms here). */
Test(compose_group, the_daemon_settles_a_killed_callers_keys_within_its_heartbeat, .init = gsetup,
     .fini = gteardown)
{
        gconfig("[llm]\ncompose = llm_requests, llm_input, host\n");
        int d = tdaemon_start(&D, NULL);
        tdaemon_wait_ready(&D, d, 1);
        thr_limiter *ls[3];
        const char *names[3] = {"llm_requests", "llm_input", "host"};
        for (int i = 0; i < 3; i++) /* D's own slots are fewer: opened here, closed below */
                cr_assert_eq(thr_limiter_open(D.a, names[i], &ls[i]), 0);
        pid_t kid = tfork();
        if (kid == 0) {
                g_die_at = THR_HOOK_COMPOSE_MARKED;
                g_die_nth = 3;
                g_seen = 0;
                thr_test_hook = die_at;
                struct thr_member m[] = {mem(ls[0], "u", 1), mem(ls[1], "u", 10),
                                         mem(ls[2], "u", 10)};
                struct thr_compose_result r;
                thr_compose_try(m, 3, &r);
                _exit(3);
        }
        int st;
        waitpid(kid, &st, 0);
        cr_assert(WIFSIGNALED(st), "killed holding three marks");
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        double waited = 0;
        for (;;) {
                int marked = 0;
                for (int i = 0; i < 3; i++) { /* a key gone since (settled, then evicted by the
                                               * daemon) holds no mark: seen once under ASan */
                        const struct thr_table *tb = tdaemon_table(&D, names[i]);
                        uint64_t h = shm_hash(shm_hdr(&D.map)->hash_key, "u", 1);
                        struct thr_slot *s = shm_table_lookup(D.map.base, tb, h, "u", 1);
                        marked += s && shm_is_mark(atomic_load(&s->state));
                }
                clock_gettime(CLOCK_MONOTONIC, &t);
                waited = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
                if (!marked)
                        break;
                /* The arena's clock is manual and no client asks: nothing but the daemon settles
                 * the marks (freeing the dead caller's record: a heartbeat or a pass, every 20 ms),
                 * so a daemon that does not settle them leaves them forever. The bound only has to
                 * end that wait; 10 s (about 500 heartbeats) rides out a loaded or paused VM. A
                 * second, tighter bound on the real clock (it was 2 s) caught no other bug and
                 * failed on stalls: dropped. */
                cr_assert_lt(waited, 10.0, "%d keys still marked after 10 s", marked);
                usleep(1000);
        }
        cr_log_info("the daemon settled a killed caller's 3 marks %.3f s after its death "
                    "(heartbeat_ms = 20)",
                    waited);
        for (int i = 0; i < 3; i++)
                thr_limiter_close(ls[i]);
        tdaemon_stop(&D, d);
}

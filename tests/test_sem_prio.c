/*
 * test_sem_prio.c - priority classes, deadlines and bounded queues on semaphore keys
 * (thr_sem_acquire_opts), against a reference model.
 *
 * The harness. A key of max 1, always held by someone (the test, then each granted waiter in
 * turn), so every acquire queues. Each waiter is a forked process that calls thr_sem_acquire_opts
 * with its class and deadline, writes what it got into a shared page, and, if granted, holds the
 * lease until the test tells it to release. The test drives random steps, on a manual clock:
 *   - a new waiter (random class, sometimes a deadline a few ms ahead, sometimes one passed);
 *   - a release by the holder (the serve that follows grants the next waiter, or none);
 *   - the clock moved by 1-3 ms (waiters whose deadline passed leave: -ETIMEDOUT).
 * After each step it waits until what the processes report matches what the model says: which
 * waiter holds, which returned what, how many are queued (thr_sem_stat's pending). A mismatch
 * that does not settle in 10 s fails the test, naming the step and the waiter.
 *
 * The model (the rule in thr_sem_acquire_opts(3) and throttled.conf(5)): the next served is the
 * highest class, the oldest within it; except that the grant making the key's count of granted
 * leases a multiple of priority_share goes to the oldest waiter whatever its class. A waiter
 * whose deadline is not after now is refused at once (never queued) and leaves the queue when
 * it passes. With max_waiters queued, a new acquire is refused (-EBUSY, reject), or the oldest
 * is dropped (-ECANCELED, drop_oldest, unless the new one has a deadline and the oldest none or
 * a later one: then it is refused), or the last of the lowest class is dropped if that class
 * is below the new one's, else the new one is refused (drop_lowest).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"
#include "reclaim.h"
#include "sem.h"

#define MS      1000000ull
#define KIDS    48
#define QMAX    48
#define LEASE_T (1000 * SEC) /* never expires within a test */

enum { K_IDLE, K_CALLING, K_DONE };

struct kid {
        _Atomic int state; /* K_* */
        _Atomic int rc;
        _Atomic int release; /* the test tells a holder to release */
        uint32_t prio;
        uint64_t deadline; /* arena ns, 0 none */
        pid_t pid;         /* 0: never forked, -1: reaped (its exit status in STATUS) */
        int status;
};

struct shared {
        struct kid k[KIDS];
};

static struct tarena T;
static struct shared *S;
static char KEY[16] = "k"; /* the key of the current run (each run its own: its grant count) */

static struct shm_limiter_spec qspec(const char *name, uint64_t max_waiters, uint32_t full,
                                     uint32_t share)
{
        struct shm_limiter_spec s = tspec(name, 1, 0, 0, 0);
        s.kind = THR_KIND_SEMAPHORE;
        s.leases = 16;
        s.max_reserve_ns = 0;
        s.max_waiters = max_waiters;
        s.on_queue_full = full;
        s.priority_share = share;
        return s;
}

static struct shm_limiter_spec bspec(const char *name, uint32_t share)
{
        struct shm_limiter_spec s = tspec_budget(name, 0);
        s.priority_share = share;
        return s;
}

static void setup(void)
{
        struct shm_limiter_spec s[] = {
            qspec("strict", 0, THR_QUEUE_REJECT, 0),
            qspec("share3", 0, THR_QUEUE_REJECT, 3),
            qspec("reject", 3, THR_QUEUE_REJECT, 0),
            qspec("oldest", 3, THR_QUEUE_DROP_OLDEST, 0),
            qspec("lowest", 4, THR_QUEUE_DROP_LOWEST, 4),
            qspec("fifo", 0, THR_QUEUE_REJECT, 1),
            bspec("bud", 0),
            bspec("bud3", 3),
        };
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, sizeof(s) / sizeof(s[0]));
        S = mmap(NULL, sizeof(*S), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(S, MAP_FAILED);
}

static void teardown(void)
{
        for (int i = 0; i < KIDS; i++)
                if (S->k[i].pid > 0) {
                        kill(S->k[i].pid, SIGKILL);
                        waitpid(S->k[i].pid, NULL, 0);
                }
        munmap(S, sizeof(*S));
        tarena_free(&T);
}

TestSuite(sem_prio, .init = setup, .fini = teardown, .timeout = 300);

static uint64_t now_of(void)
{
        uint64_t t;
        cr_assert_eq(thr_clock_now(T.a, &t), 0);
        return t;
}

/* A waiter: acquire with its class and deadline, report, hold until told, release. */
static void kid_run(const char *lim, int i)
{
        struct kid *k = &S->k[i];
        thr_limiter *l = tlim(&T, lim);
        struct thr_wait_opts w = {
            .priority = k->prio, .timeout_ns = 1000 * SEC, .deadline_ns = k->deadline};
        struct thr_lease lease;
        atomic_store(&k->state, K_CALLING);
        int rc = thr_sem_acquire_opts(l, KEY, strlen(KEY), 1, LEASE_T, &w, &lease);
        atomic_store(&k->rc, rc);
        atomic_store(&k->state, K_DONE);
        if (rc != 0)
                _exit(0);
        while (!atomic_load(&k->release))
                usleep(100);
        _exit(thr_sem_release(&lease) == 0 ? 0 : 3);
}

/* ---------------------------------------------------------------- the model */

struct mw {
        int id;
        uint32_t prio;
        uint64_t ticket, deadline;
};

struct model {
        struct mw q[QMAX];
        int n;
        uint64_t ticket, granted;
        int holder;     /* a waiter, -1 the test, -2 nobody */
        int want[KIDS]; /* the return each waiter must report (1: none yet) */
        uint64_t max_waiters;
        uint32_t full, share;
};

static int m_pick_oldest(const struct model *m)
{
        int b = 0;
        for (int i = 1; i < m->n; i++)
                if (m->q[i].ticket < m->q[b].ticket)
                        b = i;
        return b;
}

static int m_pick_next(const struct model *m)
{
        if (m->share && (m->granted + 1) % m->share == 0)
                return m_pick_oldest(m);
        int b = 0;
        for (int i = 1; i < m->n; i++)
                if (m->q[i].prio > m->q[b].prio ||
                    (m->q[i].prio == m->q[b].prio && m->q[i].ticket < m->q[b].ticket))
                        b = i;
        return b;
}

static int m_pick_lowest(const struct model *m)
{
        int b = 0;
        for (int i = 1; i < m->n; i++)
                if (m->q[i].prio < m->q[b].prio ||
                    (m->q[i].prio == m->q[b].prio && m->q[i].ticket > m->q[b].ticket))
                        b = i;
        return b;
}

static void m_remove(struct model *m, int i)
{
        m->q[i] = m->q[--m->n];
}

/* The holder released: the next one is granted, if any. */
static void m_release(struct model *m)
{
        if (!m->n) {
                m->holder = -2;
                return;
        }
        int b = m_pick_next(m);
        m->holder = m->q[b].id;
        m->want[m->q[b].id] = 0;
        m->granted++;
        m_remove(m, b);
}

/* Waiter ID of class PRIO with DEADLINE calls at NOW. */
static void m_arrive(struct model *m, int id, uint32_t prio, uint64_t deadline, uint64_t now)
{
        if (m->holder == -2) { /* free, nobody queued: granted whatever its deadline */
                m->holder = id;
                m->want[id] = 0;
                m->granted++;
                return;
        }
        if (deadline && deadline <= now) {
                m->want[id] = -ETIMEDOUT;
                return;
        }
        if (m->max_waiters && (uint64_t)m->n >= m->max_waiters) {
                int v = -1;
                if (m->full == THR_QUEUE_DROP_OLDEST) {
                        v = m_pick_oldest(m);
                        uint64_t vd = m->q[v].deadline;
                        if (deadline && (!vd || vd > deadline))
                                v = -1; /* it would give up first: never drops for that */
                } else if (m->full == THR_QUEUE_DROP_LOWEST && m->q[m_pick_lowest(m)].prio < prio)
                        v = m_pick_lowest(m);
                if (v < 0) {
                        m->want[id] = -EBUSY;
                        return;
                }
                m->want[m->q[v].id] = -ECANCELED;
                m_remove(m, v);
        }
        m->q[m->n++] =
            (struct mw){.id = id, .prio = prio, .ticket = m->ticket++, .deadline = deadline};
}

static void m_advance(struct model *m, uint64_t now)
{
        for (int i = 0; i < m->n;)
                if (m->q[i].deadline && m->q[i].deadline <= now) {
                        m->want[m->q[i].id] = -ETIMEDOUT;
                        m_remove(m, i);
                } else {
                        i++;
                }
}

/* ---------------------------------------------------------------- the check */

/* Whether the processes agree with the model now; WHY says where not. */
static bool agrees(thr_limiter *l, const struct model *m, int nkids, char *why, size_t len)
{
        for (int i = 0; i < nkids; i++) {
                int st = atomic_load(&S->k[i].state), rc = atomic_load(&S->k[i].rc);
                bool done = st == K_DONE;
                if (m->want[i] == 1 && done) {
                        snprintf(why, len,
                                 "waiter %d (class %u) returned %d, the model has it queued", i,
                                 S->k[i].prio, rc);
                        return false;
                }
                if (m->want[i] != 1 && (!done || rc != m->want[i])) {
                        snprintf(why, len, "waiter %d (class %u): the model says %d, it %s %d", i,
                                 S->k[i].prio, m->want[i], done ? "returned" : "has not returned",
                                 done ? rc : 0);
                        return false;
                }
        }
        struct thr_sem_stat st;
        int rc = thr_sem_stat(l, KEY, strlen(KEY), &st);
        if (rc != 0 || st.pending != (uint64_t)m->n || st.held != 1u - (m->holder == -2)) {
                snprintf(why, len,
                         "stat %d: pending %" PRIu64 " held %" PRIu64 ", the model %d queued, %s",
                         rc, st.pending, st.held, m->n, m->holder == -2 ? "free" : "held");
                return false;
        }
        return true;
}

/* Waiters that exited: reaped, and their reader records freed (as the daemon frees a dead
 * process's; none runs here), so that forty of them fit the arena's records. */
static void reap(int nkids)
{
        for (int i = 0; i < nkids; i++) {
                struct kid *k = &S->k[i];
                if (k->pid > 0 && waitpid(k->pid, &k->status, WNOHANG) == k->pid)
                        k->pid = -1;
        }
        shm_readers_reap(&T.map);
}

static void settle(thr_limiter *l, const struct model *m, int nkids, int step)
{
        char why[256] = "";
        for (int i = 0; i < 10000; i++) {
                if (agrees(l, m, nkids, why, sizeof(why))) {
                        reap(nkids);
                        return;
                }
                usleep(1000);
        }
        for (int i = 0; i < m->n; i++)
                cr_log_info("queued: waiter %d class %u ticket %" PRIu64 " deadline %" PRIu64,
                            m->q[i].id, m->q[i].prio, m->q[i].ticket, m->q[i].deadline);
        cr_assert_fail("step %d (arena time %" PRIu64 "): %s", step, now_of(), why);
}

static void run(const char *lim, uint64_t max_waiters, uint32_t full, uint32_t share, unsigned seed)
{
        thr_limiter *l = tlim_kept(&T, lim);
        snprintf(KEY, sizeof(KEY), "k%u", seed);
        struct model m = {
            .holder = -1, .granted = 1, .max_waiters = max_waiters, .full = full, .share = share};
        for (int i = 0; i < KIDS; i++)
                m.want[i] = 1;
        struct thr_lease mine;
        cr_assert_eq(thr_sem_try(l, KEY, strlen(KEY), 1, LEASE_T, &mine), 0);
        uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
        int nkids = 0, step = 0;
        while (nkids < KIDS) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                unsigned op = x % 10;
                uint64_t now = now_of();
                if (op < 6) { /* a new waiter */
                        int i = nkids++;
                        struct kid *k = &S->k[i];
                        k->prio = (uint32_t)(x >> 8) % 4;
                        unsigned d = (unsigned)(x >> 16) % 8;
                        k->deadline = d == 0 ? now : d < 3 ? now + d * MS : 0;
                        m_arrive(&m, i, k->prio, k->deadline, now);
                        pid_t pid = tfork();
                        if (pid == 0)
                                kid_run(lim, i);
                        k->pid = pid;
                        /* queued before the next step: its place is its arrival's */
                        for (int w = 0; w < 10000 && atomic_load(&k->state) == K_IDLE; w++)
                                usleep(100);
                } else if (op < 9) { /* the holder releases */
                        if (m.holder == -2)
                                continue;
                        if (m.holder == -1)
                                cr_assert_eq(thr_sem_release(&mine), 0);
                        else
                                atomic_store(&S->k[m.holder].release, 1);
                        m_release(&m);
                } else { /* time passes */
                        uint64_t d = 1 + (x >> 8) % 3;
                        cr_assert_eq(thr_clock_advance(T.a, d * MS), 0);
                        m_advance(&m, now_of());
                }
                settle(l, &m, nkids, step++);
        }
        /* drain: every holder releases in turn, the queue empties in the model's order */
        while (m.holder != -2) {
                if (m.holder == -1)
                        cr_assert_eq(thr_sem_release(&mine), 0);
                else
                        atomic_store(&S->k[m.holder].release, 1);
                m_release(&m);
                settle(l, &m, nkids, step++);
        }
        int got[5] = {0};
        for (int i = 0; i < nkids; i++) {
                int w = S->k[i].status;
                if (S->k[i].pid > 0)
                        cr_assert_eq(waitpid(S->k[i].pid, &w, 0), S->k[i].pid);
                cr_assert(WIFEXITED(w) && WEXITSTATUS(w) == 0, "waiter %d's release failed", i);
                S->k[i].pid = 0;
                int rc = atomic_load(&S->k[i].rc);
                got[rc == 0            ? 0
                    : rc == -ETIMEDOUT ? 1
                    : rc == -EBUSY     ? 2
                    : rc == -ECANCELED ? 3
                                       : 4]++;
        }
        cr_log_info("%s seed %u: %d steps; granted %d, timed out %d, refused %d, dropped %d", lim,
                    seed, step, got[0], got[1], got[2], got[3]);
        cr_assert_eq(got[4], 0);
}

/* N runs of the model with seeds FIRST.. on limiter LIM (each run its own key). */
static void runs(const char *lim, uint64_t max_waiters, uint32_t full, uint32_t share,
                 unsigned first, unsigned n)
{
        for (unsigned seed = first; seed < first + n; seed++) {
                run(lim, max_waiters, full, share, seed);
                memset(S, 0, sizeof(*S));
        }
}

Test(sem_prio, strict_priority_fifo_within_a_class_and_deadlines)
{
        runs("strict", 0, THR_QUEUE_REJECT, 0, 1, 3);
}

Test(sem_prio, one_grant_in_three_to_the_oldest)
{
        runs("share3", 0, THR_QUEUE_REJECT, 3, 11, 3);
}

Test(sem_prio, a_full_queue_rejects_the_new_acquire)
{
        runs("reject", 3, THR_QUEUE_REJECT, 0, 21, 1);
}

Test(sem_prio, a_full_queue_drops_the_oldest)
{
        runs("oldest", 3, THR_QUEUE_DROP_OLDEST, 0, 31, 2);
}

Test(sem_prio, a_full_queue_drops_the_lowest_class)
{
        runs("lowest", 4, THR_QUEUE_DROP_LOWEST, 4, 41, 2);
}

Test(sem_prio, share_one_is_plain_fifo)
{
        runs("fifo", 0, THR_QUEUE_REJECT, 1, 51, 1);
}

/* Starvation: a steady stream of class-3 waiters keeps the queue full of them; the one class-0
 * waiter is granted within priority_share grants (3), and never with strict priority until the
 * stream stops. Checked on the model's own run above; here the bound itself, directly. */
Test(sem_prio, the_lowest_class_is_served_within_the_share)
{
        thr_limiter *l = tlim_kept(&T, "share3");
        struct thr_lease mine;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, LEASE_T, &mine), 0); /* granted: 1 */
        int n = 0;
        /* the low one first, then high ones */
        for (int i = 0; i < 6; i++) {
                S->k[n].prio = i == 0 ? 0 : 3;
                pid_t pid = tfork();
                if (pid == 0)
                        kid_run("share3", n);
                S->k[n].pid = pid;
                while (atomic_load(&S->k[n].state) == K_IDLE)
                        usleep(100);
                struct thr_sem_stat st;
                do {
                        usleep(200);
                        cr_assert_eq(thr_sem_stat(l, "k", 1, &st), 0);
                } while (st.pending != (uint64_t)n + 1);
                n++;
        }
        /* grants 2, 3: the class-3 waiters 1 and 2; grant 3 makes the count a multiple of 3: the
         * oldest, the class-0 waiter 0 */
        cr_assert_eq(thr_sem_release(&mine), 0);
        int order[6], got = 0, holder = -1;
        while (got < 6) {
                for (int i = 0; i < n; i++)
                        if (i != holder && atomic_load(&S->k[i].state) == K_DONE &&
                            atomic_load(&S->k[i].release) == 0) {
                                cr_assert_eq(atomic_load(&S->k[i].rc), 0);
                                order[got++] = i;
                                holder = i;
                                atomic_store(&S->k[i].release, 1);
                        }
                usleep(200);
        }
        cr_assert_eq(order[0], 1);
        cr_assert_eq(order[1], 0, "the class-0 waiter has the third grant (the share's turn)");
        cr_assert_eq(order[2], 2);
        for (int i = 0; i < n; i++) {
                waitpid(S->k[i].pid, NULL, 0);
                S->k[i].pid = 0;
        }
}

Test(sem_prio, bad_options_are_refused)
{
        thr_limiter *l = tlim_kept(&T, "strict");
        struct thr_lease ls;
        struct thr_wait_opts w = {.priority = THR_PRIORITY_MAX + 1, .timeout_ns = SEC};
        cr_assert_eq(thr_sem_acquire_opts(l, "k", 1, 1, SEC, &w, &ls), -EINVAL);
        w = (struct thr_wait_opts){.flags = 1, .timeout_ns = SEC};
        cr_assert_eq(thr_sem_acquire_opts(l, "k", 1, 1, SEC, &w, &ls), -EINVAL);
        w = (struct thr_wait_opts){.reserved = {0, 1}, .timeout_ns = SEC};
        cr_assert_eq(thr_sem_acquire_opts(l, "k", 1, 1, SEC, &w, &ls), -EINVAL);
        cr_assert_eq(thr_sem_acquire_opts(l, "k", 1, 1, SEC, NULL, &ls), -EINVAL);
        /* both 0: a try */
        w = (struct thr_wait_opts){.priority = 7};
        cr_assert_eq(thr_sem_acquire_opts(l, "k", 1, 1, SEC, &w, &ls), 0);
        struct thr_lease l2;
        cr_assert_eq(thr_sem_acquire_opts(l, "k", 1, 1, SEC, &w, &l2), -EAGAIN);
        /* a deadline passed: refused at once, never queued */
        cr_assert_eq(thr_clock_advance(T.a, MS), 0); /* deadline 0 is "none" */
        w.deadline_ns = now_of();
        int rc = thr_sem_acquire_opts(l, "k", 1, 1, SEC, &w, &l2);
        cr_assert_eq(rc, -ETIMEDOUT, "%d", rc);
        struct thr_sem_stat st;
        cr_assert_eq(thr_sem_stat(l, "k", 1, &st), 0);
        cr_assert_eq(st.pending, 0);
        cr_assert_eq(thr_sem_release(&ls), 0);
}

/* ---------------------------------------------------------------- budgets */

/* A spender: spend 1 with its class and deadline, report, leave. */
static void kid_spend(const char *lim, int i)
{
        struct kid *k = &S->k[i];
        thr_limiter *l = tlim(&T, lim);
        struct thr_wait_opts w = {
            .priority = k->prio, .timeout_ns = 1000 * SEC, .deadline_ns = k->deadline};
        atomic_store(&k->state, K_CALLING);
        int rc = thr_budget_spend_opts(l, KEY, strlen(KEY), 1, &w, NULL);
        atomic_store(&k->rc, rc);
        atomic_store(&k->state, K_DONE);
        _exit(0);
}

/* The budget model: the model above with a balance instead of a holder; an add of 1 grants the
 * next queued spender (counted in granted) or raises the balance. */
static bool agrees_b(thr_limiter *l, const struct model *m, uint64_t balance, int nkids, char *why,
                     size_t len)
{
        for (int i = 0; i < nkids; i++) {
                int st = atomic_load(&S->k[i].state), rc = atomic_load(&S->k[i].rc);
                bool done = st == K_DONE;
                if ((m->want[i] == 1) == done || (done && rc != m->want[i])) {
                        snprintf(why, len, "spender %d (class %u): the model says %d, it %s %d", i,
                                 S->k[i].prio, m->want[i], done ? "returned" : "has not returned",
                                 done ? rc : 0);
                        return false;
                }
        }
        struct thr_budget_stat st;
        int rc = thr_budget_stat(l, KEY, strlen(KEY), &st);
        if (rc != 0 || st.waiters != (uint64_t)m->n || st.balance != balance ||
            st.granted != m->granted) {
                snprintf(why, len,
                         "stat %d: waiters %" PRIu64 " balance %" PRIu64 " granted %" PRIu64
                         ", the model %d, %" PRIu64 ", %" PRIu64,
                         rc, st.waiters, st.balance, st.granted, m->n, balance, m->granted);
                return false;
        }
        return true;
}

static void run_budget(const char *lim, uint32_t share, unsigned seed)
{
        thr_limiter *l = tlim_kept(&T, lim);
        snprintf(KEY, sizeof(KEY), "b%u", seed);
        struct model m = {.holder = -1, .share = share};
        uint64_t balance = 0;
        for (int i = 0; i < KIDS; i++)
                m.want[i] = 1;
        uint64_t x = seed * 0x9e3779b97f4a7c15ull + 7;
        int nkids = 0, step = 0;
        char why[256] = "";
        while (nkids < KIDS) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                unsigned op = x % 10;
                uint64_t now = now_of();
                if (op < 6) {
                        int i = nkids++;
                        struct kid *k = &S->k[i];
                        k->prio = (uint32_t)(x >> 8) % 4;
                        unsigned d = (unsigned)(x >> 16) % 8;
                        k->deadline = d == 0 ? now : d < 3 ? now + d * MS : 0;
                        if (balance && !m.n) {
                                balance--;
                                m.want[i] = 0;
                        } else {
                                m.holder = -1; /* no "free" state: the balance says it */
                                m_arrive(&m, i, k->prio, k->deadline, now);
                        }
                        pid_t pid = tfork();
                        if (pid == 0)
                                kid_spend(lim, i);
                        k->pid = pid;
                        for (int w = 0; w < 10000 && atomic_load(&k->state) == K_IDLE; w++)
                                usleep(100);
                } else if (op < 9) {
                        cr_assert_eq(thr_budget_add(l, KEY, strlen(KEY), 1, NULL), 0);
                        if (m.n)
                                m_release(&m);
                        else
                                balance++;
                } else {
                        cr_assert_eq(thr_clock_advance(T.a, (1 + (x >> 8) % 3) * MS), 0);
                        m_advance(&m, now_of());
                }
                int t = 0;
                while (!agrees_b(l, &m, balance, nkids, why, sizeof(why)) && t++ < 10000)
                        usleep(1000);
                cr_assert_lt(t, 10000, "step %d: %s", step, why);
                reap(nkids);
                step++;
        }
        while (m.n) {
                cr_assert_eq(thr_budget_add(l, KEY, strlen(KEY), 1, NULL), 0);
                m_release(&m);
                int t = 0;
                while (!agrees_b(l, &m, balance, nkids, why, sizeof(why)) && t++ < 10000)
                        usleep(1000);
                cr_assert_lt(t, 10000, "drain: %s", why);
        }
        int got[3] = {0};
        for (int i = 0; i < nkids; i++) {
                if (S->k[i].pid > 0)
                        waitpid(S->k[i].pid, NULL, 0);
                S->k[i].pid = 0;
                int rc = atomic_load(&S->k[i].rc);
                got[rc == 0 ? 0 : rc == -ETIMEDOUT ? 1 : 2]++;
        }
        cr_log_info("%s seed %u: %d steps; spent %d, timed out %d", lim, seed, step, got[0],
                    got[1]);
        cr_assert_eq(got[2], 0);
}

Test(sem_prio, budget_spends_by_class_with_deadlines)
{
        for (unsigned seed = 61; seed <= 62; seed++) {
                run_budget("bud", 0, seed);
                memset(S, 0, sizeof(*S));
        }
}

Test(sem_prio, budget_spends_one_in_three_to_the_oldest)
{
        for (unsigned seed = 71; seed <= 72; seed++) {
                run_budget("bud3", 3, seed);
                memset(S, 0, sizeof(*S));
        }
}

/* This spender's reader record (it is queued: its record names a key). */
static struct thr_reader *spender_record(int i)
{
        struct thr_reader *rec = shm_at(T.map.base, T.map.g.reader_off);
        for (uint32_t j = 0; j < T.map.g.reader_count; j++)
                if (atomic_load(&rec[j].owner) &&
                    atomic_load(&rec[j].pid) == (uint64_t)S->k[i].pid &&
                    atomic_load(&rec[j].wait_slot) != 0)
                        return &rec[j];
        cr_assert_fail("no queued record for spender %d", i);
        return NULL;
}

static uint64_t bud_waiters(thr_limiter *l)
{
        struct thr_budget_stat st;
        cr_assert_eq(thr_budget_stat(l, KEY, strlen(KEY), &st), 0);
        return st.waiters;
}

/* Budget queues with classes, attacked: a queued spender SIGKILLed, a record's class rewritten to
 * 7, another's deadline rewritten into the past. The dead one is skipped, the rewritten class only
 * reorders (it is served first), the rewritten deadline only starves its own spender; every add
 * is spent once or kept in the balance, never more. */
Test(sem_prio, budget_queue_killed_and_scribbled_spenders)
{
        thr_limiter *l = tlim_kept(&T, "bud");
        snprintf(KEY, sizeof(KEY), "kz");
        cr_assert_eq(thr_clock_advance(T.a, 5 * MS), 0); /* a deadline of 1 ns is in the past */
        static const uint32_t prio[4] = {3, 3, 0, 0};
        for (int i = 0; i < 4; i++) {
                S->k[i].prio = prio[i];
                S->k[i].deadline = 0;
                pid_t pid = tfork();
                if (pid == 0)
                        kid_spend("bud", i);
                S->k[i].pid = pid;
                for (int w = 0; w < 10000 && bud_waiters(l) != (uint64_t)i + 1; w++)
                        usleep(200);
                cr_assert_eq(bud_waiters(l), (uint64_t)i + 1, "spender %d never queued", i);
        }
        atomic_store(&spender_record(2)->wait_flags, 7u << 16);
        atomic_store(&spender_record(3)->wait_deadline, 1);
        kill(S->k[0].pid, SIGKILL);
        waitpid(S->k[0].pid, NULL, 0);
        S->k[0].pid = 0;
        cr_assert_eq(bud_waiters(l), 2, "the dead and the passed-over spenders are not counted");
        int order[2], got = 0;
        for (int add = 0; add < 3; add++) {
                cr_assert_eq(thr_budget_add(l, KEY, strlen(KEY), 1, NULL), 0);
                for (int w = 0; w < 10000 && got < 2 && got == add; w++) {
                        for (int i = 1; i < 3; i++)
                                if (atomic_load(&S->k[i].state) == K_DONE &&
                                    (got == 0 || order[0] != i))
                                        order[got++] = i;
                        usleep(200);
                }
        }
        cr_assert_eq(got, 2);
        cr_assert_eq(order[0], 2, "the class rewritten to 7 is served first");
        cr_assert_eq(order[1], 1);
        cr_assert_eq(atomic_load(&S->k[1].rc), 0);
        cr_assert_eq(atomic_load(&S->k[2].rc), 0);
        struct thr_budget_stat st;
        cr_assert_eq(thr_budget_stat(l, KEY, strlen(KEY), &st), 0);
        cr_assert_eq(st.balance, 1, "3 added, 2 spent: the passed-over spender took nothing");
        cr_assert_eq(st.waiters, 0);
        cr_assert_neq(atomic_load(&S->k[3].state), K_DONE, "it starves alone, until its timeout");
        for (int i = 1; i < 4; i++) {
                kill(S->k[i].pid, SIGKILL);
                waitpid(S->k[i].pid, NULL, 0);
                S->k[i].pid = 0;
        }
}

/*
 * test_budget_procs.c - budget keys spent by many processes at once, SIGKILLed at random, checked
 * against a reference log kept in shared memory.
 *
 * Each spender logs an intent (its cost) before its call and an outcome (spent or not, with the
 * balance it was told) after it; a controller that is never killed logs every add it made. A
 * killed spender's intent without an outcome is ambiguous: it may or may not have spent. At the
 * end (everyone stopped and reaped, then one thr_budget_stat to serve the key) the balance must lie
 * within  initial + adds - confirmed - ambiguous <= B <= initial + adds - confirmed.
 *
 * Then FIFO service across processes (a large head never overtaken by later, smaller waiters, nor
 * by another process's try), and a waiting spender SIGKILLed at random around a storm of adds
 * (never an add lost).
 *
 * Real clock (THR_CLOCK_MONOTONIC); every wait is bounded; children are made with tfork().
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

#include "helpers.h"

#define MS 1000000ull

static struct tarena T;

static void setup(void)
{
        struct shm_limiter_spec s[] = {tspec_budget("b50", 50), tspec_budget("b0", 0)};
        tarena_make(&T, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, s, 2);
}

static void teardown(void)
{
        tarena_free(&T);
}

TestSuite(budget_procs, .init = setup, .fini = teardown, .timeout = 120);

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

/* Reap PID within SECS seconds (then SIGKILL it and fail). Its wait status. */
static int reap(pid_t pid, double secs, const char *what)
{
        double t0 = mono_s();
        int st = 0;
        for (;;) {
                pid_t r = waitpid(pid, &st, WNOHANG);
                if (r == pid)
                        return st;
                if (mono_s() - t0 > secs) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &st, 0);
                        cr_assert_fail("%s (pid %d) did not finish within %.0f s", what, (int)pid,
                                       secs);
                }
                usleep(1000);
        }
}

/* ---------------------------------------------------------------- the reference log */

enum { E_INTENT = 1, E_SPENT, E_NOT };

struct ent {
        _Atomic uint32_t type; /* 0: never published (its writer died first): ignored */
        uint32_t kid;
        int32_t rc;
        uint32_t waited; /* thr_budget_spend (else thr_budget_try) */
        uint64_t cost;
        uint64_t balance; /* as the call told it */
};

#define LOG_MAX  (1u << 18)
#define ADDS_MAX (1u << 16)
#define KIDS_MAX 1024

struct add_ent {
        _Atomic uint32_t done;
        int32_t rc;
        uint64_t amount, balance;
};

struct shlog {
        _Atomic int stop;
        _Atomic uint64_t n;
        _Atomic uint64_t nadds;
        struct add_ent adds[ADDS_MAX];
        struct ent e[LOG_MAX];
};

/* Append an entry (published last: a writer killed before that leaves type 0). */
static struct ent *log_take(struct shlog *g)
{
        uint64_t i = atomic_fetch_add(&g->n, 1);
        return i < LOG_MAX ? &g->e[i] : NULL;
}

/* A spender: random costs, try or spend with a short timeout, each call logged around it. */
static void spender(thr_limiter *l, const char *key, struct shlog *g, uint32_t kid,
                    bool always_wait, uint64_t max_to_ms)
{
        uint64_t x = 0x9e3779b97f4a7c15ull ^ ((uint64_t)getpid() << 20) ^ kid;
        while (!atomic_load(&g->stop)) {
                uint64_t cost = 1 + rnd(&x) % 8;
                bool wait = always_wait || (rnd(&x) & 1);
                uint64_t to = (2 + rnd(&x) % (max_to_ms - 1)) * MS;
                struct ent *in = log_take(g);
                if (!in) {
                        usleep(1000); /* the log is full: stop calling */
                        continue;
                }
                in->kid = kid;
                in->cost = cost;
                in->waited = wait;
                atomic_store_explicit(&in->type, E_INTENT, memory_order_release);
                struct thr_budget_result r = {0};
                int rc = wait ? thr_budget_spend(l, key, strlen(key), cost, to, &r)
                              : thr_budget_try(l, key, strlen(key), cost, &r);
                struct ent *out = log_take(g);
                while (!out) /* no room for the outcome: never exit with an ambiguous intent */
                        pause();
                out->kid = kid;
                out->cost = cost;
                out->rc = rc;
                out->waited = wait;
                out->balance = r.balance;
                atomic_store_explicit(&out->type, rc == 0 ? E_SPENT : E_NOT, memory_order_release);
                usleep((useconds_t)(rnd(&x) % 2000));
        }
        _exit(0);
}

/* What the log says. */
struct books {
        uint64_t adds, nadds, confirmed, ambiguous, nambiguous, spent, refused, timedout, waited_ok;
        uint64_t intents;
};

/* Check the log of G (spenders KILLED[kid] were SIGKILLed) and sum it up; MAXBAL is the most the
 * balance can ever have been. */
static struct books check_log(struct shlog *g, const bool *killed, uint32_t nkids, uint64_t initial)
{
        struct books b = {0};
        uint64_t na = atomic_load(&g->nadds);
        cr_assert_lt(na, ADDS_MAX);
        for (uint64_t i = 0; i < na; i++) {
                struct add_ent *a = &g->adds[i];
                cr_assert_eq(atomic_load(&a->done), 1, "add %lu never logged", (unsigned long)i);
                cr_assert_eq(a->rc, 0, "add %lu of %lu: %d (%s)", (unsigned long)i,
                             (unsigned long)a->amount, a->rc, strerror(-a->rc));
                b.adds += a->amount;
                b.nadds++;
        }
        uint64_t maxbal = initial + b.adds;
        uint64_t n = atomic_load(&g->n);
        cr_assert_lt(n, LOG_MAX, "the log filled up: make it larger");
        static uint64_t pending[KIDS_MAX]; /* the cost of a kid's intent without outcome yet */
        memset(pending, 0, sizeof(pending));
        for (uint64_t i = 0; i < n; i++) {
                struct ent *e = &g->e[i];
                uint32_t t = atomic_load(&e->type);
                if (!t)
                        continue;
                cr_assert_lt(e->kid, nkids);
                if (t == E_INTENT) {
                        cr_assert_eq(pending[e->kid], 0, "kid %u: two intents", e->kid);
                        pending[e->kid] = e->cost;
                        b.intents++;
                        continue;
                }
                cr_assert_eq(pending[e->kid], e->cost, "kid %u: an outcome without its intent",
                             e->kid);
                pending[e->kid] = 0;
                if (t == E_SPENT) {
                        b.spent++;
                        b.confirmed += e->cost;
                        b.waited_ok += e->waited;
                        cr_assert_leq(e->balance, maxbal,
                                      "kid %u spent %lu and was told a balance of %lu: above "
                                      "anything ever added (%lu): a wrap below zero",
                                      e->kid, (unsigned long)e->cost, (unsigned long)e->balance,
                                      (unsigned long)maxbal);
                } else if (e->rc == -EAGAIN) {
                        b.refused++;
                        cr_assert_not(e->waited, "kid %u: a spend refused with -EAGAIN", e->kid);
                } else if (e->rc == -ETIMEDOUT) {
                        b.timedout++;
                        cr_assert(e->waited, "kid %u: a try timed out", e->kid);
                } else {
                        cr_assert_fail("kid %u: cost %lu: unexpected %d (%s)", e->kid,
                                       (unsigned long)e->cost, e->rc, strerror(-e->rc));
                }
        }
        for (uint32_t k = 0; k < nkids; k++) {
                if (!pending[k])
                        continue;
                cr_assert(killed[k], "kid %u exited with an intent of %lu and no outcome", k,
                          (unsigned long)pending[k]);
                b.ambiguous += pending[k];
                b.nambiguous++;
        }
        return b;
}

static void check_balance(const struct books *b, uint64_t initial, uint64_t bal)
{
        uint64_t hi = initial + b->adds - b->confirmed;
        cr_assert_geq(initial + b->adds, b->confirmed,
                      "over-admission: %lu spent from %lu initial and %lu added",
                      (unsigned long)b->confirmed, (unsigned long)initial, (unsigned long)b->adds);
        uint64_t lo = hi >= b->ambiguous ? hi - b->ambiguous : 0;
        cr_assert(bal <= hi && bal >= lo,
                  "balance %lu outside [%lu, %lu]: initial %lu + adds %lu (%lu) - confirmed %lu "
                  "- ambiguous %lu (%lu)",
                  (unsigned long)bal, (unsigned long)lo, (unsigned long)hi, (unsigned long)initial,
                  (unsigned long)b->adds, (unsigned long)b->nadds, (unsigned long)b->confirmed,
                  (unsigned long)b->ambiguous, (unsigned long)b->nambiguous);
}

/* ---------------------------------------------------------------- many spenders, SIGKILL */

#define SPENDERS 6

Test(budget_procs, many_spenders_killed_at_random_balance_the_books)
{
        const char *key = "shared";
        const uint64_t initial = 50;
        thr_limiter *l = tlim(&T, "b50");
        struct shlog *g = shared_map(sizeof(*g));
        static bool killed[KIDS_MAX];
        memset(killed, 0, sizeof(killed));
        pid_t pid[SPENDERS];
        uint32_t kid_of[SPENDERS], nkids = 0;
        for (int i = 0; i < SPENDERS; i++) {
                kid_of[i] = nkids++;
                pid[i] = tfork();
                if (pid[i] == 0)
                        spender(l, key, g, kid_of[i], false, 50);
        }
        pid_t ctl = tfork();
        if (ctl == 0) { /* the controller: never killed, every add logged */
                uint64_t x = 0x2545f4914f6cdd1dull ^ (uint64_t)getpid();
                while (!atomic_load(&g->stop)) {
                        uint64_t i = atomic_load(&g->nadds);
                        if (i >= ADDS_MAX - 1)
                                break;
                        struct add_ent *a = &g->adds[i];
                        a->amount = 1 + rnd(&x) % 20;
                        struct thr_budget_result r = {0};
                        a->rc = thr_budget_add(l, key, strlen(key), a->amount, &r);
                        a->balance = r.balance;
                        atomic_store(&a->done, 1);
                        atomic_store(&g->nadds, i + 1);
                        usleep((useconds_t)(1000 + rnd(&x) % 9000));
                }
                _exit(0);
        }
        uint64_t x = 0xdeadbeefcafef00dull ^ (uint64_t)getpid();
        double t0 = mono_s();
        int kills = 0;
        while (mono_s() - t0 < 3.5 && nkids < KIDS_MAX) {
                usleep((useconds_t)(20000 + rnd(&x) % 30000));
                int i = (int)(rnd(&x) % SPENDERS);
                kill(pid[i], SIGKILL);
                int st = reap(pid[i], 10, "a killed spender");
                if (WIFSIGNALED(st))
                        killed[kid_of[i]] = true;
                else /* it exited on its own: only if it failed */
                        cr_assert_fail("spender %u exited %#x before its kill", kid_of[i], st);
                kills++;
                kid_of[i] = nkids++;
                pid[i] = tfork();
                if (pid[i] == 0)
                        spender(l, key, g, kid_of[i], false, 50);
        }
        atomic_store(&g->stop, 1);
        for (int i = 0; i < SPENDERS; i++) {
                int st = reap(pid[i], 20, "a spender told to stop");
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "spender %u: status %#x",
                          kid_of[i], st);
        }
        int st = reap(ctl, 20, "the controller");
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "controller: status %#x", st);

        struct thr_budget_stat bs = stat_of(l, key); /* serves: dead waiters dropped */
        struct books b = check_log(g, killed, nkids, initial);
        cr_log_info(
            "budget procs: %d kills, %lu intents, %lu spent (%lu units, %lu after waiting), "
            "%lu refused, %lu timed out, %lu ambiguous (%lu units), %lu adds (%lu units), "
            "balance %lu, granted %lu",
            kills, (unsigned long)b.intents, (unsigned long)b.spent, (unsigned long)b.confirmed,
            (unsigned long)b.waited_ok, (unsigned long)b.refused, (unsigned long)b.timedout,
            (unsigned long)b.nambiguous, (unsigned long)b.ambiguous, (unsigned long)b.nadds,
            (unsigned long)b.adds, (unsigned long)bs.balance, (unsigned long)bs.granted);
        check_balance(&b, initial, bs.balance);
        cr_assert_eq(bs.waiters, 0, "%lu waiters left", (unsigned long)bs.waiters);
        cr_assert_eq(bs.need, 0, "need %lu left", (unsigned long)bs.need);
        cr_assert_gt(kills, 10);
        cr_assert_gt(b.spent, 100, "the spenders did spend");
        cr_assert_gt(bs.granted, 0, "some spends waited in the queue and were granted");
        struct thr_budget_result r;
        cr_assert_eq(thr_budget_try(l, key, strlen(key), 0, &r), 0, "no flag left behind");
        munmap(g, sizeof(*g));
        thr_limiter_close(l);
}

/* ---------------------------------------------------------------- FIFO across processes */

struct fifo {
        _Atomic int rc[4];
        _Atomic int done[4];
        _Atomic int order; /* returns so far */
        _Atomic int pos[4];
};

static pid_t fifo_spender(thr_limiter *l, struct fifo *f, int i, uint64_t cost)
{
        pid_t p = tfork();
        if (p == 0) {
                struct thr_budget_result r;
                int rc = thr_budget_spend(l, "fifo", 4, cost, 20 * SEC, &r);
                atomic_store(&f->pos[i], atomic_fetch_add(&f->order, 1) + 1);
                atomic_store(&f->rc[i], rc);
                atomic_store(&f->done[i], 1);
                _exit(0);
        }
        return p;
}

static void wait_done(struct fifo *f, int i)
{
        double t0 = mono_s();
        while (!atomic_load(&f->done[i])) {
                cr_assert_lt(mono_s() - t0, 10.0, "P%d was never granted", i);
                usleep(500);
        }
}

/* A try of COST by another process: its result. */
static int try_elsewhere(thr_limiter *l, uint64_t cost)
{
        _Atomic int *out = shared_map(4096);
        atomic_store(out, 99);
        pid_t p = tfork();
        if (p == 0) {
                struct thr_budget_result r;
                atomic_store(out, thr_budget_try(l, "fifo", 4, cost, &r));
                _exit(0);
        }
        reap(p, 10, "a try");
        int rc = atomic_load(out);
        munmap(out, 4096);
        return rc;
}

Test(budget_procs, waiters_in_several_processes_are_served_in_ticket_order)
{
        thr_limiter *l = tlim(&T, "b0");
        struct fifo *f = shared_map(sizeof(*f));
        pid_t p[4];
        p[1] = fifo_spender(l, f, 1, 5);
        wait_waiters(l, "fifo", 1);
        p[2] = fifo_spender(l, f, 2, 2);
        wait_waiters(l, "fifo", 2);
        p[3] = fifo_spender(l, f, 3, 1);
        wait_waiters(l, "fifo", 3);
        struct thr_budget_stat st = stat_of(l, "fifo");
        cr_assert_eq(st.need, 8);
        cr_assert_eq(st.head_need, 5);

        struct thr_budget_result r;
        cr_assert_eq(thr_budget_add(l, "fifo", 4, 2, &r), 0);
        cr_assert_eq(r.balance, 2, "P1 needs 5: P2 (2) does not go first");
        cr_assert_eq(r.waiters, 3);
        cr_assert_eq(try_elsewhere(l, 1), -EAGAIN, "a try in another process never overtakes");
        cr_assert_eq(thr_budget_add(l, "fifo", 4, 1, &r), 0);
        cr_assert_eq(r.balance, 3, "still short for P1: P3 (1) does not go first either");
        cr_assert_eq(r.waiters, 3);
        usleep(20000);
        for (int i = 1; i <= 3; i++)
                cr_assert_not(atomic_load(&f->done[i]), "P%d returned before P1 was granted", i);

        cr_assert_eq(thr_budget_add(l, "fifo", 4, 3, &r), 0); /* 6: P1 (5), then P2 does not fit */
        cr_assert_eq(r.balance, 1, "P1 granted, and P2 (2) does not fit in the 1 left");
        cr_assert_eq(r.waiters, 2);
        wait_done(f, 1);
        cr_assert_eq(atomic_load(&f->rc[1]), 0);
        usleep(20000);
        cr_assert_not(atomic_load(&f->done[3]), "P3 (1 fits) never overtakes P2");
        cr_assert_not(atomic_load(&f->done[2]));
        cr_assert_eq(try_elsewhere(l, 1), -EAGAIN, "P2 and P3 still wait: a try is refused");

        cr_assert_eq(thr_budget_add(l, "fifo", 4, 2, &r), 0); /* 3: P2 (2), P3 (1) */
        cr_assert_eq(r.balance, 0, "both granted, in order");
        cr_assert_eq(r.waiters, 0);
        wait_done(f, 2);
        wait_done(f, 3);
        cr_assert_eq(atomic_load(&f->rc[2]), 0);
        cr_assert_eq(atomic_load(&f->rc[3]), 0);
        cr_assert_eq(atomic_load(&f->pos[1]), 1, "P1 returned first");
        for (int i = 1; i <= 3; i++)
                reap(p[i], 10, "a granted spender");
        st = stat_of(l, "fifo");
        cr_assert_eq(st.balance, 0);
        cr_assert_eq(st.waiters, 0);
        cr_assert_eq(st.need, 0);
        cr_assert_eq(st.granted, 3);
        cr_assert_eq(thr_budget_add(l, "fifo", 4, 1, &r), 0);
        cr_assert_eq(try_elsewhere(l, 1), 0, "nobody queued: a try spends");
        munmap(f, sizeof(*f));
        thr_limiter_close(l);
}

/* ---------------------------------------------------------------- kills around an add storm */

#define WAITERS 2

Test(budget_procs, waiters_killed_around_an_add_storm_never_lose_an_add)
{
        const char *key = "storm";
        thr_limiter *l = tlim(&T, "b0");
        struct shlog *g = shared_map(sizeof(*g));
        static bool killed[KIDS_MAX];
        memset(killed, 0, sizeof(killed));
        pid_t pid[WAITERS];
        uint32_t kid_of[WAITERS], nkids = 0;
        for (int i = 0; i < WAITERS; i++) {
                kid_of[i] = nkids++;
                pid[i] = tfork();
                if (pid[i] == 0)
                        spender(l, key, g, kid_of[i], true, 100);
        }
        uint64_t x = 0x0123456789abcdefull ^ (uint64_t)getpid();
        uint64_t added = 0, nadds = 0;
        int kills = 0;
        double t0 = mono_s(), next_kill = t0 + 0.005 + (double)(rnd(&x) % 35) / 1000;
        while (mono_s() - t0 < 2.5 && nkids < KIDS_MAX) {
                uint64_t amount = 1 + rnd(&x) % 4;
                struct thr_budget_result r;
                int rc = thr_budget_add(l, key, strlen(key), amount, &r);
                cr_assert_eq(rc, 0, "add %lu: %d", (unsigned long)amount, rc);
                added += amount;
                nadds++;
                usleep((useconds_t)(rnd(&x) % 2000));
                if (mono_s() < next_kill)
                        continue;
                int i = (int)(rnd(&x) % WAITERS);
                kill(pid[i], SIGKILL);
                int st = reap(pid[i], 10, "a killed waiter");
                cr_assert(WIFSIGNALED(st), "waiter %u exited %#x before its kill", kid_of[i], st);
                killed[kid_of[i]] = true;
                kills++;
                kid_of[i] = nkids++;
                pid[i] = tfork();
                if (pid[i] == 0)
                        spender(l, key, g, kid_of[i], true, 100);
                next_kill = mono_s() + 0.005 + (double)(rnd(&x) % 35) / 1000;
        }
        atomic_store(&g->stop, 1);
        for (int i = 0; i < WAITERS; i++) {
                int st = reap(pid[i], 20, "a waiter told to stop");
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "waiter %u: %#x", kid_of[i], st);
        }
        struct thr_budget_stat bs = stat_of(l, key);
        struct books b = check_log(g, killed, nkids, added); /* no controller: adds are ours */
        b.adds = added;
        b.nadds = nadds;
        cr_log_info("budget storm: %d kills, %lu adds (%lu units), %lu spent (%lu units), %lu "
                    "timed out, %lu ambiguous (%lu units), balance %lu, granted %lu",
                    kills, (unsigned long)nadds, (unsigned long)added, (unsigned long)b.spent,
                    (unsigned long)b.confirmed, (unsigned long)b.timedout,
                    (unsigned long)b.nambiguous, (unsigned long)b.ambiguous,
                    (unsigned long)bs.balance, (unsigned long)bs.granted);
        check_balance(&b, 0, bs.balance);
        cr_assert_eq(bs.waiters, 0);
        cr_assert_eq(bs.need, 0);
        cr_assert_gt(kills, 10);
        cr_assert_gt(bs.granted, 0, "spends waited and were granted");
        munmap(g, sizeof(*g));
        thr_limiter_close(l);
}

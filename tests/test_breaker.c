/*
 * test_breaker.c - circuit breakers (kind = breaker) through the public API on a manual-clock
 * arena: a reference model written from the semantics (shm/breaker.h's top, throttled.conf(5))
 * checked step by step against thousands of random allow / report / clock steps under several
 * configurations; the probe bound (never more than `probes` out; a holder SIGKILLed at random
 * moments and at each CAS of the protocol: a new probe exactly once probe_timeout has passed,
 * never before); scribbled state and bucket words (calls end, the daemon's pass survives); the
 * eviction rule; thr_limiter_info; the errors.
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
#include "testhook.h"

#define MS (1000000ull)
#define U  (1ull << THR_BRK_TIME_SHIFT) /* the state word's time unit */

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
        s.cooldown_ns = 64 * U;       /* about 67 ms */
        s.probe_timeout_ns = 128 * U; /* about 134 ms */
        s.probes = probes;
        s.successes = successes;
        s.idle_ttl_ns = SEC;
        return s;
}

static void setup(void)
{
        struct shm_limiter_spec s[] = {
            brk_spec("consec", 3, 0, 0, 0, 1, 1),   brk_spec("rate", 0, 50, 4, 800 * MS, 1, 1),
            brk_spec("both", 5, 30, 10, SEC, 3, 2), brk_spec("wide", 1, 0, 0, 0, 15, 3),
            brk_spec("tiny", 2, 0, 0, 0, 1, 1),     tspec("g", 10, SEC, 10, 10),
            brk_spec("ev", 2, 0, 0, 0, 1, 1),
        };
        s[4].capacity = 2;
        s[4].on_full = THR_FULL_ALLOW;
        s[6].capacity = 2;
        s[6].on_full = THR_FULL_EVICT;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, sizeof(s) / sizeof(s[0]));
}

static void teardown(void)
{
        thr_test_hook = NULL;
        tarena_free(&T);
}

TestSuite(breaker, .init = setup, .fini = teardown, .timeout = 120);

static uint64_t now_of(void)
{
        uint64_t n;
        cr_assert_eq(thr_clock_now(T.a, &n), 0);
        return n;
}

/* ---------------------------------------------------------------- the reference model */

/* Written from the semantics, not from shm/breaker.c: unbounded periods, an event log for the
 * window (not buckets), times rounded up to U where the semantics say the word keeps them. */
struct model {
        uint32_t failures, rate, probes, successes;
        uint64_t min_calls, window, cooldown, ptimeout;
        int state;
        uint64_t period; /* every transition and every give-up starts a new one */
        uint64_t t;      /* open: when it opened; half-open: the last probe handed out */
        uint32_t consec, out, succ;
        uint64_t nev;
        struct {
                uint64_t slice;
                bool failed;
        } ev[4096]; /* the current closed period's reports */
};

static uint64_t up(uint64_t ns)
{
        return (ns + U - 1) / U * U;
}

static void m_init(struct model *m, const struct shm_limiter_spec *s)
{
        memset(m, 0, sizeof(*m));
        m->failures = (uint32_t)s->failures;
        m->rate = (uint32_t)s->failure_rate;
        m->probes = (uint32_t)s->probes;
        m->successes = (uint32_t)s->successes;
        m->min_calls = s->min_calls;
        m->window = s->period_ns;
        m->cooldown = s->cooldown_ns;
        m->ptimeout = s->probe_timeout_ns;
}

static void m_to(struct model *m, int state, uint64_t now)
{
        m->state = state;
        m->period++;
        m->out = m->succ = 0;
        m->t = up(now);
        m->nev = 0;
        if (state == THR_BREAKER_CLOSED)
                m->consec = 0;
}

static void m_settle(struct model *m, uint64_t now)
{
        if (m->state == THR_BREAKER_OPEN && now >= m->t + m->cooldown) {
                m->state = THR_BREAKER_HALF_OPEN;
                m->period++;
                m->out = m->succ = 0;
        }
        if (m->state == THR_BREAKER_HALF_OPEN && m->out && now >= m->t + m->ptimeout) {
                m->period++;
                m->out = 0;
        }
}

static uint64_t m_slice(const struct model *m, uint64_t now)
{
        uint64_t w = (m->window + 7) / 8;
        return now / (w ? w : 1);
}

static void m_window(const struct model *m, uint64_t now, uint64_t *calls, uint64_t *fails)
{
        uint64_t cur = m_slice(m, now);
        *calls = *fails = 0;
        for (uint64_t i = 0; i < m->nev; i++)
                if (m->ev[i].slice + 8 > cur && m->ev[i].slice <= cur) {
                        (*calls)++;
                        *fails += m->ev[i].failed;
                }
}

static uint64_t m_retry(const struct model *m, uint64_t now)
{
        uint64_t until = m->state == THR_BREAKER_OPEN ? m->t + m->cooldown
                         : m->state == THR_BREAKER_HALF_OPEN && m->out >= m->probes
                             ? m->t + m->ptimeout
                             : 0;
        return until == 0 ? 0 : until > now ? until - now : 1;
}

/* 0 allowed (*PROBE, *PERIOD) or -EAGAIN. */
static int m_allow(struct model *m, uint64_t now, bool *probe, uint64_t *period)
{
        m_settle(m, now);
        *probe = false;
        *period = m->period;
        if (m->state == THR_BREAKER_CLOSED)
                return 0;
        if (m->state == THR_BREAKER_OPEN || m->out >= m->probes)
                return -EAGAIN;
        m->out++;
        m->t = up(now);
        *probe = true;
        return 0;
}

static int m_report(struct model *m, uint64_t now, uint64_t period, bool probe, uint32_t outcome)
{
        m_settle(m, now);
        if (period != m->period)
                return 1;
        if (m->state == THR_BREAKER_CLOSED && !probe) {
                if (outcome == THR_OUTCOME_IGNORE)
                        return 0;
                if (m->rate && m->nev < 4096) {
                        m->ev[m->nev].slice = m_slice(m, now);
                        m->ev[m->nev++].failed = outcome == THR_OUTCOME_FAILURE;
                }
                if (outcome == THR_OUTCOME_SUCCESS) {
                        m->consec = 0;
                        return 0;
                }
                m->consec += m->consec < 255;
                uint64_t calls, fails;
                m_window(m, now, &calls, &fails);
                if ((m->failures && m->consec >= m->failures) ||
                    (m->rate && calls >= m->min_calls && fails * 100 >= m->rate * calls))
                        m_to(m, THR_BREAKER_OPEN, now);
                return 0;
        }
        if (m->state == THR_BREAKER_HALF_OPEN && probe && m->out) {
                m->out--;
                if (outcome == THR_OUTCOME_FAILURE) {
                        m->consec += m->consec < 255;
                        m_to(m, THR_BREAKER_OPEN, now);
                } else if (outcome == THR_OUTCOME_SUCCESS && ++m->succ >= m->successes) {
                        m_to(m, THR_BREAKER_CLOSED, now);
                }
                return 0;
        }
        return 1;
}

static void check_status(const struct model *m, const struct thr_breaker_status *st, uint64_t now,
                         int step, const char *what)
{
        cr_assert_eq(st->state, (uint32_t)m->state, "step %d %s: state %u, model %d", step, what,
                     st->state, m->state);
        cr_assert_eq(st->consecutive_failures, m->consec, "step %d %s: consec %u, model %u", step,
                     what, st->consecutive_failures, m->consec);
        cr_assert_eq(st->probes_in_flight, m->out, "step %d %s: probes %u, model %u", step, what,
                     st->probes_in_flight, m->out);
        cr_assert_eq(st->half_open_successes, m->succ, "step %d %s", step, what);
        cr_assert_eq(st->retry_after_ns, m_retry(m, now), "step %d %s: retry %lu, model %lu", step,
                     what, (unsigned long)st->retry_after_ns, (unsigned long)m_retry(m, now));
        if (m->state == THR_BREAKER_CLOSED && m->rate) {
                uint64_t calls, fails;
                m_window(m, now, &calls, &fails);
                cr_assert_eq(st->window_calls, calls, "step %d %s: calls %lu, model %lu", step,
                             what, (unsigned long)st->window_calls, (unsigned long)calls);
                cr_assert_eq(st->window_failures, fails, "step %d %s", step, what);
        }
}

struct held {
        struct thr_breaker_ticket t;
        uint64_t period;
        bool probe;
};

/* STEPS random steps on a fresh key of limiter NAME (spec S), each checked against the model. */
static void run_model(const char *name, const struct shm_limiter_spec *s, unsigned seed, int steps)
{
        static struct model m;
        static struct held h[64];
        int nh = 0;
        m_init(&m, s);
        thr_limiter *l = tlim_kept(&T, name);
        char key[32];
        snprintf(key, sizeof(key), "model-%u", seed);
        srandom(seed);
        int seen[3] = {0}, probes = 0, ignored = 0, denied = 0;
        for (int i = 0; i < steps; i++) {
                seen[m.state]++;
                int op = (int)(random() % 10);
                uint64_t now = now_of();
                struct thr_breaker_status st;
                if (op < 4) { /* allow */
                        bool probe;
                        uint64_t period;
                        int want = m_allow(&m, now, &probe, &period);
                        struct held x = {0};
                        int rc = thr_breaker_allow(l, key, strlen(key), &x.t, &st);
                        cr_assert_eq(rc, want, "step %d allow: %d, model %d", i, rc, want);
                        denied += rc == -EAGAIN;
                        probes += rc == 0 && probe;
                        check_status(&m, &st, now, i, "allow");
                        if (rc == 0) {
                                cr_assert_eq(x.t.probe, (uint32_t)probe, "step %d probe", i);
                                x.period = period;
                                x.probe = probe;
                                if (nh < 64)
                                        h[nh++] = x;
                                else /* unreported: a probe among them is given up in time */
                                        h[random() % 64] = x;
                        }
                } else if (op < 8 && nh) { /* report one held at random */
                        int j = (int)(random() % (uint64_t)nh);
                        struct held x = h[j];
                        h[j] = h[--nh];
                        if (x.period + 30 < m.period)
                                continue; /* its generation (6 bits) may have come round */
                        long r = random() % 100;
                        uint32_t out = r < 45   ? THR_OUTCOME_FAILURE
                                       : r < 95 ? THR_OUTCOME_SUCCESS
                                                : THR_OUTCOME_IGNORE;
                        int want = m_report(&m, now, x.period, x.probe, out);
                        int rc = thr_breaker_report(l, &x.t, out);
                        cr_assert_eq(rc, want, "step %d report %u (probe %d): %d, model %d", i, out,
                                     x.probe, rc, want);
                        ignored += rc == 1;
                        cr_assert_eq(thr_breaker_stat(l, key, strlen(key), &st), 0);
                        m_settle(&m, now);
                        check_status(&m, &st, now, i, "report");
                } else { /* time passes: short steps, sometimes whole cooldowns or timeouts */
                        long r = random() % 10;
                        uint64_t d = r < 6   ? (uint64_t)(random() % (long)(8 * U))
                                     : r < 9 ? (uint64_t)(random() % (long)(80 * U))
                                             : 130 * U;
                        cr_assert_eq(thr_clock_advance(T.a, d), 0);
                        now = now_of();
                        cr_assert_eq(thr_breaker_stat(l, key, strlen(key), &st), 0);
                        m_settle(&m, now);
                        check_status(&m, &st, now, i, "clock");
                }
        }
        /* the run went through every state and every kind of answer: a model that agrees only
         * because nothing happened proves nothing */
        cr_assert(seen[0] > 50 && seen[1] > 50 && seen[2] > 50 && probes > 20 && ignored > 5 &&
                      denied > 50,
                  "%s seed %u: closed %d, open %d, half-open %d steps, %d probes, %d ignored, %d "
                  "denied",
                  name, seed, seen[0], seen[1], seen[2], probes, ignored, denied);
}

static struct shm_limiter_spec spec_of(const char *name)
{
        static const struct {
                const char *name;
                uint64_t f, r, mc, w, p, s;
        } v[] = {{"consec", 3, 0, 0, 0, 1, 1},
                 {"rate", 0, 50, 4, 800 * MS, 1, 1},
                 {"both", 5, 30, 10, SEC, 3, 2},
                 {"wide", 1, 0, 0, 0, 15, 3}};
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
                if (!strcmp(v[i].name, name))
                        return brk_spec(name, v[i].f, v[i].r, v[i].mc, v[i].w, v[i].p, v[i].s);
        cr_assert_fail("no spec %s", name);
        return brk_spec(name, 0, 0, 0, 0, 0, 0);
}

Test(breaker, matches_the_model_consecutive_rule)
{
        struct shm_limiter_spec s = spec_of("consec");
        for (unsigned seed = 1; seed <= 4; seed++)
                run_model("consec", &s, seed, 3000);
}

Test(breaker, matches_the_model_failure_rate_over_the_window)
{
        struct shm_limiter_spec s = spec_of("rate");
        for (unsigned seed = 11; seed <= 14; seed++)
                run_model("rate", &s, seed, 3000);
}

Test(breaker, matches_the_model_both_rules_three_probes_two_successes)
{
        struct shm_limiter_spec s = spec_of("both");
        for (unsigned seed = 21; seed <= 24; seed++)
                run_model("both", &s, seed, 3000);
}

Test(breaker, matches_the_model_fifteen_probes_three_successes)
{
        struct shm_limiter_spec s = spec_of("wide");
        for (unsigned seed = 31; seed <= 34; seed++)
                run_model("wide", &s, seed, 3000);
}

/* ---------------------------------------------------------------- processes */

static void *shared_map(size_t n)
{
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(p, MAP_FAILED);
        return p;
}

/* What the forked callers and the parent share (a MAP_SHARED page). */
struct procs_page {
        _Atomic int stop;
        _Atomic int holders;     /* probes handed out and not yet reported, counted by holders */
        _Atomic int max_holders; /* the most ever seen at once */
        _Atomic int bad;         /* a ticket whose kind disagreed with the state it came with */
        _Atomic uint64_t probes, goes, refused;
        _Atomic uint64_t closed_in_fail[64]; /* closed go-aheads per failing phase */
};

#define PHASE (400 * U) /* the scripted downstream fails in even phases, works in odd ones */
#define NPROC 4

static void caller(struct procs_page *pg, unsigned seed)
{
        thr_limiter *l = tlim(&T, "procs");
        srandom(seed);
        while (!atomic_load(&pg->stop)) {
                struct thr_breaker_ticket t;
                struct thr_breaker_status st;
                uint64_t now = now_of();
                int rc = thr_breaker_allow(l, "down", 4, &t, &st);
                /* what the rules allow a status to be: at most 2 probes out; open refuses for
                 * at most a cooldown (and the rounding of its start up to U); half-open refuses
                 * only with every probe out */
                if (st.probes_in_flight > 2 ||
                    (st.state == THR_BREAKER_OPEN &&
                     (rc != -EAGAIN || !st.retry_after_ns || st.retry_after_ns > 65 * U)) ||
                    (rc == -EAGAIN && st.state == THR_BREAKER_HALF_OPEN &&
                     st.probes_in_flight != 2) ||
                    (rc == -EAGAIN && st.state == THR_BREAKER_CLOSED))
                        atomic_fetch_add(&pg->bad, 1);
                if (rc == -EAGAIN) {
                        atomic_fetch_add(&pg->refused, 1);
                        continue;
                }
                if (rc != 0 || t.probe != (st.state == THR_BREAKER_HALF_OPEN))
                        atomic_fetch_add(&pg->bad, 1);
                uint64_t phase = now / PHASE;
                bool failing = phase % 2 == 0;
                atomic_fetch_add(&pg->goes, 1);
                if (failing && !t.probe)
                        atomic_fetch_add(&pg->closed_in_fail[phase % 64], 1);
                if (t.probe) {
                        atomic_fetch_add(&pg->probes, 1);
                        int h = atomic_fetch_add(&pg->holders, 1) + 1;
                        int m = atomic_load(&pg->max_holders);
                        while (h > m && !atomic_compare_exchange_weak(&pg->max_holders, &m, h))
                                ;
                }
                usleep((useconds_t)(random() % 100)); /* the call */
                if (t.probe)
                        atomic_fetch_sub(&pg->holders, 1); /* before the report frees its place */
                thr_breaker_report(l, &t, failing ? THR_OUTCOME_FAILURE : THR_OUTCOME_SUCCESS);
        }
        thr_limiter_close(l);
        _exit(0);
}

Test(breaker, forked_callers_never_hold_more_probes_than_configured)
{
        struct shm_limiter_spec s = brk_spec("procs", 3, 0, 0, 0, 2, 2);
        s.probe_timeout_ns = 3600 * SEC; /* no give-up: every probe out is a live holder */
        tarena_free(&T);
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        struct procs_page *pg = shared_map(sizeof(*pg));
        uint64_t t0 = now_of();
        cr_assert_eq(thr_clock_advance(T.a, (t0 / PHASE + 1) * PHASE - t0), 0); /* phase start */
        pid_t kids[NPROC];
        for (int i = 0; i < NPROC; i++) {
                kids[i] = tfork();
                if (kids[i] == 0)
                        caller(pg, (unsigned)i + 1);
        }
        thr_limiter *l = tlim_kept(&T, "procs");
        int phases = 12;
        for (int ph = 0; ph < phases; ph++) {
                uint64_t start = now_of();
                bool failing = (start / PHASE) % 2 == 0;
                for (uint64_t d = 0; d + U / 4 < PHASE; d += U / 4) {
                        cr_assert_eq(thr_clock_advance(T.a, U / 4), 0);
                        usleep(100);
                }
                /* the clock stands at the phase's last moment (past any cooldown) while the
                 * callers act on it, 10 s at most: a healthy downstream closes the breaker, a
                 * failing one keeps it from closing */
                struct thr_breaker_status st;
                for (int w = 0; w < 10000; w++) {
                        cr_assert_eq(thr_breaker_stat(l, "down", 4, &st), 0);
                        if ((st.state == THR_BREAKER_CLOSED) != failing && w >= 20)
                                break;
                        usleep(1000);
                }
                if (failing)
                        cr_assert_neq(st.state, THR_BREAKER_CLOSED,
                                      "phase %d failing: the breaker is closed", ph);
                else
                        cr_assert_eq(st.state, THR_BREAKER_CLOSED,
                                     "phase %d healthy: the breaker is %u", ph, st.state);
                cr_assert_eq(thr_clock_advance(T.a, (start / PHASE + 1) * PHASE - now_of()), 0);
        }
        atomic_store(&pg->stop, 1);
        for (int i = 0; i < NPROC; i++) {
                int ws;
                cr_assert_eq(waitpid(kids[i], &ws, 0), kids[i]);
                cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
        }
        cr_assert_eq(atomic_load(&pg->bad), 0, "answers that disagreed with the rules");
        cr_assert_leq(atomic_load(&pg->max_holders), 2, "more than `probes` out at once");
        cr_assert_geq(atomic_load(&pg->max_holders), 1);
        cr_assert_gt(atomic_load(&pg->probes), (uint64_t)phases / 2);
        cr_assert_gt(atomic_load(&pg->refused), 100);
        /* a failing phase lets through, closed, at most what trips it (3 failures) plus what the
         * callers held when it did (one each) and what came before the last healthy report */
        for (int i = 0; i < 64; i++)
                cr_assert_leq(atomic_load(&pg->closed_in_fail[i]), 3 + 2 * NPROC,
                              "phase %d: %lu closed go-aheads while failing", i,
                              (unsigned long)atomic_load(&pg->closed_in_fail[i]));
        munmap(pg, sizeof(*pg));
}

/* ---------------------------------------------------------------- a probe holder killed */

struct kill_page {
        _Atomic int stage; /* 1: the child has its probe */
        _Atomic int got;
        _Atomic int hook; /* the hook point the child kills itself at (0: none) */
        _Atomic int hits; /* how many times the hook has run, to kill at the Nth */
        _Atomic int at;
};
static struct kill_page *KP;

static void kill_hook(enum thr_hook_point point, void *arg)
{
        (void)arg;
        if ((int)point == atomic_load(&KP->hook) &&
            atomic_fetch_add(&KP->hits, 1) + 1 == atomic_load(&KP->at))
                raise(SIGKILL);
}

/* Trip KEY open, then move the clock to exactly when it turns half-open (a multiple of U). */
static uint64_t trip_to_half_open(thr_limiter *l, const char *key)
{
        uint64_t n = now_of();
        cr_assert_eq(thr_clock_advance(T.a, up(n) - n), 0);
        struct thr_breaker_ticket t;
        cr_assert_eq(thr_breaker_allow(l, key, strlen(key), &t, NULL), 0);
        cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_FAILURE), 0); /* failures = 1 */
        cr_assert_eq(thr_clock_advance(T.a, 64 * U), 0);                 /* the cooldown */
        return now_of();
}

/* A child takes the probe of KEY (its hook killing it at the AT-th HOOK point, or the parent at
 * random once it holds the probe, or it reports a success when REPORT); the parent then checks
 * the bound: a probe held by the dead child is given up exactly probe_timeout after it was handed
 * out, never before; one never taken is there at once. */
static uint32_t kill_round(thr_limiter *l, const char *key, int hook, int at, bool report)
{
        uint64_t t0 = trip_to_half_open(l, key);
        *KP = (struct kill_page){.hook = hook, .at = at};
        pid_t pid = tfork();
        if (pid == 0) {
                thr_limiter *cl = tlim(&T, "kill");
                thr_test_hook = kill_hook;
                struct thr_breaker_ticket t;
                int rc = thr_breaker_allow(cl, key, strlen(key), &t, NULL);
                atomic_store(&KP->got, rc == 0 && t.probe);
                atomic_store(&KP->stage, 1);
                if (report)
                        thr_breaker_report(cl, &t, THR_OUTCOME_IGNORE);
                if (hook)
                        _exit(3); /* the hook never ran: the parent says so */
                for (;;)
                        pause(); /* holding it, until killed */
        }
        if (!hook) {
                while (!atomic_load(&KP->stage))
                        usleep(100);
                usleep((useconds_t)(random() % 2000));
                kill(pid, SIGKILL);
        }
        int ws;
        cr_assert_eq(waitpid(pid, &ws, 0), pid);
        cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "%s: the child was not killed", key);
        struct thr_breaker_status st;
        cr_assert_eq(thr_breaker_stat(l, key, strlen(key), &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_HALF_OPEN);
        struct thr_breaker_ticket t;
        uint32_t held = st.probes_in_flight;
        if (st.probes_in_flight == 0) { /* the dead child never took it, or gave it back */
                cr_assert_eq(thr_breaker_allow(l, key, strlen(key), &t, NULL), 0);
                cr_assert_eq(t.probe, 1);
        } else {
                cr_assert_eq(st.probes_in_flight, 1);
                cr_assert_eq(st.retry_after_ns, 128 * U, "the bound, counted from the handout");
                cr_assert_eq(thr_clock_advance(T.a, 128 * U - 1), 0);
                cr_assert_eq(thr_breaker_allow(l, key, strlen(key), &t, &st), -EAGAIN,
                             "a probe handed out before probe_timeout passed");
                cr_assert_eq(st.retry_after_ns, 1);
                cr_assert_eq(thr_clock_advance(T.a, 1), 0);
                cr_assert_eq(thr_breaker_allow(l, key, strlen(key), &t, &st), 0);
                cr_assert_eq(t.probe, 1, "no probe once probe_timeout passed");
        }
        cr_assert_eq(now_of() - t0, st.probes_in_flight ? 128 * U : 0);
        cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_SUCCESS), 0);
        cr_assert_eq(thr_breaker_stat(l, key, strlen(key), &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_CLOSED);
        return held;
}

static void kill_setup(void)
{
        struct shm_limiter_spec s = brk_spec("kill", 1, 0, 0, 0, 1, 1);
        tarena_free(&T);
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        KP = shared_map(sizeof(*KP));
}

Test(breaker, a_probe_holder_killed_at_random_is_given_up_after_probe_timeout_never_before)
{
        kill_setup();
        thr_limiter *l = tlim_kept(&T, "kill");
        srandom(7);
        for (int i = 0; i < 20; i++) {
                char key[16];
                snprintf(key, sizeof(key), "r%d", i);
                uint32_t held = kill_round(l, key, 0, 0, i % 4 == 3); /* every 4th gave its
                                                                       * probe back first */
                if (i % 4 != 3)
                        cr_assert_eq(held, 1, "round %d: killed holding its probe", i);
        }
        munmap(KP, sizeof(*KP));
}

Test(breaker, a_caller_killed_at_each_cas_leaves_the_probe_taken_or_not_never_lost)
{
        kill_setup();
        thr_limiter *l = tlim_kept(&T, "kill");
        /* the allow's CAS (the probe not taken: there at once), the report's (taken, not given
         * back: after the bound), and each entry of a read-side section on the way */
        cr_assert_eq(kill_round(l, "cas-allow", THR_HOOK_BRK_BEFORE_CAS, 1, false), 0);
        cr_assert_eq(kill_round(l, "cas-report", THR_HOOK_BRK_BEFORE_CAS, 2, true), 1);
        /* sections: the allow's lookup, the allow's CAS step, the report's step */
        static const uint32_t held[] = {0, 0, 1};
        for (int at = 1; at <= 3; at++) {
                char key[16];
                snprintf(key, sizeof(key), "sect%d", at);
                cr_assert_eq(kill_round(l, key, THR_HOOK_SECTION_ENTERED, at, true), held[at - 1],
                             "killed at section %d", at);
        }
        munmap(KP, sizeof(*KP));
}

/* ---------------------------------------------------------------- eviction, info, errors */

static bool live(const char *lim, const char *key)
{
        return tcount(&T, lim, THR_SLOT_LIVE, key, NULL) == 1;
}

static void call(thr_limiter *l, const char *key, uint32_t outcome)
{
        struct thr_breaker_ticket t;
        cr_assert_eq(thr_breaker_allow(l, key, strlen(key), &t, NULL), 0);
        cr_assert_eq(thr_breaker_report(l, &t, outcome), 0);
}

Test(breaker, only_a_quiet_closed_key_is_evicted_by_the_daemon)
{
        thr_limiter *l = tlim_kept(&T, "consec"); /* failures = 3, idle_ttl 1 s */
        uint64_t n = now_of();
        cr_assert_eq(thr_clock_advance(T.a, up(n) - n), 0);
        call(l, "quiet", THR_OUTCOME_SUCCESS);
        call(l, "failing", THR_OUTCOME_FAILURE); /* one consecutive failure */
        for (int i = 0; i < 3; i++)
                call(l, "open", THR_OUTCOME_FAILURE);
        struct thr_breaker_status st;
        cr_assert_eq(thr_breaker_stat(l, "open", 4, &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_OPEN);
        /* idle means no report for idle_ttl + idle_ttl / 8 (the lag a success may leave the
         * word's time at: breaker.h) */
        cr_assert_eq(thr_clock_advance(T.a, SEC + SEC / 8 - 1), 0);
        tmaint(&T, "consec", UINT64_MAX, NULL);
        cr_assert(live("consec", "quiet"), "evicted before it was idle");
        cr_assert_eq(thr_clock_advance(T.a, 1), 0);
        tmaint(&T, "consec", UINT64_MAX, NULL);
        cr_assert(!live("consec", "quiet"), "a quiet closed key stays");
        cr_assert_eq(thr_clock_advance(T.a, 3600 * SEC), 0);
        tmaint(&T, "consec", UINT64_MAX, NULL);
        cr_assert(live("consec", "failing"), "a key with consecutive failures was evicted");
        cr_assert(live("consec", "open"), "an open breaker was evicted");
        /* the quiet key comes back closed and empty, as it left */
        cr_assert_eq(thr_breaker_stat(l, "quiet", 5, &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_CLOSED);
        cr_assert_eq(st.consecutive_failures, 0);
}

Test(breaker, a_report_after_the_key_was_evicted_is_ignored)
{
        thr_limiter *l = tlim_kept(&T, "consec");
        struct thr_breaker_ticket t;
        cr_assert_eq(thr_breaker_allow(l, "gone", 4, &t, NULL), 0);
        cr_assert_eq(thr_clock_advance(T.a, 2 * SEC), 0);
        tmaint(&T, "consec", UINT64_MAX, NULL);
        cr_assert(!live("consec", "gone"));
        cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_FAILURE), 1);
}

Test(breaker, info_errors_and_spent_tickets)
{
        thr_limiter *l = tlim_kept(&T, "both");
        struct thr_limiter_info in;
        cr_assert_eq(thr_limiter_info(l, &in), 0);
        cr_assert_eq(in.kind, THR_LIMITER_BREAKER);
        cr_assert_eq(in.rate, 5);     /* failures */
        cr_assert_eq(in.burst, 30);   /* failure_rate, percent */
        cr_assert_eq(in.initial, 10); /* min_calls */
        cr_assert_eq(in.period_ns, SEC);
        cr_assert_eq(in.leases, 3); /* probes */
        cr_assert_eq(in.level, 2);  /* successes */
        cr_assert_eq(in.reserved[0], 64 * U);
        cr_assert_eq(in.reserved[1], 128 * U);
        struct thr_breaker_ticket t;
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), -EOPNOTSUPP);
        thr_limiter *g = tlim_kept(&T, "g");
        cr_assert_eq(thr_breaker_allow(g, "k", 1, &t, NULL), -EOPNOTSUPP);
        struct thr_breaker_status gs;
        cr_assert_eq(thr_breaker_stat(g, "k", 1, &gs), -EOPNOTSUPP);
        cr_assert_eq(tcount(&T, "g", THR_SLOT_LIVE, "k", NULL), 0, "a key of another kind made");
        cr_assert_eq(thr_breaker_allow(l, "", 0, &t, NULL), -EINVAL);
        cr_assert_eq(thr_breaker_allow(l, "k", 1, NULL, NULL), -EINVAL);
        char longkey[THR_KEY_MAX_LEN + 1];
        memset(longkey, 'x', sizeof(longkey));
        cr_assert_eq(thr_breaker_allow(l, longkey, sizeof(longkey), &t, NULL), -ENAMETOOLONG);
        cr_assert_eq(thr_breaker_allow(l, "k", 1, &t, NULL), 0);
        struct thr_breaker_ticket copy = t;
        cr_assert_eq(thr_breaker_report(l, &t, 0), -EINVAL);
        cr_assert_eq(thr_breaker_report(g, &t, THR_OUTCOME_SUCCESS), -EINVAL);
        cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_FAILURE), 0);
        cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_FAILURE), -EINVAL, "spent");
        (void)copy;
        /* a key never used is closed and empty, and stat does not create it */
        struct thr_breaker_status st;
        cr_assert_eq(thr_breaker_stat(l, "never", 5, &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_CLOSED);
        cr_assert(!live("both", "never"));
}

Test(breaker, a_full_table_with_on_full_allow_lets_calls_through_untracked)
{
        thr_limiter *l = tlim_kept(&T, "tiny"); /* capacity 2, on_full = allow */
        struct thr_breaker_ticket t;
        char key[8];
        int untracked = 0;
        for (int i = 0; i < 8; i++) {
                snprintf(key, sizeof(key), "k%d", i);
                cr_assert_eq(thr_breaker_allow(l, key, strlen(key), &t, NULL), 0);
                int un = (t.flags & THR_BREAKER_UNTRACKED) != 0;
                untracked += un;
                cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_FAILURE), un);
        }
        cr_assert_geq(untracked, 1, "the table never filled");
}

Test(breaker, on_full_evict_takes_only_a_quiet_closed_key)
{
        thr_limiter *l = tlim_kept(&T, "ev"); /* capacity 2, on_full = evict, idle_ttl 1 s */
        struct thr_breaker_ticket t;
        call(l, "failing", THR_OUTCOME_FAILURE); /* pinned: a consecutive failure */
        call(l, "fine", THR_OUTCOME_SUCCESS);    /* quiet once idle_ttl / 8 has passed */
        cr_assert_eq(thr_breaker_allow(l, "third", 5, &t, NULL), -ENOSPC,
                     "a key used just now was evicted for room");
        cr_assert_eq(thr_clock_advance(T.a, SEC / 8 + U), 0);
        cr_assert_eq(thr_breaker_allow(l, "third", 5, &t, NULL), 0, "no room made");
        cr_assert(!live("ev", "fine"), "the quiet key stays");
        cr_assert(live("ev", "failing"), "a failing key was evicted for room");
        cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_FAILURE), 0);
}

/* ---------------------------------------------------------------- a scribbling client */

Test(breaker, scribbled_state_and_bucket_words_end_every_call_and_the_daemon_pass)
{
        thr_limiter *l = tlim_kept(&T, "both");
        uint64_t x = 0x9e3779b97f4a7c15ull;
        for (int i = 0; i < 3000; i++) {
                struct thr_breaker_ticket t;
                struct thr_breaker_status st;
                int rc = thr_breaker_allow(l, "s", 1, &t, &st);
                cr_assert(rc == 0 || rc == -EAGAIN || rc == -EBADMSG, "allow: %d", rc);
                struct thr_slot *s = NULL;
                if (tcount(&T, "both", THR_SLOT_LIVE, "s", &s) == 1) {
                        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                        uint64_t w = x;
                        switch (i % 5) {
                        case 0:
                                break; /* anything */
                        case 1:
                                w |= 3ull << 62;
                                break; /* state 3 */
                        case 2:
                                w = THR_TAT_MARK_MIN + (x & 0xffff);
                                break; /* a mark */
                        case 3:
                                w &= ~(3ull << 62);
                                break; /* a valid state */
                        default:
                                w = 2ull << 62 | (x & 0xffff);
                                break; /* half-open, full */
                        }
                        atomic_store(&s->state, w);
                        _Atomic uint64_t *bk = shm_slot_aux(T.map.base, ttable(&T, "both"), s);
                        for (int b = 0; b < 8; b++) {
                                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                                atomic_store(&bk[b], x);
                        }
                }
                if (rc == 0) {
                        rc = thr_breaker_report(l, &t, 1 + (uint32_t)(i % 3));
                        cr_assert(rc == 0 || rc == 1 || rc == -EBADMSG, "report: %d", rc);
                }
                rc = thr_breaker_stat(l, "s", 1, &st);
                cr_assert(rc == 0 || rc == -EBADMSG, "stat: %d", rc);
                cr_assert_leq(st.window_failures, st.window_calls);
                cr_assert_lt(st.window_calls, 8u << 20);
                if (i % 100 == 0) {
                        cr_assert_eq(thr_clock_advance(T.a, 10 * U), 0);
                        tmaint(&T, "both", UINT64_MAX, NULL);
                }
        }
}

/* ---------------------------------------------------------------- the example */

static void run_breaker_pool(struct tdaemon *d, const char *extra, char *line, size_t len, int *st)
{
        char cmd[768];
        snprintf(cmd, sizeof(cmd), "%s/examples/thr-breaker-pool -a %s -p 4 -s 2 %s",
                 getenv("THR_TEST_BUILD_DIR"), d->name, extra);
        texample_line(cmd, line, len, st);
}

/*
 * examples/breaker_pool.c against a real throttled on the real clock: four workers calling a
 * downstream that is down from 30% to 60% of a 2 s run, through one breaker (failures 5, cooldown
 * 100 ms, one probe). Shared, the calls that reach the dead downstream stay within failures +
 * workers + one probe per cooldown, and the breaker closes again within cooldown + 500 ms of the
 * downstream's return (the example checks both and exits 1 otherwise; checked here again). A
 * breaker per worker lets more calls through to the dead downstream.
 */
Test(breaker_example, breaker_pool_trips_once_for_every_worker, .timeout = 120)
{
        struct tdaemon d;
        tdaemon_init(&d);
        int i = tdaemon_start_real(
            &d, "[downstream]\nkind = breaker\nfailures = 5\ncooldown = 100ms\nprobes = 1\n"
                "probe_timeout = 1s\nsuccesses = 2\ncapacity = 16\n");
        char line[512];
        int st;
        unsigned long calls, failed, refused, out, bound, alone;
        long rec;
        run_breaker_pool(&d, "", line, sizeof(line), &st);
        cr_assert_eq(sscanf(line,
                            "calls %lu failed %lu refused %lu outage_calls %lu outage_bound %lu "
                            "recovered_ms %ld",
                            &calls, &failed, &refused, &out, &bound, &rec),
                     6, "output: %s", line);
        cr_log_info("one shared breaker: %s", line);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit %#x: %s", st, line);
        cr_assert_gt(calls, 1000, "the downstream was used: %s", line);
        cr_assert_gt(refused, 0, "the breaker opened: %s", line);
        cr_assert_leq(out, bound, "%s", line);
        cr_assert(rec >= 0 && rec <= 600, "%s", line);
        run_breaker_pool(&d, "--no-share", line, sizeof(line), &st);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit %#x: %s", st, line);
        cr_assert_eq(sscanf(line, "calls %*u failed %*u refused %*u outage_calls %lu", &alone), 1,
                     "%s", line);
        cr_log_info("a breaker each: %s", line);
        cr_assert_gt(alone, out, "learning alone sent fewer calls to the dead downstream: %s",
                     line);
        tdaemon_stop(&d, i);
        tdaemon_fini(&d);
}

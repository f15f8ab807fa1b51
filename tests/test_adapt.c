/*
 * test_adapt.c - issue 16's adaptive limits (adaptive = aimd, daemon/adapt.c) against a real
 * throttled on a manual clock.
 *
 * The simulation: three forked workers hammer one key of an adaptive limiter (demand 1500/s,
 * above every rate it may take); each call it admits goes to a fake downstream that serves C =
 * 300 calls per second and answers "overloaded" past that, which the worker records with
 * thr_limiter_overload. The parent moves the clock 10 ms a step, lets every worker try at each
 * step, and at each second waits for the daemon's step. An independent model of the rule (the
 * test's own: cut by the factor after an overloaded second, raised by the increase after a
 * second with denials, kept within the bounds) is fed what the test saw in that second, and the
 * limiter's rate after the daemon's step must equal the model's, every second: a rule off by one
 * step, a wrong rounding, or a step taken on the wrong counts fails. It then checks the stated
 * band (adapt.c) and that the rate never left its bounds.
 *
 * With THR_ADAPT_TRACE=FILE the run writes "second rate calls overloaded" lines for gnuplot.
 */
#include <criterion/criterion.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "helpers.h"
#include "throttle/throttle.h"

#define SEC 1000000000ull
#define MS  1000000ull

static struct tdaemon fx;

static void setup(void)
{
        tdaemon_init(&fx);
}

static void teardown(void)
{
        tdaemon_fini(&fx);
}

TestSuite(adapt, .init = setup, .fini = teardown, .timeout = 300);

/* ---------------------------------------------------------------- the configuration */

static void conf_fails(const char *body, const char *needle, int line)
{
        char path[] = "/dev/shm/thr_adapt_conf.XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        FILE *f = fdopen(fd, "w");
        fprintf(f, "[arena]\nname = t\n\n[api]\n%s", body);
        fclose(f);
        static struct config cfg;
        char err[2048] = "";
        int rc = config_load(path, &cfg, err, sizeof(err));
        unlink(path);
        cr_assert_lt(rc, 0, "accepted: %s", body);
        char at[64];
        snprintf(at, sizeof(at), ":%d: ", line);
        cr_assert(strstr(err, needle) && strstr(err, at), "want line %d and '%s', got: %s", line,
                  needle, err);
}

Test(adapt, config_faults_at_their_line)
{
        conf_fails("rate = 100/s\nadaptive = aimd\n", "needs min_rate and max_rate", 6);
        conf_fails("rate = 100/s\nmin_rate = 10/s\n", "applies only with adaptive = aimd", 6);
        conf_fails("rate = 100/s\nadaptive = fast\n", "unknown adaptive 'fast'", 6);
        conf_fails("rate = 100/s\nadaptive = aimd\nmin_rate = 200/s\nmax_rate = 400/s\n",
                   "outside min_rate..max_rate", 5);
        conf_fails("rate = 100/s\nadaptive = aimd\nmin_rate = 50/s\nmax_rate = 20/s\n",
                   "min_rate <= max_rate", 7);
        conf_fails("rate = 100/s\nadaptive = aimd\nmin_rate = 1/s\nmax_rate = 200/s\n"
                   "decrease = 1.5\n",
                   "between 1% and 99%", 9);
        conf_fails("rate = 100/s\nadaptive = aimd\nmin_rate = 1/s\nmax_rate = 200/s\n"
                   "decrease = half\n",
                   "not a factor", 9);
        conf_fails("rate = 100/s\nadaptive = aimd\nmin_rate = 1/s\nmax_rate = 200/s\n"
                   "adapt_interval = 1us\n",
                   "adapt_interval", 9);
        conf_fails("kind = window\nlimit = 5\nwindow = 1s\nadaptive = aimd\n", "does not apply", 8);
        /* an increase that is not a whole count per the rate's period is refused, not rounded */
        conf_fails("rate = 24/s\nadaptive = aimd\nmin_rate = 10/s\nmax_rate = 1000/s\n"
                   "increase = 1/min\n",
                   "increase must be a whole count", 9);
        /* per the rate's own period: 10/s is 600/min, 1/h is not a whole count per minute */
        conf_fails("rate = 600/min\nadaptive = aimd\nmin_rate = 1/h\nmax_rate = 1/h\n",
                   "whole counts", 7);
}

/* ---------------------------------------------------------------- the simulation */

#define NW       3
#define TRIES    5 /* each worker's tries at each step: 1500/s in all */
#define STEP_NS  (10 * MS)
#define PER_SEC  100 /* steps */
#define SECONDS  40
#define C        300 /* the downstream's capacity per second */
#define RATE0    100
#define MIN_RATE 20
#define MAX_RATE 1000
#define INC      20
#define DEC_PCT  50

struct sh {
        _Atomic uint64_t go;
        _Atomic uint64_t done[NW];
        _Atomic uint64_t calls;      /* calls the downstream got this second */
        _Atomic uint64_t overloaded; /* of them, refused */
        _Atomic uint64_t denied;     /* tries the limiter denied this second */
        _Atomic int stop, bad;
};

static void worker(const char *arena, struct sh *sh, int w)
{
        thr_arena *a;
        thr_limiter *l;
        if (thr_arena_open(arena, 0, &a) != 0 || thr_limiter_open(a, "api", &l) != 0)
                _exit(2);
        uint64_t next = 0;
        while (!atomic_load(&sh->stop)) {
                uint64_t go = atomic_load(&sh->go);
                if (go < next) {
                        sched_yield();
                        continue;
                }
                for (int i = 0; i < TRIES; i++) {
                        int rc = thr_limiter_try(l, "k", 1, 1, NULL);
                        if (rc < 0) {
                                atomic_store(&sh->bad, rc);
                        } else if (rc == 0) {
                                atomic_fetch_add(&sh->denied, 1);
                        } else if (atomic_fetch_add(&sh->calls, 1) >= C) {
                                atomic_fetch_add(&sh->overloaded, 1);
                                if (thr_limiter_overload(l, 1) != 0)
                                        atomic_store(&sh->bad, 3);
                        }
                }
                atomic_store(&sh->done[w], go);
                next = go + 1;
        }
        _exit(0);
}

/* The rule, written from its statement (not from adapt.c). */
static uint64_t model(uint64_t rate, bool over, bool denied)
{
        uint64_t r = rate;
        if (over) {
                r = rate * DEC_PCT / 100;
                if (r == rate)
                        r--;
        } else if (denied) {
                r = rate + INC;
        }
        return r < MIN_RATE ? MIN_RATE : r > MAX_RATE ? MAX_RATE : r;
}

static uint64_t rate_now(thr_limiter *l)
{
        struct thr_limiter_info in;
        cr_assert_eq(thr_limiter_info(l, &in), 0);
        cr_assert_eq(in.period_ns, SEC);
        return in.rate;
}

Test(adapt, aimd_converges_to_the_downstreams_capacity)
{
        char lims[512];
        snprintf(lims, sizeof(lims),
                 "[api]\nrate = %d/s\nburst = 5\ncapacity = 16\nadaptive = aimd\n"
                 "min_rate = %d/s\nmax_rate = %d/s\nincrease = %d/s\ndecrease = %d%%\n"
                 "adapt_interval = 1s\n",
                 RATE0, MIN_RATE, MAX_RATE, INC, DEC_PCT);
        tdaemon_config(&fx, true, "maintenance_ms = 5\n", lims);
        tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, 0, 1);
        thr_limiter *l = tdaemon_lim(&fx, 0, "api");
        struct thr_dir_entry *de = tdaemon_entry(&fx, "api", THR_DIR_LIVE);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (atomic_load(&de->adapt_next_ns) != SEC) { /* started, at arena time 0 */
                cr_assert_lt(telapsed_s(&t0), 10.0, "the controller never started");
                tdoze();
        }
        cr_assert_eq(rate_now(l), RATE0);
        struct sh *sh =
            mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(sh, MAP_FAILED);
        memset(sh, 0, sizeof(*sh));
        for (int w = 0; w < NW; w++)
                atomic_store(&sh->done[w], UINT64_MAX);
        pid_t pids[NW];
        for (int w = 0; w < NW; w++) {
                pids[w] = tfork();
                cr_assert_geq(pids[w], 0);
                if (pids[w] == 0)
                        worker(fx.arena, sh, w);
        }
        const char *trace_path = getenv("THR_ADAPT_TRACE");
        FILE *trace = trace_path ? fopen(trace_path, "w") : NULL;
        uint64_t expect = RATE0, rates[SECONDS + 1] = {RATE0};
        for (uint64_t tick = 0; tick <= (uint64_t)SECONDS * PER_SEC; tick++) {
                if (tick) {
                        cr_assert_eq(thr_clock_advance(fx.a, STEP_NS), 0);
                        if (tick % PER_SEC == 0) { /* a second is over: the daemon's step */
                                uint64_t k = tick / PER_SEC;
                                bool over = atomic_load(&sh->overloaded) > 0;
                                bool denied = atomic_load(&sh->denied) > 0;
                                uint64_t calls = atomic_load(&sh->calls);
                                tadapt_wait_steps(de, k);
                                expect = model(expect, over, denied);
                                uint64_t got = rate_now(l);
                                if (trace)
                                        fprintf(trace, "%lu %lu %lu %lu\n", (unsigned long)k - 1,
                                                (unsigned long)rates[k - 1], (unsigned long)calls,
                                                (unsigned long)atomic_load(&sh->overloaded));
                                cr_assert_eq(got, expect,
                                             "second %lu: rate %lu, the rule says %lu (from %lu, "
                                             "%lu calls, overload %d, denied %d)",
                                             (unsigned long)k, (unsigned long)got,
                                             (unsigned long)expect, (unsigned long)rates[k - 1],
                                             (unsigned long)calls, over, denied);
                                rates[k] = got;
                                atomic_store(&sh->calls, 0);
                                atomic_store(&sh->overloaded, 0);
                                atomic_store(&sh->denied, 0);
                        }
                        atomic_store(&sh->go, tick);
                }
                struct timespec t1;
                clock_gettime(CLOCK_MONOTONIC, &t1);
                for (int w = 0; w < NW; w++)
                        while (atomic_load(&sh->done[w]) != tick) {
                                cr_assert_lt(telapsed_s(&t1), 30.0, "worker %d stuck", w);
                                cr_assert_eq(atomic_load(&sh->bad), 0);
                                sched_yield();
                        }
        }
        atomic_store(&sh->stop, 1);
        for (int w = 0; w < NW; w++) {
                int st;
                cr_assert_eq(waitpid(pids[w], &st, 0), pids[w]);
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d: %#x", w, st);
        }
        if (trace)
                fclose(trace);
        cr_assert_eq(atomic_load(&sh->bad), 0);
        /* the band adapt.c states, once the rate has reached the capacity (10 s: from 100 by 20
         * a second), and the mean of the sawtooth */
        uint64_t sum = 0, n = 0;
        for (int k = 0; k <= SECONDS; k++) {
                cr_assert(rates[k] >= MIN_RATE && rates[k] <= MAX_RATE, "second %d: %lu", k,
                          (unsigned long)rates[k]);
                if (k < 15)
                        continue;
                cr_assert(rates[k] >= C * DEC_PCT / 100 - 1 && rates[k] <= C + INC,
                          "second %d: rate %lu outside [%d, %d]", k, (unsigned long)rates[k],
                          C * DEC_PCT / 100 - 1, C + INC);
                sum += rates[k];
                n++;
        }
        cr_assert_geq(sum / n, (uint64_t)(C * (100 + DEC_PCT) / 200 - INC),
                      "mean rate %lu over the sawtooth", (unsigned long)(sum / n));
        munmap(sh, sizeof(*sh));
}

/* Hundreds of steps reuse the records they replace: the arena's heap stops growing. */
Test(adapt, steps_reuse_their_records)
{
        tdaemon_config(&fx, true, "maintenance_ms = 2\n",
                       "[api]\nrate = 100/s\nburst = 5\ncapacity = 16\nadaptive = aimd\n"
                       "min_rate = 10/s\nmax_rate = 1000/s\nincrease = 10/s\n"
                       "adapt_interval = 1ms\n");
        tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, 0, 1);
        thr_limiter *l = tdaemon_lim(&fx, 0, "api");
        struct thr_dir_entry *de = tadapt_started(&fx, "api");
        struct thr_hdr *h = fx.map.base;
        uint64_t top10 = 0, changes = 0, last = rate_now(l);
        for (uint64_t k = 1; k <= 400; k++) {
                /* alternate: two seconds denied (up), one overloaded (down) */
                for (int i = 0; i < 8; i++)
                        thr_limiter_try(l, "k", 1, 1, NULL);
                if (k % 3 == 0)
                        cr_assert_eq(thr_limiter_overload(l, 1), 0);
                uint64_t steps = atomic_load(&de->adapt_steps);
                cr_assert_eq(thr_clock_advance(fx.a, MS), 0);
                tadapt_wait_steps(de, steps + 1);
                uint64_t r = rate_now(l);
                changes += r != last;
                last = r;
                if (k == 100)
                        top10 = atomic_load(&h->heap_top);
        }
        cr_assert_geq(changes, 300, "the rate moved %lu times", (unsigned long)changes);
        cr_assert_eq(atomic_load(&h->heap_top), top10, "300 more steps grew the heap by %lu bytes",
                     (unsigned long)(atomic_load(&h->heap_top) - top10));
}

/* A reload starts the controller again at the configured rate. */
Test(adapt, reload_restarts_at_the_configured_rate)
{
        const char *lims = "[api]\nrate = 100/s\nburst = 5\ncapacity = 16\nadaptive = aimd\n"
                           "min_rate = 10/s\nmax_rate = 1000/s\nincrease = 50/s\n";
        tdaemon_config(&fx, true, "maintenance_ms = 5\n", lims);
        tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, 0, 1);
        thr_limiter *l = tdaemon_lim(&fx, 0, "api");
        struct thr_dir_entry *de = tadapt_started(&fx, "api");
        for (int i = 0; i < 20; i++)
                thr_limiter_try(l, "k", 1, 1, NULL); /* denials: the limit binds */
        cr_assert_eq(thr_clock_advance(fx.a, SEC), 0);
        tadapt_wait_steps(de, 1);
        cr_assert_eq(rate_now(l), 150);
        /* a second of demand under the limit (admitted, none denied): an unused limit stays */
        for (int i = 0; i < 3; i++)
                cr_assert_eq(thr_limiter_try(l, "quiet", 5, 1, NULL), 1);
        cr_assert_eq(thr_clock_advance(fx.a, SEC), 0);
        tadapt_wait_steps(de, 2);
        cr_assert_eq(rate_now(l), 150, "raised without a denial");
        /* overload cuts it, whatever else the second saw */
        cr_assert_geq(thr_limiter_try(l, "k", 1, 5, NULL), 0);
        cr_assert_eq(thr_limiter_overload(l, 2), 0);
        cr_assert_eq(thr_clock_advance(fx.a, SEC), 0);
        tadapt_wait_steps(de, 3);
        cr_assert_eq(rate_now(l), 75);
        char out[4096];
        cr_assert_eq(tdaemon_run(&fx, out, sizeof(out), "--reload", NULL, NULL), 0, "%s", out);
        cr_assert_eq(rate_now(l), 100, "the reload put the configured rate back");
}

/*
 * test_adapt_review.c - hostile review of parameter-record recycling (arena_build.c's pool) and
 * the adaptive controller (daemon/adapt.c), against real throttled daemons on a manual clock.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client_internal.h"
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
TestSuite(adapt_review, .init = setup, .fini = teardown, .timeout = 300);

/* N controller steps, each moving the rate (two up, one down). */
static void steps(thr_limiter *l, struct thr_dir_entry *de, int n)
{
        for (int k = 1; k <= n; k++) {
                for (int i = 0; i < 8; i++)
                        thr_limiter_try(l, "k", 1, 1, NULL);
                if (k % 3 == 0)
                        cr_assert_eq(thr_limiter_overload(l, 1), 0);
                uint64_t s = atomic_load(&de->adapt_steps);
                cr_assert_eq(thr_clock_advance(fx.a, MS), 0);
                tadapt_wait_steps(de, s + 1);
        }
}

/* A child that enters a read-side section and stays there until killed: like a client thread
 * SIGSTOPped (or descheduled, or in a debugger) inside thr_limiter_try. It copies the record
 * params_off pointed at when it entered into SEEN (shared memory) and reports its offset. */
static pid_t stalled_reader(uint64_t *off_seen, void *bytes_seen)
{
        int up[2];
        cr_assert_eq(pipe(up), 0);
        pid_t pid = tfork();
        if (pid == 0) {
                thr_arena *a;
                if (thr_arena_open(fx.arena, 0, &a) != 0)
                        _exit(2);
                int err = 0;
                struct thr_reader *r = thr_reader_get(a, &err);
                if (!r)
                        _exit(3);
                (void)thr_reader_enter(a, r);
                struct thr_dir_entry *de = tdaemon_entry(&fx, "api", THR_DIR_LIVE);
                uint64_t off = atomic_load(&de->params_off);
                *off_seen = off;
                memcpy(bytes_seen, (char *)fx.map.base + off, sizeof(struct thr_params));
                if (write(up[1], "i", 1) != 1)
                        _exit(4);
                for (;;)
                        pause();
        }
        char c;
        cr_assert_eq(read(up[0], &c, 1), 1);
        close(up[0]);
        close(up[1]);
        return pid;
}

#include <sys/mman.h>

/*
 * A reader stalled in its section for more than POOL_MAX (1024) steps: the pool's wait list is
 * full and every later retired record is dropped (leaked for the arena's life, and a restart
 * does not get it back). A second, identical stall then grows the heap again: each stall of N >
 * 1024 steps costs (N - 1024) * 128 bytes of the arena's spare for good, until rerate and every
 * reload that changes a record fail with "no room".
 */
Test(adapt_review, stall_past_pool_max_leaks_records_for_good)
{
        tdaemon_config(&fx, true, "maintenance_ms = 1\nstall_ms = 100000\n",
                       "[api]\nrate = 100/s\nburst = 5\ncapacity = 16\nadaptive = aimd\n"
                       "min_rate = 10/s\nmax_rate = 100000/s\nincrease = 10/s\n"
                       "adapt_interval = 1ms\n");
        tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, 0, 1);
        thr_limiter *l = tdaemon_lim(&fx, 0, "api");
        struct thr_dir_entry *de = tadapt_started(&fx, "api");
        struct thr_hdr *h = fx.map.base;
        steps(l, de, 50); /* warm: the pool holds a few records */
        void *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        uint64_t *off = sh;
        char *bytes = (char *)sh + 64;
        const int N = 1500;
        uint64_t growth[2];
        for (int round = 0; round < 2; round++) {
                uint64_t top0 = atomic_load(&h->heap_top);
                pid_t kid = stalled_reader(off, bytes);
                steps(l, de, N);
                /* nothing was rewritten under the stalled reader */
                cr_assert_eq(memcmp((char *)fx.map.base + *off, bytes, sizeof(struct thr_params)),
                             0, "round %d: the record a stalled reader holds was rewritten", round);
                growth[round] = atomic_load(&h->heap_top) - top0;
                kill(kid, SIGKILL);
                waitpid(kid, NULL, 0);
                /* the daemon forces the dead reader offline; let periods complete (no step) */
                for (int i = 0; i < 200; i++)
                        tdoze();
                steps(l, de, 20);
                fprintf(stderr, "round %d: heap grew %lu bytes over %d steps under the stall\n",
                        round, (unsigned long)growth[round], N);
        }
        cr_assert_eq(growth[1], 0,
                     "the second stall grew the heap by %lu bytes (%lu records): records retired "
                     "past the pool's 1024 were leaked in the first",
                     (unsigned long)growth[1], (unsigned long)growth[1] / 128);
}

/*
 * The controller moves the rate to values a reload would refuse: a GCRA rate must be exactly
 * representable (its emission interval P/N ns in lowest terms with a denominator of at most
 * ~29 for 20 years of state). 1000/s + 1/s = 1001/s is not: the step fails (logged), the rate
 * stays at 1000/s, and it stays there at every later step - the limit binds, nothing moves.
 * Config accepts this band and increase.
 */
Test(adapt_review, increase_to_an_unrepresentable_rate_freezes_the_controller)
{
        tdaemon_config(&fx, true, "maintenance_ms = 2\n",
                       "[api]\nrate = 1000/s\nburst = 5\ncapacity = 16\nadaptive = aimd\n"
                       "min_rate = 500/s\nmax_rate = 2000/s\nincrease = 1/s\n"
                       "adapt_interval = 1s\n");
        tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, 0, 1);
        thr_limiter *l = tdaemon_lim(&fx, 0, "api");
        struct thr_dir_entry *de = tadapt_started(&fx, "api");
        uint64_t r[6];
        for (int k = 1; k <= 5; k++) {
                for (int i = 0; i < 20; i++)
                        thr_limiter_try(l, "k", 1, 1, NULL); /* denied: the limit binds */
                cr_assert_eq(thr_clock_advance(fx.a, SEC), 0);
                tadapt_wait_steps(de, (uint64_t)k);
                r[k] = tlim_rate(l);
        }
        fprintf(stderr, "rates after 5 binding seconds: %lu %lu %lu %lu %lu; log: %d errors\n",
                (unsigned long)r[1], (unsigned long)r[2], (unsigned long)r[3], (unsigned long)r[4],
                (unsigned long)r[5], tdaemon_log_count(&fx, 0, "not published"));
        cr_assert_eq(r[5], 1005, "5 binding intervals of +1/s from 1000/s left the rate at %lu",
                     (unsigned long)r[5]);
}

/*
 * adapt_state's gen 0 means "not started", but 0 is also a config_gen the arena can have: the
 * header's config_gen is client-writable and only ever incremented, so a client writing
 * UINT64_MAX makes the next configuration (a reload, or here a restart) generation 0. The
 * controller then never starts the limiter (st->gen == reg->gen == 0): its first step runs
 * from rate_n = 0 on the counters summed since the arena began, and publishes min_rate (or
 * max(min_rate, increase)) instead of starting at the configured rate.
 */
Test(adapt_review, config_gen_zero_skips_the_start)
{
        tdaemon_config(&fx, true, "maintenance_ms = 2\n",
                       "[api]\nrate = 100/s\nburst = 5\ncapacity = 16\nadaptive = aimd\n"
                       "min_rate = 10/s\nmax_rate = 1000/s\nincrease = 30/s\n"
                       "adapt_interval = 1s\n");
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        thr_limiter *l = tdaemon_lim(&fx, 0, "api");
        for (int i = 0; i < 20; i++)
                thr_limiter_try(l, "k", 1, 1, NULL); /* denials in the counters */
        tdaemon_stop(&fx, d);
        struct thr_hdr *h = fx.map.base;
        atomic_store(&h->config_gen, UINT64_MAX); /* a scribbler */
        tdaemon_unmap(&fx);
        d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 2);
        h = fx.map.base;
        l = tdaemon_lim(&fx, 0, "api");
        struct thr_dir_entry *de = tdaemon_entry(&fx, "api", THR_DIR_LIVE);
        cr_assert_eq(atomic_load(&h->config_gen), 0);
        fprintf(stderr, "right after the restart: steps %lu, rate %lu/s\n",
                (unsigned long)atomic_load(&de->adapt_steps), (unsigned long)tlim_rate(l));
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (atomic_load(&de->adapt_steps) == 0 && telapsed_s(&t0) < 2.0)
                tdoze();
        /* no time has passed and no call was made since the restart: nothing may change */
        fprintf(stderr, "config_gen 0: steps %lu, rate %lu/s\n",
                (unsigned long)atomic_load(&de->adapt_steps), (unsigned long)tlim_rate(l));
        cr_assert_eq(tlim_rate(l), 100,
                     "with config_gen 0 the controller moved the rate to %lu/s "
                     "at once, with no time passed",
                     (unsigned long)tlim_rate(l));
}

/*
 * test_reload_rate.c - issue 13, defects 7 and 8: a reload may change a rate to any valid rate,
 * including one whose exact interval needs another time unit than the buckets count in, while
 * processes keep deciding; `throttled --check` checks a file against the live arena with the
 * reload's own code, and `throttled --reload` waits for the daemon's verdict.
 *
 * The load test runs a real throttled on a manual-clock arena and three forked workers that try
 * four keys in a loop, counting admissions per key in shared memory, each tagged with the phase
 * the worker saw when its round began. The parent moves the clock in 5 ms steps through three
 * phases of one second: 30/s burst 5 (the arena is made with time unit 1/3 ns), then 100/s
 * burst 10 (exact in 1/3 ns), then 7/s burst 3 (needs 1/7 ns: kept in 1/3 ns, rounded up). Each
 * change is made by `throttled --reload` while the workers keep trying, with the clock held.
 *
 * The bound. A record r is used only by calls that loaded it: from its publication (at the
 * switch time S_r, the clock held) until every worker began a round in the next phase (the parent
 * waits for that before it moves the clock past S_{r+1}); a round tagged with phase r began after
 * the verdict, so it can only load record r or a later one. An admission with record r at time
 * now moves the key's TAT to max(TAT, now) + T_r and needs the result <= now + B_r T_r; TAT never
 * decreases, so the admissions made with r number at most B_r + (S_{r+1} - S_r + dt) / T_r (dt:
 * a clock read taken just before the switch). So per key: all admissions <= the sum of those,
 * and the rounds tagged with the last phase <= its own term. A record read in the wrong unit
 * (a TAT counted in 1/3 ns read as ns) admits a full burst at every step: hundreds over.
 * Liveness: the last phase still admits (S_end - S_2 - B_1 T_1) / T_2 - 1 at least.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "throttle/throttle.h"

static struct tdaemon fx;

static void setup(void)
{
        tdaemon_init(&fx);
}

static void teardown(void)
{
        tdaemon_fini(&fx);
}

TestSuite(reload_rate, .init = setup, .fini = teardown, .timeout = 240);

/* ---------------------------------------------------------------- any rate, under load */

#define NW      3
#define NK      4
#define NPHASE  3
#define STEP_NS (5 * 1000000ull)
#define STEPS   200 /* one second a phase */

struct shared {
        _Atomic int phase;
        _Atomic int stop;
        _Atomic uint64_t rounds[NW];
        _Atomic int seen[NW]; /* the phase each worker's current round began in */
        _Atomic uint64_t admitted[NPHASE][NK];
        _Atomic int failed;
};

static void worker(struct shared *sh, int w)
{
        thr_arena *a;
        thr_limiter *l;
        if (thr_arena_open(fx.arena, 0, &a) != 0 || thr_limiter_open(a, "lim", &l) != 0)
                _exit(2);
        while (!atomic_load(&sh->stop)) {
                int ph = atomic_load(&sh->phase);
                atomic_store(&sh->seen[w], ph);
                for (int k = 0; k < NK; k++) {
                        char key[8];
                        snprintf(key, sizeof(key), "k%d", k);
                        struct thr_result r;
                        int rc = thr_limiter_try(l, key, strlen(key), 1, &r);
                        if (rc < 0)
                                atomic_store(&sh->failed, rc);
                        else if (rc == 1 && r.admitted)
                                atomic_fetch_add(&sh->admitted[ph][k], 1);
                }
                atomic_fetch_add(&sh->rounds[w], 1);
        }
        thr_limiter_close(l);
        thr_arena_close(a);
        _exit(0);
}

/* Move the clock STEPS steps, each after every worker made two more rounds (bounded wait). */
static void run_phase(struct shared *sh)
{
        for (int s = 0; s < STEPS; s++) {
                uint64_t r0[NW];
                for (int w = 0; w < NW; w++)
                        r0[w] = atomic_load(&sh->rounds[w]);
                struct timespec t0;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                for (int w = 0; w < NW; w++)
                        while (atomic_load(&sh->rounds[w]) < r0[w] + 2 && telapsed_s(&t0) < 10)
                                sched_yield();
                cr_assert_eq(thr_clock_advance(fx.a, STEP_NS), 0);
        }
}

/* Publish phase PH after a reload and wait until every worker began a round in it. */
static void next_phase(struct shared *sh, int ph)
{
        atomic_store(&sh->phase, ph);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int w = 0; w < NW; w++)
                while (atomic_load(&sh->seen[w]) != ph) {
                        cr_assert_lt(telapsed_s(&t0), 10, "worker %d never began phase %d", w, ph);
                        sched_yield();
                }
}

static const struct {
        const char *conf;
        uint64_t n, period, burst;
} phases[NPHASE] = {{"[lim]\nrate = 30/s\nburst = 5\ncapacity = 64\n", 30, SEC, 5},
                    {"[lim]\nrate = 100/s\nburst = 10\ncapacity = 64\n", 100, SEC, 10},
                    {"[lim]\nrate = 7/s\nburst = 3\ncapacity = 64\n", 7, SEC, 3}};

Test(reload_rate, any_rate_under_load_keeps_the_bound)
{
        tdaemon_config(&fx, true, "", phases[0].conf);
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        struct shared *sh =
            mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(sh, MAP_FAILED);
        memset(sh, 0, sizeof(*sh));
        pid_t pids[NW];
        for (int w = 0; w < NW; w++) {
                pids[w] = tfork();
                cr_assert_geq(pids[w], 0);
                if (pids[w] == 0)
                        worker(sh, w);
        }
        char out[8192];
        uint64_t len[NPHASE];
        for (int ph = 0; ph < NPHASE; ph++) {
                if (ph > 0) {
                        tdaemon_config(&fx, true, "", phases[ph].conf);
                        int rc = tdaemon_run(&fx, out, sizeof(out), "--reload", NULL, NULL);
                        cr_assert_eq(rc, 0, "reload to phase %d refused:\n%s", ph, out);
                        cr_assert_not_null(strstr(out, "rate "), "%s", out);
                        next_phase(sh, ph);
                }
                run_phase(sh);
                len[ph] = STEPS * STEP_NS;
        }
        /* the last change needs 1/7 ns: kept in the arena's 1/3 ns, rounded up, and said so */
        cr_assert_not_null(strstr(out, "rate 100/s -> 7/s"), "%s", out);
        cr_assert_not_null(strstr(out, "never above it"), "%s", out);
        atomic_store(&sh->stop, 1);
        for (int w = 0; w < NW; w++) {
                int st;
                cr_assert_eq(waitpid(pids[w], &st, 0), pids[w]);
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d: status %d", w, st);
        }
        cr_assert_eq(atomic_load(&sh->failed), 0, "a try failed: %d", atomic_load(&sh->failed));

        /* the record in force: 7/s in units of 1/3 ns, rounded up (never faster) */
        struct thr_dir_entry *de = tdaemon_entry(&fx, "lim", THR_DIR_LIVE);
        const struct thr_params *p = shm_at(fx.map.base, atomic_load(&de->params_off));
        cr_assert_eq(p->k, 3);
        cr_assert_eq(p->t_units, 428571429ull, "ceil(3e9 / 7)");
        cr_assert(p->flags & THR_PARAM_ROUNDED);

        for (int k = 0; k < NK; k++) {
                double bound = 0;
                uint64_t total = 0;
                for (int ph = 0; ph < NPHASE; ph++) {
                        double t = (double)phases[ph].period / (double)phases[ph].n;
                        uint64_t got = atomic_load(&sh->admitted[ph][k]);
                        bound += (double)phases[ph].burst + (double)(len[ph] + STEP_NS) / t;
                        total += got;
                        /* liveness: the phase's rate (rounded: 7/s as 428571429 / 3 ns) after
                         * the debt the last phase may leave, B T of it */
                        double tr = ph == 2 ? 428571429.0 / 3 : t;
                        double debt = ph ? (double)phases[ph - 1].burst * (double)SEC /
                                               (double)phases[ph - 1].n
                                         : 0;
                        double least = ((double)len[ph] - debt) / tr - 2;
                        cr_log_info("key k%d phase %d: %lu admitted in rounds begun in it (at "
                                    "least %.1f)",
                                    k, ph, (unsigned long)got, least);
                        cr_assert_geq((double)got, least, "key k%d phase %d: %lu admitted < %.1f",
                                      k, ph, (unsigned long)got, least);
                }
                /* rounds begun in the last phase use its record only */
                uint64_t last = atomic_load(&sh->admitted[NPHASE - 1][k]);
                double last_max = 3 + (double)(len[2] + STEP_NS) / ((double)SEC / 7);
                cr_log_info("key k%d: %lu admitted (bound %.1f); last phase %lu (bound %.1f)", k,
                            (unsigned long)total, bound, (unsigned long)last, last_max);
                cr_assert_leq((double)total, bound, "key k%d: %lu admitted, bound %.1f", k,
                              (unsigned long)total, bound);
                cr_assert_leq((double)last, last_max, "key k%d: last phase %lu > %.1f", k,
                              (unsigned long)last, last_max);
        }
        munmap(sh, sizeof(*sh));
}

/* ---------------------------------------------------------------- --check and --reload */

#define LIM   "[lim]\nrate = 10/s\nburst = 10\ncapacity = 64\n"
#define EXTRA "[extra]\nrate = 5/s\nburst = 5\ncapacity = 16\n"

static uint64_t params_off(const char *name)
{
        return atomic_load(&tdaemon_entry(&fx, name, THR_DIR_LIVE)->params_off);
}

/* --check says what a reload would do without doing it, or why the daemon would refuse it;
 * --reload waits for the daemon's own verdict and exits 0 or EX_CONFIG on it. */
Test(reload_rate, check_and_reload_say_the_daemons_verdict)
{
        char out[8192];
        tdaemon_config(&fx, true, "", LIM EXTRA);
        cr_assert_eq(tdaemon_run(&fx, out, sizeof(out), "--check", NULL, NULL), 0, "%s", out);
        cr_assert_not_null(strstr(out, "no arena"), "no arena yet:\n%s", out);
        cr_assert_neq(access(fx.arena, F_OK), 0, "--check created the arena");
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        uint64_t before = params_off("lim");

        /* accepted: said by --check, nothing changed; then done by --reload, said the same */
        tdaemon_config(&fx, true, "", "[lim]\nrate = 20/s\nburst = 10\ncapacity = 64\n");
        cr_assert_eq(tdaemon_run(&fx, out, sizeof(out), "--check", NULL, NULL), 0, "%s", out);
        cr_assert_not_null(strstr(out, "limiter 'lim': rate 10/s -> 20/s"), "%s", out);
        cr_assert_not_null(strstr(out, "limiter 'extra' is no longer configured"), "%s", out);
        cr_assert_eq(params_off("lim"), before, "--check changed the arena");
        tdaemon_entry(&fx, "extra", THR_DIR_LIVE);
        cr_assert_eq(tdaemon_run(&fx, out, sizeof(out), "--reload", NULL, NULL), 0, "%s", out);
        cr_assert_not_null(strstr(out, "applied"), "%s", out);
        cr_assert_not_null(strstr(out, "limiter 'lim': rate 10/s -> 20/s"), "%s", out);
        cr_assert_not_null(strstr(out, "1 changed"), "%s", out);
        cr_assert_neq(params_off("lim"), before, "--reload applied nothing");
        const struct thr_params *p = shm_at(fx.map.base, params_off("lim"));
        cr_assert_eq(p->rate_n, 20);
        tdaemon_entry(&fx, "extra", THR_DIR_RETIRED);
        tdaemon_wait_log(&fx, d, "reload: limiter 'lim': rate 10/s -> 20/s", 1);

        /* refused by the arena: both say why, exit EX_CONFIG, and nothing changes */
        before = params_off("lim");
        tdaemon_config(&fx, true, "", "[lim]\nrate = 20/s\nburst = 10\ncapacity = 128\n");
        cr_assert_eq(tdaemon_run(&fx, out, sizeof(out), "--check", NULL, NULL), EX_CONFIG, "%s",
                     out);
        cr_assert_not_null(strstr(out, "REFUSED"), "%s", out);
        cr_assert_not_null(strstr(out, "cannot be resized in place"), "%s", out);
        cr_assert_eq(tdaemon_run(&fx, out, sizeof(out), "--reload", NULL, NULL), EX_CONFIG, "%s",
                     out);
        cr_assert_not_null(strstr(out, "REFUSED"), "%s", out);
        cr_assert_not_null(strstr(out, "cannot be resized in place"), "%s", out);
        tdaemon_wait_log(&fx, d, "reload refused", 1);
        cr_assert_eq(params_off("lim"), before);

        /* an invalid file: refused with its line, before the daemon is asked */
        tdaemon_config(&fx, true, "", "[lim]\nrate = 20/s\nburst = ten\n");
        cr_assert_eq(tdaemon_run(&fx, out, sizeof(out), "--reload", NULL, NULL), EX_CONFIG, "%s",
                     out);
        cr_assert_not_null(strstr(out, "throttled.conf:"), "%s", out);
        tdaemon_config(&fx, true, "", "[lim]\nrate = 20/s\nburst = 10\ncapacity = 64\n");

        /* a pid that is not the arena's daemon (forged in the header, or given) is never
         * signalled: SIGHUP would kill it */
        pid_t victim = tfork();
        cr_assert_geq(victim, 0);
        if (victim == 0) {
                for (;;)
                        pause();
        }
        struct thr_hdr *h = shm_hdr(&fx.map);
        uint64_t real = atomic_load(&h->daemon_pid);
        atomic_store(&h->daemon_pid, (uint64_t)victim);
        int rc = tdaemon_run(&fx, out, sizeof(out), "--reload", NULL, NULL);
        atomic_store(&h->daemon_pid, real);
        cr_assert_eq(rc, EX_UNAVAILABLE, "%s", out);
        cr_assert_not_null(strstr(out, "not its daemon"), "%s", out);
        char pidarg[32];
        snprintf(pidarg, sizeof(pidarg), "%d", (int)victim);
        rc = tdaemon_run(&fx, out, sizeof(out), "--reload", "--pid", pidarg);
        cr_assert_eq(rc, EX_UNAVAILABLE, "%s", out);
        int st;
        cr_assert_eq(waitpid(victim, &st, WNOHANG), 0, "the process was signalled");
        kill(victim, SIGKILL);
        waitpid(victim, &st, 0);
        /* its real pid, given: applied */
        snprintf(pidarg, sizeof(pidarg), "%d", (int)fx.pid[d]);
        cr_assert_eq(tdaemon_run(&fx, out, sizeof(out), "--reload", "--pid", pidarg), 0, "%s\n%s",
                     out, tdaemon_log(&fx, d));

        /* no daemon: said, exit EX_UNAVAILABLE */
        tdaemon_stop(&fx, d);
        cr_assert_eq(tdaemon_run(&fx, out, sizeof(out), "--reload", NULL, NULL), EX_UNAVAILABLE,
                     "%s", out);
        cr_assert_not_null(strstr(out, "no daemon runs"), "%s", out);
}

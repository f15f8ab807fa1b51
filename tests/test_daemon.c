/*
 * test_daemon.c - proves that the real throttled binary creates its arena and serves clients,
 * survives a restart with every bucket kept (and a changed rate applied to the kept state), keeps
 * a second daemon out, refuses bad configs with the file and line, checks configs with --check, and
 * on SIGHUP keeps the running config when the new one is broken and adds a new limiter otherwise.
 *
 * Each test writes a config into a fresh directory under /dev/shm, with a manual clock and a
 * unique arena name, and runs $THR_TEST_BUILD_DIR/daemon/throttled on it (CTest sets the variable),
 * through the struct tdaemon fixture of helpers.h. Readiness is polled from the arena itself (file
 * present, daemon lock held, attach count), within a bounded time, never assumed after a fixed
 * sleep. Reloads, eviction and reclamation by the running daemon: test_daemon_evict.c.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "helpers.h"

#define MS         1000000ull
#define READY_SECS TD_READY

static struct tdaemon fx; /* helpers.h: config, daemons, logs, the test's mapping */

static void setup(void)
{
        tdaemon_init(&fx);
}

static void teardown(void)
{
        tdaemon_fini(&fx);
}

TestSuite(daemon, .init = setup, .fini = teardown, .timeout = 120);

/* ---------------------------------------------------------------- config and process */

static void write_config(bool in_dir, const char *limiters)
{
        tdaemon_config(&fx, in_dir, "", limiters);
}

static void write_raw(const char *text)
{
        tdaemon_config_raw(&fx, text);
}

static int start(const char *extra)
{
        return tdaemon_start(&fx, extra);
}

static const char *log_of(int i)
{
        return tdaemon_log(&fx, i);
}

static double elapsed_s(const struct timespec *t0)
{
        return telapsed_s(t0);
}

static void doze(void)
{
        tdoze();
}

static int exit_code(int i)
{
        return tdaemon_exit_code(&fx, i);
}

static void stop(int i)
{
        tdaemon_stop(&fx, i);
}

static void wait_ready(int i, uint64_t attach)
{
        tdaemon_wait_ready(&fx, i, attach);
}

static thr_limiter *lim(int slot, const char *name)
{
        return tdaemon_lim(&fx, slot, name);
}

/* The state word of KEY in limiter NAME, read from the test's own mapping. */
static uint64_t state_of(const char *name, const char *key)
{
        return atomic_load(&tdaemon_slot(&fx, name, key)->state);
}

static uint64_t params_off_of(const char *name)
{
        return atomic_load(&tdaemon_entry(&fx, name, THR_DIR_LIVE)->params_off);
}

/* A peek (cost 0) at KEY: what is left, and the limit in force. */
static struct thr_result peek(thr_limiter *l, const char *key)
{
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, key, strlen(key), 0, &r), 1, "peek %s", key);
        return r;
}

/* Wait (bounded) until the log of daemon I contains WHAT. */
static void wait_log(int i, const char *what)
{
        tdaemon_wait_log(&fx, i, what, 1);
}

#define LIM_10 "[lim]\nrate = 10/s\nburst = 10\ncapacity = 64\n"
#define LIM_20 "[lim]\nrate = 20/s\nburst = 20\ncapacity = 64\n"
#define EXTRA  "[extra]\nrate = 5/s\nburst = 5\ncapacity = 16\n"

/* ---------------------------------------------------------------- (a) start and serve */

Test(daemon, starts_creates_the_arena_and_serves_clients)
{
        write_config(true, LIM_10);
        int d = start(NULL);
        wait_ready(d, 1);
        const struct thr_hdr *h = shm_hdr(&fx.map);
        cr_assert_eq(h->clock_id, THR_CLOCK_MANUAL);
        cr_assert_eq(h->backing, THR_BACKING_SHM);
        cr_assert_str_eq(h->name, fx.name);
        cr_assert_eq(atomic_load(&h->daemon_pid), (uint64_t)fx.pid[d]);
        thr_limiter *l = lim(0, "lim");
        for (int i = 0; i < 10; i++)
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1, "try %d", i);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 0);
        cr_assert_eq(thr_clock_advance(fx.a, 100 * MS), 0);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1, "one token per 100 ms");
        stop(d);
        cr_assert_eq(access(fx.arena, F_OK), 0, "the arena stays after the daemon stops");
        cr_assert_eq(atomic_load(&h->daemon_pid), 0, "the daemon cleared its identity");
        cr_assert_eq(shm_daemon_alive(&fx.map, NULL), 0, "the daemon lock went with it");
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 0, "clients work without the daemon");
}

/* ---------------------------------------------------------------- (b) restart keeps state */

static void restart_keeps_state(bool in_dir)
{
        write_config(in_dir, LIM_10);
        int d = start(NULL);
        wait_ready(d, 1);
        thr_limiter *l = lim(0, "lim");
        for (int i = 0; i < 3; i++)
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1);
        cr_assert_eq(thr_clock_advance(fx.a, 40 * MS), 0);
        uint64_t tat = state_of("lim", "k"), now;
        thr_clock_now(fx.a, &now);
        struct thr_result before = peek(l, "k");
        cr_assert_eq(before.remaining, 7, "3 taken 40 ms ago at 10/s: 7 whole tokens left");
        stop(d);

        d = start(NULL);
        wait_ready(d, 2);
        uint64_t now2;
        thr_clock_now(fx.a, &now2);
        cr_assert_eq(now2, now, "the manual clock is kept");
        cr_assert_eq(state_of("lim", "k"), tat, "TAT unchanged by the restart");
        l = lim(0, "lim");
        struct thr_result after = peek(l, "k");
        cr_assert_eq(after.remaining, before.remaining);
        cr_assert_eq(after.reset_after_ns, before.reset_after_ns);
        cr_assert_eq(atomic_load(&shm_hdr(&fx.map)->attach_count), 2);
        stop(d);
}

/* Arena in [arena] dir: the restart must look there, not where clients look by name. */
Test(daemon, restart_keeps_bucket_state)
{
        restart_keeps_state(true);
}

/* No [arena] dir: the arena is found by name in /dev/shm. */
Test(daemon, restart_keeps_bucket_state_in_dev_shm)
{
        restart_keeps_state(false);
}

/* ---------------------------------------------------------------- (c) one daemon per arena */

static void second_daemon_refused(bool in_dir)
{
        write_config(in_dir, LIM_10);
        int d = start(NULL);
        wait_ready(d, 1);
        int d2 = start(NULL);
        int code = exit_code(d2);
        cr_assert_eq(code, EX_UNAVAILABLE, "second daemon exit code %d; log:\n%s", code,
                     log_of(d2));
        cr_assert_not_null(strstr(log_of(d2), "another throttled"),
                           "the refusal names the running daemon:\n%s", log_of(d2));
        pid_t holder = 0;
        cr_assert_eq(shm_daemon_alive(&fx.map, &holder), 1);
        cr_assert_eq(holder, fx.pid[d], "the first daemon still holds the arena");
        cr_assert_eq(atomic_load(&shm_hdr(&fx.map)->attach_count), 1);
        cr_assert_eq(atomic_load(&shm_hdr(&fx.map)->daemon_pid), (uint64_t)fx.pid[d]);
        stop(d);
}

/* The refusal must come from the lock ("another throttled"), not from a failed creation. */
Test(daemon, second_daemon_is_refused)
{
        second_daemon_refused(true);
}

Test(daemon, second_daemon_is_refused_in_dev_shm)
{
        second_daemon_refused(false);
}

/* ---------------------------------------------------------------- (d, e) bad config, --check */

Test(daemon, bad_config_exits_ex_config_with_file_and_line)
{
        char text[256];
        snprintf(text, sizeof(text),
                 "[arena]\nname = %s\nclock = sundial\n\n[lim]\nrate = 10/s\nburst = zero\n",
                 fx.name);
        write_raw(text);
        int d = start(NULL);
        cr_assert_eq(exit_code(d), EX_CONFIG, "log:\n%s", log_of(d));
        char want[256];
        snprintf(want, sizeof(want), "%s:3:", fx.conf);
        cr_assert_not_null(strstr(log_of(d), want), "no \"%s\" in:\n%s", want, log_of(d));
        snprintf(want, sizeof(want), "%s:7:", fx.conf);
        cr_assert_not_null(strstr(log_of(d), want), "no \"%s\" in:\n%s", want, log_of(d));
        snprintf(want, sizeof(want), "/dev/shm/throttle.%s", fx.name);
        cr_assert_neq(access(want, F_OK), 0, "no arena for a bad config");
}

Test(daemon, check_validates_without_creating_the_arena)
{
        write_config(true, LIM_10);
        int d = start("--check");
        cr_assert_eq(exit_code(d), 0, "log:\n%s", log_of(d));
        cr_assert_not_null(strstr(log_of(d), "ok"), "--check says ok:\n%s", log_of(d));
        cr_assert_neq(access(fx.arena, F_OK), 0, "--check created %s", fx.arena);

        write_raw("[arena]\nname = x\n[lim]\nrate = 10/parsec\n");
        d = start("--check");
        cr_assert_eq(exit_code(d), EX_CONFIG, "log:\n%s", log_of(d));
        char want[256];
        snprintf(want, sizeof(want), "%s:4:", fx.conf);
        cr_assert_not_null(strstr(log_of(d), want), "no \"%s\" in:\n%s", want, log_of(d));
}

/* ---------------------------------------------------------------- (f) new rate on restart */

static void restart_applies_new_rate(bool in_dir)
{
        write_config(in_dir, LIM_10); /* T = 100 ms, B = 10, K = 1 */
        int d = start(NULL);
        wait_ready(d, 1);
        thr_limiter *l = lim(0, "lim");
        for (int i = 0; i < 3; i++)
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1);
        uint64_t tat = state_of("lim", "k");
        uint64_t k_before =
            ((const struct thr_params *)shm_at(fx.map.base, params_off_of("lim")))->k;
        stop(d);

        write_config(in_dir, LIM_20); /* T = 50 ms, B = 20, same K */
        d = start(NULL);
        wait_ready(d, 2);
        const struct thr_params *p = shm_at(fx.map.base, params_off_of("lim"));
        cr_assert_eq(p->k, k_before, "same time unit");
        cr_assert_eq(p->burst, 20);
        cr_assert_eq(state_of("lim", "k"), tat, "the bucket kept its TAT");
        l = lim(0, "lim");
        struct thr_result r = peek(l, "k");
        /* TAT - now = 300 ms of debt; new B*T = 1000 ms; remaining = (1000 - 300) / 50 = 14. */
        cr_assert_eq(r.limit, 20);
        cr_assert_eq(r.remaining, 14, "remaining %lu under the new rate",
                     (unsigned long)r.remaining);
        cr_assert_eq(r.reset_after_ns, 300 * MS);
        for (int i = 0; i < 14; i++)
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1, "try %d", i);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0);
        cr_assert_eq(r.retry_after_ns, 50 * MS, "the new interval");
        stop(d);
}

Test(daemon, restart_applies_a_changed_rate_to_kept_state)
{
        restart_applies_new_rate(true);
}

Test(daemon, restart_applies_a_changed_rate_to_kept_state_in_dev_shm)
{
        restart_applies_new_rate(false);
}

/* ---------------------------------------------------------------- (g) SIGHUP */

Test(daemon, sighup_keeps_running_config_when_broken_and_adds_limiters)
{
        write_config(true, LIM_10);
        int d = start(NULL);
        wait_ready(d, 1);
        thr_limiter *l = lim(0, "lim");
        for (int i = 0; i < 4; i++)
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1);
        const struct thr_hdr *h = shm_hdr(&fx.map);
        uint64_t gen = atomic_load(&h->config_gen), poff = params_off_of("lim");

        /* A broken config: refused, the running one kept, the daemon keeps running. */
        write_raw("[arena]\nname = x\n[lim]\nrate = ten/s\n");
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        wait_log(d, "reload refused");
        cr_assert_eq(waitpid(fx.pid[d], NULL, WNOHANG), 0, "the daemon died on a bad reload");
        cr_assert_eq(atomic_load(&h->config_gen), gen, "config generation unchanged");
        cr_assert_eq(params_off_of("lim"), poff, "parameter record unchanged");
        cr_assert_lt(shm_dir_find(&fx.map, "x"), 0);
        struct thr_result r = peek(l, "k");
        cr_assert_eq(r.limit, 10);
        cr_assert_eq(r.remaining, 6);

        /* A good config with a new limiter: added; the old one keeps its state. */
        write_config(true, LIM_10 EXTRA);
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (shm_dir_find(&fx.map, "extra") < 0) {
                cr_assert_lt(elapsed_s(&t0), READY_SECS, "[extra] never appeared; log:\n%s",
                             log_of(d));
                doze();
        }
        cr_assert_gt(atomic_load(&h->config_gen), gen);
        thr_limiter *x = lim(1, "extra");
        for (int i = 0; i < 5; i++)
                cr_assert_eq(thr_limiter_try(x, "k", 1, 1, NULL), 1, "extra try %d", i);
        cr_assert_eq(thr_limiter_try(x, "k", 1, 1, NULL), 0, "extra: burst 5");
        cr_assert_eq(peek(l, "k").remaining, 6, "lim kept its state across the reload");
        cr_assert_eq(params_off_of("lim"), poff, "unchanged parameters keep their record");
        stop(d);
}

/* ---------------------------------------------------------------- clocks */

/* The clock each rate limiter reads, chosen by the auto rule (shm/clock.h) or as configured,
 * written in its parameters and logged. A manual arena's lags: the coarse tick of this machine
 * and a nominal 1 us TSC. */
Test(daemon, limiters_get_the_clock_the_rule_chooses)
{
        write_config(true, "[slow]\nrate = 1/s\ncapacity = 16\n"
                           "[mid]\nrate = 1000/s\ncapacity = 16\n"
                           "[fast]\nrate = 100000/s\ncapacity = 16\n"
                           "[pinned]\nrate = 1/s\nclock_read = precise\ncapacity = 16\n"
                           "[asked]\nrate = 100000/s\nclock_read = coarse\ncapacity = 16\n");
        int d = start(NULL);
        wait_ready(d, 1);
        const struct thr_hdr *h = shm_hdr(&fx.map);
        cr_assert_leq(atomic_load(&h->coarse_lag_ns) * 64, SEC,
                      "a tick above 7 ms: the rule cannot be shown");
        const char *names[] = {"slow", "mid", "fast", "pinned", "asked"};
        const uint32_t want[] = {THR_CLOCK_READ_COARSE, THR_CLOCK_READ_TSC, THR_CLOCK_READ_PRECISE,
                                 THR_CLOCK_READ_PRECISE, THR_CLOCK_READ_COARSE};
        for (int i = 0; i < 5; i++) {
                const struct thr_params *p =
                    (const void *)((const char *)fx.map.base + params_off_of(names[i]));
                cr_assert_eq(THR_PARAM_CLOCK(p->flags), want[i], "%s reads %s, not %s", names[i],
                             shm_clock_read_name(THR_PARAM_CLOCK(p->flags)),
                             shm_clock_read_name(want[i]));
        }
        wait_log(d, "limiter 'slow' reads the coarse clock (auto)");
        wait_log(d, "limiter 'mid' reads the tsc clock (auto)");
        wait_log(d, "limiter 'asked' reads the coarse clock (coarse)");
        cr_assert_null(strstr(log_of(d), "limiter 'fast' reads"), "%s", log_of(d));
        /* decisions work on each (one token each, the manual clock stands still) */
        for (int i = 0; i < 2; i++) {
                thr_limiter *l = lim(i, names[i]);
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1, "%s", names[i]);
        }
        stop(d);
}

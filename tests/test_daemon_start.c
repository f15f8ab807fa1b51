/*
 * test_daemon_start.c - proves that throttled's start-up never harms an arena or a running
 * daemon (issue 18): `--recreate` never removes an arena another daemon holds, whatever made the
 * attach fail, and says loudly what it removes when it does; SIGHUP, SIGTERM and SIGINT that
 * arrive while it starts (its config still being read) are handled, not fatal.
 *
 * Each test runs the real throttled on a config in a fresh directory (struct tdaemon, helpers.h),
 * polls every outcome within a bound, and never relies on a fixed sleep.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "helpers.h"

static struct tdaemon fx;

static void setup(void)
{
        tdaemon_init(&fx);
}

static void teardown(void)
{
        tdaemon_fini(&fx);
}

TestSuite(daemon_start, .init = setup, .fini = teardown, .timeout = 120);

/* One key, one token a second: a second admission within the second means two arenas. */
#define ONE_PER_S "[lim]\nrate = 1/s\nburst = 1\ncapacity = 64\n"

static ino_t inode_of(const char *path)
{
        struct stat st;
        cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
        return st.st_ino;
}

/* Replace FROM by TO in D's config file (one occurrence, which must exist). */
static void config_edit(struct tdaemon *d, const char *from, const char *to)
{
        char text[4096], out[4096];
        FILE *f = fopen(d->conf, "re");
        cr_assert_not_null(f);
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[n] = '\0';
        char *at = strstr(text, from);
        cr_assert_not_null(at, "no \"%s\" in the config", from);
        snprintf(out, sizeof(out), "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
        tdaemon_config_raw(d, out);
}

/* Take KEY's one token through a fresh open of the arena file: 1 admitted, 0 denied. */
static int take_fresh(const char *key)
{
        thr_arena *a;
        thr_limiter *l;
        int rc = thr_arena_open(fx.arena, 0, &a);
        cr_assert_eq(rc, 0, "thr_arena_open: %s", thr_strerror(rc));
        cr_assert_eq(thr_limiter_open(a, "lim", &l), 0);
        rc = thr_limiter_try(l, key, strlen(key), 1, NULL);
        thr_limiter_close(l);
        thr_arena_close(a);
        return rc;
}

/* A second daemon with --recreate, the arena held by the first: exit 69, the arena intact. */
static void expect_recreate_refused(int d0, ino_t ino)
{
        int d1 = tdaemon_start(&fx, "--recreate");
        int code = tdaemon_exit_code(&fx, d1);
        cr_assert_eq(code, EX_UNAVAILABLE, "exit %d; log:\n%s", code, tdaemon_log(&fx, d1));
        cr_assert_not_null(strstr(tdaemon_log(&fx, d1), "another throttled"), "%s",
                           tdaemon_log(&fx, d1));
        cr_assert_eq(inode_of(fx.arena), ino, "the arena file was replaced");
        pid_t holder = 0;
        cr_assert_eq(shm_daemon_alive(&fx.map, &holder), 1);
        cr_assert_eq(holder, fx.pid[d0], "the first daemon still holds the arena");
        cr_assert_eq(atomic_load(&shm_hdr(&fx.map)->attach_count), 1);
}

/* The attach fails because the header names another pid namespace (a daemon in a container, or
 * a corrupt header): the old code unlinked the held arena and ran a second daemon on a new one. */
Test(daemon_start, recreate_never_removes_a_held_arena_pidns)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        int d0 = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d0, 1);
        cr_assert_eq(take_fresh("k"), 1);
        ino_t ino = inode_of(fx.arena);
        struct thr_hdr *h = shm_hdr(&fx.map);
        uint64_t pidns = h->pidns_ino;
        h->pidns_ino = pidns + 12345;
        expect_recreate_refused(d0, ino);
        h->pidns_ino = pidns;
        cr_assert_eq(take_fresh("k"), 0, "1/s burst 1: a second admission means a second arena");
        tdaemon_stop(&fx, d0);
}

/* The attach fails because this config asks for hugepages and the arena is in /dev/shm. */
Test(daemon_start, recreate_never_removes_a_held_arena_hugepages)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        int d0 = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d0, 1);
        cr_assert_eq(take_fresh("k"), 1);
        ino_t ino = inode_of(fx.arena);
        config_edit(&fx, "hugepages = off", "hugepages = require");
        expect_recreate_refused(d0, ino);
        cr_assert_eq(take_fresh("k"), 0, "1/s burst 1: a second admission means a second arena");
        tdaemon_stop(&fx, d0);
}

/* Without --recreate a held arena that this daemon cannot use is left alone too, and the refusal
 * says a daemon runs on it (EX_UNAVAILABLE) rather than blaming the arena. */
Test(daemon_start, unusable_held_arena_is_reported_as_held)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        int d0 = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d0, 1);
        ino_t ino = inode_of(fx.arena);
        config_edit(&fx, "hugepages = off", "hugepages = require");
        int d1 = tdaemon_start(&fx, NULL);
        int code = tdaemon_exit_code(&fx, d1);
        cr_assert_eq(code, EX_UNAVAILABLE, "exit %d; log:\n%s", code, tdaemon_log(&fx, d1));
        cr_assert_eq(inode_of(fx.arena), ino);
        tdaemon_stop(&fx, d0);
}

/* No daemon holds it: --recreate replaces an unusable arena, and the log says what was removed,
 * why, and that every limit is reset. Without --recreate nothing is removed. */
Test(daemon_start, recreate_replaces_an_unheld_unusable_arena_loudly)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        int d0 = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d0, 1);
        tdaemon_stop(&fx, d0);
        ino_t ino = inode_of(fx.arena);
        shm_hdr(&fx.map)->pidns_ino += 12345;
        tdaemon_unmap(&fx);

        int d1 = tdaemon_start(&fx, NULL);
        int code = tdaemon_exit_code(&fx, d1);
        cr_assert_eq(code, EX_DATAERR, "exit %d; log:\n%s", code, tdaemon_log(&fx, d1));
        cr_assert_eq(inode_of(fx.arena), ino, "removed without --recreate");

        int d2 = tdaemon_start(&fx, "--recreate");
        tdaemon_wait_ready(&fx, d2, 1);
        cr_assert_neq(inode_of(fx.arena), ino, "a new arena");
        const char *log = tdaemon_log(&fx, d2);
        cr_assert_not_null(strstr(log, "removing arena"), "%s", log);
        cr_assert_not_null(strstr(log, "pid namespace"), "the reason is given:\n%s", log);
        cr_assert_not_null(strstr(log, "every limit is reset"), "%s", log);
        tdaemon_stop(&fx, d2);
}

/* ---------------------------------------------------------------- signals during start-up */

/*
 * Start a daemon whose config file is a FIFO and return once it has opened it: it is then inside
 * config_load, the start-up step before which the old daemon installed no handler. *W: the write
 * end; the config to feed it is left in REAL (a regular file in D's directory).
 */
static int start_inside_config_load(int *w, char *real, size_t len)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        snprintf(real, len, "%s/real.conf", fx.dir);
        cr_assert_eq(rename(fx.conf, real), 0);
        cr_assert_eq(mkfifo(fx.conf, 0600), 0, "mkfifo: %s", strerror(errno));
        int d = tdaemon_start(&fx, NULL);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while ((*w = open(fx.conf, O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
                cr_assert_eq(errno, ENXIO, "open fifo: %s", strerror(errno));
                cr_assert_lt(telapsed_s(&t0), TD_READY, "the daemon never opened its config");
                tdoze();
        }
        return d;
}

/* Write the config in REAL into the FIFO W and close it: config_load returns. */
static void feed(int w, const char *real)
{
        char text[4096];
        FILE *f = fopen(real, "re");
        cr_assert_not_null(f);
        size_t n = fread(text, 1, sizeof(text), f);
        fclose(f);
        cr_assert_eq(write(w, text, n), (ssize_t)n);
        close(w);
}

/* SIGHUP while the config is read (ExecReload=kill -HUP at the wrong moment): the daemon starts,
 * then reloads; the old one died of the signal (exit status 129 from a shell). */
Test(daemon_start, sighup_during_start_up_is_a_reload)
{
        char real[256];
        int w;
        int d = start_inside_config_load(&w, real, sizeof(real));
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        cr_assert_eq(rename(real, fx.conf), 0, "the reload reads a regular file");
        feed(w, fx.conf);
        tdaemon_wait_ready(&fx, d, 1);
        tdaemon_wait_log(&fx, d, "reloaded: 1 limiters", 1);
        tdaemon_stop(&fx, d);
}

/* SIGTERM (or SIGINT) while the config is read: a clean exit 0 before the arena is touched. */
static void stop_during_start_up(int sig)
{
        char real[256];
        int w;
        int d = start_inside_config_load(&w, real, sizeof(real));
        cr_assert_eq(kill(fx.pid[d], sig), 0);
        feed(w, real);
        int code = tdaemon_exit_code(&fx, d);
        cr_assert_eq(code, 0, "exit %d; log:\n%s", code, tdaemon_log(&fx, d));
        cr_assert_neq(access(fx.arena, F_OK), 0, "stopped before the arena was created");
}

Test(daemon_start, sigterm_during_start_up_stops_cleanly)
{
        stop_during_start_up(SIGTERM);
}

Test(daemon_start, sigint_during_start_up_stops_cleanly)
{
        stop_during_start_up(SIGINT);
}

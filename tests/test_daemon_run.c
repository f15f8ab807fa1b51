/*
 * test_daemon_run.c - proves what a running throttled says and does (issue 18): a reload logs
 * what it did only once it took (a refused one retires nothing and says nothing was retired).
 *
 * Each test runs the real throttled on a config in a fresh directory (struct tdaemon, helpers.h),
 * polls every outcome within a bound, and never relies on a fixed sleep.
 */
#include <criterion/criterion.h>
#include <errno.h>
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

TestSuite(daemon_run, .init = setup, .fini = teardown, .timeout = 120);

#define LIM   "[lim]\nrate = 10/s\nburst = 10\ncapacity = 64\n"
#define EXTRA "[extra]\nrate = 5/s\nburst = 5\ncapacity = 16\n"

/* ---------------------------------------------------------------- reload verdicts */

/* A reload that drops [extra] and resizes [lim] is refused as a whole (a table cannot be resized
 * in place): [extra] stays live, and the log must not say it was retired. */
Test(daemon_run, refused_reload_retires_nothing_and_says_so)
{
        tdaemon_config(&fx, true, "", LIM EXTRA);
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        tdaemon_config(&fx, true, "", "[lim]\nrate = 10/s\nburst = 10\ncapacity = 128\n");
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        tdaemon_wait_log(&fx, d, "reload refused", 1);
        const char *log = tdaemon_log(&fx, d);
        cr_assert_null(strstr(log, "retired"), "a refused reload logged a retirement:\n%s", log);
        cr_assert_null(strstr(log, "no longer configured"), "%s", log);
        cr_assert_geq(shm_dir_find(&fx.map, "extra"), 0, "[extra] is still live");

        /* the same removal in a reload that takes: logged, once, after it took */
        tdaemon_config(&fx, true, "", LIM);
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        tdaemon_wait_log(&fx, d, "reloaded: 1 limiters", 1);
        cr_assert_eq(tdaemon_log_count(&fx, d, "limiter 'extra' is no longer configured"), 1, "%s",
                     tdaemon_log(&fx, d));
        log = tdaemon_log(&fx, d);
        cr_assert_lt(strstr(log, "reload refused"), strstr(log, "'extra' is no longer"));
        cr_assert_lt(shm_dir_find(&fx.map, "extra"), 0, "[extra] is retired");
        tdaemon_stop(&fx, d);
}

/* A refused reload that also changes [arena] does not claim anything about what it applied. */
Test(daemon_run, refused_reload_does_not_warn_about_arena_settings)
{
        tdaemon_config(&fx, true, "", LIM);
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        tdaemon_config(&fx, true, "", "[lim]\nrate = 10/s\nburst = 10\ncapacity = 128\n");
        char text[4096];
        FILE *f = fopen(fx.conf, "re");
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[n] = '\0';
        char *at = strstr(text, "max_readers = 64");
        cr_assert_not_null(at);
        memcpy(at, "max_readers = 65", 16);
        tdaemon_config_raw(&fx, text);
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        tdaemon_wait_log(&fx, d, "reload refused", 1);
        cr_assert_null(strstr(tdaemon_log(&fx, d), "[arena] settings are fixed"), "%s",
                       tdaemon_log(&fx, d));
        tdaemon_stop(&fx, d);
}

/*
 * test_log.c - proves that throttled's log never writes past its 4096-byte line buffer, whatever
 * the length of the lines of a message (issue 18, defect 3: a line that ended exactly 4 bytes
 * before the end of the buffer made the next copy's bound wrap), both when log_msg is called
 * directly and through the real daemon: a crafted config whose list of faults lands on that offset,
 * checked with --check and reloaded with SIGHUP. Under ASan the old code was a
 * stack-buffer-overflow; in every build it wrote more than 4096 bytes for one message.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "config.h"
#include "helpers.h"
#include "log.h"

#define OUT_CAP  4096 /* log.c's line buffer */
#define MSG_CAP  2048 /* log.c's message buffer */
#define PLEN_ERR 43   /* "2026-11-23T12:34:56.789Z throttled: error: " */

/* ---------------------------------------------------------------- log_msg alone */

/* Call log_msg(LOG_ERROR, "%s", MSG) with stderr sent to a file; return what it wrote. */
static char *logged(const char *msg, size_t *len)
{
        char path[] = "/tmp/thr_log_XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        unlink(path);
        int saved = dup(STDERR_FILENO);
        dup2(fd, STDERR_FILENO);
        log_msg(LOG_ERROR, "%s", msg);
        dup2(saved, STDERR_FILENO);
        close(saved);
        off_t n = lseek(fd, 0, SEEK_END);
        char *out = calloc(1, (size_t)n + 1);
        cr_assert_eq(pread(fd, out, (size_t)n, 0), n);
        close(fd);
        *len = (size_t)n;
        return out;
}

/* A message of NLINES lines of LEN bytes, the first line FIRST bytes long. */
static char *lines_msg(int nlines, size_t len, size_t first)
{
        char *m = calloc(1, MSG_CAP);
        size_t pos = 0;
        for (int i = 0; i < nlines; i++) {
                size_t l = i == 0 ? first : len;
                cr_assert_lt(pos + l + 1, MSG_CAP);
                memset(m + pos, 'a' + i % 26, l);
                pos += l;
                m[pos++] = '\n';
        }
        m[pos - 1] = '\0';
        return m;
}

/* Every line end from 40 bytes before the cut to 40 past it: one write of at most 4096 bytes,
 * whole lines, and a cut marked with "...". */
Test(log, no_line_end_near_the_end_of_the_buffer_overflows)
{
        log_set_level(LOG_INFO);
        for (size_t first = 1; first <= 80; first++) {
                /* 52 lines of 30 bytes: 52 * (43 + 30 + 1) = 3848, plus the first line's share */
                char *m = lines_msg(60, 30, first);
                size_t n = 0;
                char *out = logged(m, &n);
                cr_assert_leq(n, OUT_CAP, "first line %zu: %zu bytes written", first, n);
                cr_assert_eq(out[n - 1], '\n', "first line %zu: ends a line", first);
                cr_assert_not_null(strstr(out, "...\n"), "first line %zu: the cut is marked",
                                   first);
                free(out);
                free(m);
        }
}

Test(log, short_messages_are_whole)
{
        size_t n = 0;
        char *out = logged("one\ntwo", &n);
        cr_assert_not_null(strstr(out, "throttled: error: one\n"), "%s", out);
        cr_assert_not_null(strstr(out, "throttled: error: two\n"), "%s", out);
        cr_assert_null(strstr(out, "..."), "%s", out);
        free(out);
}

/* ---------------------------------------------------------------- the crafted config */

/*
 * Whether the daemon's message HEAD "\n" ERR (cut to log.c's 2048-byte buffer) has a line that
 * ends exactly at OUT_CAP - 4 with another line after it: the layout that overflowed.
 */
static bool ends_at_cut(const char *head, const char *err)
{
        char msg[MSG_CAP];
        int n = snprintf(msg, sizeof(msg), "%s\n%s", head, err);
        if (n >= MSG_CAP)
                memcpy(msg + MSG_CAP - 4, "...", 4);
        size_t pos = 0;
        for (const char *s = msg; *s;) {
                const char *nl = strchr(s, '\n');
                size_t len = nl ? (size_t)(nl - s) : strlen(s);
                pos += PLEN_ERR + len;
                s = nl ? nl + 1 : s + len;
                if (pos == OUT_CAP - 4 && *s)
                        return true;
                pos++;
        }
        return false;
}

/*
 * Write a config of 60 keys before any section (each fault "t.conf:N: key 'kk' before any
 * [section]", short enough for 48 of them to fit the 2048-byte message) to t.conf in D's
 * directory, the first key PAD bytes long, until the daemon's message HEAD lands a line end
 * exactly on the cut. The faults come from config_load itself, on the same relative path as the
 * daemon's, so the test follows any change of wording. The caller's working directory is D's.
 */
static void craft(struct tdaemon *d, const char *head)
{
        static char err[8192], text[8192];
        struct config *cfg = calloc(1, sizeof(*cfg));
        cr_assert_eq(chdir(d->dir), 0);
        for (int pad = 1; pad < 80; pad++) {
                size_t pos = 0;
                for (int i = 0; i < 60; i++)
                        pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "%.*s = 1\n",
                                                i == 0 ? pad : 1,
                                                "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
                                                "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk");
                FILE *f = fopen("t.conf", "we");
                cr_assert_not_null(f);
                fputs(text, f);
                cr_assert_eq(fclose(f), 0);
                cr_assert_lt(config_load("t.conf", cfg, err, sizeof(err)), 0);
                if (ends_at_cut(head, err)) {
                        free(cfg);
                        return;
                }
        }
        cr_assert_fail("no padding puts a line end on the cut");
}

static struct tdaemon fx;

static void setup(void)
{
        tdaemon_init(&fx);
}

static void teardown(void)
{
        tdaemon_fini(&fx);
}

/* The log of daemon I is one message: at most one buffer, whole lines, the cut marked. */
static void expect_one_bounded_message(int i)
{
        const char *log = tdaemon_log(&fx, i);
        size_t n = strlen(log);
        cr_assert_leq(n, OUT_CAP, "%zu bytes logged for one message:\n%s", n, log);
        cr_assert_str_eq(log + n - 4, "...\n", "the cut is marked:\n%s", log);
}

Test(log, crafted_config_through_check, .init = setup, .fini = teardown, .timeout = 60)
{
        craft(&fx, "invalid config:");
        int d = tdaemon_start_conf(&fx, "t.conf", "--check");
        int code = tdaemon_exit_code(&fx, d);
        cr_assert_eq(code, EX_CONFIG, "exit %d:\n%s", code, tdaemon_log(&fx, d));
        expect_one_bounded_message(d);
}

Test(log, crafted_config_through_sighup, .init = setup, .fini = teardown, .timeout = 60)
{
        tdaemon_config(&fx, true, "", "[lim]\nrate = 10/s\n");
        char conf[256];
        snprintf(conf, sizeof(conf), "%s/t.conf", fx.dir);
        cr_assert_eq(rename(fx.conf, conf), 0);
        int d = tdaemon_start_conf(&fx, "t.conf", NULL);
        tdaemon_wait_ready(&fx, d, 1);
        tdaemon_unmap(&fx);
        craft(&fx, "reload refused, running config kept:");
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        tdaemon_wait_log(&fx, d, "reload refused", 1);
        tdaemon_wait_log(&fx, d, "...\n", 1);
        const char *log = tdaemon_log(&fx, d);
        const char *msg = strstr(log, "reload refused");
        while (msg > log && msg[-1] != '\n')
                msg--;
        size_t n = strlen(msg);
        cr_assert_leq(n, OUT_CAP, "%zu bytes logged for one message:\n%s", n, msg);
        tdaemon_stop(&fx, d);
}

/*
 * log.c - throttled's log: "TIMESTAMP throttled: LEVEL: message" lines on stderr.
 *
 * Each call formats into a local buffer and hands it to one write(2), so lines from different
 * threads never interleave (stderr's stdio buffer would need a lock and may split a line). A
 * message holding several lines (a config file's list of faults) gets the prefix on each, still
 * in one write. The level is an atomic so any thread may read or change it at any time.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static _Atomic int log_level = LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

#define NLEVELS ((int)(sizeof(level_names) / sizeof(level_names[0])))

int log_init(void)
{
        const char *v = getenv("THROTTLE_LOG");
        log_set_level(LOG_INFO);
        if (!v || !*v)
                return 0;
        for (int i = 0; i < NLEVELS; i++) {
                if (!strcasecmp(v, level_names[i])) {
                        log_set_level((enum log_level)i);
                        return 0;
                }
        }
        return -EINVAL;
}

void log_set_level(enum log_level lvl)
{
        if ((int)lvl < 0 || (int)lvl >= NLEVELS)
                lvl = LOG_INFO;
        atomic_store_explicit(&log_level, (int)lvl, memory_order_relaxed);
}

enum log_level log_get_level(void)
{
        return (enum log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

/* "2024-05-01T12:34:56.789Z " into BUF; UTC so lines from hosts in other zones compare. */
static size_t timestamp(char *buf, size_t n)
{
        struct timespec ts;
        struct tm tm;
        if (clock_gettime(CLOCK_REALTIME, &ts) < 0 || !gmtime_r(&ts.tv_sec, &tm))
                return 0;
        size_t len = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
        if (len == 0)
                return 0;
        int w = snprintf(buf + len, n - len, ".%03ldZ ", ts.tv_nsec / 1000000);
        return w > 0 && (size_t)w < n - len ? len + (size_t)w : 0;
}

/* Append as much of S (LEN bytes) as fits below CAP; false if some was cut. *POS <= CAP holds on
 * entry and on return, so the room CAP - *POS never wraps. */
static bool put(char *out, size_t cap, size_t *pos, const char *s, size_t len)
{
        size_t room = cap - *pos;
        size_t take = len <= room ? len : room;
        memcpy(out + *pos, s, take);
        *pos += take;
        return take == len;
}

/* Write all of BUF to stderr, retrying only what a signal or a short write left over. */
static void write_all(const char *buf, size_t len)
{
        while (len) {
                ssize_t w = write(STDERR_FILENO, buf, len);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return; /* nowhere to report a failing stderr */
                buf += w;
                len -= (size_t)w;
        }
}

/*
 * Build "prefix line\n" for each line of MSG into OUT (CAP bytes); "...\n" marks a cut. Every
 * piece of a line, its newline included, goes through put() with the bound CAP - 4, so the
 * position never passes it and the 4 bytes of the mark always fit.
 */
static size_t compose(char *out, size_t cap, const char *prefix, size_t plen, const char *msg)
{
        size_t pos = 0, end = cap - 4;
        const char *s = msg;
        do {
                const char *nl = strchr(s, '\n');
                size_t len = nl ? (size_t)(nl - s) : strlen(s);
                if (!put(out, end, &pos, prefix, plen) || !put(out, end, &pos, s, len) ||
                    !put(out, end, &pos, "\n", 1)) {
                        memcpy(out + pos, "...\n", 4);
                        return pos + 4;
                }
                s = nl ? nl + 1 : s + len;
        } while (*s);
        return pos;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
        if ((int)lvl > (int)log_get_level())
                return;
        int saved = errno; /* callers may log and then look at errno */
        char msg[2048], prefix[64], out[4096];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (n < 0)
                snprintf(msg, sizeof(msg), "(unformattable message)");
        else if ((size_t)n >= sizeof(msg))
                snprintf(msg + sizeof(msg) - 4, 4, "..."); /* say the message was cut */
        size_t plen = timestamp(prefix, sizeof(prefix));
        int lv = (int)lvl >= 0 && (int)lvl < NLEVELS ? (int)lvl : LOG_ERROR;
        int w = snprintf(prefix + plen, sizeof(prefix) - plen, "throttled: %s: ", level_names[lv]);
        plen += w > 0 ? (size_t)w : 0;
        write_all(out, compose(out, sizeof(out), prefix, plen, msg));
        errno = saved;
}

/*
 * config_values.c - the keys each section of throttled's configuration accepts, and the parsers
 * that turn their values into fields: whole numbers within bounds, sizes, durations and rates
 * with units, file modes, groups, clocks, names, paths and addresses. Each parser either stores
 * a checked value or says why it refused it, in one sentence that config.c prefixes with the file
 * and line; none of them keeps state, so all are thread-safe (group lookup uses getgrnam_r).
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "clock.h"
#include "config_internal.h"

/* ---------------------------------------------------------------- errors */

static int say(char *why, size_t n, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fill WHY with a sentence and return RC: the one way helpers explain a refusal. */
static int say(char *why, size_t n, int rc, const char *fmt, ...)
{
        if (why && n) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(why, n, fmt, ap);
                va_end(ap);
        }
        return rc;
}

/* ---------------------------------------------------------------- numbers */

/* Leading decimal digits of S: no sign, no blanks (strtoull would take both), no overflow. */
static int lead_u64(const char *s, const char **end, uint64_t *v)
{
        if (!isdigit((unsigned char)*s))
                return -EINVAL;
        char *e;
        errno = 0;
        unsigned long long x = strtoull(s, &e, 10);
        if (errno == ERANGE)
                return -ERANGE;
        *v = x;
        *end = e;
        return 0;
}

/* All of S as a whole number within LO..HI, stored in *V only if it is. */
static int num_range(const char *s, uint64_t lo, uint64_t hi, uint64_t *v, char *why, size_t n)
{
        const char *end;
        uint64_t x = 0;
        int rc = lead_u64(s, &end, &x);
        if (rc == -ERANGE)
                return say(why, n, -ERANGE, "'%s' is too large (overflow)", s);
        if (rc < 0 || *end)
                return say(why, n, -EINVAL, "'%s' is not a whole number", s);
        if (x < lo && hi == UINT64_MAX)
                return say(why, n, -ERANGE, "must be at least %" PRIu64 " (got %s)", lo, s);
        if (x < lo || x > hi)
                return say(why, n, -ERANGE, "%s is out of range (%" PRIu64 " to %" PRIu64 ")", s,
                           lo, hi);
        *v = x;
        return 0;
}

struct unit {
        const char *name;
        uint64_t mult;
};

#define TIME_UNITS "ns us ms s sec m min h hour d day"

static const struct unit time_units[] = {{"ns", 1},
                                         {"us", 1000},
                                         {"ms", 1000000},
                                         {"s", 1000000000},
                                         {"sec", 1000000000},
                                         {"m", 60000000000},
                                         {"min", 60000000000},
                                         {"h", 3600000000000},
                                         {"hour", 3600000000000},
                                         {"d", 86400000000000},
                                         {"day", 86400000000000},
                                         {NULL, 0}};

#define SIZE_UNITS "B K KiB M MiB G GiB T TiB"

static const struct unit size_units[] = {{"", 1},           {"B", 1},
                                         {"K", 1ull << 10}, {"KiB", 1ull << 10},
                                         {"M", 1ull << 20}, {"MiB", 1ull << 20},
                                         {"G", 1ull << 30}, {"GiB", 1ull << 30},
                                         {"T", 1ull << 40}, {"TiB", 1ull << 40},
                                         {NULL, 0}};

/* "N<unit>" into N times the unit's multiplier, the unit one of TAB (named in LIST). N may be
 * left out when NUM_OPTIONAL ("/s" in a rate means "/1s"). */
static int scaled(const char *s, const struct unit *tab, const char *list, bool num_optional,
                  uint64_t *out, char *why, size_t n)
{
        uint64_t count = 1;
        const char *u = s;
        int rc = lead_u64(s, &u, &count);
        if (rc == -ERANGE)
                return say(why, n, -ERANGE, "number in '%s' is too large (overflow)", s);
        if (rc < 0 && !num_optional)
                return say(why, n, -EINVAL, "'%s' does not start with a whole number", s);
        if (*u == '.' || *u == ',')
                return say(why, n, -EINVAL, "'%s': whole numbers only", s);
        for (; tab->name; tab++) {
                if (strcmp(u, tab->name) != 0)
                        continue;
                if (count > UINT64_MAX / tab->mult)
                        return say(why, n, -ERANGE, "'%s' is too large (overflow)", s);
                *out = count * tab->mult;
                return 0;
        }
        if (!*u)
                return say(why, n, -EINVAL, "'%s' has no unit (one of %s)", s, list);
        return say(why, n, -EINVAL, "unknown unit '%s' in '%s' (one of %s)", u, s, list);
}

int config_parse_rate(const char *s, uint64_t *n, uint64_t *period_ns, char *err, size_t errlen)
{
        const char *slash;
        uint64_t count = 0, period = 0;
        int rc = lead_u64(s, &slash, &count);
        if (rc == -ERANGE)
                return say(err, errlen, -ERANGE, "count in rate '%s' is too large (overflow)", s);
        if (rc < 0 || *slash != '/')
                return say(err, errlen, -EINVAL,
                           "rate '%s' is not N/unit (e.g. 100/s, 5/250ms; whole numbers only)", s);
        if (!slash[1])
                return say(err, errlen, -EINVAL, "rate '%s' has no unit after '/'", s);
        rc = scaled(slash + 1, time_units, TIME_UNITS, true, &period, err, errlen);
        if (rc < 0)
                return rc;
        if (count == 0)
                return say(err, errlen, -EINVAL, "rate '%s' admits nothing: N must be >= 1", s);
        if (period == 0)
                return say(err, errlen, -EINVAL, "rate '%s' has a zero period", s);
        *n = count;
        *period_ns = period;
        return 0;
}

int config_parse_duration(const char *s, uint64_t *ns, char *err, size_t errlen)
{
        if (!strcmp(s, "0")) {
                *ns = 0;
                return 0;
        }
        return scaled(s, time_units, TIME_UNITS, false, ns, err, errlen);
}

/* ---------------------------------------------------------------- values */

/* Each setter parses V into FIELD (the key's field in the section's struct) or explains why not
 * in WHY; K gives the key's bounds (for strings, the buffer size in HI). */

static int set_u64(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        return num_range(v, k->lo, k->hi, field, why, n);
}

static int set_u32(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        uint64_t x = 0;
        int rc = num_range(v, k->lo, k->hi, &x, why, n);
        if (rc == 0)
                *(uint32_t *)field = (uint32_t)x;
        return rc;
}

/* B bytes written in the largest size unit that divides them: 1099511627776 -> "1TiB". */
static void fmt_size(uint64_t b, char *out, size_t n)
{
        const struct unit *u = &size_units[sizeof(size_units) / sizeof(size_units[0]) - 2];
        while (u->mult > 1 && b % u->mult)
                u--;
        snprintf(out, n, "%" PRIu64 "%s", b / u->mult, u->mult > 1 ? u->name : "");
}

/* A size with a unit, at most K->hi bytes. */
static int set_size(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        uint64_t b = 0;
        int rc = scaled(v, size_units, SIZE_UNITS, false, &b, why, n);
        if (rc < 0)
                return rc;
        if (b > k->hi) {
                char hi[32];
                fmt_size(k->hi, hi, sizeof(hi));
                return say(why, n, -ERANGE, "%s is more than %s, the most it may be", v, hi);
        }
        *(uint64_t *)field = b;
        return 0;
}

/* NS written as a duration, in the largest unit that divides it exactly: 630720000000000000 ->
 * "7300d", 0 -> "0". For messages that state a bound. */
static void fmt_duration(uint64_t ns, char *out, size_t n)
{
        static const struct unit shown[] = {{"d", 86400000000000},
                                            {"h", 3600000000000},
                                            {"min", 60000000000},
                                            {"s", 1000000000},
                                            {"ms", 1000000},
                                            {"us", 1000},
                                            {"ns", 1},
                                            {NULL, 0}};
        const struct unit *u = shown;
        while (ns % u->mult)
                u++; /* ends at "ns" at the latest */
        if (ns == 0)
                snprintf(out, n, "0");
        else
                snprintf(out, n, "%" PRIu64 "%s", ns / u->mult, u->name);
}

static int set_duration(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        uint64_t ns = 0;
        int rc = config_parse_duration(v, &ns, why, n);
        if (rc < 0)
                return rc;
        if (ns < k->lo || ns > k->hi) {
                char lo[32], hi[32];
                fmt_duration(k->lo, lo, sizeof(lo));
                fmt_duration(k->hi, hi, sizeof(hi));
                return say(why, n, -ERANGE, "%s is out of range (%s to %s)", v, lo, hi);
        }
        *(uint64_t *)field = ns;
        return 0;
}

/* Arena and limiter names: [A-Za-z0-9_.-]{1,63}, and not "." or ".." (the arena's is a file). */
bool config_name_ok(const char *s)
{
        size_t len = strlen(s);
        if (len == 0 || len > THR_NAME_MAX || !strcmp(s, ".") || !strcmp(s, ".."))
                return false;
        return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") ==
               len;
}

static int set_name(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        if (!config_name_ok(v))
                return say(why, n, -EINVAL,
                           "bad name '%s': use 1 to 63 of A-Z a-z 0-9 _ . - (not . or ..)", v);
        snprintf(field, k->hi, "%s", v);
        return 0;
}

static int set_hugepages(const struct config_key *k, void *field, const char *v, char *why,
                         size_t n)
{
        static const char *const names[] = {"auto", "require", "off"};
        static const enum shm_hugepages vals[] = {SHM_HUGE_AUTO, SHM_HUGE_REQUIRE, SHM_HUGE_OFF};
        (void)k;
        for (size_t i = 0; i < 3; i++) {
                if (!strcasecmp(v, names[i])) {
                        *(enum shm_hugepages *)field = vals[i];
                        return 0;
                }
        }
        return say(why, n, -EINVAL, "unknown value '%s' (one of auto, require, off)", v);
}

/* What an insert does when the key's shard is full: see enum thr_on_full in shm/layout.h. */
static int set_on_full(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        static const char *const names[] = {"deny", "allow", "evict"};
        static const enum thr_on_full vals[] = {THR_FULL_DENY, THR_FULL_ALLOW, THR_FULL_EVICT};
        (void)k;
        for (size_t i = 0; i < 3; i++) {
                if (!strcasecmp(v, names[i])) {
                        *(uint32_t *)field = vals[i];
                        return 0;
                }
        }
        return say(why, n, -EINVAL, "unknown value '%s' (one of deny, allow, evict)", v);
}

static int set_clock_read(const struct config_key *k, void *field, const char *v, char *why,
                          size_t n)
{
        static const uint32_t vals[] = {THR_CLOCK_READ_AUTO, THR_CLOCK_READ_PRECISE,
                                        THR_CLOCK_READ_COARSE, THR_CLOCK_READ_TSC};
        (void)k;
        for (size_t i = 0; i < 4; i++) {
                if (!strcasecmp(v, shm_clock_read_name(vals[i]))) {
                        *(uint32_t *)field = vals[i];
                        return 0;
                }
        }
        return say(why, n, -EINVAL, "unknown value '%s' (one of auto, precise, coarse, tsc)", v);
}

static int set_clock(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        (void)k;
        if (!strcasecmp(v, "monotonic"))
                *(uint32_t *)field = THR_CLOCK_MONOTONIC;
        else if (!strcasecmp(v, "manual"))
                *(uint32_t *)field = THR_CLOCK_MANUAL;
        else
                return say(why, n, -EINVAL, "unknown clock '%s' (monotonic or manual)", v);
        return 0;
}

/* The owner must keep read-write: a restarted daemon re-opens the arena it created. */
static int set_mode(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        char *end;
        (void)k;
        if (!isdigit((unsigned char)*v))
                return say(why, n, -EINVAL, "bad mode '%s': expected octal such as 0660", v);
        unsigned long m = strtoul(v, &end, 8);
        if (*end || m > 0777)
                return say(why, n, -EINVAL, "bad mode '%s': expected octal 0000 to 0777", v);
        if ((m & 0600) != 0600)
                return say(why, n, -EINVAL, "bad mode '%s': the owner needs read and write (0600)",
                           v);
        *(mode_t *)field = (mode_t)m;
        return 0;
}

static int group_lookup(const char *name, gid_t *gid, char *why, size_t n)
{
        long hint = sysconf(_SC_GETGR_R_SIZE_MAX);
        size_t size = hint > 0 ? (size_t)hint : 4096;
        for (;;) {
                char *buf = malloc(size);
                if (!buf)
                        return say(why, n, -ENOMEM, "out of memory looking up group '%s'", name);
                struct group gr, *res = NULL;
                int rc = getgrnam_r(name, &gr, buf, size, &res);
                if (rc == 0 && res)
                        *gid = gr.gr_gid;
                free(buf);
                if (rc == ERANGE && size < (1u << 20)) {
                        size *= 2; /* a group with many members: retry with room */
                        continue;
                }
                if (rc)
                        return say(why, n, -rc, "cannot look up group '%s': %s", name,
                                   strerror(rc));
                return res ? 0 : say(why, n, -EINVAL, "unknown group '%s'", name);
        }
}

static int set_group(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        uint64_t x = 0;
        (void)k;
        if (!*v) {
                *(gid_t *)field = (gid_t)-1;
                return 0;
        }
        if (v[strspn(v, "0123456789")]) /* not all digits: a name (which may start with one) */
                return group_lookup(v, field, why, n);
        /* (gid_t)-1 means "no change" to fchown: it is not a group */
        int rc = num_range(v, 0, (gid_t)-2, &x, why, n);
        if (rc == 0)
                *(gid_t *)field = (gid_t)x;
        return rc;
}

/* Absolute only: a daemon's working directory is no place to resolve an arena path. */
static int set_dir(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        if (*v && *v != '/')
                return say(why, n, -EINVAL, "'%s' is not an absolute path", v);
        if (strlen(v) >= k->hi)
                return say(why, n, -ENAMETOOLONG, "path is longer than %" PRIu64 " bytes",
                           k->hi - 1);
        snprintf(field, k->hi, "%s", v);
        return 0;
}

/* HOST:PORT (host may be [v6]); empty turns the metrics endpoint off. */
/* HOST:PORT (HOST may be [v6]) or empty into FIELD; FORMS names what the key takes. */
static int set_host_port(const struct config_key *k, void *field, const char *v, const char *forms,
                         char *why, size_t n)
{
        const char *colon = strrchr(v, ':');
        uint64_t port = 0;
        if (*v && (!colon || colon == v))
                return say(why, n, -EINVAL, "'%s' is not %s", v, forms);
        if (*v && num_range(colon + 1, 1, 65535, &port, why, n) < 0)
                return say(why, n, -EINVAL, "bad port in '%s' (1 to 65535)", v);
        if (strlen(v) >= k->hi)
                return say(why, n, -ENAMETOOLONG, "'%s' is too long", v);
        snprintf(field, k->hi, "%s", v);
        return 0;
}

static int set_metrics(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        return set_host_port(k, field, v, "HOST:PORT (e.g. 127.0.0.1:9477)", why, n);
}

/* HOST:PORT (host may be [v6]) or unix:/absolute/path; empty turns the HTTP API off. */
static int set_http(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        if (!strncmp(v, "unix:", 5)) {
                if (v[5] != '/')
                        return say(why, n, -EINVAL, "'%s': unix: needs an absolute path", v);
                if (strlen(v + 5) >= 108)
                        return say(why, n, -ENAMETOOLONG,
                                   "'%s': a socket path is at most 107 bytes", v);
                if (strlen(v) >= k->hi)
                        return say(why, n, -ENAMETOOLONG, "'%s' is too long", v);
                snprintf(field, k->hi, "%s", v);
                return 0;
        }
        return set_host_port(k, field, v, "HOST:PORT or unix:/path (e.g. 127.0.0.1:9478)", why, n);
}

static int set_rate(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        struct shm_limiter_spec *l = field;
        (void)k;
        return config_parse_rate(v, &l->rate_n, &l->period_ns, why, n);
}

static int set_adaptive(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        struct shm_limiter_spec *l = field;
        (void)k;
        if (!strcasecmp(v, "aimd") || !strcasecmp(v, "no") || !strcasecmp(v, "off")) {
                l->adapt.on = !strcasecmp(v, "aimd");
                return 0;
        }
        return say(why, n, -EINVAL, "unknown adaptive '%s' (aimd, or off)", v);
}

/* min_rate, max_rate, increase: a rate (as rate =), kept as written until the section ends */
static int set_adapt_rate(const struct config_key *k, void *field, const char *v, char *why,
                          size_t n)
{
        struct shm_limiter_spec *l = field;
        uint64_t *num = k->lo == 0   ? &l->adapt.min_n
                        : k->lo == 1 ? &l->adapt.max_n
                                     : &l->adapt.inc_n;
        uint64_t *per = k->lo == 0   ? &l->adapt.min_p
                        : k->lo == 1 ? &l->adapt.max_p
                                     : &l->adapt.inc_p;
        int rc = config_parse_rate(v, num, per, why, n);
        if (rc == 0 && *num == 0)
                return say(why, n, -EINVAL, "'%s' is no rate: it must be above 0", v);
        return rc;
}

/* decrease: the factor an overloaded interval multiplies the rate by, "0.5" or "50%", in
 * (0, 1) exclusive, as whole percent */
static int set_decrease(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        (void)k;
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        bool pct = *end == '%';
        if (pct)
                end++;
        if (end == v || *end || errno || x != x)
                return say(why, n, -EINVAL, "'%s' is not a factor (e.g. 0.5 or 50%%)", v);
        double f = pct ? x / 100 : x;
        uint32_t whole = (uint32_t)(f * 100 + 0.5);
        if (!(f > 0 && f < 1) || whole < 1 || whole > 99)
                return say(why, n, -ERANGE,
                           "decrease %s must be between 1%% and 99%% (a factor in (0, 1))", v);
        ((struct shm_limiter_spec *)field)->adapt.dec_pct = whole;
        return 0;
}

static int set_kind(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        (void)k;
        if (!strcasecmp(v, "gcra"))
                *(uint32_t *)field = THR_KIND_GCRA;
        else if (!strcasecmp(v, "window"))
                *(uint32_t *)field = THR_KIND_WINDOW;
        else if (!strcasecmp(v, "semaphore"))
                *(uint32_t *)field = THR_KIND_SEMAPHORE;
        else if (!strcasecmp(v, "budget"))
                *(uint32_t *)field = THR_KIND_BUDGET;
        else if (!strcasecmp(v, "breaker"))
                *(uint32_t *)field = THR_KIND_BREAKER;
        else
                return say(why, n, -EINVAL,
                           "unknown kind '%s' (one of gcra, window, semaphore, budget, breaker)",
                           v);
        return 0;
}

/* A percentage: "50%" (the sign may be left out), K->lo to K->hi. */
static int set_percent(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        char num[32];
        size_t len = strlen(v);
        if (len && v[len - 1] == '%')
                len--;
        if (len == 0 || len >= sizeof(num))
                return say(why, n, -EINVAL, "'%s' is not a percentage (e.g. 50%%)", v);
        memcpy(num, v, len);
        num[len] = '\0';
        if (num_range(num, k->lo, k->hi, field, why, n) < 0)
                return say(why, n, -EINVAL,
                           "'%s' is not a percentage from %" PRIu64 "%% to %" PRIu64 "%% (e.g. "
                           "50%%)",
                           v, k->lo, k->hi);
        return 0;
}

/* priority_share: the least share of a semaphore key's grants kept for its oldest waiter, a
 * percentage; stored as "one grant in N" (N = 100 / share, rounded down: the share is at least
 * the one configured). 0%: strict priority. */
static int set_share(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        uint64_t pct = 0;
        int rc = set_percent(k, &pct, v, why, n);
        if (rc < 0)
                return rc;
        *(uint32_t *)field = pct ? (uint32_t)(100 / pct) : 0;
        return 0;
}

static int set_queue_full(const struct config_key *k, void *field, const char *v, char *why,
                          size_t n)
{
        static const char *const names[] = {"reject", "drop_oldest", "drop_lowest"};
        static const enum thr_queue_full vals[] = {THR_QUEUE_REJECT, THR_QUEUE_DROP_OLDEST,
                                                   THR_QUEUE_DROP_LOWEST};
        (void)k;
        for (size_t i = 0; i < 3; i++) {
                if (!strcasecmp(v, names[i])) {
                        *(uint32_t *)field = vals[i];
                        return 0;
                }
        }
        return say(why, n, -EINVAL, "unknown value '%s' (one of reject, drop_oldest, drop_lowest)",
                   v);
}

static int set_bool(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false",
                                                                                    "off", "0"};
        (void)k;
        for (size_t i = 0; i < 4; i++) {
                if (!strcasecmp(v, yes[i]) || !strcasecmp(v, no[i])) {
                        *(bool *)field = !strcasecmp(v, yes[i]);
                        return 0;
                }
        }
        return say(why, n, -EINVAL, "'%s' is not yes or no", v);
}

static int set_shards(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        uint64_t x = 0;
        int rc = num_range(v, k->lo, k->hi, &x, why, n);
        if (rc < 0)
                return rc;
        if (x & (x - 1))
                return say(why, n, -EINVAL, "%s is not a power of two (or 0 for automatic)", v);
        *(uint32_t *)field = (uint32_t)x;
        return 0;
}

/* ---------------------------------------------------------------- keys */

/* scope: local (the default) or global (a share of a fleet-wide limit leased from Redis). */
static int set_scope(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        (void)k;
        if (!strcasecmp(v, "local") || !strcasecmp(v, "global")) {
                *(bool *)field = !strcasecmp(v, "global");
                return 0;
        }
        return say(why, n, -EINVAL, "unknown value '%s' (local or global)", v);
}

static int set_redis_down(const struct config_key *k, void *field, const char *v, char *why,
                          size_t n)
{
        static const char *const names[] = {"keep", "closed", "open"};
        static const uint32_t vals[] = {SHM_GLOBAL_KEEP, SHM_GLOBAL_CLOSED, SHM_GLOBAL_OPEN};
        (void)k;
        for (size_t i = 0; i < 3; i++) {
                if (!strcasecmp(v, names[i])) {
                        *(uint32_t *)field = vals[i];
                        return 0;
                }
        }
        return say(why, n, -EINVAL, "unknown value '%s' (one of keep, closed, open)", v);
}

/* A name sent to Redis as part of a key or as a lease's holder: 1 to HI-1 bytes of
 * [A-Za-z0-9_.:/@-], so keys stay printable and a hash tag's braces cannot appear. */
static int set_word(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        size_t len = strlen(v);
        if (len == 0 || len >= k->hi)
                return say(why, n, -EINVAL, "'%s' must be 1 to %" PRIu64 " bytes", v, k->hi - 1);
        for (size_t i = 0; i < len; i++)
                if (!isalnum((unsigned char)v[i]) && !strchr("_.:/@-", v[i]))
                        return say(why, n, -EINVAL,
                                   "'%s': only A-Z a-z 0-9 and _ . : / @ - may be used", v);
        snprintf(field, k->hi, "%s", v);
        return 0;
}

/* A password: any bytes but blanks at either end (the INI reader strips them), at most HI-1. */
static int set_secret(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        if (strlen(v) >= k->hi)
                return say(why, n, -ENAMETOOLONG, "longer than %" PRIu64 " bytes", k->hi - 1);
        snprintf(field, k->hi, "%s", v);
        return 0;
}

/* HOST:PORT or unix:/path of the Redis server; required (an empty value is refused). */
static int set_redis(const struct config_key *k, void *field, const char *v, char *why, size_t n)
{
        if (!*v)
                return say(why, n, -EINVAL, "empty (HOST:PORT or unix:/path, e.g. 127.0.0.1:6379)");
        return set_http(k, field, v, why, n);
}

#define CFG(f)      offsetof(struct config, f)
#define CFG_SIZE(f) sizeof(((struct config *)0)->f)
#define LIM(f)      offsetof(struct shm_limiter_spec, f)

/* Bounds, and why: max_limiters: 128 B per entry, 65536 is far beyond CONFIG_MAX_LIMITERS plus
 * what reloads retire; max_readers: one 640 B record per client thread, 2^20 is past any sane
 * thread count; spare: see CONFIG_SPARE_MAX. */
const struct config_key config_arena_keys[] = {
    {"name", set_name, CFG(arena_name), 0, CFG_SIZE(arena_name)},
    {"hugepages", set_hugepages, CFG(arena.hugepages), 0, 0},
    {"mode", set_mode, CFG(arena.mode), 0, 0},
    {"group", set_group, CFG(arena.gid), 0, 0},
    {"clock", set_clock, CFG(arena.clock), 0, 0},
    {"max_limiters", set_u32, CFG(arena.max_limiters), 1, 65536},
    {"max_readers", set_u32, CFG(arena.max_readers), 1, 1u << 20},
    {"spare", set_size, CFG(arena.spare_bytes), 0, CONFIG_SPARE_MAX},
    {"dir", set_dir, CFG(arena_dir), 0, CFG_SIZE(arena_dir)},
    {NULL, NULL, 0, 0, 0}};

/* heartbeat_ms: >= 1 so the heartbeat never spins, <= an hour so a death shows eventually.
 * maintenance_ms: >= 1 so the maintenance thread never spins, <= a minute so idle keys and
 * retired slots are never held much past their time. scan_budget: >= 64 so every pass makes
 * progress on a large table, <= 2^30 (the largest capacity) so one pass stays bounded.
 * stall_ms: >= 1, and <= an hour so a stuck reader is reported eventually.
 * http_max_connections: 1 to 10000 (each may hold http_max_body and 64 KiB of libmicrohttpd's).
 * http_max_body: 256 B (the smallest request) to 16 MiB. http_max_wait_ms: 0 (never wait) to an
 * hour. http_waiters: 1 to 1024 threads. http_max_leases: 1 to 2^20. http_timeout_ms: 100 ms to
 * 10 min. http_token_file: an absolute path, as [arena] dir. */
const struct config_key config_daemon_keys[] = {
    {"heartbeat_ms", set_u64, CFG(heartbeat_ms), 1, 3600000},
    {"maintenance_ms", set_u64, CFG(maintenance_ms), 1, 60000},
    {"scan_budget", set_u64, CFG(scan_budget), 64, 1u << 30},
    {"stall_ms", set_u64, CFG(stall_ms), 1, 3600000},
    {"metrics", set_metrics, CFG(metrics_listen), 0, CFG_SIZE(metrics_listen)},
    {"http", set_http, CFG(http_listen), 0, CFG_SIZE(http_listen)},
    {"http_token_file", set_dir, CFG(http_token_file), 0, CFG_SIZE(http_token_file)},
    {"http_max_connections", set_u64, CFG(http_max_conn), 1, 10000},
    {"http_max_body", set_u64, CFG(http_max_body), 256, 16u << 20},
    {"http_max_wait_ms", set_u64, CFG(http_max_wait_ms), 0, 3600000},
    {"http_waiters", set_u64, CFG(http_waiters), 1, 1024},
    {"http_max_leases", set_u64, CFG(http_max_leases), 1, 1u << 20},
    {"http_timeout_ms", set_u64, CFG(http_timeout_ms), 100, 600000},
    {NULL, NULL, 0, 0, 0}};

/* [global]: interval from 10 ms (a renewal is one round trip) to a minute; lease_ttl from 100 ms
 * to an hour (end_global in config.c wants it at least twice the interval); timeout 1 ms to 10 s.
 */
const struct config_key config_global_keys[] = {
    {"redis", set_redis, CFG(global_redis), 0, CFG_SIZE(global_redis)},
    {"user", set_word, CFG(global_user), 0, CFG_SIZE(global_user)},
    {"password", set_secret, CFG(global_password), 0, CFG_SIZE(global_password)},
    {"prefix", set_word, CFG(global_prefix), 0, CFG_SIZE(global_prefix)},
    {"host_id", set_word, CFG(global_host), 0, CFG_SIZE(global_host)},
    {"interval", set_duration, CFG(global_interval_ns), 10000000, 60000000000ull},
    {"lease_ttl", set_duration, CFG(global_lease_ttl_ns), 100000000, 3600000000000ull},
    {"timeout", set_duration, CFG(global_timeout_ns), 1000000, 10000000000ull},
    {NULL, NULL, 0, 0, 0}};

/* kind: gcra (the default) or window; rate, burst and initial are GCRA's, limit, window and
 * serialize a window's (end_limiter in config.c refuses the others' keys). limit: its bound
 * (THR_WINDOW_MAX, with the reason) is shm_params_make's. window: 1 ns to 20 years.
 * capacity: up to 2^30 keys (96 GiB of slots), beyond any host and far from overflow in the
 * table's sizing. burst >= 1 by DESIGN.md section 5. idle_ttl: up to the 20 years of arena time
 * the state word's arithmetic is sized for (THR_HORIZON_NS); 0 means never. insert_wait: from
 * 1 us (a shorter wait gives up before a holder on another core could finish) to 60 s. */
const struct config_key config_limiter_keys[] = {
    [LK_RATE] = {"rate", set_rate, 0, 0, 0},
    [LK_BURST] = {"burst", set_u64, LIM(burst), 1, UINT64_MAX},
    [LK_INITIAL] = {"initial", set_u64, LIM(initial), 0, UINT64_MAX},
    [LK_CAPACITY] = {"capacity", set_u64, LIM(capacity), 1, 1u << 30},
    [LK_SHARDS] = {"shards", set_shards, LIM(shards), 0, THR_MAX_SHARDS},
    [LK_MAX_RESERVE] = {"max_reserve", set_duration, LIM(max_reserve_ns), 0, UINT64_MAX},
    [LK_IDLE_TTL] = {"idle_ttl", set_duration, LIM(idle_ttl_ns), 0, THR_HORIZON_NS},
    [LK_ON_FULL] = {"on_full", set_on_full, LIM(on_full), 0, 0},
    [LK_INSERT_WAIT] = {"insert_wait", set_duration, LIM(lock_wait_ns), 1000, THR_LOCK_WAIT_MAX_NS},
    [LK_KIND] = {"kind", set_kind, LIM(kind), 0, 0},
    [LK_LIMIT] = {"limit", set_u64, LIM(rate_n), 1, UINT64_MAX},
    [LK_WINDOW] = {"window", set_duration, LIM(period_ns), 1, THR_HORIZON_NS},
    [LK_SERIALIZE] = {"serialize", set_bool, LIM(serialize), 0, 0},
    [LK_MAX] = {"max", set_u64, LIM(rate_n), 1, THR_SEM_MAX},
    [LK_LEASES] = {"leases_per_key", set_u64, LIM(leases), 1, THR_SEM_LEASES_MAX},
    [LK_LEVEL] = {"level", set_u64, LIM(level), 0, THR_SEM_LEVELS - 1},
    [LK_MAX_WAITERS] = {"max_waiters", set_u64, LIM(max_waiters), 0, THR_SEMQ_WAITERS_MAX},
    [LK_ON_QUEUE_FULL] = {"on_queue_full", set_queue_full, LIM(on_queue_full), 0, 0},
    [LK_PRIORITY_SHARE] = {"priority_share", set_share, LIM(priority_share), 0, 100},
    [LK_CLOCK_READ] = {"clock_read", set_clock_read, LIM(clock_read), 0, 0},
    [LK_ADAPTIVE] = {"adaptive", set_adaptive, 0, 0, 0},
    [LK_MIN_RATE] = {"min_rate", set_adapt_rate, 0, 0, 0},
    [LK_MAX_RATE] = {"max_rate", set_adapt_rate, 0, 1, 0},
    [LK_INCREASE] = {"increase", set_adapt_rate, 0, 2, 0},
    [LK_DECREASE] = {"decrease", set_decrease, 0, 0, 0},
    [LK_ADAPT_INTERVAL] = {"adapt_interval", set_duration, LIM(adapt.interval_ns), 1000000,
                           3600000000000ull},
    /* breaker (shm/breaker.h): the state word's fields bound failures, probes and successes;
     * min_calls by what the window's 8 buckets count; cooldown and probe_timeout from 1 ms (the
     * word counts 1.05 ms units: less is rounded up to one anyway, and a report is counted only
     * within 21 x the smaller of the two, which a cooldown of nanoseconds would make useless) */
    [LK_FAILURES] = {"failures", set_u64, LIM(failures), 0, THR_BRK_FAILURES_MAX},
    [LK_FAILURE_RATE] = {"failure_rate", set_percent, LIM(failure_rate), 0, 100},
    [LK_MIN_CALLS] = {"min_calls", set_u64, LIM(min_calls), 1, THR_BRK_MIN_CALLS_MAX},
    [LK_COOLDOWN] = {"cooldown", set_duration, LIM(cooldown_ns), 1000000, THR_HORIZON_NS},
    [LK_PROBES] = {"probes", set_u64, LIM(probes), 1, THR_BRK_PROBES_MAX},
    [LK_PROBE_TIMEOUT] = {"probe_timeout", set_duration, LIM(probe_timeout_ns), 1000000,
                          THR_HORIZON_NS},
    [LK_SUCCESSES] = {"successes", set_u64, LIM(successes), 1, THR_BRK_SUCCESSES_MAX},
    /* global limiters (daemon/global.c): expected_hosts up to 100 000 (a share of 10 ppm);
     * keep_for up to a day; min_share up to 50% (two hosts could not both have more) */
    [LK_SCOPE] = {"scope", set_scope, LIM(global.on), 0, 0},
    [LK_EXPECTED_HOSTS] = {"expected_hosts", set_u64, LIM(global.expected_hosts), 1, 100000},
    [LK_ON_REDIS_DOWN] = {"on_redis_down", set_redis_down, LIM(global.on_down), 0, 0},
    [LK_KEEP_FOR] = {"keep_for", set_duration, LIM(global.keep_ns), 0, 86400000000000ull},
    [LK_MIN_SHARE] = {"min_share", set_percent, LIM(global.min_share_pct), 0, 50},
    [LK_COUNT] = {NULL, NULL, 0, 0, 0}};

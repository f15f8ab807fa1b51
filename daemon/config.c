/*
 * config.c - throttled's INI configuration, read with inih and checked with a line number for
 * every fault.
 *
 * inih as packaged (INI_HANDLER_LINENO 0, no call on a new section) tells its handler neither the
 * line nor where a section starts, and it truncates section names to 49 bytes. So the file reaches
 * inih through our own line reader, which
 *   - counts physical lines, so the handler always knows the line it is called for;
 *   - strips leading blanks, so inih's multi-line continuation never applies: every line stands
 *     alone, and an indented key is just a key;
 *   - reads section headers itself (whole name, line, duplicates, sections with no keys);
 *   - checks each line's syntax, so every malformed line is reported, not only the first one that
 *     inih's return value would name.
 * The handler then only sees key = value pairs.
 *
 * A value is checked as soon as it is read. What depends on several keys (burst defaults to the
 * rate's N, initial to burst, the exactness and overflow of the parameters) is checked when the
 * whole file has been read, by calling shm_params_make exactly as the arena will. Every fault is
 * collected; none stops the parse.
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "config.h"

/* ---------------------------------------------------------------- types */

enum sect_kind { SECT_NONE, SECT_ARENA, SECT_DAEMON, SECT_LIMITER, SECT_SKIP };

/* Keys of a limiter section, in the order of limiter_keys[]. */
enum { LK_RATE, LK_BURST, LK_INITIAL, LK_CAPACITY, LK_SHARDS, LK_MAX_RESERVE, LK_COUNT };

/* Where each limiter's keys were, for the faults found once the whole file is read. */
struct lim_lines {
        int header;       /* line of [name] */
        int at[LK_COUNT]; /* line of each key, 0 if absent */
        bool bad;         /* a value was refused: the later cross-checks would only echo it */
        bool garbled;     /* a line was unreadable: it may have been the rate */
};

struct parse {
        struct config *cfg;
        struct shm_limiter_spec tmpl; /* what a new limiter starts from */
        const char *path;
        FILE *f;
        char *line; /* getline buffer */
        size_t cap;
        int read_errno;
        int lineno;
        enum sect_kind kind;
        uint32_t seen; /* keys already set in the current section, one bit per key */
        size_t lim;    /* current limiter */
        int arena_line, daemon_line;
        struct lim_lines lines[CONFIG_MAX_LIMITERS];
        char *err;
        size_t errlen, errpos;
        bool errfull;
        unsigned nerr;
};

struct key;
typedef int (*setter_fn)(const struct key *k, void *field, const char *v, char *why, size_t n);

struct key {
        const char *name;
        setter_fn set;
        size_t off;      /* of the field in struct config, or in struct shm_limiter_spec */
        uint64_t lo, hi; /* bounds of a number; HI is the buffer size of a string */
};

/* ---------------------------------------------------------------- defaults */

/* Every default, with its reason. LIM receives what a new limiter section starts from. */
static void config_defaults(struct config *cfg, struct shm_limiter_spec *lim)
{
        memset(cfg, 0, sizeof(*cfg));
        memset(lim, 0, sizeof(*lim));
        /* The name clients, shmctl and the demo open when not told otherwise. */
        snprintf(cfg->arena_name, sizeof(cfg->arena_name), "main");
        /* Hugepages where the host has a pool, else /dev/shm: the default works on any host. */
        cfg->arena.hugepages = SHM_HUGE_AUTO;
        /* Owner and group may map the arena; anyone else gets -EACCES (the trust model). */
        cfg->arena.mode = 0660;
        /* Never chown unless asked: the group is a security decision for the operator. */
        cfg->arena.gid = (gid_t)-1;
        /* Real time; the manual clock exists only so tests can set the time. */
        cfg->arena.clock = THR_CLOCK_MONOTONIC;
        /* Room for reloads to add limiters without recreating the arena; 128 B per entry. */
        cfg->arena.max_limiters = 64;
        /* One record per client thread; 1024 records cost 128 KiB. */
        cfg->arena.max_readers = 1024;
        /* Heap left for limiters added by a reload: about 130 000 key slots. */
        cfg->arena.spare_bytes = 16ull << 20;
        /* A heartbeat a second: a dead daemon shows within seconds, at no measurable cost. */
        cfg->heartbeat_ms = 1000;
        /* Metrics on loopback only: exposing them further is the operator's choice. */
        snprintf(cfg->metrics_listen, sizeof(cfg->metrics_listen), "127.0.0.1:9477");
        /* 65536 keys (8 MiB of slots): a generous per-key limiter that stays cheap. */
        lim->capacity = 65536;
        /* 0: the arena picks a shard count from the capacity. */
        lim->shards = 0;
        /* Waiters may reserve up to a minute ahead, so they cannot starve try() for hours. */
        lim->max_reserve_ns = 60ull * 1000000000;
        /* burst and initial have derived defaults, applied in end_limiter(): burst = the rate's
         * N (one period's worth at once, as a token bucket user expects), initial = burst (a new
         * key starts full, so a first burst is never refused). */
}

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

/* Append LEN bytes to the error text; once it is full, end it with "..." and drop the rest. */
static void err_put(struct parse *p, const char *s, size_t len)
{
        if (!p->err || p->errlen == 0 || p->errfull)
                return;
        size_t room = p->errlen - 1 - p->errpos;
        bool fits = len <= room;
        size_t take = fits ? len : room;
        memcpy(p->err + p->errpos, s, take);
        p->errpos += take;
        p->err[p->errpos] = '\0';
        if (fits)
                return;
        p->errfull = true;
        size_t dots = p->errlen - 1 < 3 ? p->errlen - 1 : 3;
        memcpy(p->err + p->errlen - 1 - dots, "...", dots);
}

static void report(struct parse *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record one fault as "PATH:LINE: message" (or "PATH: message" when no line applies). */
static void report(struct parse *p, int line, const char *fmt, ...)
{
        char buf[512];
        int n = line > 0 ? snprintf(buf, sizeof(buf), "%s:%d: ", p->path, line)
                         : snprintf(buf, sizeof(buf), "%s: ", p->path);
        if (n < 0 || (size_t)n >= sizeof(buf))
                n = 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
        va_end(ap);
        size_t len = strlen(buf);
        if (len == sizeof(buf) - 1)
                len--; /* keep room for the newline */
        buf[len++] = '\n';
        err_put(p, buf, len);
        p->nerr++;
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

static int set_u64(const struct key *k, void *field, const char *v, char *why, size_t n)
{
        return num_range(v, k->lo, k->hi, field, why, n);
}

static int set_u32(const struct key *k, void *field, const char *v, char *why, size_t n)
{
        uint64_t x = 0;
        int rc = num_range(v, k->lo, k->hi, &x, why, n);
        if (rc == 0)
                *(uint32_t *)field = (uint32_t)x;
        return rc;
}

static int set_size(const struct key *k, void *field, const char *v, char *why, size_t n)
{
        (void)k;
        return scaled(v, size_units, SIZE_UNITS, false, field, why, n);
}

static int set_duration(const struct key *k, void *field, const char *v, char *why, size_t n)
{
        (void)k;
        return config_parse_duration(v, field, why, n);
}

/* Arena and limiter names: [A-Za-z0-9_.-]{1,63}, and not "." or ".." (the arena's is a file). */
static bool name_ok(const char *s)
{
        size_t len = strlen(s);
        if (len == 0 || len > THR_NAME_MAX || !strcmp(s, ".") || !strcmp(s, ".."))
                return false;
        return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") ==
               len;
}

static int set_name(const struct key *k, void *field, const char *v, char *why, size_t n)
{
        if (!name_ok(v))
                return say(why, n, -EINVAL,
                           "bad name '%s': use 1 to 63 of A-Z a-z 0-9 _ . - (not . or ..)", v);
        snprintf(field, k->hi, "%s", v);
        return 0;
}

static int set_hugepages(const struct key *k, void *field, const char *v, char *why, size_t n)
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

static int set_clock(const struct key *k, void *field, const char *v, char *why, size_t n)
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
static int set_mode(const struct key *k, void *field, const char *v, char *why, size_t n)
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

static int set_group(const struct key *k, void *field, const char *v, char *why, size_t n)
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
static int set_dir(const struct key *k, void *field, const char *v, char *why, size_t n)
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
static int set_metrics(const struct key *k, void *field, const char *v, char *why, size_t n)
{
        const char *colon = strrchr(v, ':');
        uint64_t port = 0;
        if (*v && (!colon || colon == v))
                return say(why, n, -EINVAL, "'%s' is not HOST:PORT (e.g. 127.0.0.1:9477)", v);
        if (*v && num_range(colon + 1, 1, 65535, &port, why, n) < 0)
                return say(why, n, -EINVAL, "bad port in '%s' (1 to 65535)", v);
        if (strlen(v) >= k->hi)
                return say(why, n, -ENAMETOOLONG, "'%s' is too long", v);
        snprintf(field, k->hi, "%s", v);
        return 0;
}

static int set_rate(const struct key *k, void *field, const char *v, char *why, size_t n)
{
        struct shm_limiter_spec *l = field;
        (void)k;
        return config_parse_rate(v, &l->rate_n, &l->period_ns, why, n);
}

static int set_shards(const struct key *k, void *field, const char *v, char *why, size_t n)
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

#define CFG(f)      offsetof(struct config, f)
#define CFG_SIZE(f) sizeof(((struct config *)0)->f)
#define LIM(f)      offsetof(struct shm_limiter_spec, f)

/* Bounds, and why: max_limiters: 128 B per entry, 65536 is far beyond CONFIG_MAX_LIMITERS plus
 * what reloads retire; max_readers: one 128 B record per client thread, 2^20 is past any sane
 * thread count. */
static const struct key arena_keys[] = {
    {"name", set_name, CFG(arena_name), 0, CFG_SIZE(arena_name)},
    {"hugepages", set_hugepages, CFG(arena.hugepages), 0, 0},
    {"mode", set_mode, CFG(arena.mode), 0, 0},
    {"group", set_group, CFG(arena.gid), 0, 0},
    {"clock", set_clock, CFG(arena.clock), 0, 0},
    {"max_limiters", set_u32, CFG(arena.max_limiters), 1, 65536},
    {"max_readers", set_u32, CFG(arena.max_readers), 1, 1u << 20},
    {"spare", set_size, CFG(arena.spare_bytes), 0, 0},
    {"dir", set_dir, CFG(arena_dir), 0, CFG_SIZE(arena_dir)},
    {NULL, NULL, 0, 0, 0}};

/* heartbeat_ms: >= 1 so the heartbeat never spins, <= an hour so a death shows eventually. */
static const struct key daemon_keys[] = {
    {"heartbeat_ms", set_u64, CFG(heartbeat_ms), 1, 3600000},
    {"metrics", set_metrics, CFG(metrics_listen), 0, CFG_SIZE(metrics_listen)},
    {NULL, NULL, 0, 0, 0}};

/* capacity: up to 2^30 keys (128 GiB of slots), beyond any host and far from overflow in the
 * table's sizing. burst >= 1 by DESIGN.md section 5. */
static const struct key limiter_keys[] = {
    [LK_RATE] = {"rate", set_rate, 0, 0, 0},
    [LK_BURST] = {"burst", set_u64, LIM(burst), 1, UINT64_MAX},
    [LK_INITIAL] = {"initial", set_u64, LIM(initial), 0, UINT64_MAX},
    [LK_CAPACITY] = {"capacity", set_u64, LIM(capacity), 1, 1u << 30},
    [LK_SHARDS] = {"shards", set_shards, LIM(shards), 0, THR_MAX_SHARDS},
    [LK_MAX_RESERVE] = {"max_reserve", set_duration, LIM(max_reserve_ns), 0, 0},
    [LK_COUNT] = {NULL, NULL, 0, 0, 0}};

/* ---------------------------------------------------------------- sections */

/* The checks that need all of a limiter's keys, run when its section ends. */
static void end_limiter(struct parse *p, size_t i)
{
        struct shm_limiter_spec *l = &p->cfg->limiters[i];
        struct lim_lines *ln = &p->lines[i];
        struct thr_params prm;
        char why[320];
        if (!ln->at[LK_RATE]) {
                if (!ln->garbled)
                        report(p, ln->header, "limiter '%s' has no rate (e.g. rate = 100/s)",
                               l->name);
                return;
        }
        if (ln->bad)
                return;
        if (!ln->at[LK_BURST])
                l->burst = l->rate_n;
        if (!ln->at[LK_INITIAL])
                l->initial = l->burst;
        if (l->initial > l->burst) {
                report(p, ln->at[LK_INITIAL],
                       "limiter '%s': initial %" PRIu64 " exceeds burst %" PRIu64, l->name,
                       l->initial, l->burst);
                return;
        }
        if (shm_params_make(l, 0, &prm, why, sizeof(why)) < 0)
                report(p, ln->at[LK_RATE], "%s", why);
}

/* End the current section (a limiter's gets its whole-section checks); ignore keys until the
 * next header. */
static void close_section(struct parse *p)
{
        if (p->kind == SECT_LIMITER)
                end_limiter(p, p->lim);
        p->kind = SECT_SKIP;
        p->seen = 0;
}

static void begin_fixed(struct parse *p, enum sect_kind kind, int *first, const char *name)
{
        if (*first) {
                report(p, p->lineno, "duplicate section [%s] (first at line %d)", name, *first);
                return;
        }
        *first = p->lineno;
        p->kind = kind;
}

static void begin_limiter(struct parse *p, const char *name)
{
        struct config *cfg = p->cfg;
        p->kind = SECT_SKIP; /* the keys of a refused section would only add noise */
        if (!name_ok(name)) {
                report(p, p->lineno, "bad limiter name '%s': use 1 to 63 of A-Z a-z 0-9 _ . -",
                       name);
                return;
        }
        for (size_t i = 0; i < cfg->nlimiters; i++) {
                if (!strcmp(cfg->limiters[i].name, name)) {
                        report(p, p->lineno, "duplicate limiter '%s' (first at line %d)", name,
                               p->lines[i].header);
                        return;
                }
        }
        if (cfg->nlimiters == CONFIG_MAX_LIMITERS) {
                report(p, p->lineno, "too many limiters (at most %d)", CONFIG_MAX_LIMITERS);
                return;
        }
        p->lim = cfg->nlimiters++;
        cfg->limiters[p->lim] = p->tmpl;
        snprintf(cfg->limiters[p->lim].name, sizeof(cfg->limiters[p->lim].name), "%s", name);
        p->lines[p->lim] = (struct lim_lines){.header = p->lineno};
        p->kind = SECT_LIMITER;
}

/* S is a trimmed line starting with '['. */
static void begin_section(struct parse *p, const char *s)
{
        char name[THR_NAME_MAX + 1];
        const char *close = strchr(s, ']');
        const char *tail = close ? close + 1 + strspn(close + 1, " \t") : NULL;
        close_section(p);
        if (!close || (*tail && *tail != ';' && *tail != '#')) {
                report(p, p->lineno, "malformed section header (expected [name])");
                return;
        }
        size_t len = (size_t)(close - s - 1);
        if (len > THR_NAME_MAX) {
                report(p, p->lineno, "section name longer than %u bytes", THR_NAME_MAX);
                return;
        }
        memcpy(name, s + 1, len);
        name[len] = '\0';
        if (!strcmp(name, "arena"))
                begin_fixed(p, SECT_ARENA, &p->arena_line, "arena");
        else if (!strcmp(name, "daemon"))
                begin_fixed(p, SECT_DAEMON, &p->daemon_line, "daemon");
        else
                begin_limiter(p, name);
}

/* ---------------------------------------------------------------- inih glue */

/* Whether inih will find '=' or ':' before an inline comment (" ;"), as its parser does. */
static bool has_separator(const char *s)
{
        for (const char *c = s; *c; c++) {
                if (*c == '=' || *c == ':')
                        return true;
                if (*c == ';' && c > s && isspace((unsigned char)c[-1]))
                        return false;
        }
        return false;
}

/* Trim blanks (and a UTF-8 BOM on line 1) in place; check syntax; track sections. */
static const char *take_line(struct parse *p, char *s, size_t len, int num)
{
        const char *fault = NULL;
        char toolong[64];
        snprintf(toolong, sizeof(toolong), "line is longer than %d bytes", num - 2);
        if (strlen(s) != len)
                fault = "line contains a NUL byte";
        if (p->lineno == 1 && !strncmp(s, "\xEF\xBB\xBF", 3))
                s += 3;
        s += strspn(s, " \t\r\n\v\f");
        for (char *e = s + strlen(s); e > s && isspace((unsigned char)e[-1]);)
                *--e = '\0';
        if (!fault && strlen(s) + 2 > (size_t)num) /* inih needs room for "\n" and the NUL */
                fault = toolong;
        else if (!fault && *s == '[')
                begin_section(p, s);
        else if (!fault && *s && *s != ';' && *s != '#' && !has_separator(s))
                fault = "expected 'key = value' or '[section]'";
        if (!fault)
                return s;
        report(p, p->lineno, "%s", fault);
        if (*s == '[')
                close_section(p); /* a header we could not read: ignore its keys */
        else if (p->kind == SECT_LIMITER)
                p->lines[p->lim].garbled = true; /* the lost line may have been the rate */
        return "";
}

/* ini_reader: one physical line per call, blanks stripped, so inih's line count is ours. */
static char *read_line(char *str, int num, void *stream)
{
        struct parse *p = stream;
        errno = 0;
        ssize_t len = getline(&p->line, &p->cap, p->f);
        if (len < 0) {
                if (ferror(p->f))
                        p->read_errno = errno ? errno : EIO;
                return NULL;
        }
        p->lineno++;
        const char *s = take_line(p, p->line, (size_t)len, num);
        snprintf(str, (size_t)num, "%s\n", s);
        return str;
}

static void list_keys(const struct key *keys, char *out, size_t n)
{
        size_t pos = 0;
        out[0] = '\0';
        for (; keys->name && pos < n; keys++) {
                int w = snprintf(out + pos, n - pos, "%s%s", pos ? " " : "", keys->name);
                pos += w > 0 ? (size_t)w : 0;
        }
}

static void set_key(struct parse *p, const struct key *keys, const char *sect, const char *name,
                    const char *value)
{
        char why[256], known[128];
        char *base = p->kind == SECT_LIMITER ? (char *)&p->cfg->limiters[p->lim] : (char *)p->cfg;
        for (unsigned i = 0; keys[i].name; i++) {
                if (strcmp(keys[i].name, name) != 0)
                        continue;
                if (p->kind == SECT_LIMITER)
                        p->lines[p->lim].at[i] = p->lineno;
                if (p->seen & (1u << i)) {
                        report(p, p->lineno, "[%s] %s is set twice", sect, name);
                } else {
                        p->seen |= 1u << i;
                        if (keys[i].set(&keys[i], base + keys[i].off, value, why, sizeof(why)) == 0)
                                return;
                        report(p, p->lineno, "[%s] %s: %s", sect, name, why);
                }
                if (p->kind == SECT_LIMITER)
                        p->lines[p->lim].bad = true;
                return;
        }
        list_keys(keys, known, sizeof(known));
        report(p, p->lineno, "unknown key '%s' in [%s] (known: %s)", name, sect, known);
}

/* ini_handler. SECTION is inih's copy, truncated to 49 bytes: the reader's is used instead. */
static int on_pair(void *user, const char *section, const char *name, const char *value)
{
        struct parse *p = user;
        (void)section;
        if (!name || !value)
                return 1; /* a library built to announce sections: the reader already did */
        switch (p->kind) {
        case SECT_NONE:
                report(p, p->lineno, "key '%s' before any [section]", name);
                break;
        case SECT_ARENA:
                set_key(p, arena_keys, "arena", name, value);
                break;
        case SECT_DAEMON:
                set_key(p, daemon_keys, "daemon", name, value);
                break;
        case SECT_LIMITER:
                set_key(p, limiter_keys, p->cfg->limiters[p->lim].name, name, value);
                break;
        case SECT_SKIP:
                break;
        }
        return 1; /* faults are collected here; inih's own error return means syntax only */
}

/* ---------------------------------------------------------------- the whole file */

static void finish(struct parse *p)
{
        struct config *cfg = p->cfg;
        struct shm_arena_spec *a = &cfg->arena;
        close_section(p);
        if (cfg->nlimiters > a->max_limiters)
                report(p, p->lines[a->max_limiters].header,
                       "limiter '%s' is number %" PRIu32 ", above [arena] max_limiters = %" PRIu32,
                       cfg->limiters[a->max_limiters].name, a->max_limiters + 1, a->max_limiters);
        snprintf(a->name, sizeof(a->name), "%s", cfg->arena_name);
        a->dir = cfg->arena_dir[0] ? cfg->arena_dir : NULL;
        a->nlimiters = cfg->nlimiters;
        a->limiters = cfg->limiters;
}

static int parse_file(struct parse *p)
{
        int rc = ini_parse_stream(read_line, p, on_pair, p);
        free(p->line);
        if (p->read_errno) {
                report(p, 0, "cannot read: %s", strerror(p->read_errno));
                return -p->read_errno;
        }
        if (rc == -2) {
                report(p, 0, "out of memory");
                return -ENOMEM;
        }
        if (rc > 0 && p->nerr == 0)
                report(p, rc, "syntax error"); /* inih refused a line our reader accepted */
        finish(p);
        return p->nerr ? -EINVAL : 0;
}

int config_load(const char *path, struct config *cfg, char *err, size_t errlen)
{
        struct parse *p = calloc(1, sizeof(*p)); /* ~5 KiB of line records: keep it off the stack */
        if (!p)
                return -ENOMEM;
        p->cfg = cfg;
        p->path = path;
        p->err = err;
        p->errlen = errlen;
        if (err && errlen)
                err[0] = '\0';
        config_defaults(cfg, &p->tmpl);
        int rc = -ENAMETOOLONG;
        if (strlen(path) >= sizeof(cfg->path)) {
                report(p, 0, "path is longer than %zu bytes", sizeof(cfg->path) - 1);
                goto out;
        }
        snprintf(cfg->path, sizeof(cfg->path), "%s", path);
        p->f = fopen(path, "re");
        if (!p->f) {
                rc = -errno;
                report(p, 0, "cannot open: %s", strerror(errno));
                goto out;
        }
        rc = parse_file(p);
        fclose(p->f);
out:
        free(p);
        return rc;
}

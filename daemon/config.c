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
 * collected; none stops the parse. The keys each section accepts, and the parsers of their
 * values, are in config_values.c.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "config.h"
#include "config_internal.h"

/* ---------------------------------------------------------------- types */

enum sect_kind {
        SECT_NONE,
        SECT_ARENA,
        SECT_DAEMON,
        SECT_GLOBAL,
        SECT_LIMITER,
        SECT_GROUP,
        SECT_SKIP
};

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
        uint64_t seen; /* keys already set in the current section, one bit per key (a
                        * uint32_t once: the 33rd limiter key, priority_share, shifted past it) */
        size_t lim;    /* current limiter */
        int arena_line, daemon_line, global_line;
        struct lim_lines lines[CONFIG_MAX_LIMITERS];
        int group_line[CONFIG_MAX_GROUPS]; /* line of each group's compose = */
        char *err;
        size_t errlen, errpos;
        bool errfull;
        unsigned nerr;
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
        /* One record per client thread; 1024 records cost 640 KiB. */
        cfg->arena.max_readers = 1024;
        /* Heap left for limiters added by a reload: 262 144 slots of 64 bytes, tables for
         * about 174 000 keys of capacity (96 bytes a key), or 16 million reload records. */
        cfg->arena.spare_bytes = 16ull << 20;
        /* A heartbeat a second: a dead daemon shows within seconds, at no measurable cost. */
        cfg->heartbeat_ms = 1000;
        /* Ten maintenance passes a second: an idle key leaves about idle_ttl after its last
         * use, and a retired slot is reusable a tenth of a second after its grace period. */
        cfg->maintenance_ms = 100;
        /* 65536 slots per limiter per pass: a default-capacity table is swept whole each pass,
         * a larger one over several, so no pass holds the thread for long. */
        cfg->scan_budget = 65536;
        /* A decision takes nanoseconds: a reader that blocks a grace period for a second is
         * stuck (stopped or preempted for good), not slow, and worth a report. */
        cfg->stall_ms = 1000;
        /* Metrics on loopback only: exposing them further is the operator's choice. */
        snprintf(cfg->metrics_listen, sizeof(cfg->metrics_listen), "127.0.0.1:9477");
        /* The HTTP API is off unless configured: a built-in port would make every daemon on a
         * host (the tests start dozens at once) fight for it; the shipped throttled.conf turns
         * it on, on loopback (127.0.0.1:9478). */
        cfg->http_listen[0] = '\0';
        /* 64 connections: far more than a host's services need to share a few limits; each may
         * hold http_max_body plus libmicrohttpd's 64 KiB. */
        cfg->http_max_conn = 64;
        /* 64 KiB: a composed call of 8 members with 104-byte keys is under 2 KiB. */
        cfg->http_max_body = 65536;
        /* A minute, as a limiter's max_reserve: no HTTP client waits longer for one request. */
        cfg->http_max_wait_ms = 60000;
        /* 16 threads for kernel waits (leases, spends, composed acquires); rate waits take none. */
        cfg->http_waiters = 16;
        /* 1024 leases held for HTTP clients (about 200 bytes each). */
        cfg->http_max_leases = 1024;
        /* 10 s from connect (or the last response) to a whole request: slow clients go. */
        cfg->http_timeout_ms = 10000;
        /* Global limiters: keys under "throttle:" so a shared Redis tells them apart. */
        snprintf(cfg->global_prefix, sizeof(cfg->global_prefix), "throttle");
        /* A renewal every 100 ms: a share follows demand within a few tenths of a second, at
         * 10 round trips a second per global limiter. */
        cfg->global_interval_ns = 100000000;
        /* A lease lasts 2 s (20 renewals): a lost reply or two changes nothing, and a host that
         * is gone gives its share back within 2 s. */
        cfg->global_lease_ttl_ns = 2000000000;
        /* 200 ms to connect or answer: Redis on a LAN answers in well under a millisecond. */
        cfg->global_timeout_ns = 200000000;
        /* 65536 keys (6 MiB of slots, 96 bytes a key): a generous per-key limiter that
         * stays cheap. */
        lim->capacity = 65536;
        /* 0: the arena picks a shard count from the capacity. */
        lim->shards = 0;
        /* Waiters may reserve up to a minute ahead, so they cannot starve try() for hours. */
        lim->max_reserve_ns = 60ull * 1000000000;
        /* A key whose bucket has been full for a minute is gone from the caller's mind; its slot
         * is worth more to a new key, and evicting a full key never admits more than keeping it. */
        lim->idle_ttl_ns = 60ull * 1000000000;
        /* A full table denies new keys: the limit always holds and no key's debt is touched;
         * allow and evict trade that for availability, an operator's choice. */
        lim->on_full = THR_FULL_DENY;
        /* Redis unreachable: keep the last share for 10 s (a restart of Redis takes about that),
         * then fall to the safe share; and grant a live host at least 1% of a global limit, so its
         * first requests after a quiet spell are not all denied until its next renewal. */
        lim->global.on_down = SHM_GLOBAL_KEEP;
        lim->global.keep_ns = 10ull * 1000000000;
        lim->global.min_share_pct = 1;
        /* A shard's insert lock is held for microseconds (an insert) to a fraction of a
         * millisecond (the daemon's segment of a shard), but a holder preempted on a loaded host
         * may be off the CPU for a scheduler slice (a few ms, more with many runnable tasks):
         * 20 ms rides that out instead of denying new keys, and still bounds what a stopped
         * holder costs a new key before on_full answers. */
        lim->lock_wait_ns = THR_LOCK_WAIT_NS;
        /* The cheapest clock whose lag is at most T / 64 (shm/clock.h): a slow limiter needs no
         * nanosecond clock per decision; a fast one keeps the precise clock. */
        lim->clock_read = THR_CLOCK_READ_AUTO;
        /* adaptive = aimd: halve the rate after an interval with overload (TCP's and Netflix
         * concurrency-limits' AIMD factor), one step a second (a downstream's overload shows
         * within its own windows, commonly a second) */
        lim->adapt.dec_pct = 50;
        lim->adapt.interval_ns = 1000000000ull;
        /* Breakers (kind = breaker): a tripped downstream gets 30 s before a probe, one probe at
         * a time whose one success closes it (the common breaker); a probe that has not answered
         * in 30 s is taken as lost (its holder died or hangs) so another may probe; the failure
         * rate needs 10 calls before it judges (one failure in two calls is no rate). */
        lim->cooldown_ns = 30ull * 1000000000;
        lim->probe_timeout_ns = 30ull * 1000000000;
        lim->probes = 1;
        lim->successes = 1;
        lim->min_calls = 10;
        /* burst and initial have derived defaults, applied in end_limiter(): burst = the rate's
         * N (one period's worth at once, as a token bucket user expects), initial = burst (a new
         * key starts full, so a first burst is never refused). */
}

/* ---------------------------------------------------------------- errors */

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

/* ---------------------------------------------------------------- sections */

/* A limiter's keys that its kind does not take: each reported at its line. Returns how many. */
static int foreign_keys(struct parse *p, const struct shm_limiter_spec *l,
                        const struct lim_lines *ln)
{
        enum { G = 1, W = 2, S = 4, B = 8, K = 16 }; /* the kinds that take a key */
        static const struct {
                int key, kinds;
        } only[] = {{LK_RATE, G},
                    {LK_BURST, G},
                    {LK_INITIAL, G | B},
                    {LK_LIMIT, W},
                    {LK_WINDOW, W | K},
                    {LK_SERIALIZE, W},
                    {LK_MAX_RESERVE, G | W},
                    {LK_MAX, S},
                    {LK_LEASES, S},
                    {LK_LEVEL, S},
                    {LK_MAX_WAITERS, S},
                    {LK_ON_QUEUE_FULL, S},
                    {LK_PRIORITY_SHARE, S | B},
                    {LK_CLOCK_READ, G},
                    {LK_FAILURES, K},
                    {LK_FAILURE_RATE, K},
                    {LK_MIN_CALLS, K},
                    {LK_COOLDOWN, K},
                    {LK_PROBES, K},
                    {LK_PROBE_TIMEOUT, K},
                    {LK_SUCCESSES, K},
                    {LK_ADAPTIVE, G},
                    {LK_MIN_RATE, G},
                    {LK_MAX_RATE, G},
                    {LK_INCREASE, G},
                    {LK_DECREASE, G},
                    {LK_ADAPT_INTERVAL, G},
                    {LK_SCOPE, G},
                    {LK_EXPECTED_HOSTS, G},
                    {LK_ON_REDIS_DOWN, G},
                    {LK_KEEP_FOR, G},
                    {LK_MIN_SHARE, G}};
        int mine = l->kind == THR_KIND_WINDOW      ? W
                   : l->kind == THR_KIND_SEMAPHORE ? S
                   : l->kind == THR_KIND_BUDGET    ? B
                   : l->kind == THR_KIND_BREAKER   ? K
                                                   : G;
        static const char *const takes[] = {
            [G] = "a GCRA limiter takes rate (and burst, initial)",
            [W] = "a window limiter takes limit and window (e.g. limit = 1000, window = 2s)",
            [S] = "a semaphore limiter takes max, leases_per_key, level, max_waiters, "
                  "on_queue_full and priority_share (e.g. max = 42)",
            [B] = "a budget limiter takes initial (the balance a new key starts with, e.g. "
                  "initial = 100) and priority_share",
            [K] = "a breaker takes failures, failure_rate, min_calls, window, cooldown, probes, "
                  "probe_timeout and successes (e.g. failures = 5, cooldown = 30s)"};
        int bad = 0;
        for (size_t k = 0; k < sizeof(only) / sizeof(only[0]); k++) {
                if (!ln->at[only[k].key] || (only[k].kinds & mine))
                        continue;
                report(p, ln->at[only[k].key], "limiter '%s' (kind %s): %s does not apply; %s",
                       l->name, shm_kind_name(l->kind ? l->kind : THR_KIND_GCRA),
                       config_limiter_keys[only[k].key].name, takes[mine]);
                bad++;
        }
        return bad;
}

/* A semaphore limiter's checks: max given, the rest by shm_params_make. */
static void end_semaphore(struct parse *p, struct shm_limiter_spec *l, const struct lim_lines *ln)
{
        struct thr_params prm;
        char why[480];
        if (!ln->at[LK_MAX]) {
                if (!ln->garbled)
                        report(p, ln->header,
                               "semaphore limiter '%s' needs max (the units held at once per "
                               "key, e.g. max = 42)",
                               l->name);
                return;
        }
        if (!ln->at[LK_LEASES])
                l->leases = THR_SEM_LEASES_DEFAULT;
        if (shm_params_make(l, 0, &prm, why, sizeof(why)) < 0)
                report(p, ln->at[LK_MAX], "%s", why);
}

/* A window limiter's checks: limit and window both given, the rest by shm_params_make. */
static void end_window(struct parse *p, struct shm_limiter_spec *l, const struct lim_lines *ln)
{
        struct thr_params prm;
        char why[480];
        if (!ln->at[LK_LIMIT] || !ln->at[LK_WINDOW]) {
                if (!ln->garbled)
                        report(p, ln->header,
                               "window limiter '%s' needs limit and window (e.g. limit = 1000, "
                               "window = 2s)",
                               l->name);
                return;
        }
        if (shm_params_make(l, 0, &prm, why, sizeof(why)) < 0)
                report(p, ln->at[LK_LIMIT], "%s", why);
}

/* X per XP ns as a count per P ns, rounded up (UP) or down; 0 if it does not fit 64 bits. */
static uint64_t per_period(uint64_t x, uint64_t xp, uint64_t p, bool up)
{
        __uint128_t num = (__uint128_t)x * p;
        __uint128_t q = num / xp + (up && num % xp != 0);
        return q > UINT64_MAX ? 0 : (uint64_t)q;
}

/*
 * An adaptive GCRA limiter's checks (adaptive = aimd): min_rate and max_rate given, every
 * controller key only with adaptive = aimd, and the bounds as counts per the limiter's own
 * period (min rounded up, max down, increase up: the bounds always hold) with min <= rate <= max,
 * each bound a rate shm_params_make accepts. Returns whether all held.
 */
static bool end_adaptive(struct parse *p, struct shm_limiter_spec *l, const struct lim_lines *ln)
{
        static const int keys[] = {LK_MIN_RATE, LK_MAX_RATE, LK_INCREASE, LK_DECREASE,
                                   LK_ADAPT_INTERVAL};
        struct shm_adapt_spec *a = &l->adapt;
        if (!a->on) {
                bool ok = true;
                for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
                        if (ln->at[keys[k]]) {
                                report(p, ln->at[keys[k]],
                                       "limiter '%s': %s applies only with adaptive = aimd",
                                       l->name, config_limiter_keys[keys[k]].name);
                                ok = false;
                        }
                return ok;
        }
        if (!ln->at[LK_MIN_RATE] || !ln->at[LK_MAX_RATE]) {
                report(p, ln->at[LK_ADAPTIVE],
                       "limiter '%s': adaptive = aimd needs min_rate and max_rate (the bounds "
                       "the rate moves between, e.g. min_rate = 10/s, max_rate = 1000/s)",
                       l->name);
                return false;
        }
        uint64_t min = per_period(a->min_n, a->min_p, l->period_ns, true);
        uint64_t max = per_period(a->max_n, a->max_p, l->period_ns, false);
        uint64_t inc =
            ln->at[LK_INCREASE] ? per_period(a->inc_n, a->inc_p, l->period_ns, true) : min;
        if (ln->at[LK_INCREASE] &&
            ((__uint128_t)a->inc_n * l->period_ns) % a->inc_p != 0) { /* never rounded: faulted */
                report(p, ln->at[LK_INCREASE],
                       "limiter '%s': increase must be a whole count per the rate's period "
                       "(%" PRIu64 " ns): %" PRIu64 " per %" PRIu64 " ns is not",
                       l->name, l->period_ns, a->inc_n, a->inc_p);
                return false;
        }
        if (min == 0 || max == 0 || inc == 0 || min > max) {
                report(p,
                       !min || min > max ? ln->at[LK_MIN_RATE]
                       : !max            ? ln->at[LK_MAX_RATE]
                                         : ln->at[LK_INCREASE],
                       "limiter '%s': min_rate, max_rate and increase must be whole counts per "
                       "the rate's period with min_rate <= max_rate (got %" PRIu64 ", %" PRIu64
                       " and %" PRIu64 " per %" PRIu64 " ns)",
                       l->name, min, max, inc, l->period_ns);
                return false;
        }
        if (l->rate_n < min || l->rate_n > max) {
                report(p, ln->at[LK_RATE],
                       "limiter '%s': rate %" PRIu64 " per %" PRIu64 " ns is outside "
                       "min_rate..max_rate (%" PRIu64 "..%" PRIu64 " per that period): it is "
                       "where the rate starts",
                       l->name, l->rate_n, l->period_ns, min, max);
                return false;
        }
        struct thr_params prm;
        char why[320];
        struct shm_limiter_spec t = *l;
        for (int k = 0; k < 2; k++) {
                t.rate_n = k ? max : min;
                if (shm_params_make(&t, 0, &prm, why, sizeof(why)) < 0) {
                        report(p, ln->at[k ? LK_MAX_RATE : LK_MIN_RATE], "%s", why);
                        return false;
                }
        }
        a->min_n = min;
        a->max_n = max;
        a->inc_n = inc;
        return true;
}

/* A breaker's checks: a trip rule, a window for the rate, the rest by shm_params_make; each
 * fault at the line of the key it is about (the section's header when a key is missing). */
static void end_breaker(struct parse *p, struct shm_limiter_spec *l, const struct lim_lines *ln)
{
        struct thr_params prm;
        char why[480];
        if (!l->failures && !l->failure_rate) {
                if (!ln->garbled)
                        report(p,
                               ln->at[LK_FAILURES]       ? ln->at[LK_FAILURES]
                               : ln->at[LK_FAILURE_RATE] ? ln->at[LK_FAILURE_RATE]
                                                         : ln->header,
                               "breaker '%s' needs a rule that trips it: failures = N "
                               "(consecutive, e.g. failures = 5) or failure_rate = P%% (with "
                               "window and min_calls)",
                               l->name);
                return;
        }
        if (l->failure_rate && !ln->at[LK_WINDOW]) {
                report(p, ln->at[LK_FAILURE_RATE],
                       "breaker '%s': failure_rate needs window (the sliding window it is "
                       "judged over, e.g. window = 10s)",
                       l->name);
                return;
        }
        if (shm_params_make(l, 0, &prm, why, sizeof(why)) < 0)
                report(p, ln->at[LK_WINDOW] ? ln->at[LK_WINDOW] : ln->header, "%s", why);
}

/*
 * A global limiter's checks (scope = global): a GCRA limiter, not adaptive, with expected_hosts;
 * the policy keys only with scope = global. Its buckets start at the safe share, 1 /
 * expected_hosts of rate and burst (the daemon moves it, global.c). Returns whether all held.
 */
static bool end_global(struct parse *p, struct shm_limiter_spec *l, const struct lim_lines *ln)
{
        static const int keys[] = {LK_EXPECTED_HOSTS, LK_ON_REDIS_DOWN, LK_KEEP_FOR, LK_MIN_SHARE};
        if (!l->global.on) {
                bool ok = true;
                for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
                        if (ln->at[keys[k]]) {
                                report(p, ln->at[keys[k]],
                                       "limiter '%s': %s applies only with scope = global", l->name,
                                       config_limiter_keys[keys[k]].name);
                                ok = false;
                        }
                return ok;
        }
        if (l->adapt.on) {
                report(p, ln->at[LK_SCOPE],
                       "limiter '%s': scope = global cannot be adaptive (its rate is the share "
                       "Redis grants)",
                       l->name);
                return false;
        }
        if (!ln->at[LK_EXPECTED_HOSTS]) {
                report(p, ln->at[LK_SCOPE],
                       "limiter '%s': scope = global needs expected_hosts (how many hosts share "
                       "it: each starts at 1/expected_hosts of it, e.g. expected_hosts = 4)",
                       l->name);
                return false;
        }
        l->scale_ppm = (uint32_t)(THR_SCALE_ONE / l->global.expected_hosts);
        return true;
}

/* The checks that need all of a limiter's keys, run when its section ends. */
static void end_limiter(struct parse *p, size_t i)
{
        struct shm_limiter_spec *l = &p->cfg->limiters[i];
        struct lim_lines *ln = &p->lines[i];
        struct thr_params prm;
        char why[320];
        if (ln->at[LK_KIND] && l->kind == 0)
                return; /* its kind was refused: what else it lacks would only be noise */
        if (foreign_keys(p, l, ln))
                return;
        if (l->kind == THR_KIND_WINDOW) {
                if (!ln->bad)
                        end_window(p, l, ln);
                return;
        }
        if (l->kind == THR_KIND_SEMAPHORE) {
                if (!ln->bad)
                        end_semaphore(p, l, ln);
                return;
        }
        if (l->kind == THR_KIND_BREAKER) {
                if (!ln->bad)
                        end_breaker(p, l, ln);
                return;
        }
        if (l->kind == THR_KIND_BUDGET) {
                if (!ln->bad && shm_params_make(l, 0, &prm, why, sizeof(why)) < 0)
                        report(p,
                               ln->at[LK_ON_FULL] && l->on_full == THR_FULL_ALLOW
                                   ? ln->at[LK_ON_FULL]
                               : ln->at[LK_INITIAL] ? ln->at[LK_INITIAL]
                                                    : ln->header,
                               "%s", why);
                return;
        }
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
        if (!end_global(p, l, ln))
                return;
        if (shm_params_make(l, 0, &prm, why, sizeof(why)) < 0)
                report(p, ln->at[LK_RATE], "%s", why);
        else
                end_adaptive(p, l, ln);
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
        if (!config_name_ok(name)) {
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
        else if (!strcmp(name, "global"))
                begin_fixed(p, SECT_GLOBAL, &p->global_line, "global");
        else
                begin_limiter(p, name);
}

/* ---------------------------------------------------------------- groups */

/*
 * `compose = a, b, c` in [name]: the section is a named group of limiters for composed calls
 * (libclient: thr_group_open), not a limiter. It takes no other key. Members are checked once the
 * whole file is read (they may be defined after it).
 */
static void begin_group(struct parse *p, const char *value)
{
        struct config *cfg = p->cfg;
        char name[THR_NAME_MAX + 1];
        snprintf(name, sizeof(name), "%s", cfg->limiters[p->lim].name);
        if (p->seen) {
                report(p, p->lineno,
                       "[%s] compose: a group takes no other key (it was given "
                       "limiter keys before)",
                       name);
                p->kind = SECT_SKIP;
                return;
        }
        if (cfg->ngroups == CONFIG_MAX_GROUPS) {
                report(p, p->lineno, "too many groups (at most %d)", CONFIG_MAX_GROUPS);
                p->kind = SECT_SKIP;
                return;
        }
        struct shm_group_spec *g = &cfg->groups[cfg->ngroups];
        *g = (struct shm_group_spec){0};
        snprintf(g->name, sizeof(g->name), "%s", name);
        cfg->nlimiters--; /* the section was begun as a limiter: it is not one */
        p->kind = SECT_GROUP;
        char list[1024];
        snprintf(list, sizeof(list), "%s", value);
        char *save = NULL;
        for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                while (isspace((unsigned char)*t))
                        t++;
                for (char *e = t + strlen(t); e > t && isspace((unsigned char)e[-1]);)
                        *--e = '\0';
                if (!config_name_ok(t)) {
                        report(p, p->lineno, "[%s] compose: '%s' is not a limiter name", name, t);
                        return;
                }
                if (g->n == THR_COMPOSE_MAX) {
                        report(p, p->lineno, "[%s] compose: at most %u members", name,
                               THR_COMPOSE_MAX);
                        return;
                }
                for (uint32_t k = 0; k < g->n; k++)
                        if (!strcmp(g->members[k], t)) {
                                report(p, p->lineno, "[%s] compose: '%s' is named twice", name, t);
                                return;
                        }
                snprintf(g->members[g->n++], sizeof(g->members[0]), "%s", t);
        }
        if (!g->n) {
                report(p, p->lineno, "[%s] compose: no members (e.g. compose = a, b)", name);
                return;
        }
        p->group_line[cfg->ngroups++] = p->lineno;
}

/* Each group's members: limiters of this file with a try form (GCRA, window, budget). */
static void check_groups(struct parse *p)
{
        struct config *cfg = p->cfg;
        for (size_t i = 0; i < cfg->ngroups; i++) {
                const struct shm_group_spec *g = &cfg->groups[i];
                for (size_t j = 0; j < i; j++)
                        if (!strcmp(cfg->groups[j].name, g->name))
                                report(p, p->group_line[i],
                                       "duplicate group '%s' (first at line %d)", g->name,
                                       p->group_line[j]);
                for (size_t j = 0; j < cfg->nlimiters; j++)
                        if (!strcmp(cfg->limiters[j].name, g->name))
                                report(p, p->group_line[i],
                                       "group '%s' has the name of a limiter (line %d)", g->name,
                                       p->lines[j].header);
                for (uint32_t k = 0; k < g->n; k++) {
                        const struct shm_limiter_spec *l = NULL;
                        for (size_t j = 0; j < cfg->nlimiters && !l; j++)
                                if (!strcmp(cfg->limiters[j].name, g->members[k]))
                                        l = &cfg->limiters[j];
                        if (!l)
                                report(p, p->group_line[i],
                                       "[%s] compose: no limiter '%s' in this file", g->name,
                                       g->members[k]);
                        else if (l->kind == THR_KIND_SEMAPHORE || l->serialize)
                                report(p, p->group_line[i],
                                       "[%s] compose: '%s' is a %s: only GCRA, window and budget "
                                       "limiters have a try form to compose",
                                       g->name, g->members[k],
                                       l->serialize ? "serialized window" : "semaphore");
                }
        }
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

/* Cut a comment off S in place: all of a line that starts with ';' or '#', or what follows a
 * blank and ';' (an inline comment, as inih reads it), and the blanks before it. */
static void strip_comment(char *s)
{
        char *c = *s == ';' || *s == '#' ? s : NULL;
        for (char *q = s + 1; !c && *s && *q; q++)
                if (*q == ';' && isspace((unsigned char)q[-1]))
                        c = q;
        if (!c)
                return;
        *c = '\0';
        for (char *e = c; e > s && isspace((unsigned char)e[-1]);)
                *--e = '\0';
}

/* Trim blanks (and a UTF-8 BOM on line 1) and comments in place (inih's buffer holds NUM - 2
 * bytes of a line: a comment of any length must not count); check syntax; track sections. */
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
        strip_comment(s);
        if (!fault && strlen(s) + 2 > (size_t)num) /* inih needs room for "\n" and the NUL */
                fault = toolong;
        else if (!fault && *s == '[')
                begin_section(p, s);
        else if (!fault && *s && !has_separator(s))
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

static void list_keys(const struct config_key *keys, char *out, size_t n)
{
        size_t pos = 0;
        out[0] = '\0';
        for (; keys->name && pos < n; keys++) {
                int w = snprintf(out + pos, n - pos, "%s%s", pos ? " " : "", keys->name);
                pos += w > 0 ? (size_t)w : 0;
        }
}

static_assert(LK_COUNT <= 64, "a limiter section's keys fit the parse's seen mask");

static void set_key(struct parse *p, const struct config_key *keys, const char *sect,
                    const char *name, const char *value)
{
        char why[256], known[192];
        char *base = p->kind == SECT_LIMITER ? (char *)&p->cfg->limiters[p->lim] : (char *)p->cfg;
        for (unsigned i = 0; keys[i].name; i++) {
                if (strcmp(keys[i].name, name) != 0)
                        continue;
                if (p->kind == SECT_LIMITER)
                        p->lines[p->lim].at[i] = p->lineno;
                if (p->seen & (1ull << i)) {
                        report(p, p->lineno, "[%s] %s is set twice", sect, name);
                } else {
                        p->seen |= 1ull << i;
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
                set_key(p, config_arena_keys, "arena", name, value);
                break;
        case SECT_DAEMON:
                set_key(p, config_daemon_keys, "daemon", name, value);
                break;
        case SECT_GLOBAL:
                set_key(p, config_global_keys, "global", name, value);
                break;
        case SECT_LIMITER:
                if (!strcmp(name, "compose"))
                        begin_group(p, value);
                else
                        set_key(p, config_limiter_keys, p->cfg->limiters[p->lim].name, name, value);
                break;
        case SECT_GROUP:
                report(p, p->lineno, "group '%s' takes only compose (got '%s')",
                       p->cfg->groups[p->cfg->ngroups ? p->cfg->ngroups - 1 : 0].name, name);
                break;
        case SECT_SKIP:
                break;
        }
        return 1; /* faults are collected here; inih's own error return means syntax only */
}

/* ---------------------------------------------------------------- the whole file */

/* Global limiters need [global] redis; a lease must outlive two renewals. */
static void check_global(struct parse *p)
{
        const struct config *cfg = p->cfg;
        bool any = false;
        for (size_t i = 0; i < cfg->nlimiters; i++) {
                uint32_t kind = cfg->limiters[i].kind;
                if (!cfg->limiters[i].global.on || (kind != 0 && kind != THR_KIND_GCRA))
                        continue; /* another kind's scope was refused where it was */
                any = true;
                if (!cfg->global_redis[0])
                        report(p, p->lines[i].at[LK_SCOPE],
                               "limiter '%s': scope = global needs [global] redis (the server "
                               "its shares are leased from, e.g. redis = 127.0.0.1:6379)",
                               cfg->limiters[i].name);
        }
        if (any && cfg->global_lease_ttl_ns < 2 * cfg->global_interval_ns)
                report(p, p->global_line,
                       "[global] lease_ttl (%" PRIu64 " ms) must be at least twice interval "
                       "(%" PRIu64 " ms): a lease must outlive a lost renewal",
                       cfg->global_lease_ttl_ns / 1000000, cfg->global_interval_ns / 1000000);
}

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
        check_groups(p);
        check_global(p);
        a->ngroups = cfg->ngroups;
        a->groups = cfg->groups;
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

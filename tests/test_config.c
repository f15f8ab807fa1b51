/*
 * test_config.c - proves that throttled's config parser accepts the shipped file, fills every
 * field, parses rates and durations exactly, and names FILE:LINE and the fault for each kind of
 * bad input, reporting all faults of a file.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "config.h"

/* ---------------------------------------------------------------- helpers */

struct run {
        int rc;
        char path[32];
        char err[8192];
        struct config cfg;
};

/* Write TEXT to a fresh file in /tmp, load it, remove it. */
static struct run *run_text(const char *text)
{
        struct run *r = calloc(1, sizeof(*r));
        cr_assert(r);
        snprintf(r->path, sizeof(r->path), "/tmp/thr_cfg_XXXXXX");
        int fd = mkstemp(r->path);
        cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
        size_t len = strlen(text);
        cr_assert_eq(write(fd, text, len), (ssize_t)len);
        close(fd);
        r->rc = config_load(r->path, &r->cfg, r->err, sizeof(r->err));
        unlink(r->path);
        return r;
}

static int count_lines(const char *s)
{
        int n = 0;
        for (; *s; s++)
                n += *s == '\n';
        return n;
}

/* Assert that R failed with a line "PATH:LINE: ..." containing WORD. */
static void expect_fault(const struct run *r, int line, const char *word)
{
        char head[64];
        snprintf(head, sizeof(head), "%s:%d: ", r->path, line);
        cr_assert_eq(r->rc, -EINVAL, "rc %d, err:\n%s", r->rc, r->err);
        const char *at = strstr(r->err, head);
        cr_assert(at && (at == r->err || at[-1] == '\n'), "no '%s' in:\n%s", head, r->err);
        const char *end = strchr(at, '\n');
        size_t len = end ? (size_t)(end - at) : strlen(at);
        char one[1024];
        snprintf(one, sizeof(one), "%.*s", (int)len, at);
        cr_assert(strstr(one, word), "'%s' not in '%s'", word, one);
}

/* Exactly one fault, at LINE, naming WORD: no cascade of follow-on errors. */
static void expect_one_fault(const char *text, int line, const char *word)
{
        struct run *r = run_text(text);
        expect_fault(r, line, word);
        cr_assert_eq(count_lines(r->err), 1, "expected one fault, got:\n%s", r->err);
        free(r);
}

/* The shipped config, found next to this file: tests/../daemon/throttled.conf. */
static void source_path(const char *rel, char *out, size_t n)
{
        const char *file = __FILE__;
        const char *slash = strrchr(file, '/');
        int dir = slash ? (int)(slash - file + 1) : 0;
        snprintf(out, n, "%.*s../%s", dir, file, rel);
}

static const struct shm_limiter_spec *find_limiter(const struct config *cfg, const char *name)
{
        for (size_t i = 0; i < cfg->nlimiters; i++)
                if (!strcmp(cfg->limiters[i].name, name))
                        return &cfg->limiters[i];
        return NULL;
}

#define SEC 1000000000ull

/* ---------------------------------------------------------------- whole files */

Test(config, default_file_parses)
{
        char path[512], err[4096];
        struct config *cfg = calloc(1, sizeof(*cfg));
        source_path("daemon/throttled.conf", path, sizeof(path));
        int rc = config_load(path, cfg, err, sizeof(err));
        cr_assert_eq(rc, 0, "%s: rc %d:\n%s", path, rc, err);
        cr_assert_str_eq(cfg->arena.name, "main");
        cr_assert_eq(cfg->arena.hugepages, SHM_HUGE_AUTO);
        cr_assert_eq(cfg->arena.mode, 0660);
        cr_assert_eq(cfg->arena.gid, (gid_t)-1);
        cr_assert_eq(cfg->arena.clock, THR_CLOCK_MONOTONIC);
        cr_assert_null(cfg->arena.dir);
        cr_assert_eq(cfg->arena.nlimiters, 2);
        cr_assert_eq(cfg->arena.limiters, cfg->limiters);
        const struct shm_limiter_spec *k = find_limiter(cfg, "per_key");
        const struct shm_limiter_spec *g = find_limiter(cfg, "host");
        cr_assert(k && g);
        cr_assert(k->rate_n == 5 && k->period_ns == SEC && k->burst == 5 && k->initial == 5);
        cr_assert(k->capacity == 10000 && k->shards == 0 && k->max_reserve_ns == 60 * SEC);
        cr_assert(g->rate_n == 50 && g->period_ns == SEC && g->burst == 10 && g->initial == 10);
        cr_assert(g->capacity == 16);
        cr_assert_eq(k->idle_ttl_ns, 60 * SEC);
        cr_assert_eq(k->on_full, THR_FULL_EVICT);
        cr_assert_eq(g->idle_ttl_ns, 60 * SEC);
        cr_assert_eq(g->on_full, THR_FULL_DENY);
        cr_assert(cfg->heartbeat_ms == 1000 && cfg->maintenance_ms == 100);
        cr_assert(cfg->scan_budget == 65536 && cfg->stall_ms == 1000);
        for (size_t i = 0; i < cfg->nlimiters; i++) {
                struct thr_params p;
                cr_assert_eq(shm_params_make(&cfg->limiters[i], 1, &p, err, sizeof(err)), 0);
        }
        free(cfg);
}

Test(config, valid_file_fills_every_field)
{
        struct run *r = run_text("; a comment\n"
                                 "# another\n"
                                 "[arena]\n"
                                 "name = t.est-1      ; inline comment\n"
                                 "hugepages = off\n"
                                 "  mode = 0640\n"
                                 "group = 0\n"
                                 "clock = manual\n"
                                 "max_limiters = 8\n"
                                 "max_readers = 32\n"
                                 "spare = 2GiB\n"
                                 "dir = /tmp/arenas\n"
                                 "\n"
                                 "[daemon]\n"
                                 "heartbeat_ms = 250\n"
                                 "metrics = [::1]:9100\n"
                                 "maintenance_ms = 40\n"
                                 "scan_budget = 4096\n"
                                 "stall_ms = 3000\n"
                                 "[tokens]\n"
                                 "rate = 20000/min\n"
                                 "burst = 100\n"
                                 "initial = 7\n"
                                 "capacity = 1234\n"
                                 "shards = 16\n"
                                 "max_reserve = 10s\n"
                                 "idle_ttl = 5min\n"
                                 "on_full = allow\n"
                                 "insert_wait = 50ms\n"
                                 "[b]\n"
                                 "rate = 3/250ms\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_str_empty(r->err);
        const struct config *c = &r->cfg;
        const struct shm_arena_spec *a = &c->arena;
        cr_assert_str_eq(a->name, "t.est-1");
        cr_assert_str_eq(c->arena_name, "t.est-1");
        cr_assert_eq(a->hugepages, SHM_HUGE_OFF);
        cr_assert_eq(a->mode, 0640);
        cr_assert_eq(a->gid, 0);
        cr_assert_eq(a->clock, THR_CLOCK_MANUAL);
        cr_assert(a->max_limiters == 8 && a->max_readers == 32);
        cr_assert_eq(a->spare_bytes, 2ull << 30);
        cr_assert(a->dir && !strcmp(a->dir, "/tmp/arenas") && a->dir == c->arena_dir);
        cr_assert_eq(c->heartbeat_ms, 250);
        cr_assert_str_eq(c->metrics_listen, "[::1]:9100");
        cr_assert(c->maintenance_ms == 40 && c->scan_budget == 4096 && c->stall_ms == 3000);
        cr_assert_str_eq(c->path, r->path);
        cr_assert(a->nlimiters == 2 && c->nlimiters == 2 && a->limiters == c->limiters);
        const struct shm_limiter_spec *t = &c->limiters[0], *b = &c->limiters[1];
        cr_assert_str_eq(t->name, "tokens");
        cr_assert(t->rate_n == 20000 && t->period_ns == 60 * SEC);
        cr_assert(t->burst == 100 && t->initial == 7 && t->capacity == 1234);
        cr_assert(t->shards == 16 && t->max_reserve_ns == 10 * SEC);
        cr_assert(t->idle_ttl_ns == 300 * SEC && t->on_full == THR_FULL_ALLOW);
        cr_assert_eq(t->lock_wait_ns, 50 * SEC / 1000);
        /* defaults: burst = N, initial = burst, capacity 65536, automatic shards, 60 s, idle
         * keys evicted after 60 s, a full table denies */
        cr_assert_str_eq(b->name, "b");
        cr_assert(b->rate_n == 3 && b->period_ns == SEC / 4 && b->burst == 3 && b->initial == 3);
        cr_assert(b->capacity == 65536 && b->shards == 0 && b->max_reserve_ns == 60 * SEC);
        cr_assert(b->idle_ttl_ns == 60 * SEC && b->on_full == THR_FULL_DENY);
        cr_assert_eq(b->lock_wait_ns, THR_LOCK_WAIT_NS);
        free(r);
}

Test(config, empty_file_gives_defaults)
{
        struct run *r = run_text("");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        const struct shm_arena_spec *a = &r->cfg.arena;
        cr_assert_str_eq(a->name, "main");
        cr_assert(a->hugepages == SHM_HUGE_AUTO && a->mode == 0660 && a->gid == (gid_t)-1);
        cr_assert(a->clock == THR_CLOCK_MONOTONIC && a->max_limiters == 64);
        cr_assert(a->max_readers == 1024 && a->spare_bytes == 16ull << 20 && !a->dir);
        cr_assert(a->nlimiters == 0 && r->cfg.heartbeat_ms == 1000);
        cr_assert_str_eq(r->cfg.metrics_listen, "127.0.0.1:9477");
        cr_assert_eq(r->cfg.maintenance_ms, 100);
        cr_assert_eq(r->cfg.scan_budget, 65536);
        cr_assert_eq(r->cfg.stall_ms, 1000);
        free(r);
}

Test(config, limiter_defaults_idle_ttl_and_on_full)
{
        struct run *r = run_text("[api]\nrate = 5/s\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        const struct shm_limiter_spec *l = &r->cfg.limiters[0];
        cr_assert_eq(l->idle_ttl_ns, 60 * SEC);
        cr_assert_eq(l->on_full, THR_FULL_DENY);
        free(r);
}

/* Every accepted form of the two limiter keys, and their way into the parameter record. */
Test(config, idle_ttl_and_on_full_parsed)
{
        static const struct {
                const char *ttl, *full;
                uint64_t ns;
                uint32_t on_full;
        } cases[] = {
            {"0", "deny", 0, THR_FULL_DENY},
            {"90s", "allow", 90 * SEC, THR_FULL_ALLOW},
            {"5min", "evict", 300 * SEC, THR_FULL_EVICT},
            {"250ms", "Evict", 250000000, THR_FULL_EVICT},
            {"2h", "DENY", 7200 * SEC, THR_FULL_DENY},
            {"7300d", "allow", THR_HORIZON_NS, THR_FULL_ALLOW}, /* exactly 20 years */
            {"630720000000000000ns", "evict", THR_HORIZON_NS, THR_FULL_EVICT},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char text[256], err[256];
                struct thr_params p;
                snprintf(text, sizeof(text), "[api]\nrate = 5/s\nidle_ttl = %s\non_full = %s\n",
                         cases[i].ttl, cases[i].full);
                struct run *r = run_text(text);
                cr_assert_eq(r->rc, 0, "%s / %s: %s", cases[i].ttl, cases[i].full, r->err);
                const struct shm_limiter_spec *l = &r->cfg.limiters[0];
                cr_expect_eq(l->idle_ttl_ns, cases[i].ns, "idle_ttl = %s", cases[i].ttl);
                cr_expect_eq(l->on_full, cases[i].on_full, "on_full = %s", cases[i].full);
                cr_assert_eq(shm_params_make(l, 1, &p, err, sizeof(err)), 0, "%s", err);
                cr_expect(p.idle_ttl_ns == cases[i].ns && p.on_full == cases[i].on_full);
                free(r);
        }
}

/* The daemon's maintenance keys at the ends of their ranges. */
Test(config, maintenance_keys_parsed)
{
        struct run *r = run_text("[daemon]\nmaintenance_ms = 1\nscan_budget = 64\nstall_ms = 1\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(r->cfg.maintenance_ms, 1);
        cr_assert_eq(r->cfg.scan_budget, 64);
        cr_assert_eq(r->cfg.stall_ms, 1);
        free(r);
        r = run_text("[daemon]\n"
                     "maintenance_ms = 60000\n"
                     "scan_budget = 1073741824\n"
                     "stall_ms = 3600000\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(r->cfg.maintenance_ms, 60000);
        cr_assert_eq(r->cfg.scan_budget, 1ull << 30);
        cr_assert_eq(r->cfg.stall_ms, 3600000);
        free(r);
}

Test(config, group_by_name)
{
        struct run *r = run_text("[arena]\ngroup = root\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(r->cfg.arena.gid, 0);
        free(r);
}

Test(config, missing_file)
{
        char err[512];
        struct config *cfg = calloc(1, sizeof(*cfg));
        int rc = config_load("/nonexistent/throttled.conf", cfg, err, sizeof(err));
        cr_assert_eq(rc, -ENOENT);
        cr_assert(strstr(err, "/nonexistent/throttled.conf: cannot open"), "%s", err);
        free(cfg);
}

/* ---------------------------------------------------------------- rates and durations */

Test(config, rate_parsing_good)
{
        static const struct {
                const char *s;
                uint64_t n, p;
        } ok[] = {
            {"100/s", 100, SEC},
            {"20000/min", 20000, 60 * SEC},
            {"5/250ms", 5, 250000000},
            {"1000000000/7s", 1000000000, 7 * SEC},
            {"3/h", 3, 3600 * SEC},
            {"10/d", 10, 86400 * SEC},
            {"1/sec", 1, SEC},
            {"2/m", 2, 60 * SEC},
            {"4/hour", 4, 3600 * SEC},
            {"7/day", 7, 86400 * SEC},
            {"9/10us", 9, 10000},
            {"1/ns", 1, 1},
            {"18446744073709551615/s", UINT64_MAX, SEC},
        };
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
                uint64_t n = 0, p = 0;
                char err[256] = "";
                int rc = config_parse_rate(ok[i].s, &n, &p, err, sizeof(err));
                cr_expect_eq(rc, 0, "%s: %s", ok[i].s, err);
                cr_expect(n == ok[i].n && p == ok[i].p, "%s: got %lu/%lu", ok[i].s,
                          (unsigned long)n, (unsigned long)p);
        }
}

Test(config, rate_parsing_bad)
{
        static const struct {
                const char *s;
                int rc;
        } bad[] = {
            {"18446744073709551616/s", -ERANGE},
            {"0/s", -EINVAL},
            {"-1/s", -EINVAL},
            {"5/", -EINVAL},
            {"/s", -EINVAL},
            {"5/2x", -EINVAL},
            {"5/0s", -EINVAL},
            {"2/1.5s", -EINVAL},
            {"1.5/s", -EINVAL},
            {"5", -EINVAL},
            {"", -EINVAL},
            {"5/s ", -EINVAL},
            {" 5/s", -EINVAL},
            {"+5/s", -EINVAL},
            {"5/-1s", -EINVAL},
            {"5/S", -EINVAL},
            {"1/1000000000000d", -ERANGE},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                uint64_t n = 0, p = 0;
                char err[256] = "";
                int rc = config_parse_rate(bad[i].s, &n, &p, err, sizeof(err));
                cr_expect_eq(rc, bad[i].rc, "'%s': rc %d", bad[i].s, rc);
                cr_expect(err[0], "'%s': no reason given", bad[i].s);
        }
}

Test(config, duration_parsing)
{
        static const struct {
                const char *s;
                int rc;
                uint64_t ns;
        } cases[] = {
            {"250ms", 0, 250000000},
            {"30s", 0, 30 * SEC},
            {"5min", 0, 300 * SEC},
            {"0", 0, 0},
            {"0s", 0, 0},
            {"2h", 0, 7200 * SEC},
            {"7ns", 0, 7},
            {"5", -EINVAL, 0},
            {"s", -EINVAL, 0},
            {"", -EINVAL, 0},
            {"-5s", -EINVAL, 0},
            {"1.5s", -EINVAL, 0},
            {"5 s", -EINVAL, 0},
            {"10parsecs", -EINVAL, 0},
            {"18446744073709551616ns", -ERANGE, 0},
            {"300000000000d", -ERANGE, 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint64_t ns = 12345;
                char err[256] = "";
                int rc = config_parse_duration(cases[i].s, &ns, err, sizeof(err));
                cr_expect_eq(rc, cases[i].rc, "'%s': rc %d (%s)", cases[i].s, rc, err);
                if (rc == 0)
                        cr_expect_eq(ns, cases[i].ns, "'%s'", cases[i].s);
                else
                        cr_expect(err[0], "'%s': no reason given", cases[i].s);
        }
}

/* ---------------------------------------------------------------- one fault per file */

Test(config, unknown_key_in_arena)
{
        expect_one_fault("[arena]\n"
                         "name = main\n"
                         "colour = red\n",
                         3, "unknown key 'colour'");
}

Test(config, unknown_key_in_limiter)
{
        expect_one_fault("[api]\n"
                         "rate = 5/s\n"
                         "\n"
                         "brust = 5\n",
                         4, "unknown key 'brust'");
}

Test(config, unknown_hugepages_value)
{
        expect_one_fault("[arena]\nhugepages = sometimes\n", 2, "unknown value 'sometimes'");
}

Test(config, unknown_clock)
{
        expect_one_fault("[arena]\n\nclock = realtime\n", 3, "unknown clock");
}

Test(config, bad_mode)
{
        expect_one_fault("[arena]\nmode = 0990\n", 2, "bad mode");
        expect_one_fault("[arena]\nmode = rw-rw----\n", 2, "bad mode");
        expect_one_fault("[arena]\nmode = 01777\n", 2, "bad mode");
        expect_one_fault("[arena]\nmode = 0440\n", 2, "owner needs read and write");
}

Test(config, unknown_group)
{
        expect_one_fault("[arena]\nname = x\ngroup = no_such_group_thr\n", 3, "unknown group");
}

Test(config, bad_arena_name)
{
        expect_one_fault("[arena]\nname = has/slash\n", 2, "bad name");
        expect_one_fault("[arena]\nname = ..\n", 2, "bad name");
}

Test(config, burst_zero)
{
        expect_one_fault("[api]\n"
                         "rate = 5/s\n"
                         "burst = 0\n",
                         3, "burst: must be at least 1");
}

Test(config, initial_exceeds_burst)
{
        expect_one_fault("[api]\n"
                         "rate = 5/s\n"
                         "initial = 6\n"
                         "burst = 5\n",
                         3, "initial 6 exceeds burst 5");
        /* burst defaults to N: 6 > 5 too */
        expect_one_fault("[api]\nrate = 5/s\ninitial = 6\n", 3, "exceeds burst");
}

Test(config, rate_not_exact)
{
        /* T = 1/31 s = 1e9/31 ns needs K = 31 > THR_MAX_K = 29 */
        expect_one_fault("[api]\n"
                         "capacity = 10\n"
                         "rate = 31/s\n",
                         3, "cannot be represented exactly");
}

Test(config, burst_overflow)
{
        expect_one_fault("[daily]\n"
                         "rate = 1/d\n"
                         "burst = 18446744073709551615\n",
                         2, "overflow");
}

Test(config, number_overflow)
{
        expect_one_fault("[api]\nrate = 5/s\nburst = 18446744073709551616\n", 3, "overflow");
}

Test(config, trailing_junk)
{
        expect_one_fault("[api]\nrate = 5/s\ncapacity = 100x\n", 3, "not a whole number");
        expect_one_fault("[api]\nrate = 5/s\ncapacity = 100;x\n", 3, "not a whole number");
}

Test(config, negative_number)
{
        expect_one_fault("[api]\nrate = 5/s\ninitial = -1\n", 3, "not a whole number");
}

Test(config, out_of_range)
{
        expect_one_fault("[arena]\nmax_readers = 0\n", 2, "out of range");
        expect_one_fault("[api]\nrate = 5/s\ncapacity = 0\n", 3, "out of range");
}

Test(config, duplicate_limiter)
{
        expect_one_fault("[api]\n"
                         "rate = 5/s\n"
                         "[other]\n"
                         "rate = 1/s\n"
                         "[api]\n"
                         "rate = 7/s\n",
                         5, "duplicate limiter 'api' (first at line 1)");
}

Test(config, duplicate_section)
{
        expect_one_fault("[arena]\nname = a\n[daemon]\n[arena]\nname = b\n", 4,
                         "duplicate section [arena]");
}

Test(config, duplicate_key)
{
        expect_one_fault("[api]\nrate = 5/s\nrate = 6/s\n", 3, "set twice");
}

Test(config, missing_rate)
{
        expect_one_fault("[arena]\n"
                         "name = main\n"
                         "\n"
                         "[api]\n"
                         "burst = 5\n",
                         4, "has no rate");
        /* a section with no keys at all is a limiter without a rate too */
        expect_one_fault("[api]\n[other]\nrate = 1/s\n", 1, "has no rate");
}

Test(config, bad_limiter_name)
{
        expect_one_fault("[api]\nrate = 5/s\n[bad name!]\nrate = 5/s\n", 3, "bad limiter name");
        expect_one_fault("[]\nrate = 5/s\n", 1, "bad limiter name");
}

Test(config, shards_not_power_of_two)
{
        expect_one_fault("[api]\nrate = 5/s\nshards = 24\n", 3, "not a power of two");
        expect_one_fault("[api]\nrate = 5/s\nshards = 8192\n", 3, "out of range");
}

Test(config, bad_duration)
{
        expect_one_fault("[api]\nrate = 5/s\nmax_reserve = 10\n", 3, "no unit");
}

Test(config, on_full_unknown_word)
{
        expect_one_fault("[api]\nrate = 5/s\n\non_full = drop\n", 4,
                         "[api] on_full: unknown value 'drop' (one of deny, allow, evict)");
        expect_one_fault("[api]\nrate = 5/s\non_full =\n", 3,
                         "unknown value '' (one of deny, allow, evict)");
        expect_one_fault("[api]\nrate = 5/s\non_full = evict\non_full = deny\n", 4,
                         "[api] on_full is set twice");
}

Test(config, idle_ttl_bad_unit)
{
        expect_one_fault("[api]\nrate = 5/s\nidle_ttl = 10parsecs\n", 3,
                         "[api] idle_ttl: unknown unit 'parsecs' in '10parsecs'");
        expect_one_fault("[api]\nidle_ttl = 60\nrate = 5/s\n", 2,
                         "[api] idle_ttl: '60' has no unit");
        expect_one_fault("[api]\nrate = 5/s\nidle_ttl = -1s\n", 3,
                         "[api] idle_ttl: '-1s' does not start with a whole number");
}

Test(config, idle_ttl_above_20_years)
{
        expect_one_fault("[api]\nrate = 5/s\nidle_ttl = 7301d\n", 3,
                         "[api] idle_ttl: 7301d is out of range (0 to 7300d)");
        expect_one_fault("[api]\nrate = 5/s\n\nidle_ttl = 630720000000000001ns\n", 4,
                         "out of range (0 to 7300d)");
        expect_one_fault("[api]\nrate = 5/s\nidle_ttl = 99999999999d\n", 3,
                         "[api] idle_ttl: '99999999999d' is too large (overflow)");
}

Test(config, maintenance_ms_out_of_range)
{
        expect_one_fault("[daemon]\nheartbeat_ms = 10\nmaintenance_ms = 0\n", 3,
                         "[daemon] maintenance_ms: 0 is out of range (1 to 60000)");
        expect_one_fault("[daemon]\nmaintenance_ms = 60001\n", 2,
                         "[daemon] maintenance_ms: 60001 is out of range (1 to 60000)");
}

Test(config, scan_budget_out_of_range)
{
        expect_one_fault("[daemon]\nscan_budget = 63\n", 2,
                         "[daemon] scan_budget: 63 is out of range (64 to 1073741824)");
        expect_one_fault("[daemon]\n\nscan_budget = 1073741825\n", 3,
                         "[daemon] scan_budget: 1073741825 is out of range (64 to 1073741824)");
}

Test(config, stall_ms_out_of_range)
{
        expect_one_fault("[daemon]\nstall_ms = 0\n", 2,
                         "[daemon] stall_ms: 0 is out of range (1 to 3600000)");
        expect_one_fault("[daemon]\nmetrics =\nstall_ms = 3600001\n", 3,
                         "[daemon] stall_ms: 3600001 is out of range (1 to 3600000)");
}

/* spare is capped (1 TiB), with FILE:LINE: 2^64 - 1 used to pass --check and wrap the arena's
 * size sum into an arena with no spare heap. */
Test(config, spare_is_capped)
{
        expect_one_fault("[arena]\nspare = 18446744073709551615\n", 2, "1TiB");
        expect_one_fault("[arena]\nspare = 1025GiB\n", 2, "[arena] spare");
        expect_one_fault("[arena]\nspare = 16777216TiB\n", 2, "[arena] spare");
        struct run *r = run_text("[arena]\nspare = 1TiB\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(r->cfg.arena.spare_bytes, 1ull << 40);
        free(r);
}

Test(config, bad_size_suffix)
{
        expect_one_fault("[arena]\nspare = 16MB\n", 2, "unknown unit 'MB'");
}

Test(config, relative_dir)
{
        expect_one_fault("[arena]\ndir = arenas\n", 2, "not an absolute path");
}

Test(config, bad_metrics)
{
        expect_one_fault("[daemon]\nmetrics = localhost\n", 2, "HOST:PORT");
        expect_one_fault("[daemon]\nmetrics = 127.0.0.1:99999\n", 2, "bad port");
}

/* [daemon] http and its bounds: defaults (off), the accepted forms, each fault at its line. */
Test(config, http_keys)
{
        struct run *r = run_text("");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_str_eq(r->cfg.http_listen, "");
        cr_assert_str_eq(r->cfg.http_token_file, "");
        cr_assert(r->cfg.http_max_conn == 64 && r->cfg.http_max_body == 65536);
        cr_assert(r->cfg.http_max_wait_ms == 60000 && r->cfg.http_waiters == 16);
        cr_assert(r->cfg.http_max_leases == 1024 && r->cfg.http_timeout_ms == 10000);
        free(r);
        r = run_text("[daemon]\nhttp = unix:/run/t.sock\nhttp_waiters = 2\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_str_eq(r->cfg.http_listen, "unix:/run/t.sock");
        cr_assert_eq(r->cfg.http_waiters, 2);
        free(r);
        expect_one_fault("[daemon]\nhttp = localhost\n", 2, "HOST:PORT");
        expect_one_fault("[daemon]\nhttp = 127.0.0.1:0\n", 2, "bad port");
        expect_one_fault("[daemon]\nhttp = unix:rel.sock\n", 2, "absolute path");
        expect_one_fault("[daemon]\nhttp_token_file = token\n", 2, "not an absolute path");
        expect_one_fault("[daemon]\nhttp_max_connections = 0\n", 2, "http_max_connections");
        expect_one_fault("[daemon]\nhttp_max_body = 100\n", 2, "http_max_body");
        expect_one_fault("[daemon]\nhttp_waiters = 1025\n", 2, "http_waiters");
}

Test(config, key_before_section)
{
        expect_one_fault("rate = 5/s\n[api]\nrate = 5/s\n", 1, "before any [section]");
}

Test(config, syntax_error)
{
        expect_one_fault("[api]\nrate 5/s\n", 2, "expected 'key = value'");
}

Test(config, malformed_section_header)
{
        expect_one_fault("[api]\nrate = 5/s\n[other\n", 3, "malformed section header");
        expect_one_fault("[api] junk\nrate = 5/s\n", 1, "malformed section header");
}

Test(config, line_too_long)
{
        char text[512];
        snprintf(text, sizeof(text), "[api]\nrate = 5/s\n[arena]\ndir = /%0300d\n", 0);
        expect_one_fault(text, 4, "longer than");
}

/* Comments never reach inih's 200-byte line buffer: a long comment line, or a long comment after
 * a value, is accepted (they were refused as "line is longer than 198 bytes"). */
Test(config, long_comments_are_accepted)
{
        char text[2048];
        snprintf(text, sizeof(text),
                 "; %0300d\n# %0300d\n[api]\n  ; %0300d\nrate = 5/s ; %0300d\n"
                 "burst = 7\t; %0300d\n[b] ; %0300d\nrate = 1/s\n",
                 0, 0, 0, 0, 0, 0);
        struct run *r = run_text(text);
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(r->cfg.nlimiters, 2);
        cr_assert_eq(r->cfg.limiters[0].rate_n, 5);
        cr_assert_eq(r->cfg.limiters[0].burst, 7);
        free(r);
}

Test(config, more_limiters_than_max_limiters)
{
        expect_one_fault("[arena]\n"
                         "max_limiters = 2\n"
                         "[a]\nrate = 1/s\n"
                         "[b]\nrate = 1/s\n"
                         "[c]\nrate = 1/s\n",
                         7, "max_limiters = 2");
}

Test(config, more_limiters_than_config_max)
{
        size_t cap = (CONFIG_MAX_LIMITERS + 2) * 32;
        char *text = calloc(1, cap);
        size_t pos = (size_t)snprintf(text, cap, "[arena]\nmax_limiters = 65536\n");
        for (int i = 0; i <= CONFIG_MAX_LIMITERS; i++)
                pos += (size_t)snprintf(text + pos, cap - pos, "[l%d]\nrate = 1/s\n", i);
        /* limiter number 257 has its header on line 3 + 2 * 256 */
        expect_one_fault(text, 3 + 2 * CONFIG_MAX_LIMITERS, "too many limiters");
        free(text);
}

/* ---------------------------------------------------------------- many faults */

Test(config, several_errors_all_reported)
{
        struct run *r = run_text("[arena]\n"           /* 1 */
                                 "hugepages = maybe\n" /* 2 */
                                 "mode = 9\n"          /* 3 */
                                 "[api]\n"             /* 4 */
                                 "rate = 31/s\n"       /* 5 */
                                 "[nor]\n"             /* 6 */
                                 "burst = 3\n"         /* 7 */
                                 "[api]\n"             /* 8 */
                                 "[ok]\n"              /* 9 */
                                 "rate = 10/s\n"       /* 10 */
                                 "shards = 3\n"        /* 11 */
                                 "colour = blue\n"     /* 12 */
                                 "[x y]\n"             /* 13 */
                                 "[z]\nrate = 5/s\nburst = 0\n" /* 14-16 */);
        expect_fault(r, 2, "unknown value");
        expect_fault(r, 3, "bad mode");
        expect_fault(r, 5, "exactly");
        expect_fault(r, 6, "has no rate");
        expect_fault(r, 8, "duplicate limiter");
        expect_fault(r, 11, "power of two");
        expect_fault(r, 12, "unknown key");
        expect_fault(r, 13, "bad limiter name");
        expect_fault(r, 16, "must be at least 1");
        cr_assert_eq(count_lines(r->err), 9, "%s", r->err);
        free(r);
}

Test(config, error_text_truncated)
{
        char path[] = "/tmp/thr_cfg_XXXXXX", err[80];
        struct config *cfg = calloc(1, sizeof(*cfg));
        int fd = mkstemp(path);
        cr_assert(fd >= 0);
        for (int i = 0; i < 20; i++)
                dprintf(fd, "[bad name %d]\n", i);
        close(fd);
        memset(err, 'x', sizeof(err));
        int rc = config_load(path, cfg, err, sizeof(err));
        unlink(path);
        cr_assert_eq(rc, -EINVAL);
        size_t len = strnlen(err, sizeof(err));
        cr_assert_eq(len, sizeof(err) - 1, "NUL-terminated at the end of the buffer");
        cr_assert_str_eq(err + len - 3, "...");
        cr_assert(strncmp(err, path, strlen(path)) == 0);
        free(cfg);
}

Test(config, insert_wait_bounds)
{
        expect_one_fault("[l]\nrate = 1/s\ninsert_wait = 0\n", 3, "insert_wait");
        expect_one_fault("[l]\nrate = 1/s\ninsert_wait = 61s\n", 3, "insert_wait");
        struct run *r = run_text("[l]\nrate = 1/s\ninsert_wait = 60s\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(r->cfg.limiters[0].lock_wait_ns, 60 * SEC);
        free(r);
}

/* ---------------------------------------------------------------- window limiters */

Test(config, window_limiter_parsed)
{
        struct run *r = run_text("[w]\nkind = window\nlimit = 1000\nwindow = 2s\n"
                                 "[s]\nkind = Window\nlimit = 5\nwindow = 100ms\nserialize = yes\n"
                                 "[g]\nkind = gcra\nrate = 5/s\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        const struct shm_limiter_spec *w = find_limiter(&r->cfg, "w"),
                                      *s = find_limiter(&r->cfg, "s"),
                                      *g = find_limiter(&r->cfg, "g");
        cr_assert(w->kind == THR_KIND_WINDOW && w->rate_n == 1000 && w->period_ns == 2 * SEC &&
                  !w->serialize);
        cr_assert(s->kind == THR_KIND_WINDOW && s->rate_n == 5 && s->period_ns == 100000000 &&
                  s->serialize);
        cr_assert(g->kind == THR_KIND_GCRA && g->rate_n == 5 && g->burst == 5);
        struct thr_params p;
        char err[256];
        cr_assert_eq(shm_params_make(s, 1, &p, err, sizeof(err)), 0, "%s", err);
        cr_assert(p.kind == THR_KIND_WINDOW && p.burst == 5 && p.k == 1 &&
                  p.flags == THR_PARAM_SERIALIZE && p.max_reserve_units == 60 * SEC);
        free(r);
        static const char *const no[] = {"no", "false", "off", "0", "NO"};
        for (size_t i = 0; i < 5; i++) {
                char text[128];
                snprintf(text, sizeof(text),
                         "[w]\nkind = window\nlimit = 3\nwindow = 1s\n"
                         "serialize = %s\n",
                         no[i]);
                r = run_text(text);
                cr_assert_eq(r->rc, 0, "%s: %s", no[i], r->err);
                cr_assert(!r->cfg.limiters[0].serialize, "%s", no[i]);
                free(r);
        }
}

Test(config, window_faults_name_their_line)
{
        expect_one_fault("[w]\nkind = window\nlimit = 5\nwindow = 1s\nburst = 5\n", 5,
                         "burst does not apply");
        expect_one_fault("[w]\nkind = window\nrate = 5/s\n", 3, "rate does not apply");
        expect_one_fault("[g]\nrate = 5/s\nlimit = 5\n", 3, "limit does not apply");
        expect_one_fault("[g]\nrate = 5/s\nserialize = yes\n", 3, "serialize does not apply");
        expect_one_fault("[w]\nkind = window\nlimit = 5\n", 1, "needs limit and window");
        expect_one_fault("[w]\nkind = window\nwindow = 1s\n", 1, "needs limit and window");
        expect_one_fault("[w]\nkind = sliding\n", 2, "unknown kind 'sliding'");
        expect_one_fault("[w]\nkind = window\nlimit = 5\nwindow = 1s\nserialize = maybe\n", 5,
                         "not yes or no");
        expect_one_fault("[w]\nkind = window\nlimit = 16385\nwindow = 1s\n", 3, "exceeds 16384");
        expect_one_fault("[w]\nkind = window\nlimit = 0\nwindow = 1s\n", 3, "limit");
        expect_one_fault("[w]\nkind = window\nlimit = 5\nwindow = 0\n", 4, "window");
}

Test(config, window_limit_at_the_bound_is_accepted)
{
        struct run *r = run_text("[w]\nkind = window\nlimit = 16384\nwindow = 1s\ncapacity = 4\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        free(r);
}

/* ---------------------------------------------------------------- budget limiters */

Test(config, budget_limiter_parsed)
{
        struct run *r = run_text("[b]\nkind = budget\ninitial = 100\nidle_ttl = 10m\n"
                                 "[z]\nkind = Budget\non_full = evict\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        const struct shm_limiter_spec *b = find_limiter(&r->cfg, "b"),
                                      *z = find_limiter(&r->cfg, "z");
        cr_assert(b->kind == THR_KIND_BUDGET && b->initial == 100 && b->idle_ttl_ns == 600 * SEC);
        cr_assert(z->kind == THR_KIND_BUDGET && z->initial == 0, "initial defaults to 0");
        cr_assert_eq(z->on_full, THR_FULL_EVICT);
        struct thr_params p;
        char why[256];
        cr_assert_eq(shm_params_make(b, 1, &p, why, sizeof(why)), 0, "%s", why);
        cr_assert_eq(p.kind, THR_KIND_BUDGET);
        cr_assert_eq(p.initial, 100);
        free(r);
}

Test(config, budget_faults_name_their_line)
{
        expect_one_fault("[b]\nkind = budget\nrate = 5/s\n", 3, "rate does not apply");
        expect_one_fault("[b]\nkind = budget\ninitial = 5\nmax = 5\n", 4, "max does not apply");
        expect_one_fault("[b]\nkind = budget\nlimit = 5\n", 3, "limit does not apply");
        expect_one_fault("[b]\nkind = budget\non_full = allow\n", 3, "on_full = allow");
        expect_one_fault("[b]\nkind = budget\ninitial = 4611686018427387904\n", 3,
                         "initial balance");
        expect_one_fault("[b]\nkind = budge\n", 2, "one of gcra, window, semaphore, budget");
}

/* ---------------------------------------------------------------- named groups */

Test(config, a_group_names_its_members)
{
        struct run *r = run_text("[req]\nrate = 60/min\n[llm]\ncompose = req , tok,host\n"
                                 "[tok]\nkind = window\nlimit = 100\nwindow = 1min\n"
                                 "[host]\nkind = budget\ninitial = 10\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(r->cfg.nlimiters, 3, "a group is not a limiter");
        cr_assert_eq(r->cfg.ngroups, 1);
        cr_assert_str_eq(r->cfg.groups[0].name, "llm");
        cr_assert_eq(r->cfg.groups[0].n, 3);
        cr_assert_str_eq(r->cfg.groups[0].members[0], "req");
        cr_assert_str_eq(r->cfg.groups[0].members[1], "tok");
        cr_assert_str_eq(r->cfg.groups[0].members[2], "host");
        cr_assert_eq(r->cfg.arena.ngroups, 1);
        free(r);
}

Test(config, a_group_s_faults_name_their_line)
{
        expect_one_fault("[a]\nrate = 1/s\n[g]\ncompose = a, b\n", 4, "no limiter 'b'");
        expect_one_fault("[a]\nrate = 1/s\n[g]\ncompose = a, a\n", 4, "named twice");
        expect_one_fault("[a]\nrate = 1/s\n[g]\ncompose = a\nrate = 2/s\n", 5,
                         "takes only compose");
        expect_one_fault("[a]\nrate = 1/s\n[g]\nrate = 2/s\ncompose = a\n", 5,
                         "takes no other key");
        expect_one_fault("[s]\nkind = semaphore\nmax = 2\n[g]\ncompose = s\n", 5,
                         "only GCRA, window and budget");
        expect_one_fault("[a]\nrate = 1/s\n[g]\ncompose = a, b, c, d, e, f, g2, h, i\n", 4,
                         "at most 8 members");
        expect_one_fault("[a]\nrate = 1/s\n[a2]\ncompose = a\n[a2x]\ncompose = a\n"
                         "[a2]\ncompose = a\n",
                         8, "duplicate group 'a2'");
}

/* clock_read (shm/clock.h): auto by default, each value parsed, rate limiters only. */
Test(config, clock_read_values_and_faults)
{
        struct run *r = run_text("[g]\nrate = 5/s\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(r->cfg.limiters[0].clock_read, THR_CLOCK_READ_AUTO);
        free(r);
        const char *names[] = {"auto", "precise", "coarse", "tsc", "TSC"};
        const uint32_t vals[] = {THR_CLOCK_READ_AUTO, THR_CLOCK_READ_PRECISE, THR_CLOCK_READ_COARSE,
                                 THR_CLOCK_READ_TSC, THR_CLOCK_READ_TSC};
        for (int i = 0; i < 5; i++) {
                char text[128];
                snprintf(text, sizeof(text), "[g]\nrate = 5/s\nclock_read = %s\n", names[i]);
                r = run_text(text);
                cr_assert_eq(r->rc, 0, "%s: %s", names[i], r->err);
                cr_assert_eq(r->cfg.limiters[0].clock_read, vals[i], "%s", names[i]);
                free(r);
        }
        expect_one_fault("[g]\nrate = 5/s\nclock_read = fast\n", 3,
                         "unknown value 'fast' (one of auto, precise, coarse, tsc)");
        expect_one_fault("[w]\nkind = window\nlimit = 5\nwindow = 1s\nclock_read = tsc\n", 5,
                         "clock_read does not apply");
        expect_one_fault("[s]\nkind = semaphore\nmax = 5\nclock_read = coarse\n", 4,
                         "clock_read does not apply");
}

/* ---------------------------------------------------------------- breakers (kind = breaker) */

Test(config, breaker_keys_parsed_with_defaults)
{
        struct run *r = run_text("[pay]\nkind = breaker\nfailures = 5\nfailure_rate = 50%\n"
                                 "window = 10s\nmin_calls = 20\n\n[db]\nkind = breaker\n"
                                 "failure_rate = 25\nwindow = 1m\ncooldown = 5s\nprobes = 3\n"
                                 "probe_timeout = 2s\nsuccesses = 2\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        const struct shm_limiter_spec *a = &r->cfg.limiters[0], *b = &r->cfg.limiters[1];
        cr_assert_eq(a->kind, THR_KIND_BREAKER);
        cr_assert_eq(a->failures, 5);
        cr_assert_eq(a->failure_rate, 50);
        cr_assert_eq(a->period_ns, 10 * SEC);
        cr_assert_eq(a->min_calls, 20);
        cr_assert_eq(a->cooldown_ns, 30 * SEC); /* the defaults */
        cr_assert_eq(a->probes, 1);
        cr_assert_eq(a->probe_timeout_ns, 30 * SEC);
        cr_assert_eq(a->successes, 1);
        cr_assert_eq(b->failures, 0);
        cr_assert_eq(b->failure_rate, 25);
        cr_assert_eq(b->min_calls, 10);
        cr_assert_eq(b->cooldown_ns, 5 * SEC);
        cr_assert_eq(b->probes, 3);
        cr_assert_eq(b->probe_timeout_ns, 2 * SEC);
        cr_assert_eq(b->successes, 2);
        struct thr_params p;
        char why[256];
        cr_assert_eq(shm_params_make(b, 1, &p, why, sizeof(why)), 0, "%s", why);
        cr_assert_eq(p.kind, THR_KIND_BREAKER);
        cr_assert_eq(p.level, 3);
        cr_assert_eq(p.reserved, 2);
        free(r);
}

Test(config, breaker_faults_at_their_line)
{
        expect_one_fault("[b]\nkind = breaker\ncooldown = 1s\n", 1, "needs a rule that trips it");
        expect_one_fault("[b]\nkind = breaker\nfailures = 0\n", 3, "needs a rule that trips it");
        expect_one_fault("[b]\nkind = breaker\nfailures = 256\n", 3, "failures");
        expect_one_fault("[b]\nkind = breaker\nfailure_rate = 101%\n", 3, "failure_rate");
        expect_one_fault("[b]\nkind = breaker\nfailure_rate = half\n", 3, "percentage");
        expect_one_fault("[b]\nkind = breaker\nfailure_rate = 50%\nmin_calls = 5\n", 3,
                         "needs window");
        expect_one_fault("[b]\nkind = breaker\nfailures = 3\nprobes = 16\n", 4, "probes");
        expect_one_fault("[b]\nkind = breaker\nfailures = 3\nprobes = 0\n", 4, "probes");
        expect_one_fault("[b]\nkind = breaker\nfailures = 3\nsuccesses = 16\n", 4, "successes");
        expect_one_fault("[b]\nkind = breaker\nfailures = 3\ncooldown = 0s\n", 4, "cooldown");
        expect_one_fault("[b]\nkind = breaker\nfailures = 3\ncooldown = 999us\n", 4, "cooldown");
        expect_one_fault("[b]\nkind = breaker\nfailures = 3\nprobe_timeout = 500us\n", 4,
                         "probe_timeout");
        expect_one_fault("[b]\nkind = breaker\nfailures = 3\nprobe_timeout = soon\n", 4,
                         "probe_timeout");
        expect_one_fault("[b]\nkind = breaker\nfailures = 3\nmin_calls = 0\n", 4, "min_calls");
        expect_one_fault("[b]\nkind = breaker\nfailure_rate = 5%\nwindow = 4ns\n", 4,
                         "window of 8 ns");
        expect_one_fault("[b]\nkind = breaker\nfailures = 3\nrate = 5/s\n", 4, "does not apply");
        expect_one_fault("[g]\nrate = 5/s\nprobes = 2\n", 3, "does not apply");
        expect_one_fault("[g]\nkind = circuit\n", 2, "breaker");
}

/* A semaphore's queue: max_waiters, on_queue_full, priority_share (a percentage, stored as one
 * grant in 100 / share); each fault at its line, and none on another kind. */
Test(config, semaphore_queue_keys)
{
        struct run *r = run_text("[db]\nkind = semaphore\nmax = 4\nmax_waiters = 32\n"
                                 "on_queue_full = drop_lowest\npriority_share = 30%\n\n"
                                 "[plain]\nkind = semaphore\nmax = 2\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        const struct shm_limiter_spec *s = find_limiter(&r->cfg, "db");
        cr_assert(s);
        cr_assert_eq(s->max_waiters, 32);
        cr_assert_eq(s->on_queue_full, THR_QUEUE_DROP_LOWEST);
        cr_assert_eq(s->priority_share, 3, "30%%: one grant in 3 (33%% >= 30%%)");
        struct thr_params p;
        char why[256];
        cr_assert_eq(shm_params_make(s, 1, &p, why, sizeof(why)), 0, "%s", why);
        cr_assert_eq(THR_SEMQ_MAX_WAITERS(p.reserved), 32);
        cr_assert_eq(THR_SEMQ_ON_FULL(p.reserved), THR_QUEUE_DROP_LOWEST);
        cr_assert_eq(THR_SEMQ_SHARE(p.reserved), 3);
        s = find_limiter(&r->cfg, "plain");
        cr_assert(s && s->max_waiters == 0 && s->on_queue_full == THR_QUEUE_REJECT &&
                  s->priority_share == 0);
        free(r);
        /* the 33rd limiter key and the first: neither "set twice" (a 32-bit mask of the keys
         * seen once shifted past its width) */
        r = run_text("[f]\npriority_share = 50%\nkind = semaphore\nmax = 1\n\n[g]\nrate = 5/s\n"
                     "\n[h]\nkind = budget\npriority_share = 20%\ninitial = 3\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(find_limiter(&r->cfg, "f")->priority_share, 2);
        cr_assert_eq(find_limiter(&r->cfg, "h")->priority_share, 5);
        free(r);
        r = run_text("[f]\nkind = semaphore\nmax = 1\npriority_share = 100%\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(find_limiter(&r->cfg, "f")->priority_share, 1);
        free(r);

        expect_one_fault("[db]\nkind = semaphore\nmax = 4\nmax_waiters = 2000000\n", 4,
                         "max_waiters");
        expect_one_fault("[db]\nkind = semaphore\nmax = 4\non_queue_full = drop\n", 4,
                         "unknown value 'drop' (one of reject, drop_oldest, drop_lowest)");
        expect_one_fault("[db]\nkind = semaphore\nmax = 4\npriority_share = 150%\n", 4,
                         "priority_share");
        expect_one_fault("[api]\nrate = 5/s\nmax_waiters = 3\n", 3, "max_waiters does not apply");
        expect_one_fault("[api]\nrate = 5/s\non_queue_full = reject\n", 3,
                         "on_queue_full does not apply");
        /* a budget's queue has classes and a share too, not a bound */
        r = run_text("[b]\nkind = budget\ninitial = 5\npriority_share = 25%\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(find_limiter(&r->cfg, "b")->priority_share, 4);
        cr_assert_eq(shm_params_make(find_limiter(&r->cfg, "b"), 1, &p, why, sizeof(why)), 0);
        cr_assert_eq(THR_SEMQ_SHARE(p.reserved), 4);
        free(r);
        expect_one_fault("[b]\nkind = budget\ninitial = 5\nmax_waiters = 3\n", 4,
                         "max_waiters does not apply");
}

/* scope = global: [global] parsed, the safe share 1/expected_hosts, the policy keys, and the
 * faults at their lines. */
Test(config, global_limiter_keys)
{
        struct run *r =
            run_text("[global]\nredis = 127.0.0.1:6379\nuser = svc\npassword = s3 cr#t\n"
                     "prefix = fleet\nhost_id = web-1\ninterval = 50ms\n"
                     "lease_ttl = 1s\ntimeout = 20ms\n\n"
                     "[api]\nrate = 1000/s\nburst = 100\nscope = global\n"
                     "expected_hosts = 4\non_redis_down = closed\nkeep_for = 5s\n"
                     "min_share = 2%\n\n[local]\nrate = 5/s\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_str_eq(r->cfg.global_redis, "127.0.0.1:6379");
        cr_assert_str_eq(r->cfg.global_user, "svc");
        cr_assert_str_eq(r->cfg.global_password, "s3 cr#t");
        cr_assert_str_eq(r->cfg.global_prefix, "fleet");
        cr_assert_str_eq(r->cfg.global_host, "web-1");
        cr_assert_eq(r->cfg.global_interval_ns, 50000000);
        cr_assert_eq(r->cfg.global_lease_ttl_ns, 1000000000);
        cr_assert_eq(r->cfg.global_timeout_ns, 20000000);
        const struct shm_limiter_spec *s = find_limiter(&r->cfg, "api");
        cr_assert(s && s->global.on && s->global.expected_hosts == 4);
        cr_assert_eq(s->global.on_down, SHM_GLOBAL_CLOSED);
        cr_assert_eq(s->global.keep_ns, 5 * 1000000000ull);
        cr_assert_eq(s->global.min_share_pct, 2);
        cr_assert_eq(s->scale_ppm, 250000, "it starts at the safe share, 1/4");
        struct thr_params p;
        char why[256];
        cr_assert_eq(shm_params_make(s, 1, &p, why, sizeof(why)), 0, "%s", why);
        cr_assert_eq(p.t_units, 4000000, "250/s: 4 ms (got %" PRIu64 ")", p.t_units);
        cr_assert_eq(p.burst, 25);
        cr_assert_eq(p.reserved, 250000);
        s = find_limiter(&r->cfg, "local");
        cr_assert(s && !s->global.on && s->scale_ppm == 0);
        free(r);
        /* defaults: keep for 10 s, 1% least share, prefix throttle, 100 ms / 2 s / 200 ms */
        r = run_text("[global]\nredis = unix:/run/redis.sock\n\n[api]\nrate = 10/s\n"
                     "scope = global\nexpected_hosts = 3\n");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        s = find_limiter(&r->cfg, "api");
        cr_assert(s->global.on_down == SHM_GLOBAL_KEEP && s->global.keep_ns == 10 * SEC &&
                  s->global.min_share_pct == 1 && s->scale_ppm == 333333);
        cr_assert_str_eq(r->cfg.global_prefix, "throttle");
        cr_assert(r->cfg.global_interval_ns == 100000000 && r->cfg.global_lease_ttl_ns == 2 * SEC &&
                  r->cfg.global_timeout_ns == 200000000);
        free(r);

        expect_one_fault("[api]\nrate = 10/s\nscope = global\nexpected_hosts = 2\n", 3,
                         "needs [global] redis");
        expect_one_fault("[global]\nredis = h:1\n\n[api]\nrate = 10/s\nscope = global\n", 6,
                         "needs expected_hosts");
        expect_one_fault("[api]\nrate = 10/s\nscope = everywhere\n", 3, "(local or global)");
        expect_one_fault("[api]\nrate = 10/s\nexpected_hosts = 3\n", 3,
                         "applies only with scope = global");
        expect_one_fault("[global]\nredis = h:1\n\n[api]\nrate = 10/s\nscope = global\n"
                         "expected_hosts = 2\non_redis_down = maybe\n",
                         8, "one of keep, closed, open");
        expect_one_fault("[global]\nredis = h:1\n\n[api]\nrate = 10/s\nscope = global\n"
                         "expected_hosts = 2\nadaptive = aimd\nmin_rate = 1/s\nmax_rate = 20/s\n",
                         6, "cannot be adaptive");
        expect_one_fault("[lease]\nkind = semaphore\nmax = 3\nscope = global\n", 4, "scope");
        expect_one_fault("[global]\nredis = h:1\ninterval = 1s\nlease_ttl = 1s\n\n[api]\n"
                         "rate = 10/s\nscope = global\nexpected_hosts = 2\n",
                         1, "at least twice interval");
        expect_one_fault("[global]\nredis =\n", 2, "empty");
        expect_one_fault("[global]\nredis = h:1\nprefix = a{b}\n", 3, "only A-Z");
        expect_one_fault("[global]\nredis = h:1\n[global]\nredis = h:2\n", 3,
                         "duplicate section [global]");
}

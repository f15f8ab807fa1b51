/*
 * test_doc_claims.c - proves the numbers and behaviours the docs state (issue 18, defect 10), so
 * that they cannot drift apart again: the bytes a key costs, as daemon/throttled.conf states
 * them; that its commented llm_tokens example does not fit the default spare and does fit the
 * spare it names; what a client gets when a table is full (thr_limiter_try(3)); what degrades
 * with no daemon, with the figure README.md gives; and that a retired limiter comes back only
 * with the same capacity and shards (thr_limiter_open(3)). The numbers are read from the docs
 * themselves where they state one. Issue 13: every table size README, throttle(7),
 * throttled.conf and throttled.conf(5) state (per key or whole, of each kind) and the reader
 * record's, against a real arena's file size; every THR_ name a man page or a message of the
 * programs gives is one the public header defines.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "helpers.h"

/* ---------------------------------------------------------------- reading the docs */

/* The file REL of the source tree (tests/../REL), whole, NUL-terminated; the caller frees. */
static char *source_text(const char *rel)
{
        char path[512];
        const char *slash = strrchr(__FILE__, '/');
        snprintf(path, sizeof(path), "%.*s../%s", slash ? (int)(slash - __FILE__ + 1) : 0, __FILE__,
                 rel);
        FILE *f = fopen(path, "re");
        cr_assert_not_null(f, "%s", path);
        char *text = calloc(1, 1 << 20);
        fread(text, 1, (1 << 20) - 1, f);
        fclose(f);
        return text;
}

/* The first number of TEXT matched by the extended regex RE (its first group). */
static uint64_t doc_number(const char *text, const char *re, const char *doc)
{
        regex_t rx;
        regmatch_t m[2];
        cr_assert_eq(regcomp(&rx, re, REG_EXTENDED), 0);
        int rc = regexec(&rx, text, 2, m, 0);
        regfree(&rx);
        cr_assert_eq(rc, 0, "%s states no /%s/", doc, re);
        return strtoull(text + m[1].rm_so, NULL, 10);
}

/* The path of the source tree's directory REL (tests/../REL) into BUF. */
static const char *source_path(const char *rel, char *buf, size_t len)
{
        const char *slash = strrchr(__FILE__, '/');
        snprintf(buf, len, "%.*s../%s", slash ? (int)(slash - __FILE__ + 1) : 0, __FILE__, rel);
        return buf;
}

/* ---------------------------------------------------------------- arenas */

static char g_dir[64];

static void setup(void)
{
        snprintf(g_dir, sizeof(g_dir), "/dev/shm/thrtest.XXXXXX");
        cr_assert_not_null(mkdtemp(g_dir));
}

static void teardown(void)
{
        rmdir(g_dir);
}

TestSuite(doc_claims, .init = setup, .fini = teardown, .timeout = 120);

/* Create an arena of SPEC in the test's directory (manual clock, /dev/shm). */
static void make(struct shm_arena_spec *spec, const char *name, struct shm_map *m)
{
        char err[512] = "";
        snprintf(spec->name, sizeof(spec->name), "%s", name);
        spec->dir = g_dir;
        spec->hugepages = SHM_HUGE_OFF;
        spec->clock = THR_CLOCK_MANUAL;
        spec->mode = 0600;
        spec->gid = (gid_t)-1;
        cr_assert_geq(shm_arena_create(spec, m, err, sizeof(err)), 0, "%s", err);
}

static void unmake(struct shm_map *m)
{
        unlink(m->path);
        shm_arena_detach(m);
}

/* The shipped config, loaded. */
static struct config *shipped(void)
{
        char path[512], err[4096];
        const char *slash = strrchr(__FILE__, '/');
        snprintf(path, sizeof(path), "%.*s../daemon/throttled.conf",
                 slash ? (int)(slash - __FILE__ + 1) : 0, __FILE__);
        struct config *cfg = calloc(1, sizeof(*cfg));
        cr_assert_eq(config_load(path, cfg, err, sizeof(err)), 0, "%s", err);
        return cfg;
}

/* ---------------------------------------------------------------- sizes */

/* throttled.conf: "the table takes about N bytes a key"; measured on its per_key limiter. */
Test(doc_claims, bytes_a_key_are_what_throttled_conf_says)
{
        char *conf = source_text("daemon/throttled.conf");
        uint64_t claimed = doc_number(conf, "about ([0-9]+) bytes a key", "throttled.conf");
        free(conf);
        struct config *cfg = shipped();
        struct shm_arena_spec a = cfg->arena, none = cfg->arena;
        none.nlimiters = 0;
        const struct shm_limiter_spec *pk = NULL;
        for (size_t i = 0; i < cfg->nlimiters; i++)
                if (!strcmp(cfg->limiters[i].name, "per_key"))
                        pk = &cfg->limiters[i];
        cr_assert_not_null(pk);
        a.limiters = pk;
        a.nlimiters = 1;
        a.spare_bytes = none.spare_bytes = 0;
        struct shm_map with, without;
        make(&a, "with", &with);
        make(&none, "without", &without);
        double per_key = (double)(with.size - without.size) / (double)pk->capacity;
        unmake(&with);
        unmake(&without);
        cr_assert(per_key > claimed * 0.95 && per_key < claimed * 1.05,
                  "a key of per_key costs %.1f bytes; throttled.conf says about %llu", per_key,
                  (unsigned long long)claimed);
        free(cfg);
}

/* throttled.conf(5): a window limiter's table, "12 KiB a key for limit = 1000", measured. */
Test(doc_claims, window_bytes_a_key_are_what_the_man_page_says)
{
        char *man = source_text("doc/man/throttled.conf.5");
        uint64_t kib = doc_number(man, "([0-9]+) KiB a key for", "throttled.conf(5)");
        uint64_t n =
            doc_number(man, "KiB a key for\n\\.BR \"limit = ([0-9]+)\"", "throttled.conf(5)");
        free(man);
        struct shm_limiter_spec w = {
            .kind = THR_KIND_WINDOW, .rate_n = n, .period_ns = 1000000000, .capacity = 4096};
        snprintf(w.name, sizeof(w.name), "w");
        struct shm_arena_spec a = {.max_limiters = 2,
                                   .max_readers = 4,
                                   .nlimiters = 1,
                                   .limiters = &w},
                              none = a;
        none.nlimiters = 0;
        struct shm_map with, without;
        make(&a, "with", &with);
        make(&none, "without", &without);
        double per_key = (double)(with.size - without.size) / (double)w.capacity;
        unmake(&with);
        unmake(&without);
        cr_assert(per_key > kib * 1024 * 0.95 && per_key < kib * 1024 * 1.05,
                  "a key of a window of %llu costs %.1f bytes; throttled.conf(5) says %llu KiB",
                  (unsigned long long)n, per_key, (unsigned long long)kib);
}

/* The bytes an arena gains with limiter S in it: its parameter record and its table, as the
 * file's size shows them (both arenas on /dev/shm, no spare). */
static double limiter_bytes(struct shm_limiter_spec s)
{
        snprintf(s.name, sizeof(s.name), "x");
        struct shm_arena_spec a = {.max_limiters = 2,
                                   .max_readers = 4,
                                   .nlimiters = 1,
                                   .limiters = &s},
                              none = a;
        none.nlimiters = 0;
        struct shm_map with, without;
        make(&a, "with", &with);
        make(&none, "without", &without);
        double bytes = (double)(with.size - without.size);
        unmake(&with);
        unmake(&without);
        return bytes;
}

static struct shm_limiter_spec gcra(uint64_t capacity)
{
        struct shm_limiter_spec s = tspec("x", 10, SEC, 10, 10);
        s.capacity = capacity;
        return s;
}

static struct shm_limiter_spec budget(uint64_t capacity)
{
        struct shm_limiter_spec s = tspec_budget("x", 100);
        s.capacity = capacity;
        return s;
}

static struct shm_limiter_spec window(uint64_t n, uint64_t capacity)
{
        return (struct shm_limiter_spec){
            .kind = THR_KIND_WINDOW, .rate_n = n, .period_ns = 10 * SEC, .capacity = capacity};
}

static struct shm_limiter_spec semaphore(uint64_t leases, uint64_t capacity)
{
        struct shm_limiter_spec s = tspec("x", 4, 0, 0, 0);
        s.kind = THR_KIND_SEMAPHORE;
        s.leases = leases;
        s.max_reserve_ns = 0;
        s.capacity = capacity;
        return s;
}

/* The [llm_tokens] example of throttled.conf and throttled.conf(5). */
static struct shm_limiter_spec llm_tokens(void)
{
        struct shm_limiter_spec s = tspec("x", 20000, 60 * SEC, 20000, 10000);
        s.capacity = 1000000;
        s.shards = 256;
        return s;
}

/* What a size claim is per: a key of capacity, or the whole table. */
enum per { PER_KEY, WHOLE };

/*
 * One figure a doc gives of the memory a table takes: the first group of RE in DOC, in UNIT bytes
 * (per key of capacity, or for the whole table) for the limiter of SPEC.
 */
struct size_claim {
        const char *doc, *re;
        double unit;
        enum per per;
        struct shm_limiter_spec spec;
};

#define KIB 1024.0
#define MIB (1024.0 * 1024.0)

/* Each size the docs state, against the arena (issue 13: 128, 192 and 96 bytes a key, 183 and
 * 184 MiB for the same million keys, stood side by side). Measured figures within 10 % of the
 * stated ones: the docs round ("about 1 KiB" for 960 bytes), the old figures were 30 % and more
 * off. */
Test(doc_claims, every_stated_table_size_is_what_an_arena_takes)
{
        const struct size_claim claims[] = {
            {"README.md", "\\(about ([0-9]+) bytes each: 1\\.5 slots", 1, PER_KEY, gcra(65536)},
            {"README.md", "([0-9]+) B of table per key of capacity", 1, PER_KEY, gcra(65536)},
            {"README.md", "= ([0-9]+) bytes per key of capacity", 1, PER_KEY, budget(65536)},
            {"README.md", "([0-9]+) KiB a key for N = 1000", KIB, PER_KEY, window(1000, 1024)},
            {"README.md", "per key of capacity, ([0-9]+) KiB with the default 8", KIB, PER_KEY,
             semaphore(8, 65536)},
            {"doc/man/throttle.7", "([0-9]+) bytes of table per key", 1, PER_KEY, gcra(65536)},
            {"daemon/throttled.conf", "([0-9.]+) MB for 10000", 1e6, WHOLE, gcra(10000)},
            {"daemon/throttled.conf", "about ([0-9]+) MiB \\([0-9]+ bytes a key\\)", MIB, WHOLE,
             llm_tokens()},
            {"daemon/throttled.conf", "about [0-9]+ MiB \\(([0-9]+) bytes a key\\)", 1, PER_KEY,
             llm_tokens()},
            {"daemon/throttled.conf", "about ([0-9.]+) KiB a key\n# of capacity here", KIB, PER_KEY,
             window(100, 1000)},
            {"daemon/throttled.conf", "([0-9.]+) MiB\n# for 1000 keys", MIB, WHOLE,
             window(100, 1000)},
            {"daemon/throttled.conf",
             "About ([0-9]+) KiB a key of capacity \\(1\\.5 x \\(128 \\+ "
             "64 x 8\\)",
             KIB, PER_KEY, semaphore(8, 65536)},
            {"daemon/throttled.conf", "([0-9]+) KiB here, a small table", KIB, WHOLE,
             semaphore(8, 64)},
            {"doc/man/throttled.conf.5", "Its table takes about ([0-9]+) bytes per key", 1, PER_KEY,
             gcra(65536)},
            {"doc/man/throttled.conf.5", "its table \\(([0-9]+) bytes per key of capacity", 1,
             PER_KEY, gcra(65536)},
            {"doc/man/throttled.conf.5", "Default: 65536 \\(about ([0-9]+) MiB for GCRA", MIB,
             WHOLE, gcra(65536)},
            {"doc/man/throttled.conf.5", "MiB for GCRA, ([0-9]+) MiB for a budget", MIB, WHOLE,
             budget(65536)},
            {"doc/man/throttled.conf.5", "per key of capacity, ([0-9]+) bytes, about", 1, PER_KEY,
             budget(65536)},
            {"doc/man/throttled.conf.5", "([0-9]+) MiB for the default capacity", MIB, WHOLE,
             budget(65536)},
            {"doc/man/throttled.conf.5", "about ([0-9]+) KiB a key at the largest", KIB, PER_KEY,
             window(16384, 256)},
            {"doc/man/throttled.conf.5", "about ([0-9]+) KiB a key for the default", KIB, PER_KEY,
             semaphore(8, 65536)},
            {"doc/man/throttled.conf.5", "about ([0-9]+) KiB a key at 1024", KIB, PER_KEY,
             semaphore(1024, 256)},
            {"doc/man/throttled.conf.5", "capacity = 1000000 +; about ([0-9]+) MiB", MIB, WHOLE,
             llm_tokens()},
            {"doc/man/throttled.conf.5", "capacity = 4096 +; about ([0-9.]+) MiB", MIB, WHOLE,
             budget(4096)},
        };
        int bad = 0;
        for (size_t i = 0; i < sizeof(claims) / sizeof(claims[0]); i++) {
                const struct size_claim *c = &claims[i];
                char *text = source_text(c->doc);
                regex_t rx;
                regmatch_t m[2];
                cr_assert_eq(regcomp(&rx, c->re, REG_EXTENDED), 0, "%s", c->re);
                int rc = regexec(&rx, text, 2, m, 0);
                regfree(&rx);
                cr_assert_eq(rc, 0, "%s states no /%s/", c->doc, c->re);
                double stated = strtod(text + m[1].rm_so, NULL);
                free(text);
                double got = limiter_bytes(c->spec) /
                             (c->per == PER_KEY ? (double)c->spec.capacity : 1.0) / c->unit;
                if (got < stated * 0.9 || got > stated * 1.1) {
                        cr_log_error("%s: /%s/ states %g, the arena takes %.3g", c->doc, c->re,
                                     stated, got);
                        bad++;
                }
        }
        cr_assert_eq(bad, 0, "%d stated sizes are not what an arena takes (see the log)", bad);
}

/* The size of a reader record, as throttled.conf and throttled.conf(5) state it: the record,
 * then its row of request counters, 32 bytes a limiter entry rounded up to 64 (2 entries here). */
Test(doc_claims, reader_record_size_is_what_the_docs_say)
{
        struct shm_arena_spec few = {.max_limiters = 2, .max_readers = 4}, many = few;
        many.max_readers += 4096; /* a multiple of the page: no rounding in the difference */
        struct shm_map a, b;
        make(&few, "few", &a);
        make(&many, "many", &b);
        uint64_t each = (b.size - a.size) / 4096;
        unmake(&a);
        unmake(&b);
        char *conf = source_text("daemon/throttled.conf");
        char *man = source_text("doc/man/throttled.conf.5");
        uint64_t row = THR_LCOUNT_STRIDE(2);
        cr_assert_eq(row, 64);
        cr_assert_eq(doc_number(conf, "one record of ([0-9]+) bytes each", "throttled.conf") + row,
                     each);
        cr_assert_eq(
            doc_number(conf, "request counters, ([0-9]+) bytes a limiter", "throttled.conf"),
            THR_LCOUNT_SIZE);
        cr_assert_eq(doc_number(man, "one per\nthread, ([0-9]+)\nbytes each", "throttled.conf(5)") +
                         row,
                     each);
        cr_assert_eq(
            doc_number(man, "per-limiter counters of ([0-9]+) bytes per", "throttled.conf(5)"),
            THR_LCOUNT_SIZE);
        free(conf);
        free(man);
}

/* The commented [llm_tokens] of throttled.conf, uncommented, appended to the shipped config. */
static struct config *with_llm_tokens(void)
{
        char *conf = source_text("daemon/throttled.conf");
        char *at = strstr(conf, "# [llm_tokens]");
        cr_assert_not_null(at, "throttled.conf has no commented [llm_tokens]");
        char path[] = "/tmp/thr_doc_XXXXXX", err[4096];
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        FILE *f = fdopen(fd, "w");
        fwrite(conf, 1, (size_t)(at - conf), f);
        for (char *line = at; line && !strncmp(line, "# ", 2);) {
                char *nl = strchr(line, '\n');
                fprintf(f, "%.*s\n", nl ? (int)(nl - line - 2) : (int)strlen(line + 2), line + 2);
                line = nl ? nl + 1 : NULL;
        }
        fclose(f);
        free(conf);
        struct config *cfg = calloc(1, sizeof(*cfg));
        cr_assert_eq(config_load(path, cfg, err, sizeof(err)), 0, "%s", err);
        unlink(path);
        cr_assert_eq(cfg->nlimiters, 3);
        return cfg;
}

/* throttled.conf: the llm_tokens example cannot be added by a reload under the default spare, and
 * can under the spare it names ("spare = N MiB"). */
Test(doc_claims, llm_tokens_example_needs_the_spare_throttled_conf_names)
{
        char *conf = source_text("daemon/throttled.conf");
        uint64_t mib = doc_number(conf, "spare = ([0-9]+)MiB \\(or more\\)", "throttled.conf");
        free(conf);
        struct config *base = shipped(), *llm = with_llm_tokens();
        llm->arena.clock = THR_CLOCK_MANUAL; /* as make() builds them */
        char err[512];
        struct shm_map m;
        struct shm_arena_spec a = base->arena;
        make(&a, "spare_default", &m);
        cr_assert_eq(shm_arena_configure(&m, &llm->arena, err, sizeof(err)), -ENOSPC,
                     "the example fits the default spare: %s", err);
        unmake(&m);
        a = base->arena;
        a.spare_bytes = mib << 20;
        make(&a, "spare_named", &m);
        cr_assert_eq(shm_arena_configure(&m, &llm->arena, err, sizeof(err)), 0, "%s", err);
        unmake(&m);
        free(base);
        free(llm);
}

/* ---------------------------------------------------------------- a full table */

static struct shm_limiter_spec small(const char *name, uint64_t capacity, uint32_t on_full)
{
        struct shm_limiter_spec s = tspec(name, 10, SEC, 10, 10);
        s.capacity = capacity;
        s.on_full = on_full;
        s.idle_ttl_ns = SEC;
        return s;
}

/* An arena NAME with one limiter "x" (small(), CAPACITY, ON_FULL), opened through the API. */
static void one_limiter(uint64_t capacity, uint32_t on_full, const char *name, struct shm_map *m,
                        thr_arena **ar, thr_limiter **l)
{
        struct shm_limiter_spec s = small("x", capacity, on_full);
        struct shm_arena_spec a = {
            .max_limiters = 4, .max_readers = 16, .nlimiters = 1, .limiters = &s};
        make(&a, name, m);
        cr_assert_eq(thr_arena_open(m->path, 0, ar), 0);
        cr_assert_eq(thr_limiter_open(*ar, "x", l), 0);
}

/* thr_limiter_try(3), on_full = deny: a new key that finds the table full is denied with
 * retry_after one emission interval, remaining 0 and reset_after 0 (it has no bucket). */
Test(doc_claims, full_table_denial_reports_no_bucket)
{
        struct shm_map m;
        thr_arena *ar;
        thr_limiter *l;
        one_limiter(16, THR_FULL_DENY, "full", &m, &ar, &l);
        struct thr_result r;
        int i = 0, rc = 1;
        for (char k[16]; rc == 1 && i < 1000; i++)
                rc = thr_limiter_try(l, k, (size_t)snprintf(k, sizeof(k), "k%d", i), 1, &r);
        cr_assert_eq(rc, 0, "the table filled up");
        cr_assert_eq(r.remaining, 0);
        cr_assert_eq(r.reset_after_ns, 0);
        cr_assert_eq(r.retry_after_ns, SEC / 10, "one emission interval");
        thr_limiter_close(l);
        thr_arena_close(ar);
        unmake(&m);
}

/* README: without the daemon, evicted slots stay retired: "a capacity-64 table with no daemon
 * denied D of N fresh keys (one every 10 ms, each idle after a second; with the daemon, none)". */
Test(doc_claims, without_daemon_evicted_slots_stay_retired)
{
        char *readme = source_text("README.md");
        uint64_t denied_doc = doc_number(readme, "no daemon denied ([0-9]+) of", "README.md");
        uint64_t keys = doc_number(readme, "no daemon denied [0-9]+ of ([0-9]+) fresh", "README");
        free(readme);
        struct shm_map m;
        thr_arena *ar;
        thr_limiter *l;
        one_limiter(64, THR_FULL_EVICT, "nodaemon", &m, &ar, &l);
        uint64_t denied = 0;
        for (uint64_t i = 0; i < keys; i++) {
                char k[16];
                denied +=
                    thr_limiter_try(
                        l, k, (size_t)snprintf(k, sizeof(k), "key%llu", (unsigned long long)i), 1,
                        NULL) == 0;
                cr_assert_eq(thr_clock_advance(ar, 10 * 1000000), 0);
        }
        cr_assert_eq(denied, denied_doc, "%llu of %llu denied; README says %llu",
                     (unsigned long long)denied, (unsigned long long)keys,
                     (unsigned long long)denied_doc);
        thr_limiter_close(l);
        thr_arena_close(ar);
        unmake(&m);
}

/* ---------------------------------------------------------------- retire and revive */

/* thr_limiter_open(3): a retired limiter's handles get -EIDRM; configured again with other shards
 * it is a new limiter (the old handles stay -EIDRM), with the same capacity and shards the old
 * handles work again on their buckets. */
Test(doc_claims, revival_needs_the_same_capacity_and_shards)
{
        struct shm_limiter_spec s = small("x", 1024, THR_FULL_DENY);
        struct shm_arena_spec a = {.max_limiters = 8,
                                   .max_readers = 16,
                                   .spare_bytes = 4 << 20,
                                   .nlimiters = 1,
                                   .limiters = &s};
        struct shm_map m;
        char err[512];
        make(&a, "revive", &m);
        thr_arena *ar;
        thr_limiter *old, *fresh;
        cr_assert_eq(thr_arena_open(m.path, 0, &ar), 0);
        cr_assert_eq(thr_limiter_open(ar, "x", &old), 0);
        cr_assert_eq(thr_limiter_try(old, "k", 1, 4, NULL), 1);
        struct shm_arena_spec none = a;
        none.nlimiters = 0;
        cr_assert_eq(shm_arena_configure(&m, &none, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(thr_limiter_try(old, "k", 1, 1, NULL), -EIDRM);
        cr_assert_eq(thr_limiter_open(ar, "x", &fresh), -ENOENT);

        struct shm_limiter_spec other = s;
        other.shards = 4;
        struct shm_arena_spec b = a;
        b.limiters = &other;
        cr_assert_eq(shm_arena_configure(&m, &b, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(thr_limiter_try(old, "k", 1, 1, NULL), -EIDRM, "other shards: not revived");
        cr_assert_eq(thr_limiter_open(ar, "x", &fresh), 0);
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(fresh, "k", 1, 0, &r), 1);
        cr_assert_eq(r.remaining, 10, "a new limiter: a new, full bucket");
        thr_limiter_close(fresh);
        thr_limiter_close(old);
        thr_arena_close(ar);
        unmake(&m);
}

/* ---------------------------------------------------------------- names the docs give */

/* Whether the public header defines NAME (a macro: every THR_ name a user can write is one). */
static bool public_name(const char *header, const char *name)
{
        char want[160];
        snprintf(want, sizeof(want), "#define %s ", name);
        return strstr(header, want) != NULL;
}

/* Each THR_ name in TEXT (up to END, or its end) that throttle.h does not define, reported as
 * WHERE; the count. */
static int unknown_names(const char *header, const char *text, const char *end, const char *where)
{
        regex_t rx;
        regmatch_t m[1];
        int bad = 0;
        cr_assert_eq(regcomp(&rx, "THR_[A-Z0-9_]+", REG_EXTENDED), 0);
        char *copy = strndup(text, end ? (size_t)(end - text) : strlen(text));
        for (const char *at = copy; regexec(&rx, at, 1, m, 0) == 0; at += m[0].rm_eo) {
                char name[128];
                snprintf(name, sizeof(name), "%.*s", (int)(m[0].rm_eo - m[0].rm_so),
                         at + m[0].rm_so);
                if (!public_name(header, name)) {
                        cr_log_error("%s names %s, which throttle.h does not define", where, name);
                        bad++;
                }
        }
        free(copy);
        regfree(&rx);
        return bad;
}

/* Every THR_ name a man page gives (its .TH title line, the page's name in capitals, aside) is
 * one a program can use: defined by the public header (issue 13: the pages and shmctl said
 * THR_KEY_MAX, the header has THR_KEY_MAX_LEN, so the pages' examples did not compile). */
Test(doc_claims, man_pages_name_only_public_identifiers)
{
        char *header = source_text("libclient/include/throttle/throttle.h");
        char dir[512];
        DIR *d = opendir(source_path("doc/man", dir, sizeof(dir)));
        cr_assert_not_null(d, "%s", dir);
        int bad = 0, pages = 0;
        for (struct dirent *e; (e = readdir(d));) {
                if (e->d_name[0] == '.')
                        continue;
                char rel[300];
                snprintf(rel, sizeof(rel), "doc/man/%s", e->d_name);
                char *page = source_text(rel);
                for (char *line = page; line && *line;) {
                        char *nl = strchr(line, '\n');
                        if (strncmp(line, ".TH ", 4) != 0)
                                bad += unknown_names(header, line, nl, rel);
                        line = nl ? nl + 1 : NULL;
                }
                free(page);
                pages++;
        }
        closedir(d);
        free(header);
        cr_assert_gt(pages, 40, "the man pages were found");
        cr_assert_eq(bad, 0, "%d names the public header does not define (see the log)", bad);
}

/* The string literals of C source TEXT (comments and character constants skipped), each
 * followed by a newline, into a new string the caller frees. */
static char *string_literals(const char *text)
{
        size_t n = strlen(text), o = 0;
        char *out = calloc(1, n + 2);
        for (size_t i = 0; i < n; i++) {
                if (text[i] == '/' && text[i + 1] == '*') {
                        const char *end = strstr(text + i + 2, "*/");
                        i = end ? (size_t)(end - text) + 1 : n;
                } else if (text[i] == '/' && text[i + 1] == '/') {
                        while (i < n && text[i] != '\n')
                                i++;
                } else if (text[i] == '\'') {
                        for (i++; i < n && text[i] != '\''; i++)
                                i += text[i] == '\\';
                } else if (text[i] == '"') {
                        for (i++; i < n && text[i] != '"'; i++) {
                                if (text[i] == '\\')
                                        out[o++] = text[i++];
                                out[o++] = text[i];
                        }
                        out[o++] = '\n';
                }
        }
        return out;
}

/* The same for what the programs say: every THR_ name in a message of throttled, shmctl or the
 * client library (thr_strerror) is defined by the public header. */
Test(doc_claims, messages_name_only_public_identifiers)
{
        static const char *const dirs[] = {"daemon", "libclient"};
        char *header = source_text("libclient/include/throttle/throttle.h");
        int bad = 0, files = 0;
        for (size_t k = 0; k < sizeof(dirs) / sizeof(dirs[0]); k++) {
                char dir[512];
                DIR *d = opendir(source_path(dirs[k], dir, sizeof(dir)));
                cr_assert_not_null(d, "%s", dir);
                for (struct dirent *e; (e = readdir(d));) {
                        size_t len = strlen(e->d_name);
                        if (len < 3 || strcmp(e->d_name + len - 2, ".c") != 0)
                                continue;
                        char rel[300];
                        snprintf(rel, sizeof(rel), "%s/%s", dirs[k], e->d_name);
                        char *src = source_text(rel);
                        char *lit = string_literals(src);
                        bad += unknown_names(header, lit, NULL, rel);
                        free(lit);
                        free(src);
                        files++;
                }
                closedir(d);
        }
        free(header);
        cr_assert_gt(files, 10, "the sources were found");
        cr_assert_eq(bad, 0, "%d names the public header does not define (see the log)", bad);
}

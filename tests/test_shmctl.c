/*
 * test_shmctl.c - proves that shmctl reports what the arena holds (status with grace periods and
 * eviction totals, limiters with their policies and shard counters, live or retired, reader
 * records with their liveness, keys in debt order with exact values on a manual clock, get), that
 * every --json answer is one well-formed JSON value, and that a corrupt or missing arena gives a
 * clear message and the documented sysexits code, never a crash (garbage reader records included);
 * and window limiters: their kind, limit and bytes per key, their keys' units in the window, oldest
 * unit, next free and reset times at exact arena times, a serialized key's holder and waiters
 * (children blocked in thr_serial_begin), and scribbled logs and headers that never crash it.
 *
 * Each test builds a small manual-clock arena in a fresh directory under /dev/shm, drives it
 * through the public client API, then runs the built shmctl binary ($THR_TEST_BUILD_DIR/daemon/
 * shmctl) and reads its output. Corruptions are written through the test's own writable mapping,
 * after the client has closed the arena.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "helpers.h"
#include "shm.h"
#include "throttle/throttle.h"

#define MS           1000000ull
#define S            1000000000ull
#define OUT_MAX      65536
#define EX_NOTFOUND_ 1 /* shmctl: no such limiter or key */

#define MAX_KIDS 4

static struct {
        char dir[64];
        struct shm_map map;
        thr_arena *arena;
        pid_t kids[MAX_KIDS]; /* children blocked in thr_serial_begin, killed at teardown */
} fx;

static struct shm_limiter_spec lim_spec(const char *name, uint64_t n, uint64_t period_ns,
                                        uint64_t burst, uint64_t initial)
{
        struct shm_limiter_spec s = {.rate_n = n,
                                     .period_ns = period_ns,
                                     .burst = burst,
                                     .initial = initial,
                                     .capacity = 64};
        snprintf(s.name, sizeof(s.name), "%s", name);
        return s;
}

/* A manual-clock arena called NAME in a fresh temp dir, opened by the client too. */
static void make_arena(const char *name, size_t n, const struct shm_limiter_spec *lims)
{
        char err[256] = "";
        struct shm_arena_spec spec = {.hugepages = SHM_HUGE_OFF,
                                      .mode = 0600,
                                      .gid = (gid_t)-1,
                                      .clock = THR_CLOCK_MANUAL,
                                      .max_limiters = 4,
                                      .max_readers = 16,
                                      .nlimiters = n,
                                      .limiters = lims};
        snprintf(spec.name, sizeof(spec.name), "%s", name);
        snprintf(fx.dir, sizeof(fx.dir), "/dev/shm/thr-shmctl-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir), "mkdtemp: %s", strerror(errno));
        spec.dir = fx.dir;
        int rc = shm_arena_create(&spec, &fx.map, err, sizeof(err));
        cr_assert_geq(rc, 0, "shm_arena_create: %s", err);
        rc = thr_arena_open(fx.map.path, 0, &fx.arena);
        cr_assert_eq(rc, 0, "thr_arena_open: %s", thr_strerror(rc));
}

static void close_client(void)
{
        if (fx.arena)
                thr_arena_close(fx.arena);
        fx.arena = NULL;
}

static void teardown(void)
{
        for (int i = 0; i < MAX_KIDS; i++) {
                if (fx.kids[i] > 0) {
                        kill(fx.kids[i], SIGKILL);
                        waitpid(fx.kids[i], NULL, 0);
                }
        }
        close_client();
        if (fx.map.base) {
                unlink(fx.map.path);
                shm_arena_detach(&fx.map);
        }
        if (fx.dir[0])
                rmdir(fx.dir);
}

TestSuite(shmctl, .fini = teardown);

/* Spend COST on KEY COUNT times in limiter NAME; each must be admitted. */
static void spend(const char *name, const char *key, size_t len, int count)
{
        thr_limiter *lim;
        cr_assert_eq(thr_limiter_open(fx.arena, name, &lim), 0);
        for (int i = 0; i < count; i++)
                cr_assert_eq(thr_limiter_try(lim, key, len, 1, NULL), 1, "try %d on %s", i, key);
        thr_limiter_close(lim);
}

/* Run shmctl on the test arena with ARGS (a shell fragment); output (stdout and stderr) to OUT. */
static int run(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int run(char *out, const char *fmt, ...)
{
        char args[512], cmd[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(args, sizeof(args), fmt, ap);
        va_end(ap);
        const char *bd = getenv("THR_TEST_BUILD_DIR");
        cr_assert_not_null(bd, "THR_TEST_BUILD_DIR is not set (run through ctest)");
        snprintf(cmd, sizeof(cmd), "'%s/daemon/shmctl' -a '%s' %s 2>&1", bd, fx.map.path, args);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p, "popen: %s", strerror(errno));
        size_t n = fread(out, 1, OUT_MAX - 1, p);
        out[n] = '\0';
        int st = pclose(p);
        cr_assert(WIFEXITED(st), "shmctl %s did not exit normally (status %#x): %s", args, st, out);
        return WEXITSTATUS(st);
}

static void assert_has(const char *out, const char *want)
{
        cr_assert_not_null(strstr(out, want), "expected \"%s\" in:\n%s", want, out);
}

/* The line of OUT containing WANT, into LINE (LEN bytes); fails the test if there is none. */
static const char *line_with(const char *out, const char *want, char *line, size_t len)
{
        const char *at = strstr(out, want);
        cr_assert_not_null(at, "expected a line with \"%s\" in:\n%s", want, out);
        while (at > out && at[-1] != '\n')
                at--;
        size_t n = strcspn(at, "\n");
        snprintf(line, len, "%.*s", (int)n, at);
        return line;
}

/* ---------------------------------------------------------------- a JSON syntax check */

/* Just the grammar of RFC 8259, enough to prove the output parses; *P advanced past a value. */
static bool json_value(const char **p);

static void json_ws(const char **p)
{
        while (**p == ' ' || **p == '\n' || **p == '\t' || **p == '\r')
                (*p)++;
}

static bool json_string(const char **p)
{
        if (*(*p)++ != '"')
                return false;
        while (**p != '"') {
                unsigned char ch = (unsigned char)*(*p)++;
                if (ch < 0x20) /* the end of the text included */
                        return false;
                if (ch != '\\')
                        continue;
                char e = *(*p)++;
                if (e == 'u') {
                        for (int i = 0; i < 4; i++)
                                if (!isxdigit((unsigned char)*(*p)++))
                                        return false;
                } else if (!e || !strchr("\"\\/bfnrt", e)) {
                        return false;
                }
        }
        (*p)++;
        return true;
}

static bool json_digits(const char **p)
{
        if (!isdigit((unsigned char)**p))
                return false;
        while (isdigit((unsigned char)**p))
                (*p)++;
        return true;
}

static bool json_number(const char **p)
{
        if (**p == '-')
                (*p)++;
        if (**p == '0')
                (*p)++;
        else if (!json_digits(p))
                return false;
        if (**p == '.' && ((*p)++, !json_digits(p)))
                return false;
        if (**p == 'e' || **p == 'E') {
                (*p)++;
                if (**p == '+' || **p == '-')
                        (*p)++;
                return json_digits(p);
        }
        return true;
}

/* An object (KEYED) or an array, from its opening bracket to CLOSE. */
static bool json_items(const char **p, char close, bool keyed)
{
        (*p)++;
        json_ws(p);
        if (**p == close)
                return (*p)++, true;
        for (;;) {
                json_ws(p);
                if (keyed && !json_string(p))
                        return false;
                json_ws(p);
                if (keyed && *(*p)++ != ':')
                        return false;
                if (!json_value(p))
                        return false;
                json_ws(p);
                char ch = *(*p)++;
                if (ch == close)
                        return true;
                if (ch != ',')
                        return false;
        }
}

static bool json_literal(const char **p, const char *word)
{
        size_t n = strlen(word);
        if (strncmp(*p, word, n) != 0)
                return false;
        *p += n;
        return true;
}

static bool json_value(const char **p)
{
        json_ws(p);
        switch (**p) {
        case '{':
                return json_items(p, '}', true);
        case '[':
                return json_items(p, ']', false);
        case '"':
                return json_string(p);
        case 't':
                return json_literal(p, "true");
        case 'f':
                return json_literal(p, "false");
        case 'n':
                return json_literal(p, "null");
        default:
                return json_number(p);
        }
}

/* Whether S is exactly one JSON value (and white space); *AT: where the check stopped. */
static bool json_ok(const char *s, const char **at)
{
        if (!json_value(at)) /* *AT may be just past the end now: read no more */
                return false;
        json_ws(at);
        return **at == '\0' && *at > s;
}

static void assert_json(const char *out)
{
        const char *at = out;
        cr_assert(json_ok(out, &at), "not one JSON value (fault near offset %td):\n%s", at - out,
                  out);
}

Test(shmctl, json_check_rejects_malformed_output)
{
        static const char *const bad[] = {"",          "{",         "{\"a\":1,}", "[1 2]",
                                          "{\"a\" 1}", "\"\\x41\"", "01",         "1.",
                                          "nul",       "{} {}",     "\"a\nb\""};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                const char *at = bad[i];
                cr_assert(!json_ok(bad[i], &at), "accepted: %s", bad[i]);
        }
        const char *good = "{\"a\":[1,-2.5e3,true,null,\"\\u00ff\"],\"b\":{}}\n";
        const char *at = good;
        cr_assert(json_ok(good, &at), "rejected: %s", good);
}

/* The directory entry and table of limiter NAME in the test's writable mapping. */
static struct thr_dir_entry *entry_of(const char *name)
{
        int idx = shm_dir_find(&fx.map, name);
        cr_assert_geq(idx, 0, "limiter %s", name);
        struct thr_dir_entry *dir = shm_at(fx.map.base, shm_hdr(&fx.map)->dir_off);
        return &dir[idx];
}

static struct thr_table *table_of(const char *name)
{
        return shm_at(fx.map.base, entry_of(name)->table_off);
}

/* Arena with "api" (10/s, burst 5) holding a: 5 spent, b: 2, c: 1, then 50 ms later. */
static void three_keys(const char *arena)
{
        struct shm_limiter_spec l[] = {lim_spec("api", 10, S, 5, 5),
                                       lim_spec("tokens", 20000, 60 * S, 100, 100)};
        make_arena(arena, 2, l);
        spend("api", "b", 1, 2);
        spend("api", "a", 1, 5);
        spend("api", "c", 1, 1);
        cr_assert_eq(thr_clock_advance(fx.arena, 50 * MS), 0);
}

Test(shmctl, status_names_limiters_and_backing)
{
        static char out[OUT_MAX];
        three_keys("status");
        cr_assert_eq(run(out, "status"), 0, "%s", out);
        assert_has(out, "2 in use of 4");
        assert_has(out, "/dev/shm");
        assert_has(out, "manual, now 50ms");
        assert_has(out, "live keys    3 of 128 (2.3%)");
        cr_assert_eq(run(out, "--json status"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"limiters\":2,\"max_limiters\":4");
        assert_has(out, "\"backing\":\"shm\"");
        assert_has(out, "\"clock\":\"manual\",\"now_ns\":50000000");
        assert_has(out, "\"live_keys\":3");
        assert_has(out, "\"alive\":false");
}

Test(shmctl, limiters_shows_rates_as_configured)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {lim_spec("tokens", 20000, 60 * S, 100, 100),
                                       lim_spec("odd", 1000000000, 7 * S, 3, 1)};
        make_arena("limiters", 2, l);
        cr_assert_eq(run(out, "limiters"), 0, "%s", out);
        assert_has(out, "20000/min");
        assert_has(out, "1000000000/7s");
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"name\":\"odd\",\"rate\":\"1000000000/7s\",\"rate_n\":1000000000,"
                        "\"period_ns\":7000000000,\"burst\":3,\"initial\":1,");
}

Test(shmctl, json_keys_most_indebted_first)
{
        static char out[OUT_MAX];
        three_keys("keys");
        cr_assert_eq(run(out, "--json keys api"), 0, "%s", out);
        assert_json(out);
        /* T = 100 ms: a is 500 ms in debt less the 50 ms elapsed, b 200 - 50, c 100 - 50. */
        const char *a = strstr(out, "{\"key\":\"a\",\"remaining\":0,\"burst\":5,"
                                    "\"reset_after_ns\":450000000,\"tat\":500000000,");
        const char *b = strstr(out, "{\"key\":\"b\",\"remaining\":3,\"burst\":5,"
                                    "\"reset_after_ns\":150000000,\"tat\":200000000,");
        const char *c = strstr(out, "{\"key\":\"c\",\"remaining\":4,\"burst\":5,"
                                    "\"reset_after_ns\":50000000,\"tat\":100000000,");
        cr_assert(a && b && c, "keys missing or wrong:\n%s", out);
        cr_assert(a < b && b < c, "not most indebted first:\n%s", out);
        assert_has(out, "\"live\":3,\"shown\":3");
        cr_assert_eq(run(out, "--json keys api -n 2"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"live\":3,\"shown\":2");
        cr_assert_null(strstr(out, "\"key\":\"c\""), "-n 2 showed c:\n%s", out);
}

Test(shmctl, human_keys_table)
{
        static char out[OUT_MAX];
        three_keys("table");
        cr_assert_eq(run(out, "keys api"), 0, "%s", out);
        assert_has(out, "KEY  REMAINING  RESET_AFTER        TAT\n");
        assert_has(out, "a          0/5        450ms  500000000\n");
        assert_has(out, "c          4/5         50ms  100000000\n");
}

Test(shmctl, fresh_key_is_a_full_bucket_without_debt)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {lim_spec("api", 10, S, 5, 2)};
        make_arena("fresh", 1, l);
        spend("api", "old", 3, 1);
        /* A slot inserted but never charged, as a client leaves it between insert and CAS. */
        struct thr_slot *slot;
        bool created;
        uint64_t h = shm_hash(shm_hdr(&fx.map)->secret, "new", 3);
        cr_assert_eq(shm_table_insert(&fx.map, table_of("api"), h, "new", 3, shm_lock_daemon(0),
                                      &slot, &created),
                     0);
        cr_assert_eq(run(out, "--json keys api"), 0, "%s", out);
        assert_json(out);
        const char *old = strstr(out, "{\"key\":\"old\",\"remaining\":1,");
        const char *fresh = strstr(out, "{\"key\":\"new\",\"remaining\":2,");
        cr_assert(old && fresh && old < fresh, "fresh key not last or wrong:\n%s", out);
        assert_has(out, "\"tat\":null,\"fresh\":true}");
}

Test(shmctl, get_present_and_absent_keys)
{
        static char out[OUT_MAX];
        three_keys("get");
        cr_assert_eq(run(out, "--json get api b"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"key\":\"b\",\"remaining\":3,\"burst\":5,\"reset_after_ns\":150000000,"
                        "\"tat\":200000000,\"fresh\":false}");
        cr_assert_eq(run(out, "get api b"), 0, "%s", out);
        assert_has(out, "3/5");
        assert_has(out, "150ms");
        cr_assert_eq(run(out, "get api nobody"), 1, "%s", out);
        assert_has(out, "no such key");
        cr_assert_eq(run(out, "get nolimiter b"), 1, "%s", out);
        assert_has(out, "no such limiter");
        cr_assert_eq(run(out, "keys nolimiter"), 1, "%s", out);
}

Test(shmctl, binary_keys_are_escaped)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {lim_spec("api", 10, S, 5, 5)};
        make_arena("escape", 1, l);
        spend("api", "k\x01\"\\\xff", 5, 1);
        cr_assert_eq(run(out, "--json keys api"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"key\":\"k\\u0001\\\"\\\\\\u00ff\"");
        cr_assert_eq(run(out, "keys api"), 0, "%s", out);
        assert_has(out, "k\\x01\"\\\\\\xff ");
}

/* ---------------------------------------------------------------- eviction and reclamation */

static struct thr_shard *shards_of(const char *name)
{
        return shm_at(fx.map.base, table_of(name)->shards_off);
}

static struct thr_reader *reader_recs(void)
{
        return shm_at(fx.map.base, shm_hdr(&fx.map)->reader_off);
}

/* Index of the reader record this process owns (exactly one: tests run on one thread). */
static uint32_t my_reader(void)
{
        struct thr_reader *r = reader_recs();
        int found = -1;
        for (uint32_t i = 0; i < shm_hdr(&fx.map)->reader_count; i++) {
                if (atomic_load(&r[i].owner) && atomic_load(&r[i].pid) == (uint64_t)getpid()) {
                        cr_assert_eq(found, -1, "this process owns two records");
                        found = (int)i;
                }
        }
        cr_assert_geq(found, 0, "this process owns no reader record");
        return (uint32_t)found;
}

Test(shmctl, status_shows_grace_periods_and_membarrier)
{
        static char out[OUT_MAX];
        three_keys("gp");
        struct thr_hdr *h = shm_hdr(&fx.map);
        atomic_store(&h->grace_periods, 42);
        atomic_store(&h->gp_done, 40);
        atomic_store(&h->readers_forced, 3);
        atomic_store(&h->mb_fallback, 1);
        cr_assert_eq(run(out, "status"), 0, "%s", out);
        assert_has(out, "grace        42 periods started, last completed 40\n");
        assert_has(out, "readers      1 in use of 16, 3 forced offline (dead owners)\n");
        assert_has(out, "membarrier   global (fallback)\n");
        cr_assert_eq(run(out, "--json status"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"grace_periods\":42,\"gp_done\":40,\"readers_forced\":3,"
                        "\"membarrier\":\"global\"");
        cr_assert_eq(run(out, "readers"), 0, "%s", out);
        assert_has(out, "3 readers forced offline; grace periods: 42 started, last completed 40; "
                        "membarrier global (fallback)\n");
        atomic_store(&h->mb_fallback, 0);
        cr_assert_eq(run(out, "status"), 0, "%s", out);
        assert_has(out, "membarrier   expedited\n");
}

Test(shmctl, readers_lists_this_thread_alive)
{
        static char out[OUT_MAX];
        char want[512], line[512], pid[32];
        three_keys("readers"); /* 8 admissions, 3 inserts, from this thread */
        uint32_t idx = my_reader();
        snprintf(want, sizeof(want),
                 "{\"index\":%u,\"pid\":%d,\"tid\":%d,\"online\":null,\"gp_seen\":0,"
                 "\"blocking_ns\":null,\"stalled\":false,\"alive\":true,\"admitted\":8,"
                 "\"denied\":0,\"inserts\":3,\"cas_retries\":0}",
                 idx, (int)getpid(), (int)gettid());
        cr_assert_eq(run(out, "--json readers"), 0, "%s", out);
        assert_json(out);
        assert_has(out, want);
        assert_has(out, "\"records\":16,\"owned\":1,\"online\":0,\"stalled\":0,\"dead\":0,");
        cr_assert_eq(run(out, "readers"), 0, "%s", out);
        assert_has(out, "INDEX  ");
        snprintf(pid, sizeof(pid), " %d ", (int)getpid());
        line_with(out, pid, line, sizeof(line));
        assert_has(line, " -  ");   /* offline */
        assert_has(line, " no  ");  /* not stalled */
        assert_has(line, " yes  "); /* alive: its lock is held by this process */
        assert_has(out, "16 records, 1 owned, 0 online, 0 stalled, 0 dead\n");
        /* given back at close: no longer listed */
        close_client();
        cr_assert_eq(run(out, "--json readers"), 0, "%s", out);
        assert_has(out, "\"owned\":0,");
        assert_has(out, "\"readers\":[]}");
}

Test(shmctl, readers_owner_without_lock_is_dead)
{
        static char out[OUT_MAX];
        char line[512];
        struct shm_limiter_spec l[] = {lim_spec("api", 10, S, 5, 5)};
        make_arena("dead", 1, l);
        cr_assert_eq(thr_clock_advance(fx.arena, 2 * S), 0);
        /* what a process killed inside a call leaves: owner and online set, nobody holds the lock
         */
        struct thr_reader *r = &reader_recs()[5];
        atomic_store(&r->owner, 0x1234567);
        atomic_store(&r->pid, 4242);
        atomic_store(&r->tid, 4243);
        atomic_store(&r->online, 8);
        atomic_store(&r->gp_seen, 6);
        atomic_store(&r->blocking_ns, 500 * MS);
        atomic_store(&r->stalled, 1);
        atomic_store(&r->admitted, 11);
        cr_assert_eq(run(out, "--json readers"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"index\":5,\"pid\":4242,\"tid\":4243,\"online\":7,\"gp_seen\":6,"
                        "\"blocking_ns\":1500000000,\"stalled\":true,\"alive\":false,"
                        "\"admitted\":11,\"denied\":0,\"inserts\":0,\"cas_retries\":0}");
        assert_has(out, "\"owned\":1,\"online\":1,\"stalled\":1,\"dead\":1,");
        cr_assert_eq(run(out, "readers"), 0, "%s", out);
        line_with(out, " 4242 ", line, sizeof(line));
        assert_has(line, " 7  ");    /* the snapshot it entered with */
        assert_has(line, " 1.5s  "); /* blocking since 500 ms, now 2 s */
        assert_has(line, " yes  ");  /* stalled */
        assert_has(line, " dead  ");
        assert_has(out, "16 records, 1 owned, 1 online, 1 stalled, 1 dead\n");
}

/* xorshift64: the same garbage at every run */
static uint64_t next_rand(uint64_t *x)
{
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        return *x;
}

Test(shmctl, garbage_reader_records_do_not_crash)
{
        static char out[OUT_MAX];
        three_keys("garbage");
        close_client();
        struct thr_reader *r = reader_recs();
        uint64_t x = 0x9e3779b97f4a7c15ull;
        for (uint32_t i = 0; i < shm_hdr(&fx.map)->reader_count; i++) {
                _Atomic uint64_t *w = &r[i].owner;
                for (size_t k = 0; k < THR_READER_SIZE / 8; k++)
                        atomic_store(&w[k], next_rand(&x));
                if (i % 4 == 0)
                        atomic_store(&r[i].owner, 0); /* some free records among them */
                if (i % 4 == 1)
                        atomic_store(&r[i].online, UINT64_MAX);
        }
        struct thr_hdr *h = shm_hdr(&fx.map);
        atomic_store(&h->grace_periods, next_rand(&x));
        atomic_store(&h->gp_done, UINT64_MAX);
        atomic_store(&h->readers_forced, next_rand(&x));
        atomic_store(&h->mb_fallback, 0xdeadbeef);
        cr_assert_eq(run(out, "readers"), 0, "%s", out);
        assert_has(out, "16 records, 12 owned,");
        cr_assert_eq(run(out, "--json readers"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"owned\":12,");
        assert_has(out, "\"membarrier\":\"global\"");
        cr_assert_eq(run(out, "--json status"), 0, "%s", out);
        assert_json(out);
        cr_assert_eq(run(out, "status"), 0, "%s", out);
}

Test(shmctl, limiters_sum_shard_counters_and_show_policies)
{
        static char out[OUT_MAX];
        char line[512];
        struct shm_limiter_spec l[] = {lim_spec("ev", 10, S, 5, 5), lim_spec("plain", 10, S, 5, 5)};
        l[0].shards = 4;
        l[0].on_full = THR_FULL_EVICT;
        l[0].idle_ttl_ns = 90 * S;
        make_arena("counters", 2, l);
        struct thr_shard *sh = shards_of("ev");
        atomic_store(&sh[0].evicted, 1);
        atomic_store(&sh[3].evicted, 2);
        atomic_store(&sh[1].evicted_full, 5);
        atomic_store(&sh[2].evicted_full, 6);
        for (int i = 0; i < 4; i++)
                atomic_store(&sh[i].reclaimed, 1);
        atomic_store(&sh[2].allowed_full, 7);
        atomic_store(&shards_of("plain")[0].evicted, 100);
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"shards\":4,");
        assert_has(out, "\"state\":\"live\",\"occupancy_pct\":0.0,\"idle_ttl_ns\":90000000000,"
                        "\"on_full\":\"evict\",\"evicted\":3,\"evicted_full\":11,\"reclaimed\":4,"
                        "\"allowed_full\":7}");
        assert_has(out, "\"idle_ttl_ns\":0,\"on_full\":\"deny\",\"evicted\":100,");
        cr_assert_eq(run(out, "limiters"), 0, "%s", out);
        line_with(out, "ev ", line, sizeof(line));
        assert_has(line, " live ");
        assert_has(line, " 0/64 0.0% ");
        assert_has(line, " 90s ");
        assert_has(line, " evict ");
        cr_assert_eq(run(out, "status"), 0, "%s", out);
        assert_has(out, "evicted      103 idle, 11 for room; 4 slots reclaimed\n");
        assert_has(out, "table full   0 inserts failed, 7 admitted unrecorded\n");
        cr_assert_eq(run(out, "--json status"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"capacity\":128,\"evicted\":103,\"evicted_full\":11,\"reclaimed\":4,"
                        "\"insert_failures\":0,\"allowed_full\":7,");
}

/* Try KEY once in limiter NAME: the return value, RES filled. */
static int try_once(const char *name, const char *key, struct thr_result *res)
{
        thr_limiter *lim;
        cr_assert_eq(thr_limiter_open(fx.arena, name, &lim), 0);
        int rc = thr_limiter_try(lim, key, strlen(key), 1, res);
        thr_limiter_close(lim);
        return rc;
}

Test(shmctl, full_tables_count_by_policy)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {lim_spec("deny", 10, S, 5, 5),
                                       lim_spec("allow", 10, S, 5, 5),
                                       lim_spec("evict", 10, S, 5, 5)};
        for (int i = 0; i < 3; i++) {
                l[i].capacity = 2;
                l[i].shards = 1;
                l[i].on_full = (uint32_t)i; /* deny, allow, evict */
        }
        make_arena("full", 3, l);
        struct thr_result res;
        for (int i = 0; i < 3; i++) {
                cr_assert_eq(try_once(l[i].name, "k1", &res), 1);
                cr_assert_eq(try_once(l[i].name, "k2", &res), 1);
        }
        cr_assert_eq(try_once("deny", "k3", &res), 0, "a new key in a full table is denied");
        cr_assert_eq(res.retry_after_ns, 100 * MS, "retry after one emission interval");
        cr_assert_eq(try_once("allow", "k3", &res), 1, "admitted, unrecorded");
        cr_assert_eq(try_once("evict", "k3", &res), 1, "admitted after an eviction");
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"name\":\"deny\",");
        assert_has(out, "\"capacity\":2,\"live\":2,\"shards\":1,\"shard_slots\":11,"
                        "\"insert_failures\":1,\"state\":\"live\",\"occupancy_pct\":100.0,"
                        "\"idle_ttl_ns\":0,\"on_full\":\"deny\",\"evicted\":0,\"evicted_full\":0,");
        assert_has(out, "\"on_full\":\"allow\",\"evicted\":0,\"evicted_full\":0,\"reclaimed\":0,"
                        "\"allowed_full\":1}");
        assert_has(out, "\"on_full\":\"evict\",\"evicted\":0,\"evicted_full\":1,\"reclaimed\":0,"
                        "\"allowed_full\":0}");
        cr_assert_eq(run(out, "limiters"), 0, "%s", out);
        assert_has(out, " 2/2 100.0% ");
}

Test(shmctl, retired_limiter_is_listed_as_retired)
{
        static char out[OUT_MAX];
        three_keys("retired");
        thr_limiter *lim;
        cr_assert_eq(thr_limiter_open(fx.arena, "api", &lim), 0);
        /* what a reload that drops the limiter does: the entry retires, its table stays */
        atomic_store(&entry_of("api")->state, THR_DIR_RETIRED);
        cr_assert_eq(thr_limiter_try(lim, "a", 1, 1, NULL), -EIDRM);
        thr_limiter_close(lim);
        cr_assert_eq(run(out, "status"), 0, "%s", out);
        assert_has(out, "limiters     1 in use of 4, 1 retired\n");
        assert_has(out, "live keys    3 of 128 ");
        cr_assert_eq(run(out, "--json status"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"limiters\":1,\"max_limiters\":4,");
        assert_has(out, "\"retired_limiters\":1,");
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"live\":3,\"shards\":1,\"shard_slots\":104,\"insert_failures\":0,"
                        "\"state\":\"retired\"");
        cr_assert_eq(run(out, "limiters"), 0, "%s", out);
        assert_has(out, "retired");
        cr_assert_eq(run(out, "keys api"), 0, "%s", out);
        assert_has(out, "limiter api (retired): 3 live keys");
        cr_assert_eq(run(out, "--json keys api"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"limiter\":\"api\",\"state\":\"retired\",");
}

/* Corruptions are written after the client closed the arena: shmctl must refuse, not crash. */
static void expect_dataerr(const char *args)
{
        static char out[OUT_MAX];
        close_client();
        cr_assert_eq(run(out, "%s", args), EX_DATAERR, "%s", out);
        assert_has(out, "not valid");
}

Test(shmctl, bad_magic_is_dataerr)
{
        three_keys("magic");
        shm_hdr(&fx.map)->magic ^= 1;
        expect_dataerr("status");
}

Test(shmctl, params_off_past_the_end_is_dataerr)
{
        three_keys("params");
        atomic_store(&entry_of("tokens")->params_off, fx.map.size + 4096);
        expect_dataerr("limiters");
}

Test(shmctl, zero_shards_is_dataerr)
{
        three_keys("shards");
        table_of("api")->nshards = 0;
        expect_dataerr("keys api");
}

Test(shmctl, slots_off_out_of_range_is_dataerr)
{
        three_keys("slots");
        table_of("api")->slots_off = fx.map.size - THR_SLOT_SIZE;
        expect_dataerr("--json keys api");
}

Test(shmctl, huge_key_len_is_dataerr)
{
        three_keys("keylen");
        uint64_t h = shm_hash(shm_hdr(&fx.map)->secret, "a", 1);
        struct thr_slot *s = shm_table_lookup(fx.map.base, table_of("api"), h, "a", 1);
        cr_assert_not_null(s);
        s->key_len = 5000;
        expect_dataerr("keys api");
}

/* A real-clock arena whose epoch_ns a client overwrote with an extreme value: shmctl reads the
 * time with unsigned arithmetic (its shm_now_ns overflowed a signed int64_t: UB, and an abort
 * under UBSan), and answers, or says the arena is corrupt, but never crashes. */
Test(shmctl, corrupt_epoch_does_not_overflow)
{
        static char out[OUT_MAX];
        three_keys("epoch");
        close_client();
        struct thr_hdr *h = shm_hdr(&fx.map);
        h->clock_id = THR_CLOCK_MONOTONIC;
        int64_t epochs[] = {INT64_MIN, INT64_MIN + 1, INT64_MAX, -1};
        const char *cmds[] = {"status",   "--json status", "readers",
                              "keys api", "get api a",     "limiters"};
        for (size_t i = 0; i < sizeof(epochs) / sizeof(epochs[0]); i++) {
                h->epoch_ns = epochs[i];
                for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
                        int rc = run(out, "%s", cmds[c]);
                        cr_assert(rc == 0 || rc == EX_DATAERR || rc == EX_NOTFOUND_,
                                  "epoch %lld, %s: exit %d: %s", (long long)epochs[i], cmds[c], rc,
                                  out);
                        cr_assert_null(strstr(out, "runtime error"), "epoch %lld, %s: %s",
                                       (long long)epochs[i], cmds[c], out);
                }
        }
}

Test(shmctl, missing_arena_is_noinput)
{
        static char out[OUT_MAX];
        snprintf(fx.map.path, sizeof(fx.map.path), "/dev/shm/thr-shmctl-none/throttle.none");
        cr_assert_eq(run(out, "status"), EX_NOINPUT, "%s", out);
        fx.map.path[0] = '\0';
}

Test(shmctl, bad_arguments_are_usage_errors)
{
        static char out[OUT_MAX];
        snprintf(fx.map.path, sizeof(fx.map.path), "/dev/shm/thr-shmctl-none/throttle.none");
        cr_assert_eq(run(out, "%s", ""), EX_USAGE, "%s", out);
        cr_assert_eq(run(out, "frobnicate"), EX_USAGE, "%s", out);
        cr_assert_eq(run(out, "keys"), EX_USAGE, "%s", out);
        cr_assert_eq(run(out, "keys api -n many"), EX_USAGE, "%s", out);
        cr_assert_eq(run(out, "status -n 3"), EX_USAGE, "%s", out);
        cr_assert_eq(run(out, "readers extra"), EX_USAGE, "%s", out);
        cr_assert_eq(run(out, "--help"), 0, "%s", out);
        assert_has(out, "usage: shmctl");
        fx.map.path[0] = '\0';
}

/* ---------------------------------------------------------------- window limiters */

static struct shm_limiter_spec win_spec(const char *name, uint64_t n, uint64_t w, bool serialize)
{
        struct shm_limiter_spec s = lim_spec(name, n, w, 0, 0); /* burst, initial: GCRA only */
        s.kind = THR_KIND_WINDOW;
        s.serialize = serialize;
        return s;
}

static void advance(uint64_t ns)
{
        cr_assert_eq(thr_clock_advance(fx.arena, ns), 0);
}

/* Window "w" (5 per 2 s) and GCRA "api": a gets 2 units at 0 and 3 at 500 ms, b 1 at 250 ms;
 * now is 1 s. */
static void window_keys(const char *arena)
{
        struct shm_limiter_spec l[] = {win_spec("w", 5, 2 * S, false),
                                       lim_spec("api", 10, S, 5, 5)};
        make_arena(arena, 2, l);
        spend("w", "a", 1, 2);
        advance(250 * MS);
        spend("w", "b", 1, 1);
        advance(250 * MS);
        spend("w", "a", 1, 3);
        advance(500 * MS);
}

Test(shmctl, limiters_show_kind_serialize_and_bytes_per_key)
{
        static char out[OUT_MAX];
        char line[512];
        struct shm_limiter_spec l[] = {win_spec("w", 5, 2 * S, false),
                                       win_spec("ser", 10, 250 * MS, true),
                                       lim_spec("api", 10, S, 5, 5)};
        make_arena("wlim", 3, l);
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_json(out);
        /* a log of N words after a 64-byte header, in 64-byte lines, and the 128-byte slot */
        assert_has(out, "{\"name\":\"w\",\"rate\":\"5/2s\",\"rate_n\":5,\"period_ns\":2000000000,"
                        "\"burst\":5,\"initial\":5,\"kind\":\"window\",\"limit\":5,"
                        "\"window_ns\":2000000000,\"serialize\":false,\"bytes_per_slot\":256,"
                        "\"capacity\":64,");
        assert_has(out, "\"kind\":\"window\",\"limit\":10,\"window_ns\":250000000,"
                        "\"serialize\":true,\"bytes_per_slot\":320,");
        assert_has(out,
                   "{\"name\":\"api\",\"rate\":\"10/s\",\"rate_n\":10,\"period_ns\":1000000000,"
                   "\"burst\":5,\"initial\":5,\"kind\":\"gcra\",\"serialize\":false,"
                   "\"bytes_per_slot\":128,\"capacity\":64,");
        cr_assert_eq(run(out, "limiters"), 0, "%s", out);
        assert_has(out, "NAME  STATE  KIND        RATE  BURST  INITIAL  SERIALIZE  SHARDS  ");
        assert_has(out, " SLOT_BYTES  IDLE_TTL  ");
        assert_has(line_with(out, "ser ", line, sizeof(line)),
                   "ser   live   window  10/250ms     10       10  yes             1");
        assert_has(line, " 320  ");
        assert_has(line_with(out, "w ", line, sizeof(line)), "w     live   window      5/2s ");
        assert_has(line, "  no  ");
        assert_has(line, " 256  ");
        assert_has(line_with(out, "api ", line, sizeof(line)), "api   live   gcra        10/s  ");
        assert_has(line, "  -  ");
        assert_has(line, " 128  ");
}

Test(shmctl, window_keys_show_used_oldest_next_free_and_reset)
{
        static char out[OUT_MAX];
        window_keys("wkeys");
        cr_assert_eq(run(out, "--json keys w"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"limiter\":\"w\",\"state\":\"live\",\"kind\":\"window\",\"limit\":5,"
                        "\"window_ns\":2000000000,\"serialize\":false,\"now_ns\":1000000000,"
                        "\"units_per_ns\":1,\"live\":2,\"shown\":2,\"keys\":[");
        /* a: full until its units of 0 leave at 2 s, empty at 2.5 s; b: 1 unit, room now */
        const char *a = strstr(out, "{\"key\":\"a\",\"used\":5,\"limit\":5,\"remaining\":0,"
                                    "\"oldest_ns\":0,\"next_free_after_ns\":1000000000,"
                                    "\"reset_after_ns\":1500000000,\"units\":5}");
        const char *b = strstr(out, "{\"key\":\"b\",\"used\":1,\"limit\":5,\"remaining\":4,"
                                    "\"oldest_ns\":250000000,\"next_free_after_ns\":0,"
                                    "\"reset_after_ns\":1250000000,\"units\":1}");
        cr_assert(a && b && a < b, "keys wrong or not most indebted first:\n%s", out);
        cr_assert_eq(run(out, "keys w"), 0, "%s", out);
        assert_has(out, "limiter w: 2 live keys, 2 shown, most indebted first, arena time 1s, "
                        "window of 5 units per 2s\n"
                        "KEY  USED     OLDEST  NEXT_FREE  RESET_AFTER  UNITS\n"
                        "a     5/5     1s ago         1s         1.5s      5\n"
                        "b     1/5  750ms ago        now        1.25s      1\n");
        /* at 2.4 s the window (0.4 s, 2.4 s] holds a's 3 units of 500 ms */
        advance(1400 * MS);
        cr_assert_eq(run(out, "--json get w a"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"key\":\"a\",\"used\":3,\"limit\":5,\"remaining\":2,"
                        "\"oldest_ns\":500000000,\"next_free_after_ns\":0,"
                        "\"reset_after_ns\":100000000,\"units\":5}\n");
        advance(100 * MS);
        cr_assert_eq(run(out, "--json get w a"), 0, "%s", out);
        assert_has(out, "{\"key\":\"a\",\"used\":0,\"limit\":5,\"remaining\":5,\"oldest_ns\":null,"
                        "\"next_free_after_ns\":0,\"reset_after_ns\":0,\"units\":5}\n");
        cr_assert_eq(run(out, "get w a"), 0, "%s", out);
        assert_has(out, "a     0/5       -        now          0ns      5\n");
        /* the GCRA limiter's answer is unchanged by the window kind */
        spend("api", "g", 1, 1);
        cr_assert_eq(run(out, "--json keys api"), 0, "%s", out);
        assert_has(out, "{\"limiter\":\"api\",\"state\":\"live\",\"now_ns\":2500000000,");
        cr_assert_eq(run(out, "keys api"), 0, "%s", out);
        assert_has(out, "TAT in units of 1/1 ns\nKEY  REMAINING  RESET_AFTER         TAT\n");
}

/* A reservation is logged at its due time: while it is ahead, a peek finds no room, and the
 * oldest unit in the window may be one not yet due. */
Test(shmctl, window_reservation_ahead_is_the_oldest_unit)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {win_spec("w", 5, 2 * S, false)};
        l[0].max_reserve_ns = 60 * S;
        make_arena("wres", 1, l);
        spend("w", "r", 1, 5);
        thr_limiter *lim;
        struct thr_reservation rv;
        cr_assert_eq(thr_limiter_open(fx.arena, "w", &lim), 0);
        cr_assert_eq(thr_limiter_reserve(lim, "r", 1, 5, 10 * S, &rv), 0);
        cr_assert_eq(rv.due_ns, 2 * S, "due when the units of 0 leave");
        thr_limiter_close(lim);
        advance(S);
        /* all 5 logged at 2 s: the next unit fits when they leave, at 4 s */
        cr_assert_eq(run(out, "--json get w r"), 0, "%s", out);
        assert_has(out, "{\"key\":\"r\",\"used\":5,\"limit\":5,\"remaining\":0,"
                        "\"oldest_ns\":2000000000,\"next_free_after_ns\":3000000000,"
                        "\"reset_after_ns\":3000000000,\"units\":10}\n");
        cr_assert_eq(run(out, "get w r"), 0, "%s", out);
        assert_has(out, "r     5/5   in 1s         3s           3s     10\n");
}

/* The serialized header of KEY in limiter LIM, in the test's writable mapping. */
static struct thr_serial *serial_of(const char *lim, const char *key)
{
        struct thr_table *tb = table_of(lim);
        uint64_t h = shm_hash(shm_hdr(&fx.map)->secret, key, strlen(key));
        struct thr_slot *s = shm_table_lookup(fx.map.base, tb, h, key, (uint32_t)strlen(key));
        cr_assert_not_null(s, "key %s", key);
        return shm_serial(shm_slot_aux(fx.map.base, tb, s));
}

/* Fork a child that waits for KEY's hold in L, then ends it at once; back once it has queued
 * as the key's WAITERS-th waiter. */
static void queue_waiter(int i, thr_limiter *l, const char *key, uint32_t waiters)
{
        fx.kids[i] = tfork();
        if (fx.kids[i] == 0) {
                struct thr_hold mine;
                if (thr_serial_begin(l, key, strlen(key), 1, UINT64_MAX / 2, &mine) < 0)
                        _exit(3);
                _exit(thr_serial_end(&mine) == 0 ? 0 : 4);
        }
        struct thr_serial *hdr = serial_of("s", key);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (atomic_load(&hdr->waiters) != waiters)
                cr_assert_lt(telapsed_s(&t0), 10.0, "child %d never queued", i);
}

static void reap_kid(int i)
{
        int st;
        cr_assert_eq(waitpid(fx.kids[i], &st, 0), fx.kids[i]);
        fx.kids[i] = 0;
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: status %#x", i, st);
}

Test(shmctl, serialized_key_shows_holder_and_waiters)
{
        static char out[OUT_MAX];
        char want[512], line[512];
        struct shm_limiter_spec l[] = {win_spec("s", 10, S, true)};
        make_arena("serial", 1, l);
        thr_limiter *lim;
        cr_assert_eq(thr_limiter_open(fx.arena, "s", &lim), 0);
        struct thr_hold h;
        cr_assert_eq(thr_serial_begin(lim, "q", 1, 1, 0, &h), 0);
        advance(100 * MS);
        cr_assert_eq(thr_serial_end(&h), 0); /* 1 unit completed at 100 ms */
        cr_assert_eq(thr_serial_begin(lim, "q", 1, 2, 0, &h), 0);
        advance(300 * MS); /* held since 100 ms; now 400 ms */
        queue_waiter(0, lim, "q", 1);
        queue_waiter(1, lim, "q", 2);
        snprintf(want, sizeof(want),
                 "{\"key\":\"q\",\"used\":1,\"limit\":10,\"remaining\":9,\"oldest_ns\":100000000,"
                 "\"next_free_after_ns\":0,\"reset_after_ns\":700000000,\"units\":1,"
                 "\"holder_pid\":%d,\"held_for_ns\":300000000,\"hold_cost\":2,\"waiters\":2,"
                 "\"served\":2,\"released\":0}",
                 (int)getpid());
        cr_assert_eq(run(out, "--json get s q"), 0, "%s", out);
        assert_json(out);
        assert_has(out, want);
        cr_assert_eq(run(out, "--json keys s"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"kind\":\"window\",\"limit\":10,\"window_ns\":1000000000,"
                        "\"serialize\":true,");
        assert_has(out, want);
        cr_assert_eq(run(out, "keys s"), 0, "%s", out);
        assert_has(out, "window of 10 units per 1s, serialized\n");
        assert_has(out, "KEY  USED     OLDEST  NEXT_FREE  RESET_AFTER  UNITS  HOLDER  HELD_FOR  "
                        "WAITERS  SERVED  RELEASED\n");
        snprintf(want, sizeof(want), "  %d     300ms        2       2         0\n", (int)getpid());
        assert_has(line_with(out, "q ", line, sizeof(line)),
                   "q    1/10  300ms ago        now        700ms      1");
        assert_has(out, want);
        /* the hold ends at 400 ms: each child is granted, in turn, and completes 1 unit */
        cr_assert_eq(thr_serial_end(&h), 0);
        reap_kid(0);
        reap_kid(1);
        thr_limiter_close(lim);
        cr_assert_eq(run(out, "--json get s q"), 0, "%s", out);
        assert_has(out, "{\"key\":\"q\",\"used\":5,\"limit\":10,\"remaining\":5,"
                        "\"oldest_ns\":100000000,\"next_free_after_ns\":0,"
                        "\"reset_after_ns\":1000000000,\"units\":5,\"holder_pid\":0,"
                        "\"held_for_ns\":null,\"hold_cost\":0,\"waiters\":0,\"served\":4,"
                        "\"released\":0}\n");
        cr_assert_eq(run(out, "get s q"), 0, "%s", out);
        assert_has(out, "q    5/10  300ms ago        now           1s      5       -         -  "
                        "      0       4         0\n");
}

/* Every word of the aux storage and the state word of each live slot of LIM, as garbage. */
static void scribble(const char *lim, uint64_t *x, uint64_t round)
{
        static const uint64_t states[] = {THR_TAT_LIMIT, THR_TAT_FREE, THR_TAT_FRESH, 1ull << 63,
                                          0};
        struct thr_table *tb = table_of(lim);
        struct thr_slot *s0 = shm_at(fx.map.base, tb->slots_off);
        uint64_t nslots = (uint64_t)tb->nshards * tb->shard_slots;
        for (uint64_t i = 0; i < nslots; i++) {
                if (THR_META_STATUS(atomic_load(&s0[i].meta)) != THR_SLOT_LIVE)
                        continue;
                uint64_t u = round < 5 ? states[round] : next_rand(x);
                atomic_store(&s0[i].state, u == THR_TAT_DEAD ? 0 : u);
                _Atomic uint64_t *aux = shm_slot_aux(fx.map.base, tb, &s0[i]);
                for (uint32_t w = 0; w < tb->aux_stride / 8; w++) {
                        uint64_t r = next_rand(x);
                        /* none, the largest time, near now, or any */
                        uint64_t v = r % 4 == 0   ? 0
                                     : r % 4 == 1 ? UINT64_MAX
                                     : r % 4 == 2 ? r % S
                                                  : r;
                        atomic_store(&aux[w], v);
                }
        }
}

Test(shmctl, scribbled_window_keys_do_not_crash)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {win_spec("w", 5, 2 * S, false), win_spec("s", 4, S, true)};
        make_arena("scribble", 2, l);
        spend("w", "a", 1, 3);
        spend("w", "b", 1, 1);
        thr_limiter *lim;
        cr_assert_eq(thr_limiter_open(fx.arena, "s", &lim), 0);
        struct thr_hold h;
        cr_assert_eq(thr_serial_begin(lim, "q", 1, 2, 0, &h), 0);
        cr_assert_eq(thr_serial_end(&h), 0);
        thr_limiter_close(lim);
        close_client();
        static const char *const cmds[] = {"keys w", "--json keys w", "get w a", "--json get w b",
                                           "keys s", "--json keys s", "get s q", "--json get s q"};
        static const uint64_t nows[] = {S, 0, THR_TAT_LIMIT, UINT64_MAX / 2};
        uint64_t x = 0x2545f4914f6cdd1dull;
        for (uint64_t round = 0; round < 8; round++) {
                scribble("w", &x, round);
                scribble("s", &x, round);
                atomic_store(&shm_hdr(&fx.map)->manual_now_ns, nows[round % 4]);
                for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
                        cr_assert_eq(run(out, "%s", cmds[c]), 0, "round %lu, %s: %s",
                                     (unsigned long)round, cmds[c], out);
                        cr_assert_null(strstr(out, "runtime error"), "%s: %s", cmds[c], out);
                        if (cmds[c][0] == '-')
                                assert_json(out);
                }
        }
}

Test(shmctl, window_log_smaller_than_its_limit_is_dataerr)
{
        struct shm_limiter_spec l[] = {win_spec("w", 5, 2 * S, false)};
        make_arena("wlog", 1, l);
        spend("w", "a", 1, 1);
        table_of("w")->aux_stride = 64; /* a header and no room for 5 words */
        expect_dataerr("keys w");
}

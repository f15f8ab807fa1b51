/*
 * test_shmctl.c - proves that shmctl reports what the arena holds (status, limiters, keys in debt
 * order with exact values on a manual clock, get) and that a corrupt or missing arena gives a
 * clear message and the documented sysexits code, never a crash.
 *
 * Each test builds a small manual-clock arena in a fresh directory under /dev/shm, drives it
 * through the public client API, then runs the built shmctl binary ($THR_TEST_BUILD_DIR/daemon/
 * shmctl) and reads its output. Corruptions are written through the test's own writable mapping,
 * after the client has closed the arena.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "shm.h"
#include "throttle/throttle.h"

#define MS      1000000ull
#define S       1000000000ull
#define OUT_MAX 65536

static struct {
        char dir[64];
        struct shm_map map;
        thr_arena *arena;
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
        assert_has(out, "live keys    3");
        cr_assert_eq(run(out, "--json status"), 0, "%s", out);
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
        assert_has(out, "{\"name\":\"odd\",\"rate\":\"1000000000/7s\",\"rate_n\":1000000000,"
                        "\"period_ns\":7000000000,\"burst\":3,\"initial\":1,");
}

Test(shmctl, json_keys_most_indebted_first)
{
        static char out[OUT_MAX];
        three_keys("keys");
        cr_assert_eq(run(out, "--json keys api"), 0, "%s", out);
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
        cr_assert_eq(shm_table_insert(fx.map.base, table_of("api"), h, "new", 3, &slot, &created),
                     0);
        cr_assert_eq(run(out, "--json keys api"), 0, "%s", out);
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
        assert_has(out, "\"key\":\"k\\u0001\\\"\\\\\\u00ff\"");
        cr_assert_eq(run(out, "keys api"), 0, "%s", out);
        assert_has(out, "k\\x01\"\\\\\\xff ");
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
        cr_assert_eq(run(out, "--help"), 0, "%s", out);
        assert_has(out, "usage: shmctl");
        fx.map.path[0] = '\0';
}

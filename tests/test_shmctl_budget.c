/*
 * test_shmctl_budget.c - proves that shmctl shows budget limiters and adds to their keys:
 * `limiters` shows kind budget and the initial balance; `keys` and `get` show each key's balance
 * and, for a paused key (spenders queued: budget-executor's "no budget"), the waiters, the units
 * they need in all and the oldest's need, as thr_budget_stat tells them; `budget add` raises a
 * balance through the client library and wakes the spenders that now fit (forked processes
 * blocked in thr_budget_spend, every wait bounded); each refusal of `budget add` (not a budget,
 * a bad amount, an overflow, a full table, no write access) names what was wrong, changes
 * nothing and exits with its status; and scribbled budget headers and state words never crash
 * shmctl (it shows strange numbers, or "corrupt").
 *
 * The arena, shmctl's runs and the output checks are shmctl_run.h's, as in test_shmctl.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "shm.h"
#include "shmctl_run.h"
#include "throttle/throttle.h"

#define EX_NOTFOUND_ 1 /* shmctl: no such limiter; budget add: not a budget */
#define MAXB         THR_BUDGET_MAX_BALANCE

TestSuite(shmctl_budget, .fini = fx_teardown, .timeout = 120);

static struct shm_limiter_spec budget_spec(const char *name, uint64_t initial)
{
        struct shm_limiter_spec s = lim_spec(name, 0, 0, 0, initial);
        s.kind = THR_KIND_BUDGET;
        return s;
}

static thr_limiter *open_lim(const char *name)
{
        thr_limiter *l;
        cr_assert_eq(thr_limiter_open(fx.arena, name, &l), 0, "limiter %s", name);
        return l;
}

static struct thr_budget_stat stat_of(thr_limiter *l, const char *key)
{
        struct thr_budget_stat st;
        int rc = thr_budget_stat(l, key, strlen(key), &st);
        cr_assert_eq(rc, 0, "thr_budget_stat %s: %s", key, thr_strerror(rc));
        return st;
}

static void add(thr_limiter *l, const char *key, uint64_t amount)
{
        int rc = thr_budget_add(l, key, strlen(key), amount, NULL);
        cr_assert_eq(rc, 0, "thr_budget_add %s %lu: %s", key, (unsigned long)amount,
                     thr_strerror(rc));
}

static void take(thr_limiter *l, const char *key, uint64_t cost)
{
        int rc = thr_budget_try(l, key, strlen(key), cost, NULL);
        cr_assert_eq(rc, 0, "thr_budget_try %s %lu: %s", key, (unsigned long)cost,
                     thr_strerror(rc));
}

/* A row of a budget key's table: its seven cells. */
struct brow {
        char key[128], balance[32], paused[8], waiters[32], need[32], head[32], granted[32];
};

/* The row of KEY in OUT (a `keys` or `get` table), cell by cell. */
static struct brow row_of(const char *out, const char *key)
{
        char want[160], line[512];
        struct brow r;
        snprintf(want, sizeof(want), "\n%s ", key);
        const char *at = strstr(out, want);
        cr_assert_not_null(at, "no row for %s in:\n%s", key, out);
        line_with(at + 1, key, line, sizeof(line));
        cr_assert_eq(sscanf(line, "%127s %31s %7s %31s %31s %31s %31s", r.key, r.balance, r.paused,
                            r.waiters, r.need, r.head, r.granted),
                     7, "row %s", line);
        return r;
}

static void assert_u64(const char *cell, uint64_t want, const char *what)
{
        char w[32];
        snprintf(w, sizeof(w), "%lu", (unsigned long)want);
        cr_assert_str_eq(cell, w, "%s: shown %s, thr_budget_stat %s", what, cell, w);
}

/* The table row of KEY agrees with thr_budget_stat (a paused key's queue numbers, "-" else). */
static void assert_row_is_stat(const char *out, const char *key, const struct thr_budget_stat *st)
{
        struct brow r = row_of(out, key);
        assert_u64(r.balance, st->balance, "BALANCE");
        cr_assert_str_eq(r.paused, st->waiters ? "yes" : "no", "PAUSED of %s", key);
        if (st->waiters) {
                assert_u64(r.waiters, st->waiters, "WAITERS");
                assert_u64(r.need, st->need, "NEED");
                assert_u64(r.head, st->head_need, "HEAD_NEED");
        } else {
                cr_assert_str_eq(r.waiters, "-");
                cr_assert_str_eq(r.need, "-");
                cr_assert_str_eq(r.head, "-");
        }
        assert_u64(r.granted, st->granted, "GRANTED");
}

/* The JSON object of KEY agrees with thr_budget_stat. */
static void assert_json_is_stat(const char *out, const char *key, const struct thr_budget_stat *st)
{
        char want[512];
        snprintf(want, sizeof(want),
                 "{\"key\":\"%s\",\"balance\":%lu,\"initial\":%lu,\"paused\":%s,\"waiters\":%lu,"
                 "\"need\":%lu,\"head_need\":%lu,\"granted\":%lu,",
                 key, (unsigned long)st->balance, (unsigned long)st->initial,
                 st->waiters ? "true" : "false", (unsigned long)st->waiters,
                 (unsigned long)st->need, (unsigned long)st->head_need, (unsigned long)st->granted);
        assert_has(out, want);
}

Test(shmctl_budget, limiters_keys_and_get_show_initial_and_balances_as_thr_budget_stat_does)
{
        static char out[OUT_MAX];
        char line[512];
        struct shm_limiter_spec l[] = {budget_spec("b", 10), budget_spec("b0", 0),
                                       lim_spec("api", 10, S, 5, 5)};
        make_arena("bview", 3, l);
        thr_limiter *b = open_lim("b");
        add(b, "rich", 90);
        take(b, "poor", 7);
        take(b, "zero", 10);
        add(b, "a\x01z", 1);
        /* the limiters: kind budget, no rate nor burst, the initial balance */
        cr_assert_eq(run(out, "limiters"), 0, "%s", out);
        assert_has(line_with(out, "b  ", line, sizeof(line)), "b     live   budget     -      -  ");
        assert_has(line, "      10  -  ");
        assert_has(line_with(out, "b0 ", line, sizeof(line)), "b0    live   budget     -      -  ");
        assert_has(line, "       0  -  ");
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"name\":\"b\",\"rate\":null,\"rate_n\":0,\"period_ns\":0,");
        assert_has(out, ",\"initial\":10,\"kind\":\"budget\",\"serialize\":false,");
        assert_has(out, ",\"initial\":0,\"kind\":\"budget\",");
        /* keys: the lowest balance first, each row as thr_budget_stat tells it */
        cr_assert_eq(run(out, "keys b"), 0, "%s", out);
        assert_has(out, "limiter b: 4 live keys, 4 shown, paused, then lowest balance first, "
                        "arena time 0ns, budget, new keys start at 10\n"
                        "KEY     BALANCE  PAUSED  WAITERS  NEED  HEAD_NEED  GRANTED\n"
                        "zero          0  no            -     -          -        0\n"
                        "poor          3  no            -     -          -        0\n");
        const char *keys[] = {"rich", "poor", "zero"};
        for (int i = 0; i < 3; i++) {
                struct thr_budget_stat st = stat_of(b, keys[i]);
                assert_row_is_stat(out, keys[i], &st);
        }
        cr_assert(strstr(out, "\npoor ") < strstr(out, "\na\\x01z "), "order:\n%s", out);
        cr_assert(strstr(out, "\na\\x01z ") < strstr(out, "\nrich "), "order:\n%s", out);
        assert_u64(row_of(out, "a\\x01z").balance, 11, "an escaped key's balance");
        cr_assert_eq(run(out, "--json keys b"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"limiter\":\"b\",\"state\":\"live\",\"kind\":\"budget\",\"initial\":10,"
                        "\"now_ns\":0,\"units_per_ns\":1,\"live\":4,\"shown\":4,\"keys\":[");
        for (int i = 0; i < 3; i++) {
                struct thr_budget_stat st = stat_of(b, keys[i]);
                assert_json_is_stat(out, keys[i], &st);
        }
        assert_has(out, "{\"key\":\"a\\u0001z\",\"balance\":11,");
        /* get: one key; the raw state word is its balance */
        cr_assert_eq(run(out, "get b rich"), 0, "%s", out);
        struct thr_budget_stat st = stat_of(b, "rich");
        cr_assert_eq(st.balance, 100);
        assert_row_is_stat(out, "rich", &st);
        cr_assert_eq(run(out, "--json get b rich"), 0, "%s", out);
        assert_json(out);
        assert_json_is_stat(out, "rich", &st);
        assert_has(out, "\"tickets\":0,\"grant_in_progress\":false,\"state\":100}\n");
        cr_assert_eq(run(out, "get b nokey"), 0, "absent, at the initial balance: %s", out);
        assert_has(out, "nokey       10  no ");
        thr_limiter_close(b);
}

/* ---------------------------------------------------------------- waiting spenders */

/* A forked process spending COST of KEY, waiting (the manual clock never reaches its timeout:
 * the parent bounds the wait). Exits 0 when spent, 100 + errno else. */
static pid_t spender(thr_limiter *l, const char *key, uint64_t cost)
{
        pid_t pid = tfork();
        cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                int rc = thr_budget_spend(l, key, strlen(key), cost, 3600 * S, NULL);
                _exit(rc == 0 ? 0 : 100 + (-rc & 0x3f));
        }
        return pid;
}

/* Wait (bounded, 10 s real time) until KEY has N spenders queued. */
static void until_waiters(thr_limiter *l, const char *key, uint64_t n)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (stat_of(l, key).waiters != n) {
                cr_assert_lt(telapsed_s(&t0), 10.0, "%s: never %lu waiters (%lu)", key,
                             (unsigned long)n, (unsigned long)stat_of(l, key).waiters);
                usleep(1000);
        }
}

/* PID's exit status, waited for at most 10 s (then killed: the test fails). */
static int exit_of(pid_t pid)
{
        struct timespec t0;
        int st;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (waitpid(pid, &st, WNOHANG) == 0) {
                if (telapsed_s(&t0) > 10.0) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &st, 0);
                        cr_assert_fail("spender %d was never granted", (int)pid);
                }
                usleep(1000);
        }
        cr_assert(WIFEXITED(st), "spender %d: status %#x", (int)pid, st);
        return WEXITSTATUS(st);
}

static bool still_waiting(pid_t pid)
{
        int st;
        return waitpid(pid, &st, WNOHANG) == 0;
}

Test(shmctl_budget, a_paused_key_shows_its_queue_and_budget_add_wakes_the_spenders_that_fit)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {budget_spec("b", 10)};
        make_arena("bwake", 1, l);
        thr_limiter *b = open_lim("b");
        take(b, "w", 8); /* balance 2 */
        /* 25 queues first, then 3: the head does not fit, and 3 may not overtake it */
        pid_t big = spender(b, "w", 25);
        until_waiters(b, "w", 1);
        pid_t small = spender(b, "w", 3);
        until_waiters(b, "w", 2);
        struct thr_budget_stat st = stat_of(b, "w");
        cr_assert_eq(st.balance, 2);
        cr_assert_eq(st.need, 28);
        cr_assert_eq(st.head_need, 25);
        cr_assert_eq(run(out, "get b w"), 0, "%s", out);
        assert_row_is_stat(out, "w", &st);
        cr_assert_eq(run(out, "--json get b w"), 0, "%s", out);
        assert_json(out);
        assert_json_is_stat(out, "w", &st);
        assert_has(out, "\"tickets\":2,");
        cr_assert_eq(run(out, "keys b"), 0, "%s", out);
        assert_row_is_stat(out, "w", &st);
        cr_assert_eq(run(out, "--json keys b"), 0, "%s", out);
        assert_json(out);
        assert_json_is_stat(out, "w", &st);
        /* 10 more: 12 does not fit the head (25); nobody is granted */
        cr_assert_eq(run(out, "budget add b w 10"), 0, "%s", out);
        assert_has(out, "added 10 to key w of limiter b: balance 12, 2 waiters still queued\n");
        st = stat_of(b, "w");
        cr_assert_eq(st.balance, 12);
        cr_assert_eq(st.waiters, 2);
        cr_assert(still_waiting(big) && still_waiting(small), "granted with 12 for 25 first");
        cr_assert_eq(run(out, "get b w"), 0, "%s", out);
        assert_row_is_stat(out, "w", &st);
        /* 20 more: 32 grants 25, then 3; 4 left, nobody queued */
        cr_assert_eq(run(out, "--json budget add b w 20"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"limiter\":\"b\",\"key\":\"w\",\"added\":20,\"balance\":4,"
                        "\"waiters\":0}\n");
        cr_assert_eq(exit_of(big), 0, "the head's spend failed");
        cr_assert_eq(exit_of(small), 0, "the second spend failed");
        st = stat_of(b, "w");
        cr_assert_eq(st.balance, 4);
        cr_assert_eq(st.waiters, 0);
        cr_assert_eq(st.granted, 2);
        cr_assert_eq(run(out, "get b w"), 0, "%s", out);
        assert_row_is_stat(out, "w", &st);
        cr_assert_eq(run(out, "--json get b w"), 0, "%s", out);
        assert_json_is_stat(out, "w", &st);
        /* an add to a new key creates it at the initial balance, lock-free */
        cr_assert_eq(run(out, "budget add b new 1"), 0, "%s", out);
        assert_has(out, "added 1 to key new of limiter b: balance 11, 0 waiters still queued\n");
        cr_assert_eq(stat_of(b, "new").balance, 11);
        thr_limiter_close(b);
}

/* ---------------------------------------------------------------- refusals */

Test(shmctl_budget, budget_add_refusals_name_what_was_wrong_and_change_nothing)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {budget_spec("b", 10), budget_spec("tiny", 0),
                                       lim_spec("api", 10, S, 5, 5)};
        l[1].capacity = 2;
        make_arena("brefuse", 3, l);
        thr_limiter *b = open_lim("b"), *tiny = open_lim("tiny");
        add(b, "k", 5); /* 15 */
        /* not a budget; no such limiter */
        cr_assert_eq(run(out, "budget add api k 1"), EX_NOTFOUND_, "%s", out);
        assert_has(out, "shmctl: budget add api k 1: limiter api is not a budget limiter "
                        "(kind gcra); nothing added\n");
        cr_assert_eq(run(out, "budget add nosuch k 1"), EX_NOTFOUND_, "%s", out);
        assert_has(out, "shmctl: no such limiter: nosuch\n");
        /* bad amounts: usage errors, before the arena is opened */
        static const char *const bad[] = {"0",
                                          "-- -1",
                                          "+5",
                                          "' 5'",
                                          "5x",
                                          "abc",
                                          "''",
                                          "1.5",
                                          "0x10",
                                          "4611686018427387904",
                                          "18446744073709551616",
                                          "99999999999999999999999"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cr_assert_eq(run(out, "budget add b k %s", bad[i]), EX_USAGE, "%s: %s", bad[i],
                             out);
                assert_has(out, "shmctl: budget add: AMOUNT must be a whole number from 1 to "
                                "4611686018427387903 (2^62-1): ");
                assert_has(out, "usage: shmctl");
        }
        /* a negative number looks like an option (unless after --) */
        cr_assert_eq(run(out, "budget add b k -1"), EX_USAGE, "%s", out);
        assert_has(out, "shmctl: a negative number (budget add: AMOUNT must be a whole number "
                        "from 1 to 4611686018427387903 (2^62-1))\n");
        cr_assert_eq(stat_of(b, "k").balance, 15, "a refused amount added something");
        /* the largest amount is one */
        cr_assert_eq(run(out, "budget add b max 4611686018427387903"), EX_UNAVAILABLE, "%s", out);
        assert_has(out, "shmctl: budget add b max 4611686018427387903: the balance (10) would "
                        "pass the maximum, 4611686018427387903; nothing added\n");
        cr_assert_eq(stat_of(b, "max").balance, 10);
        /* -EOVERFLOW: up to the maximum, then one more */
        cr_assert_eq(run(out, "budget add b k %lu", (unsigned long)(MAXB - 15)), 0, "%s", out);
        assert_has(out, "balance 4611686018427387903, 0 waiters still queued\n");
        cr_assert_eq(run(out, "--json budget add b k 1"), EX_UNAVAILABLE, "%s", out);
        assert_has(out, "shmctl: budget add b k 1: the balance (4611686018427387903) would pass "
                        "the maximum, 4611686018427387903; nothing added\n");
        cr_assert_eq(stat_of(b, "k").balance, MAXB);
        /* the command line: the verb, the operands, -n */
        cr_assert_eq(run(out, "budget sub b k 1"), EX_USAGE, "%s", out);
        assert_has(out, "shmctl: unknown budget verb (budget add LIMITER KEY AMOUNT): sub\n");
        cr_assert_eq(run(out, "budget add b k"), EX_USAGE, "%s", out);
        assert_has(out, "wrong number of operands for: budget");
        cr_assert_eq(run(out, "budget add b k 1 2"), EX_USAGE, "%s", out);
        cr_assert_eq(run(out, "budget add b k 1 -n 3"), EX_USAGE, "%s", out);
        assert_has(out, "-n is only for keys");
        cr_assert_eq(run(out, "--help"), 0, "%s", out);
        assert_has(out, "shmctl [-a ARENA] [--json] budget add LIMITER KEY AMOUNT\n");
        /* -ENOSPC: a table full of keys holding balances (none is evictable) */
        char key[32];
        int n = 0, rc = 0;
        for (; n < 1000; n++) {
                snprintf(key, sizeof(key), "f%d", n);
                rc = thr_budget_add(tiny, key, strlen(key), 1, NULL);
                if (rc != 0)
                        break;
        }
        cr_assert_eq(rc, -ENOSPC, "the table never filled (%d keys): %s", n, thr_strerror(rc));
        cr_assert_eq(run(out, "budget add tiny newkey 7"), EX_UNAVAILABLE, "%s", out);
        assert_has(out, "shmctl: budget add tiny newkey 7: no room for a new key: limiter tiny's "
                        "table is full of keys holding balances; nothing added\n");
        cr_assert_eq(run(out, "budget add tiny f0 7"), 0, "an existing key: %s", out);
        assert_has(out, "balance 8,");
        thr_limiter_close(b);
        thr_limiter_close(tiny);
}

/* shmctl ARGS run as a user who may read the arena but not write it: `nobody` when the test runs
 * as root, else this user with the arena file's write bits (MODE) cleared. Exit code. */
static int run_unprivileged(char *out, mode_t mode, const char *args)
{
        cr_assert_eq(chmod(fx.dir, 0755), 0, "chmod %s: %s", fx.dir, strerror(errno));
        cr_assert_eq(chmod(fx.map.path, mode), 0, "chmod: %s", strerror(errno));
        if (geteuid() != 0)
                return run(out, "%s", args);
        int p[2];
        cr_assert_eq(pipe(p), 0);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                char cmd[1024];
                snprintf(cmd, sizeof(cmd), "'%s/daemon/shmctl' -a '%s' %s",
                         getenv("THR_TEST_BUILD_DIR"), fx.map.path, args);
                dup2(p[1], 1);
                dup2(p[1], 2);
                close(p[0]);
                if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
                        _exit(126);
                execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
                _exit(127);
        }
        close(p[1]);
        size_t n = 0;
        ssize_t r;
        while (n < OUT_MAX - 1 && (r = read(p[0], out + n, OUT_MAX - 1 - n)) > 0)
                n += (size_t)r;
        out[n] = '\0';
        close(p[0]);
        int st;
        waitpid(pid, &st, 0);
        cr_assert(WIFEXITED(st), "shmctl %s: status %#x: %s", args, st, out);
        cr_assert_neq(WEXITSTATUS(st), 126, "could not drop privileges");
        cr_assert_neq(WEXITSTATUS(st), 127, "could not run shmctl as nobody: %s", out);
        return WEXITSTATUS(st);
}

Test(shmctl_budget, budget_add_needs_write_access_to_the_arena)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {budget_spec("b", 10)};
        make_arena("bperm", 1, l);
        thr_limiter *b = open_lim("b");
        add(b, "k", 5);
        /* readable, not writable: the views work, the add is refused */
        cr_assert_eq(run_unprivileged(out, 0444, "get b k"), 0, "%s", out);
        assert_u64(row_of(out, "k").balance, 15, "BALANCE");
        cr_assert_eq(run_unprivileged(out, 0444, "budget add b k 1"), EX_NOPERM, "%s", out);
        assert_has(out, "shmctl: budget add needs write access to the arena ");
        assert_has(out, "Permission denied (nothing added)\n");
        cr_assert_eq(stat_of(b, "k").balance, 15);
        /* not even readable */
        cr_assert_eq(run_unprivileged(out, 0, "budget add b k 1"), EX_NOPERM, "%s", out);
        assert_has(out, "shmctl: budget add needs write access to the arena: ");
        cr_assert_eq(stat_of(b, "k").balance, 15);
        cr_assert_eq(chmod(fx.map.path, 0600), 0);
        cr_assert_eq(run(out, "budget add b k 1"), 0, "%s", out);
        cr_assert_eq(stat_of(b, "k").balance, 16);
        thr_limiter_close(b);
}

/* ---------------------------------------------------------------- corruption */

/* The live slots of limiter LIM in the test's mapping, into V (at most MAX): how many. */
static size_t live_slots(const char *lim, struct thr_slot **v, size_t max)
{
        struct thr_table *tb = table_of(lim);
        struct thr_slot *s0 = shm_at(fx.map.base, tb->slots_off);
        uint64_t nslots = (uint64_t)tb->nshards * tb->shard_slots;
        size_t n = 0;
        for (uint64_t i = 0; i < nslots && n < max; i++)
                if (THR_META_STATUS(atomic_load(&s0[i].meta)) == THR_SLOT_LIVE)
                        v[n++] = &s0[i];
        return n;
}

/* Every word of each live key's header, and its state word, as garbage: a balance with the
 * flag, a word with the top bit set, a fresh word, none, or any value. */
static void scribble(const char *lim, uint64_t *x)
{
        struct thr_table *tb = table_of(lim);
        struct thr_slot *v[8];
        size_t n = live_slots(lim, v, 8);
        for (size_t i = 0; i < n; i++) {
                uint64_t r = next_rand(x);
                uint64_t st[] = {THR_BUDGET_WAITERS | (r & 0xffff), 1ull << 63 | r, THR_TAT_FRESH,
                                 0, r % THR_TAT_LIMIT};
                atomic_store(&v[i]->state, st[next_rand(x) % 5]);
                _Atomic uint64_t *aux = shm_slot_aux(fx.map.base, tb, v[i]);
                for (uint32_t w = 0; w < tb->aux_stride / 8; w++) {
                        r = next_rand(x);
                        atomic_store(&aux[w], r % 4 == 0 ? 0 : r % 4 == 1 ? UINT64_MAX : r);
                }
        }
}

Test(shmctl_budget, scribbled_budget_keys_do_not_crash)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {budget_spec("b", 10)};
        make_arena("bscribble", 1, l);
        thr_limiter *b = open_lim("b");
        add(b, "k", 1);
        add(b, "j", 2);
        take(b, "i", 3);
        thr_limiter_close(b);
        close_client();
        struct thr_slot *slots[3];
        cr_assert_eq(live_slots("b", slots, 3), 3);
        static const char *const cmds[] = {"keys b",         "--json keys b",  "get b k",
                                           "get b j",        "--json get b i", "limiters",
                                           "--json limiters"};
        uint64_t x = 0x2545f4914f6cdd1dull;
        for (int round = 0; round < 12; round++) {
                scribble("b", &x);
                for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
                        cr_assert_eq(run(out, "%s", cmds[c]), 0, "round %d, %s: %s", round, cmds[c],
                                     out);
                        cr_assert_null(strstr(out, "runtime error"), "%s: %s", cmds[c], out);
                        if (cmds[c][0] == '-')
                                assert_json(out);
                }
        }
        /* a state word with its top bit set is no balance: shown corrupt, not as a number */
        struct thr_slot *s = slot_of("b", "k");
        atomic_store(&s->state, 1ull << 63 | 5);
        cr_assert_eq(run(out, "get b k"), 0, "%s", out);
        cr_assert_str_eq(row_of(out, "k").balance, "corrupt");
        cr_assert_eq(run(out, "--json get b k"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"key\":\"k\",\"balance\":null,");
        /* a header of garbage counts is shown as it is, for a flagged key */
        struct thr_budget *h = shm_budget(shm_slot_aux(fx.map.base, table_of("b"), s));
        atomic_store(&s->state, THR_BUDGET_WAITERS | 7);
        atomic_store(&h->waiters, UINT32_MAX);
        atomic_store(&h->need, UINT64_MAX);
        atomic_store(&h->head_need, UINT64_MAX);
        atomic_store(&h->j_idx, UINT32_MAX);
        cr_assert_eq(run(out, "get b k"), 0, "%s", out);
        struct brow r = row_of(out, "k");
        cr_assert_str_eq(r.balance, "7");
        cr_assert_str_eq(r.paused, "yes");
        cr_assert_str_eq(r.waiters, "4294967295");
        cr_assert_str_eq(r.need, "18446744073709551615");
        cr_assert_eq(run(out, "--json get b k"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"grant_in_progress\":true,");
        /* a table too small for a budget key's header is refused at the snapshot */
        table_of("b")->aux_stride = 0;
        expect_dataerr("keys b");
        expect_dataerr("budget add b k 1");
}

/*
 * test_shmctl_window.c - proves that shmctl shows window limiters: their kind, limit and bytes per
 * key, their keys' units in the window, oldest unit, next free and reset times at exact arena
 * times, a serialized key's holder and waiters (children blocked in thr_serial_begin), and
 * scribbled logs and headers that never crash it.
 *
 * The arena, shmctl's runs and the output checks are shmctl_run.h's, as in test_shmctl.c.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "shm.h"
#include "shmctl_run.h"
#include "throttle/throttle.h"

#define MAX_KIDS 4

static pid_t kids[MAX_KIDS]; /* children blocked in thr_serial_begin, killed at teardown */

static void teardown(void)
{
        for (int i = 0; i < MAX_KIDS; i++) {
                if (kids[i] > 0) {
                        kill(kids[i], SIGKILL);
                        waitpid(kids[i], NULL, 0);
                }
        }
        fx_teardown();
}

TestSuite(shmctl, .fini = teardown);

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
        /* a ring of N + 8 words after a 64-byte header, in 64-byte lines, and the 64-byte slot:
         * 64 + 8 (5 + 8) = 168 -> 192, + 64; 64 + 8 (10 + 8) = 208 -> 256, + 64 */
        assert_has(out, "{\"name\":\"w\",\"rate\":\"5/2s\",\"rate_n\":5,\"period_ns\":2000000000,"
                        "\"burst\":5,\"initial\":5,\"kind\":\"window\",\"limit\":5,"
                        "\"window_ns\":2000000000,\"serialize\":false,\"bytes_per_slot\":256,"
                        "\"capacity\":64,");
        assert_has(out, "\"kind\":\"window\",\"limit\":10,\"window_ns\":250000000,"
                        "\"serialize\":true,\"bytes_per_slot\":320,");
        assert_has(out,
                   "{\"name\":\"api\",\"rate\":\"10/s\",\"rate_n\":10,\"period_ns\":1000000000,"
                   "\"burst\":5,\"initial\":5,\"kind\":\"gcra\",\"serialize\":false,"
                   "\"bytes_per_slot\":64,\"capacity\":64,");
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
        assert_has(line, "  64  ");
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
        uint64_t h = shm_hash(shm_hdr(&fx.map)->hash_key, key, strlen(key));
        struct thr_slot *s = shm_table_lookup(fx.map.base, tb, h, key, (uint32_t)strlen(key));
        cr_assert_not_null(s, "key %s", key);
        return shm_serial(shm_slot_aux(fx.map.base, tb, s));
}

/* Fork a child that waits for KEY's hold in L, then ends it at once; back once it has queued
 * as the key's WAITERS-th waiter. */
static void queue_waiter(int i, thr_limiter *l, const char *key, uint32_t waiters)
{
        kids[i] = tfork();
        if (kids[i] == 0) {
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
        cr_assert_eq(waitpid(kids[i], &st, 0), kids[i]);
        kids[i] = 0;
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

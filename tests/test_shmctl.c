/*
 * test_shmctl.c - proves that shmctl reports what the arena holds (status with grace periods and
 * eviction totals, limiters with their policies and shard counters, live or retired, reader
 * records with their liveness, keys in debt order with exact values on a manual clock, get), that
 * every --json answer is one well-formed JSON value, and that a corrupt or missing arena gives a
 * clear message and the documented sysexits code, never a crash (garbage reader records included),
 * and that a reader record claimed again counts its new owner's calls from zero.
 * Window limiters are test_shmctl_window.c's.
 *
 * Each test builds a small manual-clock arena in a fresh directory under /dev/shm, drives it
 * through the public client API, then runs the built shmctl binary ($THR_TEST_BUILD_DIR/daemon/
 * shmctl) and reads its output, all through shmctl_run.h. Corruptions are written through the
 * test's own writable mapping, after the client has closed the arena.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "helpers.h"
#include "shm.h"
#include "shmctl_run.h"
#include "throttle/throttle.h"

#define EX_NOTFOUND_ 1 /* shmctl: no such limiter */

TestSuite(shmctl, .fini = fx_teardown);

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
        uint64_t h = shm_hash(shm_hdr(&fx.map)->hash_key, "new", 3);
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
        /* absent: a full bucket (issue 13: it exited 1 with "no such key", nothing under --json) */
        cr_assert_eq(run(out, "get api nobody"), 0, "%s", out);
        assert_has(out, "one key, absent");
        assert_has(out, "nobody        5/5          0ns  fresh\n");
        cr_assert_eq(run(out, "--json get api nobody"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"key\":\"nobody\",\"present\":false,\"remaining\":5,\"burst\":5,"
                        "\"reset_after_ns\":0,\"tat\":null,\"fresh\":true}");
        cr_assert_eq(run(out, "--json get api b"), 0, "%s", out);
        cr_assert(!strstr(out, "present"), "a key in the table has no such member: %s", out);
        cr_assert_eq(run(out, "get nolimiter b"), 1, "%s", out);
        assert_has(out, "no such limiter");
        cr_assert_eq(run(out, "--json get nolimiter b"), 1, "%s", out);
        assert_has(out, "no such limiter");
        cr_assert_eq(run(out, "keys nolimiter"), 1, "%s", out);
}

/* An absent key of each kind, as its first call would find it, and nothing written: a GCRA key
 * with `initial` tokens of its burst, an empty window, a semaphore with nothing held, a budget
 * at its initial balance. */
Test(shmctl, get_absent_key_of_each_kind_shows_its_fresh_state)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec w = {.kind = THR_KIND_WINDOW,
                                     .rate_n = 3,
                                     .period_ns = S,
                                     .capacity = 64,
                                     .name = "win"},
                                sem = tspec("sem", 4, 0, 0, 0);
        sem.kind = THR_KIND_SEMAPHORE;
        sem.leases = 8;
        sem.max_reserve_ns = 0;
        sem.capacity = 64;
        struct shm_limiter_spec l[] = {lim_spec("api", 10, S, 5, 2), w, tspec_budget("bud", 100),
                                       sem};
        l[2].capacity = 64;
        make_arena("absent", 4, l);
        cr_assert_eq(thr_clock_advance(fx.arena, 2 * S), 0);
        const char *const want[][2] = {
            {"api", "{\"key\":\"k\",\"present\":false,\"remaining\":2,\"burst\":5,"
                    "\"reset_after_ns\":300000000,\"tat\":null,\"fresh\":true}"},
            {"win", "{\"key\":\"k\",\"present\":false,\"used\":0,\"limit\":3,\"remaining\":3,"
                    "\"oldest_ns\":null,\"next_free_after_ns\":0,\"reset_after_ns\":0,\"units\":0"},
            {"bud", "{\"key\":\"k\",\"present\":false,\"balance\":100,"},
            {"sem", "{\"key\":\"k\",\"present\":false,\"held\":0,\"max\":4,"},
        };
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
                cr_assert_eq(run(out, "--json get %s k", want[i][0]), 0, "%s", out);
                assert_json(out);
                assert_has(out, want[i][1]);
                cr_assert_eq(run(out, "get %s k", want[i][0]), 0, "%s", out);
                assert_has(out, "one key, absent");
                cr_assert_eq(run(out, "--json keys %s", want[i][0]), 0, "%s", out);
                assert_has(out, "\"live\":0,"); /* get wrote nothing */
        }
}

/* on_full = evict keeps the debt of keys evicted for room as a floor for new keys of their shard:
 * an absent key there is shown at that floor, as its first call then finds it. */
Test(shmctl, get_absent_key_starts_at_its_shards_eviction_floor)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {lim_spec("api", 10, S, 5, 5)};
        l[0].on_full = THR_FULL_EVICT; /* capacity 64: one shard */
        make_arena("floor", 1, l);
        cr_assert_eq(thr_clock_advance(fx.arena, 2 * S), 0);
        thr_limiter *lim;
        cr_assert_eq(thr_limiter_open(fx.arena, "api", &lim), 0);
        /* keys 5 in debt each, until one is evicted for room: its 500 ms are the shard's floor
         * (few enough evictions that the shard still has free slots for one more) */
        struct thr_shard *sh = shm_at(fx.map.base, table_of("api")->shards_off);
        for (int i = 0; i < 200 && atomic_load(&sh->floor_units) == 0; i++) {
                char k[16];
                cr_assert_geq(/* the last, inserted at the floor, is denied */
                              thr_limiter_try(lim, k, (size_t)snprintf(k, sizeof(k), "k%d", i), 5,
                                              NULL),
                              0);
        }
        cr_assert_gt(atomic_load(&sh->floor_units), 0, "a key was evicted for room");
        cr_assert_eq(run(out, "--json get api zz"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"key\":\"zz\",\"present\":false,\"remaining\":0,\"burst\":5,"
                        "\"reset_after_ns\":500000000,");
        assert_has(out, "\"fresh\":false}");
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(lim, "zz", 2, 1, &r), 0, "the first call finds the debt");
        cr_assert_eq(r.remaining, 0);
        cr_assert_eq(r.reset_after_ns, 500 * MS, "as get showed it");
        thr_limiter_close(lim);
}

/* Keys longer than a slot's 44 bytes are stored as their first 28 bytes and a digest (layout.h):
 * shmctl shows that prefix marked as cut, says so in JSON, and still finds a key given whole. */
Test(shmctl, long_keys_show_their_prefix_marked)
{
        static char out[OUT_MAX];
        const char *k1 = "longkey-abcdefghijklmnopqrst-first-tail-0123456789-0123456789-01234567";
        const char *k2 = "longkey-abcdefghijklmnopqrst-other-tail-0123456789-0123456789-01234567";
        cr_assert_eq(strlen(k1), 70);
        struct shm_limiter_spec l[] = {lim_spec("api", 10, S, 5, 5)};
        make_arena("long", 1, l);
        spend("api", k1, strlen(k1), 2);
        spend("api", k2, strlen(k2), 1);
        spend("api", "short", 5, 1);
        cr_assert_eq(run(out, "keys api"), 0, "%s", out);
        assert_has(out, "longkey-abcdefghijklmnopqrst\u2026");
        cr_assert_null(strstr(out, "tail"), "only the prefix is kept:\n%s", out);
        cr_assert_eq(run(out, "--json keys api"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"key\":\"longkey-abcdefghijklmnopqrst\",\"key_truncated\":true,"
                        "\"key_len\":70,\"remaining\":3,");
        assert_has(out, "{\"key\":\"longkey-abcdefghijklmnopqrst\",\"key_truncated\":true,"
                        "\"key_len\":70,\"remaining\":4,");
        assert_has(out, "{\"key\":\"short\",\"remaining\":4,");
        cr_assert_eq(run(out, "--json get api %s", k1), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"key_truncated\":true,\"key_len\":70,\"remaining\":3,");
        cr_assert_eq(run(out, "get api %s", k2), 0, "%s", out);
        assert_has(out, "4/5");
        cr_assert_eq(run(out, "get api %.69s", k1), 0, "a prefix is another key: %s", out);
        assert_has(out, "one key, absent");
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

/* In a child: COUNT tries of cost 1 on KEY in limiter "api" through the inherited handle; how
 * many were admitted (or -1 when a call fails). */
static int child_tries(const char *key, int count)
{
        thr_limiter *lim;
        int admitted = 0;
        if (thr_limiter_open(fx.arena, "api", &lim) < 0)
                return -1;
        for (int i = 0; i < count; i++) {
                int rc = thr_limiter_try(lim, key, strlen(key), 1, NULL);
                if (rc < 0)
                        return -1;
                admitted += rc;
        }
        thr_limiter_close(lim);
        return admitted;
}

/*
 * A process takes the arena's only reader record, is admitted 1000 times and denied 5 times, and
 * ends (KILLED: by SIGKILL, its record then freed as the daemon's heartbeat frees it; else by
 * exit, which gives it back); the next process claims the same record and is admitted 3 times:
 * shmctl readers shows it with its own 3, not 1003 (issue 13: a process of 3 admissions showed
 * 14 164).
 */
static void reused_record_counts_from_zero(bool killed)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {lim_spec("api", 1000, S, 1000, 1000)};
        make_arena_readers("reuse", 1, l, 1);
        pid_t first = tfork();
        cr_assert_geq(first, 0);
        if (first == 0) {
                int ok = child_tries("first", 1005) == 1000;
                if (killed)
                        raise(SIGKILL);
                exit(ok ? 0 : 1); /* not _exit: the library's exit destructor gives it back */
        }
        int st;
        cr_assert_eq(waitpid(first, &st, 0), first);
        struct thr_reader *r = shm_at(fx.map.base, shm_hdr(&fx.map)->reader_off);
        if (killed) {
                cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
                cr_assert_neq(atomic_load(&r->owner), 0, "a killed owner keeps its record");
                cr_assert_eq(shm_readers_reap(&fx.map), 1, "the daemon's heartbeat frees it");
        } else {
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "first process: 1000 admitted");
        }
        cr_assert_eq(atomic_load(&r->owner), 0);
        cr_assert_eq(atomic_load(&r->admitted), 1000, "a free record keeps its last counts");
        cr_assert_eq(atomic_load(&r->denied), 5);

        int ready[2], done[2];
        cr_assert_eq(pipe(ready), 0);
        cr_assert_eq(pipe(done), 0);
        pid_t next = tfork();
        cr_assert_geq(next, 0);
        if (next == 0) {
                char c = child_tries("next", 3) == 3 ? 'y' : 'n';
                if (write(ready[1], &c, 1) != 1 || read(done[0], &c, 1) != 1)
                        _exit(2);
                _exit(0); /* its record is given back at exit */
        }
        char c = 0;
        cr_assert_eq(read(ready[0], &c, 1), 1);
        cr_assert_eq(c, 'y', "the next process was admitted 3 times");
        cr_assert_eq(run(out, "--json readers"), 0, "%s", out);
        assert_json(out);
        char want[256];
        snprintf(want, sizeof(want), "{\"index\":0,\"pid\":%d,\"tid\":%d,", (int)next, (int)next);
        assert_has(out, want);
        assert_has(out, "\"alive\":true,\"admitted\":3,\"denied\":0,\"inserts\":1,"
                        "\"cas_retries\":0}");
        cr_assert_eq(write(done[1], &c, 1), 1);
        cr_assert_eq(waitpid(next, &st, 0), next);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        for (int i = 0; i < 2; i++) {
                close(ready[i]);
                close(done[i]);
        }
}

Test(shmctl, reused_reader_record_counts_from_zero_after_exit)
{
        reused_record_counts_from_zero(false);
}

Test(shmctl, reused_reader_record_counts_from_zero_after_sigkill)
{
        reused_record_counts_from_zero(true);
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
        assert_has(out,
                   "\"state\":\"live\",\"occupancy_pct\":0.0,\"idle_ttl_ns\":90000000000,"
                   "\"on_full\":\"evict\",\"evicted\":3,\"evicted_full\":11,\"reclaimed\":4,"
                   "\"allowed_full\":7,\"clock_read\":\"precise\",\"interval_units\":100000000,"
                   "\"time_unit_per_ns\":1,\"rate_rounded\":false}");
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
        assert_has(out,
                   "\"on_full\":\"allow\",\"evicted\":0,\"evicted_full\":0,\"reclaimed\":0,"
                   "\"allowed_full\":1,\"clock_read\":\"precise\",\"interval_units\":100000000,"
                   "\"time_unit_per_ns\":1,\"rate_rounded\":false}");
        assert_has(out,
                   "\"on_full\":\"evict\",\"evicted\":0,\"evicted_full\":1,\"reclaimed\":0,"
                   "\"allowed_full\":0,\"clock_read\":\"precise\",\"interval_units\":100000000,"
                   "\"time_unit_per_ns\":1,\"rate_rounded\":false}");
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
        uint64_t h = shm_hash(shm_hdr(&fx.map)->hash_key, "a", 1);
        struct thr_slot *s = shm_table_lookup(fx.map.base, table_of("api"), h, "a", 1);
        cr_assert_not_null(s);
        s->key_len = 200; /* above THR_KEY_MAX: no key is that long */
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

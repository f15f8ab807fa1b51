/*
 * test_gcra.c - the GCRA semantics of DESIGN.md section 5, case by case, on a manual-clock arena,
 * and exactness over long simulated runs at awkward rates.
 */
#include <criterion/criterion.h>

#include "helpers.h"

#define MS 1000000ull

static struct tarena T;
static thr_limiter *L;

/* 10/s (T = 100 ms), burst 5, full at start. */
static void setup_10s(void)
{
        struct shm_limiter_spec s[] = {tspec("l", 10, SEC, 5, 5), tspec("init2", 10, SEC, 5, 2)};
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 2);
        L = tlim(&T, "l");
}

static void teardown(void)
{
        thr_limiter_close(L);
        tarena_free(&T);
}

static int try1(const char *key, uint64_t cost, struct thr_result *r)
{
        return thr_limiter_try(L, key, strlen(key), cost, r);
}

TestSuite(gcra, .init = setup_10s, .fini = teardown);

Test(gcra, full_bucket_drains_one_by_one)
{
        struct thr_result r;
        for (uint64_t i = 1; i <= 5; i++) {
                cr_assert_eq(try1("k", 1, &r), 1, "request %lu admitted", (unsigned long)i);
                cr_assert_eq(r.remaining, 5 - i);
                cr_assert_eq(r.limit, 5);
                cr_assert_eq(r.retry_after_ns, 0);
                cr_assert_eq(r.reset_after_ns, i * 100 * MS);
        }
        cr_assert_eq(try1("k", 1, &r), 0, "sixth request denied");
        cr_assert_eq(r.remaining, 0);
        cr_assert_eq(r.retry_after_ns, 100 * MS, "exact retry_after");
        cr_assert_eq(r.reset_after_ns, 500 * MS);
}

Test(gcra, denial_writes_nothing_and_retry_after_is_exact)
{
        struct thr_result r;
        for (int i = 0; i < 5; i++)
                try1("k", 1, &r);
        thr_clock_advance(T.a, 30 * MS);
        cr_assert_eq(try1("k", 1, &r), 0);
        cr_assert_eq(r.retry_after_ns, 70 * MS);
        cr_assert_eq(try1("k", 1, &r), 0, "a denial did not consume");
        cr_assert_eq(r.retry_after_ns, 70 * MS);
        thr_clock_advance(T.a, 70 * MS - 1);
        cr_assert_eq(try1("k", 1, &r), 0, "1 ns early is still denied");
        cr_assert_eq(r.retry_after_ns, 1);
        thr_clock_advance(T.a, 1);
        cr_assert_eq(try1("k", 1, &r), 1, "admitted exactly at retry_after");
}

Test(gcra, refill_is_capped_at_burst)
{
        struct thr_result r;
        for (int i = 0; i < 5; i++)
                try1("k", 1, &r);
        thr_clock_advance(T.a, 100 * MS);
        cr_assert_eq(try1("k", 1, &r), 1);
        cr_assert_eq(try1("k", 1, &r), 0);
        thr_clock_advance(T.a, 10 * SEC);
        int admitted = 0;
        while (try1("k", 1, &r) == 1)
                admitted++;
        cr_assert_eq(admitted, 5, "a long idle period refills to the burst, not beyond");
}

Test(gcra, cost_above_one)
{
        struct thr_result r;
        cr_assert_eq(try1("k", 3, &r), 1);
        cr_assert_eq(r.remaining, 2);
        cr_assert_eq(r.reset_after_ns, 300 * MS);
        cr_assert_eq(try1("k", 3, &r), 0);
        cr_assert_eq(r.retry_after_ns, 100 * MS, "needs one more token");
        cr_assert_eq(r.remaining, 2);
        cr_assert_eq(try1("k", 2, &r), 1);
        cr_assert_eq(r.remaining, 0);
}

Test(gcra, peek_changes_nothing)
{
        struct thr_result r;
        const struct thr_table *tb = ttable(&T, "l");
        cr_assert_eq(try1("new", 0, &r), 1);
        cr_assert_eq(r.remaining, 5);
        cr_assert_eq(shm_table_count(T.map.base, tb), 0, "a peek on a new key inserts nothing");
        cr_assert_eq(try1("new", 6, &r), -ERANGE);
        cr_assert_eq(shm_table_count(T.map.base, tb), 0);
}

Test(gcra, denied_new_key_records_its_start)
{
        thr_limiter *l = tlim(&T, "init2"); /* B = 5, initial 2 */
        struct thr_result r;
        const struct thr_table *tb = ttable(&T, "init2");
        cr_assert_eq(thr_limiter_try(l, "big", 3, 0, &r), 1, "a peek");
        cr_assert_eq(r.remaining, 2);
        cr_assert_eq(shm_table_count(T.map.base, tb), 0, "a peek inserts nothing");
        cr_assert_eq(thr_limiter_try(l, "big", 3, 3, &r), 0, "3 > initial 2: denied");
        cr_assert_eq(r.retry_after_ns, 100 * MS);
        cr_assert_eq(shm_table_count(T.map.base, tb), 1, "the key exists, with its start");
        thr_clock_advance(T.a, 100 * MS);
        cr_assert_eq(thr_limiter_try(l, "big", 3, 3, &r), 1, "refilled since the first request");
        cr_assert_eq(r.remaining, 0);
        thr_limiter_close(l);
}

Test(gcra, peek_on_drained_key)
{
        struct thr_result r;
        try1("k", 4, &r);
        cr_assert_eq(try1("k", 0, &r), 1);
        cr_assert_eq(r.remaining, 1);
        cr_assert_eq(r.reset_after_ns, 400 * MS);
        cr_assert_eq(try1("k", 0, &r), 1);
        cr_assert_eq(r.remaining, 1, "peeking twice changes nothing");
        cr_assert_eq(try1("k", 1, &r), 1);
        /* Cost 0 conforms on an exactly empty bucket (new_tat - now == B*T), as in redis-cell. */
        cr_assert_eq(try1("k", 0, &r), 1);
        cr_assert_eq(r.remaining, 0);
        cr_assert_eq(try1("k", 1, &r), 0, "and a real request is denied");
}

Test(gcra, cost_above_burst_is_its_own_error)
{
        struct thr_result r = {.admitted = 7};
        cr_assert_eq(try1("k", 6, &r), -ERANGE);
        cr_assert_eq(r.admitted, 7, "result untouched on error");
        cr_assert_eq(try1("k", 5, &r), 1, "cost == burst is admissible on a full bucket");
        cr_assert_eq(try1("k", 6, &r), -ERANGE, "and cost > burst still an error, not a denial");
}

Test(gcra, initial_tokens)
{
        thr_limiter *l = tlim(&T, "init2");
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 1);
        cr_assert_eq(r.remaining, 1);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 1);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0, "a new key starts with 2 tokens");
        cr_assert_eq(r.retry_after_ns, 100 * MS);
        thr_clock_advance(T.a, SEC);
        int n = 0;
        while (thr_limiter_try(l, "k", 1, 1, &r) == 1)
                n++;
        cr_assert_eq(n, 5, "then refills to the full burst");
        thr_limiter_close(l);
}

Test(gcra, remaining_never_negative)
{
        struct thr_reservation rv;
        struct thr_result r;
        try1("k", 5, &r);
        /* Reservations push the TAT beyond now + B*T: remaining must clamp at 0. */
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 5, 10 * SEC, &rv), 0);
        cr_assert_eq(rv.wait_ns, 500 * MS);
        cr_assert_eq(try1("k", 0, &r), 0);
        cr_assert_eq(r.remaining, 0);
        cr_assert_eq(r.reset_after_ns, SEC);
        cr_assert_eq(try1("k", 1, &r), 0);
        cr_assert_eq(r.retry_after_ns, 600 * MS);
}

Test(gcra, three_per_second_for_an_hour_is_exact)
{
        struct shm_limiter_spec s = tspec("three", 3, SEC, 4, 4);
        struct tarena t2;
        tarena_make(&t2, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim(&t2, "three");
        struct thr_result r;
        uint64_t total = 0;
        for (uint64_t step = 0; step <= 72000; step++) { /* 50 ms steps: exactly one hour */
                if (step)
                        thr_clock_advance(t2.a, 50 * MS);
                while (thr_limiter_try(l, "k", 1, 1, &r) == 1)
                        total++;
        }
        cr_assert_eq(total, 10800 + 4, "3/s for 3600 s admits 10 800 + burst, got %lu",
                     (unsigned long)total);
        thr_limiter_close(l);
        tarena_free(&t2);
}

/*
 * Over DAYS simulated days on a fresh arena with limiter S (whose burst exceeds a day's refill,
 * so nothing is lost to the cap), take everything admissible once a day; the total admitted.
 */
static uint64_t drain_daily(struct shm_limiter_spec s, uint64_t days)
{
        struct tarena t2;
        tarena_make(&t2, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim(&t2, s.name);
        struct thr_result r;
        uint64_t total = 0;
        for (uint64_t d = 0; d <= days; d++) {
                if (d)
                        thr_clock_advance(t2.a, 86400 * SEC);
                cr_assert_eq(thr_limiter_try(l, "k", 1, 0, &r), 1);
                uint64_t avail = r.remaining;
                if (avail)
                        cr_assert_eq(thr_limiter_try(l, "k", 1, avail, &r), 1);
                total += avail;
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0, "day %lu fully drained",
                             (unsigned long)d);
        }
        thr_limiter_close(l);
        tarena_free(&t2);
        return total;
}

Test(gcra, billion_per_seven_seconds_over_years_drifts_by_no_token)
{
        const uint64_t days = 3 * 365, burst = 20000000000000ull; /* T = 7 ns */
        struct shm_limiter_spec s = tspec("fast", 1000000000, 7 * SEC, burst, burst);
        s.max_reserve_ns = 0;
        uint64_t total = drain_daily(s, days), expect = burst + days * 86400 * SEC / 7;
        cr_assert_eq(total, expect, "admitted %lu, exact GCRA allows %lu", (unsigned long)total,
                     (unsigned long)expect);
}

Test(gcra, twenty_nine_per_second_over_five_years_is_exact)
{
        /* T = 1e9/29 ns: a whole-ns T would be off by 0.62 ns a token, ~80 tokens in 5 years. */
        const uint64_t days = 5 * 365, burst = 29 * 86400 + 1;
        uint64_t total = drain_daily(tspec("odd", 29, SEC, burst, burst), days);
        uint64_t expect = burst + days * 86400 * 29;
        cr_assert_eq(total, expect, "admitted %lu, exact GCRA allows %lu", (unsigned long)total,
                     (unsigned long)expect);
}

Test(gcra, new_key_with_no_initial_tokens_starts_at_its_first_request)
{
        struct shm_limiter_spec s = tspec("zero", 10, SEC, 5, 0);
        struct tarena t2;
        tarena_make(&t2, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim(&t2, "zero");
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0, "empty at first");
        cr_assert_eq(r.retry_after_ns, 100 * MS);
        thr_clock_advance(t2.a, 60 * MS);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0);
        cr_assert_eq(r.retry_after_ns, 40 * MS, "the key's start was kept, not restarted");
        thr_clock_advance(t2.a, 40 * MS);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 1, "one token after one interval");
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0);
        thr_limiter_close(l);
        tarena_free(&t2);
}

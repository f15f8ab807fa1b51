/*
 * test_shmctl_breaker.c - proves that shmctl shows circuit breakers: `limiters` shows kind
 * breaker (its configuration in --json); `keys` and `get` show each key's state (closed, open,
 * half-open), consecutive failures, window calls and failures, probes in flight, half-open
 * successes and the time until a call may go through, exactly as thr_breaker_stat tells them, in
 * tables and --json; a key not in the table is shown closed and empty; and scribbled state and
 * bucket words never crash shmctl (it shows "corrupt", or bounded counts).
 *
 * The arena, shmctl's runs and the output checks are shmctl_run.h's, as in test_shmctl.c.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"
#include "shm.h"
#include "shmctl_run.h"
#include "throttle/throttle.h"

#define U (1ull << THR_BRK_TIME_SHIFT)

TestSuite(shmctl_breaker, .fini = fx_teardown, .timeout = 120);

static struct shm_limiter_spec brk(const char *name, uint64_t failures, uint64_t rate,
                                   uint64_t window)
{
        struct shm_limiter_spec s = lim_spec(name, 0, window, 0, 0);
        s.kind = THR_KIND_BREAKER;
        s.max_reserve_ns = 0;
        s.failures = failures;
        s.failure_rate = rate;
        s.min_calls = 100;
        s.cooldown_ns = 1000 * U;
        s.probe_timeout_ns = 2000 * U;
        s.probes = 2;
        s.successes = 3;
        return s;
}

static void call(thr_limiter *l, const char *key, uint32_t outcome)
{
        struct thr_breaker_ticket t;
        cr_assert_eq(thr_breaker_allow(l, key, strlen(key), &t, NULL), 0, "allow %s", key);
        cr_assert_eq(thr_breaker_report(l, &t, outcome), 0, "report %s", key);
}

/* Keys in each state at a time that is a multiple of U: "flaky" closed with 2 consecutive
 * failures, 3 calls and 2 failures in its window; "down" open for 1000 U, opened 400 U ago;
 * "probing" half-open with one probe out and one success. */
static void make_keys(void)
{
        struct shm_limiter_spec l[] = {brk("pay", 4, 90, 8 * SEC)};
        make_arena("brkview", 1, l);
        thr_limiter *b;
        cr_assert_eq(thr_limiter_open(fx.arena, "pay", &b), 0);
        uint64_t n;
        cr_assert_eq(thr_clock_now(fx.arena, &n), 0);
        cr_assert_eq(thr_clock_advance(fx.arena, (n + U - 1) / U * U - n), 0);
        call(b, "flaky", THR_OUTCOME_SUCCESS);
        call(b, "flaky", THR_OUTCOME_FAILURE);
        call(b, "flaky", THR_OUTCOME_FAILURE);
        for (int i = 0; i < 4; i++) {
                call(b, "down", THR_OUTCOME_FAILURE);
                call(b, "probing", THR_OUTCOME_FAILURE);
        }
        cr_assert_eq(thr_clock_advance(fx.arena, 1000 * U), 0); /* both half-open now */
        call(b, "probing", THR_OUTCOME_SUCCESS);
        struct thr_breaker_ticket t;
        cr_assert_eq(thr_breaker_allow(b, "probing", 7, &t, NULL), 0);
        cr_assert_eq(t.probe, 1);
        struct thr_breaker_ticket d;
        cr_assert_eq(thr_breaker_allow(b, "down", 4, &d, NULL), 0);
        cr_assert_eq(thr_breaker_report(b, &d, THR_OUTCOME_FAILURE), 0); /* open again */
        cr_assert_eq(thr_clock_advance(fx.arena, 400 * U), 0);
        struct thr_breaker_status st;
        cr_assert_eq(thr_breaker_stat(b, "down", 4, &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_OPEN);
        cr_assert_eq(st.retry_after_ns, 600 * U);
        cr_assert_eq(thr_breaker_stat(b, "probing", 7, &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_HALF_OPEN);
        cr_assert_eq(st.probes_in_flight, 1);
        cr_assert_eq(st.half_open_successes, 1);
        cr_assert_eq(thr_breaker_stat(b, "flaky", 5, &st), 0);
        cr_assert_eq(st.consecutive_failures, 2);
        cr_assert_eq(st.window_calls, 3);
        cr_assert_eq(st.window_failures, 2);
        thr_limiter_close(b);
}

Test(shmctl_breaker, limiters_keys_and_get_show_each_state_exactly)
{
        char out[OUT_MAX], line[512];
        make_keys();
        cr_assert_eq(run(out, "limiters"), 0, "%s", out);
        line_with(out, "pay", line, sizeof(line));
        cr_assert(strstr(line, " breaker "), "kind: %s", line);
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"kind\":\"breaker\",\"failures\":4,\"failure_rate\":90,"
                        "\"min_calls\":100,\"window_ns\":8000000000,\"cooldown_ns\":1048576000,"
                        "\"probes\":2,\"probe_timeout_ns\":2097152000,\"successes\":3,");
        cr_assert_eq(run(out, "keys pay"), 0, "%s", out);
        assert_has(out, "breaker: failures 4, failure_rate 90% of >= 100 calls in 8s");
        /* open first, then half-open, then the closed one */
        const char *down = strstr(out, "\ndown "), *probing = strstr(out, "\nprobing "),
                   *flaky = strstr(out, "\nflaky ");
        cr_assert(down && probing && flaky && down < probing && probing < flaky, "%s", out);
        char k[32], s[32], c[32], wc[32], wf[32], p[32], sc[32], ra[32];
        line_with(down + 1, "down", line, sizeof(line));
        cr_assert_eq(
            sscanf(line, "%31s %31s %31s %31s %31s %31s %31s %31s", k, s, c, wc, wf, p, sc, ra), 8,
            "%s", line);
        cr_assert_str_eq(s, "open");
        cr_assert_str_eq(c, "5"); /* 4 that tripped it, and the probe's failure */
        cr_assert_str_eq(p, "0");
        cr_assert_str_eq(ra, "629.145ms", "600 U: %s", line);
        line_with(probing + 1, "probing", line, sizeof(line));
        cr_assert_eq(
            sscanf(line, "%31s %31s %31s %31s %31s %31s %31s %31s", k, s, c, wc, wf, p, sc, ra), 8,
            "%s", line);
        cr_assert_str_eq(s, "half-open");
        cr_assert_str_eq(p, "1");
        cr_assert_str_eq(sc, "1");
        cr_assert_str_eq(ra, "-", "a probe place is free");
        line_with(flaky + 1, "flaky", line, sizeof(line));
        cr_assert_eq(
            sscanf(line, "%31s %31s %31s %31s %31s %31s %31s %31s", k, s, c, wc, wf, p, sc, ra), 8,
            "%s", line);
        cr_assert_str_eq(s, "closed");
        cr_assert_str_eq(c, "2");
        cr_assert_str_eq(wc, "3");
        cr_assert_str_eq(wf, "2");
        cr_assert_eq(run(out, "--json keys pay"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"key\":\"flaky\"");
        assert_has(out, "\"breaker\":\"closed\",\"consecutive_failures\":2,\"window_calls\":3,"
                        "\"window_failures\":2,\"probes_in_flight\":0,\"half_open_successes\":0,"
                        "\"retry_after_ns\":0,");
        assert_has(out, "\"breaker\":\"open\",\"consecutive_failures\":5,\"window_calls\":0,"
                        "\"window_failures\":0,\"probes_in_flight\":0,\"half_open_successes\":0,"
                        "\"retry_after_ns\":629145600,");
        cr_assert_eq(run(out, "get pay probing"), 0, "%s", out);
        assert_has(out, "half-open");
        cr_assert_eq(run(out, "--json get pay nobody"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"breaker\":\"closed\",\"consecutive_failures\":0");
}

Test(shmctl_breaker, scribbled_words_never_crash_shmctl)
{
        char out[OUT_MAX];
        make_keys();
        close_client();
        uint64_t x = 12345;
        const char *keys[] = {"down", "probing", "flaky"};
        for (int round = 0; round < 20; round++) {
                for (int i = 0; i < 3; i++) {
                        struct thr_slot *s = slot_of("pay", keys[i]);
                        uint64_t w = next_rand(&x);
                        atomic_store(&s->state, round % 2 ? w | 3ull << 62 : w & ~(1ull << 63));
                        _Atomic uint64_t *bk = shm_slot_aux(fx.map.base, table_of("pay"), s);
                        for (int b = 0; b < 8; b++)
                                atomic_store(&bk[b], next_rand(&x));
                }
                int rc = run(out, "keys pay");
                cr_assert(rc == 0, "shmctl exited %d:\n%s", rc, out);
                if (round % 2)
                        assert_has(out, "corrupt");
                cr_assert_eq(run(out, "--json keys pay"), 0, "%s", out);
                assert_json(out);
        }
}

/* test_feedback.c - a downstream's Retry-After and rate-limit headers read with vectors
 * (well-formed in every accepted form, malformed ones changing nothing), and backoff delays as
 * Brooker's formulas give them. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "throttle/throttle.h"

#define SEC 1000000000ull
#define MS  1000000ull

/* 1994-11-06 08:49:37 UTC, RFC 9110's example date; 2026-12-04 00:00:00 UTC */
#define T1994 784111777ll
#define T2026 1796342400ll

static int ra(const char *v, int64_t now_s, uint64_t *d)
{
        return thr_retry_after_parse(v, strlen(v), now_s * (int64_t)SEC, d);
}

Test(feedback, retry_after_seconds_and_every_date_form)
{
        uint64_t d = 1;
        cr_assert_eq(ra("120", T2026, &d), 0);
        cr_assert_eq(d, 120 * SEC);
        cr_assert_eq(ra("0", T2026, &d), 0);
        cr_assert_eq(d, 0);
        cr_assert_eq(ra("  7 ", T2026, &d), 0, "optional whitespace around the value");
        cr_assert_eq(d, 7 * SEC);
        /* the three HTTP-date forms, 120 s after NOW */
        const char *forms[] = {"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                               "Sun Nov  6 08:49:37 1994"};
        for (int i = 0; i < 3; i++) {
                d = 0;
                cr_assert_eq(ra(forms[i], T1994 - 120, &d), 0, "%s", forms[i]);
                cr_assert_eq(d, 120 * SEC, "%s: %llu", forms[i], (unsigned long long)d);
        }
        cr_assert_eq(ra("Sun, 06 Nov 1994 08:49:37 GMT", T1994 + 5, &d), 0);
        cr_assert_eq(d, 0, "a date in the past is no wait");
        cr_assert_eq(ra("Thu, 29 Feb 2024 00:00:00 GMT", 1709164800ll - 1, &d), 0);
        cr_assert_eq(d, SEC, "a leap day");
        cr_assert_eq(ra("Wed, 01 Mar 2000 12:00:00 GMT", 951912000ll - 3, &d), 0);
        cr_assert_eq(d, 3 * SEC, "2000 is a leap year");
        cr_assert_eq(ra("Sun Nov 16 08:49:37 1994", T1994, &d), 0, "asctime, two-digit day");
        cr_assert_eq(d, 10 * 86400 * SEC);
        /* RFC 850's two-digit year, read in 2026: 70 is 2070 (44 years ahead), 94 is 1994 */
        cr_assert_eq(ra("Thursday, 01-Jan-70 00:00:00 GMT", T2026, &d), 0);
        cr_assert_eq(d, (uint64_t)(3155760000ll - T2026) * SEC);
        cr_assert_eq(ra("Sunday, 06-Nov-94 08:49:37 GMT", T2026, &d), 0);
        cr_assert_eq(d, 0, "1994, not 2094");
}

Test(feedback, retry_after_malformed_is_refused)
{
        const char *bad[] = {"",
                             "   ",
                             "-1",
                             "1.5",
                             "120abc",
                             "12 0",
                             "0x10",
                             "Sun, 6 Nov 1994 08:49:37 GMT",
                             "Sun, 06 Nov 1994 24:00:00 GMT",
                             "Sun, 06 Nov 1994 08:60:00 GMT",
                             "sun, 06 nov 1994 08:49:37 gmt",
                             "Sun, 06 Nov 1994 08:49:37 UTC",
                             "Sun, 31 Nov 1994 08:49:37 GMT",
                             "Tue, 29 Feb 2023 00:00:00 GMT",
                             "Sun, 06 Nov 1994 08:49:37 GMT trailing",
                             "Sun, 06 Nov 1994",
                             "Sunday, 06-Nov-1994 08:49:37 GMT",
                             "Sun Nov 6 08:49:37 1994",
                             "Sun, 06 Nov 1969 08:49:37 GMT",
                             "Funday, 06-Nov-94 08:49:37 GMT"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                uint64_t d = 12345;
                cr_assert_eq(ra(bad[i], T2026, &d), -EINVAL, "'%s' accepted", bad[i]);
                cr_assert_eq(d, 12345, "'%s' wrote a delay", bad[i]);
        }
        uint64_t d = 0;
        cr_assert_eq(ra("99999999999999999999", T2026, &d), -ERANGE);
        cr_assert_eq(ra("18446744074", T2026, &d), -ERANGE, "seconds whose ns overflow");
        cr_assert_eq(ra("18446744073", T2026, &d), 0, "the largest that fits");
        cr_assert_eq(thr_retry_after_parse(NULL, 0, 0, &d), -EINVAL);
        cr_assert_eq(thr_retry_after_parse("1", 1, 0, NULL), -EINVAL);
        cr_assert_eq(thr_retry_after_parse("12", 1, 0, &d), 0, "LEN bounds the value");
        cr_assert_eq(d, SEC);
}

static int hdr(struct thr_feedback *fb, const char *name, const char *value, int64_t now_s)
{
        return thr_feedback_header(fb, name, strlen(name), value, strlen(value),
                                   now_s * (int64_t)SEC);
}

Test(feedback, x_ratelimit_fields_of_the_common_apis)
{
        struct thr_feedback fb;
        thr_feedback_init(&fb);
        /* GitHub: a Unix-time reset */
        cr_assert_eq(hdr(&fb, "X-RateLimit-Limit", "5000", 1372700800), 1);
        cr_assert_eq(hdr(&fb, "X-RateLimit-Remaining", "0", 1372700800), 1);
        cr_assert_eq(hdr(&fb, "x-ratelimit-reset", "1372700873", 1372700800), 1);
        cr_assert_eq(fb.requests.has,
                     THR_FEEDBACK_LIMIT | THR_FEEDBACK_REMAINING | THR_FEEDBACK_RESET);
        cr_assert(fb.requests.limit == 5000 && fb.requests.remaining == 0);
        cr_assert_eq(fb.requests.reset_ns, 73 * SEC);
        cr_assert_eq(fb.tokens.has, 0);
        cr_assert_eq(fb.has, 0, "no Retry-After");

        /* OpenAI: durations, requests and tokens apart */
        thr_feedback_init(&fb);
        cr_assert_eq(hdr(&fb, "x-ratelimit-remaining-requests", "59", T2026), 1);
        cr_assert_eq(hdr(&fb, "x-ratelimit-reset-requests", "1s", T2026), 1);
        cr_assert_eq(hdr(&fb, "x-ratelimit-remaining-tokens", "149984", T2026), 1);
        cr_assert_eq(hdr(&fb, "x-ratelimit-reset-tokens", "6m0s", T2026), 1);
        cr_assert_eq(hdr(&fb, "x-ratelimit-limit-tokens", "150000", T2026), 1);
        cr_assert(fb.requests.remaining == 59 && fb.requests.reset_ns == SEC);
        cr_assert(fb.tokens.remaining == 149984 && fb.tokens.reset_ns == 360 * SEC &&
                  fb.tokens.limit == 150000);
        struct {
                const char *v;
                uint64_t ns;
        } dur[] = {{"20ms", 20 * MS},       {"1.5s", 1500 * MS}, {"2h1m", 7260 * SEC},
                   {"100us", 100000},       {"7ns", 7},          {"0.25m", 15 * SEC},
                   {"1m30.5s", 90500 * MS}, {"30", 30 * SEC},    {"2.5", 2500 * MS}};
        for (size_t i = 0; i < sizeof(dur) / sizeof(dur[0]); i++) {
                thr_feedback_init(&fb);
                cr_assert_eq(hdr(&fb, "X-RateLimit-Reset", dur[i].v, T2026), 1, "%s", dur[i].v);
                cr_assert_eq(fb.requests.reset_ns, dur[i].ns, "%s: %llu", dur[i].v,
                             (unsigned long long)fb.requests.reset_ns);
        }

        /* Discord: fractional Unix time, and Reset-After in seconds */
        thr_feedback_init(&fb);
        cr_assert_eq(hdr(&fb, "X-RateLimit-Reset", "1470173023.123", 1470173000), 1);
        cr_assert_eq(fb.requests.reset_ns, 23 * SEC + 123 * MS);
        thr_feedback_init(&fb);
        cr_assert_eq(hdr(&fb, "X-RateLimit-Reset-After", "64.57", T2026), 1);
        cr_assert_eq(fb.requests.reset_ns, 64 * SEC + 570 * MS);
        cr_assert_eq(hdr(&fb, "X-RateLimit-Reset", "1470173000", 1470173023), 1);
        cr_assert_eq(fb.requests.reset_ns, 64 * SEC + 570 * MS, "a reset already past folds as 0");
}

Test(feedback, folding_keeps_the_most_restrictive)
{
        struct thr_feedback fb;
        thr_feedback_init(&fb);
        cr_assert_eq(hdr(&fb, "X-RateLimit-Remaining", "5", T2026), 1);
        cr_assert_eq(hdr(&fb, "X-RateLimit-Remaining", "3", T2026), 1);
        cr_assert_eq(hdr(&fb, "X-RateLimit-Remaining", "7", T2026), 1);
        cr_assert_eq(fb.requests.remaining, 3);
        cr_assert_eq(hdr(&fb, "Retry-After", "10", T2026), 1);
        cr_assert_eq(hdr(&fb, "retry-after", "4", T2026), 1);
        cr_assert(fb.has == THR_FEEDBACK_RETRY_AFTER && fb.retry_after_ns == 10 * SEC);
        cr_assert_eq(hdr(&fb, "X-RateLimit-Reset", "9", T2026), 1);
        cr_assert_eq(hdr(&fb, "X-RateLimit-Reset", "2", T2026), 1);
        cr_assert_eq(fb.requests.reset_ns, 9 * SEC);
        cr_assert_eq(hdr(&fb, "Content-Type", "text/plain", T2026), 0, "not about limits");
        cr_assert_eq(hdr(&fb, "X-RateLimit-Other", "1", T2026), 0);
        cr_assert_eq(hdr(&fb, "X-RateLimit-", "1", T2026), 0);
        cr_assert_eq(fb.requests.remaining, 3);
}

Test(feedback, ietf_fields_in_every_draft_form)
{
        struct thr_feedback fb;
        thr_feedback_init(&fb);
        cr_assert_eq(hdr(&fb, "RateLimit", "\"default\";r=50;t=30", T2026), 1);
        cr_assert(fb.requests.remaining == 50 && fb.requests.reset_ns == 30 * SEC);
        /* two quotas: the binding one is read whole (its own reset), not mixed with the other */
        thr_feedback_init(&fb);
        cr_assert_eq(hdr(&fb, "RateLimit", "\"burst\";r=0;t=5, \"daily\";r=900;t=3600", T2026), 1);
        cr_assert(fb.requests.remaining == 0 && fb.requests.reset_ns == 5 * SEC,
                  "remaining %llu reset %llu", (unsigned long long)fb.requests.remaining,
                  (unsigned long long)fb.requests.reset_ns);
        thr_feedback_init(&fb);
        cr_assert_eq(
            hdr(&fb, "RateLimit", "day;r=9;t=80000;pk=:cHJvamVjdA==:, min;r=9;t=40", T2026), 1,
            "tokens for names, a byte-sequence parameter skipped");
        cr_assert(fb.requests.remaining == 9 && fb.requests.reset_ns == 80000 * SEC);
        thr_feedback_init(&fb);
        cr_assert_eq(
            hdr(&fb, "RateLimit-Policy", "\"burst\";q=100;w=60, \"daily\";q=1000;w=86400", T2026),
            1);
        cr_assert(fb.requests.limit == 100 && fb.requests.window_ns == 60 * SEC);
        cr_assert_eq(fb.requests.has, THR_FEEDBACK_LIMIT | THR_FEEDBACK_WINDOW);
        /* the intermediate drafts' dictionary */
        thr_feedback_init(&fb);
        cr_assert_eq(hdr(&fb, "RateLimit", "limit=100, remaining=50, reset=5", T2026), 1);
        cr_assert(fb.requests.limit == 100 && fb.requests.remaining == 50 &&
                  fb.requests.reset_ns == 5 * SEC);
        /* the earliest drafts' separate fields: seconds, never a Unix time */
        thr_feedback_init(&fb);
        cr_assert_eq(hdr(&fb, "RateLimit-Remaining", "10", T2026), 1);
        cr_assert_eq(hdr(&fb, "RateLimit-Reset", "1000000000", T2026), 1);
        cr_assert_eq(hdr(&fb, "RateLimit-Limit", "100, 100;w=60", T2026), 1);
        cr_assert(fb.requests.remaining == 10 && fb.requests.reset_ns == 1000000000ull * SEC &&
                  fb.requests.limit == 100);
}

Test(feedback, malformed_headers_change_nothing)
{
        struct {
                const char *name, *value;
                int rc;
        } bad[] = {
            {"X-RateLimit-Remaining", "-1", -EINVAL},
            {"X-RateLimit-Remaining", "abc", -EINVAL},
            {"X-RateLimit-Remaining", "5 5", -EINVAL},
            {"X-RateLimit-Remaining", "1.5", -EINVAL},
            {"X-RateLimit-Remaining", "", -EINVAL},
            {"X-RateLimit-Remaining", "99999999999999999999", -ERANGE},
            {"X-RateLimit-Reset", "5x", -EINVAL},
            {"X-RateLimit-Reset", "1.s", -EINVAL},
            {"X-RateLimit-Reset", "s", -EINVAL},
            {"X-RateLimit-Reset", "5m 3s", -EINVAL},
            {"X-RateLimit-Reset", "99999999999h", -ERANGE},
            {"X-RateLimit-Reset-After", "6m", -EINVAL},
            {"RateLimit-Reset", "1h", -EINVAL},
            {"RateLimit", "\"default\";r=-1;t=30", -EINVAL},
            {"RateLimit", "\"default\";r=1.5;t=30", -EINVAL},
            {"RateLimit", "\"default\"", -EINVAL},
            {"RateLimit", "\"default;r=1;t=3", -EINVAL},
            {"RateLimit", "\"a\";r=1;t=3 junk", -EINVAL},
            {"RateLimit", "\"a\";r=1;t=3,", -EINVAL},
            {"RateLimit", "", -EINVAL},
            {"RateLimit", "\"a\";r=1;t=99999999999999999999", -ERANGE},
            {"RateLimit", "\"a\";r=1;t=18446744074", -ERANGE},
            {"RateLimit-Policy", "\"a\";w=60", -EINVAL},
            {"Retry-After", "soon", -EINVAL},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct thr_feedback fb, before;
                thr_feedback_init(&fb);
                cr_assert_eq(hdr(&fb, "X-RateLimit-Remaining", "4", T2026), 1);
                cr_assert_eq(hdr(&fb, "X-RateLimit-Reset", "8", T2026), 1);
                cr_assert_eq(hdr(&fb, "RateLimit-Policy", "\"x\";q=9;w=2", T2026), 1);
                memcpy(&before, &fb, sizeof(fb));
                cr_assert_eq(hdr(&fb, bad[i].name, bad[i].value, T2026), bad[i].rc,
                             "%s: %s: expected %d", bad[i].name, bad[i].value, bad[i].rc);
                cr_assert_eq(memcmp(&fb, &before, sizeof(fb)), 0, "%s: %s changed the feedback",
                             bad[i].name, bad[i].value);
        }
        char many[1024] = "";
        for (int i = 0; i < 17; i++)
                snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s\"q%d\";r=1;t=1",
                         i ? ", " : "", i);
        struct thr_feedback fb;
        thr_feedback_init(&fb);
        cr_assert_eq(hdr(&fb, "RateLimit", many, T2026), -E2BIG);
        cr_assert_eq(fb.requests.has, 0);
        cr_assert_eq(thr_feedback_header(NULL, "a", 1, "b", 1, 0), -EINVAL);
}

/* ---------------------------------------------------------------- backoff */

static uint64_t delay(uint32_t kind, uint32_t jitter, uint64_t base, uint64_t cap, uint32_t attempt,
                      uint64_t prev, uint64_t rnd)
{
        struct thr_backoff b = {.kind = kind, .jitter = jitter, .base_ns = base, .cap_ns = cap};
        uint64_t d = 0;
        cr_assert_eq(thr_backoff_delay(&b, attempt, prev, rnd, &d), 0);
        return d;
}

Test(backoff, policies_without_jitter)
{
        uint64_t want[] = {100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000};
        for (uint32_t a = 0; a < 9; a++)
                cr_assert_eq(
                    delay(THR_BACKOFF_EXPONENTIAL, THR_JITTER_NONE, 100 * MS, 10 * SEC, a, 0, 0),
                    want[a] * MS, "attempt %u", a);
        cr_assert_eq(delay(THR_BACKOFF_EXPONENTIAL, THR_JITTER_NONE, 3, 0, 70, 0, 0), UINT64_MAX,
                     "saturates, no cap");
        cr_assert_eq(delay(THR_BACKOFF_EXPONENTIAL, THR_JITTER_NONE, 3, 0, 63, 0, 0), UINT64_MAX);
        cr_assert_eq(delay(THR_BACKOFF_EXPONENTIAL, THR_JITTER_NONE, 3, 0, 62, 0, 0), 3ull << 62);
        cr_assert_eq(delay(THR_BACKOFF_LINEAR, THR_JITTER_NONE, SEC, 0, 2, 0, 0), 3 * SEC);
        cr_assert_eq(delay(THR_BACKOFF_LINEAR, THR_JITTER_NONE, SEC, 5 * SEC, 9, 0, 0), 5 * SEC);
        cr_assert_eq(delay(THR_BACKOFF_LINEAR, THR_JITTER_NONE, UINT64_MAX / 2, 0, 7, 0, 0),
                     UINT64_MAX);
        cr_assert_eq(delay(THR_BACKOFF_CONSTANT, THR_JITTER_NONE, 7 * MS, 0, 1000, 0, 99), 7 * MS);
}

Test(backoff, jitter_bounds_and_distribution)
{
        uint64_t d = 800 * MS; /* exponential attempt 3 of base 100 ms */
        cr_assert_eq(delay(THR_BACKOFF_EXPONENTIAL, THR_JITTER_FULL, 100 * MS, 0, 3, 0, 0), 0);
        cr_assert_eq(delay(THR_BACKOFF_EXPONENTIAL, THR_JITTER_FULL, 100 * MS, 0, 3, 0, UINT64_MAX),
                     d);
        cr_assert_eq(delay(THR_BACKOFF_EXPONENTIAL, THR_JITTER_EQUAL, 100 * MS, 0, 3, 0, 0), d / 2);
        cr_assert_eq(
            delay(THR_BACKOFF_EXPONENTIAL, THR_JITTER_EQUAL, 100 * MS, 0, 3, 0, UINT64_MAX), d);
        /* decorrelated: [base, 3 * prev], capped; prev 0 is the first retry (prev = base) */
        cr_assert_eq(delay(0, THR_JITTER_DECORRELATED, 100 * MS, 0, 0, 0, 0), 100 * MS);
        cr_assert_eq(delay(0, THR_JITTER_DECORRELATED, 100 * MS, 0, 0, 0, UINT64_MAX), 300 * MS);
        cr_assert_eq(delay(0, THR_JITTER_DECORRELATED, 100 * MS, 0, 5, 2 * SEC, UINT64_MAX),
                     6 * SEC);
        cr_assert_eq(delay(0, THR_JITTER_DECORRELATED, 100 * MS, 5 * SEC, 5, 2 * SEC, UINT64_MAX),
                     5 * SEC);
        cr_assert_eq(delay(0, THR_JITTER_DECORRELATED, 100 * MS, 0, 5, UINT64_MAX, UINT64_MAX),
                     UINT64_MAX, "3 * prev saturates");

        /* a fixed generator (xorshift64*): the mean of full jitter is d/2, of equal 3d/4, and a
         * decorrelated chain stays within [base, cap]; 20 000 draws, means within 2 % */
        uint64_t x = 88172645463325252ull, sum_full = 0, sum_eq = 0, prev = 0;
        const int n = 20000;
        for (int i = 0; i < n; i++) {
                x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
                uint64_t r = x * 2685821657736338717ull;
                uint64_t f = delay(THR_BACKOFF_EXPONENTIAL, THR_JITTER_FULL, 100 * MS, 0, 3, 0, r);
                uint64_t e = delay(THR_BACKOFF_EXPONENTIAL, THR_JITTER_EQUAL, 100 * MS, 0, 3, 0, r);
                cr_assert(f <= d && e >= d / 2 && e <= d);
                sum_full += f / 1000, sum_eq += e / 1000; /* us: no overflow */
                prev = delay(0, THR_JITTER_DECORRELATED, 10 * MS, 2 * SEC, (uint32_t)i, prev, r);
                cr_assert(prev >= 10 * MS && prev <= 2 * SEC, "%llu", (unsigned long long)prev);
        }
        double mf = (double)sum_full / n, me = (double)sum_eq / n, du = (double)(d / 1000);
        cr_assert(mf > du / 2 * 0.98 && mf < du / 2 * 1.02, "full jitter mean %.0f us", mf);
        cr_assert(me > du * 0.75 * 0.98 && me < du * 0.75 * 1.02, "equal jitter mean %.0f us", me);
}

Test(backoff, bad_policies_are_refused)
{
        uint64_t d;
        struct thr_backoff b = {.kind = THR_BACKOFF_EXPONENTIAL, .base_ns = 0};
        cr_assert_eq(thr_backoff_delay(&b, 0, 0, 0, &d), -EINVAL, "base 0");
        b.base_ns = 10, b.cap_ns = 5;
        cr_assert_eq(thr_backoff_delay(&b, 0, 0, 0, &d), -EINVAL, "cap below base");
        b.cap_ns = 0, b.kind = 7;
        cr_assert_eq(thr_backoff_delay(&b, 0, 0, 0, &d), -EINVAL, "unknown kind");
        b.kind = 0, b.jitter = 9;
        cr_assert_eq(thr_backoff_delay(&b, 0, 0, 0, &d), -EINVAL, "unknown jitter");
        b.jitter = 0;
        cr_assert_eq(thr_backoff_delay(NULL, 0, 0, 0, &d), -EINVAL);
        cr_assert_eq(thr_backoff_delay(&b, 0, 0, 0, NULL), -EINVAL);
}

/*
 * test_params.c - a limiter's parameters are exact or refused: the time unit K, the emission
 * interval in whole units, and the overflow checks of shm_params_make.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "helpers.h"

static int make(uint64_t n, uint64_t p, uint64_t b, uint64_t init, struct thr_params *out,
                char *err)
{
        struct shm_limiter_spec s = tspec("lim", n, p, b, init);
        return shm_params_make(&s, 1, out, err, 256);
}

Test(params, whole_nanosecond_intervals_use_unit_one)
{
        struct thr_params p;
        char err[256];
        cr_assert_eq(make(100, SEC, 20, 20, &p, err), 0, "%s", err);
        cr_assert_eq(p.k, 1);
        cr_assert_eq(p.t_units, 10000000);
        cr_assert_eq(p.bt_units, 200000000);
        cr_assert_eq(make(20000, 60 * SEC, 1, 1, &p, err), 0);
        cr_assert_eq(p.k, 1);
        cr_assert_eq(p.t_units, 3000000);
        cr_assert_eq(make(1000000000, 7 * SEC, 1, 1, &p, err), 0);
        cr_assert_eq(p.k, 1);
        cr_assert_eq(p.t_units, 7);
}

Test(params, fractional_intervals_get_an_exact_unit)
{
        struct thr_params p;
        char err[256];
        cr_assert_eq(make(3, SEC, 1, 1, &p, err), 0, "%s", err);
        cr_assert_eq(p.k, 3, "T = 1e9/3 ns: units of 1/3 ns");
        cr_assert_eq(p.t_units, SEC);
        cr_assert_eq(make(7, 60 * SEC, 1, 1, &p, err), 0);
        cr_assert_eq(p.k, 7);
        cr_assert_eq(p.t_units, 60 * SEC);
        cr_assert_eq(make(29, SEC, 1, 1, &p, err), 0, "the finest unit allowed");
        cr_assert_eq(p.k, 29);
        cr_assert_eq(make(12, SEC, 1, 1, &p, err), 0, "gcd reduces 1e9/12 to 250000000/3");
        cr_assert_eq(p.k, 3);
        cr_assert_eq(p.t_units, 250000000);
}

Test(params, inexact_rate_is_refused_with_the_reason)
{
        struct thr_params p;
        char err[256] = "";
        cr_assert_eq(make(31, SEC, 1, 1, &p, err), -EDOM);
        cr_assert(strstr(err, "lim") && strstr(err, "exactly"), "message: %s", err);
}

Test(params, overflowing_burst_is_refused)
{
        struct thr_params p;
        char err[256] = "";
        cr_assert_eq(make(1, 86400 * SEC, UINT64_MAX / 2, 1, &p, err), -ERANGE);
        cr_assert(strstr(err, "overflow"), "message: %s", err);
        /* The largest burst that still fits 20 years of state is accepted. */
        cr_assert_eq(make(1, SEC, 1000000000ull, 1, &p, err), 0, "%s", err);
}

Test(params, bad_values_are_refused)
{
        struct thr_params p;
        char err[256] = "";
        cr_assert_eq(make(0, SEC, 1, 1, &p, err), -EINVAL);
        cr_assert_eq(make(1, 0, 1, 1, &p, err), -EINVAL);
        cr_assert_eq(make(1, SEC, 0, 0, &p, err), -EINVAL);
        cr_assert(strstr(err, "burst"), "message: %s", err);
        cr_assert_eq(make(1, SEC, 2, 3, &p, err), -EINVAL);
        cr_assert(strstr(err, "initial"), "message: %s", err);
}

Test(params, reservation_cap_counts_against_the_range)
{
        struct shm_limiter_spec s = tspec("lim", 29, SEC, 1, 1);
        struct thr_params p;
        char err[256];
        s.max_reserve_ns = UINT64_MAX / 8;
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), -ERANGE);
        s.max_reserve_ns = 3600 * SEC;
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0);
        cr_assert_eq(p.max_reserve_units, 3600 * SEC * 29);
}

Test(params, the_worst_case_two_bursts_past_now_must_fit)
{
        /* B*T alone fits 64 bits, but now + 2*B*T + reserve over 20 years does not: refused. */
        struct thr_params p;
        char err[256] = "";
        cr_assert_eq(make(1, SEC, 10000000000ull, 1, &p, err), -ERANGE, "B*T = 1e19");
        cr_assert_eq(make(1, SEC, 9000000000ull, 1, &p, err), -ERANGE, "2*B*T = 1.8e19 + 20 y");
        cr_assert_eq(make(1, SEC, 8000000000ull, 1, &p, err), 0, "2*B*T = 1.6e19 + 20 y fits");
        cr_assert_eq(make(1, SEC, 8000000ull, 1, &p, err), 0, "%s", err);
        /* And whatever shm_params_make accepts, the validator accepts too. */
        struct tarena t;
        struct shm_limiter_spec s = tspec("edge", 1, SEC, 8000000000ull / 2 - 400000000ull, 1);
        s.max_reserve_ns = 0;
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0, "%s", err);
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        tarena_free(&t);
}

/* A reload keeps an existing GCRA limiter's time unit (shm_params_in_units): the new interval in
 * the old unit, exact when it is a whole number of units, else rounded up and flagged. */
Test(params, a_new_rate_in_the_buckets_unit_is_exact_or_rounded_up)
{
        struct thr_params p;
        char err[256] = "";
        /* 100/s (K 1) in units of 1/3 ns: 3e7 units, exact */
        cr_assert_eq(make(100, SEC, 10, 10, &p, err), 0, "%s", err);
        p.max_reserve_units = 60 * SEC; /* ns * K(1) */
        cr_assert_eq(shm_params_in_units(&p, 3, "lim", err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(p.k, 3);
        cr_assert_eq(p.t_units, 30000000);
        cr_assert_eq(p.bt_units, 300000000);
        cr_assert_eq(p.max_reserve_units, 180 * SEC, "the cap in the new unit");
        cr_assert_eq(p.flags & THR_PARAM_ROUNDED, 0, "exact");
        /* 30/s (K 3) in whole ns: 33333333.33 ns up to 33333334, never faster */
        cr_assert_eq(make(30, SEC, 5, 5, &p, err), 0, "%s", err);
        cr_assert_eq(shm_params_in_units(&p, 1, "lim", err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(p.k, 1);
        cr_assert_eq(p.t_units, 33333334);
        cr_assert_eq(p.bt_units, 5 * 33333334ull);
        cr_assert_neq(p.flags & THR_PARAM_ROUNDED, 0);
        cr_assert_eq(p.rate_n, 30, "the configured rate is kept for display");
        /* 7/s (K 7) in units of 1/3 ns: ceil(3e9 / 7) */
        cr_assert_eq(make(7, SEC, 3, 3, &p, err), 0, "%s", err);
        cr_assert_eq(shm_params_in_units(&p, 3, "lim", err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(p.t_units, 428571429);
        cr_assert_neq(p.flags & THR_PARAM_ROUNDED, 0);
        /* the same unit, or another kind: untouched */
        struct thr_params q;
        cr_assert_eq(make(7, SEC, 3, 3, &q, err), 0, "%s", err);
        p = q;
        cr_assert_eq(shm_params_in_units(&p, 7, "lim", err, sizeof(err)), 0);
        cr_assert_eq(memcmp(&p, &q, sizeof(p)), 0);
}

Test(params, a_new_rate_that_overflows_the_buckets_unit_is_refused)
{
        struct thr_params p;
        char err[256] = "";
        /* 1 per 20 years, burst 1, in whole ns fits; in units of 1/29 ns it cannot */
        cr_assert_eq(make(1, 7000ull * 86400 * SEC, 1, 1, &p, err), 0, "%s", err);
        cr_assert_eq(shm_params_in_units(&p, 29, "lim", err, sizeof(err)), -ERANGE);
        cr_assert_not_null(strstr(err, "limiter 'lim'"), "%s", err);
        cr_assert_not_null(strstr(err, "1/29 ns"), "%s", err);
        /* an invalid unit read from the arena is corruption, not a rate problem */
        cr_assert_eq(make(100, SEC, 10, 10, &p, err), 0, "%s", err);
        cr_assert_eq(shm_params_in_units(&p, 0, "lim", err, sizeof(err)), -EBADMSG);
        cr_assert_eq(shm_params_in_units(&p, THR_MAX_K + 1, "lim", err, sizeof(err)), -EBADMSG);
}

/* A scaled record (a global limiter's share): interval ceil(T / share), burst floor(B share)
 * but at least 1, initial scaled the same way, the scale kept in the record, and a change of
 * time unit (shm_params_in_units) keeps the scale instead of restoring the whole rate. */
Test(params, a_share_scales_rate_and_burst_and_survives_a_change_of_unit)
{
        struct shm_limiter_spec s = tspec("g", 1000, SEC, 100, 100);
        struct thr_params p;
        char err[256];
        s.scale_ppm = 250000;
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0, "%s", err);
        cr_assert(p.k == 1 && p.t_units == 4000000 && p.burst == 25 && p.initial == 25 &&
                      p.bt_units == 100000000 && p.reserved == 250000 &&
                      !(p.flags & THR_PARAM_ROUNDED),
                  "k %" PRIu64 " t %" PRIu64 " burst %" PRIu64, p.k, p.t_units, p.burst);
        s.scale_ppm = 333333; /* 333.333/s: T = 3000003.000003 ns, rounded up: never faster */
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(p.t_units, 3000004);
        cr_assert(p.flags & THR_PARAM_ROUNDED);
        cr_assert_eq(p.burst, 33);
        s.scale_ppm = 1; /* the least share: a burst of one, a new key empty, a millionth of R */
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0, "%s", err);
        cr_assert(p.burst == 1 && p.initial == 0 && p.t_units == 1000000000000ull);
        s = tspec("g", 1000, SEC, 100, 40); /* initial below burst is scaled, may reach 0 */
        s.scale_ppm = 10000;
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0, "%s", err);
        cr_assert(p.burst == 1 && p.initial == 0);
        /* 3/s (units of 1/3 ns) at half: T = 2e9/3 ns, i.e. 2e9 units; in buckets counting
         * whole ns (k = 1) it is 666666667 ns, rounded up, and still half of the rate */
        s = tspec("g", 3, SEC, 6, 6);
        s.scale_ppm = 500000;
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0, "%s", err);
        cr_assert(p.k == 3 && p.t_units == 2 * SEC && p.burst == 3);
        cr_assert_eq(shm_params_in_units(&p, 1, "g", err, sizeof(err)), 0, "%s", err);
        cr_assert(p.k == 1 && p.t_units == 666666667 && p.burst == 3 && p.reserved == 500000,
                  "t %" PRIu64 " burst %" PRIu64, p.t_units, p.burst);
        cr_assert_eq(p.bt_units, 3 * 666666667ull);
        /* whole (0 or 10^6): the record is the configured one */
        s.scale_ppm = THR_SCALE_ONE;
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0, "%s", err);
        cr_assert(p.reserved == 0 && p.burst == 6 && p.t_units == SEC && p.k == 3);
}

/*
 * params.c - a limiter's spec turned into its immutable parameter record, exactly.
 *
 * Rate N per P ns gives the emission interval T = P/N ns. In lowest terms T = p/q ns, so in units
 * of 1/q ns T is the whole number p: time is kept in units of 1/K ns with K = q, and every token
 * costs exactly p units, so no error accumulates however long the limiter runs. The state word is
 * an unsigned 64-bit count of units since the arena epoch: K <= THR_MAX_K keeps its range above
 * 20 years. Rates that would need a finer unit, and bursts or reservation caps whose products
 * overflow, are refused here, at configuration time, with the reason.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "shm.h"

static uint64_t gcd64(uint64_t a, uint64_t b)
{
        while (b) {
                uint64_t t = a % b;
                a = b;
                b = t;
        }
        return a;
}

static int fail(char *err, size_t errlen, int rc, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(char *err, size_t errlen, int rc, const char *name, const char *fmt, ...)
{
        if (err && errlen) {
                int n = snprintf(err, errlen, "limiter '%s': ", name);
                if (n >= 0 && (size_t)n < errlen) {
                        va_list ap;
                        va_start(ap, fmt);
                        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
                        va_end(ap);
                }
        }
        return rc;
}

/* The fields every kind shares: the policy the daemon and the insert path apply. */
static int common_make(const struct shm_limiter_spec *s, uint64_t gen, struct thr_params *out,
                       char *err, size_t errlen)
{
        if (s->on_full > THR_FULL_EVICT)
                return fail(err, errlen, -EINVAL, s->name, "on_full must be deny, allow or evict");
        if (s->idle_ttl_ns > THR_HORIZON_NS)
                return fail(err, errlen, -ERANGE, s->name, "idle_ttl exceeds 20 years");
        if (s->lock_wait_ns > THR_LOCK_WAIT_MAX_NS)
                return fail(err, errlen, -ERANGE, s->name, "insert_wait exceeds 60 s");
        if (s->clock_read > THR_CLOCK_READ_AUTO)
                return fail(err, errlen, -EINVAL, s->name,
                            "clock_read must be auto, precise, coarse or tsc");
        if ((s->clock_read == THR_CLOCK_READ_COARSE || s->clock_read == THR_CLOCK_READ_TSC) &&
            s->kind != 0 && s->kind != THR_KIND_GCRA)
                return fail(err, errlen, -EINVAL, s->name,
                            "clock_read = %s applies to rate limiters only: a %s compares times "
                            "that other processes wrote with its own, so it reads the precise "
                            "clock",
                            s->clock_read == THR_CLOCK_READ_COARSE ? "coarse" : "tsc",
                            shm_kind_name(s->kind));
        memset(out, 0, sizeof(*out));
        out->size = sizeof(*out);
        out->gen = gen;
        out->idle_ttl_ns = s->idle_ttl_ns;
        out->on_full = s->on_full;
        out->lock_wait_ns = s->lock_wait_ns;
        return 0;
}

/*
 * A window of N units per W ns: its times are ns (K = 1, T = 1 unit), its largest cost is N, and
 * a reservation may be due at most max_reserve ns ahead. N is bounded by THR_WINDOW_MAX because
 * every slot of the table carries a log of N + 8 words (8 (N + 8) bytes, allocated with the
 * table): at the bound a key costs 128 KiB, 1.5 times that per key of capacity.
 */
static int window_make(const struct shm_limiter_spec *s, uint64_t gen, struct thr_params *out,
                       char *err, size_t errlen)
{
        if (s->rate_n == 0 || s->period_ns == 0)
                return fail(err, errlen, -EINVAL, s->name,
                            "a window needs a positive limit and length (got %" PRIu64
                            " per %" PRIu64 " ns)",
                            s->rate_n, s->period_ns);
        if (s->rate_n > THR_WINDOW_MAX)
                return fail(err, errlen, -ERANGE, s->name,
                            "limit %" PRIu64 " exceeds %u: a window keeps the time of each of its "
                            "last N units in every key's slot (8 bytes a unit, allocated for every "
                            "key of the capacity); use a GCRA limiter for large rates, or a "
                            "shorter window with a proportionally smaller limit",
                            s->rate_n, THR_WINDOW_MAX);
        if (s->period_ns > THR_HORIZON_NS || s->max_reserve_ns > THR_HORIZON_NS)
                return fail(err, errlen, -ERANGE, s->name,
                            "window or max_reserve exceeds 20 years");
        int rc = common_make(s, gen, out, err, errlen);
        if (rc < 0)
                return rc;
        out->kind = THR_KIND_WINDOW;
        out->rate_n = s->rate_n;
        out->period_ns = s->period_ns;
        out->k = 1;
        out->t_units = 1;
        out->burst = out->initial = s->rate_n;
        out->bt_units = 0;
        out->max_reserve_units = s->max_reserve_ns;
        out->flags = s->serialize ? THR_PARAM_SERIALIZE : 0;
        return 0;
}

/* kind = semaphore: at most max (rate_n) units held per key, by at most `leases` leases. */
static int sem_make(const struct shm_limiter_spec *s, uint64_t gen, struct thr_params *out,
                    char *err, size_t errlen)
{
        if (s->rate_n == 0 || s->rate_n > THR_SEM_MAX)
                return fail(err, errlen, -ERANGE, s->name,
                            "a semaphore's max must be 1 to %u (got %" PRIu64 ")", THR_SEM_MAX,
                            s->rate_n);
        if (s->leases == 0 || s->leases > THR_SEM_LEASES_MAX)
                return fail(err, errlen, -ERANGE, s->name,
                            "leases_per_key must be 1 to %u (got %" PRIu64 "): every key of the "
                            "capacity has room for that many leases, %u bytes each",
                            THR_SEM_LEASES_MAX, s->leases, THR_LEASE_SIZE);
        if (s->serialize)
                return fail(err, errlen, -EINVAL, s->name,
                            "serialize applies to window limiters only");
        int rc = common_make(s, gen, out, err, errlen);
        if (rc < 0)
                return rc;
        out->kind = THR_KIND_SEMAPHORE;
        out->rate_n = out->burst = out->initial = s->rate_n;
        out->period_ns = 0;
        out->k = 1;
        out->t_units = 1;
        out->bt_units = 0;
        out->max_reserve_units = 0;
        out->flags = 0;
        out->leases = s->leases;
        if (s->level >= THR_SEM_LEVELS)
                return fail(err, errlen, -EINVAL, s->name,
                            "level must be 0 to %u (got %" PRIu64 ")", THR_SEM_LEVELS - 1,
                            s->level);
        out->level = s->level;
        if (s->max_waiters > THR_SEMQ_WAITERS_MAX)
                return fail(err, errlen, -ERANGE, s->name,
                            "max_waiters must be 0 (unbounded) to %u (got %" PRIu64 ")",
                            THR_SEMQ_WAITERS_MAX, s->max_waiters);
        if (s->on_queue_full > THR_QUEUE_DROP_LOWEST)
                return fail(err, errlen, -EINVAL, s->name, "unknown on_queue_full %u",
                            s->on_queue_full);
        if (s->priority_share > THR_SEMQ_SHARE_MAX)
                return fail(err, errlen, -ERANGE, s->name,
                            "priority_share must be 0 (strict priority) to %u: one grant in "
                            "that many goes to the oldest waiter (got %u)",
                            THR_SEMQ_SHARE_MAX, s->priority_share);
        out->reserved = THR_SEMQ(s->max_waiters, s->on_queue_full, s->priority_share);
        return 0;
}

/* kind = budget: a balance per key, new keys at `initial`; no rate, no refill (budget.h). */
static int budget_make(const struct shm_limiter_spec *s, uint64_t gen, struct thr_params *out,
                       char *err, size_t errlen)
{
        if (s->initial > THR_BUDGET_MAX)
                return fail(err, errlen, -ERANGE, s->name,
                            "a budget's initial balance must be 0 to %llu (got %" PRIu64 ")",
                            (unsigned long long)THR_BUDGET_MAX, s->initial);
        if (s->serialize)
                return fail(err, errlen, -EINVAL, s->name,
                            "serialize applies to window limiters only");
        if (s->on_full == THR_FULL_ALLOW)
                return fail(err, errlen, -EINVAL, s->name,
                            "on_full = allow does not apply to a budget: a balance cannot be "
                            "spent unrecorded (deny, or evict: a key at its initial balance)");
        int rc = common_make(s, gen, out, err, errlen);
        if (rc < 0)
                return rc;
        out->kind = THR_KIND_BUDGET;
        out->rate_n = 0;
        out->period_ns = 0;
        out->k = 1;
        out->t_units = 1;
        out->burst = THR_BUDGET_MAX; /* the largest cost */
        out->initial = s->initial;
        out->bt_units = 0;
        out->max_reserve_units = 0;
        out->flags = 0;
        out->leases = 0;
        out->level = 0;
        if (s->priority_share > THR_SEMQ_SHARE_MAX)
                return fail(err, errlen, -ERANGE, s->name,
                            "priority_share must be 0 (strict priority) to %u: one grant in "
                            "that many goes to the oldest waiter (got %u)",
                            THR_SEMQ_SHARE_MAX, s->priority_share);
        out->reserved = THR_SEMQ(0, 0, s->priority_share); /* its queue's share (sem.h) */
        return 0;
}

/* kind = breaker: closed / open / half-open per key (breaker.h); the record's fields are listed at
 * THR_BRK_FAILURES_MAX (layout.h). */
static int breaker_make(const struct shm_limiter_spec *s, uint64_t gen, struct thr_params *out,
                        char *err, size_t errlen)
{
        if (s->failures > THR_BRK_FAILURES_MAX)
                return fail(err, errlen, -ERANGE, s->name,
                            "failures must be 0 (off) to %u (got %" PRIu64 ")",
                            THR_BRK_FAILURES_MAX, s->failures);
        if (s->failure_rate > 100)
                return fail(err, errlen, -ERANGE, s->name,
                            "failure_rate must be 0%% (off) to 100%% (got %" PRIu64 "%%)",
                            s->failure_rate);
        if (!s->failures && !s->failure_rate)
                return fail(err, errlen, -EINVAL, s->name,
                            "a breaker needs a rule that trips it: failures = N (consecutive) or "
                            "failure_rate = P%% (with window and min_calls)");
        if (s->failure_rate && (s->period_ns < 8 || s->period_ns > THR_HORIZON_NS))
                return fail(err, errlen, -EINVAL, s->name,
                            "failure_rate needs a window of 8 ns to 20 years (e.g. window = 10s)");
        if (s->failure_rate && (s->min_calls < 1 || s->min_calls > THR_BRK_MIN_CALLS_MAX))
                return fail(err, errlen, -ERANGE, s->name,
                            "min_calls must be 1 to %u (got %" PRIu64 ")", THR_BRK_MIN_CALLS_MAX,
                            s->min_calls);
        if (s->probes < 1 || s->probes > THR_BRK_PROBES_MAX)
                return fail(err, errlen, -ERANGE, s->name,
                            "probes must be 1 to %u (got %" PRIu64 ")", THR_BRK_PROBES_MAX,
                            s->probes);
        if (s->successes < 1 || s->successes > THR_BRK_SUCCESSES_MAX)
                return fail(err, errlen, -ERANGE, s->name,
                            "successes must be 1 to %u (got %" PRIu64 ")", THR_BRK_SUCCESSES_MAX,
                            s->successes);
        if (s->cooldown_ns < 1 || s->cooldown_ns > THR_HORIZON_NS || s->probe_timeout_ns < 1 ||
            s->probe_timeout_ns > THR_HORIZON_NS)
                return fail(err, errlen, -ERANGE, s->name,
                            "cooldown and probe_timeout must be 1 ns to 20 years");
        if (s->serialize)
                return fail(err, errlen, -EINVAL, s->name,
                            "serialize applies to window limiters only");
        int rc = common_make(s, gen, out, err, errlen);
        if (rc < 0)
                return rc;
        out->kind = THR_KIND_BREAKER;
        out->rate_n = s->failures;
        out->burst = s->failure_rate;
        out->initial = s->failure_rate ? s->min_calls : 0;
        out->period_ns = s->failure_rate ? s->period_ns : 0;
        out->k = 1;
        out->t_units = 1;
        out->bt_units = 0;
        out->max_reserve_units = s->cooldown_ns;
        out->leases = s->probe_timeout_ns;
        out->level = s->probes;
        out->reserved = s->successes;
        out->flags = 0;
        return 0;
}

/*
 * A scaled GCRA record (a global limiter's share, daemon/global.c) runs at SCALE millionths of the
 * configured rate and burst: T' = ceil(P K 10^6 / (N SCALE)) units, rounded up (never faster than
 * the share), B' = max(1, floor(B SCALE / 10^6)) (a bucket holds at least one request), and a
 * new key's tokens I' = floor(I SCALE / 10^6) (none at the least share: fail closed). Its
 * interval is computed from the configured N and P in one rounding, in whatever unit K the
 * buckets count in, so a change of unit (shm_params_in_units) keeps the scale exactly.
 */
static uint64_t scaled(uint64_t v, uint32_t scale)
{
        uint64_t s = (uint64_t)((__uint128_t)v * scale / THR_SCALE_ONE);
        return s ? s : 1;
}

/* P's interval at unit K and P->reserved's scale (0: whole) into P's t_units, bt_units; P's burst
 * is already scaled. */
static int gcra_interval(struct thr_params *p, uint64_t k, const char *name, char *err,
                         size_t errlen)
{
        uint64_t scale = p->reserved && p->reserved < THR_SCALE_ONE ? p->reserved : THR_SCALE_ONE;
        __uint128_t num = (__uint128_t)p->period_ns * k * THR_SCALE_ONE;
        __uint128_t den = (__uint128_t)p->rate_n * scale;
        __uint128_t t = num / den + (num % den != 0);
        /* a share so small that its interval does not fit the state word (a slow rate at the
         * least share: 5/d at a millionth is 548 years): the longest that fits, if that is still
         * past the arena's 20 years, when either lets a key admit its bucket's place and no more;
         * else a closed limiter could not close, nor a host take a small grant */
        __uint128_t fixed = (__uint128_t)p->max_reserve_units + (__uint128_t)THR_HORIZON_NS * k;
        if (fixed < THR_TAT_LIMIT &&
            !shm_params_range_ok(p->burst, (uint64_t)(t > UINT64_MAX ? UINT64_MAX : t),
                                 p->max_reserve_units, k)) {
                __uint128_t most = (THR_TAT_LIMIT - 1 - fixed) / (2 * (__uint128_t)p->burst);
                if (most < t && most >= (__uint128_t)THR_HORIZON_NS * k) {
                        t = most;
                        p->flags |= THR_PARAM_ROUNDED;
                }
        }
        if (t > UINT64_MAX || !shm_params_range_ok(p->burst, (uint64_t)t, p->max_reserve_units, k))
                return fail(err, errlen, -ERANGE, name,
                            "its share of %" PRIu64 " millionths makes an emission interval of "
                            "%ju units of 1/%" PRIu64 " ns, too long for the state word over 20 "
                            "years",
                            scale, (uintmax_t)(t > UINT64_MAX ? UINT64_MAX : t), k);
        if (num % den)
                p->flags |= THR_PARAM_ROUNDED;
        p->k = k;
        p->t_units = (uint64_t)t;
        p->bt_units = p->burst * (uint64_t)t;
        return 0;
}

int shm_params_make(const struct shm_limiter_spec *s, uint64_t gen, struct thr_params *out,
                    char *err, size_t errlen)
{
        if (!s || !out)
                return -EINVAL;
        if (s->kind == THR_KIND_BREAKER)
                return breaker_make(s, gen, out, err, errlen);
        if (s->kind == THR_KIND_WINDOW)
                return window_make(s, gen, out, err, errlen);
        if (s->kind == THR_KIND_SEMAPHORE)
                return sem_make(s, gen, out, err, errlen);
        if (s->kind == THR_KIND_BUDGET)
                return budget_make(s, gen, out, err, errlen);
        if (s->kind != 0 && s->kind != THR_KIND_GCRA)
                return fail(err, errlen, -EINVAL, s->name, "unknown kind %u", s->kind);
        if (s->serialize)
                return fail(err, errlen, -EINVAL, s->name,
                            "serialize applies to window limiters only");
        if (s->rate_n == 0 || s->period_ns == 0)
                return fail(err, errlen, -EINVAL, s->name,
                            "rate must be positive (got %" PRIu64 " per %" PRIu64 " ns)", s->rate_n,
                            s->period_ns);
        if (s->burst == 0)
                return fail(err, errlen, -EINVAL, s->name, "burst must be at least 1");
        if (s->initial > s->burst)
                return fail(err, errlen, -EINVAL, s->name,
                            "initial (%" PRIu64 ") exceeds burst (%" PRIu64 ")", s->initial,
                            s->burst);
        uint64_t g = gcd64(s->period_ns, s->rate_n);
        uint64_t k = s->rate_n / g;          /* denominator of T in ns */
        uint64_t t_units = s->period_ns / g; /* numerator: T in units of 1/k ns */
        if (k > THR_MAX_K)
                return fail(err, errlen, -EDOM, s->name,
                            "rate cannot be represented exactly: its emission interval is %" PRIu64
                            "/%" PRIu64 " ns in lowest terms, and time units finer than 1/29 ns "
                            "would not last 20 years in the state word (choose N and P so that "
                            "P/N ns reduces to a fraction with a denominator of at most 29)",
                            t_units, k);
        __uint128_t bt = (__uint128_t)s->burst * t_units;
        __uint128_t reserve = (__uint128_t)s->max_reserve_ns * k;
        if (reserve > UINT64_MAX || !shm_params_range_ok(s->burst, t_units, (uint64_t)reserve, k))
                return fail(err, errlen, -ERANGE, s->name,
                            "burst %" PRIu64 " times the emission interval (%" PRIu64
                            " units) plus max_reserve would overflow the state word over 20 years",
                            s->burst, t_units);
        int rc = common_make(s, gen, out, err, errlen);
        if (rc < 0)
                return rc;
        out->kind = THR_KIND_GCRA;
        out->rate_n = s->rate_n;
        out->period_ns = s->period_ns;
        out->k = k;
        out->t_units = t_units;
        out->burst = s->burst;
        out->initial = s->initial;
        out->bt_units = (uint64_t)bt;
        out->max_reserve_units = (uint64_t)reserve;
        if (s->scale_ppm == 0 || s->scale_ppm >= THR_SCALE_ONE)
                return 0;
        /* a new key's tokens scale down with no floor: at the least share (fail closed) a new
         * key starts empty, and is denied */
        out->initial = (uint64_t)((__uint128_t)s->initial * s->scale_ppm / THR_SCALE_ONE);
        out->burst = scaled(s->burst, s->scale_ppm);
        if (out->initial > out->burst)
                out->initial = out->burst;
        out->reserved = s->scale_ppm;
        return gcra_interval(out, k, s->name, err, errlen);
}

/*
 * A reload that changes a GCRA limiter's rate to one whose exact interval needs another time
 * unit (100/s, T = 10^7 ns, K = 1; then 30/s, T = 10^8/3 ns, K = 3) cannot change the unit in
 * place: every key's state word is a TAT counted in the old unit, and clients decide on it
 * concurrently with no way to tell a converted word from an unconverted one. So the new record
 * keeps the old unit K and carries the new interval expressed in it, rounded up when it is not a
 * whole number of units: T' = ceil(P K / N) units. Each record is still used whole (one acquire
 * load of params_off per call), so every decision is exact GCRA at interval T' on state in the
 * units it was written in; with T' >= T no key is ever admitted faster than N per P. The rate
 * falls short of N/P by (T' - T) / T' < 1 / (K T) relative: under 10^-6 for any T >= 1 ms. A new
 * arena (or the same rate configured before the arena was created) is exact.
 */
int shm_params_in_units(struct thr_params *p, uint64_t k, const char *name, char *err,
                        size_t errlen)
{
        if (p->kind != THR_KIND_GCRA || p->k == k)
                return 0;
        if (k == 0 || k > THR_MAX_K)
                return fail(err, errlen, -EBADMSG, name,
                            "its buckets in the arena count units of 1/%" PRIu64 " ns, which is "
                            "not a valid time unit: the arena is corrupt",
                            k);
        __uint128_t num = (__uint128_t)p->period_ns * k; /* T in units of 1/k ns is num / N */
        __uint128_t t = num / p->rate_n + (num % p->rate_n != 0);
        __uint128_t reserve_ns = p->max_reserve_units / p->k; /* exact: made as ns * p->k */
        __uint128_t reserve = reserve_ns * k;
        if (t > UINT64_MAX || reserve > UINT64_MAX ||
            !shm_params_range_ok(p->burst, (uint64_t)t, (uint64_t)reserve, k))
                return fail(err, errlen, -ERANGE, name,
                            "burst %" PRIu64 " times the emission interval in the buckets' time "
                            "unit 1/%" PRIu64 " ns (%ju units) plus max_reserve would overflow "
                            "the state word over 20 years",
                            p->burst, k, (uintmax_t)(t > UINT64_MAX ? UINT64_MAX : t));
        p->max_reserve_units = (uint64_t)reserve;
        if (p->reserved) /* scaled: the interval from N, P and the scale in one rounding */
                return gcra_interval(p, k, name, err, errlen);
        if (num % p->rate_n)
                p->flags |= THR_PARAM_ROUNDED;
        p->k = k;
        p->t_units = (uint64_t)t;
        p->bt_units = p->burst * (uint64_t)t;
        return 0;
}

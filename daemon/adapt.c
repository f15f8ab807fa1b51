/*
 * adapt.c - adaptive limits (adaptive = aimd): the daemon moves a GCRA limiter's rate between
 * its bounds, once per interval of arena time, from what the clients recorded.
 *
 * The signal. A client records each call its downstream refused for overload with
 * thr_limiter_overload (a 429, a 503, a timeout), in its own thread's row of limiter counters
 * (layout.h, struct thr_lcount: no write another thread makes). The rows also count each
 * decision admitted and denied. At the end of each interval the daemon sums every row (rows are
 * never reset: a dead thread's counts stay) and compares with the sums at the last step.
 *
 * The rule, per interval (AIMD, as TCP's congestion window and Netflix's concurrency-limits
 * AIMDLimit): any overload recorded: rate = max(min, floor(rate * decrease)); else, if the
 * limit was binding (a request was denied in the interval): rate = min(max, rate + increase);
 * else (demand below the limit) the rate stays: an unused limit is not raised, so a quiet
 * period cannot carry the rate to max and release a burst of overload when demand returns.
 * Rates are whole counts per the limiter's own period; the bounds always hold.
 *
 * What it converges to (stated, and measured by tests/test_adapt.c): against a downstream that
 * refuses above C per period and demand above C, the rate climbs by increase per interval to the
 * first value above C, is cut to at most that times decrease, and climbs again: a sawtooth whose
 * every value lies in [min(C, max) * decrease - 1, C + increase] (clipped to [min, max]), and
 * whose mean over a cycle is at least (1 + decrease) / 2 * C - increase.
 *
 * Publishing. A new rate is a new parameter record published as a reload publishes one
 * (shm_limiter_rerate: buckets kept, the record read by clients inside their read-side
 * sections), under the supervisor's arena mutex, so that a reload on the main thread and a step
 * here never interleave. The replaced record is retired and reused after a grace period
 * (arena_build.c, recycling), so a controller stepping for years uses a bounded number of
 * records. A step is only taken while the registry it reads is the configuration the arena was
 * last configured with (registry gen = the arena's config_gen, both under the mutex): a reload
 * starts every adaptive limiter again at its configured rate (the reload publishes it), and a
 * restarted daemon does the same.
 *
 * The directory entry's adapt_next_ns and adapt_steps say when the next step is due and how many
 * were taken: for shmctl and for tests, which wait for a step before they move on. Nothing reads
 * them to decide.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>

#include "log.h"
#include "supervisor.h"

void sup_lim_sums(const struct shm_map *m, uint32_t idx, uint64_t *over, uint64_t *adm,
                  uint64_t *den)
{
        *over = *adm = *den = 0;
        for (uint32_t r = 0; r < m->g.reader_count; r++) {
                const struct thr_lcount *c = shm_lcount(m, r, idx);
                *over += atomic_load_explicit(&c->overload, memory_order_relaxed);
                *adm += atomic_load_explicit(&c->admitted, memory_order_relaxed);
                *den += atomic_load_explicit(&c->denied, memory_order_relaxed);
        }
}

/* The next step's rate from RATE, given what the interval saw. */
static uint64_t aimd(const struct shm_adapt_spec *a, uint64_t rate, uint64_t over, uint64_t den)
{
        uint64_t r = rate;
        if (over) {
                r = (uint64_t)((__uint128_t)rate * a->dec_pct / 100);
                if (r == rate && r > 0)
                        r--; /* a small rate still moves down */
        } else if (den) {
                r = rate > UINT64_MAX - a->inc_n ? UINT64_MAX : rate + a->inc_n;
        }
        return r < a->min_n ? a->min_n : r > a->max_n ? a->max_n : r;
}

/* Aligned to multiples of the interval in arena time, so steps fall at the same instants
 * whenever the daemon started. */
static uint64_t next_after(uint64_t now, uint64_t interval)
{
        return (now / interval + 1) * interval;
}

static void step(struct supervisor *s, const struct registry *reg, uint32_t i, uint64_t now)
{
        uint32_t idx = reg->idx[i];
        const struct shm_limiter_spec *ls = &reg->cfg.limiters[reg->spec[i]];
        const struct shm_adapt_spec *a = &ls->adapt;
        struct adapt_state *st = &s->adapt[idx];
        struct thr_dir_entry *de =
            (struct thr_dir_entry *)shm_at(s->map.base, s->map.g.dir_off) + idx;
        uint64_t interval = a->interval_ns ? a->interval_ns : 1000000000ull;
        if (!st->started || st->gen != reg->gen) { /* first seen under this configuration */
                *st = (struct adapt_state){.started = true, .gen = reg->gen, .rate_n = ls->rate_n};
                sup_lim_sums(&s->map, idx, &st->overload, &st->admitted, &st->denied);
                st->next_ns = next_after(now, interval);
                atomic_store_explicit(&de->adapt_next_ns, st->next_ns, memory_order_release);
                return;
        }
        if (now < st->next_ns)
                return;
        uint64_t over, adm, den;
        sup_lim_sums(&s->map, idx, &over, &adm, &den);
        uint64_t d_over = over - st->overload, d_den = den - st->denied;
        st->overload = over;
        st->admitted = adm;
        st->denied = den;
        uint64_t rate = aimd(a, st->rate_n, d_over, d_den);
        if (rate != st->rate_n) {
                char err[256] = "";
                int rc = shm_limiter_rerate(&s->map, ls, rate, err, sizeof(err));
                if (rc == 0) {
                        log_debug("limiter '%s': adaptive rate %" PRIu64 " -> %" PRIu64
                                  " per %" PRIu64 " ns (%" PRIu64 " overloaded, %" PRIu64
                                  " denied in the interval)",
                                  ls->name, st->rate_n, rate, ls->period_ns, d_over, d_den);
                        st->rate_n = rate;
                        st->failed = false;
                } else if (!st->failed) {
                        log_error("limiter '%s': adaptive rate %" PRIu64 " not published: %s",
                                  ls->name, rate, err);
                        st->failed = true;
                }
        }
        st->next_ns = next_after(now, interval);
        atomic_store_explicit(&de->adapt_next_ns, st->next_ns, memory_order_relaxed);
        atomic_fetch_add_explicit(&de->adapt_steps, 1, memory_order_release);
}

void adapt_pass(struct supervisor *s, const struct registry *reg)
{
        struct thr_hdr *h = shm_hdr(&s->map);
        bool any = false;
        for (uint32_t i = 0; i < reg->n && !any; i++)
                any = reg->cfg.limiters[reg->spec[i]].adapt.on;
        if (!any)
                return;
        pthread_mutex_lock(&s->arena_mu);
        /* only under the configuration the arena has now: a reload since this registry was made
         * would be undone by a step made from it */
        if (atomic_load_explicit(&h->config_gen, memory_order_relaxed) == reg->gen) {
                uint64_t now = shm_now_ns(h);
                for (uint32_t i = 0; i < reg->n; i++)
                        if (reg->idx[i] < SUP_MAX_TABLES &&
                            reg->cfg.limiters[reg->spec[i]].adapt.on)
                                step(s, reg, i, now);
        }
        pthread_mutex_unlock(&s->arena_mu);
}

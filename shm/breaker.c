/*
 * breaker.c - circuit breakers' pure decisions over the state word, and the window's buckets.
 * The semantics, the word's layout and why each step is correct are at the top of breaker.h.
 */
#include "breaker.h"

#define ST_SHIFT     62
#define TIME_SHIFT   22
#define TIME_MASK    ((1ull << 40) - 1)
#define GEN_SHIFT    16
#define GEN_MASK     63u
#define CONSEC_SHIFT 8
#define CONSEC_MAX   255u
#define SUCC_SHIFT   4
#define NIB_MASK     15u

/* bucket word */
#define BK_GEN_SHIFT 58
#define BK_EP_SHIFT  40
#define BK_EP_MASK   ((1u << 18) - 1)
#define BK_CALLS_SH  20
#define BK_CNT_MAX   ((1u << 20) - 1)

bool shm_brk_params_ok(const struct thr_params *p)
{
        return p->kind == THR_KIND_BREAKER && p->k == 1 && p->t_units == 1 && p->bt_units == 0 &&
               p->flags == 0 && p->rate_n <= THR_BRK_FAILURES_MAX && p->burst <= 100 &&
               (p->rate_n || p->burst) && p->level >= 1 && p->level <= THR_BRK_PROBES_MAX &&
               p->reserved >= 1 && p->reserved <= THR_BRK_SUCCESSES_MAX &&
               p->max_reserve_units >= 1 && p->max_reserve_units <= THR_HORIZON_NS &&
               p->leases >= 1 && p->leases <= THR_HORIZON_NS && p->period_ns <= THR_HORIZON_NS &&
               (!p->burst || (p->period_ns >= SHM_BRK_BUCKETS && p->initial >= 1 &&
                              p->initial <= THR_BRK_MIN_CALLS_MAX));
}

int shm_brk_decode(uint64_t word, struct shm_brk *b)
{
        if (word == THR_TAT_FRESH)
                word = 0;
        *b = (struct shm_brk){.state = (uint32_t)(word >> ST_SHIFT),
                              .t_ns = ((word >> TIME_SHIFT) & TIME_MASK) << THR_BRK_TIME_SHIFT,
                              .gen = (uint32_t)(word >> GEN_SHIFT) & GEN_MASK,
                              .consec = (uint32_t)(word >> CONSEC_SHIFT) & CONSEC_MAX,
                              .succ = (uint32_t)(word >> SUCC_SHIFT) & NIB_MASK,
                              .inflight = (uint32_t)word & NIB_MASK};
        return b->state > SHM_BRK_HALF_OPEN ? -EBADMSG : 0;
}

uint64_t shm_brk_encode(const struct shm_brk *b)
{
        return (uint64_t)b->state << ST_SHIFT |
               ((b->t_ns >> THR_BRK_TIME_SHIFT) & TIME_MASK) << TIME_SHIFT |
               (uint64_t)(b->gen & GEN_MASK) << GEN_SHIFT |
               (uint64_t)(b->consec & CONSEC_MAX) << CONSEC_SHIFT |
               (uint64_t)(b->succ & NIB_MASK) << SUCC_SHIFT | (b->inflight & NIB_MASK);
}

/* NOW rounded up to the time field's unit: a deadline counted from it is never early. */
static uint64_t stamp(uint64_t now)
{
        uint64_t u = 1ull << THR_BRK_TIME_SHIFT;
        uint64_t t = now > UINT64_MAX - u ? now : (now + u - 1) & ~(u - 1);
        return t & (TIME_MASK << THR_BRK_TIME_SHIFT);
}

static void go(struct shm_brk *b, uint32_t state, uint64_t now)
{
        b->state = state;
        b->gen = (b->gen + 1) & GEN_MASK;
        b->succ = 0;
        b->inflight = 0;
        b->t_ns = stamp(now);
        if (state == SHM_BRK_CLOSED)
                b->consec = 0;
}

bool shm_brk_settle(const struct shm_brk_cfg *c, struct shm_brk *b, uint64_t now)
{
        bool moved = false;
        if (b->state == SHM_BRK_OPEN && now >= b->t_ns && now - b->t_ns >= c->cooldown_ns) {
                b->state = SHM_BRK_HALF_OPEN;
                b->gen = (b->gen + 1) & GEN_MASK;
                b->succ = b->inflight = 0;
                moved = true;
        }
        if (b->state == SHM_BRK_HALF_OPEN && b->inflight && now >= b->t_ns &&
            now - b->t_ns >= c->probe_timeout_ns) {
                b->gen = (b->gen + 1) & GEN_MASK; /* their late reports are ignored */
                b->inflight = 0;
                moved = true;
        }
        return moved;
}

uint64_t shm_brk_retry_ns(const struct shm_brk_cfg *c, const struct shm_brk *b, uint64_t now)
{
        uint64_t until;
        if (b->state == SHM_BRK_OPEN)
                until = b->t_ns + c->cooldown_ns;
        else if (b->state == SHM_BRK_HALF_OPEN && b->inflight >= c->probes)
                until = b->t_ns + c->probe_timeout_ns;
        else
                return 0;
        /* a time field ahead of NOW (rounded up, or rewritten) still gives a finite answer */
        return until > now ? until - now : 1;
}

int shm_brk_allow(const struct shm_brk_cfg *c, uint64_t word, uint64_t now, uint64_t *next,
                  uint32_t *gen, bool *probe, uint64_t *retry_ns)
{
        struct shm_brk b;
        *next = word;
        *probe = false;
        *retry_ns = 0;
        if (shm_brk_decode(word, &b) < 0)
                return -EBADMSG;
        shm_brk_settle(c, &b, now);
        *gen = b.gen;
        if (b.state == SHM_BRK_CLOSED)
                return 0; /* nothing to write: a closed breaker's go-ahead is one load */
        if (b.state == SHM_BRK_OPEN || b.inflight >= c->probes) {
                *retry_ns = shm_brk_retry_ns(c, &b, now);
                return -EAGAIN;
        }
        b.inflight++;
        b.t_ns = stamp(now);
        *probe = true;
        *next = shm_brk_encode(&b);
        return 0;
}

bool shm_brk_counts(const struct shm_brk_cfg *c, uint64_t word, uint64_t now, uint32_t gen,
                    bool probe, uint32_t outcome)
{
        struct shm_brk b;
        if (shm_brk_decode(word, &b) < 0)
                return false;
        shm_brk_settle(c, &b, now);
        return b.state == SHM_BRK_CLOSED && !probe && b.gen == gen &&
               (outcome == SHM_BRK_OUT_SUCCESS || outcome == SHM_BRK_OUT_FAILURE);
}

/* A failure (or success) reported in a closed period: the trip rules. */
static void closed_report(const struct shm_brk_cfg *c, struct shm_brk *b, uint64_t now,
                          uint32_t outcome, uint64_t calls, uint64_t fails)
{
        if (outcome == SHM_BRK_OUT_SUCCESS) {
                b->consec = 0;
                /* the last use, for idleness (kind.c); never written without an idle_ttl */
                if (c->idle_ttl_ns && (now < b->t_ns || now - b->t_ns >= c->idle_ttl_ns / 8))
                        b->t_ns = stamp(now);
                return;
        }
        if (outcome != SHM_BRK_OUT_FAILURE)
                return;
        if (b->consec < CONSEC_MAX)
                b->consec++;
        b->t_ns = stamp(now);
        bool trip = c->failures && b->consec >= c->failures;
        if (c->rate && calls >= c->min_calls && fails * 100 >= (uint64_t)c->rate * calls)
                trip = true;
        if (trip)
                go(b, SHM_BRK_OPEN, now);
}

int shm_brk_report(const struct shm_brk_cfg *c, uint64_t word, uint64_t now, uint32_t gen,
                   bool probe, uint32_t outcome, uint64_t calls, uint64_t fails, uint64_t *next)
{
        struct shm_brk b;
        *next = word;
        if (shm_brk_decode(word, &b) < 0)
                return -EBADMSG;
        shm_brk_settle(c, &b, now);
        if (b.gen != gen)
                return SHM_BRK_IGNORED;
        if (b.state == SHM_BRK_CLOSED && !probe) {
                closed_report(c, &b, now, outcome, calls, fails);
        } else if (b.state == SHM_BRK_HALF_OPEN && probe && b.inflight) {
                b.inflight--;
                if (outcome == SHM_BRK_OUT_FAILURE) {
                        if (b.consec < CONSEC_MAX)
                                b.consec++;
                        go(&b, SHM_BRK_OPEN, now);
                } else if (outcome == SHM_BRK_OUT_SUCCESS && ++b.succ >= c->successes) {
                        go(&b, SHM_BRK_CLOSED, now);
                }
        } else {
                return SHM_BRK_IGNORED;
        }
        *next = shm_brk_encode(&b);
        return SHM_BRK_OK;
}

/* ---------------------------------------------------------------- the window */

static uint64_t slice_ns(const struct shm_brk_cfg *c)
{
        uint64_t s = (c->window_ns + SHM_BRK_BUCKETS - 1) / SHM_BRK_BUCKETS;
        return s ? s : 1;
}

void shm_brk_window_add(const struct shm_brk_cfg *c, _Atomic uint64_t *bk, uint32_t gen,
                        uint64_t now, bool failed, const _Atomic uint64_t *state)
{
        uint64_t slice = now / slice_ns(c);
        _Atomic uint64_t *w = &bk[slice % SHM_BRK_BUCKETS];
        uint64_t head = (uint64_t)(gen & GEN_MASK) << BK_GEN_SHIFT | (slice & BK_EP_MASK)
                                                                         << BK_EP_SHIFT;
        uint64_t old = atomic_load_explicit(w, memory_order_relaxed);
        for (;;) {
                uint64_t calls = 0, fails = 0;
                /* only while the breaker is still in GEN: an add preempted across the end of
                 * its period would otherwise reset a bucket the next period counts in (it did: a
                 * report stalled across a trip and a close erased the new period's calls in its
                 * slice). Checked before each CAS; what is left is the instant between the two,
                 * as for a clock read that lags (the rate is approximate at that scale) */
                struct shm_brk now_b;
                if (state && (shm_brk_decode(atomic_load_explicit(state, memory_order_acquire),
                                             &now_b) < 0 ||
                              now_b.gen != (gen & GEN_MASK)))
                        return;
                if ((old & ~((1ull << BK_EP_SHIFT) - 1)) == head) {
                        calls = (old >> BK_CALLS_SH) & BK_CNT_MAX;
                        fails = old & BK_CNT_MAX;
                }
                if (calls < BK_CNT_MAX && fails < BK_CNT_MAX) {
                        calls++;
                        fails += failed;
                }
                uint64_t nw = head | calls << BK_CALLS_SH | fails;
                /* relaxed: the counts order nothing; the state word's CAS that reads the sum
                 * comes after in this thread, and a concurrent report's count may be missed by
                 * one sum and seen by the next (the rate is judged at each failure) */
                if (atomic_compare_exchange_weak_explicit(w, &old, nw, memory_order_relaxed,
                                                          memory_order_relaxed))
                        return;
        }
}

void shm_brk_window_sum(const struct shm_brk_cfg *c, const _Atomic uint64_t *bk, uint32_t gen,
                        uint64_t now, uint64_t *calls, uint64_t *fails)
{
        uint64_t cur = (now / slice_ns(c)) & BK_EP_MASK;
        *calls = *fails = 0;
        for (uint32_t i = 0; i < SHM_BRK_BUCKETS; i++) {
                uint64_t w = atomic_load_explicit(&bk[i], memory_order_relaxed);
                uint64_t ep = (w >> BK_EP_SHIFT) & BK_EP_MASK;
                if ((w >> BK_GEN_SHIFT) != (gen & GEN_MASK) || ((cur - ep) & BK_EP_MASK) >= 8 ||
                    ep % SHM_BRK_BUCKETS != i)
                        continue;
                uint64_t nc = (w >> BK_CALLS_SH) & BK_CNT_MAX, nf = w & BK_CNT_MAX;
                *calls += nc;
                *fails += nf < nc ? nf : nc; /* a rewritten word: never more failures than calls */
        }
}

/* ---------------------------------------------------------------- kind.c's questions */

bool shm_brk_pinned(const struct thr_params *p, uint64_t word, uint64_t now)
{
        struct shm_brk b;
        if (shm_brk_decode(word, &b) < 0)
                return false; /* corrupt: dropping it is the repair */
        uint64_t quiet = p->period_ns + p->idle_ttl_ns / 8;
        return b.state != SHM_BRK_CLOSED || b.consec || now < b.t_ns || now - b.t_ns < quiet;
}

bool shm_brk_idle(const struct thr_params *p, uint64_t word, uint64_t now, uint64_t ttl)
{
        struct shm_brk b;
        if (shm_brk_decode(word, &b) < 0)
                return true;
        uint64_t quiet = (ttl > p->period_ns ? ttl : p->period_ns) + ttl / 8;
        return b.state == SHM_BRK_CLOSED && !b.consec && now >= b.t_ns && now - b.t_ns >= quiet;
}

/*
 * gcra.h - the GCRA kind: pure decision functions over one key's state word, its theoretical
 * arrival time (TAT) in units of 1/K ns. No shared memory is touched here: the caller loads the
 * state, decides with these, and publishes with its CAS (client.c). Tested alone (test_gcra.c).
 */
#ifndef THR_SHM_GCRA_H
#define THR_SHM_GCRA_H

#include <stdbool.h>
#include <stdint.h>

#include "layout.h"

/* ---------------------------------------------------------------- GCRA */

struct shm_gcra {
        bool admitted;
        uint64_t new_tat;     /* state to store if admitted (units) */
        uint64_t remaining;   /* tokens */
        uint64_t retry_units; /* 0 if admitted */
        uint64_t reset_units;
};

/*
 * shm_gcra_step - the GCRA decision for COST at NOW (units) on stored state TAT (units or
 * THR_TAT_FRESH), per DESIGN.md section 5. COST <= B is the caller's check. Pure.
 */
static inline void shm_gcra_step(const struct thr_params *p, uint64_t tat, uint64_t now,
                                 uint64_t cost, struct shm_gcra *g)
{
        if (tat == THR_TAT_FRESH)
                tat = now + (p->burst - p->initial) * p->t_units;
        uint64_t base = tat > now ? tat : now;
        uint64_t new_tat = base + cost * p->t_units;
        g->admitted = new_tat - now <= p->bt_units;
        g->new_tat = new_tat;
        g->reset_units = (g->admitted ? new_tat : base) - now;
        g->retry_units = g->admitted ? 0 : new_tat - p->bt_units - now;
        /* the divisor is never 0 in a record the checks passed; the arena is writable by every
         * client, so a rewrite after the check gets a wrong count, not SIGFPE */
        g->remaining = g->reset_units >= p->bt_units
                           ? 0
                           : (p->bt_units - g->reset_units) / (p->t_units ? p->t_units : 1);
}

/*
 * Whether a limiter's numbers keep every TAT computation inside 64 bits for the arena's life.
 * The largest value the arithmetic forms is now + 2*B*T + R: a TAT pushed by reservations to
 * now + B*T + R, plus a request of cost up to B (or a fresh key's start, <= now + B*T). now is
 * below the 20-year horizon in units (HORIZON * K). Used by shm_params_make and the validator.
 */
static inline bool shm_params_range_ok(uint64_t burst, uint64_t t_units, uint64_t reserve_units,
                                       uint64_t k)
{
        __uint128_t worst =
            2 * (__uint128_t)burst * t_units + reserve_units + (__uint128_t)THR_HORIZON_NS * k;
        return worst < (__uint128_t)THR_TAT_LIMIT;
}

/* Units of 1/K ns -> ns, rounded up (a retry after that many ns is never early). */
static inline uint64_t shm_units_to_ns(const struct thr_params *p, uint64_t u)
{
        if (p->k <= 1) /* whole-ns intervals, the usual case: no division on the hot path (0 only
                        * in a record rewritten after its check) */
                return u;
        return u / p->k + (u % p->k != 0);
}

#endif

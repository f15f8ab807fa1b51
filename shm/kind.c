/*
 * kind.c - the kind-neutral table's questions (kind.h), answered by each kind.
 */
#include <string.h>

#include "breaker.h"
#include "budget.h"
#include "compose.h"
#include "kind.h"
#include "sem.h"
#include "serial.h"
#include "window.h"

/* A serialized key with a holder or waiters: it may not go (serial.h). */
static bool pinned(const struct thr_params *p, const void *aux)
{
        return (p->flags & THR_PARAM_SERIALIZE) && shm_serial_pinned(aux);
}

uint64_t shm_kind_fresh(const struct thr_params *p, void *aux, uint64_t start, uint64_t now,
                        uint64_t floor)
{
        if (p && p->kind == THR_KIND_BREAKER) {
                /* closed, no failures, an empty window (an evicted key held nothing: breaker.h) */
                memset(aux, 0, THR_BRK_AUX);
                return 0;
        }
        if (p && p->kind == THR_KIND_BUDGET) {
                /* a new key has the initial balance (an evicted one had it too: budget.h) */
                memset(aux, 0, THR_BUDGET_HDR);
                return p->initial;
        }
        if (p && p->kind == THR_KIND_SEMAPHORE) {
                /* nothing held: an evicted key owed nothing, so it starts empty; the state word is
                 * the time of its last change (idleness) */
                shm_sem_fresh(p, aux);
                return now < THR_TAT_LIMIT ? now : 0;
        }
        if (p && p->kind == THR_KIND_WINDOW)
                return shm_window_fresh(p, aux,
                                        floor && floor - 1 + p->period_ns > now ? floor : 0);
        /* GCRA: a key evicted for room may come back: never below its debt */
        if (floor > now && (start == THR_TAT_FRESH || start < floor))
                return floor;
        return start;
}

uint64_t shm_kind_debt(const struct thr_params *p, const void *aux, uint64_t state, uint64_t now)
{
        if (shm_is_mark(state))
                return UINT64_MAX; /* a composed call holds it (compose.h): never a victim */
        if (p && p->kind == THR_KIND_SEMAPHORE)
                return shm_sem_pinned(p, aux) ? UINT64_MAX : 0;
        if (p && p->kind == THR_KIND_BUDGET)
                return shm_budget_pinned(p, state) ? UINT64_MAX : 0;
        if (p && p->kind == THR_KIND_BREAKER)
                return shm_brk_pinned(p, state, now) ? UINT64_MAX : 0;
        if (p && p->kind == THR_KIND_WINDOW)
                return pinned(p, aux) ? UINT64_MAX
                                      : shm_window_debt(p, shm_window_log((void *)aux), state, now);
        return state >= THR_TAT_LIMIT || state <= now ? 0 : state - now;
}

uint64_t shm_kind_floor_of(const struct thr_params *p, const void *aux, uint64_t state)
{
        if (p && (p->kind == THR_KIND_SEMAPHORE || p->kind == THR_KIND_BUDGET ||
                  p->kind == THR_KIND_BREAKER))
                return 0; /* an idle semaphore key holds nothing, a budget key evicted had its
                           * initial balance: evicting either leaves no debt */
        if (p && p->kind == THR_KIND_WINDOW)
                return shm_window_floor_of(p, shm_window_log((void *)aux), state);
        return state == THR_TAT_FRESH ? 0 : state;
}

bool shm_kind_idle(const struct thr_params *p, const void *aux, uint64_t state, uint64_t now,
                   uint64_t ttl)
{
        if (shm_is_mark(state))
                return false;
        if (p->kind == THR_KIND_SEMAPHORE)
                return !shm_sem_pinned(p, aux) && now >= ttl && state <= now - ttl;
        if (p->kind == THR_KIND_BREAKER)
                return shm_brk_idle(p, state, now, ttl);
        if (p->kind == THR_KIND_BUDGET) /* no time of last use: its balance is the whole state */
                return !shm_budget_pinned(p, state);
        if (p->kind == THR_KIND_WINDOW)
                return !pinned(p, aux) &&
                       shm_window_idle(p, shm_window_log((void *)aux), state, now, ttl);
        return state == THR_TAT_FRESH || (now >= ttl && state <= now - ttl);
}

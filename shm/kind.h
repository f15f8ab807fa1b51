/*
 * kind.h - what the key table and the daemon need to know of a limiter kind, without interpreting
 * its state: a new key's state (and its aux storage), how far a key's hold reaches into the future
 * (its debt, for on_full = evict and the shard's floor), and whether it is idle (the daemon's
 * eviction). The decisions themselves are the kinds' (gcra.h, window.h), made by client.c.
 *
 * Times are in the limiter's units: 1/K ns for GCRA, ns for a window (K = 1). A kind's state word
 * stays below THR_TAT_FREE: the table's two top values mark retired and reclaimed slots. Nothing
 * here trusts a state or a log word to be in range: it may only make a slot look more or less idle.
 */
#ifndef THR_SHM_KIND_H
#define THR_SHM_KIND_H

#include <stdbool.h>
#include <stdint.h>

#include "layout.h"

/* A kind's name as the config spells it ("unknown" for none). */
static inline const char *shm_kind_name(uint32_t kind)
{
        return kind == THR_KIND_GCRA        ? "gcra"
               : kind == THR_KIND_WINDOW    ? "window"
               : kind == THR_KIND_SEMAPHORE ? "semaphore"
               : kind == THR_KIND_BUDGET    ? "budget"
               : kind == THR_KIND_BREAKER   ? "breaker"
                                            : "unknown";
}

/* Slot S's aux storage in table TB (geometry checked by the caller) based at BASE, or NULL. */
static inline void *shm_slot_aux(void *base, const struct thr_table *tb, const struct thr_slot *s)
{
        if (!tb->aux_stride)
                return NULL;
        const struct thr_slot *s0 = (const struct thr_slot *)((char *)base + tb->slots_off);
        uint64_t nslots = (uint64_t)tb->nshards * tb->shard_slots;
        return (char *)base + tb->slots_off + nslots * THR_SLOT_SIZE +
               (uint64_t)(s - s0) * tb->aux_stride;
}

/*
 * shm_kind_fresh - the state of a key created at NOW: GCRA's START (computed by the caller, or
 * THR_TAT_FRESH), a window's empty log; either raised to the shard's FLOOR when an eviction for
 * room left one (0 if none). Writes AUX (only for a slot nobody else reads yet).
 */
uint64_t shm_kind_fresh(const struct thr_params *p, void *aux, uint64_t start, uint64_t now,
                        uint64_t floor);

/* How far the key's hold on the future reaches at NOW (0: none): what on_full = evict ranks by.
 * UINT64_MAX: the key may not be evicted (a serialized key with a holder or waiters). */
uint64_t shm_kind_debt(const struct thr_params *p, const void *aux, uint64_t state, uint64_t now);

/* The floor an eviction for room of this key leaves its shard (0: none). */
uint64_t shm_kind_floor_of(const struct thr_params *p, const void *aux, uint64_t state);

/* Whether the key has held nothing for TTL at NOW: the daemon may evict it. */
bool shm_kind_idle(const struct thr_params *p, const void *aux, uint64_t state, uint64_t now,
                   uint64_t ttl);

#endif

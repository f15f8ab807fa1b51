/*
 * table_lookup.h - the key table's lookup, inline because it is the hot path (measured: the call
 * across files cost about 10% of a try's instructions). The argument for why a lock-free lookup
 * is correct is at the top of table.c; the slot lifecycle is in layout.h.
 */
#ifndef THR_SHM_TABLE_LOOKUP_H
#define THR_SHM_TABLE_LOOKUP_H

#include <stdbool.h>
#include <string.h>

#include "layout.h"

struct shm_probe {
        struct thr_shard *shard;
        struct thr_slot *slots; /* first slot of the shard */
        uint32_t n;             /* slots in the shard */
        uint32_t home;
        uint32_t tag;
};

static inline void shm_probe_init(void *base, const struct thr_table *tb, uint64_t h,
                                  struct shm_probe *p)
{
        uint32_t hi = (uint32_t)(h >> 32);
        uint32_t shard = hi & (tb->nshards - 1);
        p->n = tb->shard_slots;
        p->shard = (struct thr_shard *)shm_at(base, tb->shards_off) + shard;
        p->slots = (struct thr_slot *)shm_at(base, tb->slots_off) + (uint64_t)shard * p->n;
        p->home = (uint32_t)(((uint64_t)hi * p->n) >> 32); /* multiply-shift range reduction */
        p->tag = (uint32_t)h;
}

/*
 * How many slots from P's home a lookup probes at most: the home's reach + 1 (table.c: every
 * live key whose home it is lies within its reach), or the whole shard for THR_REACH_ANY. A reach
 * read lower than the truth (an insert racing this lookup) only makes the lookup miss a key being
 * inserted, which the insert path, under the lock, then finds (as a lookup that sees its slot
 * still BUSY does). Relaxed: the inserter stores the reach before its release store of the key's
 * meta, so a reader that has seen the key (an acquire load of that meta, in this call or an
 * earlier one) reads that reach or a later one (write-read coherence); it never loses a key it
 * has found before.
 */
static inline uint32_t shm_probe_steps(const struct shm_probe *p)
{
        uint32_t reach = atomic_load_explicit(&p->slots[p->home].reach, memory_order_relaxed);
        return reach >= THR_REACH_ANY || reach >= p->n ? p->n : reach + 1;
}

static inline bool shm_slot_matches(const struct thr_slot *s, uint64_t meta, uint32_t tag,
                                    const void *key, uint32_t len)
{
        return THR_META_STATUS(meta) == THR_SLOT_LIVE && THR_META_TAG(meta) == tag &&
               s->key_len == len && memcmp(s->key, key, len) == 0;
}

/*
 * The live slot of KEY, or NULL; *META_OUT: its meta word as the match saw it, the slot's identity
 * (status, generation, tag), which a caller compares again before it trusts a later load.
 */
static inline struct thr_slot *shm_table_lookup_meta(void *base, const struct thr_table *tb,
                                                     uint64_t h, const void *key, uint32_t len,
                                                     uint64_t *meta_out)
{
        struct shm_probe p;
        shm_probe_init(base, tb, h, &p);
        uint32_t i = p.home;
        uint32_t steps = shm_probe_steps(&p);
        for (uint32_t step = 0; step < steps; step++) {
                struct thr_slot *s = p.slots + i;
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
                if (THR_META_STATUS(meta) == THR_SLOT_EMPTY)
                        return NULL;
                if (shm_slot_matches(s, meta, p.tag, key, len)) {
                        *meta_out = meta;
                        return s;
                }
                if (++i == p.n)
                        i = 0;
        }
        return NULL;
}

static inline struct thr_slot *shm_table_lookup(void *base, const struct thr_table *tb, uint64_t h,
                                                const void *key, uint32_t len)
{
        uint64_t meta;
        return shm_table_lookup_meta(base, tb, h, key, len, &meta);
}

#endif

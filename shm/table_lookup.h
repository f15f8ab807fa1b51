/*
 * table_lookup.h - the key table's lookup, inline because it is the hot path (measured: the call
 * across files cost about 10% of a try's instructions). The argument for why a lock-free lookup
 * is correct is at the top of table.c; the slot lifecycle is in layout.h.
 */
#ifndef THR_SHM_TABLE_LOOKUP_H
#define THR_SHM_TABLE_LOOKUP_H

#include <stdbool.h>
#include <string.h>

#include "keydigest.h"
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

static inline uint64_t shm_load8(const uint8_t *p)
{
        uint64_t v;
        memcpy(&v, p, 8); /* one unaligned load, no call */
        return v;
}

static inline uint32_t shm_load4(const uint8_t *p)
{
        uint32_t v;
        memcpy(&v, p, 4);
        return v;
}

/*
 * Whether the N bytes (1 to THR_KEY_INLINE) at A and B are equal: inline, without a memcmp call
 * (it cost ~20 instructions a try), by overlapping word loads that never read past either's N
 * bytes: words at 0, 8, ... and one ending at N; 4 to 7 bytes: two words of 4; fewer: first,
 * middle and last byte.
 */
static inline __attribute__((always_inline)) bool shm_key_equal(const uint8_t *a, const uint8_t *b,
                                                                uint32_t n)
{
        if (n >= 8) {
                uint64_t d = shm_load8(a + n - 8) ^ shm_load8(b + n - 8);
                for (uint32_t i = 0; i + 8 < n; i += 8)
                        d |= shm_load8(a + i) ^ shm_load8(b + i);
                return d == 0;
        }
        if (n >= 4)
                return ((shm_load4(a) ^ shm_load4(b)) |
                        (shm_load4(a + n - 4) ^ shm_load4(b + n - 4))) == 0;
        return ((a[0] ^ b[0]) | (a[n / 2] ^ b[n / 2]) | (a[n - 1] ^ b[n - 1])) == 0;
}

/* Whether slot S (meta word META) is the live slot of the key of real length LEN whose stored form
 * is KEY (keydigest.h) and whose hash tag is TAG. */
static inline bool shm_slot_matches(const struct thr_slot *s, uint64_t meta, uint32_t tag,
                                    const void *key, uint32_t len)
{
        return THR_META_STATUS(meta) == THR_SLOT_LIVE && THR_META_TAG(meta) == tag &&
               s->key_len == len && shm_key_equal(s->key, key, shm_key_stored_len(len));
}

/*
 * The live slot of the key of real length LEN (1 to THR_KEY_MAX) whose stored form is KEY and
 * whose table hash is H (shm_key_store, shm_stored_hash; for a key of up to THR_KEY_INLINE bytes
 * both are the key's own bytes), or NULL; *META_OUT: its meta word as the match saw it, the
 * slot's identity (status, generation, tag), which a caller compares again before it trusts a
 * later load.
 */
static inline __attribute__((always_inline)) struct thr_slot *
shm_table_lookup_meta(void *base, const struct thr_table *tb, uint64_t h, const void *key,
                      uint32_t len, uint64_t *meta_out)
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

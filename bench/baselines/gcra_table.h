/*
 * gcra_table.h - an open-addressing table of GCRA words for the sharded-mutex and cas-local
 * baselines: FNV-1a 64 hash (computed by the caller, outside any lock), home slot from the hash's
 * bits above the low 6 (the low 6 pick sharded-mutex's shard), linear probing, one 64-byte slot
 * per key holding its TAT (ns of CLOCK_MONOTONIC, 0: a full bucket), the full hash and the key.
 * The table does no locking: sharded-mutex calls it under its shard's mutex, cas-local from one
 * process only (its table is private), which is also why the TAT is atomic: cas-local decides
 * with a CAS on it.
 *
 * Churn (cap > 0): at most CAP keys. A new key that finds the table at CAP first sweeps GT_SWEEP
 * slots from a cursor that goes round the table, removing every key idle for ttl_ns (its TAT +
 * ttl_ns <= now: no debt for that long), then is inserted if that made room, else refused. Removal
 * is backward-shift deletion (no tombstones). This is a simple bounded policy of this benchmark,
 * not any product's: throttle's daemon sweeps in the background, nginx expires from an LRU tail.
 */
#ifndef THR_BENCH_GCRA_TABLE_H
#define THR_BENCH_GCRA_TABLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define GT_KEY_MAX 46u
#define GT_SWEEP   64u

struct gslot {
        _Atomic uint64_t tat;
        uint64_t hash;
        uint16_t len; /* 0: empty */
        char key[GT_KEY_MAX];
};
_Static_assert(sizeof(struct gslot) == 64, "one slot per cache line");

/* Eviction counters, written by the table's one writer at a time, read by the benchmark's parent.
 */
struct gcount {
        _Atomic uint64_t expired, insert_fail, live;
} __attribute__((aligned(64)));

struct gtab {
        struct gslot *s;
        uint64_t mask;   /* slots - 1, a power of two */
        uint64_t live;   /* keys in the table */
        uint64_t cap;    /* 0: no eviction (every key inserted up front); else at most CAP keys */
        uint64_t ttl_ns; /* churn: idle threshold */
        uint64_t cursor; /* churn: where the next sweep starts */
        struct gcount *cnt; /* churn only; NULL: not counted */
};

uint64_t gt_hash(const char *key, size_t len);

/* Least power of two >= 16 and >= 2 * KEYS. */
uint64_t gt_slots(uint64_t keys);

/* The slot of KEY (hash H), inserted with a full bucket if absent and there is room (churn: after
 * a sweep); NULL if not. NOW: the caller's clock, for the sweep. */
struct gslot *gt_find(struct gtab *t, const char *key, size_t len, uint64_t h, uint64_t now);

#endif

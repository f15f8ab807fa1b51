/*
 * bucket_map.h - a fixed-size open-addressing map of GCRA buckets in caller-provided memory:
 * FNV-1a hash, linear probing, load <= 1/2, the full key in one 64-byte bucket, and the GCRA
 * decision (DESIGN.md section 5) on a theoretical arrival time in ns of CLOCK_MONOTONIC with
 * T = period / rate in whole ns. The caller owns the memory and the lock: mutex_bucket.c keeps
 * one map per process in private memory behind a private mutex, nginx_zone.c one map in a shared
 * zone behind a process-shared mutex.
 *
 * Two modes. Without eviction (cap 0, every scenario but churn) every key is inserted with a full
 * bucket up front and a try is lookup + GCRA. With eviction (churn: bmap_evict_init) the map
 * holds at most CAP keys and behaves as nginx's limit_req zone (ngx_http_limit_req_lookup and
 * ngx_http_limit_req_expire): every hit moves the key to the head of an LRU queue; before a new
 * key is inserted, up to two keys at the tail that have had no debt for TTL are removed; if the
 * map is still full, the tail key is removed by force, then up to two more idle ones. nginx's
 * idle threshold is a fixed 60 s; here it is TTL, the throttle limiter's idle_ttl, so both evict
 * the same keys. Removal is backward-shift deletion (no tombstones), fixing the queue's links of
 * every bucket it moves.
 */
#ifndef THR_BENCH_BUCKET_MAP_H
#define THR_BENCH_BUCKET_MAP_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define BMAP_KEY_MAX 42u /* bucket is one cache line; bench keys are <= 24 bytes */
#define BMAP_NIL     UINT32_MAX

struct bucket {
        uint64_t tat;        /* GCRA theoretical arrival time, ns of CLOCK_MONOTONIC; 0: full */
        uint32_t prev, next; /* LRU queue (eviction mode): slots, BMAP_NIL at the ends */
        uint32_t hash;       /* high bits of the key's hash, compared before the key */
        uint16_t len;        /* 0: empty slot */
        char key[BMAP_KEY_MAX];
};
_Static_assert(sizeof(struct bucket) == 64, "one bucket per cache line");

/* Eviction counters, written under the map's lock, read without it by the benchmark's parent. */
struct bmap_counts {
        _Atomic uint64_t expired;     /* idle keys removed from the tail before an insert */
        _Atomic uint64_t forced;      /* tail keys removed because the map was full */
        _Atomic uint64_t insert_fail; /* new keys refused (no room even after that) */
        _Atomic uint64_t live;        /* keys in the map */
};

struct bucket_map {
        uint64_t mask;        /* slots - 1, slots a power of two */
        uint64_t t_ns, bt_ns; /* emission interval T and B*T, ns */
        uint64_t burst;
        uint64_t cap;        /* 0: no eviction; else at most CAP keys, LRU expiry as nginx */
        uint64_t ttl_ns;     /* a key with no debt for this long may be expired */
        uint64_t live;       /* keys in the map (eviction mode) */
        uint32_t head, tail; /* LRU queue: head most recently used */
        struct bmap_counts *cnt;
        struct bucket *b; /* mask + 1 buckets, the caller's memory, zeroed */
};

/* Slots for KEYS keys: the least power of two >= 16 and >= 2 * KEYS. */
uint64_t bmap_slots(uint64_t keys);

/* Set M's T, B*T and burst from CFG (T at least 1 ns); the slots and memory are left alone. */
void bmap_rates(struct bucket_map *m, const struct bench_cfg *cfg);

/*
 * Eviction mode: at most CAP keys, idle TTL_NS, counters into CNT (memory the caller's parent
 * can read). Call after bmap_rates, on an empty map.
 */
void bmap_evict_init(struct bucket_map *m, uint64_t cap, uint64_t ttl_ns, struct bmap_counts *cnt);

/*
 * Insert "key:<i>" for every i < KEYS, full buckets. 0, or -ENOSPC if the map is full, with the
 * key that did not fit in KEY (KEY_LEN bytes).
 */
int bmap_fill(struct bucket_map *m, uint64_t keys, char *key, size_t key_len);

/*
 * One decision on KEY at COST, under LOCK (the clock is read before it is taken): 1 admitted,
 * 0 denied, -EINVAL empty key, -ENAMETOOLONG key too long, -ERANGE cost above the burst,
 * -ENOSPC the key is new and the map is full (eviction mode: even after expiring the oldest).
 */
int bmap_try(struct bucket_map *m, pthread_mutex_t *lock, const char *key, size_t key_len,
             uint64_t cost);

#endif

/*
 * bucket_map.h - a fixed-size open-addressing map of GCRA buckets in caller-provided memory:
 * FNV-1a hash, linear probing, load <= 1/2, the full key in one 64-byte bucket, no eviction, and
 * the GCRA decision (DESIGN.md section 5) on a theoretical arrival time in ns of CLOCK_MONOTONIC
 * with T = period / rate in whole ns. The caller owns the memory and the lock: mutex_bucket.c
 * keeps one map per process in private memory behind a private mutex, nginx_zone.c one map in a
 * shared zone behind a process-shared mutex. Every key is inserted with a full bucket up front.
 */
#ifndef THR_BENCH_BUCKET_MAP_H
#define THR_BENCH_BUCKET_MAP_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define BMAP_KEY_MAX 50u /* bucket is one cache line; bench keys are <= 24 bytes */

struct bucket {
        uint64_t tat;  /* GCRA theoretical arrival time, ns of CLOCK_MONOTONIC; 0: full */
        uint32_t hash; /* high bits of the key's hash, compared before the key */
        uint16_t len;  /* 0: empty slot */
        char key[BMAP_KEY_MAX];
};
_Static_assert(sizeof(struct bucket) == 64, "one bucket per cache line");

struct bucket_map {
        uint64_t mask;        /* slots - 1, slots a power of two */
        uint64_t t_ns, bt_ns; /* emission interval T and B*T, ns */
        uint64_t burst;
        struct bucket *b; /* mask + 1 buckets, the caller's memory, zeroed */
};

/* Slots for KEYS keys: the least power of two >= 16 and >= 2 * KEYS. */
uint64_t bmap_slots(uint64_t keys);

/* Set M's T, B*T and burst from CFG (T at least 1 ns); the slots and memory are left alone. */
void bmap_rates(struct bucket_map *m, const struct bench_cfg *cfg);

/*
 * Insert "key:<i>" for every i < KEYS, full buckets. 0, or -ENOSPC if the map is full, with the
 * key that did not fit in KEY (KEY_LEN bytes).
 */
int bmap_fill(struct bucket_map *m, uint64_t keys, char *key, size_t key_len);

/*
 * One decision on KEY at COST, under LOCK (the clock is read before it is taken): 1 admitted,
 * 0 denied, -EINVAL empty key, -ENAMETOOLONG key too long, -ERANGE cost above the burst,
 * -ENOSPC the key is new and the map is full.
 */
int bmap_try(struct bucket_map *m, pthread_mutex_t *lock, const char *key, size_t key_len,
             uint64_t cost);

#endif

/*
 * mutex_bucket.c - an in-process mutex token bucket, as a backend of the scaling benchmark.
 *
 * What it models: what a single-process rate-limiting library gives (a map of token buckets in
 * the process's own memory behind one mutex). Each worker process builds its own map in attach,
 * so nothing is shared: with P processes a key admits up to P times its limit, and each process's
 * totals are its own. That is the point of the comparison: it is the "wrong totals" option, whose
 * speed shows what sharing costs (or does not) in the other backends.
 *
 * Why it is fair: the map is the open-addressed table of bucket_map.c, as in the nginx-design
 * baseline (FNV-1a,
 * linear probing, load <= 1/2, the full key in one 64-byte bucket), the decision is the same GCRA
 * on a theoretical arrival time in ns of CLOCK_MONOTONIC (DESIGN.md section 5, T = period / rate
 * in whole ns), the clock is read before the lock, and every key is inserted with a full bucket
 * in attach (untimed). Only the memory (private, malloc) and the mutex (PTHREAD_PROCESS_PRIVATE,
 * never contended across processes) differ from nginx_zone.c.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bucket_map.h"

/* Parameters, made in setup and inherited by the workers: RATES has no slots nor memory. */
struct params {
        uint64_t keys;
        struct bucket_map rates;
};

/* One process's map. */
struct map {
        pthread_mutex_t lock; /* guards every bucket */
        struct bucket_map map;
};

/* ---------------------------------------------------------------- internals */

static void map_free(struct map *m)
{
        pthread_mutex_destroy(&m->lock);
        free(m->map.b);
        free(m);
}

/* Allocate (pre-faulted) and insert "key:<i>" for every i, full buckets. */
static struct map *map_new(const struct params *p)
{
        uint64_t slots = bmap_slots(p->keys);
        struct map *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        m->map = p->rates;
        m->map.mask = slots - 1;
        pthread_mutex_init(&m->lock, NULL);
        m->map.b = aligned_alloc(64, slots * sizeof(struct bucket));
        if (!m->map.b) {
                map_free(m);
                return NULL;
        }
        memset(m->map.b, 0, slots * sizeof(struct bucket));
        char key[32];
        bmap_fill(&m->map, p->keys, key, sizeof(key));
        return m;
}

/* ---------------------------------------------------------------- backend */

static void *ml_setup(struct bench_cfg *cfg)
{
        struct params *p = malloc(sizeof(*p));
        if (!p) {
                snprintf(cfg->err, sizeof(cfg->err), "out of memory");
                return NULL;
        }
        *p = (struct params){.keys = cfg->keys};
        bmap_rates(&p->rates, cfg);
        return p;
}

/* Each process its own map: nothing shared. */
static void *ml_attach(void *state)
{
        return map_new(state);
}

static int ml_try(void *handle, uint64_t key_index, const char *key, size_t key_len, uint64_t cost)
{
        struct map *m = handle;
        (void)key_index;
        return bmap_try(&m->map, &m->lock, key, key_len, cost);
}

static void ml_detach(void *handle)
{
        if (handle)
                map_free(handle);
}

static void ml_teardown(void *state)
{
        free(state);
}

const struct bench_backend bench_mutex_local = {
    .name = "mutex-local",
    .what = "in-process mutex token bucket (GCRA), one private map per process: totals are per "
            "process, NOT shared",
    .setup = ml_setup,
    .attach = ml_attach,
    .try_key = ml_try,
    .detach = ml_detach,
    .teardown = ml_teardown,
};

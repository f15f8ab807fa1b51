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
 *
 * Churn (cfg->idle_ttl_ns > 0): each process's map holds at most cfg->keys keys, starts empty and
 * evicts as the nginx baseline does (bucket_map.h: LRU queue, idle keys expired before an insert,
 * the oldest dropped when full). Its counters go to its own line of a shared array made in setup,
 * so the parent can sum them between samples without a process touching another's line.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend.h"
#include "bucket_map.h"

#define COUNT_SLOTS 256u /* churn: one counter line per attached process (reused cyclically) */

/* One process's counters, on its own cache line. */
struct pcounts {
        struct bmap_counts c;
} __attribute__((aligned(64)));

/* Shared between the parent and the workers (churn only). */
struct shared {
        _Atomic uint64_t next; /* the next counter line to hand out */
        struct pcounts line[COUNT_SLOTS];
};

/* Parameters, made in setup and inherited by the workers: RATES has no slots nor memory. */
struct params {
        uint64_t keys;
        uint64_t ttl_ns; /* churn: > 0 */
        struct bucket_map rates;
        struct shared *sh; /* churn: MAP_SHARED, else NULL */
};

/* One process's map. */
struct map {
        pthread_mutex_t lock; /* guards every bucket */
        struct bucket_map map;
        struct bmap_counts *cnt; /* churn: this process's line */
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
        if (p->sh) {
                uint64_t n = atomic_fetch_add_explicit(&p->sh->next, 1, memory_order_relaxed);
                m->cnt = &p->sh->line[n % COUNT_SLOTS].c;
                bmap_evict_init(&m->map, p->keys, p->ttl_ns, m->cnt);
                return m;
        }
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
        *p = (struct params){.keys = cfg->keys, .ttl_ns = cfg->idle_ttl_ns};
        bmap_rates(&p->rates, cfg);
        if (cfg->idle_ttl_ns) {
                p->sh = mmap(NULL, sizeof(*p->sh), PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
                if (p->sh == MAP_FAILED) {
                        snprintf(cfg->err, sizeof(cfg->err), "mutex-local: mmap: %s",
                                 strerror(errno));
                        free(p);
                        return NULL;
                }
        }
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
        struct map *m = handle;
        if (!m)
                return;
        if (m->cnt) /* its keys go with it */
                atomic_store_explicit(&m->cnt->live, 0, memory_order_relaxed);
        map_free(m);
}

static void ml_teardown(void *state)
{
        struct params *p = state;
        if (p && p->sh)
                munmap(p->sh, sizeof(*p->sh));
        free(p);
}

/* Sums over every process's line (live: of the processes attached now). */
static int ml_evictions(void *state, struct bench_evictions *out)
{
        const struct params *p = state;
        if (!p->sh)
                return -ENOTSUP;
        *out = (struct bench_evictions){.has = BENCH_EV_IDLE | BENCH_EV_FULL | BENCH_EV_FAIL |
                                               BENCH_EV_LIVE};
        for (unsigned i = 0; i < COUNT_SLOTS; i++) {
                const struct bmap_counts *c = &p->sh->line[i].c;
                out->idle += atomic_load_explicit(&c->expired, memory_order_relaxed);
                out->full += atomic_load_explicit(&c->forced, memory_order_relaxed);
                out->insert_fail += atomic_load_explicit(&c->insert_fail, memory_order_relaxed);
                out->live += atomic_load_explicit(&c->live, memory_order_relaxed);
        }
        return 0;
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
    .evictions = ml_evictions,
};

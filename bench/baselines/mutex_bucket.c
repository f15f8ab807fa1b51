/*
 * mutex_bucket.c - an in-process mutex token bucket, as a backend of the scaling benchmark.
 *
 * What it models: what a single-process rate-limiting library gives (a map of token buckets in
 * the process's own memory behind one mutex). Each worker process builds its own map in attach,
 * so nothing is shared: with P processes a key admits up to P times its limit, and each process's
 * totals are its own. That is the point of the comparison: it is the "wrong totals" option, whose
 * speed shows what sharing costs (or does not) in the other backends.
 *
 * Why it is fair: the map is the same open-addressed table as the nginx-design baseline (FNV-1a,
 * linear probing, load <= 1/2, the full key in one 64-byte bucket), the decision is the same GCRA
 * on a theoretical arrival time in ns of CLOCK_MONOTONIC (DESIGN.md section 5, T = period / rate
 * in whole ns), the clock is read before the lock, and every key is inserted with a full bucket
 * in attach (untimed). Only the memory (private, malloc) and the mutex (PTHREAD_PROCESS_PRIVATE,
 * never contended across processes) differ from nginx_zone.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"

#define KEY_MAX 50u /* bucket is one cache line; bench keys are <= 24 bytes */

struct bucket {
        uint64_t tat;  /* GCRA theoretical arrival time, ns of CLOCK_MONOTONIC; 0: full */
        uint32_t hash; /* high bits of the key's hash, compared before the key */
        uint16_t len;  /* 0: empty slot */
        char key[KEY_MAX];
};
_Static_assert(sizeof(struct bucket) == 64, "one bucket per cache line");

/* Parameters, made in setup and inherited by the workers. */
struct params {
        uint64_t keys, t_ns, bt_ns, burst;
};

/* One process's map. */
struct map {
        pthread_mutex_t lock; /* guards every bucket */
        uint64_t mask;        /* slots - 1, slots a power of two */
        uint64_t t_ns, bt_ns, burst;
        struct bucket *b;
};

/* ---------------------------------------------------------------- internals */

static uint64_t fnv1a(const char *key, size_t len)
{
        uint64_t h = 14695981039346656037ull;
        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
        return h;
}

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The bucket of KEY, inserted (full) if absent; NULL if the table is full. Under the lock. */
static struct bucket *map_find(struct map *m, const char *key, size_t len)
{
        uint64_t h = fnv1a(key, len);
        uint32_t tag = (uint32_t)(h >> 32);
        for (uint64_t n = 0, i = h & m->mask; n <= m->mask; n++, i = (i + 1) & m->mask) {
                struct bucket *b = &m->b[i];
                if (b->len == 0) {
                        *b = (struct bucket){.hash = tag, .len = (uint16_t)len};
                        memcpy(b->key, key, len);
                        return b;
                }
                if (b->hash == tag && b->len == len && memcmp(b->key, key, len) == 0)
                        return b;
        }
        return NULL;
}

/* GCRA on one bucket (DESIGN.md 5): 1 admitted (TAT advanced), 0 denied (nothing written). */
static int gcra(struct bucket *b, uint64_t now, uint64_t cost, uint64_t t_ns, uint64_t bt_ns)
{
        uint64_t tat = b->tat > now ? b->tat : now;
        uint64_t new_tat = tat + cost * t_ns;
        if (new_tat - now > bt_ns)
                return 0;
        if (cost)
                b->tat = new_tat; /* a peek (cost 0) changes nothing */
        return 1;
}

static void map_free(struct map *m)
{
        pthread_mutex_destroy(&m->lock);
        free(m->b);
        free(m);
}

/* Allocate (pre-faulted) and insert "key:<i>" for every i, full buckets. */
static struct map *map_new(const struct params *p)
{
        uint64_t slots = 16;
        while (slots < 2 * p->keys)
                slots <<= 1;
        struct map *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        *m = (struct map){.mask = slots - 1, .t_ns = p->t_ns, .bt_ns = p->bt_ns, .burst = p->burst};
        pthread_mutex_init(&m->lock, NULL);
        m->b = aligned_alloc(64, slots * sizeof(struct bucket));
        if (!m->b) {
                map_free(m);
                return NULL;
        }
        memset(m->b, 0, slots * sizeof(struct bucket));
        char key[32];
        for (uint64_t i = 0; i < p->keys; i++) {
                int n = snprintf(key, sizeof(key), "key:%" PRIu64, i);
                map_find(m, key, (size_t)n);
        }
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
        p->keys = cfg->keys;
        p->t_ns = (cfg->period_ns / cfg->rate_n) ? cfg->period_ns / cfg->rate_n : 1;
        p->bt_ns = p->t_ns * cfg->burst;
        p->burst = cfg->burst;
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
        if (key_len == 0)
                return -EINVAL;
        if (key_len > KEY_MAX)
                return -ENAMETOOLONG;
        if (cost > m->burst)
                return -ERANGE;
        uint64_t now = now_ns();
        int rc = -ENOSPC;
        pthread_mutex_lock(&m->lock);
        struct bucket *b = map_find(m, key, key_len);
        if (b)
                rc = gcra(b, now, cost, m->t_ns, m->bt_ns);
        pthread_mutex_unlock(&m->lock);
        return rc;
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

/*
 * sharded_mutex.c - backend "sharded-mutex": the obvious fix of nginx's one lock, 64 locks.
 *
 * What it models: one shared mapping (made before the workers fork) holding 64 shards, each a
 * robust process-shared pthread mutex (PTHREAD_MUTEX_ROBUST + PTHREAD_PROCESS_SHARED, the normal
 * kind: futex, no spinning) over its own open-addressing table of GCRA words (gcra_table.h). A
 * decision is: the key's FNV-1a hash and CLOCK_MONOTONIC read outside any lock (as throttle reads
 * its clock per request), shard = hash % 64, lock that shard, probe its table (full key
 * compared), GCRA on the key's TAT, unlock. Same GCRA semantics as every backend (DESIGN.md
 * section 5, T = period / rate in whole ns), so its admitted counts compare exactly. A lock
 * returned with EOWNERDEAD (its holder died) is made consistent with pthread_mutex_consistent and
 * used: a TAT is one 8-byte store, so a dead holder leaves at worst one half-inserted key or a
 * half-moved run behind, which this benchmark (that kills nobody) accepts; ENOTRECOVERABLE is an
 * error (-EIO).
 *
 * Sizing: each shard has the least power of two of slots >= 2 * (k + k/8 + 16), k = the keys per
 * shard on average, so a shard's share of a uniform hash stays under half full. Setup inserts
 * every key with a full bucket.
 *
 * Churn (cfg->idle_ttl_ns > 0): each shard holds at most k = ceil(cfg->keys / 64) keys (so at
 * most cfg->keys + 63 in all, and a shard the hash favours is full before the others), starts
 * empty, and a new key meeting a full shard first sweeps 64 slots of that shard for keys idle for
 * idle_ttl (gcra_table.h), under the shard lock. A new key that still finds no room is denied
 * (as throttle's full table denies) and counted in insert_fail.
 *
 * What it leaves out: any lock-free reading, any background eviction, resizing, hugepages (the
 * mapping gets the MADV_HUGEPAGE hint only).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "backend.h"
#include "gcra_table.h"
#include "zone_map.h"

#define NSHARDS 64u

struct shard {
        pthread_mutex_t lock;
        struct gtab t;
        struct gcount cnt;
} __attribute__((aligned(128)));

struct szone {
        struct shard sh[NSHARDS];
        uint64_t t_ns, bt_ns, burst;
        int churn;
        int huge; /* the mapping got MAP_HUGETLB pages (as nginx-hash's zone, throttle's arena) */
        size_t size;
};

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int lock_init(pthread_mutex_t *m)
{
        pthread_mutexattr_t a;
        int rc = pthread_mutexattr_init(&a);
        if (rc == 0)
                rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        if (rc == 0)
                rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        if (rc == 0)
                rc = pthread_mutex_init(m, &a);
        pthread_mutexattr_destroy(&a);
        return -rc;
}

static int lock(pthread_mutex_t *m)
{
        int rc = pthread_mutex_lock(m);
        if (rc == EOWNERDEAD)
                rc = pthread_mutex_consistent(m);
        return rc == 0 ? 0 : -EIO;
}

static void sm_teardown(void *state)
{
        struct szone *z = state;
        if (!z)
                return;
        for (unsigned i = 0; i < NSHARDS; i++)
                pthread_mutex_destroy(&z->sh[i].lock);
        munmap(z, z->size);
}

static void *sm_setup(struct bench_cfg *cfg)
{
        uint64_t k = (cfg->keys + NSHARDS - 1) / NSHARDS;
        uint64_t per = k + k / 8 + 16;
        uint64_t slots = gt_slots(per);
        size_t head = (sizeof(struct szone) + 4095) & ~(size_t)4095;
        size_t size = head + NSHARDS * slots * sizeof(struct gslot);
        int huge = 0;
        struct szone *z = bench_zone_map(&size, cfg->backing, &huge);
        if (!z) {
                snprintf(cfg->err, sizeof(cfg->err), "sharded-mutex: mmap %zu bytes: %s", size,
                         strerror(errno));
                return NULL;
        }
        z->size = size;
        z->huge = huge;
        z->t_ns = (cfg->period_ns / cfg->rate_n) ? cfg->period_ns / cfg->rate_n : 1;
        z->bt_ns = z->t_ns * cfg->burst;
        z->burst = cfg->burst;
        z->churn = cfg->idle_ttl_ns != 0;
        struct gslot *s = (struct gslot *)((char *)z + head);
        for (unsigned i = 0; i < NSHARDS; i++) {
                struct gtab *t = &z->sh[i].t;
                t->s = s + (size_t)i * slots;
                t->mask = slots - 1;
                t->cap = z->churn ? k : 0;
                t->ttl_ns = cfg->idle_ttl_ns;
                t->cnt = z->churn ? &z->sh[i].cnt : NULL;
                int rc = lock_init(&z->sh[i].lock);
                if (rc < 0) {
                        snprintf(cfg->err, sizeof(cfg->err), "sharded-mutex: mutex: %s",
                                 strerror(-rc));
                        munmap(z, size);
                        return NULL;
                }
        }
        if (z->churn)
                return z;
        char key[32];
        for (uint64_t i = 0; i < cfg->keys; i++) {
                int n = snprintf(key, sizeof(key), "key:%" PRIu64, i);
                uint64_t h = gt_hash(key, (size_t)n);
                if (!gt_find(&z->sh[h % NSHARDS].t, key, (size_t)n, h, 0)) {
                        snprintf(cfg->err, sizeof(cfg->err), "sharded-mutex: shard full at %s",
                                 key);
                        sm_teardown(z);
                        return NULL;
                }
        }
        return z;
}

static void sm_describe(const void *state, char *out, size_t len)
{
        const struct szone *z = state;
        snprintf(out, len, "%s, zone %.1f MiB", z->huge ? "hugetlb" : "shm (4 kB pages)",
                 (double)z->size / 1048576.0);
}

static void *sm_attach(void *state)
{
        return state; /* the mapping is inherited across fork */
}

static int sm_try(void *handle, uint64_t key_index, const char *key, size_t key_len, uint64_t cost)
{
        struct szone *z = handle;
        (void)key_index;
        if (key_len == 0)
                return -EINVAL;
        if (key_len > GT_KEY_MAX)
                return -ENAMETOOLONG;
        if (cost > z->burst)
                return -ERANGE;
        uint64_t h = gt_hash(key, key_len);
        uint64_t now = now_ns();
        struct shard *sh = &z->sh[h % NSHARDS];
        if (lock(&sh->lock) < 0)
                return -EIO;
        int rc = 0; /* no room for a new key: denied, counted in insert_fail */
        struct gslot *s = gt_find(&sh->t, key, key_len, h, now);
        if (s) {
                uint64_t tat = atomic_load_explicit(&s->tat, memory_order_relaxed);
                uint64_t new_tat = (tat > now ? tat : now) + cost * z->t_ns;
                rc = new_tat - now <= z->bt_ns;
                if (rc && cost)
                        atomic_store_explicit(&s->tat, new_tat, memory_order_relaxed);
        }
        pthread_mutex_unlock(&sh->lock);
        return rc;
}

static void sm_detach(void *handle)
{
        (void)handle;
}

static int sm_evictions(void *state, struct bench_evictions *out)
{
        const struct szone *z = state;
        if (!z->churn)
                return -ENOTSUP;
        *out = (struct bench_evictions){.has = BENCH_EV_IDLE | BENCH_EV_FAIL | BENCH_EV_LIVE};
        for (unsigned i = 0; i < NSHARDS; i++) {
                const struct gcount *c = &z->sh[i].cnt;
                out->idle += atomic_load_explicit(&c->expired, memory_order_relaxed);
                out->insert_fail += atomic_load_explicit(&c->insert_fail, memory_order_relaxed);
                out->live += atomic_load_explicit(&c->live, memory_order_relaxed);
        }
        return 0;
}

const struct bench_backend bench_sharded_mutex = {
    .name = "sharded-mutex",
    .what = "64 robust process-shared mutexes, each over a shard of a shared hash table of GCRA "
            "words; per-request clock",
    .setup = sm_setup,
    .attach = sm_attach,
    .try_key = sm_try,
    .detach = sm_detach,
    .teardown = sm_teardown,
    .evictions = sm_evictions,
    .describe = sm_describe,
};

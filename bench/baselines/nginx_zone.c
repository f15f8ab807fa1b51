/*
 * nginx_zone.c - backend "nginx-hash": nginx's one-lock design (limit_req's single shared zone
 * behind one process-shared lock) over a hash table, as a backend of the scaling benchmark. It is
 * NOT nginx's limit_req: nginx keeps a red-black tree keyed by crc32, moves every key it touches
 * to the head of an LRU queue, reads a per-process clock cached once per event-loop iteration,
 * locks with its own ngx_shmtx and counts in milli-requests; none of that is here (nginx_real.c,
 * backend "nginx-real", models those). What this one isolates is the cost of the one shared lock.
 *
 * What it keeps of nginx: every key of a zone in one shared-memory zone (created before the
 * workers fork) and the whole zone guarded by one process-shared lock. A decision is: lock, look
 * the key up (a hash of the key, then the full key compared), insert it under the same lock if
 * new, decide, unlock. Every worker serialises on that one lock.
 *
 * How it is written here, compactly and honestly optimised:
 *   - the zone is one mmap(MAP_SHARED | MAP_ANONYMOUS) made in setup, before fork, so workers
 *     inherit it (as nginx workers inherit the master's zones); pre-faulted; backed by hugepages
 *     when the harness asks for them and the kernel has them (as the throttle arena is), else
 *     normal pages;
 *   - the lock is a glibc pthread mutex with PTHREAD_PROCESS_SHARED, of the adaptive kind (spins
 *     a little, then sleeps in futex), not ngx_shmtx (whose spin is longer: nginx-real has it);
 *   - nginx keys an rbtree by crc32 and keeps an LRU queue; here an open-addressed table (linear
 *     probing, load <= 1/2, one 64-byte bucket per slot holding the full key) hashed with FNV-1a,
 *     which is no slower than nginx's structure and usually faster: it favours the baseline;
 *   - the clock is read on every request (clock_gettime, vDSO), before taking the lock, so the
 *     critical section holds no syscall; nginx reads a per-process value cached per loop;
 *   - nginx keeps `excess` in milli-requests and `last` in ms. To compare admitted counts with the
 *     other backends, the state here is instead a GCRA theoretical arrival time in ns of
 *     CLOCK_MONOTONIC (DESIGN.md section 5), with T = period / rate in whole ns as the floor uses.
 * Setup inserts every key with a full bucket (untimed), so a timed try is lookup + GCRA; the zone
 * is sized for cfg->keys and nothing is evicted (nginx's LRU queue is not maintained there).
 * Churn (cfg->idle_ttl_ns > 0): the zone holds at most cfg->keys keys, starts empty, and keeps
 * nginx's LRU queue and expiry (bucket_map.h): every hit moves its key to the head, every new
 * key first expires up to two idle keys from the tail, and a full zone drops its oldest key. Its
 * counters live in the zone, for the parent to read between samples.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "backend.h"
#include "bucket_map.h"
#include "zone_map.h"

/* The zone: header then buckets, all in the shared mapping (inherited across fork at the same
 * address, so the map's pointer to the buckets holds in every worker). */
struct zone {
        pthread_mutex_t lock; /* guards everything below and every bucket */
        struct bucket_map map;
        struct bmap_counts counts; /* churn: expired, forced, insert_fail, live */
        size_t map_size;
        int huge; /* 1 if the zone got MAP_HUGETLB pages */
        _Alignas(64) struct bucket b[];
};

/* ---------------------------------------------------------------- internals */

static int lock_init(pthread_mutex_t *m)
{
        pthread_mutexattr_t a;
        int rc = pthread_mutexattr_init(&a);
        if (rc == 0)
                rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
#if defined(__GLIBC__) && defined(_GNU_SOURCE) /* an enum constant, not a macro */
        if (rc == 0)
                rc = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
        if (rc == 0)
                rc = pthread_mutex_init(m, &a);
        pthread_mutexattr_destroy(&a);
        return -rc;
}

/* Insert "key:<i>" for every i, full buckets. */
static int zone_fill(struct zone *z, uint64_t keys, struct bench_cfg *cfg)
{
        char key[32];
        int rc = bmap_fill(&z->map, keys, key, sizeof(key));
        if (rc < 0)
                snprintf(cfg->err, sizeof(cfg->err), "nginx zone full at %s", key);
        return rc;
}

/* ---------------------------------------------------------------- backend */

/* The backing the zone obtained, for the report. */
static void bench_nginx_hash_describe(const void *state, char *out, size_t len)
{
        const struct zone *z = state;
        snprintf(out, len, "%s, zone %.1f MiB", z->huge ? "hugetlb" : "shm (4 kB pages)",
                 (double)z->map_size / 1048576.0);
}

static void *ng_setup(struct bench_cfg *cfg)
{
        uint64_t slots = bmap_slots(cfg->keys);
        size_t size = sizeof(struct zone) + slots * sizeof(struct bucket);
        int huge;
        struct zone *z = bench_zone_map(&size, cfg->backing, &huge);
        if (!z) {
                snprintf(cfg->err, sizeof(cfg->err), "nginx zone: mmap %zu bytes: %s", size,
                         strerror(errno));
                return NULL;
        }
        z->map.mask = slots - 1;
        z->map.b = z->b;
        bmap_rates(&z->map, cfg);
        z->map_size = size;
        z->huge = huge;
        int rc = lock_init(&z->lock);
        if (rc < 0)
                snprintf(cfg->err, sizeof(cfg->err), "nginx zone: mutex: %s", strerror(-rc));
        else if (cfg->idle_ttl_ns)
                bmap_evict_init(&z->map, cfg->keys, cfg->idle_ttl_ns, &z->counts);
        else
                rc = zone_fill(z, cfg->keys, cfg);
        if (rc < 0) {
                munmap(z, size);
                return NULL;
        }
        return z;
}

/* The mapping is inherited across fork: the handle is the zone itself. */
static void *ng_attach(void *state)
{
        return state;
}

static int ng_try(void *handle, uint64_t key_index, const char *key, size_t key_len, uint64_t cost)
{
        struct zone *z = handle;
        (void)key_index;
        return bmap_try(&z->map, &z->lock, key, key_len, cost);
}

static void ng_detach(void *handle)
{
        (void)handle;
}

static void ng_teardown(void *state)
{
        struct zone *z = state;
        if (!z)
                return;
        pthread_mutex_destroy(&z->lock);
        munmap(z, z->map_size);
}

static int ng_evictions(void *state, struct bench_evictions *out)
{
        const struct zone *z = state;
        if (!z->map.cap)
                return -ENOTSUP;
        *out = (struct bench_evictions){
            .idle = atomic_load_explicit(&z->counts.expired, memory_order_relaxed),
            .full = atomic_load_explicit(&z->counts.forced, memory_order_relaxed),
            .insert_fail = atomic_load_explicit(&z->counts.insert_fail, memory_order_relaxed),
            .live = atomic_load_explicit(&z->counts.live, memory_order_relaxed),
            .has = BENCH_EV_IDLE | BENCH_EV_FULL | BENCH_EV_FAIL | BENCH_EV_LIVE};
        return 0;
}

const struct bench_backend bench_nginx_hash = {
    .name = "nginx-hash",
    .what = "nginx's one-lock design over a hash table, per-request clock, GCRA; not nginx's "
            "tree/LRU/cached clock",
    .setup = ng_setup,
    .attach = ng_attach,
    .try_key = ng_try,
    .detach = ng_detach,
    .teardown = ng_teardown,
    .evictions = ng_evictions,
    .describe = bench_nginx_hash_describe,
};

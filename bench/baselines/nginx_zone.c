/*
 * nginx_zone.c - the nginx `limit_req` design as a backend of the scaling benchmark.
 *
 * What it models: ngx_http_limit_req_module keeps every key of a zone in one shared-memory zone
 * (created by the master before it forks its workers) and guards the whole zone with one
 * process-shared lock (ngx_shmtx: spin, then sleep on a semaphore). A decision is: lock, look the
 * key up (a hash of the key, then the full key compared), insert it under the same lock if new,
 * compute the leaky-bucket decision, unlock. Every worker serialises on that one lock.
 *
 * How it is written here, compactly and honestly optimised:
 *   - the zone is one mmap(MAP_SHARED | MAP_ANONYMOUS) made in setup, before fork, so workers
 *     inherit it (as nginx workers inherit the master's zones); pre-faulted; backed by hugepages
 *     when the harness asks for them and the kernel has them (as the throttle arena is), else
 *     normal pages;
 *   - the lock is a pthread mutex with PTHREAD_PROCESS_SHARED, of the adaptive kind (spins a
 *     little, then sleeps in futex): the C equivalent of ngx_shmtx's spin-then-semaphore;
 *   - nginx keys an rbtree by crc32 and keeps an LRU queue; here an open-addressed table (linear
 *     probing, load <= 1/2, one 64-byte bucket per slot holding the full key) hashed with FNV-1a,
 *     which is no slower than nginx's structure and usually faster: it favours the baseline;
 *   - the clock is read before taking the lock, so the critical section holds no syscall;
 *   - nginx keeps `excess` in milli-requests and `last` in ms. To compare admitted counts with the
 *     other backends, the state here is instead a GCRA theoretical arrival time in ns of
 *     CLOCK_MONOTONIC (DESIGN.md section 5), with T = period / rate in whole ns as the floor uses.
 * Setup inserts every key with a full bucket (untimed), so a timed try is lookup + GCRA.
 * No eviction: the zone is sized for cfg->keys (nginx's LRU expiry is not modelled).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "backend.h"

#define KEY_MAX   50u                 /* bucket is one cache line; bench keys are <= 24 bytes */
#define HUGE_SIZE (2ul * 1024 * 1024) /* size multiple for MAP_HUGETLB */

struct bucket {
        uint64_t tat;  /* GCRA theoretical arrival time, ns of CLOCK_MONOTONIC; 0: full */
        uint32_t hash; /* high bits of the key's hash, compared before the key */
        uint16_t len;  /* 0: empty slot */
        char key[KEY_MAX];
};
_Static_assert(sizeof(struct bucket) == 64, "one bucket per cache line");

/* The zone: header then buckets, all in the shared mapping. */
struct zone {
        pthread_mutex_t lock; /* guards everything below and every bucket */
        uint64_t mask;        /* slots - 1, slots a power of two */
        uint64_t t_ns, bt_ns; /* emission interval T and B*T, ns */
        uint64_t burst;
        size_t map_size;
        int huge; /* 1 if the zone got MAP_HUGETLB pages */
        _Alignas(64) struct bucket b[];
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
static struct bucket *zone_find(struct zone *z, const char *key, size_t len)
{
        uint64_t h = fnv1a(key, len);
        uint32_t tag = (uint32_t)(h >> 32);
        for (uint64_t n = 0, i = h & z->mask; n <= z->mask; n++, i = (i + 1) & z->mask) {
                struct bucket *b = &z->b[i];
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

/* Hugepages unless BACKING is "shm"; else (or if the pool is short) normal pages, with the same
 * MADV_HUGEPAGE hint the throttle arena gives. *HUGE says which. */
static void *zone_map(size_t *size, const char *backing, int *huge)
{
        int prot = PROT_READ | PROT_WRITE;
        int flags = MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE;
        if (!backing || strcmp(backing, "shm") != 0) {
                size_t hs = (*size + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1);
                void *p = mmap(NULL, hs, prot, flags | MAP_HUGETLB, -1, 0);
                if (p != MAP_FAILED) {
                        *size = hs;
                        *huge = 1;
                        return p;
                }
        }
        *huge = 0;
        void *p = mmap(NULL, *size, prot, flags, -1, 0);
        if (p == MAP_FAILED)
                return NULL;
        madvise(p, *size, MADV_HUGEPAGE);
        return p;
}

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
        for (uint64_t i = 0; i < keys; i++) {
                int n = snprintf(key, sizeof(key), "key:%" PRIu64, i);
                if (!zone_find(z, key, (size_t)n)) {
                        snprintf(cfg->err, sizeof(cfg->err), "nginx zone full at %s", key);
                        return -ENOSPC;
                }
        }
        return 0;
}

/* ---------------------------------------------------------------- backend */

void bench_nginx_describe(const void *state, char *out, size_t len);

/* The backing the zone obtained, for the report (the harness declares this itself). */
void bench_nginx_describe(const void *state, char *out, size_t len)
{
        const struct zone *z = state;
        snprintf(out, len, "%s, zone %.1f MiB", z->huge ? "hugetlb" : "shm (4 kB pages)",
                 (double)z->map_size / 1048576.0);
}

static void *ng_setup(struct bench_cfg *cfg)
{
        uint64_t slots = 16;
        while (slots < 2 * cfg->keys)
                slots <<= 1;
        size_t size = sizeof(struct zone) + slots * sizeof(struct bucket);
        int huge;
        struct zone *z = zone_map(&size, cfg->backing, &huge);
        if (!z) {
                snprintf(cfg->err, sizeof(cfg->err), "nginx zone: mmap %zu bytes: %s", size,
                         strerror(errno));
                return NULL;
        }
        z->mask = slots - 1;
        z->t_ns = (cfg->period_ns / cfg->rate_n) ? cfg->period_ns / cfg->rate_n : 1;
        z->bt_ns = z->t_ns * cfg->burst;
        z->burst = cfg->burst;
        z->map_size = size;
        z->huge = huge;
        int rc = lock_init(&z->lock);
        if (rc < 0)
                snprintf(cfg->err, sizeof(cfg->err), "nginx zone: mutex: %s", strerror(-rc));
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
        if (key_len == 0)
                return -EINVAL;
        if (key_len > KEY_MAX)
                return -ENAMETOOLONG;
        if (cost > z->burst)
                return -ERANGE;
        uint64_t now = now_ns();
        int rc = -ENOSPC;
        pthread_mutex_lock(&z->lock);
        struct bucket *b = zone_find(z, key, key_len);
        if (b)
                rc = gcra(b, now, cost, z->t_ns, z->bt_ns);
        pthread_mutex_unlock(&z->lock);
        return rc;
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

const struct bench_backend bench_nginx = {
    .name = "nginx",
    .what = "nginx limit_req design: one shared zone, one process-shared mutex, hash table, GCRA",
    .setup = ng_setup,
    .attach = ng_attach,
    .try_key = ng_try,
    .detach = ng_detach,
    .teardown = ng_teardown,
};

/*
 * cas_local.c - backend "cas-local": a governor-style limiter inside one process, no shared
 * memory, to measure what throttle's shared-memory machinery costs over the same decision.
 *
 * What it models: an in-process keyed limiter as Rust's governor (or a Go/Java map of atomics)
 * does it: each process builds, at attach, its own private open-addressing table (gcra_table.h:
 * FNV-1a, linear probing, full key compared) with every key of the scenario inserted, each with an
 * atomic 64-bit GCRA TAT (ns of CLOCK_MONOTONIC, DESIGN.md section 5, T = period / rate in whole
 * ns). A decision is: hash, probe, key compare, clock_gettime, load the TAT, compute, CAS it (a
 * retry on a lost CAS; with one process per table it never loses). Nothing is shared, so there is
 * no contention and no cache line crosses processes.
 *
 * What it is not: a shared limit. Each process has its own buckets, so with N processes every key
 * admits N times what a shared limiter admits (in the scenarios here, which admit everything or
 * deny all but the first try, that shows as N first tries admitted on 'denied'). It also leaves
 * out threads (governor's map is shared by the threads of one process; here one process is one
 * thread) and any lock the map may take to insert.
 *
 * Churn (cfg->idle_ttl_ns > 0): each process's table holds at most cfg->keys keys, starts empty,
 * and a new key meeting a full table first sweeps 64 slots for keys idle for idle_ttl
 * (gcra_table.h); a new key that still finds no room is denied (as throttle's full table
 * denies) and counted in insert_fail. The counters are per process, each in its own cache line of a
 * small shared mapping made at setup, summed by the parent; `live` is the sum over the processes
 * attached.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "backend.h"
#include "gcra_table.h"

#define NCOUNT 256u /* counter slots; attach number modulo NCOUNT */

struct cstate {
        uint64_t keys, t_ns, bt_ns, burst, ttl_ns;
        _Atomic uint64_t attached; /* attach number of the next process */
        struct gcount cnt[NCOUNT];
};

struct chandle {
        const struct cstate *st;
        struct gtab t;
        size_t size;
        struct gcount *cnt;
};

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *cl_setup(struct bench_cfg *cfg)
{
        /* shared only for the counters the parent reads; decisions never touch it */
        struct cstate *st =
            mmap(NULL, sizeof(*st), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (st == MAP_FAILED) {
                snprintf(cfg->err, sizeof(cfg->err), "cas-local: mmap: %s", strerror(errno));
                return NULL;
        }
        st->keys = cfg->keys;
        st->t_ns = (cfg->period_ns / cfg->rate_n) ? cfg->period_ns / cfg->rate_n : 1;
        st->bt_ns = st->t_ns * cfg->burst;
        st->burst = cfg->burst;
        st->ttl_ns = cfg->idle_ttl_ns;
        return st;
}

/* In the worker: its own table, every key inserted unless churn. */
static void *cl_attach(void *state)
{
        struct cstate *st = state;
        struct chandle *h = calloc(1, sizeof(*h));
        if (!h)
                return NULL;
        uint64_t slots = gt_slots(st->keys);
        h->st = st;
        h->size = slots * sizeof(struct gslot);
        h->t.s = mmap(NULL, h->size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (h->t.s == MAP_FAILED) {
                free(h);
                return NULL;
        }
        madvise(h->t.s, h->size, MADV_HUGEPAGE);
        h->t.mask = slots - 1;
        if (st->ttl_ns) {
                h->cnt = &st->cnt[atomic_fetch_add(&st->attached, 1) % NCOUNT];
                h->t.cap = st->keys;
                h->t.ttl_ns = st->ttl_ns;
                h->t.cnt = h->cnt;
                return h;
        }
        char key[32];
        for (uint64_t i = 0; i < st->keys; i++) {
                int n = snprintf(key, sizeof(key), "key:%" PRIu64, i);
                if (!gt_find(&h->t, key, (size_t)n, gt_hash(key, (size_t)n), 0)) {
                        munmap(h->t.s, h->size);
                        free(h);
                        return NULL;
                }
        }
        return h;
}

static int cl_try(void *handle, uint64_t key_index, const char *key, size_t key_len, uint64_t cost)
{
        struct chandle *h = handle;
        const struct cstate *st = h->st;
        (void)key_index;
        if (key_len == 0)
                return -EINVAL;
        if (key_len > GT_KEY_MAX)
                return -ENAMETOOLONG;
        if (cost > st->burst)
                return -ERANGE;
        uint64_t hash = gt_hash(key, key_len);
        uint64_t now = now_ns();
        struct gslot *s = gt_find(&h->t, key, key_len, hash, now);
        if (!s)
                return 0; /* no room for a new key: denied, counted in insert_fail */
        uint64_t tat = atomic_load_explicit(&s->tat, memory_order_relaxed);
        for (;;) {
                uint64_t new_tat = (tat > now ? tat : now) + cost * st->t_ns;
                if (new_tat - now > st->bt_ns)
                        return 0;
                if (!cost || atomic_compare_exchange_weak_explicit(&s->tat, &tat, new_tat,
                                                                   memory_order_acq_rel,
                                                                   memory_order_relaxed))
                        return 1;
        }
}

static void cl_detach(void *handle)
{
        struct chandle *h = handle;
        if (!h)
                return;
        if (h->cnt)
                atomic_store_explicit(&h->cnt->live, 0, memory_order_relaxed);
        munmap(h->t.s, h->size);
        free(h);
}

static void cl_teardown(void *state)
{
        if (state)
                munmap(state, sizeof(struct cstate));
}

static int cl_evictions(void *state, struct bench_evictions *out)
{
        const struct cstate *st = state;
        if (!st->ttl_ns)
                return -ENOTSUP;
        *out = (struct bench_evictions){.has = BENCH_EV_IDLE | BENCH_EV_FAIL | BENCH_EV_LIVE};
        for (unsigned i = 0; i < NCOUNT; i++) {
                out->idle += atomic_load_explicit(&st->cnt[i].expired, memory_order_relaxed);
                out->insert_fail +=
                    atomic_load_explicit(&st->cnt[i].insert_fail, memory_order_relaxed);
                out->live += atomic_load_explicit(&st->cnt[i].live, memory_order_relaxed);
        }
        return 0;
}

const struct bench_backend bench_cas_local = {
    .name = "cas-local",
    .what = "governor-style private per-process map of atomic GCRA words, CAS; NOT shared: N "
            "processes admit N times a shared limit",
    .setup = cl_setup,
    .attach = cl_attach,
    .try_key = cl_try,
    .detach = cl_detach,
    .teardown = cl_teardown,
    .evictions = cl_evictions,
};

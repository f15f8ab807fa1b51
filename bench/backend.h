/*
 * backend.h - one interface for every limiter the scaling benchmark measures side by side:
 * throttle itself (GCRA, and its window kind), the CAS floor, nginx's limit_req zone as nginx runs
 * it (nginx-real) and its one-lock design over a hash table (nginx-hash), 64 sharded robust
 * mutexes, an in-process mutex token bucket, an in-process CAS map (cas-local), and Redis with the
 * usual GCRA Lua script over TCP and over a Unix socket.
 *
 * Life cycle, driven by bench_scale.c:
 *   setup(cfg)        in the parent, once per scenario: build shared state (arena, shared map,
 *                     server) for cfg->keys keys at cfg->rate_n per cfg->period_ns, burst
 *                     cfg->burst; returns an opaque state or NULL with cfg->err filled.
 *   attach(state)     in each worker process after fork (and in the parent for a 1-process
 *                     run): per-process handles (open the arena, connect to Redis...).
 *   try(handle, key_index, key, key_len, cost)
 *                     one admission decision; returns 1 admitted, 0 denied, < 0 error.
 *   detach(handle)    in the worker before it exits.
 *   teardown(state)   in the parent after all workers exited: remove files, stop servers.
 *   evictions(state, out)
 *                     optional (NULL: not reported): the backend's cumulative eviction counters,
 *                     read by the parent before and after every sample of the churn scenario.
 * A backend that cannot run here (Redis not installed) returns NULL from setup with a reason in
 * cfg->err starting with "skip:"; the harness prints it and goes on. One that knows beforehand
 * that it does not run a configuration (the window backend above 100 000 keys) also says so
 * through skip(cfg), so --callgrind does not start valgrind for it.
 *
 * Churn (cfg->idle_ttl_ns > 0): cfg->keys is then the CAPACITY (live keys at most), nothing is
 * inserted at setup, the keys are "key:<13 digits>" of ever new ids, and key_index is the id
 * modulo cfg->keys. Keys idle (no debt) for idle_ttl_ns are evicted: throttle by the eviction
 * driver (scale_churn.c) and on_full = evict; nginx-hash and mutex-local by nginx's LRU expiry
 * (bucket_map.c), nginx-real by its own copy of it (nginx_real.c); sharded-mutex and cas-local by
 * a sweep of idle keys when full (gcra_table.h); Redis by its own PX expiry; the floor does not
 * evict (its words wrap).
 * Every backend decides with the same GCRA semantics (DESIGN.md section 5) so that their
 * admitted counts can be compared (nginx-real with nginx's ms leaky bucket, equal to it up to
 * nginx's rounding; cas-local per process, not shared: see their files), and reads the same clock
 * (CLOCK_MONOTONIC) where it has one; except the window backend, throttle's other kind, given the
 * same rate and a window of min(burst, 100) units (backend_throttle.c), which admits (or denies)
 * the same tries here.
 */
#ifndef THR_BENCH_BACKEND_H
#define THR_BENCH_BACKEND_H

#include <stddef.h>
#include <stdint.h>

struct bench_cfg {
        uint64_t keys;   /* distinct keys; key i is "key:<i>" */
        uint64_t rate_n; /* tokens per period */
        uint64_t period_ns;
        uint64_t burst;
        int procs;            /* worker processes that will attach */
        const char *backing;  /* "auto", "hugetlbfs" or "shm" (shared-memory backends) */
        uint64_t idle_ttl_ns; /* 0: every key inserted at setup, no eviction; else churn (above) */
        int driver;           /* churn, throttle: run the eviction driver (0 under --callgrind) */
        char err[256];
};

/* Cumulative eviction counters of one backend (churn); a field it has not is left at 0. */
struct bench_evictions {
        uint64_t idle;        /* keys evicted for being idle (throttle: the driver's passes) */
        uint64_t full;        /* keys evicted to make room for a new one (table full) */
        uint64_t reclaimed;   /* slots made reusable after a grace period (throttle only) */
        uint64_t insert_fail; /* new keys refused: no room even after eviction */
        uint64_t live;        /* live keys now (not cumulative) */
        uint64_t passes;      /* eviction driver passes (throttle only) */
        uint64_t gp_failed;   /* of those, grace periods that failed (no membarrier) */
        uint64_t empty;       /* throttle: EMPTY slots now (the rest: live, retiring, reclaimed) */
        double miss_probe;    /* throttle: mean slots a lookup of an absent key probes, now */
        uint64_t lock_waits;  /* throttle: inserts that waited for a shard lock past the spins */
        uint64_t repairs;     /* throttle: shard locks taken over from a holder judged dead */
        unsigned has;         /* BENCH_EV_* bits: which fields the backend reports */
};
#define BENCH_EV_IDLE      1u
#define BENCH_EV_FULL      2u
#define BENCH_EV_RECLAIMED 4u
#define BENCH_EV_FAIL      8u
#define BENCH_EV_LIVE      16u
#define BENCH_EV_PASSES    32u
#define BENCH_EV_TABLE     64u  /* empty, miss_probe */
#define BENCH_EV_LOCK      128u /* lock_waits, repairs */

struct bench_backend {
        const char *name; /* short name used in tables and JSON: "throttle", "floor", ... */
        const char *what; /* one line for the report's method header */
        void *(*setup)(struct bench_cfg *cfg);
        void *(*attach)(void *state);
        int (*try_key)(void *handle, uint64_t key_index, const char *key, size_t key_len,
                       uint64_t cost);
        void (*detach)(void *handle);
        void (*teardown)(void *state);
        int (*evictions)(void *state, struct bench_evictions *out); /* may be NULL */
        /* churn under --callgrind (no driver process): one eviction pass in the calling
         * process, between batches of tries; NULL when the backend evicts by itself */
        void (*maintain)(void *state);
        /* optional: a "skip: ..." reason (also in cfg->err) when the backend does not run CFG */
        const char *(*skip)(struct bench_cfg *cfg);
        /* optional: one line on what setup got (zone size, PING round trip) for the rows' note */
        void (*describe)(const void *state, char *out, size_t len);
};

extern const struct bench_backend bench_throttle;        /* bench/backend_throttle.c */
extern const struct bench_backend bench_floor;           /* bench/backend_throttle.c */
extern const struct bench_backend bench_window;          /* bench/backend_throttle.c */
extern const struct bench_backend bench_floor_none;      /* bench/backend_throttle.c */
extern const struct bench_backend bench_floor_coarse;    /* bench/backend_throttle.c */
extern const struct bench_backend bench_floor_tsc;       /* bench/backend_throttle.c */
extern const struct bench_backend bench_throttle_coarse; /* bench/backend_throttle.c */
extern const struct bench_backend bench_throttle_tsc;    /* bench/backend_throttle.c */
extern const struct bench_backend bench_throttle_key;    /* bench/backend_throttle.c */
extern const struct bench_backend bench_nginx_hash;      /* bench/baselines/nginx_zone.c */
extern const struct bench_backend bench_nginx_real;      /* bench/baselines/nginx_real.c */
extern const struct bench_backend bench_mutex_local;     /* bench/baselines/mutex_bucket.c */
extern const struct bench_backend bench_sharded_mutex;   /* bench/baselines/sharded_mutex.c */
extern const struct bench_backend bench_cas_local;       /* bench/baselines/cas_local.c */
extern const struct bench_backend bench_redis_tcp;       /* bench/baselines/redis_gcra.c */
extern const struct bench_backend bench_redis_unix;      /* bench/baselines/redis_gcra.c */

/* A loopback TCP port that was free a moment ago (bind to port 0, read it, close), or -errno
 * (bench/baselines/redis_gcra.c: the servers the benchmarks start listen on one). */
int bench_free_port(void);

#endif

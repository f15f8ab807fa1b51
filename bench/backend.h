/*
 * backend.h - one interface for every limiter the scaling benchmark measures side by side:
 * throttle itself, the CAS floor, the nginx limit_req design (one process-shared lock over a
 * shared hash table), an in-process mutex token bucket, and Redis with the usual GCRA Lua script.
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
 * A backend that cannot run here (Redis not installed) returns NULL from setup with a reason in
 * cfg->err starting with "skip:"; the harness prints it and goes on.
 * Every backend decides with the same GCRA semantics (DESIGN.md section 5) so that their
 * admitted counts can be compared, and reads the same clock (CLOCK_MONOTONIC) where it has one.
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
        int procs;           /* worker processes that will attach */
        const char *backing; /* "auto", "hugetlbfs" or "shm" (shared-memory backends) */
        char err[256];
};

struct bench_backend {
        const char *name; /* short name used in tables and JSON: "throttle", "floor", ... */
        const char *what; /* one line for the report's method header */
        void *(*setup)(struct bench_cfg *cfg);
        void *(*attach)(void *state);
        int (*try_key)(void *handle, uint64_t key_index, const char *key, size_t key_len,
                       uint64_t cost);
        void (*detach)(void *handle);
        void (*teardown)(void *state);
};

extern const struct bench_backend bench_throttle;    /* bench/backend_throttle.c */
extern const struct bench_backend bench_floor;       /* bench/backend_throttle.c */
extern const struct bench_backend bench_nginx;       /* bench/baselines/nginx_zone.c */
extern const struct bench_backend bench_mutex_local; /* bench/baselines/mutex_bucket.c */
extern const struct bench_backend bench_redis;       /* bench/baselines/redis_gcra.c */

#endif

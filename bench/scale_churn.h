/*
 * scale_churn.h - the churn scenario's eviction side: the limiter's idle TTL, and the eviction
 * driver that does for the benchmark's throttle arena what throttled's maintenance thread does
 * (daemon/maint.c), with the counters the parent reads between samples. The key stream is in
 * scale_keys.h.
 */
#ifndef THR_BENCH_SCALE_CHURN_H
#define THR_BENCH_SCALE_CHURN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "backend.h"
#include "shm.h"

#define CHURN_TTL_NS   20000000ull /* idle_ttl of the churn limiter (and of the baselines) */
#define DRIVER_PERIOD  10u         /* ms between the eviction driver's passes */
#define DRIVER_BUDGET  65536u      /* slots per pass, at least: throttled's default scan_budget */
#define DRIVER_STALL   1000u       /* ms: throttled's default stall_ms */
#define DRIVER_BEAT_MS 1000u       /* dead readers reaped this often, as the daemon's heartbeat */

/* ---------------------------------------------------------------- the eviction driver */

/* What one pass leaves for the next: the table cursor, the last grace period completed, and
 * the pass's own grace period while it has not completed (shm_gp_pending). */
struct churn_pass {
        uint32_t cursor;
        uint64_t done;
        struct shm_gp_pending wait;
};

/*
 * One pass of throttled's maintenance (daemon/maint.c, pass()) over limiter IDX of the arena
 * mapped read-write at M: shm_table_maintain with shm_maint_budget(DRIVER_BUDGET) slots, then
 * shm_gp_start and shm_gp_scan. 0, or -errno when the grace period failed (nothing freed by it).
 */
int churn_pass(struct shm_map *m, uint32_t idx, struct churn_pass *ps);

/* Scan grace period GP (again, while PS->wait says so: daemon/maint.c does between passes).
 * 0 or -errno. */
int churn_gp_scan(struct shm_map *m, struct churn_pass *ps, uint64_t gp);

struct churn_driver_shared;

struct churn_driver {
        pid_t pid;
        struct churn_driver_shared *sh;
};

/*
 * Fork a process that attaches the arena at PATH read-write and, until churn_driver_stop, does
 * every DRIVER_PERIOD ms what throttled's maintenance pass does for limiter NAME: one
 * shm_table_maintain step of DRIVER_BUDGET slots (idle keys evicted, retired slots whose grace
 * period is done freed, runs trimmed), then shm_gp_start + shm_gp_scan, whose result frees this
 * pass's slots at a later one. 0 or -errno with ERR.
 */
int churn_driver_start(const char *path, const char *name, struct churn_driver *d, char *err,
                       size_t errlen);
void churn_driver_stop(struct churn_driver *d);
/* Passes so far, and grace periods that failed (no membarrier: nothing can be reclaimed). */
void churn_driver_stats(const struct churn_driver *d, uint64_t *passes, uint64_t *gp_failed);

/* The eviction counters of limiter NAME's table in the arena mapped at M (sums over shards). */
int churn_table_counts(const struct shm_map *m, const char *name, struct bench_evictions *out);

#endif

/*
 * reclaim.h - the daemon's half of the arena's RCU: grace periods over the reader records, dead
 * readers forced offline, and the table maintenance that evicts idle keys and reuses their slots.
 * Not compiled into libthrottle-client.
 */
#ifndef THR_SHM_RECLAIM_H
#define THR_SHM_RECLAIM_H

#include "table.h"

/*
 * shm_gp_start - start grace period *GP: bump the counter, then membarrier() so every reader's
 * online word is ordered with the scan that follows. Daemon only. Returns 0 or -errno (no
 * membarrier: nothing may be reclaimed); the header's gp_error says which (0 once they work).
 */
int shm_gp_start(struct shm_map *m, uint64_t *gp);

/* shm_membarrier_query - the membarrier commands this kernel offers (a mask), or -errno. */
int shm_membarrier_query(void);

enum shm_gp_event { SHM_GP_STALLED = 1, SHM_GP_RESUMED = 2, SHM_GP_FORCED = 3 };
typedef void (*shm_gp_report_fn)(void *ctx, uint32_t idx, const struct thr_reader *r,
                                 enum shm_gp_event ev);

struct shm_gp_result {
        uint64_t done;     /* slots retired with a tag <= done may be reused */
        uint32_t readers;  /* records owned */
        uint32_t blocking; /* alive and inside a section older than the grace period */
        uint32_t stalled;  /* of those, blocking for stall_ns or more */
        uint32_t forced;   /* dead owners forced offline by this scan */
};

/*
 * shm_gp_scan - after shm_gp_start(GP): read every reader record. Offline readers, and readers
 * whose section began after GP started, are past it; a blocker whose process is dead is forced
 * offline (see reap); a live blocker holds DONE back to its snapshot and is reported through
 * REPORT once it has blocked for STALL_NS (and again when it resumes). Writes only the records'
 * daemon line and hdr->gp_done. Returns 0 or -errno.
 *
 * It may be called again for the same GP, later, without a new shm_gp_start: a later scan is as
 * sound as the first (every online word it reads is the one a section ordered by GP's membarrier
 * left, or one stored after it), and it sees the sections that blocked the first one ended. The
 * daemon rescans a period that did not complete every millisecond or so instead of waiting a
 * whole pass for the next one (daemon/maint.c), so a retired slot is reusable about as soon as
 * the readers that might hold it have moved. A rescan can find a DONE lower than an earlier scan
 * of the same GP (a section that read the counter before the bump and went online after the
 * first scan): the earlier result stays true, as every completed period does.
 */
int shm_gp_scan(struct shm_map *m, uint64_t gp, uint64_t now_ns, uint64_t stall_ns,
                struct shm_gp_result *res, shm_gp_report_fn report, void *ctx);

/*
 * A grace period whose scan did not complete, to be scanned again (shm_gp_scan, same GP) after
 * RETRY_MS: 1 ms after the first scan, doubling up to a second. shm_gp_pending_note - what a scan
 * of GP that found DONE leaves: nothing pending once DONE reaches GP.
 */
struct shm_gp_pending {
        uint64_t gp; /* 0: none */
        uint64_t retry_ms;
};
void shm_gp_pending_note(struct shm_gp_pending *pd, uint64_t gp, uint64_t done);

/* shm_readers_reap - free the records of every dead owner, online or not. Returns how many. */
int shm_readers_reap(struct shm_map *m);

/* The grace-period tag for slots the daemon retires now (the next period to start). */
uint32_t shm_retire_tag(const struct thr_hdr *h);

struct shm_maint_args {
        uint64_t now_units; /* arena time in the limiter's units */
        uint64_t ttl_units; /* idle TTL in units; 0: no idle eviction */
        uint32_t tag;       /* grace-period tag for slots retired by this pass */
        uint64_t done;      /* last grace period this daemon saw complete (0: none yet) */
        uint64_t me;        /* the daemon's shard-lock value (shm_lock_daemon) */
        /* the time the whole pass may still spend letting waiting inserts go first between
         * segments (reclaim.c, relock), shared by its steps and decreased by each; NULL: each
         * step THR_MAINT_HANDOFF_NS on its own */
        uint64_t *handoff_left;
};

/* A maintenance segment: the daemon holds a shard's lock over about this many slots at a time
 * (each segment runs on to the slot before the next EMPTY one: reclaim.c, shard_locked). */
#define THR_MAINT_SEGMENT 128u

/* What a pass spends at most on handing the shard locks to waiting inserts (a client that
 * scribbles the shards' lock_wanted words slows a pass by this much, no more). */
#define THR_MAINT_HANDOFF_NS 2000000ull

/*
 * shm_maint_budget - the slots a pass must examine in the table GEO of a limiter whose idle TTL
 * is TTL_NS, passes PERIOD_NS apart, with the configured BUDGET: BUDGET, or more when the table
 * would otherwise take longer than half the TTL to sweep (a short TTL, a large table), so that a
 * key is evicted within about 1.5 TTL + a pass of its last use and retired slots are freed as
 * often; in whole shards, as shm_table_maintain spends it. No TTL (0): BUDGET.
 */
uint64_t shm_maint_budget(const struct thr_table *geo, uint64_t budget, uint64_t period_ns,
                          uint64_t ttl_ns);

struct shm_maint_stats {
        uint64_t scanned, live, evicted, finished, reclaimed, retiring, trimmed, repaired;
        uint32_t busy_shards; /* shards whose lock was held: eviction and trimming wait */
        uint32_t handoffs;   /* waits for a client that wanted or held the lock, before a segment */
        uint64_t handoff_ns; /* their time (capped per pass: handoff_left) */
};

/*
 * shm_table_maintain - one bounded step of the daemon's pass over the table of SNAP (checked
 * copy) in M: about BUDGET slots, whole shards from *CURSOR on. Holding the shard lock (tried as
 * A->me, never waited for; a dead holder's is taken over and the shard repaired) in segments of
 * bounded length, it makes retired slots whose grace period is done reusable, evicts live keys
 * idle past the TTL (CAS from the observed state: an admission wins), finishes evictions whose
 * evictor died, and trims reclaimed slots no live key's probe path crosses.
 * Returns true when the cursor wrapped (a whole pass over the table is complete).
 */
bool shm_table_maintain(const struct shm_map *m, const struct shm_lim_snap *snap,
                        const struct shm_maint_args *a, uint32_t *cursor, uint64_t budget,
                        struct shm_maint_stats *st);

#endif

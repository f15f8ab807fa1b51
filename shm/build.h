/*
 * build.h - what only the daemon (and the tests and tools that stand in for it) does to an arena:
 * create it from a spec, reconfigure its limiters, hold the daemon lock, sweep what a killed
 * creator left. Not compiled into libthrottle-client.
 */
#ifndef THR_SHM_BUILD_H
#define THR_SHM_BUILD_H

#include "arena.h"

/* ---------------------------------------------------------------- specs (what to build) */

struct shm_limiter_spec {
        char name[THR_NAME_MAX + 1];
        uint32_t kind;           /* enum thr_limiter_kind; 0 is GCRA */
        bool serialize;          /* window: one holder at a time per key (THR_PARAM_SERIALIZE) */
        uint64_t rate_n;         /* N tokens per ... (a window: its limit N, units per window) */
        uint64_t period_ns;      /* ... P nanoseconds (a window: its length W) */
        uint64_t burst;          /* B >= 1 (GCRA only) */
        uint64_t initial;        /* tokens of a new key, <= B (default B) */
        uint64_t max_reserve_ns; /* how far ahead reservations may reach beyond the burst */
        uint64_t capacity;       /* hard cap on live keys */
        uint32_t shards;         /* 0: chosen from capacity; else a power of two */
        uint32_t on_full;        /* enum thr_on_full: what an insert into a full table does */
        uint64_t idle_ttl_ns;    /* keys with no debt for this long are evicted; 0: never */
        uint64_t lock_wait_ns;   /* a new key's insert waits this long for a live holder of its
                                  * shard's lock, then on_full applies; 0: THR_LOCK_WAIT_NS */
        uint64_t leases;         /* semaphore: lease records per key (rate_n is its max) */
        uint64_t level;          /* semaphore: lock level, 0 to THR_SEM_LEVELS - 1 (peer.h) */
        uint64_t max_waiters;    /* semaphore: queued acquires per key at most; 0 unbounded */
        uint32_t on_queue_full;  /* semaphore: enum thr_queue_full */
        uint32_t priority_share; /* semaphore: 1 grant in this many to the oldest; 0 strict */
        uint32_t clock_read;     /* enum thr_clock_read (clock.h): GCRA only; 0 is precise */
        /* GCRA: the part of rate and burst this arena runs at, in millionths (0 or 10^6: all of
         * them). A global limiter's share of its fleet-wide limit (daemon/global.c); the record
         * carries it (thr_params.reserved), so a change of time unit keeps it. */
        uint32_t scale_ppm;
        /* breaker (breaker.h); its window is period_ns */
        uint64_t failures;         /* consecutive failures that trip it; 0: rule off */
        uint64_t failure_rate;     /* percent of the window's calls failed that trips it; 0 off */
        uint64_t min_calls;        /* calls the window needs before its rate counts */
        uint64_t cooldown_ns;      /* open -> half-open */
        uint64_t probes;           /* concurrent probes in half-open */
        uint64_t probe_timeout_ns; /* a probe not reported by then is given up */
        uint64_t successes;        /* probe successes that close it */
        /* the daemon's policy for an adaptive GCRA limiter (daemon/adapt.c); shm ignores it.
         * Rates are counts per the limiter's period_ns. */
        struct shm_adapt_spec {
                bool on;        /* adaptive = aimd */
                uint64_t min_n; /* the rate never goes below min_n per period_ns ... */
                uint64_t max_n; /* ... nor above max_n */
                uint64_t inc_n; /* added at the end of an interval that had no overload */
                uint64_t min_p, max_p, inc_p; /* as configured: min_n per min_p ns, and so on
                                               * (the config turns them into per period_ns) */
                uint32_t dec_pct;     /* the rate is multiplied by dec_pct/100 after overload */
                uint64_t interval_ns; /* one step per interval of arena time */
        } adapt;
        /* the daemon's policy for a global limiter (scope = global, daemon/global.c); shm sees
         * only the share it leads to, scale_ppm */
        struct shm_global_spec {
                bool on;                 /* scope = global */
                uint64_t expected_hosts; /* the safe share is 1 / expected_hosts */
                uint32_t on_down;        /* enum shm_global_down */
                uint64_t keep_ns;        /* on_down = keep: the last share is kept this long */
                uint64_t min_share_pct;  /* the least share Redis grants a live host, percent */
        } global;
};

/* What a global limiter runs at while Redis cannot be reached and its lease has ended. */
enum shm_global_down {
        SHM_GLOBAL_KEEP = 0, /* the last share for keep_ns, then the safe share */
        SHM_GLOBAL_CLOSED,   /* the least share (a millionth): admissions stop */
        SHM_GLOBAL_OPEN,     /* the whole global limit on this host */
};

/* A named group of limiters (config `compose = a, b, c`): members by name, in order. */
struct shm_group_spec {
        char name[THR_NAME_MAX + 1];
        uint32_t n;
        char members[8][THR_NAME_MAX + 1];
};

struct shm_arena_spec {
        char name[THR_NAME_MAX + 1];
        const char *dir; /* NULL: hugetlbfs mount (libhugetlbfs), else /dev/shm */
        enum shm_hugepages hugepages;
        mode_t mode;           /* file mode, e.g. 0660 */
        gid_t gid;             /* (gid_t)-1: leave the group alone */
        uint32_t clock;        /* THR_CLOCK_MONOTONIC or THR_CLOCK_MANUAL */
        uint32_t max_limiters; /* directory entries (>= nlimiters) */
        uint32_t max_readers;  /* reader records */
        uint64_t spare_bytes;  /* heap left free for limiters and records added later */
        size_t nlimiters;
        const struct shm_limiter_spec *limiters;
        size_t ngroups;
        const struct shm_group_spec *groups;
};

/*
 * shm_params_make - compute a limiter's parameter record from its spec: the time scale K, the
 * exact emission interval T = P/N ns in units of 1/K ns, B*T and the reservation cap, refusing
 * anything that is not exact or could overflow. Pure; thread-safe.
 * Returns 0, or -EINVAL / -ERANGE / -EDOM with ERR naming the field and why.
 */
int shm_params_make(const struct shm_limiter_spec *spec, uint64_t gen, struct thr_params *out,
                    char *err, size_t errlen);

/*
 * shm_arena_create - build a new arena from SPEC: file created under a temporary name, space
 * allocated (posix_fallocate) and pre-faulted (MADV_POPULATE_WRITE, else a write per page), header,
 * directory, readers, limiters and tables written, the backing obtained verified in
 * /proc/self/smaps, then linked into place so no process ever opens half an arena. The
 * temporary file is unnamed (O_TMPFILE) where the file system allows, so a builder killed
 * mid-way leaves nothing behind (else see shm_arena_sweep). Fails clearly
 * when a hugetlbfs pool or tmpfs is too small (never a later SIGBUS). With SHM_HUGE_AUTO, falls
 * back to /dev/shm when hugetlbfs cannot hold it, and says so in ERR (returns 1 in that case).
 * Returns 0 or 1 (fell back) and fills *OUT (mapped read-write), or -errno with ERR.
 */
int shm_arena_create(const struct shm_arena_spec *spec, struct shm_map *out, char *err,
                     size_t errlen);

/*
 * shm_arena_sweep - remove the temporary files that builders of SPEC's arena left when they were
 * killed mid-way (named temporaries: file systems without O_TMPFILE, or older versions), in
 * every directory the arena may be built in. A temporary whose builder is alive is locked by it
 * and kept. FN (may be NULL) is told each removal: its path and size. Returns how many were
 * removed, or -errno. Not thread-safe with itself on one directory; safe against live builders.
 */
typedef void (*shm_sweep_fn)(void *ctx, const char *path, uint64_t bytes);
int shm_arena_sweep(const struct shm_arena_spec *spec, shm_sweep_fn fn, void *ctx);

/*
 * shm_params_in_units - re-express GCRA record P (from shm_params_make, exact in its own unit) in
 * units of 1/K ns, the unit an existing limiter's buckets count in: the interval rounded up to a
 * whole number of units when it is not one (THR_PARAM_ROUNDED set: the limiter runs at most
 * 1 / (K T) below the configured rate, never above it). No-op for other kinds or the same unit.
 * Returns 0, or -ERANGE (overflow) / -EBADMSG (K invalid) with ERR naming NAME.
 */
int shm_params_in_units(struct thr_params *p, uint64_t k, const char *name, char *err,
                        size_t errlen);

/* What a configuration does to one limiter (shm_arena_plan). */
enum shm_change_what {
        SHM_CHANGE_SAME = 0, /* configured, parameters unchanged */
        SHM_CHANGE_PARAMS,   /* configured, new parameters (before -> after) */
        SHM_CHANGE_ADD,      /* a new limiter (after) */
        SHM_CHANGE_REVIVE,   /* a retired limiter configured again, with its buckets */
        SHM_CHANGE_RETIRE    /* live, no longer configured: retired (before) */
};

struct shm_change {
        char name[THR_NAME_MAX + 1];
        uint32_t what;     /* enum shm_change_what */
        uint64_t capacity; /* of the table (ADD: the new one) */
        uint32_t nshards;
        struct thr_params before; /* SAME, PARAMS, REVIVE, RETIRE: the arena's record */
        struct thr_params after;  /* SAME, PARAMS, ADD, REVIVE: what SPEC makes of it */
};

/*
 * shm_arena_plan - what shm_arena_configure(M, SPEC) would do, computed by the same code and
 * changing nothing (M may be mapped read-only): one change per limiter of SPEC, then one per live
 * limiter SPEC no longer names, in *OUT (malloc'ed; *N entries; free it). Returns 0, or the
 * -errno and ERR shm_arena_configure would return (then *OUT is NULL).
 */
int shm_arena_plan(struct shm_map *m, const struct shm_arena_spec *spec, struct shm_change **out,
                   size_t *n, char *err, size_t errlen);

/*
 * shm_arena_configure - make the limiters of an attached, writable arena match SPEC (daemon
 * only, single writer): a limiter with the same table geometry keeps its table and every bucket,
 * and gets a new parameter record if its parameters changed; a new limiter is allocated from the
 * spare heap. A limiter whose capacity or shard count changed cannot be resized in place: -EBUSY
 * with ERR naming it. A live limiter missing from SPEC is retired (clients get -EIDRM; its table
 * and buckets are kept), and a retired one configured again with the same geometry is revived
 * with its buckets. Returns 0 or -errno with ERR; on error nothing was changed.
 */
int shm_arena_configure(struct shm_map *m, const struct shm_arena_spec *spec, char *err,
                        size_t errlen);

/*
 * Recycling parameter records (daemon only). A publish that replaces a GCRA limiter's record
 * retires the old one with the grace-period tag of that moment (shm_retire_tag). Every client
 * reads a record inside a read-side section (libclient/client.c, op_begin), so once a grace
 * period covers the tag no client can be reading it (the daemon's own readers of records, its
 * /metrics scrape and its log of clocks, take the same mutex as its publishes; shmctl, a
 * read-only mapping that cannot enter a section, may show a record being rewritten for one
 * reading): shm_params_recycle, called with each
 * completed period, makes it reusable, and the next GCRA record a publish needs is written there
 * before the heap is used. Records of other kinds are never retired (their readers copy them
 * outside sections) and a recycled one only ever holds a GCRA record, so a reader of another
 * kind's calls that reads it anyway sees a GCRA record and refuses it. Without a pool (clients,
 * tools) nothing is recycled. The pool is the daemon's private memory: a restarted daemon leaks
 * the records its predecessor retired (128 bytes each). Not thread-safe: the daemon serializes
 * its publishes and recycling with one mutex.
 */
int shm_params_pool_init(struct shm_map *m);
void shm_params_pool_free(struct shm_map *m);
/* Make reusable the records retired with a tag DONE (the last grace period the daemon's scans
 * completed) covers; COUNTER is the header's grace-period counter now. */
void shm_params_recycle(struct shm_map *m, uint64_t done);
/* Records: retired and waiting for a grace period, reusable now. */
void shm_params_pool_counts(const struct shm_map *m, uint64_t *waiting, uint64_t *reusable);

/*
 * shm_limiter_rerate - publish a new parameter record for the live GCRA limiter LS names (LS as
 * configured), at RATE_N per its period: the configured record with the interval for RATE_N in
 * the unit its buckets count in, rounded up when not whole (THR_PARAM_ROUNDED: never faster), its
 * clock chosen again, its buckets kept: what an adaptive limiter's controller changes each step.
 * The config generation is not raised (a later reload compares against the configuration). The
 * record comes from the pool when one is reusable. Returns 0 (published, or unchanged), or
 * -errno with ERR (not live, not GCRA, out of range, no room).
 */
int shm_limiter_rerate(struct shm_map *m, const struct shm_limiter_spec *ls, uint64_t rate_n,
                       char *err, size_t errlen);

/*
 * shm_limiter_rescale - publish a new parameter record for the live GCRA limiter LS names (LS as
 * configured) at SCALE_PPM millionths of its rate and burst (clamped to 1 .. THR_SCALE_ONE), in
 * the unit its buckets count in, its buckets kept: what a global limiter's share changes
 * (daemon/global.c). Otherwise as shm_limiter_rerate: the config generation is not raised, and
 * the caller serialises it with reloads. Returns 0 (published, or unchanged), or -errno with ERR.
 */
int shm_limiter_rescale(struct shm_map *m, const struct shm_limiter_spec *ls, uint32_t scale_ppm,
                        char *err, size_t errlen);

/*
 * shm_daemon_lock - take the daemon's exclusive lock on the arena (an open-file-description
 * write lock on byte 0, which the kernel drops when the holder exits). Returns 0, or -EBUSY if
 * another process holds it (*HOLDER set to its pid when known).
 */
int shm_daemon_lock(struct shm_map *m, pid_t *holder);

#endif

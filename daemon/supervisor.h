/*
 * supervisor.h - throttled's work: build or re-attach the arena, hold its lock, keep the
 * heartbeat, apply reloads. main() parses, initialises and calls these.
 */
#ifndef THR_DAEMON_SUPERVISOR_H
#define THR_DAEMON_SUPERVISOR_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <time.h>

#include "config.h"
#include "shm.h"

#define SUP_MAX_TABLES 65536

/*
 * What the daemon's threads read of the configuration: published by the main thread with
 * rcu_xchg_pointer, read under rcu_read_lock (liburcu), freed after synchronize_rcu.
 */
struct registry {
        struct config cfg;
        uint32_t n;                         /* live limiters of cfg ... */
        uint32_t idx[CONFIG_MAX_LIMITERS];  /* ... and their directory entries */
        uint32_t spec[CONFIG_MAX_LIMITERS]; /* ... and their index in cfg.limiters */
        uint64_t gen; /* the arena's config_gen once cfg was applied (adapt.c acts only then) */
};

/* An adaptive limiter's controller (adapt.c), per directory entry; maintenance thread only. */
struct adapt_state {
        bool started;    /* under gen (any value: a config_gen may be 0) */
        uint64_t gen;    /* the registry's gen it started under */
        uint64_t rate_n; /* the rate now, per the limiter's period */
        uint64_t next_ns;
        uint64_t overload, admitted, denied; /* the sums at the last step */
        bool failed; /* its last rerate failed: logged then, not again until one succeeds */
};

struct sup_lim_stats {
        uint64_t live, evicted, reclaimed, retiring; /* over the current pass */
        uint64_t handoffs, handoff_ns; /* the lock let to waiting inserts between segments */
};

struct supervisor {
        struct config cfg; /* main thread's copy */
        struct shm_map map;
        const char *config_path;
        _Atomic int stop;             /* SIGTERM/SIGINT handlers; read by both threads */
        volatile sig_atomic_t reload; /* set by SIGHUP */
        struct registry *reg;         /* RCU-protected */
        pthread_t maint;
        bool maint_running;
        struct metrics *metrics; /* the /metrics server (metrics.h), NULL when off */
        struct http *http;       /* the HTTP API (http.h), NULL when off */
        struct global *global;   /* the lease thread of global limiters (global.h) */
        /* main thread only: the arena file is gone from its path (see check_arena_file) */
        bool file_lost;
        struct timespec file_lost_logged; /* CLOCK_MONOTONIC of the last error about it */
        /* maintenance thread only */
        uint64_t lock_me; /* this daemon's shard-lock value (shm_lock_daemon) */
        uint64_t gp_done; /* last grace period completed by this daemon's scans (0: none yet) */
        struct shm_gp_pending gp_wait; /* the last pass's grace period while incomplete */
        uint64_t passes;
        bool mb_warned;
        uint32_t cursor[SUP_MAX_TABLES];          /* per directory entry: next shard */
        struct sup_lim_stats acc[SUP_MAX_TABLES]; /* per directory entry */
        uint64_t repairs_seen[SUP_MAX_TABLES];    /* per directory entry: recounted */
        uint64_t recounted[SUP_MAX_TABLES];       /* heartbeat of the last recount, 0 none */
        uint64_t beats;                           /* heartbeats so far (from 1) */
        struct adapt_state adapt[SUP_MAX_TABLES]; /* per directory entry */
        /* the arena's parameter records: a reload (main thread) and the controller and the
         * recycling of records (maintenance thread) publish one at a time */
        pthread_mutex_t arena_mu;
};

/* adapt.c: the sums of every reader row's counters (overload, admitted, denied) of directory
 * entry IDX: what adaptive and global limiters measure demand from. Any thread; relaxed loads. */
void sup_lim_sums(const struct shm_map *m, uint32_t idx, uint64_t *over, uint64_t *adm,
                  uint64_t *den);

/* adapt.c: one step of every adaptive limiter whose interval is over (maintenance thread). */
void adapt_pass(struct supervisor *s, const struct registry *reg);

/* maint.c: the maintenance thread (eviction, reclamation, grace periods, heartbeat). */
int maint_start(struct supervisor *s);
void maint_join(struct supervisor *s);

/*
 * supervisor_start - attach the arena named in CFG if it exists (keeping every bucket), else
 * create it; take the daemon lock; apply the config's limiters. Returns 0, or a sysexits code
 * (EX_CONFIG, EX_UNAVAILABLE, EX_CANTCREAT, EX_DATAERR, EX_NOPERM, EX_OSERR) after logging why.
 */
int supervisor_start(struct supervisor *s, const struct config *cfg, bool recreate);

/*
 * supervisor_run - reload on SIGHUP until s->stop, and check at each heartbeat that the arena
 * file is still where clients look for it (logged as an error, and every minute while it lasts,
 * when it was deleted or replaced: the daemon keeps running for the clients that map it).
 * Returns 0 or a sysexits code.
 */
int supervisor_run(struct supervisor *s);

/* supervisor_stop - clear the daemon identity and drop the arena (the lock goes with it). */
void supervisor_stop(struct supervisor *s);

#endif

/*
 * supervisor.h - throttled's work: build or re-attach the arena, hold its lock, keep the
 * heartbeat, apply reloads. main() parses, initialises and calls these.
 */
#ifndef THR_DAEMON_SUPERVISOR_H
#define THR_DAEMON_SUPERVISOR_H

#include <signal.h>
#include <stdbool.h>

#include "config.h"
#include "shm.h"

#define SUP_MAX_TABLES 65536

struct supervisor {
        struct config cfg;
        struct shm_map map;
        const char *config_path;
        volatile sig_atomic_t stop;            /* set by SIGTERM/SIGINT handlers */
        volatile sig_atomic_t reload;          /* set by SIGHUP */
        uint64_t repairs_seen[SUP_MAX_TABLES]; /* per directory entry: repairs already recounted */
};

/*
 * supervisor_start - attach the arena named in CFG if it exists (keeping every bucket), else
 * create it; take the daemon lock; apply the config's limiters. Returns 0, or a sysexits code
 * (EX_CONFIG, EX_UNAVAILABLE, EX_CANTCREAT, EX_DATAERR, EX_NOPERM, EX_OSERR) after logging why.
 */
int supervisor_start(struct supervisor *s, const struct config *cfg, bool recreate);

/* supervisor_run - heartbeat and reload until s->stop. Returns 0 or a sysexits code. */
int supervisor_run(struct supervisor *s);

/* supervisor_stop - clear the daemon identity and drop the arena (the lock goes with it). */
void supervisor_stop(struct supervisor *s);

#endif

/*
 * global.h - global limiters (scope = global): one limit shared by every host that names it,
 * each host's throttled leasing a share of it from Redis and writing that share into its local
 * buckets (global.c), so that clients still decide with one CAS in shared memory.
 */
#ifndef THR_DAEMON_GLOBAL_H
#define THR_DAEMON_GLOBAL_H

#include <stdint.h>

#include "config.h"

struct supervisor;

/* The lease script's text (global.c), for the tests that run it against a real Redis alone. */
extern const char global_lease_script[];

/*
 * global_start - start the lease thread of S (it idles while no limiter is global, and picks up
 * global limiters a reload adds). 0 or -errno. global_stop - stop and join it (the shares stay as
 * they are in the arena: a restarted daemon starts again at the safe share). Main thread only.
 */
int global_start(struct supervisor *s);
void global_stop(struct supervisor *s);

/*
 * global_mark_starting - the directory entries of S's limiters as a daemon starts: each global
 * one at its safe share, starting, with no lease; the others not global (a lease a previous
 * daemon left in the arena is not shown as current). Main thread, before global_start.
 */
void global_mark_starting(struct supervisor *s);

/*
 * global_scale_config - give each global limiter of NEXT (a configuration about to be applied
 * by a reload) the share its buckets run at now, so a reload neither resets a share to the safe
 * one nor, worse, to the whole limit. Limiters not yet global keep the safe share the
 * configuration gave them. Main thread, under s->arena_mu.
 */
void global_scale_config(struct supervisor *s, struct config *next);

#endif

/*
 * shmctl_out.h - shmctl's output: what it read from an arena, printed as aligned tables for people
 * or as one JSON object per command. Everything here only formats and prints to stdout; reading
 * and checking the arena is shmctl.c's work.
 */
#ifndef THR_DAEMON_SHMCTL_OUT_H
#define THR_DAEMON_SHMCTL_OUT_H

#include <stdbool.h>
#include <stdint.h>

#include "shm.h"

/* One limiter as read from the arena: private, checked copies. */
struct shmctl_lim {
        uint32_t idx;
        char name[THR_NAME_MAX + 1];
        struct thr_params p;
        struct thr_table t;
};

/* One live key, snapshotted and evaluated at one arena time. */
struct shmctl_key {
        uint8_t bytes[THR_KEY_MAX];
        uint32_t len;
        uint64_t tat; /* raw state word: units, or THR_TAT_FRESH */
        uint64_t remaining;
        uint64_t reset_ns;
        uint64_t debt_ns; /* sort order; 0 for a fresh key, which carries no debt */
};

/* What `status` shows beyond the header: counts and the daemon's liveness, read at one time. */
struct shmctl_status {
        long nlim;
        uint64_t live_keys;
        uint32_t readers;
        int alive; /* 1, 0, or -errno (shown as not running): the daemon's lock on byte 0 */
        uint64_t now_ns;
        uint64_t pid, heartbeat_ns, attaches;
};

/* Each prints one command's answer to stdout, human (aligned) or JSON (one object and a newline).
 * None returns an error: a failed write shows in ferror(stdout), which main() checks. Not for
 * concurrent use (an answer is many stdio calls, which would interleave); tables allocate. */

/* shmctl_out_status - the header H of the arena mapped as MAP, and S. */
void shmctl_out_status(const struct thr_hdr *h, const struct shm_map *map,
                       const struct shmctl_status *s, bool json);

/* shmctl_out_limiters - the N limiters of V, one row (or object) each. */
void shmctl_out_limiters(const struct shmctl_lim *v, long n, bool json);

/* shmctl_out_keys - the first SHOWN of L's TOTAL live keys V (sorted by the caller), with the
 * arena time NOW_NS. */
void shmctl_out_keys(const struct shmctl_lim *l, const struct shmctl_key *v, long total, long shown,
                     uint64_t now_ns, bool json);

/* shmctl_out_key - one key K of L, for `get`, with the arena time NOW_NS. */
void shmctl_out_key(const struct shmctl_lim *l, const struct shmctl_key *k, uint64_t now_ns,
                    bool json);

#endif

/*
 * config.h - throttled's configuration: the INI file (parsed with inih) turned into an arena spec.
 *
 * Every default lives in config_defaults() with the reason for it. Validation names the file and
 * the line of each fault; all faults of a file are reported, not only the first.
 */
#ifndef THR_DAEMON_CONFIG_H
#define THR_DAEMON_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

#define CONFIG_MAX_GROUPS   64
#define CONFIG_MAX_LIMITERS 256
/* [arena] spare at most 1 TiB: 5.7 billion key slots, past any host's memory, and far enough
 * from 2^64 that no sum of the arena's sizes can wrap (the arena code checks them too). */
#define CONFIG_SPARE_MAX (1ull << 40)

struct config {
        char path[256];              /* file it was read from */
        struct shm_arena_spec arena; /* arena.limiters points at limiters[] below */
        char arena_name[THR_NAME_MAX + 1];
        char arena_dir[200];       /* [arena] dir =, empty: automatic */
        char metrics_listen[64];   /* [daemon] metrics = 127.0.0.1:9477 (issue 3+) */
        char http_listen[128];     /* [daemon] http = HOST:PORT or unix:/path; empty: off */
        char http_token_file[256]; /* [daemon] http_token_file; empty: no token asked */
        uint64_t http_max_conn;    /* [daemon] http_max_connections */
        uint64_t http_max_body;    /* [daemon] http_max_body (bytes) */
        uint64_t http_max_wait_ms; /* [daemon] http_max_wait_ms: the cap on timeouts */
        uint64_t http_waiters;     /* [daemon] http_waiters: threads for kernel waits */
        uint64_t http_max_leases;  /* [daemon] http_max_leases: leases held for HTTP clients */
        uint64_t http_timeout_ms;  /* [daemon] http_timeout_ms: a request's deadline */
        uint64_t heartbeat_ms;     /* [daemon] heartbeat_ms */
        uint64_t maintenance_ms; /* [daemon] maintenance_ms: between eviction/reclamation passes */
        uint64_t scan_budget;    /* [daemon] scan_budget: slots per limiter per pass */
        uint64_t stall_ms;       /* [daemon] stall_ms: a grace period blocked longer is a stall */
        /* [global]: the Redis global limiters lease their shares from (global.c) */
        char global_redis[256];       /* HOST:PORT or unix:/path; empty: no global limiter */
        char global_user[64];         /* ACL user; empty: AUTH with the password alone */
        char global_password[128];    /* empty: no AUTH */
        char global_prefix[64];       /* of every Redis key this daemon uses */
        char global_host[64];         /* this daemon's name in the leases; empty: host/arena */
        uint64_t global_interval_ns;  /* between lease renewals */
        uint64_t global_lease_ttl_ns; /* a lease not renewed for this long is Redis's again */
        uint64_t global_timeout_ns;   /* to connect to Redis, and for each reply */
        size_t nlimiters;
        struct shm_limiter_spec limiters[CONFIG_MAX_LIMITERS];
        size_t ngroups; /* named groups for composed calls: [name] compose = a, b, c */
        struct shm_group_spec groups[CONFIG_MAX_GROUPS];
};

/*
 * config_load - read and validate PATH into *CFG (which it fully initialises, defaults first).
 * On failure returns -EINVAL (or -errno when the file cannot be read) and writes one line per
 * fault into ERR (ERRLEN bytes, NUL-terminated, truncated with "..." if needed), each of the form
 * "PATH:LINE: what was wrong". Pure apart from reading the file; thread-safe.
 */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);

/*
 * config_parse_rate - "100/s", "20000/min", "5/250ms", "1000000000/7s", "3/h", "10/d" into
 * N and P (ns). Units: ns, us, ms, s, sec, m, min, h, hour, d, day; a number before the unit is
 * optional. Returns 0 or -EINVAL / -ERANGE with ERR saying why.
 */
int config_parse_rate(const char *s, uint64_t *n, uint64_t *period_ns, char *err, size_t errlen);

/*
 * config_parse_duration - "250ms", "30s", "5min", "0" (no unit only for 0) into ns.
 * Returns 0 or -EINVAL / -ERANGE.
 */
int config_parse_duration(const char *s, uint64_t *ns, char *err, size_t errlen);

#endif

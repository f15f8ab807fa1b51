/*
 * config_internal.h - what config.c (the INI reader) and config_values.c (the keys and their
 * value parsers) share; nothing outside those two files uses it.
 */
#ifndef THR_DAEMON_CONFIG_INTERNAL_H
#define THR_DAEMON_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Keys of a limiter section, in the order of config_limiter_keys[]. */
enum {
        LK_RATE,
        LK_BURST,
        LK_INITIAL,
        LK_CAPACITY,
        LK_SHARDS,
        LK_MAX_RESERVE,
        LK_IDLE_TTL,
        LK_ON_FULL,
        LK_INSERT_WAIT,
        LK_KIND,
        LK_LIMIT,
        LK_WINDOW,
        LK_SERIALIZE,
        LK_MAX,
        LK_LEASES,
        LK_LEVEL,
        LK_CLOCK_READ,
        LK_ADAPTIVE,
        LK_MIN_RATE,
        LK_MAX_RATE,
        LK_INCREASE,
        LK_DECREASE,
        LK_ADAPT_INTERVAL,
        LK_FAILURES,
        LK_FAILURE_RATE,
        LK_MIN_CALLS,
        LK_COOLDOWN,
        LK_PROBES,
        LK_PROBE_TIMEOUT,
        LK_SUCCESSES,
        LK_MAX_WAITERS,
        LK_ON_QUEUE_FULL,
        LK_PRIORITY_SHARE,
        LK_SCOPE,
        LK_EXPECTED_HOSTS,
        LK_ON_REDIS_DOWN,
        LK_KEEP_FOR,
        LK_MIN_SHARE,
        LK_COUNT
};

struct config_key;

/* Parse V into FIELD (the key's field in the section's struct): 0, or -errno with WHY (N bytes)
 * saying why. K gives the key's bounds (for strings, the buffer size in HI). */
typedef int (*config_setter_fn)(const struct config_key *k, void *field, const char *v, char *why,
                                size_t n);

struct config_key {
        const char *name;
        config_setter_fn set;
        size_t off;      /* of the field in struct config, or in struct shm_limiter_spec */
        uint64_t lo, hi; /* bounds of a number; HI is the buffer size of a string */
};

/* The keys of [arena], of [daemon], of [global] and of a limiter section; each list ends with a
 * NULL name. */
extern const struct config_key config_arena_keys[];
extern const struct config_key config_daemon_keys[];
extern const struct config_key config_global_keys[];
extern const struct config_key config_limiter_keys[];

/* config_name_ok - whether S may name an arena or a limiter: [A-Za-z0-9_.-]{1,63}, and not "."
 * or "..". Pure; thread-safe. */
bool config_name_ok(const char *s);

#endif

/*
 * reload.h - what a configuration does to a live arena, said the same way everywhere: by the
 * daemon when it reloads (its log and the verdict it leaves in the arena header), by
 * `throttled --check` against the running arena, and by `throttled --reload`, which asks the
 * running daemon to reload and waits for its verdict.
 */
#ifndef THR_DAEMON_RELOAD_H
#define THR_DAEMON_RELOAD_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "build.h"
#include "config.h"

/*
 * reload_describe - one line per limiter that CH (N entries, from shm_arena_plan) adds, changes
 * (each changed field as "before -> after"), revives or retires, then a summary line
 * "N limiters: ..." ; appended to BUF (LEN bytes, kept NUL-terminated, truncated with "..."). A
 * rate kept in the buckets' time unit says what it runs at. Returns the number of changes.
 */
size_t reload_describe(const struct shm_change *ch, size_t n, char *buf, size_t len);

/* The daemon's side of a reload: number it (before the file is read) and leave its verdict. */
uint64_t reload_verdict_begin(struct shm_map *m);
void reload_verdict_end(struct shm_map *m, uint64_t seq, int rc, const char *msg);

/*
 * reload_check_live - `throttled --check`, after CFG (read from PATH) was found valid: map the
 * arena CFG names read-only, if it exists, and plan CFG against it with the reload's own code.
 * Prints what a reload would change, or why the running daemon would refuse it. Returns 0 (the
 * file would be accepted, or no arena exists yet: it would create one) or a sysexits code.
 */
int reload_check_live(const struct config *cfg, const char *path);

/*
 * reload_request - `throttled --reload`: send SIGHUP to the daemon of CFG's arena (PID, or the
 * one the arena names when PID is 0; either must be a process that has that arena file open)
 * and wait up to TIMEOUT_MS for its verdict on a reload begun after the signal. Prints the
 * verdict. Returns 0 when the reload was applied, EX_CONFIG when it was refused, another sysexits
 * code when it could not be asked or answered.
 */
int reload_request(const struct config *cfg, pid_t pid, unsigned timeout_ms);

/* The arena file CFG names, if it exists: 0 and PATH, or -errno (supervisor.c). */
int supervisor_arena_existing(const struct shm_arena_spec *a, char *path, size_t len);

#endif

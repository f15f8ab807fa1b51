/*
 * shmctl_run.h - the harness shared by test_shmctl and test_shmctl_window: a small manual-clock
 * arena in a fresh directory under /dev/shm, driven through the public client API; the built
 * shmctl binary ($THR_TEST_BUILD_DIR/daemon/shmctl) run on it, its output captured; checks on
 * that output (a substring, a whole line, one well-formed JSON value); and the test's own
 * writable mapping, through which corruptions are written after the client has closed the arena.
 *
 * One fixture per test process (Criterion runs each test in its own): fx.
 */
#ifndef THR_TEST_SHMCTL_RUN_H
#define THR_TEST_SHMCTL_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm.h"
#include "throttle/throttle.h"

#define MS      1000000ull
#define S       1000000000ull
#define OUT_MAX 65536 /* the size of the buffer run() fills */

struct shmctl_fx {
        char dir[64];       /* the fresh directory holding the arena */
        struct shm_map map; /* the test's writable mapping; shmctl is run on map.path */
        thr_arena *arena;   /* the client's handle, NULL once closed */
};

extern struct shmctl_fx fx;

/* A GCRA limiter spec NAME of N per PERIOD_NS, with capacity 64. */
struct shm_limiter_spec lim_spec(const char *name, uint64_t n, uint64_t period_ns, uint64_t burst,
                                 uint64_t initial);

/* A manual-clock arena called NAME in a fresh temp dir, opened by the client too (16 reader
 * records; make_arena_readers: READERS of them). */
void make_arena(const char *name, size_t n, const struct shm_limiter_spec *lims);
void make_arena_readers(const char *name, size_t n, const struct shm_limiter_spec *lims,
                        uint32_t readers);
/* Close the client's handle (the mapping stays). */
void close_client(void);
/* The suite's .fini: close the client, remove the arena and its directory. */
void fx_teardown(void);

/* Spend 1 on KEY (LEN bytes) COUNT times in limiter NAME; each must be admitted. */
void spend(const char *name, const char *key, size_t len, int count);

/* Run shmctl on the test arena with ARGS (a shell fragment); output (stdout and stderr) to OUT
 * (OUT_MAX bytes); its exit code. */
int run(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void assert_has(const char *out, const char *want);
/* The line of OUT containing WANT, into LINE (LEN bytes); fails the test if there is none. */
const char *line_with(const char *out, const char *want, char *line, size_t len);

/* Whether S is exactly one JSON value (and white space); *AT: where the check stopped. */
bool json_ok(const char *s, const char **at);
void assert_json(const char *out);

/* The directory entry and table of limiter NAME in the test's writable mapping. */
struct thr_dir_entry *entry_of(const char *name);
struct thr_table *table_of(const char *name);
/* The slot of KEY in limiter NAME (it must exist), and reader record IDX, in the test's writable
 * mapping. */
struct thr_slot *slot_of(const char *name, const char *key);
struct thr_reader *reader_of(uint32_t idx);

/* xorshift64: the same garbage at every run */
uint64_t next_rand(uint64_t *x);

/* Corruptions are written after the client closed the arena: shmctl must refuse, not crash. */
void expect_dataerr(const char *args);

#endif

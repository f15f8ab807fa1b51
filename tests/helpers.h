/*
 * helpers.h - fixtures shared by the tests: throwaway arenas in private directories.
 */
#ifndef THR_TEST_HELPERS_H
#define THR_TEST_HELPERS_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "shm.h"
#include "throttle/throttle.h"

struct tarena {
        char dir[128];      /* private directory holding the arena file */
        char path[256];     /* arena file */
        struct shm_map map; /* the creator's mapping (read-write) */
        thr_arena *a;       /* opened through the public API */
};

/* A limiter spec with capacity 1024, shards 0, max_reserve 60 s. */
struct shm_limiter_spec tspec(const char *name, uint64_t rate_n, uint64_t period_ns, uint64_t burst,
                              uint64_t initial);

/*
 * tarena_make - build an arena with these limiters in a fresh directory under /dev/shm (or on
 * hugetlbfs when HUGE is SHM_HUGE_REQUIRE and dir is NULL), manual or real clock, and open it
 * through thr_arena_open. Criterion-asserts on failure.
 */
void tarena_make(struct tarena *t, uint32_t clock, enum shm_hugepages huge,
                 const struct shm_limiter_spec *specs, size_t n);
void tarena_free(struct tarena *t);

/* thr_limiter_open or fail the test. */
thr_limiter *tlim(struct tarena *t, const char *name);

/* The key table of limiter NAME in T's arena, or fail the test. */
struct thr_table *ttable(struct tarena *t, const char *name);

/* A hugetlbfs 2 MiB mount with at least PAGES free pages, or false with WHY filled. */
bool thugepages_available(uint64_t pages, char *why, size_t whylen);

/*
 * tfork - fork() for tests: the child gets SIGKILL when the test process dies (PR_SET_PDEATHSIG),
 * so a failed or killed test never leaves children spinning, holding ctest's pipes open.
 * tchild_tie - the same for a child made another way (raw clone): call first thing in the child
 * with the parent's pid.
 */
pid_t tfork(void);
void tchild_tie(pid_t parent);

/* Whether the test runs under a sanitizer or valgrind (seccomp and timing checks skip). */
bool tunder_instrumentation(void);

#define SEC 1000000000ull

#endif

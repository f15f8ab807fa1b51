/*
 * arena.h - a mapped arena as every process sees it: attaching and validating an arena, finding
 * its limiters, the arena clock, the checks that a process reads its clock and pids as its creator
 * did. Used by libthrottle-client, throttled, shmctl and the tests. Knows nothing of sockets,
 * config files or threads' lifetimes. Creating and reconfiguring arenas is the daemon's (build.h).
 *
 * Functions return 0 (or a count) on success and -errno on failure; those that can fail for a
 * reason a person must read also fill ERR (a buffer of ERRLEN bytes) with a sentence naming what
 * was wrong.
 */
#ifndef THR_SHM_ARENA_H
#define THR_SHM_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "layout.h"

/* Where an arena lives: hugetlbfs when the host has it (AUTO), always (REQUIRE), or /dev/shm. */
enum shm_hugepages { SHM_HUGE_AUTO = 0, SHM_HUGE_REQUIRE = 1, SHM_HUGE_OFF = 2 };

/* ---------------------------------------------------------------- a mapped arena */

/* The arena's section geometry as checked when it was mapped: a private copy, never re-read. */
struct shm_geom {
        uint64_t dir_off, reader_off, heap_off, heap_end;
        uint64_t lcount_off, lcount_stride; /* limiter counter rows (layout.h) */
        uint64_t heap_top; /* the daemon's allocator: private, the arena's copy is informational */
        uint32_t dir_count, reader_count;
};

struct shm_params_pool; /* build.h: the daemon's recycled parameter records */

struct shm_map {
        void *base;
        size_t size;
        int fd;
        bool writable;
        char path[256];
        struct shm_geom g;
        struct shm_params_pool *pool; /* daemon only (shm_params_pool_init); NULL elsewhere */
};

/* A limiter as read once from the directory and checked: private copies of everything. */
struct shm_lim_snap {
        uint32_t idx;
        uint32_t state;
        char name[THR_NAME_MAX + 1];
        uint64_t params_off, table_off;
        struct thr_params params;
        struct thr_table table;
};

static inline struct thr_hdr *shm_hdr(const struct shm_map *m)
{
        return (struct thr_hdr *)m->base;
}

/* Pointer to OFF in the arena based at BASE (no check: callers validated OFF). */
static inline void *shm_at(const void *base, uint64_t off)
{
        return (char *)base + off;
}

/*
 * shm_arena_path - where the arena called NAME lives or would be created. With DIR NULL and
 * HUGE != SHM_HUGE_OFF, the 2 MiB hugetlbfs mount libhugetlbfs finds; with no mount, or HUGE ==
 * SHM_HUGE_OFF, /dev/shm. A NAME containing '/' is a path already.
 * Returns 0, -ENOENT (REQUIRE and no hugetlbfs mount), -ENAMETOOLONG.
 */
int shm_arena_path(const char *name, const char *dir, enum shm_hugepages huge, char *out,
                   size_t outlen);

/*
 * shm_arena_find - the path of an existing arena called NAME: the hugetlbfs candidate if that file
 * exists, else the /dev/shm one; a NAME containing '/' is taken as the path itself (an arena in
 * a configured [arena] dir is opened that way). Returns 0, -ENOENT, -ENAMETOOLONG.
 */
int shm_arena_find(const char *name, char *out, size_t outlen);

/*
 * shm_arena_attach - open and map the arena file at PATH, read-write or read-only, and run
 * shm_arena_valid on it. Returns 0, or -ENOENT, -EACCES, -EPROTONOSUPPORT, -EBADMSG with ERR.
 */
int shm_arena_attach(const char *path, bool writable, struct shm_map *out, char *err,
                     size_t errlen);

/* shm_arena_detach - unmap and close. Safe on a zeroed map. */
void shm_arena_detach(struct shm_map *m);

/*
 * shm_arena_valid - check an arena mapped at BASE with LEN bytes before trusting anything in it:
 * magic, versions, sizes, every section offset and count, every live directory entry's parameter
 * record and table geometry. Treats the arena as untrusted input (clients can write it).
 * Returns 0, -EPROTONOSUPPORT (other major) or -EBADMSG, with ERR naming the first fault.
 */
int shm_arena_valid(const void *base, size_t len, char *err, size_t errlen);

/*
 * shm_params_valid / shm_table_valid - the checks shm_arena_valid runs on one limiter, for
 * callers (shmctl, the daemon) that re-read an entry later. Return 0 or -EBADMSG with ERR.
 */
int shm_params_valid(const void *base, size_t len, uint64_t off, char *err, size_t errlen);
int shm_table_valid(const void *base, size_t len, uint64_t off, char *err, size_t errlen);

/*
 * shm_arena_check_clock - whether this process reads the arena's clock the same way as its
 * creator: same boot (boot_id) and same CLOCK_MONOTONIC offset (time namespace).
 * Returns 0 or -ESTALE with ERR.
 */
int shm_arena_check_clock(const struct thr_hdr *h, char *err, size_t errlen);

/*
 * shm_arena_check_pidns - whether this process shares the arena creator's pid namespace (see
 * layout.h, pidns_ino). Returns 0 or -EXDEV with ERR. shm_pidns_ino: this process's, or 0.
 */
int shm_arena_check_pidns(const struct thr_hdr *h, char *err, size_t errlen);
uint64_t shm_pidns_ino(void);

/* shm_dir_find - index of the live limiter called NAME, or -ENOENT, or -EBADMSG (corrupt).
 * shm_dir_find_state - the same for an entry in STATE (THR_DIR_RETIRED: a removed limiter). */
int shm_dir_find(const struct shm_map *m, const char *name);
int shm_dir_find_state(const struct shm_map *m, const char *name, uint32_t state);

/*
 * shm_dir_snapshot - read directory entry IDX once, check its parameter record and table, and
 * copy all three into *OUT. Live and retired entries (OUT->state says which): returns 0, -ENOENT
 * (free entry), -EINVAL (IDX out of range), -EBADMSG.
 */
int shm_dir_snapshot(const struct shm_map *m, uint32_t idx, struct shm_lim_snap *out);

/* Reader record IDX's (< g.reader_count) counters of limiter DIR_IDX (< g.dir_count), from the
 * checked geometry of M. */
static inline struct thr_lcount *shm_lcount(const struct shm_map *m, uint32_t idx, uint32_t dir_idx)
{
        return (struct thr_lcount *)shm_at(m->base, m->g.lcount_off + idx * m->g.lcount_stride) +
               dir_idx;
}

/* ---------------------------------------------------------------- clock */

/* Arena time in ns since its epoch. Real clock: CLOCK_MONOTONIC through the vDSO, no syscall. */
static inline uint64_t shm_now_ns(const struct thr_hdr *h)
{
        if (h->clock_id == THR_CLOCK_MANUAL)
                return atomic_load_explicit(&h->manual_now_ns, memory_order_acquire);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - h->epoch_ns);
}

/*
 * shm_daemon_alive - whether some process holds the daemon's lock on the arena (works on a
 * read-only fd). Returns 1 alive, 0 not, -errno; *HOLDER gets the daemon's pid when known.
 */
int shm_daemon_alive(const struct shm_map *m, pid_t *holder);

#endif

/*
 * shm.h - the arena library (static, internal): creating, attaching and validating arenas, the
 * key table, the GCRA arithmetic and the arena clock. Used by libthrottle-client, throttled,
 * shmctl and the tests. Knows nothing of sockets, config files or threads' lifetimes.
 *
 * Functions return 0 (or a count) on success and -errno on failure; those that can fail for a
 * reason a person must read also fill ERR (a buffer of ERRLEN bytes) with a sentence naming what
 * was wrong.
 */
#ifndef THR_SHM_H
#define THR_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "layout.h"

/* ---------------------------------------------------------------- specs (what to build) */

enum shm_hugepages { SHM_HUGE_AUTO = 0, SHM_HUGE_REQUIRE = 1, SHM_HUGE_OFF = 2 };

struct shm_limiter_spec {
        char name[THR_NAME_MAX + 1];
        uint64_t rate_n;         /* N tokens per ... */
        uint64_t period_ns;      /* ... P nanoseconds */
        uint64_t burst;          /* B >= 1 */
        uint64_t initial;        /* tokens of a new key, <= B (default B) */
        uint64_t max_reserve_ns; /* how far ahead reservations may reach beyond the burst */
        uint64_t capacity;       /* hard cap on live keys */
        uint32_t shards;         /* 0: chosen from capacity; else a power of two */
        uint32_t on_full;        /* enum thr_on_full: what an insert into a full table does */
        uint64_t idle_ttl_ns;    /* keys with no debt for this long are evicted; 0: never */
        uint64_t lock_wait_ns;   /* a new key's insert waits this long for a live holder of its
                                  * shard's lock, then on_full applies; 0: THR_LOCK_WAIT_NS */
};

struct shm_arena_spec {
        char name[THR_NAME_MAX + 1];
        const char *dir; /* NULL: hugetlbfs mount (libhugetlbfs), else /dev/shm */
        enum shm_hugepages hugepages;
        mode_t mode;           /* file mode, e.g. 0660 */
        gid_t gid;             /* (gid_t)-1: leave the group alone */
        uint32_t clock;        /* THR_CLOCK_MONOTONIC or THR_CLOCK_MANUAL */
        uint32_t max_limiters; /* directory entries (>= nlimiters) */
        uint32_t max_readers;  /* reader records */
        uint64_t spare_bytes;  /* heap left free for limiters and records added later */
        size_t nlimiters;
        const struct shm_limiter_spec *limiters;
};

/* ---------------------------------------------------------------- a mapped arena */

/* The arena's section geometry as checked when it was mapped: a private copy, never re-read. */
struct shm_geom {
        uint64_t dir_off, reader_off, heap_off, heap_end;
        uint64_t heap_top; /* the daemon's allocator: private, the arena's copy is informational */
        uint32_t dir_count, reader_count;
};

struct shm_map {
        void *base;
        size_t size;
        int fd;
        bool writable;
        char path[256];
        struct shm_geom g;
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
 * shm_params_make - compute a limiter's parameter record from its spec: the time scale K, the
 * exact emission interval T = P/N ns in units of 1/K ns, B*T and the reservation cap, refusing
 * anything that is not exact or could overflow. Pure; thread-safe.
 * Returns 0, or -EINVAL / -ERANGE / -EDOM with ERR naming the field and why.
 */
int shm_params_make(const struct shm_limiter_spec *spec, uint64_t gen, struct thr_params *out,
                    char *err, size_t errlen);

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
 * shm_arena_create - build a new arena from SPEC: file created under a temporary name, space
 * allocated (posix_fallocate) and pre-faulted (MADV_POPULATE_WRITE, else a write per page), header,
 * directory, readers, limiters and tables written, the backing obtained verified in
 * /proc/self/smaps, then linked into place so no process ever opens half an arena. The
 * temporary file is unnamed (O_TMPFILE) where the file system allows, so a builder killed
 * mid-way leaves nothing behind (else see shm_arena_sweep). Fails clearly
 * when a hugetlbfs pool or tmpfs is too small (never a later SIGBUS). With SHM_HUGE_AUTO, falls
 * back to /dev/shm when hugetlbfs cannot hold it, and says so in ERR (returns 1 in that case).
 * Returns 0 or 1 (fell back) and fills *OUT (mapped read-write), or -errno with ERR.
 */
int shm_arena_create(const struct shm_arena_spec *spec, struct shm_map *out, char *err,
                     size_t errlen);

/*
 * shm_arena_sweep - remove the temporary files that builders of SPEC's arena left when they were
 * killed mid-way (named temporaries: file systems without O_TMPFILE, or older versions), in
 * every directory the arena may be built in. A temporary whose builder is alive is locked by it
 * and kept. FN (may be NULL) is told each removal: its path and size. Returns how many were
 * removed, or -errno. Not thread-safe with itself on one directory; safe against live builders.
 */
typedef void (*shm_sweep_fn)(void *ctx, const char *path, uint64_t bytes);
int shm_arena_sweep(const struct shm_arena_spec *spec, shm_sweep_fn fn, void *ctx);

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
 * shm_arena_configure - make the limiters of an attached, writable arena match SPEC (daemon
 * only, single writer): a limiter with the same table geometry keeps its table and every bucket,
 * and gets a new parameter record if its parameters changed; a new limiter is allocated from the
 * spare heap. A limiter whose capacity or shard count changed cannot be resized in place: -EBUSY
 * with ERR naming it. A live limiter missing from SPEC is retired (clients get -EIDRM; its table
 * and buckets are kept), and a retired one configured again with the same geometry is revived
 * with its buckets. Returns 0 or -errno with ERR; on error nothing was changed.
 */
int shm_arena_configure(struct shm_map *m, const struct shm_arena_spec *spec, char *err,
                        size_t errlen);

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

/*
 * shm_daemon_lock - take the daemon's exclusive lock on the arena (an open-file-description
 * write lock on byte 0, which the kernel drops when the holder exits). Returns 0, or -EBUSY if
 * another process holds it (*HOLDER set to its pid when known).
 * shm_daemon_alive - whether some process holds that lock (works on a read-only fd).
 * Returns 1 alive, 0 not, -errno.
 */
int shm_daemon_lock(struct shm_map *m, pid_t *holder);
int shm_daemon_alive(const struct shm_map *m, pid_t *holder);

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

/* ---------------------------------------------------------------- hashing */

/* shm_hash - SipHash-1-3 of KEY keyed with the arena's secret (hash.h). Thread-safe, pure. */
#include "hash.h"

/* ---------------------------------------------------------------- key table */

/*
 * shm_table_lookup - the live slot of KEY (hash H) in table TB, or NULL if absent (inline, in
 * table_lookup.h). Lock-free, wait-free in the table size; reads only. The caller is inside a
 * read-side section.
 */
#include "table_lookup.h"

/* What an insert needs besides the key: a new key's starting state, and the on_full policy. */
struct shm_insert {
        uint64_t start_tat; /* units: now + (B - initial) * T, or THR_TAT_FRESH */
        uint64_t now;       /* units: debts (on_full = evict, the shard floor) count from it */
        uint32_t on_full;   /* enum thr_on_full; only THR_FULL_EVICT acts here */
        /* optional: the state to publish for a new key that starts at START, so that its first
         * request is charged in the step that publishes it (no window in which an uncharged new
         * key can be evicted by another inserter). NULL: START itself. Called under the lock. */
        uint64_t (*first)(void *ctx, uint64_t start);
        void *ctx;
};

/* ---------------------------------------------------------------- shard insert lock */

/*
 * The shard's insert lock (shardlock.c has the argument): a word changed only by CAS, whose value
 * names the holder. shm_lock_client: the value for the thread owning reader record IDX with owner
 * TOKEN; shm_lock_daemon: the value for the daemon of attach number ATTACH.
 */
#define THR_LOCK_DAEMON      (1ull << 63)
#define THR_LOCK_WAIT_NS     20000000ull    /* default: a new key's insert waits this long */
#define THR_LOCK_WAIT_MAX_NS 60000000000ull /* ... and at most this (params.lock_wait_ns) */
uint64_t shm_lock_client(uint32_t reader_idx, uint64_t token);
uint64_t shm_lock_daemon(uint64_t attach);

/*
 * shm_shard_lock - take P's shard lock as ME, waiting at most WAIT_NS for a live holder; a holder
 * found dead is taken over and the shard repaired first. Cancellation is disabled while waiting.
 * Returns 0, -ETIMEDOUT (a live holder kept it: the caller applies on_full), -EDEADLK (ME holds
 * it already: a signal handler nested in this thread's own insert).
 * shm_shard_trylock - one attempt (and a takeover of a dead holder); never waits: 0, -EBUSY,
 * -EDEADLK. The daemon only ever tries.
 * shm_shard_unlock - give it back (a CAS from ME: nothing happens if it was taken over).
 * shm_lock_holder_gone - whether the holder named by lock value V is gone (syscalls: a lock test
 * on M's descriptor, maybe pidfd_open). Never trusts V beyond M's checked geometry.
 */
int shm_shard_lock(const struct shm_map *m, struct shm_probe *p, uint64_t me, uint64_t wait_ns);
int shm_shard_trylock(const struct shm_map *m, struct shm_probe *p, uint64_t me);
void shm_shard_unlock(struct shm_probe *p, uint64_t me);
bool shm_lock_holder_gone(const struct shm_map *m, uint64_t v);

/*
 * shm_shard_repair - with P's lock just taken over from a dead holder: slots it left BUSY become
 * reusable (never LIVE, so no reader holds them) and the shard's live count is recounted.
 */
void shm_shard_repair(struct shm_probe *p);

/* ---------------------------------------------------------------- key table */

/*
 * shm_table_insert_locked - with P's shard lock held and inside a read-side section: the live
 * slot of KEY, inserting it if absent (starting at A->start_tat, or the shard's floor if that is
 * higher, then through A->first) in the first reclaimed or EMPTY slot of its probe run. When the
 * table or shard is full and A->on_full is THR_FULL_EVICT, the shard's least-indebted key is
 * evicted first. *CREATED says whether this call inserted. Returns 0 or -ENOSPC (counted in
 * insert_fail).
 * shm_table_insert - the same with the lock taken (as ME, waiting THR_LOCK_WAIT_NS) and released
 * inside, starting state FRESH, policy deny (tests, tools). Also -ETIMEDOUT, -EDEADLK.
 */
int shm_table_insert_locked(void *base, struct thr_table *tb, struct shm_probe *p, const void *key,
                            uint32_t len, const struct shm_insert *a, struct thr_slot **out,
                            bool *created);
int shm_table_insert(const struct shm_map *m, struct thr_table *tb, uint64_t h, const void *key,
                     uint32_t len, uint64_t me, struct thr_slot **out, bool *created);

/*
 * shm_slot_retire - second step of an eviction, with the shard lock held, after the state word
 * was CASed to THR_TAT_DEAD: meta LIVE -> DEAD carrying grace period TAG (the slot is reusable
 * once that period is done). Returns true for the one caller that made the change (it uncounted
 * the key).
 */
bool shm_slot_retire(struct thr_table *tb, struct thr_shard *sh, struct thr_slot *s, uint32_t tag);

/*
 * shm_table_reconcile - make the table's live count the sum of its shards' (exact: each changes
 * only under its shard's lock), with every shard lock held as ME for the few loads it takes. The
 * table's count drifts only when an inserter dies between taking a unit of capacity and
 * publishing. GEO: a checked private copy of the table header. Only tries the locks: returns 0,
 * -EBUSY (one is held by a live holder: try later). Never sleeps.
 */
int shm_table_reconcile(const struct shm_map *m, uint64_t tb_off, const struct thr_table *geo,
                        uint64_t me);

/* shm_table_repairs - sum of the shards' repair counters (GEO: checked copy of the header). */
uint64_t shm_table_repairs(const void *base, const struct thr_table *geo);

/* shm_table_count - live slots counted by walking every slot (tests, shmctl); < 0 on corruption. */
int64_t shm_table_count(const void *base, const struct thr_table *tb);

/* ---------------------------------------------------------------- reclamation (reclaim.c) */

/*
 * Reader liveness: record IDX is held by an open-file-description write lock on byte
 * THR_LOCK_READERS + IDX of the arena file. shm_reader_lock takes it on FD (0, -EAGAIN when held
 * elsewhere, -errno); shm_reader_unlock drops it; shm_reader_alive tests it (1 held, 0 free,
 * -errno; works on a read-only descriptor).
 */
int shm_reader_lock(int fd, uint32_t idx);
void shm_reader_unlock(int fd, uint32_t idx);
int shm_reader_alive(int fd, uint32_t idx);

/*
 * shm_reader_gone - whether the owner of record R (index IDX, owner word set) is gone: its
 * liveness lock is free, or it is held only by a descriptor that outlived the process whose pid
 * the record carries (a _Fork child's copy: readers.c). 1 gone, 0 alive or unknown, -errno.
 * shm_pid_gone - whether process PID (in this pid namespace) has exited, zombie included:
 * 1 gone, 0 alive or not a pid.
 */
int shm_reader_gone(int fd, const struct thr_reader *r, uint32_t idx);
int shm_pid_gone(uint64_t pid);

/*
 * shm_membarrier_register - a client process registers for MEMBARRIER_CMD_GLOBAL_EXPEDITED; when
 * it cannot, it sets the header's mb_fallback so the daemon uses MEMBARRIER_CMD_GLOBAL.
 * Returns 0 or -errno (the fallback was set).
 */
int shm_membarrier_register(struct thr_hdr *h);

/*
 * shm_gp_start - start grace period *GP: bump the counter, then membarrier() so every reader's
 * online word is ordered with the scan that follows. Daemon only. Returns 0 or -errno (no
 * membarrier: nothing may be reclaimed); the header's gp_error says which (0 once they work).
 */
int shm_gp_start(struct shm_map *m, uint64_t *gp);

/* shm_membarrier_query - the membarrier commands this kernel offers (a mask), or -errno. */
int shm_membarrier_query(void);

enum shm_gp_event { SHM_GP_STALLED = 1, SHM_GP_RESUMED = 2, SHM_GP_FORCED = 3 };
typedef void (*shm_gp_report_fn)(void *ctx, uint32_t idx, const struct thr_reader *r,
                                 enum shm_gp_event ev);

struct shm_gp_result {
        uint64_t done;     /* slots retired with a tag <= done may be reused */
        uint32_t readers;  /* records owned */
        uint32_t blocking; /* alive and inside a section older than the grace period */
        uint32_t stalled;  /* of those, blocking for stall_ns or more */
        uint32_t forced;   /* dead owners forced offline by this scan */
};

/*
 * shm_gp_scan - after shm_gp_start(GP): read every reader record. Offline readers, and readers
 * whose section began after GP started, are past it; a blocker whose process is dead is forced
 * offline (see reap); a live blocker holds DONE back to its snapshot and is reported through
 * REPORT once it has blocked for STALL_NS (and again when it resumes). Writes only the records'
 * daemon line and hdr->gp_done. Returns 0 or -errno.
 */
int shm_gp_scan(struct shm_map *m, uint64_t gp, uint64_t now_ns, uint64_t stall_ns,
                struct shm_gp_result *res, shm_gp_report_fn report, void *ctx);

/* shm_readers_reap - free the records of every dead owner, online or not. Returns how many. */
int shm_readers_reap(struct shm_map *m);

/* The grace-period tag for slots the daemon retires now (the next period to start). */
uint32_t shm_retire_tag(const struct thr_hdr *h);

/*
 * shm_tag_done - whether a slot retired with 32-bit TAG may be reused, DONE being the last grace
 * period a scan of this process saw complete (0: none yet, nothing is reused) and COUNTER the
 * arena's grace-period counter read now. The tag is widened to the 64-bit period it stands for,
 * the latest one not beyond COUNTER + 2 (reclaim.c): never earlier than the true one.
 */
bool shm_tag_done(uint32_t tag, uint64_t done, uint64_t counter);

struct shm_maint_args {
        uint64_t now_units; /* arena time in the limiter's units */
        uint64_t ttl_units; /* idle TTL in units; 0: no idle eviction */
        uint32_t tag;       /* grace-period tag for slots retired by this pass */
        uint64_t done;      /* last grace period this daemon saw complete (0: none yet) */
        uint64_t me;        /* the daemon's shard-lock value (shm_lock_daemon) */
};

struct shm_maint_stats {
        uint64_t scanned, live, evicted, finished, reclaimed, retiring, trimmed, repaired;
        uint32_t busy_shards; /* shards whose lock was held: eviction and trimming wait */
};

/*
 * shm_table_maintain - one bounded step of the daemon's pass over the table of SNAP (checked
 * copy) in M: about BUDGET slots, whole shards from *CURSOR on. Makes retired slots whose grace
 * period is done reusable (lock-free); then, holding the shard lock (tried as A->me, never waited
 * for; a dead holder's is taken over and the shard repaired) in segments of bounded length,
 * evicts live keys idle past the TTL (CAS from the observed state: an admission wins), finishes
 * evictions whose evictor died, and trims reclaimed slots no live key's probe path crosses.
 * Returns true when the cursor wrapped (a whole pass over the table is complete).
 */
bool shm_table_maintain(const struct shm_map *m, const struct shm_lim_snap *snap,
                        const struct shm_maint_args *a, uint32_t *cursor, uint64_t budget,
                        struct shm_maint_stats *st);

/* ---------------------------------------------------------------- GCRA */

struct shm_gcra {
        bool admitted;
        uint64_t new_tat;     /* state to store if admitted (units) */
        uint64_t remaining;   /* tokens */
        uint64_t retry_units; /* 0 if admitted */
        uint64_t reset_units;
};

/*
 * shm_gcra_step - the GCRA decision for COST at NOW (units) on stored state TAT (units or
 * THR_TAT_FRESH), per DESIGN.md section 5. COST <= B is the caller's check. Pure.
 */
static inline void shm_gcra_step(const struct thr_params *p, uint64_t tat, uint64_t now,
                                 uint64_t cost, struct shm_gcra *g)
{
        if (tat == THR_TAT_FRESH)
                tat = now + (p->burst - p->initial) * p->t_units;
        uint64_t base = tat > now ? tat : now;
        uint64_t new_tat = base + cost * p->t_units;
        g->admitted = new_tat - now <= p->bt_units;
        g->new_tat = new_tat;
        g->reset_units = (g->admitted ? new_tat : base) - now;
        g->retry_units = g->admitted ? 0 : new_tat - p->bt_units - now;
        g->remaining =
            g->reset_units >= p->bt_units ? 0 : (p->bt_units - g->reset_units) / p->t_units;
}

/*
 * Whether a limiter's numbers keep every TAT computation inside 64 bits for the arena's life.
 * The largest value the arithmetic forms is now + 2*B*T + R: a TAT pushed by reservations to
 * now + B*T + R, plus a request of cost up to B (or a fresh key's start, <= now + B*T). now is
 * below the 20-year horizon in units (HORIZON * K). Used by shm_params_make and the validator.
 */
#define THR_HORIZON_NS (20ull * 365 * 24 * 3600 * 1000000000ull)
static inline bool shm_params_range_ok(uint64_t burst, uint64_t t_units, uint64_t reserve_units,
                                       uint64_t k)
{
        __uint128_t worst =
            2 * (__uint128_t)burst * t_units + reserve_units + (__uint128_t)THR_HORIZON_NS * k;
        return worst < (__uint128_t)THR_TAT_LIMIT;
}

/* Units of 1/K ns -> ns, rounded up (a retry after that many ns is never early). */
static inline uint64_t shm_units_to_ns(const struct thr_params *p, uint64_t u)
{
        if (p->k == 1) /* whole-ns intervals, the usual case: no division on the hot path */
                return u;
        return u / p->k + (u % p->k != 0);
}

#endif

/*
 * table.h - the per-limiter key table and its shard insert locks: lookup (inline), insert,
 * retirement, counts. The table stores per-key state it does not interpret: each limiter kind
 * (gcra.h, window.h) decides on it. Used by libthrottle-client, throttled, shmctl and the tests.
 */
#ifndef THR_SHM_TABLE_H
#define THR_SHM_TABLE_H

#include "arena.h"

/* ---------------------------------------------------------------- hashing */

/* shm_hash - the multilinear hash of KEY keyed with the arena's hash keys (hash.h). Inline,
 * thread-safe, pure. */
#include "hash.h"

/*
 * A key's stored form (layout.h, keydigest.h): the key itself up to THR_KEY_INLINE bytes, else its
 * prefix and a keyed digest. The table functions below take a key as its stored form and its real
 * length, and its hash as shm_stored_hash of that (shm_key_hash from the key itself).
 */
#include "keydigest.h"

/* ---------------------------------------------------------------- key table */

/*
 * shm_table_lookup - the live slot of KEY (its stored form, real length LEN, hash H) in table TB,
 * or NULL if absent (inline, in table_lookup.h). Lock-free, wait-free in the table size; reads
 * only. The caller is inside a read-side section.
 */
#include "table_lookup.h"

/* What an insert needs besides the key: its limiter's kind, a new key's starting state, on_full. */
struct shm_insert {
        const struct thr_params *p; /* the limiter's record (its kind); NULL: GCRA */
        uint64_t start_tat;         /* GCRA: units, now + (B - initial) * T, or THR_TAT_FRESH */
        uint64_t now;     /* units: debts (on_full = evict, the shard floor) count from it */
        uint32_t on_full; /* enum thr_on_full; only THR_FULL_EVICT acts here */
        /* the table's geometry and caps as the caller validated them (a client's copy, which no
         * other client can rewrite); NULL: the table's own words. The table's counters are TB's. */
        const struct thr_table *geo;
        /* optional: the state to publish for a new key in slot S that starts at START (its aux
         * storage set up already), so that its first request is charged in the step that
         * publishes it (no window in which an uncharged new key can be evicted by another
         * inserter). NULL: START itself. Called under the lock, before S is LIVE. */
        uint64_t (*first)(void *ctx, struct thr_slot *s, uint64_t start);
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
 * -EDEADLK. The daemon tries, after shm_shard_handoff (a bounded wait for clients, never longer).
 * shm_shard_lock_free - one CAS 0 -> ME, nothing else (no takeover, no wait, no syscall): true if
 * the lock was free and is now ME's. shm_shard_lock's own first step; a caller that must know
 * whether it waited (op_insert keeps its read-side section and its clock reading then) calls
 * this first and shm_shard_lock only when it fails.
 * shm_shard_unlock - give it back (a CAS from ME: nothing happens if it was taken over).
 * shm_lock_holder_gone - whether the holder named by lock value V is gone (syscalls: a lock test
 * on M's descriptor, maybe pidfd_open). Never trusts V beyond M's checked geometry.
 */
int shm_shard_lock(const struct shm_map *m, struct shm_probe *p, uint64_t me, uint64_t wait_ns);
/*
 * shm_shard_handoff - for a holder that has just unlocked P's shard and will take the lock again
 * at once: if a waiter announced itself within THR_HANDOFF_FRESH_NS, wait (spinning) at most
 * WINDOW_NS for somebody to take the lock, then at most WINDOW_NS for it to be free again; if
 * somebody holds it already, only the second. Returns the ns spent (0 at once when the lock is
 * free and nobody waits). Never takes the lock.
 */
#define THR_HANDOFF_FRESH_NS 1000000ull
uint64_t shm_shard_handoff(struct shm_probe *p, uint64_t window_ns);
int shm_shard_trylock(const struct shm_map *m, struct shm_probe *p, uint64_t me);
bool shm_shard_lock_free(struct shm_probe *p, uint64_t me);
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
 * slot of KEY (its stored form, real length LEN), inserting it if absent (starting at A->start_tat,
 * or the shard's floor if that is higher, then through A->first) in the first reclaimed or EMPTY
 * slot of its probe run. When the table or shard is full and A->on_full is THR_FULL_EVICT, the
 * shard's least-indebted key is evicted first. *CREATED says whether this call inserted. Returns 0
 * or -ENOSPC (counted in insert_fail).
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
 * the key; with TB NULL, from the shard's count only: the caller then gives the table's units back
 * with shm_table_uncount before it lets the lock go).
 * shm_table_uncount - N units of TB's live count given back (saturating at 0).
 */
bool shm_slot_retire(struct thr_table *tb, struct thr_shard *sh, struct thr_slot *s, uint32_t tag);
void shm_table_uncount(struct thr_table *tb, uint64_t n);

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

/*
 * shm_tag_done - whether a slot retired with 32-bit TAG may be reused, DONE being the last grace
 * period known complete (the daemon: its own scans', 0 until the first; an inserter: the header's
 * gp_done, which a daemon's scan stores; 0: none yet, nothing is reused) and COUNTER the
 * arena's grace-period counter read now. The tag is widened to the 64-bit period it stands for,
 * the latest one not beyond COUNTER + 2 (table.c): never earlier than the true one.
 */
bool shm_tag_done(uint32_t tag, uint64_t done, uint64_t counter);

/* shm_table_count - live slots counted by walking every slot (tests, shmctl); < 0 on corruption. */
int64_t shm_table_count(const void *base, const struct thr_table *tb);

#endif

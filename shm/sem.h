/*
 * sem.h - semaphore keys (kind = semaphore): at most `max` units held per key at any instant,
 * across every process of the host, by leases. A lease is a record in the key (holder, amount,
 * acquired at, expires at, generation); a restarted daemon finds every lease where it was.
 *
 * Where the state is. A key's aux storage is a header (struct thr_sem: the units held, the
 * records in use, the FIFO ticket counter, the generation counter, statistics) followed by
 * `leases_per_key` lease records (struct thr_lease_rec). A pending acquire is described in the
 * waiting thread's reader record, as a serialized window's waiter is (serial.h): which key
 * (wait_slot, wait_gen), its place and amount (wait_ticket), the lease it asks for (wait_ttl, and
 * the holder it names: wait_holder, wait_holder_idx), and the futex word it sleeps on (wait_state).
 *
 * Who holds a lease. Not the thread that asked: the process. Each process that takes leases
 * claims one reader record for the purpose (its lease record, libclient/reader.c), kept until the
 * process closes the arena or dies; a lease names that record's index and owner token. A lease
 * is the holder's while the record has that owner and its liveness lock is held (readers.h);
 * once the process is gone (or has closed the arena) the lease is reclaimable. A thread that
 * exits leaves its process's leases alone: the handle may be released by any other thread.
 *
 * The protocol. Every change of a key's header and lease records, and every change of a
 * waiter's fields but its own futex sleep, is made under the key's shard lock (shardlock.c: a
 * CAS word whose holder, when found dead, is taken over). Under it:
 *   - the records are the truth; held and leases in the header are their sums, kept by each
 *     change, and trusted only when the last locker finished: a locker marks the header dirty
 *     before it changes records or sums and clears the mark when they agree again, and a locker
 *     that finds the mark set (its setter died holding the lock, which was taken over) recounts
 *     the sums from the records first. So a process killed between filling a record and raising
 *     the sum can never lose or double a count, and an uncontended acquire reads two words and
 *     the first free record instead of every record. The sums may count leases that expired
 *     since: a take that the sums refuse sweeps the records (clearing the expired) and decides
 *     again; every serve sweeps.
 *   - a lease is granted only if held + amount <= max, and only to the oldest live waiter when
 *     any is queued (a new acquire never overtakes one: a large request at the head is not
 *     starved by small ones behind it);
 *   - a lease whose expires_ns has passed, or whose holder is gone, is cleared by whoever holds
 *     the lock and finds it (shm_sem_serve): an acquire that does not fit, a waiter's periodic
 *     check, the daemon's maintenance pass. Expired leases are cleared by every serve (no
 *     syscall); holders' liveness is tested (one fcntl each) only when something does not fit.
 *   - a wait is named by its reader record and its epoch: the wait_state word is epoch << 3 |
 *     state, and each enqueue raises the epoch (layout.h). A waiter is granted by filling a
 *     record for it that names its wait (the record's `waiter` word), then CASing its word from
 *     the exact word the serve scanned, WAITING (or HEAD) -> GRANTED of the same epoch, and
 *     waking its futex. A waiter that gives up CASes its word to NONE first, with or without the
 *     lock: one of the two CASes wins, so a grant is either seen by its waiter or taken back (the
 *     record cleared) by its granter; and a waiter that gave up without the lock and queued again
 *     (elsewhere, say) has another epoch, so a granter that scanned its previous wait can never
 *     grant the new one. The waiter finds its lease by the name it carries and takes it (the
 *     `waiter` word CASed to 0) before its word leaves GRANTED.
 *   - a queued amount above max (a reload lowered max while it waited) can never fit: the serve
 *     that finds it at the head CASes its word WAITING (or HEAD) -> REFUSED and wakes it (its
 *     caller gets -ERANGE), so it does not hold the queue behind it until its timeout.
 *   - only the head of the queue watches the holders in its way (every THR_SERIAL_POLL_NS: one
 *     liveness test a lease); the waiters behind it sleep. Every serve that ends with a queue
 *     CASes its head's word WAITING -> HEAD and wakes it: the word changes before the wake, and
 *     a waiter sleeps only while its word is what it read, so a wake sent before its sleep is
 *     not lost (it reads HEAD and sleeps as the head). A head killed while queued leaves the
 *     next one WAITING until a serve: the daemon's pass serves every key with waiters, and a
 *     waiter behind the head checks the key itself every SHM_SEM_BEHIND_POLL_NS.
 *   - release and heartbeat name a lease by (record index, generation): a record reused since
 *     has another generation (the key's counter only grows), so a stale handle can never free or
 *     extend someone else's lease: -EKEYEXPIRED.
 *
 * What a process killed at any step leaves. The shard lock is taken over by the next locker,
 * which recounts the sums (above). A grant whose CAS was never made leaves a filled record
 * naming the wait (fill): whoever serves the key next and finds that wait at the head grants it
 * that record instead of filling another, and the waiter's own check under the lock adopts it
 * (libclient/sem.c, adopt); either makes its word GRANTED as the granter would have. If the wait
 * ended meanwhile (gave up at its deadline, or its thread is gone), every sweep finds the record
 * undelivered (its wait no longer waiting or granted, the record still naming it) and clears it.
 * So nothing is granted twice and nothing granted is kept by nobody. A waiter killed while queued
 * is skipped by every serve (its record is gone). A holder killed: its leases are reclaimed at the
 * first serve that needs the count (at once, for an acquire that does not fit), by a queued waiter
 * within THR_SERIAL_POLL_NS, or by the daemon's next maintenance pass; without anyone, it is
 * harmless.
 *
 * Priority (thr_sem_acquire_opts). A waiter's class (0-7, in its wait_flags) and deadline
 * (wait_deadline, arena ns) are written by its owner with the other wait fields, under the lock,
 * before its word is made WAITING. Every serve orders the queue afresh (shm_sem_queue): the
 * highest class first, the lowest ticket within a class; on the share's turn (the grant that
 * makes the key's `granted` count a multiple of priority_share) the lowest ticket of all; a
 * waiter whose deadline is not after now is passed over (it is leaving: its own loop gives up
 * within THR_SERIAL_POLL_NS of the deadline, or 1 ms on a manual clock). Being ordered afresh,
 * the queue keeps no structure a kill can tear: what a serve reads is each waiter's own record.
 * A new head that arrived above the old one is made HEAD and woken as before; the old head keeps
 * its HEAD word and polls (harmless: it finds it is not served, and sleeps again). The share's
 * count is the key's `granted`, which a client can rewrite: it then moves the share's turn, for
 * that key only, never the bound on units.
 * Bounded queues (max_waiters): an acquire about to queue counts the live waiters under the lock
 * (shm_sem_make_room); if they are max_waiters or more, on_queue_full refuses it (-EBUSY) or
 * drops one, its word CASed WAITING (or HEAD) -> DROPPED from the exact word scanned (a waiter
 * that gave up without the lock made it NONE first, and one that waits again has another epoch:
 * neither is dropped) and woken: its caller clears its own wait fields and returns -ECANCELED.
 * A drop and a grant are both made under the lock, so a waiter is never both. The bound is on
 * live waiters: a dead waiter (its thread's record reaped or its liveness lock free) and one
 * past its deadline do not count.
 *
 * Peers (peer.h). A lease may name a peer instead of a process: then it has no expiry of its own
 * (THR_LEASE_PEER in the record, expires_ns UINT64_MAX) and is judged by its peer's expiry word,
 * read through the holder index and token the record names, at every sweep (no syscall): a peer
 * expired, removed or reclaimed with its dead process voids its leases at each key's next
 * serve. The lease record keeps the lock level it was granted at, for its holder's bookkeeping.
 *
 * A semaphore key with a lease or a waiter is pinned: never idle for the daemon, never chosen
 * by on_full = evict (kind.c). Its state word is the arena time of its last change, for
 * idleness.
 */
#ifndef THR_SHM_SEM_H
#define THR_SHM_SEM_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "serial.h"

static inline struct thr_sem *shm_sem(void *aux)
{
        return (struct thr_sem *)aux;
}

static inline struct thr_lease_rec *shm_sem_lease(void *aux, uint32_t i)
{
        return (struct thr_lease_rec *)((char *)aux + THR_SEM_HDR) + i;
}

/* Bytes of a key's aux storage for L lease records. */
static inline uint64_t shm_sem_stride(uint64_t leases)
{
        return THR_SEM_HDR + leases * THR_LEASE_SIZE;
}

/* What a holder asks for: the holder (its process's lease record) and the lease's time. */
struct shm_sem_ask {
        uint64_t holder;
        uint32_t holder_idx;
        uint32_t amount;
        uint64_t ttl_ns;
        uint64_t pid, tid; /* informational */
        uint32_t flags;    /* THR_LEASE_PEER: HOLDER is a peer, whose expiry is the lease's */
        uint32_t level;    /* the limiter's lock level (kept in the record; peer.c) */
};

/* How a serve judges lease holders: trusted alive; gone when their lease record's owner word has
 * changed (no syscall: the daemon frees a dead process's records within a heartbeat); or also
 * when its liveness lock is free (one fcntl a lease). */
enum { SHM_SEM_TRUST = 0, SHM_SEM_OWNERS = 1, SHM_SEM_LIVENESS = 2 };
/* Or'ed into a serve's CHECK: wake the queue's head even if nothing changed (its waiter left, or
 * the daemon's pass: a head killed while queued leaves the next one not watching). */
#define SHM_SEM_WAKE_HEAD 4

/* How often a waiter behind the head checks the key on its own. The head checks every
 * THR_SERIAL_POLL_NS; the others are made head (WAITING -> HEAD, then woken) by the serve that
 * finds them so. This is the bound when no serve comes: the head was killed while queued, and
 * no daemon runs (the daemon's pass serves every key with waiters). */
#define SHM_SEM_BEHIND_POLL_NS (100ull * 1000000)

/* What a serve did and found. */
struct shm_sem_serve {
        uint32_t grant_idx; /* a reader record granted (woken), or UINT32_MAX */
        uint32_t head_idx;  /* the reader record at the head of the queue after it, or UINT32_MAX */
        uint32_t head_word; /* its wait word as scanned */
        uint32_t waiters;   /* waiters still queued */
        uint64_t head_ticket; /* the lowest ticket still queued (48 bits), or UINT64_MAX */
        uint64_t room_at;     /* the head does not fit: when the first lease expires (0: none) */
        uint32_t freed;       /* leases reclaimed (expired or dead) */
        bool no_record;       /* the head fits in count but every lease record is in use */
};

/*
 * All under S's shard lock, in the arena M, with the aux storage AUX of slot S, P its limiter's
 * record (p->rate_n = max, p->leases records).
 *
 * shm_sem_take - grant ASK now if nobody is queued, it fits and a record is free: 0 and the
 * record's index and generation; -EAGAIN (does not fit, or others queued), -ENOBUFS (fits, no
 * record free).
 * shm_sem_serve - clear expired leases, and leases whose holder is gone as CHECK judges
 * (SHM_SEM_*; a head that does not fit always has the holders in its way judged by liveness);
 * grant the queued waiters oldest first while the head fits (FUTEX_WAKE each). Then, if the
 * queue's head is not SELF (the caller's reader record, or UINT32_MAX) and it may have just
 * become the head (a grant or a reclaim was made, or CHECK has SHM_SEM_WAKE_HEAD), wake it: the
 * head watches the holders in its way, the waiters behind it sleep. Fills OUT.
 * shm_sem_release / shm_sem_extend - the lease (IDX, GEN) of HOLDER (the owner token of the
 * caller's process's lease record): cleared, or its expiry set to EXPIRES. 0; -EKEYEXPIRED: it
 * was reclaimed (the record is free or another lease's), or it has expired at NOW (then it is
 * reclaimed here: its holder learns it held nothing since); -EPERM: it is another process's (a
 * fork child's copy of its parent's handle), left alone.
 */
int shm_sem_take(const struct shm_map *m, const struct thr_params *p, void *aux,
                 const struct shm_sem_ask *ask, uint64_t now, uint32_t *idx, uint64_t *gen);
void shm_sem_serve(const struct shm_map *m, const struct thr_params *p, struct thr_slot *s,
                   void *aux, uint64_t now, int check, uint32_t self, struct shm_sem_serve *out);
int shm_sem_release(const struct shm_map *m, const struct thr_params *p, void *aux, uint32_t idx,
                    uint64_t gen, uint64_t holder, uint64_t now);
int shm_sem_extend(const struct shm_map *m, const struct thr_params *p, void *aux, uint32_t idx,
                   uint64_t gen, uint64_t holder, uint64_t now, uint64_t expires);

/*
 * shm_sem_resize - under the lock: the lease (IDX, GEN) of HOLDER now holds AMOUNT units. Fewer
 * always (the caller serves the queue after); more only if they fit now and nobody is queued
 * (-EAGAIN, the lease unchanged). -EKEYEXPIRED, -EPERM as shm_sem_release.
 */
int shm_sem_resize(const struct shm_map *m, const struct thr_params *p, void *aux, uint32_t idx,
                   uint64_t gen, uint64_t holder, uint64_t now, uint32_t amount);

/* When lease R expires, as judged at NOW: its own expires_ns, or its peer's (0 once the peer is
 * dead; KILL: an expired peer is killed here, peer.h). Inline: every sweep asks it of every lease
 * in use. */
uint64_t shm_sem_peer_expiry(const struct shm_map *m, const struct thr_lease_rec *r, uint64_t now,
                             bool kill);
static inline uint64_t shm_sem_expiry(const struct shm_map *m, const struct thr_lease_rec *r,
                                      uint64_t now, bool kill)
{
        if (!(atomic_load_explicit(&r->flags, memory_order_relaxed) & THR_LEASE_PEER))
                return atomic_load_explicit(&r->expires_ns, memory_order_relaxed);
        return shm_sem_peer_expiry(m, r, now, kill);
}

/* The acquires queued on slot S at NOW, as a serve orders them ("Priority" above; the share's
 * turn from the key's `granted`): shm_waiters_order (serial.h). Under the key's lock. */
void shm_sem_queue(const struct shm_map *m, const struct thr_params *p, const struct thr_slot *s,
                   const void *aux, uint64_t now, struct shm_wait_order *q);

/*
 * shm_sem_make_room - under the lock, before an acquire of class PRIO queues on slot S: with the
 * limiter's max_waiters reached, its on_queue_full decides: reject (-EBUSY), drop the oldest, or
 * drop the last of the lowest class if that class is below PRIO (else -EBUSY). With drop_oldest,
 * an acquire with a DEADLINE (arena ns, 0 none) does not drop a waiter that would wait as long
 * longer (no deadline, or a later one): it is refused instead. A dropped waiter's
 * word goes WAITING (or HEAD) -> DROPPED, and it is woken (its caller gets -ECANCELED). Returns 0
 * (queue it; *DROPPED says how many were dropped for it) or -EBUSY.
 */
int shm_sem_make_room(const struct shm_map *m, const struct thr_params *p, const struct thr_slot *s,
                      const void *aux, uint64_t now, uint32_t prio, uint64_t deadline,
                      uint32_t *dropped);

/* The acquires queued on slot S (any live thread's record naming it, WAITING or HEAD, its
 * deadline after NOW: as shm_sem_queue and max_waiters count them): how many,
 * the units they ask, and how long the oldest has waited at NOW. Exact under the key's lock; a
 * racy read without it (for stat and shmctl). One liveness test (fcntl) a waiter. */
struct shm_sem_pend {
        uint32_t waiters;
        uint64_t units;
        uint64_t longest_ns;
};
void shm_sem_pending(const struct shm_map *m, const struct thr_slot *s, uint64_t now,
                     struct shm_sem_pend *out);

/* The waiter id of a lease granted to the wait WORD of reader record IDX (thr_lease_rec.waiter):
 * nonzero, and another for each wait of the record (its epoch, layout.h). */
static inline uint64_t shm_sem_waiter_id(uint32_t idx, uint32_t word)
{
        return ((uint64_t)idx + 1) << 32 | THR_WAIT_EPOCH(word);
}

/* Under the lock: the record of a lease granted to waiter WID for HOLDER, of a generation at
 * least FLOOR (the key's next generation when the wait began: a lease that existed before the
 * wait, its waiter word rewritten, is never taken for its grant), or UINT32_MAX. */
uint32_t shm_sem_find_waiter(const struct thr_params *p, void *aux, uint64_t wid, uint64_t holder,
                             uint64_t floor);

/* Clear a new key's header and records (under the lock, before the slot is LIVE). */
void shm_sem_fresh(const struct thr_params *p, void *aux);

/* Whether the key has a lease record in use or a waiter (it may not be evicted): the records
 * themselves, not the header's sums (exact under the lock, as the daemon and on_full ask). */
bool shm_sem_pinned(const struct thr_params *p, const void *aux);

/* Whether the key has a lease that a serve would reclaim at NOW (expired, or its holder's lease
 * record has another owner), or a waiter (whose head the daemon's serve wakes): a racy read
 * without the lock, for the daemon's pass to decide whether to take it. */
bool shm_sem_reapable(const struct shm_map *m, const struct thr_params *p, const void *aux,
                      uint64_t now);

/* Whether lease record R's holder is gone, as CHECK (SHM_SEM_OWNERS or _LIVENESS) judges: its
 * reader record in M has another owner, or (LIVENESS) its liveness lock is free. */
bool shm_sem_holder_gone(const struct shm_map *m, const struct thr_lease_rec *r, int check);

#endif

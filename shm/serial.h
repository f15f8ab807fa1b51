/*
 * serial.h - serialized window keys (serialize = yes): at most one holder per key at a time,
 * across every process of the host; waiters are served in FIFO order; the window counts
 * completions (at most N completed units in every interval of length W).
 *
 * Where the state is. A key's header (struct thr_serial, the first bytes of its aux storage)
 * names the holder: the owner token and index of its reader record (hold_token, hold_idx) and
 * the units its end will complete (hold_cost). A waiter is described in its own reader record
 * (wait_slot, wait_gen, wait_ticket, wait_state): which key, its place (a ticket taken from the
 * key's next_ticket) and cost, and the futex word it sleeps on. So a waiter needs no room in the
 * key, any number of them can queue, and whether a waiter or the holder is alive is the liveness
 * of its reader record (its byte lock, readers.h), which the kernel drops when the process dies.
 *
 * The protocol. Every change of a key's header, and every change of a waiter's fields but the
 * waiter's own futex sleep, is made under the key's shard lock (shardlock.c: a CAS word whose
 * holder, when found dead, is taken over; a live holder is waited for a bounded time). Under it,
 * shm_serial_serve does all the work, from any process that has the lock (a begin, an end, a
 * waiter checking, the daemon's maintenance):
 *   1. a holder whose reader record is gone (the process died, or the record was reused) is
 *      released: its units are logged as completed now (conservative: it may have finished
 *      earlier, never later), hold_cost is zeroed, then hold_token;
 *   2. with no holder, the live waiter with the lowest ticket (the head) is granted the hold if
 *      the window has room for its cost now: hold_idx, hold_cost, hold_since, then hold_token
 *      (that store is the grant), then its wait_state WAITING -> GRANTED (a CAS) and a futex
 *      wake of that word. Without room, it reports when the room comes (the head sleeps until
 *      then).
 * A completion is logged as a window admission would be (window.h: the units' times staged, then
 * a CAS of the state word), at the time of the end, by the holder or (dead) by whoever releases
 * it. As only one holder exists and it only ends after being granted with room for its cost at
 * grant time G <= its end E, the window (E - W, E] holds at most the N - c units that were in
 * (G - W, G] (nothing else completes in between) plus its c: at most N, in every position.
 *
 * What a process killed at any step leaves. The shard lock is taken over by the next locker.
 *   - Between logging a dead holder's (or its own) completion and zeroing hold_cost: the units
 *     are logged a second time by the next serve (over-denial of c units for at most W).
 *   - Between zeroing hold_cost and hold_token: the hold is released by the next serve, logging
 *     nothing more.
 *   - Between the grant's store and the waiter's CAS: the waiter finds hold_token naming it at
 *     its next check (it checks at least every THR_SERIAL_POLL_NS), and proceeds.
 *   - A waiter killed while queued: it is skipped by every serve (its record is gone), and its
 *     record's fields are cleared when another thread claims the record.
 *   - A holder killed: released at the next serve, which waiters run at least every
 *     THR_SERIAL_POLL_NS: the bound on the time a dead holder keeps others waiting, plus the
 *     shard lock's wait (a bounded critical section: one scan of the reader records).
 * A holder that is alive but stopped (SIGSTOP) keeps the hold: waiters time out. There is no
 * lease: a hold is the caller's, as a mutex is.
 *
 * A serialized key with a holder or waiters is pinned: never idle for the daemon, never chosen by
 * on_full = evict (kind.c). A retired limiter keeps its table, so a holder's end still finds it.
 */
#ifndef THR_SHM_SERIAL_H
#define THR_SHM_SERIAL_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"

/* What a serve did and found. */
struct shm_serve {
        uint32_t grant_idx;   /* reader record granted the hold (woken), or UINT32_MAX */
        uint32_t waiters;     /* waiters still queued */
        uint64_t head_ticket; /* the lowest ticket still queued, or UINT64_MAX */
        uint64_t room_at;     /* no holder, the head waits for room: when it comes (arena ns) */
        bool released;        /* a dead holder's hold was released */
        bool held;            /* a live holder holds the key after the serve */
};

/* The header of a serialized key's aux storage. */
static inline struct thr_serial *shm_serial(void *aux)
{
        return (struct thr_serial *)aux;
}

/*
 * shm_serial_serve - under S's shard lock, in the table TB of the arena M (its reader records,
 * and its descriptor for liveness tests): release a dead holder, grant the head waiter if it
 * fits at NOW. P is the limiter's record. Wakes the granted waiter (FUTEX_WAKE). Fills OUT.
 */
void shm_serial_serve(const struct shm_map *m, const struct thr_table *tb,
                      const struct thr_params *p, struct thr_slot *s, uint64_t now,
                      struct shm_serve *out);

/* shm_serial_complete - under the lock: log COST completed units of key S at NOW. */
void shm_serial_complete(const struct thr_params *p, struct thr_slot *s, void *aux, uint64_t cost,
                         uint64_t now);

/* Whether a serialized key has a holder or queued waiters (it may not be evicted). */
bool shm_serial_pinned(const void *aux);

/* A queued waiter, as found in the reader records. */
struct shm_waiter {
        uint32_t idx;  /* its reader record */
        uint32_t word; /* its wait_state as scanned (state and epoch): what a CAS expects */
        uint64_t token, ticket;
};

/*
 * shm_waiters_scan - the live waiters for slot OFF (generation GEN) of M, a serialized window's
 * (state WAITING or HEAD), in FIFO order (shm_waiters_order with none passed over): how many, and
 * in *HEAD the one with the lowest ticket (wrap-around order). A record reused meanwhile, or whose
 * thread is dead, is not counted. Under the key's shard lock; one liveness test (fcntl) a waiter.
 */
uint32_t shm_waiters_scan(const struct shm_map *m, uint64_t off, uint32_t gen,
                          struct shm_waiter *head);
/* Whether wait word WORD is waiting (WAITING, or a semaphore's HEAD). */
static inline bool shm_wait_waiting(uint32_t word)
{
        return THR_WAIT_STATE(word) == THR_WAIT_WAITING || THR_WAIT_STATE(word) == THR_WAIT_HEAD;
}

/* The wait WORD (as scanned) of reader record R goes to STATE, if it is still that wait and
 * still waiting (its waiter may have left, CASing it to NONE, without the lock). */
static inline bool shm_wait_to(struct thr_reader *r, uint32_t word, uint32_t state)
{
        uint32_t cur = word;
        while (THR_WAIT_EPOCH(cur) == THR_WAIT_EPOCH(word) && shm_wait_waiting(cur))
                if (atomic_compare_exchange_weak_explicit(
                        &r->wait_state, &cur, THR_WAIT_AS(cur, state), memory_order_acq_rel,
                        memory_order_relaxed))
                        return true;
        return false;
}

/*
 * shm_waiters_order - the live waiters for slot OFF (generation GEN) of M as a queue with classes
 * orders them (semaphores and budgets, sem.h "Priority"): those WAITING or HEAD whose deadline
 * (wait_deadline, 0 none) is after NOW, counted in Q->n; Q->next the one served next (the
 * highest class, bits 16..18 of wait_flags, the lowest ticket within it; the lowest ticket of all
 * when OLDEST_TURN); Q->oldest; Q->lowest (the highest ticket of the lowest class: the one served
 * last); Q->sum the sum of their wait_ttl words, saturated. One liveness test a waiter.
 */
struct shm_wait_order {
        uint32_t n;
        uint32_t next_class, lowest_class;
        struct shm_waiter next, oldest, lowest;
        uint64_t sum;
};
void shm_waiters_order(const struct shm_map *m, uint64_t off, uint32_t gen, uint64_t now,
                       bool oldest_turn, struct shm_wait_order *q);

/* The ticket word of a waiter: FIFO place (the ticket's low 48 bits) and cost. */
static inline uint64_t shm_wait_ticket(uint64_t ticket, uint64_t cost)
{
        return ticket << 16 | (cost & 0xffff);
}

/* A ticket as the ticket word keeps it (its low 48 bits). */
static inline uint64_t shm_ticket48(uint64_t ticket)
{
        return ticket & ((1ull << 48) - 1);
}

/* Whether the place of ticket word A comes before B's: in wrap-around order of 48-bit tickets
 * (places queued at once are fewer than 2^47 apart). */
static inline bool shm_ticket_before(uint64_t a, uint64_t b)
{
        return (int64_t)(((a >> 16) - (b >> 16)) << 16) < 0;
}

#endif

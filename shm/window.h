/*
 * window.h - the exact sliding window kind: at most N units admitted for a key in every interval
 * of length W, at every position (not only aligned ones), across all processes.
 *
 * State. A key's state word holds U, the number of units ever admitted for it. Its log (the slot's
 * aux storage, after a 64-byte header) is a ring of R = N + S words (S = THR_WINDOW_SLACK): the
 * admission time of unit u, in ns + 1 (0: none), is in word u mod R. So the log holds the times of
 * the last N units (U - N .. U - 1, the k-th oldest in word (U + S + k - 1) mod R), in admission
 * order, and S words of older ones that no decision reads. A request of cost c at time T fits iff
 * the c-th oldest of the last N is none or at most T - W: then (T - W, T] holds at most N - c of
 * the logged units, and the c new ones make at most N. As the log is in admission order, this check
 * for each admission gives t(u) - t(u - N) >= W for every unit u, which is the same as "every
 * half-open window of length W holds at most N units".
 *
 * Admission time. A try is admitted at now; it may not overtake a reservation (a unit logged in the
 * future): it is denied while the newest logged time is after now. A reservation is an admission at
 * its due time: the earliest T >= now, >= the newest logged time, at which the c-th oldest is at
 * most T - W; its units are logged at T, and the caller waits until T. So the log stays in
 * admission order and reservations are served in the order they were taken.
 *
 * Protocol across processes, without locks (client.c drives it): read U (acquire), read the log
 * words the decision needs, decide; to admit, first raise words (U + i) mod R, i < c, to T + 1 with
 * a CAS-max each (shm_window_stage), then CAS the state from U to U + c. Why it is enough:
 *   - A decision is committed only by the CAS on U, so it was made on the log of exactly the U it
 *     commits from. A denial commits nothing, so it is checked instead: it is reported only if U
 *     is unchanged after the words were read (acquire fence, load); else it is decided again on
 *     the new U. Without that, a process whose U is stale reads words that the winner has already
 *     raised for its next units, and denies although the window has room (under two processes on
 *     one key, a third of the tries at W = 1 us).
 *   - Why S spare words: an admission in flight at U (staged, its CAS not yet made) raises the
 *     words of units U .. U + c - 1, which hold units U - R .., older than the N a decision at U
 *     reads, when c <= S. With a ring of exactly N they would be the oldest of those N, and a
 *     decision at the same U, made while the rival is between its stage and its CAS, would deny on
 *     them although the window had room. Costs above S can still do that, for those nanoseconds.
 *   - Log words only grow (CAS-max). A word read by a decision is at least the true time of its
 *     unit: the admission that logged that unit raised it before its CAS on U, which the decision's
 *     acquire load of U (or a later one) read. Reading a grown word only makes a decision stricter.
 *   - Two admissions racing for the same units both raise the same words; the one whose CAS wins
 *     finds its units logged at no less than its own T (a max), which errs late, never early.
 *   - A decision whose CAS fails (and whose retry does not admit), or whose process is killed
 *     between staging and its CAS, may have grown words beyond their unit's true time (a phantom,
 *     at most its cost c of them, to its stamp). Those words are the oldest of the state its rival
 *     left, and a decision needs its c-th oldest word out of the window: so until the phantom's
 *     stamp is W old, requests that need those units are denied although their true units left.
 *     The cost is over-denial for at most W after the stamp (a reservation's stamp is its due
 *     time, at most max_reserve ahead), never over-admission, and no other process ever waits
 *     for a dead one: there is nothing to hold. Callers of cost 1 leave no phantom but by a
 *     kill: a rival that wins logs the same unit at the same or a later time, and a loser's
 *     retry rewrites its own unit. A caller checks the state word just before it stages and
 *     does not stage on a state that has moved on (its CAS would fail), so a stale decision
 *     (made long ago, by a process preempted after its load) raises nothing unless it is
 *     overtaken in the nanoseconds between that check and its stage.
 * The slot's identity is checked as for any kind (client.c): a slot retired or reused under a call
 * sends it back to the lookup.
 *
 * Eviction. A key whose newest logged time is W + idle_ttl behind now carries nothing: dropping it
 * and creating it again later cannot admit more than keeping it. on_full = evict drops the key
 * whose window empties first and raises the shard's floor to its newest time: a key created in that
 * shard afterwards starts with its whole log at the floor, i.e. as if N units had been admitted
 * then, so the evicted key coming back can never admit more than it would have (new keys of that
 * shard are over-denied until the floor is W behind).
 */
#ifndef THR_SHM_WINDOW_H
#define THR_SHM_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

#include "layout.h"

/* A key's log: the THR_WINDOW_HDR-byte header is the serialized mode's; then the ring. */
static inline _Atomic uint64_t *shm_window_log(void *aux)
{
        return (_Atomic uint64_t *)((char *)aux + THR_WINDOW_HDR);
}

/* Words in the ring of a window of N units. */
static inline uint64_t shm_window_ring(uint64_t n)
{
        return n + THR_WINDOW_SLACK;
}

/* Bytes of a key's aux storage for a window of N units (64-byte aligned). */
static inline uint64_t shm_window_stride(uint64_t n)
{
        return (THR_WINDOW_HDR + 8 * shm_window_ring(n) + 63) / 64 * 64;
}

/* The index in the ring of the K-th oldest (K >= 1) of the last N units of state U (any U). */
static inline uint64_t shm_window_at(uint64_t n, uint64_t u, uint64_t k)
{
        return (u % shm_window_ring(n) + THR_WINDOW_SLACK + k - 1) % shm_window_ring(n);
}

/* A decision on a window key (times in arena ns). */
struct shm_win {
        bool ok;            /* admitted (try) or place taken (reserve) */
        uint64_t new_state; /* U + cost */
        uint64_t stamp;     /* when the new units are logged: now (try) or the due time */
        uint64_t remaining; /* units admissible now, after this decision */
        uint64_t retry_ns;  /* denied: when this request would fit; 0 if ok */
        uint64_t reset_ns;  /* when the window is empty again */
};

/*
 * shm_window_decide - the decision for COST units at NOW on key state U with log E: a try
 * (RESERVE false) or a reservation (the earliest due time, in W->stamp; ok if due within MAX_WAIT
 * of NOW). COST <= N is the caller's check; COST 0 is a peek. Reads E, writes nothing.
 */
void shm_window_decide(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                       uint64_t now, uint64_t cost, bool reserve, uint64_t max_wait,
                       struct shm_win *w);

/* shm_window_stage - log COST units at STAMP for state U (CAS-max each word): before the CAS. */
void shm_window_stage(const struct thr_params *p, _Atomic uint64_t *e, uint64_t u, uint64_t cost,
                      uint64_t stamp);

/* The newest logged time of state U (ns), or UINT64_MAX when nothing is logged. */
uint64_t shm_window_newest(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u);

/*
 * shm_window_fresh - a new key's log: empty, or (FLOOR, a time in ns + 1, not 0) as if N units had
 * been admitted at FLOOR - 1. Returns its state word (0). Only for a slot nobody else reads (under
 * the shard lock, before the key is published).
 */
uint64_t shm_window_fresh(const struct thr_params *p, void *aux, uint64_t floor);

/* How long the key of state U keeps a hold on the future at NOW (ns, 0 for none): its window
 * empties then. The shard floor an eviction of it leaves: its newest time + 1, or 0. Whether it is
 * idle: nothing logged, or its window has been empty for TTL. */
uint64_t shm_window_debt(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                         uint64_t now);
uint64_t shm_window_floor_of(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u);
bool shm_window_idle(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                     uint64_t now, uint64_t ttl);

#endif

/*
 * budget.h - budget keys (kind = budget): budget-executor's balance, per key, shared by every
 * process of the host. A spend of cost c succeeds while the balance lasts (balance -= c), else it
 * is refused ("no budget", with the shortfall) or waits, queued, until adds make it fit; an add
 * raises the balance and grants the waiters that now fit in queue order: oldest first, or with
 * classes (thr_budget_spend_opts) highest class first and oldest within it, the limiter's
 * priority_share kept for the oldest (the rule and its argument: sem.h, "Priority", whose
 * ordering scan, shm_waiters_order, both kinds share). There is no time refill.
 *
 * Where the state is. The slot's state word is the balance (at most THR_BUDGET_MAX), with
 * THR_BUDGET_WAITERS set while spenders are queued. The key's aux storage is a header (struct
 * thr_budget: the waiters' count and the units they need, the ticket counter, the grant journal).
 * A queued spender is described in its reader record as a semaphore's waiter is (sem.h): which key
 * (wait_slot, wait_gen), its FIFO place (wait_ticket), its cost (wait_ttl) and its futex word
 * (wait_state, epoch << 3 | state).
 *
 * The protocol.
 *   - Without waiters (flag clear) the balance changes only by CAS on the state word, lock-free:
 *     a try spends (from exactly the balance it judged, so two spenders can never both spend the
 *     same units: one CAS fails and decides again on the new balance) and an add adds. The word
 *     is the whole state: a process killed at any instruction has either made its CAS or not.
 *   - With waiters (flag set) only the holder of the key's shard lock changes the word. A try
 *     that reads the flag is refused at once, whatever the balance (it would overtake the queue:
 *     FIFO, as a semaphore acquire never overtakes a waiter); a lock-free CAS loaded before the
 *     flag was set fails, since the word changed. An add that reads the flag takes the lock.
 *   - A waiting spender, under the lock: serves the key first (older waiters get what fits), then
 *     spends at once if the flag is clear and the balance fits; otherwise it queues (ticket, cost,
 *     a new wait epoch in its word) and then sets the flag by CAS from the word it read. If that
 *     CAS finds a balance that fits now (a lock-free add came first), it spends instead and
 *     leaves the queue. So once the flag is set every later add goes through the lock and a
 *     serve: no add is lost on a waiter.
 *   - A serve (under the lock) grants the next live waiter in queue order (above) while its cost
 *     fits: a large request at the head is never overtaken by smaller ones behind it; a waiter
 *     past its deadline is passed over (it is leaving). The order is read afresh from the
 *     waiters' records at each step, so a kill leaves no queue structure to repair. A grant
 *     writes its journal in the header (the waiter, its word, the state before and after), CASes
 *     the state word down by the cost, CASes the waiter's word WAITING -> GRANTED of the same
 *     epoch, wakes it, clears the journal. A waiter that gave up first (its word CASed to NONE,
 *     with or without the lock) makes the grant's CAS fail: the serve gives the cost back (the
 *     word goes back to the state before, which nobody else can have changed meanwhile). When a
 *     serve ends with nobody queued it clears the flag.
 *   - A waiter that gives up CASes its word WAITING -> NONE (losing to a grant means it was
 *     granted: it returns success), then takes the lock (bounded) and serves, which clears the
 *     flag if it was the last one. A waiter wakes every SHM_BUDGET_POLL_NS to serve the key
 *     itself: that is how a dead waiter ahead of it stops holding the queue without a daemon.
 *
 * What a process killed at any step leaves. A spender or adder without the lock: its CAS was made
 * or not. A waiter killed while queued: every serve skips it (its liveness lock is gone), and the
 * next serve (an add, another waiter's poll, the daemon's pass) clears the flag if nobody else is
 * queued; until then tries on that key are refused (over-denied, never over-admitted). A holder of
 * the lock killed: the next locker takes the lock over and first completes the journal
 * (shm_budget_repair): with the flag set nobody but a lock holder changes the word, so the word
 * equal to j_after means the spend was made (then the waiter's word is made GRANTED if it still
 * waits on this key in that epoch, and the cost given back if it left), equal to j_before that it
 * was not; an add under the lock is one CAS. "It left" is read from its record: its word NONE in
 * that epoch, or, if it has queued again since (another epoch), wait_quit naming that epoch (a
 * waiter that gives up notes the epoch there; a granted one never does, and leaves its word in
 * the next epoch). So no add is lost and nothing is spent twice. One cost can be lost for nobody
 * only after two faults and a third event: a granter killed between its spend and its CAS, the
 * waiter unable to take the lock before its deadline (a live holder keeping it), and the same
 * thread giving up yet another wait before anyone locks the key (wait_quit then names that one):
 * under-admission, never over. A waiter granted and killed before it returned spent its cost, as
 * a spender killed just after its CAS did.
 *
 * A client rewriting the arena (trusted not to, budget.h's neighbours say the same) can make one
 * key's spends wrong, never another key's: a journal naming a record that does not wait on this
 * key (owner, wait_slot, wait_gen) grants nothing; a state word rewritten to a reserved value is
 * refused (-EBADMSG), never spun on under the lock.
 *
 * Eviction (kind.c). A key whose balance is its limiter's initial, with nobody queued, carries
 * nothing: dropping it and creating it again gives the same balance, so the daemon may evict it
 * once idle_ttl is set (it has no time of last use: the balance is the whole state), and on_full
 * = evict may choose it. A key with any other balance is never evicted (a balance is money, not
 * cache): when the table is full of them, a new key's spend or add is refused with -ENOSPC
 * (on_full = allow is refused at configuration: a balance cannot be decided unrecorded).
 */
#ifndef THR_SHM_BUDGET_H
#define THR_SHM_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"

/* A queued spender serves its key this often (a dead waiter ahead of it, a stale flag). */
#define SHM_BUDGET_POLL_NS (50ull * 1000000)

static inline struct thr_budget *shm_budget(void *aux)
{
        return (struct thr_budget *)aux;
}

/* The balance in state word STATE of a limiter whose new keys start with INITIAL. */
static inline uint64_t shm_budget_balance(uint64_t state, uint64_t initial)
{
        return state == THR_TAT_FRESH ? initial : state & THR_BUDGET_MAX;
}

static inline bool shm_budget_queued(uint64_t state)
{
        return state != THR_TAT_FRESH && state < THR_TAT_LIMIT && (state & THR_BUDGET_WAITERS);
}

/* What a serve found and did. */
struct shm_budget_serve {
        uint32_t waiters;   /* live waiters left queued */
        uint32_t granted;   /* grants made */
        uint64_t need;      /* units the queued ask for in all */
        uint64_t head_need; /* units the oldest asks for */
        uint32_t head_idx;  /* its reader record, UINT32_MAX none */
        uint64_t balance;   /* the balance at the end */
};

/*
 * shm_budget_repair - under the key's shard lock (slot S, aux AUX): complete or undo the grant a
 * killed lock holder left in the journal. Every locker calls it first (shm_budget_serve does).
 */
void shm_budget_repair(const struct shm_map *m, struct thr_slot *s, void *aux);

/*
 * shm_budget_serve - under the key's shard lock: repair, then grant the queued spenders of slot S
 * that fit, oldest first, waking each; refresh the header's counts; clear the flag when nobody is
 * queued (set it when someone is and it was lost). Bounded by the reader records' count.
 */
void shm_budget_serve(const struct shm_map *m, const struct thr_params *p, struct thr_slot *s,
                      void *aux, struct shm_budget_serve *out);

/*
 * shm_budget_add_locked - under the key's shard lock: add AMOUNT to slot S's balance (one CAS, in
 * a loop against lock-free spenders while the flag is clear). 0, or -EOVERFLOW (the balance would
 * pass THR_BUDGET_MAX: nothing added). *BALANCE: the balance after (or as found).
 */
int shm_budget_add_locked(const struct shm_map *m, const struct thr_params *p, struct thr_slot *s,
                          uint64_t amount, uint64_t *balance);

/* Slot S's state word, a composed call's mark settled first (compose.h); a mark that cannot be
 * settled (rewritten) is returned as it is: callers take it for a reserved value. */
uint64_t shm_budget_state(const struct shm_map *m, struct thr_slot *s);

/* kind.c's questions: a key is pinned unless its balance is the initial one and none wait. */
bool shm_budget_pinned(const struct thr_params *p, uint64_t state);

#endif

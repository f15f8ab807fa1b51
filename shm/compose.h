/*
 * compose.h - composed calls: several (limiter, key, cost) admitted all together or not at all
 * (throttle-net's multi-dimensional and layered limits), across GCRA, window and budget keys.
 *
 * The protocol is a multi-word compare-and-swap with an owner that decides, in the style of
 * Harris, Fraser and Pratt's MCAS, over the keys' state words:
 *   1. The caller (the owner) writes its call in its reader record's journal: a new sequence
 *      number, the members (slot, generation, kind, cost), status UNDECIDED.
 *   2. In a fixed order (slot offset), for each member: note the state word read in the journal
 *      entry (old), then CAS the word from exactly that value to a mark naming the owner and the
 *      call (THR_TAT_MARK_MIN + (reader << 32 | seq)). While a word holds a mark nobody else
 *      changes it: every CAS from a state fails on it, and readers that find one resolve it
 *      first (below).
 *   3. With every member marked, the owner decides each member on its old value (each kind's own
 *      decision, as a lone try would), writes the values to store in the journal (next), stages a
 *      window's log words (CAS-max, as a lone try does), then CASes its status UNDECIDED -> COMMIT
 *      if every member admits, or -> ABORT if one denies. That CAS is the call's one decision.
 *   4. It replaces each mark by next (COMMIT) or old (ABORT), then sets its status IDLE.
 * Anyone who finds a mark (a try, a reservation's cancel, a budget call under its lock) reads
 * the owner's status: COMMIT or ABORT for that seq: it stores that member's next or old by CAS
 * from the mark (helping; the owner's own CAS then fails, harmlessly). UNDECIDED: it waits a few
 * microseconds (an owner decides in nanoseconds), then CASes the status from exactly the
 * UNDECIDED word it read to ABORT and restores the old value. A helper reads the status, then
 * the entry naming its slot, then the status again, and CASes the word from the mark only if the
 * status is still the one it read: the values it stores are that call's, whatever the owner did
 * meanwhile (a mark's value names one call until its owner has made 2^32 more). So a stopped or
 * dead owner never holds a key for longer than that, and an owner that finds its status ABORT at
 * step 2 or 3 (a helper aborted it) restores and retries.
 *
 * Why it is all or nothing. Every member's word goes from old to a mark by a CAS from exactly
 * the value the decision is made on; no other change of that word can happen while the mark is
 * there; and the single status CAS decides for all of them. Each mark is then replaced by the
 * value its decided outcome names, by whoever gets there first, exactly once (a CAS from the
 * mark). So other callers see each member either before the call or after it, never between,
 * and a call that denies leaves nothing consumed (old values back: as if it never happened; a
 * window's staged log words only ever err late, as window.h says of a lone try that loses its
 * CAS: over-denial for at most W, never over-admission).
 *
 * What a process killed at any step leaves. Before its first mark: nothing. With marks and its
 * status UNDECIDED: the first caller that finds one of its marks aborts it and restores old; the
 * daemon's reap of a dead reader's record (its heartbeat pass) does the same for every mark it
 * left, before the record can be reused. With its
 * status COMMIT or ABORT: helpers and the daemon store next or old. So a killed call ends as if it
 * never happened (not decided) or as if it completed (decided COMMIT), never partly; keys nobody
 * touches are settled by the daemon's reap of the dead reader (at its heartbeat, heartbeat_ms).
 *
 * The marks' sequence: 32 bits of the owner's call counter. An owner never starts a call while a
 * mark of its previous one may remain (step 4 replaces every one it made), and a dead owner's
 * record is settled before it is reused, so a mark always names the call in its owner's journal.
 * A mark whose owner's journal does not name it (a client rewrote something) is not resolvable:
 * that key's calls get -EBADMSG until the daemon or an operator restores it; no other key is
 * touched, and the daemon never follows an offset from the journal without checking it.
 */
#ifndef THR_SHM_COMPOSE_H
#define THR_SHM_COMPOSE_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"

static inline bool shm_is_mark(uint64_t state)
{
        return state >= THR_TAT_MARK_MIN && state <= THR_TAT_MARK_MAX;
}

#define SHM_MARK_SEQ_MASK ((1ull << THR_MARK_SEQ_BITS) - 1)

static inline uint64_t shm_mark(uint32_t reader, uint64_t seq)
{
        return THR_TAT_MARK_MIN +
               ((uint64_t)reader << THR_MARK_SEQ_BITS | (seq & SHM_MARK_SEQ_MASK));
}

static inline uint64_t shm_journal_status(uint64_t seq, enum thr_journal_state st)
{
        return seq << 2 | (uint64_t)st;
}

/* How long a helper lets an UNDECIDED owner finish before aborting it. */
#define SHM_COMPOSE_PATIENCE_NS 20000ull

/*
 * shm_mark_resolve - slot S of M holds the mark STATE: settle it as its owner's call decided (or
 * abort an undecided call that has had SHM_COMPOSE_PATIENCE_NS), so that the slot holds a state
 * again. Returns 0 (settled, by us or someone else: read the state again) or -EBADMSG (the mark
 * names no call of its owner's journal: a rewritten arena).
 */
int shm_mark_resolve(const struct shm_map *m, struct thr_slot *s, uint64_t state);

/*
 * shm_journal_settle - reader record IDX of M is dead (or being reused): abort its call if
 * undecided and replace every mark it left by the value its outcome names; then its journal is
 * IDLE. Offsets read from the journal are checked against the heap before use.
 */
void shm_journal_settle(const struct shm_map *m, uint32_t idx);

#endif

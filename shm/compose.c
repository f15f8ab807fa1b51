/*
 * compose.c - settling marks of composed calls (the argument is at the top of compose.h).
 *
 * Nothing read from a journal is trusted for an offset or an index: a reader index is checked
 * against the records' count, an entry count against THR_COMPOSE_MAX, a slot offset against the
 * heap (and only a word holding exactly the expected mark is ever changed).
 */
#include <errno.h>
#include <time.h>

#include "compose.h"
#include "testhook.h"

static uint64_t mono_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct thr_journal *journal_of(const struct shm_map *m, uint32_t idx)
{
        return &((struct thr_reader *)shm_at(m->base, m->g.reader_off) + idx)->journal;
}

/* The entry of journal J naming slot offset OFF, its values read into *OLD and *NEXT; false if
 * none does. */
static bool entry_of(struct thr_journal *j, uint64_t off, uint64_t *old, uint64_t *next)
{
        uint32_t n = atomic_load_explicit(&j->n, memory_order_acquire);
        for (uint32_t i = 0; i < n && i < THR_COMPOSE_MAX; i++) {
                const struct thr_jentry *e = &j->e[i];
                if (atomic_load_explicit(&e->slot_off, memory_order_relaxed) != off)
                        continue;
                *old = atomic_load_explicit(&e->old, memory_order_relaxed);
                *next = atomic_load_explicit(&e->next, memory_order_relaxed);
                return true;
        }
        return false;
}

/* The value a settled mark leaves: the call's NEXT (committed) or OLD; never a reserved value
 * (a rewritten journal): then OLD. */
static uint64_t settled_value(enum thr_journal_state oc, uint64_t old, uint64_t next)
{
        uint64_t v = oc == THR_JOURNAL_COMMIT ? next : old;
        return shm_is_mark(v) || v == THR_TAT_DEAD || v == THR_TAT_FREE ? old : v;
}

static void pause_a_moment(void)
{
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
}

int shm_mark_resolve(const struct shm_map *m, struct thr_slot *s, uint64_t state)
{
        uint64_t v = state - THR_TAT_MARK_MIN;
        uint64_t idx = v >> THR_MARK_SEQ_BITS, seq = v & SHM_MARK_SEQ_MASK;
        if (idx >= m->g.reader_count)
                return -EBADMSG;
        struct thr_journal *j = journal_of(m, (uint32_t)idx);
        uint64_t off = (uint64_t)((char *)s - (char *)m->base);
        uint64_t t0 = 0;
        for (;;) {
                uint64_t st = atomic_load_explicit(&j->status, memory_order_acquire);
                if (atomic_load_explicit(&s->state, memory_order_acquire) != state)
                        return 0; /* settled meanwhile (by its owner, or a helper) */
                enum thr_journal_state oc = (enum thr_journal_state)(st & 3);
                uint64_t old, next;
                /* the call the mark names, and the entry naming this slot, under one reading
                 * of the status: checked again below before anything is acted on */
                if (((st >> 2) & SHM_MARK_SEQ_MASK) != seq || oc == THR_JOURNAL_IDLE ||
                    !entry_of(j, off, &old, &next)) {
                        if (atomic_load_explicit(&j->status, memory_order_acquire) != st ||
                            atomic_load_explicit(&s->state, memory_order_acquire) != state)
                                continue;
                        return -EBADMSG; /* no call of its journal names it: never aborted */
                }
                if (atomic_load_explicit(&j->status, memory_order_acquire) != st)
                        continue;
                if (oc == THR_JOURNAL_UNDECIDED) {
                        uint64_t now = mono_ns();
                        if (!t0)
                                t0 = now;
                        if (now - t0 < SHM_COMPOSE_PATIENCE_NS) {
                                pause_a_moment();
                                continue;
                        }
                        THR_HOOK(THR_HOOK_COMPOSE_ABORTING, j);
                        /* from exactly the word read: never another call's */
                        atomic_compare_exchange_strong_explicit(
                            &j->status, &st, (st & ~3ull) | THR_JOURNAL_ABORT, memory_order_acq_rel,
                            memory_order_acquire);
                        continue;
                }
                uint64_t val = settled_value(oc, old, next);
                if (atomic_load_explicit(&j->status, memory_order_acquire) != st)
                        continue; /* the call ended (and another may have begun): read again */
                uint64_t want = state;
                atomic_compare_exchange_strong_explicit(&s->state, &want, val, memory_order_acq_rel,
                                                        memory_order_relaxed);
                return 0;
        }
}

void shm_journal_settle(const struct shm_map *m, uint32_t idx)
{
        if (idx >= m->g.reader_count)
                return;
        struct thr_journal *j = journal_of(m, idx);
        uint64_t st = atomic_load_explicit(&j->status, memory_order_acquire);
        if ((st & 3) == THR_JOURNAL_IDLE)
                return;
        if ((st & 3) == THR_JOURNAL_UNDECIDED) { /* its owner is dead: the call never was */
                uint64_t abort = (st & ~3ull) | THR_JOURNAL_ABORT;
                if (!atomic_compare_exchange_strong_explicit(
                        &j->status, &st, abort, memory_order_acq_rel, memory_order_acquire))
                        return; /* changed under us: not a dead record's */
                st = abort;
        }
        enum thr_journal_state oc = (enum thr_journal_state)(st & 3);
        uint64_t mark = shm_mark(idx, st >> 2);
        uint32_t n = atomic_load_explicit(&j->n, memory_order_acquire);
        for (uint32_t i = 0; i < n && i < THR_COMPOSE_MAX; i++) {
                const struct thr_jentry *e = &j->e[i];
                uint64_t off = atomic_load_explicit(&e->slot_off, memory_order_relaxed);
                /* a slot is 64-byte aligned and lies in the heap: checked, then only a word
                 * holding exactly this call's mark is changed */
                if (off % THR_ALIGN || off < m->g.heap_off || off > m->g.heap_end ||
                    m->g.heap_end - off < THR_SLOT_SIZE)
                        continue;
                struct thr_slot *s = shm_at(m->base, off);
                uint64_t v = settled_value(oc, atomic_load_explicit(&e->old, memory_order_relaxed),
                                           atomic_load_explicit(&e->next, memory_order_relaxed));
                uint64_t want = mark;
                atomic_compare_exchange_strong_explicit(&s->state, &want, v, memory_order_acq_rel,
                                                        memory_order_relaxed);
        }
        atomic_compare_exchange_strong_explicit(&j->status, &st,
                                                shm_journal_status(st >> 2, THR_JOURNAL_IDLE),
                                                memory_order_acq_rel, memory_order_relaxed);
}

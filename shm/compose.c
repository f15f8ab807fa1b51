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

/* The outcome of journal J's call SEQ20 (low bits): COMMIT or ABORT, aborting it if undecided
 * (after PATIENCE_NS, 0: at once). IDLE: the call is over (its marks replaced, or never made),
 * or the journal names another call. */
static enum thr_journal_state outcome(struct thr_journal *j, uint64_t seq20, uint64_t patience_ns)
{
        uint64_t t0 = 0;
        for (;;) {
                uint64_t st = atomic_load_explicit(&j->status, memory_order_acquire);
                if (((st >> 2) & ((1u << THR_MARK_SEQ_BITS) - 1)) != seq20)
                        return THR_JOURNAL_IDLE;
                enum thr_journal_state s = (enum thr_journal_state)(st & 3);
                if (s != THR_JOURNAL_UNDECIDED)
                        return s;
                if (patience_ns) {
                        uint64_t now = mono_ns();
                        if (!t0)
                                t0 = now;
                        if (now - t0 < patience_ns) {
#if defined(__x86_64__) || defined(__i386__)
                                __builtin_ia32_pause();
#endif
                                continue;
                        }
                }
                uint64_t abort = (st & ~3ull) | THR_JOURNAL_ABORT;
                THR_HOOK(THR_HOOK_COMPOSE_ABORTING, j);
                atomic_compare_exchange_strong_explicit(&j->status, &st, abort,
                                                        memory_order_acq_rel, memory_order_acquire);
        }
}

/* Replace mark MARK in the word at W by entry E's value for OUTCOME (a CAS: once). */
static void settle_word(_Atomic uint64_t *w, uint64_t mark, const struct thr_jentry *e,
                        enum thr_journal_state outcome)
{
        uint64_t v = outcome == THR_JOURNAL_COMMIT
                         ? atomic_load_explicit(&e->next, memory_order_relaxed)
                         : atomic_load_explicit(&e->old, memory_order_relaxed);
        if (shm_is_mark(v) || v == THR_TAT_DEAD || v == THR_TAT_FREE)
                v = atomic_load_explicit(&e->old,
                                         memory_order_relaxed); /* rewritten: never a mark */
        atomic_compare_exchange_strong_explicit(w, &mark, v, memory_order_acq_rel,
                                                memory_order_relaxed);
}

int shm_mark_resolve(const struct shm_map *m, struct thr_slot *s, uint64_t state)
{
        uint64_t v = state - THR_TAT_MARK_MIN;
        uint32_t idx = (uint32_t)(v >> THR_MARK_SEQ_BITS);
        uint64_t seq20 = v & ((1u << THR_MARK_SEQ_BITS) - 1);
        if (idx >= m->g.reader_count)
                return -EBADMSG;
        struct thr_journal *j = journal_of(m, idx);
        uint64_t off = (uint64_t)((char *)s - (char *)m->base);
        uint32_t n = atomic_load_explicit(&j->n, memory_order_acquire);
        const struct thr_jentry *e = NULL;
        for (uint32_t i = 0; i < n && i < THR_COMPOSE_MAX; i++)
                if (atomic_load_explicit(&j->e[i].slot_off, memory_order_relaxed) == off)
                        e = &j->e[i];
        enum thr_journal_state oc = outcome(j, seq20, SHM_COMPOSE_PATIENCE_NS);
        if (atomic_load_explicit(&s->state, memory_order_acquire) != state)
                return 0; /* settled meanwhile (by its owner, or a helper) */
        if (!e || oc == THR_JOURNAL_IDLE)
                return -EBADMSG;
        settle_word(&s->state, state, e, oc);
        return 0;
}

void shm_journal_settle(const struct shm_map *m, uint32_t idx)
{
        if (idx >= m->g.reader_count)
                return;
        struct thr_journal *j = journal_of(m, idx);
        uint64_t st = atomic_load_explicit(&j->status, memory_order_acquire);
        if ((st & 3) == THR_JOURNAL_IDLE)
                return;
        uint64_t seq = st >> 2;
        enum thr_journal_state oc = outcome(j, seq & ((1u << THR_MARK_SEQ_BITS) - 1), 0);
        if (oc == THR_JOURNAL_IDLE)
                return; /* a new call began meanwhile: not a dead record's */
        uint64_t mark = shm_mark(idx, seq);
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
                if (atomic_load_explicit(&s->state, memory_order_acquire) == mark)
                        settle_word(&s->state, mark, e, oc);
        }
        uint64_t want = shm_journal_status(seq, oc);
        atomic_compare_exchange_strong_explicit(&j->status, &want,
                                                shm_journal_status(seq, THR_JOURNAL_IDLE),
                                                memory_order_acq_rel, memory_order_relaxed);
}

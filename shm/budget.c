/*
 * budget.c - budget keys under their shard lock (the argument is at the top of budget.h).
 *
 * Nothing read from the arena is trusted for an index: the journal's waiter index is checked
 * against the reader records' count, and a serve makes at most as many grants as there are
 * records. A client rewriting a key's header or a waiter's cost can make that key's spends go
 * wrong, never make another process read or write outside it.
 */
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "budget.h"
#include "compose.h"
#include "serial.h"
#include "testhook.h"

static void futex_wake(_Atomic uint32_t *w)
{
        syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

uint64_t shm_budget_state(const struct shm_map *m, struct thr_slot *s)
{
        uint64_t cur = atomic_load_explicit(&s->state, memory_order_acquire);
        while (shm_is_mark(cur) && shm_mark_resolve(m, s, cur) == 0)
                cur = atomic_load_explicit(&s->state, memory_order_acquire);
        return cur;
}

/* Give COST back to slot S: a CAS loop, since with the flag clear lock-free spenders and adders
 * may move the word meanwhile (with it set, the first CAS succeeds). Saturated at the maximum. */
static void give_back(const struct shm_map *m, struct thr_slot *s, uint64_t cost)
{
        uint64_t cur = shm_budget_state(m, s);
        for (;;) {
                if (cur >= THR_TAT_LIMIT)
                        return; /* retired or rewritten: nothing to give back to */
                uint64_t bal = cur & THR_BUDGET_MAX;
                uint64_t nb = cost > THR_BUDGET_MAX - bal ? THR_BUDGET_MAX : bal + cost;
                if (atomic_compare_exchange_weak_explicit(
                        &s->state, &cur, (cur & THR_BUDGET_WAITERS) | nb, memory_order_acq_rel,
                        memory_order_acquire))
                        return;
                if (shm_is_mark(cur)) /* a composed call's: settled first (compose.h) */
                        cur = shm_budget_state(m, s);
        }
}

void shm_budget_repair(const struct shm_map *m, struct thr_slot *s, void *aux)
{
        struct thr_budget *h = shm_budget(aux);
        uint32_t j = atomic_load_explicit(&h->j_idx, memory_order_acquire);
        if (!j)
                return;
        uint32_t idx = j - 1, word = atomic_load_explicit(&h->j_word, memory_order_relaxed);
        uint64_t before = atomic_load_explicit(&h->j_before, memory_order_relaxed);
        uint64_t after = atomic_load_explicit(&h->j_after, memory_order_relaxed);
        uint64_t cur = shm_budget_state(m, s);
        /* with the flag set only a lock holder changes the word: AFTER means the spend was made,
         * BEFORE that it was not (nothing to do) */
        if (cur == after && after < before && before - after <= THR_BUDGET_MAX &&
            idx < m->g.reader_count) {
                struct thr_reader *r = (struct thr_reader *)shm_at(m->base, m->g.reader_off) + idx;
                uint64_t off = (uint64_t)((char *)s - (char *)m->base);
                uint32_t sgen = THR_META_GEN(atomic_load_explicit(&s->meta, memory_order_acquire));
                /* only a waiter of this very key is granted: a journal a client rewrote must
                 * never tell another key's waiter it was granted */
                bool ours = atomic_load_explicit(&r->owner, memory_order_acquire) &&
                            atomic_load_explicit(&r->wait_slot, memory_order_relaxed) == off &&
                            atomic_load_explicit(&r->wait_gen, memory_order_relaxed) == sgen;
                if (ours && shm_wait_to(r, word, THR_WAIT_GRANTED)) {
                        futex_wake(&r->wait_state); /* still waiting: granted as meant */
                } else {
                        uint32_t w = atomic_load_explicit(&r->wait_state, memory_order_acquire);
                        uint32_t quit = atomic_load_explicit(&r->wait_quit, memory_order_acquire);
                        /* the same wait, no longer waiting and not granted, or a later one of a
                         * waiter that recorded giving this one up: it gave up first, the cost
                         * goes back. Otherwise it moved on granted: the spend stands */
                        if ((THR_WAIT_EPOCH(w) == THR_WAIT_EPOCH(word) &&
                             THR_WAIT_STATE(w) != THR_WAIT_GRANTED) ||
                            (THR_WAIT_EPOCH(w) != THR_WAIT_EPOCH(word) &&
                             quit == THR_WAIT_EPOCH(word)))
                                give_back(m, s, before - after);
                }
        }
        atomic_store_explicit(&h->j_idx, 0, memory_order_release);
}

/* Set or clear the waiters' flag of slot S (a CAS loop: with it clear, lock-free spenders may
 * move the balance meanwhile). */
static void set_flag(const struct shm_map *m, struct thr_slot *s, bool on)
{
        uint64_t cur = shm_budget_state(m, s);
        while (cur < THR_TAT_LIMIT && !!(cur & THR_BUDGET_WAITERS) != on) {
                if (atomic_compare_exchange_weak_explicit(
                        &s->state, &cur, on ? cur | THR_BUDGET_WAITERS : cur & THR_BUDGET_MAX,
                        memory_order_acq_rel, memory_order_acquire))
                        return;
                if (shm_is_mark(cur))
                        cur = shm_budget_state(m, s);
        }
}

/* Grant COST to waiter R (scanned as word WORD, record IDX) from state CUR: journal, spend, tell,
 * clear. False when the state moved under us (decide again). */
static bool grant(const struct shm_map *m, struct thr_budget *h, struct thr_slot *s,
                  struct thr_reader *r, uint32_t idx, uint32_t word, uint64_t cur, uint64_t cost,
                  bool *told)
{
        uint64_t after = cur - cost;
        atomic_store_explicit(&h->j_word, word, memory_order_relaxed);
        atomic_store_explicit(&h->j_before, cur, memory_order_relaxed);
        atomic_store_explicit(&h->j_after, after, memory_order_relaxed);
        atomic_store_explicit(&h->j_idx, idx + 1, memory_order_release);
        THR_HOOK(THR_HOOK_BUDGET_JOURNALED, r);
        bool spent = atomic_compare_exchange_strong_explicit(
            &s->state, &cur, after, memory_order_acq_rel, memory_order_acquire);
        *told = false;
        if (spent) {
                THR_HOOK(THR_HOOK_BUDGET_SPENT, r);
                if (shm_wait_to(r, word, THR_WAIT_GRANTED)) {
                        THR_HOOK(THR_HOOK_BUDGET_GRANTED, r);
                        *told = true;
                } else {
                        give_back(m, s, cost); /* it gave up first */
                }
        }
        atomic_store_explicit(&h->j_idx, 0, memory_order_release);
        if (*told)
                futex_wake(&r->wait_state);
        return spent;
}

void shm_budget_serve(const struct shm_map *m, const struct thr_params *p, struct thr_slot *s,
                      void *aux, struct shm_budget_serve *out)
{
        struct thr_budget *h = shm_budget(aux);
        struct thr_reader *rec = shm_at(m->base, m->g.reader_off);
        uint64_t off = (uint64_t)((char *)s - (char *)m->base);
        uint32_t sgen = THR_META_GEN(atomic_load_explicit(&s->meta, memory_order_acquire));
        *out = (struct shm_budget_serve){.head_idx = UINT32_MAX};
        shm_budget_repair(m, s, aux);
        struct shm_waiter w;
        uint64_t need = 0;
        uint32_t n = 0;
        /* bounded whatever the records say: every grant ends one wait, a CAS that lost to a
         * lock-free change is decided again at most once a record */
        uint64_t now = shm_now_ns(m->base);
        uint32_t share = p ? THR_SEMQ_SHARE(p->reserved) : 0;
        for (uint64_t step = 0; step <= 2ull * m->g.reader_count + 1; step++) {
                /* highest class first, oldest within it; the share's turn the oldest's (sem.h,
                 * "Priority": the key's granted count, this serve's grants included) */
                uint64_t done =
                    atomic_load_explicit(&h->granted, memory_order_relaxed) + out->granted;
                struct shm_wait_order q;
                shm_waiters_order(m, off, sgen, now, share && (done + 1) % share == 0, &q);
                n = q.n;
                w = q.next;
                need = q.sum;
                if (!n)
                        break;
                struct thr_reader *r = &rec[w.idx];
                uint64_t cost = atomic_load_explicit(&r->wait_ttl, memory_order_relaxed);
                uint64_t cur = shm_budget_state(m, s);
                if (cur >= THR_TAT_LIMIT)
                        break; /* retired or rewritten */
                if (cost == 0 || cost > (cur & THR_BUDGET_MAX))
                        break; /* the oldest does not fit: nobody behind it goes first */
                bool told;
                if (grant(m, h, s, r, w.idx, w.word, cur, cost, &told) && told)
                        out->granted++;
        }
        atomic_store_explicit(&h->waiters, n, memory_order_relaxed);
        atomic_store_explicit(&h->need, n ? need : 0, memory_order_relaxed);
        uint64_t head = n ? atomic_load_explicit(&rec[w.idx].wait_ttl, memory_order_relaxed) : 0;
        atomic_store_explicit(&h->head_need, head, memory_order_relaxed);
        if (out->granted)
                atomic_fetch_add_explicit(&h->granted, out->granted, memory_order_relaxed);
        set_flag(m, s, n != 0);
        out->waiters = n;
        out->need = n ? need : 0;
        out->head_need = head;
        out->head_idx = n ? w.idx : UINT32_MAX;
        out->balance = shm_budget_state(m, s) & THR_BUDGET_MAX;
}

int shm_budget_add_locked(const struct shm_map *m, const struct thr_params *p, struct thr_slot *s,
                          uint64_t amount, uint64_t *balance)
{
        uint64_t cur = shm_budget_state(m, s);
        for (;;) {
                if (cur == THR_TAT_DEAD || cur == THR_TAT_FREE)
                        return -ESTALE;
                uint64_t bal = shm_budget_balance(cur, p->initial);
                uint64_t flag = shm_budget_queued(cur) ? THR_BUDGET_WAITERS : 0;
                *balance = bal;
                if (amount > THR_BUDGET_MAX - bal)
                        return -EOVERFLOW;
                if (atomic_compare_exchange_weak_explicit(&s->state, &cur, flag | (bal + amount),
                                                          memory_order_acq_rel,
                                                          memory_order_acquire)) {
                        *balance = bal + amount;
                        return 0;
                }
                if (shm_is_mark(cur))
                        cur = shm_budget_state(m, s);
        }
}

bool shm_budget_pinned(const struct thr_params *p, uint64_t state)
{
        if (state == THR_TAT_FRESH)
                return false;
        return state != p->initial; /* the flag set is never equal: initial <= THR_BUDGET_MAX */
}

/*
 * serial.c - serialized window keys under their shard lock (the argument is at the top of
 * serial.h).
 *
 * Reading another thread's reader record: its owner word is loaded before and after its wait
 * fields, and the record is only taken for a waiter if both loads agree (a record released and
 * claimed again meanwhile has its wait fields cleared by the claimer, reader.c). The grant is a
 * CAS of the waiter's wait_state from the WAITING word the scan read, its epoch included: a record
 * that stopped waiting, whatever the reason, or waits again for another key, is never granted,
 * and the hold stored just before is taken back.
 */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kind.h"
#include "readers.h"
#include "serial.h"
#include "window.h"

void shm_serial_complete(const struct thr_params *p, struct thr_slot *s, void *aux, uint64_t cost,
                         uint64_t now)
{
        _Atomic uint64_t *e = shm_window_log(aux);
        uint64_t u = atomic_load_explicit(&s->state, memory_order_acquire);
        for (;;) {
                if (u >= THR_TAT_LIMIT)
                        return; /* retired under us: nothing to log in */
                shm_window_stage(p, e, u, cost, now);
                if (atomic_compare_exchange_weak_explicit(
                        &s->state, &u, u + cost, memory_order_acq_rel, memory_order_acquire))
                        return;
        }
}

bool shm_serial_pinned(const void *aux)
{
        const struct thr_serial *h = aux;
        return atomic_load_explicit(&h->hold_token, memory_order_relaxed) != 0 ||
               atomic_load_explicit(&h->waiters, memory_order_relaxed) != 0;
}

static void futex_wake(_Atomic uint32_t *w)
{
        syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Whether the thread of record R (index IDX) with owner token TOKEN is alive. */
static bool owner_alive(const struct shm_map *m, struct thr_reader *r, uint32_t idx, uint64_t token)
{
        if (atomic_load_explicit(&r->owner, memory_order_acquire) != token)
                return false;
        return shm_reader_gone(m->fd, r, idx) == 0;
}

uint32_t shm_waiters_scan(const struct shm_map *m, uint64_t off, uint32_t gen,
                          struct shm_waiter *head)
{
        /* a serialized window's queue is FIFO: the oldest is next, whatever a record's class or
         * deadline fields say (a serialized wait never writes them: they may be another wait's) */
        struct shm_wait_order q;
        shm_waiters_order(m, off, gen, 0, true, &q);
        *head = q.n ? q.oldest : (struct shm_waiter){.ticket = UINT64_MAX};
        return q.n;
}

/* Whether queued waiter A (class CA, ticket TA) is served before B (CB, TB): the higher class,
 * then the lower ticket (48 bits, wrapping: shm_ticket_before). */
static bool served_before(uint32_t ca, uint64_t ta, uint32_t cb, uint64_t tb)
{
        return ca != cb ? ca > cb : shm_ticket_before(ta, tb);
}

void shm_waiters_order(const struct shm_map *m, uint64_t off, uint32_t gen, uint64_t now,
                       bool oldest_turn, struct shm_wait_order *q)
{
        struct thr_reader *rec = shm_at(m->base, m->g.reader_off);
        uint32_t oldest_class = 0;
        *q = (struct shm_wait_order){0};
        for (uint32_t i = 0; i < m->g.reader_count; i++) {
                struct thr_reader *r = &rec[i];
                uint64_t o1 = atomic_load_explicit(&r->owner, memory_order_acquire);
                uint32_t word = atomic_load_explicit(&r->wait_state, memory_order_acquire);
                if (!o1 || atomic_load_explicit(&r->wait_slot, memory_order_relaxed) != off ||
                    atomic_load_explicit(&r->wait_gen, memory_order_relaxed) != gen ||
                    !shm_wait_waiting(word))
                        continue;
                uint64_t t = atomic_load_explicit(&r->wait_ticket, memory_order_relaxed);
                uint32_t c =
                    THR_WAIT_PRIO(atomic_load_explicit(&r->wait_flags, memory_order_relaxed));
                uint64_t dl = atomic_load_explicit(&r->wait_deadline, memory_order_relaxed);
                uint64_t cost = atomic_load_explicit(&r->wait_ttl, memory_order_relaxed);
                if (atomic_load_explicit(&r->owner, memory_order_acquire) != o1 ||
                    shm_reader_gone(m->fd, r, i) != 0)
                        continue; /* reused meanwhile, or its thread is dead */
                if (dl && dl <= now)
                        continue; /* past its deadline: it is leaving, never granted */
                struct shm_waiter w = {.idx = i, .word = word, .token = o1, .ticket = t};
                if (!q->n || shm_ticket_before(t, q->oldest.ticket)) {
                        q->oldest = w;
                        oldest_class = c;
                }
                if (!q->n || served_before(c, t, q->next_class, q->next.ticket)) {
                        q->next = w;
                        q->next_class = c;
                }
                if (!q->n || served_before(q->lowest_class, q->lowest.ticket, c, t)) {
                        q->lowest = w;
                        q->lowest_class = c;
                }
                q->sum = cost > UINT64_MAX - q->sum ? UINT64_MAX : q->sum + cost;
                q->n++;
        }
        if (q->n && oldest_turn) {
                q->next = q->oldest;
                q->next_class = oldest_class;
        }
}

void shm_serial_serve(const struct shm_map *m, const struct thr_table *tb,
                      const struct thr_params *p, struct thr_slot *s, uint64_t now,
                      struct shm_serve *out)
{
        void *aux = shm_slot_aux(m->base, tb, s);
        struct thr_serial *h = shm_serial(aux);
        struct thr_reader *rec = shm_at(m->base, m->g.reader_off);
        uint64_t off = (uint64_t)((char *)s - (char *)m->base);
        uint32_t gen = THR_META_GEN(atomic_load_explicit(&s->meta, memory_order_acquire));
        *out = (struct shm_serve){.grant_idx = UINT32_MAX, .head_ticket = UINT64_MAX};

        uint64_t tok = atomic_load_explicit(&h->hold_token, memory_order_relaxed);
        if (tok) {
                uint32_t idx = atomic_load_explicit(&h->hold_idx, memory_order_relaxed);
                if (idx < m->g.reader_count && owner_alive(m, &rec[idx], idx, tok)) {
                        out->held = true;
                } else {
                        uint64_t cost = atomic_load_explicit(&h->hold_cost, memory_order_relaxed);
                        if (cost)
                                shm_serial_complete(p, s, aux, cost > p->rate_n ? p->rate_n : cost,
                                                    now);
                        atomic_store_explicit(&h->hold_cost, 0, memory_order_relaxed);
                        atomic_store_explicit(&h->hold_token, 0, memory_order_release);
                        atomic_fetch_add_explicit(&h->released, 1, memory_order_relaxed);
                        out->released = true;
                }
        }
        for (int attempt = 0;; attempt++) {
                struct shm_waiter w;
                uint32_t n = shm_waiters_scan(m, off, gen, &w);
                out->waiters = n;
                out->head_ticket = w.ticket == UINT64_MAX ? UINT64_MAX : w.ticket >> 16;
                if (out->held || !n || attempt == 4)
                        break;
                uint64_t cost = w.ticket & 0xffff;
                if (cost > p->rate_n)
                        cost = p->rate_n; /* a rewritten record: never index past the ring */
                uint64_t u = atomic_load_explicit(&s->state, memory_order_acquire);
                struct shm_win v;
                shm_window_decide(p, shm_window_log(aux), u, now, cost, false, 0, &v);
                if (!v.ok) {
                        out->room_at = now + v.retry_ns;
                        break;
                }
                struct thr_reader *r = &rec[w.idx];
                atomic_store_explicit(&h->hold_idx, w.idx, memory_order_relaxed);
                atomic_store_explicit(&h->hold_cost, cost, memory_order_relaxed);
                atomic_store_explicit(&h->hold_since, now, memory_order_relaxed);
                atomic_store_explicit(&h->hold_pid,
                                      atomic_load_explicit(&r->pid, memory_order_relaxed),
                                      memory_order_relaxed);
                atomic_store_explicit(&h->hold_token, w.token, memory_order_release);
                /* from the word the scan read, epoch included: never a later wait of the record */
                uint32_t waiting = THR_WAIT_AS(w.word, THR_WAIT_WAITING);
                if (atomic_compare_exchange_strong_explicit(
                        &r->wait_state, &waiting, THR_WAIT_AS(w.word, THR_WAIT_GRANTED),
                        memory_order_acq_rel, memory_order_relaxed)) {
                        futex_wake(&r->wait_state);
                        atomic_fetch_add_explicit(&h->served, 1, memory_order_relaxed);
                        out->grant_idx = w.idx;
                        out->held = true;
                        out->waiters = n - 1;
                        break;
                }
                atomic_store_explicit(&h->hold_token, 0, memory_order_release); /* not waiting */
        }
        atomic_store_explicit(&h->waiters, out->waiters, memory_order_relaxed);
        if (out->held || out->waiters == 0)
                out->head_ticket = UINT64_MAX; /* nobody waits for room */
}

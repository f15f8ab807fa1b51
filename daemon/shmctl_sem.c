/*
 * shmctl_sem.c - shmctl's view of semaphore limiters: a key's header, queued acquires and lease
 * records (for `keys`, `get` and `limiters`), and the `leases` verb. The arena is untrusted here
 * as in shmctl.c (read its comment): the number of lease records comes from the checked snapshot
 * (at most THR_SEM_LEASES_MAX, checked against the table's stride), each record is read like a
 * seqlock on its generation inside the slot's seqlock, waiters are matched as shm_sem_serve
 * matches them and kept oldest first by insertion (garbage tickets cannot break it), and amounts
 * and holder indexes are only printed. A peer's lease's expiry is its peer's word, read through
 * shm_sem_expiry in its read-only form (KILL false: shmctl never writes the arena), which checks
 * the holder index against the geometry before it reads the record.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sem.h"
#include "shmctl_internal.h"

/* ---------------------------------------------------------------- a semaphore key */

/*
 * Add W to the oldest waiters found so far (M->wait, oldest first by ticket), dropping the
 * youngest when full. An insertion rather than a sort: tickets from the arena need not be
 * consistently ordered (qsort's comparator must be), and an insertion is safe with any order.
 */
static void waiter_add(struct shmctl_sem *m, const struct shmctl_waiter *w)
{
        uint32_t i = m->nshown;
        if (i == SHMCTL_WAITING_MAX) {
                if (!shm_ticket_before(w->ticket, m->wait[i - 1].ticket))
                        return;
                i--; /* the youngest falls off */
        } else {
                m->nshown++;
        }
        for (; i > 0 && shm_ticket_before(w->ticket, m->wait[i - 1].ticket); i--)
                m->wait[i] = m->wait[i - 1];
        m->wait[i] = *w;
}

/* The acquires queued for slot S (generation GEN): the reader records waiting for it, matched as
 * shm_sem_serve matches them (without testing their liveness). Each field is read once and only
 * printed; the records are bounded by the geometry checked at attach. */
static void sem_waiters(const struct ctx *c, const struct thr_slot *s, uint32_t gen,
                        struct shmctl_sem *m)
{
        const struct thr_reader *r = shm_at(c->map.base, c->map.g.reader_off);
        uint64_t off = (uint64_t)((const char *)s - (const char *)c->map.base);
        for (uint32_t i = 0; i < c->map.g.reader_count; i++) {
                uint32_t st =
                    THR_WAIT_STATE(atomic_load_explicit(&r[i].wait_state, memory_order_relaxed));
                if (atomic_load_explicit(&r[i].owner, memory_order_acquire) == 0 ||
                    atomic_load_explicit(&r[i].wait_slot, memory_order_relaxed) != off ||
                    atomic_load_explicit(&r[i].wait_gen, memory_order_relaxed) != gen ||
                    (st != THR_WAIT_WAITING && st != THR_WAIT_HEAD)) /* HEAD: the oldest */
                        continue;
                struct shmctl_waiter w = {
                    .ticket = atomic_load_explicit(&r[i].wait_ticket, memory_order_relaxed),
                    .pid = atomic_load_explicit(&r[i].pid, memory_order_relaxed),
                    .tid = atomic_load_explicit(&r[i].tid, memory_order_relaxed)};
                m->nwait++;
                waiter_add(m, &w);
        }
}

/*
 * The lease records in use of a semaphore key's aux storage AUX into OUT: how many. There are
 * L's leases_per_key of them: a count from the checked snapshot (at most THR_SEM_LEASES_MAX),
 * which snap_fill checked to fit the table's stride. Each record is read like a seqlock on its
 * generation, which the granter publishes last (release, sem.c fill) and a reuse changes.
 * A peer's lease expires with its peer: shm_sem_expiry reads the peer's word through the holder
 * index, which it checks against the geometry (and with KILL false only reads: NOW is unused).
 */
static uint32_t sem_leases(const struct ctx *c, const struct shmctl_lim *l, void *aux, uint64_t now,
                           struct shmctl_lease *out)
{
        uint32_t n = 0, nrec = l->p.leases < THR_SEM_LEASES_MAX ? (uint32_t)l->p.leases
                                                                : THR_SEM_LEASES_MAX;
        for (uint32_t i = 0; i < nrec; i++) {
                const struct thr_lease_rec *r = shm_sem_lease(aux, i);
                uint64_t g = atomic_load_explicit(&r->gen, memory_order_acquire);
                if (g == 0)
                        continue;
                /* acquire loads: the generation read again below comes after them (a fence
                 * would do, but GCC's TSan build refuses atomic_thread_fence) */
                out[n] = (struct shmctl_lease){
                    .idx = i,
                    .gen = g,
                    .holder_idx = atomic_load_explicit(&r->holder_idx, memory_order_acquire),
                    .amount = atomic_load_explicit(&r->amount, memory_order_acquire),
                    .acquired_ns = atomic_load_explicit(&r->acquired_ns, memory_order_acquire),
                    .expires_ns = shm_sem_expiry(&c->map, r, now, false),
                    .pid = atomic_load_explicit(&r->pid, memory_order_acquire),
                    .tid = atomic_load_explicit(&r->tid, memory_order_acquire),
                    .holder = atomic_load_explicit(&r->holder, memory_order_acquire),
                    .flags = atomic_load_explicit(&r->flags, memory_order_acquire),
                    .level = atomic_load_explicit(&r->level, memory_order_acquire)};
                n += atomic_load_explicit(&r->gen, memory_order_relaxed) == g;
        }
        return n;
}

/* MAX - HELD as a signed number: below 0 only after a reload lowered max (or for a garbage
 * HELD, which cannot overflow it: it saturates). */
static int64_t sem_remainder(uint64_t max, uint64_t held)
{
        if (held <= max)
                return max - held > INT64_MAX ? INT64_MAX : (int64_t)(max - held);
        return held - max > INT64_MAX ? INT64_MIN : -(int64_t)(held - max);
}

/*
 * A semaphore key of slot S: its header's sums and counters (racy copies of what the records
 * say, exact after each step under the lock: sem.h), what remains of max, the acquires queued
 * (when the header counts some: shm_sem_pending's sums, and when c->waiting their amounts), and
 * its lease records (into c->lbuf, for `leases` and `peers`). `keys` orders by the units held.
 * shm_sem_pending scans the reader records (bounded by the geometry checked at attach) and only
 * adds what it reads; a garbage wait time counts as no wait.
 */
void sem_eval(struct ctx *c, const struct shmctl_lim *l, const struct thr_slot *s,
              struct shmctl_key *k)
{
        void *aux = shm_slot_aux(c->map.base, &l->t, s);
        const struct thr_sem *h = shm_sem(aux);
        struct shmctl_sem *m = &k->sem;
        m->held = atomic_load_explicit(&h->held, memory_order_relaxed);
        m->waiters = atomic_load_explicit(&h->waiters, memory_order_relaxed);
        m->leases = atomic_load_explicit(&h->leases, memory_order_relaxed);
        m->granted = atomic_load_explicit(&h->granted, memory_order_relaxed);
        m->released = atomic_load_explicit(&h->released, memory_order_relaxed);
        m->expired = atomic_load_explicit(&h->expired, memory_order_relaxed);
        m->reclaimed = atomic_load_explicit(&h->reclaimed, memory_order_relaxed);
        k->remaining = m->held < l->p.rate_n ? l->p.rate_n - m->held : 0;
        m->remainder = sem_remainder(l->p.rate_n, m->held);
        k->reset_ns = 0;
        k->debt_ns = m->held;
        uint64_t now = m->waiters || c->lbuf ? arena_now_ns(c) : 0;
        if (m->waiters) {
                struct shm_sem_pend pd;
                shm_sem_pending(&c->map, s, now, &pd);
                m->pend_waiters = pd.waiters;
                m->pend_units = pd.units;
                m->pend_longest_ns = pd.longest_ns;
        }
        if (c->waiting && m->waiters)
                sem_waiters(c, s,
                            THR_META_GEN(atomic_load_explicit(&s->meta, memory_order_relaxed)), m);
        if (c->lbuf)
                c->nl = sem_leases(c, l, aux, now, c->lbuf);
}

/* The units held and the acquires queued over L's live keys (kind = semaphore): the sums of the
 * keys' headers, each slot read as `keys` reads it; the queue as shm_sem_pending finds it (the
 * units asked summed, the longest wait of all); the lowest remainder of a key (max with none: a
 * new key's). 0 or -EBADMSG. */
int sem_totals(struct ctx *c, struct shmctl_lim *l)
{
        uint64_t nslots = (uint64_t)l->t.nshards * l->t.shard_slots;
        struct shmctl_key k;
        l->sem_held = l->sem_pending = l->sem_pend_units = l->sem_longest_ns = 0;
        l->sem_queued = 0;
        l->sem_min_rem = sem_remainder(l->p.rate_n, 0);
        for (uint64_t i = 0; i < nslots; i++) {
                int rc = slot_read(c, l, slot_at(c, l, i), 0, &k);
                if (rc < 0)
                        return rc;
                if (rc == 0)
                        continue;
                l->sem_held += k.sem.held;
                l->sem_pending += k.sem.waiters;
                l->sem_queued += k.sem.pend_waiters;
                l->sem_pend_units += k.sem.pend_units;
                if (k.sem.pend_longest_ns > l->sem_longest_ns)
                        l->sem_longest_ns = k.sem.pend_longest_ns;
                if (k.sem.remainder < l->sem_min_rem)
                        l->sem_min_rem = k.sem.remainder;
        }
        return 0;
}
/* ---------------------------------------------------------------- the leases verb */

/* The `leases` answer being built: every array its own, freed by cmd_leases. */
struct lease_acc {
        struct shmctl_lim *lims; /* the semaphore limiters only */
        long nlim;
        struct shmctl_semkey *keys;
        long nkeys, capk;
        struct shmctl_lease *v;
        long n, capv;
};

/* P (CAP items of SIZE bytes allocated) with room for NEED items: P, a larger copy, or NULL (P
 * still valid) for want of memory. */
static void *grow(void *p, long need, long *cap, size_t size)
{
        if (p && need <= *cap)
                return p;
        long nc = *cap > 32 ? *cap * 2 : 64;
        nc = nc < need ? need : nc;
        void *np = realloc(p, (size_t)nc * size);
        if (np)
                *cap = nc;
        return np;
}

static int lease_cmp(const void *a, const void *b)
{
        const struct shmctl_lease *x = a, *y = b;
        return x->gen < y->gen ? -1 : x->gen > y->gen;
}

/* By limiter, then by key bytes (a limiter's keys are distinct: the order is total). */
static int semkey_cmp(const void *a, const void *b)
{
        const struct shmctl_semkey *x = a, *y = b;
        if (x->lim != y->lim)
                return x->lim < y->lim ? -1 : 1;
        uint32_t nx = shm_key_stored_len(x->k.len), ny = shm_key_stored_len(y->k.len);
        int d = memcmp(x->k.bytes, y->k.bytes, nx < ny ? nx : ny); /* stored forms (layout.h) */
        return d ? d : (int)x->k.len - (int)y->k.len;
}

/* Slot S's key (read into A's next key) and its leases into A, if it holds one or is awaited. */
static int lease_slot(struct ctx *c, struct lease_acc *a, uint32_t li, const struct thr_slot *s)
{
        struct shmctl_semkey *kv = grow(a->keys, a->nkeys + 1, &a->capk, sizeof(*kv));
        if (!kv)
                return -ENOMEM;
        a->keys = kv;
        struct shmctl_semkey *sk = &a->keys[a->nkeys];
        c->nl = 0;
        int rc = slot_read(c, &a->lims[li], s, 0, &sk->k);
        if (rc <= 0 || (c->nl == 0 && sk->k.sem.waiters == 0 && sk->k.sem.nwait == 0))
                return rc;
        struct shmctl_lease *lv = grow(a->v, a->n + c->nl, &a->capv, sizeof(*lv));
        if (!lv)
                return -ENOMEM;
        a->v = lv;
        qsort(c->lbuf, c->nl, sizeof(*c->lbuf), lease_cmp);
        memcpy(&a->v[a->n], c->lbuf, c->nl * sizeof(*c->lbuf));
        sk->lim = li;
        sk->first = (uint64_t)a->n;
        sk->nleases = c->nl;
        a->n += c->nl;
        a->nkeys++;
        return 0;
}

/* The keys in order (by limiter, then key bytes), and the leases regrouped to follow them. */
static int leases_order(struct lease_acc *a)
{
        struct shmctl_lease *v = malloc(a->n ? (size_t)a->n * sizeof(*v) : 1);
        long n = 0;
        if (!v)
                return -ENOMEM;
        if (a->nkeys > 1)
                qsort(a->keys, (size_t)a->nkeys, sizeof(*a->keys), semkey_cmp);
        for (long i = 0; i < a->nkeys; i++) {
                struct shmctl_semkey *k = &a->keys[i];
                for (uint32_t j = 0; j < k->nleases; j++) {
                        v[n] = a->v[k->first + j];
                        v[n++].key = (uint32_t)i;
                }
                k->first = (uint64_t)(n - k->nleases);
        }
        free(a->v);
        a->v = v;
        return 0;
}

/* Every key of A's limiters holding a lease or awaited, and their leases: 0 or an exit code.
 * A key's lease records are read with its slot, into a buffer for the most a key can have. */
static int leases_collect(struct ctx *c, struct lease_acc *a)
{
        int rc = 0;
        c->waiting = true;
        c->lbuf = calloc(THR_SEM_LEASES_MAX, sizeof(*c->lbuf));
        if (!c->lbuf)
                rc = -ENOMEM;
        for (long i = 0; rc == 0 && i < a->nlim; i++) {
                const struct shmctl_lim *l = &a->lims[i];
                uint64_t nslots = (uint64_t)l->t.nshards * l->t.shard_slots;
                for (uint64_t j = 0; rc == 0 && j < nslots; j++)
                        rc = lease_slot(c, a, (uint32_t)i, slot_at(c, l, j));
        }
        if (rc == 0)
                rc = leases_order(a);
        free(c->lbuf);
        c->lbuf = NULL;
        return rc < 0 ? fail(c, rc) : 0;
}

/* The semaphore limiters `leases` is about into A: the one named, or every one, live or retired.
 * 0, or an exit code (no such limiter, or not a semaphore: an answer, EX_NOTFOUND). */
static int leases_lims(struct ctx *c, struct lease_acc *a)
{
        if (c->o->limiter) {
                a->lims = calloc(1, sizeof(*a->lims));
                int rc = a->lims ? lim_arg(c, a->lims) : fail(c, -ENOMEM);
                if (rc != 0)
                        return rc;
                if (a->lims->p.kind != THR_KIND_SEMAPHORE) {
                        fprintf(stderr, "shmctl: limiter %s is not a semaphore (kind %s)\n",
                                c->o->limiter, shm_kind_name(a->lims->p.kind));
                        return EX_NOTFOUND;
                }
                a->nlim = 1;
                return 0;
        }
        long n = lims_load_all(c, &a->lims);
        if (n < 0)
                return fail(c, (int)n);
        for (long i = 0; i < n; i++)
                if (a->lims[i].p.kind == THR_KIND_SEMAPHORE)
                        a->lims[a->nlim++] = a->lims[i];
        return 0;
}

int cmd_leases(struct ctx *c)
{
        struct lease_acc a = {0};
        int rc = leases_lims(c, &a);
        if (rc == 0)
                rc = leases_collect(c, &a);
        if (rc == 0) {
                /* now after the records: an honest lease was acquired before it */
                struct shmctl_leases out = {a.lims, a.nlim, a.keys,         a.nkeys,
                                            a.v,    a.n,    arena_now_ns(c)};
                shmctl_out_leases(&out, c->o->json);
        }
        free(a.lims);
        free(a.keys);
        free(a.v);
        return rc;
}

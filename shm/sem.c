/*
 * sem.c - semaphore keys under their shard lock (the argument is at the top of sem.h).
 *
 * Nothing read from the arena is trusted for an index or a size: a record's amount is clamped to
 * max before it is summed, a holder index is checked against the reader records' count, the
 * number of records is the limiter's (checked against the table's stride when it was opened).
 * A client rewriting a record can make its own key deny or grant wrongly, never make another
 * process read or write outside the key.
 */
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "peer.h"
#include "readers.h"
#include "sem.h"
#include "serial.h"
#include "testhook.h"

static void futex_wake(_Atomic uint32_t *w)
{
        syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* A record's amount, as summed: never above THR_SEM_MAX (a rewritten record), and never clamped
 * to the max of the moment: a reload may lower max and raise it again, and a sum of amounts
 * clamped to the lower one would be trusted under the higher one (an over-grant). */
static uint64_t amount_of(const struct thr_lease_rec *r)
{
        uint64_t a = atomic_load_explicit(&r->amount, memory_order_relaxed);
        return a > THR_SEM_MAX ? THR_SEM_MAX : a;
}

bool shm_sem_holder_gone(const struct shm_map *m, const struct thr_lease_rec *r, int check)
{
        uint64_t tok = atomic_load_explicit(&r->holder, memory_order_relaxed);
        uint32_t idx = atomic_load_explicit(&r->holder_idx, memory_order_relaxed);
        if (!tok || idx >= m->g.reader_count)
                return true;
        struct thr_reader *rd = (struct thr_reader *)shm_at(m->base, m->g.reader_off) + idx;
        if (atomic_load_explicit(&rd->owner, memory_order_acquire) != tok)
                return true;
        return check == SHM_SEM_LIVENESS && shm_reader_gone(m->fd, rd, idx) == 1;
}

uint64_t shm_sem_peer_expiry(const struct shm_map *m, const struct thr_lease_rec *r, uint64_t now,
                             bool kill)
{
        return shm_peer_expiry(m, atomic_load_explicit(&r->holder, memory_order_relaxed),
                               atomic_load_explicit(&r->holder_idx, memory_order_relaxed), now,
                               kill);
}

/*
 * Whether lease R was granted to a wait that will never take it: R still names the wait (its
 * waiter takes it by CASing R's waiter word to 0 before it moves on), and that reader record's
 * word is no longer that wait waiting or granted (it gave up, timed out, or waits for something
 * else). The waiter's CAS of R's waiter word comes before its word leaves GRANTED (release); the
 * word is read first (acquire), R's waiter word after it.
 */
static bool undelivered(const struct shm_map *m, const struct thr_lease_rec *r)
{
        uint64_t wid = atomic_load_explicit(&r->waiter, memory_order_relaxed);
        if (!wid)
                return false;
        uint64_t idx = (wid >> 32) - 1;
        if (idx >= m->g.reader_count)
                return true; /* a rewritten record */
        const struct thr_reader *w =
            (const struct thr_reader *)shm_at(m->base, m->g.reader_off) + idx;
        uint32_t word = atomic_load_explicit(&w->wait_state, memory_order_acquire);
        if (atomic_load_explicit(&r->waiter, memory_order_relaxed) != wid)
                return false; /* taken meanwhile */
        uint32_t st = THR_WAIT_STATE(word);
        return THR_WAIT_EPOCH(word) != (uint32_t)wid ||
               (st != THR_WAIT_WAITING && st != THR_WAIT_HEAD && st != THR_WAIT_GRANTED);
}

static void clear(struct thr_lease_rec *r)
{
        atomic_store_explicit(&r->waiter, 0, memory_order_relaxed); /* a taker's CAS fails */
        atomic_store_explicit(&r->gen, 0, memory_order_release);
}

static uint64_t sweep(const struct shm_map *m, int check, const struct thr_params *p, void *aux,
                      uint64_t now, uint32_t *free_idx, uint64_t *first_expiry, uint32_t *freed);

/*
 * Under the lock, before a change of records or sums: if the last locker died in the middle of
 * one (the mark is still set), the sums are recounted from the records first; then the mark is
 * set, and a release fence orders it before the change's stores (a locker that takes the lock
 * over after a death and sees any of them sees the mark). end() clears it when the sums agree
 * with the records again.
 */
static void begin(const struct shm_map *m, const struct thr_params *p, void *aux, uint64_t now)
{
        struct thr_sem *h = shm_sem(aux);
        if (atomic_load_explicit(&h->dirty, memory_order_relaxed)) {
                uint32_t free_idx, freed = 0;
                uint64_t first;
                sweep(m, SHM_SEM_TRUST, p, aux, now, &free_idx, &first, &freed);
        }
        atomic_store_explicit(&h->dirty, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_release);
}

static void end(void *aux)
{
        atomic_store_explicit(&shm_sem(aux)->dirty, 0, memory_order_release);
}

/* The first free record, or UINT32_MAX (no sweep: an expired lease's record is not free yet). */
static uint32_t first_free(const struct thr_params *p, void *aux)
{
        for (uint32_t i = 0; i < p->leases; i++)
                if (atomic_load_explicit(&shm_sem_lease(aux, i)->gen, memory_order_relaxed) == 0)
                        return i;
        return UINT32_MAX;
}

/*
 * One pass over the records: clear the expired ones (a peer's: when its peer has expired or is
 * gone, peer.h), and those whose holder is gone as CHECK judges,
 * recount the header's sums, and find the first free record (*FREE_IDX, or UINT32_MAX). Returns
 * the units held; *FIRST_EXPIRY: the earliest expiry of a lease kept (UINT64_MAX if none).
 */
static uint64_t sweep(const struct shm_map *m, int check, const struct thr_params *p, void *aux,
                      uint64_t now, uint32_t *free_idx, uint64_t *first_expiry, uint32_t *freed)
{
        struct thr_sem *h = shm_sem(aux);
        uint64_t held = 0;
        uint32_t used = 0;
        *free_idx = UINT32_MAX;
        *first_expiry = UINT64_MAX;
        for (uint32_t i = 0; i < p->leases; i++) {
                struct thr_lease_rec *r = shm_sem_lease(aux, i);
                if (atomic_load_explicit(&r->gen, memory_order_acquire) == 0) {
                        if (*free_idx == UINT32_MAX)
                                *free_idx = i;
                        continue;
                }
                uint64_t exp = shm_sem_expiry(m, r, now, true);
                if (exp <= now) {
                        clear(r);
                        atomic_fetch_add_explicit(&h->expired, 1, memory_order_relaxed);
                } else if ((check != SHM_SEM_TRUST && shm_sem_holder_gone(m, r, check)) ||
                           undelivered(m, r)) {
                        clear(r);
                        atomic_fetch_add_explicit(&h->reclaimed, 1, memory_order_relaxed);
                } else {
                        held += amount_of(r);
                        used++;
                        if (exp < *first_expiry)
                                *first_expiry = exp;
                        continue;
                }
                ++*freed;
                if (*free_idx == UINT32_MAX)
                        *free_idx = i;
        }
        atomic_store_explicit(&h->held, held, memory_order_relaxed);
        atomic_store_explicit(&h->leases, (uint16_t)used, memory_order_relaxed);
        return held;
}

/*
 * Fill free record I for ASK at NOW: the lease's generation. WID: the waiter it is granted to
 * (shm_sem_waiter_id), or 0 for a lease taken at once; stored before the record's generation,
 * which is stored last (release): a granter killed before its CAS of the waiter's word leaves a
 * record that names the wait it was for, and whoever serves the key next, or the waiter itself,
 * completes the grant with it (sem.h).
 */
static uint64_t fill(void *aux, uint32_t i, const struct shm_sem_ask *ask, uint64_t now,
                     uint64_t wid)
{
        struct thr_sem *h = shm_sem(aux);
        struct thr_lease_rec *r = shm_sem_lease(aux, i);
        uint64_t gen = atomic_load_explicit(&h->next_gen, memory_order_relaxed);
        if (gen == 0)
                gen = 1;
        atomic_store_explicit(&h->next_gen, gen + 1, memory_order_relaxed);
        THR_HOOK(THR_HOOK_SEM_GEN_TAKEN, (void *)(uintptr_t)wid);
        atomic_store_explicit(&r->waiter, wid, memory_order_relaxed);
        uint64_t ttl = ask->ttl_ns > THR_HORIZON_NS ? THR_HORIZON_NS
                       : ask->ttl_ns                ? ask->ttl_ns
                                                    : 1; /* 0 only in a rewritten waiter's record */
        atomic_store_explicit(&r->holder, ask->holder, memory_order_relaxed);
        atomic_store_explicit(&r->holder_idx, ask->holder_idx, memory_order_relaxed);
        atomic_store_explicit(&r->amount, ask->amount, memory_order_relaxed);
        atomic_store_explicit(&r->acquired_ns, now, memory_order_relaxed);
        atomic_store_explicit(&r->expires_ns, now + ttl, memory_order_relaxed);
        atomic_store_explicit(&r->pid, (uint32_t)ask->pid, memory_order_relaxed);
        atomic_store_explicit(&r->tid, (uint32_t)ask->tid, memory_order_relaxed);
        atomic_store_explicit(&r->flags, ask->flags & THR_LEASE_PEER, memory_order_relaxed);
        atomic_store_explicit(&r->level, ask->level, memory_order_relaxed);
        if (ask->flags & THR_LEASE_PEER) /* its peer's expiry, not its own */
                atomic_store_explicit(&r->expires_ns, UINT64_MAX, memory_order_relaxed);
        atomic_store_explicit(&r->gen, gen, memory_order_release); /* the record is in use */
        atomic_fetch_add_explicit(&h->held, ask->amount > THR_SEM_MAX ? THR_SEM_MAX : ask->amount,
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&h->leases, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->granted, 1, memory_order_relaxed);
        return gen;
}

int shm_sem_take(const struct shm_map *m, const struct thr_params *p, void *aux,
                 const struct shm_sem_ask *ask, uint64_t now, uint32_t *idx, uint64_t *gen)
{
        struct thr_sem *h = shm_sem(aux);
        if (atomic_load_explicit(&h->waiters, memory_order_relaxed) != 0)
                return -EAGAIN; /* nobody overtakes a queued acquire */
        begin(m, p, aux, now);
        /* the sums agree with the records (begin); they may count leases that have expired since,
         * which only a sweep clears: it is made when the sums say no */
        uint64_t held = atomic_load_explicit(&h->held, memory_order_relaxed);
        uint32_t free_idx = first_free(p, aux);
        if (held + ask->amount > p->rate_n || free_idx == UINT32_MAX) {
                uint32_t freed = 0;
                uint64_t first;
                held = sweep(m, SHM_SEM_TRUST, p, aux, now, &free_idx, &first, &freed);
        }
        int rc = held + ask->amount > p->rate_n ? -EAGAIN : free_idx == UINT32_MAX ? -ENOBUFS : 0;
        if (rc == 0) {
                *idx = free_idx;
                *gen = fill(aux, free_idx, ask, now, 0);
        }
        end(aux);
        return rc;
}

uint32_t shm_sem_find_waiter(const struct thr_params *p, void *aux, uint64_t wid, uint64_t holder,
                             uint64_t floor)
{
        for (uint32_t i = 0; i < p->leases; i++) {
                struct thr_lease_rec *r = shm_sem_lease(aux, i);
                uint64_t gen = atomic_load_explicit(&r->gen, memory_order_acquire);
                if (gen != 0 && gen >= floor &&
                    atomic_load_explicit(&r->waiter, memory_order_relaxed) == wid &&
                    atomic_load_explicit(&r->holder, memory_order_relaxed) == holder)
                        return i;
        }
        return UINT32_MAX;
}

void shm_sem_queue(const struct shm_map *m, const struct thr_params *p, const struct thr_slot *s,
                   const void *aux, uint64_t now, struct shm_wait_order *q)
{
        const struct thr_sem *h = aux;
        uint64_t off = (uint64_t)((const char *)s - (const char *)m->base);
        uint32_t gen = THR_META_GEN(atomic_load_explicit(&s->meta, memory_order_acquire));
        uint32_t share = THR_SEMQ_SHARE(p->reserved);
        /* the share: the grant that makes the key's count a multiple of SHARE is the oldest's */
        bool turn =
            share && (atomic_load_explicit(&h->granted, memory_order_relaxed) + 1) % share == 0;
        shm_waiters_order(m, off, gen, now, turn, q);
}

int shm_sem_make_room(const struct shm_map *m, const struct thr_params *p, const struct thr_slot *s,
                      const void *aux, uint64_t now, uint32_t prio, uint64_t deadline,
                      uint32_t *dropped)
{
        uint32_t max = THR_SEMQ_MAX_WAITERS(p->reserved), policy = THR_SEMQ_ON_FULL(p->reserved);
        struct thr_reader *rec = shm_at(m->base, m->g.reader_off);
        *dropped = 0;
        if (!max)
                return 0;
        /* a reload may have lowered max_waiters below the queue: each pass drops one (or finds
         * that its victim left by itself), until there is room. Bounded whatever the records
         * say: a queue is at most one waiter a reader record, so reader_count + 1 passes make
         * room for any queue (a fixed 64 dropped 64 waiters of a longer queue and then refused
         * the acquire it had dropped them for) */
        for (uint32_t pass = 0; pass <= m->g.reader_count; pass++) {
                struct shm_wait_order q;
                shm_sem_queue(m, p, s, aux, now, &q);
                if (q.n < max)
                        return 0;
                if (policy == THR_QUEUE_DROP_LOWEST && q.lowest_class >= prio)
                        return -EBUSY; /* the new acquire is the last of the lowest class */
                if (policy != THR_QUEUE_DROP_OLDEST && policy != THR_QUEUE_DROP_LOWEST)
                        return -EBUSY;
                const struct shm_waiter *v =
                    policy == THR_QUEUE_DROP_OLDEST ? &q.oldest : &q.lowest;
                struct thr_reader *r = &rec[v->idx];
                uint64_t vdl = atomic_load_explicit(&r->wait_deadline, memory_order_relaxed);
                if (policy == THR_QUEUE_DROP_OLDEST && deadline && (!vdl || vdl > deadline))
                        return -EBUSY; /* never drop a waiter for one that gives up first (a
                                        * short deadline would drop it for nothing) */
                /* from the word scanned, epoch included: never a later wait of the record; a
                 * waiter that gave up meanwhile (without the lock) made it NONE first */
                if (shm_wait_to(r, v->word, THR_WAIT_DROPPED)) {
                        futex_wake(&r->wait_state);
                        (*dropped)++;
                }
        }
        return -EBUSY;
}

void shm_sem_serve(const struct shm_map *m, const struct thr_params *p, struct thr_slot *s,
                   void *aux, uint64_t now, int check, uint32_t self, struct shm_sem_serve *out)
{
        bool wake_head = check & SHM_SEM_WAKE_HEAD;
        check &= ~SHM_SEM_WAKE_HEAD;
        struct thr_sem *h = shm_sem(aux);
        struct thr_reader *rec = shm_at(m->base, m->g.reader_off);
        *out = (struct shm_sem_serve){
            .grant_idx = UINT32_MAX, .head_idx = UINT32_MAX, .head_ticket = UINT64_MAX};
        uint32_t free_idx;
        uint64_t first;
        begin(m, p, aux, now);
        uint64_t held = sweep(m, check, p, aux, now, &free_idx, &first, &out->freed);
        /* the reader records are scanned only when someone may wait: the count is exact after
         * every serve, a new waiter counts itself before its first one, and a waiter's own
         * checks (SHM_SEM_LIVENESS) always scan, whatever a rewritten count says */
        bool scan = check == SHM_SEM_LIVENESS ||
                    atomic_load_explicit(&h->waiters, memory_order_relaxed) != 0;
        /* bounded whatever the reader records say: no serve makes more grants than the key has
         * records (a rewritten waiter whose grants expire at once, or whose state flips back to
         * WAITING, cannot hold the lock for ever); a grant taken back counts too */
        for (uint64_t granted = 0; scan && granted <= p->leases; granted++) {
                struct shm_wait_order q;
                shm_sem_queue(m, p, s, aux, now, &q);
                struct shm_waiter w = q.next;
                uint32_t n = q.n;
                out->waiters = n;
                out->head_ticket = n ? shm_ticket48(w.ticket >> 16) : UINT64_MAX;
                out->head_idx = n ? w.idx : UINT32_MAX;
                out->head_word = w.word;
                if (!n)
                        break;
                struct thr_reader *r = &rec[w.idx];
                uint64_t amount = w.ticket & 0xffff;
                if (amount > p->rate_n) {
                        /* above a max a reload lowered: it can never fit, and would hold the
                         * queue behind it until its timeout. Refused (-ERANGE for its caller) */
                        shm_wait_to(r, w.word, THR_WAIT_REFUSED);
                        futex_wake(&r->wait_state);
                        continue;
                }
                uint64_t wid = shm_sem_waiter_id(w.idx, w.word);
                uint32_t mine = shm_sem_find_waiter(
                    p, aux, wid, atomic_load_explicit(&r->wait_holder, memory_order_relaxed),
                    atomic_load_explicit(&r->wait_gen_floor, memory_order_relaxed));
                if (mine != UINT32_MAX) {
                        /* its granter was killed between the fill and the CAS: that lease, in
                         * the sums already, is its grant (not a second one) */
                        THR_HOOK(THR_HOOK_SEM_REGRANT_FOUND, r);
                        if (shm_wait_to(r, w.word, THR_WAIT_GRANTED)) {
                                futex_wake(&r->wait_state);
                                if (out->grant_idx == UINT32_MAX)
                                        out->grant_idx = w.idx;
                        } else { /* it left meanwhile: nobody's */
                                clear(shm_sem_lease(aux, mine));
                        }
                        held = sweep(m, SHM_SEM_TRUST, p, aux, now, &free_idx, &first, &out->freed);
                        continue;
                }
                if (held + amount > p->rate_n && check != SHM_SEM_LIVENESS && granted == 0) {
                        /* before making the head wait: are the holders in its way alive? */
                        check = SHM_SEM_LIVENESS;
                        held = sweep(m, check, p, aux, now, &free_idx, &first, &out->freed);
                }
                if (held + amount > p->rate_n) {
                        out->room_at = first == UINT64_MAX ? 0 : first;
                        break;
                }
                if (free_idx == UINT32_MAX) {
                        out->no_record = true;
                        out->room_at = first == UINT64_MAX ? 0 : first;
                        break;
                }
                uint32_t wf = atomic_load_explicit(&r->wait_flags, memory_order_relaxed);
                struct shm_sem_ask ask = {
                    .flags = wf & THR_LEASE_PEER,
                    .level = (wf >> 8) % THR_SEM_LEVELS,
                    .holder = atomic_load_explicit(&r->wait_holder, memory_order_relaxed),
                    .holder_idx = atomic_load_explicit(&r->wait_holder_idx, memory_order_relaxed),
                    .amount = (uint32_t)amount,
                    .ttl_ns = atomic_load_explicit(&r->wait_ttl, memory_order_relaxed),
                    .pid = atomic_load_explicit(&r->pid, memory_order_relaxed),
                    .tid = atomic_load_explicit(&r->tid, memory_order_relaxed)};
                uint32_t i = free_idx;
                fill(aux, i, &ask, now, wid); /* the record names the wait it is for */
                THR_HOOK(THR_HOOK_SEM_GRANT_FILLED, r);
                /* this wait's WAITING or HEAD -> GRANTED; a waiter that left CASed it to NONE
                 * first, one queued again since has another epoch */
                if (!shm_wait_to(r, w.word, THR_WAIT_GRANTED)) {
                        /* it stopped waiting: take the grant back */
                        clear(shm_sem_lease(aux, i));
                        atomic_fetch_sub_explicit(&h->granted, 1, memory_order_relaxed);
                        held = sweep(m, SHM_SEM_TRUST, p, aux, now, &free_idx, &first, &out->freed);
                        continue;
                }
                THR_HOOK(THR_HOOK_SEM_GRANT_CASED, r);
                futex_wake(&r->wait_state);
                THR_HOOK(THR_HOOK_SEM_GRANT_WOKEN, r);
                if (out->grant_idx == UINT32_MAX)
                        out->grant_idx = w.idx;
                held = sweep(m, SHM_SEM_TRUST, p, aux, now, &free_idx, &first, &out->freed);
        }
        if (scan)
                atomic_store_explicit(&h->waiters, out->waiters, memory_order_relaxed);
        end(aux);
        if (!out->waiters) {
                out->head_ticket = UINT64_MAX;
                out->head_idx = UINT32_MAX;
        } else {
                /* the head learns it is head by its futex word (WAITING -> HEAD), so a wake
                 * that comes before its sleep is not lost: it sleeps only on WAITING */
                struct thr_reader *hr = &rec[out->head_idx];
                uint32_t waiting = THR_WAIT_AS(out->head_word, THR_WAIT_WAITING);
                bool made = atomic_compare_exchange_strong_explicit(
                    &hr->wait_state, &waiting, THR_WAIT_AS(waiting, THR_WAIT_HEAD),
                    memory_order_release, memory_order_relaxed);
                if (out->head_idx != self &&
                    (made || wake_head || out->grant_idx != UINT32_MAX || out->freed))
                        futex_wake(&hr->wait_state); /* spurious at worst: it checks and sleeps */
        }
}

/* Record IDX if it holds the lease GEN, else NULL. */
static struct thr_lease_rec *lease_of(const struct thr_params *p, void *aux, uint32_t idx,
                                      uint64_t gen)
{
        if (idx >= p->leases || gen == 0)
                return NULL;
        struct thr_lease_rec *r = shm_sem_lease(aux, idx);
        return atomic_load_explicit(&r->gen, memory_order_acquire) == gen ? r : NULL;
}

/* Under the lock: clear lease R and take it out of the sums, as released or as EXPIRED. */
static void drop(const struct shm_map *m, const struct thr_params *p, void *aux,
                 struct thr_lease_rec *r, uint64_t now, bool expired)
{
        struct thr_sem *h = shm_sem(aux);
        begin(m, p, aux, now);
        if (atomic_load_explicit(&r->gen, memory_order_relaxed) != 0) { /* begin may have swept */
                clear(r);
                uint64_t a = amount_of(r);
                uint64_t held = atomic_load_explicit(&h->held, memory_order_relaxed);
                atomic_store_explicit(&h->held, held >= a ? held - a : 0, memory_order_relaxed);
                uint16_t n = atomic_load_explicit(&h->leases, memory_order_relaxed);
                atomic_store_explicit(&h->leases, (uint16_t)(n ? n - 1 : 0), memory_order_relaxed);
                atomic_fetch_add_explicit(expired ? &h->expired : &h->released, 1,
                                          memory_order_relaxed);
        }
        end(aux);
}

int shm_sem_release(const struct shm_map *m, const struct thr_params *p, void *aux, uint32_t idx,
                    uint64_t gen, uint64_t holder, uint64_t now)
{
        struct thr_lease_rec *r = lease_of(p, aux, idx, gen);
        if (!r)
                return -EKEYEXPIRED;
        if (atomic_load_explicit(&r->holder, memory_order_relaxed) != holder)
                return -EPERM;
        bool expired = shm_sem_expiry(m, r, now, true) <= now;
        drop(m, p, aux, r, now, expired);
        return expired ? -EKEYEXPIRED : 0;
}

/* The lease (IDX, GEN) of HOLDER, live at NOW, in *OUT: 0, or -EKEYEXPIRED (gone; or expired,
 * then reclaimed here: too late, nobody had yet), -EPERM (another holder's). */
static int live_lease(const struct shm_map *m, const struct thr_params *p, void *aux, uint32_t idx,
                      uint64_t gen, uint64_t holder, uint64_t now, struct thr_lease_rec **out)
{
        struct thr_lease_rec *r = lease_of(p, aux, idx, gen);
        if (!r)
                return -EKEYEXPIRED;
        if (atomic_load_explicit(&r->holder, memory_order_relaxed) != holder)
                return -EPERM;
        if (shm_sem_expiry(m, r, now, true) <= now) {
                drop(m, p, aux, r, now, true);
                return -EKEYEXPIRED;
        }
        *out = r;
        return 0;
}

int shm_sem_extend(const struct shm_map *m, const struct thr_params *p, void *aux, uint32_t idx,
                   uint64_t gen, uint64_t holder, uint64_t now, uint64_t expires)
{
        struct thr_lease_rec *r;
        int rc = live_lease(m, p, aux, idx, gen, holder, now, &r);
        if (rc < 0)
                return rc;
        if (atomic_load_explicit(&r->flags, memory_order_relaxed) & THR_LEASE_PEER)
                return -EINVAL; /* a peer's lease lives as long as its peer: its heartbeat */
        atomic_store_explicit(&r->expires_ns, expires, memory_order_relaxed);
        return 0;
}

int shm_sem_resize(const struct shm_map *m, const struct thr_params *p, void *aux, uint32_t idx,
                   uint64_t gen, uint64_t holder, uint64_t now, uint32_t amount)
{
        struct thr_sem *h = shm_sem(aux);
        struct thr_lease_rec *r;
        int live = live_lease(m, p, aux, idx, gen, holder, now, &r);
        if (live < 0)
                return live;
        uint64_t old = amount_of(r);
        if (amount > old) {
                /* more units: now, and only if nobody is queued (they come first) */
                if (atomic_load_explicit(&h->waiters, memory_order_relaxed) != 0)
                        return -EAGAIN;
                uint32_t free_idx, freed = 0;
                uint64_t first;
                begin(m, p, aux, now);
                uint64_t held = sweep(m, SHM_SEM_TRUST, p, aux, now, &free_idx, &first, &freed);
                int rc = -EAGAIN;
                if (atomic_load_explicit(&r->gen, memory_order_relaxed) == gen &&
                    held - old + amount <= p->rate_n) {
                        atomic_store_explicit(&r->amount, amount, memory_order_relaxed);
                        atomic_store_explicit(&h->held, held - old + amount, memory_order_relaxed);
                        rc = 0;
                }
                end(aux);
                return rc;
        }
        begin(m, p, aux, now);
        uint64_t held = atomic_load_explicit(&h->held, memory_order_relaxed);
        atomic_store_explicit(&r->amount, amount, memory_order_relaxed);
        atomic_store_explicit(&h->held, held >= old - amount ? held - (old - amount) : 0,
                              memory_order_relaxed);
        end(aux);
        return 0;
}

void shm_sem_fresh(const struct thr_params *p, void *aux)
{
        struct thr_sem *h = shm_sem(aux);
        for (uint32_t i = 0; i < p->leases; i++)
                atomic_store_explicit(&shm_sem_lease(aux, i)->gen, 0, memory_order_relaxed);
        uint64_t gen = atomic_load_explicit(&h->next_gen, memory_order_relaxed);
        /* generations keep growing across the slot's keys: a handle of the key that had this
         * slot before can never match a lease of the new one (the slot's generation is checked
         * too; this is belt and braces) */
        atomic_store_explicit(&h->held, 0, memory_order_relaxed);
        atomic_store_explicit(&h->waiters, 0, memory_order_relaxed);
        atomic_store_explicit(&h->leases, 0, memory_order_relaxed);
        atomic_store_explicit(&h->dirty, 0, memory_order_relaxed);
        atomic_store_explicit(&h->next_gen, gen ? gen : 1, memory_order_relaxed);
        atomic_store_explicit(&h->granted, 0, memory_order_relaxed);
        atomic_store_explicit(&h->released, 0, memory_order_relaxed);
        atomic_store_explicit(&h->expired, 0, memory_order_relaxed);
        atomic_store_explicit(&h->reclaimed, 0, memory_order_relaxed);
}

bool shm_sem_reapable(const struct shm_map *m, const struct thr_params *p, const void *aux,
                      uint64_t now)
{
        if (atomic_load_explicit(&((const struct thr_sem *)aux)->waiters, memory_order_relaxed))
                return true; /* its head is woken (a head killed while queued leaves the next
                              * one asleep behind it) */
        for (uint32_t i = 0; i < p->leases; i++) {
                const struct thr_lease_rec *r = shm_sem_lease((void *)aux, i);
                if (!atomic_load_explicit(&r->gen, memory_order_relaxed))
                        continue;
                if (shm_sem_expiry(m, r, now, false) <= now ||
                    shm_sem_holder_gone(m, r, SHM_SEM_OWNERS))
                        return true;
        }
        return false;
}

bool shm_sem_pinned(const struct thr_params *p, const void *aux)
{
        if (atomic_load_explicit(&((const struct thr_sem *)aux)->waiters, memory_order_relaxed))
                return true;
        for (uint32_t i = 0; i < p->leases; i++)
                if (atomic_load_explicit(&shm_sem_lease((void *)aux, i)->gen, memory_order_relaxed))
                        return true;
        return false;
}

void shm_sem_pending(const struct shm_map *m, const struct thr_slot *s, uint64_t now,
                     struct shm_sem_pend *out)
{
        const struct thr_reader *rec = shm_at(m->base, m->g.reader_off);
        uint64_t off = (uint64_t)((const char *)s - (const char *)m->base);
        uint32_t gen = THR_META_GEN(atomic_load_explicit(&s->meta, memory_order_acquire));
        *out = (struct shm_sem_pend){0};
        for (uint32_t i = 0; i < m->g.reader_count; i++) {
                const struct thr_reader *r = &rec[i];
                uint32_t st =
                    THR_WAIT_STATE(atomic_load_explicit(&r->wait_state, memory_order_relaxed));
                if (!atomic_load_explicit(&r->owner, memory_order_relaxed) ||
                    (st != THR_WAIT_WAITING && st != THR_WAIT_HEAD) ||
                    atomic_load_explicit(&r->wait_slot, memory_order_relaxed) != off ||
                    atomic_load_explicit(&r->wait_gen, memory_order_relaxed) != gen ||
                    shm_reader_gone(m->fd, r, i) != 0) /* a dead waiter waits for nothing */
                        continue;
                uint64_t dl = atomic_load_explicit(&r->wait_deadline, memory_order_relaxed);
                if (dl && dl <= now)
                        continue; /* past its deadline: leaving, passed over (shm_sem_queue) */
                uint64_t since = atomic_load_explicit(&r->wait_since, memory_order_relaxed);
                out->waiters++;
                out->units += atomic_load_explicit(&r->wait_ticket, memory_order_relaxed) & 0xffff;
                if (since <= now && now - since > out->longest_ns)
                        out->longest_ns = now - since;
        }
}

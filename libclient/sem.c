/*
 * sem.c - leases on semaphore keys: thr_sem_acquire, thr_sem_try, thr_sem_heartbeat,
 * thr_sem_release. The protocol, and what a process killed at each step leaves, is at the top of
 * shm/sem.h; this file queues the caller, sleeps, and takes the key's shard lock for each step.
 *
 * The key's slot is found (or created, holding nothing) inside a read-side section, which is then
 * left: nothing may block grace periods while it waits. A key with a lease or a waiter cannot be
 * evicted (it is pinned, kind.c), but it may be between the lookup and the lock: each step under
 * the lock first checks that the slot is still LIVE with the generation found, and looks the key
 * up again if not.
 *
 * The wait: the thread's reader record carries its place (ticket, amount), the lease it asks for,
 * and a futex word; a granter fills a lease record for it, names it in the waiter's record and
 * flips the word to GRANTED and wakes it (release, a reclaim, a waiter's own check). The thread
 * also wakes on its own every THR_SERIAL_POLL_NS, and when the first lease in its way expires,
 * takes the lock and serves the key itself: that is how a dead holder's or an expired lease's
 * count comes back with nobody releasing it. On a manual-clock arena the arena's time is read
 * again at each wake.
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "kind.h"
#include "sem.h"
#include "serial.h"

/* One acquire, heartbeat or release in progress. */
struct sop {
        thr_limiter *l;
        thr_arena *a;
        struct thr_reader *r;
        uint32_t idx; /* of R */
        uint64_t token, me;
        struct thr_slot *slot;
        uint32_t gen; /* the slot's, as found */
        struct shm_probe pr;
        const struct thr_params *p; /* &pc: read under the lock */
        struct thr_params pc;       /* the limiter's record, copied and checked (thr_sem_record) */
        bool no_record;             /* the last serve found the head fitting but no record free */
        uint32_t word;              /* the wait word this thread queued with (its epoch) */
        bool queued;                /* it went through the key's queue: a wait (counted) */
        uint32_t prio;              /* its class in the key's queue (0 lowest) */
        uint64_t deadline;          /* arena ns it waits until (UINT64_MAX: no end) */
};

static uint64_t arena_now(const struct sop *o)
{
        return shm_now_ns(o->a->hdr);
}

static void *sop_aux(const struct sop *o)
{
        return shm_slot_aux(o->a->map.base, &o->l->geo, o->slot);
}

/* The shard of O's slot (found by a lookup in the limiter's table, whose geometry was checked at
 * open): what the lock needs, without hashing the key again. */
static void sop_probe(struct sop *o)
{
        const struct thr_table *g = &o->l->geo;
        struct thr_slot *slots = shm_at(o->a->map.base, g->slots_off);
        uint32_t shard = (uint32_t)((uint64_t)(o->slot - slots) / g->shard_slots);
        o->pr = (struct shm_probe){
            .shard = (struct thr_shard *)shm_at(o->a->map.base, g->shards_off) + shard,
            .slots = slots + (uint64_t)shard * g->shard_slots,
            .n = g->shard_slots};
}

/* Take the key's shard lock within WAIT_NS; then whether the slot is still the key's and the
 * limiter still a semaphore. */
static int sop_lock(struct sop *o, uint64_t wait_ns)
{
        sop_probe(o);
        int rc = shm_shard_lock(&o->a->map, &o->pr, o->me, wait_ns);
        if (rc < 0)
                return rc == -EDEADLK ? -EINVAL : rc;
        uint64_t meta = atomic_load_explicit(&o->slot->meta, memory_order_acquire);
        uint64_t state = atomic_load_explicit(&o->slot->state, memory_order_acquire);
        if (THR_META_STATUS(meta) != THR_SLOT_LIVE || THR_META_GEN(meta) != o->gen ||
            state >= THR_TAT_LIMIT) {
                shm_shard_unlock(&o->pr, o->me);
                return -ESTALE; /* look it up again */
        }
        o->p = thr_sem_record(o->l, &o->pc);
        if (!o->p) {
                shm_shard_unlock(&o->pr, o->me);
                return -EBADMSG;
        }
        return 0;
}

/* Under the lock: the key changed at NOW (its state word is its last change, for idleness). */
static void sop_unlock(struct sop *o, uint64_t now)
{
        if (now < THR_TAT_LIMIT)
                atomic_store_explicit(&o->slot->state, now, memory_order_release);
        shm_shard_unlock(&o->pr, o->me);
}

static void wait_clear(struct thr_reader *r)
{
        uint32_t w = atomic_load_explicit(&r->wait_state, memory_order_relaxed);
        atomic_store_explicit(&r->wait_state, THR_WAIT_AS(w, THR_WAIT_NONE), memory_order_relaxed);
        atomic_store_explicit(&r->wait_slot, 0, memory_order_relaxed);
        atomic_store_explicit(&r->wait_gen, 0, memory_order_relaxed);
        atomic_store_explicit(&r->wait_ticket, 0, memory_order_release);
}

/* Sleep on the futex word while it says STATE, at most NS (real time). */
static void futex_sleep(_Atomic uint32_t *w, uint32_t state, uint64_t ns)
{
        struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
        syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, state, &ts, NULL, 0);
}

/* Leave the queue: WAITING or HEAD -> NONE. False if a grant (the lease is ours) or a refusal
 * came first. */
static bool give_up(struct thr_reader *r)
{
        uint32_t s = atomic_load_explicit(&r->wait_state, memory_order_acquire);
        while (THR_WAIT_STATE(s) == THR_WAIT_WAITING || THR_WAIT_STATE(s) == THR_WAIT_HEAD)
                if (atomic_compare_exchange_weak_explicit(
                        &r->wait_state, &s, THR_WAIT_AS(s, THR_WAIT_NONE), memory_order_acq_rel,
                        memory_order_acquire))
                        return true;
        return false;
}

enum { QUEUED, GRANTED, REFUSED, DROPPED };

/* What a serve decided for this thread: GRANTED, REFUSED (its amount is above a max a reload
 * lowered: -ERANGE), DROPPED (from a full queue for another acquire: -ECANCELED), or nothing yet
 * (QUEUED). All are final; the lease a grant names was written before the CAS this load pairs
 * with. */
static int outcome(const struct thr_reader *r)
{
        uint32_t s = THR_WAIT_STATE(atomic_load_explicit(&r->wait_state, memory_order_acquire));
        return s == THR_WAIT_GRANTED   ? GRANTED
               : s == THR_WAIT_REFUSED ? REFUSED
               : s == THR_WAIT_DROPPED ? DROPPED
                                       : QUEUED;
}

/* Under the lock: serve the key at NOW; whether this thread was granted; *ROOM_AT as enqueue. */
static int serve(struct sop *o, uint64_t now, int check, uint64_t *room_at)
{
        struct shm_sem_serve sv;
        shm_sem_serve(&o->a->map, o->p, o->slot, sop_aux(o), now, check, o->idx, &sv);
        if (outcome(o->r) != QUEUED)
                return outcome(o->r);
        bool head = sv.head_idx == o->idx;
        *room_at = head ? sv.room_at : 0;
        o->no_record = head && sv.no_record;
        return QUEUED;
}

/* Under the lock: queue this thread for ASK and serve the key. GRANTED, QUEUED or -errno
 * (-EBUSY: the key's queue is full and its on_queue_full refuses this acquire). */
static int enqueue(struct sop *o, const struct shm_sem_ask *ask, uint64_t *room_at)
{
        struct thr_sem *h = shm_sem(sop_aux(o));
        uint32_t dropped;
        if (shm_sem_make_room(&o->a->map, o->p, o->slot, sop_aux(o), arena_now(o), o->prio,
                              o->deadline == UINT64_MAX ? 0 : o->deadline, &dropped) < 0)
                return -EBUSY;
        uint64_t ticket = atomic_load_explicit(&h->next_ticket, memory_order_relaxed);
        atomic_store_explicit(&h->next_ticket, ticket + 1, memory_order_relaxed);
        struct thr_reader *r = o->r;
        atomic_store_explicit(&r->wait_slot, (uint64_t)((char *)o->slot - (char *)o->a->map.base),
                              memory_order_relaxed);
        atomic_store_explicit(&r->wait_gen, o->gen, memory_order_relaxed);
        atomic_store_explicit(&r->wait_ticket, shm_wait_ticket(ticket, ask->amount),
                              memory_order_relaxed);
        atomic_store_explicit(&r->wait_ttl, ask->ttl_ns, memory_order_relaxed);
        atomic_store_explicit(&r->wait_holder, ask->holder, memory_order_relaxed);
        atomic_store_explicit(&r->wait_holder_idx, ask->holder_idx, memory_order_relaxed);
        atomic_store_explicit(&r->wait_flags,
                              (ask->flags & THR_LEASE_PEER) | ask->level << 8 | o->prio << 16,
                              memory_order_relaxed);
        atomic_store_explicit(&r->wait_deadline, o->deadline == UINT64_MAX ? 0 : o->deadline,
                              memory_order_relaxed);
        atomic_store_explicit(&r->wait_since, arena_now(o), memory_order_relaxed);
        atomic_store_explicit(&r->wait_gen_floor,
                              atomic_load_explicit(&h->next_gen, memory_order_relaxed),
                              memory_order_relaxed);
        /* a new wait: the next epoch (layout.h), which the lease granted for it will name */
        o->word = THR_WAIT_NEXT(atomic_load_explicit(&r->wait_state, memory_order_relaxed));
        atomic_store_explicit(&r->wait_state, o->word, memory_order_release);
        atomic_fetch_add_explicit(&h->waiters, 1, memory_order_relaxed); /* so the serve scans */
        return serve(o, arena_now(o), SHM_SEM_TRUST, room_at);
}

/* The record of the lease granted to this thread's current wait (its word WORD), found by the
 * waiter id it names (shm/sem.h), or UINT32_MAX. */
static uint32_t my_lease(const struct sop *o, uint32_t word)
{
        return shm_sem_find_waiter(
            o->p, sop_aux(o), shm_sem_waiter_id(o->idx, word),
            atomic_load_explicit(&o->r->wait_holder, memory_order_relaxed),
            atomic_load_explicit(&o->r->wait_gen_floor, memory_order_relaxed));
}

/*
 * Under the lock, still queued: a grant whose granter was killed between filling the lease and
 * its CAS of our word (shm/sem.c, fill). The granter holds the lock from the fill to the CAS, so
 * under the lock a record naming this wait while we are still queued was left by a dead granter.
 * Ours: our word goes to GRANTED as the granter would have made it (a serve that finds it first
 * does the same).
 */
static bool adopt(struct sop *o)
{
        struct thr_reader *r = o->r;
        uint32_t s = atomic_load_explicit(&r->wait_state, memory_order_acquire);
        if (my_lease(o, s) == UINT32_MAX)
                return false;
        while (THR_WAIT_STATE(s) == THR_WAIT_WAITING || THR_WAIT_STATE(s) == THR_WAIT_HEAD)
                if (atomic_compare_exchange_weak_explicit(
                        &r->wait_state, &s, THR_WAIT_AS(s, THR_WAIT_GRANTED), memory_order_acq_rel,
                        memory_order_acquire))
                        return true;
        return false;
}

/* Granted: take the lease (its record's waiter word to 0: delivered, never reclaimed as a grant
 * nobody took); its index and generation. -EKEYEXPIRED: it is gone already (a ttl shorter than
 * the wake, or a rewritten record). */
static int take_lease(struct sop *o, uint32_t *idx, uint64_t *gen)
{
        uint32_t word = atomic_load_explicit(&o->r->wait_state, memory_order_acquire);
        uint32_t i = my_lease(o, word);
        if (i == UINT32_MAX)
                return -EKEYEXPIRED;
        struct thr_lease_rec *rec = shm_sem_lease(sop_aux(o), i);
        uint64_t wid = shm_sem_waiter_id(o->idx, word);
        *gen = atomic_load_explicit(&rec->gen, memory_order_acquire);
        if (!atomic_compare_exchange_strong_explicit(&rec->waiter, &wid, 0, memory_order_release,
                                                     memory_order_relaxed) ||
            atomic_load_explicit(&rec->gen, memory_order_acquire) != *gen || !*gen)
                return -EKEYEXPIRED; /* cleared (expired) meanwhile: its clear zeroes the word */
        *idx = i;
        return 0;
}

/*
 * Under the lock, while queued: granted meanwhile? If not, serve the key (expired leases and
 * those of dead holders reclaimed, the head granted if it fits). LEAVE: give up the place if
 * still queued (a grant made before wins: the lease is ours). Returns GRANTED or QUEUED.
 */
static int check(struct sop *o, bool leave, uint64_t *room_at)
{
        *room_at = 0;
        if (outcome(o->r) != QUEUED)
                return outcome(o->r);
        if (adopt(o)) /* before giving up: it is held already */
                return GRANTED;
        if (leave) {
                if (!give_up(o->r))
                        return outcome(o->r);
                uint64_t ignored;
                bool no_record = o->no_record; /* why it waited in vain: kept for the caller */
                /* the next one may fit without us, and may be the head now */
                serve(o, arena_now(o), SHM_SEM_TRUST | SHM_SEM_WAKE_HEAD, &ignored);
                o->no_record = no_record;
                return QUEUED;
        }
        return serve(o, arena_now(o), SHM_SEM_LIVENESS, room_at);
}

/* The lock wait of one step at NOW: the limiter's insert_wait (as last read), but never past
 * DEADLINE (arena ns). */
static uint64_t step_wait(const struct sop *o, uint64_t deadline, uint64_t now)
{
        struct thr_params copy;
        const struct thr_params *p = o->p ? o->p : thr_sem_record(o->l, &copy);
        uint64_t w = p && p->lock_wait_ns ? p->lock_wait_ns : THR_LOCK_WAIT_NS;
        /* past the deadline, the last check still waits for the lock as an insert does: a
         * granter holds it for microseconds, and the check adopts a grant whose granter died */
        return now >= deadline || deadline - now >= w ? w : deadline - now;
}

/* Leave the queue without the lock (it is out of reach, or the slot changed): GRANTED if a
 * grant came first, else the place is given up (a later grant can no longer reach us). */
static int leave_unlocked(struct sop *o)
{
        if (!give_up(o->r))
                return outcome(o->r);
        wait_clear(o->r);
        return QUEUED;
}

/* Queued: wait for the grant. GRANTED, REFUSED, -ETIMEDOUT, -ENOBUFS, -ESTALE (look up again),
 * -errno. */
static int wait_grant(struct sop *o, uint64_t deadline, uint64_t room_at)
{
        bool manual = o->a->hdr->clock_id == THR_CLOCK_MANUAL;
        for (;;) {
                uint64_t now = arena_now(o);
                bool late = now >= deadline;
                uint32_t word = atomic_load_explicit(&o->r->wait_state, memory_order_acquire);
                uint32_t st = THR_WAIT_STATE(word);
                if (THR_WAIT_EPOCH(word) != THR_WAIT_EPOCH(o->word) ||
                    (st != THR_WAIT_WAITING && st != THR_WAIT_HEAD && st != THR_WAIT_GRANTED &&
                     st != THR_WAIT_REFUSED && st != THR_WAIT_DROPPED)) {
                        /* only a client rewriting this record does that: the wait is void (no
                         * serve finds it any more); never spin on it */
                        leave_unlocked(o);
                        wait_clear(o->r);
                        return -EBADMSG;
                }
                if (!late && (st == THR_WAIT_WAITING || st == THR_WAIT_HEAD)) {
                        uint64_t until = deadline;
                        if (room_at && room_at < until)
                                until = room_at;
                        /* the head watches the holders in its way; those behind it are made head
                         * (their word set to HEAD, then woken) by the serve that finds them so:
                         * sleeping only while the word is what was read, no wake is lost */
                        uint64_t ns = until > now ? until - now : 0;
                        uint64_t poll =
                            st == THR_WAIT_HEAD ? THR_SERIAL_POLL_NS : SHM_SEM_BEHIND_POLL_NS;
                        if (ns > poll || manual)
                                ns = manual ? 1000000 : poll;
                        if (ns)
                                futex_sleep(&o->r->wait_state, word, ns);
                        late = arena_now(o) >= deadline;
                }
                if (outcome(o->r) != QUEUED) /* granted or refused: final */
                        return outcome(o->r);
                int rc = sop_lock(o, step_wait(o, deadline, arena_now(o)));
                if (rc == -ETIMEDOUT && !late)
                        continue; /* a live holder of the shard lock: check again later */
                if (rc < 0) {
                        int out = leave_unlocked(o);
                        if (out != QUEUED)
                                return out;
                        return rc == -ESTALE && !late ? -ESTALE
                               : rc == -ESTALE || rc == -ETIMEDOUT
                                   ? (o->no_record ? -ENOBUFS : -ETIMEDOUT)
                                   : rc;
                }
                rc = check(o, late, &room_at);
                sop_unlock(o, arena_now(o));
                if (rc != QUEUED)
                        return rc;
                if (late) {
                        wait_clear(o->r);
                        return o->no_record ? -ENOBUFS : -ETIMEDOUT;
                }
        }
}

/* Fill LEASE for record IDX, generation GEN of O's key, granted at NOW to a call made at T0. */
static void lease_fill(const struct sop *o, const struct shm_sem_ask *ask, struct thr_lease *lease,
                       uint32_t idx, uint64_t gen, uint64_t t0, uint64_t now)
{
        struct thr_lease_rec *rec = shm_sem_lease(sop_aux(o), idx);
        lease->expires_ns = shm_sem_expiry(&o->a->map, rec, now, false);
        lease->amount = ask->amount;
        lease->waited_ns = now > t0 ? now - t0 : 0;
        *thr_lease_priv(lease) =
            (struct thr_lease_priv){.slot = o->slot,
                                    .lim = o->l,
                                    .gen = gen,
                                    .slot_gen = o->gen,
                                    .idx = idx,
                                    .holder = ask->flags & THR_LEASE_PEER ? ask->holder : 0};
}

/* One attempt on the slot found, at NOW0: 0, GRANTED-by-queue handled inside, or -errno
 * (-ESTALE: again). */
static int acquire_on(struct sop *o, const struct shm_sem_ask *ask, uint64_t t0, uint64_t now0,
                      uint64_t deadline, bool wait, struct thr_lease *lease)
{
        /* a try waits for the lock as an insert does (insert_wait: a live holder keeps it for
         * microseconds; a dead one is taken over); an acquire, never past its deadline */
        int rc = sop_lock(o, step_wait(o, wait ? deadline : UINT64_MAX, now0));
        if (rc < 0)
                return rc == -ETIMEDOUT && wait && arena_now(o) < deadline ? -ESTALE : rc;
        if (ask->amount > o->p->rate_n) {
                sop_unlock(o, arena_now(o));
                return -ERANGE;
        }
        uint64_t now = arena_now(o);
        uint32_t idx;
        uint64_t gen;
        rc = shm_sem_take(&o->a->map, o->p, sop_aux(o), ask, now, &idx, &gen);
        if (rc != 0 && !wait) {
                /* before saying no: reclaim what dead holders held, serve those queued */
                struct shm_sem_serve sv;
                shm_sem_serve(&o->a->map, o->p, o->slot, sop_aux(o), now, SHM_SEM_LIVENESS, o->idx,
                              &sv);
                rc = shm_sem_take(&o->a->map, o->p, sop_aux(o), ask, now, &idx, &gen);
        }
        if (rc == 0) {
                lease_fill(o, ask, lease, idx, gen, t0, now);
                sop_unlock(o, now);
                return 0;
        }
        if (!wait) {
                sop_unlock(o, now);
                return rc;
        }
        if (now >= deadline) { /* a deadline that has passed is never queued */
                sop_unlock(o, now);
                return -ETIMEDOUT;
        }
        uint64_t room_at = 0;
        rc = enqueue(o, ask, &room_at);
        o->queued |= rc == QUEUED;
        sop_unlock(o, now);
        if (rc == QUEUED)
                rc = wait_grant(o, deadline, room_at);
        /* a reload lowered max below AMOUNT while it waited; or a full queue dropped it */
        if (rc == REFUSED || rc == DROPPED) {
                wait_clear(o->r);
                return rc == REFUSED ? -ERANGE : -ECANCELED;
        }
        if (rc != GRANTED)
                return rc;
        o->p = &o->pc; /* the record as last pinned under the lock */
        rc = take_lease(o, &idx, &gen);
        wait_clear(o->r); /* after the lease is taken (its waiter word 0): sem.c, undelivered */
        if (rc < 0)
                return rc;
        lease_fill(o, ask, lease, idx, gen, t0, arena_now(o));
        return 0;
}

/* Why the semaphore calls cannot use L: removed by a reload, or not a semaphore. */
static int not_semaphore(const thr_limiter *l)
{
        if (atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE)
                return -EIDRM;
        return -EOPNOTSUPP;
}

static int sem_acquire(thr_limiter *l, const void *key, size_t len, const struct thr_sem_holder *hd,
                       uint32_t amount, uint64_t ttl_ns, uint64_t timeout_ns, bool wait,
                       const struct thr_wait_opts *w, struct thr_lease *lease)
{
        struct sop o = {.l = l, .a = l->a, .prio = w ? w->priority : 0};
        const struct thr_params *p = thr_sem_record(l, &o.pc);
        if (!p || atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE)
                return not_semaphore(l);
        if (amount > p->rate_n)
                return -ERANGE;
        int rc = 0;
        o.r = thr_reader_get(o.a, &rc);
        if (!o.r)
                return rc;
        if (THR_WAIT_STATE(atomic_load_explicit(&o.r->wait_state, memory_order_acquire)) !=
            THR_WAIT_NONE)
                return -EINVAL; /* this thread is queued already: a call nested in a handler */
        struct thr_reader *rec0 = shm_at(o.a->map.base, o.a->map.g.reader_off);
        o.idx = (uint32_t)(o.r - rec0);
        o.token = atomic_load_explicit(&o.r->owner, memory_order_relaxed);
        o.me = shm_lock_client(o.idx, o.token);
        struct shm_sem_ask ask = {.amount = amount,
                                  .ttl_ns = ttl_ns > THR_HORIZON_NS ? THR_HORIZON_NS : ttl_ns,
                                  /* the thread's record has them: no syscall */
                                  .pid = atomic_load_explicit(&o.r->pid, memory_order_relaxed),
                                  .tid = atomic_load_explicit(&o.r->tid, memory_order_relaxed)};
        if (hd) { /* a peer's lease (peer.c): its record is the holder */
                ask.holder = hd->token;
                ask.holder_idx = hd->idx;
                ask.flags = THR_LEASE_PEER;
                ask.level = hd->level;
                ask.ttl_ns = 1; /* unused: the peer's expiry is the lease's */
        } else {
                rc = thr_lease_holder(o.a, &ask.holder_idx, &ask.holder);
                if (rc < 0)
                        return rc;
                ask.level = (uint32_t)p->level; /* informational: a process has no levels */
        }
        uint64_t t0 = arena_now(&o);
        uint64_t deadline = thr_wait_deadline(t0, timeout_ns, w);
        o.deadline = deadline;
        o.p = p; /* for the first lock's wait; sop_lock reads it again under the lock */
        for (uint64_t now = t0;; now = arena_now(&o)) {
                struct thr_reservation_priv loc;
                rc = thr_op_locate(l, key, len, &loc);
                if (rc < 0)
                        return rc;
                o.slot = (struct thr_slot *)loc.slot;
                o.gen = (uint32_t)loc.gen;
                rc = acquire_on(&o, &ask, t0, now, deadline, wait, lease);
                if (rc != -ESTALE) {
                        thr_lim_count(l, rc, o.queued);
                        return rc;
                }
        }
}

static int acquire_entry(thr_limiter *l, const void *key, size_t len, uint32_t amount,
                         uint64_t ttl_ns, uint64_t timeout_ns, bool wait,
                         const struct thr_wait_opts *w, struct thr_lease *lease)
{
        if (!l || !lease)
                return -EINVAL;
        *thr_lease_priv(lease) = (struct thr_lease_priv){0};
        if (!key || len == 0 || amount == 0 || ttl_ns == 0)
                return -EINVAL;
        if (len > THR_KEY_MAX)
                return -ENAMETOOLONG;
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        int rc = sem_acquire(l, key, len, NULL, amount, ttl_ns, timeout_ns, wait, w, lease);
        pthread_setcancelstate(old, NULL);
        return rc;
}

/* Declared in client_internal.h: the caller (peer.c) checked the arguments and disabled
 * cancellation. */
int thr_sem_acquire_as(thr_limiter *l, const void *key, size_t len, const struct thr_sem_holder *hd,
                       uint32_t amount, uint64_t timeout_ns, bool wait, struct thr_lease *lease)
{
        *thr_lease_priv(lease) = (struct thr_lease_priv){0};
        return sem_acquire(l, key, len, hd, amount, 1, timeout_ns, wait, NULL, lease);
}

int thr_sem_acquire(thr_limiter *l, const void *key, size_t len, uint32_t amount, uint64_t ttl_ns,
                    uint64_t timeout_ns, struct thr_lease *lease)
{
        return acquire_entry(l, key, len, amount, ttl_ns, timeout_ns, timeout_ns != 0, NULL, lease);
}

static_assert(THR_PRIORITY_MAX == THR_WAIT_PRIO_MAX, "throttle.h's classes are the layout's");

int thr_sem_acquire_opts(thr_limiter *l, const void *key, size_t len, uint32_t amount,
                         uint64_t ttl_ns, const struct thr_wait_opts *w, struct thr_lease *lease)
{
        if (thr_wait_opts_bad(w)) {
                if (lease)
                        *thr_lease_priv(lease) = (struct thr_lease_priv){0};
                return -EINVAL;
        }
        bool wait = w->timeout_ns || w->deadline_ns;
        return acquire_entry(l, key, len, amount, ttl_ns,
                             w->timeout_ns ? w->timeout_ns : UINT64_MAX, wait, w, lease);
}

int thr_sem_try(thr_limiter *l, const void *key, size_t len, uint32_t amount, uint64_t ttl_ns,
                struct thr_lease *lease)
{
        return acquire_entry(l, key, len, amount, ttl_ns, 0, false, NULL, lease);
}

/* Heartbeat (TTL_NS), release (TTL_NS 0) or resize (AMOUNT, not 0) of the lease LP, under its
 * key's lock. */
static int lease_op(struct thr_lease_priv *lp, uint64_t ttl_ns, uint32_t amount, uint64_t *expires)
{
        struct sop o = {
            .l = lp->lim,
            .a = lp->lim->a,
            .slot = lp->slot,
            .gen = lp->slot_gen,
        };
        int rc = 0;
        o.r = thr_reader_get(o.a, &rc);
        if (!o.r)
                return rc;
        struct thr_reader *rec0 = shm_at(o.a->map.base, o.a->map.g.reader_off);
        o.idx = (uint32_t)(o.r - rec0);
        o.token = atomic_load_explicit(&o.r->owner, memory_order_relaxed);
        o.me = shm_lock_client(o.idx, o.token);
        rc = sop_lock(&o, THR_LOCK_WAIT_MAX_NS);
        if (rc == -ESTALE)
                return -EKEYEXPIRED; /* the key went: it held no lease any more */
        if (rc < 0)
                return rc;
        uint64_t now = arena_now(&o);
        void *aux = sop_aux(&o);
        /* a lease that has expired can be neither extended nor released (-EKEYEXPIRED), whether
         * or not anyone had reclaimed it yet */
        /* the leases this process holds name its lease record's token; a fork child's copy of
         * its parent's handle names the parent's (the child has its own record, or none) */
        /* a peer's lease names its peer (peer.c refuses another process's peer handle) */
        uint64_t holder =
            lp->holder ? lp->holder
            : atomic_load_explicit(&o.a->lease_gen, memory_order_acquire) == thr_forkpage->gen
                ? o.a->lease_token
                : 0;
        if (amount) {
                rc = shm_sem_resize(&o.a->map, o.p, aux, lp->idx, lp->gen, holder, now, amount);
        } else if (ttl_ns) {
                uint64_t t = ttl_ns > THR_HORIZON_NS ? THR_HORIZON_NS : ttl_ns;
                rc = shm_sem_extend(&o.a->map, o.p, aux, lp->idx, lp->gen, holder, now, now + t);
                *expires = now + t;
        } else {
                rc = shm_sem_release(&o.a->map, o.p, aux, lp->idx, lp->gen, holder, now);
        }
        if (atomic_load_explicit(&shm_sem(aux)->waiters, memory_order_relaxed)) {
                struct shm_sem_serve sv; /* the oldest queued that now fit */
                shm_sem_serve(&o.a->map, o.p, o.slot, aux, now, SHM_SEM_TRUST, o.idx, &sv);
        }
        sop_unlock(&o, now);
        return rc;
}

/* Whether S is a slot of L's table (a handle is the caller's memory: a stale or garbled one must
 * not make this call lock or write outside the table). */
static bool slot_of(const thr_limiter *l, const struct thr_slot *s)
{
        const struct thr_table *g = &l->geo;
        const char *slots = shm_at(l->a->map.base, g->slots_off);
        uint64_t off = (uint64_t)((const char *)s - slots);
        return off % THR_SLOT_SIZE == 0 &&
               off / THR_SLOT_SIZE < (uint64_t)g->nshards * g->shard_slots;
}

static int lease_entry(struct thr_lease *lease, uint64_t ttl_ns)
{
        struct thr_lease_priv *hp = lease ? thr_lease_priv(lease) : NULL;
        if (!hp)
                return -EINVAL;
        /* one copy: another thread may release the same handle meanwhile */
        struct thr_lease_priv lp = *hp;
        if (!lp.slot || !lp.lim || !slot_of(lp.lim, lp.slot))
                return -EINVAL;
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        uint64_t expires = 0;
        int rc = lease_op(&lp, ttl_ns, 0, &expires);
        pthread_setcancelstate(old, NULL);
        if (ttl_ns && rc == 0)
                lease->expires_ns = expires;
        if (!ttl_ns && (rc == 0 || rc == -EKEYEXPIRED))
                hp->slot = NULL; /* released, or gone: either way this handle holds nothing */
        return rc;
}

int thr_sem_heartbeat(struct thr_lease *lease, uint64_t ttl_ns)
{
        if (ttl_ns == 0)
                return -EINVAL;
        return lease_entry(lease, ttl_ns);
}

int thr_sem_release(struct thr_lease *lease)
{
        return lease_entry(lease, 0);
}

/* Declared in client_internal.h: the caller (peer.c) disabled cancellation. */
int thr_sem_resize(struct thr_lease *lease, uint32_t amount)
{
        struct thr_lease_priv lp = *thr_lease_priv(lease);
        if (!lp.slot || !lp.lim || !slot_of(lp.lim, lp.slot) || amount == 0)
                return -EINVAL;
        uint64_t ignored;
        int rc = lease_op(&lp, 0, amount, &ignored);
        if (rc == 0)
                lease->amount = amount;
        return rc;
}

int thr_sem_stat(thr_limiter *l, const void *key, size_t len, struct thr_sem_stat *st)
{
        if (!l || !st)
                return -EINVAL;
        struct sop o = {.l = l, .a = l->a};
        const struct thr_params *p = thr_sem_record(l, &o.pc);
        if (!p || atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE)
                return not_semaphore(l);
        *st = (struct thr_sem_stat){
            .max = p->rate_n, .remainder = (int64_t)p->rate_n, .level = p->level};
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        int rc = 0;
        for (int tries = 0; tries < 8; tries++) {
                struct thr_reservation_priv loc;
                rc = thr_op_find(l, key, len, &loc);
                if (rc == -ENOENT) { /* no such key: it holds nothing */
                        rc = 0;
                        break;
                }
                if (rc < 0)
                        break;
                o.r = thr_reader_get(o.a, &rc);
                if (!o.r)
                        break;
                struct thr_reader *rec0 = shm_at(o.a->map.base, o.a->map.g.reader_off);
                o.idx = (uint32_t)(o.r - rec0);
                o.token = atomic_load_explicit(&o.r->owner, memory_order_relaxed);
                o.me = shm_lock_client(o.idx, o.token);
                o.slot = (struct thr_slot *)loc.slot;
                o.gen = (uint32_t)loc.gen;
                rc = sop_lock(&o, THR_LOCK_WAIT_MAX_NS);
                if (rc == -ESTALE)
                        continue; /* evicted meanwhile: look it up again */
                if (rc < 0)
                        break;
                uint64_t now = arena_now(&o);
                void *aux = sop_aux(&o);
                /* exact: expired leases and those of dead peers or processes (one liveness test
                 * a lease: a process killed a moment ago counts as gone) are reclaimed first,
                 * and the queue served */
                struct shm_sem_serve sv;
                shm_sem_serve(&o.a->map, o.p, o.slot, aux, now, SHM_SEM_LIVENESS, UINT32_MAX, &sv);
                struct shm_sem_pend pd;
                shm_sem_pending(&o.a->map, o.slot, now, &pd);
                uint64_t held = atomic_load_explicit(&shm_sem(aux)->held, memory_order_relaxed);
                /* held is bounded by the serve's recount, unless rewritten since: saturated */
                uint64_t over = held > o.p->rate_n ? held - o.p->rate_n : 0;
                *st = (struct thr_sem_stat){
                    .max = o.p->rate_n,
                    .held = held,
                    .remainder = over ? -(int64_t)(over > INT64_MAX ? INT64_MAX : over)
                                      : (int64_t)(o.p->rate_n - held),
                    .leases = atomic_load_explicit(&shm_sem(aux)->leases, memory_order_relaxed),
                    .pending = pd.waiters,
                    .pending_units = pd.units,
                    .longest_pending_ns = pd.longest_ns,
                    .level = o.p->level};
                if (sv.freed || sv.grant_idx != UINT32_MAX)
                        sop_unlock(&o, now); /* a change: the key's last one, for idleness */
                else
                        shm_shard_unlock(&o.pr, o.me); /* looking is not using */
                break;
        }
        pthread_setcancelstate(old, NULL);
        return rc;
}

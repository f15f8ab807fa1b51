/*
 * serial.c - thr_serial_begin and thr_serial_end: holds on serialized window keys. The protocol,
 * and what a process killed at each step leaves, is at the top of shm/serial.h; this file queues
 * the caller, sleeps, and takes the key's shard lock for each step.
 *
 * The key's slot is found (or created, charged nothing) inside a read-side section, which is then
 * left: nothing may block grace periods while it waits. The slot cannot be evicted while this
 * thread is queued or holds it (it is pinned, kind.c), but it may be between the lookup and the
 * lock: each step under the lock first checks that the slot is still LIVE with the generation
 * found, and looks the key up again if not.
 *
 * The wait: the thread's reader record carries its place (ticket, cost) and a futex word; a
 * granter stores the hold in the key and then flips that word to GRANTED and wakes it. The
 * thread also wakes on its own every THR_SERIAL_POLL_NS (and, at the head of the queue, when the
 * window's room comes), takes the lock and serves the key itself: that is how a dead holder is
 * found, and how the head is granted when the window, not a holder, was what it waited for. On a
 * manual-clock arena the arena's time is read again at each wake.
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "kind.h"
#include "serial.h"

/* One begin or end in progress. */
struct sop {
        thr_limiter *l;
        thr_arena *a;
        struct thr_reader *r;
        uint32_t idx; /* of R */
        uint64_t token, me;
        struct thr_slot *slot;
        uint32_t gen; /* the slot's, as found */
        uint64_t hash;
        struct shm_probe pr;
        bool queued; /* it went through the key's queue: a wait (counted) */
};

static uint64_t arena_now(const struct sop *o)
{
        return shm_now_ns(o->a->hdr);
}

/* Take the key's shard lock within WAIT_NS; then whether the slot is still the key's. */
static int sop_lock(struct sop *o, uint64_t wait_ns)
{
        shm_probe_init(o->a->map.base, &o->l->geo, o->hash, &o->pr);
        int rc = shm_shard_lock(&o->a->map, &o->pr, o->me, wait_ns);
        if (rc < 0)
                return rc == -EDEADLK ? -EINVAL : rc;
        uint64_t meta = atomic_load_explicit(&o->slot->meta, memory_order_acquire);
        if (THR_META_STATUS(meta) != THR_SLOT_LIVE || THR_META_GEN(meta) != o->gen) {
                shm_shard_unlock(&o->pr, o->me);
                return -ESTALE; /* look it up again */
        }
        return 0;
}

static void sop_unlock(struct sop *o)
{
        shm_shard_unlock(&o->pr, o->me);
}

static struct thr_serial *sop_hdr(const struct sop *o)
{
        return shm_serial(shm_slot_aux(o->a->map.base, &o->l->geo, o->slot));
}

/* Under the lock: whether the key's hold is this thread's. */
static bool sop_holds(const struct sop *o)
{
        struct thr_serial *h = sop_hdr(o);
        return atomic_load_explicit(&h->hold_token, memory_order_acquire) == o->token &&
               atomic_load_explicit(&h->hold_idx, memory_order_relaxed) == o->idx;
}

static void wait_clear(struct thr_reader *r)
{
        uint32_t w = atomic_load_explicit(&r->wait_state, memory_order_relaxed);
        atomic_store_explicit(&r->wait_state, THR_WAIT_AS(w, THR_WAIT_NONE), memory_order_relaxed);
        atomic_store_explicit(&r->wait_slot, 0, memory_order_relaxed);
        atomic_store_explicit(&r->wait_gen, 0, memory_order_relaxed);
        atomic_store_explicit(&r->wait_ticket, 0, memory_order_release);
}

/*
 * Without the lock: whether the key has a holder that is alive (a racy read: a waiter that woke
 * on its own goes back to sleep without taking the lock while this holds; one liveness test).
 */
static bool holder_alive(const struct sop *o)
{
        struct thr_serial *h = sop_hdr(o);
        uint64_t tok = atomic_load_explicit(&h->hold_token, memory_order_acquire);
        uint32_t idx = atomic_load_explicit(&h->hold_idx, memory_order_relaxed);
        if (!tok || idx >= o->a->map.g.reader_count)
                return false;
        struct thr_reader *r =
            (struct thr_reader *)shm_at(o->a->map.base, o->a->map.g.reader_off) + idx;
        return atomic_load_explicit(&r->owner, memory_order_acquire) == tok &&
               shm_reader_gone(o->a->map.fd, r, idx) == 0;
}

/* Sleep on the futex word while it is WORD, at most NS (real time). */
static void futex_sleep(_Atomic uint32_t *w, uint32_t word, uint64_t ns)
{
        struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
        syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, word, &ts, NULL, 0);
}

/* Leave the queue: this wait's WAITING -> NONE. False if a grant came first. */
static bool leave_wait(struct thr_reader *r)
{
        uint32_t w = atomic_load_explicit(&r->wait_state, memory_order_acquire);
        while (THR_WAIT_STATE(w) == THR_WAIT_WAITING)
                if (atomic_compare_exchange_weak_explicit(
                        &r->wait_state, &w, THR_WAIT_AS(w, THR_WAIT_NONE), memory_order_acq_rel,
                        memory_order_acquire))
                        return true;
        return false;
}

static bool waiting(const struct thr_reader *r)
{
        return THR_WAIT_STATE(atomic_load_explicit(&r->wait_state, memory_order_acquire)) ==
               THR_WAIT_WAITING;
}

enum { QUEUED, GRANTED };

/*
 * Under the lock: queue this thread for the key and serve it. Returns GRANTED, QUEUED (ROOM_AT:
 * when the head may fit, or 0), -ERANGE, or -EDEADLK (this thread holds the key: it would wait
 * for itself).
 */
static int enqueue(struct sop *o, uint64_t cost, uint64_t *room_at)
{
        struct thr_params pc;
        const struct thr_params *p = thr_lim_record(o->l, &pc);
        if (!p)
                return -EBADMSG;
        if (cost > p->rate_n)
                return -ERANGE;
        if (sop_holds(o))
                return -EDEADLK;
        struct thr_serial *h = sop_hdr(o);
        uint64_t ticket = atomic_load_explicit(&h->next_ticket, memory_order_relaxed);
        atomic_store_explicit(&h->next_ticket, ticket + 1, memory_order_relaxed);
        atomic_store_explicit(&o->r->wait_slot,
                              (uint64_t)((char *)o->slot - (char *)o->a->map.base),
                              memory_order_relaxed);
        atomic_store_explicit(&o->r->wait_gen, o->gen, memory_order_relaxed);
        atomic_store_explicit(&o->r->wait_ticket, shm_wait_ticket(ticket, cost),
                              memory_order_relaxed);
        /* a new wait: the next epoch (layout.h) */
        atomic_store_explicit(
            &o->r->wait_state,
            THR_WAIT_NEXT(atomic_load_explicit(&o->r->wait_state, memory_order_relaxed)),
            memory_order_release);
        struct shm_serve sv;
        shm_serial_serve(&o->a->map, &o->l->geo, p, o->slot, arena_now(o), &sv);
        if (sv.grant_idx == o->idx || sop_holds(o))
                return GRANTED;
        *room_at = sv.head_ticket == shm_ticket48(ticket) ? sv.room_at : 0;
        return QUEUED;
}

/*
 * Under the lock, while queued: granted meanwhile (by a granter, or one killed half way)? If
 * not, serve the key (a dead holder is released, the head granted if it fits). LEAVE: give up
 * the place if still queued. Returns GRANTED or QUEUED (ROOM_AT as for enqueue).
 */
static int check(struct sop *o, bool leave, uint64_t *room_at)
{
        *room_at = 0;
        if (THR_WAIT_STATE(atomic_load_explicit(&o->r->wait_state, memory_order_acquire)) ==
                THR_WAIT_GRANTED ||
            sop_holds(o))
                return GRANTED;
        struct thr_params pc;
        const struct thr_params *p = thr_lim_record(o->l, &pc);
        struct shm_serve sv;
        if (leave) {
                if (!leave_wait(o->r))
                        return GRANTED;
                if (p) /* the next one may fit now that this one is gone */
                        shm_serial_serve(&o->a->map, &o->l->geo, p, o->slot, arena_now(o), &sv);
                return QUEUED;
        }
        if (!p)
                return QUEUED;
        shm_serial_serve(&o->a->map, &o->l->geo, p, o->slot, arena_now(o), &sv);
        if (sv.grant_idx == o->idx || sop_holds(o))
                return GRANTED;
        uint64_t mine = atomic_load_explicit(&o->r->wait_ticket, memory_order_relaxed) >> 16;
        *room_at = sv.head_ticket == mine ? sv.room_at : 0;
        return QUEUED;
}

/* The lock wait of one step: the limiter's insert_wait, but never past DEADLINE (arena ns). */
static uint64_t step_wait(const struct sop *o, uint64_t deadline)
{
        struct thr_params pc;
        const struct thr_params *p = thr_lim_record(o->l, &pc);
        uint64_t w = p && p->lock_wait_ns ? p->lock_wait_ns : THR_LOCK_WAIT_NS;
        uint64_t now = arena_now(o);
        return now >= deadline ? 1000 : deadline - now < w ? deadline - now : w;
}

/* Queue and wait: GRANTED, -ETIMEDOUT, -ESTALE (the slot changed: look up again), -errno. */
static int wait_grant(struct sop *o, uint64_t cost, uint64_t deadline)
{
        uint64_t room_at = 0;
        int rc = sop_lock(o, step_wait(o, deadline));
        if (rc < 0)
                return rc == -ETIMEDOUT ? (arena_now(o) >= deadline ? -ETIMEDOUT : -ESTALE) : rc;
        rc = enqueue(o, cost, &room_at);
        sop_unlock(o);
        if (rc != QUEUED)
                return rc;
        o->queued = true;
        bool manual = o->a->hdr->clock_id == THR_CLOCK_MANUAL;
        for (;;) {
                uint64_t now = arena_now(o);
                bool late = now >= deadline;
                uint32_t word = atomic_load_explicit(&o->r->wait_state, memory_order_acquire);
                if (!late && THR_WAIT_STATE(word) == THR_WAIT_WAITING) {
                        uint64_t until = deadline;
                        if (room_at && room_at < until)
                                until = room_at;
                        uint64_t ns = until > now ? until - now : 0;
                        if (ns > THR_SERIAL_POLL_NS || manual)
                                ns = manual ? 1000000 : THR_SERIAL_POLL_NS;
                        if (ns)
                                futex_sleep(&o->r->wait_state, word, ns);
                        now = arena_now(o);
                        late = now >= deadline;
                        if (!late && (!room_at || now < room_at) && waiting(o->r) &&
                            holder_alive(o))
                                continue; /* nothing to serve: the holder is there */
                }
                rc = sop_lock(o, step_wait(o, deadline));
                if (rc == -ETIMEDOUT && !late)
                        continue; /* a live holder of the shard lock: check again later */
                if (rc < 0) {
                        /* the slot changed under a queued thread, or the lock is out of reach
                         * past the deadline: this thread's place is void; a grant it might have
                         * had is released by the next serve (its record no longer waits) */
                        if (!leave_wait(o->r))
                                return GRANTED; /* granted before we could leave: ours */
                        wait_clear(o->r);
                        return rc == -ESTALE && !late ? -ESTALE : -ETIMEDOUT;
                }
                rc = check(o, late, &room_at);
                sop_unlock(o);
                if (rc == GRANTED)
                        return GRANTED;
                if (late)
                        return -ETIMEDOUT;
        }
}

static int serial_begin(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                        uint64_t timeout_ns, struct thr_hold *hold)
{
        struct thr_params pc;
        if (!thr_lim_record(l, &pc)) /* a semaphore's keys are located too: refuse other kinds */
                return atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE
                           ? -EIDRM
                           : -EOPNOTSUPP;
        struct sop o = {.l = l, .a = l->a};
        int rc = 0;
        o.r = thr_reader_get(o.a, &rc);
        if (!o.r)
                return rc;
        if (THR_WAIT_STATE(atomic_load_explicit(&o.r->wait_state, memory_order_acquire)) !=
            THR_WAIT_NONE)
                return -EINVAL; /* this thread is queued already: a begin nested in a handler */
        struct thr_reader *rec0 = shm_at(o.a->map.base, o.a->map.g.reader_off);
        o.idx = (uint32_t)(o.r - rec0);
        o.token = atomic_load_explicit(&o.r->owner, memory_order_relaxed);
        o.me = shm_lock_client(o.idx, o.token);
        o.hash = shm_key_hash(o.a->hdr->hash_key, o.a->hdr->digest_key, key,
                              (uint32_t)len); /* its stored form's */
        uint64_t t0 = arena_now(&o);
        uint64_t deadline = timeout_ns > UINT64_MAX - t0 ? UINT64_MAX : t0 + timeout_ns;
        for (;;) {
                struct thr_reservation_priv loc;
                rc = thr_op_locate(l, key, len, &loc);
                if (rc < 0)
                        return rc;
                o.slot = (struct thr_slot *)loc.slot;
                o.gen = (uint32_t)loc.gen;
                rc = wait_grant(&o, cost, deadline);
                if (rc != -ESTALE)
                        break;
        }
        thr_lim_count(l, rc == GRANTED ? 0 : rc, o.queued);
        if (rc != GRANTED)
                return rc;
        wait_clear(o.r);
        uint64_t now = arena_now(&o);
        hold->granted_ns = now;
        hold->waited_ns = now - t0;
        hold->cost = cost;
        *thr_hold_priv(hold) = (struct thr_hold_priv){
            .slot = o.slot,
            .lim = l,
            .token = o.token,
            .gen = (thr_forkpage->gen << 32) | o.gen,
            .hash = o.hash,
            .idx = o.idx,
        };
        return 0;
}

int thr_serial_begin(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                     uint64_t timeout_ns, struct thr_hold *hold)
{
        if (!l || !hold || cost == 0)
                return -EINVAL;
        *thr_hold_priv(hold) = (struct thr_hold_priv){0};
        if (!key || len == 0)
                return -EINVAL;
        if (len > THR_KEY_MAX)
                return -ENAMETOOLONG;
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        int rc = serial_begin(l, key, len, cost, timeout_ns, hold);
        pthread_setcancelstate(old, NULL);
        return rc;
}

static int serial_end(struct thr_hold_priv *hp)
{
        struct sop o = {.l = hp->lim,
                        .a = hp->lim->a,
                        .slot = hp->slot,
                        .gen = (uint32_t)hp->gen,
                        .hash = hp->hash,
                        .idx = hp->idx,
                        .token = hp->token};
        int rc = 0;
        o.r = thr_reader_get(o.a, &rc);
        if (!o.r)
                return rc;
        struct thr_reader *rec0 = shm_at(o.a->map.base, o.a->map.g.reader_off);
        if ((uint32_t)(o.r - rec0) != o.idx ||
            atomic_load_explicit(&o.r->owner, memory_order_relaxed) != o.token)
                return -EINVAL; /* another thread's hold */
        o.me = shm_lock_client(o.idx, o.token);
        rc = sop_lock(&o, THR_LOCK_WAIT_MAX_NS);
        if (rc == -ESTALE)
                return -EINVAL; /* the key is gone: so is the hold */
        if (rc < 0)
                return rc;
        struct thr_params pc;
        const struct thr_params *p = thr_lim_record(o.l, &pc);
        struct thr_serial *h = sop_hdr(&o);
        if (!p || !sop_holds(&o)) {
                sop_unlock(&o);
                return -EINVAL;
        }
        uint64_t now = arena_now(&o);
        uint64_t cost = atomic_load_explicit(&h->hold_cost, memory_order_relaxed);
        void *aux = shm_slot_aux(o.a->map.base, &o.l->geo, o.slot);
        if (cost)
                shm_serial_complete(p, o.slot, aux, cost > p->rate_n ? p->rate_n : cost, now);
        atomic_store_explicit(&h->hold_cost, 0, memory_order_relaxed);
        atomic_store_explicit(&h->hold_token, 0, memory_order_release);
        struct shm_serve sv;
        shm_serial_serve(&o.a->map, &o.l->geo, p, o.slot, now, &sv);
        sop_unlock(&o);
        return 0;
}

int thr_serial_end(struct thr_hold *hold)
{
        struct thr_hold_priv *hp = hold ? thr_hold_priv(hold) : NULL;
        if (!hp || !hp->slot || !hp->lim)
                return -EINVAL;
        if ((hp->gen >> 32) != (uint32_t)thr_forkpage->gen)
                return -EINVAL; /* a copy made by fork: the parent's hold */
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        int rc = serial_end(hp);
        pthread_setcancelstate(old, NULL);
        if (rc == 0)
                hp->slot = NULL;
        return rc;
}

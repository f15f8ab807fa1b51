/*
 * budget.c - budget keys: thr_budget_try, thr_budget_spend, thr_budget_add, thr_budget_stat. The
 * protocol, and what a process killed at each step leaves, is at the top of shm/budget.h; this
 * file takes the lock-free step first (client.c, thr_op_budget) and, when spenders are queued or
 * a spend must wait, queues the caller, sleeps, and takes the key's shard lock for each step.
 *
 * The key's slot is found (or created at its initial balance) inside a read-side section, which is
 * then left: nothing may block grace periods while it waits. A key with spenders queued is
 * pinned (kind.c), but it may be evicted between the lookup and the lock: each step under the
 * lock first checks that the slot is still LIVE with the generation found, and looks the key up
 * again if not.
 *
 * A granted waiter leaves its word in the next epoch, NONE: a journal left by a granter killed
 * after its CAS names the granted epoch, and a repairer reads "another epoch" as "the spend
 * stands" (shm/budget.c). A waiter that gives up leaves NONE in the same epoch: "give it back".
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>

#include "budget.h"
#include "client_internal.h"
#include "compose.h"
#include "kind.h"
#include "serial.h"

/* One spend, add or stat under the key's lock. */
struct bop {
        thr_limiter *l;
        thr_arena *a;
        struct thr_reader *r;
        uint32_t idx; /* of R */
        uint64_t me;  /* R as a shard lock holder */
        struct thr_slot *slot;
        uint32_t gen; /* the slot's, as found */
        struct shm_probe pr;
        const struct thr_params *p; /* &pc: read under the lock */
        struct thr_params pc;
        uint32_t word;     /* the wait word this thread queued with (its epoch) */
        uint32_t prio;     /* its class in the key's queue (0 lowest) */
        uint64_t deadline; /* arena ns its wait ends at (UINT64_MAX: no end) */
};

static uint64_t arena_now(const struct bop *o)
{
        return shm_now_ns(o->a->hdr);
}

static void *bop_aux(const struct bop *o)
{
        return shm_slot_aux(o->a->map.base, &o->l->geo, o->slot);
}

static int bop_init(struct bop *o, thr_limiter *l)
{
        *o = (struct bop){.l = l, .a = l->a};
        int rc = 0;
        o->r = thr_reader_get(o->a, &rc);
        if (!o->r)
                return rc;
        struct thr_reader *rec0 = shm_at(o->a->map.base, o->a->map.g.reader_off);
        o->idx = (uint32_t)(o->r - rec0);
        o->me = shm_lock_client(o->idx, atomic_load_explicit(&o->r->owner, memory_order_relaxed));
        return 0;
}

/* Find KEY's slot, creating it at the initial balance if new (-ENOSPC: no room). HOW:
 * THR_OP_STORED if KEY is the key's stored form. */
static int bop_locate(struct bop *o, const void *key, size_t len, unsigned how)
{
        struct thr_reservation_priv loc;
        int rc = how & THR_OP_STORED ? thr_op_locate_stored(o->l, key, len, &loc)
                                     : thr_op_locate(o->l, key, len, &loc);
        if (rc < 0)
                return rc;
        o->slot = (struct thr_slot *)loc.slot;
        o->gen = (uint32_t)loc.gen;
        return 0;
}

/* Take the key's shard lock within WAIT_NS; then whether the slot is still the key's and the
 * limiter still a budget. */
static int bop_lock(struct bop *o, uint64_t wait_ns)
{
        const struct thr_table *g = &o->l->geo;
        struct thr_slot *slots = shm_at(o->a->map.base, g->slots_off);
        uint32_t shard = (uint32_t)((uint64_t)(o->slot - slots) / g->shard_slots);
        o->pr = (struct shm_probe){
            .shard = (struct thr_shard *)shm_at(o->a->map.base, g->shards_off) + shard,
            .slots = slots + (uint64_t)shard * g->shard_slots,
            .n = g->shard_slots};
        int rc = shm_shard_lock(&o->a->map, &o->pr, o->me, wait_ns);
        if (rc < 0)
                return rc == -EDEADLK ? -EINVAL : rc;
        uint64_t meta = atomic_load_explicit(&o->slot->meta, memory_order_acquire);
        uint64_t state = shm_budget_state(&o->a->map, o->slot);
        if (THR_META_STATUS(meta) != THR_SLOT_LIVE || THR_META_GEN(meta) != o->gen ||
            state == THR_TAT_DEAD || state == THR_TAT_FREE) {
                shm_shard_unlock(&o->pr, o->me);
                return -ESTALE; /* look it up again */
        }
        o->p = thr_budget_record(o->l, &o->pc);
        if (!o->p) {
                shm_shard_unlock(&o->pr, o->me);
                return -EBADMSG;
        }
        return 0;
}

static void bop_unlock(struct bop *o)
{
        shm_shard_unlock(&o->pr, o->me);
}

/* The lock wait of one step at NOW: the limiter's insert_wait, never past DEADLINE (arena ns);
 * past it, still insert_wait (the last step adopts a dead granter's work). */
static uint64_t step_wait(const struct bop *o, uint64_t deadline, uint64_t now)
{
        struct thr_params copy;
        const struct thr_params *p = o->p ? o->p : thr_budget_record(o->l, &copy);
        uint64_t w = p && p->lock_wait_ns ? p->lock_wait_ns : THR_LOCK_WAIT_NS;
        return now >= deadline || deadline - now >= w ? w : deadline - now;
}

/* This thread's wait ends: NEXT epoch if it was granted (a journal naming the granted epoch
 * then reads "the spend stands"), the same one if it gave up; place fields cleared. */
static void wait_end(struct thr_reader *r, bool granted)
{
        uint32_t w = atomic_load_explicit(&r->wait_state, memory_order_relaxed);
        uint32_t end =
            granted ? (THR_WAIT_EPOCH(w) + 1u) << 3 | THR_WAIT_NONE : THR_WAIT_AS(w, THR_WAIT_NONE);
        atomic_store_explicit(&r->wait_state, end, memory_order_release);
        atomic_store_explicit(&r->wait_slot, 0, memory_order_relaxed);
        atomic_store_explicit(&r->wait_gen, 0, memory_order_relaxed);
        atomic_store_explicit(&r->wait_ticket, 0, memory_order_release);
}

/* Leave the queue: WAITING -> NONE of the same wait, and the epoch noted as given up (a
 * journal naming it, found after this thread queued again elsewhere, then gives the cost back:
 * shm/budget.c). False if a grant came first. */
static bool give_up(struct thr_reader *r, uint32_t word)
{
        uint32_t s = atomic_load_explicit(&r->wait_state, memory_order_acquire);
        while (THR_WAIT_EPOCH(s) == THR_WAIT_EPOCH(word) && shm_wait_waiting(s))
                if (atomic_compare_exchange_weak_explicit(
                        &r->wait_state, &s, THR_WAIT_AS(s, THR_WAIT_NONE), memory_order_acq_rel,
                        memory_order_acquire)) {
                        atomic_store_explicit(&r->wait_quit, THR_WAIT_EPOCH(word),
                                              memory_order_release);
                        return true;
                }
        return false;
}

static bool granted(const struct bop *o)
{
        uint32_t s = atomic_load_explicit(&o->r->wait_state, memory_order_acquire);
        return THR_WAIT_EPOCH(s) == THR_WAIT_EPOCH(o->word) &&
               THR_WAIT_STATE(s) == THR_WAIT_GRANTED;
}

/* Under the lock, no spender queued: spend COST by CAS (lock-free spenders and adders may move
 * the word meanwhile). 1 spent, 0 it does not fit or spenders are queued. */
static int spend_locked(struct bop *o, uint64_t cost, uint64_t *balance)
{
        uint64_t cur = shm_budget_state(&o->a->map, o->slot);
        for (;;) {
                if (cur >= THR_TAT_LIMIT || shm_budget_queued(cur))
                        return 0;
                uint64_t bal = shm_budget_balance(cur, o->p->initial);
                *balance = bal;
                if (bal < cost)
                        return 0;
                if (atomic_compare_exchange_weak_explicit(&o->slot->state, &cur, bal - cost,
                                                          memory_order_acq_rel,
                                                          memory_order_acquire)) {
                        *balance = bal - cost;
                        return 1;
                }
                if (shm_is_mark(cur)) /* a composed call's: settled first (compose.h) */
                        cur = shm_budget_state(&o->a->map, o->slot);
        }
}

/*
 * Under the lock: queue this thread for COST and set the key's flag, unless the balance fits
 * after all (an add came between the check and the flag: spend instead). 1 spent, 0 queued,
 * -EBADMSG (the state word was rewritten: nothing queued).
 */
static int enqueue(struct bop *o, uint64_t cost, uint64_t *balance)
{
        struct thr_budget *h = shm_budget(bop_aux(o));
        struct thr_reader *r = o->r;
        uint64_t ticket = atomic_load_explicit(&h->next_ticket, memory_order_relaxed);
        atomic_store_explicit(&h->next_ticket, ticket + 1, memory_order_relaxed);
        atomic_store_explicit(&r->wait_slot, (uint64_t)((char *)o->slot - (char *)o->a->map.base),
                              memory_order_relaxed);
        atomic_store_explicit(&r->wait_gen, o->gen, memory_order_relaxed);
        atomic_store_explicit(&r->wait_ticket, shm_wait_ticket(ticket, 0), memory_order_relaxed);
        atomic_store_explicit(&r->wait_ttl, cost, memory_order_relaxed);
        atomic_store_explicit(&r->wait_since, arena_now(o), memory_order_relaxed);
        /* its class and deadline, as the serve orders the queue (shm/sem.h, "Priority") */
        atomic_store_explicit(&r->wait_flags, o->prio << 16, memory_order_relaxed);
        atomic_store_explicit(&r->wait_deadline, o->deadline == UINT64_MAX ? 0 : o->deadline,
                              memory_order_relaxed);
        o->word = THR_WAIT_NEXT(atomic_load_explicit(&r->wait_state, memory_order_relaxed));
        atomic_store_explicit(&r->wait_state, o->word, memory_order_release);
        uint64_t cur = shm_budget_state(&o->a->map, o->slot);
        while (!shm_budget_queued(cur)) {
                if (cur >= THR_TAT_LIMIT) { /* rewritten (FRESH, a reserved value): not a
                                             * balance to queue on, nor to spin on */
                        wait_end(r, false);
                        return -EBADMSG;
                }
                uint64_t bal = shm_budget_balance(cur, o->p->initial);
                if (bal >= cost) { /* not yet flagged: lock-free adders may have come first */
                        if (spend_locked(o, cost, balance)) {
                                wait_end(r, false); /* no serve can have seen it: lock held */
                                return 1;
                        }
                        cur = shm_budget_state(&o->a->map, o->slot);
                        continue;
                }
                if (atomic_compare_exchange_weak_explicit(
                        &o->slot->state, &cur, bal | THR_BUDGET_WAITERS, memory_order_acq_rel,
                        memory_order_acquire))
                        break;
                if (shm_is_mark(cur))
                        cur = shm_budget_state(&o->a->map, o->slot);
        }
        atomic_fetch_add_explicit(&h->waiters, 1, memory_order_relaxed);
        uint64_t need = atomic_load_explicit(&h->need, memory_order_relaxed);
        atomic_store_explicit(&h->need, need > UINT64_MAX - cost ? UINT64_MAX : need + cost,
                              memory_order_relaxed);
        *balance = shm_budget_balance(cur, o->p->initial);
        return 0;
}

/* Sleep on the futex word while it says STATE, at most NS (real time). */
static void futex_sleep(_Atomic uint32_t *w, uint32_t state, uint64_t ns)
{
        struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
        syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, state, &ts, NULL, 0);
}

enum { QUEUED, GRANTED };

/* Queued: wait for the grant until DEADLINE. GRANTED, -ETIMEDOUT, -ESTALE (the key went: look it
 * up again, queue again), -EBADMSG (our word was rewritten), -errno. */
static int wait_grant(struct bop *o, uint64_t deadline)
{
        bool manual = o->a->hdr->clock_id == THR_CLOCK_MANUAL;
        for (;;) {
                uint64_t now = arena_now(o);
                bool late = now >= deadline;
                uint32_t word = atomic_load_explicit(&o->r->wait_state, memory_order_acquire);
                if (granted(o))
                        return GRANTED;
                if (THR_WAIT_EPOCH(word) != THR_WAIT_EPOCH(o->word) || !shm_wait_waiting(word)) {
                        /* only a client rewriting this record does that: the wait is void */
                        give_up(o->r, o->word);
                        wait_end(o->r, false);
                        return -EBADMSG;
                }
                if (!late) {
                        uint64_t ns = deadline - now;
                        if (ns > SHM_BUDGET_POLL_NS || manual)
                                ns = manual ? 1000000 : SHM_BUDGET_POLL_NS;
                        futex_sleep(&o->r->wait_state, word, ns);
                        if (granted(o))
                                return GRANTED;
                        late = arena_now(o) >= deadline;
                }
                int rc = bop_lock(o, step_wait(o, deadline, arena_now(o)));
                if (rc == -ETIMEDOUT && !late)
                        continue; /* a live holder of the shard lock: check again later */
                if (rc < 0) {
                        if (!give_up(o->r, o->word))
                                return GRANTED;
                        wait_end(o->r, false);
                        return rc == -ESTALE && !late ? -ESTALE : rc == -ESTALE ? -ETIMEDOUT : rc;
                }
                struct shm_budget_serve sv;
                if (late && give_up(o->r, o->word)) {
                        /* gone from the queue: the serve drops us, clears the flag if last */
                        shm_budget_serve(&o->a->map, o->p, o->slot, bop_aux(o), &sv);
                        bop_unlock(o);
                        wait_end(o->r, false);
                        return -ETIMEDOUT;
                }
                shm_budget_serve(&o->a->map, o->p, o->slot, bop_aux(o), &sv);
                bop_unlock(o);
                if (granted(o))
                        return GRANTED;
        }
}

static void fill(struct thr_budget_result *res, uint64_t balance, uint64_t shortfall,
                 uint64_t waiters, uint64_t waited)
{
        if (!res)
                return;
        res->balance = balance;
        res->shortfall = shortfall;
        res->waiters = waiters;
        res->waited_ns = waited;
}

static uint64_t waiters_of(const struct bop *o)
{
        return atomic_load_explicit(&shm_budget(bop_aux(o))->waiters, memory_order_relaxed);
}

/* One attempt on the slot found: 0 spent, -ETIMEDOUT, -ESTALE (again), -errno. */
static int spend_on(struct bop *o, uint64_t cost, uint64_t t0, uint64_t deadline,
                    struct thr_budget_result *res)
{
        int rc = bop_lock(o, step_wait(o, deadline, arena_now(o)));
        if (rc < 0)
                return rc == -ETIMEDOUT && arena_now(o) < deadline ? -ESTALE : rc;
        struct shm_budget_serve sv; /* those queued first get what fits first */
        shm_budget_serve(&o->a->map, o->p, o->slot, bop_aux(o), &sv);
        uint64_t balance = sv.balance;
        if (!sv.waiters && spend_locked(o, cost, &balance)) {
                bop_unlock(o);
                fill(res, balance, 0, 0, 0); /* it never queued: waited_ns 0 */
                return 0;
        }
        if (arena_now(o) >= deadline) {
                bop_unlock(o);
                fill(res, balance, cost + sv.need > balance ? cost + sv.need - balance : 0,
                     sv.waiters, arena_now(o) - t0);
                return -ETIMEDOUT;
        }
        rc = enqueue(o, cost, &balance);
        if (rc != 0) {
                bop_unlock(o);
                if (rc > 0)
                        fill(res, balance, 0, 0, 0);
                return rc > 0 ? 0 : rc;
        }
        bop_unlock(o);
        rc = wait_grant(o, deadline);
        if (rc == GRANTED) {
                wait_end(o->r, true);
                uint64_t st = shm_budget_state(&o->a->map, o->slot);
                fill(res, st < THR_TAT_LIMIT ? st & THR_BUDGET_MAX : 0, 0, waiters_of(o),
                     arena_now(o) - t0);
                return 0;
        }
        if (rc == -ETIMEDOUT) {
                uint64_t st = shm_budget_state(&o->a->map, o->slot);
                uint64_t bal = st < THR_TAT_LIMIT ? st & THR_BUDGET_MAX : 0;
                fill(res, bal, cost > bal ? cost - bal : 0, waiters_of(o), arena_now(o) - t0);
        }
        return rc;
}

static int check_args(thr_limiter *l, const void *key, size_t len)
{
        if (!l || !key || len == 0)
                return -EINVAL;
        return len > THR_KEY_MAX ? -ENAMETOOLONG : 0;
}

int thr_budget_try(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                   struct thr_budget_result *res)
{
        int rc = check_args(l, key, len);
        if (rc < 0)
                return rc;
        if (cost > THR_BUDGET_MAX)
                return -ERANGE;
        struct thr_budget_step st;
        rc = thr_op_budget(l, key, len, cost, 0, &st);
        if (rc < 0)
                return rc;
        fill(res, st.balance, st.ok ? 0 : st.shortfall, st.waiters, 0);
        return st.ok ? 0 : -EAGAIN;
}

static int budget_spend(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                        uint64_t timeout_ns, const struct thr_wait_opts *w,
                        struct thr_budget_result *res);

int thr_budget_spend(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                     uint64_t timeout_ns, struct thr_budget_result *res)
{
        if (cost == 0)
                return -EINVAL;
        if (timeout_ns == 0)
                return thr_budget_try(l, key, len, cost, res);
        return budget_spend(l, key, len, cost, timeout_ns, NULL, res);
}

int thr_budget_spend_opts(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                          const struct thr_wait_opts *w, struct thr_budget_result *res)
{
        if (cost == 0 || thr_wait_opts_bad(w))
                return -EINVAL;
        if (!w->timeout_ns && !w->deadline_ns)
                return thr_budget_try(l, key, len, cost, res);
        return budget_spend(l, key, len, cost, w->timeout_ns ? w->timeout_ns : UINT64_MAX, w, res);
}

static int budget_spend(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                        uint64_t timeout_ns, const struct thr_wait_opts *w,
                        struct thr_budget_result *res)
{
        int rc = check_args(l, key, len);
        if (rc < 0)
                return rc;
        if (cost > THR_BUDGET_MAX)
                return -ERANGE;
        struct thr_budget_result mine;
        if (!res)
                res = &mine; /* its waited_ns says whether the spend waited (counted below) */
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        struct bop o;
        rc = bop_init(&o, l);
        if (rc == 0 && THR_WAIT_STATE(atomic_load_explicit(&o.r->wait_state,
                                                           memory_order_acquire)) != THR_WAIT_NONE)
                rc = -EINVAL; /* this thread is queued already: a call nested in a handler */
        uint64_t t0 = rc == 0 ? arena_now(&o) : 0;
        uint64_t deadline = thr_wait_deadline(t0, timeout_ns, w);
        o.prio = w ? w->priority : 0;
        o.deadline = deadline;
        if (rc == 0) {
                /* lock-free first: the common case spends with one CAS */
                struct thr_budget_step st;
                rc = thr_op_budget(l, key, len, cost, THR_OP_QUIET, &st);
                if (rc == 0 && st.ok)
                        fill(res, st.balance, 0, 0, 0);
                else if (rc == 0)
                        rc = -ESTALE;
        }
        while (rc == -ESTALE) {
                rc = bop_locate(&o, key, len, 0);
                if (rc == 0)
                        rc = spend_on(&o, cost, t0, deadline, res);
        }
        thr_lim_count(l, rc, rc == 0 && res->waited_ns);
        pthread_setcancelstate(old, NULL);
        return rc;
}

/* thr_budget_add; HOW: THR_OP_STORED when KEY is the key's stored form (layout.h). */
static int budget_add(thr_limiter *l, const void *key, size_t len, uint64_t amount, unsigned how,
                      struct thr_budget_result *res)
{
        int rc = check_args(l, key, len);
        if (rc < 0 || amount == 0)
                return rc < 0 ? rc : -EINVAL;
        if (amount > THR_BUDGET_MAX)
                return -EOVERFLOW;
        struct thr_budget_step st;
        rc = thr_op_budget(l, key, len, amount, THR_OP_ADD | how, &st);
        if (rc < 0)
                return rc;
        if (st.ok || !st.queued) {
                fill(res, st.balance, 0, 0, 0);
                return st.ok ? 0 : -EOVERFLOW;
        }
        /* spenders are queued: under the lock, and they are served */
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        struct bop o;
        rc = bop_init(&o, l);
        for (int tries = 0; rc == 0; tries++) {
                if (tries == 64) { /* evicted under us every time: nothing added, call again */
                        rc = -ETIMEDOUT;
                        break;
                }
                rc = bop_locate(&o, key, len, how);
                if (rc < 0)
                        break;
                rc = bop_lock(&o, THR_LOCK_WAIT_MAX_NS);
                if (rc == -ESTALE) {
                        rc = 0;
                        continue; /* evicted meanwhile: look it up again */
                }
                if (rc < 0)
                        break;
                shm_budget_repair(&o.a->map, o.slot, bop_aux(&o));
                uint64_t balance = 0;
                rc = shm_budget_add_locked(&o.a->map, o.p, o.slot, amount, &balance);
                struct shm_budget_serve sv;
                if (rc == 0) /* the oldest queued that now fit */
                        shm_budget_serve(&o.a->map, o.p, o.slot, bop_aux(&o), &sv);
                bop_unlock(&o);
                if (rc == 0)
                        fill(res, sv.balance, 0, sv.waiters, 0);
                else
                        fill(res, balance, 0, waiters_of(&o), 0);
                break;
        }
        pthread_setcancelstate(old, NULL);
        return rc;
}

int thr_budget_add(thr_limiter *l, const void *key, size_t len, uint64_t amount,
                   struct thr_budget_result *res)
{
        return budget_add(l, key, len, amount, 0, res);
}

/* Declared in client_internal.h. */
int thr_budget_add_stored(thr_limiter *l, const void *key, size_t len, uint64_t amount,
                          struct thr_budget_result *res)
{
        return budget_add(l, key, len, amount, THR_OP_STORED, res);
}

int thr_budget_stat(thr_limiter *l, const void *key, size_t len, struct thr_budget_stat *bs)
{
        int rc = check_args(l, key, len);
        if (rc < 0 || !bs)
                return rc < 0 ? rc : -EINVAL;
        struct thr_params pc;
        const struct thr_params *p = thr_budget_record(l, &pc);
        if (!p || atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE)
                return atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE
                           ? -EIDRM
                           : -EOPNOTSUPP;
        *bs = (struct thr_budget_stat){.balance = p->initial, .initial = p->initial};
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        struct bop o;
        rc = bop_init(&o, l);
        for (int tries = 0; rc == 0 && tries < 8; tries++) {
                struct thr_reservation_priv loc;
                rc = thr_op_find(l, key, len, &loc);
                if (rc == -ENOENT) { /* no such key: the initial balance */
                        rc = 0;
                        break;
                }
                if (rc < 0)
                        break;
                o.slot = (struct thr_slot *)loc.slot;
                o.gen = (uint32_t)loc.gen;
                rc = bop_lock(&o, THR_LOCK_WAIT_MAX_NS);
                if (rc == -ESTALE) {
                        rc = 0;
                        continue;
                }
                if (rc < 0)
                        break;
                struct shm_budget_serve sv;
                shm_budget_serve(&o.a->map, o.p, o.slot, bop_aux(&o), &sv);
                const struct thr_budget *h = shm_budget(bop_aux(&o));
                uint64_t since = 0, now = arena_now(&o);
                if (sv.head_idx != UINT32_MAX) {
                        const struct thr_reader *rec = shm_at(o.a->map.base, o.a->map.g.reader_off);
                        since = atomic_load_explicit(&rec[sv.head_idx].wait_since,
                                                     memory_order_relaxed);
                }
                *bs = (struct thr_budget_stat){
                    .balance = sv.balance,
                    .initial = o.p->initial,
                    .waiters = sv.waiters,
                    .need = sv.need,
                    .head_need = sv.head_need,
                    .longest_pending_ns = sv.waiters && since && since <= now ? now - since : 0,
                    .granted = atomic_load_explicit(&h->granted, memory_order_relaxed)};
                bop_unlock(&o);
                break;
        }
        pthread_setcancelstate(old, NULL);
        return rc;
}

/*
 * client.c - libthrottle-client: opening arenas and limiters, and the admission hot path.
 *
 * Why one CAS is enough: a key's whole GCRA state is its TAT, one 64-bit word. A decision reads
 * it, computes the new TAT from it and the current time, and publishes with a CAS from exactly
 * the value it read; if another process got there first the CAS fails and the decision is made
 * again on the newer TAT. So every admission is computed on the state left by the previous one
 * (linearizable at the CAS), and the admissions never exceed what GCRA allows over the callers'
 * clock readings (B + elapsed/T between the first and the last reading; a caller preempted between
 * its clock read and its CAS is admitted as of its reading). A denied request, or a peek (cost 0),
 * does not write, except to record a new key's start (op_apply). A process killed at any
 * instruction either did its CAS (the admission counts, as it would have) or did not (nothing
 * changed): no torn state is possible. The memory orders: the CAS is acq_rel so that an eviction,
 * which marks a slot with a CAS on the same word, is ordered with it; the TAT itself publishes
 * nothing.
 *
 * Eviction and reuse (shm/reclaim.c has the full argument): every call runs inside a read-side
 * section of this thread's reader record (thr_reader_enter/exit), so the daemon reuses no slot
 * this call might still hold. A slot evicted under us has state THR_TAT_DEAD: our CAS from a TAT
 * fails, and we look the key up again (op_relookup), finding its new slot or inserting it. The
 * grace period is not the only guard for a retried decision: the lookup keeps the meta word it
 * matched (status, generation, tag), and after every failed CAS the call compares it again before
 * deciding on the new state; a slot retired or reused meanwhile sends the call back to the
 * lookup, so a retry never decides on another key's state (it did: on a CAS failure only
 * THR_TAT_DEAD counted as "evicted", and a slot reused for another key got charged for this one).
 * The first decision relies on the section alone (a check there would cost the hot path and still
 * leave the window between the check and the CAS).
 *
 * New keys. The insert path takes the shard's insert lock (shm/shardlock.c), waiting at most
 * THR_LOCK_WAIT_NS for a live holder (a stopped process, a daemon stopped mid-pass): past that, or
 * if this very thread holds it (a signal handler nested in its own insert), the call gets the
 * limiter's on_full outcome. The section is left while waiting, so a stopped holder never makes us
 * block grace periods; nothing found before is used after. The new key's first request is charged
 * as it is published (try and reserve alike), so no other inserter can evict it uncharged. A
 * limiter removed by a reload is RETIRED in the directory: calls get -EIDRM.
 *
 * Processes and signals. A call nested in a signal handler that interrupted a call of the same
 * thread keeps the outer call's section (client_internal.h); counters in the record may then
 * lose an increment (plain stores, owner-only). Calls are async-signal-safe once the thread has
 * registered in the arena (its first call; registration allocates and takes a lock).
 * Cancellation: the hot path has no cancellation point; registration and the lock wait disable
 * it (reader.c, shardlock.c).
 *
 * The parameter record is found through the limiter's params_off, acquire-loaded on every call:
 * it pairs with the daemon's release store when a reload swaps in a new immutable record, so a
 * decision uses one record, whole.
 *
 * On the hot path (the key exists): one clock read through the vDSO, one SipHash, a probe that
 * usually touches one cache line, one CAS, and stores to this thread's own reader record. No
 * syscall, no lock, no allocation.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "testhook.h"

int thr_version(void)
{
        return (THR_VERSION_MAJOR << 16) | (THR_VERSION_MINOR << 8) | THR_VERSION_PATCH;
}

/* ---------------------------------------------------------------- arenas and limiters */

static int arena_open(const char *name, thr_arena **out);

/* Cancellation is disabled while opening or closing: a thread cancelled in open(2) or close(2)
 * would otherwise leak the handle, or leave it half registered. */
int thr_arena_open(const char *name, unsigned flags, thr_arena **out)
{
        if (!name || !*name || !out || flags)
                return -EINVAL;
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        int rc = arena_open(name, out);
        pthread_setcancelstate(old, NULL);
        return rc;
}

static int arena_open(const char *name, thr_arena **out)
{
        char path[sizeof(((struct shm_map *)0)->path)];
        int rc = shm_arena_find(name, path, sizeof(path));
        if (rc < 0)
                return rc;
        thr_arena *a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->lockfd = -1;
        rc = shm_arena_attach(path, true, &a->map, NULL, 0);
        if (rc == 0) {
                a->hdr = shm_hdr(&a->map);
                rc = shm_arena_check_clock(a->hdr, NULL, 0);
                if (rc == 0)
                        rc = shm_arena_check_pidns(a->hdr, NULL, 0);
                if (rc < 0)
                        shm_arena_detach(&a->map);
        }
        if (rc < 0) {
                free(a);
                return rc;
        }
        /* one syscall at open so the daemon's grace periods can use the expedited membarrier;
         * if it fails, the arena's flag makes the daemon use the slow global one instead */
        shm_membarrier_register(a->hdr);
        a->open_pid = getpid();
        thr_registry_add(a);
        *out = a;
        return 0;
}

int thr_arena_close(thr_arena *a)
{
        if (!a)
                return -EINVAL;
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        thr_registry_remove(a);
        if (getpid() != a->open_pid && thr_fd_table_shared())
                a->map.fd = -1; /* an inherited handle in a child sharing its parent's fds */
        shm_arena_detach(&a->map);
        free(a);
        pthread_setcancelstate(old, NULL);
        return 0;
}

int thr_limiter_open(thr_arena *a, const char *name, thr_limiter **out)
{
        if (!a || !name || !out)
                return -EINVAL;
        int idx = shm_dir_find(&a->map, name);
        struct shm_lim_snap snap;
        if (idx >= 0)
                idx = shm_dir_snapshot(&a->map, (uint32_t)idx, &snap) < 0 ? -EBADMSG : idx;
        if (idx < 0)
                return idx;
        thr_limiter *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->a = a;
        l->de = (struct thr_dir_entry *)shm_at(a->map.base, a->map.g.dir_off) + idx;
        l->tb = shm_at(a->map.base, snap.table_off);
        l->params_lo = a->map.g.heap_off;
        l->params_span = a->map.g.heap_end - a->map.g.heap_off - sizeof(struct thr_params);
        *out = l;
        return 0;
}

int thr_limiter_close(thr_limiter *l)
{
        free(l);
        return 0;
}

/* ---------------------------------------------------------------- the hot path */

/*
 * The limiter's current parameter record. A reload that removes the limiter first marks its
 * directory entry RETIRED: checked here with the offset, on the same cache line.
 */
static inline const struct thr_params *lim_params(const thr_limiter *l)
{
        if (atomic_load_explicit(&l->de->state, memory_order_relaxed) != THR_DIR_LIVE)
                return NULL;
        uint64_t off = atomic_load_explicit(&l->de->params_off, memory_order_acquire);
        if (off - l->params_lo > l->params_span)
                return NULL;
        const struct thr_params *p = shm_at(l->a->map.base, off);
        return p->kind == THR_KIND_GCRA && p->k ? p : NULL;
}

/* Why lim_params failed: the limiter was removed by a reload (-EIDRM), or its record is bad. */
__attribute__((cold, noinline)) static int lim_gone(const thr_limiter *l)
{
        return atomic_load_explicit(&l->de->state, memory_order_acquire) == THR_DIR_LIVE ? -EBADMSG
                                                                                         : -EIDRM;
}

static inline int check_key(const void *key, size_t len)
{
        if (!key || len == 0)
                return -EINVAL;
        return len > THR_KEY_MAX ? -ENAMETOOLONG : 0;
}

/* One decision in flight: what the entry points share. */
struct op {
        thr_limiter *l;
        const struct thr_params *p;
        struct thr_reader *r;
        struct thr_slot *slot; /* NULL: the key does not exist (yet) */
        uint64_t meta;         /* the slot's meta word as the lookup matched it */
        uint64_t outer;        /* the section this call found open (a signal handler's), or 0 */
        const void *key;
        uint32_t len;
        uint64_t hash;
        uint64_t now; /* units; see op_apply for when it is read */
};

static inline __attribute__((always_inline)) int
op_begin(struct op *o, thr_limiter *l, const void *key, size_t len, uint64_t cost)
{
        int rc = check_key(key, len);
        if (rc < 0 || !l)
                return rc < 0 ? rc : -EINVAL;
        o->l = l;
        o->p = lim_params(l);
        if (!o->p)
                return lim_gone(l);
        if (cost > o->p->burst)
                return -ERANGE;
        o->r = thr_reader_get(l->a, &rc);
        if (!o->r)
                return rc;
        o->outer = thr_reader_enter(l->a, o->r);
        THR_HOOK(THR_HOOK_SECTION_ENTERED, o->r);
        o->key = key;
        o->len = (uint32_t)len;
        o->hash = shm_hash(l->a->hdr->secret, key, len);
        o->slot = shm_table_lookup_meta(l->a->map.base, l->tb, o->hash, key, o->len, &o->meta);
        return 0;
}

/* Whether the slot is still the one the lookup matched (not retired, not reused). */
static inline bool op_same_slot(const struct op *o)
{
        return atomic_load_explicit(&o->slot->meta, memory_order_acquire) == o->meta;
}

static inline uint64_t op_now(const struct op *o)
{
        return shm_now_ns(o->l->a->hdr) * o->p->k;
}

/*
 * Insert the key (or find it, created meanwhile) under its shard's insert lock. The read-side
 * section is left while waiting for the lock, so a holder that was stopped or is slow never makes
 * this thread block grace periods; it is entered again before the probe under the lock. Nothing
 * found before is used after: the parameter record is read again too. FIRST, if not NULL, charges
 * the new key's first request as it is published. A lock held past THR_LOCK_WAIT_NS by a live
 * holder, or by this very thread, counts as a full table: -ENOSPC, the on_full outcome.
 */
#define OP_RETIRED 1
#define OP_APPLIED 2 /* op_insert created the key and charged its first request */
#define OP_SPINS   8 /* evictions under one call before a full table is assumed */

static int op_insert(struct op *o, uint64_t (*first)(void *, uint64_t), void *ctx, bool *waited)
{
        thr_limiter *l = o->l;
        struct shm_probe pr;
        shm_probe_init(l->a->map.base, l->tb, o->hash, &pr);
        struct thr_reader *rec0 = shm_at(l->a->map.base, l->a->map.g.reader_off);
        uint64_t me = shm_lock_client((uint32_t)(o->r - rec0),
                                      atomic_load_explicit(&o->r->owner, memory_order_relaxed));
        /* one call waits at most insert_wait in all: a retry (the key evicted under us) only tries
         */
        uint64_t wait = *waited ? 0 : o->p->lock_wait_ns ? o->p->lock_wait_ns : THR_LOCK_WAIT_NS;
        *waited = true;
        if (!o->outer) /* a nested call cannot leave the section it is in */
                thr_reader_exit(o->r, 0);
        int rc = shm_shard_lock(&l->a->map, &pr, me, wait);
        if (!o->outer)
                thr_reader_enter(l->a, o->r);
        if (rc == -ETIMEDOUT || rc == -EDEADLK)
                return -ENOSPC;
        if (rc < 0)
                return rc;
        o->p = lim_params(l);
        if (!o->p) {
                shm_shard_unlock(&pr, me);
                return lim_gone(l);
        }
        const struct thr_params *p = o->p;
        o->now = op_now(o);
        struct shm_insert ins = {.start_tat = o->now + (p->burst - p->initial) * p->t_units,
                                 .now = o->now,
                                 .on_full = p->on_full,
                                 .first = first,
                                 .ctx = ctx};
        bool created;
        rc = shm_table_insert_locked(l->a->map.base, l->tb, &pr, o->key, o->len, &ins, &o->slot,
                                     &created);
        shm_shard_unlock(&pr, me);
        if (rc < 0)
                return rc;
        /* inside the section again: the slot cannot be reused under us, only retired */
        o->meta = atomic_load_explicit(&o->slot->meta, memory_order_acquire);
        if (created) {
                thr_count(&o->r->inserts);
                THR_HOOK(THR_HOOK_KEY_INSERTED, o->slot);
        }
        return created && first ? OP_APPLIED : 0;
}

/*
 * The slot was retired under us (evicted: THR_TAT_DEAD): find the key's live slot again. Finding
 * the same slot means its evictor died between its two steps (state DEAD, meta still LIVE): the
 * insert path finishes the eviction under the mutex and makes a new slot.
 */
static void op_relookup(struct op *o)
{
        struct thr_slot *old = o->slot;
        uint64_t old_meta = o->meta;
        o->slot =
            shm_table_lookup_meta(o->l->a->map.base, o->l->tb, o->hash, o->key, o->len, &o->meta);
        if (o->slot == old && o->meta == old_meta)
                o->slot = NULL;
}

/*
 * The table is full and the limiter's on_full policy did not make room (deny, or evict with
 * nothing evictable): a denial that says when to look again. With allow, the caller's fresh-key
 * decision stands, unrecorded. Returns the result for thr_limiter_try.
 */
static int op_full(struct op *o, struct shm_gcra *g)
{
        if (o->p->on_full == THR_FULL_ALLOW) {
                if (g->admitted) {
                        struct shm_probe pr;
                        shm_probe_init(o->l->a->map.base, o->l->tb, o->hash, &pr);
                        atomic_fetch_add_explicit(&pr.shard->allowed_full, 1, memory_order_relaxed);
                }
                return 0; /* the fresh-key decision, admitted or not, unrecorded */
        }
        *g = (struct shm_gcra){.admitted = false, .retry_units = o->p->t_units};
        return 0;
}

static void fill_result(const struct thr_params *p, const struct shm_gcra *g,
                        struct thr_result *res)
{
        if (!res)
                return;
        res->admitted = g->admitted;
        res->limit = p->burst;
        res->remaining = g->remaining;
        res->retry_after_ns = shm_units_to_ns(p, g->retry_units);
        res->reset_after_ns = shm_units_to_ns(p, g->reset_units);
}

/*
 * CAS loop: apply COST to the slot's TAT; a peek or a denial writes nothing, with one exception:
 * a denied request on a key still THR_TAT_FRESH records the key's start (now + (B - initial) * T),
 * so a key that starts with fewer than B tokens refills from its first request, not from each.
 * That write consumes nothing: it is the value every decision on the fresh key already assumes.
 *
 * The clock is read before the state, so nothing slow sits between the load and the CAS (under
 * contention a clock call there lets the other core take the line every time). An admission
 * decided with that earlier clock is sound: with a smaller now, new_tat - now is no smaller, so
 * whatever admits then admits later too. A denial is only reported on a clock read after the
 * state it judges: another process may have stored a TAT from a clock reading later than ours,
 * and judging it with ours would deny by the few ns between the two readings.
 * Returns 0, or OP_RETIRED if the slot was evicted (or reused) meanwhile: the caller looks the
 * key up again. A failed CAS means the state moved: before deciding again on the new value, the
 * slot's identity is checked (the first decision relies on the read-side section alone).
 */
static inline int op_apply(struct op *o, uint64_t cost, struct shm_gcra *g)
{
        o->now = op_now(o);
        uint64_t old = atomic_load_explicit(&o->slot->state, memory_order_relaxed);
        bool clock_after_state = false;
        for (;;) {
                if (old == THR_TAT_DEAD)
                        return OP_RETIRED;
                shm_gcra_step(o->p, old, o->now, cost, g);
                if (!g->admitted && !clock_after_state) {
                        o->now = op_now(o);
                        clock_after_state = true;
                        continue;
                }
                if (cost == 0 || (!g->admitted && old != THR_TAT_FRESH))
                        return 0;
                uint64_t next = g->admitted
                                    ? g->new_tat
                                    : o->now + (o->p->burst - o->p->initial) * o->p->t_units;
                THR_HOOK(THR_HOOK_APPLY_BEFORE_CAS, o->slot);
                if (atomic_compare_exchange_weak_explicit(
                        &o->slot->state, &old, next, memory_order_acq_rel, memory_order_acquire))
                        return 0;
                if (!op_same_slot(o)) /* retired or reused: never re-decide on another key */
                        return OP_RETIRED;
                clock_after_state = false; /* OLD is newer now: a denial needs a newer clock */
                thr_count(&o->r->cas_retries);
        }
}

/* The decision a new key's first request gets as the key is published (shm_insert.first). */
struct first_try {
        const struct op *o;
        uint64_t cost;
        struct shm_gcra *g;
};

static uint64_t first_try(void *ctx, uint64_t start)
{
        struct first_try *f = ctx;
        shm_gcra_step(f->o->p, start, f->o->now, f->cost, f->g);
        return f->g->admitted ? f->g->new_tat : start;
}

int thr_limiter_try(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                    struct thr_result *res)
{
        struct op o;
        struct shm_gcra g = {0};
        int rc = op_begin(&o, l, key, len, cost);
        if (rc < 0)
                return rc;
        bool waited = false;
        for (int spins = 0;; spins++) {
                if (!o.slot) {
                        /*
                         * A new key: decide as if fresh first, so a peek inserts nothing, nor does
                         * a denial of a key that would start full (nothing to remember about it).
                         * The insert charges the request as it publishes the key.
                         */
                        o.now = op_now(&o);
                        shm_gcra_step(o.p, THR_TAT_FRESH, o.now, cost, &g);
                        if (cost == 0 || (!g.admitted && o.p->initial == o.p->burst))
                                break;
                        struct first_try f = {&o, cost, &g};
                        rc = spins < OP_SPINS ? op_insert(&o, first_try, &f, &waited) : -ENOSPC;
                        if (rc == -ENOSPC)
                                rc = op_full(&o, &g);
                        if (rc == OP_APPLIED)
                                rc = 0;
                        else if (rc == 0 && o.slot && op_apply(&o, cost, &g) == OP_RETIRED)
                                rc = OP_RETIRED;
                        if (rc != OP_RETIRED)
                                break;
                        op_relookup(&o);
                        rc = 0;
                        continue;
                }
                if (op_apply(&o, cost, &g) != OP_RETIRED)
                        break;
                op_relookup(&o);
        }
        if (rc == 0) {
                thr_count(g.admitted ? &o.r->admitted : &o.r->denied);
                fill_result(o.p, &g, res); /* inside the section: the record may be reused after */
        }
        thr_reader_exit(o.r, o.outer);
        return rc < 0 ? rc : g.admitted;
}

/* ---------------------------------------------------------------- reservations */

/* Where a request that moves the TAT to NEW_TAT is due: when new_tat - now fits in B*T. */
static inline uint64_t due_units(const struct thr_params *p, uint64_t new_tat, uint64_t now)
{
        return new_tat - now > p->bt_units ? new_tat - p->bt_units : now;
}

/* Fill the wait of a request that would move the TAT to G->new_tat; whether it may be taken. */
static bool reserve_fits(const struct op *o, const struct shm_gcra *g, uint64_t max_wait_ns,
                         struct thr_reservation *rv)
{
        uint64_t due = due_units(o->p, g->new_tat, o->now);
        rv->wait_ns = shm_units_to_ns(o->p, due - o->now);
        rv->due_ns = shm_units_to_ns(o->p, due);
        return due - o->now <= o->p->max_reserve_units && rv->wait_ns <= max_wait_ns;
}

/*
 * What thr_reservation_cancel needs: the TAT pair, the slot and its generation, and the fork
 * generation of the process that took it (in priv_gen's upper half: a copy of the handle in a
 * fork child must not give back a place its parent may have taken again with the same pair).
 */
static void reserve_fill(const struct op *o, uint64_t cost, uint64_t prev, uint64_t tat,
                         struct thr_reservation *rv)
{
        rv->cost = cost;
        rv->priv_tat = tat;
        rv->priv_prev = prev;
        rv->priv_gen = (thr_forkpage->gen << 32) | THR_META_GEN(o->meta);
        rv->priv_lim = o->l;
        rv->priv_slot = o->slot;
}

/* Returns 0 (taken), -EAGAIN (too far), or OP_RETIRED. Clock order as in op_apply. */
static int reserve_apply(struct op *o, uint64_t cost, uint64_t max_wait_ns,
                         struct thr_reservation *rv, struct shm_gcra *g)
{
        o->now = op_now(o);
        uint64_t old = atomic_load_explicit(&o->slot->state, memory_order_relaxed);
        bool clock_after_state = false;
        for (;;) {
                if (old == THR_TAT_DEAD)
                        return OP_RETIRED;
                shm_gcra_step(o->p, old, o->now, cost, g);
                if (!reserve_fits(o, g, max_wait_ns, rv)) {
                        if (clock_after_state)
                                return -EAGAIN;
                        o->now = op_now(o);
                        clock_after_state = true;
                        continue;
                }
                THR_HOOK(THR_HOOK_APPLY_BEFORE_CAS, o->slot);
                if (atomic_compare_exchange_weak_explicit(&o->slot->state, &old, g->new_tat,
                                                          memory_order_acq_rel,
                                                          memory_order_acquire))
                        break;
                if (!op_same_slot(o))
                        return OP_RETIRED;
                clock_after_state = false;
                thr_count(&o->r->cas_retries);
        }
        reserve_fill(o, cost, old, g->new_tat, rv);
        return 0;
}

/* A new key's first reservation, taken as the key is published (shm_insert.first). */
struct first_reserve {
        const struct op *o;
        uint64_t cost, max_wait_ns;
        struct thr_reservation *rv;
        struct shm_gcra *g;
        bool taken;
        uint64_t prev;
};

static uint64_t first_reserve(void *ctx, uint64_t start)
{
        struct first_reserve *f = ctx;
        shm_gcra_step(f->o->p, start, f->o->now, f->cost, f->g);
        f->taken = reserve_fits(f->o, f->g, f->max_wait_ns, f->rv);
        f->prev = start;
        return f->taken ? f->g->new_tat : start;
}

static int reserve(thr_limiter *l, const void *key, size_t len, uint64_t cost, uint64_t max_wait_ns,
                   struct thr_reservation *rv, struct shm_gcra *g, struct thr_params *pcopy)
{
        struct op o;
        if (!rv || cost == 0)
                return -EINVAL; /* a reservation of nothing has no place to take */
        int rc = op_begin(&o, l, key, len, cost);
        if (rc < 0)
                return rc;
        rv->priv_slot = NULL;
        bool waited = false;
        for (int spins = 0;; spins++) {
                if (!o.slot) {
                        o.now = op_now(&o);
                        shm_gcra_step(o.p, THR_TAT_FRESH, o.now, cost, g);
                        struct first_reserve f = {&o, cost, max_wait_ns, rv, g, false, 0};
                        rc = !reserve_fits(&o, g, max_wait_ns, rv) ? -EAGAIN
                             : spins < OP_SPINS ? op_insert(&o, first_reserve, &f, &waited)
                                                : -ENOSPC;
                        if (rc == OP_APPLIED && f.taken) {
                                reserve_fill(&o, cost, f.prev, g->new_tat, rv);
                                rc = 0;
                                break;
                        }
                        if (rc == OP_APPLIED)
                                rc = 0; /* published at a higher floor: decide on it below */
                        if (rc == -ENOSPC && o.p && o.p->on_full == THR_FULL_ALLOW) {
                                g->admitted = true; /* granted now, unrecorded */
                                op_full(&o, g);
                                rv->wait_ns = 0;
                                rv->due_ns = shm_units_to_ns(o.p, o.now);
                                rv->cost = cost;
                                rc = 0;
                                break;
                        }
                        if (rc < 0)
                                break; /* too far or full: nothing inserted, nothing taken */
                }
                rc = reserve_apply(&o, cost, max_wait_ns, rv, g);
                if (rc != OP_RETIRED)
                        break;
                op_relookup(&o);
        }
        if (rc == 0)
                thr_count(&o.r->admitted);
        if (o.p)
                *pcopy = *o.p; /* the record may be reused once this section ends */
        thr_reader_exit(o.r, o.outer);
        return rc;
}

int thr_limiter_reserve(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                        uint64_t max_wait_ns, struct thr_reservation *rv)
{
        struct shm_gcra g = {0};
        struct thr_params p;
        return reserve(l, key, len, cost, max_wait_ns, rv, &g, &p);
}

/*
 * Give a place back only while it is still a place in the queue (not yet due: a due place may
 * have been used), only once (the handle is cleared), only on the same slot generation (the slot
 * was not evicted and reused for another key), and only if nothing was stacked on it.
 */
int thr_reservation_cancel(struct thr_reservation *rv)
{
        if (!rv || !rv->priv_slot || !rv->priv_lim)
                return -EINVAL;
        if ((rv->priv_gen >> 32) != (uint32_t)thr_forkpage->gen)
                return -EINVAL; /* taken by another process (a copy made by fork): not ours */
        thr_arena *a = rv->priv_lim->a;
        int rc = 0;
        struct thr_reader *r = thr_reader_get(a, &rc);
        if (!r)
                return rc;
        uint64_t outer = thr_reader_enter(a, r);
        struct thr_slot *s = (struct thr_slot *)rv->priv_slot;
        if (shm_now_ns(a->hdr) < rv->due_ns) {
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
                uint64_t expect = rv->priv_tat;
                if (THR_META_STATUS(meta) == THR_SLOT_LIVE &&
                    THR_META_GEN(meta) == (uint32_t)rv->priv_gen &&
                    atomic_compare_exchange_strong_explicit(&s->state, &expect, rv->priv_prev,
                                                            memory_order_acq_rel,
                                                            memory_order_relaxed))
                        rc = 1;
        }
        thr_reader_exit(r, outer);
        if (rc == 1)
                rv->priv_slot = NULL;
        return rc;
}

/* Sleep until arena time DUE_NS. Manual clock: poll the arena's time (tests advance it). */
static void sleep_until(const struct thr_hdr *h, uint64_t due_ns)
{
        if (h->clock_id == THR_CLOCK_MANUAL) {
                struct timespec tick = {0, 100000};
                while (shm_now_ns(h) < due_ns)
                        nanosleep(&tick, NULL);
                return;
        }
        int64_t abs = h->epoch_ns + (int64_t)due_ns;
        struct timespec ts = {abs / 1000000000, abs % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
}

int thr_limiter_acquire(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                        uint64_t timeout_ns, struct thr_result *res)
{
        struct thr_reservation rv;
        struct shm_gcra g = {0};
        struct thr_params pc;
        const struct thr_params *p = &pc;
        int rc = reserve(l, key, len, cost, timeout_ns, &rv, &g, &pc);
        if (rc == -EAGAIN)
                return -ETIMEDOUT;
        if (rc < 0)
                return rc;
        if (rv.wait_ns)
                sleep_until(l->a->hdr, rv.due_ns);
        if (res) { /* as of the due time, with the record the decision used */
                uint64_t due = rv.due_ns * p->k;
                uint64_t reset = g.new_tat > due ? g.new_tat - due : 0;
                res->admitted = 1;
                res->limit = p->burst;
                res->remaining = reset >= p->bt_units ? 0 : (p->bt_units - reset) / p->t_units;
                res->retry_after_ns = 0;
                res->reset_after_ns = shm_units_to_ns(p, reset);
        }
        return 0;
}

/* ---------------------------------------------------------------- clock and errors */

int thr_clock_now(thr_arena *a, uint64_t *now_ns)
{
        if (!a || !now_ns)
                return -EINVAL;
        *now_ns = shm_now_ns(a->hdr);
        return 0;
}

int thr_clock_advance(thr_arena *a, uint64_t delta_ns)
{
        if (!a)
                return -EINVAL;
        if (a->hdr->clock_id != THR_CLOCK_MANUAL)
                return -EPERM;
        atomic_fetch_add_explicit(&a->hdr->manual_now_ns, delta_ns, memory_order_acq_rel);
        return 0;
}

const char *thr_strerror(int err)
{
        if (err > 0 || err == INT_MIN) /* -INT_MIN does not exist */
                return "unknown error";
        switch (-err) {
        case ERANGE:
                return "cost exceeds the limiter's burst: never admissible";
        case ENOSPC:
                return "the limiter's key table is full";
        case EIDRM:
                return "the limiter was removed from the daemon's configuration";
        case EPROTONOSUPPORT:
                return "arena layout major version differs from this library's";
        case ESTALE:
                return "arena clock cannot be read the same way here (another boot or time "
                       "namespace)";
        case EBADMSG:
                return "arena is corrupt or not a throttle arena";
        case ENOENT:
                return "no such arena or limiter";
        case EUSERS:
                return "no free reader record in the arena (raise [arena] max_readers)";
        case EBUSY:
                return "called from a signal handler while this thread was changing its record "
                       "cache: nothing decided, call again";
        case EAGAIN:
                return "the reservation would be due later than allowed";
        case ETIMEDOUT:
                return "the wait would exceed the timeout; nothing was consumed";
        case ENAMETOOLONG:
                return "key or name too long";
        case EPERM:
                return "operation needs a manual-clock arena";
        case EACCES:
                return "permission denied by the arena file's mode or group";
        case EXDEV:
                return "arena was created in another pid namespace (not supported yet)";
        case EINVAL:
                return "invalid argument";
        default:
                break;
        }
        const char *s = strerrordesc_np(-err);
        return s ? s : "unknown error";
}

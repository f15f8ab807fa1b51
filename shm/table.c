/*
 * table.c - the per-limiter key table: open addressing with linear probing inside a shard.
 *
 * Why it is correct (read with the slot lifecycle in layout.h; reclamation is in reclaim.c):
 *
 * Lookup (any client, lock-free, read-only, inside a read-side section). It acquire-loads a
 * slot's meta word and reads the key bytes only when meta says LIVE. The inserter wrote key_len,
 * the key and the state before it release-stored LIVE into meta, so the acquire load that sees
 * LIVE also sees a complete key (release/acquire pair: insert_publish() -> shm_slot_matches()). A
 * lookup stops at the first EMPTY slot: a key is always reachable from its home slot without
 * crossing an EMPTY one, because a slot becomes EMPTY again only when every slot from it to the
 * end of its probe run is reclaimed (trim_runs(), under the shard mutex), so no live key lies
 * beyond it. A lookup that races with the insert of its own key may miss it (meta still BUSY);
 * it then takes the insert path, which serialises with the inserter and finds the key there.
 *
 * Insert (any client, under the shard's robust process-shared mutex). All slot creation in a
 * shard happens under that mutex, and the inserter probes again after taking it, to the end of
 * the probe run. Two processes inserting the same new key therefore cannot both find it absent:
 * the second one's probe, under the mutex, sees the first one's LIVE slot. A key evicted and
 * requested again while its old slot is still retiring gets a new slot: the old one is DEAD (not
 * LIVE) from the moment its state word became THR_TAT_DEAD; an inserter that finds a LIVE slot
 * whose state is already DEAD (its evictor died between the two steps) finishes the eviction
 * first. Hence at most one live slot per key. The new key goes to the first reclaimed slot
 * (DEAD, state THR_TAT_FREE: a grace period passed since it was retired, so no reader still
 * holds it) or else to the EMPTY slot that ended the probe: an insert never waits for a grace
 * period. The mutex is on the insert path only; lookups never take it.
 *
 * A full table or shard: the limiter's on_full policy. `evict` retires, under the mutex, the
 * shard's key with the least debt, the lowest index on ties (CAS of its state from the value
 * observed, so a concurrent admission wins and another victim is tried) and raises the shard's
 * floor to that key's TAT: every key created in the shard afterwards starts at or above it, so the
 * evicted key, coming back, can never admit more than it would have. `deny` and `allow` are applied
 * by the caller.
 *
 * A process killed at any instruction: holding no mutex, it changed nothing or completed a CAS.
 * Killed holding the mutex, the kernel's robust-futex list hands the next locker EOWNERDEAD; that
 * locker repairs the shard (a BUSY slot, never visible as LIVE, becomes reclaimed at once: no
 * reader can hold it) and recounts the shard's live slots, because the victim may have died
 * between publishing LIVE and incrementing the counters. The table-wide live count is a capacity
 * reservation taken by fetch_add before the slot is claimed (capacity_take), so the hard cap
 * holds exactly under concurrent inserts; a death after the reservation only loses a unit of
 * capacity until shm_table_reconcile recounts.
 *
 * The GCRA state word is written here only as a new key's starting TAT (or FRESH), and as DEAD by
 * an eviction's CAS: every other change is the client's single CAS, so no torn state is possible.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "shm.h"

static_assert(sizeof(pthread_mutex_t) <= sizeof(((struct thr_shard *)0)->mutex),
              "pthread_mutex_t fits the shard header");

/* Called with the mutex held after EOWNERDEAD: undo what the dead holder left half done. */
static void shard_repair(struct shm_probe *p)
{
        uint64_t live = 0;
        for (uint32_t i = 0; i < p->n; i++) {
                struct thr_slot *s = &p->slots[i];
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_relaxed);
                unsigned st = THR_META_STATUS(meta);
                if (st == THR_SLOT_BUSY) {
                        /* never LIVE, so no reader holds it: reusable at once */
                        atomic_store_explicit(&s->state, THR_TAT_FREE, memory_order_relaxed);
                        atomic_store_explicit(&s->meta,
                                              THR_META_MAKE(THR_SLOT_DEAD, THR_META_GEN(meta), 0),
                                              memory_order_release);
                } else if (st == THR_SLOT_LIVE) {
                        live++;
                }
        }
        atomic_store_explicit(&p->shard->live, live, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->shard->repairs, 1, memory_order_relaxed);
        /* tb->live is made exact by shm_table_reconcile, run by the daemon after repairs */
}

static int after_lock(struct shm_probe *p, int rc)
{
        pthread_mutex_t *mu = (pthread_mutex_t *)p->shard->mutex;
        if (rc == EOWNERDEAD) {
                shard_repair(p);
                rc = pthread_mutex_consistent(mu);
                if (rc != 0)
                        pthread_mutex_unlock(mu); /* never return holding it */
        }
        return -rc;
}

int shm_shard_lock(struct shm_probe *p)
{
        return after_lock(p, pthread_mutex_lock((pthread_mutex_t *)p->shard->mutex));
}

int shm_shard_trylock(struct shm_probe *p)
{
        return after_lock(p, pthread_mutex_trylock((pthread_mutex_t *)p->shard->mutex));
}

void shm_shard_unlock(struct shm_probe *p)
{
        pthread_mutex_unlock((pthread_mutex_t *)p->shard->mutex);
}

/*
 * Retire slot S, whose state the caller already CASed to THR_TAT_DEAD: meta LIVE -> DEAD with the
 * grace period TAG it must wait for (in place of the hash tag). Only the winner of this CAS
 * uncounts the key, so an evictor and an inserter finishing its work never both do.
 */
bool shm_slot_retire(struct thr_table *tb, struct thr_shard *sh, struct thr_slot *s, uint32_t tag)
{
        uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
        while (THR_META_STATUS(meta) == THR_SLOT_LIVE) {
                uint64_t dead = THR_META_MAKE(THR_SLOT_DEAD, THR_META_GEN(meta), tag);
                if (atomic_compare_exchange_weak_explicit(
                        &s->meta, &meta, dead, memory_order_acq_rel, memory_order_acquire)) {
                        atomic_fetch_sub_explicit(&sh->live, 1, memory_order_relaxed);
                        atomic_fetch_sub_explicit(&tb->live, 1, memory_order_relaxed);
                        return true;
                }
        }
        return false;
}

/*
 * The grace period a slot retired now must wait for. The evictor's state CAS happened before this
 * read of the counter; a reader that snapshots a counter >= the tag read it after the increment
 * to the tag, and so sees the DEAD state. A client inserter adds one more period: it did not do
 * the state CAS itself, only saw it.
 */
static uint32_t retire_tag(const void *base, unsigned extra)
{
        const struct thr_hdr *h = base;
        return (uint32_t)(atomic_load_explicit(&h->grace_periods, memory_order_seq_cst) + 1 +
                          extra);
}

struct found {
        struct thr_slot *key;   /* the key's live slot */
        struct thr_slot *reuse; /* first reclaimed slot on the probe run */
        struct thr_slot *empty; /* the EMPTY slot that ended it */
};

/* Under the mutex: probe the whole run for the key, noting where it could go. */
static void probe_locked(void *base, struct thr_table *tb, struct shm_probe *p, const void *key,
                         uint32_t len, struct found *f)
{
        *f = (struct found){0};
        uint32_t i = p->home;
        for (uint32_t step = 0; step < p->n; step++) {
                struct thr_slot *s = &p->slots[i];
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
                unsigned st = THR_META_STATUS(meta);
                if (st == THR_SLOT_EMPTY) {
                        f->empty = s;
                        return;
                }
                if (st == THR_SLOT_DEAD && !f->reuse &&
                    atomic_load_explicit(&s->state, memory_order_acquire) == THR_TAT_FREE)
                        f->reuse = s;
                if (shm_slot_matches(s, meta, p->tag, key, len)) {
                        if (atomic_load_explicit(&s->state, memory_order_acquire) != THR_TAT_DEAD) {
                                f->key = s;
                                return;
                        }
                        shm_slot_retire(tb, p->shard, s, retire_tag(base, 1));
                }
                if (++i == p->n)
                        i = 0;
        }
}

static void insert_publish(struct shm_probe *p, struct thr_slot *s, const void *key, uint32_t len,
                           uint64_t start)
{
        uint64_t meta = atomic_load_explicit(&s->meta, memory_order_relaxed);
        uint32_t gen = THR_META_GEN(meta) + 1;
        atomic_store_explicit(&s->meta, THR_META_MAKE(THR_SLOT_BUSY, gen, p->tag),
                              memory_order_relaxed);
        s->key_len = len;
        memcpy(s->key, key, len);
        atomic_store_explicit(&s->state, start, memory_order_relaxed);
        /* Pairs with the acquire load of meta in shm_table_lookup / probe_locked. */
        atomic_store_explicit(&s->meta, THR_META_MAKE(THR_SLOT_LIVE, gen, p->tag),
                              memory_order_release);
        atomic_fetch_add_explicit(&p->shard->live, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->shard->inserts, 1, memory_order_relaxed);
}

/*
 * Take one unit of the table's capacity before claiming a slot: a fetch_add, so concurrent
 * inserts in different shards can never together pass the hard cap. A process killed between this
 * and its publish leaves tb->live one too high (a capacity unit lost, never an extra key); the
 * daemon recounts with shm_table_reconcile.
 */
static bool capacity_take(struct thr_table *tb)
{
        if (atomic_fetch_add_explicit(&tb->live, 1, memory_order_relaxed) < tb->capacity)
                return true;
        atomic_fetch_sub_explicit(&tb->live, 1, memory_order_relaxed);
        return false;
}

/* Debt of a state word at NOW: how far its TAT lies ahead (0 for none). */
static uint64_t debt(uint64_t tat, uint64_t now)
{
        return tat >= THR_TAT_LIMIT || tat <= now ? 0 : tat - now;
}

/*
 * on_full = evict, under the mutex: retire the shard's live key with the least debt (ties: the
 * lowest index) and raise the shard's floor to its TAT. The state CAS loses to
 * a concurrent admission; then the next candidate is tried, a few times at most.
 */
static bool evict_least(void *base, struct thr_table *tb, struct shm_probe *p, uint64_t now)
{
        for (int attempt = 0; attempt < 4; attempt++) {
                struct thr_slot *best = NULL;
                uint64_t best_tat = 0, best_debt = UINT64_MAX;
                for (uint32_t i = 0; i < p->n && best_debt; i++) {
                        struct thr_slot *s = &p->slots[i];
                        if (THR_META_STATUS(atomic_load_explicit(&s->meta, memory_order_acquire)) !=
                            THR_SLOT_LIVE)
                                continue;
                        uint64_t tat = atomic_load_explicit(&s->state, memory_order_acquire);
                        if (tat == THR_TAT_DEAD || tat == THR_TAT_FREE)
                                continue;
                        if (debt(tat, now) < best_debt) {
                                best = s;
                                best_tat = tat;
                                best_debt = debt(tat, now);
                        }
                }
                if (!best)
                        return false;
                if (!atomic_compare_exchange_strong_explicit(&best->state, &best_tat, THR_TAT_DEAD,
                                                             memory_order_acq_rel,
                                                             memory_order_relaxed))
                        continue;
                if (best_tat != THR_TAT_FRESH &&
                    best_tat > atomic_load_explicit(&p->shard->floor_units, memory_order_relaxed))
                        atomic_store_explicit(&p->shard->floor_units, best_tat,
                                              memory_order_relaxed);
                if (shm_slot_retire(tb, p->shard, best, retire_tag(base, 0)))
                        atomic_fetch_add_explicit(&p->shard->evicted_full, 1, memory_order_relaxed);
                return true;
        }
        return false;
}

/* Under the mutex, no live slot for the key: claim one within the caps, or -ENOSPC. */
static struct thr_slot *claim(struct thr_table *tb, struct shm_probe *p, const struct found *f)
{
        struct thr_slot *s = f->reuse ? f->reuse : f->empty;
        if (!s || atomic_load_explicit(&p->shard->live, memory_order_relaxed) >= tb->shard_max ||
            !capacity_take(tb))
                return NULL;
        return s;
}

int shm_table_insert_locked(void *base, struct thr_table *tb, struct shm_probe *p, const void *key,
                            uint32_t len, const struct shm_insert *a, struct thr_slot **out,
                            bool *created)
{
        struct found f;
        *created = false;
        probe_locked(base, tb, p, key, len, &f);
        if (f.key) {
                *out = f.key;
                return 0;
        }
        struct thr_slot *s = claim(tb, p, &f);
        if (!s && a->on_full == THR_FULL_EVICT && (f.reuse || f.empty) &&
            evict_least(base, tb, p, a->now))
                s = claim(tb, p, &f); /* the victim freed capacity; its slot is retiring */
        if (!s) {
                atomic_fetch_add_explicit(&tb->insert_fail, 1, memory_order_relaxed);
                return -ENOSPC;
        }
        uint64_t start = a->start_tat;
        uint64_t floor = atomic_load_explicit(&p->shard->floor_units, memory_order_relaxed);
        if (floor > a->now && (start == THR_TAT_FRESH || start < floor))
                start = floor; /* a key evicted for room may come back: never below its debt */
        if (a->p && a->g) {
                shm_gcra_step(a->p, start, a->now, a->cost, a->g);
                if (a->g->admitted)
                        start = a->g->new_tat;
        }
        insert_publish(p, s, key, len, start);
        *out = s;
        *created = true;
        return 0;
}

int shm_table_insert(void *base, struct thr_table *tb, uint64_t h, const void *key, uint32_t len,
                     struct thr_slot **out, bool *created)
{
        struct shm_probe p;
        shm_probe_init(base, tb, h, &p);
        *created = false;
        int rc = shm_shard_lock(&p);
        if (rc < 0)
                return rc;
        const struct shm_insert a = {.start_tat = THR_TAT_FRESH, .now = 0};
        rc = shm_table_insert_locked(base, tb, &p, key, len, &a, out, created);
        shm_shard_unlock(&p);
        return rc;
}

/*
 * Make the live counts exact again after a process died between changing a slot and counting it
 * (an inserter mid-insert, an evictor between its meta CAS and its decrements): with every shard
 * mutex held (in index order, so two reconcilers cannot deadlock), no insert or on_full eviction
 * is in flight, and the daemon, the only other evictor, is the caller; each shard's LIVE slots
 * are counted again and summed. The daemon only tries the locks (a stopped client
 * holding one must not stop the daemon): -EBUSY means try again later. Lookups never wait for it.
 */
int shm_table_reconcile(void *base, uint64_t tb_off, const struct thr_table *geo)
{
        struct thr_table *tb = shm_at(base, tb_off);
        struct thr_shard *sh = shm_at(base, geo->shards_off);
        struct shm_probe p = {.n = geo->shard_slots};
        uint64_t sum = 0;
        uint32_t locked = 0;
        int rc = 0;
        for (; locked < geo->nshards; locked++) {
                p.shard = &sh[locked];
                p.slots = (struct thr_slot *)shm_at(base, geo->slots_off) + (uint64_t)locked * p.n;
                rc = shm_shard_trylock(&p);
                if (rc < 0)
                        break;
                uint64_t live = 0;
                for (uint32_t i = 0; i < p.n; i++)
                        live += THR_META_STATUS(atomic_load_explicit(
                                    &p.slots[i].meta, memory_order_relaxed)) == THR_SLOT_LIVE;
                atomic_store_explicit(&p.shard->live, live, memory_order_relaxed);
                sum += live;
        }
        if (rc == 0)
                atomic_store_explicit(&tb->live, sum, memory_order_relaxed);
        for (uint32_t i = 0; i < locked; i++)
                pthread_mutex_unlock((pthread_mutex_t *)sh[i].mutex);
        return rc;
}

uint64_t shm_table_repairs(const void *base, const struct thr_table *geo)
{
        const struct thr_shard *sh = shm_at(base, geo->shards_off);
        uint64_t sum = 0;
        for (uint32_t i = 0; i < geo->nshards; i++)
                sum += atomic_load_explicit(&sh[i].repairs, memory_order_relaxed);
        return sum;
}

int64_t shm_table_count(const void *base, const struct thr_table *tb)
{
        const struct thr_slot *slots = shm_at(base, tb->slots_off);
        uint64_t total = (uint64_t)tb->nshards * tb->shard_slots;
        int64_t live = 0;
        for (uint64_t i = 0; i < total; i++) {
                uint64_t meta = atomic_load_explicit(&slots[i].meta, memory_order_acquire);
                live += THR_META_STATUS(meta) == THR_SLOT_LIVE;
        }
        return live;
}

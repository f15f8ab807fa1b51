/*
 * table.c - the per-limiter key table: open addressing with linear probing inside a shard.
 *
 * Why it is correct (read with the slot lifecycle in layout.h):
 *
 * Lookup (any client, lock-free, read-only). It acquire-loads a slot's meta word and reads the
 * key bytes only when meta says LIVE. The inserter wrote key_len, the key and the state before it
 * release-stored LIVE into meta, so the acquire load that sees LIVE also sees a complete key
 * (release/acquire pair: insert_publish() -> shm_slot_matches()). A lookup stops at the first EMPTY
 * slot: a key is always reachable from its home slot without crossing an EMPTY one, because slots
 * only leave EMPTY (issue 3 turns DEAD back into EMPTY only at the end of a run, where nothing
 * lies beyond). A lookup that races with the insert of its own key may miss it (meta still BUSY);
 * it then takes the insert path, which serialises with the inserter and finds the key there.
 *
 * Insert (any client, under the shard's robust process-shared mutex). All slot creation in a
 * shard happens under that mutex, and the inserter probes again after taking it. Two processes
 * inserting the same new key therefore cannot both find it absent: the second one's probe, under
 * the mutex, sees the first one's LIVE slot. Hence at most one live slot per key. The mutex is on
 * the insert path only; the lookup path never takes it and never waits for it.
 *
 * A process killed at any instruction: holding no mutex, it changed nothing or completed a CAS.
 * Killed holding the mutex, the kernel's robust-futex list hands the next locker EOWNERDEAD; that
 * locker repairs the shard (a BUSY slot, whose key may be half written, becomes DEAD: lookups skip
 * it, and it was never visible as LIVE) and recounts the shard's live slots, because the victim
 * may have died between publishing LIVE and incrementing the counters. The table-wide live count
 * is a capacity reservation taken by fetch_add before the slot is claimed (capacity_take), so the
 * hard cap holds exactly under concurrent inserts; a death after the reservation only loses a
 * unit of capacity until shm_table_reconcile recounts.
 *
 * The GCRA state word is not touched here beyond its initial THR_TAT_FRESH: it is written by a
 * single CAS in the client, so no torn state is possible.
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
                        atomic_store_explicit(&s->state, THR_TAT_DEAD, memory_order_relaxed);
                        atomic_store_explicit(
                            &s->meta,
                            THR_META_MAKE(THR_SLOT_DEAD, THR_META_GEN(meta), THR_META_TAG(meta)),
                            memory_order_release);
                } else if (st == THR_SLOT_LIVE) {
                        live++;
                }
        }
        atomic_store_explicit(&p->shard->live, live, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->shard->repairs, 1, memory_order_relaxed);
        /* tb->live is made exact by shm_table_reconcile, run by the daemon after repairs */
}

static int shard_lock(struct shm_probe *p)
{
        pthread_mutex_t *mu = (pthread_mutex_t *)p->shard->mutex;
        int rc = pthread_mutex_lock(mu);
        if (rc == EOWNERDEAD) {
                shard_repair(p);
                rc = pthread_mutex_consistent(mu);
                if (rc != 0)
                        pthread_mutex_unlock(mu); /* never return holding it */
        }
        return -rc;
}

static void shard_unlock(struct shm_probe *p)
{
        pthread_mutex_unlock((pthread_mutex_t *)p->shard->mutex);
}

/* Under the mutex: the live slot of the key, or the EMPTY slot where it would go. */
static struct thr_slot *probe_locked(struct shm_probe *p, const void *key, uint32_t len,
                                     bool *found)
{
        uint32_t i = p->home;
        for (uint32_t step = 0; step < p->n; step++) {
                struct thr_slot *s = &p->slots[i];
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
                if (THR_META_STATUS(meta) == THR_SLOT_EMPTY) {
                        *found = false;
                        return s;
                }
                if (shm_slot_matches(s, meta, p->tag, key, len)) {
                        *found = true;
                        return s;
                }
                if (++i == p->n)
                        i = 0;
        }
        *found = false;
        return NULL;
}

static void insert_publish(struct shm_probe *p, struct thr_slot *s, const void *key, uint32_t len)
{
        uint64_t meta = atomic_load_explicit(&s->meta, memory_order_relaxed);
        uint32_t gen = THR_META_GEN(meta) + 1;
        atomic_store_explicit(&s->meta, THR_META_MAKE(THR_SLOT_BUSY, gen, p->tag),
                              memory_order_relaxed);
        s->key_len = len;
        memcpy(s->key, key, len);
        atomic_store_explicit(&s->state, THR_TAT_FRESH, memory_order_relaxed);
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

int shm_table_insert(void *base, struct thr_table *tb, uint64_t h, const void *key, uint32_t len,
                     struct thr_slot **out, bool *created)
{
        struct shm_probe p;
        shm_probe_init(base, tb, h, &p);
        *created = false;
        int rc = shard_lock(&p);
        if (rc < 0)
                return rc;
        bool found;
        struct thr_slot *s = probe_locked(&p, key, len, &found);
        if (found) {
                *out = s;
        } else if (!s ||
                   atomic_load_explicit(&p.shard->live, memory_order_relaxed) >= tb->shard_max ||
                   !capacity_take(tb)) {
                atomic_fetch_add_explicit(&tb->insert_fail, 1, memory_order_relaxed);
                rc = -ENOSPC;
        } else {
                insert_publish(&p, s, key, len);
                *out = s;
                *created = true;
        }
        shard_unlock(&p);
        return rc;
}

/*
 * Make tb->live exact again after processes died mid-insert: with every shard mutex held (in
 * index order, so two reconcilers cannot deadlock), no insert is in flight and the sum of the
 * shards' recounted live slots is the truth. Insert path only; lookups never wait for it.
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
                rc = shard_lock(&p);
                if (rc < 0)
                        break;
                sum += atomic_load_explicit(&p.shard->live, memory_order_relaxed);
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

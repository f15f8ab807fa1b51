/*
 * table.c - the per-limiter key table: open addressing with linear probing inside a shard.
 *
 * Why it is correct (read with the slot lifecycle in layout.h; the insert lock is shardlock.c,
 * reclamation is reclaim.c):
 *
 * Lookup (any client, lock-free, read-only, inside a read-side section). It acquire-loads a
 * slot's meta word and reads the key bytes only when meta says LIVE. The inserter wrote key_len,
 * the key and the state before it release-stored LIVE into meta, so the acquire load that sees
 * LIVE also sees a complete key (release/acquire pair: insert_publish() -> shm_slot_matches()). A
 * lookup stops at the first EMPTY slot: a key is always reachable from its home slot without
 * crossing an EMPTY one, because a slot becomes EMPTY again only when no live key's probe path
 * crosses it (reclaim.c, under the shard lock, which holds off the inserts that could create such
 * a path). It also stops past its home's reach (thr_slot.reach of the home slot, in the line the
 * lookup loads first): every live key whose home a slot is lies within that many slots of it. An
 * inserter raises the reach, under the lock, before it publishes a key farther away; only a
 * maintenance pass lowers it, under the lock, to the exact farthest live key of that home it has
 * just seen (reclaim.c trim_segment). So slots retired or reclaimed but not yet EMPTY, however
 * many, lengthen neither a hit nor a miss beyond the home's own keys (they did: under key churn a
 * miss walked hundreds of them to the end of its run). A lookup that races with the insert of its
 * own key may miss it (meta still BUSY); it then takes the insert path, which serialises with the
 * inserter and finds the key there. The lookup returns the meta word it matched: the caller
 * compares it again after loading the state and after a failed CAS, so a slot retired and reused
 * under it is never taken for its key's.
 *
 * Insert (any client, under the shard's insert lock). All slot creation in a shard happens under
 * that lock, and the inserter probes again after taking it, over its home's reach. Two
 * processes inserting the same new key therefore cannot both find it absent: the second one's
 * probe, under the lock, sees the first one's LIVE slot. A key evicted and requested again while
 * its old slot is still retiring gets a new slot: the old one is DEAD (not LIVE) from the moment
 * its state word became THR_TAT_DEAD; an inserter that finds a LIVE slot whose state is already
 * DEAD (its evictor died between the two steps) finishes the eviction first. Hence at most one
 * live slot per key. The new key goes to the first slot from its home that is EMPTY or reclaimed:
 * DEAD with state THR_TAT_FREE (the daemon saw its grace period pass), or DEAD with a tag the
 * header's gp_done says is done (the inserter then makes it FREE itself, by the CAS the daemon
 * would have made: no reader still holds it, and the slot need not wait for the daemon's next
 * pass over it). An insert never waits for a grace period. Its first request is
 * charged in the same step (shm_insert.first), so no other inserter can evict it uncharged.
 *
 * A shard with no slot to take at all (every slot LIVE, or retiring with a grace period not yet
 * done: a table at capacity whose inserts evict for room faster than grace periods end) costs an
 * insert a walk of the whole shard before its on_full outcome; measured under churn, those walks
 * were most of the slots the locked probes visited (bench/results/2026-12-04/issue12_churn.txt).
 * So the insert that finds none leaves the shard's `no_place` hint: the gp_done it probed with,
 * + 1. A later insert under the lock that reads the same gp_done probes its home's reach (for its
 * key, as always) and stops there with no place: the outcome the whole walk would have had. Why
 * that is exact: a slot becomes a place only by a trim (EMPTY), a reclaim (state FREE) or a repair
 * of a BUSY slot, all under this lock and all clearing the hint (reclaim.c segment_locked,
 * shm_shard_repair), or by a retiring slot's grace period becoming done, which needs gp_done to
 * change (with gp_done fixed, shm_tag_done never turns true as the counter grows: the widened tag
 * only moves later). Evictions and inserts create no place. A hint a client scribbles can only
 * make inserts of that shard fail until gp_done moves (one daemon pass): a denial, as scribbling
 * the slots themselves can.
 *
 * Inline expiry. A new key's insert, under the lock, also evicts up to EXPIRE_MAX keys its probe
 * walked over that are idle past the limiter's TTL by the daemon's test, for GCRA keys only (not
 * serialized: their idleness is the TAT alone; expire_ttl says why not the other kinds), with the
 * record's fields read once (a client may rewrite it meanwhile): the state is CASed from the value
 * the probe read to DEAD (an admission since then makes the CAS fail and the key stays, as with the
 * daemon), then the slot is retired with the tag of the period about to start (the CAS came first:
 * retire_tag). An idle key has no debt, so no floor is raised. Killed between the CAS and the
 * retirement, it leaves a LIVE slot with state DEAD, which no lookup admits on and which the next
 * inserter of that key or the daemon's pass retires (what an evictor killed there has always left).
 * Its slots wait for a grace period like any other retired slot; what it changes is where and when
 * keys are evicted: where the inserts are, as soon as they are due, in lines the probe has just
 * loaded, not when the daemon's sweep comes by (issue12_churn.txt: under churn the sweep lagged and
 * the table filled).
 *
 * A full table or shard: the limiter's on_full policy. `evict` retires, under the lock, the
 * shard's key with the least debt, on ties the first from the shard's eviction cursor (the slot
 * after the previous victim), and a key with no debt at once (CAS of its state from the value
 * observed, so a concurrent admission wins and another victim is tried), having first raised the
 * shard's floor to that key's TAT: every key created in the shard afterwards starts at or above
 * it, so the evicted key, coming back, can never admit more than it would have. The floor is
 * raised before the CAS so that an evictor killed right after it loses no debt (it did: the key
 * came back with a fresh burst). `deny` and `allow` are applied
 * by the caller.
 *
 * Counts. A shard's live count changes only under its lock (inserts, evictions by inserters and by
 * the daemon, repairs), so it is exact whenever the lock is free, and a repair's recount cannot
 * race a decrement (it did: a repair's store, then a concurrent retire's decrement, wrapped the
 * count to 2^64 - 1 and refused every insert). The table-wide count is a capacity reservation
 * taken by fetch_add before the slot is claimed (capacity_take), so the hard cap holds exactly
 * under concurrent inserts in different shards; a death after the reservation and before the
 * publish leaves it one high (a unit of capacity lost, never an extra key) until the daemon's
 * shm_table_reconcile sets it to the sum of the shards'. Decrements saturate at 0.
 *
 * A process killed at any instruction: holding no lock, it changed nothing or completed a CAS.
 * Killed holding the lock, the next locker finds it gone (shardlock.c), takes the lock over and
 * repairs the shard: a BUSY slot, never visible as LIVE, becomes reclaimed at once (no reader can
 * hold it), and the live count is recounted. An evictor killed between its state CAS and its
 * retire has already raised the floor (evict_least); the next locker or the daemon finishes the
 * retire. A process stopped holding the lock (SIGSTOP, a debugger, the freezer, the daemon mid-
 * segment) is never taken over: inserters wait for it at most their limiter's insert_wait and then
 * answer with on_full; lookups and existing keys never wait for it. A process that forks, with or
 * without handlers, takes no lock of its parent's with it: a lock names a reader record, which is
 * per process (libclient/reader.c).
 *
 * The GCRA state word is written here only as a new key's starting TAT (or FRESH), and as DEAD by
 * an eviction's CAS: every other change is the client's single CAS, so no torn state is possible.
 */
#include <errno.h>
#include <string.h>

#include "shm.h"
#include "kind.h"
#include "testhook.h"

/* A count decremented by one, never below 0 (a count already wrong stays wrong, never wraps). */
static void count_drop(_Atomic uint64_t *c)
{
        uint64_t v = atomic_load_explicit(c, memory_order_relaxed);
        while (v && !atomic_compare_exchange_weak_explicit(c, &v, v - 1, memory_order_relaxed,
                                                           memory_order_relaxed))
                ;
}

/*
 * A shard's own counters (live, inserts) change only under its lock (the Counts paragraph above),
 * so their holder changes them by a load and a store, not a locked read-modify-write: no other
 * writer exists while the lock is held (a holder is taken over only once it is dead, and a dead
 * process writes nothing). Readers without the lock (the daemon's metrics, shmctl, claim's cap
 * check under the lock) see the old value or the new one. A locked add per counter was measured
 * on the new-key path (issue12_churn.txt). Relaxed: the lock's release/acquire orders them for
 * the next holder.
 */
static inline void count_add_locked(_Atomic uint64_t *c)
{
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                              memory_order_relaxed);
}

static inline void count_drop_locked(_Atomic uint64_t *c)
{
        uint64_t v = atomic_load_explicit(c, memory_order_relaxed);
        if (v)
                atomic_store_explicit(c, v - 1, memory_order_relaxed);
}

void shm_shard_repair(struct shm_probe *p)
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
        atomic_store_explicit(&p->shard->no_place, 0, memory_order_relaxed); /* places, maybe */
        atomic_fetch_add_explicit(&p->shard->repairs, 1, memory_order_relaxed);
        /* tb->live is made the sum of the shards' by shm_table_reconcile (the daemon) */
}

/*
 * Tags are the low 32 bits of a 64-bit grace period. Compared modulo 2^32 they would be wrong by
 * 2^32 after 2^31 periods (25 days at maintenance_ms = 1), and a restarted daemon starting from
 * done = 0 would have taken every tag in [2^31, 2^32) for done. So a tag is widened instead: to the
 * latest period that ends in those 32 bits and is not beyond COUNTER + 2. A slot is tagged with the
 * counter as its retirer read it, + 1 (+ 2 for an inserter finishing a dead evictor's work), and
 * the counter only grows, so the true period is that one or 2^32 (or a multiple) before it: the
 * widened tag is never earlier than the true one, so it is never done too soon (a slot retiring
 * for more than 2^32 periods waits longer, never less). COUNTER must be read after the meta word
 * that carried the tag. DONE is 0 until a first scan completes (the daemon's own, for the daemon;
 * any daemon's, through the header's gp_done, for an inserter: a period once complete stays
 * complete, the counter is the arena's and only grows).
 */
bool shm_tag_done(uint32_t tag, uint64_t done, uint64_t counter)
{
        uint64_t top = counter + 2;
        uint64_t back = (uint32_t)((uint32_t)top - tag);
        return done != 0 && back <= top && top - back <= done;
}

/*
 * Retire slot S, whose state the caller already CASed to THR_TAT_DEAD: meta LIVE -> DEAD with the
 * grace period TAG it must wait for (in place of the hash tag). The caller holds the shard lock,
 * so the decrements cannot race a repair's recount; only the winner of the meta CAS uncounts.
 * TB NULL: the caller gives the table-wide units back itself, several at once (shm_table_uncount:
 * the daemon's pass, once per segment, so that the table's one shared count line is not written
 * by the daemon at every eviction while every inserter of every shard takes units from it; it was
 * measured bouncing between the two: bench/results/2026-12-04/issue12_churn.txt).
 */
void shm_table_uncount(struct thr_table *tb, uint64_t n)
{
        uint64_t v = atomic_load_explicit(&tb->live, memory_order_relaxed);
        while (n &&
               !atomic_compare_exchange_weak_explicit(&tb->live, &v, v > n ? v - n : 0,
                                                      memory_order_relaxed, memory_order_relaxed))
                ;
}

bool shm_slot_retire(struct thr_table *tb, struct thr_shard *sh, struct thr_slot *s, uint32_t tag)
{
        uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
        while (THR_META_STATUS(meta) == THR_SLOT_LIVE) {
                uint64_t dead = THR_META_MAKE(THR_SLOT_DEAD, THR_META_GEN(meta), tag);
                if (atomic_compare_exchange_weak_explicit(
                        &s->meta, &meta, dead, memory_order_acq_rel, memory_order_acquire)) {
                        THR_HOOK(THR_HOOK_RETIRE_COUNTED, s);
                        count_drop_locked(&sh->live);
                        if (tb)
                                count_drop(&tb->live);
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

/* Keys idle past the TTL that an insert retires on its own probe path (expire_inline). */
#define EXPIRE_MAX 2u

struct found {
        struct thr_slot *key;   /* the key's live slot */
        struct thr_slot *place; /* where it would go: the first reclaimed or EMPTY slot */
        uint32_t dist;          /* PLACE's distance from the home */
        uint32_t nidle;         /* idle keys met on the way (at most EXPIRE_MAX) */
        struct thr_slot *idle[EXPIRE_MAX];
        uint64_t idle_state[EXPIRE_MAX];
};

/*
 * Inline expiry: the TTL in units for an insert to retire the idle keys its probe walks over, as
 * the daemon's pass would (reclaim.c evict_idle); 0 for none. GCRA keys only, not serialized:
 * their idleness is the TAT alone. A window's needs its log, a breaker's its calls out (a call
 * reported after its key went would lose its failure), semaphores and budgets their serving:
 * those stay the daemon's. The client passes a private copy of its record (op_insert), but P may
 * be in the arena for another caller, which any client can rewrite: each field is read once
 * here, and the test (gcra_idle) uses these copies only, so a record rewritten meanwhile can
 * never send it down another kind's path.
 */
#define ONCE(x) (*(const volatile __typeof__(x) *)&(x))

static uint64_t expire_ttl(const struct thr_params *p)
{
        if (!p)
                return 0;
        uint32_t kind = ONCE(p->kind), flags = ONCE(p->flags);
        uint64_t ttl = ONCE(p->idle_ttl_ns), k = ONCE(p->k);
        if (kind != THR_KIND_GCRA || (flags & THR_PARAM_SERIALIZE) || !ttl || !k ||
            ttl > UINT64_MAX / k)
                return 0;
        return ttl * k;
}

/* A GCRA key's state STATE at NOW: idle for TTL (units; the daemon's test, shm_kind_idle). */
static inline bool gcra_idle(uint64_t state, uint64_t now, uint64_t ttl)
{
        if (state == THR_TAT_DEAD || state == THR_TAT_FREE || shm_is_mark(state))
                return false;
        return state == THR_TAT_FRESH || (now >= ttl && state <= now - ttl);
}

/*
 * Under the lock (a reach changes only under it, so every live key of this home lies within the
 * home's reach): probe the reach for the key; if it is absent, note the first slot it could take,
 * a reclaimed one (DEAD, state FREE) or an EMPTY one, going past the reach if need be. Every slot
 * between the home and that place is LIVE, BUSY or DEAD and retiring: the new key's path crosses
 * no EMPTY slot, so a lookup may still stop at the first EMPTY it meets.
 */
static void probe_locked(void *base, struct thr_table *tb, struct shm_probe *p, const void *key,
                         uint32_t len, const struct shm_insert *a, uint64_t ttl, struct found *f)
{
        *f = (struct found){0};
        uint32_t steps = shm_probe_steps(p);
        /* Retired slots whose grace period is known complete are taken as reclaimed ones, without
         * waiting for the daemon's pass to mark them FREE: its scan stored gp_done (release) after
         * it saw every reader that could hold them leave (acquire, reclaim.c), and this acquire
         * load pairs with that store. */
        const struct thr_hdr *h = base;
        uint64_t done = atomic_load_explicit(&h->gp_done, memory_order_acquire);
        /* no place anywhere in the shard as of this gp_done (the hint above): probe the reach only
         */
        uint64_t hint = atomic_load_explicit(&p->shard->no_place, memory_order_relaxed);
        bool none = hint != 0 && hint == done + 1; /* 0 is no hint, whatever gp_done says */
        uint32_t i = p->home;
        for (uint32_t step = 0; step < p->n; step++) {
                struct thr_slot *s = &p->slots[i];
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
                unsigned st = THR_META_STATUS(meta);
                if (st == THR_SLOT_EMPTY) { /* nothing lies beyond it */
                        if (!f->place) {
                                f->place = s;
                                f->dist = step;
                        }
                        return;
                }
                if (step < steps && shm_slot_matches(s, meta, p->tag, key, len)) {
                        if (atomic_load_explicit(&s->state, memory_order_acquire) != THR_TAT_DEAD) {
                                f->key = s;
                                return;
                        }
                        shm_slot_retire(tb, p->shard, s, retire_tag(base, 1));
                } else if (ttl && st == THR_SLOT_LIVE && f->nidle < EXPIRE_MAX) {
                        uint64_t state = atomic_load_explicit(&s->state, memory_order_acquire);
                        if (gcra_idle(state, a->now, ttl)) {
                                f->idle[f->nidle] = s;
                                f->idle_state[f->nidle++] = state;
                        }
                }
                if (!f->place && st == THR_SLOT_DEAD) {
                        uint64_t state = atomic_load_explicit(&s->state, memory_order_acquire);
                        if (state == THR_TAT_FREE ||
                            (state == THR_TAT_DEAD &&
                             shm_tag_done(
                                 THR_META_TAG(meta), done,
                                 /* read after the meta word with the tag */
                                 atomic_load_explicit(&h->grace_periods, memory_order_acquire)))) {
                                f->place = s;
                                f->dist = step;
                        }
                }
                if ((f->place || none) && step + 1 >= steps)
                        return; /* the home's reach is probed, and a place found (or none is) */
                if (++i == p->n)
                        i = 0;
        }
        if (!f->place) /* the whole shard, and no place: say so to the next inserts */
                atomic_store_explicit(&p->shard->no_place, done + 1, memory_order_relaxed);
}

static void insert_publish(struct shm_probe *p, const struct found *f, const void *key,
                           uint32_t len, uint64_t start)
{
        struct thr_slot *s = f->place;
        /* a retired slot whose period is done (probe_locked): made FREE here by the CAS the
         * daemon's reclaim would make (it makes it under this lock too, so only one of them
         * counts it) */
        uint64_t dead = THR_TAT_DEAD;
        if (atomic_compare_exchange_strong_explicit(&s->state, &dead, THR_TAT_FREE,
                                                    memory_order_acq_rel, memory_order_relaxed))
                atomic_fetch_add_explicit(&p->shard->reclaimed, 1, memory_order_relaxed);
        /* the home's reach covers the new key before the key is published (the release below
         * orders it first: table_lookup.h); raised only, and only under the lock */
        _Atomic uint8_t *reach = &p->slots[p->home].reach;
        uint32_t r = atomic_load_explicit(reach, memory_order_relaxed);
        if (r != THR_REACH_ANY && f->dist > r)
                atomic_store_explicit(reach,
                                      (uint8_t)(f->dist >= THR_REACH_ANY ? THR_REACH_ANY : f->dist),
                                      memory_order_relaxed);
        THR_HOOK(THR_HOOK_REACH_RAISED, s);
        uint64_t meta = atomic_load_explicit(&s->meta, memory_order_relaxed);
        uint32_t gen = THR_META_GEN(meta) + 1;
        atomic_store_explicit(&s->meta, THR_META_MAKE(THR_SLOT_BUSY, gen, p->tag),
                              memory_order_relaxed);
        s->key_len = (uint8_t)len;
        memcpy(s->key, key, shm_key_stored_len(len)); /* KEY is the stored form (keydigest.h) */
        atomic_store_explicit(&s->state, start, memory_order_relaxed);
        /* Pairs with the acquire load of meta in shm_table_lookup / probe_locked. */
        atomic_store_explicit(&s->meta, THR_META_MAKE(THR_SLOT_LIVE, gen, p->tag),
                              memory_order_release);
        count_add_locked(&p->shard->live);
        count_add_locked(&p->shard->inserts);
}

/*
 * Take one unit of the table's capacity before claiming a slot: a fetch_add, so concurrent
 * inserts in different shards can never together pass the hard cap. A process killed between this
 * and its publish leaves tb->live one too high (a capacity unit lost, never an extra key); the
 * daemon recounts with shm_table_reconcile.
 */
static bool capacity_take(struct thr_table *tb, uint64_t capacity)
{
        if (atomic_fetch_add_explicit(&tb->live, 1, memory_order_relaxed) < capacity)
                return true;
        count_drop(&tb->live);
        return false;
}

/*
 * on_full = evict, under the lock: retire a live key of the shard and raise the shard's floor to
 * what it held. The victim: the first key with no debt (what its kind says its hold on the future
 * is) met from the shard's eviction cursor on, else the key with the least debt (the first met on
 * ties); the cursor then moves past it. Starting where the last search stopped, rather than at the
 * shard's first slot, keeps the search short while idle keys exist: it does not walk again over
 * the indebted keys the previous searches passed (it did, and a new key under churn cost a walk
 * of most of its shard). The state CAS loses to a concurrent admission; then the next candidate is
 * tried, a few times at most.
 */
static bool evict_least(void *base, struct thr_table *tb, const struct thr_table *geo,
                        struct shm_probe *p, const struct thr_params *kp, uint64_t now)
{
        for (int attempt = 0; attempt < 4; attempt++) {
                struct thr_slot *best = NULL;
                uint64_t best_state = 0, best_debt = UINT64_MAX;
                uint32_t best_i = 0;
                /* any value a client wrote is brought into range */
                uint32_t i =
                    (uint32_t)(atomic_load_explicit(&p->shard->evict_next, memory_order_relaxed) %
                               p->n);
                for (uint32_t step = 0; step < p->n && best_debt;
                     step++, i = i + 1 == p->n ? 0 : i + 1) {
                        struct thr_slot *s = &p->slots[i];
                        if (THR_META_STATUS(atomic_load_explicit(&s->meta, memory_order_acquire)) !=
                            THR_SLOT_LIVE)
                                continue;
                        uint64_t state = atomic_load_explicit(&s->state, memory_order_acquire);
                        if (state == THR_TAT_DEAD || state == THR_TAT_FREE)
                                continue;
                        uint64_t d = shm_kind_debt(kp, shm_slot_aux(base, geo, s), state, now);
                        if (d < best_debt) { /* UINT64_MAX (pinned) is never chosen */
                                best = s;
                                best_state = state;
                                best_debt = d;
                                best_i = i;
                        }
                }
                if (!best)
                        return false;
                atomic_store_explicit(&p->shard->evict_next, best_i + 1 == p->n ? 0 : best_i + 1,
                                      memory_order_relaxed);
                /* the floor first: killed after the CAS, we must not have lost the debt (the
                 * next inserter only finishes the retirement, it cannot know the state); if the
                 * CAS then fails, the floor is merely higher than it had to be (over-denial only)
                 */
                uint64_t floor = shm_kind_floor_of(kp, shm_slot_aux(base, geo, best), best_state);
                if (floor > atomic_load_explicit(&p->shard->floor_units, memory_order_relaxed))
                        atomic_store_explicit(&p->shard->floor_units, floor, memory_order_relaxed);
                if (!atomic_compare_exchange_strong_explicit(&best->state, &best_state,
                                                             THR_TAT_DEAD, memory_order_acq_rel,
                                                             memory_order_relaxed))
                        continue;
                THR_HOOK(THR_HOOK_EVICTED_FOR_ROOM, best);
                if (shm_slot_retire(tb, p->shard, best, retire_tag(base, 0)))
                        atomic_fetch_add_explicit(&p->shard->evicted_full, 1, memory_order_relaxed);
                return true;
        }
        return false;
}

/*
 * Under the lock, for a new key: retire the idle keys its probe met (at most EXPIRE_MAX), each by
 * a CAS from the state the probe read (an admission since wins and the key stays), as the
 * daemon's pass would have at its next visit. An idle key holds no debt, so the shard's floor is
 * not raised. Their slots wait for a grace period like any other: this only evicts a key where
 * the inserts are, as soon as it is due, without the daemon's sweep coming by (under churn the
 * sweep lagged the TTL and inserts found no place: bench/results/2026-12-04/issue12_churn.txt),
 * and in the inserter's cache, where the probe had just brought the slots. (Handing an expired
 * key's unit of the table's capacity straight to the new key, instead of giving it back and taking
 * one, was measured: no difference in throughput, and a death in between held the units back.)
 */
static void expire_inline(void *base, struct thr_table *tb, struct shm_probe *p, struct found *f)
{
        for (uint32_t i = 0; i < f->nidle; i++) {
                uint64_t state = f->idle_state[i];
                THR_HOOK(THR_HOOK_EXPIRING_INLINE, f->idle[i]);
                if (!atomic_compare_exchange_strong_explicit(&f->idle[i]->state, &state,
                                                             THR_TAT_DEAD, memory_order_acq_rel,
                                                             memory_order_relaxed))
                        continue;
                THR_HOOK(THR_HOOK_EXPIRED_INLINE, f->idle[i]);
                if (shm_slot_retire(tb, p->shard, f->idle[i], retire_tag(base, 0)))
                        atomic_fetch_add_explicit(&p->shard->evicted, 1, memory_order_relaxed);
        }
}

/* Under the lock, no live slot for the key: claim one within the caps, or -ENOSPC. */
static struct thr_slot *claim(struct thr_table *tb, const struct thr_table *geo,
                              struct shm_probe *p, const struct found *f)
{
        struct thr_slot *s = f->place;
        if (!s || atomic_load_explicit(&p->shard->live, memory_order_relaxed) >= geo->shard_max ||
            !capacity_take(tb, geo->capacity))
                return NULL;
        return s;
}

int shm_table_insert_locked(void *base, struct thr_table *tb, struct shm_probe *p, const void *key,
                            uint32_t len, const struct shm_insert *a, struct thr_slot **out,
                            bool *created)
{
        const struct thr_table *geo = a->geo ? a->geo : tb;
        struct found f;
        *created = false;
        probe_locked(base, tb, p, key, len, a, expire_ttl(a->p), &f);
        if (f.key) {
                *out = f.key;
                return 0;
        }
        expire_inline(base, tb, p, &f);
        struct thr_slot *s = claim(tb, geo, p, &f);
        if (!s && a->on_full == THR_FULL_EVICT && f.place &&
            evict_least(base, tb, geo, p, a->p, a->now))
                s = claim(tb, geo, p, &f); /* the victim freed capacity; its slot is retiring */
        if (!s) {
                atomic_fetch_add_explicit(&tb->insert_fail, 1, memory_order_relaxed);
                return -ENOSPC;
        }
        /* a key evicted for room may come back: never below what it held (kind.c) */
        uint64_t floor = atomic_load_explicit(&p->shard->floor_units, memory_order_relaxed);
        uint64_t start =
            shm_kind_fresh(a->p, shm_slot_aux(base, geo, s), a->start_tat, a->now, floor);
        if (a->first)
                start = a->first(a->ctx, s, start);
        insert_publish(p, &f, key, len, start);
        *out = s;
        *created = true;
        return 0;
}

int shm_table_insert(const struct shm_map *m, struct thr_table *tb, uint64_t h, const void *key,
                     uint32_t len, uint64_t me, struct thr_slot **out, bool *created)
{
        struct shm_probe p;
        shm_probe_init(m->base, tb, h, &p);
        *created = false;
        int rc = shm_shard_lock(m, &p, me, THR_LOCK_WAIT_NS);
        if (rc < 0)
                return rc;
        const struct shm_insert a = {.start_tat = THR_TAT_FRESH, .now = 0};
        rc = shm_table_insert_locked(m->base, tb, &p, key, len, &a, out, created);
        shm_shard_unlock(&p, me);
        return rc;
}

/*
 * The table's live count as the sum of its shards', each exact under its lock. With every lock
 * held (taken in index order, only tried), no insert or eviction is in flight anywhere in the
 * table, so the sum is the number of live keys. The locks are held for NSHARDS loads: a reconciler
 * stopped there costs inserters their bounded wait, nothing more.
 */
int shm_table_reconcile(const struct shm_map *m, uint64_t tb_off, const struct thr_table *geo,
                        uint64_t me)
{
        struct thr_table *tb = shm_at(m->base, tb_off);
        struct thr_shard *sh = shm_at(m->base, geo->shards_off);
        struct shm_probe p = {.n = geo->shard_slots};
        uint64_t sum = 0;
        uint32_t locked = 0;
        int rc = 0;
        for (; locked < geo->nshards; locked++) {
                p.shard = &sh[locked];
                p.slots =
                    (struct thr_slot *)shm_at(m->base, geo->slots_off) + (uint64_t)locked * p.n;
                rc = shm_shard_trylock(m, &p, me);
                if (rc < 0)
                        break;
                sum += atomic_load_explicit(&p.shard->live, memory_order_relaxed);
        }
        if (rc == 0)
                atomic_store_explicit(&tb->live, sum, memory_order_relaxed);
        for (uint32_t i = 0; i < locked; i++) {
                p.shard = &sh[i];
                shm_shard_unlock(&p, me);
        }
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

/*
 * reclaim.c - the arena's own RCU across processes: grace periods over the reader records, dead
 * readers forced offline, and the table maintenance that evicts idle keys and reuses their slots.
 * Daemon side only (the client's half is in libclient/client_internal.h and reader.c).
 *
 * Why no reader ever applies an acquisition for one key to a slot reused for another:
 *
 *   reader (client thread)                      daemon
 *   ----------------------                      ------
 *   s = load_acquire(grace_periods)             CAS state TAT -> DEAD           (evict)
 *   store(online, s + 1)                        tag = load(grace_periods) + 1
 *   [compiler barrier only]                     CAS meta LIVE -> DEAD|tag       (retire)
 *   lookup: meta, key, state; CAS state         ...
 *   store_release(online, 0)                    g = fetch_add(grace_periods) + 1    (g >= tag)
 *                                               membarrier()                        (M)
 *                                               for each reader: o = load(online)
 *                                               done = min(g, o - 1 of blockers)
 *                                               tag <= done and meta unchanged:
 *                                                 CAS state DEAD -> FREE (reusable)
 *
 * A slot is reused only after a scan found no reader that might still hold it. Take a reader
 * section that could hold the slot: its lookup saw meta LIVE or its state load saw a TAT, so
 * those loads did not observe the eviction. membarrier() (M) runs a full barrier on every CPU
 * running a thread of a registered process (or, in the fallback, on every CPU), so each reader
 * thread is at a point P of its program that is ordered with the daemon's call. If the reader's
 * online store came before P, the scan after M sees it, with a snapshot s: either s < tag (it
 * blocks this and every later tag until it leaves) or s >= tag, and then its acquire load of the
 * counter read a value stored after the eviction, so its later loads see DEAD - a contradiction.
 * If the online store came after P, all the section's loads come after P too and see the
 * eviction (done before M in the daemon's program order) - a contradiction again. So a section
 * that might hold the slot is seen online with s < tag, and the slot waits. The reader pays a
 * load, a store and a compiler barrier; the daemon pays the membarrier, once per scan.
 *
 * The grace period is the only thing that keeps a stale CAS off a reused slot: a CAS compares the
 * state word alone, and a new key's TAT can equal the value a reader loaded for the old one. So
 * the client also compares the slot's meta word (status, generation) with what its lookup matched,
 * after loading the state and after every failed CAS (client.c): a slot retired or reused under it
 * sends it back to the lookup instead of deciding on another key's state. That narrows what a
 * broken grace period could do to the few instructions between the check and the CAS.
 *
 * Tags are 32 bits of a 64-bit period and are widened, never compared modulo 2^32
 * (shm_tag_done), and a daemon reuses nothing before its own first scan completes: a restarted
 * daemon, or one whose counter passed 2^31, frees no slot early (it did: done = 0 against a tag in
 * [2^31, 2^32) read as done).
 *
 * The fallback flag. A client that could not register for the expedited membarrier sets
 * mb_fallback, then a full fence, before any section; the daemon fences between its increment of
 * the counter and its load of the flag. So either it sees the flag (and uses the global
 * membarrier), or the client's sections start after the increment and see the eviction. Where the
 * global membarrier is refused too (nohz_full CPUs answer EINVAL), no grace period completes:
 * nothing is reclaimed, and gp_error in the header says so (shmctl status, the daemon's log).
 *
 * Dead readers. Record I is held by its owner's open-file-description write lock on byte
 * THR_LOCK_READERS + I, taken before the owner word is claimed and dropped after it is cleared.
 * The kernel drops the lock when the owning process's last descriptor of that file description
 * closes, that is when it dies, whatever pid namespace it is in and whatever pid is reused. The
 * daemon tries the same lock: if it gets it while the owner word is set, the owner is gone; it
 * clears online (unblocking grace periods) and then the owner word by CAS from the token it saw,
 * and only then releases the lock, so no new owner can claim the record in between. A child made
 * by _Fork() or a raw clone runs no fork handler and keeps its parent's descriptor, so the lock
 * can outlive its owner: a lock held elsewhere is then judged by the pid in the record (readers.c)
 * and a record whose owner has exited is forced offline and freed without the lock; it is claimed
 * again only once that child lets the lock go (nobody can take it meanwhile).
 *
 * Stalled readers (stopped, traced): online with an old snapshot and alive. They block reuse:
 * retired slots stay retiring, inserts fall back on the limiter's on_full policy, and the daemon
 * reports the reader once it has blocked for stall_ns. It never frees early.
 *
 * Maintenance. Reclaiming (DEAD -> FREE: inserters take retired slots too, see reclaim()),
 * evicting, repairing and trimming happen under the shard's insert lock (shardlock.c: a CAS word,
 * never a pthread mutex, so nothing here writes through a pointer read from the arena), tried and
 * never waited for, and held for one bounded segment at a time.
 *
 * The arena is untrusted: every count and offset used here comes from the checked private
 * geometry (struct shm_geom, struct shm_lim_snap), and a garbage state or meta word only makes
 * this code evict, skip or reclaim a slot of the table it was given, never reach outside it. No
 * loop is bounded by a value read from the arena, and trimming is linear in the shard whatever
 * the keys (a rewritten key cannot make it quadratic).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kind.h"
#include "shm.h"
#include "testhook.h"

/*
 * The owner of record R (owner word OWNER) is known to be gone: force the record offline and free
 * it. Whoever can claim the record must first see owner 0, which only this CAS stores, so the
 * stores before it cannot land on a new owner's record. Returns 1 forced, 0 changed meanwhile.
 */
static int force_free(struct shm_map *m, struct thr_reader *r, uint64_t owner)
{
        if (atomic_load_explicit(&r->owner, memory_order_acquire) != owner)
                return 0;
        /* a composed call it left half-way: settled before the record can be reused, so that
         * its marks always name a call of its journal (compose.h) */
        shm_journal_settle(m,
                           (uint32_t)(r - (struct thr_reader *)shm_at(m->base, m->g.reader_off)));
        atomic_store_explicit(&r->online, 0, memory_order_release);
        atomic_store_explicit(&r->pid, 0, memory_order_relaxed); /* never judge a new owner by it */
        atomic_store_explicit(&r->tid, 0, memory_order_relaxed);
        /* a dead waiter's place (serial.h): a free record never carries one, or a granter could
         * take the record's next owner, between its claim and its first call, for that waiter */
        atomic_store_explicit(
            &r->wait_state,
            THR_WAIT_AS(atomic_load_explicit(&r->wait_state, memory_order_relaxed), THR_WAIT_NONE),
            memory_order_relaxed);
        atomic_store_explicit(&r->wait_slot, 0, memory_order_relaxed);
        atomic_store_explicit(&r->peer_expires, 0, memory_order_relaxed); /* peer.h */
        if (!atomic_compare_exchange_strong_explicit(&r->owner, &owner, 0, memory_order_acq_rel,
                                                     memory_order_relaxed))
                return 0;
        atomic_store_explicit(&r->forced_token, owner, memory_order_relaxed);
        atomic_store_explicit(&r->blocking_ns, 0, memory_order_relaxed);
        atomic_store_explicit(&r->stalled, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&shm_hdr(m)->readers_forced, 1, memory_order_relaxed);
        return 1;
}

/*
 * Whether reader IDX (owner word OWNER) belongs to a dead process; if so, force it offline and
 * free it. The liveness lock taken here keeps a new owner out until the record is free. A lock
 * held elsewhere is the owner's, or a copy of its descriptor in a child made by _Fork: then the
 * owner's pid decides (readers.c), and the record is freed without the lock (it becomes claimable
 * when that copy goes). Returns 1 forced, 0 alive (or changed meanwhile), -errno.
 */
static int reap_one(struct shm_map *m, struct thr_reader *r, uint32_t idx, uint64_t owner)
{
        int rc = shm_reader_lock(m->fd, idx);
        if (rc == -EAGAIN)
                return shm_pid_gone(atomic_load_explicit(&r->pid, memory_order_relaxed)) == 1
                           ? force_free(m, r, owner)
                           : 0;
        if (rc < 0)
                return rc;
        int forced = force_free(m, r, owner);
        shm_reader_unlock(m->fd, idx);
        return forced;
}

int shm_readers_reap(struct shm_map *m)
{
        struct thr_reader *rec = shm_at(m->base, m->g.reader_off);
        int forced = 0;
        for (uint32_t i = 0; i < m->g.reader_count; i++) {
                uint64_t owner = atomic_load_explicit(&rec[i].owner, memory_order_acquire);
                if (owner && reap_one(m, &rec[i], i, owner) == 1)
                        forced++;
        }
        return forced;
}

/* ---------------------------------------------------------------- grace periods */

static long membarrier(int cmd)
{
        return syscall(__NR_membarrier, cmd, 0, 0);
}

int shm_gp_start(struct shm_map *m, uint64_t *gp)
{
        struct thr_hdr *h = shm_hdr(m);
        /* seq_cst: ordered after this thread's evictions, before the membarrier and the scan */
        *gp = atomic_fetch_add_explicit(&h->grace_periods, 1, memory_order_seq_cst) + 1;
        /* pairs with the fence after a client sets mb_fallback (readers.c) */
        atomic_thread_fence(memory_order_seq_cst);
        int cmd = atomic_load_explicit(&h->mb_fallback, memory_order_relaxed)
                      ? MEMBARRIER_CMD_GLOBAL
                      : MEMBARRIER_CMD_GLOBAL_EXPEDITED;
        int rc = 0;
        if (membarrier(cmd) < 0 &&
            (cmd != MEMBARRIER_CMD_GLOBAL_EXPEDITED || membarrier(MEMBARRIER_CMD_GLOBAL) < 0))
                rc = -errno;
        /* visible to shmctl: a kernel without the global membarrier (nohz_full CPUs answer EINVAL)
         * and a client that could not register expedited mean nothing is ever reclaimed */
        atomic_store_explicit(&h->gp_error, (uint32_t)-rc, memory_order_relaxed);
        return rc;
}

int shm_membarrier_query(void)
{
        long mask = membarrier(MEMBARRIER_CMD_QUERY);
        return mask < 0 ? -errno : (int)mask;
}

int shm_gp_scan(struct shm_map *m, uint64_t gp, uint64_t now_ns, uint64_t stall_ns,
                struct shm_gp_result *res, shm_gp_report_fn report, void *ctx)
{
        struct thr_reader *rec = shm_at(m->base, m->g.reader_off);
        *res = (struct shm_gp_result){.done = gp};
        for (uint32_t i = 0; i < m->g.reader_count; i++) {
                struct thr_reader *r = &rec[i];
                uint64_t owner = atomic_load_explicit(&r->owner, memory_order_acquire);
                if (!owner)
                        continue;
                res->readers++;
                uint64_t on = atomic_load_explicit(&r->online, memory_order_acquire);
                if (on == 0 || on - 1 >= gp) {
                        atomic_store_explicit(&r->gp_seen, gp, memory_order_relaxed);
                        atomic_store_explicit(&r->blocking_ns, 0, memory_order_relaxed);
                        if (atomic_exchange_explicit(&r->stalled, 0, memory_order_relaxed) &&
                            report)
                                report(ctx, i, r, SHM_GP_RESUMED);
                        continue;
                }
                int rc = reap_one(m, r, i, owner);
                if (rc == 1) {
                        res->forced++;
                        if (report)
                                report(ctx, i, r, SHM_GP_FORCED);
                        continue;
                }
                if (rc < 0)
                        return rc;
                res->blocking++;
                if (on - 1 < res->done)
                        res->done = on - 1;
                uint64_t since = atomic_load_explicit(&r->blocking_ns, memory_order_relaxed);
                if (since == 0)
                        atomic_store_explicit(&r->blocking_ns, now_ns ? now_ns : 1,
                                              memory_order_relaxed);
                else if (now_ns - since >= stall_ns) {
                        res->stalled++;
                        if (!atomic_exchange_explicit(&r->stalled, 1, memory_order_relaxed) &&
                            report)
                                report(ctx, i, r, SHM_GP_STALLED);
                }
        }
        /* release: an inserter that reads it reuses slots of this period (table.c probe_locked);
         * pairs with its acquire load, after this scan's acquire loads of every record's online
         * word */
        atomic_store_explicit(&shm_hdr(m)->gp_done, res->done, memory_order_release);
        return 0;
}

void shm_gp_pending_note(struct shm_gp_pending *pd, uint64_t gp, uint64_t done)
{
        if (done >= gp)
                pd->gp = 0;
        else if (pd->gp != gp) /* the first scan of GP */
                *pd = (struct shm_gp_pending){.gp = gp, .retry_ms = 1};
        else if (pd->retry_ms < 1000)
                pd->retry_ms *= 2;
}

/* ---------------------------------------------------------------- table maintenance */

/* What a pass knows beyond its arguments: the limiter's checked record and table geometry. */
struct pass {
        const struct shm_map *m;
        const struct shm_maint_args *a;
        const struct thr_params *p; /* checked copy (the snapshot's) */
        const struct thr_table *geo;
        void *base;
};

/* Whether the LIVE key in S with state STATE has held nothing for the TTL (its kind decides). */
static bool idle(const struct pass *ps, const struct thr_slot *s, uint64_t state)
{
        const struct shm_maint_args *a = ps->a;
        if (!a->ttl_units || state == THR_TAT_FREE || state == THR_TAT_DEAD)
                return false;
        return shm_kind_idle(ps->p, shm_slot_aux(ps->base, ps->geo, s), state, a->now_units,
                             a->ttl_units);
}

/*
 * A serialized key, shard lock held: if its holder is dead, or nobody holds it and waiters are
 * queued, serve it (serial.h): the waiters' own checks would do it too, but a key whose holder
 * died with nobody waiting would stay pinned (never idle) until its next begin.
 */
static void serve_orphan(const struct pass *ps, struct thr_slot *s)
{
        struct thr_serial *h = shm_serial(shm_slot_aux(ps->base, ps->geo, s));
        uint64_t tok = atomic_load_explicit(&h->hold_token, memory_order_acquire);
        uint32_t idx = atomic_load_explicit(&h->hold_idx, memory_order_relaxed);
        if (tok && idx < ps->m->g.reader_count) {
                struct thr_reader *r =
                    (struct thr_reader *)shm_at(ps->base, ps->m->g.reader_off) + idx;
                if (atomic_load_explicit(&r->owner, memory_order_acquire) == tok &&
                    shm_reader_gone(ps->m->fd, r, idx) == 0)
                        return; /* held by a live holder */
        } else if (!tok && !atomic_load_explicit(&h->waiters, memory_order_relaxed)) {
                return;
        }
        struct shm_serve sv;
        /* the time now, under the lock: the pass's clock reading may predate a grant */
        shm_serial_serve(ps->m, ps->geo, ps->p, s, shm_now_ns(shm_hdr(ps->m)), &sv);
}

/*
 * A semaphore key, shard lock held: reclaim its expired leases and those whose holder process is
 * gone (its lease record freed by the reader pass: the owner word, no syscall), and grant the
 * waiters that then fit. Waiters check themselves too; this is for keys nobody is waiting on,
 * whose dead holders would otherwise keep them pinned, and for shmctl's view.
 */
static void sem_reap(const struct pass *ps, struct thr_slot *s)
{
        void *aux = shm_slot_aux(ps->base, ps->geo, s);
        if (!shm_sem_pinned(ps->p, aux))
                return;
        struct shm_sem_serve sv;
        shm_sem_serve(ps->m, ps->p, s, aux, shm_now_ns(shm_hdr(ps->m)),
                      SHM_SEM_OWNERS | SHM_SEM_WAKE_HEAD, UINT32_MAX, &sv);
}

/*
 * A budget key, shard lock held: a grant a killed lock holder left half-done is completed or
 * undone, dead waiters are dropped, the flag of a key nobody waits on any more is cleared (tries
 * are refused while it is set), and the waiters that fit are granted (budget.h).
 */
static void budget_reap(const struct pass *ps, struct thr_slot *s, uint64_t state)
{
        void *aux = shm_slot_aux(ps->base, ps->geo, s);
        if (!shm_budget_queued(state) &&
            !atomic_load_explicit(&shm_budget(aux)->j_idx, memory_order_acquire))
                return;
        struct shm_budget_serve sv;
        shm_budget_serve(ps->m, ps->p, s, aux, &sv);
}

/* Slot S is LIVE with state TAT, shard lock held: evict it if idle past the TTL (no debt). */
static void evict_idle(const struct pass *ps, struct thr_shard *sh, struct thr_slot *s,
                       uint64_t tat, struct shm_maint_stats *st)
{
        const struct shm_maint_args *a = ps->a;
        if (tat == THR_TAT_DEAD) { /* an evictor died between its two steps */
                if (shm_slot_retire(NULL, sh, s, a->tag)) { /* TB's unit: segment_locked */
                        st->finished++;
                        atomic_fetch_add_explicit(&sh->evicted, 1, memory_order_relaxed);
                }
                return;
        }
        if (ps->p->flags & THR_PARAM_SERIALIZE)
                serve_orphan(ps, s);
        if (ps->p->kind == THR_KIND_SEMAPHORE)
                sem_reap(ps, s);
        if (ps->p->kind == THR_KIND_BUDGET) {
                budget_reap(ps, s, tat);
                tat = atomic_load_explicit(&s->state, memory_order_acquire);
        }
        if (!idle(ps, s, tat))
                return;
        /* from the state observed: an admission since then makes this fail, and the key stays */
        if (!atomic_compare_exchange_strong_explicit(&s->state, &tat, THR_TAT_DEAD,
                                                     memory_order_acq_rel, memory_order_relaxed))
                return;
        if (shm_slot_retire(NULL, sh, s, a->tag)) { /* TB's unit: segment_locked */
                st->evicted++;
                atomic_fetch_add_explicit(&sh->evicted, 1, memory_order_relaxed);
        }
}

/* Slot S read as META (DEAD) then STATE: whether it is retiring and its grace period is done. */
static bool reclaim_due(const struct thr_hdr *h, uint64_t meta, uint64_t state, uint64_t done)
{
        if (state != THR_TAT_DEAD)
                return false; /* FREE already, or reused under us: not ours to judge */
        uint64_t counter = atomic_load_explicit(&h->grace_periods, memory_order_acquire);
        return shm_tag_done(THR_META_TAG(meta), done, counter);
}

/*
 * Under the shard lock: slot S read as META (DEAD) then STATE, made reusable if its grace period
 * is done. Only a state of DEAD is freed, only if meta still reads as META (the generation bumped
 * at every reuse makes a changed slot differ), and by a CAS from DEAD. The lock is what makes the
 * CAS safe: an inserter takes a DEAD slot whose period the header's gp_done covers (table.c), and
 * on_full = evict may retire the new key at once, leaving the state DEAD again under a new tag.
 * Lock-free, that reuse and retirement could fall between the meta check and the CAS, and the CAS
 * then freed the new retirement before its grace period (it did). Inserts and evictions by clients
 * happen under this lock only, so with it held a slot DEAD in both words changes under nobody.
 */
static bool reclaim(const struct thr_hdr *h, struct shm_probe *p, struct thr_slot *s, uint64_t meta,
                    uint64_t state, uint64_t done, struct shm_maint_stats *st)
{
        if (!reclaim_due(h, meta, state, done))
                return false;
        if (atomic_load_explicit(&s->meta, memory_order_acquire) != meta)
                return false;
        THR_HOOK(THR_HOOK_RECLAIM_CHECKED, &s->meta);
        if (!atomic_compare_exchange_strong_explicit(&s->state, &state, THR_TAT_FREE,
                                                     memory_order_acq_rel, memory_order_relaxed))
                return false;
        atomic_fetch_add_explicit(&p->shard->reclaimed, 1, memory_order_relaxed);
        st->reclaimed++;
        return true;
}

/* A segment of a shard, processed under its lock: [start, start + len) modulo the shard size. */
struct segment {
        uint32_t start, len;
        bool anchored; /* slot start is EMPTY: no probe path enters from before it */
        bool end_open; /* the slot after it is not EMPTY: its last run goes on past it */
};

/*
 * Under the lock: make EMPTY every reclaimed slot of SEG that no live key's probe path crosses. A
 * live key in slot j with home h is found by walking h, h+1, ..., j: those slots must stay
 * non-EMPTY, and no others need to (a lookup of an absent key may stop sooner; inserts are held
 * off by the lock). An anchored segment starts at an EMPTY slot, which no path crosses, so the
 * homes of its keys lie inside it; if the slot after it is not EMPTY, its last run may hold the
 * path of a key beyond it, so that run is left alone. An unanchored segment is the whole shard
 * (no EMPTY slot at all: paths may wrap). The home is recomputed from the key's stored form in the
 * slot (the table hash of it, hash.h, with the arena's hash keys copied once for the segment: a
 * long key's digest is part of the stored form, layout.h); a
 * key whose tag, shard or home does not fit (a corrupt or rewritten arena) makes this trim nothing,
 * which is always safe. Work: one hash per live slot and O(len) more: the paths are marked as
 * intervals in a difference array, so a rewritten arena cannot make it quadratic.
 */
static uint64_t trim_segment(const struct thr_hdr *h, struct shm_probe *p, uint32_t shard,
                             uint32_t nshards, const struct segment *seg)
{
        uint64_t hkey[THR_HASH_KEY_WORDS];
        memcpy(hkey, h->hash_key, sizeof(hkey));
        int32_t *diff = calloc((size_t)seg->len + 1, sizeof(*diff));
        uint8_t *far = calloc((size_t)seg->len, 1);
        if (!diff || !far) {
                free(diff);
                free(far);
                return 0;
        }
        uint64_t trimmed = 0;
        uint32_t limit = seg->len; /* slots at or past it are left alone */
        for (uint32_t j = 0; j < seg->len; j++) {
                struct thr_slot *s = &p->slots[(seg->start + j) % p->n];
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
                if (THR_META_STATUS(meta) == THR_SLOT_EMPTY && seg->end_open)
                        limit = j; /* the last run starts after it */
                if (THR_META_STATUS(meta) != THR_SLOT_LIVE)
                        continue;
                uint32_t len = s->key_len;
                if (len == 0 || len > THR_KEY_MAX)
                        goto out;
                uint8_t key[THR_KEY_INLINE]; /* the stored form, all the table hash covers */
                memcpy(key, s->key, shm_key_stored_len(len));
                uint64_t hash = shm_stored_hash(hkey, key, len);
                uint32_t hi = (uint32_t)(hash >> 32);
                if ((uint32_t)hash != THR_META_TAG(meta) || (hi & (nshards - 1)) != shard)
                        goto out;
                uint32_t home = (uint32_t)(((uint64_t)hi * p->n) >> 32);
                uint32_t rel = (home + p->n - seg->start) % p->n;
                uint32_t dist;
                if (rel <= j) {
                        dist = j - rel;
                        diff[rel]++;
                        diff[j]--;
                } else if (!seg->anchored) { /* the path wraps around the shard: len == n */
                        dist = j + seg->len - rel;
                        diff[rel]++;
                        diff[seg->len]--;
                        diff[0]++;
                        diff[j]--;
                } else {
                        /* a path through an EMPTY slot: not a key of this table. Checked before
                         * REL indexes anything: a home outside an anchored segment lies up to a
                         * shard's length past its arrays (it was read and written there) */
                        goto out;
                }
                if (dist > far[rel])
                        far[rel] = (uint8_t)(dist < THR_REACH_ANY ? dist : THR_REACH_ANY);
        }
        int64_t need = 0;
        for (uint32_t j = 0; j < limit; j++) {
                need += diff[j];
                struct thr_slot *s = &p->slots[(seg->start + j) % p->n];
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_relaxed);
                if (need > 0 || THR_META_STATUS(meta) != THR_SLOT_DEAD ||
                    atomic_load_explicit(&s->state, memory_order_relaxed) != THR_TAT_FREE)
                        continue;
                atomic_store_explicit(&s->meta,
                                      THR_META_MAKE(THR_SLOT_EMPTY, THR_META_GEN(meta), 0),
                                      memory_order_release);
                trimmed++;
        }
        /* Each home's reach made exact: the farthest of its live keys, all of which were seen
         * above (a home before LIMIT has its keys before the EMPTY slot there). Lowering it is
         * safe under the lock: no insert is in flight, every live key stays within it. */
        for (uint32_t j = 0; j < limit; j++) {
                _Atomic uint8_t *r = &p->slots[(seg->start + j) % p->n].reach;
                if (atomic_load_explicit(r, memory_order_relaxed) != far[j])
                        atomic_store_explicit(r, far[j], memory_order_relaxed);
        }
out:
        free(diff);
        free(far);
        return trimmed;
}

/* Under the lock: evictions, repairs of BUSY slots (no insert is in flight), then trimming. */
static void segment_locked(const struct pass *ps, const struct thr_hdr *h, struct thr_table *tb,
                           struct shm_probe *p, uint32_t shard, const struct segment *seg,
                           struct shm_maint_stats *st)
{
        bool freeable = false;
        /* the keys evict_idle retires give their table units back at once, below */
        uint64_t retired = st->evicted + st->finished;
        /* reclaims, trims and repairs below make places: the shard's no-place hint goes (table.c)
         */
        atomic_store_explicit(&p->shard->no_place, 0, memory_order_relaxed);
        THR_HOOK(THR_HOOK_MAINT_SEGMENT, p->shard);
        for (uint32_t j = 0; j < seg->len; j++) {
                struct thr_slot *s = &p->slots[(seg->start + j) % p->n];
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
                uint64_t state = atomic_load_explicit(&s->state, memory_order_acquire);
                unsigned status = THR_META_STATUS(meta);
                if (status == THR_SLOT_LIVE) {
                        evict_idle(ps, p->shard, s, state, st);
                } else if (status == THR_SLOT_BUSY) {
                        /* with the lock held no insert is in flight: a leftover nobody repaired */
                        atomic_store_explicit(&s->state, THR_TAT_FREE, memory_order_relaxed);
                        atomic_store_explicit(&s->meta,
                                              THR_META_MAKE(THR_SLOT_DEAD, THR_META_GEN(meta), 0),
                                              memory_order_release);
                        st->repaired++;
                        freeable = true;
                } else if (status == THR_SLOT_DEAD) {
                        freeable |=
                            state == THR_TAT_FREE || reclaim(h, p, s, meta, state, ps->a->done, st);
                }
        }
        /* still under the lock: the table's count is high by these units for the segment's
         * duration only (a unit of capacity held back a few microseconds, never an extra key),
         * and by them until shm_table_reconcile if the daemon dies in between */
        shm_table_uncount(tb, st->evicted + st->finished - retired);
        if (freeable)
                st->trimmed += trim_segment(h, p, shard, ps->geo->nshards, seg);
}

static unsigned status_at(const struct shm_probe *p, uint32_t i)
{
        return THR_META_STATUS(
            atomic_load_explicit(&p->slots[i % p->n].meta, memory_order_acquire));
}

/*
 * The locked part of a shard's maintenance, in segments of about SEGMENT slots, each starting at an
 * EMPTY slot and ending before one, so the lock is held for microseconds at a time however large
 * the shard (a segment of 128 slots of a 2/3-full table: about 1.5 us of evictions and reclaims
 * and, when it trims, 3 us more to hash its live keys; churn at one process measured 128 against
 * 64, 256 and 1024: bench/results/2026-12-05/issue12_handoff.txt). Before each segment an insert
 * that waits for the lock goes first (relock): otherwise it waited for the whole shard, the lock
 * being free for a few instructions at a time. Inserts may then fill an EMPTY slot: each segment
 * finds its start again under the lock. A shard with no EMPTY slot at all (every slot live,
 * retiring or reclaimed: a stalled reader held reclamation back, say) is one segment, as trimming
 * it needs the whole shard: the lock is then held for a time linear in the shard (about 0.5 ms for
 * the 23 000 slots of a shard of a million-key table), and an insert into a larger shard meanwhile
 * may get its on_full outcome.
 */
#define SEGMENT THR_MAINT_SEGMENT
/* A handover waits at most this for the waiter to take the lock (it may be between two yields,
 * or in a nap: shardlock.c), then as long for its insert; HANDOFF_ROUNDS of them per segment at
 * most, within the pass's budget (shm_maint_args.handoff_left). */
#define HANDOFF_WINDOW_NS 100000ull
#define HANDOFF_ROUNDS    4

/* The handover time the step may still spend. */
static uint64_t handoff_left(const struct shm_maint_args *a, const struct shm_maint_stats *st)
{
        if (a->handoff_left)
                return *a->handoff_left;
        return st->handoff_ns < THR_MAINT_HANDOFF_NS ? THR_MAINT_HANDOFF_NS - st->handoff_ns : 0;
}

/*
 * Take P's lock for a segment. A client that announced a wait, or holds the lock (an insert,
 * microseconds), goes first (shm_shard_handoff), then the lock is tried; HANDOFF_ROUNDS such
 * turns at most, within the pass's handover budget: the daemon waits a bounded time for clients,
 * never for one that does not move. False: held, and the rest of the shard is left for the next
 * pass. (Before the handover, a pass left a shard at its first segment whenever an insert held
 * it, and let a waiting insert in only after the whole shard.)
 */
static bool relock(const struct shm_map *m, struct shm_probe *p, const struct shm_maint_args *a,
                   struct shm_maint_stats *st)
{
        for (int round = 0;; round++) {
                uint64_t left = handoff_left(a, st);
                if (left) {
                        uint64_t spent = shm_shard_handoff(p, HANDOFF_WINDOW_NS);
                        st->handoff_ns += spent;
                        st->handoffs += spent != 0;
                        if (a->handoff_left)
                                *a->handoff_left = spent < left ? left - spent : 0;
                }
                if (shm_shard_trylock(m, p, a->me) == 0)
                        return true;
                if (round + 1 == HANDOFF_ROUNDS || !handoff_left(a, st))
                        return false;
        }
}

static void shard_locked(const struct pass *ps, const struct shm_map *m,
                         const struct shm_lim_snap *snap, struct shm_probe *p, uint32_t shard,
                         int64_t first_empty, struct shm_maint_stats *st)
{
        const struct shm_maint_args *a = ps->a;
        const struct thr_hdr *h = shm_hdr(m);
        struct thr_table *tb = shm_at(m->base, snap->table_off);
        uint32_t n = p->n, covered = 0, i = first_empty < 0 ? 0 : (uint32_t)first_empty;
        while (covered < n) {
                if (!relock(m, p, a, st)) {
                        st->busy_shards++;
                        return;
                }
                struct segment seg = {.start = i, .len = n, .anchored = first_empty >= 0};
                if (seg.anchored) {
                        uint32_t k = 0;
                        while (covered + k < n && status_at(p, i + k) != THR_SLOT_EMPTY)
                                k++;
                        covered += k;
                        seg.start = (i + k) % n;
                        uint32_t len = 1;
                        while (covered + len < n &&
                               (len < SEGMENT || status_at(p, seg.start + len) != THR_SLOT_EMPTY))
                                len++;
                        seg.len = covered < n ? len : 0;
                        seg.end_open = status_at(p, seg.start + len) != THR_SLOT_EMPTY;
                }
                if (seg.len)
                        segment_locked(ps, h, tb, p, shard, &seg, st);
                shm_shard_unlock(p, a->me);
                covered += seg.len ? seg.len : n;
                i = (seg.start + seg.len) % n;
        }
}

static void maintain_shard(const struct pass *ps, const struct shm_map *m,
                           const struct shm_lim_snap *snap, uint32_t shard,
                           struct shm_maint_stats *st)
{
        const struct shm_maint_args *a = ps->a;
        const struct thr_table *geo = &snap->table;
        const struct thr_hdr *h = shm_hdr(m);
        struct shm_probe p = {.shard = (struct thr_shard *)shm_at(m->base, geo->shards_off) + shard,
                              .slots = (struct thr_slot *)shm_at(m->base, geo->slots_off) +
                                       (uint64_t)shard * geo->shard_slots,
                              .n = geo->shard_slots};
        bool work = false;
        int64_t first_empty = -1;
        for (uint32_t i = 0; i < p.n; i++) {
                struct thr_slot *s = &p.slots[i];
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
                THR_HOOK(THR_HOOK_MAINT_META_READ, &s->meta);
                uint64_t state = atomic_load_explicit(&s->state, memory_order_acquire);
                switch (THR_META_STATUS(meta)) {
                case THR_SLOT_LIVE:
                        st->live++;
                        work |= state == THR_TAT_DEAD || idle(ps, s, state);
                        /* a semaphore key whose leases a serve would reclaim (sem_reap) */
                        work |= ps->p->kind == THR_KIND_SEMAPHORE &&
                                shm_sem_reapable(m, ps->p, shm_slot_aux(ps->base, ps->geo, s),
                                                 shm_now_ns(h));
                        /* a budget key with waiters (or a stale flag) or a grant half-done */
                        work |= ps->p->kind == THR_KIND_BUDGET &&
                                (shm_budget_queued(state) ||
                                 atomic_load_explicit(
                                     &shm_budget(shm_slot_aux(ps->base, ps->geo, s))->j_idx,
                                     memory_order_relaxed));
                        break;
                case THR_SLOT_DEAD: /* freed under the lock (reclaim) */
                        if (state == THR_TAT_FREE || reclaim_due(h, meta, state, a->done))
                                work = true;
                        else if (state == THR_TAT_DEAD)
                                st->retiring++;
                        break;
                case THR_SLOT_BUSY:
                        work = true; /* an insert in flight, or one whose inserter died */
                        break;
                default:
                        if (first_empty < 0)
                                first_empty = i;
                        break;
                }
        }
        st->scanned += p.n;
        if (work)
                shard_locked(ps, m, snap, &p, shard, first_empty, st);
}

bool shm_table_maintain(const struct shm_map *m, const struct shm_lim_snap *snap,
                        const struct shm_maint_args *a, uint32_t *cursor, uint64_t budget,
                        struct shm_maint_stats *st)
{
        const struct thr_table *geo = &snap->table;
        const struct pass ps = {.m = m, .a = a, .p = &snap->params, .geo = geo, .base = m->base};
        uint64_t shards = budget / geo->shard_slots;
        if (shards == 0)
                shards = 1;
        if (shards > geo->nshards)
                shards = geo->nshards;
        bool wrapped = false;
        for (uint64_t n = 0; n < shards; n++) {
                if (*cursor >= geo->nshards)
                        *cursor = 0;
                maintain_shard(&ps, m, snap, *cursor, st);
                if (++*cursor == geo->nshards) {
                        *cursor = 0;
                        wrapped = true;
                }
        }
        return wrapped;
}

uint64_t shm_maint_budget(const struct thr_table *geo, uint64_t budget, uint64_t period_ns,
                          uint64_t ttl_ns)
{
        uint64_t slots = (uint64_t)geo->nshards * geo->shard_slots;
        if (!ttl_ns || budget >= slots)
                return budget;
        uint64_t passes = period_ns ? ttl_ns / 2 / period_ns : 1; /* passes in half the TTL */
        if (passes == 0)
                passes = 1;
        /* shm_table_maintain spends a budget in whole shards, rounded down: so whole shards,
         * rounded up */
        uint64_t need = (geo->nshards + passes - 1) / passes * (uint64_t)geo->shard_slots;
        return need > budget ? need : budget;
}

uint32_t shm_retire_tag(const struct thr_hdr *h)
{
        return (uint32_t)(atomic_load_explicit(&h->grace_periods, memory_order_seq_cst) + 1);
}

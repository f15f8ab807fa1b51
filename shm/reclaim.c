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
 * Even a reader that was not protected could not apply an old key's acquisition to a reused slot
 * by a plain CAS: it compares the whole state word, which went TAT -> DEAD -> FREE -> a new key's
 * start. The grace period is what makes that argument unnecessary: by reuse, nobody holds it.
 *
 * Dead readers. Record I is held by its owner's open-file-description write lock on byte
 * THR_LOCK_READERS + I, taken before the owner word is claimed and dropped after it is cleared.
 * The kernel drops the lock when the owning process's last descriptor of that file description
 * closes, that is when it dies, whatever pid namespace it is in and whatever pid is reused. The
 * daemon tries the same lock: if it gets it while the owner word is set, the owner is gone; it
 * clears online (unblocking grace periods) and then the owner word by CAS from the token it saw,
 * and only then releases the lock, so no new owner can claim the record in between.
 *
 * Stalled readers (stopped, traced): online with an old snapshot and alive. They block reuse:
 * retired slots stay retiring, inserts fall back on the limiter's on_full policy, and the daemon
 * reports the reader once it has blocked for stall_ns. It never frees early.
 *
 * The arena is untrusted: every count and offset used here comes from the checked private
 * geometry (struct shm_geom, struct shm_lim_snap), and a garbage state or meta word only makes
 * this code evict, skip or reclaim a slot of the table it was given, never reach outside it.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shm.h"

/*
 * Whether reader IDX (owner word OWNER) belongs to a dead process; if so, force it offline and
 * free it. Returns 1 forced, 0 alive (or changed meanwhile), -errno.
 */
static int reap_one(struct shm_map *m, struct thr_reader *r, uint32_t idx, uint64_t owner)
{
        int rc = shm_reader_lock(m->fd, idx);
        if (rc == -EAGAIN)
                return 0; /* its owner holds the lock: alive */
        if (rc < 0)
                return rc;
        int forced = 0;
        if (atomic_load_explicit(&r->owner, memory_order_acquire) == owner) {
                atomic_store_explicit(&r->online, 0, memory_order_release);
                if (atomic_compare_exchange_strong_explicit(
                        &r->owner, &owner, 0, memory_order_acq_rel, memory_order_relaxed)) {
                        atomic_store_explicit(&r->forced_token, owner, memory_order_relaxed);
                        atomic_store_explicit(&r->blocking_ns, 0, memory_order_relaxed);
                        atomic_store_explicit(&r->stalled, 0, memory_order_relaxed);
                        atomic_fetch_add_explicit(&shm_hdr(m)->readers_forced, 1,
                                                  memory_order_relaxed);
                        forced = 1;
                }
        }
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
        int cmd = atomic_load_explicit(&h->mb_fallback, memory_order_relaxed)
                      ? MEMBARRIER_CMD_GLOBAL
                      : MEMBARRIER_CMD_GLOBAL_EXPEDITED;
        if (membarrier(cmd) == 0)
                return 0;
        if (cmd == MEMBARRIER_CMD_GLOBAL_EXPEDITED && membarrier(MEMBARRIER_CMD_GLOBAL) == 0)
                return 0;
        return -errno;
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
        atomic_store_explicit(&shm_hdr(m)->gp_done, res->done, memory_order_relaxed);
        return 0;
}

/* ---------------------------------------------------------------- table maintenance */

/* Whether grace period TAG (32 bits, wrapping) is at or before DONE. */
static bool tag_done(uint32_t tag, uint64_t done)
{
        return (int32_t)((uint32_t)done - tag) >= 0;
}

/* Slot S is LIVE with state TAT: evict it if idle past the TTL (no debt for that long). */
static void evict_idle(struct thr_table *tb, struct thr_shard *sh, struct thr_slot *s, uint64_t tat,
                       const struct shm_maint_args *a, struct shm_maint_stats *st)
{
        if (tat == THR_TAT_DEAD) { /* an evictor died between its two steps */
                if (shm_slot_retire(tb, sh, s, a->tag)) {
                        st->finished++;
                        atomic_fetch_add_explicit(&sh->evicted, 1, memory_order_relaxed);
                }
                return;
        }
        if (!a->ttl_units || tat == THR_TAT_FREE)
                return;
        bool idle = tat == THR_TAT_FRESH ||
                    (a->now_units >= a->ttl_units && tat <= a->now_units - a->ttl_units);
        if (!idle)
                return;
        /* from the state observed: an admission since then makes this fail, and the key stays */
        if (!atomic_compare_exchange_strong_explicit(&s->state, &tat, THR_TAT_DEAD,
                                                     memory_order_acq_rel, memory_order_relaxed))
                return;
        if (shm_slot_retire(tb, sh, s, a->tag)) {
                st->evicted++;
                atomic_fetch_add_explicit(&sh->evicted, 1, memory_order_relaxed);
        }
}

/*
 * Slot S read as META (DEAD) then STATE: make it reusable if its grace period is done. The two
 * reads are not one snapshot: between them an inserter may have reused the slot (if it was FREE)
 * and someone evicted the new key again. So only a state of DEAD is freed, only if meta still
 * reads as META (the generation bumped at every reuse makes a changed slot differ), and by a CAS
 * from DEAD: a slot DEAD in both words is touched by nobody but this pass until it is FREE.
 */
static bool reclaim(struct shm_probe *p, struct thr_slot *s, uint64_t meta, uint64_t state,
                    uint64_t done, struct shm_maint_stats *st)
{
        if (state != THR_TAT_DEAD)
                return false; /* reused under us: not ours to judge this pass */
        if (!tag_done(THR_META_TAG(meta), done)) {
                st->retiring++;
                return false;
        }
        if (atomic_load_explicit(&s->meta, memory_order_acquire) != meta ||
            !atomic_compare_exchange_strong_explicit(&s->state, &state, THR_TAT_FREE,
                                                     memory_order_acq_rel, memory_order_relaxed))
                return false;
        atomic_fetch_add_explicit(&p->shard->reclaimed, 1, memory_order_relaxed);
        st->reclaimed++;
        return true;
}

/*
 * Under the shard mutex: make EMPTY every reclaimed slot that no live key's probe path crosses.
 * A live key in slot j with home slot h is found by walking h, h+1, ..., j: those slots must stay
 * non-EMPTY, and no others need to (a lookup of an absent key may stop sooner; inserts are held
 * off by the mutex). The home is recomputed from the stored key (SipHash with the arena's
 * secret); a slot whose stored tag or shard does not match the recomputed hash (a corrupt or
 * rewritten arena) makes this trim nothing, which is always safe. Trimming only at the ends of
 * runs is not enough under churn: reclaimed slots inside runs pile up and every miss walks them.
 * Work: one hash per live slot plus the keys' displacements.
 */
static uint64_t trim_runs(const struct thr_hdr *h, struct shm_probe *p, uint32_t shard,
                          uint32_t nshards)
{
        uint64_t secret[2] = {h->secret[0], h->secret[1]};
        uint8_t *need = calloc(p->n, 1);
        if (!need)
                return 0;
        uint64_t trimmed = 0, freeable = 0;
        for (uint32_t j = 0; j < p->n; j++) {
                struct thr_slot *s = &p->slots[j];
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
                if (THR_META_STATUS(meta) == THR_SLOT_DEAD &&
                    atomic_load_explicit(&s->state, memory_order_relaxed) == THR_TAT_FREE)
                        freeable++;
                if (THR_META_STATUS(meta) != THR_SLOT_LIVE)
                        continue;
                uint32_t len = s->key_len;
                if (len == 0 || len > THR_KEY_MAX)
                        goto out;
                uint8_t key[THR_KEY_MAX];
                memcpy(key, s->key, len);
                uint64_t hash = shm_hash(secret, key, len);
                uint32_t hi = (uint32_t)(hash >> 32);
                if ((uint32_t)hash != THR_META_TAG(meta) || (hi & (nshards - 1)) != shard)
                        goto out;
                for (uint32_t k = (uint32_t)(((uint64_t)hi * p->n) >> 32); k != j;
                     k = k + 1 == p->n ? 0 : k + 1)
                        need[k] = 1;
        }
        for (uint32_t j = 0; j < p->n && freeable; j++) {
                struct thr_slot *s = &p->slots[j];
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_relaxed);
                if (need[j] || THR_META_STATUS(meta) != THR_SLOT_DEAD ||
                    atomic_load_explicit(&s->state, memory_order_relaxed) != THR_TAT_FREE)
                        continue;
                atomic_store_explicit(&s->meta,
                                      THR_META_MAKE(THR_SLOT_EMPTY, THR_META_GEN(meta), 0),
                                      memory_order_release);
                trimmed++;
        }
out:
        free(need);
        return trimmed;
}

static void maintain_shard(void *base, const struct shm_lim_snap *snap, uint32_t shard,
                           const struct shm_maint_args *a, struct shm_maint_stats *st)
{
        const struct thr_table *geo = &snap->table;
        struct thr_table *tb = shm_at(base, snap->table_off);
        struct shm_probe p = {.shard = (struct thr_shard *)shm_at(base, geo->shards_off) + shard,
                              .slots = (struct thr_slot *)shm_at(base, geo->slots_off) +
                                       (uint64_t)shard * geo->shard_slots,
                              .n = geo->shard_slots};
        uint64_t freeable = 0, busy = 0;
        for (uint32_t i = 0; i < p.n; i++) {
                struct thr_slot *s = &p.slots[i];
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
                uint64_t state = atomic_load_explicit(&s->state, memory_order_acquire);
                switch (THR_META_STATUS(meta)) {
                case THR_SLOT_LIVE:
                        st->live++;
                        evict_idle(tb, p.shard, s, state, a, st);
                        break;
                case THR_SLOT_DEAD:
                        if (state == THR_TAT_FREE)
                                freeable++;
                        else if (reclaim(&p, s, meta, state, a->done, st))
                                freeable++;
                        break;
                case THR_SLOT_BUSY:
                        busy++;
                        break;
                default:
                        break;
                }
        }
        st->scanned += p.n;
        /* trim, and repair a shard whose inserter died (BUSY) even if nobody inserts there */
        if ((freeable || busy) && shm_shard_trylock(&p) == 0) {
                st->trimmed += trim_runs(base, &p, shard, geo->nshards);
                shm_shard_unlock(&p);
        } else if (freeable || busy) {
                st->busy_shards++;
        }
}

bool shm_table_maintain(void *base, const struct shm_lim_snap *snap, const struct shm_maint_args *a,
                        uint32_t *cursor, uint64_t budget, struct shm_maint_stats *st)
{
        const struct thr_table *geo = &snap->table;
        uint64_t shards = budget / geo->shard_slots;
        if (shards == 0)
                shards = 1;
        if (shards > geo->nshards)
                shards = geo->nshards;
        bool wrapped = false;
        for (uint64_t n = 0; n < shards; n++) {
                if (*cursor >= geo->nshards)
                        *cursor = 0;
                maintain_shard(base, snap, *cursor, a, st);
                if (++*cursor == geo->nshards) {
                        *cursor = 0;
                        wrapped = true;
                }
        }
        return wrapped;
}

uint32_t shm_retire_tag(const struct thr_hdr *h)
{
        return (uint32_t)(atomic_load_explicit(&h->grace_periods, memory_order_seq_cst) + 1);
}

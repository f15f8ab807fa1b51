/*
 * maint.c - throttled's maintenance thread: idle-key eviction, slot reclamation after grace
 * periods, dead and stalled readers, repairs, heartbeat. The arena's own RCU (shm/reclaim.c)
 * protects the client's slots; liburcu protects the daemon's registry, which the main thread
 * swaps on reload while this thread reads it.
 *
 * Concurrency inside the daemon: the registry (struct registry: the live config and the
 * directory indices of its limiters) is published by the main thread with rcu_xchg_pointer and
 * freed only after synchronize_rcu(); this thread reads it inside rcu_read_lock() for one pass
 * and never keeps a pointer into it past rcu_read_unlock(). Everything else this thread keeps
 * (cursors, repair counts) is its own. The arena is read through checked snapshots
 * (shm_dir_snapshot), so a reload that publishes a new parameter record or retires a limiter
 * between two passes is seen whole or not at all.
 *
 * Each pass: for every live limiter, one bounded step of shm_table_maintain (evict keys idle past
 * their TTL, free slots whose grace period is done, trim, repair), all tagged with the grace
 * period about to start; then one grace period (shm_gp_start + shm_gp_scan), whose result frees
 * the slots of this pass as soon as it completes. A scan right after the counter's bump rarely
 * completes (a busy client thread is inside a call nearly all the time, and that call began
 * before the bump), so a period left incomplete is scanned again after a millisecond, then 2, 4,
 * 8... (a stopped reader costs a few scans a pass, not a thousand a second) until it completes or
 * the next pass starts one: slots retired by a pass are reusable soon after the readers that
 * might hold them move, not a whole maintenance_ms later (under key churn the table filled with
 * retiring slots waiting for the next pass: bench/results/2026-12-04/issue12_churn.txt). Each
 * pass examines at least scan_budget slots of a table, more when a sweep of the whole table would
 * otherwise take longer than half its limiter's idle TTL (shm_maint_budget). The daemon never
 * waits for a client that does not move: it tries shard locks (CAS words, never pthread mutexes:
 * shm/shardlock.c) after letting a client that waits for one or holds it go first, 100 us a turn
 * and 2 ms a pass at most (shm/reclaim.c, relock), and a stalled reader only delays reuse (reported
 * after stall_ms). Nothing is reused before this daemon's own first grace period completes (gp_done
 * starts at 0: shm_tag_done).
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/membarrier.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <urcu.h>

#include "log.h"
#include "supervisor.h"
#include "tsan.h"

static void on_reader(void *ctx, uint32_t idx, const struct thr_reader *r, enum shm_gp_event ev)
{
        (void)ctx;
        uint64_t pid = atomic_load_explicit(&r->pid, memory_order_relaxed);
        uint64_t tid = atomic_load_explicit(&r->tid, memory_order_relaxed);
        switch (ev) {
        case SHM_GP_STALLED:
                log_warn("reader %u (pid %" PRIu64 " tid %" PRIu64 ") has stayed inside one call "
                         "since grace period %" PRIu64 ": a stopped or traced process? Retired "
                         "slots are not reused until it moves; full tables use their on_full "
                         "policy",
                         idx, pid, tid, atomic_load_explicit(&r->online, memory_order_relaxed) - 1);
                break;
        case SHM_GP_RESUMED:
                log_info("reader %u (pid %" PRIu64 " tid %" PRIu64 ") resumed", idx, pid, tid);
                break;
        case SHM_GP_FORCED:
                log_info("reader %u: its process died inside a call; forced offline", idx);
                break;
        }
}

/* The table's live count made the sum of its shards' after repairs (a client died holding a
 * shard lock) and now and then (a client died between taking capacity and publishing). */
static void reconcile(struct supervisor *s, const struct shm_lim_snap *snap)
{
        uint64_t repairs = shm_table_repairs(s->map.base, &snap->table);
        /* also once after start and every 64 heartbeats: an inserter killed between taking a
         * unit of capacity and publishing leaves the table's count one high */
        bool due = s->recounted[snap->idx] == 0 || s->beats - s->recounted[snap->idx] >= 64;
        if (repairs == s->repairs_seen[snap->idx] && !due)
                return;
        int rc = shm_table_reconcile(&s->map, snap->table_off, &snap->table, s->lock_me);
        if (rc == -EBUSY)
                return; /* a shard lock is held: next heartbeat */
        if (rc < 0) {
                log_warn("limiter '%s': cannot recount its keys: %s", snap->name, strerror(-rc));
                return;
        }
        if (repairs != s->repairs_seen[snap->idx])
                log_info("limiter '%s': %" PRIu64 " interrupted inserts repaired; live keys "
                         "recounted",
                         snap->name, repairs - s->repairs_seen[snap->idx]);
        s->repairs_seen[snap->idx] = repairs;
        s->recounted[snap->idx] = s->beats;
}

/* Scan grace period GP (started by shm_gp_start) at NOW: on completion, it frees this pass's
 * slots and the parameter records replaced before it; an incomplete one is left pending. */
static void gp_scan(struct supervisor *s, const struct registry *reg, uint64_t gp, uint64_t now)
{
        struct shm_gp_result res;
        int rc = shm_gp_scan(&s->map, gp, now, reg->cfg.stall_ms * 1000000ull, &res, on_reader, s);
        if (rc < 0)
                return;
        shm_gp_pending_note(&s->gp_wait, gp, res.done);
        if (res.done <= s->gp_done) /* a rescan may see less than an earlier scan: see reclaim.h */
                return;
        s->gp_done = res.done;
        /* parameter records replaced before this period began are no longer read */
        pthread_mutex_lock(&s->arena_mu);
        shm_params_recycle(&s->map, s->gp_done);
        pthread_mutex_unlock(&s->arena_mu);
}

/* One pass over the registry's limiters. Called inside rcu_read_lock(). */
static void pass(struct supervisor *s, const struct registry *reg, bool beat)
{
        struct thr_hdr *h = shm_hdr(&s->map);
        adapt_pass(s, reg); /* adaptive limiters whose interval is over: a step each */
        uint64_t now = shm_now_ns(h);
        uint32_t tag = shm_retire_tag(h);
        uint64_t handoff_left = THR_MAINT_HANDOFF_NS; /* the whole pass's, all limiters */
        for (uint32_t i = 0; i < reg->n; i++) {
                struct shm_lim_snap snap;
                uint32_t idx = reg->idx[i];
                if (idx >= SUP_MAX_TABLES || shm_dir_snapshot(&s->map, idx, &snap) < 0 ||
                    snap.state != THR_DIR_LIVE)
                        continue;
                const struct thr_params *p = &snap.params;
                struct shm_maint_args a = {.now_units = now * p->k,
                                           .ttl_units = p->idle_ttl_ns * p->k,
                                           .tag = tag,
                                           .done = s->gp_done,
                                           .me = s->lock_me,
                                           .handoff_left = &handoff_left};
                struct shm_maint_stats st = {0};
                uint64_t period_ms = reg->cfg.maintenance_ms ? reg->cfg.maintenance_ms : 100;
                uint64_t budget = shm_maint_budget(&snap.table, reg->cfg.scan_budget,
                                                   period_ms * 1000000ull, p->idle_ttl_ns);
                bool wrapped = shm_table_maintain(&s->map, &snap, &a, &s->cursor[idx], budget, &st);
                struct sup_lim_stats *acc = &s->acc[idx];
                acc->evicted += st.evicted;
                acc->reclaimed += st.reclaimed;
                acc->retiring += st.retiring;
                acc->live += st.live;
                acc->handoffs += st.handoffs;
                acc->handoff_ns += st.handoff_ns;
                if (wrapped) {
                        if (acc->evicted || acc->reclaimed || acc->handoffs)
                                log_debug("limiter '%s': pass done: %" PRIu64 " live, %" PRIu64
                                          " evicted, %" PRIu64 " reclaimed, %" PRIu64
                                          " retiring; the lock let to %" PRIu64
                                          " waiting inserts between segments (%" PRIu64 " us)",
                                          snap.name, acc->live, acc->evicted, acc->reclaimed,
                                          acc->retiring, acc->handoffs, acc->handoff_ns / 1000);
                        s->passes++;
                        *acc = (struct sup_lim_stats){0};
                }
                if (beat)
                        reconcile(s, &snap);
        }
        uint64_t gp;
        s->gp_wait.gp = 0;
        int rc = shm_gp_start(&s->map, &gp);
        if (rc < 0) {
                if (!s->mb_warned)
                        log_error("grace periods fail: membarrier(%s): %s; retired slots cannot "
                                  "be reused safely and stay retired (inserts into full tables "
                                  "fall back on on_full)",
                                  atomic_load_explicit(&h->mb_fallback, memory_order_relaxed)
                                      ? "MEMBARRIER_CMD_GLOBAL, a client could not register "
                                        "for the expedited one"
                                      : "MEMBARRIER_CMD_GLOBAL_EXPEDITED",
                                  strerror(-rc));
                s->mb_warned = true;
                return;
        }
        if (s->mb_warned)
                log_info("grace periods work again: retired slots are reused");
        s->mb_warned = false;
        gp_scan(s, reg, gp, now);
}

/* Milliseconds from A to B (CLOCK_MONOTONIC; B not before A). */
static uint64_t ms_between(const struct timespec *a, const struct timespec *b)
{
        return (uint64_t)((b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000);
}

/* Milliseconds left at NOW of a PERIOD that began at SINCE; 0 once it is over. */
static uint64_t ms_left(const struct timespec *since, const struct timespec *now, uint64_t period)
{
        uint64_t gone = ms_between(since, now);
        return gone < period ? period - gone : 0;
}

/*
 * The loop wakes for whichever is due first: a heartbeat heartbeat_ms after the last one began,
 * or a pass maintenance_ms after the last one ended. So neither period waits for the other (a
 * heartbeat of 200 ms is kept with passes 5 s apart); a heartbeat's recount of repaired tables
 * waits for the next pass, which reports it. Sleeps are cut in 50 ms slices so a stop is seen
 * within 50 ms however long the wait.
 */
static void *maint_main(void *arg)
{
        struct supervisor *s = arg;
        struct thr_hdr *h = shm_hdr(&s->map);
        rcu_register_thread();
        struct timespec last_beat = {0}, last_pass = {0};
        bool beat_pending = false; /* a heartbeat since the last pass */
        while (!s->stop) {
                struct timespec t;
                clock_gettime(CLOCK_MONOTONIC, &t);
                rcu_read_lock();
                const struct registry *reg = rcu_dereference(s->reg);
                TSAN_ACQUIRE(&s->reg);
                uint64_t beat_ms = reg->cfg.heartbeat_ms ? reg->cfg.heartbeat_ms : 1000;
                uint64_t period_ms = reg->cfg.maintenance_ms ? reg->cfg.maintenance_ms : 100;
                if (ms_between(&last_beat, &t) >= beat_ms) {
                        s->beats++;
                        atomic_store_explicit(&h->heartbeat_ns, shm_now_ns(h),
                                              memory_order_relaxed);
                        int n = shm_readers_reap(&s->map);
                        if (n > 0)
                                log_info("%d reader records of dead processes freed", n);
                        last_beat = t;
                        beat_pending = true;
                }
                if (ms_between(&last_pass, &t) >= period_ms) {
                        pass(s, reg, beat_pending);
                        beat_pending = false;
                        clock_gettime(CLOCK_MONOTONIC, &last_pass);
                } else if (s->gp_wait.gp) {
                        gp_scan(s, reg, s->gp_wait.gp, shm_now_ns(h));
                }
                TSAN_RELEASE(reg);
                rcu_read_unlock();
                clock_gettime(CLOCK_MONOTONIC, &t);
                uint64_t to_beat = ms_left(&last_beat, &t, beat_ms);
                uint64_t to_pass = ms_left(&last_pass, &t, period_ms);
                uint64_t wait_ms = to_beat < to_pass ? to_beat : to_pass;
                if (s->gp_wait.gp && wait_ms > s->gp_wait.retry_ms)
                        wait_ms = s->gp_wait.retry_ms;
                for (uint64_t slept = 0; slept < wait_ms && !s->stop;) {
                        uint64_t ms = wait_ms - slept < 50 ? wait_ms - slept : 50;
                        struct timespec ts = {0, (long)ms * 1000000};
                        nanosleep(&ts, NULL);
                        slept += ms;
                }
        }
        rcu_unregister_thread();
        return NULL;
}

/* Say at start what would stop grace periods on this kernel, before it happens. */
static void membarrier_check(void)
{
        int mask = shm_membarrier_query();
        if (mask < 0) {
                log_error("membarrier: %s: no grace period can complete, so evicted keys' slots "
                          "are never reused",
                          strerror(-mask));
                return;
        }
        if (!(mask & MEMBARRIER_CMD_GLOBAL))
                log_warn("membarrier: MEMBARRIER_CMD_GLOBAL is not offered (nohz_full CPUs?): if "
                         "a client cannot register for the expedited membarrier, grace periods "
                         "stop and evicted slots are no longer reused");
        if (!(mask & MEMBARRIER_CMD_GLOBAL_EXPEDITED))
                log_warn("membarrier: MEMBARRIER_CMD_GLOBAL_EXPEDITED is not offered: grace "
                         "periods use the slow global membarrier");
}

int maint_start(struct supervisor *s)
{
        membarrier_check();
        /* the attach number announce() took: this daemon's name in shard locks */
        s->lock_me = shm_lock_daemon(
            atomic_load_explicit(&shm_hdr(&s->map)->attach_count, memory_order_acquire));
        int rc = pthread_create(&s->maint, NULL, maint_main, s);
        if (rc)
                log_error("cannot start the maintenance thread: %s", strerror(rc));
        return -rc;
}

void maint_join(struct supervisor *s)
{
        pthread_join(s->maint, NULL);
}

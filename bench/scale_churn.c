/*
 * scale_churn.c - the churn scenario's eviction driver (its key stream is in scale_keys.c): a
 * process doing for the benchmark's arena exactly what throttled's maintenance thread does
 * (daemon/maint.c, pass()), so that keys idle past their TTL are evicted and their slots reused
 * while the workers run.
 *
 * The driver is a forked child, not a thread, so the parent stays single-threaded when it forks
 * the workers. It maps the arena read-write (the daemon's side of the arena RCU, shm/reclaim.c)
 * and loops: arena time, the retire tag of the grace period about to start, one bounded
 * shm_table_maintain step over the limiter's table (the daemon's default scan_budget of slots, or
 * more as shm_maint_budget says for the churn limiter's short TTL; the cursor carries over), then
 * one grace period (shm_gp_start: counter bump and membarrier; shm_gp_scan: the reader records),
 * scanned again after 1, 2, 4... ms while incomplete, whose `done` frees what this pass retired
 * (inserters reuse such slots themselves). Once a second it reaps the reader records of dead
 * processes, as the daemon's heartbeat does. It sleeps DRIVER_PERIOD ms between passes. Shard locks
 * are taken as the daemon takes them (shm_table_maintain: a worker that waits for one or holds it
 * goes first, for a bounded time; one limiter, so its step's budget is the pass's).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scale_churn.h"
#include "shm.h"

/* ---------------------------------------------------------------- counters */

/*
 * EMPTY slots of the table, and the mean probe length of a miss: a lookup from home slot h of a
 * shard walks to the first EMPTY slot or past h's reach (reach + 1 slots), whichever is first,
 * and an EMPTY home costs none. Read-only, relaxed loads: a census, not a snapshot.
 */
static void table_census(const struct shm_map *m, const struct thr_table *geo,
                         struct bench_evictions *out)
{
        const struct thr_slot *slots = shm_at(m->base, geo->slots_off);
        uint32_t n = geo->shard_slots;
        uint32_t *to_empty = calloc(n, sizeof(*to_empty)); /* non-EMPTY slots from i on */
        uint64_t empty = 0;
        double sum = 0;
        for (uint32_t sh = 0; to_empty && sh < geo->nshards; sh++) {
                const struct thr_slot *s = slots + (uint64_t)sh * n;
                uint32_t run = n; /* no EMPTY seen yet: a whole-shard walk */
                for (uint32_t pass = 0; pass < 2; pass++) /* backwards, twice: runs wrap */
                        for (uint32_t k = n; k-- > 0;) {
                                uint64_t meta =
                                    atomic_load_explicit(&s[k].meta, memory_order_relaxed);
                                run = THR_META_STATUS(meta) == THR_SLOT_EMPTY ? 0
                                      : run < n                               ? run + 1
                                                                              : n;
                                to_empty[k] = run;
                        }
                for (uint32_t i = 0; i < n; i++) {
                        if (to_empty[i] == 0) {
                                empty++;
                                continue;
                        }
                        uint32_t r = atomic_load_explicit(&s[i].reach, memory_order_relaxed);
                        uint32_t steps = r >= THR_REACH_ANY || r >= n ? n : r + 1;
                        sum += to_empty[i] < steps ? to_empty[i] : steps;
                }
        }
        free(to_empty);
        out->empty = empty;
        out->miss_probe = sum / ((double)geo->nshards * n);
}

int churn_table_counts(const struct shm_map *m, const char *name, struct bench_evictions *out)
{
        struct shm_lim_snap snap;
        int idx = shm_dir_find(m, name);
        int rc = idx < 0 ? idx : shm_dir_snapshot(m, (uint32_t)idx, &snap);
        if (rc < 0)
                return rc;
        const struct thr_table *tb = shm_at(m->base, snap.table_off);
        const struct thr_shard *sh = shm_at(m->base, snap.table.shards_off);
        *out = (struct bench_evictions){.has = BENCH_EV_IDLE | BENCH_EV_FULL | BENCH_EV_RECLAIMED |
                                               BENCH_EV_FAIL | BENCH_EV_LIVE | BENCH_EV_TABLE |
                                               BENCH_EV_LOCK};
        for (uint32_t i = 0; i < snap.table.nshards; i++) {
                out->idle += atomic_load_explicit(&sh[i].evicted, memory_order_relaxed);
                out->full += atomic_load_explicit(&sh[i].evicted_full, memory_order_relaxed);
                out->reclaimed += atomic_load_explicit(&sh[i].reclaimed, memory_order_relaxed);
                out->lock_waits += atomic_load_explicit(&sh[i].lock_waits, memory_order_relaxed);
                out->repairs += atomic_load_explicit(&sh[i].repairs, memory_order_relaxed);
        }
        out->insert_fail = atomic_load_explicit(&tb->insert_fail, memory_order_relaxed);
        out->live = atomic_load_explicit(&tb->live, memory_order_relaxed);
        table_census(m, &snap.table, out);
        return 0;
}

/* ---------------------------------------------------------------- the eviction driver */

struct churn_driver_shared {
        _Atomic int stop;
        _Atomic int state; /* 0 starting, 1 running, -errno: could not attach */
        _Atomic uint64_t passes;
        _Atomic uint64_t gp_failed;
};

static void sleep_ms(unsigned ms)
{
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
}

int churn_pass(struct shm_map *m, uint32_t idx, struct churn_pass *ps)
{
        struct thr_hdr *h = shm_hdr(m);
        uint64_t now = shm_now_ns(h);
        uint32_t tag = shm_retire_tag(h);
        struct shm_lim_snap snap;
        if (shm_dir_snapshot(m, idx, &snap) == 0 && snap.state == THR_DIR_LIVE) {
                const struct thr_params *p = &snap.params;
                struct shm_maint_args a = {.now_units = now * p->k,
                                           .ttl_units = p->idle_ttl_ns * p->k,
                                           .tag = tag,
                                           .done = ps->done,
                                           /* a live daemon's name (driver_main holds the
                                            * daemon lock): a worker that waits for one of its
                                            * shard locks must not take it over as a dead one's */
                                           .me = shm_lock_daemon(atomic_load_explicit(
                                               &h->attach_count, memory_order_acquire))};
                struct shm_maint_stats st = {0};
                uint64_t budget = shm_maint_budget(&snap.table, DRIVER_BUDGET,
                                                   DRIVER_PERIOD * 1000000ull, p->idle_ttl_ns);
                shm_table_maintain(m, &snap, &a, &ps->cursor, budget, &st);
        }
        uint64_t gp;
        ps->wait.gp = 0;
        int rc = shm_gp_start(m, &gp);
        if (rc == 0)
                rc = churn_gp_scan(m, ps, gp);
        return rc;
}

int churn_gp_scan(struct shm_map *m, struct churn_pass *ps, uint64_t gp)
{
        struct shm_gp_result res;
        int rc =
            shm_gp_scan(m, gp, shm_now_ns(shm_hdr(m)), DRIVER_STALL * 1000000ull, &res, NULL, NULL);
        if (rc < 0)
                return rc;
        if (res.done > ps->done)
                ps->done = res.done;
        shm_gp_pending_note(&ps->wait, gp, res.done);
        return 0;
}

static void driver_main(const char *path, const char *name, struct churn_driver_shared *sh)
{
        struct shm_map m = {0};
        char err[256];
        struct churn_pass ps = {0};
        uint64_t since_beat = 0;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int rc = shm_arena_attach(path, true, &m, err, sizeof(err));
        /* The daemon's lock, as throttled holds it: without it a worker that waits for a shard
         * lock the driver holds judges the holder a dead daemon (shardlock.c) and takes the lock
         * over in the middle of the driver's segment (it did: shard repairs at 8 processes). */
        if (rc == 0)
                rc = shm_daemon_lock(&m, NULL);
        int idx = rc < 0 ? rc : shm_dir_find(&m, name);
        atomic_store_explicit(&sh->state, idx < 0 ? idx : 1, memory_order_release);
        if (idx < 0)
                _exit(1);
        while (!atomic_load_explicit(&sh->stop, memory_order_acquire)) {
                if (churn_pass(&m, (uint32_t)idx, &ps) < 0)
                        atomic_fetch_add_explicit(&sh->gp_failed, 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&sh->passes, 1, memory_order_relaxed);
                if ((since_beat += DRIVER_PERIOD) >= DRIVER_BEAT_MS) {
                        shm_readers_reap(&m);
                        since_beat = 0;
                }
                /* the pass's grace period scanned again while incomplete, as maint.c does */
                unsigned slept = 0;
                while (ps.wait.gp && slept + ps.wait.retry_ms < DRIVER_PERIOD) {
                        sleep_ms((unsigned)ps.wait.retry_ms);
                        slept += (unsigned)ps.wait.retry_ms;
                        churn_gp_scan(&m, &ps, ps.wait.gp);
                }
                sleep_ms(DRIVER_PERIOD - slept);
        }
        shm_arena_detach(&m);
        _exit(0);
}

int churn_driver_start(const char *path, const char *name, struct churn_driver *d, char *err,
                       size_t errlen)
{
        d->sh =
            mmap(NULL, sizeof(*d->sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (d->sh == MAP_FAILED) {
                int e = errno;
                d->sh = NULL;
                snprintf(err, errlen, "eviction driver: mmap: %s", strerror(e));
                return -e;
        }
        fflush(NULL);
        d->pid = fork();
        if (d->pid == 0)
                driver_main(path, name, d->sh);
        if (d->pid < 0) {
                int e = errno;
                snprintf(err, errlen, "eviction driver: fork: %s", strerror(e));
                munmap(d->sh, sizeof(*d->sh));
                d->sh = NULL;
                return -e;
        }
        int st = 0;
        for (int ms = 0; ms < 5000 && st == 0; ms++) {
                st = atomic_load_explicit(&d->sh->state, memory_order_acquire);
                if (st == 0)
                        sleep_ms(1);
        }
        if (st == 1)
                return 0;
        snprintf(err, errlen, "eviction driver: cannot attach %.200s: %s", path,
                 st ? strerror(-st) : "no answer in 5 s");
        kill(d->pid, SIGKILL);
        churn_driver_stop(d);
        return st ? st : -ETIMEDOUT;
}

void churn_driver_stop(struct churn_driver *d)
{
        if (!d->sh)
                return;
        atomic_store_explicit(&d->sh->stop, 1, memory_order_release);
        if (d->pid > 0)
                waitpid(d->pid, NULL, 0);
        munmap(d->sh, sizeof(*d->sh));
        *d = (struct churn_driver){0};
}

void churn_driver_stats(const struct churn_driver *d, uint64_t *passes, uint64_t *gp_failed)
{
        *passes = d->sh ? atomic_load_explicit(&d->sh->passes, memory_order_relaxed) : 0;
        *gp_failed = d->sh ? atomic_load_explicit(&d->sh->gp_failed, memory_order_relaxed) : 0;
}

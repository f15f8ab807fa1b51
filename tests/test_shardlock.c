/*
 * test_shardlock.c - proves the shard insert lock (shm/shardlock.c) bounds every wait and trusts
 * nothing a client can write: a stopped client holding it costs a new key its bounded wait and
 * the on_full outcome (deny, or allow) while existing keys are decided as before; a daemon stopped
 * holding it likewise, and once that daemon is gone its lock is taken over; a thread waiting for
 * its own lock (a signal handler nested in its insert) gets the outcome at once; and the real
 * daemon survives a client rewriting every shard header while it runs its passes (it used to lock
 * robust pthread mutexes there, and glibc wrote through the list pointers a client had planted).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"
#include "testhook.h"

static struct tarena T;
static thr_limiter *L[2];
static pid_t g_kid = -1;

static void teardown(void)
{
        if (g_kid > 0) {
                kill(g_kid, SIGKILL);
                waitpid(g_kid, NULL, 0);
        }
        g_kid = -1;
        for (int i = 0; i < 2; i++)
                if (L[i])
                        thr_limiter_close(L[i]);
        L[0] = L[1] = NULL;
        if (T.a)
                tarena_free(&T);
}

TestSuite(shardlock, .fini = teardown, .timeout = 60);

/* Limiters "deny" and "allow" of one shard each (B = 5, T = 1 s), manual clock. */
static void make(void)
{
        struct shm_limiter_spec s[2] = {tspec("deny", 1, SEC, 5, 5), tspec("allow", 1, SEC, 5, 5)};
        for (int i = 0; i < 2; i++) {
                s[i].shards = 1;
                s[i].lock_wait_ns = THR_LOCK_WAIT_NS; /* the default bound is what is tested */
        }
        s[1].on_full = THR_FULL_ALLOW;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 2);
        L[0] = tlim(&T, "deny");
        L[1] = tlim(&T, "allow");
}

static struct thr_shard *shard_of(const char *lim)
{
        struct shm_probe p;
        tprobe(&T.map, ttable(&T, lim), "any", &p);
        return p.shard;
}

/* A child takes the insert lock of both limiters' shards, then stops itself. */
static void stopped_holder(void)
{
        g_kid = tfork();
        cr_assert_geq(g_kid, 0);
        if (g_kid == 0) {
                uint64_t me = tlock_me(T.a);
                for (int i = 0; i < 2; i++) {
                        struct shm_probe p;
                        tprobe(&T.map, ttable(&T, i ? "allow" : "deny"), "any", &p);
                        if (shm_shard_lock(&T.map, &p, me, 0) != 0)
                                _exit(2);
                }
                raise(SIGSTOP);
                _exit(0);
        }
        int st;
        cr_assert_eq(waitpid(g_kid, &st, WUNTRACED), g_kid);
        cr_assert(WIFSTOPPED(st), "the holder stopped (status %#x)", st);
}

Test(shardlock, a_stopped_holder_costs_a_new_key_its_bounded_wait_and_on_full)
{
        make();
        cr_assert_eq(thr_limiter_try(L[0], "old", 3, 1, NULL), 1); /* exists before */
        stopped_holder();
        alarm(20); /* an unbounded wait fails the test instead of hanging it */
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L[0], "new", 3, 1, &r), 0, "on_full deny: a denial");
        cr_assert_gt(r.retry_after_ns, 0);
        cr_assert_eq(thr_limiter_try(L[1], "new", 3, 1, &r), 1, "on_full allow: admitted");
        struct thr_reservation rv;
        cr_assert_eq(thr_limiter_reserve(L[0], "new2", 4, 1, SEC, &rv), -ENOSPC);
        cr_assert_eq(thr_limiter_try(L[0], "old", 3, 1, &r), 1, "an existing key takes no lock");
        cr_assert_eq(r.remaining, 3);
        alarm(0);
        cr_assert_eq(atomic_load(&shard_of("deny")->lock_timeouts), 2);
        cr_assert_eq(atomic_load(&shard_of("allow")->lock_timeouts), 1);
        cr_assert_eq(atomic_load(&shard_of("allow")->allowed_full), 1);
        /* continued, the holder exits holding the locks: the next inserter takes them over */
        cr_assert_eq(kill(g_kid, SIGCONT), 0);
        int st;
        cr_assert_eq(waitpid(g_kid, &st, 0), g_kid);
        g_kid = -1;
        cr_assert_eq(thr_limiter_try(L[0], "new", 3, 1, &r), 1);
        cr_assert_eq(atomic_load(&shard_of("deny")->repairs), 1, "taken over and repaired");
}

Test(shardlock, a_stopped_daemon_holding_the_lock_costs_the_bounded_wait_then_is_taken_over)
{
        make();
        pid_t holder;
        cr_assert_eq(shm_daemon_lock(&T.map, &holder), 0, "we play the daemon");
        uint64_t attach = atomic_fetch_add(&shm_hdr(&T.map)->attach_count, 1) + 1;
        atomic_store(&shard_of("deny")->lock, shm_lock_daemon(attach)); /* stopped mid-pass */
        alarm(20);
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L[0], "new", 3, 1, &r), 0, "the daemon is alive: on_full");
        /* another daemon attaches: this one's lock is stale */
        atomic_fetch_add(&shm_hdr(&T.map)->attach_count, 1);
        cr_assert_eq(thr_limiter_try(L[0], "new", 3, 1, &r), 1, "taken over from a gone daemon");
        alarm(0);
        cr_assert_eq(atomic_load(&shard_of("deny")->repairs), 1);
        cr_assert_eq(atomic_load(&shard_of("deny")->lock), 0, "given back");
}

Test(shardlock, a_thread_waiting_for_its_own_lock_gets_on_full_at_once)
{
        make();
        atomic_store(&shard_of("deny")->lock, tlock_me(T.a)); /* as inside its own insert */
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L[0], "new", 3, 1, &r), 0);
        cr_assert_eq(atomic_load(&shard_of("deny")->lock_waits), 0, "no wait at all");
        atomic_store(&shard_of("deny")->lock, 0);
        cr_assert_eq(thr_limiter_try(L[0], "new", 3, 1, &r), 1);
}

/* ---------------------------------------------------------------- handing the lock over */

static uint64_t mono(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

/* A thread that waits for a shard lock (released by GO), notes that it got it, gives it back. */
struct waiter {
        struct shm_probe p;
        _Atomic int go, got, rc;
        _Atomic uint32_t got_at; /* when it got the lock: segments locked by the pass before */
        bool pin;                /* run it on CPU 1, the test's thread on CPU 0 */
};

static _Atomic uint32_t g_segments; /* segments the pass under test has locked so far */

/* Run the calling thread on CPU CPU only (of 2 or more). */
static void pin_to(int cpu)
{
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        cr_assert_eq(pthread_setaffinity_np(pthread_self(), sizeof(set), &set), 0);
}

static void *waiter_main(void *arg)
{
        struct waiter *w = arg;
        if (w->pin)
                pin_to(1);
        uint64_t me = tlock_me(T.a);
        while (!atomic_load(&w->go))
                sched_yield();
        /* judged through the client's own mapping: the daemon's lock is held through T.map's
         * open file description, which would see no conflict with itself (a dead daemon) */
        int rc = shm_shard_lock(&T.a->map, &w->p, me, 30 * SEC);
        if (rc == 0) {
                atomic_store(&w->got_at, atomic_load(&g_segments));
                atomic_store(&w->got, 1);
                shm_shard_unlock(&w->p, me);
        }
        atomic_store(&w->rc, rc);
        return NULL;
}

/* Until the waiter announced its wait (lock_wanted), at most 10 s. */
static void await_announced(struct waiter *w)
{
        uint64_t t0 = mono();
        while (!atomic_load(&w->p.shard->lock_wanted))
                if (mono() - t0 > 10 * SEC)
                        cr_assert_fail("the waiter never announced its wait");
}

/* This process plays a live daemon (its lock, its attach number): a waiter must not take the
 * shard lock over from it as a dead daemon's. */
static uint64_t play_daemon(void)
{
        cr_assert_eq(shm_daemon_lock(&T.map, NULL), 0);
        return shm_lock_daemon(atomic_load(&shm_hdr(&T.map)->attach_count));
}

/*
 * A holder that gives the lock back and takes it again at once (the daemon between two segments
 * of a shard) left a waiter a gap of a few instructions: it waited for the whole shard. A waiter
 * announces itself, and shm_shard_handoff lets it in first: it returns once the waiter took the
 * lock and gave it back. Nobody waiting, or a stamp gone stale (a waiter that died) or from the
 * future (a client's scribble): it returns at once. (The window here is long, 10 s, so that a
 * waiter descheduled for a while still makes it: the protocol is what is tested, not the pace.)
 */
Test(shardlock, a_waiter_that_announced_itself_is_let_in_by_a_handoff)
{
        make();
        uint64_t dme = play_daemon();
        struct waiter w = {0};
        tprobe(&T.map, ttable(&T, "deny"), "any", &w.p);
        cr_assert_eq(shm_shard_handoff(&w.p, 10 * SEC), 0, "nobody waits: no handoff");
        cr_assert_eq(shm_shard_trylock(&T.map, &w.p, dme), 0);
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, waiter_main, &w), 0);
        atomic_store(&w.go, 1);
        await_announced(&w);
        shm_shard_unlock(&w.p, dme);
        uint64_t spent = shm_shard_handoff(&w.p, 10 * SEC);
        cr_assert_gt(spent, 0, "a waiter announced itself: a handoff");
        cr_assert(atomic_load(&w.got), "the waiter had the lock before the handoff ended");
        cr_assert_eq(atomic_load(&w.p.shard->lock), 0, "and had given it back");
        pthread_join(th, NULL);
        cr_assert_eq(atomic_load(&w.rc), 0);
        cr_assert_eq(atomic_load(&w.p.shard->lock_wanted), 0, "the waiter cleared its stamp");
        /* stale, future: no wait (a 10 s window would show) */
        atomic_store(&w.p.shard->lock_wanted, mono() - 2 * THR_HANDOFF_FRESH_NS);
        cr_assert_eq(shm_shard_handoff(&w.p, 10 * SEC), 0, "a stale stamp: its waiter is gone");
        atomic_store(&w.p.shard->lock_wanted, mono() + SEC);
        cr_assert_eq(shm_shard_handoff(&w.p, 10 * SEC), 0, "a stamp from the future: scribbled");
        /* a fresh stamp nobody answers costs the window, no more, and takes nothing */
        atomic_store(&w.p.shard->lock_wanted, mono());
        spent = shm_shard_handoff(&w.p, 20 * 1000 * 1000);
        cr_assert_geq(spent, 20 * 1000 * 1000);
        cr_assert_eq(atomic_load(&w.p.shard->lock), 0);
}

/* A fresh arena whose limiter NAME has one shard of CAPACITY and KEYS keys, all idle past its
 * TTL (every segment of the shard has evictions to make). */
static thr_limiter *idle_shard(const char *name, uint64_t capacity, int keys)
{
        struct shm_limiter_spec s = tspec(name, 1, SEC, 5, 5);
        s.shards = 1;
        s.capacity = capacity;
        s.idle_ttl_ns = SEC;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim(&T, name);
        char key[32];
        for (int i = 0; i < keys; i++) {
                int n = snprintf(key, sizeof(key), "k%d", i);
                cr_assert_eq(thr_limiter_try(l, key, (size_t)n, 1, NULL), 1);
        }
        cr_assert_eq(thr_clock_advance(T.a, 10 * SEC), 0);
        return l;
}

static struct waiter *g_w;

/* The first segment's hook: the waiter starts waiting while the pass holds the lock. */
static void start_waiter(enum thr_hook_point pt, void *arg)
{
        if (pt != THR_HOOK_MAINT_SEGMENT)
                return;
        if (atomic_fetch_add(&g_segments, 1) == 0) {
                atomic_store(&g_w->go, 1);
                await_announced(g_w);
        }
        (void)arg;
}

/*
 * The daemon's pass over a shard of many segments, with an insert waiting from the first one:
 * the insert gets the lock at a segment's end, not after the whole shard. Each attempt is a
 * fresh arena whose one shard holds 4096 idle keys (every segment has evictions to make); the
 * handover's window is 100 us, so a waiter descheduled across every segment's end of a pass
 * misses it: up to 5 attempts, one must show it (before it, the waiter got in after the last
 * segment, or by luck in the few instructions between two).
 */
Test(shardlock, the_daemons_pass_lets_a_waiting_insert_in_between_two_segments)
{
        /* Two CPUs, one each: a waiter that shares the pass's CPU runs only when the scheduler
         * preempts the pass (the handover spins: a yield there cost 8 processes of churn 15%). */
        cpu_set_t cpus;
        cr_assert_eq(sched_getaffinity(0, sizeof(cpus), &cpus), 0);
        if (!CPU_ISSET(0, &cpus) || !CPU_ISSET(1, &cpus))
                cr_skip_test("needs CPUs 0 and 1 (the pass on one, the waiting insert on the "
                             "other); this process may run on %d",
                             CPU_COUNT(&cpus));
        cpu_set_t all = cpus;
        pin_to(0);
        int shown = 0;
        for (int attempt = 0; attempt < 5 && !shown; attempt++) {
                thr_limiter *l = idle_shard("big", 4096, 4096);
                uint64_t dme = play_daemon();
                struct waiter w = {.pin = true};
                tprobe(&T.map, ttable(&T, "big"), "new", &w.p);
                g_w = &w;
                atomic_store(&g_segments, 0);
                pthread_t th;
                cr_assert_eq(pthread_create(&th, NULL, waiter_main, &w), 0);
                struct shm_lim_snap snap = tsnap(&T, "big");
                struct shm_maint_args a = tmaint_args(&T, &snap, 0, dme);
                uint32_t cursor = 0;
                struct shm_maint_stats st = {0};
                thr_test_hook = start_waiter;
                shm_table_maintain(&T.map, &snap, &a, &cursor, UINT64_MAX, &st);
                thr_test_hook = NULL;
                pthread_join(th, NULL);
                uint32_t total = atomic_load(&g_segments);
                cr_log_info("attempt %d: %u segments, %u handoffs (%.0f us), the waiter got the "
                            "lock after %u of them; evicted %lu",
                            attempt, total, st.handoffs, (double)st.handoff_ns / 1e3,
                            atomic_load(&w.got_at), (unsigned long)st.evicted);
                cr_assert_eq(atomic_load(&w.rc), 0);
                cr_assert_eq(st.evicted, 4096, "the pass did all its work");
                cr_assert_gt(total, 8, "a shard of many segments");
                shown = st.handoffs > 0 && atomic_load(&w.got_at) < total;
                thr_limiter_close(l);
                tarena_free(&T);
                memset(&T, 0, sizeof(T));
        }
        cr_assert_eq(pthread_setaffinity_np(pthread_self(), sizeof(all), &all), 0);
        cr_assert(shown, "in 5 passes, the waiting insert never got the lock between two segments");
}

/* A client that holds a shard's lock for HOLD_NS (an insert on a slow machine), then lets go. */
struct holder {
        struct shm_probe p;
        uint64_t hold_ns;
        _Atomic int held, done;
};

static void *holder_main(void *arg)
{
        struct holder *h = arg;
        uint64_t me = tlock_me(T.a);
        cr_assert_eq(shm_shard_lock(&T.a->map, &h->p, me, 10 * SEC), 0);
        atomic_store(&h->held, 1);
        uint64_t t0 = mono();
        while (mono() - t0 < h->hold_ns)
                ;
        shm_shard_unlock(&h->p, me);
        atomic_store(&h->done, 1);
        return NULL;
}

/*
 * A client holds the shard's lock when the pass comes to it (its first segment): the pass waits
 * for the client's insert, a bounded time, and does the shard, instead of leaving it for the next
 * pass (which, under steady inserts, left it pass after pass). The client holds it 150 us, within
 * the pass's 4 turns of 100 us; a client descheduled while it holds makes the pass rightly leave
 * the shard: up to 5 attempts.
 */
Test(shardlock, the_daemons_pass_waits_for_an_insert_that_holds_the_first_segment)
{
        bool shown = false;
        for (int attempt = 0; attempt < 5 && !shown; attempt++) {
                thr_limiter *l = idle_shard("one", 1024, 512);
                uint64_t dme = play_daemon();
                struct holder h = {.hold_ns = 150 * 1000};
                tprobe(&T.map, ttable(&T, "one"), "new", &h.p);
                pthread_t th;
                cr_assert_eq(pthread_create(&th, NULL, holder_main, &h), 0);
                while (!atomic_load(&h.held))
                        sched_yield();
                struct shm_lim_snap snap = tsnap(&T, "one");
                struct shm_maint_args a = tmaint_args(&T, &snap, 0, dme);
                uint32_t cursor = 0;
                struct shm_maint_stats st = {0};
                shm_table_maintain(&T.map, &snap, &a, &cursor, UINT64_MAX, &st);
                pthread_join(th, NULL);
                cr_log_info("attempt %d: %u handoffs (%.0f us), busy %u, evicted %lu", attempt,
                            st.handoffs, (double)st.handoff_ns / 1e3, st.busy_shards,
                            (unsigned long)st.evicted);
                shown = st.busy_shards == 0 && st.handoffs > 0 && st.evicted == 512;
                thr_limiter_close(l);
                tarena_free(&T);
                memset(&T, 0, sizeof(T));
        }
        cr_assert(shown, "in 5 passes, a pass never waited for the insert holding its shard");
}

/* ---------------------------------------------------------------- the real daemon */

#define SCRIBBLE_S 3

/* Rewrite every shard header of every table with garbage, for SCRIBBLE_S seconds. */
static void scribbler(const struct tdaemon *d)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        uint64_t x = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
        while (telapsed_s(&t0) < SCRIBBLE_S) {
                for (uint32_t e = 0; e < d->map.g.dir_count; e++) {
                        struct shm_lim_snap snap;
                        if (shm_dir_snapshot(&d->map, e, &snap) < 0)
                                continue;
                        uint8_t *sh = shm_at(d->map.base, snap.table.shards_off);
                        for (uint32_t i = 0; i < snap.table.nshards; i++) {
                                uint64_t *w =
                                    (uint64_t *)(sh + (size_t)i * sizeof(struct thr_shard));
                                for (int k = 0; k < 8; k++) {
                                        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                                        /* garbage, small "pointers", zeroes: what locks take */
                                        w[k] = (x & 3) == 0 ? 0 : (x & 3) == 1 ? (x & 0xfff0) : x;
                                }
                        }
                }
        }
}

Test(shardlock, the_daemon_survives_a_client_rewriting_every_shard_header, .timeout = 60)
{
        struct tdaemon d;
        tdaemon_init(&d);
        tdaemon_config(&d, true, "maintenance_ms = 1\nscan_budget = 100000\n",
                       "[s]\nrate = 1000/s\nburst = 10\ncapacity = 4096\nshards = 16\n"
                       "idle_ttl = 1ms\n");
        int i = tdaemon_start(&d, NULL);
        tdaemon_wait_ready(&d, i, 1);
        thr_limiter *l = tdaemon_lim(&d, 0, "s");
        for (int k = 0; k < 500; k++) {
                char key[16];
                int len = snprintf(key, sizeof(key), "k%d", k);
                thr_limiter_try(l, key, (size_t)len, 1, NULL);
        }
        thr_clock_advance(d.a, SEC); /* every key idle: the daemon evicts, so it locks shards */
        pid_t kid = tfork();
        cr_assert_geq(kid, 0);
        if (kid == 0) {
                scribbler(&d);
                _exit(0);
        }
        int st;
        cr_assert_eq(waitpid(kid, &st, 0), kid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        cr_assert_eq(kill(d.pid[i], 0), 0, "the daemon died; log:\n%s", tdaemon_log(&d, i));
        cr_assert_eq(waitpid(d.pid[i], &st, WNOHANG), 0, "the daemon ended; log:\n%s",
                     tdaemon_log(&d, i));
        tdaemon_stop(&d, i); /* and it still stops cleanly, exit 0 */
        tdaemon_fini(&d);
}

/*
 * test_peer.c - peers through the public API, in one process, on a manual clock: one heartbeat
 * keeps a peer's locks on three semaphores, its expiry releases all of them (final: a late
 * heartbeat is refused), closing it releases all at once; lock levels (the seed's A/B nesting
 * refused when the levels are equal or reversed, accepted when A's is higher; two keys of one
 * limiter; a pending acquire counts); the idempotent acquire and the explicit recount; the
 * remainder, pending and longest pending of thr_sem_stat; a large acquire not overtaken by small
 * ones; a fork child's copy of a peer refused.
 *
 * Waiting threads are real threads; the manual clock is advanced by the test. The properties
 * across forked and SIGKILLed processes are in test_peer_procs.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"
#include "sem.h"
#include "testhook.h"

#define MS 1000000ull

static struct tarena T;

static struct shm_limiter_spec pspec(const char *name, uint64_t max, uint64_t level)
{
        struct shm_limiter_spec s = tspec(name, max, 0, 0, 0);
        s.kind = THR_KIND_SEMAPHORE;
        s.leases = 8;
        s.level = level;
        s.max_reserve_ns = 0;
        return s;
}

/* The seed's A and B, both level 0 ("eq"), reversed ("A0", "B1"), and as the seed fixes it
 * ("A1" over "B0"); "C" at level 2; "big" for counts. */
static void setup(void)
{
        struct shm_limiter_spec s[] = {pspec("A", 1, 0),  pspec("B", 1, 0), pspec("A1", 1, 1),
                                       pspec("B1", 1, 1), pspec("C", 5, 2), pspec("big", 10, 0)};
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 6);
}

/* Every limiter handle a test opened (tlim), closed at its end. */
static thr_limiter *opened[32];
static int nopened;

static thr_limiter *lim(const char *name)
{
        cr_assert_lt(nopened, 32);
        return opened[nopened++] = tlim(&T, name);
}

static void teardown(void)
{
        while (nopened)
                thr_limiter_close(opened[--nopened]);
        tarena_free(&T);
}

TestSuite(peer, .init = setup, .fini = teardown, .timeout = 60);

static void advance(uint64_t ns)
{
        cr_assert_eq(thr_clock_advance(T.a, ns), 0);
}

static uint64_t now_ns(void)
{
        uint64_t t;
        thr_clock_now(T.a, &t);
        return t;
}

static thr_peer *peer(uint64_t expires_in)
{
        thr_peer *p;
        cr_assert_eq(thr_peer_open(T.a, expires_in, &p), 0);
        return p;
}

static struct thr_sem_stat stat_of(thr_limiter *l, const char *key)
{
        struct thr_sem_stat st;
        cr_assert_eq(thr_sem_stat(l, key, strlen(key), &st), 0);
        return st;
}

static int pacq(thr_peer *p, thr_limiter *l, const char *key, uint32_t n)
{
        return thr_peer_acquire(p, l, key, strlen(key), n, 0, 0);
}

/* Whether N units of KEY can be taken now by someone else (a plain try, released at once). */
static bool free_units(thr_limiter *l, const char *key, uint32_t n)
{
        struct thr_lease le;
        int rc = thr_sem_try(l, key, strlen(key), n, SEC, &le);
        cr_assert(rc == 0 || rc == -EAGAIN, "try: %d", rc);
        if (rc == 0)
                cr_assert_eq(thr_sem_release(&le), 0);
        return rc == 0;
}

Test(peer, one_heartbeat_keeps_three_locks_and_the_expiry_releases_all)
{
        thr_limiter *c = lim("C"), *a1 = lim("A1"), *b = lim("B");
        thr_peer *p = peer(SEC);
        cr_assert_eq(pacq(p, c, "x", 5), 0);  /* level 2 */
        cr_assert_eq(pacq(p, a1, "y", 1), 0); /* level 1 */
        cr_assert_eq(pacq(p, b, "z", 1), 0);  /* level 0 */
        cr_assert_eq(thr_peer_expires(p), now_ns() + SEC);
        advance(900 * MS);
        cr_assert_eq(thr_peer_heartbeat(p, SEC), 0);
        advance(900 * MS); /* 1.8 s: past the first expiry, before the second */
        cr_assert_not(free_units(c, "x", 1));
        cr_assert_not(free_units(a1, "y", 1));
        cr_assert_not(free_units(b, "z", 1));
        cr_assert_eq(stat_of(c, "x").held, 5);
        advance(100 * MS); /* 1.9 s: its expiry exactly */
        cr_assert(free_units(c, "x", 5), "the peer's expiry released C/x");
        cr_assert(free_units(a1, "y", 1));
        cr_assert(free_units(b, "z", 1));
        cr_assert_eq(stat_of(c, "x").held, 0);
        /* final: nothing revives it, and it can take nothing */
        cr_assert_eq(thr_peer_heartbeat(p, SEC), -EKEYEXPIRED);
        cr_assert_eq(thr_peer_expires(p), 0);
        cr_assert_eq(pacq(p, c, "x", 1), -EKEYEXPIRED);
        cr_assert_eq(thr_peer_release(p, b, "z", 1), -EKEYEXPIRED);
        cr_assert_eq(thr_peer_close(p), 0);
}

/* A heartbeat that comes when the expiry has passed but nobody has judged the peer yet is too
 * late as well: the keys never disagree about whether it expired. */
Test(peer, a_heartbeat_after_the_expiry_is_refused_even_unjudged)
{
        thr_limiter *c = lim("C");
        thr_peer *p = peer(SEC);
        cr_assert_eq(pacq(p, c, "x", 2), 0);
        advance(SEC);
        cr_assert_eq(thr_peer_heartbeat(p, 10 * SEC), -EKEYEXPIRED);
        cr_assert_eq(stat_of(c, "x").held, 0);
        thr_peer_close(p);
}

Test(peer, close_releases_every_lock_at_once)
{
        thr_limiter *c = lim("C"), *big = lim("big");
        thr_peer *p = peer(3600 * SEC);
        cr_assert_eq(pacq(p, c, "x", 3), 0);
        cr_assert_eq(pacq(p, big, "k", 7), 0); /* C is level 2, big level 0 */
        cr_assert_eq(stat_of(big, "k").remainder, 3);
        struct thr_sem *h =
            shm_sem(shm_slot_aux(T.a->map.base, &big->geo,
                                 shm_table_lookup(T.a->map.base, &big->geo,
                                                  shm_hash(T.a->hdr->hash_key, "k", 1), "k", 1)));
        cr_assert_eq(thr_peer_close(p), 0);
        /* released, not expired: the header's own count, no serve needed */
        cr_assert_eq(atomic_load(&h->held), 0);
        cr_assert_eq(atomic_load(&h->released), 1);
        cr_assert_eq(stat_of(c, "x").held, 0);
        cr_assert_eq(stat_of(big, "k").remainder, 10);
}

/* The seed's example: A and B, both mutexes; holding A, acquiring B is refused unless A's level
 * is above B's. Refused at once, holding nothing more. */
Test(peer, the_seeds_nesting_is_refused_unless_a_is_above_b)
{
        thr_limiter *a = lim("A"), *b = lim("B"), *a1 = lim("A1"), *b1 = lim("B1");
        thr_peer *p = peer(3600 * SEC);
        /* equal levels (0, 0) */
        cr_assert_eq(pacq(p, a, "k", 1), 0);
        cr_assert_eq(pacq(p, b, "k", 1), -EDEADLK);
        cr_assert_eq(stat_of(b, "k").held, 0);
        cr_assert(strstr(thr_strerror(-EDEADLK), "lock hierarchy violation"));
        /* reversed: A at 0 held, B at 1 */
        cr_assert_eq(pacq(p, b1, "k", 1), -EDEADLK);
        cr_assert_eq(thr_peer_release(p, a, "k", 1), 0);
        /* A above B: A1 (level 1), then B (level 0) */
        cr_assert_eq(pacq(p, a1, "k", 1), 0);
        cr_assert_eq(pacq(p, b, "k", 1), 0);
        /* and not back up: holding B (0), A1 again would be the same count (idempotent), but
         * B1 (level 1) is refused */
        cr_assert_eq(pacq(p, b1, "k", 1), -EDEADLK);
        /* two keys of one limiter are two locks at one level */
        cr_assert_eq(pacq(p, b, "other", 1), -EDEADLK);
        cr_assert_eq(thr_peer_release(p, b, "k", 1), 0);
        cr_assert_eq(thr_peer_release(p, a1, "k", 1), 0);
        /* nothing held: anything goes */
        cr_assert_eq(pacq(p, b1, "k", 1), 0);
        cr_assert_eq(thr_peer_close(p), 0);
}

Test(peer, a_repeated_acquire_with_the_same_count_drains_nothing)
{
        thr_limiter *big = lim("big");
        thr_peer *p = peer(3600 * SEC);
        cr_assert_eq(pacq(p, big, "k", 3), 0);
        cr_assert_eq(pacq(p, big, "k", 3), 0);
        cr_assert_eq(thr_peer_acquire(p, big, "k", 1, 3, 10 * SEC, 0), 0, "a retry");
        struct thr_sem_stat st = stat_of(big, "k");
        cr_assert_eq(st.held, 3);
        cr_assert_eq(st.leases, 1);
        cr_assert_eq(st.remainder, 7);
        /* another count: explicit only */
        cr_assert_eq(pacq(p, big, "k", 4), -EEXIST);
        cr_assert_eq(stat_of(big, "k").held, 3);
        cr_assert_eq(thr_peer_acquire(p, big, "k", 1, 1, 0, THR_PEER_RECOUNT), 0);
        cr_assert_eq(stat_of(big, "k").held, 1);
        cr_assert_eq(thr_peer_acquire(p, big, "k", 1, 8, 0, THR_PEER_RECOUNT), 0);
        cr_assert_eq(stat_of(big, "k").held, 8);
        /* more than fits: refused, the lock kept as it was */
        struct thr_lease other;
        cr_assert_eq(thr_sem_try(big, "k", 1, 2, SEC, &other), 0);
        cr_assert_eq(thr_peer_acquire(p, big, "k", 1, 9, 0, THR_PEER_RECOUNT), -EAGAIN);
        cr_assert_eq(stat_of(big, "k").held, 10);
        cr_assert_eq(thr_sem_release(&other), 0);
        /* same count after a recount: idempotent again */
        cr_assert_eq(pacq(p, big, "k", 8), 0);
        cr_assert_eq(stat_of(big, "k").held, 8);
        cr_assert_eq(thr_peer_release(p, big, "k", 1), 0);
        cr_assert_eq(thr_peer_release(p, big, "k", 1), -ENOENT);
        cr_assert_eq(stat_of(big, "k").held, 0);
        cr_assert_eq(thr_peer_close(p), 0);
}

struct waiter {
        thr_peer *p;
        thr_limiter *l;
        const char *key;
        uint32_t n;
        _Atomic int rc;
        _Atomic int done;
};

static void *wait_thread(void *arg)
{
        struct waiter *w = arg;
        int rc = thr_peer_acquire(w->p, w->l, w->key, strlen(w->key), w->n, 3600 * SEC, 0);
        atomic_store(&w->rc, rc);
        atomic_store(&w->done, 1);
        return NULL;
}

static void wait_for(_Atomic int *flag, const char *what)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (!atomic_load(flag)) {
                cr_assert_lt(telapsed_s(&t0), 10.0, "%s", what);
                tdoze();
        }
}

/* Until the key shows N waiters (thr_sem_stat's pending). */
static void wait_pending(thr_limiter *l, const char *key, uint64_t n)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (stat_of(l, key).pending != n) {
                cr_assert_lt(telapsed_s(&t0), 10.0, "never %lu pending", (unsigned long)n);
                tdoze();
        }
}

Test(peer, pending_state_remainder_and_the_longest_wait)
{
        thr_limiter *big = lim("big");
        thr_peer *holder = peer(3600 * SEC), *p = peer(3600 * SEC);
        cr_assert_eq(pacq(holder, big, "k", 6), 0);
        struct waiter w = {.p = p, .l = big, .key = "k", .n = 7};
        pthread_t t;
        pthread_create(&t, NULL, wait_thread, &w);
        wait_pending(big, "k", 1);
        cr_assert_eq(thr_peer_pending(p), 1);
        cr_assert_eq(thr_peer_pending(holder), 0);
        advance(250 * MS);
        struct thr_sem_stat st = stat_of(big, "k");
        cr_assert_eq(st.held, 6);
        cr_assert_eq(st.remainder, 4);
        cr_assert_eq(st.pending, 1);
        cr_assert_eq(st.pending_units, 7);
        cr_assert_eq(st.longest_pending_ns, 250 * MS);
        cr_assert_eq(st.max, 10);
        /* the same peer and key from another thread while it is pending */
        cr_assert_eq(pacq(p, big, "k", 7), -EALREADY);
        cr_assert_eq(thr_peer_close(p), -EBUSY);
        cr_assert_eq(thr_peer_release(holder, big, "k", 1), 0);
        wait_for(&w.done, "the waiter was never granted");
        pthread_join(t, NULL);
        cr_assert_eq(atomic_load(&w.rc), 0);
        cr_assert_eq(thr_peer_pending(p), 0);
        st = stat_of(big, "k");
        cr_assert_eq(st.held, 7);
        cr_assert_eq(st.pending, 0);
        cr_assert_eq(st.longest_pending_ns, 0);
        cr_assert_eq(thr_peer_close(p), 0);
        cr_assert_eq(thr_peer_close(holder), 0);
        cr_assert_eq(stat_of(big, "k").held, 0);
}

/* A pending acquire counts for the level rule: a peer waiting for level 2 can take only levels
 * below 2 meanwhile, downwards. */
Test(peer, a_pending_acquire_counts_for_the_levels)
{
        thr_limiter *c = lim("C"), *b = lim("B"), *b1 = lim("B1");
        thr_peer *holder = peer(3600 * SEC), *p = peer(3600 * SEC);
        cr_assert_eq(pacq(holder, c, "x", 5), 0);
        struct waiter w = {.p = p, .l = c, .key = "x", .n = 1};
        pthread_t t;
        pthread_create(&t, NULL, wait_thread, &w);
        wait_pending(c, "x", 1);
        cr_assert_eq(pacq(p, c, "y", 1), -EDEADLK);
        cr_assert_eq(pacq(p, b1, "k", 1), 0);
        cr_assert_eq(pacq(p, b1, "other", 1), -EDEADLK);
        cr_assert_eq(pacq(p, b, "k", 1), 0);
        cr_assert_eq(thr_peer_close(holder), 0);
        wait_for(&w.done, "never granted");
        pthread_join(t, NULL);
        cr_assert_eq(atomic_load(&w.rc), 0);
        cr_assert_eq(thr_peer_close(p), 0);
}

/* Granted to a peer that had expired while it waited: void, and the caller is told. */
Test(peer, a_grant_to_an_expired_peer_holds_nothing)
{
        thr_limiter *big = lim("big");
        thr_peer *holder = peer(3600 * SEC), *p = peer(SEC);
        cr_assert_eq(pacq(holder, big, "k", 10), 0);
        struct waiter w = {.p = p, .l = big, .key = "k", .n = 4};
        pthread_t t;
        pthread_create(&t, NULL, wait_thread, &w);
        wait_pending(big, "k", 1);
        advance(2 * SEC);
        cr_assert_eq(thr_peer_release(holder, big, "k", 1), 0);
        wait_for(&w.done, "never answered");
        pthread_join(t, NULL);
        cr_assert_eq(atomic_load(&w.rc), -EKEYEXPIRED);
        cr_assert_eq(stat_of(big, "k").held, 0);
        cr_assert_eq(thr_peer_close(p), 0);
        cr_assert_eq(thr_peer_close(holder), 0);
}

/* Max 10, 1 held; a large acquire (10) queues, then eight small ones (1 each): though 9 units are
 * free, no small one is served before the large one, which is served first at the release. */
Test(peer, a_large_acquire_is_not_overtaken_by_small_ones)
{
        thr_limiter *big = lim("big");
        thr_peer *holder = peer(3600 * SEC), *large = peer(3600 * SEC), *small[8];
        struct waiter wl = {.p = large, .l = big, .key = "k", .n = 10}, ws[8];
        pthread_t tl, ts[8];
        cr_assert_eq(pacq(holder, big, "k", 1), 0);
        pthread_create(&tl, NULL, wait_thread, &wl);
        wait_pending(big, "k", 1);
        for (int i = 0; i < 8; i++) {
                small[i] = peer(3600 * SEC);
                ws[i] = (struct waiter){.p = small[i], .l = big, .key = "k", .n = 1};
                pthread_create(&ts[i], NULL, wait_thread, &ws[i]);
                wait_pending(big, "k", (uint64_t)i + 2);
        }
        advance(SEC); /* the waiters check on their own: still nobody fits before the large */
        struct thr_sem_stat st = stat_of(big, "k");
        cr_assert_eq(st.held, 1);
        cr_assert_eq(st.pending, 9);
        cr_assert_eq(st.pending_units, 18);
        cr_assert_eq(thr_peer_release(holder, big, "k", 1), 0);
        wait_for(&wl.done, "the large one was never served");
        cr_assert_eq(atomic_load(&wl.rc), 0);
        st = stat_of(big, "k");
        cr_assert_eq(st.held, 10);
        cr_assert_eq(st.pending, 8);
        for (int i = 0; i < 8; i++)
                cr_assert_not(atomic_load(&ws[i].done), "small %d served with the large", i);
        cr_assert_eq(thr_peer_close(large), 0);
        for (int i = 0; i < 8; i++) {
                wait_for(&ws[i].done, "a small one was never served");
                pthread_join(ts[i], NULL);
                cr_assert_eq(atomic_load(&ws[i].rc), 0);
                cr_assert_eq(thr_peer_close(small[i]), 0);
        }
        pthread_join(tl, NULL);
        cr_assert_eq(thr_peer_close(holder), 0);
}

/* A fork child's copy of its parent's peer can neither take, release nor prolong anything; its
 * close frees the copy only. */
Test(peer, a_fork_childs_copy_of_a_peer_is_refused)
{
        thr_limiter *big = lim("big");
        thr_peer *p = peer(3600 * SEC);
        cr_assert_eq(pacq(p, big, "k", 4), 0);
        pid_t c = tfork();
        cr_assert_geq(c, 0);
        if (c == 0) {
                int bad = 0;
                bad |= pacq(p, big, "k", 4) != -EPERM;
                bad |= pacq(p, big, "other", 1) != -EPERM;
                bad |= thr_peer_release(p, big, "k", 1) != -EPERM;
                bad |= thr_peer_heartbeat(p, SEC) != -EPERM;
                bad |= thr_peer_pending(p) != -EPERM;
                bad |= thr_peer_close(p) != 0;
                _exit(bad);
        }
        int status;
        cr_assert_eq(waitpid(c, &status, 0), c);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
        cr_assert_eq(stat_of(big, "k").held, 4);
        cr_assert_eq(thr_peer_heartbeat(p, SEC), 0);
        cr_assert_eq(thr_peer_close(p), 0);
        cr_assert_eq(stat_of(big, "k").held, 0);
}

Test(peer, stat_of_a_missing_key_creates_nothing)
{
        thr_limiter *big = lim("big");
        struct thr_sem_stat st = stat_of(big, "nobody");
        cr_assert_eq(st.max, 10);
        cr_assert_eq(st.remainder, 10);
        cr_assert_eq(st.held, 0);
        cr_assert_eq(atomic_load(&ttable(&T, "big")->live), 0);
        struct thr_sem_stat x;
        cr_assert_eq(thr_sem_stat(big, "", 0, &x), -EINVAL);
}

Test(peer, bad_arguments)
{
        thr_limiter *big = lim("big");
        thr_peer *p = NULL;
        cr_assert_eq(thr_peer_open(T.a, 0, &p), -EINVAL);
        cr_assert_eq(thr_peer_open(NULL, SEC, &p), -EINVAL);
        p = peer(SEC);
        cr_assert_eq(thr_peer_acquire(p, big, "k", 1, 0, 0, 0), -EINVAL);
        cr_assert_eq(thr_peer_acquire(p, big, "k", 1, 1, 0, 0x80), -EINVAL);
        cr_assert_eq(thr_peer_acquire(p, big, "k", 1, 11, 0, 0), -ERANGE);
        char longkey[THR_KEY_MAX_LEN + 1];
        memset(longkey, 'x', sizeof(longkey));
        cr_assert_eq(thr_peer_acquire(p, big, longkey, sizeof(longkey), 1, 0, 0), -ENAMETOOLONG);
        cr_assert_eq(thr_peer_heartbeat(p, 0), -EINVAL);
        cr_assert_eq(thr_peer_release(p, big, "k", 1), -ENOENT);
        cr_assert_eq(thr_peer_close(p), 0);
}

/* ---------------------------------------------------------------- a granter killed mid-grant */

static void die_at_grant(enum thr_hook_point pt, void *arg)
{
        (void)arg;
        if (pt == THR_HOOK_SEM_GRANT_FILLED)
                raise(SIGKILL); /* the lease is filled for the waiter, its state not yet changed */
}

/* A child holding "k" of LIM releases it and is SIGKILLed in the serve of that release, after
 * it filled the lease for the waiter and before the CAS that tells it. */
static pid_t granter(thr_limiter *l, int fds[2])
{
        pid_t kid = tfork();
        cr_assert_geq(kid, 0);
        if (kid == 0) {
                struct thr_lease le;
                char c;
                if (thr_sem_try(l, "k", 1, 1, 3600 * SEC, &le) != 0 || write(fds[1], &c, 1) != 1 ||
                    read(fds[0], &c, 1) != 1)
                        _exit(1);
                thr_test_hook = die_at_grant;
                thr_sem_release(&le);
                _exit(2); /* never reached: the hook fires */
        }
        return kid;
}

struct plain_waiter {
        thr_limiter *l;
        int rc;
        struct thr_lease le;
        _Atomic int done;
};

static void *plain_wait(void *arg)
{
        struct plain_waiter *w = arg;
        w->rc = thr_sem_acquire(w->l, "k", 1, 1, 3600 * SEC, 3600 * SEC, &w->le);
        atomic_store(&w->done, 1);
        return NULL;
}

/* Whether the waiter's thread has its lease: waited for in real time (its checks come every 1 ms
 * on a manual clock); without the adoption it waits its whole timeout. */
static bool done_within(_Atomic int *done, double s)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (!atomic_load(done) && telapsed_s(&t0) < s)
                tdoze();
        return atomic_load(done);
}

/* The waiter (a peer's acquire) adopts the lease its dead granter filled: the peer holds one
 * lease (not one orphaned and one more), and its release gives the unit back. */
Test(peer, a_grant_whose_granter_was_killed_is_adopted_by_the_peer)
{
        thr_limiter *m = lim("A"); /* max 1 */
        int to_kid[2], from_kid[2], ends[2];
        cr_assert_eq(pipe(to_kid), 0);
        cr_assert_eq(pipe(from_kid), 0);
        ends[0] = to_kid[0];
        ends[1] = from_kid[1];
        pid_t kid = granter(m, ends);
        char c = 0;
        cr_assert_eq(read(from_kid[0], &c, 1), 1);
        thr_peer *p = peer(3600 * SEC);
        struct waiter w = {.p = p, .l = m, .key = "k", .n = 1};
        pthread_t t;
        pthread_create(&t, NULL, wait_thread, &w);
        wait_pending(m, "k", 1);
        cr_assert_eq(write(to_kid[1], &c, 1), 1);
        int status;
        cr_assert_eq(waitpid(kid, &status, 0), kid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %d", status);
        bool got = done_within(&w.done, 10.0);
        if (!got)
                advance(7200 * SEC); /* let it time out, to end the test */
        pthread_join(t, NULL);
        cr_assert(got, "the waiter never adopted its grant");
        cr_assert_eq(atomic_load(&w.rc), 0);
        struct thr_sem_stat st = stat_of(m, "k");
        cr_assert_eq(st.held, 1);
        cr_assert_eq(st.leases, 1, "one lease, the peer's: none orphaned");
        cr_assert_eq(thr_peer_release(p, m, "k", 1), 0);
        cr_assert_eq(stat_of(m, "k").remainder, 1);
        cr_assert_eq(thr_peer_close(p), 0);
}

/* The same for a plain lease: the acquire returns it, and its release frees it. */
Test(peer, a_grant_whose_granter_was_killed_is_adopted_by_a_plain_waiter)
{
        thr_limiter *m = lim("A");
        int to_kid[2], from_kid[2], ends[2];
        cr_assert_eq(pipe(to_kid), 0);
        cr_assert_eq(pipe(from_kid), 0);
        ends[0] = to_kid[0];
        ends[1] = from_kid[1];
        pid_t kid = granter(m, ends);
        char c = 0;
        cr_assert_eq(read(from_kid[0], &c, 1), 1);
        struct plain_waiter w = {.l = m};
        pthread_t t;
        pthread_create(&t, NULL, plain_wait, &w);
        wait_pending(m, "k", 1);
        cr_assert_eq(write(to_kid[1], &c, 1), 1);
        cr_assert_eq(waitpid(kid, NULL, 0), kid);
        bool got = done_within(&w.done, 10.0);
        if (!got)
                advance(7200 * SEC);
        pthread_join(t, NULL);
        cr_assert(got, "the waiter never adopted its grant");
        cr_assert_eq(w.rc, 0);
        cr_assert_eq(stat_of(m, "k").leases, 1);
        cr_assert_eq(thr_sem_release(&w.le), 0);
        cr_assert_eq(stat_of(m, "k").held, 0);
}

/* A client rewriting a waiter's word to say "granted" with no lease granted: the waiter finds no
 * lease naming its wait (-EKEYEXPIRED: nothing held), it reads nothing outside the key. */
Test(peer, a_rewritten_grant_is_refused_not_followed)
{
        thr_limiter *m = lim("A");
        thr_peer *holder = peer(3600 * SEC), *p = peer(3600 * SEC);
        cr_assert_eq(pacq(holder, m, "k", 1), 0);
        struct waiter w = {.p = p, .l = m, .key = "k", .n = 1};
        pthread_t t;
        pthread_create(&t, NULL, wait_thread, &w);
        wait_pending(m, "k", 1);
        struct thr_reader *rec = shm_at(T.a->map.base, T.a->map.g.reader_off), *r = NULL;
        for (uint32_t i = 0; i < T.a->map.g.reader_count && !r; i++)
                if (THR_WAIT_STATE(atomic_load(&rec[i].wait_state)) == THR_WAIT_WAITING ||
                    THR_WAIT_STATE(atomic_load(&rec[i].wait_state)) == THR_WAIT_HEAD)
                        r = &rec[i];
        cr_assert_not_null(r);
        atomic_store(&r->wait_state, THR_WAIT_AS(atomic_load(&r->wait_state), THR_WAIT_GRANTED));
        cr_assert(done_within(&w.done, 10.0));
        pthread_join(t, NULL);
        /* no lease names its wait: told nothing is held, nothing read outside the key */
        cr_assert_eq(atomic_load(&w.rc), -EKEYEXPIRED);
        cr_assert_eq(thr_peer_close(p), 0);
        cr_assert_eq(thr_peer_close(holder), 0);
}

/* A lock stays known to its peer through any handle of its limiter, and a closed handle of
 * another limiter is never read by later calls. */
Test(peer, locks_are_known_by_limiter_not_by_handle)
{
        thr_limiter *b1 = lim("B1"), *big = lim("big"), *b1_again;
        cr_assert_eq(thr_limiter_open(T.a, "B1", &b1_again), 0);
        thr_peer *p = peer(3600 * SEC);
        cr_assert_eq(pacq(p, b1, "k", 1), 0);
        cr_assert_eq(pacq(p, b1_again, "k", 1), 0, "the same lock: idempotent");
        cr_assert_eq(stat_of(b1, "k").held, 1);
        thr_limiter *other;
        cr_assert_eq(thr_limiter_open(T.a, "C", &other), 0);
        thr_limiter_close(other); /* no lock through it: closing it is fine */
        cr_assert_eq(pacq(p, big, "k", 3), 0);
        cr_assert_eq(thr_peer_release(p, b1_again, "k", 1), 0);
        cr_assert_eq(stat_of(b1, "k").held, 0);
        thr_limiter_close(b1_again);
        cr_assert_eq(thr_peer_close(p), 0);
}

/* A manual clock near its top: expiries saturate, they never wrap to the past. */
Test(peer, an_expiry_near_the_top_of_the_clock_saturates)
{
        advance(UINT64_MAX - now_ns() - 1000);
        thr_peer *p = peer(SEC);
        cr_assert_eq(thr_peer_expires(p), UINT64_MAX);
        cr_assert_eq(thr_peer_heartbeat(p, SEC), 0);
        cr_assert_eq(thr_peer_close(p), 0);
}

/* The same on a hugetlbfs arena (the tests above use the /dev/shm fallback): a peer's locks on
 * two semaphores kept by its heartbeat and released by its expiry; a child's peer SIGKILLed, its
 * lock reclaimed (stat judges its liveness). Skipped, with the reason, where no pool is free. */
TestSuite(peer_huge, .fini = teardown, .timeout = 60);

Test(peer_huge, peers_on_a_hugetlbfs_arena)
{
        char why[256];
        if (!thugepages_available(4, why, sizeof(why)))
                cr_skip_test("hugetlbfs: %s", why);
        struct shm_limiter_spec s[] = {pspec("C", 5, 2), pspec("big", 10, 0)};
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_REQUIRE, s, 2);
        cr_assert_eq(shm_hdr(&T.map)->backing, THR_BACKING_HUGETLBFS, "arena at %s", T.path);
        thr_limiter *c = lim("C"), *big = lim("big");
        thr_peer *p = peer(SEC);
        cr_assert_eq(pacq(p, c, "x", 5), 0);
        cr_assert_eq(pacq(p, big, "k", 4), 0);
        advance(900 * MS);
        cr_assert_eq(thr_peer_heartbeat(p, SEC), 0);
        advance(900 * MS);
        cr_assert_eq(stat_of(c, "x").held, 5);
        cr_assert_eq(stat_of(big, "k").remainder, 6);
        advance(100 * MS);
        cr_assert_eq(stat_of(c, "x").held, 0);
        cr_assert_eq(stat_of(big, "k").remainder, 10);
        cr_assert_eq(thr_peer_close(p), 0);
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t kid = tfork();
        cr_assert_geq(kid, 0);
        if (kid == 0) {
                thr_arena *a;
                thr_limiter *l;
                thr_peer *q;
                char ch = 1;
                if (thr_arena_open(T.path, 0, &a) < 0 || thr_limiter_open(a, "big", &l) < 0 ||
                    thr_peer_open(a, 3600 * SEC, &q) < 0 ||
                    thr_peer_acquire(q, l, "k", 1, 7, 0, 0) != 0 || write(fds[1], &ch, 1) != 1)
                        _exit(1);
                for (;;)
                        pause();
        }
        char ch;
        cr_assert_eq(read(fds[0], &ch, 1), 1);
        cr_assert_eq(stat_of(big, "k").held, 7);
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
        cr_assert_eq(stat_of(big, "k").held, 0);
}

/* ---------------------------------------------------------------- scribbled waits */

/* The reader record of the thread queued on a key (the only one queued), or fail. */
static struct thr_reader *queued_record(void)
{
        struct thr_reader *rec = shm_at(T.a->map.base, T.a->map.g.reader_off);
        for (uint32_t i = 0; i < T.a->map.g.reader_count; i++) {
                uint32_t st = THR_WAIT_STATE(atomic_load(&rec[i].wait_state));
                if (st == THR_WAIT_WAITING || st == THR_WAIT_HEAD)
                        return &rec[i];
        }
        cr_assert_fail("nobody queued");
        return NULL;
}

/* A client rewriting a queued waiter's word (NONE of its epoch): the wait is void at once,
 * -EBADMSG; it never spins on the key's lock until its deadline (an hour here). */
Test(peer, a_rewritten_wait_word_voids_the_wait_at_once)
{
        thr_limiter *m = lim("A");
        struct thr_lease held;
        cr_assert_eq(thr_sem_try(m, "k", 1, 1, 3600 * SEC, &held), 0);
        struct plain_waiter w = {.l = m};
        pthread_t t;
        pthread_create(&t, NULL, plain_wait, &w);
        wait_pending(m, "k", 1);
        struct thr_reader *r = queued_record();
        atomic_store(&r->wait_state, THR_WAIT_AS(atomic_load(&r->wait_state), THR_WAIT_NONE));
        bool done = done_within(&w.done, 10.0);
        if (!done)
                advance(7200 * SEC);
        pthread_join(t, NULL);
        cr_assert(done, "the waiter kept waiting on a rewritten word");
        cr_assert_eq(w.rc, -EBADMSG);
        cr_assert_eq(thr_sem_release(&held), 0);
        cr_assert_eq(stat_of(m, "k").held, 0);
}

/* A client rewriting a held lease's waiter word to name a queued wait of the same process: the
 * waiter does not take that lease (it is older than the wait); it is granted only when the lease
 * is released, and then holds its own. */
Test(peer, a_lease_older_than_the_wait_is_never_its_grant)
{
        thr_limiter *m = lim("A");
        struct thr_lease held;
        cr_assert_eq(thr_sem_try(m, "k", 1, 1, 3600 * SEC, &held), 0);
        struct plain_waiter w = {.l = m};
        pthread_t t;
        pthread_create(&t, NULL, plain_wait, &w);
        wait_pending(m, "k", 1);
        struct thr_reader *r = queued_record();
        uint32_t idx =
            (uint32_t)(r - (struct thr_reader *)shm_at(T.a->map.base, T.a->map.g.reader_off));
        struct thr_lease_priv *hp = thr_lease_priv(&held);
        struct thr_lease_rec *lr =
            shm_sem_lease(shm_slot_aux(T.a->map.base, &m->geo, hp->slot), hp->idx);
        atomic_store(&lr->waiter, shm_sem_waiter_id(idx, atomic_load(&r->wait_state)));
        cr_assert_not(done_within(&w.done, 1.0), "the waiter took a lease held by another");
        cr_assert_eq(thr_sem_release(&held), 0);
        bool done = done_within(&w.done, 10.0);
        if (!done)
                advance(7200 * SEC);
        pthread_join(t, NULL);
        cr_assert(done);
        cr_assert_eq(w.rc, 0);
        struct thr_sem_stat st = stat_of(m, "k");
        cr_assert_eq(st.held, 1);
        cr_assert_eq(st.leases, 1);
        cr_assert_eq(thr_sem_release(&w.le), 0);
        cr_assert_eq(stat_of(m, "k").held, 0);
}

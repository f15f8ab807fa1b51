/*
 * test_sem.c - semaphore keys through the public API, in one process, on a manual clock: counts
 * never above max, -ERANGE for an amount above max, try never waits, leases per key bounded
 * (-ENOBUFS), expiry reclaimed by the next acquire that needs the count, heartbeats that keep a
 * lease, stale handles (-EKEYEXPIRED) that free nothing, oldest-first service of queued acquires
 * (a large head not overtaken), timeouts that hold nothing, a lease that outlives the thread that
 * took it, a closed arena's leases reclaimed, eviction of idle keys only, config faults.
 *
 * Waiting threads are real threads; the manual clock is advanced by the test. The properties
 * across forked and SIGKILLed processes are in test_sem_procs.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"
#include "sem.h"

#define MS 1000000ull

static struct tarena T;

static struct shm_limiter_spec sspec(const char *name, uint64_t max, uint64_t leases)
{
        struct shm_limiter_spec s = tspec(name, max, 0, 0, 0);
        s.kind = THR_KIND_SEMAPHORE;
        s.leases = leases;
        s.max_reserve_ns = 0;
        return s;
}

static void setup(void)
{
        struct shm_limiter_spec s[] = {sspec("A", 42, 8), sspec("mutex", 1, 4), sspec("few", 10, 2),
                                       sspec("tiny", 3, 4)};
        s[3].capacity = 2;
        s[3].on_full = THR_FULL_EVICT;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 4);
}

static void teardown(void)
{
        tarena_free(&T);
}

TestSuite(sem, .init = setup, .fini = teardown);

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

/* The key's header, read racily (the test is the only user while it reads). */
static struct thr_sem *hdr(thr_limiter *l, const char *key)
{
        struct thr_reservation_priv loc;
        cr_assert_eq(thr_op_locate(l, key, strlen(key), &loc), 0);
        return shm_sem(shm_slot_aux(T.a->map.base, &l->geo, (struct thr_slot *)loc.slot));
}

Test(sem, holds_at_most_max)
{
        thr_limiter *l = tlim(&T, "A");
        struct thr_lease a, b, c;
        cr_assert_eq(thr_sem_try(l, "k", 1, 40, SEC, &a), 0);
        cr_assert_eq(a.amount, 40);
        cr_assert_eq(a.expires_ns, now_ns() + SEC);
        cr_assert_eq(thr_sem_try(l, "k", 1, 3, SEC, &b), -EAGAIN, "40 + 3 > 42");
        cr_assert_eq(thr_sem_try(l, "k", 1, 2, SEC, &b), 0);
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, SEC, &c), -EAGAIN);
        cr_assert_eq(hdr(l, "k")->held, 42);
        cr_assert_eq(thr_sem_try(l, "other", 5, 42, SEC, &c), 0, "keys are apart");
        cr_assert_eq(thr_sem_release(&a), 0);
        cr_assert_eq(hdr(l, "k")->held, 2);
        cr_assert_eq(thr_sem_try(l, "k", 1, 40, SEC, &a), 0);
        cr_assert_eq(thr_sem_release(&a), 0);
        cr_assert_eq(thr_sem_release(&a), -EINVAL, "a handle released is empty");
        cr_assert_eq(thr_sem_release(&b), 0);
        cr_assert_eq(thr_sem_release(&c), 0);
        cr_assert_eq(hdr(l, "k")->held, 0);
        thr_limiter_close(l);
}

Test(sem, amount_above_max_is_refused_at_once)
{
        thr_limiter *l = tlim(&T, "A");
        struct thr_lease a;
        cr_assert_eq(thr_sem_acquire(l, "k", 1, 43, SEC, 10 * SEC, &a), -ERANGE);
        cr_assert_eq(thr_sem_try(l, "k", 1, 43, SEC, &a), -ERANGE);
        cr_assert_eq(thr_sem_try(l, "k", 1, 0, SEC, &a), -EINVAL);
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, 0, &a), -EINVAL, "a lease needs a ttl");
        thr_limiter_close(l);
}

Test(sem, other_kinds_refuse_semaphore_calls)
{
        struct tarena G;
        struct shm_limiter_spec g = tspec("g", 10, SEC, 10, 10);
        tarena_make(&G, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &g, 1);
        thr_limiter *gl = tlim(&G, "g");
        struct thr_lease a;
        cr_assert_eq(thr_sem_try(gl, "k", 1, 1, SEC, &a), -EOPNOTSUPP);
        thr_limiter_close(gl);
        tarena_free(&G);
        thr_limiter *l = tlim(&T, "A");
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), -EOPNOTSUPP);
        struct thr_hold h;
        cr_assert_eq(thr_serial_begin(l, "k", 1, 1, 0, &h), -EOPNOTSUPP);
        thr_limiter_close(l);
}

Test(sem, expired_lease_is_reclaimed_by_the_acquire_that_needs_it)
{
        thr_limiter *l = tlim(&T, "mutex");
        struct thr_lease a, b;
        cr_assert_eq(thr_sem_try(l, "m", 1, 1, 100 * MS, &a), 0);
        advance(100 * MS - 1);
        cr_assert_eq(thr_sem_try(l, "m", 1, 1, SEC, &b), -EAGAIN, "1 ns before it expires");
        advance(1);
        cr_assert_eq(thr_sem_try(l, "m", 1, 1, SEC, &b), 0, "expired: its count is back");
        cr_assert_eq(hdr(l, "m")->expired, 1);
        cr_assert_eq(thr_sem_release(&a), -EKEYEXPIRED, "the stale handle frees nothing");
        cr_assert_eq(thr_sem_heartbeat(&b, SEC), 0);
        cr_assert_eq(hdr(l, "m")->held, 1, "b still holds");
        cr_assert_eq(thr_sem_release(&b), 0);
        thr_limiter_close(l);
}

Test(sem, heartbeat_keeps_a_lease_past_its_first_ttl)
{
        thr_limiter *l = tlim(&T, "mutex");
        struct thr_lease a, b;
        cr_assert_eq(thr_sem_try(l, "m", 1, 1, 100 * MS, &a), 0);
        for (int i = 0; i < 10; i++) {
                advance(90 * MS);
                cr_assert_eq(thr_sem_heartbeat(&a, 100 * MS), 0, "beat %d", i);
                cr_assert_eq(a.expires_ns, now_ns() + 100 * MS);
                cr_assert_eq(thr_sem_try(l, "m", 1, 1, SEC, &b), -EAGAIN, "still held at %d", i);
        }
        advance(100 * MS);
        cr_assert_eq(thr_sem_heartbeat(&a, 100 * MS), -EKEYEXPIRED, "too late: reclaimed");
        cr_assert_eq(thr_sem_try(l, "m", 1, 1, SEC, &b), 0);
        cr_assert_eq(thr_sem_release(&a), -EKEYEXPIRED, "and it never frees b's count");
        cr_assert_eq(hdr(l, "m")->held, 1);
        cr_assert_eq(thr_sem_release(&b), 0);
        thr_limiter_close(l);
}

/* A thread blocked in thr_sem_acquire, its outcome recorded. */
struct acq {
        thr_limiter *l;
        const char *key;
        uint32_t amount;
        uint64_t timeout;
        int rc;
        _Atomic int done;
        struct thr_lease lease;
};

static void *acquirer(void *arg)
{
        struct acq *q = arg;
        q->rc = thr_sem_acquire(q->l, q->key, strlen(q->key), q->amount, 10 * SEC, q->timeout,
                                &q->lease);
        atomic_store(&q->done, 1);
        return NULL;
}

/* Wait (real time, bounded) until the key has N queued. */
static void until_queued(thr_limiter *l, const char *key, uint32_t n)
{
        struct thr_sem *h = hdr(l, key);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (atomic_load(&h->waiters) != n) {
                if (telapsed_s(&t0) > 10)
                        cr_assert_fail("never %u queued (%u)", n, atomic_load(&h->waiters));
                usleep(1000);
        }
}

static void until_done(struct acq *q)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (!atomic_load(&q->done)) {
                if (telapsed_s(&t0) > 10)
                        cr_assert_fail("an acquire never returned");
                usleep(1000);
        }
}

Test(sem, lease_records_per_key_are_bounded)
{
        thr_limiter *l = tlim(&T, "few"); /* max 10, 2 leases a key */
        struct thr_lease a, b, c;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, SEC, &a), 0);
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, SEC, &b), 0);
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, SEC, &c), -ENOBUFS, "room in count, no record");
        /* a wait that ends for want of a record says so (the clock is the test's: the waiter
         * runs in a thread, and the test moves time past its deadline) */
        struct acq q = {.l = l, .key = "k", .amount = 1, .timeout = 5 * MS};
        pthread_t t;
        pthread_create(&t, NULL, acquirer, &q);
        until_queued(l, "k", 1);
        advance(5 * MS);
        until_done(&q);
        pthread_join(t, NULL);
        cr_assert_eq(q.rc, -ENOBUFS, "got %d", q.rc);
        cr_assert_eq(hdr(l, "k")->leases, 2, "and it holds nothing");
        cr_assert_eq(thr_sem_release(&a), 0);
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, SEC, &c), 0);
        thr_sem_release(&b);
        thr_sem_release(&c);
        thr_limiter_close(l);
}

Test(sem, queued_acquires_are_served_oldest_first_and_a_large_head_is_not_overtaken)
{
        thr_limiter *l = tlim(&T, "A"); /* max 42 */
        struct thr_lease hold;
        cr_assert_eq(thr_sem_try(l, "q", 1, 40, 10 * SEC, &hold), 0);
        struct acq big = {.l = l, .key = "q", .amount = 30, .timeout = 20 * SEC};
        struct acq small1 = {.l = l, .key = "q", .amount = 1, .timeout = 20 * SEC};
        struct acq small2 = {.l = l, .key = "q", .amount = 2, .timeout = 20 * SEC};
        pthread_t t1, t2, t3;
        pthread_create(&t1, NULL, acquirer, &big);
        until_queued(l, "q", 1);
        pthread_create(&t2, NULL, acquirer, &small1);
        until_queued(l, "q", 2);
        pthread_create(&t3, NULL, acquirer, &small2);
        until_queued(l, "q", 3);
        struct thr_lease x;
        cr_assert_eq(thr_sem_try(l, "q", 1, 1, SEC, &x), -EAGAIN,
                     "2 units are free, but 3 are queued before this try");
        usleep(30000); /* the small ones would fit now (2 free): they must not be granted */
        cr_assert_eq(atomic_load(&small1.done), 0, "small1 overtook the large head");
        cr_assert_eq(atomic_load(&small2.done), 0);
        cr_assert_eq(thr_sem_release(&hold), 0); /* 42 free: big, then small1, small2 */
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        pthread_join(t3, NULL);
        cr_assert_eq(big.rc, 0);
        cr_assert_eq(small1.rc, 0);
        cr_assert_eq(small2.rc, 0);
        cr_assert_eq(hdr(l, "q")->held, 33);
        /* grant order is generation order (the key's counter grows with each grant); the order
         * the threads returned in is the scheduler's */
        uint64_t g0 = thr_lease_priv(&big.lease)->gen, g1 = thr_lease_priv(&small1.lease)->gen,
                 g2 = thr_lease_priv(&small2.lease)->gen;
        cr_assert(g0 < g1 && g1 < g2, "granted oldest first (generations %lu %lu %lu)",
                  (unsigned long)g0, (unsigned long)g1, (unsigned long)g2);
        thr_sem_release(&big.lease);
        thr_sem_release(&small1.lease);
        thr_sem_release(&small2.lease);
        cr_assert_eq(hdr(l, "q")->held, 0);
        thr_limiter_close(l);
}

Test(sem, a_timed_out_acquire_holds_nothing)
{
        thr_limiter *l = tlim(&T, "mutex");
        struct thr_lease hold;
        cr_assert_eq(thr_sem_try(l, "t", 1, 1, 10 * SEC, &hold), 0);
        struct acq q = {.l = l, .key = "t", .amount = 1, .timeout = 50 * MS};
        pthread_t t;
        pthread_create(&t, NULL, acquirer, &q);
        until_queued(l, "t", 1);
        advance(50 * MS); /* the manual clock passes its deadline: the next wake gives up */
        until_done(&q);
        pthread_join(t, NULL);
        cr_assert_eq(q.rc, -ETIMEDOUT);
        cr_assert_eq(hdr(l, "t")->held, 1, "only the holder's unit");
        cr_assert_eq(thr_sem_release(&hold), 0);
        cr_assert_eq(hdr(l, "t")->held, 0, "the timed-out waiter was never granted after");
        cr_assert_eq(hdr(l, "t")->leases, 0);
        thr_limiter_close(l);
}

Test(sem, a_queued_acquire_is_granted_when_a_lease_expires)
{
        thr_limiter *l = tlim(&T, "mutex");
        struct thr_lease hold;
        cr_assert_eq(thr_sem_try(l, "e", 1, 1, 200 * MS, &hold), 0);
        struct acq q = {.l = l, .key = "e", .amount = 1, .timeout = 10 * SEC};
        pthread_t t;
        pthread_create(&t, NULL, acquirer, &q);
        until_queued(l, "e", 1);
        advance(200 * MS);
        until_done(&q);
        pthread_join(t, NULL);
        cr_assert_eq(q.rc, 0, "granted by its own check once the lease expired");
        cr_assert_eq(thr_sem_release(&hold), -EKEYEXPIRED);
        cr_assert_eq(thr_sem_release(&q.lease), 0);
        thr_limiter_close(l);
}

static void *take_and_exit(void *arg)
{
        struct acq *q = arg;
        q->rc = thr_sem_try(q->l, q->key, strlen(q->key), q->amount, 10 * SEC, &q->lease);
        return NULL;
}

Test(sem, a_lease_outlives_the_thread_that_took_it)
{
        thr_limiter *l = tlim(&T, "mutex");
        struct acq q = {.l = l, .key = "x", .amount = 1};
        pthread_t t;
        pthread_create(&t, NULL, take_and_exit, &q);
        pthread_join(t, NULL); /* its reader record is given back */
        cr_assert_eq(q.rc, 0);
        struct thr_lease b;
        cr_assert_eq(thr_sem_try(l, "x", 1, 1, SEC, &b), -EAGAIN,
                     "the process still holds it: the thread's exit frees nothing");
        cr_assert_eq(thr_sem_release(&q.lease), 0, "another thread releases it");
        cr_assert_eq(thr_sem_try(l, "x", 1, 1, SEC, &b), 0);
        thr_sem_release(&b);
        thr_limiter_close(l);
}

Test(sem, closing_the_arena_gives_its_leases_back)
{
        thr_arena *a2;
        cr_assert_eq(thr_arena_open(T.path, 0, &a2), 0);
        thr_limiter *l2;
        cr_assert_eq(thr_limiter_open(a2, "mutex", &l2), 0);
        struct thr_lease a;
        cr_assert_eq(thr_sem_try(l2, "c", 1, 1, 10 * SEC, &a), 0);
        thr_limiter *l = tlim(&T, "mutex");
        struct thr_lease b;
        cr_assert_eq(thr_sem_try(l, "c", 1, 1, SEC, &b), -EAGAIN);
        thr_limiter_close(l2);
        thr_arena_close(a2);
        cr_assert_eq(thr_sem_try(l, "c", 1, 1, SEC, &b), 0, "its holder record is gone");
        cr_assert_eq(hdr(l, "c")->reclaimed, 1);
        thr_sem_release(&b);
        thr_limiter_close(l);
}

Test(sem, keys_holding_leases_are_never_evicted_for_room)
{
        thr_limiter *l = tlim(&T, "tiny"); /* capacity 2, on_full = evict */
        struct thr_lease a, b, c;
        cr_assert_eq(thr_sem_try(l, "k1", 2, 1, 10 * SEC, &a), 0);
        cr_assert_eq(thr_sem_try(l, "k2", 2, 1, 10 * SEC, &b), 0);
        cr_assert_eq(thr_sem_try(l, "k3", 2, 1, SEC, &c), -ENOSPC, "both keys hold leases");
        cr_assert_eq(thr_sem_release(&a), 0);
        cr_assert_eq(thr_sem_try(l, "k3", 2, 1, SEC, &c), 0, "k1 held nothing: evicted for k3");
        cr_assert_eq(hdr(l, "k2")->held, 1, "k2 kept its lease");
        cr_assert_eq(thr_sem_release(&b), 0);
        cr_assert_eq(thr_sem_release(&c), 0);
        thr_limiter_close(l);
}

/* A reload that lowers max below a queued amount: that acquire is refused (-ERANGE) at the next
 * serve instead of holding the queue behind it until its timeout; the one behind is granted. */
Test(sem, a_queued_amount_above_a_lowered_max_is_refused_and_does_not_block_the_queue)
{
        thr_limiter *l = tlim(&T, "few"); /* max 10 */
        struct thr_lease hold;
        cr_assert_eq(thr_sem_try(l, "r", 1, 8, 10 * SEC, &hold), 0);
        struct acq big = {.l = l, .key = "r", .amount = 9, .timeout = 20 * SEC};
        struct acq small = {.l = l, .key = "r", .amount = 1, .timeout = 20 * SEC};
        pthread_t t1, t2;
        pthread_create(&t1, NULL, acquirer, &big);
        until_queued(l, "r", 1);
        pthread_create(&t2, NULL, acquirer, &small);
        until_queued(l, "r", 2);
        /* a reload: max 10 -> 5 (the record rewritten, as a reload publishes a new one) */
        int idx = shm_dir_find(&T.map, "few");
        cr_assert_geq(idx, 0);
        struct shm_lim_snap snap;
        cr_assert_eq(shm_dir_snapshot(&T.map, (uint32_t)idx, &snap), 0);
        struct thr_params *p = shm_at(T.map.base, snap.params_off);
        p->rate_n = p->burst = p->initial = 5;
        cr_assert_eq(thr_sem_release(&hold), 0); /* its serve: the head (9) can never fit */
        until_done(&big);
        until_done(&small);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        cr_assert_eq(big.rc, -ERANGE, "the head that can never fit: %d", big.rc);
        cr_assert_eq(small.rc, 0, "the one behind it: %d", small.rc);
        cr_assert_eq(hdr(l, "r")->held, 1);
        cr_assert_eq(thr_sem_release(&small.lease), 0);
        p->rate_n = p->burst = p->initial = 10;
        thr_limiter_close(l);
}

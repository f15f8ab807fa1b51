/*
 * test_key.c - key handles (thr_key_init, thr_key_try): the same decisions as thr_limiter_try,
 * step for step, on a manual clock (a twin key decided the plain way beside it); the remembered
 * slot is only a hint: after the key's eviction, its slot's reuse by another key (same home, same
 * slot) and any value scribbled into it, the handle finds or re-inserts its own key, never
 * charges another and never makes a second live slot; long keys (stored as a digest) are the
 * same key through either call; threads and forked processes sharing one handle admit exactly
 * the burst, and so does a raw clone's child (as _Fork: no atfork handler) on its own reader
 * record; a thread cancelled in its first call through a handle keeps no record; bad handles,
 * arguments and a forged hash are refused.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"

#define MS  1000000ull
#define TI  (100 * MS) /* emission interval of 10/s */
#define BU  5ull       /* burst */
#define TTL SEC

static struct tarena T;
static thr_limiter *L;

static void teardown(void)
{
        thr_limiter_close(L);
        L = NULL;
        tarena_free(&T);
}

TestSuite(key, .fini = teardown, .timeout = 120);

/* One limiter "l" (10/s, burst 5) of CAPACITY keys in SHARDS shards, idle TTL 1 s. */
static void make(uint64_t capacity, uint32_t shards)
{
        struct shm_limiter_spec s = tspec("l", 10, SEC, BU, BU);
        s.capacity = capacity;
        s.shards = shards;
        s.idle_ttl_ns = TTL;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        L = tlim(&T, "l");
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
}

static uint64_t state_of(const struct thr_slot *s)
{
        return atomic_load(&s->state);
}

/* A small deterministic generator (xorshift64). */
static uint64_t rnd(uint64_t *x)
{
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        return *x;
}

Test(key, decides_as_the_limiter_does_step_for_step)
{
        make(64, 1);
        const char *kk = "by-handle", *kp = "plain-twin";
        struct thr_key kh;
        cr_assert_eq(thr_key_init(&kh, L, kk, strlen(kk)), 0);
        uint64_t x = 88172645463325252ull;
        int admitted = 0, denied = 0;
        for (int i = 0; i < 4000; i++) {
                uint64_t cost = rnd(&x) % (BU + 2); /* 0 (peeks) to B + 1 (-ERANGE) */
                struct thr_result a, b;
                memset(&a, 0x5a, sizeof(a));
                memset(&b, 0x5a, sizeof(b));
                int ra = thr_key_try(&kh, cost, &a);
                int rb = thr_limiter_try(L, kp, strlen(kp), cost, &b);
                cr_assert_eq(ra, rb, "step %d, cost %lu: %d by handle, %d plain", i,
                             (unsigned long)cost, ra, rb);
                if (ra >= 0)
                        cr_assert_eq(
                            memcmp(&a, &b, sizeof(a)), 0,
                            "step %d: the results differ (remaining %lu/%lu, retry "
                            "%lu/%lu, reset %lu/%lu)",
                            i, (unsigned long)a.remaining, (unsigned long)b.remaining,
                            (unsigned long)a.retry_after_ns, (unsigned long)b.retry_after_ns,
                            (unsigned long)a.reset_after_ns, (unsigned long)b.reset_after_ns);
                admitted += ra == 1;
                denied += ra == 0;
                if (rnd(&x) % 3 == 0)
                        cr_assert_eq(thr_clock_advance(T.a, rnd(&x) % (3 * TI)), 0);
        }
        cr_assert_gt(admitted, 100, "the sequence admits");
        cr_assert_gt(denied, 100, "and denies");
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, kk, NULL), 1);
        /* the handle and the plain call are one key */
        struct thr_result r;
        cr_assert_eq(thr_clock_advance(T.a, 10 * SEC), 0);
        for (unsigned i = 0; i < BU; i++)
                cr_assert_eq(i % 2 ? thr_key_try(&kh, 1, &r)
                                   : thr_limiter_try(L, kk, strlen(kk), 1, &r),
                             1, "token %u", i);
        cr_assert_eq(thr_key_try(&kh, 1, &r), 0, "the burst is shared");
        cr_assert_eq(thr_limiter_try(L, kk, strlen(kk), 1, &r), 0);
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, kk, NULL), 1, "one slot for both");
}

Test(key, a_slot_reused_by_another_key_is_never_charged)
{
        make(32, 1);
        struct thr_key kh;
        struct thr_result r;
        cr_assert_eq(thr_key_init(&kh, L, "a", 1), 0);
        cr_assert_eq(thr_key_try(&kh, 0, &r), 1, "a peek on a new key");
        cr_assert_eq(tkey_hint(&kh), 0, "a peek inserts nothing, so nothing is remembered");
        cr_assert_eq(thr_key_try(&kh, 1, &r), 1);
        uint64_t at = tkey_hint(&kh);
        cr_assert_neq(at, 0, "the inserted slot is remembered");
        struct thr_slot *old = tslot_at(&T, "l", at);
        cr_assert_eq(old->key_len, 1);
        cr_assert_eq(old->key[0], 'a');

        /* evicted (idle past the TTL), then reclaimed */
        cr_assert_eq(thr_clock_advance(T.a, 3 * TTL), 0);
        uint32_t tag;
        cr_assert_eq(tmaint(&T, "l", 0, &tag).evicted, 1);
        cr_assert_eq(THR_META_STATUS(atomic_load(&old->meta)), THR_SLOT_DEAD);
        cr_assert_eq(thr_key_try(&kh, 0, &r), 1, "evicted: found nowhere, a full bucket");
        tmaint(&T, "l", UINT64_MAX, NULL);

        /* another key on the same home takes the same slot */
        char other[16];
        struct shm_probe pa;
        struct thr_table geo = tsnap(&T, "l").table;
        tprobe(&T.map, &geo, "a", &pa);
        tkey_at(&T.map, &geo, pa.home, "b", other, sizeof(other));
        cr_assert_eq(thr_limiter_try(L, other, strlen(other), 3, &r), 1);
        cr_assert_eq(THR_META_STATUS(atomic_load(&old->meta)), THR_SLOT_LIVE);
        cr_assert_eq(old->key_len, strlen(other), "%s took a's old slot", other);
        uint64_t b_state = state_of(old);

        cr_assert_eq(thr_key_try(&kh, 1, &r), 1, "a is a new key again: admitted");
        cr_assert_eq(r.remaining, BU - 1, "with its own full burst");
        cr_assert_eq(state_of(old), b_state, "%s's state was not touched", other);
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, "a", NULL), 1, "one live slot for a");
        cr_assert_neq(tkey_hint(&kh), at, "the new slot is remembered");
        struct thr_slot *now = tslot_at(&T, "l", tkey_hint(&kh));
        cr_assert_eq(now->key[0], 'a');
        uint64_t a_state = state_of(now);
        cr_assert_eq(thr_key_try(&kh, 1, &r), 1);
        cr_assert_neq(state_of(now), a_state, "charged in its new slot");
        cr_assert_eq(state_of(old), b_state);
        cr_assert_eq(thr_limiter_try(L, other, strlen(other), 1, &r), 1);
        cr_assert_eq(r.remaining, BU - 4, "%s kept exactly its own 4 tokens' debt", other);
}

Test(key, any_remembered_slot_is_only_a_hint)
{
        make(64, 2);
        const char *keys[] = {"k0", "k1", "k2", "k3"};
        struct thr_key kh;
        struct thr_result r;
        for (int i = 0; i < 4; i++)
                cr_assert_eq(thr_limiter_try(L, keys[i], 2, 1, &r), 1);
        cr_assert_eq(thr_key_init(&kh, L, "k0", 2), 0);
        cr_assert_eq(thr_key_try(&kh, 1, &r), 1);
        uint64_t right = tkey_hint(&kh);
        struct thr_slot *s0 = tslot_at(&T, "l", right);
        struct shm_lim_snap snap = tsnap(&T, "l");
        uint64_t n = (uint64_t)snap.table.nshards * snap.table.shard_slots;
        /* nothing, past the table, far past it; then every slot of the table (1 to n): the
         * other keys', empty ones */
        const uint64_t odd[] = {0, n + 1, n + 2, UINT64_MAX, UINT64_MAX / 2};
        const size_t nodd = sizeof(odd) / sizeof(odd[0]);
        for (uint64_t i = 0; i < nodd + n; i++) {
                uint64_t w = i < nodd ? odd[i] : i - nodd + 1;
                if (w == right)
                        continue;
                atomic_store(&thr_key_priv(&kh)->at, w);
                uint64_t before = state_of(s0);
                int rc = thr_key_try(&kh, 1, &r);
                cr_assert_eq(rc, 1, "hint %lu: %d", (unsigned long)w, rc);
                cr_assert_neq(state_of(s0), before, "hint %lu: k0 itself charged",
                              (unsigned long)w);
                cr_assert_eq(tkey_hint(&kh), right, "hint %lu: put right", (unsigned long)w);
                cr_assert_eq(thr_clock_advance(T.a, TI), 0); /* the token back */
        }
        for (int i = 0; i < 4; i++)
                cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, keys[i], NULL), 1);
        cr_assert_eq(shm_table_count(T.map.base, ttable(&T, "l")), 4, "no key was added");
        for (int i = 1; i < 4; i++) {
                cr_assert_eq(thr_limiter_try(L, keys[i], 2, 0, &r), 1);
                cr_assert_eq(r.remaining, BU, "%s untouched", keys[i]);
        }
}

Test(key, long_keys_are_the_same_key_through_either_call)
{
        make(64, 1);
        char a[THR_KEY_MAX_LEN], b[THR_KEY_MAX_LEN];
        memset(a, 'x', sizeof(a));
        memcpy(b, a, sizeof(b));
        b[sizeof(b) - 1] = 'y'; /* differs past the stored prefix only */
        struct thr_key ka, kb;
        struct thr_result r;
        cr_assert_eq(thr_key_init(&ka, L, a, sizeof(a)), 0);
        cr_assert_eq(thr_key_init(&kb, L, b, sizeof(b)), 0);
        cr_assert_eq(thr_key_try(&ka, 2, &r), 1);
        cr_assert_eq(thr_limiter_try(L, a, sizeof(a), 2, &r), 1);
        cr_assert_eq(r.remaining, BU - 4, "one key: %lu left", (unsigned long)r.remaining);
        cr_assert_eq(thr_key_try(&kb, 2, &r), 1);
        cr_assert_eq(r.remaining, BU - 2, "another key");
        cr_assert_eq(thr_key_try(&ka, 2, &r), 0, "a has 1 left");
        cr_assert_eq(shm_table_count(T.map.base, ttable(&T, "l")), 2);
}

Test(key, bad_arguments_and_handles_are_refused)
{
        make(64, 1);
        struct thr_key kh, zero;
        char big[THR_KEY_MAX_LEN + 1];
        memset(big, 'k', sizeof(big));
        memset(&zero, 0, sizeof(zero));
        cr_assert_eq(thr_key_init(NULL, L, "k", 1), -EINVAL);
        cr_assert_eq(thr_key_init(&kh, NULL, "k", 1), -EINVAL);
        cr_assert_eq(thr_key_init(&kh, L, NULL, 1), -EINVAL);
        cr_assert_eq(thr_key_init(&kh, L, "k", 0), -EINVAL);
        cr_assert_eq(thr_key_init(&kh, L, big, sizeof(big)), -ENAMETOOLONG);
        cr_assert_eq(thr_key_try(NULL, 1, NULL), -EINVAL);
        cr_assert_eq(thr_key_try(&zero, 1, NULL), -EINVAL, "never made");
        cr_assert_eq(thr_key_init(&kh, L, big, THR_KEY_MAX_LEN), 0, "the longest key");
        cr_assert_eq(thr_key_try(&kh, BU + 1, NULL), -ERANGE);
        cr_assert_eq(thr_key_try(&kh, BU, NULL), 1);
        /* a handle rewritten after it was made: its length, either half of its hash */
        struct thr_key bad = kh;
        thr_key_priv(&bad)->len = 0;
        cr_assert_eq(thr_key_try(&bad, 1, NULL), -EINVAL, "length 0");
        bad = kh;
        thr_key_priv(&bad)->len = THR_KEY_MAX_LEN + 1;
        cr_assert_eq(thr_key_try(&bad, 1, NULL), -EINVAL, "length past the maximum");
        for (int half = 0; half < 2; half++) {
                bad = kh;
                thr_key_priv(&bad)->hash ^= 1ull << (half ? 40 : 3);
                cr_assert_eq(thr_key_try(&bad, 1, NULL), -EINVAL, "hash bit flipped (%d)", half);
        }
        bad = kh;
        thr_key_priv(&bad)->lim = NULL;
        cr_assert_eq(thr_key_try(&bad, 1, NULL), -EINVAL, "no limiter");
        struct thr_key copy = kh; /* a copy is a handle of the same key */
        cr_assert_eq(thr_key_try(&copy, 1, NULL), 0, "the burst was taken through the original");
        cr_assert_eq(shm_table_count(T.map.base, ttable(&T, "l")), 1);
}

/* ---------------------------------------------------------------- sharing one handle */

#define NTHREADS 4
#define NPROCS   3

static struct thr_key g_shared;
static _Atomic int g_go;

static void *tries(void *arg)
{
        long got = 0;
        (void)arg;
        while (!atomic_load(&g_go))
                ;
        for (int i = 0; i < 20000; i++) {
                int rc = thr_key_try(&g_shared, 1, NULL);
                if (rc < 0)
                        return (void *)(long)-1000;
                got += rc;
        }
        return (void *)got;
}

/* Admissions by NTHREADS threads of this process on g_shared; the process's own count. */
static long threads_on_the_handle(void)
{
        pthread_t t[NTHREADS];
        long sum = 0;
        for (int i = 0; i < NTHREADS; i++)
                cr_assert_eq(pthread_create(&t[i], NULL, tries, NULL), 0);
        atomic_store(&g_go, 1);
        for (int i = 0; i < NTHREADS; i++) {
                void *v;
                pthread_join(t[i], &v);
                if ((long)v < 0)
                        return -1;
                sum += (long)v;
        }
        return sum;
}

Test(key, threads_and_processes_sharing_a_handle_admit_exactly_the_burst)
{
        struct shm_limiter_spec s = tspec("l", 10, SEC, 500, 500);
        s.capacity = 64;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        L = tlim(&T, "l");
        cr_assert_eq(thr_key_init(&g_shared, L, "shared", 6), 0);
        int p[2];
        cr_assert_eq(pipe(p), 0);
        pid_t kids[NPROCS];
        for (int k = 0; k < NPROCS; k++) {
                kids[k] = tfork();
                cr_assert_geq(kids[k], 0);
                if (kids[k] == 0) { /* the parent's handle, copied by fork */
                        long got = threads_on_the_handle();
                        _exit(write(p[1], &got, sizeof(got)) == (ssize_t)sizeof(got) ? 0 : 1);
                }
        }
        long total = threads_on_the_handle();
        cr_assert_geq(total, 0, "an error in the parent");
        for (int k = 0; k < NPROCS; k++) {
                long got;
                cr_assert_eq(read(p[0], &got, sizeof(got)), (ssize_t)sizeof(got));
                cr_assert_geq(got, 0, "an error in a child");
                total += got;
                int st;
                cr_assert_eq(waitpid(kids[k], &st, 0), kids[k]);
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        close(p[0]);
        close(p[1]);
        cr_assert_eq(total, 500, "the clock never moved: exactly the burst, got %ld", total);
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, "shared", NULL), 1);
}

Test(key, a_forged_hash_is_refused_before_the_slow_path)
{
        make(64, 1);
        struct thr_key kh;
        struct thr_result r;
        cr_assert_eq(thr_key_init(&kh, L, "a", 1), 0);
        cr_assert_eq(thr_key_try(&kh, 1, &r), 1);
        struct thr_slot *s = tslot_at(&T, "l", tkey_hint(&kh));
        /* another home, the same tag, the check word made again: a forged handle */
        struct thr_key_priv *p = thr_key_priv(&kh);
        p->hash ^= 1ull << 62;
        p->check = thr_key_check(p);
        cr_assert_eq(thr_key_try(&kh, 1, &r), 1, "a hint that hits decides on the one live slot");
        cr_assert_eq(r.remaining, BU - 2);
        /* an evictor killed after its CAS: the slot still LIVE, its state DEAD; the call must go
         * the slow way, which probes from the hash and inserts */
        atomic_store(&s->state, THR_TAT_DEAD);
        cr_assert_eq(thr_key_try(&kh, 1, &r), -EINVAL, "the hash no longer agrees with the key");
        cr_assert_eq(shm_table_count(T.map.base, ttable(&T, "l")), 1, "nothing inserted");
        cr_assert_eq(thr_limiter_try(L, "a", 1, 1, &r), 1, "the plain call finishes the eviction");
        cr_assert_eq(r.remaining, BU - 1, "and starts the key afresh");
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, "a", NULL), 1, "one live slot for a");
}

Test(key, a_raw_clone_child_uses_its_parents_handle_with_its_own_record)
{
        make(64, 1);
        struct thr_key kh;
        struct thr_result r;
        cr_assert_eq(thr_key_init(&kh, L, "k", 1), 0);
        cr_assert_eq(thr_key_try(&kh, 1, &r), 1);
        const struct thr_reader *mine = treader_of_tid(&T, gettid());
        cr_assert_not_null(mine);
        uint64_t mine_before = atomic_load(&mine->admitted);
        /* clone(SIGCHLD) runs no atfork handler, as _Fork: only the fork generation tells */
        pid_t parent = getpid();
        pid_t kid = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        cr_assert_geq(kid, 0);
        if (kid == 0) {
                tchild_tie(parent);
                int got = 0, rc;
                while ((rc = thr_key_try(&kh, 1, NULL)) == 1)
                        got++;
                _exit(rc == 0 ? got : 100 - rc);
        }
        int st;
        cr_assert_eq(waitpid(kid, &st, 0), kid);
        cr_assert(WIFEXITED(st), "child status %#x", st);
        cr_assert_eq(WEXITSTATUS(st), BU - 1, "the child took the rest of the burst: %d",
                     WEXITSTATUS(st));
        cr_assert_eq(atomic_load(&mine->admitted), mine_before, "the parent's record untouched");
        cr_assert_eq(thr_key_try(&kh, 1, &r), 0, "nothing left for the parent");
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, "k", NULL), 1);
}

static struct thr_key g_first;

static void first_call(void *arg)
{
        (void)arg;
        thr_key_try(&g_first, 1, NULL);
}

Test(key, a_thread_cancelled_in_its_first_handle_call_leaves_nothing_held)
{
        make(64, 1);
        cr_assert_eq(thr_key_init(&g_first, L, "c", 1), 0);
        pid_t tid = tcancel_first(first_call, NULL);
        cr_assert_null(treader_of_tid(&T, tid), "the cancelled thread kept a record");
        /* the key took at most the cancelled call's token; the rest is exact */
        struct thr_result r;
        cr_assert_eq(thr_key_try(&g_first, 0, &r), 1);
        uint64_t left = r.remaining;
        cr_assert(left == BU || left == BU - 1, "%lu left", (unsigned long)left);
        for (uint64_t i = 0; i < left; i++)
                cr_assert_eq(thr_key_try(&g_first, 1, NULL), 1);
        cr_assert_eq(thr_key_try(&g_first, 1, NULL), 0);
        cr_assert_leq(tcount(&T, "l", THR_SLOT_LIVE, "c", NULL), 1);
}

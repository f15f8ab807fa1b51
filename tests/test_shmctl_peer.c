/*
 * test_shmctl_peer.c - proves that shmctl shows peers and the semaphore queue: `peers` lists a
 * live peer's record index, pid, expiry (moved by a heartbeat, "expired" once the clock passes
 * it), the levels it holds (2 and 0 on two semaphore limiters), its pending acquires, and the
 * leases and units it holds (not a process's lease on the same key); `leases` names a peer's
 * lease's holder "peer #INDEX" with its level and its peer's expiry ("peer gone" once the peer's
 * word is 0); `get`, `keys` and `limiters` show the remainder, the units pending and the longest
 * pending wait of a peer queued on a manual clock (exactly the time advanced), and a negative
 * remainder after max was lowered; scribbled peer records and lease records never crash it.
 *
 * The arena, shmctl's runs and the output checks are shmctl_run.h's, as in test_shmctl_sem.c.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <sys/wait.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "sem.h"
#include "shm.h"
#include "shmctl_run.h"
#include "throttle/throttle.h"

TestSuite(shmctl_peer, .fini = fx_teardown, .timeout = 60);

static struct shm_limiter_spec sem_spec(const char *name, uint64_t max, uint64_t level)
{
        struct shm_limiter_spec s = lim_spec(name, max, 0, 0, 0);
        s.kind = THR_KIND_SEMAPHORE;
        s.leases = 4;
        s.level = level;
        return s;
}

static void advance(uint64_t ns)
{
        cr_assert_eq(thr_clock_advance(fx.arena, ns), 0);
}

static thr_limiter *open_lim(const char *name)
{
        thr_limiter *l;
        cr_assert_eq(thr_limiter_open(fx.arena, name, &l), 0, "limiter %s", name);
        return l;
}

static thr_peer *open_peer(uint64_t expires_in)
{
        thr_peer *p;
        cr_assert_eq(thr_peer_open(fx.arena, expires_in, &p), 0);
        return p;
}

static unsigned long my_tid(void)
{
        return (unsigned long)syscall(SYS_gettid);
}

/* The index of the one live peer record whose expiry word is EXPIRES. */
static uint32_t peer_index(uint64_t expires)
{
        uint32_t n = shm_hdr(&fx.map)->reader_count, found = UINT32_MAX;
        for (uint32_t i = 0; i < n; i++) {
                struct thr_reader *r = reader_of(i);
                if (atomic_load(&r->owner) && atomic_load(&r->peer_expires) == expires) {
                        cr_assert_eq(found, UINT32_MAX, "two peers expire at %lu", expires);
                        found = i;
                }
        }
        cr_assert_neq(found, UINT32_MAX, "no peer expires at %lu", expires);
        return found;
}

/* Semaphores "A" (max 10, level 2) and "B" (max 5, level 0), GCRA "api"; A and B opened. */
static void two_levels(const char *arena, thr_limiter **a, thr_limiter **b)
{
        struct shm_limiter_spec l[] = {sem_spec("A", 10, 2), sem_spec("B", 5, 0),
                                       lim_spec("api", 10, S, 5, 5)};
        make_arena(arena, 3, l);
        *a = open_lim("A");
        *b = open_lim("B");
}

/* P locks 3 of A/x (level 2), then 2 of B/y (level 0): downwards, as the level rule wants. */
static void lock_both(thr_peer *p, thr_limiter *a, thr_limiter *b)
{
        cr_assert_eq(thr_peer_acquire(p, a, "x", 1, 3, 0, 0), 0);
        cr_assert_eq(thr_peer_acquire(p, b, "y", 1, 2, 0, 0), 0);
}

Test(shmctl_peer, peers_show_index_levels_leases_units_and_expiry)
{
        static char out[OUT_MAX];
        char want[512], line[512];
        thr_limiter *a, *b;
        two_levels("ppeers", &a, &b);
        advance(S);
        thr_peer *p = open_peer(10 * S); /* expires at 11 s */
        lock_both(p, a, b);
        struct thr_lease own; /* the process's, on the peer's key: not the peer's */
        cr_assert_eq(thr_sem_try(a, "x", 1, 4, 60 * S, &own), 0);
        advance(500 * MS);
        uint32_t idx = peer_index(11 * S);
        int pid = (int)getpid();
        cr_assert_eq(run(out, "--json peers"), 0, "%s", out);
        assert_json(out);
        snprintf(want, sizeof(want),
                 "{\"now_ns\":1500000000,\"peers\":[{\"index\":%u,\"pid\":%d,\"alive\":true,"
                 "\"expires_ns\":11000000000,\"expires_in_ns\":9500000000,\"expired\":false,"
                 "\"levels\":[2,0],\"pending\":0,\"leases\":2,\"units\":5}]}\n",
                 idx, pid);
        cr_assert_str_eq(out, want);
        cr_assert_eq(run(out, "peers"), 0, "%s", out);
        char pids[32];
        int pw = snprintf(pids, sizeof(pids), "%d", pid);
        pw = pw < 3 ? 3 : pw;
        snprintf(want, sizeof(want),
                 "arena time 1.5s: 1 peer, 2 leases of 5 units\n"
                 "INDEX  %*s  ALIVE  EXPIRES_IN  LEVELS  PENDING  LEASES  UNITS\n"
                 "%5u  %*d  yes          9.5s  2,0           0       2      5\n",
                 pw, "PID", idx, pw, pid);
        cr_assert_str_eq(out, want);
        /* one heartbeat moves the expiry */
        cr_assert_eq(thr_peer_heartbeat(p, 20 * S), 0);
        cr_assert_eq(run(out, "--json peers"), 0, "%s", out);
        assert_has(out, "\"expires_ns\":21500000000,\"expires_in_ns\":20000000000,"
                        "\"expired\":false,");
        /* past it: expired (nobody judged it yet, so its leases are still in their keys) */
        advance(25 * S);
        cr_assert_eq(run(out, "--json peers"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"expires_ns\":21500000000,\"expires_in_ns\":-5000000000,"
                        "\"expired\":true,\"levels\":[2,0],\"pending\":0,\"leases\":2,"
                        "\"units\":5}]}\n");
        cr_assert_eq(run(out, "peers"), 0, "%s", out);
        snprintf(want, sizeof(want), "%5u  %*d  yes    expired 5s ago  2,0", idx, pw, pid);
        assert_has(line_with(out, "expired", line, sizeof(line)), want);
        /* closed: no peer */
        cr_assert_eq(thr_sem_release(&own), 0);
        cr_assert_eq(thr_peer_close(p), 0);
        cr_assert_eq(run(out, "--json peers"), 0, "%s", out);
        cr_assert_str_eq(out, "{\"now_ns\":26500000000,\"peers\":[]}\n");
        cr_assert_eq(run(out, "peers"), 0, "%s", out);
        cr_assert_str_eq(out, "arena time 26.5s: 0 peers, 0 leases of 0 units\n");
        thr_limiter_close(a);
        thr_limiter_close(b);
}

Test(shmctl_peer, leases_name_the_peer_its_level_and_its_expiry)
{
        static char out[OUT_MAX];
        char want[512], line[512];
        thr_limiter *a, *b;
        two_levels("pleases", &a, &b);
        thr_peer *p = open_peer(10 * S); /* expires at 10 s */
        lock_both(p, a, b);
        struct thr_lease own;
        cr_assert_eq(thr_sem_try(a, "x", 1, 4, 4 * S, &own), 0);
        advance(S);
        uint32_t idx = peer_index(10 * S);
        int pid = (int)getpid();
        unsigned long tid = my_tid();
        cr_assert_eq(run(out, "--json leases"), 0, "%s", out);
        assert_json(out);
        snprintf(want, sizeof(want),
                 "{\"limiter\":\"A\",\"key\":\"x\",\"index\":0,\"gen\":1,\"amount\":3,\"pid\":%d,"
                 "\"tid\":%lu,\"holder_idx\":%u,\"peer\":true,\"level\":2,\"acquired_ns\":0,"
                 "\"expires_ns\":10000000000,\"age_ns\":1000000000,\"expires_in_ns\":9000000000,"
                 "\"expired\":false}",
                 pid, tid, idx);
        assert_has(out, want);
        snprintf(want, sizeof(want),
                 "{\"limiter\":\"B\",\"key\":\"y\",\"index\":0,\"gen\":1,\"amount\":2,\"pid\":%d,"
                 "\"tid\":%lu,\"holder_idx\":%u,\"peer\":true,\"level\":0,\"acquired_ns\":0,"
                 "\"expires_ns\":10000000000,",
                 pid, tid, idx);
        assert_has(out, want);
        /* the process's lease: its own expiry, no level */
        assert_has(out, "\"index\":1,\"gen\":2,\"amount\":4,");
        assert_has(out, "\"peer\":false,\"level\":null,\"acquired_ns\":0,\"expires_ns\":4000000000,"
                        "\"age_ns\":1000000000,\"expires_in_ns\":3000000000,\"expired\":false}");
        cr_assert_eq(run(out, "leases"), 0, "%s", out);
        assert_has(out, "arena time 1s: 2 semaphore limiters, 3 leases on 2 keys, 0 pending\n");
        assert_has(out, "  HOLDER  LEVEL  AGE  EXPIRES_IN  GEN\n");
        snprintf(want, sizeof(want),
                 "A        x         3  %d  %lu  peer #%u      2   1s          9s    1\n", pid, tid,
                 idx);
        assert_has(out, want);
        snprintf(want, sizeof(want),
                 "B        y         2  %d  %lu  peer #%u      0   1s          9s    1\n", pid, tid,
                 idx);
        assert_has(out, want);
        assert_has(line_with(out, "3s", line, sizeof(line)), "      -   1s          3s    2");
        /* one heartbeat moves both of the peer's leases, not the process's */
        cr_assert_eq(thr_peer_heartbeat(p, 29 * S), 0);
        cr_assert_eq(run(out, "--json leases"), 0, "%s", out);
        const char *e1 = strstr(out, "\"expires_ns\":30000000000,");
        cr_assert(e1 && strstr(e1 + 1, "\"expires_ns\":30000000000,"), "two at 30 s:\n%s", out);
        assert_has(out, "\"expires_ns\":4000000000,");
        /* its word 0 (as a judge leaves it): its leases are void, it is no peer any more */
        atomic_store(&reader_of(idx)->peer_expires, 0);
        cr_assert_eq(run(out, "leases"), 0, "%s", out);
        snprintf(want, sizeof(want), "peer #%u      2   1s   peer gone    1\n", idx);
        assert_has(out, want);
        cr_assert_eq(run(out, "--json leases B"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"peer\":true,\"level\":0,\"acquired_ns\":0,\"expires_ns\":0,"
                        "\"age_ns\":1000000000,\"expires_in_ns\":-1000000000,\"expired\":true}");
        cr_assert_eq(run(out, "peers"), 0, "%s", out);
        cr_assert_str_eq(out, "arena time 1s: 0 peers, 0 leases of 0 units\n");
        cr_assert_eq(thr_peer_close(p), 0);
        cr_assert_eq(thr_sem_release(&own), 0);
        thr_limiter_close(a);
        thr_limiter_close(b);
}

/* A peer's acquire blocked in thr_peer_acquire: its outcome. */
struct acq {
        thr_peer *p;
        thr_limiter *l;
        uint32_t count;
        _Atomic int done;
        int rc;
};

static void *acquirer(void *arg)
{
        struct acq *q = arg;
        q->rc = thr_peer_acquire(q->p, q->l, "q", 1, q->count, 60 * S, 0);
        atomic_store(&q->done, 1);
        return NULL;
}

/* Wait (real time, bounded) until key q of A has N queued. */
static void until_queued(uint32_t n)
{
        struct thr_sem *h = shm_sem(shm_slot_aux(fx.map.base, table_of("A"), slot_of("A", "q")));
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (atomic_load(&h->waiters) != n) {
                cr_assert_lt(telapsed_s(&t0), 10.0, "never %u queued (%u)", n,
                             atomic_load(&h->waiters));
                usleep(1000);
        }
}

static void until_done(struct acq *q)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (!atomic_load(&q->done)) {
                cr_assert_lt(telapsed_s(&t0), 10.0, "an acquire never returned");
                usleep(1000);
        }
}

/* The queue columns of `get A q` with 8 of 10 held and 5 asked for since LONGEST (the key's
 * changed_ns is not checked: the waiter's own checks of the key may set it). */
static void check_queue(const char *longest, uint64_t longest_ns)
{
        static char out[OUT_MAX];
        char want[512];
        cr_assert_eq(run(out, "--json get A q"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"remaining\":2,\"granted\":1,\"released\":0,\"expired\":0,"
                        "\"reclaimed\":0,\"changed_ns\":");
        snprintf(want, sizeof(want),
                 ",\"remainder\":2,\"queued_found\":1,\"pending_units\":5,"
                 "\"longest_pending_ns\":%lu}\n",
                 longest_ns);
        assert_has(out, want);
        cr_assert_eq(run(out, "get A q"), 0, "%s", out);
        assert_has(out, "KEY  HELD  LEASES  PENDING  WAITING  GRANTED  RELEASED  EXPIRED  "
                        "RECLAIMED  REMAINDER  PEND_UNITS  LONGEST_PENDING\n");
        snprintf(want, sizeof(want),
                 "q    8/10     1/4        1  5              1         0        0          0  "
                 "        2           5  %15s\n",
                 longest);
        assert_has(out, want);
}

Test(shmctl_peer, get_keys_and_limiters_show_remainder_and_longest_pending)
{
        static char out[OUT_MAX];
        char want[512], line[512];
        struct shm_limiter_spec l[] = {sem_spec("A", 10, 2)};
        make_arena("pqueue", 1, l);
        thr_limiter *a = open_lim("A");
        thr_peer *h = open_peer(100 * S), *w = open_peer(200 * S);
        cr_assert_eq(thr_peer_acquire(h, a, "q", 1, 8, 0, 0), 0);
        struct acq q = {.p = w, .l = a, .count = 5};
        pthread_t t;
        pthread_create(&t, NULL, acquirer, &q);
        until_queued(1);
        check_queue("0ns", 0);
        advance(1500 * MS); /* the waiter waits on, its wait counted in arena time */
        check_queue("1.5s", 1500 * MS);
        cr_assert_eq(run(out, "keys A"), 0, "%s", out);
        assert_has(out, "limiter A: 1 live keys, 1 shown, most held first, arena time 1.5s, "
                        "semaphore of max 10, 4 leases a key, level 2\n");
        assert_has(out, "        2           5             1.5s\n");
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"held\":8,\"pending\":1,");
        assert_has(out, "\"level\":2,\"min_remainder\":2,\"queued_found\":1,\"pending_units\":5,"
                        "\"longest_pending_ns\":1500000000,\"max_waiters\":0,"
                        "\"on_queue_full\":\"reject\",\"priority_share_one_in\":0}");
        cr_assert_eq(run(out, "limiters"), 0, "%s", out);
        assert_has(out, "  HELD  LEASES  PENDING  REMAINDER  PEND_UNITS  LONGEST_PENDING\n");
        assert_has(line_with(out, "A ", line, sizeof(line)),
                   "  8/10       4        1          2           5             1.5s");
        /* the waiting peer: pending, at level 2, holding nothing yet */
        uint32_t hi = peer_index(100 * S), wi = peer_index(200 * S);
        cr_assert_eq(run(out, "--json peers"), 0, "%s", out);
        snprintf(want, sizeof(want),
                 "{\"index\":%u,\"pid\":%d,\"alive\":true,\"expires_ns\":100000000000,"
                 "\"expires_in_ns\":98500000000,\"expired\":false,\"levels\":[2],\"pending\":0,"
                 "\"leases\":1,\"units\":8}",
                 hi, (int)getpid());
        assert_has(out, want);
        snprintf(want, sizeof(want),
                 "{\"index\":%u,\"pid\":%d,\"alive\":true,\"expires_ns\":200000000000,"
                 "\"expires_in_ns\":198500000000,\"expired\":false,\"levels\":[2],\"pending\":1,"
                 "\"leases\":0,\"units\":0}",
                 wi, (int)getpid());
        assert_has(out, want);
        /* the holder lets go: the waiter is granted, nothing is queued */
        cr_assert_eq(thr_peer_release(h, a, "q", 1), 0);
        until_done(&q);
        pthread_join(t, NULL);
        cr_assert_eq(q.rc, 0);
        cr_assert_eq(run(out, "--json get A q"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"key\":\"q\",\"held\":5,\"max\":10,\"leases\":1,\"leases_per_key\":4,"
                        "\"pending\":0,\"waiting\":[],\"waiting_found\":0,\"remaining\":5,");
        cr_assert_null(strstr(out, "remainder"), "no queue, no queue members:\n%s", out);
        cr_assert_eq(run(out, "get A q"), 0, "%s", out);
        cr_assert_null(strstr(out, "REMAINDER"), "no queue, no queue columns:\n%s", out);
        cr_assert_eq(run(out, "--json peers"), 0, "%s", out);
        snprintf(want, sizeof(want), "\"levels\":[2],\"pending\":0,\"leases\":1,\"units\":5}");
        assert_has(out, want);
        cr_assert_eq(thr_peer_close(w), 0);
        cr_assert_eq(thr_peer_close(h), 0);
        thr_limiter_close(a);
}

/* The parameter record of limiter NAME in the test's writable mapping. */
static struct thr_params *params_of(const char *name)
{
        return shm_at(fx.map.base, atomic_load(&entry_of(name)->params_off));
}

Test(shmctl_peer, a_key_above_a_lowered_max_shows_a_negative_remainder)
{
        static char out[OUT_MAX];
        char line[512];
        struct shm_limiter_spec l[] = {sem_spec("A", 10, 2)};
        make_arena("plower", 1, l);
        thr_limiter *a = open_lim("A");
        struct thr_lease le;
        cr_assert_eq(thr_sem_try(a, "k", 1, 8, 60 * S, &le), 0);
        thr_limiter_close(a);
        close_client();
        /* max 6 as a reload would write it (a semaphore's max is its rate, burst and initial) */
        struct thr_params *p = params_of("A");
        p->rate_n = p->burst = p->initial = 6;
        cr_assert_eq(run(out, "--json get A k"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"key\":\"k\",\"held\":8,\"max\":6,");
        assert_has(out, "\"remaining\":0,");
        assert_has(out, "\"remainder\":-2,\"queued_found\":0,\"pending_units\":0,"
                        "\"longest_pending_ns\":0}\n");
        cr_assert_eq(run(out, "get A k"), 0, "%s", out);
        assert_has(line_with(out, "k ", line, sizeof(line)),
                   "         -2           0                -");
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_has(out, "\"min_remainder\":-2,\"queued_found\":0,\"pending_units\":0,");
        cr_assert_eq(run(out, "limiters"), 0, "%s", out);
        assert_has(line_with(out, "A ", line, sizeof(line)),
                   "   8/6       4        0         -2           0                -");
}

/* ---------------------------------------------------------------- scribbles */

/* Reader record R as a peer: owner TOKEN, expiry E, levels LV, PENDING (the client has closed). */
static void fake_peer(uint32_t r, uint64_t token, uint64_t e, uint64_t lv, uint32_t pending)
{
        struct thr_reader *rd = reader_of(r);
        atomic_store(&rd->owner, token);
        atomic_store(&rd->pid, 4000 + r);
        atomic_store(&rd->peer_expires, e);
        atomic_store(&rd->peer_levels, lv);
        atomic_store(&rd->peer_pending, pending);
}

/* Lease record I of key KEY of limiter LIM as a peer's: holder (TOKEN, IDX), AMOUNT. */
static void fake_lease(const char *lim, const char *key, uint32_t i, uint64_t token, uint32_t idx,
                       uint32_t amount)
{
        struct thr_lease_rec *r =
            shm_sem_lease(shm_slot_aux(fx.map.base, table_of(lim), slot_of(lim, key)), i);
        atomic_store(&r->holder, token);
        atomic_store(&r->holder_idx, idx);
        atomic_store(&r->amount, amount);
        atomic_store(&r->flags, THR_LEASE_PEER);
        atomic_store(&r->level, 3);
        atomic_store(&r->expires_ns, UINT64_MAX);
        atomic_store(&r->gen, 100 + i);
}

/* A peer's lease counts for it only if it is flagged a peer's and names both its index and its
 * token. */
Test(shmctl_peer, a_lease_counts_for_a_peer_only_by_its_index_and_token)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {sem_spec("A", 100, 3)};
        make_arena_readers("pfake", 1, l, 8);
        thr_limiter *a = open_lim("A");
        struct thr_lease le;
        cr_assert_eq(thr_sem_try(a, "k", 1, 1, 60 * S, &le), 0);
        cr_assert_eq(thr_sem_try(a, "j", 1, 1, 60 * S, &le), 0);
        thr_limiter_close(a);
        close_client();
        fake_peer(5, 0xabc, 7 * S, 1ull << 3 | 1ull << 1 | 1ull << 63, 2);
        fake_lease("A", "j", 0, 0xabc, 5, 17); /* not flagged a peer's: its own expiry */
        struct thr_lease_rec *own =
            shm_sem_lease(shm_slot_aux(fx.map.base, table_of("A"), slot_of("A", "j")), 0);
        atomic_store(&own->flags, 0);
        atomic_store(&own->expires_ns, 60 * S);
        fake_lease("A", "k", 0, 0xabc, 5, 7);           /* counted */
        fake_lease("A", "k", 1, 0xabc, 8, 9);           /* index out of range */
        fake_lease("A", "k", 2, 0xdef, 5, 11);          /* another owner's */
        fake_lease("A", "k", 3, 0xabc, UINT32_MAX, 13); /* far out of range */
        cr_assert_eq(run(out, "--json peers"), 0, "%s", out);
        assert_json(out);
        cr_assert_str_eq(out, "{\"now_ns\":0,\"peers\":[{\"index\":5,\"pid\":4005,\"alive\":false,"
                              "\"expires_ns\":7000000000,\"expires_in_ns\":7000000000,"
                              "\"expired\":false,\"levels\":[63,3,1],\"pending\":2,\"leases\":1,"
                              "\"units\":7}]}\n");
        cr_assert_eq(run(out, "peers"), 0, "%s", out);
        assert_has(out, "arena time 0ns: 1 peer, 1 lease of 7 units\n");
        assert_has(out, "    5  4005  dead           7s  63,3,1        2       1      7\n");
        /* the leases naming no live peer are void: "peer gone", expiry 0 */
        cr_assert_eq(run(out, "leases"), 0, "%s", out);
        assert_has(out, "  peer #5      3  0ns          7s  100\n");
        assert_has(out, "  peer #8      3  0ns   peer gone  101\n");
        assert_has(out, "  peer #5      3  0ns   peer gone  102\n");
        assert_has(out, "  peer #4294967295      3  0ns   peer gone  103\n");
        assert_has(out, "                 5      -  0ns         60s  100\n");
}

/* Every peer word of every reader record, and every word of the live keys' lease records, as
 * garbage (none, the largest value, or any); some leases name a record's index and token. */
static void scribble(uint32_t nreaders, uint64_t *x)
{
        for (uint32_t r = 0; r < nreaders; r++) {
                uint64_t v[4];
                for (int i = 0; i < 4; i++) {
                        uint64_t g = next_rand(x);
                        v[i] = g % 4 == 0 ? 0 : g % 4 == 1 ? UINT64_MAX : g;
                }
                fake_peer(r, v[0] | (r & 1), v[1], v[2], (uint32_t)v[3]);
        }
        static const char *const keys[][2] = {{"A", "x"}, {"B", "y"}};
        for (int k = 0; k < 2; k++) {
                struct thr_table *tb = table_of(keys[k][0]);
                _Atomic uint64_t *aux =
                    shm_slot_aux(fx.map.base, tb, slot_of(keys[k][0], keys[k][1]));
                for (uint32_t w = 0; w < tb->aux_stride / 8; w++) {
                        uint64_t g = next_rand(x);
                        atomic_store(&aux[w], g % 4 == 0 ? 0 : g % 4 == 1 ? UINT64_MAX : g);
                }
                for (uint32_t i = 0; i < 4; i++) { /* a real record's index and token */
                        uint32_t r = (uint32_t)(next_rand(x) % nreaders);
                        if (next_rand(x) % 2)
                                fake_lease(keys[k][0], keys[k][1], i,
                                           atomic_load(&reader_of(r)->owner), r,
                                           (uint32_t)next_rand(x));
                }
        }
}

Test(shmctl_peer, scribbled_peers_and_peer_leases_do_not_crash)
{
        static char out[OUT_MAX];
        thr_limiter *a, *b;
        struct shm_limiter_spec l[] = {sem_spec("A", 10, 2), sem_spec("B", 5, 0)};
        make_arena_readers("pscribble", 2, l, 40);
        a = open_lim("A");
        b = open_lim("B");
        /* a child's peer holds both, alive until the end (killed then): its leases stay in their
         * keys while the test scribbles */
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t kid = tfork();
        cr_assert_geq(kid, 0);
        if (kid == 0) {
                thr_peer *p;
                char one = 1;
                if (thr_peer_open(fx.arena, 10 * S, &p) < 0 ||
                    thr_peer_acquire(p, a, "x", 1, 3, 0, 0) != 0 ||
                    thr_peer_acquire(p, b, "y", 1, 2, 0, 0) != 0 || write(fds[1], &one, 1) != 1)
                        _exit(1);
                for (;;)
                        pause();
        }
        char ready;
        cr_assert_eq(read(fds[0], &ready, 1), 1);
        thr_limiter_close(a);
        thr_limiter_close(b);
        close_client();
        static const char *const cmds[] = {"peers",    "--json peers",   "leases", "--json leases",
                                           "get A x",  "--json get B y", "keys A", "--json keys B",
                                           "limiters", "--json limiters"};
        static const uint64_t nows[] = {S, 0, THR_TAT_LIMIT, UINT64_MAX / 2};
        uint64_t x = 0x9e3779b97f4a7c15ull;
        for (int round = 0; round < 8; round++) {
                scribble(40, &x);
                atomic_store(&shm_hdr(&fx.map)->manual_now_ns, nows[round % 4]);
                for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
                        cr_assert_eq(run(out, "%s", cmds[c]), 0, "round %d, %s: %s", round, cmds[c],
                                     out);
                        cr_assert_null(strstr(out, "runtime error"), "%s: %s", cmds[c], out);
                        if (cmds[c][0] == '-')
                                assert_json(out);
                }
        }
        /* `peers` prints any arena time, even one `keys` refuses */
        atomic_store(&shm_hdr(&fx.map)->manual_now_ns, UINT64_MAX);
        cr_assert_eq(run(out, "--json peers"), 0, "%s", out);
        assert_json(out);
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
}

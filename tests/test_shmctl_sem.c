/*
 * test_shmctl_sem.c - proves that shmctl shows semaphore limiters: `leases` lists every lease
 * (key, amount, holder pid and tid, age, expiry, generation) at exact arena times and each key's
 * pending acquires (threads queued in thr_sem_acquire, their amounts oldest first); `limiters`
 * shows max, leases per key, units held and pending; `keys` and `get` show held of max, leases
 * in use and pending; and scribbled lease records, headers, reader records and parameters never
 * crash it (strange numbers, or a clear message and EX_DATAERR).
 *
 * The arena, shmctl's runs and the output checks are shmctl_run.h's, as in test_shmctl.c.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "shm.h"
#include "shmctl_run.h"
#include "throttle/throttle.h"

#define EX_NOTFOUND_ 1 /* shmctl: no such limiter, or (leases) not a semaphore */

TestSuite(shmctl_sem, .fini = fx_teardown);

static struct shm_limiter_spec sem_spec(const char *name, uint64_t max, uint64_t leases)
{
        struct shm_limiter_spec s = lim_spec(name, max, 0, 0, 0);
        s.kind = THR_KIND_SEMAPHORE;
        s.leases = leases;
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

static unsigned long my_tid(void)
{
        return (unsigned long)syscall(SYS_gettid);
}

/* Semaphores "A" (max 42, 8 leases a key) and "mutex" (max 1, 4), GCRA "api". At 0: A/k 40 for
 * 10 s; at 1 s: A/k 2 for 500 ms, A/"a\x01b" 5 for 10 s; mutex/m 1 for 2 s. Now 1.2 s. */
static void three_leases(const char *arena, thr_limiter **a, struct thr_lease le[4])
{
        struct shm_limiter_spec l[] = {sem_spec("A", 42, 8), sem_spec("mutex", 1, 4),
                                       lim_spec("api", 10, S, 5, 5)};
        make_arena(arena, 3, l);
        a[0] = open_lim("A");
        a[1] = open_lim("mutex");
        cr_assert_eq(thr_sem_try(a[0], "k", 1, 40, 10 * S, &le[0]), 0);
        advance(S);
        cr_assert_eq(thr_sem_try(a[0], "k", 1, 2, 500 * MS, &le[1]), 0);
        cr_assert_eq(thr_sem_try(a[0],
                                 "a\x01"
                                 "b",
                                 3, 5, 10 * S, &le[2]),
                     0);
        cr_assert_eq(thr_sem_try(a[1], "m", 1, 1, 2 * S, &le[3]), 0);
        advance(200 * MS);
}

Test(shmctl_sem, leases_lists_every_lease_with_holder_age_expiry_and_generation)
{
        static char out[OUT_MAX];
        char want[512], line[512];
        thr_limiter *l[2];
        struct thr_lease le[4];
        three_leases("sleases", l, le);
        int pid = (int)getpid();
        unsigned long tid = my_tid();
        cr_assert_eq(run(out, "--json leases"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"now_ns\":1200000000,\"pending\":0,\"limiters\":["
                        "{\"name\":\"A\",\"state\":\"live\",\"max\":42,\"leases_per_key\":8},"
                        "{\"name\":\"mutex\",\"state\":\"live\",\"max\":1,\"leases_per_key\":4}],"
                        "\"leases\":[");
        cr_assert_null(strstr(out, "\"api\""), "a GCRA limiter has no leases:\n%s", out);
        /* keys by limiter then key bytes ("a\x01b" < "k"), leases of a key oldest first */
        const char *at[4];
        snprintf(want, sizeof(want),
                 "{\"limiter\":\"A\",\"key\":\"a\\u0001b\",\"index\":0,\"gen\":1,\"amount\":5,"
                 "\"pid\":%d,\"tid\":%lu,",
                 pid, tid);
        at[0] = strstr(out, want);
        snprintf(want, sizeof(want),
                 "{\"limiter\":\"A\",\"key\":\"k\",\"index\":0,\"gen\":1,\"amount\":40,"
                 "\"pid\":%d,\"tid\":%lu,",
                 pid, tid);
        at[1] = strstr(out, want);
        snprintf(want, sizeof(want),
                 "{\"limiter\":\"A\",\"key\":\"k\",\"index\":1,\"gen\":2,\"amount\":2,"
                 "\"pid\":%d,\"tid\":%lu,",
                 pid, tid);
        at[2] = strstr(out, want);
        at[3] = strstr(out, "{\"limiter\":\"mutex\",\"key\":\"m\",\"index\":0,\"gen\":1,");
        for (int i = 0; i < 4; i++)
                cr_assert(at[i] && (i == 0 || at[i - 1] < at[i]),
                          "lease %d missing or out of "
                          "order:\n%s",
                          i, out);
        assert_has(at[1], "\"acquired_ns\":0,\"expires_ns\":10000000000,\"age_ns\":1200000000,"
                          "\"expires_in_ns\":8800000000,\"expired\":false}");
        assert_has(at[2], "\"acquired_ns\":1000000000,\"expires_ns\":1500000000,"
                          "\"age_ns\":200000000,\"expires_in_ns\":300000000,\"expired\":false}");
        assert_has(out, "\"keys\":[{\"limiter\":\"A\",\"key\":\"a\\u0001b\",\"held\":5,\"max\":42,"
                        "\"leases\":1,\"leases_per_key\":8,\"pending\":0,\"waiting\":[],"
                        "\"waiting_found\":0},{\"limiter\":\"A\",\"key\":\"k\",\"held\":42,"
                        "\"max\":42,\"leases\":2,\"leases_per_key\":8,\"pending\":0,");
        /* the table, then the keys */
        cr_assert_eq(run(out, "leases"), 0, "%s", out);
        assert_has(out, "arena time 1.2s: 2 semaphore limiters, 4 leases on 3 keys, 0 pending\n"
                        "LIMITER  KEY     AMOUNT  ");
        assert_has(out, "  HOLDER    AGE  EXPIRES_IN  GEN\n");
        snprintf(want, sizeof(want), "A        k            2  %d  %lu  ", pid, tid);
        assert_has(line_with(out, "300ms", line, sizeof(line)), want);
        assert_has(line, "  200ms       300ms    2");
        assert_has(line_with(out, "8.8s", line, sizeof(line)), "A        k           40  ");
        assert_has(line, "   1.2s        8.8s    1");
        assert_has(line_with(out, "a\\x01b", line, sizeof(line)), "A        a\\x01b       5  ");
        assert_has(out, "\nLIMITER  KEY      HELD  LEASES  PENDING  WAITING\n"
                        "A        a\\x01b   5/42     1/8        0  -\n"
                        "A        k       42/42     2/8        0  -\n"
                        "mutex    m         1/1     1/4        0  -\n");
        /* past its expiry a lease not yet reclaimed shows expired (nobody served the key) */
        advance(400 * MS);
        cr_assert_eq(run(out, "--json leases A"), 0, "%s", out);
        assert_json(out);
        cr_assert_null(strstr(out, "mutex"), "only A:\n%s", out);
        assert_has(out, "\"acquired_ns\":1000000000,\"expires_ns\":1500000000,"
                        "\"age_ns\":600000000,\"expires_in_ns\":-100000000,\"expired\":true}");
        cr_assert_eq(run(out, "leases A"), 0, "%s", out);
        assert_has(out, "arena time 1.6s: 1 semaphore limiter, 3 leases on 2 keys, 0 pending\n");
        assert_has(line_with(out, "expired", line, sizeof(line)),
                   "  600ms  expired 100ms ago    2");
        /* released leases are gone */
        cr_assert_eq(thr_sem_release(&le[0]), 0);
        cr_assert_eq(thr_sem_release(&le[3]), 0);
        cr_assert_eq(run(out, "--json leases"), 0, "%s", out);
        cr_assert_null(strstr(out, "\"amount\":40"), "%s", out);
        cr_assert_null(strstr(out, "\"key\":\"m\""), "a key with no lease is not listed:\n%s", out);
        thr_limiter_close(l[0]);
        thr_limiter_close(l[1]);
}

Test(shmctl_sem, leases_refuses_other_kinds_and_says_when_there_is_none)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec g[] = {lim_spec("api", 10, S, 5, 5)};
        make_arena("snone", 1, g);
        cr_assert_eq(run(out, "leases"), 0, "%s", out);
        assert_has(out, "no semaphore limiters\n");
        cr_assert_eq(run(out, "--json leases"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"now_ns\":0,\"pending\":0,\"limiters\":[],\"leases\":[],\"keys\":[]}\n");
        cr_assert_eq(run(out, "leases api"), EX_NOTFOUND_, "%s", out);
        assert_has(out, "shmctl: limiter api is not a semaphore (kind gcra)\n");
        cr_assert_eq(run(out, "--json leases nosuch"), EX_NOTFOUND_, "%s", out);
        assert_has(out, "no such limiter: nosuch");
        cr_assert_eq(run(out, "leases api extra"), EX_USAGE, "%s", out);
        cr_assert_eq(run(out, "leases -n 3"), EX_USAGE, "%s", out);
        cr_assert_eq(run(out, "--help"), 0, "%s", out);
        assert_has(out, "shmctl [-a ARENA] [--json] leases [LIMITER]\n");
        cr_assert_eq(run(out, "limiters"), 0, "%s", out);
        cr_assert_null(strstr(out, "HELD"), "no semaphore: no semaphore columns:\n%s", out);
}

Test(shmctl_sem, limiters_show_max_leases_per_key_held_and_pending)
{
        static char out[OUT_MAX];
        char line[512];
        thr_limiter *l[2];
        struct thr_lease le[4];
        three_leases("slims", l, le);
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_json(out);
        /* a 64-byte header and 8 records of 64 bytes after the 64-byte slot */
        assert_has(out, "{\"name\":\"A\",\"rate\":null,\"rate_n\":42,\"period_ns\":0,\"burst\":42,"
                        "\"initial\":42,\"kind\":\"semaphore\",\"max\":42,\"leases_per_key\":8,"
                        "\"held\":47,\"pending\":0,\"serialize\":false,\"bytes_per_slot\":640,"
                        "\"capacity\":64,\"live\":2,");
        assert_has(out, "\"kind\":\"semaphore\",\"max\":1,\"leases_per_key\":4,\"held\":1,"
                        "\"pending\":0,\"serialize\":false,\"bytes_per_slot\":384,");
        assert_has(out, "\"max_waiters\":0,\"on_queue_full\":\"reject\","
                        "\"priority_share_one_in\":0}");
        assert_has(out,
                   "{\"name\":\"api\",\"rate\":\"10/s\",\"rate_n\":10,\"period_ns\":1000000000,"
                   "\"burst\":5,\"initial\":5,\"kind\":\"gcra\",\"serialize\":false,");
        cr_assert_eq(run(out, "limiters"), 0, "%s", out);
        assert_has(out, "  ALLOWED_FULL  CLOCK     HELD  LEASES  PENDING\n");
        assert_has(line_with(out, "A ", line, sizeof(line)),
                   "A      live   semaphore     -      -  "
                   "      -  -  ");
        assert_has(line, "  47/42       8        0");
        assert_has(line_with(out, "mutex ", line, sizeof(line)), "   1/1       4        0");
        assert_has(line_with(out, "api ", line, sizeof(line)), "api    live   gcra       10/s  ");
        assert_has(line, "      -       -        -");
        thr_limiter_close(l[0]);
        thr_limiter_close(l[1]);
}

Test(shmctl_sem, keys_and_get_show_held_of_max_leases_in_use_and_pending)
{
        static char out[OUT_MAX];
        thr_limiter *l[2];
        struct thr_lease le[4];
        three_leases("skeys", l, le);
        cr_assert_eq(run(out, "--json keys A"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"limiter\":\"A\",\"state\":\"live\",\"kind\":\"semaphore\",\"max\":42,"
                        "\"leases_per_key\":8,\"now_ns\":1200000000,\"units_per_ns\":1,\"live\":2,"
                        "\"shown\":2,\"keys\":[{\"key\":\"k\",\"held\":42,");
        assert_has(out, "{\"key\":\"k\",\"held\":42,\"max\":42,\"leases\":2,\"leases_per_key\":8,"
                        "\"pending\":0,\"waiting\":[],\"waiting_found\":0,\"remaining\":0,"
                        "\"granted\":2,\"released\":0,\"expired\":0,\"reclaimed\":0,"
                        "\"changed_ns\":1000000000}");
        cr_assert_eq(run(out, "keys A"), 0, "%s", out);
        assert_has(out, "limiter A: 2 live keys, 2 shown, most held first, arena time 1.2s, "
                        "semaphore of max 42, 8 leases a key\n"
                        "KEY      HELD  LEASES  PENDING  WAITING  GRANTED  RELEASED  EXPIRED  "
                        "RECLAIMED\n"
                        "k       42/42     2/8        0  -              2         0        0  "
                        "        0\n"
                        "a\\x01b   5/42     1/8        0  -              1         0        0  "
                        "        0\n");
        cr_assert_eq(thr_sem_release(&le[0]), 0);
        cr_assert_eq(run(out, "--json get A k"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"key\":\"k\",\"held\":2,\"max\":42,\"leases\":1,\"leases_per_key\":8,"
                        "\"pending\":0,\"waiting\":[],\"waiting_found\":0,\"remaining\":40,"
                        "\"granted\":2,\"released\":1,");
        cr_assert_eq(run(out, "get mutex m"), 0, "%s", out);
        assert_has(out, "m     1/1     1/4        0  -              1         0        0  "
                        "        0\n");
        cr_assert_eq(run(out, "get A nokey"), 0, "absent, nothing held: %s", out);
        assert_has(out, "nokey  0/42     0/8        0  -              0         0        0  "
                        "        0\n");
        thr_limiter_close(l[0]);
        thr_limiter_close(l[1]);
}

/* A thread blocked in thr_sem_acquire: its outcome and its thread id. */
struct acq {
        thr_limiter *l;
        uint32_t amount;
        uint64_t timeout;
        _Atomic unsigned long tid;
        _Atomic int done;
        int rc;
        struct thr_lease lease;
};

static void *acquirer(void *arg)
{
        struct acq *q = arg;
        atomic_store(&q->tid, my_tid());
        q->rc = thr_sem_acquire(q->l, "q", 1, q->amount, 10 * S, q->timeout, &q->lease);
        atomic_store(&q->done, 1);
        return NULL;
}

/* The header of key Q of limiter A in the test's mapping. */
static struct thr_sem *sem_of(const char *lim, const char *key)
{
        struct thr_table *tb = table_of(lim);
        uint64_t h = shm_hash(shm_hdr(&fx.map)->hash_key, key, strlen(key));
        struct thr_slot *s = shm_table_lookup(fx.map.base, tb, h, key, (uint32_t)strlen(key));
        cr_assert_not_null(s, "key %s", key);
        return shm_sem(shm_slot_aux(fx.map.base, tb, s));
}

/* Wait (real time, bounded) until key q of A has N queued. */
static void until_queued(uint32_t n)
{
        struct thr_sem *h = sem_of("A", "q");
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

Test(shmctl_sem, queued_acquires_show_as_pending_with_their_amounts_oldest_first)
{
        static char out[OUT_MAX];
        char want[512], line[512];
        struct shm_limiter_spec l[] = {sem_spec("A", 42, 8)};
        make_arena("swait", 1, l);
        thr_limiter *a = open_lim("A");
        struct thr_lease hold;
        cr_assert_eq(thr_sem_try(a, "q", 1, 40, 10 * S, &hold), 0);
        /* big (30) queues first, then small (1): the head does not fit, and small may not
         * overtake it */
        struct acq big = {.l = a, .amount = 30, .timeout = 20 * S};
        struct acq small = {.l = a, .amount = 1, .timeout = 50 * MS};
        pthread_t tb, ts;
        pthread_create(&tb, NULL, acquirer, &big);
        until_queued(1);
        pthread_create(&ts, NULL, acquirer, &small);
        until_queued(2);
        int pid = (int)getpid();
        snprintf(want, sizeof(want),
                 "\"pending\":2,\"waiting\":[{\"amount\":30,\"pid\":%d,\"tid\":%lu},"
                 "{\"amount\":1,\"pid\":%d,\"tid\":%lu}],\"waiting_found\":2",
                 pid, atomic_load(&big.tid), pid, atomic_load(&small.tid));
        cr_assert_eq(run(out, "--json get A q"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"key\":\"q\",\"held\":40,\"max\":42,\"leases\":1,\"leases_per_key\":8,");
        assert_has(out, want);
        cr_assert_eq(run(out, "--json leases"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"now_ns\":0,\"pending\":2,");
        assert_has(out, want);
        cr_assert_eq(run(out, "keys A"), 0, "%s", out);
        assert_has(line_with(out, "q ", line, sizeof(line)), "q    40/42     1/8        2  30,1  ");
        cr_assert_eq(run(out, "leases"), 0, "%s", out);
        assert_has(out, "1 lease on 1 key, 2 pending\n");
        assert_has(out, "A        q    40/42     1/8        2  30,1\n");
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_has(out, "\"held\":40,\"pending\":2,");
        /* the small one's deadline passes on the arena's clock: it gives up, the big one stays */
        advance(50 * MS);
        until_done(&small);
        pthread_join(ts, NULL);
        cr_assert_eq(small.rc, -ETIMEDOUT);
        cr_assert_eq(atomic_load(&big.done), 0, "the head was granted with 40 of 42 held");
        until_queued(1);
        cr_assert_eq(run(out, "get A q"), 0, "%s", out);
        assert_has(out, "q    40/42     1/8        1  30  ");
        /* the holder lets go: the head is granted, its lease is its thread's */
        cr_assert_eq(thr_sem_release(&hold), 0);
        until_done(&big);
        pthread_join(tb, NULL);
        cr_assert_eq(big.rc, 0);
        cr_assert_eq(run(out, "--json leases A"), 0, "%s", out);
        assert_json(out);
        snprintf(want, sizeof(want),
                 "\"leases\":[{\"limiter\":\"A\",\"key\":\"q\",\"index\":0,\"gen\":2,"
                 "\"amount\":30,\"pid\":%d,\"tid\":%lu,",
                 pid, atomic_load(&big.tid));
        assert_has(out, want);
        assert_has(out, "\"held\":30,\"max\":42,\"leases\":1,\"leases_per_key\":8,\"pending\":0,"
                        "\"waiting\":[],\"waiting_found\":0}");
        cr_assert_eq(thr_sem_release(&big.lease), 0);
        thr_limiter_close(a);
}

/* The live slots of limiter LIM in the test's mapping, into V (at most MAX): how many. */
static size_t live_slots(const char *lim, struct thr_slot **v, size_t max)
{
        struct thr_table *tb = table_of(lim);
        struct thr_slot *s0 = shm_at(fx.map.base, tb->slots_off);
        uint64_t nslots = (uint64_t)tb->nshards * tb->shard_slots;
        size_t n = 0;
        for (uint64_t i = 0; i < nslots && n < max; i++)
                if (THR_META_STATUS(atomic_load(&s0[i].meta)) == THR_SLOT_LIVE)
                        v[n++] = &s0[i];
        return n;
}

/* Every word of the semaphore header and lease records of each live slot of LIM, and its state
 * word, as garbage (none, the largest value, or any). */
static void scribble(const char *lim, uint64_t *x)
{
        struct thr_table *tb = table_of(lim);
        struct thr_slot *v[8];
        size_t n = live_slots(lim, v, 8);
        for (size_t i = 0; i < n; i++) {
                atomic_store(&v[i]->state, next_rand(x) % THR_TAT_LIMIT);
                _Atomic uint64_t *aux = shm_slot_aux(fx.map.base, tb, v[i]);
                for (uint32_t w = 0; w < tb->aux_stride / 8; w++) {
                        uint64_t r = next_rand(x);
                        atomic_store(&aux[w], r % 4 == 0 ? 0 : r % 4 == 1 ? UINT64_MAX : r);
                }
        }
}

/* Reader record R as a waiter for slot S with TICKET (owner set: the client has closed). */
static void wait_for(uint32_t r, struct thr_slot *s, uint64_t ticket)
{
        struct thr_reader *rd =
            (struct thr_reader *)shm_at(fx.map.base, shm_hdr(&fx.map)->reader_off) + r;
        atomic_store(&rd->owner, 0x5eed0000u + r);
        atomic_store(&rd->pid, 1000 + r);
        atomic_store(&rd->tid, 0);
        atomic_store(&rd->wait_slot, (uint64_t)((char *)s - (char *)fx.map.base));
        atomic_store(&rd->wait_gen, THR_META_GEN(atomic_load(&s->meta)));
        atomic_store(&rd->wait_state, THR_WAIT_WAITING);
        atomic_store(&rd->wait_ticket, ticket);
}

Test(shmctl_sem, scribbled_semaphore_keys_do_not_crash)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {sem_spec("A", 42, 8), sem_spec("B", 65535, 1)};
        make_arena_readers("sscribble", 2, l, 40);
        thr_limiter *a = open_lim("A"), *b = open_lim("B");
        struct thr_lease le[4];
        cr_assert_eq(thr_sem_try(a, "k", 1, 40, 10 * S, &le[0]), 0);
        cr_assert_eq(thr_sem_try(a, "k", 1, 2, 10 * S, &le[1]), 0);
        cr_assert_eq(thr_sem_try(a, "j", 1, 1, 10 * S, &le[2]), 0);
        cr_assert_eq(thr_sem_try(b, "k", 1, 65535, 10 * S, &le[3]), 0);
        thr_limiter_close(a);
        thr_limiter_close(b);
        close_client();
        struct thr_slot *slots[3];
        cr_assert_eq(live_slots("A", slots, 2), 2);
        cr_assert_eq(live_slots("B", slots + 2, 1), 1);
        static const char *const cmds[] = {
            "leases",  "--json leases",  "leases A", "--json leases B", "keys A", "--json keys A",
            "get A k", "--json get B k", "limiters", "--json limiters"};
        static const uint64_t nows[] = {S, 0, THR_TAT_LIMIT, UINT64_MAX / 2};
        uint64_t x = 0x2545f4914f6cdd1dull;
        for (int round = 0; round < 8; round++) {
                scribble("A", &x);
                scribble("B", &x);
                for (uint32_t r = 0; r < 40; r++) /* garbage tickets, any order */
                        wait_for(r, slots[next_rand(&x) % 3], next_rand(&x));
                atomic_store(&shm_hdr(&fx.map)->manual_now_ns, nows[round % 4]);
                for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
                        cr_assert_eq(run(out, "%s", cmds[c]), 0, "round %d, %s: %s", round, cmds[c],
                                     out);
                        cr_assert_null(strstr(out, "runtime error"), "%s: %s", cmds[c], out);
                        if (cmds[c][0] == '-')
                                assert_json(out);
                }
        }
        /* `leases` only prints the arena time: a time `keys` refuses (out of range) is fine */
        atomic_store(&shm_hdr(&fx.map)->manual_now_ns, UINT64_MAX);
        cr_assert_eq(run(out, "--json leases A"), 0, "%s", out);
        assert_json(out);
        cr_assert_eq(run(out, "keys A"), EX_DATAERR, "%s", out);
        /* 40 waiters for one key, the oldest (lowest ticket) last in the records: the 16 oldest
         * are kept, oldest first, and the rest counted */
        for (uint32_t r = 0; r < 40; r++)
                wait_for(r, slots[0], (uint64_t)(40 - r) << 16 | (40 - r));
        struct thr_sem *h = shm_sem(shm_slot_aux(fx.map.base, table_of("A"), slots[0]));
        atomic_store(&h->waiters, 40);
        cr_assert_eq(run(out, "leases A"), 0, "%s", out);
        assert_has(out, "  40  1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,...");
        cr_assert_eq(run(out, "--json leases A"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"pending\":40,\"waiting\":[{\"amount\":1,\"pid\":1039,\"tid\":0},"
                        "{\"amount\":2,\"pid\":1038,");
        assert_has(out, "{\"amount\":16,\"pid\":1024,\"tid\":0}],\"waiting_found\":40}");
}

/* The parameter record of limiter NAME in the test's writable mapping. */
static struct thr_params *params_of(const char *name)
{
        return shm_at(fx.map.base, atomic_load(&entry_of(name)->params_off));
}

Test(shmctl_sem, leases_per_key_that_do_not_fit_the_table_are_dataerr)
{
        static char out[OUT_MAX];
        struct shm_limiter_spec l[] = {sem_spec("A", 42, 8)};
        make_arena("sparams", 1, l);
        thr_limiter *a = open_lim("A");
        struct thr_lease le;
        cr_assert_eq(thr_sem_try(a, "k", 1, 4, 10 * S, &le), 0);
        thr_limiter_close(a);
        close_client();
        struct thr_params *p = params_of("A"); /* found while it is valid */
        struct thr_table *tb = table_of("A");
        p->leases = THR_SEM_LEASES_MAX; /* in range, but 1024 records do not fit 576 bytes */
        expect_dataerr("leases");
        expect_dataerr("keys A");
        expect_dataerr("limiters");
        p->leases = 0;
        expect_dataerr("--json leases");
        p->leases = UINT64_MAX / THR_LEASE_SIZE + 2; /* shm_sem_stride would wrap */
        expect_dataerr("leases A");
        p->leases = 8;
        tb->aux_stride = THR_SEM_HDR + 7 * THR_LEASE_SIZE; /* one record short */
        expect_dataerr("get A k");
        tb->aux_stride = THR_SEM_HDR + 8 * THR_LEASE_SIZE;
        cr_assert_eq(run(out, "--json get A k"), 0, "restored: %s", out);
        assert_has(out, "\"held\":4,");
}

/* A semaphore's queue (thr_sem_acquire_opts): its bound, policy and share, in both outputs; a
 * rewritten policy value is named "unknown", never read past a table. */
Test(shmctl_sem, limiters_show_the_queue_bound_policy_and_share)
{
        static char out[OUT_MAX];
        char line[512];
        struct shm_limiter_spec l[] = {sem_spec("q", 4, 8)};
        l[0].max_waiters = 16;
        l[0].on_queue_full = THR_QUEUE_DROP_LOWEST;
        l[0].priority_share = 5;
        make_arena("squeue", 1, l);
        cr_assert_eq(run(out, "--json limiters"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"max_waiters\":16,\"on_queue_full\":\"drop_lowest\","
                        "\"priority_share_one_in\":5}");
        cr_assert_eq(run(out, "keys q"), 0, "%s", out);
        assert_has(line_with(out, "limiter q", line, sizeof(line)),
                   "semaphore of max 4, 8 leases a key, queue of 16 (drop_lowest when full), 1 "
                   "grant in 5 to the oldest");
}

/*
 * test_client.c - the public API's edges: key limits, errors, several arenas, reservations in
 * FIFO order and their cancellation, the blocking acquire with its deadline, threads sharing a
 * key exactly, and per-thread reader records.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"

#define MS 1000000ull

static struct tarena T;
static thr_limiter *L;

static void setup(void)
{
        struct shm_limiter_spec s[] = {tspec("l", 10, SEC, 5, 5), tspec("small", 1000, SEC, 1, 1)};
        s[1].capacity = 16;
        s[1].max_reserve_ns = 50 * MS;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 2);
        L = tlim(&T, "l");
}

static void teardown(void)
{
        thr_limiter_close(L);
        tarena_free(&T);
}

TestSuite(client, .init = setup, .fini = teardown);

static uint64_t tat_of(const char *key)
{
        const struct thr_table *tb = ttable(&T, "l");
        uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, key, strlen(key));
        struct thr_slot *s = shm_table_lookup(T.map.base, tb, h, key, (uint32_t)strlen(key));
        cr_assert_not_null(s, "key %s exists", key);
        return atomic_load(&s->state);
}

Test(client, version_matches_header)
{
        cr_assert_eq(thr_version(),
                     (THR_VERSION_MAJOR << 16) | (THR_VERSION_MINOR << 8) | THR_VERSION_PATCH);
}

Test(client, key_length_limits)
{
        char key[THR_KEY_MAX_LEN + 1];
        memset(key, 'k', sizeof(key));
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, key, THR_KEY_MAX_LEN, 1, &r), 1, "the maximum is fine");
        cr_assert_eq(thr_limiter_try(L, key, THR_KEY_MAX_LEN + 1, 1, &r), -ENAMETOOLONG);
        cr_assert_eq(thr_limiter_try(L, key, 0, 1, &r), -EINVAL);
        cr_assert_eq(thr_limiter_try(L, NULL, 3, 1, &r), -EINVAL);
        /* Keys that differ only in their last byte (beyond the inline part) never share state. */
        key[THR_KEY_MAX_LEN - 1] = 'z';
        for (int i = 0; i < 5; i++)
                cr_assert_eq(thr_limiter_try(L, key, THR_KEY_MAX_LEN, 1, &r), 1);
        cr_assert_eq(r.remaining, 0, "the second key had its own full burst");
        cr_assert_eq(shm_table_count(T.map.base, ttable(&T, "l")), 2);
}

Test(client, binary_keys_and_prefixes_are_distinct)
{
        struct thr_result r;
        const char k1[] = {'a', 0, 'b'}, k2[] = {'a', 0, 'c'};
        cr_assert_eq(thr_limiter_try(L, k1, 3, 5, &r), 1);
        cr_assert_eq(thr_limiter_try(L, k2, 3, 5, &r), 1);
        cr_assert_eq(thr_limiter_try(L, k1, 2, 5, &r), 1, "a prefix is another key");
        cr_assert_eq(thr_limiter_try(L, k1, 3, 1, &r), 0);
}

Test(client, unknown_limiter_and_arena)
{
        thr_limiter *l;
        thr_arena *a;
        cr_assert_eq(thr_limiter_open(T.a, "nope", &l), -ENOENT);
        cr_assert_eq(thr_arena_open("/dev/shm/does-not-exist-throttle", 0, &a), -ENOENT);
        cr_assert_eq(thr_arena_open(T.path, 1, &a), -EINVAL, "unknown flags refused");
        cr_assert(strstr(thr_strerror(-ERANGE), "burst"));
}

Test(client, several_arenas_are_independent)
{
        struct shm_limiter_spec s = tspec("l", 10, SEC, 5, 5);
        struct tarena t2;
        tarena_make(&t2, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l2 = tlim(&t2, "l");
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, "k", 1, 5, &r), 1);
        cr_assert_eq(thr_limiter_try(l2, "k", 1, 5, &r), 1, "the other arena's key is full");
        cr_assert_eq(thr_limiter_try(L, "k", 1, 1, &r), 0);
        thr_limiter_close(l2);
        tarena_free(&t2);
        cr_assert_eq(thr_limiter_try(L, "k", 1, 1, &r), 0, "the first arena still works");
        cr_assert_eq(r.retry_after_ns, 100 * MS);
}

Test(client, table_full_denies_new_keys)
{
        thr_limiter *l = tlim(&T, "small");
        struct thr_result r;
        char key[16];
        for (int i = 0; i < 16; i++) {
                int n = snprintf(key, sizeof(key), "k%d", i);
                cr_assert_eq(thr_limiter_try(l, key, (size_t)n, 1, &r), 1, "key %d", i);
        }
        r.retry_after_ns = 0;
        cr_assert_eq(thr_limiter_try(l, "one-more", 8, 1, &r), 0, "on_full = deny: denied");
        cr_assert_eq(r.retry_after_ns, MS, "look again after one emission interval");
        cr_assert_eq(thr_limiter_reserve(l, "one-more", 8, 1, 0, &(struct thr_reservation){0}),
                     -ENOSPC, "a reservation cannot wait for room");
        cr_assert_eq(thr_limiter_try(l, "k3", 2, 1, &r), 0, "existing keys still decide");
        cr_assert_eq(r.retry_after_ns, MS);
        cr_assert_eq(ttable(&T, "small")->insert_fail, 2);
        thr_limiter_close(l);
}

Test(client, clock_advance_needs_a_manual_arena)
{
        struct shm_limiter_spec s = tspec("l", 10, SEC, 5, 5);
        struct tarena rt;
        tarena_make(&rt, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, &s, 1);
        cr_assert_eq(thr_clock_advance(rt.a, 1), -EPERM);
        uint64_t t0, t1;
        thr_clock_now(rt.a, &t0);
        thr_clock_now(rt.a, &t1);
        cr_assert_geq(t1, t0, "monotonic");
        tarena_free(&rt);
        thr_clock_now(T.a, &t0);
        cr_assert_eq(thr_clock_advance(T.a, 5 * SEC), 0);
        thr_clock_now(T.a, &t1);
        cr_assert_eq(t1 - t0, 5 * SEC);
}

Test(client, reservations_are_fifo_and_block_try)
{
        struct thr_reservation a, b, c;
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, "k", 1, 5, &r), 1);
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 1, SEC, &a), 0);
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 2, SEC, &b), 0);
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 1, SEC, &c), 0);
        cr_assert_eq(a.wait_ns, 100 * MS);
        cr_assert_eq(b.wait_ns, 300 * MS, "served in reservation order");
        cr_assert_eq(c.wait_ns, 400 * MS);
        thr_clock_advance(T.a, 100 * MS);
        cr_assert_eq(thr_limiter_try(L, "k", 1, 1, &r), 0, "try cannot jump the queue");
        cr_assert_eq(r.retry_after_ns, 400 * MS, "behind the three reservations");
}

Test(client, reservation_beyond_the_wait_takes_nothing)
{
        struct thr_reservation a;
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, "k", 1, 5, &r), 1);
        uint64_t tat = tat_of("k");
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 3, 299 * MS, &a), -EAGAIN);
        cr_assert_eq(a.wait_ns, 300 * MS, "says when it would be due");
        cr_assert_eq(tat_of("k"), tat, "nothing taken");
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 3, 300 * MS, &a), 0);
        cr_assert_eq(thr_limiter_reserve(L, "new", 3, 0, SEC, &a), -EINVAL);
}

Test(client, reservation_cap_of_the_limiter)
{
        thr_limiter *l = tlim(&T, "small"); /* T = 1 ms, B = 1, max_reserve 50 ms */
        struct thr_reservation a;
        int ok = 0;
        while (thr_limiter_reserve(l, "k", 1, 1, 10 * SEC, &a) == 0)
                ok++;
        cr_assert_eq(ok, 51, "now, then 50 more within the 50 ms cap");
        thr_limiter_close(l);
}

Test(client, cancel_gives_back_only_the_last_reservation)
{
        struct thr_reservation a, b;
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, "k", 1, 5, &r), 1);
        uint64_t tat0 = tat_of("k");
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 1, SEC, &a), 0);
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 1, SEC, &b), 0);
        cr_assert_eq(thr_reservation_cancel(&a), 0, "b stands behind a: a is kept");
        cr_assert_eq(thr_reservation_cancel(&b), 1, "b is last: given back");
        cr_assert_eq(thr_reservation_cancel(&a), 1, "now a is last");
        cr_assert_eq(tat_of("k"), tat0, "all given back");
        cr_assert_eq(thr_reservation_cancel(&a), -EINVAL, "a handle gives back once");
}

Test(client, a_due_reservation_cannot_be_given_back)
{
        struct thr_reservation a, b;
        uint64_t tat0;
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 5, SEC, &a), 0);
        cr_assert_eq(a.wait_ns, 0, "due at once: it may have been used");
        tat0 = tat_of("k");
        cr_assert_eq(thr_reservation_cancel(&a), 0);
        cr_assert_eq(tat_of("k"), tat0);
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 1, SEC, &b), 0);
        cr_assert_eq(b.wait_ns, 100 * MS);
        thr_clock_advance(T.a, 100 * MS);
        cr_assert_eq(thr_reservation_cancel(&b), 0, "due now: kept");
}

Test(client, a_stale_handle_cannot_take_a_later_place)
{
        struct thr_reservation r1, r2, r3;
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, "k", 1, 5, &r), 1);
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 1, SEC, &r1), 0);
        cr_assert_eq(thr_reservation_cancel(&r1), 1);
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 1, SEC, &r2), 0);
        cr_assert_eq(r2.wait_ns, 100 * MS, "r2 takes the place r1 gave back");
        cr_assert_eq(thr_reservation_cancel(&r1), -EINVAL, "r1's handle is spent");
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 1, SEC, &r3), 0);
        cr_assert_eq(r3.wait_ns, 200 * MS, "r3 queues behind r2, not beside it");
}

Test(client, acquire_fails_at_once_when_the_deadline_is_short)
{
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, "k", 1, 5, &r), 1);
        uint64_t tat = tat_of("k");
        cr_assert_eq(thr_limiter_acquire(L, "k", 1, 1, 99 * MS, &r), -ETIMEDOUT);
        cr_assert_eq(tat_of("k"), tat, "nothing consumed");
        cr_assert_eq(thr_limiter_acquire(L, "k", 1, 6, SEC, &r), -ERANGE);
        cr_assert_eq(thr_limiter_acquire(L, "j", 1, 1, 0, &r), 0, "due now: no wait needed");
}

static void *advance_later(void *arg)
{
        thr_arena *a = arg;
        struct timespec ts = {0, 20 * 1000 * 1000};
        for (int i = 0; i < 10; i++) {
                nanosleep(&ts, NULL);
                thr_clock_advance(a, 10 * MS);
        }
        return NULL;
}

Test(client, acquire_sleeps_until_due)
{
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, "k", 1, 5, &r), 1);
        uint64_t t0, t1;
        thr_clock_now(T.a, &t0);
        pthread_t th;
        pthread_create(&th, NULL, advance_later, T.a);
        cr_assert_eq(thr_limiter_acquire(L, "k", 1, 1, SEC, &r), 0);
        thr_clock_now(T.a, &t1);
        pthread_join(th, NULL);
        cr_assert_geq(t1 - t0, 100 * MS, "returned only once the arena time reached due");
        cr_assert_eq(r.admitted, 1);
        cr_assert_eq(r.remaining, 0);
}

Test(client, acquire_on_the_real_clock_returns_after_due)
{
        struct shm_limiter_spec s = tspec("l", 1000, SEC, 1, 1);
        struct tarena rt;
        tarena_make(&rt, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim(&rt, "l");
        struct thr_result r;
        cr_assert_eq(thr_limiter_acquire(l, "k", 1, 1, SEC, &r), 0);
        uint64_t t0, t1;
        thr_clock_now(rt.a, &t0);
        for (int i = 0; i < 5; i++)
                cr_assert_eq(thr_limiter_acquire(l, "k", 1, 1, SEC, &r), 0);
        thr_clock_now(rt.a, &t1);
        /* 5 more tokens at 1 ms each cannot be had in less than 4 ms (bound, not a timing). */
        cr_assert_geq(t1 - t0, 4 * MS);
        thr_limiter_close(l);
        tarena_free(&rt);
}

struct hammer {
        thr_limiter *l;
        int admitted;
};

static void *hammer(void *arg)
{
        struct hammer *h = arg;
        struct thr_result r;
        for (int i = 0; i < 20000; i++)
                h->admitted += thr_limiter_try(h->l, "hot", 3, 1, &r) == 1;
        return NULL;
}

Test(client, threads_share_one_key_exactly)
{
        struct shm_limiter_spec s = tspec("big", 1, SEC, 1000, 1000);
        struct tarena t2;
        tarena_make(&t2, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim(&t2, "big");
        struct hammer h[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
                h[i] = (struct hammer){l, 0};
                pthread_create(&th[i], NULL, hammer, &h[i]);
        }
        int total = 0;
        for (int i = 0; i < 4; i++) {
                pthread_join(th[i], NULL);
                total += h[i].admitted;
        }
        cr_assert_eq(total, 1000, "exactly the burst, shared by 4 threads");
        thr_limiter_close(l);
        tarena_free(&t2);
}

static void *one_try(void *arg)
{
        struct thr_result r;
        thr_limiter_try(arg, "x", 1, 1, &r);
        return NULL;
}

Test(client, reader_records_are_per_thread_and_given_back)
{
        struct thr_result r;
        thr_limiter_try(L, "x", 1, 1, &r);
        struct thr_reader *rec = shm_at(T.map.base, shm_hdr(&T.map)->reader_off);
        uint32_t n = shm_hdr(&T.map)->reader_count, used = 0, mine = 0;
        for (uint32_t i = 0; i < n; i++)
                if (rec[i].owner) {
                        used++;
                        mine = i;
                }
        cr_assert_eq(used, 1);
        cr_assert_eq(rec[mine].admitted, 1);
        pthread_t th;
        pthread_create(&th, NULL, one_try, L);
        pthread_join(th, NULL);
        used = 0;
        for (uint32_t i = 0; i < n; i++)
                used += rec[i].owner != 0;
        cr_assert_eq(used, 1, "the exited thread's record was given back");
        uint64_t total = 0;
        for (uint32_t i = 0; i < n; i++)
                total += rec[i].admitted;
        cr_assert_eq(total, 2, "counters survive the hand-back");
}

Test(client, a_process_that_exits_without_closing_gives_its_record_back)
{
        struct thr_reader *rec = shm_at(T.map.base, shm_hdr(&T.map)->reader_off);
        uint32_t n = shm_hdr(&T.map)->reader_count;
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                thr_arena *a;
                thr_limiter *l;
                struct thr_result r;
                if (thr_arena_open(T.path, 0, &a) || thr_limiter_open(a, "l", &l))
                        _exit(2);
                thr_limiter_try(l, "c", 1, 1, &r);
                exit(0); /* no thr_arena_close */
        }
        int st;
        waitpid(pid, &st, 0);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        for (uint32_t i = 0; i < n; i++)
                cr_assert_neq(rec[i].pid, (uint64_t)pid, "record %u still names the child", i);
        uint32_t used = 0;
        for (uint32_t i = 0; i < n; i++)
                used += rec[i].owner != 0;
        cr_assert_eq(used, 0, "no record left claimed");
}

struct inserter {
        thr_limiter *l;
        int id;
        int ok;
};

static void *insert_many(void *arg)
{
        struct inserter *in = arg;
        struct thr_result r;
        char key[32];
        for (int i = 0; i < 400; i++) {
                int n = snprintf(key, sizeof(key), "t%d-k%d", in->id, i);
                in->ok += thr_limiter_try(in->l, key, (size_t)n, 1, &r) == 1;
        }
        return NULL;
}

Test(client, capacity_is_exact_under_concurrent_inserts)
{
        struct shm_limiter_spec s = tspec("cap", 10, SEC, 5, 5);
        s.capacity = 64;
        s.shards = 16; /* inserts in different shards do not share a mutex */
        struct tarena t2;
        tarena_make(&t2, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim(&t2, "cap");
        struct inserter in[8];
        pthread_t th[8];
        for (int i = 0; i < 8; i++) {
                in[i] = (struct inserter){l, i, 0};
                pthread_create(&th[i], NULL, insert_many, &in[i]);
        }
        int ok = 0;
        for (int i = 0; i < 8; i++) {
                pthread_join(th[i], NULL);
                ok += in[i].ok;
        }
        const struct thr_table *tb = ttable(&t2, "cap");
        cr_assert_leq(ok, 64, "never more keys than the capacity: %d", ok);
        cr_assert_eq(shm_table_count(t2.map.base, tb), ok);
        cr_assert_eq(tb->live, (uint64_t)ok, "the counter matches the table");
        thr_limiter_close(l);
        tarena_free(&t2);
}

Test(client, a_child_made_without_atfork_handlers_never_writes_its_parents_record)
{
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, "p", 1, 1, &r), 1);
        struct thr_reader *rec = shm_at(T.map.base, shm_hdr(&T.map)->reader_off);
        uint32_t n = shm_hdr(&T.map)->reader_count, mine = n;
        for (uint32_t i = 0; i < n; i++)
                if (rec[i].pid == (uint64_t)getpid())
                        mine = i;
        cr_assert_lt(mine, n);
        uint64_t before = rec[mine].admitted;
        /* A raw clone(SIGCHLD) runs no pthread_atfork handler (like _Fork). */
        pid_t parent = getpid();
        long pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                tchild_tie(parent);
                struct thr_result cr;
                for (int i = 0; i < 3; i++)
                        thr_limiter_try(L, "c", 1, 1, &cr);
                _exit(0);
        }
        int st;
        waitpid((pid_t)pid, &st, 0);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        cr_assert_eq(rec[mine].admitted, before, "the parent's record is untouched");
        uint64_t child_admitted = 0;
        for (uint32_t i = 0; i < n; i++)
                if (i != mine)
                        child_admitted += rec[i].admitted;
        cr_assert_eq(child_admitted, 3, "the child counted in a record of its own");
}

Test(client, strerror_takes_any_int)
{
        cr_assert_str_eq(thr_strerror(INT_MIN), "unknown error"); /* -INT_MIN would overflow */
        cr_assert_str_eq(thr_strerror(5), "unknown error");
        cr_assert_str_eq(thr_strerror(-ENOSPC), "the limiter's key table is full");
}

/* thr_limiter_info: each kind's configuration as built; a retired limiter and a corrupt record. */
Test(client, limiter_info_of_every_kind)
{
        struct shm_limiter_spec s[5];
        s[0] = tspec("g", 100, SEC, 20, 7);
        s[1] = tspec("w", 50, 2 * SEC, 1, 1);
        s[1].kind = THR_KIND_WINDOW;
        s[1].serialize = true;
        s[1].burst = s[1].initial = 0;
        s[2] = tspec("s", 6, 0, 0, 0);
        s[2].kind = THR_KIND_SEMAPHORE;
        s[2].leases = 4;
        s[2].level = 2;
        s[2].max_reserve_ns = 0;
        s[3] = tspec_budget("b", 1234);
        s[4] = tspec("w2", 9, SEC, 1, 1);
        s[4].kind = THR_KIND_WINDOW;
        s[4].burst = s[4].initial = 0;
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 5);
        struct thr_limiter_info in;
        thr_limiter *l = tlim(&t, "g");
        cr_assert_eq(thr_limiter_info(l, &in), 0);
        cr_assert(in.kind == THR_LIMITER_GCRA && in.rate == 100 && in.period_ns == SEC &&
                  in.burst == 20 && in.initial == 7 && in.flags == 0);
        cr_assert_eq(thr_limiter_info(l, NULL), -EINVAL);
        cr_assert_eq(thr_limiter_info(NULL, &in), -EINVAL);
        thr_limiter_close(l);
        l = tlim(&t, "w");
        cr_assert_eq(thr_limiter_info(l, &in), 0);
        cr_assert(in.kind == THR_LIMITER_WINDOW && in.rate == 50 && in.period_ns == 2 * SEC &&
                  in.burst == 50 && in.flags == THR_LIMITER_SERIALIZED);
        thr_limiter_close(l);
        l = tlim(&t, "w2");
        cr_assert_eq(thr_limiter_info(l, &in), 0);
        cr_assert(in.kind == THR_LIMITER_WINDOW && in.rate == 9 && in.flags == 0);
        thr_limiter_close(l);
        l = tlim(&t, "s");
        cr_assert_eq(thr_limiter_info(l, &in), 0);
        cr_assert(in.kind == THR_LIMITER_SEMAPHORE && in.burst == 6 && in.leases == 4 &&
                  in.level == 2 && in.rate == 0 && in.period_ns == 0);
        thr_limiter_close(l);
        l = tlim(&t, "b");
        cr_assert_eq(thr_limiter_info(l, &in), 0);
        cr_assert(in.kind == THR_LIMITER_BUDGET && in.initial == 1234 && in.burst == 0);
        /* a client scribbling the record's kind: refused, never a value read past it */
        struct thr_params *p = shm_at(t.map.base, atomic_load(&l->de->params_off));
        uint32_t kind = p->kind;
        p->kind = 77;
        cr_assert_eq(thr_limiter_info(l, &in), -EBADMSG);
        cr_assert_eq(in.kind, 0);
        p->kind = kind;
        uint64_t off = atomic_load(&l->de->params_off);
        atomic_store(&l->de->params_off, off + 1); /* inside the heap, misaligned (review 14) */
        cr_assert_eq(thr_limiter_info(l, &in), -EBADMSG);
        struct thr_budget_result br;
        cr_assert_eq(thr_budget_try(l, "k", 1, 1, &br), -EBADMSG, "no misaligned read");
        thr_limiter *g = tlim(&t, "g");
        uint64_t goff = atomic_load(&g->de->params_off);
        atomic_store(&g->de->params_off, goff + 4);
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(g, "k", 1, 1, &r), -EBADMSG, "the hot path checks it too");
        atomic_store(&g->de->params_off, goff);
        cr_assert_eq(thr_limiter_try(g, "k", 1, 1, &r), 1);
        thr_limiter_close(g);
        atomic_store(&l->de->params_off, 1); /* outside the heap */
        cr_assert_eq(thr_limiter_info(l, &in), -EBADMSG);
        atomic_store(&l->de->state, THR_DIR_RETIRED);
        cr_assert_eq(thr_limiter_info(l, &in), -EIDRM);
        thr_limiter_close(l);
        tarena_free(&t);
}

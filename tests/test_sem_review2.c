/*
 * test_sem_review2.c - the second hostile review of the semaphore leases, its attack programs
 * kept as tests: the dirty mark, head-only watching, the fork -EPERM rule and params_pin. Three
 * found defects, fixed since: a reload lowering max and raising it again made the trusted sum
 * too low (an over-grant; sums are now of unclamped amounts); a waiter behind a head killed while
 * queued sat 1 s with units free (it now checks every SHM_SEM_BEHIND_POLL_NS, 100 ms); the wake
 * of a new head was lost if it came before the head's futex wait (the serve now changes the
 * word, WAITING -> HEAD, before it wakes). (The reviewer also SIGKILLed a process at 28 points
 * of take, release and serve under gdb: every time, the next lockers granted exactly max; those
 * gdb-driven runs are not kept, as they name source lines.)
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
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

static double mono_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *shared_map(size_t n)
{
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(p, MAP_FAILED);
        return p;
}

static void setup_real(void)
{
        struct shm_limiter_spec s[] = {sspec("ten", 10, 8), sspec("two", 2, 8),
                                       tspec("g", 100, SEC, 100, 100)};
        tarena_make(&T, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, s, 3);
}

static void teardown(void)
{
        tarena_free(&T);
}

static struct thr_slot *slot_of(thr_limiter *l, const char *key)
{
        struct thr_reservation_priv loc;
        cr_assert_eq(thr_op_locate(l, key, strlen(key), &loc), 0);
        return (struct thr_slot *)loc.slot;
}

static void *aux_of(thr_limiter *l, const char *key)
{
        return shm_slot_aux(T.a->map.base, &l->geo, slot_of(l, key));
}

static struct thr_params *params_of(const char *name)
{
        struct shm_lim_snap snap;
        int idx = shm_dir_find(&T.map, name);
        cr_assert_geq(idx, 0);
        cr_assert_eq(shm_dir_snapshot(&T.map, (uint32_t)idx, &snap), 0);
        return (struct thr_params *)shm_at(T.map.base, snap.params_off);
}

static int wait_bounded(pid_t p, double secs)
{
        int st = 0;
        double t0 = mono_s();
        while (waitpid(p, &st, WNOHANG) == 0) {
                if (mono_s() - t0 > secs) {
                        kill(p, SIGKILL);
                        waitpid(p, &st, 0);
                        return -1;
                }
                usleep(2000);
        }
        return st;
}

/* Sum of the amounts of the records in use (what the records say is held). */
static uint64_t rec_sum(void *aux, uint32_t leases, uint32_t *used)
{
        uint64_t s = 0;
        *used = 0;
        for (uint32_t i = 0; i < leases; i++) {
                struct thr_lease_rec *r = shm_sem_lease(aux, i);
                if (atomic_load(&r->gen)) {
                        s += atomic_load(&r->amount);
                        ++*used;
                }
        }
        return s;
}

/* ====================================================== attack 1: the dirty mark */

TestSuite(review2_dirty, .init = setup_real, .fini = teardown, .timeout = 240);

/*
 * A reload may change a semaphore's max in place (shm_limiter_compatible). A sweep recounts held
 * with every amount clamped to the CURRENT max; the fast path of a later take trusts that sum
 * under the NEXT max. Lower max to 3 under a 5-unit lease, let a refused take sweep (held := 3),
 * raise max back to 10: a take of 7 is granted, 12 units are held with max 10.
 */
Test(review2_dirty, max_lowered_then_raised_never_over_grants)
{
        thr_limiter *l = tlim(&T, "ten");
        struct thr_lease a, b, c;
        cr_assert_eq(thr_sem_try(l, "k", 1, 5, 60 * SEC, &a), 0);
        struct thr_params *p = params_of("ten");
        void *aux = aux_of(l, "k");
        atomic_store((_Atomic uint64_t *)&p->rate_n, 3); /* a reload: max 3 */
        cr_expect_eq(thr_sem_try(l, "k", 1, 1, 60 * SEC, &b), -EAGAIN);
        cr_log_info("after max 3: header held %lu",
                    (unsigned long)atomic_load(&shm_sem(aux)->held));
        atomic_store((_Atomic uint64_t *)&p->rate_n, 10); /* a reload back: max 10 */
        int rc = thr_sem_try(l, "k", 1, 7, 60 * SEC, &c);
        uint32_t used;
        uint64_t s = rec_sum(aux, 8, &used);
        cr_log_info("take 7 under max 10 with a 5-unit lease: rc %d, records hold %lu", rc,
                    (unsigned long)s);
        cr_expect_leq(s, 10, "records hold %lu units with max 10 (over-grant)", (unsigned long)s);
        cr_expect_eq(rc, -EAGAIN);
        thr_limiter_close(l);
}

TestSuite(review2_head, .init = setup_real, .fini = teardown, .timeout = 120);

struct box {
        _Atomic int ready[4];
        _Atomic int rc[4];
        _Atomic double t_granted[4];
};

static void queue_child(struct box *b, int i, const char *lim, uint32_t amount, uint64_t tmo)
{
        thr_arena *a;
        thr_limiter *l;
        if (thr_arena_open(T.path, 0, &a) < 0 || thr_limiter_open(a, lim, &l) < 0)
                _exit(3);
        struct thr_lease le;
        atomic_store(&b->ready[i], 1);
        int rc = thr_sem_acquire(l, "k", 1, amount, 60 * SEC, tmo, &le);
        atomic_store(&b->t_granted[i], mono_s());
        atomic_store(&b->rc[i], rc == 0 ? 1 : rc);
        pause();
        _exit(0);
}

/* Whether process P is in futex(2) now (x86-64: syscall 202; elsewhere, always true). */
static bool in_futex(pid_t p)
{
#if defined(__x86_64__)
        char path[64], buf[64] = "";
        snprintf(path, sizeof(path), "/proc/%d/syscall", (int)p);
        FILE *f = fopen(path, "re");
        if (!f)
                return false;
        bool yes = fgets(buf, sizeof(buf), f) && strncmp(buf, "202 ", 4) == 0;
        fclose(f);
        return yes;
#else
        (void)p;
        return true;
#endif
}

static uint32_t waiters_of(thr_limiter *l)
{
        return atomic_load(&shm_sem(aux_of(l, "k"))->waiters);
}

/*
 * max 2, a live holder keeps 1; W1 asks 2 (head, cannot fit), W2 asks 1 behind it. W1 is
 * SIGKILLed: 1 unit is free and W2 fits. No daemon. How long until W2 is granted?
 */
Test(review2_head, behind_waiter_of_a_sigkilled_head)
{
        thr_limiter *l = tlim(&T, "two");
        struct thr_lease h;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, 60 * SEC, &h), 0);
        struct box *b = shared_map(sizeof(*b));
        double worst = 0;
        for (int round = 0; round < 3; round++) {
                memset(b, 0, sizeof(*b));
                pid_t w1 = tfork();
                if (w1 == 0)
                        queue_child(b, 0, "two", 2, 20 * SEC);
                double t0 = mono_s();
                while (waiters_of(l) < 1 && mono_s() - t0 < 5)
                        usleep(1000);
                pid_t w2 = tfork();
                if (w2 == 0)
                        queue_child(b, 1, "two", 1, 20 * SEC);
                while (waiters_of(l) < 2 && mono_s() - t0 < 5)
                        usleep(1000);
                cr_assert_eq(waiters_of(l), 2);
                usleep(50 * 1000); /* W2 asleep behind the head */
                double tk = mono_s();
                kill(w1, SIGKILL);
                waitpid(w1, NULL, 0);
                while (!atomic_load(&b->rc[1]) && mono_s() - tk < 5)
                        usleep(500);
                double lat = atomic_load(&b->t_granted[1]) - tk;
                cr_log_info("round %d: W2 rc %d, granted %.1f ms after the head's death", round,
                            atomic_load(&b->rc[1]), lat * 1e3);
                if (lat > worst)
                        worst = lat;
                kill(w2, SIGKILL);
                waitpid(w2, NULL, 0);
                /* W2's lease: its holder is dead; the next try reclaims it */
        }
        /* the bound: SHM_SEM_BEHIND_POLL_NS (100 ms) and scheduling; it was 1 s */
        cr_expect_lt(worst, 0.5, "a free unit sat unused %.0f ms with a waiter queued",
                     worst * 1e3);
        thr_sem_release(&h);
        thr_limiter_close(l);
}

/*
 * The wake of a new head changed no futex word (before the HEAD state): a head-to-be between its
 * unlock and its FUTEX_WAIT misses it and sleeps SHM_SEM_BEHIND_POLL_NS. Forced with gdb: W2
 * (behind) is held at its futex_sleep call while the head W1 times out; the one live holder (max 2,
 * holds 2) is then SIGKILLed: W2, head now, should see it within THR_SERIAL_POLL_NS.
 */
Test(review2_head, wake_of_a_new_head_lost_before_its_futex_wait)
{
        thr_limiter *l = tlim(&T, "two");
        struct box *b = shared_map(sizeof(*b));
        pid_t hold = tfork();
        if (hold == 0) {
                thr_arena *a;
                thr_limiter *hl;
                if (thr_arena_open(T.path, 0, &a) < 0 || thr_limiter_open(a, "two", &hl) < 0)
                        _exit(3);
                struct thr_lease le;
                if (thr_sem_try(hl, "k", 1, 2, 60 * SEC, &le) != 0)
                        _exit(4);
                atomic_store(&b->ready[3], 1);
                pause();
                _exit(0);
        }
        double t0 = mono_s();
        while (!atomic_load(&b->ready[3]) && mono_s() - t0 < 5)
                usleep(1000);
        pid_t w1 = tfork();
        if (w1 == 0)
                queue_child(b, 0, "two", 1, 600 * MS); /* head: times out at +600 ms */
        while (waiters_of(l) < 1 && mono_s() - t0 < 5)
                usleep(1000);
        pid_t w2 = tfork();
        if (w2 == 0) {
                /* W2 behind: stop at futex_sleep (gdb-free: SIGSTOP itself right after its
                 * enqueue is emulated by the parent stopping it once it is queued) */
                queue_child(b, 1, "two", 1, 20 * SEC);
        }
        while (waiters_of(l) < 2 && mono_s() - t0 < 5)
                usleep(100);
        /* W2 is queued; stop it once it sleeps (in futex(2): not holding the key's lock, which
         * would make W1 leave without serving), so that W1's leave must reach it through its word:
         * SIGCONT restarts the FUTEX_WAIT, which then sees the word changed */
        while (!in_futex(w2) && mono_s() - t0 < 5)
                usleep(100);
        cr_assert(in_futex(w2), "W2 never slept");
        kill(w2, SIGSTOP);
        /* W1 times out and wakes the new head (W2): nobody is in FUTEX_WAIT yet, or W2 is and
         * the stop makes the wait restart */
        while (!atomic_load(&b->rc[0]) && mono_s() - t0 < 5)
                usleep(1000);
        cr_log_info("W1 rc %d", atomic_load(&b->rc[0]));
        /* the deterministic part: W1's leave made W2 the head by its word, while W2 was stopped,
         * so W2 cannot sleep on it as a waiter behind the head */
        const struct thr_reader *rec = shm_at(T.map.base, T.map.g.reader_off);
        uint32_t w2_state = UINT32_MAX;
        for (uint32_t i = 0; i < T.map.g.reader_count; i++)
                if (atomic_load(&rec[i].owner) && atomic_load(&rec[i].pid) == (uint64_t)w2 &&
                    THR_WAIT_STATE(atomic_load(&rec[i].wait_state)) != THR_WAIT_NONE)
                        w2_state = THR_WAIT_STATE(atomic_load(&rec[i].wait_state));
        cr_expect_eq(w2_state, THR_WAIT_HEAD, "W2's word after W1 left: %u", w2_state);
        kill(w2, SIGCONT);
        usleep(30 * 1000);
        double tk = mono_s();
        kill(hold, SIGKILL);
        waitpid(hold, NULL, 0);
        while (!atomic_load(&b->rc[1]) && mono_s() - tk < 5)
                usleep(500);
        double lat = atomic_load(&b->t_granted[1]) - tk;
        cr_log_info("W2 rc %d granted %.1f ms after the holder's death", atomic_load(&b->rc[1]),
                    lat * 1e3);
        kill(w1, SIGKILL);
        kill(w2, SIGKILL);
        waitpid(w1, NULL, 0);
        waitpid(w2, NULL, 0);
        /* the head's bound: THR_SERIAL_POLL_NS (10 ms) and scheduling; it was 1 s */
        cr_expect_lt(lat, 0.5, "the new head slept %.0f ms with a dead holder's units free",
                     lat * 1e3);
        thr_limiter_close(l);
}

/* ====================================================== attack 3: fork and the holder */

TestSuite(review2_forkh, .init = setup_real, .fini = teardown, .timeout = 120);

struct race {
        thr_limiter *l;
        _Atomic int go;
        struct thr_lease le;
        int rc;
};

static void *first_acquire(void *x)
{
        struct race *r = x;
        while (!atomic_load(&r->go))
                ;
        r->rc = thr_sem_acquire(r->l, "k", 1, 1, 60 * SEC, SEC, &r->le);
        return NULL;
}

/* fork (and _Fork) while another thread makes the process's first acquire (claims the lease
 * record): the child must get -EPERM on the parent's handle, and take and release its own. */
static void fork_race(bool raw)
{
        int bad = 0;
        for (int round = 0; round < 30; round++) {
                thr_arena *a;
                thr_limiter *l;
                cr_assert_eq(thr_arena_open(T.path, 0, &a), 0);
                cr_assert_eq(thr_limiter_open(a, "ten", &l), 0);
                struct race r = {.l = l};
                pthread_t t;
                pthread_create(&t, NULL, first_acquire, &r);
                atomic_store(&r.go, 1);
                for (volatile int spin = 0; spin < (round * 997) % 20000; spin++)
                        ;
                pid_t c = raw ? _Fork() : fork();
                if (c == 0) {
                        int code = 0;
                        /* the parent's handle may be half-filled or complete in our copy */
                        struct thr_lease copy = r.le;
                        if (thr_lease_priv(&copy)->slot) {
                                int rc = thr_sem_release(&copy);
                                if (rc != -EPERM && rc != -EKEYEXPIRED)
                                        code |= 1;
                        }
                        struct thr_lease mine;
                        int rc = thr_sem_try(l, "k", 1, 2, 60 * SEC, &mine);
                        if (rc != 0)
                                code |= 2;
                        else if (thr_sem_release(&mine) != 0)
                                code |= 4;
                        _exit(code);
                }
                pthread_join(t, NULL);
                int st = wait_bounded(c, 10);
                if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st)) {
                        cr_log_info("round %d: child status %d (0x%x)", round, st,
                                    WIFEXITED(st) ? WEXITSTATUS(st) : -1);
                        bad++;
                }
                cr_expect_eq(r.rc, 0);
                if (r.rc == 0)
                        cr_expect_eq(thr_sem_release(&r.le), 0, "round %d: parent's release",
                                     round);
                struct thr_reservation_priv loc;
                cr_assert_eq(thr_op_locate(l, "k", 1, &loc), 0);
                void *aux = shm_slot_aux(a->map.base, &l->geo, (struct thr_slot *)loc.slot);
                uint32_t used;
                cr_expect_eq(rec_sum(aux, 8, &used), 0, "round %d: records left", round);
                thr_limiter_close(l);
                thr_arena_close(a);
        }
        cr_expect_eq(bad, 0);
}

Test(review2_forkh, fork_during_the_first_acquire)
{
        fork_race(false);
}

Test(review2_forkh, raw_fork_during_the_first_acquire)
{
        fork_race(true);
}

/* Two handles on one arena in one process; close and reopen; old handles. */
Test(review2_forkh, two_handles_and_a_reopen)
{
        thr_arena *a1, *a2;
        thr_limiter *l1, *l2;
        cr_assert_eq(thr_arena_open(T.path, 0, &a1), 0);
        cr_assert_eq(thr_arena_open(T.path, 0, &a2), 0);
        cr_assert_eq(thr_limiter_open(a1, "ten", &l1), 0);
        cr_assert_eq(thr_limiter_open(a2, "ten", &l2), 0);
        struct thr_lease x, y;
        cr_assert_eq(thr_sem_try(l1, "k", 1, 4, 60 * SEC, &x), 0);
        cr_assert_eq(thr_sem_try(l2, "k", 1, 4, 60 * SEC, &y), 0);
        /* x's handle used through a2's limiter: its holder token is a2's, not a1's */
        int xrc = 0;
        struct thr_lease_rec *xr =
            shm_sem_lease(shm_slot_aux(a1->map.base, &l1->geo, thr_lease_priv(&x)->slot),
                          thr_lease_priv(&x)->idx);
        cr_log_info("a1 holder %u/%lx a2 holder %u/%lx; x's record gen %lu holder %lx",
                    a1->lease_idx, (unsigned long)a1->lease_token, a2->lease_idx,
                    (unsigned long)a2->lease_token, (unsigned long)atomic_load(&xr->gen),
                    (unsigned long)atomic_load(&xr->holder));
        cr_expect_neq(a1->lease_token, a2->lease_token, "two handles share a holder: %d", xrc);
        cr_expect_eq(thr_sem_release(&y), 0);
        /* close a1: its leases become reclaimable; reopen */
        thr_limiter_close(l1);
        thr_arena_close(a1);
        thr_arena *a3;
        thr_limiter *l3;
        cr_assert_eq(thr_arena_open(T.path, 0, &a3), 0);
        cr_assert_eq(thr_limiter_open(a3, "ten", &l3), 0);
        struct thr_lease z;
        cr_expect_eq(thr_sem_try(l3, "k", 1, 10, 60 * SEC, &z), 0,
                     "a closed handle's lease was not reclaimed");
        cr_expect_eq(thr_sem_release(&z), 0);
        thr_limiter_close(l3);
        thr_arena_close(a3);
        thr_limiter_close(l2);
        thr_arena_close(a2);
}

/* ====================================================== attack 4: params flipping */

TestSuite(review2_flip, .init = setup_real, .fini = teardown, .timeout = 180);

static void honest(const char *lim, int which, _Atomic int *stop, _Atomic long *ops)
{
        thr_arena *a;
        thr_limiter *l;
        if (thr_arena_open(T.path, 0, &a) < 0 || thr_limiter_open(a, lim, &l) < 0)
                _exit(3);
        atomic_fetch_add(stop + 1, 1);
        char key[8];
        while (!atomic_load(stop)) {
                snprintf(key, sizeof(key), "k%d", (int)(atomic_load(ops) % 4));
                struct thr_result res;
                struct thr_lease le;
                switch (which % 4) {
                case 0:
                        thr_limiter_try(l, key, strlen(key), 1, &res);
                        break;
                case 1: {
                        struct thr_reservation rv;
                        if (thr_limiter_reserve(l, key, strlen(key), 1, 5 * MS, &rv) == 1)
                                thr_reservation_cancel(&rv);
                        struct thr_hold hd;
                        if (thr_serial_begin(l, key, strlen(key), 1, 5 * MS, &hd) == 0)
                                thr_serial_end(&hd);
                        break;
                }
                case 2:
                        if (thr_sem_acquire(l, key, strlen(key), 1, SEC, 5 * MS, &le) == 0) {
                                thr_sem_heartbeat(&le, SEC);
                                thr_sem_release(&le);
                        }
                        break;
                case 3:
                        if (thr_sem_try(l, key, strlen(key), 2, SEC, &le) == 0)
                                thr_sem_release(&le);
                        thr_limiter_acquire(l, key, strlen(key), 1, 5 * MS, &res);
                        break;
                }
                atomic_fetch_add(ops, 1);
        }
        _exit(0);
}

static void flip_run(const char *lim)
{
        struct thr_params *p = params_of(lim);
        struct thr_params orig = *p;
        _Atomic int *stop = shared_map(4096);
        _Atomic long *ops = (_Atomic long *)(stop + 16);
        pid_t kids[4];
        for (int i = 0; i < 4; i++) {
                kids[i] = tfork();
                if (kids[i] == 0)
                        honest(lim, i, stop, ops);
        }
        double t0 = mono_s();
        while (atomic_load(stop + 1) < 4 && mono_s() - t0 < 10)
                usleep(1000);
        cr_assert_eq(atomic_load(stop + 1), 4, "children did not open");
        uint64_t seed = 88172645463325252ull;
        t0 = mono_s();
        while (mono_s() - t0 < 6) {
                seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
                _Atomic uint64_t *w = (_Atomic uint64_t *)p;
                switch (seed % 8) {
                case 0:
                        atomic_store((_Atomic uint32_t *)&p->kind, (uint32_t)(seed >> 8) % 4);
                        break;
                case 1:
                        atomic_store((_Atomic uint64_t *)&p->rate_n, (seed >> 8) % 3);
                        break;
                case 2:
                        atomic_store((_Atomic uint64_t *)&p->leases, (seed >> 8) % 3 ? 0 : 1000);
                        break;
                case 3:
                        atomic_store((_Atomic uint64_t *)&p->k, (seed >> 8) % 2);
                        break;
                case 4:
                        atomic_store(&w[(seed >> 8) % 16], seed % 3 ? 0 : seed);
                        break;
                default:
                        memcpy(p, &orig, sizeof(orig));
                        break;
                }
                if (seed % 5 == 0)
                        sched_yield();
        }
        memcpy(p, &orig, sizeof(orig));
        atomic_store(stop, 1);
        int hung = 0, crashed = 0;
        for (int i = 0; i < 4; i++) {
                int st = wait_bounded(kids[i], 15);
                if (st == -1)
                        hung++;
                else if (!WIFEXITED(st) || WEXITSTATUS(st)) {
                        crashed++;
                        cr_log_info("child %d: status 0x%x", i, st);
                }
        }
        cr_log_info("%s: %ld honest operations", lim, atomic_load(ops));
        cr_expect_eq(hung, 0, "honest processes hung");
        cr_expect_eq(crashed, 0, "honest processes crashed");
}

Test(review2_flip, semaphore_record_flipped)
{
        flip_run("ten");
}

Test(review2_flip, gcra_record_flipped)
{
        flip_run("g");
}

/* A scribbled state word (>= THR_TAT_LIMIT, as an eviction's DEAD mark) on a LIVE semaphore key:
 * an honest try must still return, and an acquire by its deadline. */
Test(review2_flip, sentinel_state_word_bounds_try_and_acquire)
{
        thr_limiter *l = tlim(&T, "ten");
        struct thr_slot *s = slot_of(l, "k");
        atomic_store(&s->state, THR_TAT_DEAD);
        pid_t c = tfork();
        if (c == 0) {
                struct thr_lease le;
                int rc = thr_sem_try(l, "k", 1, 1, SEC, &le);
                rc = thr_sem_acquire(l, "k", 1, 1, SEC, 200 * MS, &le);
                _exit(rc == 0 ? 0 : 1);
        }
        int st = wait_bounded(c, 8);
        cr_expect_neq(st, -1, "thr_sem_try/acquire on a scribbled state word never returned");
        atomic_store(&s->state, 0);
        thr_limiter_close(l);
}

/*
 * test_sem_review.c - a hostile review of the semaphore-lease feature (issue 10): the reviewer's
 * attack programs, kept as tests. Each states the guarantee it attacks. Two found defects, fixed
 * since: review_toctou (a client rewriting params.leases made another client's sweep walk past
 * its key: the record is now copied and checked once per call, params_pin) and review_livelock
 * (a waiter whose grants expire at once, or whose state flips back, kept a serve granting for
 * ever with the shard lock held: a serve now makes at most leases_per_key + 1 grants).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
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

static void setup_manual(void)
{
        struct shm_limiter_spec s[] = {sspec("s", 4, 8), sspec("m", 1, 8), sspec("big", 65535, 8)};
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 3);
}

static void setup_real(void)
{
        struct shm_limiter_spec s[] = {sspec("s", 4, 8), sspec("m", 1, 8), sspec("big", 65535, 8)};
        tarena_make(&T, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, s, 3);
}

static void teardown(void)
{
        tarena_free(&T);
}

/* The slot of KEY in limiter L (it must exist). */
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

/* One maintenance pass of limiter NAME at the arena's time, as the daemon runs it. */
static void maint_pass(const char *name)
{
        struct shm_lim_snap snap;
        int idx = shm_dir_find(&T.map, name);
        if (idx < 0 || shm_dir_snapshot(&T.map, (uint32_t)idx, &snap) != 0)
                _exit(42);
        struct thr_hdr *h = shm_hdr(&T.map);
        uint64_t now = shm_now_ns(h);
        struct shm_maint_args a = {.now_units = now * snap.params.k,
                                   .ttl_units = snap.params.idle_ttl_ns * snap.params.k,
                                   .tag = shm_retire_tag(h),
                                   .done = 0,
                                   .me = shm_lock_daemon(0)};
        uint32_t cursor = 0;
        struct shm_maint_stats st = {0};
        shm_table_maintain(&T.map, &snap, &a, &cursor, UINT64_MAX, &st);
}

/* Wait for child P at most SECS; if it is still running, SIGKILL it. Its status, or -1 (hung). */
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

/* ====================================================== attack 1: params.leases TOCTOU (client) */

/*
 * Guarantee: a client scribbling the arena must not make ANOTHER process read or write out of
 * bounds. libclient/sem.c keeps o->p, a pointer INTO the shared arena (thr_sem_record), checks
 * p->leases <= l->sem_leases once, and then shm/sem.c loops `for (i = 0; i < p->leases; i++)`,
 * re-reading the scribbled field. A scribbler toggling params.leases makes an honest client walk
 * far past its key's aux storage.
 */
TestSuite(review_toctou, .init = setup_manual, .fini = teardown);

Test(review_toctou,
     params_leases_scribbled_after_the_check_never_moves_another_client_out_of_its_key,
     .timeout = 60)
{
        struct thr_params *p = params_of("s");
        /* the key is full: the victim's try takes the slow path (take, serve with a liveness
         * check of each lease: syscalls, take again), each step reading p->leases anew */
        thr_limiter *pl = tlim(&T, "s");
        struct thr_lease full;
        cr_assert_eq(thr_sem_try(pl, "k", 1, 4, 3600 * SEC, &full), 0);
        _Atomic int *stop = shared_map(2 * sizeof(*stop));
        _Atomic uint64_t *tries = shared_map(8 * sizeof(*tries));
        pid_t victim = tfork();
        if (victim == 0) {
                thr_arena *a;
                thr_limiter *l;
                if (thr_arena_open(T.path, 0, &a) < 0 || thr_limiter_open(a, "s", &l) < 0)
                        _exit(3);
                atomic_store(stop + 1, 1);
                while (!atomic_load(stop)) {
                        struct thr_lease le;
                        int rc = thr_sem_try(l, "k", 1, 1, SEC, &le);
                        atomic_fetch_add(tries, 1);
                        atomic_fetch_add(&tries[rc == 0             ? 1
                                                : rc == -EAGAIN     ? 2
                                                : rc == -EOPNOTSUPP ? 3
                                                : rc == -EBADMSG    ? 4
                                                                    : 5],
                                         1);
                        if (rc != 0 && rc != -EAGAIN && rc != -EOPNOTSUPP && rc != -EBADMSG)
                                atomic_store(&tries[6], (uint64_t)-rc);
                        if (rc == 0)
                                thr_sem_release(&le);
                }
                _exit(0);
        }
        /* the scribbler: this process, through its own mapping */
        _Atomic uint64_t *lw = (_Atomic uint64_t *)&p->leases;
        double t0 = mono_s();
        while (!atomic_load(stop + 1) && mono_s() - t0 < 5.0)
                usleep(1000);
        cr_assert(atomic_load(stop + 1), "victim did not open");
        int st = 0;
        bool died = false;
        while (mono_s() - t0 < 30.0) {
                for (int i = 0; i < 100000; i++) {
                        atomic_store_explicit(lw, 8, memory_order_relaxed);
                        atomic_store_explicit(lw, 1ull << 32, memory_order_relaxed);
                }
                if (waitpid(victim, &st, WNOHANG) == victim) {
                        died = true;
                        break;
                }
        }
        atomic_store(lw, 8);
        atomic_store(stop, 1);
        if (!died)
                waitpid(victim, &st, 0);
        cr_log_info("victim: %lu tries: ok %lu again %lu notsup %lu badmsg %lu other %lu",
                    (unsigned long)atomic_load(tries), (unsigned long)tries[1],
                    (unsigned long)tries[2], (unsigned long)tries[3], (unsigned long)tries[4],
                    (unsigned long)tries[5]);
        cr_log_info("victim: last other rc -%lu", (unsigned long)tries[6]);
        thr_sem_release(&full);
        thr_limiter_close(pl);
        cr_log_info("victim status: exited=%d code=%d signaled=%d sig=%d", WIFEXITED(st),
                    WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st),
                    WIFSIGNALED(st) ? WTERMSIG(st) : -1);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "an honest client crashed because another one scribbled params.leases");
}

/* ================================================= attack 2: a daemon held in one serve forever */

/*
 * Guarantee: a client scribbling its reader record must not make the DAEMON hang. The serve loop
 * in shm_sem_serve (for (granted = 0; scan; granted++)) has no bound of its own: it ends only when
 * no waiter is WAITING, the head does not fit, or no record is free. A waiter whose wait_ttl is 0
 * is granted a lease that the very next sweep clears as expired (expires = now + 0 <= now), so a
 * record is always free; a scribbler that flips its wait_state GRANTED -> WAITING after each
 * grant keeps the daemon's pass inside one serve, shard lock held, for as long as it likes.
 */
struct flip {
        _Atomic int stop;
        _Atomic int ready;
};

#define NFAKE 24
static struct thr_reader *g_fake[NFAKE];
static int g_nfake;

static void pin_cpu(int cpu)
{
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof(set), &set);
}

static void *flipper(void *arg)
{
        struct flip *f = arg;
        pin_cpu(1); /* an attacker owns a core; the daemon runs on another */
        atomic_store(&f->ready, 1);
        while (!atomic_load_explicit(&f->stop, memory_order_relaxed)) {
                for (int i = 0; i < g_nfake; i++) {
                        uint32_t s =
                            atomic_load_explicit(&g_fake[i]->wait_state, memory_order_relaxed);
                        if (THR_WAIT_STATE(s) != THR_WAIT_WAITING)
                                atomic_store_explicit(&g_fake[i]->wait_state,
                                                      THR_WAIT_AS(s, THR_WAIT_WAITING),
                                                      memory_order_relaxed);
                }
        }
        return NULL;
}

/* A parked thread of this process: its reader record is live (owner set, liveness lock held). */
static _Atomic int g_park_stop;
static void *parked(void *arg)
{
        int err = 0;
        *(struct thr_reader * _Atomic *)arg = thr_reader_get(T.a, &err);
        while (!atomic_load(&g_park_stop))
                usleep(1000);
        return NULL;
}

/* Make N live reader records of this process waiters of KEY with ttl 0. */
static void fake_waiters(thr_limiter *l, const char *key, uint32_t amount, int n)
{
        static pthread_t th[NFAKE];
        static struct thr_reader *_Atomic recs[NFAKE];
        for (int i = 0; i < n; i++) {
                recs[i] = NULL;
                pthread_create(&th[i], NULL, parked, (void *)&recs[i]);
        }
        double t0 = mono_s();
        for (int i = 0; i < n; i++) {
                while (!atomic_load(&recs[i]))
                        cr_assert_lt(mono_s() - t0, 5.0);
                g_fake[i] = recs[i];
        }
        g_nfake = n;
        struct thr_slot *s = slot_of(l, key);
        struct thr_sem *h = shm_sem(aux_of(l, key));
        uint64_t off = (uint64_t)((char *)s - (char *)T.a->map.base);
        for (int i = 0; i < n; i++) {
                struct thr_reader *r = g_fake[i];
                atomic_store(&r->wait_slot, off);
                atomic_store(&r->wait_gen, THR_META_GEN(atomic_load(&s->meta)));
                atomic_store(&r->wait_ticket, ((atomic_load(&h->next_ticket) + i) << 16) | amount);
                atomic_store(&r->wait_ttl, 0);
                atomic_store(&r->wait_holder, 1);
                atomic_store(&r->wait_holder_idx, 0);
                atomic_store(&r->wait_state, THR_WAIT_WAITING);
        }
        atomic_store(&h->waiters, (uint32_t)n);
}

TestSuite(review_livelock, .init = setup_manual, .fini = teardown);

Test(review_livelock, daemon_pass_never_returns_while_a_waiter_flips_its_state, .timeout = 60)
{
        thr_limiter *l = tlim(&T, "s");
        struct thr_lease le;
        /* a lease that expires: the key is pinned and reapable, so the pass serves it */
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, 10 * MS, &le), 0);
        cr_assert_eq(thr_clock_advance(T.a, 20 * MS), 0);
        struct thr_sem *h = shm_sem(aux_of(l, "k"));
        fake_waiters(l, "k", 1, NFAKE);
        struct flip *f = shared_map(sizeof(*f));
        pthread_t th;
        pthread_create(&th, NULL, flipper, f);
        while (!atomic_load(&f->ready))
                usleep(100);
        uint64_t g0 = atomic_load(&h->granted);
        pid_t d = tfork();
        if (d == 0) {
                pin_cpu(0);
                maint_pass("s"); /* the daemon's code, in a process of its own */
                _exit(0);
        }
        int st = wait_bounded(d, 5.0);
        uint64_t g1 = atomic_load(&h->granted);
        atomic_store(&f->stop, 1);
        pthread_join(th, NULL);
        cr_log_info("maintenance pass: %s; leases granted to the fake waiter meanwhile: %lu",
                    st == -1 ? "still inside after 5 s (killed)" : "returned",
                    (unsigned long)(g1 - g0));
        cr_expect_neq(st, -1,
                      "the daemon's pass never returned: one serve loop, shard lock held, "
                      "%lu grants",
                      (unsigned long)(g1 - g0));
        /* and an honest client of the key meanwhile: its release waits on the shard lock */
        thr_limiter_close(l);
}

/* the same loop, hit by an honest client (it runs the serve in thr_sem_release) */
Test(review_livelock, honest_release_never_returns_while_a_waiter_flips_its_state, .timeout = 60)
{
        thr_limiter *l = tlim(&T, "s");
        struct thr_lease hold;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, SEC, &hold), 0);
        struct thr_sem *h = shm_sem(aux_of(l, "k"));
        fake_waiters(l, "k", 1, NFAKE);
        struct flip *f = shared_map(sizeof(*f));
        pthread_t th;
        pthread_create(&th, NULL, flipper, f);
        while (!atomic_load(&f->ready))
                usleep(100);
        uint64_t g0 = atomic_load(&h->granted);
        pid_t c = tfork();
        if (c == 0) {
                /* another process holding a lease of the key releases it (a fresh lease) */
                thr_arena *a;
                thr_limiter *cl;
                struct thr_lease mine;
                pin_cpu(0);
                if (thr_arena_open(T.path, 0, &a) < 0 || thr_limiter_open(a, "s", &cl) < 0)
                        _exit(3);
                int rc = thr_sem_try(cl, "k", 1, 1, SEC, &mine);
                if (rc == 0)
                        rc = thr_sem_release(&mine);
                _exit(rc == 0 ? 0 : 4);
        }
        int st = wait_bounded(c, 5.0);
        uint64_t g1 = atomic_load(&h->granted);
        atomic_store(&f->stop, 1);
        pthread_join(th, NULL);
        cr_log_info("honest client: %s; grants meanwhile %lu",
                    st == -1 ? "stuck after 5 s (killed)" : "returned", (unsigned long)(g1 - g0));
        cr_expect_neq(st, -1, "an honest client's call never returned");
        thr_limiter_close(l);
}

/* ====================================================== attack 3: fork, children, holder records
 */

TestSuite(review_fork, .init = setup_real, .fini = teardown);

static void *nop_thread(void *x)
{
        return x;
}

static int try_in_child(const char *lim, const char *key, uint32_t amount)
{
        pid_t c = tfork();
        if (c == 0) {
                thr_arena *a;
                thr_limiter *l;
                if (thr_arena_open(T.path, 0, &a) < 0 || thr_limiter_open(a, lim, &l) < 0)
                        _exit(3);
                struct thr_lease le;
                int rc = thr_sem_try(l, key, strlen(key), amount, SEC, &le);
                _exit(rc == 0 ? 0 : rc == -EAGAIN ? 1 : 2);
        }
        int st = wait_bounded(c, 10.0);
        return st == -1 ? -1 : WEXITSTATUS(st);
}

Test(review_fork, a_child_that_never_uses_throttle_and_exits_leaves_the_parents_lease,
     .timeout = 60)
{
        thr_limiter *l = tlim(&T, "m");
        struct thr_lease le;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, 60 * SEC, &le), 0);
        for (int i = 0; i < 3; i++) {
                pid_t c = fork();
                if (c == 0) {
                        if (i == 0)
                                exit(0); /* atexit + destructors */
                        if (i == 1)
                                _exit(0);
                        /* i == 2: a thread of the child exits too (TLS destructor) */
                        pthread_t t;
                        pthread_create(&t, NULL, nop_thread, NULL);
                        pthread_join(t, NULL);
                        exit(0);
                }
                cr_assert_neq(wait_bounded(c, 10.0), -1);
        }
        cr_expect_eq(try_in_child("m", "k", 1), 1, "another process got the parent's unit");
        maint_pass("m");
        cr_expect_eq(try_in_child("m", "k", 1), 1, "after a pass: another process got it");
        cr_expect_eq(thr_sem_heartbeat(&le, 60 * SEC), 0);
        cr_expect_eq(thr_sem_release(&le), 0);
        thr_limiter_close(l);
}

Test(review_fork, a_child_claims_its_own_holder_and_its_death_frees_only_its_lease, .timeout = 60)
{
        thr_limiter *l = tlim(&T, "s");
        struct thr_lease le;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, 60 * SEC, &le), 0);
        void *aux = aux_of(l, "k");
        uint32_t pidx = atomic_load(&shm_sem_lease(aux, thr_lease_priv(&le)->idx)->holder_idx);
        uint64_t ptok = atomic_load(&shm_sem_lease(aux, thr_lease_priv(&le)->idx)->holder);
        _Atomic uint64_t *box = shared_map(4 * sizeof(uint64_t));
        pid_t c = fork();
        if (c == 0) {
                /* the same handles, inherited */
                struct thr_lease mine;
                if (thr_sem_try(l, "k", 1, 2, 60 * SEC, &mine) != 0)
                        _exit(5);
                struct thr_lease_rec *r = shm_sem_lease(aux, thr_lease_priv(&mine)->idx);
                atomic_store(&box[0], atomic_load(&r->holder_idx));
                atomic_store(&box[1], atomic_load(&r->holder));
                atomic_store(&box[2], 1);
                pause();
                _exit(0);
        }
        double t0 = mono_s();
        while (!atomic_load(&box[2]) && mono_s() - t0 < 5.0)
                usleep(1000);
        cr_assert_eq(atomic_load(&box[2]), 1, "child failed");
        cr_expect_neq(atomic_load(&box[0]), pidx, "the child names the parent's holder record");
        cr_expect_neq(atomic_load(&box[1]), ptok, "the child names the parent's holder token");
        cr_expect_eq(shm_sem(aux)->held, 3);
        kill(c, SIGKILL);
        waitpid(c, NULL, 0);
        /* the child's 2 come back, the parent's 1 stays: 3 fit, 4 do not */
        cr_expect_eq(try_in_child("s", "k", 4), 1, "the parent's lease was reclaimed too");
        cr_expect_eq(try_in_child("s", "k", 3), 0, "the dead child's lease was not reclaimed");
        cr_expect_eq(thr_sem_release(&le), 0);
        thr_limiter_close(l);
}

/* ====================================================== attack 4: handles */

TestSuite(review_handle, .init = setup_manual, .fini = teardown);

static int thr_priv_idx_same(struct thr_lease *x, struct thr_lease *y)
{
        return thr_lease_priv(x)->idx == thr_lease_priv(y)->idx;
}

Test(review_handle, copied_handle_released_twice_frees_nothing_else)
{
        thr_limiter *l = tlim(&T, "s");
        struct thr_lease a, copy, b;
        cr_assert_eq(thr_sem_try(l, "k", 1, 2, SEC, &a), 0);
        memcpy(&copy, &a, sizeof(a));
        cr_assert_eq(thr_sem_release(&a), 0);
        cr_assert_eq(thr_sem_try(l, "k", 1, 4, SEC, &b), 0); /* reuses a's record */
        cr_expect_eq(thr_priv_idx_same(&copy, &b), 1, "b did not reuse the record");
        cr_expect_eq(thr_sem_release(&copy), -EKEYEXPIRED);
        cr_expect_eq(thr_sem_heartbeat(&copy, SEC), -EINVAL, "released copy is empty");
        cr_expect_eq(shm_sem(aux_of(l, "k"))->held, 4, "the copy freed b");
        cr_expect_eq(thr_sem_release(&b), 0);
        thr_limiter_close(l);
}

/* a handle kept past thr_limiter_close: the lease is the process's, the handle names the freed
 * limiter (lp->lim): release reads freed memory (ASan: heap-use-after-free) */
struct hbr {
        struct thr_lease *le;
        _Atomic int go;
        int rc;
};

static void *hb_thread(void *arg)
{
        struct hbr *x = arg;
        while (!atomic_load(&x->go))
                ;
        x->rc = thr_sem_heartbeat(x->le, SEC);
        return NULL;
}

/* release and heartbeat of one handle from two threads: never two leases' worth freed, never a
 * lease left held */
Test(review_handle, release_races_heartbeat_on_one_handle, .timeout = 60)
{
        thr_limiter *l = tlim(&T, "s");
        void *aux = NULL;
        for (int i = 0; i < 2000; i++) {
                struct thr_lease le;
                cr_assert_eq(thr_sem_try(l, "k", 1, 4, SEC, &le), 0);
                if (!aux)
                        aux = aux_of(l, "k");
                struct hbr x = {.le = &le};
                pthread_t t;
                pthread_create(&t, NULL, hb_thread, &x);
                atomic_store(&x.go, 1);
                int rc = thr_sem_release(&le);
                pthread_join(t, NULL);
                cr_assert_eq(rc, 0);
                cr_assert(x.rc == 0 || x.rc == -EKEYEXPIRED || x.rc == -EINVAL, "hb %d", x.rc);
                cr_assert_eq(shm_sem(aux)->held, 0, "iteration %d: still held", i);
                cr_assert_eq(shm_sem(aux)->leases, 0);
        }
        thr_limiter_close(l);
}

/* heartbeat at exactly expires_ns == now: expired (reclaimed), consistently with the sweep */
Test(review_handle, heartbeat_at_the_expiry_instant)
{
        thr_limiter *l = tlim(&T, "m");
        struct thr_lease a, b;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, 10 * MS, &a), 0);
        cr_assert_eq(thr_clock_advance(T.a, 10 * MS - 1), 0);
        cr_expect_eq(thr_sem_heartbeat(&a, 10 * MS), 0, "1 ns before expiry");
        cr_assert_eq(thr_clock_advance(T.a, 10 * MS), 0);
        int rc = thr_sem_heartbeat(&a, 10 * MS);
        cr_expect_eq(rc, -EKEYEXPIRED, "at expires_ns == now: %d", rc);
        cr_expect_eq(thr_sem_try(l, "k", 1, 1, SEC, &b), 0, "the count did not come back");
        cr_expect_eq(thr_sem_release(&a), -EKEYEXPIRED);
        cr_expect_eq(thr_sem_release(&b), 0);
        thr_limiter_close(l);
}

/* extreme arguments */
Test(review_handle, extreme_arguments)
{
        thr_limiter *l = tlim(&T, "big");
        struct thr_lease a, b;
        cr_expect_eq(thr_sem_try(l, "k", 1, 0, SEC, &a), -EINVAL);
        cr_expect_eq(thr_sem_try(l, "k", 1, 65536, SEC, &a), -ERANGE);
        cr_expect_eq(thr_sem_try(l, "k", 1, 65535, 0, &a), -EINVAL);
        cr_assert_eq(thr_sem_try(l, "k", 1, 65535, UINT64_MAX, &a), 0);
        cr_expect_lt(a.expires_ns, UINT64_MAX / 2, "ttl clamped");
        cr_expect_eq(thr_sem_try(l, "k", 1, 1, SEC, &b), -EAGAIN); /* manual clock: no timed wait */
        cr_expect_eq(shm_sem(aux_of(l, "k"))->held, 65535);
        cr_expect_eq(thr_sem_heartbeat(&a, UINT64_MAX), 0);
        cr_expect_eq(thr_sem_release(&a), 0);
        cr_expect_eq(thr_sem_acquire(l, "k", 1, 65535, UINT64_MAX, UINT64_MAX, &b), 0);
        cr_expect_eq(thr_sem_release(&b), 0);
        thr_limiter_close(l);
}

/* ====================================================== attack 5: FIFO across ticket wrap */

struct waiter_arg {
        thr_limiter *l;
        uint32_t amount;
        int rc;
        uint64_t gen;
        _Atomic int done;
        struct thr_lease le;
};

static void *waiter_thread(void *arg)
{
        struct waiter_arg *w = arg;
        w->rc = thr_sem_acquire(w->l, "k", 1, w->amount, SEC, 20 * SEC, &w->le);
        if (w->rc == 0)
                w->gen = thr_lease_priv(&w->le)->gen;
        atomic_store(&w->done, 1);
        return NULL;
}

static void wait_waiters(struct thr_sem *h, uint32_t n)
{
        double t0 = mono_s();
        while (atomic_load(&h->waiters) < n) {
                cr_assert_lt(mono_s() - t0, 5.0, "waiters never queued");
                usleep(1000);
        }
}

TestSuite(review_wrap, .init = setup_manual, .fini = teardown);

Test(review_wrap, a_large_head_is_not_overtaken_across_the_48_bit_ticket_wrap, .timeout = 60)
{
        thr_limiter *l = tlim(&T, "s");
        struct thr_lease hold;
        cr_assert_eq(thr_sem_try(l, "k", 1, 2, 60 * SEC, &hold), 0);
        struct thr_sem *h = shm_sem(aux_of(l, "k"));
        atomic_store(&h->next_ticket, (1ull << 48) - 1);
        atomic_store(&h->next_gen, UINT64_MAX - 1); /* and the generation wraps meanwhile */
        struct waiter_arg big = {.l = l, .amount = 4}, small = {.l = l, .amount = 1};
        pthread_t tb, ts;
        pthread_create(&tb, NULL, waiter_thread, &big);
        wait_waiters(h, 1);
        pthread_create(&ts, NULL, waiter_thread, &small);
        wait_waiters(h, 2);
        usleep(50000);
        cr_expect_eq(atomic_load(&small.done), 0, "the small one (ticket 2^48) overtook the head");
        cr_assert_eq(thr_sem_release(&hold), 0);
        double t0 = mono_s();
        while (!atomic_load(&big.done) && mono_s() - t0 < 5.0)
                usleep(1000);
        cr_expect_eq(big.rc, 0, "head not served: %d", big.rc);
        cr_expect_eq(atomic_load(&small.done), 0, "the small one fit beside max=4? no");
        cr_assert_eq(thr_sem_release(&big.le), 0);
        pthread_join(tb, NULL);
        pthread_join(ts, NULL);
        cr_expect_eq(small.rc, 0);
        cr_log_info("gens: big %lu small %lu", (unsigned long)big.gen, (unsigned long)small.gen);
        cr_expect_neq(big.gen, 0);
        cr_expect_neq(small.gen, 0);
        cr_expect_eq(thr_sem_release(&small.le), 0);
        thr_limiter_close(l);
}

/* ====================================================== attack 6: scribbled records vs daemon */

TestSuite(review_scribble, .init = setup_manual, .fini = teardown);

/* Every field of the header, the records and the reader records of a key scribbled with
 * extreme values; then the daemon's pass, shmctl and an honest client, each in a process of its
 * own, bounded: none may crash (ASan), hang or read outside. */
Test(review_scribble, extreme_values_everywhere, .timeout = 120)
{
        thr_limiter *l = tlim(&T, "s");
        struct thr_lease a;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, SEC, &a), 0);
        void *aux = aux_of(l, "k");
        struct thr_sem *h = shm_sem(aux);
        struct thr_slot *s = slot_of(l, "k");
        const uint64_t V[] = {0,          1,
                              0xffff,     0x10000,
                              UINT32_MAX, (uint64_t)UINT32_MAX + 1,
                              INT64_MAX,  UINT64_MAX - 1,
                              UINT64_MAX};
        const int NV = (int)(sizeof(V) / sizeof(V[0]));
        int err = 0;
        struct thr_reader *r = thr_reader_get(T.a, &err);
        cr_assert_not_null(r);
        int bad = 0;
        for (int round = 0; round < 40; round++) {
                srandom((unsigned)round);
                /* header */
                atomic_store(&h->held, V[random() % NV]);
                atomic_store(&h->waiters, (uint32_t)V[random() % NV]);
                atomic_store(&h->leases, (uint32_t)V[random() % NV]);
                atomic_store(&h->next_gen, V[random() % NV]);
                atomic_store(&h->next_ticket, V[random() % NV]);
                /* records */
                for (uint32_t i = 0; i < 8; i++) {
                        struct thr_lease_rec *lr = shm_sem_lease(aux, i);
                        atomic_store(&lr->gen, V[random() % NV]);
                        atomic_store(&lr->amount, (uint32_t)V[random() % NV]);
                        atomic_store(&lr->holder_idx, (uint32_t)V[random() % NV]);
                        atomic_store(&lr->holder, V[random() % NV]);
                        atomic_store(&lr->expires_ns, V[random() % NV]);
                        atomic_store(&lr->acquired_ns, V[random() % NV]);
                        atomic_store(&lr->pid, V[random() % NV]);
                }
                /* this thread's reader record: a waiter of the key with wild fields */
                atomic_store(&r->wait_slot, random() % 2
                                                ? (uint64_t)((char *)s - (char *)T.map.base)
                                                : V[random() % NV]);
                atomic_store(&r->wait_gen, random() % 2 ? THR_META_GEN(atomic_load(&s->meta))
                                                        : (uint32_t)V[random() % NV]);
                atomic_store(&r->wait_ticket, V[random() % NV]);
                atomic_store(&r->wait_ttl, V[random() % NV]);
                atomic_store(&r->wait_holder, V[random() % NV]);
                atomic_store(&r->wait_holder_idx, (uint32_t)V[random() % NV]);
                atomic_store(&r->wait_flags, (uint32_t)V[random() % NV]);
                atomic_store(&r->wait_state, (uint32_t)V[random() % NV] << 3 | THR_WAIT_WAITING);
                if (round % 3 == 0)
                        thr_clock_advance(T.a, V[random() % 4] * MS);
                pid_t d = tfork();
                if (d == 0) {
                        maint_pass("s");
                        _exit(0);
                }
                int st = wait_bounded(d, 5.0);
                if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                        cr_log_info("round %d: daemon pass status %d", round, st);
                        bad++;
                }
                pid_t c = tfork();
                if (c == 0) {
                        thr_arena *ca;
                        thr_limiter *cl;
                        if (thr_arena_open(T.path, 0, &ca) < 0 ||
                            thr_limiter_open(ca, "s", &cl) < 0)
                                _exit(3);
                        struct thr_lease x;
                        int rc = thr_sem_acquire(cl, "k", 1, 1, SEC, 3 * MS, &x);
                        if (rc == 0)
                                thr_sem_release(&x);
                        _exit(0);
                }
                st = wait_bounded(c, 5.0);
                if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                        cr_log_info("round %d: client status %d", round, st);
                        bad++;
                }
                char cmd[600];
                snprintf(cmd, sizeof(cmd),
                         "timeout 5 %s/daemon/shmctl -a %s --json leases >/dev/null "
                         "2>/tmp/review10_shmctl.err;"
                         " rc=$?; [ $rc -le 1 ] || { echo rc=$rc; cat /tmp/review10_shmctl.err; "
                         "exit 9; }",
                         getenv("THR_TEST_BUILD_DIR") ? getenv("THR_TEST_BUILD_DIR")
                                                      : "/tmp/build-review",
                         T.path);
                int sr = system(cmd);
                if (sr != 0) {
                        cr_log_info("round %d: shmctl leases status %d", round, sr);
                        bad++;
                }
                snprintf(cmd, sizeof(cmd),
                         "timeout 5 %s/daemon/shmctl -a %s --json keys s >/dev/null "
                         "2>/tmp/review10_shmctl.err;"
                         " rc=$?; [ $rc -le 1 ] || { echo rc=$rc; cat /tmp/review10_shmctl.err; "
                         "exit 9; }",
                         getenv("THR_TEST_BUILD_DIR") ? getenv("THR_TEST_BUILD_DIR")
                                                      : "/tmp/build-review",
                         T.path);
                sr = system(cmd);
                if (sr != 0) {
                        cr_log_info("round %d: shmctl keys status %d", round, sr);
                        bad++;
                }
        }
        atomic_store(&r->wait_state, THR_WAIT_NONE);
        atomic_store(&r->wait_slot, 0);
        cr_expect_eq(bad, 0);
        thr_limiter_close(l);
}

/* ====================================================== attack 7: timeouts racing grants */

/*
 * Guarantee: a timed-out acquire holds nothing. Children churn on a key of max 2 with timeouts of
 * 0..400 us (real clock), each releasing what it got. Then they stop but stay alive: any lease
 * record still in use is a lease nobody knows of (an orphan of a grant that raced a timeout).
 */
struct churn {
        _Atomic int stop, parked;
        _Atomic uint64_t grants, timeouts, errors, rel_errors;
};

static void churn_child(struct churn *c, uint64_t seed)
{
        thr_arena *a;
        thr_limiter *l;
        if (thr_arena_open(T.path, 0, &a) < 0 || thr_limiter_open(a, "s", &l) < 0)
                _exit(3);
        srandom((unsigned)seed);
        while (!atomic_load(&c->stop)) {
                struct thr_lease le;
                uint32_t amount = 1 + (uint32_t)(random() % 2);
                uint64_t to = (uint64_t)(random() % 400) * 1000;
                int rc = to ? thr_sem_acquire(l, "k", 1, amount, 3600 * SEC, to, &le)
                            : thr_sem_try(l, "k", 1, amount, 3600 * SEC, &le);
                if (rc == 0) {
                        atomic_fetch_add(&c->grants, 1);
                        if (random() % 4 == 0)
                                usleep((useconds_t)(random() % 100));
                        if (thr_sem_release(&le) != 0)
                                atomic_fetch_add(&c->rel_errors, 1);
                } else if (rc == -ETIMEDOUT || rc == -EAGAIN) {
                        atomic_fetch_add(&c->timeouts, 1);
                } else {
                        atomic_fetch_add(&c->errors, 1);
                }
        }
        atomic_fetch_add(&c->parked, 1);
        pause();
        _exit(0);
}

TestSuite(review_churn, .init = setup_real, .fini = teardown);

Test(review_churn, timeouts_racing_grants_leave_no_orphan_lease, .timeout = 120)
{
        thr_limiter *l = tlim(&T, "s");
        struct thr_lease z;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, SEC, &z), 0);
        cr_assert_eq(thr_sem_release(&z), 0);
        void *aux = aux_of(l, "k");
        struct churn *c = shared_map(sizeof(*c));
        enum { KIDS = 6 };
        pid_t kids[KIDS];
        for (int i = 0; i < KIDS; i++) {
                kids[i] = tfork();
                if (kids[i] == 0)
                        churn_child(c, (uint64_t)i + 1);
        }
        usleep(15 * 1000000);
        atomic_store(&c->stop, 1);
        double t0 = mono_s();
        while (atomic_load(&c->parked) < KIDS && mono_s() - t0 < 10.0)
                usleep(1000);
        cr_assert_eq(atomic_load(&c->parked), KIDS, "children stuck");
        int in_use = 0;
        uint64_t units = 0;
        for (uint32_t i = 0; i < 8; i++) {
                struct thr_lease_rec *r = shm_sem_lease(aux, i);
                if (atomic_load(&r->gen)) {
                        in_use++;
                        units += atomic_load(&r->amount);
                }
        }
        cr_log_info("%lu grants, %lu timeouts/again, %lu errors, %lu release errors; records in "
                    "use after all released: %d (%lu units)",
                    (unsigned long)c->grants, (unsigned long)c->timeouts, (unsigned long)c->errors,
                    (unsigned long)c->rel_errors, in_use, (unsigned long)units);
        cr_expect_eq(in_use, 0, "orphan leases: held by live processes that know nothing of them");
        cr_expect_eq(c->errors + c->rel_errors, 0);
        for (int i = 0; i < KIDS; i++) {
                kill(kids[i], SIGKILL);
                waitpid(kids[i], NULL, 0);
        }
        thr_limiter_close(l);
}

/* ====================================================== attack 8: pthread_cancel of a waiter */

struct cw {
        thr_limiter *l;
        _Atomic int in;
        int rc;
        struct thr_lease le;
};

static void *cancel_victim(void *arg)
{
        struct cw *w = arg;
        atomic_store(&w->in, 1);
        w->rc = thr_sem_acquire(w->l, "k", 1, 1, SEC, 300 * MS, &w->le);
        atomic_store(&w->in, 2);
        return w;
}

Test(review_churn, cancel_of_a_thread_queued_in_acquire, .timeout = 60)
{
        thr_limiter *l = tlim(&T, "m");
        struct thr_lease hold;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, 60 * SEC, &hold), 0);
        struct thr_sem *h = shm_sem(aux_of(l, "k"));
        struct cw w = {.l = l};
        pthread_t t;
        pthread_create(&t, NULL, cancel_victim, &w);
        wait_waiters(h, 1);
        cr_assert_eq(pthread_cancel(t), 0);
        usleep(50000);
        cr_expect_eq(atomic_load(&w.in), 1, "the acquire returned early on cancel");
        void *ret;
        pthread_join(t, &ret);
        cr_log_info("cancelled waiter: rc %d, state %d, joined %s", w.rc, atomic_load(&w.in),
                    ret == PTHREAD_CANCELED ? "CANCELED" : "normally");
        cr_expect_eq(w.rc, -ETIMEDOUT);
        cr_expect_eq(thr_sem_release(&hold), 0);
        struct thr_lease b;
        cr_expect_eq(thr_sem_try(l, "k", 1, 1, SEC, &b), 0, "a ghost waiter blocks the key");
        cr_expect_eq(atomic_load(&h->waiters), 0);
        thr_sem_release(&b);
        thr_limiter_close(l);
}

/* SIGSTOP a process holding the key's shard lock: others are bounded (their timeout), release
 * returns -ETIMEDOUT within THR_LOCK_WAIT_MAX_NS and can be retried */
Test(review_churn, stopped_shard_lock_holder_bounds_others, .timeout = 120)
{
        thr_limiter *l = tlim(&T, "m");
        struct thr_lease hold;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, 60 * SEC, &hold), 0);
        struct thr_slot *s = slot_of(l, "k");
        (void)s;
        struct shm_probe pr;
        tprobe(&T.map, l->tb, "k", &pr);
        _Atomic int *ready = shared_map(sizeof(int));
        pid_t c = tfork();
        if (c == 0) {
                thr_arena *a;
                if (thr_arena_open(T.path, 0, &a) < 0)
                        _exit(3);
                uint64_t me = tlock_me(a);
                struct shm_probe p2;
                tprobe(&a->map, l->tb, "k", &p2);
                p2.shard = (struct thr_shard *)((char *)a->map.base +
                                                ((char *)pr.shard - (char *)T.map.base));
                if (shm_shard_lock(&a->map, &p2, me, SEC) != 0)
                        _exit(4);
                atomic_store(ready, 1);
                raise(SIGSTOP);
                _exit(0);
        }
        double t0 = mono_s();
        while (!atomic_load(ready) && mono_s() - t0 < 5.0)
                usleep(1000);
        cr_assert(atomic_load(ready));
        struct thr_lease b;
        t0 = mono_s();
        int rc = thr_sem_acquire(l, "k", 1, 1, SEC, 200 * MS, &b);
        double dt = mono_s() - t0;
        cr_log_info("acquire with the lock held by a stopped process: %d after %.3f s", rc, dt);
        cr_expect_eq(rc, -ETIMEDOUT);
        cr_expect_lt(dt, 2.0);
        kill(c, SIGKILL);
        waitpid(c, NULL, 0);
        cr_expect_eq(thr_sem_release(&hold), 0, "after the holder died: taken over");
        cr_expect_eq(thr_sem_try(l, "k", 1, 1, SEC, &b), 0);
        thr_sem_release(&b);
        thr_limiter_close(l);
}

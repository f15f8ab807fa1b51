/*
 * test_sem_grant.c - a semaphore grant cut at each of its steps (shm/sem.c: the generation taken,
 * the waiter's record filled, its word CASed to GRANTED, its futex woken; a serve completing a dead
 * granter's grant), by killing the granter, killing the waiter, stopping the waiter while a third
 * party serves the key, or pausing the granter while its waiter gives up and waits elsewhere.
 * What must hold every time: a wait granted gets exactly one lease (thr_sem_stat: held 1, leases
 * 1), its release works and leaves held 0, leases 0; a wait that ended gets none, and nothing
 * granted for it is left in the key; a grant never lands on the waiter's next wait.
 *
 * Granters are forked children holding "k" that release it with a test hook armed
 * (shm/testhook.h): at the hook the child is killed, or blocks on a pipe (holding the key's shard
 * lock) until the test says go. Waiters are threads of the test process (plain or through a peer)
 * or forked children (to be stopped with SIGSTOP, or killed). Manual clock: a waiter checks every
 * 1 ms of real time; every wait is bounded (a waiter that never returns is ended by advancing the
 * clock past its timeout, and fails the test).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "testhook.h"

#define MS   1000000ull
#define LONG (3600 * SEC) /* a timeout or a ttl that never passes unless the test says so */

static struct tarena T;

static struct shm_limiter_spec sspec(const char *name, uint64_t max, uint64_t lock_wait_ns)
{
        struct shm_limiter_spec s = tspec(name, max, 0, 0, 0);
        s.kind = THR_KIND_SEMAPHORE;
        s.leases = 8;
        s.max_reserve_ns = 0;
        if (lock_wait_ns)
                s.lock_wait_ns = lock_wait_ns;
        return s;
}

/*
 * "one" and "two": max 1 and 2. "oneq", "twoq": the same, but a step waits only 20 ms for a live
 * holder of the key's shard lock: a waiter past its deadline whose granter is paused holding the
 * lock gives up without it (libclient/sem.c, leave_unlocked). "other": the key a waiter queues on
 * next. "ser": a serialized window key, for a next wait of another protocol.
 */
static void setup(void)
{
        struct shm_limiter_spec w = tspec("ser", 100, SEC, 0, 0);
        w.kind = THR_KIND_WINDOW;
        w.serialize = true;
        struct shm_limiter_spec s[] = {sspec("one", 1, 0),        sspec("two", 2, 0),
                                       sspec("oneq", 1, 20 * MS), sspec("twoq", 2, 20 * MS),
                                       sspec("other", 1, 0),      w};
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 6);
}

/* Every limiter handle and peer a test opened, closed at its end. */
static thr_limiter *opened[16];
static int nopened;
static thr_peer *peers[4];
static int npeers;

static thr_limiter *lim(const char *name)
{
        cr_assert_lt(nopened, 16);
        return opened[nopened++] = tlim(&T, name);
}

static thr_peer *peer_new(void)
{
        cr_assert_lt(npeers, 4);
        thr_peer *p = NULL;
        cr_assert_eq(thr_peer_open(T.a, LONG, &p), 0);
        return peers[npeers++] = p;
}

static void teardown(void)
{
        while (npeers)
                thr_peer_close(peers[--npeers]);
        while (nopened)
                thr_limiter_close(opened[--nopened]);
        tarena_free(&T);
}

TestSuite(sem_grant, .init = setup, .fini = teardown, .timeout = 120);

static void advance(uint64_t ns)
{
        cr_assert_eq(thr_clock_advance(T.a, ns), 0);
}

static struct thr_sem_stat stat_of(thr_limiter *l)
{
        struct thr_sem_stat st;
        cr_assert_eq(thr_sem_stat(l, "k", 1, &st), 0);
        return st;
}

/* Exactly HELD units in LEASES leases, nobody queued. */
static void expect_sums(thr_limiter *l, uint64_t held, uint64_t leases, const char *when)
{
        struct thr_sem_stat st = stat_of(l);
        cr_log_info("%s: held %lu leases %lu pending %lu", when, (unsigned long)st.held,
                    (unsigned long)st.leases, (unsigned long)st.pending);
        cr_expect_eq(st.held, held, "%s: held %lu, want %lu", when, (unsigned long)st.held,
                     (unsigned long)held);
        cr_expect_eq(st.leases, leases, "%s: %lu leases, want %lu", when, (unsigned long)st.leases,
                     (unsigned long)leases);
        cr_expect_eq(st.pending, 0, "%s: %lu pending", when, (unsigned long)st.pending);
}

static void wait_pending(thr_limiter *l, uint64_t n)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (stat_of(l).pending != n) {
                cr_assert_lt(telapsed_s(&t0), 10.0, "never %lu pending", (unsigned long)n);
                tdoze();
        }
}

static bool within(_Atomic int *flag, double s)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (!atomic_load(flag) && telapsed_s(&t0) < s)
                tdoze();
        return atomic_load(flag);
}

/* ---------------------------------------------------------------- the granter child */

enum { H_DIE = 1, H_PAUSE, H_PAUSE_DIE };
static int hook_point, hook_what, hook_at_fd, hook_go_fd;

/* In a granter child: at hook_point (once), die, or tell the test and wait for its go (holding
 * the key's shard lock), then go on or die. A fill for a lease taken at once (arg NULL) is not a
 * grant's. */
static void the_hook(enum thr_hook_point pt, void *arg)
{
        if ((int)pt != hook_point || (pt == THR_HOOK_SEM_GEN_TAKEN && !arg))
                return;
        hook_point = 0;
        char c = 'h';
        if (hook_what != H_DIE && (write(hook_at_fd, &c, 1) != 1 || read(hook_go_fd, &c, 1) != 1))
                _exit(7);
        if (hook_what != H_PAUSE)
                raise(SIGKILL);
}

struct granter {
        pid_t pid;
        int go[2];   /* test -> child */
        int back[2]; /* child -> test */
};

/* A child that holds 1 unit of L/"k" (a plain try); told go, it arms the hook at POINT (WHAT) and
 * releases it: the release's serve grants the queue. It exits 0 if the release returned 0. */
static void granter_start(struct granter *g, thr_limiter *l, int point, int what)
{
        cr_assert_eq(pipe(g->go), 0);
        cr_assert_eq(pipe(g->back), 0);
        g->pid = tfork();
        cr_assert_geq(g->pid, 0);
        if (g->pid == 0) {
                close(g->go[1]);
                close(g->back[0]);
                struct thr_lease le;
                char c = 'r';
                if (thr_sem_try(l, "k", 1, 1, LONG, &le) != 0 || write(g->back[1], &c, 1) != 1 ||
                    read(g->go[0], &c, 1) != 1)
                        _exit(1);
                hook_point = point;
                hook_what = what;
                hook_at_fd = g->back[1];
                hook_go_fd = g->go[0];
                thr_test_hook = the_hook;
                _exit(thr_sem_release(&le) == 0 ? 0 : 2);
        }
        close(g->go[0]);
        close(g->back[1]);
        char c;
        cr_assert_eq(read(g->back[0], &c, 1), 1, "the granter could not take the key");
}

static void granter_go(struct granter *g)
{
        char c = 'g';
        cr_assert_eq(write(g->go[1], &c, 1), 1);
}

/* The granter reached its hook (it is paused there, holding the key's shard lock). */
static void granter_at_hook(struct granter *g)
{
        char c;
        cr_assert_eq(read(g->back[0], &c, 1), 1, "the granter never reached its hook");
}

/* The granter's wait status, within 10 s. */
static int granter_reap(struct granter *g)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int st = 0;
        pid_t r;
        while ((r = waitpid(g->pid, &st, WNOHANG)) == 0 && telapsed_s(&t0) < 10.0)
                tdoze();
        if (r == 0) {
                kill(g->pid, SIGKILL);
                waitpid(g->pid, &st, 0);
                cr_assert_fail("the granter never ended");
        }
        close(g->go[1]);
        close(g->back[0]);
        return st;
}

static void expect_killed(int st)
{
        cr_expect(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the granter was not killed: %#x",
                  st);
}

static void expect_exit0(int st)
{
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the granter's release failed: %#x", st);
}

/* ---------------------------------------------------------------- waiter threads */

enum { OP_SEM = 1, OP_PEER, OP_SERIAL };

/* One acquire of 1 unit of L/KEY: plain, through the waiter's peer, or a serialized hold. */
struct step {
        int op;
        thr_limiter *l;
        const char *key;
        uint64_t timeout;
        _Atomic int rc, done;
        struct thr_lease le;
        struct thr_hold hold;
        int end_rc; /* OP_SERIAL: its thr_serial_end's (only the thread that began may end) */
};

/* A thread that runs its steps in order. */
struct tw {
        thr_peer *p;
        int n;
        struct step s[2];
        pthread_t t;
};

static int step_run(struct step *s, thr_peer *p)
{
        size_t len = strlen(s->key);
        switch (s->op) {
        case OP_PEER:
                return thr_peer_acquire(p, s->l, s->key, len, 1, s->timeout, 0);
        case OP_SERIAL:
                return thr_serial_begin(s->l, s->key, len, 1, s->timeout, &s->hold);
        default:
                return thr_sem_acquire(s->l, s->key, len, 1, LONG, s->timeout, &s->le);
        }
}

static void *tw_run(void *arg)
{
        struct tw *w = arg;
        for (int i = 0; i < w->n; i++) {
                int rc = step_run(&w->s[i], w->p);
                if (rc == 0 && w->s[i].op == OP_SERIAL)
                        w->s[i].end_rc = thr_serial_end(&w->s[i].hold);
                atomic_store(&w->s[i].rc, rc);
                atomic_store(&w->s[i].done, 1);
        }
        return NULL;
}

static void tw_start(struct tw *w)
{
        cr_assert_eq(pthread_create(&w->t, NULL, tw_run, w), 0);
}

/* Step I of W returns within 10 s of real time; if not, its clock runs past its timeout (it
 * returns then) and the test fails. */
static int tw_step(struct tw *w, int i)
{
        if (!within(&w->s[i].done, 10.0)) {
                advance(2 * LONG);
                bool late = within(&w->s[i].done, 30.0);
                cr_assert_fail("step %d of the waiter never returned (%s)", i,
                               late ? "ended by its timeout" : "nor at its timeout");
        }
        return atomic_load(&w->s[i].rc);
}

static void tw_join(struct tw *w)
{
        tw_step(w, w->n - 1);
        pthread_join(w->t, NULL);
}

/* Release what step I holds (0 or -errno). */
static int step_release(struct tw *w, int i)
{
        struct step *s = &w->s[i];
        switch (s->op) {
        case OP_PEER:
                return thr_peer_release(w->p, s->l, s->key, strlen(s->key));
        case OP_SERIAL:
                return s->end_rc; /* ended by its thread */
        default:
                return thr_sem_release(&s->le);
        }
}

/* ---------------------------------------------------------------- waiter children */

/* A waiter in a child process (to be stopped or killed): its steps, then commands from the test
 * through shared memory. */
struct cw {
        pid_t pid;
        _Atomic int done[2], rcs[2];
        _Atomic int cmd, seq, rc; /* cmd: CW_RELEASE, CW_AGAIN, CW_EXIT */
};
enum { CW_RELEASE = 1, CW_AGAIN, CW_EXIT };

static struct cw *cw_start(bool peer, int n, thr_limiter *l0, uint64_t timeout0, thr_limiter *l1,
                           uint64_t timeout1)
{
        struct cw *c =
            mmap(NULL, sizeof(*c), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(c, MAP_FAILED);
        memset(c, 0, sizeof(*c));
        pid_t pid = tfork(); /* C is shared: only the test writes its pid */
        cr_assert_geq(pid, 0);
        if (pid) {
                c->pid = pid;
                return c;
        }
        thr_peer *p = NULL;
        if (peer && thr_peer_open(T.a, LONG, &p) != 0)
                _exit(3);
        thr_limiter *ls[2] = {l0, l1};
        uint64_t to[2] = {timeout0, timeout1};
        struct thr_lease le[2];
        int held = -1; /* the step whose lease it holds */
        for (int i = 0; i < n; i++) {
                int rc = peer ? thr_peer_acquire(p, ls[i], "k", 1, 1, to[i], 0)
                              : thr_sem_acquire(ls[i], "k", 1, 1, LONG, to[i], &le[i]);
                if (rc == 0)
                        held = i;
                atomic_store(&c->rcs[i], rc);
                atomic_store(&c->done[i], 1);
        }
        for (int seen = 0;;) {
                int cmd = atomic_exchange(&c->cmd, 0);
                if (!cmd) {
                        struct timespec ts = {0, 1000000};
                        nanosleep(&ts, NULL);
                        continue;
                }
                int rc = -EINVAL;
                if (cmd == CW_RELEASE && held >= 0) {
                        rc = peer ? thr_peer_release(p, ls[held], "k", 1)
                                  : thr_sem_release(&le[held]);
                        held = -1;
                } else if (cmd == CW_AGAIN) {
                        rc = peer ? thr_peer_acquire(p, ls[0], "k", 1, 1, 0, 0)
                                  : thr_sem_try(ls[0], "k", 1, 1, LONG, &le[0]);
                        held = rc == 0 ? 0 : held;
                } else if (cmd == CW_EXIT) {
                        _exit(0);
                }
                atomic_store(&c->rc, rc);
                atomic_store(&c->seq, ++seen);
        }
}

/* Step I of C returned within 10 s (else the test fails); its result. */
static int cw_step(struct cw *c, int i)
{
        if (!within(&c->done[i], 10.0)) {
                kill(c->pid, SIGKILL);
                cr_assert_fail("step %d of the waiter child never returned", i);
        }
        return atomic_load(&c->rcs[i]);
}

static int cw_do(struct cw *c, int cmd)
{
        int s = atomic_load(&c->seq);
        atomic_store(&c->cmd, cmd);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (atomic_load(&c->seq) == s) {
                if (telapsed_s(&t0) > 10.0) {
                        kill(c->pid, SIGKILL);
                        cr_assert_fail("the waiter child never did command %d", cmd);
                }
                tdoze();
        }
        return atomic_load(&c->rc);
}

static void cw_end(struct cw *c)
{
        atomic_store(&c->cmd, CW_EXIT);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (waitpid(c->pid, NULL, WNOHANG) == 0) {
                if (telapsed_s(&t0) > 10.0) {
                        kill(c->pid, SIGKILL);
                        waitpid(c->pid, NULL, 0);
                        break;
                }
                tdoze();
        }
        munmap(c, sizeof(*c));
}

/* Stop C (queued on NAME/"k") where it does not hold the key's shard lock (it takes it at each
 * check): from then on it checks nothing, and blocks nobody. */
static void cw_stop(struct cw *c, const char *name)
{
        struct shm_probe pr;
        tprobe(&T.map, ttable(&T, name), "k", &pr);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                int st;
                cr_assert_eq(kill(c->pid, SIGSTOP), 0);
                cr_assert_eq(waitpid(c->pid, &st, WUNTRACED), c->pid);
                cr_assert(WIFSTOPPED(st));
                if (atomic_load(&pr.shard->lock) == 0)
                        return;
                cr_assert_lt(telapsed_s(&t0), 10.0, "the waiter child always holds the lock");
                cr_assert_eq(kill(c->pid, SIGCONT), 0);
                tdoze();
        }
}

static void cw_cont(struct cw *c)
{
        cr_assert_eq(kill(c->pid, SIGCONT), 0);
}

/* ================================================================ 1. the granter killed */

static const char *point_name(int point)
{
        switch (point) {
        case THR_HOOK_SEM_GEN_TAKEN:
                return "generation taken";
        case THR_HOOK_SEM_GRANT_FILLED:
                return "record filled";
        case THR_HOOK_SEM_GRANT_CASED:
                return "word CASed";
        case THR_HOOK_SEM_GRANT_WOKEN:
                return "waiter woken";
        default:
                return "?";
        }
}

/*
 * The granter dies at POINT of its grant to a waiting thread of this process (plain, or a peer's
 * acquire), nobody else serving the key: the waiter alone meets what it left (a taken-over lock, a
 * dirty header, a record filled for it, a word GRANTED without a wake). It gets exactly one lease.
 */
static void granter_killed_at(int point, bool peer)
{
        thr_limiter *l = lim("one");
        struct granter g;
        granter_start(&g, l, point, H_DIE);
        struct tw w = {.p = peer ? peer_new() : NULL, .n = 1};
        w.s[0] = (struct step){.op = peer ? OP_PEER : OP_SEM, .l = l, .key = "k", .timeout = LONG};
        tw_start(&w);
        wait_pending(l, 1);
        granter_go(&g);
        expect_killed(granter_reap(&g));
        tw_join(&w);
        cr_log_info("granter killed at %s (%s): the waiter's acquire returned %d",
                    point_name(point), peer ? "peer" : "plain", atomic_load(&w.s[0].rc));
        cr_assert_eq(atomic_load(&w.s[0].rc), 0);
        expect_sums(l, 1, 1, "granted");
        cr_expect_eq(step_release(&w, 0), 0);
        expect_sums(l, 0, 0, "released");
}

Test(sem_grant, granter_killed_after_the_generation_is_taken_plain)
{
        granter_killed_at(THR_HOOK_SEM_GEN_TAKEN, false);
}

Test(sem_grant, granter_killed_after_the_fill_plain)
{
        granter_killed_at(THR_HOOK_SEM_GRANT_FILLED, false);
}

Test(sem_grant, granter_killed_after_the_cas_plain)
{
        granter_killed_at(THR_HOOK_SEM_GRANT_CASED, false);
}

Test(sem_grant, granter_killed_after_the_wake_plain)
{
        granter_killed_at(THR_HOOK_SEM_GRANT_WOKEN, false);
}

Test(sem_grant, granter_killed_after_the_generation_is_taken_peer)
{
        granter_killed_at(THR_HOOK_SEM_GEN_TAKEN, true);
}

Test(sem_grant, granter_killed_after_the_fill_peer)
{
        granter_killed_at(THR_HOOK_SEM_GRANT_FILLED, true);
}

Test(sem_grant, granter_killed_after_the_cas_peer)
{
        granter_killed_at(THR_HOOK_SEM_GRANT_CASED, true);
}

Test(sem_grant, granter_killed_after_the_wake_peer)
{
        granter_killed_at(THR_HOOK_SEM_GRANT_WOKEN, true);
}

/* ================================================================ 2. a third party re-grants */

/*
 * The granter dies after the fill, before its CAS, while the waiter (a child) is stopped and checks
 * nothing. A third party's release serves the key first: it finds the dead granter's record naming
 * the head's wait and completes that grant, never filling a second one (the old design granted
 * again, and the first record was kept by the waiter's holder for its ttl, or the peer's life).
 * Then the waiter's release leaves nothing, and an acquire after it holds exactly one lease.
 */
static void regrant(bool peer)
{
        thr_limiter *l = lim("two");
        struct thr_lease x;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, LONG, &x), 0); /* X: 1 of 2 */
        struct granter g;
        granter_start(&g, l, THR_HOOK_SEM_GRANT_FILLED, H_DIE); /* G: the other one */
        struct cw *c = cw_start(peer, 1, l, LONG, NULL, 0);
        wait_pending(l, 1);
        cw_stop(c, "two");
        granter_go(&g);
        expect_killed(granter_reap(&g));
        cr_assert_eq(thr_sem_release(&x), 0); /* its serve finds the waiter still queued */
        expect_sums(l, 1, 1, "the waiter stopped, the third party's serve done");
        cw_cont(c);
        int rc = cw_step(c, 0);
        cr_log_info("regrant (%s): the waiter's acquire returned %d", peer ? "peer" : "plain", rc);
        cr_expect_eq(rc, 0);
        expect_sums(l, 1, 1, "the waiter has its lease");
        cr_expect_eq(cw_do(c, CW_RELEASE), 0);
        expect_sums(l, 0, 0, "the waiter released its lease");
        cr_expect_eq(cw_do(c, CW_AGAIN), 0);
        expect_sums(l, 1, 1, "the waiter acquired again");
        cr_expect_eq(cw_do(c, CW_RELEASE), 0);
        expect_sums(l, 0, 0, "released again");
        cw_end(c);
}

Test(sem_grant, regrant_by_a_third_party_orphans_nothing_plain)
{
        regrant(false);
}

Test(sem_grant, regrant_by_a_third_party_orphans_nothing_peer)
{
        regrant(true);
}

/*
 * The same, and the third party's serve is killed too, after it found the dead granter's record
 * and before its own CAS: the waiter (continued) adopts that record under the lock. One lease.
 */
static void completing_serve_killed(bool peer)
{
        thr_limiter *l = lim("two");
        struct granter g1, g2;
        granter_start(&g1, l, THR_HOOK_SEM_GRANT_FILLED, H_DIE);
        granter_start(&g2, l, THR_HOOK_SEM_REGRANT_FOUND, H_DIE);
        struct cw *c = cw_start(peer, 1, l, LONG, NULL, 0);
        wait_pending(l, 1);
        cw_stop(c, "two");
        granter_go(&g1);
        expect_killed(granter_reap(&g1));
        granter_go(&g2);
        expect_killed(granter_reap(&g2));
        cw_cont(c);
        int rc = cw_step(c, 0);
        cr_log_info("completing serve killed (%s): the waiter's acquire returned %d",
                    peer ? "peer" : "plain", rc);
        cr_expect_eq(rc, 0);
        expect_sums(l, 1, 1, "the waiter has its lease");
        cr_expect_eq(cw_do(c, CW_RELEASE), 0);
        expect_sums(l, 0, 0, "the waiter released its lease");
        cw_end(c);
}

Test(sem_grant, completing_serve_killed_the_waiter_adopts_plain)
{
        completing_serve_killed(false);
}

Test(sem_grant, completing_serve_killed_the_waiter_adopts_peer)
{
        completing_serve_killed(true);
}

/*
 * The waiter's deadline passes while its granter, paused after the fill, holds the key's lock; the
 * granter then dies. The waiter's last check, after its deadline, waits for the lock (taken over
 * from the dead granter) and adopts the grant before it gives up its place: it gets the lease (0,
 * not -ETIMEDOUT), exactly one. Its checks before the deadline wait at most until the deadline
 * (1 s of arena time, so 1 s of real time at most on the stopped manual clock): 2 s after the
 * clock passes the deadline, its only check in flight is the last one.
 */
static void late_waiter_adopts(bool peer)
{
        thr_limiter *l = lim("one");
        struct granter g;
        granter_start(&g, l, THR_HOOK_SEM_GRANT_FILLED, H_PAUSE_DIE);
        struct tw w = {.p = peer ? peer_new() : NULL, .n = 1};
        w.s[0] = (struct step){.op = peer ? OP_PEER : OP_SEM, .l = l, .key = "k", .timeout = SEC};
        tw_start(&w);
        wait_pending(l, 1);
        granter_go(&g);
        granter_at_hook(&g); /* filled, holding the lock */
        advance(2 * SEC);
        nanosleep(&(struct timespec){2, 0}, NULL);
        cr_expect_not(atomic_load(&w.s[0].done), "the waiter gave up before its last check");
        granter_go(&g);
        expect_killed(granter_reap(&g));
        int rc = tw_step(&w, 0);
        pthread_join(w.t, NULL);
        cr_log_info("late waiter (%s): its acquire returned %d", peer ? "peer" : "plain", rc);
        cr_expect_eq(rc, 0, "the late waiter did not adopt its grant: %d", rc);
        expect_sums(l, rc == 0 ? 1 : 0, rc == 0 ? 1 : 0, "after the late waiter's acquire");
        if (rc == 0) {
                cr_expect_eq(step_release(&w, 0), 0);
                expect_sums(l, 0, 0, "the waiter released its lease");
        }
}

Test(sem_grant, granter_killed_after_the_fill_the_late_waiter_adopts_plain)
{
        late_waiter_adopts(false);
}

Test(sem_grant, granter_killed_after_the_fill_the_late_waiter_adopts_peer)
{
        late_waiter_adopts(true);
}

/* ================================================================ 3. the waiter killed */

/*
 * The waiter's process (plain, or a peer's acquire) is killed while its granter is paused at POINT
 * (after the fill: the CAS then still succeeds on the dead waiter's word; after the CAS: nobody
 * takes the lease). The lease granted to the dead is reclaimed: the key holds nothing, a try
 * succeeds.
 */
static void waiter_killed_at(int point, bool peer)
{
        thr_limiter *l = lim("one");
        struct granter g;
        granter_start(&g, l, point, H_PAUSE);
        struct cw *c = cw_start(peer, 1, l, LONG, NULL, 0);
        wait_pending(l, 1);
        granter_go(&g);
        granter_at_hook(&g);
        cr_assert_eq(kill(c->pid, SIGKILL), 0);
        cr_assert_eq(waitpid(c->pid, NULL, 0), c->pid); /* gone, its locks with it */
        munmap(c, sizeof(*c));
        granter_go(&g);
        expect_exit0(granter_reap(&g));
        expect_sums(l, 0, 0, "the waiter killed at its grant");
        struct thr_lease le;
        cr_expect_eq(thr_sem_try(l, "k", 1, 1, LONG, &le), 0);
        cr_expect_eq(thr_sem_release(&le), 0);
        expect_sums(l, 0, 0, "a try and its release");
}

Test(sem_grant, waiter_killed_at_its_fill_plain)
{
        waiter_killed_at(THR_HOOK_SEM_GRANT_FILLED, false);
}

Test(sem_grant, waiter_killed_at_its_fill_peer)
{
        waiter_killed_at(THR_HOOK_SEM_GRANT_FILLED, true);
}

Test(sem_grant, waiter_killed_after_its_cas_plain)
{
        waiter_killed_at(THR_HOOK_SEM_GRANT_CASED, false);
}

Test(sem_grant, waiter_killed_after_its_cas_peer)
{
        waiter_killed_at(THR_HOOK_SEM_GRANT_CASED, true);
}

/* ================================================================ 4. a peer's timeout, its retry
 */

/*
 * A peer's acquire on "twoq" (max 2) passes its deadline while its granter is paused after the
 * fill, holding the key's shard lock: the peer gives up without the lock (-ETIMEDOUT). The granter
 * then dies (DIE), or goes on (its CAS fails: it takes the grant back). The record filled for the
 * ended wait is reclaimed; the peer's retry holds exactly one lease (the old design left the first
 * one naming the peer, kept for the peer's life), and its release leaves nothing.
 */
static void peer_timeout_then_retry(bool die)
{
        thr_limiter *l = lim("twoq");
        struct thr_lease x;
        cr_assert_eq(thr_sem_try(l, "k", 1, 1, LONG, &x), 0);
        struct granter g;
        granter_start(&g, l, THR_HOOK_SEM_GRANT_FILLED, die ? H_PAUSE_DIE : H_PAUSE);
        struct tw w = {.p = peer_new(), .n = 1};
        w.s[0] = (struct step){.op = OP_PEER, .l = l, .key = "k", .timeout = SEC};
        tw_start(&w);
        wait_pending(l, 1);
        granter_go(&g);
        granter_at_hook(&g);
        advance(2 * SEC);
        int rc = tw_step(&w, 0);
        pthread_join(w.t, NULL);
        granter_go(&g);
        int st = granter_reap(&g);
        if (die)
                expect_killed(st);
        else
                expect_exit0(st);
        cr_log_info("peer timeout (granter %s): the first acquire returned %d",
                    die ? "killed" : "went on", rc);
        cr_expect_eq(rc, -ETIMEDOUT);
        cr_assert_eq(thr_sem_release(&x), 0);
        expect_sums(l, 0, 0, "after the timeout, before the retry");
        cr_expect_eq(thr_peer_acquire(w.p, l, "k", 1, 1, 0, 0), 0);
        expect_sums(l, 1, 1, "the retry");
        cr_expect_eq(thr_peer_release(w.p, l, "k", 1), 0);
        expect_sums(l, 0, 0, "the retry released");
}

Test(sem_grant, peer_timeout_then_retry_granter_killed)
{
        peer_timeout_then_retry(true);
}

Test(sem_grant, peer_timeout_then_retry_granter_goes_on)
{
        peer_timeout_then_retry(false);
}

/* ================================================================ 5. a paused granter, the next
 * wait */

/*
 * The granter of "oneq" scanned the waiter (a thread of this process) and is paused at POINT
 * (before its fill, or after it), holding the key's lock. The waiter's deadline passes: it gives up
 * without the lock and queues at once on the next key, held by this thread (H: a lease of "other",
 * or NEXT_SERIAL a hold of a serialized window key). The granter goes on (its CAS must fail: the
 * word is the next wait's, another epoch; it takes its grant back) or dies (DIE: the record naming
 * the ended wait is reclaimed by the next sweep). The next wait must not return while H holds its
 * key (the old design granted it with the first key's lease: two holders); the first key holds
 * nothing; the sums of both are exact after the releases.
 */
static void paused_granter(int point, bool die, bool peer, bool next_serial)
{
        thr_limiter *a = lim("oneq"), *b = lim(next_serial ? "ser" : "other");
        struct thr_lease h;
        struct thr_hold hs;
        if (next_serial)
                cr_assert_eq(thr_serial_begin(b, "k", 1, 1, LONG, &hs), 0);
        else
                cr_assert_eq(thr_sem_try(b, "k", 1, 1, LONG, &h), 0);
        struct granter g;
        granter_start(&g, a, point, die ? H_PAUSE_DIE : H_PAUSE);
        struct tw w = {.p = peer ? peer_new() : NULL, .n = 2};
        w.s[0] = (struct step){.op = peer ? OP_PEER : OP_SEM, .l = a, .key = "k", .timeout = SEC};
        w.s[1] = (struct step){.op = next_serial ? OP_SERIAL
                                     : peer      ? OP_PEER
                                                 : OP_SEM,
                               .l = b,
                               .key = "k",
                               .timeout = LONG};
        tw_start(&w);
        wait_pending(a, 1);
        granter_go(&g);
        granter_at_hook(&g); /* scanned the waiter, holding the lock */
        advance(2 * SEC);    /* the waiter's deadline on the first key passes */
        int rc0 = tw_step(&w, 0);
        if (!next_serial)
                wait_pending(b, 1); /* queued on the next key, behind H */
        else /* a serialized wait is not counted by thr_sem_stat: time to queue */
                nanosleep(&(struct timespec){0, 200 * 1000000}, NULL);
        granter_go(&g);
        int st = granter_reap(&g);
        bool early = within(&w.s[1].done, 1.0);
        cr_log_info("paused at %s, then %s (%s, next %s): first wait %d; the next wait %s (%d)",
                    point_name(point), die ? "killed" : "on", peer ? "peer" : "plain",
                    next_serial ? "serialized" : "semaphore", rc0,
                    early ? "RETURNED while its key is held" : "still waits",
                    atomic_load(&w.s[1].rc));
        cr_expect_eq(rc0, -ETIMEDOUT);
        cr_expect_not(early, "the next wait returned %d while its key was held",
                      atomic_load(&w.s[1].rc));
        if (die)
                expect_killed(st);
        else
                expect_exit0(st);
        expect_sums(a, 0, 0, "the first key, its grant taken back or reclaimed");
        int rh = next_serial ? thr_serial_end(&hs) : thr_sem_release(&h);
        cr_expect_eq(rh, 0, "H's release: %d", rh);
        tw_join(&w);
        cr_expect_eq(atomic_load(&w.s[1].rc), 0);
        if (atomic_load(&w.s[1].rc) == 0)
                cr_expect_eq(step_release(&w, 1), 0);
        if (!next_serial)
                expect_sums(b, 0, 0, "the next key, released");
        expect_sums(a, 0, 0, "the first key");
        struct thr_lease le;
        cr_expect_eq(thr_sem_try(a, "k", 1, 1, LONG, &le), 0);
        cr_expect_eq(thr_sem_release(&le), 0);
}

Test(sem_grant, granter_paused_after_its_scan_never_grants_the_next_wait)
{
        paused_granter(THR_HOOK_SEM_GEN_TAKEN, false, false, false);
}

Test(sem_grant, granter_paused_after_its_fill_never_grants_the_next_wait)
{
        paused_granter(THR_HOOK_SEM_GRANT_FILLED, false, false, false);
}

Test(sem_grant, granter_paused_after_its_fill_never_grants_the_next_wait_peer)
{
        paused_granter(THR_HOOK_SEM_GRANT_FILLED, false, true, false);
}

Test(sem_grant, granter_paused_after_its_scan_then_killed_leaves_nothing)
{
        paused_granter(THR_HOOK_SEM_GEN_TAKEN, true, false, false);
}

Test(sem_grant, granter_paused_after_its_fill_then_killed_leaves_nothing)
{
        paused_granter(THR_HOOK_SEM_GRANT_FILLED, true, false, false);
}

Test(sem_grant, granter_paused_after_its_fill_then_killed_leaves_nothing_peer)
{
        paused_granter(THR_HOOK_SEM_GRANT_FILLED, true, true, false);
}

Test(sem_grant, granter_paused_after_its_fill_never_grants_a_serialized_next_wait)
{
        paused_granter(THR_HOOK_SEM_GRANT_FILLED, false, false, true);
}

/*
 * The same with the serve that completes a dead granter's grant: G1 dies after its fill while the
 * waiter (a child, "twoq" held by G1 and G2) is stopped; G2's release finds the record naming the
 * waiter's wait and is paused before its CAS, holding the lock. The waiter continues, passes its
 * deadline, gives up without the lock and queues on "other" (held by this process). G2 goes on:
 * its CAS fails (another epoch), the record is nobody's and cleared. The next wait must not
 * return while "other" is held; "twoq" holds nothing.
 */
Test(sem_grant, completing_serve_paused_never_grants_the_next_wait)
{
        thr_limiter *a = lim("twoq"), *b = lim("other");
        struct thr_lease h;
        cr_assert_eq(thr_sem_try(b, "k", 1, 1, LONG, &h), 0);
        struct granter g1, g2;
        granter_start(&g1, a, THR_HOOK_SEM_GRANT_FILLED, H_DIE);
        granter_start(&g2, a, THR_HOOK_SEM_REGRANT_FOUND, H_PAUSE);
        struct cw *c = cw_start(false, 2, a, SEC, b, LONG);
        wait_pending(a, 1);
        cw_stop(c, "twoq");
        granter_go(&g1);
        expect_killed(granter_reap(&g1));
        granter_go(&g2);
        granter_at_hook(&g2); /* found the record, holding the lock */
        cw_cont(c);
        advance(2 * SEC);
        int rc0 = cw_step(c, 0);
        wait_pending(b, 1);
        granter_go(&g2);
        expect_exit0(granter_reap(&g2));
        bool early = within(&c->done[1], 1.0);
        cr_log_info("completing serve paused: first wait %d; the next wait %s (%d)", rc0,
                    early ? "RETURNED while its key is held" : "still waits",
                    atomic_load(&c->rcs[1]));
        cr_expect_eq(rc0, -ETIMEDOUT);
        cr_expect_not(early, "the next wait returned %d while its key was held",
                      atomic_load(&c->rcs[1]));
        expect_sums(a, 0, 0, "the first key, the completed grant taken back");
        cr_expect_eq(thr_sem_release(&h), 0);
        cr_expect_eq(cw_step(c, 1), 0);
        cr_expect_eq(cw_do(c, CW_RELEASE), 0);
        expect_sums(b, 0, 0, "the next key, released");
        expect_sums(a, 0, 0, "the first key");
        cw_end(c);
}

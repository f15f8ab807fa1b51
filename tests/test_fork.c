/*
 * test_fork.c - proves that a pre-forking process can open the arena, use it, and fork: each child
 * (and grandchild, and a child made by a raw clone that runs no atfork handler) registers its own
 * reader record on first use, never writes its parent's, and the admissions of all of them add up
 * exactly; the parent keeps working after they exit.
 *
 * Manual-clock arena, so every count is exact. Children report through a shared anonymous mapping
 * and end with _exit(); only the parent asserts.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define KIDS    4
#define KEYS    4
#define TRIES   30  /* per child per shared key */
#define BURST   100 /* per key: KIDS * TRIES = 120 attempts, so exactly 100 admitted */
#define P_TRIES 3   /* the parent's own admissions before forking */

static struct tarena T;
static thr_limiter *L;
static pid_t g_kids[KIDS];

static void setup(void)
{
        struct shm_limiter_spec s = tspec("f", 1, SEC, BURST, BURST);
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        L = tlim(&T, "f");
}

static void teardown(void)
{
        for (int i = 0; i < KIDS; i++) {
                if (g_kids[i] > 0) {
                        kill(g_kids[i], SIGKILL);
                        waitpid(g_kids[i], NULL, 0);
                }
                g_kids[i] = 0;
        }
        thr_limiter_close(L);
        tarena_free(&T);
}

TestSuite(fork, .init = setup, .fini = teardown, .timeout = 120);

/* What each process reports: its pid and its own tally of decisions. */
struct tally {
        _Atomic uint64_t pid;
        _Atomic uint64_t admitted;
        _Atomic uint64_t denied;
        _Atomic uint64_t errors;
        _Atomic int last_err;
};

struct shared {
        _Atomic uint64_t ready;
        _Atomic uint64_t go;
        struct tally kid[KIDS];
        struct tally grand; /* the grandchild */
        struct tally again; /* admitted: the child's decisions after its grandchild exited */
};

static struct shared *shared_new(void)
{
        struct shared *s =
            mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(s, MAP_FAILED, "mmap: %s", strerror(errno));
        return s;
}

/* One decision, tallied in T (the child's side: no Criterion call). */
static void tally_try(struct tally *t, const char *key)
{
        int rc = thr_limiter_try(L, key, strlen(key), 1, NULL);
        if (rc == 1)
                atomic_fetch_add(&t->admitted, 1);
        else if (rc == 0)
                atomic_fetch_add(&t->denied, 1);
        else {
                atomic_fetch_add(&t->errors, 1);
                atomic_store(&t->last_err, rc);
        }
}

static void child_wait_go(struct shared *s)
{
        atomic_fetch_add(&s->ready, 1);
        while (!atomic_load(&s->go))
                sched_yield();
}

/* ---------------------------------------------------------------- reader records */

static struct thr_reader *readers(uint32_t *n)
{
        const struct thr_hdr *h = shm_hdr(&T.map);
        *n = h->reader_count;
        return shm_at(T.map.base, h->reader_off);
}

/* The single claimed record whose pid is PID; fails if none or several. */
static struct thr_reader *record_of(pid_t pid)
{
        uint32_t n;
        struct thr_reader *r = readers(&n), *found = NULL;
        for (uint32_t i = 0; i < n; i++) {
                if (atomic_load(&r[i].owner) == 0 || atomic_load(&r[i].pid) != (uint64_t)pid)
                        continue;
                cr_assert_null(found, "pid %d owns two reader records", (int)pid);
                found = &r[i];
        }
        cr_assert_not_null(found, "pid %d owns no reader record", (int)pid);
        return found;
}

static void assert_tally_matches(const struct tally *t, const struct thr_reader *r, const char *who)
{
        cr_assert_eq(atomic_load(&t->errors), 0, "%s: error %d (%s)", who,
                     atomic_load(&t->last_err), thr_strerror(atomic_load(&t->last_err)));
        cr_assert_eq(atomic_load(&r->admitted), atomic_load(&t->admitted),
                     "%s: record counts %lu admitted, the process saw %lu", who,
                     (unsigned long)atomic_load(&r->admitted),
                     (unsigned long)atomic_load(&t->admitted));
        cr_assert_eq(atomic_load(&r->denied), atomic_load(&t->denied), "%s: denied", who);
}

static void reap(pid_t pid)
{
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid, "waitpid: %s", strerror(errno));
        for (int i = 0; i < KIDS; i++)
                if (g_kids[i] == pid)
                        g_kids[i] = 0;
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d ended with status %#x", (int)pid,
                  st);
}

/* ---------------------------------------------------------------- children */

static void shared_keys_child(struct shared *s, int idx)
{
        struct tally *t = &s->kid[idx];
        atomic_store(&t->pid, (uint64_t)getpid());
        child_wait_go(s);
        char key[16];
        for (int i = 0; i < TRIES; i++)
                for (int k = 0; k < KEYS; k++) {
                        snprintf(key, sizeof(key), "shared-%d", (k + idx) % KEYS);
                        tally_try(t, key);
                }
        _exit(0);
}

/*
 * Fork KIDS children that try the shared keys. RAW: by a raw clone(SIGCHLD), which runs no
 * pthread_atfork handler (as _Fork() or a runtime's own fork would), so only the library's
 * MADV_WIPEONFORK fork generation tells the child it is not its parent.
 */
static void fork_children(struct shared *s, bool raw)
{
        pid_t parent = getpid();
        for (int i = 0; i < KIDS; i++) {
                g_kids[i] = raw ? (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0) : tfork();
                cr_assert_geq(g_kids[i], 0, "fork: %s", strerror(errno));
                if (g_kids[i] == 0) {
                        if (raw)
                                tchild_tie(parent);
                        shared_keys_child(s, i);
                }
        }
        while (atomic_load(&s->ready) < KIDS)
                sched_yield();
        atomic_store(&s->go, 1);
        for (int i = 0; i < KIDS; i++)
                reap(g_kids[i]);
}

static void children_get_own_records(bool raw)
{
        /* The parent uses the limiter first: its thread now owns a reader record. */
        for (int i = 0; i < P_TRIES; i++)
                cr_assert_eq(thr_limiter_try(L, "parent", 6, 1, NULL), 1);
        struct thr_reader *mine = record_of(getpid());
        uint64_t my_owner = atomic_load(&mine->owner);
        cr_assert_eq(atomic_load(&mine->tid), (uint64_t)gettid());
        cr_assert_eq(atomic_load(&mine->admitted), P_TRIES);

        struct shared *s = shared_new();
        fork_children(s, raw);

        /* Exact totals: each shared key saw KIDS * TRIES attempts against a burst of BURST. */
        uint64_t admitted = 0, denied = 0;
        for (int i = 0; i < KIDS; i++) {
                admitted += atomic_load(&s->kid[i].admitted);
                denied += atomic_load(&s->kid[i].denied);
        }
        cr_assert_eq(admitted, KEYS * BURST, "admitted across children");
        cr_assert_eq(denied, KEYS * (KIDS * TRIES - BURST), "denied across children");

        /* Each child: its own record (pid, counters), distinct owner tokens, none the parent's. */
        uint64_t owners[KIDS];
        for (int i = 0; i < KIDS; i++) {
                char who[32];
                snprintf(who, sizeof(who), "child %d", i);
                struct thr_reader *r = record_of((pid_t)atomic_load(&s->kid[i].pid));
                cr_assert_neq(r, mine, "%s wrote the parent's record", who);
                cr_assert_eq(atomic_load(&r->tid), atomic_load(&s->kid[i].pid),
                             "%s: single-threaded, tid == pid", who);
                assert_tally_matches(&s->kid[i], r, who);
                owners[i] = atomic_load(&r->owner);
                cr_assert_neq(owners[i], my_owner, "%s has the parent's owner token", who);
                for (int j = 0; j < i; j++)
                        cr_assert_neq(owners[i], owners[j], "children %d and %d share a token", i,
                                      j);
        }

        /* The parent's record was untouched by the children. */
        cr_assert_eq(atomic_load(&mine->owner), my_owner);
        cr_assert_eq(atomic_load(&mine->pid), (uint64_t)getpid());
        cr_assert_eq(atomic_load(&mine->admitted), P_TRIES, "children wrote the parent's counter");
        cr_assert_eq(atomic_load(&mine->denied), 0);

        /* And the parent keeps working, on its own record, with exact results. */
        struct thr_result res;
        cr_assert_eq(thr_limiter_try(L, "parent", 6, 1, &res), 1);
        cr_assert_eq(res.remaining, BURST - P_TRIES - 1);
        cr_assert_eq(thr_limiter_try(L, "shared-0", 8, 1, &res), 0, "shared keys are spent");
        cr_assert_eq(res.retry_after_ns, SEC);
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
        cr_assert_eq(thr_limiter_try(L, "shared-0", 8, 1, NULL), 1, "one token a second");
        cr_assert_eq(thr_limiter_try(L, "shared-0", 8, 1, NULL), 0);
        cr_assert_eq(record_of(getpid()), mine, "the parent kept its record");
        cr_assert_eq(atomic_load(&mine->admitted), P_TRIES + 2);
        cr_assert_eq(atomic_load(&mine->denied), 2);
        munmap(s, sizeof(*s));
}

Test(fork, children_get_their_own_reader_records)
{
        children_get_own_records(false);
}

Test(fork, children_of_a_raw_clone_get_their_own_reader_records)
{
        children_get_own_records(true);
}

/* ---------------------------------------------------------------- grandchild */

static void grandchild(struct shared *s)
{
        atomic_store(&s->grand.pid, (uint64_t)getpid());
        for (int i = 0; i < 7; i++)
                tally_try(&s->grand, "family");
        _exit(0);
}

/* The child: uses the limiter (claims a record), forks a grandchild, waits, uses it again. */
static void forking_child(struct shared *s)
{
        struct tally *t = &s->kid[0];
        atomic_store(&t->pid, (uint64_t)getpid());
        for (int i = 0; i < 5; i++)
                tally_try(t, "family");
        pid_t g = tfork();
        if (g < 0)
                _exit(2);
        if (g == 0)
                grandchild(s);
        int st;
        if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                _exit(3);
        uint64_t before = atomic_load(&t->admitted) + atomic_load(&t->denied);
        for (int i = 0; i < 2; i++)
                tally_try(t, "family");
        atomic_store(&s->again.admitted,
                     atomic_load(&t->admitted) + atomic_load(&t->denied) - before);
        _exit(0);
}

Test(fork, a_child_that_forks_a_grandchild_works)
{
        cr_assert_eq(thr_limiter_try(L, "family", 6, 1, NULL), 1); /* parent: record claimed */
        struct thr_reader *mine = record_of(getpid());
        struct shared *s = shared_new();
        g_kids[0] = tfork();
        cr_assert_geq(g_kids[0], 0);
        if (g_kids[0] == 0)
                forking_child(s);
        reap(g_kids[0]);

        pid_t child = (pid_t)atomic_load(&s->kid[0].pid), grand = (pid_t)atomic_load(&s->grand.pid);
        cr_assert_neq(grand, 0, "the grandchild ran");
        struct thr_reader *rc = record_of(child), *rg = record_of(grand);
        cr_assert_neq(rc, rg, "grandchild and child share a record");
        cr_assert_neq(rc, mine);
        cr_assert_neq(rg, mine);
        cr_assert_neq(atomic_load(&rc->owner), atomic_load(&rg->owner));
        /* The child's record holds the child's decisions only, before and after the grandchild. */
        assert_tally_matches(&s->kid[0], rc, "child");
        assert_tally_matches(&s->grand, rg, "grandchild");
        cr_assert_eq(atomic_load(&s->again.admitted), 2,
                     "the child kept deciding after its grandchild exited");
        /* Exact: B = 100, 1 + 5 + 7 + 2 attempts at one fixed time, all admitted. */
        cr_assert_eq(atomic_load(&s->kid[0].admitted), 7);
        cr_assert_eq(atomic_load(&s->grand.admitted), 7);
        struct thr_result res;
        cr_assert_eq(thr_limiter_try(L, "family", 6, 0, &res), 1, "peek");
        cr_assert_eq(res.remaining, BURST - 15);
        cr_assert_eq(atomic_load(&mine->admitted), 2, "parent: its first try and the peek");
        munmap(s, sizeof(*s));
}

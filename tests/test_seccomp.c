/*
 * test_seccomp.c - proves the hot path makes no syscall: a forked child opens the arena and touches
 * its keys, then locks itself under a seccomp filter that allows only write and exit, and makes
 * 100 000 decisions on a real-clock arena (the vDSO clock is not a syscall), half of them through
 * key handles (thr_key_try). Any syscall would kill it with SIGSYS. A negative control proves the
 * filter kills on a syscall.
 *
 * Skipped under sanitizers and valgrind, whose runtimes make syscalls of their own.
 * Also: a process whose getrandom() is refused still registers (it looped for ever).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define NKEYS  8
#define NTRIES 100000
#define RATE   1000 /* per second: T = 1 ms */
#define BURST  50

static struct tarena T;

static void setup(void)
{
        struct shm_limiter_spec s = tspec("s", RATE, SEC, BURST, BURST);
        tarena_make(&T, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, &s, 1);
}

static void teardown(void)
{
        tarena_free(&T);
}

TestSuite(seccomp, .init = setup, .fini = teardown, .timeout = 60);

static void skip_if_instrumented(void)
{
        if (tunder_instrumentation())
                cr_skip_test(
                    "sanitizer or valgrind runtime makes its own syscalls; the zero-syscall "
                    "check needs a plain build");
}

/* What the child reports through the pipe. STAGE says how far it got. */
struct report {
        int stage; /* 1 arena open, 2 keys touched, 3 filter loaded, 4 decisions done */
        int err;
        uint64_t t0, t1; /* arena clock before the first decision and after the last */
        uint64_t admitted[NKEYS];
        uint64_t touched_admitted;
        uint64_t denied, errors;
};

static void put(int fd, const struct report *r)
{
        if (write(fd, r, sizeof(*r)) != (ssize_t)sizeof(*r))
                _exit(5);
}

/* Allow write, exit and exit_group only; anything else kills the process with SIGSYS. */
static int lock_down(void)
{
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
        if (!ctx)
                return -ENOMEM;
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(write), 0);
        if (rc == 0)
                rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(exit_group), 0);
        if (rc == 0)
                rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(exit), 0);
        if (rc == 0)
                rc = seccomp_load(ctx);
        /* no seccomp_release: free() may trim the heap with a syscall; the child exits anyway */
        return rc;
}

static void hot_path_child(int fd)
{
        struct report r = {0};
        thr_arena *a;
        thr_limiter *l;
        char keys[NKEYS][8];
        size_t lens[NKEYS];
        struct thr_key kh[NKEYS];
        r.err = thr_arena_open(T.path, 0, &a);
        if (r.err == 0)
                r.err = thr_limiter_open(a, "s", &l);
        if (r.err < 0)
                goto out;
        r.stage = 1;
        thr_clock_now(a, &r.t0);
        for (int k = 0; k < NKEYS; k++) { /* insert the keys: this claims the reader record */
                lens[k] = (size_t)snprintf(keys[k], sizeof(keys[k]), "k%d", k);
                int rc = thr_limiter_try(l, keys[k], lens[k], 1, NULL);
                if (rc != 1) {
                        r.err = rc;
                        goto out;
                }
                r.touched_admitted++;
                r.err = thr_key_init(&kh[k], l, keys[k], lens[k]);
                if (r.err < 0)
                        goto out;
        }
        r.stage = 2;
        r.err = lock_down();
        if (r.err < 0)
                goto out;
        r.stage = 3;
        for (int i = 0; i < NTRIES; i++) {
                int k = i % NKEYS; /* every other try through the key's handle */
                int rc = (i / NKEYS) % 2 ? thr_key_try(&kh[k], 1, NULL)
                                         : thr_limiter_try(l, keys[k], lens[k], 1, NULL);
                if (rc == 1)
                        r.admitted[k]++;
                else if (rc == 0)
                        r.denied++;
                else
                        r.errors++;
        }
        thr_clock_now(a, &r.t1);
        r.stage = 4;
out:
        put(fd, &r);
        _exit(0); /* exit_group */
}

static void getpid_child(int fd)
{
        struct report r = {0};
        r.err = lock_down();
        r.stage = r.err < 0 ? 0 : 3;
        put(fd, &r);
        syscall(SYS_getpid); /* not allowed: SIGSYS */
        r.stage = 4;
        put(fd, &r);
        _exit(0);
}

/* Fork FN with a pipe; return its last report and its wait status. */
static int run_child(void (*fn)(int), struct report *out)
{
        int p[2];
        cr_assert_eq(pipe(p), 0);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                close(p[0]);
                fn(p[1]);
        }
        close(p[1]);
        struct report r;
        memset(out, 0, sizeof(*out));
        ssize_t n;
        while ((n = read(p[0], &r, sizeof(r))) == (ssize_t)sizeof(r))
                *out = r;
        close(p[0]);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        return st;
}

/* Run FN in a child: it must not die of SIGSYS (WHAT made a syscall) and must reach stage 4. */
static struct report no_syscall_child(void (*fn)(int), const char *what)
{
        skip_if_instrumented();
        struct report r;
        int st = run_child(fn, &r);
        cr_assert(!(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS),
                  "%s made a syscall: killed by SIGSYS at stage %d", what, r.stage);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x (stage %d)", st,
                  r.stage);
        cr_assert_eq(r.stage, 4, "child stopped at stage %d: %d (%s)", r.stage, r.err,
                     thr_strerror(r.err));
        return r;
}

Test(seccomp, hot_path_makes_no_syscall)
{
        struct report r = no_syscall_child(hot_path_child, "the hot path");
        cr_assert_eq(r.errors, 0, "decisions that failed");

        /* Consistent counts: every decision is an admission or a denial, and no key got more
         * than the bound B + floor(elapsed / T) (see test_multiproc.c for the derivation). */
        uint64_t admitted = 0, bound = BURST + (r.t1 - r.t0) * RATE / SEC;
        for (int k = 0; k < NKEYS; k++) {
                uint64_t got = r.admitted[k] + 1; /* + the admission that inserted it */
                cr_assert_leq(got, bound, "key %d: %lu admitted in %lu ns, bound %lu", k,
                              (unsigned long)got, (unsigned long)(r.t1 - r.t0),
                              (unsigned long)bound);
                admitted += r.admitted[k];
        }
        cr_assert_eq(r.touched_admitted, NKEYS);
        cr_assert_eq(admitted + r.denied, NTRIES, "admitted %lu + denied %lu",
                     (unsigned long)admitted, (unsigned long)r.denied);
}

Test(seccomp, filter_kills_a_syscall)
{
        skip_if_instrumented();
        struct report r;
        int st = run_child(getpid_child, &r);
        cr_assert_eq(r.stage, 3, "the filter was loaded (err %d)", r.err);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS,
                  "getpid under the filter must die by SIGSYS, status %#x", st);
}

/*
 * A process whose getrandom() is refused (a seccomp profile answering EPERM or ENOSYS) must still
 * register: the fork generation and the owner token come from another source. The child opened
 * nothing itself: its first call is its first registration, in a fresh fork generation.
 */
static int g_refuse_errno;

static void no_getrandom_child(int fd)
{
        struct report r = {0};
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx || seccomp_rule_add(ctx, SCMP_ACT_ERRNO(g_refuse_errno), SCMP_SYS(getrandom), 0) ||
            seccomp_load(ctx)) {
                r.err = -EPERM;
                put(fd, &r);
                _exit(0);
        }
        r.stage = 3;
        put(fd, &r);
        thr_limiter *l;
        r.err = thr_limiter_open(T.a, "s", &l);
        int rc = r.err < 0 ? r.err : thr_limiter_try(l, "gr", 2, 1, NULL);
        r.err = rc < 0 ? rc : 0;
        r.touched_admitted = rc == 1;
        r.stage = 4;
        put(fd, &r);
        _exit(0);
}

static void registers_without_getrandom(int err)
{
        g_refuse_errno = err;
        alarm(20); /* a registration that loops for ever fails the test instead of hanging it */
        struct report r;
        int st = run_child(no_getrandom_child, &r);
        alarm(0);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x (stage %d)", st,
                  r.stage);
        cr_assert_eq(r.stage, 4, "the first call never returned (stage %d, err %d)", r.stage,
                     r.err);
        cr_assert_eq(r.err, 0, "first call: %s", thr_strerror(r.err));
        cr_assert_eq(r.touched_admitted, 1);
}

Test(seccomp, registers_when_getrandom_is_refused_with_eperm, .timeout = 30)
{
        registers_without_getrandom(EPERM);
}

Test(seccomp, registers_when_getrandom_is_refused_with_enosys, .timeout = 30)
{
        registers_without_getrandom(ENOSYS);
}

/*
 * One thread going round 12 arenas (more than it used to cache: past 8 it gave a record back and
 * claimed it again, 5 syscalls a call) makes no syscall once it has used each of them.
 */
#define NARENAS 12

static void many_arenas_child(int fd)
{
        struct report r = {0};
        thr_arena *a[NARENAS];
        thr_limiter *l[NARENAS];
        for (int i = 0; i < NARENAS; i++) {
                r.err = thr_arena_open(T.path, 0, &a[i]);
                if (r.err == 0)
                        r.err = thr_limiter_open(a[i], "s", &l[i]);
                if (r.err == 0 && thr_limiter_try(l[i], "m", 1, 0, NULL) < 0)
                        r.err = -EIO;
                if (r.err < 0)
                        goto out;
        }
        r.stage = 2;
        r.err = lock_down();
        if (r.err < 0)
                goto out;
        r.stage = 3;
        for (int i = 0; i < NTRIES; i++) {
                int rc = thr_limiter_try(l[i % NARENAS], "m", 1, 0, NULL);
                if (rc < 0)
                        r.errors++;
        }
        r.stage = 4;
out:
        put(fd, &r);
        _exit(0);
}

Test(seccomp, a_thread_going_round_many_arenas_makes_no_syscall)
{
        struct report r = no_syscall_child(many_arenas_child, "switching arenas");
        cr_assert_eq(r.errors, 0);
}

/*
 * test_cancel.c - proves that pthread_cancel never leaves the library's process-wide state
 * locked: a thread cancelled during its first call (registration: open, close and getrandom are
 * cancellation points) ends, gives its record back, and the process can still register threads,
 * fork and exit; a thread cancelled while it sleeps in thr_limiter_acquire leaves no section open.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"

static struct tarena T;
static thr_limiter *L;

static void setup(void)
{
        struct shm_limiter_spec s = tspec("c", 1, SEC, 1, 1);
        tarena_make(&T, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, &s, 1);
        L = tlim(&T, "c");
}

static void teardown(void)
{
        thr_limiter_close(L);
        tarena_free(&T);
}

TestSuite(cancel, .init = setup, .fini = teardown, .timeout = 60);

/* A first call made with a cancellation pending: it acts at the first cancellation point. */
static void first_call(void *arg)
{
        (void)arg;
        thr_limiter_try(L, "first", 5, 1, NULL);
}

/* Join T within 5 s (a thread stuck on the registry lock never ends). */
static void join_within(pthread_t t, void **ret)
{
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 5;
        int rc = pthread_timedjoin_np(t, ret, &dl);
        cr_assert_eq(rc, 0, "the cancelled thread never ended: %s", strerror(rc));
}

static void *plain_call(void *arg)
{
        *(int *)arg = thr_limiter_try(L, "other", 5, 1, NULL);
        return NULL;
}

Test(cancel, cancelled_during_first_call_leaves_nothing_locked)
{
        pid_t tid = tcancel_first(first_call, NULL);
        cr_assert_null(treader_of_tid(&T, tid), "the cancelled thread kept its record");
        pthread_t t;

        /* Registration, fork and exit still work. */
        int rc = -1;
        cr_assert_eq(pthread_create(&t, NULL, plain_call, &rc), 0);
        join_within(t, NULL);
        cr_assert_eq(rc, 1, "another thread's first call: %d", rc);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0)
                exit(thr_limiter_try(L, "kid", 3, 1, NULL) == 1 ? 0 : 1);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
}

/* Sleeps in thr_limiter_acquire (a cancellation point) for a token 1 s away. */
static void *sleeper(void *arg)
{
        thr_limiter_try(L, "sleep", 5, 1, NULL); /* the one token */
        atomic_store((_Atomic int *)arg, 1);
        thr_limiter_acquire(L, "sleep", 5, 1, 10 * SEC, NULL);
        return NULL;
}

Test(cancel, cancelled_while_sleeping_in_acquire_leaves_no_section_open)
{
        if (tunder_instrumentation())
                cr_skip_test("ASan leaves the frames a cancellation unwinds poisoned (it handles "
                             "longjmp and C++ exceptions, not glibc's forced unwind): its report "
                             "here is about its own shadow, not the code");
        _Atomic int started = 0;
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, sleeper, (void *)&started), 0);
        while (!atomic_load(&started))
                sched_yield();
        usleep(20000); /* let it reach its sleep; if not yet there, it is cancelled at it */
        cr_assert_eq(pthread_cancel(t), 0);
        void *ret;
        join_within(t, &ret);
        cr_assert_eq(ret, PTHREAD_CANCELED);
        const struct thr_reader *r = shm_at(T.map.base, T.map.g.reader_off);
        for (uint32_t i = 0; i < T.map.g.reader_count; i++)
                cr_assert_eq(atomic_load(&r[i].online) != 0 && atomic_load(&r[i].owner) != 0, false,
                             "record %u left inside a section", i);
        uint64_t gp;
        struct shm_gp_result res;
        cr_assert_eq(shm_gp_start(&T.map, &gp), 0);
        cr_assert_eq(shm_gp_scan(&T.map, gp, 0, UINT64_MAX, &res, NULL, NULL), 0);
        cr_assert_eq(res.done, gp, "a grace period completes");
}

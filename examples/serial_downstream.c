/*
 * serial_downstream.c - processes that share one fragile downstream (a device, a legacy API that
 * breaks when called concurrently or more than N times per window) through a serialized window
 * limiter: each call to the downstream is made between thr_serial_begin and thr_serial_end, so
 * across every process of the host there is at most one call in flight, callers are served in
 * the order they asked, and at most N calls complete in any interval of W.
 *
 *   thr-serial-downstream [-a ARENA] [-l LIMITER] [-p PROCS] [-j JOBS] [-n N] [-w WINDOW_MS]
 *
 * It forks PROCS workers; each makes JOBS calls. The downstream here is a stand-in that notices
 * what a real fragile one would suffer from: a second caller inside it at the same time, and
 * completions closer than the window allows (N and WINDOW_MS must be the limiter's, as in
 * throttled.conf). Each worker records, in memory shared with the parent, the arena time just
 * before and just after its thr_serial_end (the completion is logged between the two). The parent
 * then checks that the (i + N)-th completion ended at least W after the i-th began ending, and
 * prints one line:
 *
 *   calls C overlaps O window_violations V timeouts T span_ms S
 *
 * and exits 0 only if every call was made, alone, within the window's limit.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* qsort_r; the build defines it, a program copied from here may not */
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <throttle/throttle.h>

#define MAX_CALLS 4096

struct opts {
        const char *arena, *limiter;
        unsigned procs, jobs;
        uint64_t n, window_ns;
};

/* What the workers share with the parent. */
struct shared {
        _Atomic int inside; /* callers inside the downstream right now */
        _Atomic unsigned overlaps, timeouts, errors;
        _Atomic unsigned calls;
        uint64_t before[MAX_CALLS], after[MAX_CALLS]; /* arena ns around each completion */
};

/* The fragile downstream: it must never see two callers at once. */
static void downstream_call(struct shared *sh)
{
        if (atomic_fetch_add(&sh->inside, 1) != 0)
                atomic_fetch_add(&sh->overlaps, 1);
        struct timespec work = {0, 200000}; /* 0.2 ms of "work" */
        nanosleep(&work, NULL);
        atomic_fetch_sub(&sh->inside, 1);
}

static int worker(const struct opts *o, struct shared *sh)
{
        thr_arena *a;
        thr_limiter *l;
        int rc = thr_arena_open(o->arena, 0, &a);
        if (rc == 0)
                rc = thr_limiter_open(a, o->limiter, &l);
        if (rc < 0) {
                fprintf(stderr, "thr-serial-downstream: %s: %s\n", o->arena, thr_strerror(rc));
                return 1;
        }
        for (unsigned j = 0; j < o->jobs; j++) {
                struct thr_hold h;
                rc = thr_serial_begin(l, "downstream", 10, 1, 30ull * 1000000000, &h);
                if (rc == -ETIMEDOUT) {
                        atomic_fetch_add(&sh->timeouts, 1);
                        continue;
                }
                if (rc < 0) {
                        fprintf(stderr, "thr-serial-downstream: begin: %s\n", thr_strerror(rc));
                        atomic_fetch_add(&sh->errors, 1);
                        break;
                }
                downstream_call(sh);
                unsigned i = atomic_fetch_add(&sh->calls, 1);
                uint64_t before = 0, after = 0;
                thr_clock_now(a, &before);
                rc = thr_serial_end(&h);
                thr_clock_now(a, &after);
                if (i < MAX_CALLS) {
                        sh->before[i] = before;
                        sh->after[i] = after;
                }
                if (rc < 0) {
                        fprintf(stderr, "thr-serial-downstream: end: %s\n", thr_strerror(rc));
                        atomic_fetch_add(&sh->errors, 1);
                }
        }
        thr_limiter_close(l);
        thr_arena_close(a);
        return 0;
}

static int by_before(const void *x, const void *y, void *ctx)
{
        const struct shared *sh = ctx;
        uint64_t a = sh->before[*(const unsigned *)x], b = sh->before[*(const unsigned *)y];
        return a < b ? -1 : a > b;
}

/* Completions are serialized, so their order is the order of BEFORE: the (i+N)-th may end no
 * sooner than W after the i-th (after[i+N] - before[i] >= W holds whenever the true completion
 * times are W apart). Returns the violations. */
static unsigned window_violations(const struct opts *o, struct shared *sh, unsigned calls)
{
        unsigned *ord = calloc(calls, sizeof(*ord)), bad = 0;
        if (!ord)
                return calls;
        for (unsigned i = 0; i < calls; i++)
                ord[i] = i;
        qsort_r(ord, calls, sizeof(*ord), by_before, sh);
        for (unsigned i = 0; i + o->n < calls; i++)
                bad += sh->after[ord[i + o->n]] - sh->before[ord[i]] < o->window_ns;
        free(ord);
        return bad;
}

static int parse(int argc, char **argv, struct opts *o)
{
        int c;
        while ((c = getopt(argc, argv, "a:l:p:j:n:w:")) != -1) {
                switch (c) {
                case 'a':
                        o->arena = optarg;
                        break;
                case 'l':
                        o->limiter = optarg;
                        break;
                case 'p':
                        o->procs = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'j':
                        o->jobs = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'n':
                        o->n = strtoull(optarg, NULL, 10);
                        break;
                case 'w':
                        o->window_ns = strtoull(optarg, NULL, 10) * 1000000;
                        break;
                default:
                        return -1;
                }
        }
        if (!o->procs || !o->jobs || !o->n || !o->window_ns || o->procs * o->jobs > MAX_CALLS)
                return -1;
        return 0;
}

int main(int argc, char **argv)
{
        struct opts o = {"main", "downstream", 4, 10, 5, 200000000};
        if (parse(argc, argv, &o) < 0) {
                fprintf(stderr, "usage: thr-serial-downstream [-a ARENA] [-l LIMITER] [-p PROCS] "
                                "[-j JOBS] [-n N] [-w WINDOW_MS]\n");
                return 2;
        }
        struct shared *sh =
            mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (sh == MAP_FAILED)
                return 1;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (unsigned p = 0; p < o.procs; p++) {
                pid_t pid = fork();
                if (pid < 0)
                        return 1;
                if (pid == 0)
                        _exit(worker(&o, sh));
        }
        int failed = 0, st;
        while (wait(&st) > 0)
                failed += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        unsigned calls = atomic_load(&sh->calls);
        unsigned bad = window_violations(&o, sh, calls < MAX_CALLS ? calls : MAX_CALLS);
        long span = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        printf("calls %u overlaps %u window_violations %u timeouts %u span_ms %ld\n", calls,
               atomic_load(&sh->overlaps), bad, atomic_load(&sh->timeouts), span);
        bool ok = !failed && calls == o.procs * o.jobs && !atomic_load(&sh->overlaps) && !bad &&
                  !atomic_load(&sh->errors);
        return ok ? 0 : 1;
}

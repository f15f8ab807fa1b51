/*
 * scale_wait.c - the waiting form of bench_scale (throttle only): W processes take places on one
 * key with thr_limiter_reserve and sleep until each is due exactly as thr_limiter_acquire does
 * (clock_nanosleep TIMER_ABSTIME on CLOCK_MONOTONIC at the arena's epoch + due), for a fixed time.
 * Reported: the admission rate achieved against the configured one, and the wake-up lateness
 * (arena time on waking minus the due time) of the places that had to wait.
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <throttle/throttle.h>

#include "scale.h"
#include "shm.h"

struct wslot_w {
        uint64_t admitted, immediate, errors;
        int failed;
        struct hist late;
} __attribute__((aligned(64)));

struct wctl {
        _Atomic int ready;
        _Atomic int go;
        uint64_t end_ns; /* arena time at which the run ends (written before go) */
        struct wslot_w w[];
};

static int wait_arena(const char *backing, double rate, char *path, size_t len, char *err)
{
        struct shm_limiter_spec l = {.name = "wait",
                                     .rate_n = (uint64_t)rate,
                                     .period_ns = 1000000000ull,
                                     .burst = 1,
                                     .initial = 1,
                                     .max_reserve_ns = 1000000000ull,
                                     .capacity = 16};
        struct shm_arena_spec spec = {.hugepages =
                                          strcmp(backing, "shm") ? SHM_HUGE_AUTO : SHM_HUGE_OFF,
                                      .mode = 0600,
                                      .gid = (gid_t)-1,
                                      .clock = THR_CLOCK_MONOTONIC,
                                      .max_limiters = 2,
                                      .max_readers = 256,
                                      .nlimiters = 1,
                                      .limiters = &l};
        struct shm_map m = {0};
        snprintf(spec.name, sizeof(spec.name), "bench-scale-wait.%ld", (long)getpid());
        int rc = shm_arena_create(&spec, &m, err, 160);
        if (rc < 0)
                return rc;
        snprintf(path, len, "%s", m.path);
        shm_arena_detach(&m);
        return 0;
}

static void sleep_due(int64_t epoch, uint64_t due)
{
        int64_t abs = epoch + (int64_t)due;
        struct timespec ts = {abs / 1000000000, abs % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
}

static void wait_loop(thr_arena *a, thr_limiter *lim, int64_t epoch, struct wctl *c,
                      struct wslot_w *w)
{
        struct thr_reservation rv;
        uint64_t now = 0;
        atomic_fetch_add(&c->ready, 1);
        while (!atomic_load_explicit(&c->go, memory_order_acquire))
                sched_yield();
        for (thr_clock_now(a, &now); now < c->end_ns; thr_clock_now(a, &now)) {
                if (thr_limiter_reserve(lim, "wait", 4, 1, 1000000000ull, &rv) < 0) {
                        w->errors++;
                        continue;
                }
                if (rv.due_ns > c->end_ns)
                        break; /* due after the run: not counted */
                if (rv.wait_ns == 0) {
                        w->immediate++;
                        w->admitted++;
                        continue;
                }
                sleep_due(epoch, rv.due_ns);
                thr_clock_now(a, &now);
                hist_add(&w->late, now > rv.due_ns ? now - rv.due_ns : 0);
                w->admitted++;
        }
}

static void wait_worker(const char *path, struct wctl *c, int wi, int pin)
{
        struct shm_map m = {0};
        char err[256];
        thr_arena *a = NULL;
        thr_limiter *lim = NULL;
        if (pin) {
                cpu_set_t set;
                CPU_ZERO(&set);
                CPU_SET(wi % (int)sysconf(_SC_NPROCESSORS_ONLN), &set);
                sched_setaffinity(0, sizeof(set), &set);
        }
        int ok = shm_arena_attach(path, false, &m, err, sizeof(err)) == 0 &&
                 thr_arena_open(path, 0, &a) == 0 && thr_limiter_open(a, "wait", &lim) == 0;
        c->w[wi].failed = !ok;
        if (ok)
                wait_loop(a, lim, shm_hdr(&m)->epoch_ns, c, &c->w[wi]);
        else
                atomic_fetch_add(&c->ready, 1);
        _exit(0);
}

static void wait_collect(const struct wctl *c, int procs, struct wait_result *out)
{
        struct hist *m = calloc(1, sizeof(*m));
        for (int i = 0; i < procs; i++) {
                out->admitted += c->w[i].admitted;
                out->errors += c->w[i].errors;
                out->ok &= !c->w[i].failed;
                if (m)
                        hist_merge(m, &c->w[i].late);
        }
        out->rate_got = (double)out->admitted / out->secs;
        if (m) {
                out->p50 = hist_quantile(m, 0.5);
                out->p99 = hist_quantile(m, 0.99);
                out->pmax = hist_max(m);
                snprintf(out->note, sizeof(out->note),
                         "%" PRIu64 " waits timed, %" PRIu64 " errors", hist_count(m), out->errors);
        }
        free(m);
}

/* Parent: start the workers together, let them run SECS of arena time, collect. */
static int wait_drive(const char *path, int procs, double secs, int pin, struct wctl *c)
{
        struct shm_map m = {0};
        char err[256];
        pid_t pids[256];
        int n = 0;
        if (shm_arena_attach(path, false, &m, err, sizeof(err)) < 0)
                return -EIO;
        fflush(NULL);
        for (; n < procs; n++) {
                if ((pids[n] = fork()) == 0)
                        wait_worker(path, c, n, pin);
                if (pids[n] < 0)
                        break;
        }
        while (atomic_load(&c->ready) < n)
                usleep(200);
        c->end_ns = shm_now_ns(shm_hdr(&m)) + (uint64_t)(secs * 1e9);
        atomic_store_explicit(&c->go, 1, memory_order_release);
        for (int i = 0; i < n; i++)
                waitpid(pids[i], NULL, 0);
        shm_arena_detach(&m);
        return n == procs ? 0 : -EAGAIN;
}

void bench_throttle_wait(const char *backing, int procs, double rate, double secs, int pin,
                         struct wait_result *out)
{
        char path[256];
        size_t sz = sizeof(struct wctl) + (size_t)procs * sizeof(struct wslot_w);
        *out = (struct wait_result){.procs = procs, .ok = 1, .rate_cfg = rate, .secs = secs};
        if (wait_arena(backing, rate, path, sizeof(path), out->note) < 0) {
                out->ok = 0;
                return;
        }
        struct wctl *c = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (c == MAP_FAILED || wait_drive(path, procs, secs, pin, c) < 0) {
                snprintf(out->note, sizeof(out->note), "run failed");
                out->ok = 0;
        } else {
                wait_collect(c, procs, out);
        }
        if (c != MAP_FAILED)
                munmap(c, sz);
        unlink(path);
}

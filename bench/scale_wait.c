/*
 * scale_wait.c - the waiting form of bench_scale (throttle only): W processes call
 * thr_limiter_acquire, the blocking form users call, on one key of a limiter of RATE per second,
 * burst 1, for a fixed time, each noting the arena time at which every call returned and whether
 * it slept (a voluntary context switch during the call, from getrusage).
 *
 * What acquire returns does not say when its place was due (with burst 1, reset_after is always
 * T), so due times are reconstructed from the schedule GCRA follows. Before the workers start,
 * the parent takes the key's first place itself with thr_limiter_reserve: it is due at once, at
 * D0, and leaves the key's TAT at D0 + T. While someone is always queued, each new place is due
 * T after the one before; when the queue has run dry (every waiter woke after the TAT), a place
 * is due at once, at the time it is taken, and the chain starts again from there. The workers'
 * returns, sorted in time order, are matched with the places in order:
 *   schedule lateness  the k-th return minus D0 + k*T (rounded up to a whole ns, as the library
 *                      rounds due times): never negative (each return comes at or after its own
 *                      place, and the k earliest places are due at D0 + k*T or later); it holds
 *                      the wake-up delay plus every slot lost for good when the queue ran dry;
 *   wake-up lateness   the k-th return minus its own place's due time: T after the place before,
 *                      or, for a call that did not sleep (the queue had run dry, or the place fell
 *                      due before the sleep began), the return itself, counted as 0. This is the
 *                      clock_nanosleep(TIMER_ABSTIME) wake-up, the scheduler and the return path.
 *
 * Each acquire is given as timeout the time left until the end of the run, so a place due after
 * the end is refused (-ETIMEDOUT, nothing consumed) and that worker stops: every counted admission
 * lies inside the run. Reported: admissions per second over the run (D0 to the end) against the
 * configured rate, and the lateness p50/p99/max.
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <throttle/throttle.h>

#include "scale.h"
#include "shm.h"

#define WAIT_KEY     "wait"
#define WAIT_KEY_LEN 4u

struct wslot_w {
        uint64_t admitted, timeouts, errors;
        int failed;
} __attribute__((aligned(64)));

/* One shared anonymous mapping: this, then w[procs], then ret[cap]. */
struct wctl {
        _Atomic int ready;
        _Atomic int go;
        uint64_t end_ns;       /* arena time at which the run ends (written before go) */
        _Atomic uint64_t nret; /* returns noted so far (ret[] holds the first cap of them) */
        uint64_t cap;
        uint64_t *ret; /* arena time of every return, bit 0 set if the call slept */
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

/* Open the arena and the limiter through the public API. 0 or -errno. */
static int wait_open(const char *path, thr_arena **a, thr_limiter **lim)
{
        *a = NULL;
        *lim = NULL;
        int rc = thr_arena_open(path, 0, a);
        if (rc == 0)
                rc = thr_limiter_open(*a, "wait", lim);
        if (rc < 0 && *a) {
                thr_arena_close(*a);
                *a = NULL;
        }
        return rc;
}

static void wait_close(thr_arena *a, thr_limiter *lim)
{
        if (lim)
                thr_limiter_close(lim);
        if (a)
                thr_arena_close(a);
}

static void wait_loop(thr_arena *a, thr_limiter *lim, struct wctl *c, struct wslot_w *w)
{
        uint64_t now = 0;
        atomic_fetch_add(&c->ready, 1);
        while (!atomic_load_explicit(&c->go, memory_order_acquire))
                sched_yield();
        for (thr_clock_now(a, &now); now < c->end_ns;) {
                struct rusage ru;
                getrusage(RUSAGE_SELF, &ru);
                long vcsw = ru.ru_nvcsw;
                int rc = thr_limiter_acquire(lim, WAIT_KEY, WAIT_KEY_LEN, 1, c->end_ns - now, NULL);
                if (rc == -ETIMEDOUT) { /* its place would be due after the run */
                        w->timeouts++;
                        break;
                }
                if (rc < 0) {
                        w->errors++;
                        break;
                }
                thr_clock_now(a, &now);
                getrusage(RUSAGE_SELF, &ru);
                uint64_t i = atomic_fetch_add_explicit(&c->nret, 1, memory_order_relaxed);
                if (i < c->cap)
                        c->ret[i] = (now & ~1ull) | (ru.ru_nvcsw != vcsw);
                w->admitted++;
        }
}

static void wait_worker(const char *path, struct wctl *c, int wi, int pin)
{
        thr_arena *a;
        thr_limiter *lim;
        if (pin) {
                cpu_set_t set;
                CPU_ZERO(&set);
                CPU_SET(wi % (int)sysconf(_SC_NPROCESSORS_ONLN), &set);
                sched_setaffinity(0, sizeof(set), &set);
        }
        int ok = wait_open(path, &a, &lim) == 0;
        c->w[wi].failed = !ok;
        if (ok)
                wait_loop(a, lim, c, &c->w[wi]);
        else
                atomic_fetch_add(&c->ready, 1);
        wait_close(a, lim);
        _exit(0);
}

static int cmp_u64(const void *x, const void *y)
{
        uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
        return (a > b) - (a < b);
}

/* The ideal schedule's k-th place after D0: D0 + k*T, T = 1e9 / RATE_N ns, rounded up. */
static uint64_t slot_ns(uint64_t d0, uint64_t k, uint64_t rate_n)
{
        return d0 + (k * 1000000000ull + rate_n - 1) / rate_n;
}

static void lateness(struct hist *h, uint64_t ret, uint64_t due)
{
        hist_add(h, ret > due ? ret - due : 0);
}

/* Both lateness histograms from the sorted returns RET[0..N). Returns the calls that slept. */
static uint64_t wait_match(const uint64_t *ret, uint64_t n, uint64_t d0, uint64_t rate_n,
                           struct hist *sched, struct hist *wake)
{
        uint64_t anchor = d0, j = 0, slept = 0;
        for (uint64_t k = 1; k <= n; k++) {
                uint64_t r = ret[k - 1] & ~1ull;
                lateness(sched, r, slot_ns(d0, k, rate_n));
                if (!(ret[k - 1] & 1)) { /* due at once: the chain starts again here */
                        anchor = r;
                        j = 0;
                        lateness(wake, r, r);
                        continue;
                }
                slept++;
                lateness(wake, r, slot_ns(anchor, ++j, rate_n));
        }
        return slept;
}

static void wait_collect(struct wctl *c, int procs, uint64_t d0, struct wait_result *out)
{
        struct hist *m = calloc(2, sizeof(*m));
        uint64_t rate_n = (uint64_t)out->rate_cfg;
        uint64_t n = atomic_load(&c->nret);
        for (int i = 0; i < procs; i++) {
                out->admitted += c->w[i].admitted;
                out->timeouts += c->w[i].timeouts;
                out->errors += c->w[i].errors;
                out->ok &= !c->w[i].failed;
        }
        out->ideal = (c->end_ns - d0) * rate_n / 1000000000ull;
        out->rate_got = (double)out->admitted / out->secs;
        n = n < c->cap ? n : c->cap;
        qsort(c->ret, n, sizeof(*c->ret), cmp_u64);
        if (m) {
                out->dry = n - wait_match(c->ret, n, d0, rate_n, &m[0], &m[1]);
                out->sp50 = hist_quantile(&m[0], 0.5);
                out->sp99 = hist_quantile(&m[0], 0.99);
                out->spmax = hist_max(&m[0]);
                out->p50 = hist_quantile(&m[1], 0.5);
                out->p99 = hist_quantile(&m[1], 0.99);
                out->pmax = hist_max(&m[1]);
        }
        snprintf(out->note, sizeof(out->note),
                 "%" PRIu64 " of %" PRIu64 " slots, %" PRIu64 " without sleeping, %" PRIu64
                 " timeouts, %" PRIu64 " errors",
                 out->admitted, out->ideal, out->dry, out->timeouts, out->errors);
        free(m);
}

/* The parent's first place: due at once, at D0; the key's TAT is then D0 + T. */
static int first_place(thr_limiter *lim, uint64_t *d0)
{
        struct thr_reservation rv;
        int rc = thr_limiter_reserve(lim, WAIT_KEY, WAIT_KEY_LEN, 1, 0, &rv);
        if (rc < 0)
                return rc;
        *d0 = rv.due_ns;
        return rv.wait_ns == 0 ? 0 : -EBUSY; /* a fresh key: always due at once */
}

/* Parent: fork the workers, take the first place, release them, wait for them. */
static int wait_drive(const char *path, int procs, double secs, int pin, struct wctl *c,
                      uint64_t *d0)
{
        thr_arena *a;
        thr_limiter *lim;
        pid_t pids[256];
        int n = 0;
        int rc = wait_open(path, &a, &lim);
        if (rc < 0)
                return rc;
        fflush(NULL);
        for (; n < procs; n++) {
                if ((pids[n] = fork()) == 0)
                        wait_worker(path, c, n, pin);
                if (pids[n] < 0)
                        break;
        }
        while (atomic_load(&c->ready) < n)
                usleep(200);
        rc = first_place(lim, d0);
        c->end_ns = *d0 + (uint64_t)(secs * 1e9);
        if (rc < 0)
                c->end_ns = 0; /* the workers stop at once */
        atomic_store_explicit(&c->go, 1, memory_order_release);
        for (int i = 0; i < n; i++)
                waitpid(pids[i], NULL, 0);
        wait_close(a, lim);
        return rc < 0 ? rc : n == procs ? 0 : -EAGAIN;
}

void bench_throttle_wait(const char *backing, int procs, double rate, double secs, int pin,
                         struct wait_result *out)
{
        char path[256];
        uint64_t cap = (uint64_t)(rate * secs) + (uint64_t)procs + 16, d0 = 0;
        size_t sz = sizeof(struct wctl) + (size_t)procs * sizeof(struct wslot_w) + cap * 8;
        *out = (struct wait_result){.procs = procs, .ok = 1, .rate_cfg = rate, .secs = secs};
        if (wait_arena(backing, rate, path, sizeof(path), out->note) < 0) {
                out->ok = 0;
                return;
        }
        struct wctl *c = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (c != MAP_FAILED) {
                c->cap = cap;
                c->ret = (uint64_t *)(c->w + procs);
        }
        int rc = c == MAP_FAILED ? -ENOMEM : wait_drive(path, procs, secs, pin, c, &d0);
        if (rc < 0) {
                snprintf(out->note, sizeof(out->note), "run failed: %s", strerror(-rc));
                out->ok = 0;
        } else {
                wait_collect(c, procs, d0, out);
        }
        if (c != MAP_FAILED)
                munmap(c, sz);
        unlink(path);
}

/*
 * breaker_pool.c - worker processes calling one flaky downstream through one circuit breaker
 * shared by all of them (throttle-net's breaker, host-wide): when the downstream goes down, the
 * breaker trips once for every process, the workers fail fast instead of each learning alone,
 * one probe at a time (across the host) finds out when it is back, and it closes for all.
 *
 *   thr-breaker-pool [-a ARENA] [-l LIMITER] [-p PROCS] [-s SECONDS] [--no-share]
 *
 * LIMITER (default "downstream") is a breaker (kind = breaker, throttled.conf(5)); its failures,
 * probes and cooldown are read with thr_limiter_info. The downstream is a stand-in in memory
 * shared by the processes: a call takes 200 us and fails one time in 50, except during an outage
 * (from 30% to 60% of the run) when every call fails after 2 ms (a timeout). A worker asks the
 * breaker before each call (thr_breaker_allow), reports the outcome (thr_breaker_report), and
 * when refused does its fallback (sleeps up to 2 ms) and asks again.
 *
 * With --no-share each worker uses a key of its own: each trips alone. It prints one line:
 *
 *   calls C failed F refused R outage_calls O outage_bound B recovered_ms M
 *
 * outage_calls: the calls that reached the downstream during the outage; outage_bound: what a
 * breaker shared by every worker allows at most, failures + procs (calls already in flight when
 * it trips) + probes x (outage / cooldown + 1) (one round of probes per cooldown); recovered_ms:
 * from the end of the outage to the first successful call. Unless --no-share, it exits 0 only if
 * outage_calls <= outage_bound and the breaker recovered within cooldown + 500 ms.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
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

struct opts {
        const char *arena, *limiter;
        unsigned procs, seconds;
        bool share;
};

/* The stand-in downstream's schedule and the tallies, shared by every process. */
struct shared {
        uint64_t start, out_from, out_to; /* arena ns */
        _Atomic uint64_t calls, failed, refused, outage_calls;
        _Atomic uint64_t first_ok_after; /* arena ns of the first success after the outage */
};

static void sleep_ns(uint64_t ns)
{
        struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
                ;
}

static uint64_t now_of(thr_arena *a)
{
        uint64_t t = 0;
        thr_clock_now(a, &t);
        return t;
}

/* One call to the downstream, started at T0: whether it succeeded. */
static bool downstream(struct shared *sh, thr_arena *a, uint64_t t0, uint64_t *seed)
{
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        atomic_fetch_add(&sh->calls, 1);
        bool down = t0 >= sh->out_from && t0 < sh->out_to;
        if (down) {
                atomic_fetch_add(&sh->outage_calls, 1);
                sleep_ns(2000000); /* a timeout */
                return false;
        }
        sleep_ns(200000);
        if (*seed % 50 == 0)
                return false;
        if (t0 >= sh->out_to) {
                uint64_t none = 0, t = now_of(a);
                atomic_compare_exchange_strong(&sh->first_ok_after, &none, t);
        }
        return true;
}

static int worker(struct shared *sh, const struct opts *o, unsigned id, uint64_t end)
{
        thr_arena *a;
        thr_limiter *l;
        int rc = thr_arena_open(o->arena, 0, &a);
        if (rc == 0)
                rc = thr_limiter_open(a, o->limiter, &l);
        if (rc < 0) {
                fprintf(stderr, "thr-breaker-pool: %s: %s\n", o->arena, thr_strerror(rc));
                return 2;
        }
        char key[64];
        snprintf(key, sizeof(key), o->share ? "db.internal" : "db.internal/%u", id);
        uint64_t seed = 0x9E3779B97F4A7C15ull * (id + 1);
        for (uint64_t now = now_of(a); now < end; now = now_of(a)) {
                struct thr_breaker_ticket t;
                struct thr_breaker_status st;
                rc = thr_breaker_allow(l, key, strlen(key), &t, &st);
                if (rc == -EAGAIN) { /* open: fail fast, the fallback, ask again */
                        atomic_fetch_add(&sh->refused, 1);
                        sleep_ns(st.retry_after_ns < 2000000 ? st.retry_after_ns + 1 : 2000000);
                        continue;
                }
                if (rc < 0) {
                        fprintf(stderr, "thr-breaker-pool: allow: %s\n", thr_strerror(rc));
                        return 2;
                }
                bool ok = downstream(sh, a, now, &seed);
                if (!ok)
                        atomic_fetch_add(&sh->failed, 1);
                rc = thr_breaker_report(l, &t, ok ? THR_OUTCOME_SUCCESS : THR_OUTCOME_FAILURE);
                if (rc < 0) {
                        fprintf(stderr, "thr-breaker-pool: report: %s\n", thr_strerror(rc));
                        return 2;
                }
        }
        thr_limiter_close(l);
        thr_arena_close(a);
        return 0;
}

static int usage(void)
{
        fprintf(stderr, "usage: thr-breaker-pool [-a ARENA] [-l LIMITER] [-p PROCS] [-s SECONDS] "
                        "[--no-share]\n");
        return 2;
}

int main(int argc, char **argv)
{
        struct opts o = {
            .arena = "throttle", .limiter = "downstream", .procs = 4, .seconds = 2, .share = true};
        for (int i = 1; i < argc; i++) {
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!strcmp(argv[i], "--no-share")) {
                        o.share = false;
                        continue;
                }
                if (!v)
                        return usage();
                if (!strcmp(argv[i], "-a"))
                        o.arena = v;
                else if (!strcmp(argv[i], "-l"))
                        o.limiter = v;
                else if (!strcmp(argv[i], "-p"))
                        o.procs = (unsigned)strtoul(v, NULL, 10);
                else if (!strcmp(argv[i], "-s"))
                        o.seconds = (unsigned)strtoul(v, NULL, 10);
                else
                        return usage();
                i++;
        }
        if (o.procs == 0 || o.procs > 256 || o.seconds == 0 || o.seconds > 3600)
                return usage();
        thr_arena *a;
        thr_limiter *l;
        struct thr_limiter_info in;
        int rc = thr_arena_open(o.arena, 0, &a);
        if (rc == 0)
                rc = thr_limiter_open(a, o.limiter, &l);
        if (rc == 0)
                rc = thr_limiter_info(l, &in);
        if (rc == 0 && in.kind != THR_LIMITER_BREAKER)
                rc = -EOPNOTSUPP;
        if (rc < 0) {
                fprintf(stderr, "thr-breaker-pool: %s/%s: %s\n", o.arena, o.limiter,
                        thr_strerror(rc));
                return 2;
        }
        uint64_t failures = in.rate ? in.rate : 1, probes = in.leases, cooldown = in.reserved[0];
        thr_limiter_close(l); /* the workers open their own */
        struct shared *sh =
            mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (sh == MAP_FAILED)
                return 2;
        uint64_t run = (uint64_t)o.seconds * 1000000000u;
        sh->start = now_of(a);
        sh->out_from = sh->start + run * 3 / 10;
        sh->out_to = sh->start + run * 6 / 10;
        uint64_t end = sh->start + run;
        pid_t kids[256];
        for (unsigned i = 0; i < o.procs; i++) {
                kids[i] = fork();
                if (kids[i] == 0)
                        _exit(worker(sh, &o, i, end));
        }
        int bad = 0;
        for (unsigned i = 0; i < o.procs; i++) {
                int st;
                if (kids[i] < 0 || waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st) ||
                    WEXITSTATUS(st) != 0)
                        bad = 1;
        }
        uint64_t outage = sh->out_to - sh->out_from;
        uint64_t bound = failures + o.procs + probes * (outage / (cooldown ? cooldown : 1) + 1);
        uint64_t first = atomic_load(&sh->first_ok_after);
        uint64_t rec_ms = first ? (first - sh->out_to) / 1000000 : UINT64_MAX;
        printf("calls %" PRIu64 " failed %" PRIu64 " refused %" PRIu64 " outage_calls %" PRIu64
               " outage_bound %" PRIu64 " recovered_ms %" PRId64 "\n",
               atomic_load(&sh->calls), atomic_load(&sh->failed), atomic_load(&sh->refused),
               atomic_load(&sh->outage_calls), bound, first ? (int64_t)rec_ms : (int64_t)-1);
        fflush(stdout);
        thr_arena_close(a);
        if (bad)
                return 2;
        if (o.share &&
            (atomic_load(&sh->outage_calls) > bound || !first || rec_ms > cooldown / 1000000 + 500))
                return 1;
        return 0;
}

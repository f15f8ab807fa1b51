/*
 * api_pool.c - worker processes calling one rate-limited API (throttle-net's outbound case) and
 * honouring what it answers host-wide: one worker told "429, nothing left until the window
 * resets" holds the shared key, and every other worker waits too instead of being refused in
 * turn; failed calls are retried with capped exponential backoff and full jitter, each retry
 * paid from a retry budget shared by every process (a GCRA limiter), so the pool cannot
 * retry-storm the API.
 *
 *   thr-api-pool [-a ARENA] [-l LIMITER] [-r RETRY_LIMITER] [-p PROCS] [-s SECONDS]
 *                [-q QUOTA] [-w WINDOW_MS] [--no-share]
 *
 * LIMITER (default "api") is a GCRA limiter deliberately faster than the API allows; the key is
 * the API's host. RETRY_LIMITER (default "retries") is a GCRA limiter: its rate and burst are
 * the pool's retries. The API is a stand-in in memory shared by the processes: a fixed window of
 * WINDOW_MS (default 250) admitting QUOTA calls (default 20), answering 429 past it with
 * `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset: <ms>ms`, `X-RateLimit-Remaining: N` on
 * success, and a 503 on one call in 20. Each worker reads every header with thr_feedback_header
 * and applies the reading with thr_feedback_apply.
 *
 * With --no-share each worker uses a key of its own: what one is told, the others do not learn
 * (the comparison the output makes plain). It prints one line:
 *
 *   calls C ok K http429 R http503 E windows W max429_per_window M retries T retry_refused F
 *     retry_bound B
 *
 * and, unless --no-share, exits 0 only if no window saw more 429s than there are workers (a
 * worker whose call was admitted before the hold landed may still be told 429 once; none is
 * admitted after it until the reset) and the retries stayed within the retry limiter's bound
 * (its burst plus its rate times the run's length).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
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

#define MAX_WINDOWS 4096
#define ATTEMPTS    4 /* a call and up to three retries */

struct opts {
        const char *arena, *limiter, *retries;
        unsigned procs, seconds;
        uint64_t quota, window_ns;
        bool share;
};

/* The stand-in API and the tallies, in memory shared by every process. */
struct shared {
        pthread_mutex_t lock; /* process-shared: the API's own state */
        uint64_t w0;          /* the first window of the run */
        uint64_t window;      /* the window the count is of */
        uint64_t used;        /* calls admitted in it */
        uint64_t calls;       /* calls made to the API */
        _Atomic uint64_t ok, h429, h503, retries, refused;
        _Atomic uint32_t per_window429[MAX_WINDOWS];
};

struct response {
        int status;
        char headers[2][2][48]; /* up to two name/value pairs */
        int nheaders;
};

static void add_header(struct response *r, const char *name, const char *fmt, uint64_t v)
{
        snprintf(r->headers[r->nheaders][0], sizeof(r->headers[0][0]), "%s", name);
        snprintf(r->headers[r->nheaders][1], sizeof(r->headers[0][1]), fmt, v);
        r->nheaders++;
}

/* The API: QUOTA calls per fixed window; 429 past it; a 503 on one call in 20. */
static struct response api_call(struct shared *sh, const struct opts *o, uint64_t now)
{
        struct response r = {0};
        uint64_t w = now / o->window_ns;
        pthread_mutex_lock(&sh->lock);
        if (w != sh->window) {
                sh->window = w;
                sh->used = 0;
        }
        sh->calls++;
        bool fail = sh->calls % 20 == 7;
        bool over = sh->used >= o->quota;
        if (!over && !fail)
                sh->used++;
        uint64_t left = o->quota - sh->used;
        pthread_mutex_unlock(&sh->lock);
        uint64_t reset_ms = ((w + 1) * o->window_ns - now + 999999) / 1000000; /* never early */
        if (over) {
                r.status = 429;
                add_header(&r, "X-RateLimit-Remaining", "%" PRIu64, 0);
                add_header(&r, "X-RateLimit-Reset", "%" PRIu64 "ms", reset_ms);
                if (w - sh->w0 < MAX_WINDOWS)
                        atomic_fetch_add(&sh->per_window429[w - sh->w0], 1);
                atomic_fetch_add(&sh->h429, 1);
        } else if (fail) {
                r.status = 503;
                atomic_fetch_add(&sh->h503, 1);
        } else {
                r.status = 200;
                add_header(&r, "X-RateLimit-Remaining", "%" PRIu64, left);
                atomic_fetch_add(&sh->ok, 1);
        }
        return r;
}

static void sleep_ns(uint64_t ns)
{
        struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
                ;
}

/* Wait until the shared key admits one call (denied: sleep what it says, then ask again). */
static int admit(thr_limiter *l, const char *key, uint64_t deadline, thr_arena *a)
{
        for (;;) {
                struct thr_result res;
                int rc = thr_limiter_try(l, key, strlen(key), 1, &res);
                if (rc != 0)
                        return rc;
                uint64_t now;
                thr_clock_now(a, &now);
                if (now >= deadline)
                        return -ETIMEDOUT;
                sleep_ns(res.retry_after_ns);
        }
}

static uint64_t xorshift(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

static int worker(struct shared *sh, const struct opts *o, unsigned id, uint64_t end)
{
        thr_arena *a;
        thr_limiter *l, *rl;
        int rc = thr_arena_open(o->arena, 0, &a);
        if (rc == 0)
                rc = thr_limiter_open(a, o->limiter, &l);
        if (rc == 0)
                rc = thr_limiter_open(a, o->retries, &rl);
        if (rc < 0) {
                fprintf(stderr, "thr-api-pool: %s: %s\n", o->arena, thr_strerror(rc));
                return 2;
        }
        char key[64];
        if (o->share)
                snprintf(key, sizeof(key), "api.example.com");
        else
                snprintf(key, sizeof(key), "api.example.com/%u", id);
        const struct thr_backoff bo = {.kind = THR_BACKOFF_EXPONENTIAL,
                                       .jitter = THR_JITTER_FULL,
                                       .base_ns = 2000000,
                                       .cap_ns = 50000000};
        uint64_t seed = 0x9E3779B97F4A7C15ull * (id + 1);
        for (;;) {
                uint64_t prev = 0;
                for (uint32_t attempt = 0; attempt < ATTEMPTS; attempt++) {
                        if (attempt > 0) { /* a retry: paid from the pool's budget, or dropped */
                                if (thr_limiter_try(rl, "api.example.com", 15, 1, NULL) != 1) {
                                        atomic_fetch_add(&sh->refused, 1);
                                        break;
                                }
                                atomic_fetch_add(&sh->retries, 1);
                                uint64_t d;
                                thr_backoff_delay(&bo, attempt - 1, prev, xorshift(&seed), &d);
                                prev = d;
                                sleep_ns(d);
                        }
                        rc = admit(l, key, end, a);
                        if (rc == -ETIMEDOUT)
                                goto done;
                        if (rc < 0) {
                                fprintf(stderr, "thr-api-pool: try: %s\n", thr_strerror(rc));
                                return 2;
                        }
                        uint64_t now;
                        thr_clock_now(a, &now);
                        struct response r = api_call(sh, o, now);
                        struct thr_feedback fb;
                        thr_feedback_init(&fb);
                        for (int h = 0; h < r.nheaders; h++)
                                thr_feedback_header(&fb, r.headers[h][0], strlen(r.headers[h][0]),
                                                    r.headers[h][1], strlen(r.headers[h][1]), 0);
                        rc = thr_feedback_apply(l, key, strlen(key), &fb, 0, NULL);
                        if (rc < 0) {
                                fprintf(stderr, "thr-api-pool: apply: %s\n", thr_strerror(rc));
                                return 2;
                        }
                        if (r.status == 200)
                                break;
                }
        }
done:
        thr_limiter_close(rl);
        thr_limiter_close(l);
        thr_arena_close(a);
        return 0;
}

static int usage(void)
{
        fprintf(stderr, "usage: thr-api-pool [-a ARENA] [-l LIMITER] [-r RETRY_LIMITER] "
                        "[-p PROCS] [-s SECONDS] [-q QUOTA] [-w WINDOW_MS] [--no-share]\n");
        return 64;
}

int main(int argc, char **argv)
{
        struct opts o = {.arena = "default",
                         .limiter = "api",
                         .retries = "retries",
                         .procs = 4,
                         .seconds = 3,
                         .quota = 20,
                         .window_ns = 250000000,
                         .share = true};
        for (int i = 1; i < argc; i++) {
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!strcmp(argv[i], "--no-share")) {
                        o.share = false;
                        continue;
                }
                if (!v || argv[i][0] != '-' || strlen(argv[i]) != 2)
                        return usage();
                switch (argv[i][1]) {
                case 'a':
                        o.arena = v;
                        break;
                case 'l':
                        o.limiter = v;
                        break;
                case 'r':
                        o.retries = v;
                        break;
                case 'p':
                        o.procs = (unsigned)strtoul(v, NULL, 10);
                        break;
                case 's':
                        o.seconds = (unsigned)strtoul(v, NULL, 10);
                        break;
                case 'q':
                        o.quota = strtoull(v, NULL, 10);
                        break;
                case 'w':
                        o.window_ns = strtoull(v, NULL, 10) * 1000000;
                        break;
                default:
                        return usage();
                }
                i++;
        }
        if (o.procs < 1 || o.procs > 64 || o.seconds < 1 || o.quota < 1 || o.window_ns < 1000000)
                return usage();
        /* the retry limiter's own numbers: its bound is checked against them */
        thr_arena *a;
        thr_limiter *rl;
        struct thr_limiter_info ri;
        int rc = thr_arena_open(o.arena, 0, &a);
        if (rc == 0)
                rc = thr_limiter_open(a, o.retries, &rl);
        if (rc == 0)
                rc = thr_limiter_info(rl, &ri);
        if (rc == 0 && ri.kind != THR_LIMITER_GCRA)
                rc = -EOPNOTSUPP;
        if (rc < 0) {
                fprintf(stderr, "thr-api-pool: %s/%s: %s\n", o.arena, o.retries, thr_strerror(rc));
                return 2;
        }
        struct shared *sh =
            mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (sh == MAP_FAILED)
                return 2;
        pthread_mutexattr_t ma;
        pthread_mutexattr_init(&ma);
        pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
        pthread_mutex_init(&sh->lock, &ma);
        sh->window = UINT64_MAX;
        uint64_t start, stop;
        thr_clock_now(a, &start);
        uint64_t end = start + (uint64_t)o.seconds * 1000000000;
        sh->w0 = start / o.window_ns;
        pid_t pids[64];
        for (unsigned p = 0; p < o.procs; p++) {
                pids[p] = fork();
                if (pids[p] == 0)
                        _exit(worker(sh, &o, p, end));
        }
        int failed = 0;
        for (unsigned p = 0; p < o.procs; p++) {
                int st;
                if (pids[p] < 0 || waitpid(pids[p], &st, 0) != pids[p] || !WIFEXITED(st) ||
                    WEXITSTATUS(st) != 0)
                        failed = 1;
        }
        thr_clock_now(a, &stop);
        unsigned windows = 0, max429 = 0;
        for (unsigned w = 0; w < MAX_WINDOWS; w++) {
                unsigned n = atomic_load(&sh->per_window429[w]);
                windows += n > 0;
                max429 = n > max429 ? n : max429;
        }
        /* the retry budget's bound: its burst, plus its rate over the run (and one for the
         * reading taken before the first worker started) */
        uint64_t bound =
            ri.burst + 1 +
            (uint64_t)((double)(stop - start) * (double)ri.rate / (double)ri.period_ns);
        uint64_t retries = atomic_load(&sh->retries);
        printf("calls %" PRIu64 " ok %" PRIu64 " http429 %" PRIu64 " http503 %" PRIu64
               " windows %u max429_per_window %u retries %" PRIu64 " retry_refused %" PRIu64
               " retry_bound %" PRIu64 "\n",
               sh->calls, atomic_load(&sh->ok), atomic_load(&sh->h429), atomic_load(&sh->h503),
               windows, max429, retries, atomic_load(&sh->refused), bound);
        thr_limiter_close(rl);
        thr_arena_close(a);
        if (failed)
                return 2;
        if (o.share && (max429 > o.procs || retries > bound))
                return 1;
        return 0;
}

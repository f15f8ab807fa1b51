/*
 * sem_workers.c - worker processes that share a resource (a licence pool, a GPU, a connection
 * limit) which at most MAX of them may use at once, through a semaphore limiter and peers. Each
 * worker is a peer (thr_peer_open): one holder identity with one expiry. Each use is made between
 * thr_peer_acquire and thr_peer_release of 1 unit of the key "A", so across every process of the
 * host at most MAX are inside at any instant, and they get in oldest first.
 *
 *   thr-sem-workers [-a ARENA] [-l LIMITER] [-n NESTED] [-m MAX] [-p PROCS] [-j JOBS]
 *                   [-t TTL_MS] [-k]
 *
 * The limiter must be a semaphore whose max is MAX (defaults: arena main, limiter resource_A,
 * max 4, as the commented [resource_A] of daemon/throttled.conf):
 *
 *   [resource_A]
 *   kind = semaphore
 *   max = 4
 *   level = 1
 *
 * It forks PROCS workers; each makes JOBS uses. The resource here is a counter in memory shared
 * with the parent: a worker adds 1 when it enters and takes 1 away when it leaves, and notes
 * whenever it finds more than MAX inside. A worker's peer expires TTL_MS after its last heartbeat;
 * a thread of the worker heartbeats it every TTL_MS / 4 (one heartbeat keeps every lock of the
 * peer), so its locks last as long as the worker runs: most uses take 1 ms, and every tenth takes
 * 1.5 TTL_MS, longer than the expiry the peer was opened with. A worker that stops (SIGSTOP)
 * loses its locks TTL_MS after its last heartbeat; one that dies, at once for whoever needs them.
 * A worker whose peer expired (it was stalled longer than TTL_MS, stopped or starved of CPU) is
 * told so by its next call (-EKEYEXPIRED: final), and opens a new peer, as a real caller would:
 * the final line counts those uses as lost.
 * Its first use also repeats its acquire, as a retry after a lost answer would: the same count
 * again returns 0 and takes nothing more (idempotent).
 *
 * With -n NESTED, each use also takes 1 unit of "A" on NESTED, a second semaphore limiter, while
 * it holds LIMITER's: nested locks. A peer holding a lock at level L may only acquire locks at
 * levels below L, so LIMITER's level must be above NESTED's (the commented [resource_B] of
 * daemon/throttled.conf has the default level 0). It first shows the reverse order refused: a
 * peer holding NESTED's lock that asks for LIMITER's gets -EDEADLK at once (a lock hierarchy
 * violation), which is what keeps two holders from waiting for each other in opposite orders.
 *
 * With -k it first shows what a killed holder leaves: a child's peer takes 1 unit (and 1 of
 * NESTED's with -n) for a minute and the child is SIGKILLed holding them; the parent's peer then
 * asks for all MAX units, which it gets once the dead child's unit is reclaimed (at once: an
 * acquire that does not fit tests whether the holders in its way are alive).
 *
 * At the end it prints the key's state (thr_sem_stat: the remainder is max minus the units held)
 * and one line, and exits 0 only if every use was made with at most MAX inside:
 *
 *   uses U max_inside M over O timeouts T errors E
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <throttle/throttle.h>

#define MS       1000000ull
#define KEY      "A"
#define KEY_LEN  1
#define PROG     "thr-sem-workers"
#define TIMEOUT  (10000 * MS) /* how long a worker waits for its turn */
#define LONG_JOB 10           /* every tenth use is a long one */

struct opts {
        const char *arena, *limiter, *nested;
        unsigned max, procs, jobs;
        uint64_t ttl_ns;
        bool kill_one;
};

/* The shared resource, and what the workers saw of it. */
struct shared {
        _Atomic unsigned inside, max_inside, over;
        _Atomic unsigned uses, timeouts, errors;
        _Atomic unsigned lost; /* uses whose peer expired (a stall longer than TTL): reopened */
        _Atomic int holding;   /* -k: the child to be killed holds its unit */
};

/* An arena and its limiters: LIMITER, and NESTED (NULL without -n). */
struct lims {
        thr_arena *a;
        thr_limiter *l, *n;
};

static void sleep_ns(uint64_t ns)
{
        struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static uint64_t mono_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

static void close_lims(struct lims *L)
{
        if (L->n)
                thr_limiter_close(L->n);
        thr_limiter_close(L->l);
        thr_arena_close(L->a);
}

static int open_lims(const struct opts *o, struct lims *L)
{
        *L = (struct lims){0};
        int rc = thr_arena_open(o->arena, 0, &L->a);
        if (rc < 0) {
                fprintf(stderr, PROG ": arena %s: %s\n", o->arena, thr_strerror(rc));
                return rc;
        }
        const char *bad = o->limiter;
        rc = thr_limiter_open(L->a, o->limiter, &L->l);
        if (rc == 0 && o->nested) {
                bad = o->nested;
                rc = thr_limiter_open(L->a, o->nested, &L->n);
                if (rc < 0)
                        thr_limiter_close(L->l);
        }
        if (rc < 0) {
                fprintf(stderr, PROG ": limiter %s: %s\n", bad, thr_strerror(rc));
                thr_arena_close(L->a);
        }
        return rc;
}

/* ---------------------------------------------------------------- a worker */

/* A worker: its peer, and the thread that heartbeats it until told to stop. */
struct worker {
        const struct opts *o;
        struct shared *sh;
        struct lims L;
        thr_peer *peer;
        pthread_t beat;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        bool stop;
};

/* TTL / 4 after NOW (CLOCK_MONOTONIC): when the heartbeat thread beats next. */
static struct timespec quarter_after(const struct timespec *now, uint64_t ttl_ns)
{
        uint64_t ns = (uint64_t)now->tv_nsec + ttl_ns / 4;
        return (struct timespec){now->tv_sec + (time_t)(ns / 1000000000), (long)(ns % 1000000000)};
}

/* Every TTL / 4: the peer's locks (all of them, one CAS) now expire TTL from now. */
static void *heartbeats(void *arg)
{
        struct worker *w = arg;
        struct timespec now, at;
        clock_gettime(CLOCK_MONOTONIC, &now);
        at = quarter_after(&now, w->o->ttl_ns);
        pthread_mutex_lock(&w->mu);
        while (!w->stop) {
                if (pthread_cond_timedwait(&w->cv, &w->mu, &at) != ETIMEDOUT || w->stop)
                        continue;
                /* -EKEYEXPIRED: it had expired (a stall longer than TTL); its locks are void and
                 * the worker opens another peer (reopen) */
                thr_peer_heartbeat(w->peer, w->o->ttl_ns);
                clock_gettime(CLOCK_MONOTONIC, &now);
                at = quarter_after(&now, w->o->ttl_ns);
        }
        pthread_mutex_unlock(&w->mu);
        return NULL;
}

/* Use the resource for STEPS steps of STEP_NS: false if the peer's locks were lost (it expired,
 * and the unit may have gone to someone else: stop using it). */
static bool use_resource(struct worker *w, unsigned steps, uint64_t step_ns)
{
        struct shared *sh = w->sh;
        unsigned n = atomic_fetch_add(&sh->inside, 1) + 1, seen = atomic_load(&sh->max_inside);
        while (n > seen && !atomic_compare_exchange_weak(&sh->max_inside, &seen, n))
                ;
        if (n > w->o->max)
                atomic_fetch_add(&sh->over, 1);
        bool kept = true;
        for (unsigned s = 0; s < steps && kept; s++) {
                kept = thr_peer_expires(w->peer) != 0; /* 0: expired, nothing held any more */
                if (kept)
                        sleep_ns(step_ns);
        }
        atomic_fetch_sub(&sh->inside, 1);
        return kept;
}

/* The peer expired (this worker stalled longer than TTL: stopped, or starved of CPU): its locks
 * are void, and for ever. A new peer, as a real caller would make; counted as lost. */
static int reopen(struct worker *w)
{
        atomic_fetch_add(&w->sh->lost, 1);
        pthread_mutex_lock(&w->mu); /* the heartbeat thread beats w->peer under it */
        thr_peer_close(w->peer);
        int rc = thr_peer_open(w->L.a, w->o->ttl_ns, &w->peer);
        pthread_mutex_unlock(&w->mu);
        return rc;
}

/* An error of CALL (RC), counted. */
static void count_error(struct worker *w, const char *call, int rc)
{
        fprintf(stderr, PROG ": %s: %s\n", call, thr_strerror(rc));
        atomic_fetch_add(&w->sh->errors, 1);
}

enum { STOP, DONE, AGAIN };

/* One use: wait for a unit of "A" (and of NESTED's "A" under it), use the resource, give them
 * back. DONE, STOP, or AGAIN (the peer had expired: a new one, the use to do again). */
static int one_job(struct worker *w, unsigned j)
{
        struct shared *sh = w->sh;
        int rc = thr_peer_acquire(w->peer, w->L.l, KEY, KEY_LEN, 1, TIMEOUT, 0);
        if (rc == -ETIMEDOUT) { /* busy for TIMEOUT: nothing is held; a real caller retries */
                atomic_fetch_add(&sh->timeouts, 1);
                return DONE;
        }
        if (rc == -EKEYEXPIRED) /* a stall longer than TTL before or while it waited */
                return reopen(w) < 0 ? STOP : AGAIN;
        if (rc < 0) { /* -ERANGE: MAX is not the limiter's; -EOPNOTSUPP: not a semaphore; ... */
                count_error(w, "acquire", rc);
                return STOP;
        }
        /* a retry of the same acquire (its answer lost, say): 0, and nothing more is taken */
        if (j == 0 && (rc = thr_peer_acquire(w->peer, w->L.l, KEY, KEY_LEN, 1, 0, 0)) != 0)
                count_error(w, "acquire again", rc);
        if (w->L.n) { /* the nested lock: NESTED's level is below LIMITER's */
                rc = thr_peer_acquire(w->peer, w->L.n, KEY, KEY_LEN, 1, TIMEOUT, 0);
                if (rc < 0) {
                        if (rc == -ETIMEDOUT)
                                atomic_fetch_add(&sh->timeouts, 1);
                        else
                                count_error(w, "nested acquire", rc); /* -EDEADLK: levels */
                        thr_peer_release(w->peer, w->L.l, KEY, KEY_LEN);
                        return rc == -ETIMEDOUT ? DONE : STOP;
                }
        }
        bool long_job = j % LONG_JOB == LONG_JOB - 1;
        bool kept = long_job ? use_resource(w, 3, w->o->ttl_ns / 2) : use_resource(w, 1, MS);
        atomic_fetch_add(&sh->uses, 1);
        int rn = w->L.n ? thr_peer_release(w->peer, w->L.n, KEY, KEY_LEN) : 0;
        rc = thr_peer_release(w->peer, w->L.l, KEY, KEY_LEN);
        if (!kept || rn == -EKEYEXPIRED || rc == -EKEYEXPIRED) /* the peer expired in the use */
                return reopen(w) < 0 ? STOP : DONE;
        if (rn < 0 || rc < 0)
                count_error(w, "release", rn < 0 ? rn : rc);
        return DONE;
}

static int worker(const struct opts *o, struct shared *sh)
{
        struct worker w = {.o = o, .sh = sh};
        if (open_lims(o, &w.L) < 0) {
                atomic_fetch_add(&sh->errors, 1);
                return 1;
        }
        int rc = thr_peer_open(w.L.a, o->ttl_ns, &w.peer);
        if (rc < 0) {
                count_error(&w, "peer", rc);
                close_lims(&w.L);
                return 1;
        }
        pthread_mutex_init(&w.mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&w.cv, &ca);
        bool beating = pthread_create(&w.beat, NULL, heartbeats, &w) == 0;
        for (unsigned j = 0, again = 0; j < o->jobs && again < 10;) {
                int r = one_job(&w, j);
                if (r == STOP)
                        break;
                j += r == DONE;
                again += r == AGAIN;
        }
        pthread_mutex_lock(&w.mu);
        w.stop = true;
        pthread_cond_signal(&w.cv);
        pthread_mutex_unlock(&w.mu);
        if (beating)
                pthread_join(w.beat, NULL);
        thr_peer_close(w.peer); /* would release whatever it still held, each at once */
        close_lims(&w.L);
        return 0;
}

/* ---------------------------------------------------------------- -n: lock levels */

/* LIMITER's level must be above NESTED's; a peer holding NESTED's lock is refused LIMITER's at
 * once. Returns 0 if so. */
static int show_levels(const struct opts *o)
{
        struct lims L;
        if (open_lims(o, &L) < 0)
                return 1;
        struct thr_sem_stat sl = {0}, sn = {0};
        int rc = thr_sem_stat(L.l, KEY, KEY_LEN, &sl);
        if (rc == 0)
                rc = thr_sem_stat(L.n, KEY, KEY_LEN, &sn);
        thr_peer *p = NULL;
        if (rc == 0 && sl.level <= sn.level)
                fprintf(stderr, PROG ": %s (level %llu) must be above %s (level %llu) to nest\n",
                        o->limiter, (unsigned long long)sl.level, o->nested,
                        (unsigned long long)sn.level);
        else if (rc < 0 || (rc = thr_peer_open(L.a, o->ttl_ns, &p)) < 0 ||
                 (rc = thr_peer_acquire(p, L.n, KEY, KEY_LEN, 1, TIMEOUT, 0)) < 0)
                fprintf(stderr, PROG ": levels: %s\n", thr_strerror(rc));
        else
                rc = thr_peer_acquire(p, L.l, KEY, KEY_LEN, 1, TIMEOUT, 0);
        if (p)
                printf("levels: %s %llu, %s %llu; holding %s, acquiring %s: %s\n", o->limiter,
                       (unsigned long long)sl.level, o->nested, (unsigned long long)sn.level,
                       o->nested, o->limiter,
                       rc == -EDEADLK ? "-EDEADLK, refused at once" : thr_strerror(rc));
        bool ok = p && rc == -EDEADLK;
        if (p)
                thr_peer_close(p); /* releases NESTED's lock */
        close_lims(&L);
        return !ok;
}

/* ---------------------------------------------------------------- -k: a holder killed */

/* -k's child: its peer takes 1 unit (and 1 of NESTED's) for a minute; it says so and waits to be
 * killed. */
static int holder(const struct opts *o, struct shared *sh)
{
        struct lims L;
        thr_peer *p;
        if (open_lims(o, &L) < 0)
                return 1;
        int rc = thr_peer_open(L.a, 60000 * MS, &p);
        if (rc == 0)
                rc = thr_peer_acquire(p, L.l, KEY, KEY_LEN, 1, TIMEOUT, 0);
        if (rc == 0 && L.n)
                rc = thr_peer_acquire(p, L.n, KEY, KEY_LEN, 1, TIMEOUT, 0);
        if (rc < 0) {
                fprintf(stderr, PROG ": holder: acquire: %s\n", thr_strerror(rc));
                return 1;
        }
        atomic_store(&sh->holding, 1);
        pause();
        return 0;
}

/* -k: a holder SIGKILLed while holding; its units come back. Returns 0 if they did. */
static int kill_holder(const struct opts *o, struct shared *sh)
{
        pid_t pid = fork();
        if (pid == 0)
                _exit(holder(o, sh));
        if (pid < 0)
                return 1;
        for (int i = 0; i < 10000 && !atomic_load(&sh->holding); i++)
                sleep_ns(MS);
        struct lims L;
        thr_peer *p = NULL;
        int rc = atomic_load(&sh->holding) ? open_lims(o, &L) : -ECHILD;
        if (rc == 0 && (rc = thr_peer_open(L.a, o->ttl_ns, &p)) < 0)
                close_lims(&L);
        if (rc < 0) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                return 1;
        }
        rc = thr_peer_acquire(p, L.l, KEY, KEY_LEN, o->max, 0, 0); /* a try */
        printf("a child (pid %d) holds 1 unit: try of %u units: %s\n", (int)pid, o->max,
               rc == -EAGAIN ? "-EAGAIN, does not fit now"
               : rc == 0     ? "granted?"
                             : thr_strerror(rc));
        bool wrong = rc == 0; /* the child's unit was not counted */
        if (rc == 0)
                thr_peer_release(p, L.l, KEY, KEY_LEN);
        kill(pid, SIGKILL); /* its peer holds its units until its death is found */
        waitpid(pid, NULL, 0);
        thr_peer_heartbeat(p, o->ttl_ns);
        uint64_t t0 = mono_ns();
        rc = thr_peer_acquire(p, L.l, KEY, KEY_LEN, o->max, TIMEOUT, 0);
        if (rc == 0)
                printf("child SIGKILLed: all %u units acquired after %.3f ms\n", o->max,
                       (double)(mono_ns() - t0) / MS);
        else
                fprintf(stderr, PROG ": after the kill: %s\n", thr_strerror(rc));
        struct thr_sem_stat st;
        if (L.n && thr_sem_stat(L.n, KEY, KEY_LEN, &st) == 0) /* reclaims a dead holder's too */
                printf("%s: remainder %lld of %llu after the kill\n", o->nested,
                       (long long)st.remainder, (unsigned long long)st.max);
        thr_peer_close(p); /* releases the MAX units */
        close_lims(&L);
        return rc < 0 || wrong;
}

/* ---------------------------------------------------------------- main */

/* The key's state at the end: max, held, remainder (max - held), pending. */
static void show_key(const struct opts *o)
{
        struct lims L;
        struct thr_sem_stat st;
        if (open_lims(o, &L) < 0)
                return;
        int rc = thr_sem_stat(L.l, KEY, KEY_LEN, &st);
        if (rc == 0)
                printf("key %s of %s: max %llu held %llu remainder %lld pending %llu\n", KEY,
                       o->limiter, (unsigned long long)st.max, (unsigned long long)st.held,
                       (long long)st.remainder, (unsigned long long)st.pending);
        else
                fprintf(stderr, PROG ": stat: %s\n", thr_strerror(rc));
        close_lims(&L);
}

static int parse(int argc, char **argv, struct opts *o)
{
        int c;
        while ((c = getopt(argc, argv, "a:l:n:m:p:j:t:k")) != -1) {
                unsigned long v = optarg ? strtoul(optarg, NULL, 10) : 0;
                switch (c) {
                case 'a':
                        o->arena = optarg;
                        break;
                case 'l':
                        o->limiter = optarg;
                        break;
                case 'n':
                        o->nested = optarg;
                        break;
                case 'm':
                        o->max = (unsigned)v;
                        break;
                case 'p':
                        o->procs = (unsigned)v;
                        break;
                case 'j':
                        o->jobs = (unsigned)v;
                        break;
                case 't':
                        o->ttl_ns = v * MS;
                        break;
                case 'k':
                        o->kill_one = true;
                        break;
                default:
                        return -1;
                }
        }
        return optind == argc && o->max && o->procs && o->procs <= 1000 && o->jobs &&
                       o->ttl_ns >= 4 * MS
                   ? 0
                   : -1;
}

int main(int argc, char **argv)
{
        struct opts o = {.arena = "main",
                         .limiter = "resource_A",
                         .max = 4,
                         .procs = 8,
                         .jobs = 20,
                         .ttl_ns = 500 * MS};
        if (parse(argc, argv, &o) < 0) {
                fprintf(stderr, "usage: " PROG " [-a ARENA] [-l LIMITER] [-n NESTED] [-m MAX] "
                                "[-p PROCS] [-j JOBS] [-t TTL_MS] [-k]\n");
                return 2;
        }
        struct shared *sh =
            mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (sh == MAP_FAILED)
                return 1;
        int failed = o.nested ? show_levels(&o) : 0; /* levels that cannot nest: no workers */
        failed += !failed && o.kill_one ? kill_holder(&o, sh) : 0;
        for (unsigned p = 0; p < o.procs && !(o.nested && failed); p++) {
                pid_t pid = fork();
                if (pid == 0)
                        _exit(worker(&o, sh));
                failed += pid < 0;
        }
        int st;
        while (wait(&st) > 0)
                failed += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        show_key(&o);
        printf("uses %u max_inside %u over %u timeouts %u errors %u lost %u\n",
               atomic_load(&sh->uses), atomic_load(&sh->max_inside), atomic_load(&sh->over),
               atomic_load(&sh->timeouts), atomic_load(&sh->errors), atomic_load(&sh->lost));
        bool ok = !failed && !atomic_load(&sh->over) && !atomic_load(&sh->errors) &&
                  atomic_load(&sh->uses) == o.procs * o.jobs;
        return ok ? 0 : 1;
}

/*
 * sem_workers.c - worker processes that share a resource (a licence pool, a GPU, a connection
 * limit) which at most MAX of them may use at once, through a semaphore limiter: each use is
 * made between thr_sem_acquire and thr_sem_release of 1 unit of the key "A", so across every
 * process of the host at most MAX are inside at any instant, and they get in oldest first.
 *
 *   thr-sem-workers [-a ARENA] [-l LIMITER] [-m MAX] [-p PROCS] [-j JOBS] [-t TTL_MS] [-k]
 *
 * The limiter must be a semaphore whose max is MAX (defaults: arena main, limiter resource_A,
 * max 4, as the commented [resource_A] of daemon/throttled.conf):
 *
 *   [resource_A]
 *   kind = semaphore
 *   max = 4
 *
 * It forks PROCS workers; each makes JOBS uses. The resource here is a counter in memory shared
 * with the parent: a worker adds 1 when it enters and takes 1 away when it leaves, and notes
 * whenever it finds more than MAX inside. A lease lives TTL_MS unless extended; most uses take
 * 1 ms, and every tenth takes 1.5 TTL_MS, in three steps, each after a thr_sem_heartbeat.
 *
 * With -k it first shows what a killed holder leaves: a child takes 1 unit for a minute and is
 * SIGKILLed holding it; the parent then asks for all MAX units, which it gets once the dead
 * child's unit is reclaimed (at once: an acquire that does not fit tests whether the holders in
 * its way are alive).
 *
 * It prints one line, and exits 0 only if every use was made with at most MAX inside:
 *
 *   uses U max_inside M over O timeouts T errors E
 */
#include <errno.h>
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
        const char *arena, *limiter;
        unsigned max, procs, jobs;
        uint64_t ttl_ns;
        bool kill_one;
};

/* The shared resource, and what the workers saw of it. */
struct shared {
        _Atomic unsigned inside, max_inside, over;
        _Atomic unsigned uses, timeouts, errors;
        _Atomic int holding; /* -k: the child to be killed holds its unit */
};

static void sleep_ns(uint64_t ns)
{
        struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static int open_limiter(const struct opts *o, thr_arena **a, thr_limiter **l)
{
        int rc = thr_arena_open(o->arena, 0, a);
        if (rc < 0) {
                fprintf(stderr, PROG ": arena %s: %s\n", o->arena, thr_strerror(rc));
                return rc;
        }
        rc = thr_limiter_open(*a, o->limiter, l);
        if (rc < 0) {
                fprintf(stderr, PROG ": limiter %s: %s\n", o->limiter, thr_strerror(rc));
                thr_arena_close(*a);
        }
        return rc;
}

/* Use the resource for STEPS steps of STEP_NS, extending the lease before each: false if the
 * lease was lost (it expired, and its unit may have gone to someone else: stop using it). */
static bool use_resource(const struct opts *o, struct shared *sh, struct thr_lease *lease,
                         unsigned steps, uint64_t step_ns)
{
        unsigned n = atomic_fetch_add(&sh->inside, 1) + 1, seen = atomic_load(&sh->max_inside);
        while (n > seen && !atomic_compare_exchange_weak(&sh->max_inside, &seen, n))
                ;
        if (n > o->max)
                atomic_fetch_add(&sh->over, 1);
        bool kept = true;
        for (unsigned s = 0; s < steps && kept; s++) {
                int rc = steps > 1 ? thr_sem_heartbeat(lease, o->ttl_ns) : 0;
                if (rc < 0) {
                        fprintf(stderr, PROG ": heartbeat: %s\n", thr_strerror(rc));
                        kept = false; /* -EKEYEXPIRED: it is no longer ours */
                } else {
                        sleep_ns(step_ns);
                }
        }
        atomic_fetch_sub(&sh->inside, 1);
        return kept;
}

/* One use: wait for a unit of "A", use the resource, give the unit back. False: stop. */
static bool one_job(const struct opts *o, struct shared *sh, thr_limiter *l, unsigned j)
{
        struct thr_lease lease;
        int rc = thr_sem_acquire(l, KEY, KEY_LEN, 1, o->ttl_ns, TIMEOUT, &lease);
        if (rc == -ETIMEDOUT) { /* busy for TIMEOUT: nothing is held; a real caller retries */
                atomic_fetch_add(&sh->timeouts, 1);
                return true;
        }
        if (rc < 0) { /* -ERANGE: MAX is not the limiter's; -EOPNOTSUPP: not a semaphore; ... */
                fprintf(stderr, PROG ": acquire: %s\n", thr_strerror(rc));
                atomic_fetch_add(&sh->errors, 1);
                return false;
        }
        bool long_job = j % LONG_JOB == LONG_JOB - 1;
        bool kept = long_job ? use_resource(o, sh, &lease, 3, o->ttl_ns / 2)
                             : use_resource(o, sh, &lease, 1, MS);
        atomic_fetch_add(&sh->uses, 1);
        rc = thr_sem_release(&lease);
        if (!kept || rc < 0) { /* -EKEYEXPIRED: it had expired and was reclaimed */
                if (rc < 0)
                        fprintf(stderr, PROG ": release: %s\n", thr_strerror(rc));
                atomic_fetch_add(&sh->errors, 1);
        }
        return true;
}

static int worker(const struct opts *o, struct shared *sh)
{
        thr_arena *a;
        thr_limiter *l;
        if (open_limiter(o, &a, &l) < 0) {
                atomic_fetch_add(&sh->errors, 1);
                return 1;
        }
        for (unsigned j = 0; j < o->jobs && one_job(o, sh, l, j); j++)
                ;
        thr_limiter_close(l);
        thr_arena_close(a);
        return 0;
}

/* -k's child: take 1 unit for a minute, say so, and wait to be killed. */
static int holder(const struct opts *o, struct shared *sh)
{
        thr_arena *a;
        thr_limiter *l;
        struct thr_lease lease;
        if (open_limiter(o, &a, &l) < 0)
                return 1;
        int rc = thr_sem_acquire(l, KEY, KEY_LEN, 1, 60000 * MS, TIMEOUT, &lease);
        if (rc < 0) {
                fprintf(stderr, PROG ": holder: acquire: %s\n", thr_strerror(rc));
                return 1;
        }
        atomic_store(&sh->holding, 1);
        pause();
        return 0;
}

/* -k: a holder SIGKILLed while holding; its unit comes back. Returns 0 if it did. */
static int kill_holder(const struct opts *o, struct shared *sh)
{
        pid_t pid = fork();
        if (pid == 0)
                _exit(holder(o, sh));
        if (pid < 0)
                return 1;
        for (int i = 0; i < 10000 && !atomic_load(&sh->holding); i++)
                sleep_ns(MS);
        thr_arena *a;
        thr_limiter *l;
        int rc = atomic_load(&sh->holding) ? open_limiter(o, &a, &l) : -ECHILD;
        if (rc < 0) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                return 1;
        }
        struct thr_lease all;
        rc = thr_sem_try(l, KEY, KEY_LEN, o->max, o->ttl_ns, &all);
        printf("a child (pid %d) holds 1 unit: try of %u units: %s\n", (int)pid, o->max,
               rc == -EAGAIN ? "-EAGAIN, does not fit now"
               : rc == 0     ? "granted?"
                             : thr_strerror(rc));
        bool wrong = rc == 0; /* the child's unit was not counted */
        if (rc == 0)
                thr_sem_release(&all);
        kill(pid, SIGKILL); /* it holds its unit until it is found dead */
        waitpid(pid, NULL, 0);
        rc = thr_sem_acquire(l, KEY, KEY_LEN, o->max, o->ttl_ns, TIMEOUT, &all);
        if (rc == 0)
                printf("child SIGKILLed: all %u units acquired after %.3f ms\n", o->max,
                       (double)all.waited_ns / MS);
        else
                fprintf(stderr, PROG ": after the kill: %s\n", thr_strerror(rc));
        if (rc == 0)
                thr_sem_release(&all);
        thr_limiter_close(l);
        thr_arena_close(a);
        return rc < 0 || wrong;
}

static int parse(int argc, char **argv, struct opts *o)
{
        int c;
        while ((c = getopt(argc, argv, "a:l:m:p:j:t:k")) != -1) {
                unsigned long v = optarg ? strtoul(optarg, NULL, 10) : 0;
                switch (c) {
                case 'a':
                        o->arena = optarg;
                        break;
                case 'l':
                        o->limiter = optarg;
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
        return optind == argc && o->max && o->procs && o->procs <= 1000 && o->jobs && o->ttl_ns
                   ? 0
                   : -1;
}

int main(int argc, char **argv)
{
        struct opts o = {"main", "resource_A", 4, 8, 20, 500 * MS, false};
        if (parse(argc, argv, &o) < 0) {
                fprintf(stderr, "usage: " PROG " [-a ARENA] [-l LIMITER] [-m MAX] [-p PROCS] "
                                "[-j JOBS] [-t TTL_MS] [-k]\n");
                return 2;
        }
        struct shared *sh =
            mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (sh == MAP_FAILED)
                return 1;
        int failed = o.kill_one ? kill_holder(&o, sh) : 0;
        for (unsigned p = 0; p < o.procs; p++) {
                pid_t pid = fork();
                if (pid == 0)
                        _exit(worker(&o, sh));
                failed += pid < 0;
        }
        int st;
        while (wait(&st) > 0)
                failed += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        printf("uses %u max_inside %u over %u timeouts %u errors %u\n", atomic_load(&sh->uses),
               atomic_load(&sh->max_inside), atomic_load(&sh->over), atomic_load(&sh->timeouts),
               atomic_load(&sh->errors));
        bool ok = !failed && !atomic_load(&sh->over) && !atomic_load(&sh->errors) &&
                  atomic_load(&sh->uses) == o.procs * o.jobs;
        return ok ? 0 : 1;
}

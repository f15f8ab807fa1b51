/*
 * stress_peer.c - threads of one process on semaphore keys through peers, checked exactly: the
 * program ThreadSanitizer runs for peers and leases (Criterion cannot start under TSan), and a
 * plain stress test otherwise.
 *
 *   stress_peer [--threads N] [--seconds S]
 *
 * Three semaphore limiters at levels 2, 1 and 0 (max 2, 1, 3) on a real-clock arena. Each thread
 * has a peer of its own and nests acquires downwards (blocking, amounts 1 to max), holds, releases
 * in any order, now and then repeats an acquire (idempotent), recounts, or tries an upward one
 * (refused at once); every few rounds it heartbeats. Besides, all threads share one more peer and
 * race on it: the same key from several threads (one wins, the others are told -EALREADY or find
 * it held), releases of what another thread took. Checks: no max ever exceeded (counts raised
 * after a grant, lowered before a release), no upward acquire ever granted, no acquire timing out
 * (30 s: a deadlock would), every key empty at the end (thr_sem_stat). Exit 0 only if all hold.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"
#include "throttle/throttle.h"

#define SEC 1000000000ull

static const uint32_t MAXES[3] = {2, 1, 3};

struct shared {
        thr_arena *a;
        thr_limiter *l[3];
        thr_peer *common; /* the peer all threads share */
        _Atomic int64_t held[3];
        _Atomic uint64_t grants, refused, over, upward, timeouts, bad, common_ok;
        _Atomic int stop;
        int threads;
        double seconds;
};

static uint64_t xorshift(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

static void bad(struct shared *g, const char *what, int rc)
{
        fprintf(stderr, "stress_peer: %s: %s\n", what, thr_strerror(rc));
        atomic_fetch_add(&g->bad, 1);
}

/* One round of a thread's own peer: downwards nesting, maybe a repeat, a recount, an upward
 * try; then the releases. */
static void own_round(struct shared *g, thr_peer *p, uint64_t *s)
{
        int held[3], nh = 0;
        uint32_t amount[3];
        for (int i = 0; i < 3; i++) {
                if (xorshift(s) % 3 == 0)
                        continue;
                uint32_t n = (uint32_t)(1 + xorshift(s) % MAXES[i]);
                int rc = thr_peer_acquire(p, g->l[i], "k", 1, n, 30 * SEC, 0);
                if (rc == -ETIMEDOUT) {
                        atomic_fetch_add(&g->timeouts, 1);
                        continue;
                }
                if (rc != 0) {
                        bad(g, "acquire", rc);
                        continue;
                }
                if (atomic_fetch_add(&g->held[i], n) + n > MAXES[i])
                        atomic_fetch_add(&g->over, 1);
                held[nh++] = i;
                amount[i] = n;
                atomic_fetch_add(&g->grants, 1);
                if (xorshift(s) % 4 == 0 && thr_peer_acquire(p, g->l[i], "k", 1, n, 0, 0) != 0)
                        bad(g, "repeated acquire", -EIO);
        }
        if (nh) {
                int lowest = held[nh - 1];
                int up = (int)(xorshift(s) % (uint64_t)(lowest + 1));
                int rc = thr_peer_acquire(p, g->l[up], "u", 1, 1, 30 * SEC, 0);
                if (rc == 0)
                        atomic_fetch_add(&g->upward, 1);
                else if (rc == -EDEADLK)
                        atomic_fetch_add(&g->refused, 1);
                else
                        bad(g, "upward acquire", rc);
                /* fewer units: always in place */
                int i = held[xorshift(s) % (uint64_t)nh];
                if (amount[i] > 1) {
                        atomic_fetch_sub(&g->held[i], 1);
                        rc = thr_peer_acquire(p, g->l[i], "k", 1, amount[i] - 1, 0,
                                              THR_PEER_RECOUNT);
                        if (rc != 0)
                                bad(g, "recount", rc);
                        amount[i]--;
                }
        }
        while (nh) {
                int j = (int)(xorshift(s) % (uint64_t)nh);
                int i = held[j];
                held[j] = held[--nh];
                atomic_fetch_sub(&g->held[i], amount[i]);
                int rc = thr_peer_release(p, g->l[i], "k", 1);
                if (rc != 0)
                        bad(g, "release", rc);
        }
}

/* The shared peer, raced by every thread on key "c" of the level-0 limiter (its own key, not
 * counted with the others): whoever acquires or releases, the peer holds it at most once. */
static void common_round(struct shared *g, uint64_t *s)
{
        thr_limiter *l = g->l[2];
        int rc = xorshift(s) % 2 ? thr_peer_acquire(g->common, l, "c", 1, 1, SEC, 0)
                                 : thr_peer_release(g->common, l, "c", 1);
        if (rc == 0 || rc == -EALREADY || rc == -ENOENT || rc == -ETIMEDOUT)
                atomic_fetch_add(&g->common_ok, 1);
        else
                bad(g, "shared peer", rc);
        struct thr_sem_stat st;
        if (thr_sem_stat(l, "c", 1, &st) == 0 && st.held > 1)
                atomic_fetch_add(&g->over, 1);
}

static void *worker(void *arg)
{
        struct shared *g = arg;
        static _Atomic uint64_t seeds;
        uint64_t s = 0x9e3779b97f4a7c15ull * (atomic_fetch_add(&seeds, 1) + 1);
        thr_peer *p;
        int rc = thr_peer_open(g->a, 30 * SEC, &p);
        if (rc < 0) {
                bad(g, "peer open", rc);
                return NULL;
        }
        for (uint64_t round = 0; !atomic_load(&g->stop); round++) {
                own_round(g, p, &s);
                common_round(g, &s);
                if (round % 16 == 0 && (rc = thr_peer_heartbeat(p, 30 * SEC)) != 0)
                        bad(g, "heartbeat", rc);
        }
        if ((rc = thr_peer_close(p)) != 0)
                bad(g, "close", rc);
        return NULL;
}

static int build(struct shm_map *m, const char *dir)
{
        struct shm_limiter_spec s[3];
        static const char *const names[3] = {"hi", "mid", "lo"};
        for (int i = 0; i < 3; i++) {
                s[i] = (struct shm_limiter_spec){.kind = THR_KIND_SEMAPHORE,
                                                 .rate_n = MAXES[i],
                                                 .leases = 32,
                                                 .level = (uint64_t)(2 - i),
                                                 .capacity = 16,
                                                 .lock_wait_ns = THR_LOCK_WAIT_MAX_NS};
                snprintf(s[i].name, sizeof(s[i].name), "%s", names[i]);
        }
        struct shm_arena_spec a = {.dir = dir,
                                   .hugepages = SHM_HUGE_OFF,
                                   .mode = 0600,
                                   .gid = (gid_t)-1,
                                   .clock = THR_CLOCK_MONOTONIC,
                                   .max_limiters = 8,
                                   .max_readers = 256,
                                   .nlimiters = 3,
                                   .limiters = s};
        snprintf(a.name, sizeof(a.name), "sp%d", (int)getpid());
        char err[256] = "";
        int rc = shm_arena_create(&a, m, err, sizeof(err));
        if (rc < 0)
                fprintf(stderr, "stress_peer: cannot build the arena: %s\n", err);
        return rc;
}

static void parse(int argc, char **argv, struct shared *g)
{
        static const struct option o[] = {{"threads", 1, 0, 't'}, {"seconds", 1, 0, 's'}, {0}};
        int c;
        while ((c = getopt_long(argc, argv, "", o, NULL)) != -1) {
                double v = atof(optarg);
                if (v <= 0) {
                        fprintf(stderr, "usage: stress_peer [--threads N] [--seconds S]\n");
                        exit(64);
                }
                if (c == 't')
                        g->threads = (int)v > 32 ? 32 : (int)v;
                else
                        g->seconds = v;
        }
}

int main(int argc, char **argv)
{
        static struct shared g = {.threads = 4, .seconds = 2};
        parse(argc, argv, &g);
        char dir[] = "/dev/shm/thrpeer.XXXXXX";
        struct shm_map m;
        if (!mkdtemp(dir) || build(&m, dir) < 0)
                return 1;
        static const char *const names[3] = {"hi", "mid", "lo"};
        int rc = thr_arena_open(m.path, 0, &g.a);
        for (int i = 0; i < 3 && rc == 0; i++)
                rc = thr_limiter_open(g.a, names[i], &g.l[i]);
        if (rc == 0)
                rc = thr_peer_open(g.a, 3600 * SEC, &g.common);
        if (rc < 0) {
                fprintf(stderr, "stress_peer: %s\n", thr_strerror(rc));
                return 1;
        }
        pthread_t th[32];
        for (int i = 0; i < g.threads; i++)
                pthread_create(&th[i], NULL, worker, &g);
        struct timespec ts = {(time_t)g.seconds,
                              (long)((g.seconds - (double)(time_t)g.seconds) * 1e9)};
        nanosleep(&ts, NULL);
        atomic_store(&g.stop, 1);
        for (int i = 0; i < g.threads; i++)
                pthread_join(th[i], NULL);
        if ((rc = thr_peer_close(g.common)) != 0)
                bad(&g, "close of the shared peer", rc);
        int fail = 0;
        for (int i = 0; i < 3; i++) {
                struct thr_sem_stat st = {0};
                const char *key = i == 2 ? "c" : "k";
                if ((rc = thr_sem_stat(g.l[i], "k", 1, &st)) != 0 || st.held || st.pending)
                        fail = 1,
                        fprintf(stderr, "stress_peer: %s/k not empty at the end\n", names[i]);
                if (i == 2 && (thr_sem_stat(g.l[i], key, 1, &st) != 0 || st.held))
                        fail = 1, fprintf(stderr, "stress_peer: lo/c not empty at the end\n");
                thr_limiter_close(g.l[i]);
        }
        thr_arena_close(g.a);
        unlink(m.path);
        rmdir(dir);
        printf("stress_peer: %d threads, %.1f s: %lu grants, %lu upward refused, %lu shared-peer "
               "calls; over %lu, upward granted %lu, timeouts %lu, errors %lu\n",
               g.threads, g.seconds, (unsigned long)g.grants, (unsigned long)g.refused,
               (unsigned long)g.common_ok, (unsigned long)g.over, (unsigned long)g.upward,
               (unsigned long)g.timeouts, (unsigned long)g.bad);
        fail |= g.over || g.upward || g.timeouts || g.bad || g.grants == 0 || g.refused == 0;
        return fail;
}

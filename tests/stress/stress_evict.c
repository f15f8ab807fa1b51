/*
 * stress_evict.c - multi-process torture of eviction and slot reuse with the real daemon.
 *
 *   stress_evict --procs N --seconds S [--capacity C] [--keyspace K] [--hot H] [--ttl-ms T]
 *                [--kill-every-ms M] [--seed X] [--daemon PATH] [--on-full deny|allow|evict]
 *
 * Writes a config in a private /dev/shm directory (arena there, limiter "lim": capacity C, 1000/s
 * burst 20, idle_ttl T ms, maintenance every 10 ms) and starts throttled on it. N workers try keys
 * of a key space ten times the capacity, through a window that slides over it (so the table is
 * always full, keys left behind are evicted and their slots reused after grace periods), and H
 * hot keys that every worker hits all the time. A random worker is SIGKILLed every ~M ms
 * (default 100; 0: never) and replaced at once. Checks:
 *   - every worker stops within 5 s of being asked (no hang);
 *   - grace periods kept completing, the daemon is alive, and it stops cleanly on SIGTERM;
 *   - no slot is left BUSY (the daemon repairs shards of dead inserters);
 *   - the table holds at most C live slots, no key has two, and its live counter is <= C;
 *   - each hot key admitted at most B + floor(elapsed / T) on the arena clock (counted after each
 *     admission, so a kill can only under-count): eviction never gave a key in use a fresh
 *     burst; and at least a tenth of that, so idle workers cannot pass;
 *   - eviction and reuse happened; records of killed workers were forced free by the daemon, and
 *     no reader record is left owned.
 * Prints a summary first (with the seed), then each result. Exits 0 only if every check holds
 * (1 otherwise, 2 on bad arguments). A failed run keeps its directory (config, arena, daemon log).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"
#include "stress_common.h"
#include "throttle/throttle.h"

#ifndef THR_DAEMON_PATH
#define THR_DAEMON_PATH "throttled"
#endif

#define RATE     1000 /* per second on every key: T = 1 ms */
#define BURST    20
#define MAX_PROC 256
#define MAX_HOT  32
#define HANG_MS  5000 /* a worker asked to stop that is still running after this has hung */
#define MS       1000000ull

struct opts {
        int procs;
        double seconds;
        uint64_t capacity, keyspace, hot, ttl_ms, kill_every_ms, seed;
        const char *daemon;
        const char *on_full;
};

/* Per worker slot, on lines of its own: only the slot's current worker writes them. */
struct slot_stats {
        _Alignas(64) _Atomic uint64_t hot[MAX_HOT];
        _Atomic uint64_t attempts;
};

struct ctl {
        _Atomic int stop;
        _Atomic int nerr;
        char err[256];
        struct slot_stats slot[MAX_PROC];
};

static struct {
        struct opts o;
        char dir[64], conf[96], log[96], path[96];
        pid_t daemon;
        thr_arena *a; /* workers' handles, opened before the fork */
        thr_limiter *l;
        struct shm_map map; /* the checker's read-only view */
        struct shm_lim_snap snap;
        struct ctl *c;
        pid_t pid[MAX_PROC];
        int failures;
} g;

static void report(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print one check's result; a failure counts. */
static void report(bool ok, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        printf("stress_evict: %s: ", ok ? "ok" : "FAIL");
        vprintf(fmt, ap);
        putchar('\n');
        fflush(stdout);
        va_end(ap);
        g.failures += !ok;
}

static void die(const char *what, int rc)
{
        fprintf(stderr, "stress_evict: %s: %s\n", what,
                rc < 0 ? thr_strerror(rc) : strerror(errno));
        exit(1);
}

static uint64_t arena_now(void)
{
        uint64_t t;
        thr_clock_now(g.a, &t);
        return t;
}

static uint64_t mono_ms(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / MS;
}

static void sleep_ms(uint64_t ms)
{
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000 * MS)};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* ---------------------------------------------------------------- arguments */

static void usage(FILE *f)
{
        fprintf(f, "usage: stress_evict --procs N --seconds S [--capacity C] [--keyspace K] "
                   "[--hot H] [--ttl-ms T]\n"
                   "                    [--kill-every-ms M] [--seed X] [--daemon PATH] "
                   "[--on-full deny|allow|evict]\n");
}

/* Option I of the table in parse(): numbers in the order of their fields, then the words. */
static void parse_opt(int i, struct opts *o)
{
        uint64_t *num[] = {NULL,    NULL,       &o->capacity,      &o->keyspace,
                           &o->hot, &o->ttl_ms, &o->kill_every_ms, &o->seed};
        if (i == 0)
                o->procs = atoi(optarg);
        else if (i == 1)
                o->seconds = atof(optarg);
        else if (i < 8)
                *num[i] = strtoull(optarg, NULL, 0);
        else if (i == 8)
                o->daemon = optarg;
        else
                o->on_full = optarg;
}

static int parse(int argc, char **argv, struct opts *o)
{
        static const struct option lo[] = {{"procs", required_argument, 0, 'p'},
                                           {"seconds", required_argument, 0, 's'},
                                           {"capacity", required_argument, 0, 'c'},
                                           {"keyspace", required_argument, 0, 'k'},
                                           {"hot", required_argument, 0, 'H'},
                                           {"ttl-ms", required_argument, 0, 't'},
                                           {"kill-every-ms", required_argument, 0, 'm'},
                                           {"seed", required_argument, 0, 'x'},
                                           {"daemon", required_argument, 0, 'd'},
                                           {"on-full", required_argument, 0, 'f'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        *o = (struct opts){.procs = 4,
                           .seconds = 3,
                           .capacity = 1000,
                           .hot = 8,
                           .ttl_ms = 50,
                           .kill_every_ms = 100,
                           .daemon = THR_DAEMON_PATH,
                           .on_full = "evict"};
        o->seed = ((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull) ^ (uint64_t)getpid();
        int c, i;
        while ((c = getopt_long(argc, argv, "", lo, &i)) != -1) {
                if (c == 'h') {
                        usage(stdout);
                        exit(0);
                }
                if (c == '?')
                        return -1;
                parse_opt(i, o);
        }
        o->seed |= 1;
        if (!o->keyspace)
                o->keyspace = 10 * o->capacity;
        bool policy = !strcmp(o->on_full, "deny") || !strcmp(o->on_full, "allow") ||
                      !strcmp(o->on_full, "evict");
        if (optind != argc || o->procs < 1 || o->procs > MAX_PROC || o->seconds <= 0 ||
            o->seconds > 3600 || o->capacity < 1 || o->capacity > (1u << 24) || o->keyspace < 1 ||
            o->keyspace > (1u << 30) || o->hot < 1 || o->hot > MAX_HOT || o->ttl_ms < 1 ||
            o->ttl_ms > 3600000 || !policy)
                return -1;
        return 0;
}

/* ---------------------------------------------------------------- the daemon */

static void write_config(void)
{
        FILE *f = fopen(g.conf, "we");
        if (!f)
                die(g.conf, 0);
        fprintf(f,
                "[arena]\nname = evict\ndir = %s\nhugepages = off\nmode = 0600\n"
                "clock = monotonic\nmax_limiters = 4\nmax_readers = %d\nspare = 1MiB\n\n"
                "[daemon]\nheartbeat_ms = 100\nmaintenance_ms = 10\nstall_ms = 3600000\n"
                "metrics =\n\n"
                "[lim]\nrate = %d/s\nburst = %d\ncapacity = %" PRIu64 "\nidle_ttl = %" PRIu64 "ms\n"
                "on_full = %s\n",
                g.dir, 2 * g.o.procs + 64, RATE, BURST, g.o.capacity, g.o.ttl_ms, g.o.on_full);
        if (fclose(f) != 0)
                die(g.conf, 0);
}

static void start_daemon(void)
{
        pid_t parent = getpid();
        g.daemon = fork();
        if (g.daemon < 0)
                die("fork", 0);
        if (g.daemon > 0)
                return;
        /* Stop with the checker: a killed run never leaves a daemon behind. */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
                _exit(99);
        int fd = open(g.log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || dup2(fd, STDERR_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0)
                _exit(98);
        execl(g.o.daemon, "throttled", "-c", g.conf, (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", g.o.daemon, strerror(errno));
        _exit(127);
}

/* The last lines of the daemon's log, to stderr (after a failure). */
static void show_log(void)
{
        FILE *f = fopen(g.log, "re");
        if (!f)
                return;
        static char buf[8192];
        fseek(f, 0, SEEK_END);
        long end = ftell(f), from = end > (long)sizeof(buf) - 1 ? end - (long)sizeof(buf) + 1 : 0;
        fseek(f, from, SEEK_SET);
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *p = buf;
        if (from > 0 && strchr(p, '\n'))
                p = strchr(p, '\n') + 1;
        fprintf(stderr, "stress_evict: tail of %s:\n%s", g.log, p);
}

/* Whether the daemon is still running; reaps it (status in *ST) if it ended. */
static bool daemon_alive(int *st)
{
        if (g.daemon <= 0)
                return false;
        if (waitpid(g.daemon, st, WNOHANG) == 0)
                return true;
        g.daemon = 0;
        return false;
}

/* Wait for the daemon's arena: openable by a client, its limiter there, the daemon announced. */
static void wait_arena(void)
{
        char err[512] = "not created";
        for (uint64_t t0 = mono_ms(); mono_ms() - t0 < 10000; sleep_ms(5)) {
                int st;
                if (!daemon_alive(&st)) {
                        show_log();
                        fprintf(stderr, "stress_evict: throttled ended (status %#x)\n", st);
                        exit(1);
                }
                if (access(g.path, F_OK) != 0 || thr_arena_open(g.path, 0, &g.a) < 0)
                        continue;
                int rc = shm_arena_attach(g.path, false, &g.map, err, sizeof(err));
                if (rc == 0 && (rc = thr_limiter_open(g.a, "lim", &g.l)) == 0) {
                        int idx = shm_dir_find(&g.map, "lim");
                        if (idx >= 0 && shm_dir_snapshot(&g.map, (uint32_t)idx, &g.snap) == 0 &&
                            atomic_load(&shm_hdr(&g.map)->daemon_pid) == (uint64_t)g.daemon)
                                return;
                        thr_limiter_close(g.l);
                }
                shm_arena_detach(&g.map);
                memset(&g.map, 0, sizeof(g.map));
                thr_arena_close(g.a);
                g.a = NULL;
        }
        show_log();
        fprintf(stderr, "stress_evict: arena %s not ready after 10 s: %s\n", g.path, err);
        exit(1);
}

static void setup(void)
{
        snprintf(g.dir, sizeof(g.dir), "/dev/shm/threvict.XXXXXX");
        if (!mkdtemp(g.dir))
                die("mkdtemp", 0);
        snprintf(g.conf, sizeof(g.conf), "%s/throttled.conf", g.dir);
        snprintf(g.log, sizeof(g.log), "%s/throttled.log", g.dir);
        snprintf(g.path, sizeof(g.path), "%s/throttle.evict", g.dir);
        write_config();
        start_daemon();
        wait_arena();
}

/* At exit of the checker (children end with _exit): stop what is left and clean up. */
static void teardown(void)
{
        for (int i = 0; i < MAX_PROC; i++)
                if (g.pid[i] > 0 && kill(g.pid[i], SIGKILL) == 0)
                        waitpid(g.pid[i], NULL, 0);
        if (g.daemon > 0 && kill(g.daemon, SIGKILL) == 0)
                waitpid(g.daemon, NULL, 0);
        if (g.failures) {
                show_log();
                fprintf(stderr, "stress_evict: kept %s\n", g.dir);
                return;
        }
        thr_limiter_close(g.l);
        thr_arena_close(g.a);
        shm_arena_detach(&g.map);
        unlink(g.path);
        unlink(g.conf);
        unlink(g.log);
        rmdir(g.dir);
}

/* ---------------------------------------------------------------- workers */

__attribute__((noreturn)) static void worker_fail(const char *key, int rc)
{
        if (atomic_fetch_add(&g.c->nerr, 1) == 0)
                snprintf(g.c->err, sizeof(g.c->err), "worker %d: try %s: %s", (int)getpid(), key,
                         thr_strerror(rc));
        _exit(3);
}

/*
 * One try in four on a hot key (in turn), the others on random keys of a window of 2C keys that
 * slides through the key space once a second: the window alone overfills the table (so on_full
 * acts), and keys it leaves go idle for good (so the daemon evicts them, whatever the policy). A
 * uniform draw over the whole space would not do: each key would be hit hundreds of times a
 * second, and under deny or allow nothing would ever be idle.
 */
__attribute__((noreturn)) static void worker(int slot)
{
        struct slot_stats *st = &g.c->slot[slot];
        uint64_t rng = g.o.seed ^ ((uint64_t)getpid() << 32) ^ (uint64_t)slot;
        uint64_t win = 2 * g.o.capacity < g.o.keyspace ? 2 * g.o.capacity : g.o.keyspace;
        char key[32];
        for (uint64_t i = 0; !atomic_load_explicit(&g.c->stop, memory_order_relaxed); i++) {
                unsigned h = (unsigned)(i / 4 % g.o.hot);
                bool hot = i % 4 == 0;
                uint64_t base = mono_ms() % 1000 * g.o.keyspace / 1000;
                int len = hot ? snprintf(key, sizeof(key), "hot%u", h)
                              : snprintf(key, sizeof(key), "k%" PRIu64,
                                         (base + stress_rng_next(&rng) % win) % g.o.keyspace);
                int rc = thr_limiter_try(g.l, key, (size_t)len, 1, NULL);
                if (rc < 0)
                        worker_fail(key, rc);
                if (hot && rc == 1) /* after the CAS: a kill in between only under-counts */
                        atomic_fetch_add_explicit(&st->hot[h], 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&st->attempts, 1, memory_order_relaxed);
        }
        /* a normal exit gives the reader record back (killed workers' are reaped) */
        thr_limiter_close(g.l);
        thr_arena_close(g.a);
        _exit(0);
}

static void spawn(int slot)
{
        pid_t pid = stress_fork_tied();
        if (pid < 0)
                die("fork", 0);
        if (pid == 0)
                worker(slot);
        g.pid[slot] = pid;
}

/* Kill a random worker every M ms (jittered by +-50%, so kills land anywhere) until the time is
 * up, or the daemon or a worker failed. Returns the number of kills. */
static unsigned run(void)
{
        uint64_t rng = g.o.seed, kills = 0, t0 = mono_ms();
        uint64_t end = t0 + (uint64_t)(g.o.seconds * 1000), now;
        while ((now = mono_ms()) < end && !atomic_load(&g.c->nerr)) {
                uint64_t m = g.o.kill_every_ms ? g.o.kill_every_ms : 50;
                uint64_t wait = m / 2 + stress_rng_next(&rng) % (m + 1);
                sleep_ms(wait < end - now ? wait : end - now);
                int st;
                if (!daemon_alive(&st)) {
                        report(false, "throttled ended during the run (status %#x)", st);
                        break;
                }
                if (!g.o.kill_every_ms || mono_ms() >= end)
                        continue;
                int slot = (int)(stress_rng_next(&rng) % (uint64_t)g.o.procs);
                kill(g.pid[slot], SIGKILL);
                waitpid(g.pid[slot], &st, 0);
                if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
                        report(false, "worker %d ended by itself (status %#x): %s",
                               (int)g.pid[slot], st, g.c->err);
                spawn(slot);
                kills++;
        }
        return (unsigned)kills;
}

/* Ask the workers to stop; any still running after HANG_MS has hung (then it is killed). */
static void stop_workers(void)
{
        atomic_store(&g.c->stop, 1);
        int left = g.o.procs, bad = 0;
        for (uint64_t t0 = mono_ms(); left && mono_ms() - t0 < HANG_MS; sleep_ms(1)) {
                for (int i = 0; i < g.o.procs; i++) {
                        int st;
                        if (g.pid[i] <= 0 || waitpid(g.pid[i], &st, WNOHANG) != g.pid[i])
                                continue;
                        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                                fprintf(stderr, "stress_evict: worker %d status %#x: %s\n",
                                        (int)g.pid[i], st, g.c->err);
                                bad++;
                        }
                        g.pid[i] = 0;
                        left--;
                }
        }
        for (int i = 0; i < g.o.procs; i++) {
                if (g.pid[i] <= 0)
                        continue;
                fprintf(stderr, "stress_evict: HANG: worker %d still running after %d ms\n",
                        (int)g.pid[i], HANG_MS);
                kill(g.pid[i], SIGKILL);
                waitpid(g.pid[i], NULL, 0);
                g.pid[i] = 0;
        }
        report(left == 0, "no hang: %d of %d workers still running %d ms after stop", left,
               g.o.procs, HANG_MS);
        report(bad == 0 && !atomic_load(&g.c->nerr), "workers: %d ended badly, %d errors%s%s", bad,
               atomic_load(&g.c->nerr), atomic_load(&g.c->nerr) ? ": " : "", g.c->err);
}

/* ---------------------------------------------------------------- checks */

/* Each hot key: n admissions leave its TAT >= t0 + n*T (an evicted key comes back at or above
 * it: idle keys have TAT <= now, a full shard's floor keeps the victim's), and the last one, at
 * now <= t1, had TAT - now <= B*T: n <= B + floor((t1 - t0) / T). Counted <= n. Under
 * on_full = allow a key that finds the table full is admitted unrecorded: there the bound holds
 * because a hot key, hit all the time, is never idle for the TTL, so never evicted. */
static void check_hot(uint64_t t0, uint64_t t1)
{
        const struct thr_params *p = &g.snap.params;
        uint64_t bound = p->burst + (t1 - t0) * p->k / p->t_units, lo = UINT64_MAX, hi = 0;
        printf("stress_evict: hot key admissions:");
        for (unsigned h = 0; h < g.o.hot; h++) {
                uint64_t n = 0;
                for (int i = 0; i < g.o.procs; i++)
                        n += atomic_load(&g.c->slot[i].hot[h]);
                printf(" %" PRIu64, n);
                lo = n < lo ? n : lo;
                hi = n > hi ? n : hi;
        }
        putchar('\n');
        report(hi <= bound && lo >= bound / 10,
               "hot keys: admitted %" PRIu64 "..%" PRIu64 " each in %.3f s, bound %" PRIu64
               " = B + elapsed/T, floor %" PRIu64,
               lo, hi, (double)(t1 - t0) / 1e9, bound, bound / 10);
}

/* Slots by status (enum thr_slot_status); with KEYS, the live keys, sorted. */
static uint64_t walk_table(uint64_t count[4], struct stress_key *keys)
{
        const struct thr_table *geo = &g.snap.table;
        return stress_walk(shm_at(g.map.base, geo->slots_off),
                           (uint64_t)geo->nshards * geo->shard_slots, count, keys);
}

static uint64_t owned_readers(void)
{
        const struct thr_reader *r = shm_at(g.map.base, g.map.g.reader_off);
        uint64_t n = 0;
        for (uint32_t i = 0; i < g.map.g.reader_count; i++)
                n += atomic_load(&r[i].owner) != 0 && atomic_load(&r[i].pid) != (uint64_t)getpid();
        return n;
}

/* With the daemon running and no worker left: interrupted inserts repaired, records of dead
 * workers freed, within about 2 s (200 maintenance passes, 20 heartbeats). */
static void check_settled(void)
{
        uint64_t busy = 0, owned = 0, t0 = mono_ms();
        do {
                uint64_t count[4];
                walk_table(count, NULL);
                busy = count[THR_SLOT_BUSY];
                owned = owned_readers();
                if (!busy && !owned)
                        break;
                sleep_ms(10);
        } while (mono_ms() - t0 < 2000);
        report(busy == 0, "no BUSY slot %" PRIu64 " ms after the workers ended: %" PRIu64 " left",
               mono_ms() - t0, busy);
        report(owned == 0, "reader records still owned by workers: %" PRIu64, owned);
}

static void check_daemon(uint64_t gp0, uint64_t grace0)
{
        const struct thr_hdr *h = shm_hdr(&g.map);
        uint64_t gp = atomic_load(&h->gp_done) - gp0;
        uint64_t grace = atomic_load(&h->grace_periods) - grace0;
        uint64_t want = (uint64_t)(g.o.seconds * 2);
        report(gp >= want,
               "grace periods: %" PRIu64 " completed, %" PRIu64 " started (want >= %" PRIu64 ")",
               gp, grace, want);
        int st = 0;
        report(daemon_alive(&st), "throttled alive at the end (status %#x)", st);
        if (g.daemon <= 0)
                return;
        kill(g.daemon, SIGTERM);
        uint64_t t0 = mono_ms();
        while (daemon_alive(&st) && mono_ms() - t0 < 5000)
                sleep_ms(5);
        report(g.daemon == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
               "throttled stopped on SIGTERM in %" PRIu64 " ms (status %#x)", mono_ms() - t0, st);
}

static void two_live_slots(const char *key)
{
        fprintf(stderr, "stress_evict: two live slots for '%s'\n", key);
}

/* After the daemon stopped: within capacity, one live slot per key, nothing BUSY. */
static void check_table(void)
{
        const struct thr_table *geo = &g.snap.table;
        const struct thr_table *tb = shm_at(g.map.base, g.snap.table_off);
        struct stress_key *keys = calloc((size_t)geo->nshards * geo->shard_slots, sizeof(*keys));
        if (!keys)
                die("calloc", 0);
        uint64_t n[4];
        uint64_t live = walk_table(n, keys);
        uint64_t dups = stress_duplicates(keys, live, two_live_slots);
        free(keys);
        uint64_t counter = atomic_load(&tb->live);
        report(live <= geo->capacity && counter <= geo->capacity,
               "capacity %" PRIu64 ": %" PRIu64 " live slots, live counter %" PRIu64 " (%" PRIu64
               " dead, %" PRIu64 " empty)",
               geo->capacity, live, counter, n[THR_SLOT_DEAD], n[THR_SLOT_EMPTY]);
        report(dups == 0, "one live slot per key: %" PRIu64 " duplicates", dups);
        report(n[THR_SLOT_BUSY] == 0, "no BUSY slot after the daemon stopped: %" PRIu64,
               n[THR_SLOT_BUSY]);
        /* every live key within its home's reach: the lookup clients make finds it there */
        struct thr_slot *slots = shm_at(g.map.base, geo->slots_off);
        uint64_t lost = 0;
        for (uint64_t i = 0; i < (uint64_t)geo->nshards * geo->shard_slots; i++) {
                struct thr_slot *sl = &slots[i];
                if (THR_META_STATUS(atomic_load(&sl->meta)) != THR_SLOT_LIVE ||
                    sl->key_len > THR_KEY_MAX)
                        continue;
                uint64_t hash = shm_hash(shm_hdr(&g.map)->hash_key, sl->key, sl->key_len);
                if (shm_table_lookup(g.map.base, geo, hash, sl->key, sl->key_len) != sl) {
                        fprintf(stderr, "stress_evict: slot %" PRIu64 " beyond its home's reach\n",
                                i);
                        lost++;
                }
        }
        report(lost == 0, "every live key found by a lookup: %" PRIu64 " lost", lost);
}

static void check_counters(unsigned kills)
{
        const struct thr_table *geo = &g.snap.table;
        const struct thr_shard *sh = shm_at(g.map.base, geo->shards_off);
        uint64_t ev = 0, evf = 0, rec = 0, allowed = 0, repairs = 0;
        for (uint32_t i = 0; i < geo->nshards; i++) {
                ev += atomic_load(&sh[i].evicted);
                evf += atomic_load(&sh[i].evicted_full);
                rec += atomic_load(&sh[i].reclaimed);
                allowed += atomic_load(&sh[i].allowed_full);
                repairs += atomic_load(&sh[i].repairs);
        }
        const struct thr_table *tb = shm_at(g.map.base, g.snap.table_off);
        uint64_t forced = atomic_load(&shm_hdr(&g.map)->readers_forced);
        printf("stress_evict: counters: evicted %" PRIu64 " evicted_full %" PRIu64
               " reclaimed %" PRIu64 " insert_fail %" PRIu64 " allowed_full %" PRIu64
               " repairs %" PRIu64 " readers_forced %" PRIu64 "\n",
               ev, evf, rec, atomic_load(&tb->insert_fail), allowed, repairs, forced);
        report(ev + evf > 0 && rec > 0, "eviction and reuse happened");
        report(kills == 0 || forced > 0, "records of killed workers forced free (%u kills)", kills);
}

int main(int argc, char **argv)
{
        if (parse(argc, argv, &g.o) < 0) {
                usage(stderr);
                return 2;
        }
        printf("stress_evict: procs %d seconds %.1f capacity %" PRIu64 " keyspace %" PRIu64
               " hot %" PRIu64 " ttl-ms %" PRIu64 " kill-every-ms %" PRIu64
               " on-full %s seed %#" PRIx64 "\n",
               g.o.procs, g.o.seconds, g.o.capacity, g.o.keyspace, g.o.hot, g.o.ttl_ms,
               g.o.kill_every_ms, g.o.on_full, g.o.seed);
        fflush(stdout);
        g.c = mmap(NULL, sizeof(*g.c), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (g.c == MAP_FAILED)
                die("mmap", 0);
        atexit(teardown);
        setup();
        const struct thr_hdr *h = shm_hdr(&g.map);
        uint64_t gp0 = atomic_load(&h->gp_done), grace0 = atomic_load(&h->grace_periods);
        uint64_t t0 = arena_now();
        for (int i = 0; i < g.o.procs; i++)
                spawn(i);
        unsigned kills = run();
        stop_workers();
        uint64_t t1 = arena_now(), attempts = 0;
        for (int i = 0; i < g.o.procs; i++)
                attempts += atomic_load(&g.c->slot[i].attempts);
        printf("stress_evict: %.3f s, %u kills, %" PRIu64 " attempts\n", (double)(t1 - t0) / 1e9,
               kills, attempts);
        check_hot(t0, t1);
        check_settled();
        check_counters(kills);
        check_daemon(gp0, grace0);
        check_table();
        printf("stress_evict: %s\n", g.failures ? "FAIL" : "ok");
        return g.failures ? 1 : 0;
}

/*
 * fuzz_arena.c - the daemon's and shmctl's view of an arena a client rewrites at random.
 *
 *   fuzz_arena --seconds S [--seed X] --daemon PATH --shmctl PATH [--workers N]
 *
 * Every process that can map the arena can write any byte of it, so throttled and shmctl must
 * treat it as untrusted input: never crash, never hang, never write outside it. This starts the
 * real daemon on a private arena (maintenance every millisecond, idle keys evicted, a reload every
 * few hundred ms), N client workers deciding and inserting keys, and one scribbler process that
 * rewrites fields of every section with garbage, small numbers, zeroes, all-ones and offsets that
 * point elsewhere in the arena: header, directory, parameter records, tables, shard headers
 * (insert locks included), slots and reader records. Meanwhile shmctl runs every command, human
 * and --json, against the moving arena.
 *
 * Checks:
 *   - the daemon is alive at the end, every reload was answered, and SIGTERM stops it with exit 0
 *     within 5 s (no crash, no hang; an ASan/UBSan build aborts on a bad access or write);
 *   - every shmctl run ends within 10 s by exiting (0, 1 for "no such limiter or key", or a
 *     sysexits code), never by a signal;
 *   - the daemon's log holds no sanitizer report.
 * Client workers are trusted not to forge the arena (DESIGN.md's trust model): one that crashes
 * on what the scribbler wrote is counted and replaced, not a failure.
 * Prints the seed and what ran; exits 0 if every check holds (1 otherwise, 2 on bad arguments).
 * A failed run keeps its directory (config, arena copy, logs).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"
#include "stress_common.h"
#include "throttle/throttle.h"

#define MAX_WORKERS 16
#define SHMCTL_S    10

static struct {
        double seconds;
        uint64_t seed;
        const char *daemon, *shmctl;
        int workers;
        char dir[64], conf[96], log[96], path[96];
        pid_t daemon_pid, scribbler, worker[MAX_WORKERS];
        struct shm_map map;
        int failures;
        uint64_t shmctl_runs, shmctl_by_code[256], worker_crashes, reloads;
} g;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "fuzz_arena: FAIL: ");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        g.failures++;
}

static uint64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms)
{
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------- the daemon */

static void write_config(void)
{
        FILE *f = fopen(g.conf, "we");
        if (!f) {
                perror(g.conf);
                exit(1);
        }
        fprintf(f,
                "[arena]\nname = fuzz\ndir = %s\nhugepages = off\nmode = 0600\n"
                "clock = monotonic\nmax_limiters = 8\nmax_readers = 64\nspare = 1MiB\n\n"
                "[daemon]\nheartbeat_ms = 5\nmaintenance_ms = 1\nstall_ms = 50\nmetrics =\n\n"
                "[a]\nrate = 1000/s\nburst = 20\ncapacity = 2048\nshards = 8\nidle_ttl = 5ms\n"
                "on_full = evict\n\n"
                "[b]\nrate = 10/s\nburst = 5\ncapacity = 256\nidle_ttl = 20ms\non_full = allow\n",
                g.dir);
        fclose(f);
}

static pid_t spawn_daemon(void)
{
        pid_t parent = getpid(), pid = fork();
        if (pid != 0)
                return pid;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
                _exit(99);
        int fd = open(g.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0 || dup2(fd, STDERR_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0)
                _exit(98);
        execl(g.daemon, "throttled", "-c", g.conf, (char *)NULL);
        _exit(127);
}

static bool daemon_alive(void)
{
        int st;
        if (g.daemon_pid > 0 && waitpid(g.daemon_pid, &st, WNOHANG) == 0)
                return true;
        if (g.daemon_pid > 0)
                fail("throttled ended during the run (status %#x)", st);
        g.daemon_pid = 0;
        return false;
}

static void wait_arena(void)
{
        char err[256] = "";
        for (uint64_t t0 = mono_ms(); mono_ms() - t0 < 10000; sleep_ms(5)) {
                if (!daemon_alive())
                        break;
                if (shm_arena_attach(g.path, true, &g.map, err, sizeof(err)) == 0 &&
                    atomic_load(&shm_hdr(&g.map)->daemon_pid) == (uint64_t)g.daemon_pid)
                        return;
                shm_arena_detach(&g.map);
        }
        fail("arena %s not ready: %s", g.path, err);
        exit(1);
}

/* ---------------------------------------------------------------- clients and the scribbler */

static void worker(int idx)
{
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
                dup2(null, STDERR_FILENO); /* a trusted client's crash report is not ours */
        thr_arena *a;
        thr_limiter *l[2];
        if (thr_arena_open(g.path, 0, &a) < 0 || thr_limiter_open(a, "a", &l[0]) < 0 ||
            thr_limiter_open(a, "b", &l[1]) < 0)
                _exit(0);
        uint64_t x = g.seed ^ ((uint64_t)getpid() << 16) ^ (uint64_t)idx;
        for (;;) {
                char key[32];
                uint64_t r = stress_rng_next(&x);
                int len = snprintf(key, sizeof(key), "k%" PRIu64, r % 5000);
                if (r & 1) {
                        thr_limiter_try(l[(r >> 1) & 1], key, (size_t)len, 1 + (r >> 8) % 3, NULL);
                } else {
                        struct thr_reservation rv;
                        if (thr_limiter_reserve(l[0], key, (size_t)len, 1, 1000000, &rv) == 0 &&
                            (r & 4))
                                thr_reservation_cancel(&rv);
                }
        }
}

static pid_t spawn(void (*fn)(int), int idx)
{
        pid_t pid = stress_fork_tied();
        if (pid == 0) {
                fn(idx);
                _exit(0);
        }
        return pid;
}

/* A value a careless or hostile client might write: garbage, small, 0, ~0, an arena offset. */
static uint64_t garbage(uint64_t *x)
{
        uint64_t r = stress_rng_next(x);
        switch (r & 7) {
        case 0:
                return 0;
        case 1:
                return UINT64_MAX;
        case 2:
                return (r >> 8) & 0xff;
        case 3:
                return (r >> 8) % g.map.size; /* an offset somewhere in the arena */
        case 4:
                return ((r >> 8) % g.map.size) & ~63ull;
        case 5:
                return 1ull << ((r >> 8) & 63);
        default:
                return stress_rng_next(x);
        }
}

/* The section a scribble lands in: [off, off + len) of the arena, by the checked geometry. */
static void pick_region(uint64_t *x, uint64_t *off, uint64_t *len)
{
        const struct shm_geom *geo = &g.map.g;
        uint64_t r = stress_rng_next(x) % 100;
        if (r < 2) { /* header fields after the version (a wrong magic or major is caught once) */
                *off = 16;
                *len = THR_HDR_SIZE - 16;
        } else if (r < 20) {
                *off = geo->dir_off;
                *len = (uint64_t)geo->dir_count * THR_DIR_ENTRY_SIZE;
        } else if (r < 35) {
                *off = geo->reader_off;
                *len = (uint64_t)geo->reader_count * THR_READER_SIZE;
        } else {
                *off = geo->heap_off; /* parameter records, tables, shards, slots */
                *len = geo->heap_top - geo->heap_off;
        }
}

/*
 * At most UNDO words are garbage at any time: each write first puts back the oldest one. An
 * arena rewritten for good fails every check at the header and exercises nothing deeper; one that
 * keeps changing under the readers, mostly valid, reaches every path that trusts a field.
 */
#define UNDO 4

static void scribbler(int idx)
{
        (void)idx;
        uint64_t x = g.seed * 0x9e3779b97f4a7c15ull + 1;
        char *base = g.map.base;
        struct {
                bool used;
                uint64_t at, old;
        } undo[UNDO] = {{false, 0, 0}};
        for (uint64_t n = 0;; n++) {
                int slot = (int)(n % UNDO);
                if (undo[slot].used) { /* the oldest garbage word gets its value back */
                        memcpy(base + undo[slot].at, &undo[slot].old, 8);
                        undo[slot].used = false;
                }
                uint64_t off, len;
                pick_region(&x, &off, &len);
                if (len < 8)
                        continue;
                uint64_t at = off + (stress_rng_next(&x) % (len / 8)) * 8;
                bool pending = false; /* garbage already: its saved value must stay the true one */
                for (int k = 0; k < UNDO; k++)
                        pending |= undo[k].used && undo[k].at == at;
                if (pending)
                        continue;
                uint64_t v = garbage(&x);
                undo[slot].used = true;
                undo[slot].at = at;
                memcpy(&undo[slot].old, base + at, 8);
                memcpy(base + at, &v, sizeof(v));
                if (n % 64 == 0) {
                        struct timespec ts = {0, 20000};
                        nanosleep(&ts, NULL); /* let the others run between bursts */
                }
        }
}

/* ---------------------------------------------------------------- shmctl */

static const char *const commands[][4] = {
    {"status", NULL},         {"limiters", NULL}, {"readers", NULL}, {"keys", "a", NULL},
    {"keys", "b", "-n", "5"}, {"get", "a", "k1"}, {"get", "b", "k2"}};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

/* Run shmctl with ARGV; it must exit (any code) within SHMCTL_S seconds. */
static void run_shmctl(const char *const *cmd, bool json)
{
        const char *argv[10] = {"shmctl", "-a", g.path};
        int n = 3;
        if (json)
                argv[n++] = "--json";
        for (int i = 0; i < 4 && cmd[i]; i++)
                argv[n++] = cmd[i];
        argv[n] = NULL;
        pid_t pid = stress_fork_tied();
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY);
                if (null < 0 || dup2(null, STDOUT_FILENO) < 0 ||
                    (!getenv("FUZZ_SHOW") && dup2(null, STDERR_FILENO) < 0))
                        _exit(98);
                execv(g.shmctl, (char *const *)argv);
                _exit(127);
        }
        int st = 0;
        uint64_t t0 = mono_ms();
        while (waitpid(pid, &st, WNOHANG) == 0) {
                if (mono_ms() - t0 > SHMCTL_S * 1000) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &st, 0);
                        fail("shmctl %s%s hung", json ? "--json " : "", cmd[0]);
                        return;
                }
                sleep_ms(1);
        }
        g.shmctl_runs++;
        if (WIFSIGNALED(st))
                fail("shmctl %s%s %s: killed by signal %d", json ? "--json " : "", cmd[0],
                     cmd[1] ? cmd[1] : "", WTERMSIG(st));
        else
                g.shmctl_by_code[WEXITSTATUS(st) & 255]++;
}

/* ---------------------------------------------------------------- the run */

static void keep_workers(void)
{
        for (int i = 0; i < g.workers; i++) {
                int st;
                if (g.worker[i] > 0 && waitpid(g.worker[i], &st, WNOHANG) == 0)
                        continue;
                if (g.worker[i] > 0)
                        g.worker_crashes++;
                g.worker[i] = spawn(worker, i);
        }
}

static void run(void)
{
        g.scribbler = spawn(scribbler, 0);
        uint64_t t0 = mono_ms(), next_reload = t0 + 200, i = 0;
        while (mono_ms() - t0 < (uint64_t)(g.seconds * 1000) && daemon_alive()) {
                keep_workers();
                run_shmctl(commands[i % NCOMMANDS], (i / NCOMMANDS) & 1);
                i++;
                if (mono_ms() >= next_reload) {
                        kill(g.daemon_pid, SIGHUP);
                        g.reloads++;
                        next_reload = mono_ms() + 300;
                }
        }
        kill(g.scribbler, SIGKILL);
        waitpid(g.scribbler, NULL, 0);
        for (int k = 0; k < g.workers; k++)
                if (g.worker[k] > 0 && kill(g.worker[k], SIGKILL) == 0)
                        waitpid(g.worker[k], NULL, 0);
}

static void stop_daemon(void)
{
        if (!daemon_alive())
                return;
        kill(g.daemon_pid, SIGTERM);
        int st = 0;
        uint64_t t0 = mono_ms();
        while (waitpid(g.daemon_pid, &st, WNOHANG) == 0) {
                if (mono_ms() - t0 > 5000) {
                        kill(g.daemon_pid, SIGKILL);
                        waitpid(g.daemon_pid, &st, 0);
                        fail("throttled did not stop within 5 s of SIGTERM");
                        return;
                }
                sleep_ms(5);
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail("throttled stopped with status %#x", st);
}

/* The log must hold no sanitizer report and no line past what a reload answers. */
static void check_log(void)
{
        FILE *f = fopen(g.log, "re");
        if (!f)
                return;
        char line[1024];
        while (fgets(line, sizeof(line), f))
                if (strstr(line, "AddressSanitizer") || strstr(line, "runtime error:") ||
                    strstr(line, "LeakSanitizer"))
                        fail("sanitizer report in the daemon's log: %s", line);
        fclose(f);
}

static int parse(int argc, char **argv)
{
        static const struct option opts[] = {
            {"seconds", required_argument, 0, 's'}, {"seed", required_argument, 0, 'x'},
            {"daemon", required_argument, 0, 'd'},  {"shmctl", required_argument, 0, 'c'},
            {"workers", required_argument, 0, 'w'}, {0, 0, 0, 0}};
        g.seconds = 5;
        g.workers = 2;
        g.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        int c;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (c) {
                case 's':
                        g.seconds = atof(optarg);
                        break;
                case 'x':
                        g.seed = strtoull(optarg, NULL, 0);
                        break;
                case 'd':
                        g.daemon = optarg;
                        break;
                case 'c':
                        g.shmctl = optarg;
                        break;
                case 'w':
                        g.workers = atoi(optarg);
                        break;
                default:
                        return -1;
                }
        }
        if (optind != argc || !g.daemon || !g.shmctl || g.seconds <= 0 || g.workers < 0 ||
            g.workers > MAX_WORKERS)
                return -1;
        g.seed |= 1;
        return 0;
}

int main(int argc, char **argv)
{
        if (parse(argc, argv) < 0) {
                fprintf(stderr, "usage: fuzz_arena --seconds S [--seed X] --daemon PATH "
                                "--shmctl PATH [--workers N]\n");
                return 2;
        }
        snprintf(g.dir, sizeof(g.dir), "/dev/shm/thrfuzz.XXXXXX");
        if (!mkdtemp(g.dir)) {
                perror("mkdtemp");
                return 1;
        }
        snprintf(g.conf, sizeof(g.conf), "%s/throttled.conf", g.dir);
        snprintf(g.log, sizeof(g.log), "%s/throttled.log", g.dir);
        snprintf(g.path, sizeof(g.path), "%s/throttle.fuzz", g.dir);
        printf("fuzz_arena: seed %#" PRIx64 " (--seed to replay), %.1f s, %d workers, dir %s\n",
               g.seed, g.seconds, g.workers, g.dir);
        write_config();
        g.daemon_pid = spawn_daemon();
        wait_arena();
        run();
        stop_daemon();
        check_log();
        printf("fuzz_arena: %" PRIu64 " shmctl runs (exit 0: %" PRIu64 ", 1: %" PRIu64
               ", 65 corrupt: %" PRIu64 ", other: %" PRIu64 "), %" PRIu64 " reloads, %" PRIu64
               " client workers crashed on scribbled state (trusted; replaced)\n",
               g.shmctl_runs, g.shmctl_by_code[0], g.shmctl_by_code[1], g.shmctl_by_code[65],
               g.shmctl_runs - g.shmctl_by_code[0] - g.shmctl_by_code[1] - g.shmctl_by_code[65],
               g.reloads, g.worker_crashes);
        if (g.failures) {
                printf("fuzz_arena: %d failures; kept %s\n", g.failures, g.dir);
                return 1;
        }
        shm_arena_detach(&g.map);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", g.dir);
        if (system(cmd) != 0)
                fprintf(stderr, "fuzz_arena: could not remove %s\n", g.dir);
        printf("fuzz_arena: PASS\n");
        return 0;
}

/*
 * test_daemon.c - proves that the real throttled binary creates its arena and serves clients,
 * survives a restart with every bucket kept (and a changed rate applied to the kept state), keeps
 * a second daemon out, refuses bad configs with the file and line, checks configs with --check, and
 * on SIGHUP keeps the running config when the new one is broken and adds a new limiter otherwise.
 *
 * Each test writes a config into a fresh directory under /dev/shm, with a manual clock and a
 * unique arena name, and runs $THR_TEST_BUILD_DIR/daemon/throttled on it (CTest sets the variable).
 * Readiness is polled from the arena itself (file present, daemon lock held, attach count), within
 * a bounded time, never assumed after a fixed sleep.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define MS         1000000ull
#define MAX_D      4
#define READY_SECS 5

static struct {
        char dir[64]; /* private directory: config, logs, and (if in_dir) the arena */
        char conf[128];
        char name[64];   /* arena name, unique */
        char arena[256]; /* arena file */
        bool in_dir;     /* arena in the private dir ([arena] dir =) or in /dev/shm */
        pid_t pid[MAX_D];
        int nlogs;
        struct shm_map map; /* the test's own read-write mapping of the arena */
        thr_arena *a;
        thr_limiter *l[2];
} fx;

static void setup(void)
{
        memset(&fx, 0, sizeof(fx));
        snprintf(fx.dir, sizeof(fx.dir), "/dev/shm/thrtest.XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir), "mkdtemp: %s", strerror(errno));
        snprintf(fx.conf, sizeof(fx.conf), "%s/throttled.conf", fx.dir);
        snprintf(fx.name, sizeof(fx.name), "dt%d", (int)getpid());
}

static void unmap(void)
{
        for (int i = 0; i < 2; i++) {
                thr_limiter_close(fx.l[i]);
                fx.l[i] = NULL;
        }
        if (fx.a)
                thr_arena_close(fx.a);
        fx.a = NULL;
        shm_arena_detach(&fx.map);
        memset(&fx.map, 0, sizeof(fx.map));
}

static void teardown(void)
{
        for (int i = 0; i < MAX_D; i++) {
                if (fx.pid[i] > 0) {
                        kill(fx.pid[i], SIGKILL);
                        waitpid(fx.pid[i], NULL, 0);
                }
        }
        unmap();
        if (fx.arena[0])
                unlink(fx.arena);
        DIR *d = opendir(fx.dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
                char p[512];
                if (e->d_name[0] == '.')
                        continue;
                snprintf(p, sizeof(p), "%s/%s", fx.dir, e->d_name);
                unlink(p);
        }
        if (d)
                closedir(d);
        rmdir(fx.dir);
}

TestSuite(daemon, .init = setup, .fini = teardown, .timeout = 120);

/* ---------------------------------------------------------------- config and process */

/* Write the config: [arena] in the private dir or /dev/shm, then LIMITERS (INI text). */
static void write_config(bool in_dir, const char *limiters)
{
        fx.in_dir = in_dir;
        if (in_dir)
                snprintf(fx.arena, sizeof(fx.arena), "%s/throttle.%s", fx.dir, fx.name);
        else
                snprintf(fx.arena, sizeof(fx.arena), "/dev/shm/throttle.%s", fx.name);
        FILE *f = fopen(fx.conf, "we");
        cr_assert_not_null(f, "%s: %s", fx.conf, strerror(errno));
        fprintf(f,
                "[arena]\nname = %s\n%s%s\nclock = manual\nhugepages = off\nmode = 0600\n"
                "max_limiters = 8\nmax_readers = 64\nspare = 1MiB\n\n"
                "[daemon]\nheartbeat_ms = 20\nmetrics =\n\n%s",
                fx.name, in_dir ? "dir = " : "", in_dir ? fx.dir : "", limiters);
        cr_assert_eq(fclose(f), 0);
}

/* Overwrite the config with raw TEXT. */
static void write_raw(const char *text)
{
        FILE *f = fopen(fx.conf, "we");
        cr_assert_not_null(f);
        fputs(text, f);
        cr_assert_eq(fclose(f), 0);
}

static const char *daemon_bin(void)
{
        static char bin[512];
        const char *bd = getenv("THR_TEST_BUILD_DIR");
        cr_assert_not_null(bd, "THR_TEST_BUILD_DIR is not set (run through ctest)");
        snprintf(bin, sizeof(bin), "%s/daemon/throttled", bd);
        cr_assert_eq(access(bin, X_OK), 0, "%s: %s", bin, strerror(errno));
        return bin;
}

static void log_path(int i, char *out, size_t n)
{
        snprintf(out, n, "%s/daemon-%d.log", fx.dir, i);
}

/* Start throttled with EXTRA (NULL or "--check") on the config; output to its own log. */
static int start(const char *extra)
{
        const char *bin = daemon_bin();
        int i = fx.nlogs++;
        cr_assert_lt(i, MAX_D);
        char log[256];
        log_path(i, log, sizeof(log));
        pid_t pid = tfork();
        cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                FILE *f = fopen(log, "we");
                if (!f)
                        _exit(126);
                dup2(fileno(f), 1);
                dup2(fileno(f), 2);
                setenv("THROTTLE_LOG", "info", 1);
                setenv("ASAN_OPTIONS", "detect_leaks=1:exitcode=99", 0);
                if (extra)
                        execl(bin, "throttled", "-c", fx.conf, extra, (char *)NULL);
                else
                        execl(bin, "throttled", "-c", fx.conf, (char *)NULL);
                _exit(127);
        }
        fx.pid[i] = pid;
        return i;
}

/* The log of daemon I (stdout and stderr). */
static const char *log_of(int i)
{
        static char buf[16384];
        char p[256];
        log_path(i, p, sizeof(p));
        buf[0] = '\0';
        FILE *f = fopen(p, "re");
        if (f) {
                size_t n = fread(buf, 1, sizeof(buf) - 1, f);
                buf[n] = '\0';
                fclose(f);
        }
        return buf;
}

static double elapsed_s(const struct timespec *t0)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void doze(void)
{
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
}

/* Wait (bounded) for daemon I to exit; returns its wait status. */
static int wait_exit(int i)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                int st;
                pid_t r = waitpid(fx.pid[i], &st, WNOHANG);
                cr_assert_geq(r, 0, "waitpid: %s", strerror(errno));
                if (r == fx.pid[i]) {
                        fx.pid[i] = 0;
                        return st;
                }
                cr_assert_lt(elapsed_s(&t0), READY_SECS, "daemon %d did not exit; log:\n%s", i,
                             log_of(i));
                doze();
        }
}

static int exit_code(int i)
{
        int st = wait_exit(i);
        cr_assert(WIFEXITED(st), "daemon %d died by signal %d; log:\n%s", i,
                  WIFSIGNALED(st) ? WTERMSIG(st) : 0, log_of(i));
        return WEXITSTATUS(st);
}

/* SIGTERM daemon I: it must exit 0. */
static void stop(int i)
{
        cr_assert_eq(kill(fx.pid[i], SIGTERM), 0);
        int code = exit_code(i);
        cr_assert_eq(code, 0, "daemon %d exit code %d after SIGTERM; log:\n%s", i, code, log_of(i));
}

/*
 * Wait (bounded) until daemon I runs the arena: the file exists, the daemon lock is held, the
 * header names its pid, and it has attached ATTACH times in all. Maps the arena (fx.map) and
 * opens it through the client API (fx.a).
 */
static void wait_ready(int i, uint64_t attach)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        unmap();
        for (;;) {
                int st;
                cr_assert_eq(waitpid(fx.pid[i], &st, WNOHANG), 0,
                             "daemon %d exited (status %#x) before it was ready; log:\n%s", i, st,
                             log_of(i));
                char err[256];
                if (!fx.map.base && access(fx.arena, F_OK) == 0 &&
                    shm_arena_attach(fx.arena, true, &fx.map, err, sizeof(err)) < 0)
                        memset(&fx.map, 0, sizeof(fx.map));
                if (fx.map.base) {
                        pid_t holder = 0;
                        const struct thr_hdr *h = shm_hdr(&fx.map);
                        if (shm_daemon_alive(&fx.map, &holder) == 1 && holder == fx.pid[i] &&
                            atomic_load(&h->attach_count) == attach)
                                break;
                }
                cr_assert_lt(elapsed_s(&t0), READY_SECS,
                             "daemon %d not ready after %d s (arena %s); log:\n%s", i, READY_SECS,
                             fx.arena, log_of(i));
                doze();
        }
        cr_assert_eq(thr_arena_open(fx.arena, 0, &fx.a), 0);
}

static thr_limiter *lim(int slot, const char *name)
{
        thr_limiter_close(fx.l[slot]);
        fx.l[slot] = NULL;
        int rc = thr_limiter_open(fx.a, name, &fx.l[slot]);
        cr_assert_eq(rc, 0, "limiter %s: %s", name, thr_strerror(rc));
        return fx.l[slot];
}

/* The state word of KEY in limiter NAME, read from the test's own mapping. */
static uint64_t state_of(const char *name, const char *key)
{
        int idx = shm_dir_find(&fx.map, name);
        cr_assert_geq(idx, 0, "limiter %s", name);
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(fx.map.base, shm_hdr(&fx.map)->dir_off) + idx;
        const struct thr_table *tb = shm_at(fx.map.base, de->table_off);
        uint64_t h = shm_hash(shm_hdr(&fx.map)->secret, key, strlen(key));
        struct thr_slot *s = shm_table_lookup(fx.map.base, tb, h, key, (uint32_t)strlen(key));
        cr_assert_not_null(s, "key %s in limiter %s", key, name);
        return atomic_load(&s->state);
}

static uint64_t params_off_of(const char *name)
{
        int idx = shm_dir_find(&fx.map, name);
        cr_assert_geq(idx, 0, "limiter %s", name);
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(fx.map.base, shm_hdr(&fx.map)->dir_off) + idx;
        return atomic_load(&de->params_off);
}

/* A peek (cost 0) at KEY: what is left, and the limit in force. */
static struct thr_result peek(thr_limiter *l, const char *key)
{
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, key, strlen(key), 0, &r), 1, "peek %s", key);
        return r;
}

/* Wait (bounded) until the log of daemon I contains WHAT. */
static void wait_log(int i, const char *what)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (!strstr(log_of(i), what)) {
                cr_assert_lt(elapsed_s(&t0), READY_SECS, "no \"%s\" in the log of daemon %d:\n%s",
                             what, i, log_of(i));
                doze();
        }
}

#define LIM_10 "[lim]\nrate = 10/s\nburst = 10\ncapacity = 64\n"
#define LIM_20 "[lim]\nrate = 20/s\nburst = 20\ncapacity = 64\n"
#define EXTRA  "[extra]\nrate = 5/s\nburst = 5\ncapacity = 16\n"

/* ---------------------------------------------------------------- (a) start and serve */

Test(daemon, starts_creates_the_arena_and_serves_clients)
{
        write_config(true, LIM_10);
        int d = start(NULL);
        wait_ready(d, 1);
        const struct thr_hdr *h = shm_hdr(&fx.map);
        cr_assert_eq(h->clock_id, THR_CLOCK_MANUAL);
        cr_assert_eq(h->backing, THR_BACKING_SHM);
        cr_assert_str_eq(h->name, fx.name);
        cr_assert_eq(atomic_load(&h->daemon_pid), (uint64_t)fx.pid[d]);
        thr_limiter *l = lim(0, "lim");
        for (int i = 0; i < 10; i++)
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1, "try %d", i);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 0);
        cr_assert_eq(thr_clock_advance(fx.a, 100 * MS), 0);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1, "one token per 100 ms");
        stop(d);
        cr_assert_eq(access(fx.arena, F_OK), 0, "the arena stays after the daemon stops");
        cr_assert_eq(atomic_load(&h->daemon_pid), 0, "the daemon cleared its identity");
        cr_assert_eq(shm_daemon_alive(&fx.map, NULL), 0, "the daemon lock went with it");
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 0, "clients work without the daemon");
}

/* ---------------------------------------------------------------- (b) restart keeps state */

static void restart_keeps_state(bool in_dir)
{
        write_config(in_dir, LIM_10);
        int d = start(NULL);
        wait_ready(d, 1);
        thr_limiter *l = lim(0, "lim");
        for (int i = 0; i < 3; i++)
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1);
        cr_assert_eq(thr_clock_advance(fx.a, 40 * MS), 0);
        uint64_t tat = state_of("lim", "k"), now;
        thr_clock_now(fx.a, &now);
        struct thr_result before = peek(l, "k");
        cr_assert_eq(before.remaining, 7, "3 taken 40 ms ago at 10/s: 7 whole tokens left");
        stop(d);

        d = start(NULL);
        wait_ready(d, 2);
        uint64_t now2;
        thr_clock_now(fx.a, &now2);
        cr_assert_eq(now2, now, "the manual clock is kept");
        cr_assert_eq(state_of("lim", "k"), tat, "TAT unchanged by the restart");
        l = lim(0, "lim");
        struct thr_result after = peek(l, "k");
        cr_assert_eq(after.remaining, before.remaining);
        cr_assert_eq(after.reset_after_ns, before.reset_after_ns);
        cr_assert_eq(atomic_load(&shm_hdr(&fx.map)->attach_count), 2);
        stop(d);
}

/* Arena in [arena] dir: the restart must look there, not where clients look by name. */
Test(daemon, restart_keeps_bucket_state)
{
        restart_keeps_state(true);
}

/* No [arena] dir: the arena is found by name in /dev/shm. */
Test(daemon, restart_keeps_bucket_state_in_dev_shm)
{
        restart_keeps_state(false);
}

/* ---------------------------------------------------------------- (c) one daemon per arena */

static void second_daemon_refused(bool in_dir)
{
        write_config(in_dir, LIM_10);
        int d = start(NULL);
        wait_ready(d, 1);
        int d2 = start(NULL);
        int code = exit_code(d2);
        cr_assert_eq(code, EX_UNAVAILABLE, "second daemon exit code %d; log:\n%s", code,
                     log_of(d2));
        cr_assert_not_null(strstr(log_of(d2), "another throttled"),
                           "the refusal names the running daemon:\n%s", log_of(d2));
        pid_t holder = 0;
        cr_assert_eq(shm_daemon_alive(&fx.map, &holder), 1);
        cr_assert_eq(holder, fx.pid[d], "the first daemon still holds the arena");
        cr_assert_eq(atomic_load(&shm_hdr(&fx.map)->attach_count), 1);
        cr_assert_eq(atomic_load(&shm_hdr(&fx.map)->daemon_pid), (uint64_t)fx.pid[d]);
        stop(d);
}

/* The refusal must come from the lock ("another throttled"), not from a failed creation. */
Test(daemon, second_daemon_is_refused)
{
        second_daemon_refused(true);
}

Test(daemon, second_daemon_is_refused_in_dev_shm)
{
        second_daemon_refused(false);
}

/* ---------------------------------------------------------------- (d, e) bad config, --check */

Test(daemon, bad_config_exits_ex_config_with_file_and_line)
{
        char text[256];
        snprintf(text, sizeof(text),
                 "[arena]\nname = %s\nclock = sundial\n\n[lim]\nrate = 10/s\nburst = zero\n",
                 fx.name);
        write_raw(text);
        int d = start(NULL);
        cr_assert_eq(exit_code(d), EX_CONFIG, "log:\n%s", log_of(d));
        char want[256];
        snprintf(want, sizeof(want), "%s:3:", fx.conf);
        cr_assert_not_null(strstr(log_of(d), want), "no \"%s\" in:\n%s", want, log_of(d));
        snprintf(want, sizeof(want), "%s:7:", fx.conf);
        cr_assert_not_null(strstr(log_of(d), want), "no \"%s\" in:\n%s", want, log_of(d));
        snprintf(want, sizeof(want), "/dev/shm/throttle.%s", fx.name);
        cr_assert_neq(access(want, F_OK), 0, "no arena for a bad config");
}

Test(daemon, check_validates_without_creating_the_arena)
{
        write_config(true, LIM_10);
        int d = start("--check");
        cr_assert_eq(exit_code(d), 0, "log:\n%s", log_of(d));
        cr_assert_not_null(strstr(log_of(d), "ok"), "--check says ok:\n%s", log_of(d));
        cr_assert_neq(access(fx.arena, F_OK), 0, "--check created %s", fx.arena);

        write_raw("[arena]\nname = x\n[lim]\nrate = 10/parsec\n");
        d = start("--check");
        cr_assert_eq(exit_code(d), EX_CONFIG, "log:\n%s", log_of(d));
        char want[256];
        snprintf(want, sizeof(want), "%s:4:", fx.conf);
        cr_assert_not_null(strstr(log_of(d), want), "no \"%s\" in:\n%s", want, log_of(d));
}

/* ---------------------------------------------------------------- (f) new rate on restart */

static void restart_applies_new_rate(bool in_dir)
{
        write_config(in_dir, LIM_10); /* T = 100 ms, B = 10, K = 1 */
        int d = start(NULL);
        wait_ready(d, 1);
        thr_limiter *l = lim(0, "lim");
        for (int i = 0; i < 3; i++)
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1);
        uint64_t tat = state_of("lim", "k");
        uint64_t k_before =
            ((const struct thr_params *)shm_at(fx.map.base, params_off_of("lim")))->k;
        stop(d);

        write_config(in_dir, LIM_20); /* T = 50 ms, B = 20, same K */
        d = start(NULL);
        wait_ready(d, 2);
        const struct thr_params *p = shm_at(fx.map.base, params_off_of("lim"));
        cr_assert_eq(p->k, k_before, "same time unit");
        cr_assert_eq(p->burst, 20);
        cr_assert_eq(state_of("lim", "k"), tat, "the bucket kept its TAT");
        l = lim(0, "lim");
        struct thr_result r = peek(l, "k");
        /* TAT - now = 300 ms of debt; new B*T = 1000 ms; remaining = (1000 - 300) / 50 = 14. */
        cr_assert_eq(r.limit, 20);
        cr_assert_eq(r.remaining, 14, "remaining %lu under the new rate",
                     (unsigned long)r.remaining);
        cr_assert_eq(r.reset_after_ns, 300 * MS);
        for (int i = 0; i < 14; i++)
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1, "try %d", i);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, &r), 0);
        cr_assert_eq(r.retry_after_ns, 50 * MS, "the new interval");
        stop(d);
}

Test(daemon, restart_applies_a_changed_rate_to_kept_state)
{
        restart_applies_new_rate(true);
}

Test(daemon, restart_applies_a_changed_rate_to_kept_state_in_dev_shm)
{
        restart_applies_new_rate(false);
}

/* ---------------------------------------------------------------- (g) SIGHUP */

Test(daemon, sighup_keeps_running_config_when_broken_and_adds_limiters)
{
        write_config(true, LIM_10);
        int d = start(NULL);
        wait_ready(d, 1);
        thr_limiter *l = lim(0, "lim");
        for (int i = 0; i < 4; i++)
                cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 1);
        const struct thr_hdr *h = shm_hdr(&fx.map);
        uint64_t gen = atomic_load(&h->config_gen), poff = params_off_of("lim");

        /* A broken config: refused, the running one kept, the daemon keeps running. */
        write_raw("[arena]\nname = x\n[lim]\nrate = ten/s\n");
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        wait_log(d, "reload refused");
        cr_assert_eq(waitpid(fx.pid[d], NULL, WNOHANG), 0, "the daemon died on a bad reload");
        cr_assert_eq(atomic_load(&h->config_gen), gen, "config generation unchanged");
        cr_assert_eq(params_off_of("lim"), poff, "parameter record unchanged");
        cr_assert_lt(shm_dir_find(&fx.map, "x"), 0);
        struct thr_result r = peek(l, "k");
        cr_assert_eq(r.limit, 10);
        cr_assert_eq(r.remaining, 6);

        /* A good config with a new limiter: added; the old one keeps its state. */
        write_config(true, LIM_10 EXTRA);
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (shm_dir_find(&fx.map, "extra") < 0) {
                cr_assert_lt(elapsed_s(&t0), READY_SECS, "[extra] never appeared; log:\n%s",
                             log_of(d));
                doze();
        }
        cr_assert_gt(atomic_load(&h->config_gen), gen);
        thr_limiter *x = lim(1, "extra");
        for (int i = 0; i < 5; i++)
                cr_assert_eq(thr_limiter_try(x, "k", 1, 1, NULL), 1, "extra try %d", i);
        cr_assert_eq(thr_limiter_try(x, "k", 1, 1, NULL), 0, "extra: burst 5");
        cr_assert_eq(peek(l, "k").remaining, 6, "lim kept its state across the reload");
        cr_assert_eq(params_off_of("lim"), poff, "unchanged parameters keep their record");
        stop(d);
}

/*
 * test_daemon_start.c - proves that throttled's start-up never harms an arena or a running
 * daemon (issue 18): `--recreate` never removes an arena another daemon holds, whatever made the
 * attach fail, and says loudly what it removes when it does; SIGHUP, SIGTERM and SIGINT that
 * arrive while it starts (its config still being read) are handled, not fatal; a daemon killed
 * while it builds its arena leaves no temporary file (nor, on hugetlbfs, huge pages) behind,
 * and one left by a dead builder is removed at the next start, with a log line.
 *
 * Each test runs the real throttled on a config in a fresh directory (struct tdaemon, helpers.h),
 * polls every outcome within a bound, and never relies on a fixed sleep.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "helpers.h"

static struct tdaemon fx;

static void setup(void)
{
        tdaemon_init(&fx);
}

static void teardown(void)
{
        tdaemon_fini(&fx);
}

TestSuite(daemon_start, .init = setup, .fini = teardown, .timeout = 120);

/* One key, one token a second: a second admission within the second means two arenas. */
#define ONE_PER_S "[lim]\nrate = 1/s\nburst = 1\ncapacity = 64\n"

static ino_t inode_of(const char *path)
{
        struct stat st;
        cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
        return st.st_ino;
}

/* Replace FROM by TO in D's config file (one occurrence, which must exist). */
static void config_edit(struct tdaemon *d, const char *from, const char *to)
{
        char text[4096], out[4096];
        FILE *f = fopen(d->conf, "re");
        cr_assert_not_null(f);
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[n] = '\0';
        char *at = strstr(text, from);
        cr_assert_not_null(at, "no \"%s\" in the config", from);
        snprintf(out, sizeof(out), "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
        tdaemon_config_raw(d, out);
}

/* Take KEY's one token through a fresh open of the arena file: 1 admitted, 0 denied. */
static int take_fresh(const char *key)
{
        thr_arena *a;
        thr_limiter *l;
        int rc = thr_arena_open(fx.arena, 0, &a);
        cr_assert_eq(rc, 0, "thr_arena_open: %s", thr_strerror(rc));
        cr_assert_eq(thr_limiter_open(a, "lim", &l), 0);
        rc = thr_limiter_try(l, key, strlen(key), 1, NULL);
        thr_limiter_close(l);
        thr_arena_close(a);
        return rc;
}

/* A second daemon with --recreate, the arena held by the first: exit 69, the arena intact. */
static void expect_recreate_refused(int d0, ino_t ino)
{
        int d1 = tdaemon_start(&fx, "--recreate");
        int code = tdaemon_exit_code(&fx, d1);
        cr_assert_eq(code, EX_UNAVAILABLE, "exit %d; log:\n%s", code, tdaemon_log(&fx, d1));
        cr_assert_not_null(strstr(tdaemon_log(&fx, d1), "another throttled"), "%s",
                           tdaemon_log(&fx, d1));
        cr_assert_eq(inode_of(fx.arena), ino, "the arena file was replaced");
        pid_t holder = 0;
        cr_assert_eq(shm_daemon_alive(&fx.map, &holder), 1);
        cr_assert_eq(holder, fx.pid[d0], "the first daemon still holds the arena");
        cr_assert_eq(atomic_load(&shm_hdr(&fx.map)->attach_count), 1);
}

/* The attach fails because the header names another pid namespace (a daemon in a container, or
 * a corrupt header): the old code unlinked the held arena and ran a second daemon on a new one. */
Test(daemon_start, recreate_never_removes_a_held_arena_pidns)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        int d0 = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d0, 1);
        cr_assert_eq(take_fresh("k"), 1);
        ino_t ino = inode_of(fx.arena);
        struct thr_hdr *h = shm_hdr(&fx.map);
        uint64_t pidns = h->pidns_ino;
        h->pidns_ino = pidns + 12345;
        expect_recreate_refused(d0, ino);
        h->pidns_ino = pidns;
        cr_assert_eq(take_fresh("k"), 0, "1/s burst 1: a second admission means a second arena");
        tdaemon_stop(&fx, d0);
}

/* The attach fails because this config asks for hugepages and the arena is in /dev/shm. */
Test(daemon_start, recreate_never_removes_a_held_arena_hugepages)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        int d0 = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d0, 1);
        cr_assert_eq(take_fresh("k"), 1);
        ino_t ino = inode_of(fx.arena);
        config_edit(&fx, "hugepages = off", "hugepages = require");
        expect_recreate_refused(d0, ino);
        cr_assert_eq(take_fresh("k"), 0, "1/s burst 1: a second admission means a second arena");
        tdaemon_stop(&fx, d0);
}

/* Without --recreate a held arena that this daemon cannot use is left alone too, and the refusal
 * says a daemon runs on it (EX_UNAVAILABLE) rather than blaming the arena. */
Test(daemon_start, unusable_held_arena_is_reported_as_held)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        int d0 = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d0, 1);
        ino_t ino = inode_of(fx.arena);
        config_edit(&fx, "hugepages = off", "hugepages = require");
        int d1 = tdaemon_start(&fx, NULL);
        int code = tdaemon_exit_code(&fx, d1);
        cr_assert_eq(code, EX_UNAVAILABLE, "exit %d; log:\n%s", code, tdaemon_log(&fx, d1));
        cr_assert_eq(inode_of(fx.arena), ino);
        tdaemon_stop(&fx, d0);
}

/* No daemon holds it: --recreate replaces an unusable arena, and the log says what was removed,
 * why, and that every limit is reset. Without --recreate nothing is removed. */
Test(daemon_start, recreate_replaces_an_unheld_unusable_arena_loudly)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        int d0 = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d0, 1);
        tdaemon_stop(&fx, d0);
        ino_t ino = inode_of(fx.arena);
        shm_hdr(&fx.map)->pidns_ino += 12345;
        tdaemon_unmap(&fx);

        int d1 = tdaemon_start(&fx, NULL);
        int code = tdaemon_exit_code(&fx, d1);
        cr_assert_eq(code, EX_DATAERR, "exit %d; log:\n%s", code, tdaemon_log(&fx, d1));
        cr_assert_eq(inode_of(fx.arena), ino, "removed without --recreate");

        int d2 = tdaemon_start(&fx, "--recreate");
        tdaemon_wait_ready(&fx, d2, 1);
        cr_assert_neq(inode_of(fx.arena), ino, "a new arena");
        const char *log = tdaemon_log(&fx, d2);
        cr_assert_not_null(strstr(log, "removing arena"), "%s", log);
        cr_assert_not_null(strstr(log, "pid namespace"), "the reason is given:\n%s", log);
        cr_assert_not_null(strstr(log, "every limit is reset"), "%s", log);
        tdaemon_stop(&fx, d2);
}

/* ---------------------------------------------------------------- signals during start-up */

/*
 * Start a daemon whose config file is a FIFO and return once it has opened it: it is then inside
 * config_load, the start-up step before which the old daemon installed no handler. *W: the write
 * end; the config to feed it is left in REAL (a regular file in D's directory).
 */
static int start_inside_config_load(int *w, char *real, size_t len)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        snprintf(real, len, "%s/real.conf", fx.dir);
        cr_assert_eq(rename(fx.conf, real), 0);
        cr_assert_eq(mkfifo(fx.conf, 0600), 0, "mkfifo: %s", strerror(errno));
        int d = tdaemon_start(&fx, NULL);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while ((*w = open(fx.conf, O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
                cr_assert_eq(errno, ENXIO, "open fifo: %s", strerror(errno));
                cr_assert_lt(telapsed_s(&t0), TD_READY, "the daemon never opened its config");
                tdoze();
        }
        return d;
}

/* Write the config in REAL into the FIFO W and close it: config_load returns. */
static void feed(int w, const char *real)
{
        char text[4096];
        FILE *f = fopen(real, "re");
        cr_assert_not_null(f);
        size_t n = fread(text, 1, sizeof(text), f);
        fclose(f);
        cr_assert_eq(write(w, text, n), (ssize_t)n);
        close(w);
}

/* SIGHUP while the config is read (ExecReload=kill -HUP at the wrong moment): the daemon starts,
 * then reloads; the old one died of the signal (exit status 129 from a shell). */
Test(daemon_start, sighup_during_start_up_is_a_reload)
{
        char real[256];
        int w;
        int d = start_inside_config_load(&w, real, sizeof(real));
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        cr_assert_eq(rename(real, fx.conf), 0, "the reload reads a regular file");
        feed(w, fx.conf);
        tdaemon_wait_ready(&fx, d, 1);
        tdaemon_wait_log(&fx, d, "reloaded: 1 limiters", 1);
        tdaemon_stop(&fx, d);
}

/* SIGTERM (or SIGINT) while the config is read: a clean exit 0 before the arena is touched. */
static void stop_during_start_up(int sig)
{
        char real[256];
        int w;
        int d = start_inside_config_load(&w, real, sizeof(real));
        cr_assert_eq(kill(fx.pid[d], sig), 0);
        feed(w, real);
        int code = tdaemon_exit_code(&fx, d);
        cr_assert_eq(code, 0, "exit %d; log:\n%s", code, tdaemon_log(&fx, d));
        cr_assert_neq(access(fx.arena, F_OK), 0, "stopped before the arena was created");
}

Test(daemon_start, sigterm_during_start_up_stops_cleanly)
{
        stop_during_start_up(SIGTERM);
}

Test(daemon_start, sigint_during_start_up_stops_cleanly)
{
        stop_during_start_up(SIGINT);
}

/* ---------------------------------------------------------------- killed while creating */

/* Whether daemon I has a file of DIR open other than the arena, config and logs: the temporary
 * file it builds the arena in (named PATH.tmp.*, or unnamed: "DIR/#ino (deleted)"). */
static bool building_in(int i, const char *dir)
{
        char fds[64];
        snprintf(fds, sizeof(fds), "/proc/%d/fd", (int)fx.pid[i]);
        DIR *d = opendir(fds);
        bool found = false;
        for (struct dirent *e; d && !found && (e = readdir(d));) {
                char link[320], target[512];
                snprintf(link, sizeof(link), "%s/%s", fds, e->d_name);
                ssize_t n = readlink(link, target, sizeof(target) - 1);
                if (n <= 0)
                        continue;
                target[n] = '\0';
                found = !strncmp(target, dir, strlen(dir)) && target[strlen(dir)] == '/' &&
                        (strstr(target, ".tmp.") || strstr(target, "(deleted)"));
        }
        if (d)
                closedir(d);
        return found;
}

/* Start daemon on D's config and SIGKILL it while it builds its arena in DIR; retried until the
 * kill lands before the arena is linked into place (the build of 256 MiB takes tens of ms). */
static void kill_while_building(const char *dir, const char *arena)
{
        for (int attempt = 0; attempt < 20; attempt++) {
                int d = tdaemon_start(&fx, NULL);
                struct timespec t0;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                while (!building_in(d, dir) && access(arena, F_OK) != 0) {
                        cr_assert_lt(telapsed_s(&t0), TD_READY, "never saw the build; log:\n%s",
                                     tdaemon_log(&fx, d));
                        cr_assert_eq(waitpid(fx.pid[d], NULL, WNOHANG), 0, "exited: %s",
                                     tdaemon_log(&fx, d));
                }
                tdaemon_kill(&fx, d);
                if (access(arena, F_OK) != 0)
                        return;
                unlink(arena); /* too late: the arena was already in place; again */
        }
        cr_assert_fail("could not kill the daemon while it built its arena");
}

/* The entries of DIR whose name contains ".tmp.", into a message; 0 when there are none. */
static int temporaries(const char *dir, char *names, size_t len)
{
        DIR *d = opendir(dir);
        int n = 0;
        names[0] = '\0';
        for (struct dirent *e; d && (e = readdir(d));)
                if (strstr(e->d_name, ".tmp.")) {
                        n++;
                        strncat(names, e->d_name, len - strlen(names) - 2);
                        strcat(names, " ");
                }
        if (d)
                closedir(d);
        return n;
}

/* SIGKILL while the arena file is built, then a clean start: nothing of the killed build left
 * (the old daemon left a full-size throttle.NAME.tmp.* for good). */
Test(daemon_start, killed_while_creating_leaves_no_temporary)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        config_edit(&fx, "spare = 1MiB", "spare = 256MiB");
        kill_while_building(fx.dir, fx.arena);
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        char names[512];
        cr_assert_eq(temporaries(fx.dir, names, sizeof(names)), 0, "left: %s", names);
        tdaemon_stop(&fx, d);
}

/* A named temporary whose builder is gone (a file system without O_TMPFILE, an older daemon) is
 * removed at start with a log line; one whose builder lives (it holds the lock) is kept. */
Test(daemon_start, stale_temporary_is_removed_with_a_log_line)
{
        tdaemon_config(&fx, true, "", ONE_PER_S);
        char stale[320], live[320];
        snprintf(stale, sizeof(stale), "%s.tmp.0123456789abcdef", fx.arena);
        snprintf(live, sizeof(live), "%s.tmp.fedcba9876543210", fx.arena);
        int sfd = open(stale, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int lfd = open(live, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        cr_assert(sfd >= 0 && lfd >= 0);
        cr_assert_eq(ftruncate(sfd, 1 << 20), 0);
        close(sfd);
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
        cr_assert_eq(fcntl(lfd, F_OFD_SETLK, &fl), 0);
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        cr_assert_neq(access(stale, F_OK), 0, "the stale temporary is still there");
        cr_assert_eq(access(live, F_OK), 0, "a live builder's temporary was removed");
        char want[400];
        snprintf(want, sizeof(want), "removed %s (1048576 bytes)", stale);
        cr_assert_not_null(strstr(tdaemon_log(&fx, d), want), "no \"%s\" in:\n%s", want,
                           tdaemon_log(&fx, d));
        close(lfd);
        unlink(live);
        tdaemon_stop(&fx, d);
}

/* On hugetlbfs the killed build's pages go back to the pool at once (the old temporary kept
 * them until someone found and removed it). */
Test(daemon_start, killed_while_creating_on_hugetlbfs_gives_the_pages_back)
{
        char why[256], text[1024], dir[256];
        if (!thugepages_available(40, why, sizeof(why)))
                cr_skip_test("%s", why);
        cr_assert_eq(shm_arena_path(fx.name, NULL, SHM_HUGE_REQUIRE, fx.arena, sizeof(fx.arena)),
                     0);
        snprintf(dir, sizeof(dir), "%.*s", (int)(strrchr(fx.arena, '/') - fx.arena), fx.arena);
        snprintf(text, sizeof(text),
                 "[arena]\nname = %s\nhugepages = require\nclock = manual\nmode = 0600\n"
                 "max_readers = 64\nspare = 64MiB\n[daemon]\nheartbeat_ms = 20\nmetrics =\n%s",
                 fx.name, ONE_PER_S);
        tdaemon_config_raw(&fx, text);
        unsigned long long before = 0, now = 0;
        FILE *f = fopen("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "re");
        cr_assert(f && fscanf(f, "%llu", &before) == 1);
        fclose(f);
        kill_while_building(dir, fx.arena);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do {
                f = fopen("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "re");
                cr_assert(f && fscanf(f, "%llu", &now) == 1);
                fclose(f);
                cr_assert_lt(telapsed_s(&t0), TD_READY, "%llu free pages, %llu before the kill",
                             now, before);
        } while (now < before);
        char names[512];
        cr_assert_eq(temporaries(dir, names, sizeof(names)), 0, "left: %s", names);
}

/*
 * test_notify.c - proves throttled's side of systemd's readiness protocol (daemon/notify.c, for
 * the unit's Type=notify): the real daemon, started with NOTIFY_SOCKET naming a datagram socket
 * the test owns, sends READY=1 only once its arena file exists (systemd then starts what needs
 * the arena), with a STATUS line naming the arena, and STOPPING=1 when SIGTERM stops it, then
 * exits 0. RELOADING=1 carries MONOTONIC_USEC, read from CLOCK_MONOTONIC, as systemd 252 expects;
 * without NOTIFY_SOCKET every call is a no-op.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "notify.h"

static struct tdaemon fx;
static int sock = -1;
static char sock_path[108];

/* A datagram socket in the fixture's directory, as systemd's notification socket. */
static void setup(void)
{
        tdaemon_init(&fx);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sock_path, sizeof(sock_path), "%s/notify.sock", fx.dir);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
        sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(sock, 0, "socket: %s", strerror(errno));
        cr_assert_eq(bind(sock, (struct sockaddr *)&sa, sizeof(sa)), 0, "bind %s: %s", sock_path,
                     strerror(errno));
}

static void teardown(void)
{
        if (sock >= 0)
                close(sock);
        sock = -1;
        unsetenv("NOTIFY_SOCKET");
        tdaemon_fini(&fx);
}

TestSuite(notify, .init = setup, .fini = teardown, .timeout = 60);

/* The next datagram into BUF, waiting at most MS milliseconds; its length, or -1 if none came. */
static ssize_t next_msg(char *buf, size_t len, int ms)
{
        struct pollfd p = {.fd = sock, .events = POLLIN};
        if (poll(&p, 1, ms) <= 0)
                return -1;
        ssize_t n = recv(sock, buf, len - 1, 0);
        cr_assert_geq(n, 0, "recv: %s", strerror(errno));
        buf[n] = '\0';
        return n;
}

#define LIM "[lim]\nrate = 10/s\nburst = 10\ncapacity = 64\n"

/* READY=1 arrives with the arena file already in place; STOPPING=1 at SIGTERM; exit 0. */
Test(notify, ready_after_the_arena_exists_and_stopping_at_sigterm)
{
        char msg[1024];
        tdaemon_config(&fx, true, "", LIM);
        setenv("NOTIFY_SOCKET", sock_path, 1);
        int d = tdaemon_start(&fx, NULL);
        unsetenv("NOTIFY_SOCKET");

        cr_assert_geq(next_msg(msg, sizeof(msg), TD_READY * 1000), 0,
                      "no notification within %d s; log:\n%s", TD_READY, tdaemon_log(&fx, d));
        struct stat st;
        cr_assert_eq(stat(fx.arena, &st), 0, "READY=1 came before the arena %s existed", fx.arena);
        cr_assert_gt(st.st_size, 0, "READY=1 came before the arena was sized");
        cr_assert_not_null(strstr(msg, "READY=1"), "first notification is not READY=1: %s", msg);
        cr_assert_not_null(strstr(msg, "STATUS="), "READY=1 without a STATUS line: %s", msg);
        cr_assert_not_null(strstr(msg, fx.name), "the status does not name the arena: %s", msg);
        tdaemon_wait_ready(&fx, d, 1); /* the daemon does run the arena */
        cr_assert_eq(next_msg(msg, sizeof(msg), 100), -1, "unexpected notification: %s", msg);

        cr_assert_eq(kill(fx.pid[d], SIGTERM), 0);
        cr_assert_geq(next_msg(msg, sizeof(msg), TD_READY * 1000), 0,
                      "no notification after SIGTERM; log:\n%s", tdaemon_log(&fx, d));
        cr_assert_not_null(strstr(msg, "STOPPING=1"), "not STOPPING=1 at SIGTERM: %s", msg);
        cr_assert_eq(tdaemon_exit_code(&fx, d), 0, "log:\n%s", tdaemon_log(&fx, d));
}

/* A daemon whose start fails (a config that cannot build an arena) never says READY=1. */
Test(notify, no_ready_when_the_start_fails)
{
        char msg[1024];
        tdaemon_config(&fx, true, "", LIM);
        /* a regular file where the arena's directory should be: the arena cannot be created */
        char bogus[256];
        snprintf(bogus, sizeof(bogus), "%s/notadir", fx.dir);
        FILE *f = fopen(bogus, "we");
        cr_assert_not_null(f);
        fclose(f);
        char conf[512];
        snprintf(conf, sizeof(conf), "[arena]\nname = %s\nhugepages = off\ndir = %s\n" LIM, fx.name,
                 bogus);
        tdaemon_config_raw(&fx, conf);
        setenv("NOTIFY_SOCKET", sock_path, 1);
        int d = tdaemon_start(&fx, NULL);
        unsetenv("NOTIFY_SOCKET");
        int status = tdaemon_wait_exit(&fx, d);
        cr_assert(!WIFEXITED(status) || WEXITSTATUS(status) != 0, "the daemon started; log:\n%s",
                  tdaemon_log(&fx, d));
        ssize_t n = next_msg(msg, sizeof(msg), 0);
        cr_assert(n < 0 || !strstr(msg, "READY=1"), "READY=1 from a daemon that failed: %s", msg);
}

/* RELOADING=1 with MONOTONIC_USEC between two reads of CLOCK_MONOTONIC around the call. */
Test(notify, reloading_carries_monotonic_usec)
{
        char msg[256];
        struct timespec a, b;
        setenv("NOTIFY_SOCKET", sock_path, 1);
        clock_gettime(CLOCK_MONOTONIC, &a);
        notify_reloading();
        clock_gettime(CLOCK_MONOTONIC, &b);
        cr_assert_geq(next_msg(msg, sizeof(msg), 1000), 0, "nothing sent");
        unsigned long long usec = 0;
        const char *m = strstr(msg, "MONOTONIC_USEC=");
        cr_assert_not_null(strstr(msg, "RELOADING=1"), "%s", msg);
        cr_assert_not_null(m, "no MONOTONIC_USEC: %s", msg);
        cr_assert_eq(sscanf(m, "MONOTONIC_USEC=%llu", &usec), 1, "%s", msg);
        unsigned long long lo = (unsigned long long)a.tv_sec * 1000000 + a.tv_nsec / 1000;
        unsigned long long hi = (unsigned long long)b.tv_sec * 1000000 + b.tv_nsec / 1000;
        cr_assert(usec >= lo && usec <= hi, "MONOTONIC_USEC=%llu outside [%llu, %llu]", usec, lo,
                  hi);
}

/* STATUS= and READY=1 without a status are sent as given. */
Test(notify, status_and_ready_lines)
{
        char msg[256];
        setenv("NOTIFY_SOCKET", sock_path, 1);
        notify_status("reloading config");
        cr_assert_geq(next_msg(msg, sizeof(msg), 1000), 0, "nothing sent");
        cr_assert_str_eq(msg, "STATUS=reloading config");
        notify_ready(NULL);
        cr_assert_geq(next_msg(msg, sizeof(msg), 1000), 0, "nothing sent");
        cr_assert_str_eq(msg, "READY=1");
}

/* Without NOTIFY_SOCKET nothing is sent and nothing fails. */
Test(notify, no_socket_no_message)
{
        char msg[256];
        unsetenv("NOTIFY_SOCKET");
        notify_ready("x");
        notify_reloading();
        notify_status("x");
        notify_stopping();
        cr_assert_eq(next_msg(msg, sizeof(msg), 100), -1, "sent without NOTIFY_SOCKET: %s", msg);
}

/* A reload says RELOADING=1, then READY=1 with its verdict in STATUS: applied, or refused. */
Test(notify, a_reload_says_reloading_then_ready_with_its_verdict)
{
        char msg[1024];
        tdaemon_config(&fx, true, "", LIM);
        setenv("NOTIFY_SOCKET", sock_path, 1);
        int d = tdaemon_start(&fx, NULL);
        unsetenv("NOTIFY_SOCKET");
        cr_assert_geq(next_msg(msg, sizeof(msg), TD_READY * 1000), 0, "%s", tdaemon_log(&fx, d));
        cr_assert_not_null(strstr(msg, "READY=1"), "%s", msg);
        tdaemon_wait_ready(&fx, d, 1);

        tdaemon_config(&fx, true, "", "[lim]\nrate = 30/s\nburst = 10\ncapacity = 64\n");
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        cr_assert_geq(next_msg(msg, sizeof(msg), TD_READY * 1000), 0, "%s", tdaemon_log(&fx, d));
        cr_assert_not_null(strstr(msg, "RELOADING=1"), "first after SIGHUP: %s", msg);
        cr_assert_geq(next_msg(msg, sizeof(msg), TD_READY * 1000), 0, "%s", tdaemon_log(&fx, d));
        cr_assert_not_null(strstr(msg, "READY=1"), "%s", msg);
        cr_assert_not_null(strstr(msg, "reload #1 applied"), "%s", msg);

        tdaemon_config(&fx, true, "", "[lim]\nrate = 30/s\nburst = 10\ncapacity = 128\n");
        cr_assert_eq(kill(fx.pid[d], SIGHUP), 0);
        cr_assert_geq(next_msg(msg, sizeof(msg), TD_READY * 1000), 0, "%s", tdaemon_log(&fx, d));
        cr_assert_not_null(strstr(msg, "RELOADING=1"), "%s", msg);
        cr_assert_geq(next_msg(msg, sizeof(msg), TD_READY * 1000), 0, "%s", tdaemon_log(&fx, d));
        cr_assert_not_null(strstr(msg, "READY=1"), "%s", msg);
        cr_assert_not_null(strstr(msg, "reload #2 refused"), "%s", msg);
}

/*
 * test_global_review.c - global limiters attacked (hostile review of daemon/global.c and
 * daemon/rlink.c): a fake Redis (a TCP listener in a child process answering crafted RESP) that
 * replies to the lease script with garbage, errors, redirections to nowhere or to itself, a
 * reply cut short, or a reply trickled a byte at a time so that no single read times out; the
 * daemon must stay up, never run past the whole share, and follow on_redis_down once its lease
 * ends. Against a real redis-server: another client scribbling the lease hash; a reload that
 * changes host_id.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "global.h"
#include "helpers.h"
#include "metrics.h"
#include "redis_run.h"

#define ONE 1000000u

/* ------------------------------------------------------------------------ a fake Redis */

enum fake_mode {
        FAKE_REPLY,          /* EVAL gets REPLY */
        FAKE_CUT,            /* EVAL gets REPLY, then the connection is closed */
        FAKE_TRICKLE,        /* EVAL gets a bulk string a byte every 50 ms, forever */
        FAKE_SLOW,           /* EVAL gets REPLY after 80 ms */
        FAKE_LATE,           /* EVAL gets REPLY after FAKE_LATE_NS */
        FAKE_SILENT_CLUSTER, /* a cluster whose 64 masters never answer; after its first
                              * CLUSTER SLOTS (REPLY) the fake does not either */
};

#define FAKE_LATE_NS 1000000000ull

struct fake {
        pid_t pid;
        int port;
};

/* Read one RESP request (an array of bulk strings) from FD into BUF; its first word in CMD.
 * false when the peer closed or sent something else. */
static bool fake_request(int fd, char *cmd, size_t cmdlen)
{
        static char buf[65536];
        size_t have = 0;
        for (;;) {
                /* parse what we have */
                char *p = buf, *end = buf + have;
                char *nl = memmem(p, (size_t)(end - p), "\r\n", 2);
                if (nl && *p == '*') {
                        long n = strtol(p + 1, NULL, 10);
                        p = nl + 2;
                        bool full = true;
                        for (long i = 0; i < n && full; i++) {
                                nl = memmem(p, (size_t)(end - p), "\r\n", 2);
                                if (!nl || *p != '$') {
                                        full = false;
                                        break;
                                }
                                long len = strtol(p + 1, NULL, 10);
                                char *arg = nl + 2;
                                if (end - arg < len + 2) {
                                        full = false;
                                        break;
                                }
                                if (i == 0) {
                                        size_t k =
                                            (size_t)len < cmdlen - 1 ? (size_t)len : cmdlen - 1;
                                        memcpy(cmd, arg, k);
                                        cmd[k] = 0;
                                }
                                p = arg + len + 2;
                        }
                        if (full)
                                return true;
                }
                if (have == sizeof(buf))
                        return false;
                ssize_t got = read(fd, buf + have, sizeof(buf) - have);
                if (got <= 0)
                        return false;
                have += (size_t)got;
        }
}

static void fake_write(int fd, const char *s)
{
        size_t len = strlen(s);
        while (len) {
                ssize_t w = write(fd, s, len);
                if (w <= 0)
                        return;
                s += w;
                len -= (size_t)w;
        }
}

static void fake_serve(int lfd, enum fake_mode mode, const char *reply)
{
        signal(SIGPIPE, SIG_IGN);
        int slots_asked = 0;
        for (;;) {
                int fd = accept(lfd, NULL, NULL);
                if (fd < 0)
                        continue;
                char cmd[32];
                while (fake_request(fd, cmd, sizeof(cmd))) {
                        if (mode == FAKE_SILENT_CLUSTER) {
                                if (!strcasecmp(cmd, "CLUSTER") && slots_asked++ == 0)
                                        fake_write(fd, reply);
                        } else if (!strcasecmp(cmd, "CLUSTER")) {
                                fake_write(fd,
                                           "-ERR This instance has cluster support disabled\r\n");
                        } else if (!strcasecmp(cmd, "EVAL") && mode == FAKE_TRICKLE) {
                                fake_write(fd, "$1000000\r\n");
                                struct timespec gap = {0, 50000000};
                                bool alive = true;
                                while (alive) {
                                        nanosleep(&gap, NULL);
                                        alive = write(fd, "x", 1) == 1;
                                }
                                break;
                        } else if (!strcasecmp(cmd, "EVAL")) {
                                if (mode == FAKE_SLOW)
                                        usleep(80000);
                                if (mode == FAKE_LATE) {
                                        struct timespec late = {FAKE_LATE_NS / 1000000000ull,
                                                                FAKE_LATE_NS % 1000000000ull};
                                        while (nanosleep(&late, &late) < 0)
                                                ;
                                }
                                fake_write(fd, reply);
                                if (mode == FAKE_CUT)
                                        break;
                        } else {
                                fake_write(fd, "+OK\r\n");
                        }
                }
                close(fd);
        }
}

/* A fake Redis on a free loopback port; REPLY may contain "%d": the fake's own port. */
static void fake_start(struct fake *f, enum fake_mode mode, const char *reply)
{
        int lfd = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert_geq(lfd, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
        cr_assert_eq(listen(lfd, 16), 0);
        socklen_t al = sizeof(a);
        cr_assert_eq(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
        f->port = ntohs(a.sin_port);
        static char text[8192];
        snprintf(text, sizeof(text), reply ? reply : "", f->port);
        if (mode == FAKE_SILENT_CLUSTER) { /* 64 masters that accept and never answer */
                int len = snprintf(text, sizeof(text), "*64\r\n");
                for (int i = 0; i < 64; i++) {
                        int sfd = socket(AF_INET, SOCK_STREAM, 0);
                        struct sockaddr_in b = {.sin_family = AF_INET,
                                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                        socklen_t bl = sizeof(b);
                        cr_assert(sfd >= 0 && bind(sfd, (struct sockaddr *)&b, sizeof(b)) == 0 &&
                                  listen(sfd, 64) == 0 &&
                                  getsockname(sfd, (struct sockaddr *)&b, &bl) == 0);
                        len += snprintf(text + len, sizeof(text) - (size_t)len,
                                        "*3\r\n:%d\r\n:%d\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n",
                                        i * 256, i * 256 + 255, ntohs(b.sin_port));
                }
        }
        f->pid = tfork();
        if (f->pid == 0) {
                fake_serve(lfd, mode, text);
                _exit(0);
        }
        close(lfd);
}

static void fake_stop(struct fake *f)
{
        if (f->pid > 0) {
                kill(f->pid, SIGKILL);
                waitpid(f->pid, NULL, 0);
        }
        f->pid = 0;
}

/* ------------------------------------------------------------------------ the daemon */

static double since(const struct timespec *t0)
{
        return telapsed_s(t0);
}

static const struct thr_dir_entry *entry(struct tdaemon *d, const char *name)
{
        return tdaemon_entry(d, name, THR_DIR_LIVE);
}

static uint32_t gstate(struct tdaemon *d, const char *name)
{
        return atomic_load(&entry(d, name)->global_state) & 0xff;
}

static uint32_t gshare(struct tdaemon *d, const char *name)
{
        return atomic_load(&entry(d, name)->global_share);
}

static void daemon_text(char *text, size_t len, int port, const char *host, const char *pol)
{
        snprintf(text, len,
                 "[global]\nredis = 127.0.0.1:%d\nhost_id = %s\nprefix = r%d\n"
                 "interval = 50ms\nlease_ttl = 400ms\ntimeout = 100ms\n\n"
                 "[api]\nrate = 1000/s\nburst = 50\nscope = global\nexpected_hosts = 2\n"
                 "on_redis_down = %s\n",
                 port, host, (int)getpid(), pol);
}

/* A fake that grants half of the whole with 2 hosts holding (MODE: when it answers), and D, a
 * daemon named PREFIX and this pid, initialised but not started. */
static void fake_granting(struct fake *f, enum fake_mode mode, struct tdaemon *d,
                          const char *prefix)
{
        fake_start(f, mode, "*5\r\n:500000\r\n:2\r\n:0\r\n:0\r\n:0\r\n");
        tdaemon_init(d);
        snprintf(d->name, sizeof(d->name), "%s%d", prefix, (int)getpid());
}

/*
 * Against REPLY (as MODE), a daemon whose lease has ended must be closed (on_redis_down =
 * closed) within lease_ttl and a few timeouts: 10 s is generous (a daemon or test descheduled for
 * seconds on a paused VM; the bug, a daemon that never closes, stays open), and the state is read
 * once more after the wait. Its share never passes the whole, and it is still running.
 */
static void hostile_case(enum fake_mode mode, const char *reply, const char *what)
{
        struct fake f = {0};
        fake_start(&f, mode, reply);
        struct tdaemon d;
        tdaemon_init(&d);
        snprintf(d.name, sizeof(d.name), "glr%d", (int)getpid());
        char text[1024];
        daemon_text(text, sizeof(text), f.port, "h0", "closed");
        int i = tdaemon_start_real(&d, text);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        uint32_t st = 0, most = 0;
        while (since(&t0) < 10.0) {
                st = gstate(&d, "api");
                uint32_t sh = gshare(&d, "api");
                most = sh > most ? sh : most;
                if (st == THR_GLOBAL_CLOSED)
                        break;
                usleep(5000);
        }
        /* a test descheduled between its last read and the clock's: the state now */
        if (st != THR_GLOBAL_CLOSED)
                st = gstate(&d, "api");
        cr_expect_eq(st, THR_GLOBAL_CLOSED,
                     "%s: the lease ended, on_redis_down = closed: state %u after %.1f s", what, st,
                     since(&t0));
        cr_expect_leq(most, ONE, "%s: share %u", what, most);
        cr_expect_leq(gshare(&d, "api"), 1, "%s: closed runs at the least share", what);
        cr_expect_eq(kill(d.pid[i], 0), 0, "%s: the daemon is running", what);
        tdaemon_fini(&d);
        fake_stop(&f);
}

Test(global_review, garbage_replies_to_the_lease_script_fail_safe, .timeout = 120)
{
        static const char *const replies[] = {
            ":5\r\n",                                                     /* not an array */
            "*5\r\n:2000000\r\n:1\r\n:0\r\n:0\r\n:0\r\n",                 /* past the whole */
            "*5\r\n:-5\r\n:1\r\n:0\r\n:0\r\n:0\r\n",                      /* negative */
            "*5\r\n:500000\r\n:0\r\n:0\r\n:0\r\n:0\r\n",                  /* no holders */
            "*5\r\n$6\r\n500000\r\n:1\r\n:0\r\n:0\r\n:0\r\n",             /* a string */
            "*4\r\n:500000\r\n:1\r\n:0\r\n:0\r\n",                        /* too short */
            "*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",                             /* nested */
            "*-1\r\n",                                                    /* nil */
            "$-1\r\n",                                                    /* nil string */
            "-ERR boom\r\n",                                              /* an error */
            "+OK\r\n",                                                    /* a status */
            "*4611686018427387904\r\n",                                   /* huge array */
            "*5\r\n:99999999999999999999999\r\n:1\r\n:0\r\n:0\r\n:0\r\n", /* overflow */
            "@what\r\n",                                                  /* not RESP */
            "-MOVED 1234 127.0.0.1:%d\r\n",                               /* to itself */
            "-MOVED 1234 127.0.0.1:1\r\n",                                /* nobody there */
            "-MOVED 1234 127.0.0.1:99999\r\n",                            /* no such port */
            "-ASK 1234 127.0.0.1:%d\r\n",                                 /* asked in a loop */
            "-MOVED 99999 127.0.0.1:%d\r\n",                              /* no such slot */
        };
        for (size_t k = 0; k < sizeof(replies) / sizeof(replies[0]); k++)
                hostile_case(FAKE_REPLY, replies[k], replies[k]);
}

Test(global_review, a_reply_cut_short_fails_safe, .timeout = 60)
{
        hostile_case(FAKE_CUT, "*5\r\n:1000", "cut in an integer");
        hostile_case(FAKE_CUT, "*5\r\n:1000000\r\n:1\r\n", "cut after two elements");
}

/*
 * A server that answers the lease script a byte every 50 ms (each read within the 100 ms
 * timeout, the reply never complete) must not hold the lease thread: [global] timeout is for
 * each reply, so the call fails, the lease ends and on_redis_down applies. Before the fix,
 * hiredis's per-read timeout let it block forever, the limiter stuck at its share.
 */
Test(global_review, a_reply_trickled_a_byte_at_a_time_times_out, .timeout = 60)
{
        hostile_case(FAKE_TRICKLE, NULL, "a reply trickled forever");
}

/*
 * A Redis Cluster gone silent (a partition that drops packets: connections made, no replies):
 * 64 masters and the seed. A failed call marks the map stale, and the next call refreshed it from
 * the seed and then from every known master in turn, a timeout each: 65 x 100 ms per renewal,
 * the limiter held at its share for 6.5 s past a 400 ms lease. A refresh now stops once it has
 * spent one connect and one reply timeout (masters that refuse fast are still all tried).
 */
Test(global_review, a_silent_cluster_does_not_hold_the_lease_past_its_end, .timeout = 60)
{
        hostile_case(FAKE_SILENT_CLUSTER, NULL, "a silent 64-master cluster");
}

/* ------------------------------------------------------------------------ a real Redis */

static void need_redis(void)
{
        char why[256];
        if (!tredis_available(why, sizeof(why)))
                cr_skip_test("redis-server is not available: %s", why);
}

/* Whether the lease hash KEY on R has holder HOST. */
static bool holds(const struct tredis *r, const char *key, const char *host)
{
        redisReply *x = tredis_command(r, "HEXISTS %s %s", key, host);
        bool yes = x && x->type == REDIS_REPLY_INTEGER && x->integer == 1;
        if (x)
                freeReplyObject(x);
        return yes;
}

/*
 * A reload that changes host_id: the daemon leases under its new name from then on (an operator
 * who finds two hosts sharing one host_id, each taking the share meant for one, fixes it with a
 * reload). Before the fix the name was taken only when the Redis address or credentials changed.
 */
Test(global_review, a_reload_changing_host_id_leases_under_the_new_name, .timeout = 60)
{
        need_redis();
        struct tredis r = {0};
        cr_assert_eq(tredis_start(&r, NULL), 0);
        struct tdaemon d;
        tdaemon_init(&d);
        snprintf(d.name, sizeof(d.name), "glr%d", (int)getpid());
        char text[1024], key[64];
        snprintf(key, sizeof(key), "{r%d:api}:leases", (int)getpid());
        daemon_text(text, sizeof(text), r.port, "first", "keep");
        int i = tdaemon_start_real(&d, text);
        TWAIT_FOR(gstate(&d, "api") == THR_GLOBAL_LEASED, 5, "a first lease");
        cr_assert(holds(&r, key, "first"));
        daemon_text(text, sizeof(text), r.port, "second", "keep");
        char full[2048];
        snprintf(full, sizeof(full),
                 "[arena]\nname = %s\nclock = monotonic\nhugepages = off\nmode = 0600\n"
                 "max_limiters = 4\nmax_readers = 64\n\n[daemon]\nheartbeat_ms = 20\n"
                 "metrics =\n\n%s",
                 d.name, text);
        tdaemon_config_raw(&d, full);
        cr_assert_eq(kill(d.pid[i], SIGHUP), 0);
        tdaemon_wait_log(&d, i, "reloaded:", 1);
        TWAIT_FOR(holds(&r, key, "second"), 3, "the new host_id holds a lease");
        /* the old name is not renewed: it is gone after lease_ttl (400 ms) */
        TWAIT_FOR(!holds(&r, key, "first"), 3, "the old host_id's lease lapses");
        tdaemon_fini(&d);
        tredis_stop(&r);
}

/*
 * Another client scribbling the lease hash: malformed holders, a rogue holder with the whole
 * share, ~born garbage, then the key made a string. The daemon never runs past what Redis leaves
 * it (the rogue's whole share: it gets 0, runs at the least share), and a key of the wrong type
 * is a script error: no lease, so on_redis_down (closed) once the lease ends.
 */
Test(global_review, a_scribbled_lease_hash_fails_safe, .timeout = 60)
{
        need_redis();
        struct tredis r = {0};
        cr_assert_eq(tredis_start(&r, NULL), 0);
        struct tdaemon d;
        tdaemon_init(&d);
        snprintf(d.name, sizeof(d.name), "glr%d", (int)getpid());
        char text[1024], key[64];
        snprintf(key, sizeof(key), "{r%d:api}:leases", (int)getpid());
        daemon_text(text, sizeof(text), r.port, "h0", "closed");
        tdaemon_start_real(&d, text);
        TWAIT_FOR(gstate(&d, "api") == THR_GLOBAL_LEASED, 5, "a first lease");
        freeReplyObject(tredis_command(&r, "HSET %s junk %s", key, "not a share"));
        freeReplyObject(tredis_command(&r, "HSET %s neg %s", key, "-5 1 99999999999999"));
        freeReplyObject(tredis_command(&r, "HSET %s ~born %s", key, "garbage"));
        TWAIT_FOR(!holds(&r, key, "junk") && !holds(&r, key, "neg"), 3,
                  "malformed holders are dropped");
        cr_assert_eq(gstate(&d, "api"), THR_GLOBAL_LEASED);
        /* a rogue holder with the whole share and a far expiry: this host gets nothing */
        freeReplyObject(tredis_command(&r, "HSET %s rogue %s", key, "1000000 0 99999999999999"));
        TWAIT_FOR(gshare(&d, "api") <= 1, 3, "nothing past the whole: the least share");
        cr_assert_eq(gstate(&d, "api"), THR_GLOBAL_LEASED);
        /* a rogue with more than the whole */
        freeReplyObject(tredis_command(&r, "HSET %s rogue %s", key,
                                       "99999999999999999999999 0 99999999999999"));
        usleep(300000);
        cr_assert_leq(gshare(&d, "api"), 1);
        /* the key another type: a script error, no lease */
        freeReplyObject(tredis_command(&r, "DEL %s", key));
        freeReplyObject(tredis_command(&r, "SET %s astring", key));
        TWAIT_FOR(gstate(&d, "api") == THR_GLOBAL_CLOSED, 3, "a script error is no lease");
        cr_assert_leq(gshare(&d, "api"), 1);
        tdaemon_fini(&d);
        tredis_stop(&r);
}

/*
 * A slow global rate (5 a day, a per-user daily quota across the fleet) with on_redis_down =
 * closed and Redis unreachable: once the lease ends the limiter must close, its buckets at the
 * least share (a millionth). Before the fix the record at a millionth of 5/d (an interval of
 * about 548 years; the state word holds under 290) did not fit, publish failed ("not published")
 * and the host stayed at its safe share: closed in name only. A Redis grant too small for the
 * record (a rogue holder, many busy hosts) kept the host at its higher share the same way.
 */
Test(global_review, a_slow_global_rate_closes_at_the_least_share, .timeout = 60)
{
        struct tdaemon d;
        tdaemon_init(&d);
        snprintf(d.name, sizeof(d.name), "glr%d", (int)getpid());
        char text[1024];
        snprintf(text, sizeof(text),
                 "[global]\nredis = 127.0.0.1:1\nhost_id = h0\nprefix = r%d\n"
                 "interval = 50ms\nlease_ttl = 400ms\ntimeout = 100ms\n\n"
                 "[api]\nrate = 5/d\nburst = 5\nscope = global\nexpected_hosts = 2\n"
                 "on_redis_down = closed\n",
                 (int)getpid());
        int i = tdaemon_start_real(&d, text);
        TWAIT_FOR(gstate(&d, "api") == THR_GLOBAL_CLOSED, 3, "closed after the lease");
        usleep(200000);
        cr_assert_leq(gshare(&d, "api"), 1, "closed runs at the least share, not %u",
                      gshare(&d, "api"));
        cr_assert_eq(tdaemon_log_count(&d, i, "not published"), 0, "%s", tdaemon_log(&d, i));
        /* a new key admits nothing */
        thr_limiter *l = tdaemon_lim(&d, 0, "api");
        struct thr_result res;
        cr_assert_eq(thr_limiter_try(l, "fresh", 5, 1, &res), 0);
        cr_assert(!res.admitted, "closed: a new key is denied");
        tdaemon_fini(&d);
}

/* The record itself: a millionth of 1/d (a TAT 86 400 years out) is the longest interval the
 * state word holds, still past the arena's 20 years; 1/s at a millionth (11.6 days) is exact. */
Test(global_review, a_least_share_record_of_a_slow_rate_fits_past_the_horizon)
{
        struct shm_limiter_spec s = tspec("g", 1, 86400ull * 1000000000ull, 3, 3);
        struct thr_params p;
        char err[256];
        s.scale_ppm = 1;
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0, "%s", err);
        cr_assert(p.burst == 1 && p.initial == 0);
        cr_assert_geq(p.t_units, THR_HORIZON_NS, "never faster than one a key in 20 years");
        cr_assert(shm_params_range_ok(p.burst, p.t_units, p.max_reserve_units, p.k));
        s = tspec("g", 1, 1000000000ull, 3, 3);
        s.scale_ppm = 1;
        cr_assert_eq(shm_params_make(&s, 1, &p, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(p.t_units, 1000000000ull * 1000000);
}

/* ------------------------------------------------------------------------ reloads */

static void full_text(char *full, size_t len, const struct tdaemon *d, const char *limiters)
{
        snprintf(full, len,
                 "[arena]\nname = %s\nclock = monotonic\nhugepages = off\nmode = 0600\n"
                 "max_limiters = 4\nmax_readers = 64\n\n[daemon]\nheartbeat_ms = 20\n"
                 "metrics =\n\n%s",
                 d->name, limiters);
}

static void storm_text(char *text, size_t len, int port, int h, const char *scope)
{
        snprintf(text, len,
                 "[global]\nredis = 127.0.0.1:%d\nhost_id = h%d\nprefix = s%d\n"
                 "interval = 50ms\nlease_ttl = 400ms\ntimeout = 100ms\n\n"
                 "[api]\nrate = 1000/s\nburst = 50\nscope = %s\n%s",
                 port, h, (int)getpid(), scope,
                 strcmp(scope, "global") ? "" : "expected_hosts = 4\nmin_share = 10\n");
}

/* A client of arena NAME busy on limiter api until killed. */
static pid_t busy_client(const char *name)
{
        pid_t pid = tfork();
        if (pid == 0) {
                thr_arena *a = NULL;
                thr_limiter *l = NULL;
                if (thr_arena_open(name, 0, &a) < 0 || thr_limiter_open(a, "api", &l) < 0)
                        _exit(3);
                struct timespec gap = {0, 50000};
                for (;;) {
                        struct thr_result res;
                        thr_limiter_try(l, "k", 1, 1, &res);
                        nanosleep(&gap, NULL);
                }
        }
        return pid;
}

/*
 * Two hosts, host 0 busy (about 90%), host 1 idle (its least share, 10%). SIGHUP storms on both
 * (every 20 ms for 3 s) while leases renew: the shares they run at are kept, never reset to the
 * whole nor to the safe share (25%: host 1 there would put the pair past the whole). Then a
 * reload makes host 1's limiter local (not global: no share shown) and global again (it starts
 * over at the safe share, learning, and gets its least share back).
 */
Test(global_review, reload_storms_keep_the_shares, .timeout = 90)
{
        need_redis();
        struct tredis r = {0};
        cr_assert_eq(tredis_start(&r, NULL), 0);
        struct tdaemon d[2];
        int di[2];
        char text[1024], full[2048];
        for (int h = 0; h < 2; h++) {
                tdaemon_init(&d[h]);
                snprintf(d[h].name, sizeof(d[h].name), "gls%d_%d", (int)getpid(), h);
                storm_text(text, sizeof(text), r.port, h, "global");
                di[h] = tdaemon_start_real(&d[h], text);
        }
        pid_t busy = busy_client(d[0].name);
        TWAIT_FOR(gshare(&d[0], "api") >= 850000 && gshare(&d[1], "api") <= 110000 &&
                      gstate(&d[1], "api") == THR_GLOBAL_LEASED,
                  8, "host 0 busy takes most, host 1 keeps its least share");
        struct timespec t0, last;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        last = t0;
        uint32_t lo0 = ONE, hi0 = 0, hi1 = 0;
        int hups = 0;
        /* the share of the record clients decide on (thr_limiter_info), not only the one the
         * daemon shows: a reload that built the record at the safe share while the lease thread
         * kept its own count would show one thing and run another */
        thr_limiter *l0 = tdaemon_lim(&d[0], 0, "api"), *l1 = tdaemon_lim(&d[1], 0, "api");
        while (since(&t0) < 3.0) {
                if (since(&last) >= 0.02) {
                        kill(d[0].pid[di[0]], SIGHUP);
                        kill(d[1].pid[di[1]], SIGHUP);
                        hups++;
                        clock_gettime(CLOCK_MONOTONIC, &last);
                }
                uint32_t s0 = gshare(&d[0], "api"), s1 = gshare(&d[1], "api");
                struct thr_limiter_info i0, i1;
                cr_assert(thr_limiter_info(l0, &i0) == 0 && thr_limiter_info(l1, &i1) == 0);
                s0 = (uint32_t)i0.reserved[0] < s0 ? (uint32_t)i0.reserved[0] : s0;
                s1 = (uint32_t)i1.reserved[0] > s1 ? (uint32_t)i1.reserved[0] : s1;
                lo0 = s0 < lo0 ? s0 : lo0;
                hi0 = s0 > hi0 ? s0 : hi0;
                hi1 = s1 > hi1 ? s1 : hi1;
                usleep(500);
        }
        cr_assert_lt(hi0, ONE, "host 0 never at the whole");
        cr_assert_geq(lo0, 850000, "host 0 never reset to the safe share (low %u)", lo0);
        cr_assert_leq(hi1, 110000, "host 1 never reset to the safe share (high %u)", hi1);
        cr_assert_gt(tdaemon_log_count(&d[0], di[0], "reloaded:"), 10, "%d SIGHUPs", hups);
        /* host 1 local, then global again */
        storm_text(text, sizeof(text), r.port, 1, "local");
        full_text(full, sizeof(full), &d[1], text);
        tdaemon_config_raw(&d[1], full);
        int n = tdaemon_log_count(&d[1], di[1], "reloaded:");
        kill(d[1].pid[di[1]], SIGHUP);
        tdaemon_wait_log(&d[1], di[1], "reloaded:", n + 1);
        TWAIT_FOR(atomic_load(&entry(&d[1], "api")->global_state) == 0, 2, "local: no lease shown");
        storm_text(text, sizeof(text), r.port, 1, "global");
        full_text(full, sizeof(full), &d[1], text);
        tdaemon_config_raw(&d[1], full);
        kill(d[1].pid[di[1]], SIGHUP);
        tdaemon_wait_log(&d[1], di[1], "reloaded:", n + 2);
        TWAIT_FOR(gstate(&d[1], "api") == THR_GLOBAL_LEASED && gshare(&d[1], "api") <= 110000, 3,
                  "global again: its least share");
        cr_assert_geq(gshare(&d[0], "api"), 850000);
        kill(busy, SIGKILL);
        waitpid(busy, NULL, 0);
        for (int h = 0; h < 2; h++)
                tdaemon_fini(&d[h]);
        tredis_stop(&r);
}

/* ------------------------------------------------------------------------ a stopped daemon */

struct tally {
        _Atomic int stop;
        _Atomic int idle[3];               /* host's client waits (0: busy) */
        _Atomic uint64_t admitted[3][200]; /* per host, per 100 ms from t0 */
        struct timespec t0;
};

/* A zeroed tally shared with the processes forked after it (MAP_SHARED), its clock started. */
static struct tally *tally_new(void)
{
        struct tally *t =
            mmap(NULL, sizeof(*t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(t, MAP_FAILED);
        memset(t, 0, sizeof(*t));
        clock_gettime(CLOCK_MONOTONIC, &t->t0);
        return t;
}

static pid_t tally_client(struct tally *t, const char *name, int h)
{
        pid_t pid = tfork();
        if (pid == 0) {
                thr_arena *a = NULL;
                thr_limiter *l = NULL;
                if (thr_arena_open(name, 0, &a) < 0 || thr_limiter_open(a, "api", &l) < 0)
                        _exit(3);
                struct timespec gap = {0, 50000};
                while (!atomic_load(&t->stop)) {
                        struct thr_result res;
                        if (atomic_load(&t->idle[h])) {
                                nanosleep(&gap, NULL);
                                continue;
                        }
                        if (thr_limiter_try(l, "k", 1, 1, &res) < 0)
                                _exit(4);
                        double s = since(&t->t0);
                        int k = (int)(s * 10);
                        if (res.admitted && k >= 0 && k < 200)
                                atomic_fetch_add(&t->admitted[h][k], 1);
                        nanosleep(&gap, NULL);
                }
                _exit(0);
        }
        return pid;
}

/* Admitted by both hosts per second over [FROM, TO) seconds from t0. */
static double tally_rate(struct tally *t, double from, double to)
{
        uint64_t n = 0;
        for (int h = 0; h < 3; h++)
                for (int k = (int)(from * 10); k < (int)(to * 10); k++)
                        n += atomic_load(&t->admitted[h][k]);
        return (double)n / (to - from);
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/* Admitted by both hosts per second in the median 100 ms bucket of [FROM, TO) seconds from t0
 * among those in which some host admitted (whole buckets only; 0 when none did). A bucket in
 * which no host admitted is one in which no client ran (all of them descheduled, or the VM
 * paused): a stall says nothing of the share the clients run at, and a stall's partial buckets
 * at its edges are outliers the median ignores. A rate the stalls lowered is what a throughput
 * floor over a fixed window measured before (a 0.3 s stall of the clients failed it). */
static double tally_live_rate(struct tally *t, double from, double to)
{
        uint64_t b[200];
        int n = 0;
        for (int k = (int)(from * 10) + 1; k < (int)(to * 10) && k < 200; k++) {
                uint64_t sum = 0;
                for (int h = 0; h < 3; h++)
                        sum += atomic_load(&t->admitted[h][k]);
                if (sum)
                        b[n++] = sum;
        }
        if (!n)
                return 0;
        qsort(b, (size_t)n, sizeof(b[0]), cmp_u64);
        return (double)b[n / 2] * 10;
}

/* Wait until seconds since T's t0 reach AT. */
static void tally_until(struct tally *t, double at)
{
        while (since(&t->t0) < at)
                usleep(10000);
}

/*
 * The documented limitation, measured: a daemon SIGSTOPped (or dead) while its clients run leaves
 * them at its last share, and once its lease ends (lease_ttl) Redis gives that share to the other
 * hosts: the fleet admits up to R (1 + the stopped host's share) until the daemon runs again.
 * Two hosts busy alike (about half each), rate 1000/s: while host 0's daemon is stopped the
 * fleet admits about 1500/s; once it continues it renews, finds the other holding the whole and
 * drops to nothing at once: back within R.
 */
Test(global_review, a_stopped_daemon_lets_the_fleet_overshoot_by_its_share_until_it_runs,
     .timeout = 180)
{
        need_redis();
        struct tredis r = {0};
        cr_assert_eq(tredis_start(&r, NULL), 0);
        struct tally *t = tally_new();
        struct tdaemon d[2];
        int di[2];
        pid_t cl[2];
        char text[1024];
        for (int h = 0; h < 2; h++) {
                tdaemon_init(&d[h]);
                snprintf(d[h].name, sizeof(d[h].name), "glt%d_%d", (int)getpid(), h);
                storm_text(text, sizeof(text), r.port, h, "global");
                di[h] = tdaemon_start_real(&d[h], text);
                cl[h] = tally_client(t, d[h].name, h);
        }
        TWAIT_FOR(gshare(&d[0], "api") >= 300000 && gshare(&d[1], "api") >= 300000, 8,
                  "two busy hosts share it");
        usleep(1000000);
        double s = since(&t->t0);
        double before = tally_rate(t, s - 1.0, s);
        uint32_t share0 = gshare(&d[0], "api");
        cr_assert_eq(kill(d[0].pid[di[0]], SIGSTOP), 0);
        /* The windows start at events, not at times after a signal: the one while host 0 is
         * stopped once host 1 runs at the whole (its lease thread publishes the record before the
         * entry we read), the one after once host 0 renewed after SIGCONT (its lease's end moves
         * on) and host 1 renewed after that (it saw host 0 back). Each waits up to 30 s, for a
         * paused VM: a host 1 that never gets the whole, or a host 0 that never renews once it
         * runs, still fails here. */
        TWAIT_FOR(gshare(&d[1], "api") == ONE, 30, "host 1 alone in Redis takes the whole");
        double whole_at = since(&t->t0);
        tally_until(t, whole_at + 2.1);
        double stopped = tally_rate(t, whole_at, whole_at + 2.0);
        double stopped_live = tally_live_rate(t, whole_at, whole_at + 2.0);
        uint32_t share1 = gshare(&d[1], "api");
        uint64_t end0 = atomic_load(&entry(&d[0], "api")->global_expiry_ns);
        cr_assert_eq(kill(d[0].pid[di[0]], SIGCONT), 0);
        double cont_at = since(&t->t0);
        /* A lease's end in arena time only moves when it is renewed; a renewal puts it at least
         * the 2 s of the stopped window past where the stopped daemon left it. */
        TWAIT_FOR(atomic_load(&entry(&d[0], "api")->global_expiry_ns) > end0 + SEC / 2, 30,
                  "host 0 renews once it runs");
        uint64_t end1 = atomic_load(&entry(&d[1], "api")->global_expiry_ns);
        TWAIT_FOR(atomic_load(&entry(&d[1], "api")->global_expiry_ns) > end1, 30,
                  "host 1 renews after host 0 did");
        double renewed_at = since(&t->t0);
        tally_until(t, renewed_at + 2.1);
        double after = tally_rate(t, renewed_at, renewed_at + 2.0);
        cr_log_info("two hosts 1000/s: %.0f/s; host 0 (share %u) stopped: %.0f/s (median live "
                    "bucket %.0f/s; host 1 at share %u from %.2f s); continued at %.2f s, "
                    "renewed at %.2f s: %.0f/s",
                    before, share0, stopped, stopped_live, share1, whole_at, cont_at, renewed_at,
                    after);
        cr_expect_leq(before, 1000 + 50 + 2, "within R before");
        cr_expect_eq(share1, ONE, "host 1 alone in Redis keeps the whole");
        cr_expect_geq(stopped_live, 1000 + share0 / 1000.0 * 0.8,
                      "the limitation: the stopped host's clients keep its share");
        /* a stall only lowers what a fixed window admits: the ceiling keeps it */
        cr_expect_leq(stopped, 1000 + share0 / 1000.0 + 60, "and no more than that");
        cr_expect_leq(after, 1000 + 60, "back within R once it runs");
        atomic_store(&t->stop, 1);
        for (int h = 0; h < 2; h++) {
                waitpid(cl[h], NULL, 0);
                tdaemon_fini(&d[h]);
        }
        munmap(t, sizeof(*t));
        tredis_stop(&r);
}

/* ------------------------------------------------------------------------ the display */

/* shmctl on arena PATH with ARGS: its output in OUT, its exit status. */
static int shmctl(const char *path, const char *args, char *out, size_t len)
{
        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "'%s/daemon/shmctl' -a '%s' %s 2>&1",
                 getenv("THR_TEST_BUILD_DIR"), path, args);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        size_t n = fread(out, 1, len - 1, p);
        out[n] = 0;
        return pclose(p);
}

/*
 * A scribbled directory entry (global_state 0xffffffff: an unknown state, 2^24 - 1 hosts; a
 * share of 5 wholes; a lease end far away): shmctl (text and JSON) and /metrics print it without
 * crashing, the state as "unknown" (no state line in the metrics), the numbers as they are.
 */
Test(global_review, a_scribbled_global_entry_is_shown_not_crashed_on)
{
        cr_assert_not_null(getenv("THR_TEST_BUILD_DIR"), "run through ctest");
        struct shm_limiter_spec s = tspec("api", 1000, 1000000000ull, 50, 50);
        struct tarena t;
        tarena_make(&t, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        int idx = shm_dir_find(&t.map, "api");
        cr_assert_geq(idx, 0);
        struct thr_dir_entry *de =
            (struct thr_dir_entry *)shm_at(t.map.base, t.map.g.dir_off) + idx;
        atomic_store(&de->global_state, 0xffffffffu);
        atomic_store(&de->global_share, 5000000u);
        atomic_store(&de->global_expiry_ns, UINT64_MAX);
        char out[16384];
        int st = shmctl(t.path, "limiters", out, sizeof(out));
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
        cr_assert(strstr(out, "unknown") && strstr(out, "16777215 hosts"), "%s", out);
        st = shmctl(t.path, "--json limiters", out, sizeof(out));
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
        cr_assert(strstr(out, "\"share_ppm\":5000000,\"state\":\"unknown\""), "%s", out);
        size_t len = 0;
        char *text = metrics_render(&t.map, &len);
        cr_assert_not_null(text);
        cr_assert(strstr(text, "throttle_global_share{limiter=\"api\"} 5.000000"), "%s", text);
        cr_assert_null(strstr(text, "throttle_global_state{"), "%s", text);
        free(text);
        tarena_free(&t);
}

/* ------------------------------------------------------------------------ a slow round */

/*
 * Redis answering each renewal in 80 ms (within a 100 ms timeout) and four global limiters: a
 * round takes 320 ms, each limiter is renewed every 320 ms, but its lease lasts 200 ms. Between
 * renewals each ran on at its leased share past its lease's end (by its own clock, and Redis's:
 * other hosts may take that share then). A lease that could end before the lease thread looks
 * again now follows on_redis_down (closed here) until its renewal comes: not LEASED past the
 * lease's end but by a call slower than the one before it.
 */
Test(global_review, a_slow_round_never_runs_a_share_past_its_lease, .timeout = 60)
{
        struct fake f = {0};
        struct tdaemon d;
        fake_granting(&f, FAKE_SLOW, &d, "glw");
        char text[2048];
        int len = snprintf(text, sizeof(text),
                           "[global]\nredis = 127.0.0.1:%d\nhost_id = h0\nprefix = w%d\n"
                           "interval = 50ms\nlease_ttl = 200ms\ntimeout = 100ms\n\n",
                           f.port, (int)getpid());
        const char *names[] = {"a", "b", "c", "d"};
        for (int i = 0; i < 4; i++)
                len += snprintf(text + len, sizeof(text) - (size_t)len,
                                "[%s]\nrate = 1000/s\nscope = global\nexpected_hosts = 2\n"
                                "on_redis_down = closed\n\n",
                                names[i]);
        tdaemon_start_real(&d, text);
        TWAIT_FOR(atomic_load(&entry(&d, "d")->global_state) >> 8 == 2, 5, "a first lease of each");
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int late = 0, samples = 0;
        double worst = 0;
        while (since(&t0) < 3.0) {
                uint64_t now = shm_now_ns(shm_hdr(&d.map));
                for (int i = 0; i < 4; i++) {
                        const struct thr_dir_entry *de = entry(&d, names[i]);
                        uint32_t st = atomic_load(&de->global_state) & 0xff;
                        uint64_t end = atomic_load(&de->global_expiry_ns);
                        samples++;
                        /* 20 ms of slack: the lease thread looks between two calls */
                        if (st == THR_GLOBAL_LEASED && end + 20000000 < now) {
                                late++;
                                worst = (double)(now - end) / 1e6 > worst
                                            ? (double)(now - end) / 1e6
                                            : worst;
                        }
                }
                usleep(2000);
        }
        /* before the fix: about 30% of the samples, up to 130 ms late; now only a call slower
         * than the one before it can pass the end, by its overrun: on a loaded machine (CI under
         * ASan) that happens, so the bound is 5% of the samples and the worst is only reported */
        cr_log_info("%d of %d samples leased past the lease's end, by up to %.0f ms", late, samples,
                    worst);
        cr_expect_lt(late * 20, samples,
                     "%d of %d samples leased past the lease's end (by up to %.0f ms)", late,
                     samples, worst);
        tdaemon_fini(&d);
        fake_stop(&f);
}

/*
 * The lease's end shmctl and the metrics show is the daemon's own, counted from before its
 * request as the lease is (global.c one()). Against a fake that answers every renewal
 * FAKE_LATE_NS late, each end published must lie at least that much before the moment it is
 * first seen + lease_ttl: the request was sent before the reply came, and the reply before the
 * end was published. No timing assumption about the daemon or this test: a late look only
 * widens the margin. Before the fix the end was counted from after the reply, 1 s later than the
 * daemon's lease, and every renewal seen within 1 s of its publication failed here.
 */
Test(global_review, the_lease_end_shown_is_counted_from_before_the_request, .timeout = 60)
{
        struct fake f = {0};
        struct tdaemon d;
        fake_granting(&f, FAKE_LATE, &d, "gle");
        const uint64_t ttl = 5 * SEC;
        char text[1024];
        snprintf(text, sizeof(text),
                 "[global]\nredis = 127.0.0.1:%d\nhost_id = h0\nprefix = e%d\n"
                 "interval = 50ms\nlease_ttl = 5s\ntimeout = 3s\n\n"
                 "[api]\nrate = 1000/s\nscope = global\nexpected_hosts = 2\n",
                 f.port, (int)getpid());
        tdaemon_start_real(&d, text);
        const struct thr_dir_entry *de = entry(&d, "api");
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        uint64_t last = 0;
        int seen = 0;
        while (seen < 3 && since(&t0) < 40.0) {
                uint32_t st = atomic_load(&de->global_state) & 0xff;
                uint64_t end = atomic_load(&de->global_expiry_ns);
                uint64_t now = shm_now_ns(shm_hdr(&d.map)); /* read after END */
                if (st == THR_GLOBAL_LEASED && end && end != last) {
                        seen++;
                        /* 1 ms for the two clocks read apart in the daemon's conversion */
                        cr_expect_leq(end + FAKE_LATE_NS, now + ttl + 1000000,
                                      "renewal %d: the end shown is %.3f s from now; a lease "
                                      "counted from a request sent %.1f s before the reply "
                                      "ends at most %.3f s from now",
                                      seen, ((double)end - (double)now) / 1e9, FAKE_LATE_NS / 1e9,
                                      ((double)ttl - FAKE_LATE_NS) / 1e9);
                        last = end;
                }
                usleep(1000);
        }
        cr_expect_eq(seen, 3, "3 renewals seen in 40 s (each takes %.1f s)", FAKE_LATE_NS / 1e9);
        tdaemon_fini(&d);
        fake_stop(&f);
}

/*
 * The bound of global.c with demand moving fast: three hosts, one busy at a time, the busy one
 * changing every 150 ms for 10 s (about 6.7 moves a second, each moving most of the share). Over
 * every 1 s window the fleet admits at most R + (B + H) + B x (the share increases in it, at most
 * one whole per move) + R x (the decreases) x (round trip + publish, about a millisecond here).
 */
Test(global_review, demand_moving_every_150_ms_stays_within_the_bound, .timeout = 120)
{
        need_redis();
        struct tredis r = {0};
        cr_assert_eq(tredis_start(&r, NULL), 0);
        struct tally *t = tally_new();
        struct tdaemon d[3];
        pid_t cl[3];
        char text[1024];
        for (int h = 0; h < 3; h++) {
                atomic_store(&t->idle[h], h != 0);
                tdaemon_init(&d[h]);
                snprintf(d[h].name, sizeof(d[h].name), "glm%d_%d", (int)getpid(), h);
                storm_text(text, sizeof(text), r.port, h, "global");
                tdaemon_start_real(&d[h], text);
        }
        clock_gettime(CLOCK_MONOTONIC, &t->t0);
        for (int h = 0; h < 3; h++)
                cl[h] = tally_client(t, d[h].name, h);
        TWAIT_FOR(gshare(&d[0], "api") >= 700000, 8, "host 0 busy takes most");
        double start = since(&t->t0);
        int moves = 0, busy = 0;
        while (since(&t->t0) < start + 10.0) {
                usleep(150000);
                atomic_store(&t->idle[busy], 1);
                busy = (busy + 1) % 3;
                atomic_store(&t->idle[busy], 0);
                moves++;
        }
        double worst = 0, sum = 0;
        int windows = 0;
        for (double w = start + 1.0; w + 1.0 <= start + 10.0; w += 0.1) {
                double n = tally_rate(t, w, w + 1.0);
                worst = n > worst ? n : worst;
                sum += n;
                windows++;
        }
        /* The floor is on the mean of the 100 ms buckets in which the fleet admitted something
         * (whole buckets of [start + 1, start + 10)), not of every window: a bucket with no
         * admission is one in which no client ran (descheduled, or the VM paused), and a 3 s
         * pause cost a correct fleet's mean 30%. A share that never follows the busy host keeps
         * the buckets it admits in short, and one that leaves it at nothing empties them: fewer
         * than 30 live buckets (3 s of the 9) fail too. */
        uint64_t live_sum = 0;
        int live = 0, whole = 0;
        for (int k = (int)((start + 1.0) * 10) + 1; k < (int)((start + 10.0) * 10) && k < 200;
             k++, whole++) {
                uint64_t in = 0;
                for (int h = 0; h < 3; h++)
                        in += atomic_load(&t->admitted[h][k]);
                live_sum += in;
                live += in != 0;
        }
        double live_mean = live ? (double)live_sum / live * 10 : 0;
        double per_s = moves / 10.0;
        double bound = 1000 + (50 + 3) + 50 * (per_s + 1) + 1000 * (per_s + 1) * 0.002;
        cr_log_info("demand moving %.1f times a second: the worst 1 s window admitted %.0f, the "
                    "mean %.0f, the mean of %d live buckets of %d %.0f/s; the bound %.0f",
                    per_s, worst, sum / windows, live, whole, live_mean, bound);
        cr_expect_leq(worst, bound, "worst 1 s window %.0f > bound %.0f", worst, bound);
        /* measured: about 420/s. Each move waits for the idle host's demand to be seen and its
         * share given back (two renewals of each, ~100 ms of the 150): safe, not fast */
        cr_expect_geq(live, 30, "the fleet admitted in only %d of %d buckets", live, whole);
        cr_expect_geq(live_mean, 300,
                      "the share follows the busy host (mean of the live buckets %.0f/s)",
                      live_mean);
        atomic_store(&t->stop, 1);
        for (int h = 0; h < 3; h++) {
                waitpid(cl[h], NULL, 0);
                tdaemon_fini(&d[h]);
        }
        munmap(t, sizeof(*t));
        tredis_stop(&r);
}

/*
 * Daemon 0 SIGKILLed at random moments (0 to 300 ms after it is ready, while demand moves
 * between the two hosts every 100 ms so that it publishes often) and restarted, ten times: each
 * restart re-attaches the arena, starts at the safe share (STARTING) until Redis answers, the
 * clients never get an error, and the record it runs stays at most the whole rate.
 */
Test(global_review, a_daemon_killed_at_random_moments_restarts_at_the_safe_share, .timeout = 180)
{
        need_redis();
        struct tredis r = {0};
        cr_assert_eq(tredis_start(&r, NULL), 0);
        struct tally *t = tally_new();
        atomic_store(&t->idle[1], 1);
        atomic_store(&t->idle[2], 1);
        struct tdaemon d[2];
        int di[2];
        pid_t cl[2];
        char text[1024];
        for (int h = 0; h < 2; h++) {
                tdaemon_init(&d[h]);
                snprintf(d[h].name, sizeof(d[h].name), "glk%d_%d", (int)getpid(), h);
                storm_text(text, sizeof(text), r.port, h, "global");
                di[h] = tdaemon_start_real(&d[h], text);
        }
        clock_gettime(CLOCK_MONOTONIC, &t->t0);
        for (int h = 0; h < 2; h++)
                cl[h] = tally_client(t, d[h].name, h);
        srand((unsigned)getpid());
        int starting = 0;
        for (int k = 0; k < 10; k++) {
                int wait_ms = rand() % 300;
                for (int w = 0; w < wait_ms; w += 10) {
                        if (w % 100 == 0) { /* move the demand */
                                int b = (w / 100 + k) % 2;
                                atomic_store(&t->idle[b], 0);
                                atomic_store(&t->idle[1 - b], 1);
                        }
                        usleep(10000);
                }
                tdaemon_kill(&d[0], di[0]);
                tdaemon_unmap(&d[0]);
                di[0] = tdaemon_start(&d[0], NULL);
                tdaemon_wait_ready(&d[0], di[0], (uint64_t)k + 2);
                uint32_t st = gstate(&d[0], "api"), sh = gshare(&d[0], "api");
                cr_assert(st == THR_GLOBAL_STARTING || st == THR_GLOBAL_LEASED,
                          "restart %d: state %u", k, st);
                if (st == THR_GLOBAL_STARTING) {
                        starting++;
                        cr_assert_eq(sh, ONE / 4, "restart %d: the safe share, not %u", k, sh);
                }
                struct thr_limiter_info info;
                thr_limiter *l = tdaemon_lim(&d[0], 0, "api");
                cr_assert_eq(thr_limiter_info(l, &info), 0);
                cr_assert_leq(info.burst, 50, "restart %d: burst %" PRIu64, k, info.burst);
                TWAIT_FOR(gstate(&d[0], "api") == THR_GLOBAL_LEASED, 3, "leased again");
        }
        cr_log_info("%d of 10 restarts seen at the safe share before Redis answered", starting);
        atomic_store(&t->stop, 1);
        for (int h = 0; h < 2; h++) {
                int st = 0;
                waitpid(cl[h], &st, 0);
                cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %d: status %#x", h, st);
                tdaemon_fini(&d[h]);
        }
        munmap(t, sizeof(*t));
        tredis_stop(&r);
}

/* A reload that moves [global] redis to another server: the daemon leases there from its next
 * round (the old server's lease lapses), keeping its share meanwhile (held). */
Test(global_review, a_reload_changing_the_redis_address_leases_from_the_new_one, .timeout = 60)
{
        need_redis();
        struct tredis r[2] = {{0}};
        for (int k = 0; k < 2; k++)
                cr_assert_eq(tredis_start(&r[k], NULL), 0);
        struct tdaemon d;
        tdaemon_init(&d);
        snprintf(d.name, sizeof(d.name), "gla%d", (int)getpid());
        char text[1024], full[2048], key[64];
        snprintf(key, sizeof(key), "{r%d:api}:leases", (int)getpid());
        daemon_text(text, sizeof(text), r[0].port, "h0", "closed");
        int i = tdaemon_start_real(&d, text);
        TWAIT_FOR(gstate(&d, "api") == THR_GLOBAL_LEASED && holds(&r[0], key, "h0"), 5,
                  "a first lease");
        daemon_text(text, sizeof(text), r[1].port, "h0", "closed");
        full_text(full, sizeof(full), &d, text);
        tdaemon_config_raw(&d, full);
        cr_assert_eq(kill(d.pid[i], SIGHUP), 0);
        tdaemon_wait_log(&d, i, "reloaded:", 1);
        TWAIT_FOR(holds(&r[1], key, "h0"), 3, "leased from the new server");
        cr_assert_eq(gstate(&d, "api"), THR_GLOBAL_LEASED);
        tdaemon_fini(&d);
        for (int k = 0; k < 2; k++)
                tredis_stop(&r[k]);
}

/*
 * A Redis Cluster with one master killed: the limiters whose lease hash is on a live master keep
 * their leases; only the dead master's limiter follows on_redis_down. Before the fix a failed
 * call marked the whole link down for the round, so every limiter after the dead master's in the
 * round went unrenewed and closed too (the round's order: the dead master's limiter first).
 */
Test(global_review, a_dead_cluster_master_closes_only_its_limiters, .timeout = 180)
{
        need_redis();
        struct tredis_cluster cl;
        cr_assert_eq(tredis_cluster_start(&cl), 0);
        char names[3][32], text[2048], lims[1024] = "";
        char prefix[16];
        snprintf(prefix, sizeof(prefix), "c%d", (int)getpid());
        cr_assert_eq(tredis_cluster_spread(&cl, prefix, names), 0, "a limiter name on each master");
        const int order[3] = {1, 0, 2}; /* the dead master's limiter first in the round */
        for (int k = 0; k < 3; k++) {
                size_t at = strlen(lims);
                snprintf(lims + at, sizeof(lims) - at,
                         "[%s]\nrate = 100/s\nscope = global\nexpected_hosts = 2\n"
                         "on_redis_down = closed\n\n",
                         names[order[k]]);
        }
        struct tdaemon d;
        tdaemon_init(&d);
        snprintf(d.name, sizeof(d.name), "glc%d", (int)getpid());
        snprintf(text, sizeof(text),
                 "[global]\nredis = 127.0.0.1:%d\nhost_id = h0\nprefix = c%d\n"
                 "interval = 50ms\nlease_ttl = 400ms\ntimeout = 100ms\n\n%s",
                 cl.node[0].port, (int)getpid(), lims);
        tdaemon_start_real(&d, text);
        for (int i = 0; i < 3; i++)
                TWAIT_FOR(gstate(&d, names[i]) == THR_GLOBAL_LEASED, 10, "leased");
        /* without full coverage the live masters keep serving their slots once the cluster
         * marks the dead one failed (5 s node timeout): a test stalled that long can still
         * judge the live limiters */
        for (int i = 0; i < 3; i++) {
                redisReply *rp =
                    tredis_command(&cl.node[i], "CONFIG SET cluster-require-full-coverage no");
                cr_assert(rp && rp->type == REDIS_REPLY_STATUS, "CONFIG SET");
                freeReplyObject(rp);
        }
        tredis_kill(&cl.node[1], SIGKILL);
        TWAIT_FOR(gstate(&d, names[1]) == THR_GLOBAL_CLOSED, 10,
                  "the dead master's limiter closes");
        /* The dead master's limiter closed after a failed call in a round; every round since
         * fails that call first. A live master's limiter must be renewed in such a round: its
         * lease leased and ending more than lease_ttl (400 ms) after the close was seen, which
         * only a renewal after it gives (before the fix none came). Judged on the lease's end the
         * daemon publishes, polled up to 10 s, not a sample after a 1 s sleep: a daemon
         * descheduled past a 400 ms lease on a paused VM rightly showed it lapsed. (The live
         * masters serve their slots past the node timeout: full coverage is not required.) */
        uint64_t closed_ns = shm_now_ns(shm_hdr(&d.map));
        for (int k = 0; k < 3; k += 2) {
                const struct thr_dir_entry *de = entry(&d, names[k]);
                TWAIT_FOR(gstate(&d, names[k]) == THR_GLOBAL_LEASED &&
                              atomic_load(&de->global_expiry_ns) > closed_ns + 400 * 1000000ull,
                          10, "a live master's limiter renewed after the dead master's closed");
        }
        tdaemon_fini(&d);
        tredis_cluster_stop(&cl);
}

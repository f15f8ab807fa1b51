/*
 * redis_gcra.c - Redis with the usual GCRA Lua script, over loopback TCP (backend "redis-tcp",
 * also selected by its old name "redis") or over a Unix socket (backend "redis-unix"), as
 * backends of the scaling benchmark. The two differ only in the transport: the same server
 * options, script, client and one connection per process.
 *
 * What it models: the common way to share a limit between processes today: every decision is an
 * EVALSHA of a GCRA script (the redis-gcra form) on a Redis server, over one connection per
 * process. The script reads the server's clock with TIME, as redis-gcra does (so the clients'
 * clocks never matter), gets the key's TAT, computes new_tat = max(tat, now) + cost*T, admits iff
 * new_tat - now <= B*T, and then SETs the new TAT with a PX expiry at the time the bucket is full
 * again (an expired key is a full bucket). Denials write nothing.
 *
 * Why it is fair: same GCRA semantics as every backend (DESIGN.md section 5, T = period / rate in
 * whole ns). Times in the script are ns since a base second taken from the server at setup (as
 * redis-gcra subtracts a fixed epoch) so that Lua's doubles hold them exactly for days. The server
 * is a local redis-server with persistence off (no fsync, no RDB/AOF), listening on 127.0.0.1
 * (redis-tcp) or only on a Unix socket in a fresh mkdtemp directory (redis-unix: --port 0
 * --unixsocket, the cheapest Redis deployment there is); the client is hiredis, synchronous, one
 * request in flight (a limiter must know the answer before it goes on). Setup times 1000 PINGs on
 * one connection and the report's note gives their mean round trip: the transport's floor.
 *
 * Churn: nothing to configure; a key's PX expiry is when its bucket is full again, so Redis
 * drops idle keys by itself. The counters reported are INFO's expired_keys and evicted_keys and
 * the key count of db0.
 *
 * Life cycle: setup starts `redis-server` on a free loopback port (or its socket) as a child
 * process (parent-death
 * signal set, so it dies with the benchmark), waits for PING (at most 5 s), loads the script;
 * teardown stops it (SIGTERM, then SIGKILL after 5 s). If redis-server is not installed, setup
 * returns NULL with "skip: ...".
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "backend.h"

#define WAIT_MS 5000 /* bound on server start-up and shut-down */

static const char gcra_lua[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local T, bt, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local t = redis.call('TIME')\n"
    "local now = (tonumber(t[1]) - tonumber(ARGV[4])) * 1000000000 + tonumber(t[2]) * 1000\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"
    "if tat < now then tat = now end\n"
    "local new_tat = tat + cost * T\n"
    "if new_tat - now > bt then return 0 end\n"
    "if cost > 0 then\n"
    "  local px = math.ceil((new_tat - now) / 1000000)\n"
    "  if px < 1 then px = 1 end\n"
    "  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', px)\n"
    "end\n"
    "return 1\n";

struct rstate {
        pid_t pid; /* the redis-server child */
        int port;  /* redis-tcp */
        int unix_sock;
        char dir[64];   /* redis-unix: the temporary directory, and the socket in it */
        char sock[108]; /* sizeof(sun_path) */
        double ping_us; /* mean PING round trip at setup */
        uint64_t burst;
        char sha[48];                 /* of the loaded script */
        char t[24], bt[24], base[24]; /* ARGV 1, 2 and 4, preformatted */
};

struct rhandle {
        redisContext *c;
        const struct rstate *st;
};

/* ---------------------------------------------------------------- the server */

static int find_server(char *out, size_t len)
{
        const char *path = getenv("PATH");
        char dirs[4096];
        snprintf(dirs, sizeof(dirs), "%s", path ? path : "/usr/local/bin:/usr/bin:/bin");
        for (char *sp, *d = strtok_r(dirs, ":", &sp); d; d = strtok_r(NULL, ":", &sp)) {
                snprintf(out, len, "%s/redis-server", d);
                if (access(out, X_OK) == 0)
                        return 0;
        }
        return -ENOENT;
}

int bench_free_port(void)
{
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
                return -errno;
        int rc = bind(fd, (struct sockaddr *)&a, sizeof(a));
        if (rc == 0)
                rc = getsockname(fd, (struct sockaddr *)&a, &alen);
        rc = rc == 0 ? ntohs(a.sin_port) : -errno;
        close(fd);
        return rc;
}

static pid_t spawn(const char *exe, const struct rstate *st)
{
        char p[16];
        snprintf(p, sizeof(p), "%d", st->port);
        char *tcp[] = {(char *)exe, "--port",       p,    "--bind",      "127.0.0.1", "--save",
                       "",          "--appendonly", "no", "--daemonize", "no",        NULL};
        char *uds[] = {(char *)exe,
                       "--port",
                       "0",
                       "--unixsocket",
                       (char *)st->sock,
                       "--unixsocketperm",
                       "700",
                       "--save",
                       "",
                       "--appendonly",
                       "no",
                       "--daemonize",
                       "no",
                       NULL};
        char **argv = st->unix_sock ? uds : tcp;
        pid_t pid = fork();
        if (pid != 0)
                return pid;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
                dup2(fd, STDIN_FILENO);
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
        }
        execv(exe, argv);
        _exit(127);
}

static void sleep_ms(long ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
}

/* Stop the child: SIGTERM, wait up to WAIT_MS, then SIGKILL. */
static void stop(pid_t pid)
{
        kill(pid, SIGTERM);
        for (int ms = 0; ms < WAIT_MS; ms += 10) {
                if (waitpid(pid, NULL, WNOHANG) == pid)
                        return;
                sleep_ms(10);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
}

static redisContext *connect_to(const struct rstate *st)
{
        struct timeval tv = {.tv_sec = 1};
        redisContext *c = st->unix_sock ? redisConnectUnixWithTimeout(st->sock, tv)
                                        : redisConnectWithTimeout("127.0.0.1", st->port, tv);
        if (c && !c->err) {
                struct timeval op = {.tv_sec = 5};
                redisSetTimeout(c, op);
                return c;
        }
        if (c)
                redisFree(c);
        return NULL;
}

/* A connection once the server answers PING, or NULL after WAIT_MS or if the child died. */
static redisContext *wait_ready(const struct rstate *st)
{
        pid_t pid = st->pid;
        for (int ms = 0; ms < WAIT_MS; ms += 10) {
                redisContext *c = connect_to(st);
                redisReply *r = c ? redisCommand(c, "PING") : NULL;
                int ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
                if (r)
                        freeReplyObject(r);
                if (ok)
                        return c;
                if (c)
                        redisFree(c);
                if (waitpid(pid, NULL, WNOHANG) == pid)
                        return NULL;
                sleep_ms(10);
        }
        return NULL;
}

/* Load the script and take the base second. */
static int prepare(redisContext *c, struct rstate *st, struct bench_cfg *cfg)
{
        redisReply *r = redisCommand(c, "SCRIPT LOAD %s", gcra_lua);
        int ok = r && r->type == REDIS_REPLY_STRING && r->len < (long)sizeof(st->sha);
        if (ok)
                snprintf(st->sha, sizeof(st->sha), "%s", r->str);
        else
                snprintf(cfg->err, sizeof(cfg->err), "redis: SCRIPT LOAD failed: %s",
                         r && r->str ? r->str : c->errstr);
        if (r)
                freeReplyObject(r);
        if (!ok)
                return -EIO;
        r = redisCommand(c, "TIME");
        ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[0]->type == REDIS_REPLY_STRING;
        if (ok)
                snprintf(st->base, sizeof(st->base), "%s", r->element[0]->str);
        else
                snprintf(cfg->err, sizeof(cfg->err), "redis: TIME failed");
        if (r)
                freeReplyObject(r);
        return ok ? 0 : -EIO;
}

/* Mean round trip of 1000 PINGs on C, in us; 0 if one failed. */
static double ping_rtt(redisContext *c)
{
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int i = 0; i < 1000; i++) {
                redisReply *r = redisCommand(c, "PING");
                int ok = r && r->type == REDIS_REPLY_STATUS;
                if (r)
                        freeReplyObject(r);
                if (!ok)
                        return 0;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / 1e6;
}

/* Where the server will listen: a free loopback port, or a socket in a new directory. */
static int endpoint(struct rstate *st, struct bench_cfg *cfg)
{
        if (st->unix_sock) {
                snprintf(st->dir, sizeof(st->dir), "/tmp/bench-redis-XXXXXX");
                if (!mkdtemp(st->dir)) {
                        int e = errno;
                        snprintf(cfg->err, sizeof(cfg->err), "redis: mkdtemp: %s", strerror(e));
                        return -e;
                }
                snprintf(st->sock, sizeof(st->sock), "%s/redis.sock", st->dir);
                return 0;
        }
        st->port = bench_free_port();
        if (st->port < 0) {
                snprintf(cfg->err, sizeof(cfg->err), "redis: no free port: %s",
                         strerror(-st->port));
                return st->port;
        }
        return 0;
}

static void endpoint_remove(const struct rstate *st)
{
        if (st->unix_sock && st->dir[0]) {
                unlink(st->sock);
                rmdir(st->dir);
        }
}

/* Start the server and prepare it; the server is stopped again on failure. */
static int start(struct rstate *st, const char *exe, struct bench_cfg *cfg)
{
        int rc = endpoint(st, cfg);
        if (rc < 0)
                return rc;
        st->pid = spawn(exe, st);
        if (st->pid < 0) {
                int e = errno;
                snprintf(cfg->err, sizeof(cfg->err), "redis: fork: %s", strerror(e));
                return -e;
        }
        redisContext *c = wait_ready(st);
        rc = -ETIMEDOUT;
        if (!c && st->unix_sock)
                snprintf(cfg->err, sizeof(cfg->err), "redis-server on %s did not answer", st->sock);
        else if (!c)
                snprintf(cfg->err, sizeof(cfg->err), "redis-server on port %d did not answer",
                         st->port);
        else
                rc = prepare(c, st, cfg);
        if (rc == 0)
                st->ping_us = ping_rtt(c);
        if (c)
                redisFree(c);
        if (rc < 0) {
                stop(st->pid);
                endpoint_remove(st);
        }
        return rc;
}

/* ---------------------------------------------------------------- backend */

static void *rd_setup(struct bench_cfg *cfg, int unix_sock)
{
        char exe[4200];
        if (find_server(exe, sizeof(exe)) < 0) {
                snprintf(cfg->err, sizeof(cfg->err), "skip: redis-server not installed");
                return NULL;
        }
        struct rstate *st = calloc(1, sizeof(*st));
        if (!st) {
                snprintf(cfg->err, sizeof(cfg->err), "out of memory");
                return NULL;
        }
        uint64_t t_ns = (cfg->period_ns / cfg->rate_n) ? cfg->period_ns / cfg->rate_n : 1;
        st->unix_sock = unix_sock;
        st->burst = cfg->burst;
        snprintf(st->t, sizeof(st->t), "%llu", (unsigned long long)t_ns);
        snprintf(st->bt, sizeof(st->bt), "%llu", (unsigned long long)(t_ns * cfg->burst));
        if (start(st, exe, cfg) < 0) {
                free(st);
                return NULL;
        }
        return st;
}

/* One connection per process. */
static void *rd_attach(void *state)
{
        const struct rstate *st = state;
        struct rhandle *h = malloc(sizeof(*h));
        if (!h)
                return NULL;
        h->st = st;
        h->c = connect_to(st);
        if (!h->c) {
                free(h);
                return NULL;
        }
        return h;
}

static int rd_try(void *handle, uint64_t key_index, const char *key, size_t key_len, uint64_t cost)
{
        struct rhandle *h = handle;
        const struct rstate *st = h->st;
        (void)key_index;
        if (key_len == 0)
                return -EINVAL;
        if (cost > st->burst)
                return -ERANGE;
        redisReply *r = redisCommand(h->c, "EVALSHA %s 1 %b %s %s %llu %s", st->sha, key, key_len,
                                     st->t, st->bt, (unsigned long long)cost, st->base);
        int rc = -EIO;
        if (r && r->type == REDIS_REPLY_INTEGER)
                rc = r->integer ? 1 : 0;
        if (r)
                freeReplyObject(r);
        return rc;
}

static void rd_detach(void *handle)
{
        struct rhandle *h = handle;
        if (!h)
                return;
        redisFree(h->c);
        free(h);
}

static void rd_teardown(void *state)
{
        struct rstate *st = state;
        if (!st)
                return;
        stop(st->pid);
        endpoint_remove(st);
        free(st);
}

/* "NAME:<number>" in an INFO reply, 0 if absent. */
static uint64_t info_field(const char *info, const char *name)
{
        const char *p = strstr(info, name);
        return p ? strtoull(p + strlen(name), NULL, 10) : 0;
}

static int rd_evictions(void *state, struct bench_evictions *out)
{
        const struct rstate *st = state;
        redisContext *c = connect_to(st);
        redisReply *r = c ? redisCommand(c, "INFO") : NULL;
        int rc = -EIO;
        if (r && r->type == REDIS_REPLY_STRING) {
                *out =
                    (struct bench_evictions){.idle = info_field(r->str, "\r\nexpired_keys:"),
                                             .full = info_field(r->str, "\r\nevicted_keys:"),
                                             .live = info_field(r->str, "\r\ndb0:keys="),
                                             .has = BENCH_EV_IDLE | BENCH_EV_FULL | BENCH_EV_LIVE};
                rc = 0;
        }
        if (r)
                freeReplyObject(r);
        if (c)
                redisFree(c);
        return rc;
}

static void *rd_setup_tcp(struct bench_cfg *cfg)
{
        return rd_setup(cfg, 0);
}

static void *rd_setup_unix(struct bench_cfg *cfg)
{
        return rd_setup(cfg, 1);
}

static void rd_describe(const void *state, char *out, size_t len)
{
        const struct rstate *st = state;
        snprintf(out, len, "PING round trip %.1f us (mean of 1000 at setup)", st->ping_us);
}

const struct bench_backend bench_redis_tcp = {
    .name = "redis-tcp",
    .what = "Redis GCRA Lua script (EVALSHA, server TIME) over loopback TCP, hiredis, one "
            "connection per process",
    .setup = rd_setup_tcp,
    .attach = rd_attach,
    .try_key = rd_try,
    .detach = rd_detach,
    .teardown = rd_teardown,
    .evictions = rd_evictions,
    .describe = rd_describe,
};

const struct bench_backend bench_redis_unix = {
    .name = "redis-unix",
    .what = "Redis GCRA Lua script (EVALSHA, server TIME) over a Unix socket, hiredis, one "
            "connection per process",
    .setup = rd_setup_unix,
    .attach = rd_attach,
    .try_key = rd_try,
    .detach = rd_detach,
    .teardown = rd_teardown,
    .evictions = rd_evictions,
    .describe = rd_describe,
};

/*
 * redis_run.c - real redis-server processes for tests (see redis_run.h).
 *
 * A port is picked by binding port 0 on 127.0.0.1 (and checking port + 10000, the cluster bus,
 * is free too); another process may take it before the server binds, so a server that exits
 * with "Address already in use" in its log is started again on a new port (5 tries).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "redis_run.h"

#define START_WAIT_MS   20000 /* until a server answers PING */
#define CLUSTER_WAIT_MS 60000 /* until redis-cli --cluster create is done, then until state ok */

static long long now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
}

/* Whether PORT can be bound on 127.0.0.1 now. */
static bool port_free(int port)
{
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return false;
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        return ok;
}

/* A free loopback port whose cluster bus port (+10000) is free too; -errno if none found. */
static int pick_port(void)
{
        for (int tries = 0; tries < 200; tries++) {
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return -errno;
                struct sockaddr_in sa = {.sin_family = AF_INET,
                                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                socklen_t n = sizeof(sa);
                int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
                                 getsockname(fd, (struct sockaddr *)&sa, &n) == 0
                             ? ntohs(sa.sin_port)
                             : -errno;
                close(fd);
                if (rc < 0)
                        return rc;
                if (rc + 10000 <= 65535 && port_free(rc + 10000))
                        return rc;
        }
        return -EADDRINUSE;
}

static bool in_path(const char *prog)
{
        const char *path = getenv("PATH");
        char buf[512];
        if (!path)
                path = "/usr/bin:/bin";
        for (const char *p = path; *p;) {
                size_t n = strcspn(p, ":");
                snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, p, prog);
                if (access(buf, X_OK) == 0)
                        return true;
                p += n;
                if (*p == ':')
                        p++;
        }
        return false;
}

bool tredis_available(char *why, size_t whylen)
{
        const char *progs[] = {"redis-server", "redis-cli"};
        for (size_t i = 0; i < 2; i++)
                if (!in_path(progs[i])) {
                        snprintf(why, whylen, "%s is not installed (apt-get install redis-server)",
                                 progs[i]);
                        return false;
                }
        return true;
}

/* The last lines of R's log on stderr. */
static void log_tail(const struct tredis *r)
{
        char path[300], buf[2048];
        snprintf(path, sizeof(path), "%s/redis.log", r->dir);
        FILE *f = fopen(path, "r");
        if (!f)
                return;
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        fprintf(stderr, "--- %s (tail):\n%s\n---\n", path, buf);
}

static bool log_says(const struct tredis *r, const char *what)
{
        char path[300], line[1024];
        bool found = false;
        snprintf(path, sizeof(path), "%s/redis.log", r->dir);
        FILE *f = fopen(path, "r");
        if (!f)
                return false;
        while (!found && fgets(line, sizeof(line), f))
                found = strstr(line, what) != NULL;
        fclose(f);
        return found;
}

/* Exec redis-server with R's arguments (in the child). */
static void exec_server(const struct tredis *r)
{
        char port[16], path[300];
        const char *argv[24 + TREDIS_MAX_ARGS];
        int n = 0;
        snprintf(port, sizeof(port), "%d", r->port);
        snprintf(path, sizeof(path), "%s/redis.log", r->dir);
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0 || chdir(r->dir) != 0)
                _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        argv[n++] = "redis-server";
        argv[n++] = "--port";
        argv[n++] = port;
        argv[n++] = "--bind";
        argv[n++] = "127.0.0.1 -::1"; /* "-": ::1 only where the host has IPv6 */
        argv[n++] = "--dir";
        argv[n++] = r->dir;
        const char *fixed[] = {"--save", "", "--appendonly", "no", "--daemonize", "no"};
        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
                argv[n++] = fixed[i];
        for (int i = 0; i < r->nextra; i++) {
                argv[n++] = r->extra[i];
                if (!strcmp(r->extra[i], "--unixsocket") &&
                    (i + 1 == r->nextra || !strncmp(r->extra[i + 1], "--", 2))) {
                        argv[n++] = r->sock;
                        argv[n++] = "--unixsocketperm";
                        argv[n++] = "700";
                }
        }
        argv[n] = NULL;
        execvp("redis-server", (char *const *)argv);
        dprintf(2, "exec redis-server: %s\n", strerror(errno));
        _exit(127);
}

/* Whether R answers PING now. */
static bool pings(const struct tredis *r)
{
        redisReply *p = tredis_command(r, "PING");
        bool ok = p && ((p->type == REDIS_REPLY_STATUS && !strcmp(p->str, "PONG")) ||
                        (p->type == REDIS_REPLY_ERROR && strstr(p->str, "NOAUTH")));
        if (p)
                freeReplyObject(p);
        return ok;
}

/* Fork the server on r->port and wait for its PING; -EADDRINUSE if the port was taken. */
static int spawn(struct tredis *r)
{
        pid_t pid = tfork();
        if (pid < 0)
                return -errno;
        if (pid == 0)
                exec_server(r);
        r->pid = pid;
        for (long long end = now_ms() + START_WAIT_MS; now_ms() < end; sleep_ms(20)) {
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        r->pid = 0;
                        if (log_says(r, "Address already in use"))
                                return -EADDRINUSE;
                        fprintf(stderr, "redis-server on port %d exited (status 0x%x)\n", r->port,
                                st);
                        log_tail(r);
                        return -ECHILD;
                }
                if (pings(r))
                        return 0;
        }
        fprintf(stderr, "redis-server on port %d: no PONG within %d ms\n", r->port, START_WAIT_MS);
        log_tail(r);
        tredis_kill(r, SIGKILL);
        return -ETIMEDOUT;
}

int tredis_start(struct tredis *r, const char *const *extra_args)
{
        memset(r, 0, sizeof(*r));
        for (; extra_args && *extra_args; extra_args++) {
                if (r->nextra == TREDIS_MAX_ARGS || strlen(*extra_args) >= sizeof(r->extra[0]))
                        return -E2BIG;
                snprintf(r->extra[r->nextra++], sizeof(r->extra[0]), "%s", *extra_args);
        }
        snprintf(r->dir, sizeof(r->dir), "/tmp/tredis.XXXXXX");
        if (!mkdtemp(r->dir)) {
                int e = errno;
                fprintf(stderr, "mkdtemp %s: %s\n", r->dir, strerror(e));
                r->dir[0] = '\0';
                return -e;
        }
        for (int i = 0; i < r->nextra; i++)
                if (!strcmp(r->extra[i], "--unixsocket"))
                        snprintf(r->sock, sizeof(r->sock), "%s/redis.sock", r->dir);
        int rc = -EADDRINUSE;
        for (int tries = 0; tries < 5 && rc == -EADDRINUSE; tries++) {
                r->port = pick_port();
                if (r->port < 0)
                        return r->port;
                rc = spawn(r);
        }
        if (rc == -EADDRINUSE)
                fprintf(stderr, "redis-server: no free port after 5 tries\n");
        return rc;
}

void tredis_kill(struct tredis *r, int sig)
{
        if (r->pid <= 0)
                return;
        kill(r->pid, sig);
        for (long long end = now_ms() + 10000; now_ms() < end; sleep_ms(10))
                if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
                        r->pid = 0;
                        return;
                }
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
}

int tredis_restart(struct tredis *r)
{
        tredis_kill(r, SIGKILL);
        char path[300];
        snprintf(path, sizeof(path), "%s/dump.rdb", r->dir);
        unlink(path);
        /* the port was ours a moment ago; the server sets SO_REUSEADDR, TIME_WAIT is no bar */
        int rc = -EADDRINUSE;
        for (long long end = now_ms() + 5000; rc == -EADDRINUSE && now_ms() < end; sleep_ms(100))
                rc = spawn(r);
        return rc;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        return remove(path);
}

void tredis_stop(struct tredis *r)
{
        tredis_kill(r, SIGKILL);
        if (r->dir[0])
                nftw(r->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
        r->dir[0] = '\0';
}

redisReply *tredis_command(const struct tredis *r, const char *fmt, ...)
{
        struct timeval tv = {.tv_sec = 5};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
        if (!c || c->err) {
                if (c)
                        redisFree(c);
                return NULL;
        }
        redisSetTimeout(c, (struct timeval){.tv_sec = 10});
        va_list ap;
        va_start(ap, fmt);
        redisReply *rep = redisvCommand(c, fmt, ap);
        va_end(ap);
        if (!rep)
                fprintf(stderr, "redis 127.0.0.1:%d: %s\n", r->port, c->errstr);
        redisFree(c);
        return rep;
}

/* ------------------------------------------------------------------------------ cluster */

/* Run redis-cli --cluster create over C's nodes, its output in node 0's directory. */
static int cluster_create(struct tredis_cluster *c)
{
        char addr[3][32], log[300];
        for (int i = 0; i < 3; i++)
                snprintf(addr[i], sizeof(addr[i]), "127.0.0.1:%d", c->node[i].port);
        snprintf(log, sizeof(log), "%s/cluster-create.log", c->node[0].dir);
        pid_t pid = tfork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd < 0)
                        _exit(127);
                dup2(fd, 1);
                dup2(fd, 2);
                execlp("redis-cli", "redis-cli", "--cluster", "create", addr[0], addr[1], addr[2],
                       "--cluster-replicas", "0", "--cluster-yes", (char *)NULL);
                _exit(127);
        }
        int st = 0;
        long long end = now_ms() + CLUSTER_WAIT_MS;
        while (waitpid(pid, &st, WNOHANG) != pid) {
                if (now_ms() > end) {
                        kill(pid, SIGKILL);
                        waitpid(pid, NULL, 0);
                        fprintf(stderr, "redis-cli --cluster create: not done in %d ms (%s)\n",
                                CLUSTER_WAIT_MS, log);
                        return -ETIMEDOUT;
                }
                sleep_ms(50);
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "redis-cli --cluster create failed (status 0x%x), see %s\n", st,
                        log);
                return -EIO;
        }
        return 0;
}

/* Whether R says cluster_state:ok with all 16384 slots assigned and knows 3 nodes. */
static bool cluster_ok(const struct tredis *r)
{
        redisReply *p = tredis_command(r, "CLUSTER INFO");
        bool ok = p && p->type == REDIS_REPLY_STRING && strstr(p->str, "cluster_state:ok") &&
                  strstr(p->str, "cluster_slots_assigned:16384") &&
                  strstr(p->str, "cluster_known_nodes:3");
        if (p)
                freeReplyObject(p);
        return ok;
}

int tredis_cluster_start(struct tredis_cluster *c)
{
        static const char *const args[] = {"--cluster-enabled",
                                           "yes",
                                           "--cluster-config-file",
                                           "nodes.conf",
                                           "--cluster-node-timeout",
                                           "5000",
                                           NULL};
        memset(c, 0, sizeof(*c));
        int rc = 0;
        for (int i = 0; i < 3 && rc == 0; i++)
                rc = tredis_start(&c->node[i], args);
        if (rc == 0)
                rc = cluster_create(c);
        for (long long end = now_ms() + CLUSTER_WAIT_MS; rc == 0; sleep_ms(100)) {
                if (cluster_ok(&c->node[0]) && cluster_ok(&c->node[1]) && cluster_ok(&c->node[2]))
                        return 0;
                if (now_ms() > end) {
                        fprintf(stderr, "cluster: not cluster_state:ok on every node in %d ms\n",
                                CLUSTER_WAIT_MS);
                        rc = -ETIMEDOUT;
                }
        }
        tredis_cluster_stop(c);
        return rc;
}

void tredis_cluster_stop(struct tredis_cluster *c)
{
        for (int i = 0; i < 3; i++)
                tredis_stop(&c->node[i]);
}

int tredis_node_id(const struct tredis *r, char *id)
{
        redisReply *p = tredis_command(r, "CLUSTER MYID");
        int rc = p && p->type == REDIS_REPLY_STRING && p->len == 40 ? 0 : -1;
        if (rc == 0)
                memcpy(id, p->str, 41);
        if (p)
                freeReplyObject(p);
        return rc;
}

/* The port of the CLUSTER NODES line LINE's node (fields: id addr flags master ping pong epoch
 * link slots...) if it serves SLOT, else 0. */
static int line_serves(const char *line, unsigned slot)
{
        char buf[4096];
        snprintf(buf, sizeof(buf), "%.*s", (int)strcspn(line, "\n"), line);
        const char *colon = strchr(buf, ':');
        int port = colon ? atoi(colon + 1) : 0;
        char *save = NULL;
        int field = 0;
        for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save), field++) {
                unsigned lo, hi;
                if (field < 8 || t[0] == '[') /* [slot->-id]: a migration, not ownership */
                        continue;
                int n = sscanf(t, "%u-%u", &lo, &hi);
                if ((n == 2 && slot >= lo && slot <= hi) || (n == 1 && slot == lo))
                        return port;
        }
        return 0;
}

int tredis_cluster_owner(struct tredis_cluster *c, unsigned slot)
{
        redisReply *p = NULL;
        for (int i = 0; i < 3 && !p; i++)
                if (c->node[i].pid > 0)
                        p = tredis_command(&c->node[i], "CLUSTER NODES");
        int port = 0;
        for (const char *l = p && p->type == REDIS_REPLY_STRING ? p->str : NULL; l && !port;) {
                port = line_serves(l, slot);
                l = strchr(l, '\n');
                if (l)
                        l++;
        }
        if (p)
                freeReplyObject(p);
        for (int i = 0; i < 3; i++)
                if (port && c->node[i].port == port)
                        return i;
        return -1;
}

int tredis_cluster_spread(struct tredis_cluster *c, const char *prefix, char names[3][32])
{
        int found = 0;
        for (int i = 0; i < 3; i++)
                names[i][0] = '\0';
        for (int i = 0; found < 3 && i < 1000; i++) {
                char n[32];
                snprintf(n, sizeof(n), "g%d", i);
                redisReply *r =
                    tredis_command(&c->node[0], "CLUSTER KEYSLOT {%s:%s}:leases", prefix, n);
                int owner = r && r->type == REDIS_REPLY_INTEGER
                                ? tredis_cluster_owner(c, (unsigned)r->integer)
                                : -1;
                if (r)
                        freeReplyObject(r);
                if (owner >= 0 && !names[owner][0]) {
                        snprintf(names[owner], sizeof(names[owner]), "%s", n);
                        found++;
                }
        }
        return found == 3 ? 0 : -1;
}

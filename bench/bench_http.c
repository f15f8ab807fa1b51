/*
 * bench_http.c - decisions per second and latency through throttled's HTTP API, next to Redis
 * GCRA over loopback TCP, in the same run, with the same closed-loop clients.
 *
 * Method. N clients (threads of this process; N = 1, 8 and 64 by default), each with one
 * keep-alive connection, make one request at a time and send the next as soon as the answer is
 * read (a closed loop: the offered load is what the server lets through). The HTTP side posts
 * {"key":"key:<client>","cost":1} to /v1/limiters/bench/try of a throttled this program starts
 * (real clock, /dev/shm, rate 10^9/s and burst 10^9 like bench_scale's default scenario, so no
 * try is ever denied and each takes the full admit path); the client is a few lines of C over
 * a TCP socket with TCP_NODELAY, so the client side costs little next to the server. The Redis
 * side is bench_scale's redis-tcp backend (baselines/redis_gcra.c, the usual GCRA Lua script by
 * EVALSHA over hiredis, server started on a free loopback port), the same key per client and
 * the same rate and burst. Per backend and N: a warm-up, then a timed window in which every
 * request's latency is kept; requests per second, p50, p99 and p99.9 from those. Rounds
 * alternate which backend runs first; the report gives medians over rounds.
 *
 * CPU: /proc/stat's busy time over each timed window, minus this process's and its children's
 * (throttled, redis-server) from /proc/PID/stat, is what other programs of the machine used
 * meanwhile: on a shared machine that share is printed next to the figures.
 *
 * It reports, never passes or fails; exit 1 only when it could not set itself up.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "sysinfo.h"

#define MAX_CLIENTS 256
#define MAX_SETS    8
#define MAX_ROUNDS  15
#define READY_MS    10000

struct opts {
        unsigned clients[MAX_SETS];
        int nsets;
        double secs, warm;
        int rounds;
        int redis;
        int json;
        char daemon[PATH_MAX];
};

/* ---------------------------------------------------------------- time and CPU */

static uint64_t now_ns(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Busy and total jiffies of the machine (/proc/stat's first line). */
static void cpu_machine(uint64_t *busy, uint64_t *total)
{
        unsigned long long v[10] = {0};
        FILE *f = fopen("/proc/stat", "re");
        *busy = *total = 0;
        if (!f)
                return;
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) == 8) {
                *busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]; /* all but idle, iowait */
                *total = *busy + v[3] + v[4];
        }
        fclose(f);
}

/* utime + stime of PID (jiffies), and its parent; 0 if gone. */
static uint64_t cpu_pid(pid_t pid, pid_t *ppid)
{
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return 0;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')'); /* the command may hold spaces */
        unsigned long long ut = 0, st = 0;
        int pp = 0;
        if (!p || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &pp, &ut,
                         &st) != 3)
                return 0;
        if (ppid)
                *ppid = pp;
        return ut + st;
}

/* This process's jiffies and its children's (throttled, redis-server). */
static uint64_t cpu_ours(void)
{
        pid_t self = getpid();
        uint64_t sum = cpu_pid(self, NULL);
        DIR *d = opendir("/proc");
        if (!d)
                return sum;
        for (struct dirent *e; (e = readdir(d));) {
                pid_t pid = (pid_t)atoi(e->d_name), pp = 0;
                if (pid <= 0 || pid == self)
                        continue;
                uint64_t t = cpu_pid(pid, &pp);
                if (pp == self)
                        sum += t;
        }
        closedir(d);
        return sum;
}

/* ---------------------------------------------------------------- the daemon */

struct daemon_run {
        char dir[64], conf[128], log[128];
        pid_t pid;
        int port;
};

static int connect_port(int port)
{
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
                int e = errno;
                close(fd);
                return -e;
        }
        return fd;
}

static int write_conf(struct daemon_run *d, unsigned max_clients)
{
        FILE *f = fopen(d->conf, "we");
        if (!f)
                return -errno;
        fprintf(f,
                "[arena]\nname = bench_http_%d\ndir = %s\nhugepages = off\nmode = 0600\n"
                "max_readers = 1024\nspare = 1MiB\n\n"
                "[daemon]\nmetrics =\nhttp = 127.0.0.1:%d\nhttp_max_connections = %u\n\n"
                "[bench]\nrate = 1000000000/s\nburst = 1000000000\ncapacity = %u\n",
                (int)getpid(), d->dir, d->port, max_clients + 16, 2u * MAX_CLIENTS);
        return fclose(f) == 0 ? 0 : -errno;
}

static void daemon_stop(struct daemon_run *d)
{
        if (d->pid > 0) {
                kill(d->pid, SIGTERM);
                int gone = 0;
                for (int ms = 0; ms < 5000 && !gone; ms += 10)
                        if (!(gone = waitpid(d->pid, NULL, WNOHANG) == d->pid))
                                usleep(10000);
                if (!gone) { /* never signal a pid once reaped: it may be another's */
                        kill(d->pid, SIGKILL);
                        waitpid(d->pid, NULL, 0);
                }
                d->pid = 0;
        }
        char path[192];
        snprintf(path, sizeof(path), "%s/throttle.bench_http_%d", d->dir, (int)getpid());
        unlink(path);
        unlink(d->conf);
        unlink(d->log);
        rmdir(d->dir);
}

static void print_log(const struct daemon_run *d)
{
        char buf[4096];
        FILE *f = fopen(d->log, "re");
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        buf[n] = 0;
        if (f)
                fclose(f);
        fprintf(stderr, "throttled's log:\n%s\n", buf);
}

static int http_try(int fd, const char *key, char *buf, size_t cap, int *admitted);

/* Start throttled on a free port and wait until it decides a try over HTTP. */
static int daemon_start(struct daemon_run *d, const char *exe, unsigned max_clients)
{
        snprintf(d->dir, sizeof(d->dir), "/tmp/bench-http-XXXXXX");
        if (!mkdtemp(d->dir))
                return -errno;
        snprintf(d->conf, sizeof(d->conf), "%s/throttled.conf", d->dir);
        snprintf(d->log, sizeof(d->log), "%s/throttled.log", d->dir);
        d->port = bench_free_port();
        int rc = d->port < 0 ? d->port : write_conf(d, max_clients);
        if (rc < 0)
                return rc;
        d->pid = fork();
        if (d->pid < 0)
                return -errno;
        if (d->pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                }
                execl(exe, "throttled", "-c", d->conf, (char *)NULL);
                _exit(127);
        }
        char buf[2048];
        for (int ms = 0; ms < READY_MS; ms += 20) {
                int fd = connect_port(d->port), adm = 0;
                int ok = fd >= 0 && http_try(fd, "ready", buf, sizeof(buf), &adm) == 200 && adm;
                if (fd >= 0)
                        close(fd);
                if (ok)
                        return 0;
                if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
                        d->pid = 0;
                        return -ECHILD;
                }
                usleep(20000);
        }
        return -ETIMEDOUT;
}

/* ---------------------------------------------------------------- the HTTP client */

/* Whether FIELD (quoted) is followed by ':' and true in S, blanks allowed around the ':'. */
static int json_true(const char *s, const char *field)
{
        const char *p = strstr(s, field);
        if (!p)
                return 0;
        p += strlen(field);
        p += strspn(p, " \t\r\n");
        if (*p++ != ':')
                return 0;
        p += strspn(p, " \t\r\n");
        return strncmp(p, "true", 4) == 0;
}

/*
 * One try on the keep-alive connection FD: the request in one write, the answer read to the end
 * of its body (Content-Length). Returns the HTTP status, or -errno; *ADMITTED from the body.
 */
static int http_try(int fd, const char *key, char *buf, size_t cap, int *admitted)
{
        char body[160], req[512];
        int bl = snprintf(body, sizeof(body), "{\"key\":\"%s\",\"cost\":1}", key);
        int rl = snprintf(req, sizeof(req),
                          "POST /v1/limiters/bench/try HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                          bl, body);
        if (write(fd, req, (size_t)rl) != rl)
                return -EIO;
        size_t len = 0;
        char *end = NULL;
        long clen = -1;
        for (;;) {
                if (len == cap - 1)
                        return -EMSGSIZE;
                ssize_t n = read(fd, buf + len, cap - 1 - len);
                if (n <= 0)
                        return n == 0 ? -ECONNRESET : -errno;
                len += (size_t)n;
                buf[len] = 0;
                if (!end && (end = strstr(buf, "\r\n\r\n"))) {
                        char *cl = strcasestr(buf, "\r\ncontent-length:");
                        if (!cl || cl > end)
                                return -EPROTO;
                        clen = strtol(cl + 17, NULL, 10);
                }
                if (end && (long)(len - (size_t)(end + 4 - buf)) >= clen)
                        break;
        }
        *admitted = json_true(end, "\"admitted\"");
        return (int)strtol(buf + 9, NULL, 10);
}

/* ---------------------------------------------------------------- the closed loop */

struct shared {
        const struct bench_backend *redis;
        void *redis_state;
        int http_port;
        int use_http;
        uint64_t warm_end, end; /* absolute CLOCK_MONOTONIC ns */
};

struct worker {
        pthread_t th;
        const struct shared *sh;
        unsigned id;
        uint64_t *lat; /* latencies of the timed window, ns */
        size_t n, cap;
        uint64_t ops, admitted, errors;
        char err[128];
};

static int record(struct worker *w, uint64_t ns)
{
        if (w->n == w->cap) {
                size_t cap = w->cap ? 2 * w->cap : 65536;
                uint64_t *p = realloc(w->lat, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                w->lat = p, w->cap = cap;
        }
        w->lat[w->n++] = ns;
        return 0;
}

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        const struct shared *sh = w->sh;
        char key[32], buf[2048];
        int klen = snprintf(key, sizeof(key), "key:%u", w->id);
        int fd = -1;
        void *h = NULL;
        if (sh->use_http)
                fd = connect_port(sh->http_port);
        else
                h = sh->redis->attach(sh->redis_state);
        if (fd < 0 && !h) {
                snprintf(w->err, sizeof(w->err), "client %u could not connect", w->id);
                return NULL;
        }
        for (uint64_t t = now_ns(); t < sh->end; t = now_ns()) {
                int adm = 0, rc;
                if (sh->use_http) {
                        rc = http_try(fd, key, buf, sizeof(buf), &adm);
                        rc = rc == 200 ? 0 : rc < 0 ? rc : -EPROTO;
                } else {
                        rc = sh->redis->try_key(h, w->id, key, (size_t)klen, 1);
                        adm = rc == 1;
                        rc = rc < 0 ? rc : 0;
                }
                uint64_t t2 = now_ns();
                if (rc < 0) {
                        w->errors++;
                        snprintf(w->err, sizeof(w->err), "client %u: %s", w->id, strerror(-rc));
                        break; /* a broken connection is reported, not retried */
                }
                if (t >= sh->warm_end && t2 <= sh->end) {
                        w->ops++;
                        w->admitted += (uint64_t)adm;
                        if (record(w, t2 - t) < 0)
                                break;
                }
        }
        if (fd >= 0)
                close(fd);
        if (h)
                sh->redis->detach(h);
        return NULL;
}

/* One measurement: its figures. */
struct sample {
        double rps, p50_us, p99_us, p999_us;
        double others_cpu; /* CPUs' worth used by other programs during the window */
        double ours_cpu;   /* this process and its children (server, redis) */
        uint64_t ops, admitted, errors;
};

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, size_t n, double q)
{
        if (!n)
                return 0;
        size_t i = (size_t)(q * (double)(n - 1) + 0.5);
        return (double)v[i] / 1e3;
}

static int run_one(struct shared *sh, unsigned clients, const struct opts *o, struct sample *s)
{
        struct worker *w = calloc(clients, sizeof(*w));
        if (!w)
                return -ENOMEM;
        uint64_t start = now_ns();
        sh->warm_end = start + (uint64_t)(o->warm * 1e9);
        sh->end = sh->warm_end + (uint64_t)(o->secs * 1e9);
        for (unsigned i = 0; i < clients; i++) {
                w[i].sh = sh, w[i].id = i;
                pthread_create(&w[i].th, NULL, worker_main, &w[i]);
        }
        uint64_t b0, t0, b1, t1;
        while (now_ns() < sh->warm_end)
                usleep(1000);
        cpu_machine(&b0, &t0);
        uint64_t o0 = cpu_ours();
        for (unsigned i = 0; i < clients; i++)
                pthread_join(w[i].th, NULL);
        cpu_machine(&b1, &t1);
        uint64_t o1 = cpu_ours();
        size_t total = 0;
        memset(s, 0, sizeof(*s));
        for (unsigned i = 0; i < clients; i++) {
                total += w[i].n;
                s->ops += w[i].ops, s->admitted += w[i].admitted, s->errors += w[i].errors;
                if (w[i].err[0])
                        fprintf(stderr, "bench_http: %s\n", w[i].err);
        }
        uint64_t *all = malloc((total ? total : 1) * sizeof(*all));
        size_t k = 0;
        for (unsigned i = 0; i < clients && all; i++) {
                memcpy(all + k, w[i].lat, w[i].n * sizeof(*all));
                k += w[i].n;
        }
        if (all)
                qsort(all, k, sizeof(*all), cmp_u64);
        s->rps = (double)s->ops / o->secs;
        s->p50_us = all ? pct(all, k, 0.5) : 0;
        s->p99_us = all ? pct(all, k, 0.99) : 0;
        s->p999_us = all ? pct(all, k, 0.999) : 0;
        /* jiffies over the window's jiffies times CPUs = CPUs' worth busy */
        double ncpu = (double)sysconf(_SC_NPROCESSORS_ONLN);
        double span = t1 > t0 ? (double)(t1 - t0) / ncpu : 1;
        double busy = (double)(b1 - b0), ours = (double)(o1 - o0);
        s->ours_cpu = ours / span;
        s->others_cpu = busy > ours ? (busy - ours) / span : 0;
        free(all);
        for (unsigned i = 0; i < clients; i++)
                free(w[i].lat);
        free(w);
        return 0;
}

/* ---------------------------------------------------------------- report */

static double median(double *v, int n)
{
        for (int i = 1; i < n; i++)
                for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
                        double t = v[j];
                        v[j] = v[j - 1], v[j - 1] = t;
                }
        return n ? (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2) : 0;
}

/* The median over rounds of each figure of R[0..N). */
static struct sample med(const struct sample *r, int n)
{
        double v[MAX_ROUNDS];
        struct sample m = {0};
#define MED(f)                                                                                     \
        do {                                                                                       \
                for (int i = 0; i < n; i++)                                                        \
                        v[i] = r[i].f;                                                             \
                m.f = median(v, n);                                                                \
        } while (0)
        MED(rps);
        MED(p50_us);
        MED(p99_us);
        MED(p999_us);
        MED(others_cpu);
        MED(ours_cpu);
#undef MED
        for (int i = 0; i < n; i++) {
                m.ops += r[i].ops, m.admitted += r[i].admitted, m.errors += r[i].errors;
        }
        return m;
}

static void print_header(const struct opts *o, const struct sysinfo *si)
{
        printf("bench_http: throttled's HTTP API (POST /v1/limiters/NAME/try) next to Redis GCRA "
               "(EVALSHA over loopback TCP)\n");
        printf("method: closed loop, each client a thread with one keep-alive connection and one "
               "request at a time;\n  %.1f s warm-up, %.1f s timed per backend and client count, "
               "%d round(s) alternating which\n  backend goes first; medians over rounds. One "
               "key per client, rate 1e9/s burst 1e9: never denied.\n",
               o->warm, o->secs, o->rounds);
        printf("cpu: %s (%ld online)\nkernel: %s\ndate: %s\n", si->cpu, si->cpus, si->kernel,
               si->date);
        printf("note: the clients, the server (throttled or redis-server) and every other "
               "program of the machine\n  share its CPUs; 'others' is the CPUs' worth used by "
               "programs other than this benchmark and\n  its servers during the timed "
               "windows (/proc/stat), 'ours' that of the benchmark and its servers.\n\n");
        printf("%-8s %7s %12s %10s %10s %10s %8s %8s %12s\n", "backend", "clients", "req/s",
               "p50 us", "p99 us", "p99.9 us", "ours", "others", "admitted");
}

static void print_row(const char *name, unsigned clients, const struct sample *r, int n)
{
        struct sample m = med(r, n);
        double lo = r[0].rps;
        double hi = lo;
        for (int i = 1; i < n; i++) {
                lo = r[i].rps < lo ? r[i].rps : lo;
                hi = r[i].rps > hi ? r[i].rps : hi;
        }
        printf("%-8s %7u %12.0f %10.1f %10.1f %10.1f %8.2f %8.2f %11.1f%%", name, clients, m.rps,
               m.p50_us, m.p99_us, m.p999_us, m.ours_cpu, m.others_cpu,
               m.ops ? 100.0 * (double)m.admitted / (double)m.ops : 0.0);
        printf("   (req/s min-max %.0f-%.0f%s)\n", lo, hi, m.errors ? ", ERRORS: see stderr" : "");
        fflush(stdout);
}

/* One JSON document: the machine, the method's parameters, and per backend and client count
 * the medians and every round's figures. */
static void print_json(const struct opts *o, const struct sysinfo *si, int redis,
                       struct sample res[2][MAX_SETS][MAX_ROUNDS])
{
        printf("{\"bench\":\"bench_http\",\"cpu\":\"%s\",\"cpus\":%ld,\"kernel\":\"%s\","
               "\"date\":\"%s\",\"secs\":%.3f,\"warm\":%.3f,\"rounds\":%d,\"rows\":[",
               si->cpu, si->cpus, si->kernel, si->date, o->secs, o->warm, o->rounds);
        const char *sep = "";
        for (int c = 0; c < o->nsets; c++)
                for (int b = 0; b < (redis ? 2 : 1); b++) {
                        struct sample m = med(res[b][c], o->rounds);
                        printf("%s{\"backend\":\"%s\",\"clients\":%u,\"rps\":%.1f,\"p50_us\":%.2f,"
                               "\"p99_us\":%.2f,\"p999_us\":%.2f,\"ours_cpu\":%.3f,"
                               "\"others_cpu\":%.3f,\"ops\":%" PRIu64 ",\"admitted\":%" PRIu64
                               ",\"errors\":%" PRIu64 ",\"rounds_rps\":[",
                               sep, b ? "redis" : "http", o->clients[c], m.rps, m.p50_us, m.p99_us,
                               m.p999_us, m.ours_cpu, m.others_cpu, m.ops, m.admitted, m.errors);
                        for (int r = 0; r < o->rounds; r++)
                                printf("%s%.1f", r ? "," : "", res[b][c][r].rps);
                        printf("]}");
                        sep = ",";
                }
        printf("]}\n");
}

/* ---------------------------------------------------------------- options, main */

static void usage(const char *prog)
{
        fprintf(stderr,
                "usage: %s [--clients 1,8,64] [--secs S] [--warm S] [--rounds N] [--no-redis]\n"
                "          [--daemon PATH] [--json] [--quick]\n"
                "  --daemon: throttled to start (default: ../daemon/throttled next to this "
                "program)\n  --quick: clients 1,8, 0.2 s, 1 round (CI smoke run)\n",
                prog);
}

static int parse_clients(struct opts *o, const char *s)
{
        char tmp[256];
        snprintf(tmp, sizeof(tmp), "%s", s);
        o->nsets = 0;
        for (char *sp, *t = strtok_r(tmp, ",", &sp); t; t = strtok_r(NULL, ",", &sp)) {
                long v = strtol(t, NULL, 10);
                if (v < 1 || v > MAX_CLIENTS || o->nsets == MAX_SETS)
                        return -EINVAL;
                o->clients[o->nsets++] = (unsigned)v;
        }
        return o->nsets ? 0 : -EINVAL;
}

static int parse(int argc, char **argv, struct opts *o)
{
        *o = (struct opts){
            .clients = {1, 8, 64}, .nsets = 3, .secs = 2.0, .warm = 0.5, .rounds = 3, .redis = 1};
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        self[n > 0 ? n : 0] = 0;
        snprintf(o->daemon, sizeof(o->daemon), "%s/../daemon/throttled", dirname(self));
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                int rc = 0;
                if (!strcmp(a, "--quick")) {
                        o->secs = 0.2, o->warm = 0.1, o->rounds = 1, o->nsets = 2;
                        continue;
                } else if (!strcmp(a, "--no-redis")) {
                        o->redis = 0;
                        continue;
                } else if (!strcmp(a, "--json")) {
                        o->json = 1;
                        continue;
                } else if (!v) {
                        rc = -EINVAL;
                } else if (!strcmp(a, "--clients")) {
                        rc = parse_clients(o, v);
                } else if (!strcmp(a, "--secs")) {
                        o->secs = strtod(v, NULL);
                        rc = o->secs > 0 && o->secs <= 600 ? 0 : -EINVAL;
                } else if (!strcmp(a, "--warm")) {
                        o->warm = strtod(v, NULL);
                        rc = o->warm >= 0 && o->warm <= 60 ? 0 : -EINVAL;
                } else if (!strcmp(a, "--rounds")) {
                        o->rounds = atoi(v);
                        rc = o->rounds >= 1 && o->rounds <= MAX_ROUNDS ? 0 : -EINVAL;
                } else if (!strcmp(a, "--daemon")) {
                        snprintf(o->daemon, sizeof(o->daemon), "%s", v);
                } else {
                        rc = -EINVAL;
                }
                if (rc < 0) {
                        fprintf(stderr, "bench_http: bad option %s%s%s\n", a, v ? " " : "",
                                v ? v : "");
                        usage(argv[0]);
                        return rc;
                }
                i++;
        }
        return 0;
}

static int setup(const struct opts *o, struct daemon_run *d, struct shared *sh)
{
        unsigned maxc = 0;
        for (int i = 0; i < o->nsets; i++)
                maxc = o->clients[i] > maxc ? o->clients[i] : maxc;
        int rc = daemon_start(d, o->daemon, maxc);
        if (rc < 0) {
                fprintf(stderr, "bench_http: throttled (%s) did not answer HTTP: %s\n", o->daemon,
                        strerror(-rc));
                print_log(d);
                return rc;
        }
        sh->http_port = d->port;
        if (!o->redis)
                return 0;
        struct bench_cfg cfg = {.keys = MAX_CLIENTS,
                                .rate_n = 1000000000ull,
                                .period_ns = 1000000000ull,
                                .burst = 1000000000ull,
                                .procs = 1};
        sh->redis = &bench_redis_tcp;
        sh->redis_state = bench_redis_tcp.setup(&cfg);
        if (!sh->redis_state) {
                fprintf(stderr, "bench_http: redis: %s\n", cfg.err);
                if (strncmp(cfg.err, "skip:", 5) != 0)
                        return -EIO;
                sh->redis = NULL;
        }
        return 0;
}

int main(int argc, char **argv)
{
        struct opts o;
        if (parse(argc, argv, &o) < 0)
                return 1;
        signal(SIGPIPE, SIG_IGN);
        struct daemon_run d = {0};
        struct shared sh = {0};
        if (setup(&o, &d, &sh) < 0) {
                daemon_stop(&d);
                return 1;
        }
        struct sysinfo si;
        sysinfo_read(&si);
        if (!o.json)
                print_header(&o, &si);
        static struct sample res[2][MAX_SETS][MAX_ROUNDS];
        for (int r = 0; r < o.rounds; r++)
                for (int c = 0; c < o.nsets; c++)
                        for (int k = 0; k < 2; k++) {
                                int http = (k == 0) == (r % 2 == 0); /* alternate the order */
                                if (!http && !sh.redis)
                                        continue;
                                sh.use_http = http;
                                run_one(&sh, o.clients[c], &o, &res[http ? 0 : 1][c][r]);
                        }
        for (int c = 0; c < o.nsets && !o.json; c++) {
                print_row("http", o.clients[c], res[0][c], o.rounds);
                if (sh.redis)
                        print_row("redis", o.clients[c], res[1][c], o.rounds);
        }
        if (o.json)
                print_json(&o, &si, sh.redis != NULL, res);
        else if (!sh.redis)
                printf("redis: not run (%s)\n",
                       o.redis ? "redis-server not installed" : "--no-redis");
        if (sh.redis)
                sh.redis->teardown(sh.redis_state);
        daemon_stop(&d);
        return 0;
}

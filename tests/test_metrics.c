/*
 * test_metrics.c - throttled's /metrics, scraped over HTTP from a real daemon: exact per-limiter
 * totals summed from forked clients' counter rows (manual clock), a SIGKILLed client's counts kept
 * when its record is reused, metrics off, and a port in use refused at start.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "helpers.h"
#include "metrics.h"
#include "throttle/throttle.h"

static struct tdaemon fx;

static void setup(void)
{
        tdaemon_init(&fx);
}

static void teardown(void)
{
        tdaemon_fini(&fx);
}

TestSuite(metrics, .init = setup, .fini = teardown, .timeout = 120);

/* GET PATH from 127.0.0.1:PORT: the whole response (status line, headers, body), malloc'ed; NULL
 * when nothing listens. */
static char *http_get(int port, const char *path)
{
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        cr_assert_geq(fd, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(fd);
                return NULL;
        }
        char req[256];
        int n = snprintf(req, sizeof(req),
                         "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
        cr_assert_eq(write(fd, req, (size_t)n), n);
        size_t cap = 1 << 16, len = 0;
        char *buf = malloc(cap);
        for (ssize_t got; (got = read(fd, buf + len, cap - len - 1)) > 0;) {
                len += (size_t)got;
                if (cap - len < 4096)
                        buf = realloc(buf, cap *= 2);
        }
        buf[len] = '\0';
        close(fd);
        return buf;
}

/* The value of the sample SERIES (name and labels, exactly) in TEXT; fails if absent. */
static uint64_t sample(const char *text, const char *series)
{
        char want[256];
        snprintf(want, sizeof(want), "\n%s ", series);
        const char *at = strstr(text, want);
        cr_assert_not_null(at, "no sample %s in:\n%s", series, text);
        return strtoull(at + strlen(want), NULL, 10);
}

/* A scrape of daemon I on PORT that must answer 200. */
static char *scrape(int port)
{
        char *r = http_get(port, "/metrics");
        cr_assert_not_null(r, "nothing listens on port %d:\n%s", port, tdaemon_log(&fx, 0));
        cr_assert(strncmp(r, "HTTP/1.1 200", 12) == 0, "%s", r);
        cr_assert_not_null(strstr(r, "Content-Type: text/plain; version=0.0.4"), "%s", r);
        return r;
}

static void config(int port, int max_readers, const char *limiters)
{
        char text[2048];
        snprintf(text, sizeof(text),
                 "[arena]\nname = %s\nclock = manual\nhugepages = off\nmode = 0600\n"
                 "max_limiters = 4\nmax_readers = %d\nspare = 1MiB\n\n"
                 "[daemon]\nheartbeat_ms = 20\nmetrics = 127.0.0.1:%d\n\n%s",
                 fx.name, max_readers, port, limiters);
        snprintf(fx.arena, sizeof(fx.arena), "/dev/shm/throttle.%s", fx.name);
        tdaemon_config_raw(&fx, text);
}

/* 5 a key, none refilled (the clock stands still): a key's 6th try is denied. */
#define LIMS                                                                                       \
        "[lim]\nrate = 1/s\nburst = 5\ncapacity = 64\n\n"                                          \
        "[other]\nrate = 1/s\nburst = 2\ncapacity = 64\n"

/* In a child: TRIES tries of KEY on limiter NAME of the test's arena; exits 0 when they counted
 * ADMITTED admissions, 1 otherwise. */
static void child_tries(const char *name, const char *key, int tries, int admitted)
{
        thr_arena *a;
        thr_limiter *l;
        if (thr_arena_open(fx.name, 0, &a) < 0 || thr_limiter_open(a, name, &l) < 0)
                _exit(2);
        int got = 0;
        for (int i = 0; i < tries; i++)
                got += thr_limiter_try(l, key, strlen(key), 1, NULL) == 1;
        _exit(got == admitted ? 0 : 1);
}

static void wait_ok(pid_t pid)
{
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
}

/* Three processes, known admissions and denials: the scrape has the exact sums per limiter. */
Test(metrics, exact_totals_from_forked_clients)
{
        int port = tfree_port();
        config(port, 16, LIMS);
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        pid_t kids[3];
        for (int i = 0; i < 3; i++) {
                char key[16];
                snprintf(key, sizeof(key), "k%d", i);
                kids[i] = tfork();
                if (kids[i] == 0)
                        child_tries("lim", key, 8, 5); /* 5 admitted, 3 denied */
        }
        for (int i = 0; i < 3; i++)
                wait_ok(kids[i]);
        pid_t k = tfork();
        if (k == 0)
                child_tries("other", "x", 3, 2); /* 2 admitted, 1 denied */
        wait_ok(k);
        /* a place due later: admitted, after a wait (key k0 is empty: due in 1 s) */
        k = tfork();
        if (k == 0) {
                thr_arena *a;
                thr_limiter *l;
                struct thr_reservation rv;
                if (thr_arena_open(fx.name, 0, &a) < 0 || thr_limiter_open(a, "lim", &l) < 0 ||
                    thr_limiter_reserve(l, "k0", 2, 1, 10 * SEC, &rv) != 0 || rv.wait_ns == 0)
                        _exit(1);
                _exit(0);
        }
        wait_ok(k);
        char *m = scrape(port);
        cr_assert_eq(sample(m, "throttle_admitted_total{limiter=\"lim\"}"), 16);
        cr_assert_eq(sample(m, "throttle_denied_total{limiter=\"lim\"}"), 9);
        cr_assert_eq(sample(m, "throttle_waited_total{limiter=\"lim\"}"), 1);
        cr_assert_eq(sample(m, "throttle_admitted_total{limiter=\"other\"}"), 2);
        cr_assert_eq(sample(m, "throttle_denied_total{limiter=\"other\"}"), 1);
        cr_assert_eq(sample(m, "throttle_waited_total{limiter=\"other\"}"), 0);
        cr_assert_eq(sample(m, "throttle_keys{limiter=\"lim\"}"), 3);
        cr_assert_eq(sample(m, "throttle_keys_capacity{limiter=\"lim\"}"), 64);
        cr_assert_eq(sample(m, "throttle_limiters"), 2);
        cr_assert_eq(sample(m, "throttle_readers_max"), 16);
        cr_assert_not_null(strstr(m, "# TYPE throttle_admitted_total counter\n"));
        free(m);
        char *r = http_get(port, "/other");
        cr_assert(r && strncmp(r, "HTTP/1.1 404", 12) == 0, "%s", r ? r : "(none)");
        free(r);
        tdaemon_stop(&fx, d);
}

/* One reader record: a client killed with SIGKILL leaves it, the daemon frees it, the next
 * client reuses it, and the totals keep the dead client's counts (a counter never goes down). */
Test(metrics, killed_client_counts_stay_when_its_record_is_reused)
{
        int port = tfree_port();
        config(port, 1, LIMS);
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        int ready[2];
        cr_assert_eq(pipe(ready), 0);
        pid_t k = tfork();
        if (k == 0) {
                thr_arena *a;
                thr_limiter *l;
                if (thr_arena_open(fx.name, 0, &a) < 0 || thr_limiter_open(a, "lim", &l) < 0)
                        _exit(2);
                for (int i = 0; i < 7; i++) /* 5 admitted, 2 denied */
                        thr_limiter_try(l, "dead", 4, 1, NULL);
                char c = 1;
                if (write(ready[1], &c, 1) != 1)
                        _exit(3);
                pause();
                _exit(0);
        }
        char c;
        cr_assert_eq(read(ready[0], &c, 1), 1);
        char *m = scrape(port);
        cr_assert_eq(sample(m, "throttle_readers_online"), 1);
        cr_assert_eq(sample(m, "throttle_admitted_total{limiter=\"lim\"}"), 5);
        free(m);
        cr_assert_eq(kill(k, SIGKILL), 0);
        cr_assert_eq(waitpid(k, NULL, 0), k);
        /* the daemon frees the dead record within a heartbeat or so */
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                m = scrape(port);
                uint64_t online = sample(m, "throttle_readers_online");
                free(m);
                if (online == 0)
                        break;
                cr_assert_lt(telapsed_s(&t0), TD_READY, "the dead client's record is not freed");
                tdoze();
        }
        k = tfork();
        if (k == 0) /* the only record: the dead client's, reused */
                child_tries("lim", "alive", 1, 1);
        wait_ok(k);
        m = scrape(port);
        cr_assert_eq(sample(m, "throttle_admitted_total{limiter=\"lim\"}"), 6, "%s", m);
        cr_assert_eq(sample(m, "throttle_denied_total{limiter=\"lim\"}"), 2);
        cr_assert_geq(sample(m, "throttle_readers_forced_total"), 0);
        free(m);
        tdaemon_stop(&fx, d);
}

/* Whether process PID has a socket open. */
static bool has_socket(pid_t pid)
{
        char dir[64], p[320], to[64];
        snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
        DIR *dd = opendir(dir);
        cr_assert_not_null(dd);
        bool found = false;
        for (struct dirent *e; !found && (e = readdir(dd));) {
                snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
                ssize_t n = readlink(p, to, sizeof(to) - 1);
                found = n > 0 && strncmp(to, "socket:", 7) == 0;
        }
        closedir(dd);
        return found;
}

/* `metrics =` empty: the daemon runs and listens on nothing. */
Test(metrics, empty_address_serves_nothing)
{
        tdaemon_config(&fx, false, "", LIMS); /* the fixture's config says metrics = */
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        tdaemon_wait_log(&fx, d, "metrics: off", 1);
        cr_assert(!has_socket(fx.pid[d]), "a daemon without metrics has a socket open");
        tdaemon_stop(&fx, d);
}

/* A port in use: the daemon exits EX_UNAVAILABLE, naming the address and the cause, before it
 * creates the arena. */
Test(metrics, port_in_use_is_refused_at_start)
{
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t n = sizeof(sa);
        cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
                  listen(fd, 1) == 0 && getsockname(fd, (struct sockaddr *)&sa, &n) == 0);
        int port = ntohs(sa.sin_port);
        config(port, 16, LIMS);
        int d = tdaemon_start(&fx, NULL);
        int code = tdaemon_exit_code(&fx, d);
        close(fd);
        cr_assert_eq(code, EX_UNAVAILABLE, "exit %d:\n%s", code, tdaemon_log(&fx, d));
        char want[128];
        snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%d: Address already in use", port);
        cr_assert_not_null(strstr(tdaemon_log(&fx, d), want), "%s", tdaemon_log(&fx, d));
        cr_assert_neq(access(fx.arena, F_OK), 0, "the arena was created");
}

/* The rendering reads only through the checked geometry: a scribbled counter row changes a
 * number, never where the scrape reads (and a row is never reset). */
Test(metrics, render_sums_every_row)
{
        int port = tfree_port();
        config(port, 4, LIMS);
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        int idx = shm_dir_find(&fx.map, "other");
        cr_assert_geq(idx, 0);
        for (uint32_t r = 0; r < 4; r++)
                atomic_store(&shm_lcount(&fx.map, r, (uint32_t)idx)->admitted, 10 + r);
        size_t len = 0;
        char *text = metrics_render(&fx.map, &len);
        cr_assert_not_null(text);
        cr_assert_eq(strlen(text), len);
        char *m = NULL;
        cr_assert_geq(asprintf(&m, "\n%s", text), 0);
        cr_assert_eq(sample(m, "throttle_admitted_total{limiter=\"other\"}"), 46);
        cr_assert_eq(sample(m, "throttle_admitted_total{limiter=\"lim\"}"), 0);
        free(m);
        free(text);
        tdaemon_stop(&fx, d);
}

/* throttled(8)'s METRICS section names every metric a scrape has (and the scrape has every
 * metric it names): the list cannot drift from the code. */
Test(metrics, man_page_lists_every_metric)
{
        int port = tfree_port();
        config(port, 4, LIMS);
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        char *m = scrape(port);
        char path[512];
        const char *slash = strrchr(__FILE__, '/');
        snprintf(path, sizeof(path), "%.*s../doc/man/throttled.8",
                 slash ? (int)(slash - __FILE__ + 1) : 0, __FILE__);
        FILE *f = fopen(path, "re");
        cr_assert_not_null(f, "%s: %s", path, strerror(errno));
        static char man[1 << 17];
        man[fread(man, 1, sizeof(man) - 1, f)] = '\0';
        fclose(f);
        int n = 0;
        for (const char *p = m; (p = strstr(p, "\n# TYPE ")); n++) {
                p += 8;
                char name[128], want[160];
                cr_assert_eq(sscanf(p, "%127s", name), 1);
                snprintf(want, sizeof(want), "\n.B %s\n", name);
                cr_assert_not_null(strstr(man, want), "throttled(8) does not list %s", name);
        }
        const char *sec = strstr(man, "\n.SH METRICS\n");
        cr_assert_not_null(sec);
        for (const char *p = sec;
             (p = strstr(p, "\n.B throttle_")) && p < strstr(sec, "\n.SH FILES");) {
                p += 4;
                char name[128], want[160];
                cr_assert_eq(sscanf(p, "%127s", name), 1);
                snprintf(want, sizeof(want), "# TYPE %s ", name);
                cr_assert_not_null(strstr(m, want), "throttled(8) lists %s, not scraped", name);
        }
        cr_assert_gt(n, 15);
        free(m);
        tdaemon_stop(&fx, d);
}

/* The kinds deciding outside the core count their outcomes too: a semaphore's try (a lease, then
 * no room), a budget's spends (an add is not a request), a composed call (each member). */
Test(metrics, semaphore_budget_and_composed_calls_count)
{
        int port = tfree_port();
        config(port, 16,
               "[lim]\nrate = 1/s\nburst = 5\ncapacity = 64\n\n"
               "[sem]\nkind = semaphore\nmax = 1\ncapacity = 16\n\n"
               "[bud]\nkind = budget\ninitial = 3\ncapacity = 16\n");
        int d = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, d, 1);
        pid_t k = tfork();
        if (k == 0) {
                thr_arena *a;
                thr_limiter *sem, *bud, *lim;
                struct thr_lease l1, l2;
                if (thr_arena_open(fx.name, 0, &a) < 0 || thr_limiter_open(a, "sem", &sem) < 0 ||
                    thr_limiter_open(a, "bud", &bud) < 0 || thr_limiter_open(a, "lim", &lim) < 0)
                        _exit(2);
                if (thr_sem_try(sem, "s", 1, 1, SEC, &l1) != 0 ||
                    thr_sem_try(sem, "s", 1, 1, SEC, &l2) != -EAGAIN)
                        _exit(3);
                if (thr_budget_try(bud, "b", 1, 2, NULL) != 0 ||
                    thr_budget_try(bud, "b", 1, 2, NULL) != -EAGAIN ||
                    thr_budget_add(bud, "b", 1, 5, NULL) != 0 ||
                    thr_budget_spend(bud, "b", 1, 2, SEC, NULL) != 0)
                        _exit(4);
                struct thr_member m[2] = {{lim, "c", 1, 3}, {bud, "b", 1, 4}};
                struct thr_compose_result res;
                if (thr_compose_try(m, 2, &res) != 1 || thr_compose_try(m, 2, &res) != 0)
                        _exit(5); /* the first takes bud's 4 of 4, the second finds 0 */
                _exit(0);
        }
        wait_ok(k);
        char *m = scrape(port);
        cr_assert_eq(sample(m, "throttle_admitted_total{limiter=\"sem\"}"), 1, "%s", m);
        cr_assert_eq(sample(m, "throttle_denied_total{limiter=\"sem\"}"), 1);
        cr_assert_eq(sample(m, "throttle_admitted_total{limiter=\"bud\"}"), 3);
        cr_assert_eq(sample(m, "throttle_denied_total{limiter=\"bud\"}"), 2);
        cr_assert_eq(sample(m, "throttle_admitted_total{limiter=\"lim\"}"), 1);
        cr_assert_eq(sample(m, "throttle_denied_total{limiter=\"lim\"}"), 1);
        cr_assert_eq(sample(m, "throttle_waited_total{limiter=\"bud\"}"), 0);
        free(m);
        tdaemon_stop(&fx, d);
}

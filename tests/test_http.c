/*
 * test_http.c - throttled's HTTP API (doc/http-api.md) against a real daemon on a manual clock:
 * every route, limits shared exactly with shared-memory clients, rate waits answered when due and
 * given back when the client leaves, leases held for HTTP clients and their expiry, the bounds
 * and every kind of bad request (each answered with its status and JSON error, the daemon still
 * serving after it), the token, a Unix socket, reloads seen over HTTP, and circuit breakers (a
 * breaker tripped, probed and closed over HTTP; the tickets the daemon holds for HTTP clients).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "throttle/throttle.h"

static struct tdaemon fx;
static int port;
static char unix_path[108]; /* set: requests go to this socket instead of the port */

static void setup(void)
{
        tdaemon_init(&fx);
        unix_path[0] = '\0';
}

static void teardown(void)
{
        tdaemon_fini(&fx);
}

TestSuite(http, .init = setup, .fini = teardown, .timeout = 120);

#define LIMS                                                                                       \
        "[lim]\nrate = 1/s\nburst = 5\ncapacity = 64\n\n"                                          \
        "[sem]\nkind = semaphore\nmax = 3\ncapacity = 64\n\n"                                      \
        "[bud]\nkind = budget\ninitial = 10\ncapacity = 64\n\n"                                    \
        "[pair]\ncompose = lim, bud\n"

/* Start a daemon with the HTTP API on a free port (or EXTRA's own http line) and LIMS. */
static void start(const char *extra, const char *lims)
{
        char keys[1024];
        port = tfree_port();
        snprintf(keys, sizeof(keys), "%shttp = %s%d\n%s", "",
                 unix_path[0] ? "" : "127.0.0.1:", port, extra ? extra : "");
        if (unix_path[0])
                snprintf(keys, sizeof(keys), "http = unix:%s\n%s", unix_path, extra ? extra : "");
        tdaemon_config(&fx, true, keys, lims ? lims : LIMS);
        tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, 0, 1);
        tdaemon_wait_log(&fx, 0, "http: serving", 1);
}

static int hconnect(void)
{
        int fd;
        if (unix_path[0]) {
                struct sockaddr_un sa = {.sun_family = AF_UNIX};
                snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", unix_path);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s",
                             strerror(errno));
                return fd;
        }
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
        return fd;
}

static void hsend(int fd, const char *method, const char *path, const char *body,
                  const char *headers)
{
        size_t blen = body ? strlen(body) : 0;
        size_t hn = (headers ? strlen(headers) : 0) + 1024;
        char *req = malloc(blen + hn);
        int n = snprintf(req, hn,
                         "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%sContent-Length: "
                         "%zu\r\n\r\n",
                         method, path, headers ? headers : "", blen);
        memcpy(req + n, body ? body : "", blen);
        size_t left = (size_t)n + blen, off = 0;
        while (left) {
                ssize_t w = write(fd, req + off, left);
                if (w <= 0)
                        break; /* the server may answer and close before reading it all */
                off += (size_t)w;
                left -= (size_t)w;
        }
        free(req);
}

struct resp {
        int status;
        char *raw;
        const char *body;
        json_t *j;
};

/* Read a whole response (the server closes after it: Connection: close). */
static struct resp hread(int fd)
{
        struct resp r = {0};
        size_t cap = 1 << 16, len = 0;
        r.raw = malloc(cap);
        for (ssize_t got; (got = read(fd, r.raw + len, cap - len - 1)) > 0;)
                len += (size_t)got;
        r.raw[len] = '\0';
        close(fd);
        if (sscanf(r.raw, "HTTP/1.1 %d", &r.status) != 1)
                return r;
        const char *b = strstr(r.raw, "\r\n\r\n");
        r.body = b ? b + 4 : "";
        r.j = json_loads(r.body, 0, NULL);
        return r;
}

static void rfree(struct resp *r)
{
        json_decref(r->j);
        free(r->raw);
}

static struct resp req_h(const char *method, const char *path, const char *body,
                         const char *headers)
{
        int fd = hconnect();
        hsend(fd, method, path, body, headers);
        return hread(fd);
}

static struct resp req(const char *method, const char *path, const char *body)
{
        return req_h(method, path, body, NULL);
}

static long long jint(const struct resp *r, const char *field)
{
        json_t *v = json_object_get(r->j, field);
        cr_assert(json_is_integer(v), "no integer '%s' in %s", field, r->raw);
        return json_integer_value(v);
}

static bool jbool(const struct resp *r, const char *field)
{
        json_t *v = json_object_get(r->j, field);
        cr_assert(json_is_boolean(v), "no boolean '%s' in %s", field, r->raw);
        return json_is_true(v);
}

/* The response must have STATUS and, for an error, the JSON error ERR. */
static void expect(const struct resp *r, int status, const char *err)
{
        cr_assert_eq(r->status, status, "want %d, got: %s", status, r->raw);
        cr_assert(json_is_object(r->j), "not a JSON object: %s", r->raw);
        cr_assert_not_null(strstr(r->raw, "Content-Type: application/json"), "%s", r->raw);
        if (err) {
                json_t *e = json_object_get(r->j, "error");
                cr_assert(json_is_string(e) && !strcmp(json_string_value(e), err),
                          "want error %s: %s", err, r->raw);
                cr_assert(json_is_string(json_object_get(r->j, "message")), "%s", r->raw);
                cr_assert(json_is_integer(json_object_get(r->j, "errno")), "%s", r->raw);
        }
}

/* A request that must answer STATUS (and ERR); its response freed. */
static void must(const char *method, const char *path, const char *body, int status,
                 const char *err)
{
        struct resp r = req(method, path, body);
        expect(&r, status, err);
        rfree(&r);
}

static bool try_http(const char *key)
{
        char body[256];
        snprintf(body, sizeof(body), "{\"key\":\"%s\"}", key);
        struct resp r = req("POST", "/v1/limiters/lim/try", body);
        expect(&r, 200, NULL);
        bool ok = jbool(&r, "admitted");
        if (!ok)
                cr_assert_not_null(strstr(r.raw, "Retry-After: 1\r\n"), "%s", r.raw);
        rfree(&r);
        return ok;
}

/* reset_after_ns of KEY on lim by a peek (cost 0) in shared memory. */
static uint64_t reset_after(thr_limiter *l, const char *key)
{
        struct thr_result res;
        cr_assert_geq(thr_limiter_try(l, key, strlen(key), 0, &res), 0);
        return res.reset_after_ns;
}

/* ---------------------------------------------------------------- every route */

Test(http, every_route_answers)
{
        start(NULL, NULL);
        struct resp r = req("GET", "/v1/limiters", NULL);
        expect(&r, 200, NULL);
        json_t *arr = json_object_get(r.j, "limiters");
        cr_assert_eq(json_array_size(arr), 3, "%s", r.raw);
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(arr, 1), "kind")),
                         "semaphore");
        rfree(&r);
        r = req("GET", "/v1/limiters/lim", NULL);
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "burst"), 5);
        cr_assert_eq(jint(&r, "period_ns"), 1000000000);
        rfree(&r);

        r = req("POST", "/v1/limiters/lim/try", "{\"key\":\"k\",\"cost\":2}");
        expect(&r, 200, NULL);
        cr_assert(jbool(&r, "admitted"));
        cr_assert_eq(jint(&r, "remaining"), 3);
        cr_assert_eq(jint(&r, "limit"), 5);
        rfree(&r);
        r = req("POST", "/v1/limiters/lim/acquire", "{\"key\":\"k\",\"timeout_ms\":0}");
        expect(&r, 200, NULL);
        cr_assert(jbool(&r, "admitted"));
        cr_assert_eq(jint(&r, "remaining"), 2);
        rfree(&r);

        r = req("POST", "/v1/limiters/sem/leases", "{\"key\":\"s\",\"amount\":2,\"ttl_ms\":5000}");
        expect(&r, 201, NULL);
        char id[64];
        snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(r.j, "lease")));
        cr_assert_eq(strlen(id), 32, "%s", r.raw);
        cr_assert_eq(jint(&r, "amount"), 2);
        cr_assert_eq(jint(&r, "expires_in_ms"), 5000);
        rfree(&r);
        r = req("GET", "/v1/limiters/sem/sem?key=s", NULL);
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "held"), 2);
        cr_assert_eq(jint(&r, "remainder"), 1);
        cr_assert_eq(jint(&r, "max"), 3);
        rfree(&r);
        char path[128];
        snprintf(path, sizeof(path), "/v1/leases/%s/heartbeat", id);
        r = req("POST", path, "{\"ttl_ms\":9000}");
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "expires_in_ms"), 9000);
        rfree(&r);
        snprintf(path, sizeof(path), "/v1/leases/%s", id);
        r = req("DELETE", path, NULL);
        expect(&r, 200, NULL);
        cr_assert(jbool(&r, "released"));
        rfree(&r);
        must("DELETE", path, NULL, 404, "ENOENT");
        r = req("GET", "/v1/limiters/sem/sem?key=s", NULL);
        cr_assert_eq(jint(&r, "held"), 0, "%s", r.raw);
        rfree(&r);

        r = req("POST", "/v1/limiters/bud/spend", "{\"key\":\"b\",\"cost\":4}");
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "balance"), 6);
        rfree(&r);
        r = req("POST", "/v1/limiters/bud/spend", "{\"key\":\"b\",\"cost\":9}");
        expect(&r, 429, "EAGAIN");
        cr_assert_eq(jint(&r, "shortfall"), 3);
        rfree(&r);
        r = req("POST", "/v1/limiters/bud/add", "{\"key\":\"b\",\"amount\":5}");
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "balance"), 11);
        rfree(&r);
        r = req("GET", "/v1/limiters/bud/budget?key=b", NULL);
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "balance"), 11);
        cr_assert_eq(jint(&r, "initial"), 10);
        rfree(&r);

        r = req("POST", "/v1/compose/try",
                "{\"members\":[{\"limiter\":\"lim\",\"key\":\"c\",\"cost\":5},"
                "{\"limiter\":\"bud\",\"key\":\"c\",\"cost\":10}]}");
        expect(&r, 200, NULL);
        cr_assert(jbool(&r, "admitted"));
        cr_assert_eq(jint(&r, "denied"), -1);
        cr_assert_eq(json_integer_value(json_array_get(json_object_get(r.j, "remaining"), 1)), 0);
        rfree(&r);
        r = req("POST", "/v1/compose/acquire",
                "{\"members\":[{\"limiter\":\"lim\",\"key\":\"c2\",\"cost\":1}],\"timeout_ms\":0}");
        expect(&r, 200, NULL);
        cr_assert(jbool(&r, "admitted"));
        rfree(&r);
        r = req("POST", "/v1/groups/pair/try",
                "{\"args\":[{\"key\":\"g\",\"cost\":1},{\"key\":\"g\",\"cost\":11}]}");
        expect(&r, 200, NULL);
        cr_assert(!jbool(&r, "admitted"));
        cr_assert_eq(jint(&r, "denied"), 1);
        rfree(&r);
        r = req("POST", "/v1/groups/pair/acquire",
                "{\"args\":[{\"key\":\"g\",\"cost\":1},{\"key\":\"g\",\"cost\":10}],"
                "\"timeout_ms\":0}");
        expect(&r, 200, NULL);
        cr_assert(jbool(&r, "admitted"));
        rfree(&r);
}

/* HTTP and shared memory on one key admit exactly the burst, then exactly the refill. */
Test(http, shared_with_shared_memory_exactly)
{
        start(NULL, NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "lim");
        int admitted = 0;
        for (int i = 0; i < 8; i++) {
                if (i % 2)
                        admitted += try_http("shared");
                else
                        admitted += thr_limiter_try(l, "shared", 6, 1, NULL) == 1;
        }
        cr_assert_eq(admitted, 5);
        cr_assert_eq(thr_clock_advance(fx.a, 2 * SEC), 0);
        admitted = 0;
        for (int i = 0; i < 6; i++) {
                if (i % 2)
                        admitted += thr_limiter_try(l, "shared", 6, 1, NULL) == 1;
                else
                        admitted += try_http("shared");
        }
        cr_assert_eq(admitted, 2);
}

/* A rate acquire is held (no answer) until its place is due, then answered admitted. */
Test(http, acquire_waits_until_due)
{
        start(NULL, NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "lim");
        for (int i = 0; i < 5; i++)
                cr_assert_eq(thr_limiter_try(l, "w", 1, 1, NULL), 1);
        int fd = hconnect();
        hsend(fd, "POST", "/v1/limiters/lim/acquire", "{\"key\":\"w\",\"timeout_ms\":3000}", NULL);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 300), 0, "answered before the place was due");
        /* the place is taken: the key's TAT went one emission interval further */
        cr_assert_eq(reset_after(l, "w"), 6 * SEC);
        cr_assert_eq(thr_clock_advance(fx.a, SEC), 0);
        struct resp r = hread(fd);
        expect(&r, 200, NULL);
        cr_assert(jbool(&r, "admitted"));
        rfree(&r);
        /* a wait past the timeout is refused at once, nothing consumed */
        r = req("POST", "/v1/limiters/lim/acquire", "{\"key\":\"w\",\"timeout_ms\":500}");
        expect(&r, 429, "ETIMEDOUT");
        cr_assert_not_null(strstr(r.raw, "Retry-After: 1\r\n"), "%s", r.raw);
        rfree(&r);
        cr_assert_eq(reset_after(l, "w"), 5 * SEC);
}

/* A client that leaves before its place is due gets it given back: the key's TAT goes back. */
Test(http, acquire_cancelled_when_the_client_leaves)
{
        start(NULL, NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "lim");
        for (int i = 0; i < 5; i++)
                cr_assert_eq(thr_limiter_try(l, "c", 1, 1, NULL), 1);
        cr_assert_eq(reset_after(l, "c"), 5 * SEC);
        int fd = hconnect();
        hsend(fd, "POST", "/v1/limiters/lim/acquire", "{\"key\":\"c\",\"timeout_ms\":30000}", NULL);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (reset_after(l, "c") != 6 * SEC) {
                cr_assert_lt(telapsed_s(&t0), TD_READY, "the place was never taken");
                tdoze();
        }
        close(fd);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (reset_after(l, "c") != 5 * SEC) {
                cr_assert_lt(telapsed_s(&t0), TD_READY, "the place was not given back");
                tdoze();
        }
        cr_assert(try_http("other"));
}

/* ---------------------------------------------------------------- leases */

/* A lease over HTTP is held against shared-memory clients; not heartbeated, it expires by its TTL
 * and its units are free again for them; its id then answers 410 or 404. */
Test(http, lease_expires_without_heartbeat)
{
        start(NULL, NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "sem");
        struct resp r =
            req("POST", "/v1/limiters/sem/leases", "{\"key\":\"L\",\"amount\":3,\"ttl_ms\":1000}");
        expect(&r, 201, NULL);
        char path[128];
        snprintf(path, sizeof(path), "/v1/leases/%s/heartbeat",
                 json_string_value(json_object_get(r.j, "lease")));
        rfree(&r);
        struct thr_lease mine;
        cr_assert_eq(thr_sem_try(l, "L", 1, 1, SEC, &mine), -EAGAIN);
        must("POST", "/v1/limiters/sem/leases", "{\"key\":\"L\"}", 429, "EAGAIN");
        cr_assert_eq(thr_clock_advance(fx.a, 2 * SEC), 0);
        cr_assert_eq(thr_sem_try(l, "L", 1, 3, SEC, &mine), 0);
        r = req("POST", path, "{}");
        cr_assert(r.status == 410 || r.status == 404, "%s", r.raw);
        rfree(&r);
        cr_assert_eq(thr_sem_release(&mine), 0);
}

/* A lease waiting for units runs in a waiter thread; with every waiter busy, 503 EBUSY. */
Test(http, lease_wait_and_waiter_bound)
{
        start("http_waiters = 1\n", NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "sem");
        struct thr_lease mine;
        cr_assert_eq(thr_sem_try(l, "W", 1, 3, 10 * SEC, &mine), 0);
        int fd = hconnect();
        hsend(fd, "POST", "/v1/limiters/sem/leases",
              "{\"key\":\"W\",\"amount\":1,\"timeout_ms\":20000}", NULL);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 300), 0, "answered while no unit was free");
        must("POST", "/v1/limiters/bud/spend", "{\"key\":\"x\",\"cost\":99,\"timeout_ms\":1000}",
             503, "EBUSY");
        cr_assert_eq(thr_sem_release(&mine), 0);
        struct resp r = hread(fd);
        expect(&r, 201, NULL);
        cr_assert_eq(jint(&r, "amount"), 1);
        rfree(&r);
}

/* ---------------------------------------------------------------- bad requests */

struct bad {
        const char *method, *path, *body;
        int status;
        const char *err;
};

Test(http, bad_requests_answered_and_survived)
{
        start("http_max_body = 1024\n", NULL);
        char longkey[300], huge[4096];
        snprintf(longkey, sizeof(longkey), "{\"key\":\"%0105d\"}", 7);
        memset(huge, ' ', sizeof(huge) - 1);
        huge[sizeof(huge) - 1] = '\0';
        huge[0] = '{';
        huge[sizeof(huge) - 2] = '}';
        const struct bad tab[] = {
            {"POST", "/v1/limiters/lim/try", "{\"key\":", 400, "EINVAL"},
            {"POST", "/v1/limiters/lim/try", "[1,2]", 400, "EINVAL"},
            {"POST", "/v1/limiters/lim/try", "{\"key\":5}", 400, "EINVAL"},
            {"POST", "/v1/limiters/lim/try", "{\"key\":\"a\",\"cost\":\"1\"}", 400, "EINVAL"},
            {"POST", "/v1/limiters/lim/try", "{\"key\":\"a\",\"cost\":-1}", 400, "EINVAL"},
            {"POST", "/v1/limiters/lim/try", "{\"key\":\"a\",\"cost\":1.5}", 400, "EINVAL"},
            {"POST", "/v1/limiters/lim/try", "{\"key\":\"a\",\"colour\":1}", 400, "EINVAL"},
            {"POST", "/v1/limiters/lim/try", "{\"key\":\"a\",\"key\":\"b\"}", 400, "EINVAL"},
            {"POST", "/v1/limiters/lim/try", "{}", 400, "EINVAL"},
            {"POST", "/v1/limiters/lim/try", "{\"key\":\"\"}", 400, "EINVAL"},
            {"POST", "/v1/limiters/lim/try", longkey, 400, "ENAMETOOLONG"},
            {"POST", "/v1/limiters/lim/try", huge, 413, "EMSGSIZE"},
            {"POST", "/v1/limiters/nope/try", "{\"key\":\"a\"}", 404, "ENOENT"},
            {"POST", "/v1/limiters/../try", "{\"key\":\"a\"}", 404, "ENOENT"},
            {"GET", "/v1/nothing", NULL, 404, "ENOENT"},
            {"GET", "/metrics", NULL, 404, "ENOENT"},
            {"POST", "/v1/compose/refund", "{}", 404, "ENOENT"},
            {"DELETE", "/v1/leases/00112233445566778899aabbccddeeff", NULL, 404, "ENOENT"},
            {"GET", "/v1/limiters/lim/try", NULL, 405, "EINVAL"},
            {"PUT", "/v1/limiters", NULL, 405, "EINVAL"},
            {"POST", "/v1/limiters/lim/try", "{\"key\":\"a\",\"cost\":6}", 422, "ERANGE"},
            {"POST", "/v1/limiters/sem/try", "{\"key\":\"a\"}", 409, "EOPNOTSUPP"},
            {"POST", "/v1/limiters/lim/leases", "{\"key\":\"a\"}", 409, "EOPNOTSUPP"},
            {"GET", "/v1/limiters/sem/sem", NULL, 400, "EINVAL"},
            {"GET", "/v1/limiters/sem/sem?key=a&x=1", NULL, 400, "EINVAL"},
            {"POST", "/v1/compose/try", "{\"members\":[]}", 400, "EINVAL"},
            {"POST", "/v1/compose/try",
             "{\"members\":[{\"limiter\":\"lim\",\"key\":\"a\"},"
             "{\"limiter\":\"lim\",\"key\":\"a\"}]}",
             400, "EINVAL"},
            {"POST", "/v1/groups/pair/try", "{\"args\":[{\"key\":\"a\"}]}", 400, "EINVAL"},
            {"POST", "/v1/groups/none/try", "{\"args\":[{\"key\":\"a\"}]}", 404, "ENOENT"},
            {"POST", "/v1/limiters/sem/leases", "{\"key\":\"a\",\"amount\":4294967296}", 400,
             "EINVAL"},
        };
        for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
                struct resp r = req(tab[i].method, tab[i].path, tab[i].body);
                cr_assert_eq(r.status, tab[i].status, "case %zu (%s %s %.60s): %s", i,
                             tab[i].method, tab[i].path, tab[i].body ? tab[i].body : "", r.raw);
                expect(&r, tab[i].status, tab[i].err);
                rfree(&r);
                cr_assert(try_http("alive"), "case %zu: the daemon stopped serving", i);
                cr_assert_eq(thr_clock_advance(fx.a, SEC), 0);
        }
        struct resp r = req("GET", "/v1/limiters/lim/try", NULL);
        cr_assert_not_null(strstr(r.raw, "Allow: POST\r\n"), "%s", r.raw);
        rfree(&r);
}

/* A client sending a byte a second is dropped at http_timeout_ms; others are still served. */
Test(http, slow_client_dropped)
{
        start("http_timeout_ms = 1500\n", NULL);
        int fd = hconnect();
        const char *reqs = "POST /v1/limiters/lim/try HTTP/1.1\r\nHost: x\r\n";
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        bool closed = false;
        for (size_t i = 0; !closed && i < strlen(reqs); i++) {
                cr_assert_lt(telapsed_s(&t0), 6, "a slow client was kept for 6 s");
                if (send(fd, reqs + i, 1, MSG_NOSIGNAL) != 1)
                        break;
                struct pollfd p = {.fd = fd, .events = POLLIN};
                if (poll(&p, 1, 1000) == 1) {
                        char b[256];
                        closed = read(fd, b, sizeof(b)) <= 0;
                }
        }
        close(fd);
        double t = telapsed_s(&t0);
        cr_assert(t >= 1.0 && t < 6, "dropped after %.1f s", t);
        cr_assert(try_http("after"));
}

/* Connections past http_max_connections are answered 503 EBUSY. */
Test(http, connections_past_the_bound)
{
        start("http_max_connections = 2\n", NULL);
        int a = hconnect(), b = hconnect();
        usleep(200000); /* both accepted */
        struct resp r = req("POST", "/v1/limiters/lim/try", "{\"key\":\"a\"}");
        expect(&r, 503, "EBUSY");
        rfree(&r);
        close(a);
        close(b);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                r = req("POST", "/v1/limiters/lim/try", "{\"key\":\"a\"}");
                int st = r.status;
                rfree(&r);
                if (st == 200)
                        break;
                cr_assert_lt(telapsed_s(&t0), TD_READY, "still refused after the others left");
                tdoze();
        }
}

/* ---------------------------------------------------------------- token, socket, reload */

Test(http, token_required)
{
        char tok[256], extra[512];
        snprintf(tok, sizeof(tok), "%s/token", fx.dir);
        FILE *f = fopen(tok, "we");
        cr_assert_not_null(f);
        fputs("s3cret-token\n", f);
        fclose(f);
        cr_assert_eq(chmod(tok, 0644), 0);
        snprintf(extra, sizeof(extra), "http_token_file = %s\n", tok);
        port = tfree_port();
        char keys[700];
        snprintf(keys, sizeof(keys), "http = 127.0.0.1:%d\n%s", port, extra);
        tdaemon_config(&fx, true, keys, LIMS);
        int i = tdaemon_start(&fx, NULL);
        cr_assert_eq(tdaemon_exit_code(&fx, i), EX_CONFIG, "%s", tdaemon_log(&fx, i));
        cr_assert_not_null(strstr(tdaemon_log(&fx, i), "readable or writable by others"), "%s",
                           tdaemon_log(&fx, i));
        cr_assert_eq(chmod(tok, 0600), 0);
        i = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, i, 1);
        tdaemon_wait_log(&fx, i, "http: serving", 1);
        const char *body = "{\"key\":\"t\"}";
        struct resp r = req("POST", "/v1/limiters/lim/try", body);
        expect(&r, 401, "EACCES");
        cr_assert_not_null(strstr(r.raw, "WWW-Authenticate: Bearer\r\n"), "%s", r.raw);
        rfree(&r);
        r = req_h("POST", "/v1/limiters/lim/try", body, "Authorization: Bearer s3cret-tokem\r\n");
        expect(&r, 401, "EACCES");
        rfree(&r);
        r = req_h("POST", "/v1/limiters/lim/try", body, "Authorization: Bearer s3cret\r\n");
        expect(&r, 401, "EACCES");
        rfree(&r);
        r = req_h("POST", "/v1/limiters/lim/try", body, "Authorization: Bearer s3cret-token\r\n");
        expect(&r, 200, NULL);
        rfree(&r);
        /* the scheme in any case (RFC 9110), the token exactly */
        r = req_h("POST", "/v1/limiters/lim/try", body, "Authorization: bEARER s3cret-token\r\n");
        expect(&r, 200, NULL);
        rfree(&r);
        r = req_h("POST", "/v1/limiters/lim/try", body, "Authorization: bearer S3CRET-TOKEN\r\n");
        expect(&r, 401, "EACCES");
        rfree(&r);
}

Test(http, unix_socket)
{
        snprintf(unix_path, sizeof(unix_path), "%s/http.sock", fx.dir);
        start(NULL, NULL);
        struct stat st;
        cr_assert_eq(stat(unix_path, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0660);
        cr_assert(try_http("u"));
}

Test(http, reload_adds_and_removes)
{
        start(NULL, "[lim]\nrate = 1/s\nburst = 5\ncapacity = 64\n\n[gone]\nrate = 1/s\n"
                    "burst = 2\ncapacity = 64\n");
        must("POST", "/v1/limiters/gone/try", "{\"key\":\"a\"}", 200, NULL);
        must("POST", "/v1/limiters/fresh/try", "{\"key\":\"a\"}", 404, "ENOENT");
        char keys[256], out[8192];
        snprintf(keys, sizeof(keys), "http = 127.0.0.1:%d\n", port);
        tdaemon_config(&fx, true, keys,
                       "[lim]\nrate = 1/s\nburst = 5\ncapacity = 64\n\n[fresh]\nrate = 1/s\n"
                       "capacity = 64\n");
        cr_assert_eq(tdaemon_run(&fx, out, sizeof(out), "--reload", NULL, NULL), 0, "%s", out);
        must("POST", "/v1/limiters/gone/try", "{\"key\":\"a\"}", 410, "EIDRM");
        must("POST", "/v1/limiters/fresh/try", "{\"key\":\"a\"}", 200, NULL);
        struct resp r = req("GET", "/v1/limiters", NULL);
        expect(&r, 200, NULL);
        cr_assert_not_null(strstr(r.body, "\"fresh\""), "%s", r.raw);
        cr_assert_null(strstr(r.body, "\"gone\""), "%s", r.raw);
        rfree(&r);
}

/* SIGTERM with a rate wait pending and a lease held: the wait is answered 503 and its place given
 * back, the lease is released, and the daemon exits 0 (under ASan: nothing leaked). */
Test(http, stop_answers_waits_and_releases_leases)
{
        start(NULL, NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "lim");
        thr_limiter *s = tdaemon_lim(&fx, 1, "sem");
        for (int i = 0; i < 5; i++)
                cr_assert_eq(thr_limiter_try(l, "z", 1, 1, NULL), 1);
        must("POST", "/v1/limiters/sem/leases", "{\"key\":\"S\",\"amount\":3}", 201, NULL);
        int fd = hconnect();
        hsend(fd, "POST", "/v1/limiters/lim/acquire", "{\"key\":\"z\"}", NULL);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (reset_after(l, "z") != 6 * SEC) {
                cr_assert_lt(telapsed_s(&t0), TD_READY, "the place was never taken");
                tdoze();
        }
        tdaemon_stop(&fx, 0);
        struct resp r = hread(fd);
        expect(&r, 503, "EBUSY");
        rfree(&r);
        cr_assert_eq(reset_after(l, "z"), 5 * SEC);
        struct thr_lease mine;
        cr_assert_eq(thr_sem_try(s, "S", 1, 3, SEC, &mine), 0);
        cr_assert_eq(thr_sem_release(&mine), 0);
}

/* A spend with a timeout waits (in a waiter thread) until an add in shared memory makes it fit. */
Test(http, spend_waits_for_an_add)
{
        start(NULL, NULL);
        thr_limiter *b = tdaemon_lim(&fx, 0, "bud");
        int fd = hconnect();
        hsend(fd, "POST", "/v1/limiters/bud/spend",
              "{\"key\":\"B\",\"cost\":15,\"timeout_ms\":20000}", NULL);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 300), 0, "answered before the balance sufficed");
        struct thr_budget_result res;
        cr_assert_eq(thr_budget_add(b, "B", 1, 10, &res), 0);
        struct resp r = hread(fd);
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "balance"), 5);
        cr_assert_eq(jint(&r, "shortfall"), 0);
        rfree(&r);
}

/* A composed acquire over HTTP waits until every member fits (the clock moves), then admits. */
Test(http, compose_acquire_waits_for_the_clock)
{
        start(NULL, NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "lim");
        for (int i = 0; i < 5; i++)
                cr_assert_eq(thr_limiter_try(l, "C", 1, 1, NULL), 1);
        int fd = hconnect();
        hsend(fd, "POST", "/v1/compose/acquire",
              "{\"members\":[{\"limiter\":\"lim\",\"key\":\"C\"},{\"limiter\":\"bud\",\"key\":"
              "\"C\",\"cost\":2}],\"timeout_ms\":20000}",
              NULL);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 300), 0, "admitted before the bucket refilled");
        cr_assert_eq(thr_clock_advance(fx.a, SEC), 0);
        struct resp r = hread(fd);
        expect(&r, 200, NULL);
        cr_assert(jbool(&r, "admitted"));
        cr_assert_eq(json_integer_value(json_array_get(json_object_get(r.j, "remaining"), 1)), 8);
        rfree(&r);
        cr_assert_eq(thr_limiter_try(l, "C", 1, 1, NULL), 0, "the refilled token was not taken");
}

/* Bytes that are not HTTP, and a header block past libmicrohttpd's memory: refused or dropped by
 * the server, which still serves the next request. */
Test(http, garbage_and_huge_headers_survived)
{
        start(NULL, NULL);
        int fd = hconnect();
        const char junk[] = "\x01\x02GARBAGE \xff\r\n\r\n";
        cr_assert_eq(write(fd, junk, sizeof(junk) - 1), (ssize_t)sizeof(junk) - 1);
        struct resp r = hread(fd);
        cr_assert(r.status == 0 || (r.status >= 400 && r.status < 500), "%s", r.raw);
        rfree(&r);
        char *big = malloc(100000);
        memset(big, 'a', 99999);
        big[99999] = '\0';
        char *hdr = malloc(100100);
        snprintf(hdr, 100100, "X-Big: %s\r\n", big);
        r = req_h("POST", "/v1/limiters/lim/try", "{\"key\":\"h\"}", hdr);
        cr_assert(r.status == 0 || (r.status >= 400 && r.status < 500), "%.300s", r.raw);
        rfree(&r);
        free(big);
        free(hdr);
        cr_assert(try_http("after"));
}

/* ---------------------------------------------------------------- the hostile review's cases */

/* A lease granted, in a waiter thread, to a client that left meanwhile is given back at once:
 * nobody knows its id, so it would be held for nobody until its TTL (review 14, f2). */
Test(http, lease_for_a_client_that_left_is_given_back)
{
        start(NULL, NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "sem");
        struct thr_lease mine;
        cr_assert_eq(thr_sem_try(l, "G", 1, 3, 60 * SEC, &mine), 0);
        int fd = hconnect();
        hsend(fd, "POST", "/v1/limiters/sem/leases",
              "{\"key\":\"G\",\"amount\":1,\"ttl_ms\":60000,\"timeout_ms\":20000}", NULL);
        struct thr_sem_stat st;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do { /* its acquire is queued in the arena */
                cr_assert_lt(telapsed_s(&t0), TD_READY, "the lease request never queued");
                tdoze();
                cr_assert_eq(thr_sem_stat(l, "G", 1, &st), 0);
        } while (st.pending != 1);
        close(fd);
        cr_assert_eq(thr_sem_release(&mine), 0); /* the queued acquire is granted now */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do {
                cr_assert_lt(telapsed_s(&t0), TD_READY, "a unit is held for a client that left");
                tdoze();
                cr_assert_eq(thr_sem_stat(l, "G", 1, &st), 0);
        } while (st.held != 0 || st.pending != 0);
        cr_assert_eq(thr_sem_try(l, "G", 1, 3, SEC, &mine), 0, "all 3 units free again");
        cr_assert_eq(thr_sem_release(&mine), 0);
}

/* Rate waiters that leave together get every place back, not only the newest: places are given
 * back newest first, as thr_reservation_cancel requires (review 14, f3). */
Test(http, waiters_that_leave_together_give_every_place_back)
{
        start(NULL, NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "lim");
        for (int i = 0; i < 5; i++)
                cr_assert_eq(thr_limiter_try(l, "m", 1, 1, NULL), 1);
        int fds[6];
        struct timespec t0;
        for (int i = 0; i < 6; i++) {
                fds[i] = hconnect();
                hsend(fds[i], "POST", "/v1/limiters/lim/acquire",
                      "{\"key\":\"m\",\"timeout_ms\":30000}", NULL);
                clock_gettime(CLOCK_MONOTONIC, &t0);
                while (reset_after(l, "m") != (uint64_t)(6 + i) * SEC) {
                        cr_assert_lt(telapsed_s(&t0), TD_READY, "place %d never taken", i);
                        tdoze();
                }
        }
        for (int i = 0; i < 6; i++)
                close(fds[i]);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (reset_after(l, "m") != 5 * SEC) {
                cr_assert_lt(telapsed_s(&t0), TD_READY, "places kept: reset after %llu ns",
                             (unsigned long long)reset_after(l, "m"));
                tdoze();
        }
}

/* SIGTERM while a lease request waits in the kernel (timeout 60 s): the stop does not wait for
 * it; the daemon exits 0 within a bound well under that timeout (review 14, f1). */
Test(http, stop_does_not_wait_out_a_kernel_wait)
{
        start(NULL, NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "sem");
        struct thr_lease mine;
        cr_assert_eq(thr_sem_try(l, "K", 1, 3, 120 * SEC, &mine), 0);
        int fd = hconnect();
        hsend(fd, "POST", "/v1/limiters/sem/leases", "{\"key\":\"K\",\"timeout_ms\":60000}", NULL);
        struct thr_sem_stat st;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do {
                cr_assert_lt(telapsed_s(&t0), TD_READY, "the lease request never queued");
                tdoze();
                cr_assert_eq(thr_sem_stat(l, "K", 1, &st), 0);
        } while (st.pending != 1);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tdaemon_stop(&fx, 0);
        cr_assert_lt(telapsed_s(&t0), 20.0, "the stop waited out the lease's wait");
        close(fd);
        cr_assert_eq(thr_sem_release(&mine), 0);
}

/* Errors a client causes are 4xx with a message, even where the message would quote bytes that
 * are not UTF-8; the token's scheme is matched in any case (review 14, f7, f8). */
Test(http, client_errors_and_their_messages)
{
        start(NULL, NULL);
        must("POST", "/v1/limiters/bud/add", "{\"key\":\"o\",\"amount\":4611686018427387903}", 422,
             "EOVERFLOW");
        must("POST", "/v1/limiters/%FF/try", "{\"key\":\"a\"}", 404, "ENOENT");
        must("POST", "/v1/groups/%FE%FF/try", "{\"args\":[]}", 404, "ENOENT");
        must("POST", "/v1/limiters/lim/try", "{\"key\":\"a\",\"\\u00e9\\u00ff\":1}", 400, "EINVAL");
}

/* A daemon SIGKILLed while it holds leases for HTTP clients: they are its process's, reclaimed
 * as any dead process's; shared-memory clients get every unit back, and a daemon started again on
 * the arena serves HTTP with the old ids unknown (404). */
Test(http, a_killed_daemons_leases_are_reclaimed)
{
        start(NULL, NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "sem");
        struct resp r = req("POST", "/v1/limiters/sem/leases",
                            "{\"key\":\"D\",\"amount\":3,\"ttl_ms\":600000}");
        expect(&r, 201, NULL);
        char path[128];
        snprintf(path, sizeof(path), "/v1/leases/%s",
                 json_string_value(json_object_get(r.j, "lease")));
        rfree(&r);
        struct thr_lease mine;
        cr_assert_eq(thr_sem_try(l, "D", 1, 1, SEC, &mine), -EAGAIN, "the daemon holds all 3");
        tdaemon_kill(&fx, 0);
        cr_assert_eq(thr_sem_try(l, "D", 1, 3, SEC, &mine), 0, "a dead daemon's leases are free");
        cr_assert_eq(thr_sem_release(&mine), 0);
        int i = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, i, 2);
        tdaemon_wait_log(&fx, i, "http: serving", 1);
        must("DELETE", path, NULL, 404, "ENOENT");
        must("POST", "/v1/limiters/sem/leases", "{\"key\":\"D\",\"amount\":3}", 201, NULL);
}

/* A downstream's word over HTTP (hold, cap, feedback): what it does is seen by shared-memory
 * clients of the same key, a malformed header is a 400 naming it with nothing applied, and a
 * limiter of another kind is refused. lim: 1/s, burst 5. */
Test(http, hold_cap_and_feedback_shared_with_shared_memory)
{
        start(NULL, NULL);
        thr_limiter *l = tdaemon_lim(&fx, 0, "lim");
        /* a hold of 3 s: nothing in shared memory until then, one at 3 s */
        struct resp r = req("POST", "/v1/limiters/lim/hold", "{\"key\":\"h\",\"delay_ms\":3000}");
        expect(&r, 200, NULL);
        cr_assert(!jbool(&r, "admitted") && !jbool(&r, "shortened"), "%s", r.raw);
        cr_assert_eq(jint(&r, "retry_after_ns"), 3 * (long long)SEC, "%s", r.raw);
        rfree(&r);
        cr_assert_eq(thr_limiter_try(l, "h", 1, 1, NULL), 0);
        /* a cap of 2 */
        r = req("POST", "/v1/limiters/lim/cap", "{\"key\":\"c\",\"tokens\":2}");
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "remaining"), 2, "%s", r.raw);
        rfree(&r);
        cr_assert_eq(thr_limiter_try(l, "c", 1, 2, NULL), 1);
        cr_assert_eq(thr_limiter_try(l, "c", 1, 1, NULL), 0);
        /* a 429's headers: nothing left, reset in 2 s */
        r = req("POST", "/v1/limiters/lim/feedback",
                "{\"key\":\"f\",\"headers\":{\"X-RateLimit-Remaining\":\"0\","
                "\"X-RateLimit-Reset\":\"2\",\"Content-Type\":\"text/plain\"}}");
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "retry_after_ns"), 2 * (long long)SEC, "%s", r.raw);
        rfree(&r);
        cr_assert_eq(thr_limiter_try(l, "f", 1, 1, NULL), 0);
        /* tokens: the tokens dimension only when asked */
        r = req("POST", "/v1/limiters/lim/feedback",
                "{\"key\":\"t\",\"tokens\":true,\"headers\":{\"x-ratelimit-remaining-tokens\":"
                "\"0\",\"x-ratelimit-reset-tokens\":\"1s\"}}");
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "retry_after_ns"), (long long)SEC, "%s", r.raw);
        rfree(&r);
        /* a malformed header: 400 naming it, and the key untouched */
        r = req(
            "POST", "/v1/limiters/lim/feedback",
            "{\"key\":\"m\",\"headers\":{\"Retry-After\":\"30\",\"X-RateLimit-Reset\":\"soon\"}}");
        expect(&r, 400, "EINVAL");
        cr_assert_not_null(strstr(r.raw, "X-RateLimit-Reset"), "%s", r.raw);
        rfree(&r);
        cr_assert_eq(thr_limiter_try(l, "m", 1, 5, NULL), 1, "a refused feedback held the key");
        must("POST", "/v1/limiters/lim/feedback", "{\"key\":\"m\",\"headers\":[\"Retry-After\"]}",
             400, "EINVAL");
        must("POST", "/v1/limiters/lim/feedback", "{\"key\":\"m\",\"headers\":{\"Retry-After\":3}}",
             400, "EINVAL");
        must("POST", "/v1/limiters/lim/hold", "{\"key\":\"m\"}", 400, "EINVAL");
        must("POST", "/v1/limiters/lim/hold", "{\"key\":\"m\",\"delay_ms\":1,\"x\":1}", 400,
             "EINVAL");
        must("POST", "/v1/limiters/bud/hold", "{\"key\":\"m\",\"delay_ms\":1}", 409, "EOPNOTSUPP");
        must("GET", "/v1/limiters/lim/cap", NULL, 405, "EINVAL");
        /* at 3 s the held key admits one */
        cr_assert_eq(thr_clock_advance(fx.a, 3 * SEC), 0);
        cr_assert_eq(thr_limiter_try(l, "h", 1, 1, NULL), 1);
        cr_assert_eq(thr_limiter_try(l, "h", 1, 1, NULL), 0);
}

/* ---------------------------------------------------------------- circuit breakers */

#define BRK_LIMS                                                                                   \
        LIMS "\n[brk]\nkind = breaker\nfailures = 2\ncooldown = 10s\nprobes = 1\n"                 \
             "probe_timeout = 5s\ncapacity = 64\n\n"                                               \
             "[brk2]\nkind = breaker\nfailures = 1\ncapacity = 64\n"

/* POST .../breaker/allow for KEY: its answer, which must be STATUS (and ERR). */
static struct resp brk_allow(const char *lim, const char *key, int status, const char *err)
{
        char path[128], body[256];
        snprintf(path, sizeof(path), "/v1/limiters/%s/breaker/allow", lim);
        snprintf(body, sizeof(body), "{\"key\":\"%s\"}", key);
        struct resp r = req("POST", path, body);
        expect(&r, status, err);
        return r;
}

/* POST .../breaker/report of the ticket in R's answer: its answer (200 expected). */
static struct resp brk_report(const char *lim, const struct resp *r, const char *outcome)
{
        char path[128], body[256];
        snprintf(path, sizeof(path), "/v1/limiters/%s/breaker/report", lim);
        snprintf(body, sizeof(body), "{\"ticket\":\"%s\",\"outcome\":\"%s\"}",
                 json_string_value(json_object_get(r->j, "ticket")), outcome);
        struct resp a = req("POST", path, body);
        expect(&a, 200, NULL);
        return a;
}

static void jstate(const struct resp *r, const char *state)
{
        json_t *v = json_object_get(r->j, "state");
        cr_assert(json_is_string(v) && !strcmp(json_string_value(v), state), "want %s: %s", state,
                  r->raw);
}

/* A call over HTTP: allowed (not a probe), reported OUTCOME; the state the report left. */
static void brk_call(const char *key, const char *outcome, const char *after)
{
        struct resp r = brk_allow("brk", key, 200, NULL);
        cr_assert(!jbool(&r, "probe"), "%s", r.raw);
        struct resp a = brk_report("brk", &r, outcome);
        cr_assert(jbool(&a, "counted"), "%s", a.raw);
        jstate(&a, after);
        rfree(&a);
        rfree(&r);
}

/* A breaker driven over HTTP and seen in shared memory: two failures trip it; open, allows are
 * 429 with Retry-After; after the cooldown one probe goes out and a second allow is refused
 * while it is (over HTTP and in shared memory); its success closes the breaker. */
Test(http, breaker_trips_probes_and_closes)
{
        start(NULL, BRK_LIMS);
        thr_limiter *l = tdaemon_lim(&fx, 0, "brk");
        struct thr_breaker_status st;
        struct thr_breaker_ticket t;
        struct resp r = brk_allow("brk", "api", 200, NULL);
        cr_assert_eq(strlen(json_string_value(json_object_get(r.j, "ticket"))), 32, "%s", r.raw);
        jstate(&r, "closed");
        cr_assert(!jbool(&r, "untracked"), "%s", r.raw);
        cr_assert_eq(jint(&r, "expires_in_ms"), 60000, "%s", r.raw);
        struct resp a = brk_report("brk", &r, "failure");
        cr_assert(jbool(&a, "counted"));
        cr_assert_eq(jint(&a, "consecutive_failures"), 1, "%s", a.raw);
        rfree(&a);
        rfree(&r);
        brk_call("api", "failure", "open");
        cr_assert_eq(thr_breaker_stat(l, "api", 3, &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_OPEN, "shared memory sees it open");

        r = brk_allow("brk", "api", 429, "EAGAIN");
        jstate(&r, "open");
        cr_assert_gt(jint(&r, "retry_after_ns"), 9 * (long long)SEC, "%s", r.raw);
        const char *ra = strstr(r.raw, "Retry-After: ");
        cr_assert(ra && (atoi(ra + 13) == 10 || atoi(ra + 13) == 11), "%s", r.raw);
        cr_assert_null(json_object_get(r.j, "ticket"), "%s", r.raw);
        rfree(&r);
        r = req("GET", "/v1/limiters/brk/breaker?key=api", NULL);
        expect(&r, 200, NULL);
        jstate(&r, "open");
        cr_assert_eq(jint(&r, "consecutive_failures"), 2, "%s", r.raw);
        rfree(&r);

        cr_assert_eq(thr_clock_advance(fx.a, 11 * SEC), 0);
        r = brk_allow("brk", "api", 200, NULL);
        cr_assert(jbool(&r, "probe"), "%s", r.raw);
        jstate(&r, "half-open");
        cr_assert_eq(jint(&r, "probes_in_flight"), 1, "%s", r.raw);
        struct resp second = brk_allow("brk", "api", 429, "EAGAIN");
        jstate(&second, "half-open");
        rfree(&second);
        cr_assert_eq(thr_breaker_allow(l, "api", 3, &t, &st), -EAGAIN, "the probe is out");
        a = brk_report("brk", &r, "success");
        cr_assert(jbool(&a, "counted"));
        jstate(&a, "closed");
        rfree(&a);
        rfree(&r);
        cr_assert_eq(thr_breaker_allow(l, "api", 3, &t, &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_CLOSED);
        cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_SUCCESS), 0);
        brk_call("api", "success", "closed");
        brk_call("api", "ignore", "closed");
}

/* Bad breaker requests: each a 4xx naming what was wrong, nothing reported. */
Test(http, breaker_bad_requests_named)
{
        start(NULL, BRK_LIMS);
        struct resp r = brk_allow("brk", "k", 200, NULL);
        const char *id = json_string_value(json_object_get(r.j, "ticket"));
        char body[256];
        snprintf(body, sizeof(body), "{\"ticket\":\"%s\",\"outcome\":\"maybe\"}", id);
        struct resp e = req("POST", "/v1/limiters/brk/breaker/report", body);
        expect(&e, 400, "EINVAL");
        cr_assert_not_null(strstr(e.raw, "'maybe' is not success, failure or ignore"), "%s", e.raw);
        rfree(&e);
        e = req("POST", "/v1/limiters/brk/breaker/report", "{\"outcome\":\"success\"}");
        expect(&e, 400, "EINVAL");
        cr_assert_not_null(strstr(e.raw, "missing field 'ticket'"), "%s", e.raw);
        rfree(&e);
        snprintf(body, sizeof(body), "{\"ticket\":\"%s\"}", id);
        e = req("POST", "/v1/limiters/brk/breaker/report", body);
        expect(&e, 400, "EINVAL");
        cr_assert_not_null(strstr(e.raw, "missing field 'outcome'"), "%s", e.raw);
        rfree(&e);
        e = req("POST", "/v1/limiters/brk/breaker/report",
                "{\"ticket\":\"0123456789abcdef0123456789abcdef\",\"outcome\":\"success\"}");
        expect(&e, 404, "ENOENT");
        cr_assert_not_null(strstr(e.raw, "no ticket '0123456789abcdef0123456789abcdef'"), "%s",
                           e.raw);
        rfree(&e);
        must("POST", "/v1/limiters/brk/breaker/report", "{\"ticket\":7,\"outcome\":\"success\"}",
             400, "EINVAL");
        /* another breaker's ticket: refused, and still good on its own breaker */
        snprintf(body, sizeof(body), "{\"ticket\":\"%s\",\"outcome\":\"failure\"}", id);
        e = req("POST", "/v1/limiters/brk2/breaker/report", body);
        expect(&e, 400, "EINVAL");
        cr_assert_not_null(strstr(e.raw, "handed out by limiter 'brk', not 'brk2'"), "%s", e.raw);
        rfree(&e);
        struct resp a = brk_report("brk", &r, "failure");
        cr_assert(jbool(&a, "counted"), "%s", a.raw);
        rfree(&a);
        e = req("POST", "/v1/limiters/brk/breaker/report", body);
        expect(&e, 404, "ENOENT"); /* reported already */
        cr_assert_not_null(strstr(e.raw, id), "%s", e.raw);
        rfree(&e);
        rfree(&r);
        /* the wrong kind: 409 naming it */
        r = brk_allow("lim", "k", 409, "EOPNOTSUPP");
        cr_assert_not_null(strstr(r.raw, "'lim' is a gcra limiter, not a breaker"), "%s", r.raw);
        rfree(&r);
        must("GET", "/v1/limiters/sem/breaker?key=k", NULL, 409, "EOPNOTSUPP");
        must("POST", "/v1/limiters/nope/breaker/allow", "{\"key\":\"k\"}", 404, "ENOENT");
        must("POST", "/v1/limiters/brk/breaker/allow", "{}", 400, "EINVAL");
        must("POST", "/v1/limiters/brk/breaker/allow", "{\"key\":\"k\",\"ttl_ms\":0}", 400,
             "EINVAL");
        must("POST", "/v1/limiters/brk/breaker/allow", "{\"key\":\"k\",\"cost\":1}", 400, "EINVAL");
        must("GET", "/v1/limiters/brk/breaker", NULL, 400, "EINVAL");
        must("GET", "/v1/limiters/brk/breaker/allow", NULL, 405, "EINVAL");
        must("POST", "/v1/limiters/brk/breaker", "{}", 405, "EINVAL");
        must("POST", "/v1/limiters/brk/breaker/trip", "{}", 404, "ENOENT");
        /* the daemon still serves */
        r = req("GET", "/v1/limiters/brk/breaker?key=k", NULL);
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "consecutive_failures"), 1, "%s", r.raw);
        rfree(&r);
}

/* Tickets held for HTTP clients are bounded (http_max_leases, a table apart from the leases'):
 * past it 503 naming the bound; a ticket not reported within its ttl is reported ignore and
 * forgotten (a probe's place freed before probe_timeout), its id then 404; a ttl is capped at
 * 21 x min(cooldown, probe_timeout), past which a report is ignored anyway. */
Test(http, breaker_tickets_bounded_and_forgotten)
{
        start("http_max_leases = 2\n", BRK_LIMS);
        struct resp r1 = brk_allow("brk", "a", 200, NULL);
        struct resp r2 = brk_allow("brk", "b", 200, NULL);
        struct resp r = brk_allow("brk", "c", 503, "ENOSPC");
        cr_assert_not_null(strstr(r.raw, "http_max_leases"), "%s", r.raw);
        rfree(&r);
        must("POST", "/v1/limiters/sem/leases", "{\"key\":\"s\"}", 201, NULL);
        struct resp a = brk_report("brk", &r1, "success");
        rfree(&a);
        r = brk_allow("brk", "c", 200, NULL);
        a = brk_report("brk", &r, "success");
        rfree(&a);
        rfree(&r);
        a = brk_report("brk", &r2, "success");
        rfree(&a);
        rfree(&r2);

        r = req("POST", "/v1/limiters/brk/breaker/allow", "{\"key\":\"c\",\"ttl_ms\":999999999}");
        expect(&r, 200, NULL);
        cr_assert_eq(jint(&r, "expires_in_ms"), 105000, "21 x min(10 s, 5 s): %s", r.raw);
        a = brk_report("brk", &r, "ignore");
        rfree(&a);
        rfree(&r);

        /* trip "p", wait out the cooldown, take the probe with a ttl of 1 s, let it pass */
        brk_call("p", "failure", "closed");
        brk_call("p", "failure", "open");
        cr_assert_eq(thr_clock_advance(fx.a, 11 * SEC), 0);
        r = req("POST", "/v1/limiters/brk/breaker/allow", "{\"key\":\"p\",\"ttl_ms\":1000}");
        expect(&r, 200, NULL);
        cr_assert(jbool(&r, "probe"), "%s", r.raw);
        cr_assert_eq(jint(&r, "expires_in_ms"), 1000, "%s", r.raw);
        r2 = brk_allow("brk", "p", 429, "EAGAIN");
        rfree(&r2);
        cr_assert_eq(thr_clock_advance(fx.a, 2 * SEC), 0);
        /* 2 s < probe_timeout: the place comes back because the daemon gave the ticket up */
        r2 = brk_allow("brk", "p", 200, NULL);
        cr_assert(jbool(&r2, "probe"), "%s", r2.raw);
        char body[256];
        snprintf(body, sizeof(body), "{\"ticket\":\"%s\",\"outcome\":\"failure\"}",
                 json_string_value(json_object_get(r.j, "ticket")));
        must("POST", "/v1/limiters/brk/breaker/report", body, 404, "ENOENT");
        a = brk_report("brk", &r2, "success");
        jstate(&a, "closed");
        rfree(&a);
        rfree(&r2);
        rfree(&r);
}

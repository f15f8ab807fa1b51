/*
 * test_http.c - throttled's HTTP API (doc/http-api.md) against a real daemon on a manual clock:
 * every route, limits shared exactly with shared-memory clients, rate waits answered when due and
 * given back when the client leaves, leases held for HTTP clients and their expiry, the bounds
 * and every kind of bad request (each answered with its status and JSON error, the daemon still
 * serving after it), the token, a Unix socket, and reloads seen over HTTP. The harness is
 * http_run.c; circuit breakers are test_http_breaker.c (the same program and suite).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "http_run.h"
#include "throttle/throttle.h"

TestSuite(http, .init = http_setup, .fini = http_teardown, .timeout = 120);

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

/* A lease request's priority (thr_sem_acquire_opts): a bounded queue that drops the lowest class
 * for a higher one (503 ECANCELED to the dropped request), refuses one that is not higher (503
 * EBUSY), and grants the higher one when the unit comes back; a class above 7 is a 400. */
Test(http, lease_priority_and_a_bounded_queue)
{
        start(NULL, LIMS "\n[pq]\nkind = semaphore\nmax = 1\ncapacity = 64\nmax_waiters = 1\n"
                         "on_queue_full = drop_lowest\n");
        thr_limiter *l = tdaemon_lim(&fx, 0, "pq");
        struct thr_lease mine;
        cr_assert_eq(thr_sem_try(l, "Q", 1, 1, 30 * SEC, &mine), 0);
        must("POST", "/v1/limiters/pq/leases", "{\"key\":\"Q\",\"timeout_ms\":1000,\"priority\":8}",
             400, "EINVAL");
        int lo = hconnect(), hi = hconnect();
        hsend(lo, "POST", "/v1/limiters/pq/leases",
              "{\"key\":\"Q\",\"timeout_ms\":20000,\"priority\":0}", NULL);
        struct thr_sem_stat st = {0};
        for (int i = 0; i < 2000 && st.pending != 1; i++) {
                usleep(1000);
                cr_assert_eq(thr_sem_stat(l, "Q", 1, &st), 0);
        }
        cr_assert_eq(st.pending, 1, "the first request never queued");
        hsend(hi, "POST", "/v1/limiters/pq/leases",
              "{\"key\":\"Q\",\"timeout_ms\":20000,\"priority\":5}", NULL);
        struct resp r = hread(lo);
        expect(&r, 503, "ECANCELED");
        rfree(&r);
        must("POST", "/v1/limiters/pq/leases",
             "{\"key\":\"Q\",\"timeout_ms\":20000,\"priority\":2}", 503, "EBUSY");
        cr_assert_eq(thr_sem_release(&mine), 0);
        r = hread(hi);
        expect(&r, 201, NULL);
        rfree(&r);
        close(lo);
        close(hi);
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

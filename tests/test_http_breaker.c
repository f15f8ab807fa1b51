/*
 * test_http_breaker.c - circuit breakers over throttled's HTTP API (doc/http-api.md), in the
 * program test_http (suite http, harness http_run.h) against a real daemon on a manual clock: a
 * breaker tripped, refused, probed and closed over HTTP and seen in shared memory; each bad
 * request a 4xx naming what was wrong; the tickets the daemon holds for HTTP clients bounded,
 * and given up (reported ignore) past their ttl and at a clean stop.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_run.h"
#include "throttle/throttle.h"

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

/* A clean stop reports every ticket the daemon still holds ignore: a probe handed out over HTTP
 * frees its place at once, not after probe_timeout; the daemon started again knows none of the
 * old ids (404). */
Test(http, breaker_stop_gives_probes_back)
{
        start(NULL, BRK_LIMS);
        thr_limiter *l = tdaemon_lim(&fx, 0, "brk");
        brk_call("s", "failure", "closed");
        brk_call("s", "failure", "open");
        cr_assert_eq(thr_clock_advance(fx.a, 11 * SEC), 0);
        struct resp r = brk_allow("brk", "s", 200, NULL);
        cr_assert(jbool(&r, "probe"), "%s", r.raw);
        struct thr_breaker_status st;
        cr_assert_eq(thr_breaker_stat(l, "s", 1, &st), 0);
        cr_assert_eq(st.probes_in_flight, 1);
        tdaemon_stop(&fx, 0);
        cr_assert_eq(thr_breaker_stat(l, "s", 1, &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_HALF_OPEN);
        cr_assert_eq(st.probes_in_flight, 0, "the stop gave the probe's place back");
        int i = tdaemon_start(&fx, NULL);
        tdaemon_wait_ready(&fx, i, 2);
        tdaemon_wait_log(&fx, i, "http: serving", 1);
        char body[256];
        snprintf(body, sizeof(body), "{\"ticket\":\"%s\",\"outcome\":\"success\"}",
                 json_string_value(json_object_get(r.j, "ticket")));
        must("POST", "/v1/limiters/brk/breaker/report", body, 404, "ENOENT");
        rfree(&r);
}

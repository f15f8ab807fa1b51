/*
 * http_breaker.c - the HTTP API's circuit breakers (doc/http-api.md): POST
 * /v1/limiters/{name}/breaker/allow and .../breaker/report, GET .../breaker?key=K
 * (thr_breaker_allow(3), thr_breaker_report(3), thr_breaker_stat(3)).
 *
 * A ticket holds pointers into the process that was handed it, so an HTTP client cannot hold
 * one: the daemon keeps it in its ticket table (http_api.c, the lease table's code) under a
 * random id, and reports it when the client reports the id. A ticket not reported within its
 * ttl is reported IGNORE by the daemon (a probe's place is freed at once instead of after
 * probe_timeout; nothing counts) and forgotten; its id then answers 404. The ttl is capped at
 * 21 x min(cooldown, probe_timeout): past that the library ignores any report (its period number
 * may have come round), so a longer one would only hold a slot.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

static const char *const F_ALLOW[] = {"key", "ttl_ms", NULL};
static const char *const F_REPORT[] = {"ticket", "outcome", NULL};

#define DEFAULT_TICKET_TTL_NS (60ull * 1000000000u)

static json_t *status_json(const struct thr_breaker_status *st)
{
        static const char *const names[] = {"closed", "open", "half-open"};
        return json_pack(
            "{s:s,s:o,s:o,s:o,s:o,s:o,s:o}", "state", st->state < 3 ? names[st->state] : "corrupt",
            "consecutive_failures", http_ju(st->consecutive_failures), "probes_in_flight",
            http_ju(st->probes_in_flight), "half_open_successes", http_ju(st->half_open_successes),
            "window_calls", http_ju(st->window_calls), "window_failures",
            http_ju(st->window_failures), "retry_after_ns", http_ju(st->retry_after_ns));
}

/* The answer to a breaker call on a limiter of another kind (409), or to another error. */
static void breaker_error(struct route *rt, thr_limiter *lim, int rc)
{
        static const char *const kinds[] = {"?", "gcra", "window", "semaphore", "budget"};
        struct thr_limiter_info in;
        if (rc == -EOPNOTSUPP && thr_limiter_info(lim, &in) == 0) {
                char msg[160];
                snprintf(msg, sizeof(msg), "limiter '%.64s' is a %s limiter, not a breaker",
                         rt->name, in.kind < 5 ? kinds[in.kind] : "?");
                http_error(rt->r.out, EOPNOTSUPP, msg);
        } else {
                http_error(rt->r.out, -rc, NULL);
        }
}

/* The ttl a ticket of LIM may be held for: the library's bound on a report, 21 x min(cooldown,
 * probe_timeout); 0 when the limiter cannot tell (not a breaker: the call will say so). */
static uint64_t ticket_bound(thr_limiter *lim)
{
        struct thr_limiter_info in;
        if (thr_limiter_info(lim, &in) < 0 || in.kind != THR_LIMITER_BREAKER)
                return 0;
        uint64_t span = in.reserved[0] < in.reserved[1] ? in.reserved[0] : in.reserved[1];
        return span > UINT64_MAX / 21 ? UINT64_MAX : span * 21;
}

/* Hand TK out: fill SLOT, answer 200 with its id and the status. */
static void allow_answer(struct route *rt, int slot, struct http_ticket *tk, uint64_t now,
                         const struct thr_breaker_status *st)
{
        char id[HTTP_ID_LEN + 1];
        http_ticket_fill(rt->api, slot, tk, id);
        json_t *o = status_json(st);
        json_object_set_new(o, "ticket", json_string(id));
        json_object_set_new(o, "probe", json_boolean(tk->t.probe != 0));
        json_object_set_new(o, "untracked", json_boolean(tk->t.flags & THR_BREAKER_UNTRACKED));
        json_object_set_new(o, "expires_in_ms", http_ju((tk->expires_ns - now) / 1000000u));
        http_ok(rt->r.out, 200, o);
}

static void post_allow(struct route *rt)
{
        struct http_ticket tk = {0};
        uint64_t ttl = 0, now = 0;
        if (http_fields(&rt->r, F_ALLOW) < 0 ||
            http_key(&rt->r, rt->r.o, "key", tk.key, &tk.len) < 0 ||
            http_ms(&rt->r, "ttl_ms", false, DEFAULT_TICKET_TTL_NS, &ttl) < 0 ||
            http_limiter(rt, &tk.lim) < 0)
                return;
        if (ttl == 0) {
                http_error(rt->r.out, EINVAL, "field 'ttl_ms': a ticket needs a ttl above 0");
                return;
        }
        int slot = http_held_take(rt->api, &rt->api->tickets);
        if (slot < 0) {
                http_error(rt->r.out, -slot,
                           slot == -ENOSPC ? "every breaker ticket the daemon may hold for HTTP "
                                             "clients is out (http_max_leases): report some"
                                           : "no random bytes for a ticket id");
                return;
        }
        struct thr_breaker_status st = {0};
        int rc;
        do
                rc = thr_breaker_allow(tk.lim, tk.key, tk.len, &tk.t, &st);
        while (http_again(rt, &tk.lim, rc));
        if (rc < 0) {
                http_held_free(rt->api, &rt->api->tickets, slot);
                if (rc == -EAGAIN)
                        http_error_with(rt->r.out, EAGAIN,
                                        st.state == THR_BREAKER_OPEN
                                            ? "the breaker is open: no call until it is half-open"
                                            : "the breaker is half-open and every probe is out",
                                        status_json(&st));
                else
                        breaker_error(rt, tk.lim, rc);
                return;
        }
        uint64_t bound = ticket_bound(tk.lim);
        snprintf(tk.limiter, sizeof(tk.limiter), "%s", rt->name);
        thr_clock_now(rt->api->a, &now);
        uint64_t life = bound && bound < ttl ? bound : ttl;
        tk.expires_ns = life > UINT64_MAX - now ? UINT64_MAX : now + life;
        allow_answer(rt, slot, &tk, now, &st);
}

static int outcome_of(struct route *rt, uint32_t *outcome)
{
        static const char *const names[] = {"success", "failure", "ignore"};
        json_t *j = json_object_get(rt->r.o, "outcome");
        for (uint32_t i = 0; json_is_string(j) && i < 3; i++)
                if (!strcmp(json_string_value(j), names[i])) {
                        *outcome = THR_OUTCOME_SUCCESS + i;
                        return 0;
                }
        char msg[160];
        if (!j)
                snprintf(msg, sizeof(msg), "missing field 'outcome' (success, failure or ignore)");
        else if (!json_is_string(j))
                snprintf(msg, sizeof(msg),
                         "field 'outcome': expected a string: success, failure "
                         "or ignore");
        else
                snprintf(msg, sizeof(msg),
                         "field 'outcome': '%.32s' is not success, failure or "
                         "ignore",
                         json_string_value(j));
        http_error(rt->r.out, EINVAL, msg);
        return -1;
}

/* The ticket the request names, spent into TK (its slot freed): 0, or -1 answered. */
static int ticket_take(struct route *rt, struct http_ticket *tk)
{
        struct http_api *api = rt->api;
        json_t *j = json_object_get(rt->r.o, "ticket");
        char msg[256];
        if (!json_is_string(j)) {
                http_error(rt->r.out, EINVAL,
                           j ? "field 'ticket': expected a string (allow's ticket)"
                             : "missing field 'ticket'");
                return -1;
        }
        const char *id = json_string_value(j);
        pthread_mutex_lock(&api->mu);
        int slot = http_held_find(&api->tickets, id), rc = 0;
        struct http_held *h = slot >= 0 ? &api->tickets.slots[slot] : NULL;
        uint64_t now = 0;
        thr_clock_now(api->a, &now);
        if (!h) {
                rc = -ENOENT;
                snprintf(msg, sizeof(msg),
                         "no ticket '%.40s' (reported already, or past its ttl and forgotten)", id);
        } else if (strcmp(h->tk.limiter, rt->name)) {
                rc = -EINVAL;
                snprintf(msg, sizeof(msg),
                         "ticket '%s' was handed out by limiter '%s', not '%.64s'", id,
                         h->tk.limiter, rt->name);
        } else if (h->tk.expires_ns <= now) {
                rc = -ENOENT;
                snprintf(msg, sizeof(msg),
                         "no ticket '%s' (past its ttl: reported ignore, and forgotten)", id);
                http_held_forget(&api->tickets, h);
        } else {
                *tk = h->tk;
                memset(h, 0, sizeof(*h));
        }
        pthread_mutex_unlock(&api->mu);
        if (rc < 0)
                http_error(rt->r.out, -rc, msg);
        return rc;
}

static void post_report(struct route *rt)
{
        struct http_ticket tk;
        uint32_t outcome = 0;
        if (http_fields(&rt->r, F_REPORT) < 0 || outcome_of(rt, &outcome) < 0 ||
            ticket_take(rt, &tk) < 0)
                return;
        int rc = thr_breaker_report(tk.lim, &tk.t, outcome);
        if (rc < 0) {
                http_error(rt->r.out, -rc, NULL);
                return;
        }
        struct thr_breaker_status st = {0};
        thr_breaker_stat(tk.lim, tk.key, tk.len, &st); /* what the report left (best effort) */
        json_t *o = status_json(&st);
        json_object_set_new(o, "counted", json_boolean(rc == 0));
        http_ok(rt->r.out, 200, o);
}

static void get_breaker(struct route *rt)
{
        const char *key;
        thr_limiter *lim;
        struct thr_breaker_status st;
        if (http_query_key(rt, &key) < 0 || http_limiter(rt, &lim) < 0)
                return;
        int rc;
        do
                rc = thr_breaker_stat(lim, key, strlen(key), &st);
        while (http_again(rt, &lim, rc));
        if (rc < 0)
                breaker_error(rt, lim, rc);
        else
                http_ok(rt->r.out, 200, status_json(&st));
}

void http_breaker_route(struct route *rt, const char *method, const char *verb)
{
        static const struct http_verb tab[] = {{"", "GET", get_breaker},
                                               {"allow", "POST", post_allow},
                                               {"report", "POST", post_report}};
        if (!http_route_verb(rt, method, verb, tab, sizeof(tab) / sizeof(tab[0])))
                http_error(rt->r.out, ENOENT, "no such route (see doc/http-api.md)");
}

/*
 * http_routes.c - the HTTP API's routes (doc/http-api.md): a request (method, path, query
 * arguments, JSON body) to a status and a JSON body, or to a wait the server completes.
 *
 * Nothing here blocks for a rate limit: a rate acquire takes its place with thr_limiter_reserve
 * and returns the time it is due (the server answers then, or gives the place back if the
 * client left). Waits in the kernel (a lease, a spend, a composed acquire with a timeout) are
 * returned as jobs for the server's waiter threads. Every call is the client library's public
 * one, so a client over HTTP and one in shared memory share each limit exactly.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

static const char *const F_TRY[] = {"key", "cost", NULL};
static const char *const F_ACQ[] = {"key", "cost", "timeout_ms", NULL};
static const char *const F_LEASE[] = {"key", "amount", "ttl_ms", "timeout_ms", "priority", NULL};
static const char *const F_HB[] = {"ttl_ms", NULL};
static const char *const F_SPEND[] = {"key", "cost", "timeout_ms", "priority", NULL};
static const char *const F_ADD[] = {"key", "amount", NULL};
static const char *const F_HOLD[] = {"key", "delay_ms", NULL};
static const char *const F_CAP[] = {"key", "tokens", NULL};
static const char *const F_FEEDBACK[] = {"key", "headers", "tokens", NULL};
static const char *const F_OVERLOAD[] = {"count", NULL};

#define DEFAULT_TTL_NS (60ull * 1000000000u)

/* ---------------------------------------------------------------- limiters */

static const char *kind_name(uint32_t kind)
{
        switch (kind) {
        case THR_LIMITER_GCRA:
                return "gcra";
        case THR_LIMITER_WINDOW:
                return "window";
        case THR_LIMITER_SEMAPHORE:
                return "semaphore";
        case THR_LIMITER_BUDGET:
                return "budget";
        case THR_LIMITER_BREAKER:
                return "breaker";
        default:
                return "unknown";
        }
}

/* The limiter of the route, or -1 with the error answered. */
int http_limiter(struct route *rt, thr_limiter **lim)
{
        int rc = http_lim_get(rt->api, rt->name, lim);
        if (rc == 0)
                return 0;
        char msg[160];
        snprintf(msg, sizeof(msg), "no limiter '%.64s'", rt->name);
        http_error(rt->r.out, -rc, rc == -ENOENT ? msg : NULL);
        return -1;
}

int http_again(struct route *rt, thr_limiter **lim, int rc)
{
        return rc == -EIDRM && http_lim_again(rt->api, rt->name, *lim, lim) == 0;
}

static json_t *info_json(const char *name, const struct thr_limiter_info *in)
{
        if (in->kind == THR_LIMITER_GCRA && in->reserved[0]) /* global: this host's share */
                return json_pack("{s:s,s:s,s:b,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "name", name, "kind",
                                 kind_name(in->kind), "serialized", 0, "rate", http_ju(in->rate),
                                 "period_ns", http_ju(in->period_ns), "burst", http_ju(in->burst),
                                 "initial", http_ju(in->initial), "leases", http_ju(in->leases),
                                 "level", http_ju(in->level), "share_ppm",
                                 http_ju(in->reserved[0]));
        return json_pack(
            "{s:s,s:s,s:b,s:o,s:o,s:o,s:o,s:o,s:o}", "name", name, "kind", kind_name(in->kind),
            "serialized", (in->flags & THR_LIMITER_SERIALIZED) != 0, "rate", http_ju(in->rate),
            "period_ns", http_ju(in->period_ns), "burst", http_ju(in->burst), "initial",
            http_ju(in->initial), "leases", http_ju(in->leases), "level", http_ju(in->level));
}

static int info_of(struct route *rt, thr_limiter **lim, struct thr_limiter_info *in)
{
        int rc;
        do
                rc = thr_limiter_info(*lim, in);
        while (http_again(rt, lim, rc));
        return rc;
}

static void get_one(struct route *rt)
{
        thr_limiter *lim;
        struct thr_limiter_info in;
        if (http_limiter(rt, &lim) < 0)
                return;
        int rc = info_of(rt, &lim, &in);
        if (rc < 0)
                http_error(rt->r.out, -rc, NULL);
        else
                http_ok(rt->r.out, 200, info_json(rt->name, &in));
}

static void get_all(struct route *rt)
{
        json_t *arr = json_array();
        pthread_mutex_lock(&rt->api->mu);
        size_t n = rt->api->nnames;
        char(*names)[THR_NAME_MAX + 1] = calloc(n + 1, sizeof(*names));
        if (names && n)
                memcpy(names, rt->api->names, n * sizeof(*names));
        pthread_mutex_unlock(&rt->api->mu);
        for (size_t i = 0; names && i < n; i++) {
                thr_limiter *lim;
                struct thr_limiter_info in;
                struct route one = *rt;
                one.name = names[i];
                if (http_lim_get(rt->api, names[i], &lim) == 0 && info_of(&one, &lim, &in) == 0)
                        json_array_append_new(arr, info_json(names[i], &in));
        }
        free(names);
        http_ok(rt->r.out, 200, json_pack("{s:o}", "limiters", arr));
}

/* ---------------------------------------------------------------- rate: try, acquire */

static json_t *result_json(const struct thr_result *res)
{
        return json_pack("{s:b,s:o,s:o,s:o,s:o}", "admitted", res->admitted != 0, "limit",
                         http_ju(res->limit), "remaining", http_ju(res->remaining),
                         "retry_after_ns", http_ju(res->retry_after_ns), "reset_after_ns",
                         http_ju(res->reset_after_ns));
}

static void rate_answer(struct http_out *out, const struct thr_result *res)
{
        http_ok(out, 200, result_json(res));
        if (!res->admitted)
                out->retry_after =
                    res->retry_after_ns ? (res->retry_after_ns + 999999999u) / 1000000000u : 1;
}

static void post_try(struct route *rt)
{
        char key[THR_KEY_MAX_LEN];
        size_t len = 0;
        uint64_t cost = 0;
        thr_limiter *lim;
        if (http_fields(&rt->r, F_TRY) < 0 || http_key(&rt->r, rt->r.o, "key", key, &len) < 0 ||
            http_u64(&rt->r, "cost", false, 1, UINT64_MAX >> 1, &cost) < 0 ||
            http_limiter(rt, &lim) < 0)
                return;
        struct thr_result res = {0};
        int rc;
        do
                rc = thr_limiter_try(lim, key, len, cost, &res);
        while (http_again(rt, &lim, rc));
        if (rc < 0)
                http_error(rt->r.out, -rc, NULL);
        else
                rate_answer(rt->r.out, &res);
}

/* The answer of a rate place that is due: admitted, with what a peek says is left. */
static void reserved_answer(struct http_out *out, thr_limiter *lim, const char *key, size_t len)
{
        struct thr_result res = {0};
        int rc = thr_limiter_try(lim, key, len, 0, &res);
        res.admitted = 1;
        res.retry_after_ns = 0;
        if (rc < 0 && rc != -EIDRM) {
                http_error(out, -rc, NULL);
                return;
        }
        http_ok(out, 200, result_json(&res));
}

static void post_acquire(struct route *rt)
{
        struct http_job *j = calloc(1, sizeof(*j));
        uint64_t cost = 0, timeout = 0;
        thr_limiter *lim;
        if (!j) {
                http_error(rt->r.out, ENOMEM, NULL);
                return;
        }
        if (http_fields(&rt->r, F_ACQ) < 0 ||
            http_key(&rt->r, rt->r.o, "key", j->keys[0], &j->lens[0]) < 0 ||
            http_u64(&rt->r, "cost", false, 1, UINT64_MAX >> 1, &cost) < 0 ||
            http_ms(&rt->r, "timeout_ms", false, UINT64_MAX, &timeout) < 0 ||
            http_limiter(rt, &lim) < 0) {
                free(j);
                return;
        }
        timeout = http_cap(rt->api, timeout);
        int rc;
        do
                rc = thr_limiter_reserve(lim, j->keys[0], j->lens[0], cost, timeout, &j->rv);
        while (http_again(rt, &lim, rc));
        if (rc == -EAGAIN) {
                char msg[160];
                snprintf(msg, sizeof(msg),
                         "the place would be due in %" PRIu64 " ns, past the timeout (%" PRIu64
                         " ns) or the limiter's max_reserve: nothing consumed",
                         j->rv.wait_ns, timeout);
                http_error_with(rt->r.out, ETIMEDOUT, msg,
                                json_pack("{s:o}", "retry_after_ns", http_ju(j->rv.wait_ns)));
        } else if (rc < 0) {
                http_error(rt->r.out, -rc, NULL);
        } else if (j->rv.wait_ns == 0) {
                reserved_answer(rt->r.out, lim, j->keys[0], j->lens[0]);
        } else {
                j->api = rt->api;
                j->kind = JOB_RESERVE;
                j->lims[0] = lim;
                rt->r.out->wait = HTTP_WAIT_TIMER;
                rt->r.out->due_ns = j->rv.due_ns;
                rt->r.out->job = j;
                return;
        }
        free(j);
}

/* ---------------------------------------------------------------- semaphores */

static void lease_answer(struct http_api *api, struct http_out *out, int slot,
                         const struct thr_lease *l, uint64_t ttl_ns)
{
        char id[HTTP_ID_LEN + 1];
        uint64_t now = 0;
        thr_clock_now(api->a, &now);
        http_lease_fill(api, slot, l, ttl_ns, id);
        uint64_t left = l->expires_ns > now ? l->expires_ns - now : 0;
        http_ok(out, 201,
                json_pack("{s:s,s:o,s:o,s:o}", "lease", id, "amount", http_ju(l->amount),
                          "expires_in_ms", http_ju(left / 1000000u), "waited_ns",
                          http_ju(l->waited_ns)));
}

static void post_lease(struct route *rt)
{
        struct http_job *j = calloc(1, sizeof(*j));
        uint64_t amount = 0, timeout = 0, prio = 0;
        if (!j) {
                http_error(rt->r.out, ENOMEM, NULL);
                return;
        }
        if (http_fields(&rt->r, F_LEASE) < 0 ||
            http_key(&rt->r, rt->r.o, "key", j->keys[0], &j->lens[0]) < 0 ||
            http_u64(&rt->r, "amount", false, 1, UINT32_MAX, &amount) < 0 ||
            http_ms(&rt->r, "ttl_ms", false, DEFAULT_TTL_NS, &j->ttl_ns) < 0 ||
            http_ms(&rt->r, "timeout_ms", false, 0, &timeout) < 0 ||
            http_u64(&rt->r, "priority", false, 0, THR_PRIORITY_MAX, &prio) < 0 ||
            http_limiter(rt, &j->lims[0]) < 0) {
                free(j);
                return;
        }
        j->prio = (uint32_t)prio;
        j->slot = http_held_take(rt->api, &rt->api->leases);
        if (j->slot < 0) {
                http_error(rt->r.out, -j->slot,
                           j->slot == -ENOSPC ? "every lease the daemon may hold for HTTP clients "
                                                "is held (http_max_leases)"
                                              : "no random bytes for a lease id");
                free(j);
                return;
        }
        j->api = rt->api;
        j->kind = JOB_LEASE;
        j->costs[0] = amount;
        j->timeout_ns = http_cap(rt->api, timeout);
        if (j->timeout_ns) {
                rt->r.out->wait = HTTP_WAIT_THREAD;
                rt->r.out->job = j;
                return;
        }
        struct thr_lease l;
        int rc;
        do
                rc = thr_sem_try(j->lims[0], j->keys[0], j->lens[0], (uint32_t)amount, j->ttl_ns,
                                 &l);
        while (http_again(rt, &j->lims[0], rc));
        if (rc < 0) {
                http_held_free(rt->api, &rt->api->leases, j->slot);
                http_error(rt->r.out, -rc, rc == -EAGAIN ? "the units do not fit now" : NULL);
        } else {
                lease_answer(rt->api, rt->r.out, j->slot, &l, j->ttl_ns);
        }
        free(j);
}

static void post_heartbeat(struct route *rt)
{
        uint64_t ttl = 0;
        if (http_fields(&rt->r, F_HB) < 0 || http_ms(&rt->r, "ttl_ms", false, 0, &ttl) < 0)
                return;
        struct http_api *api = rt->api;
        pthread_mutex_lock(&api->mu);
        int slot = http_held_find(&api->leases, rt->name), rc = -ENOENT;
        uint64_t now = 0, left = 0;
        if (slot >= 0) {
                struct http_held *l = &api->leases.slots[slot];
                rc = thr_sem_heartbeat(&l->lease, ttl ? ttl : l->ttl_ns);
                if (rc == -EKEYEXPIRED)
                        memset(l, 0, sizeof(*l));
                thr_clock_now(api->a, &now);
                if (rc == 0 && ttl)
                        l->ttl_ns = ttl;
                left = rc == 0 && l->lease.expires_ns > now ? l->lease.expires_ns - now : 0;
        }
        pthread_mutex_unlock(&api->mu);
        if (rc == -ENOENT)
                http_error(rt->r.out, ENOENT, "no such lease (released, or expired and forgotten)");
        else if (rc < 0)
                http_error(rt->r.out, -rc, NULL);
        else
                http_ok(rt->r.out, 200,
                        json_pack("{s:s,s:o}", "lease", rt->name, "expires_in_ms",
                                  http_ju(left / 1000000u)));
}

static void delete_lease(struct route *rt)
{
        struct http_api *api = rt->api;
        pthread_mutex_lock(&api->mu);
        int slot = http_held_find(&api->leases, rt->name), rc = -ENOENT;
        if (slot >= 0) {
                struct http_held *l = &api->leases.slots[slot];
                rc = thr_sem_release(&l->lease);
                if (rc != -ETIMEDOUT)
                        memset(l, 0, sizeof(*l));
        }
        pthread_mutex_unlock(&api->mu);
        if (rc == -ENOENT)
                http_error(rt->r.out, ENOENT, "no such lease (released, or expired and forgotten)");
        else if (rc < 0)
                http_error(rt->r.out, -rc, NULL);
        else
                http_ok(rt->r.out, 200, json_pack("{s:b}", "released", 1));
}

int http_query_key(struct route *rt, const char **key)
{
        *key = NULL;
        for (size_t i = 0; i < rt->nargs; i++) {
                if (strcmp(rt->args[i].name, "key")) {
                        char msg[160];
                        snprintf(msg, sizeof(msg), "unknown query argument '%.64s' (only key)",
                                 rt->args[i].name);
                        http_error(rt->r.out, EINVAL, msg);
                        return -1;
                }
                *key = rt->args[i].value;
        }
        if (!*key || !**key)
                http_error(rt->r.out, EINVAL, "missing query argument 'key' (?key=K)");
        else if (strlen(*key) > THR_KEY_MAX_LEN)
                http_error(rt->r.out, ENAMETOOLONG, "query argument 'key': longer than 104 bytes");
        else
                return 0;
        return -1;
}

static void get_sem(struct route *rt)
{
        const char *key;
        thr_limiter *lim;
        struct thr_sem_stat st;
        if (http_query_key(rt, &key) < 0 || http_limiter(rt, &lim) < 0)
                return;
        int rc;
        do
                rc = thr_sem_stat(lim, key, strlen(key), &st);
        while (http_again(rt, &lim, rc));
        if (rc < 0) {
                http_error(rt->r.out, -rc, NULL);
                return;
        }
        http_ok(rt->r.out, 200,
                json_pack("{s:o,s:o,s:I,s:o,s:o,s:o,s:o,s:o}", "max", http_ju(st.max), "held",
                          http_ju(st.held), "remainder", (json_int_t)st.remainder, "leases",
                          http_ju(st.leases), "pending", http_ju(st.pending), "pending_units",
                          http_ju(st.pending_units), "longest_pending_ns",
                          http_ju(st.longest_pending_ns), "level", http_ju(st.level)));
}

/* ---------------------------------------------------------------- budgets */

static json_t *budget_json(const struct thr_budget_result *res)
{
        return json_pack("{s:o,s:o,s:o,s:o}", "balance", http_ju(res->balance), "shortfall",
                         http_ju(res->shortfall), "waiters", http_ju(res->waiters), "waited_ns",
                         http_ju(res->waited_ns));
}

static void budget_answer(struct http_out *out, int rc, const struct thr_budget_result *res)
{
        if (rc == -EAGAIN || rc == -ETIMEDOUT)
                http_error_with(out, -rc,
                                rc == -EAGAIN ? "no budget: the balance is short (shortfall)"
                                              : "no budget within the timeout (shortfall)",
                                budget_json(res));
        else if (rc < 0)
                http_error(out, -rc, NULL);
        else
                http_ok(out, 200, budget_json(res));
}

static void post_spend(struct route *rt)
{
        struct http_job *j = calloc(1, sizeof(*j));
        uint64_t timeout = 0, prio = 0;
        if (!j) {
                http_error(rt->r.out, ENOMEM, NULL);
                return;
        }
        if (http_fields(&rt->r, F_SPEND) < 0 ||
            http_key(&rt->r, rt->r.o, "key", j->keys[0], &j->lens[0]) < 0 ||
            http_u64(&rt->r, "cost", true, 0, UINT64_MAX >> 1, &j->costs[0]) < 0 ||
            http_ms(&rt->r, "timeout_ms", false, 0, &timeout) < 0 ||
            http_u64(&rt->r, "priority", false, 0, THR_PRIORITY_MAX, &prio) < 0 ||
            http_limiter(rt, &j->lims[0]) < 0) {
                free(j);
                return;
        }
        j->api = rt->api;
        j->kind = JOB_SPEND;
        j->prio = (uint32_t)prio;
        j->timeout_ns = http_cap(rt->api, timeout);
        if (j->timeout_ns) {
                rt->r.out->wait = HTTP_WAIT_THREAD;
                rt->r.out->job = j;
                return;
        }
        struct thr_budget_result res = {0};
        int rc;
        do
                rc = thr_budget_spend(j->lims[0], j->keys[0], j->lens[0], j->costs[0], 0, &res);
        while (http_again(rt, &j->lims[0], rc));
        budget_answer(rt->r.out, rc, &res);
        free(j);
}

static void post_add(struct route *rt)
{
        char key[THR_KEY_MAX_LEN];
        size_t len = 0;
        uint64_t amount = 0;
        thr_limiter *lim;
        if (http_fields(&rt->r, F_ADD) < 0 || http_key(&rt->r, rt->r.o, "key", key, &len) < 0 ||
            http_u64(&rt->r, "amount", true, 0, UINT64_MAX >> 1, &amount) < 0 ||
            http_limiter(rt, &lim) < 0)
                return;
        struct thr_budget_result res = {0};
        int rc;
        do
                rc = thr_budget_add(lim, key, len, amount, &res);
        while (http_again(rt, &lim, rc));
        budget_answer(rt->r.out, rc, &res);
}

static void get_budget(struct route *rt)
{
        const char *key;
        thr_limiter *lim;
        struct thr_budget_stat st;
        if (http_query_key(rt, &key) < 0 || http_limiter(rt, &lim) < 0)
                return;
        int rc;
        do
                rc = thr_budget_stat(lim, key, strlen(key), &st);
        while (http_again(rt, &lim, rc));
        if (rc < 0) {
                http_error(rt->r.out, -rc, NULL);
                return;
        }
        http_ok(rt->r.out, 200,
                json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "balance", http_ju(st.balance),
                          "initial", http_ju(st.initial), "waiters", http_ju(st.waiters), "need",
                          http_ju(st.need), "head_need", http_ju(st.head_need),
                          "longest_pending_ns", http_ju(st.longest_pending_ns), "granted",
                          http_ju(st.granted)));
}

/* ---------------------------------------------------------------- a downstream's word */

/* The answer of a hold, cap or feedback: what a peek says now, and whether it was shortened. */
static void held_answer(struct http_out *out, int rc, const struct thr_result *res)
{
        if (rc < 0) {
                http_error(out, -rc, NULL);
                return;
        }
        json_t *o = result_json(res);
        json_object_set_new(o, "shortened", json_boolean(rc == 1));
        http_ok(out, 200, o);
}

static void post_hold(struct route *rt)
{
        char key[THR_KEY_MAX_LEN];
        size_t len = 0;
        uint64_t delay = 0;
        thr_limiter *lim;
        if (http_fields(&rt->r, F_HOLD) < 0 || http_key(&rt->r, rt->r.o, "key", key, &len) < 0 ||
            http_ms(&rt->r, "delay_ms", true, 0, &delay) < 0 || http_limiter(rt, &lim) < 0)
                return;
        struct thr_result res = {0};
        int rc;
        do
                rc = thr_limiter_hold(lim, key, len, delay, &res);
        while (http_again(rt, &lim, rc));
        held_answer(rt->r.out, rc, &res);
}

static void post_cap(struct route *rt)
{
        char key[THR_KEY_MAX_LEN];
        size_t len = 0;
        uint64_t tokens = 0;
        thr_limiter *lim;
        if (http_fields(&rt->r, F_CAP) < 0 || http_key(&rt->r, rt->r.o, "key", key, &len) < 0 ||
            http_u64(&rt->r, "tokens", true, 0, UINT64_MAX >> 1, &tokens) < 0 ||
            http_limiter(rt, &lim) < 0)
                return;
        struct thr_result res = {0};
        int rc;
        do
                rc = thr_limiter_cap(lim, key, len, tokens, &res);
        while (http_again(rt, &lim, rc));
        held_answer(rt->r.out, rc, &res);
}

/* {"key", "headers": {"Retry-After": "30", ...}, "tokens" = false}: each header read with
 * thr_feedback_header at the request's arrival, then applied; a malformed value is a 400 naming
 * the header, and nothing is applied. */
static void post_feedback(struct route *rt)
{
        char key[THR_KEY_MAX_LEN], msg[256];
        size_t len = 0;
        thr_limiter *lim;
        if (http_fields(&rt->r, F_FEEDBACK) < 0 || http_key(&rt->r, rt->r.o, "key", key, &len) < 0)
                return;
        json_t *hs = json_object_get(rt->r.o, "headers");
        json_t *tk = json_object_get(rt->r.o, "tokens");
        if (!json_is_object(hs)) {
                http_error(rt->r.out, EINVAL,
                           hs ? "field 'headers': expected an object of header names to values"
                              : "missing field 'headers'");
                return;
        }
        if (tk && !json_is_boolean(tk) && !json_is_null(tk)) {
                http_error(rt->r.out, EINVAL, "field 'tokens': expected true or false");
                return;
        }
        struct thr_feedback fb;
        thr_feedback_init(&fb);
        const char *name;
        json_t *v;
        json_object_foreach(hs, name, v)
        {
                if (!json_is_string(v)) {
                        snprintf(msg, sizeof(msg), "header '%.64s': expected a string value", name);
                        http_error(rt->r.out, EINVAL, msg);
                        return;
                }
                int rc = thr_feedback_header(&fb, name, strlen(name), json_string_value(v),
                                             json_string_length(v), 0);
                if (rc < 0) {
                        snprintf(msg, sizeof(msg), "header '%.64s': %s: '%.64s'", name,
                                 rc == -ERANGE  ? "a number too large"
                                 : rc == -E2BIG ? "more than 16 list members"
                                                : "not a value this header takes",
                                 json_string_value(v));
                        http_error(rt->r.out, EINVAL, msg);
                        return;
                }
        }
        if (http_limiter(rt, &lim) < 0)
                return;
        unsigned flags = json_is_true(tk) ? THR_FEEDBACK_USE_TOKENS : 0;
        struct thr_result res = {0};
        int rc;
        do
                rc = thr_feedback_apply(lim, key, len, &fb, flags, &res);
        while (http_again(rt, &lim, rc));
        held_answer(rt->r.out, rc, &res);
}

/* {"count" = 1}: calls the client's downstream refused for overload (thr_limiter_overload), the
 * signal of an adaptive limiter; counted in this server thread's own row. */
static void post_overload(struct route *rt)
{
        uint64_t count = 0;
        thr_limiter *lim;
        if (http_fields(&rt->r, F_OVERLOAD) < 0 ||
            http_u64(&rt->r, "count", false, 1, UINT64_MAX >> 1, &count) < 0 ||
            http_limiter(rt, &lim) < 0)
                return;
        int rc;
        do
                rc = thr_limiter_overload(lim, count);
        while (http_again(rt, &lim, rc));
        if (rc < 0)
                http_error(rt->r.out, -rc, NULL);
        else
                http_ok(rt->r.out, 200, json_pack("{s:o}", "recorded", http_ju(count)));
}

/* ---------------------------------------------------------------- the waits */

void http_job_run(struct http_job *j, struct http_out *out, bool (*gone)(void *), void *arg)
{
        memset(out, 0, sizeof(*out));
        if (j->kind == JOB_LEASE) {
                struct thr_lease l;
                struct thr_wait_opts w = {.priority = j->prio, .timeout_ns = j->timeout_ns};
                int rc = thr_sem_acquire_opts(j->lims[0], j->keys[0], j->lens[0],
                                              (uint32_t)j->costs[0], j->ttl_ns, &w, &l);
                if (rc == 0 && gone && gone(arg)) {
                        thr_sem_release(&l); /* its client left: nobody knows its id */
                        rc = -ECONNABORTED;
                }
                if (rc < 0) {
                        http_held_free(j->api, &j->api->leases, j->slot);
                        http_error(out, -rc,
                                   rc == -ETIMEDOUT   ? "not granted within the timeout"
                                   : rc == -EBUSY     ? "the key's queue is full (max_waiters)"
                                   : rc == -ECANCELED ? "dropped from the key's full queue for "
                                                        "another acquire (on_queue_full)"
                                                      : NULL);
                } else {
                        lease_answer(j->api, out, j->slot, &l, j->ttl_ns);
                }
        } else if (j->kind == JOB_SPEND) {
                struct thr_budget_result res = {0};
                struct thr_wait_opts w = {.priority = j->prio, .timeout_ns = j->timeout_ns};
                int rc = thr_budget_spend_opts(j->lims[0], j->keys[0], j->lens[0], j->costs[0], &w,
                                               &res);
                budget_answer(out, rc, &res);
        } else if (j->kind == JOB_COMPOSE || j->kind == JOB_GROUP) {
                http_compose_run(j, out);
        } else {
                http_error(out, EINVAL, "not a job for a waiter thread");
        }
        free(j);
}

/*
 * Give back the place RV of a wait whose client left. thr_reservation_cancel gives a place back
 * only while it is the key's last (nothing stacked on it): waiters that leave in another order
 * than newest first would keep theirs. A kept place is remembered, and tried again after every
 * place given back (that may make it the last), until it is given back or due (then it is used
 * up: a place due is never given back). Under API->mu.
 */
static void give_back(struct http_api *api, struct thr_reservation *rv)
{
        if (thr_reservation_cancel(rv) != 1) {
                uint64_t now = 0;
                thr_clock_now(api->a, &now);
                if (rv->due_ns <= now || rv->cost == 0)
                        return; /* used up, or not a place (given back already) */
                if (api->nkept == api->capkept) {
                        size_t cap = api->capkept ? 2 * api->capkept : 16;
                        struct thr_reservation *k = realloc(api->kept, cap * sizeof(*k));
                        if (!k)
                                return; /* the place stays unused: it comes back when due */
                        api->kept = k;
                        api->capkept = cap;
                }
                api->kept[api->nkept++] = *rv;
                return;
        }
        for (bool again = true; again;) { /* each place given back may free another */
                again = false;
                uint64_t now = 0;
                thr_clock_now(api->a, &now);
                for (size_t i = 0; i < api->nkept;) {
                        int rc =
                            api->kept[i].due_ns <= now ? 0 : thr_reservation_cancel(&api->kept[i]);
                        if (rc == 1 || api->kept[i].due_ns <= now) {
                                api->kept[i] = api->kept[--api->nkept];
                                again |= rc == 1;
                        } else {
                                i++;
                        }
                }
        }
}

void http_job_timer(struct http_job *j, bool due, struct http_out *out)
{
        memset(out, 0, sizeof(*out));
        if (due) {
                reserved_answer(out, j->lims[0], j->keys[0], j->lens[0]);
        } else {
                pthread_mutex_lock(&j->api->mu);
                give_back(j->api, &j->rv);
                pthread_mutex_unlock(&j->api->mu);
                http_error_status(out, 503, EBUSY, "the wait was abandoned: place given back");
        }
        free(j);
}

void http_job_drop(struct http_job *j)
{
        if (!j)
                return;
        if (j->kind == JOB_LEASE) {
                http_held_free(j->api, &j->api->leases, j->slot);
        } else if (j->kind == JOB_RESERVE) {
                pthread_mutex_lock(&j->api->mu);
                give_back(j->api, &j->rv);
                pthread_mutex_unlock(&j->api->mu);
        }
        free(j);
}

/* ---------------------------------------------------------------- routing */

bool http_route_verb(struct route *rt, const char *method, const char *verb,
                     const struct http_verb *tab, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                if (strcmp(tab[i].verb, verb))
                        continue;
                if (strcmp(tab[i].method, method)) {
                        rt->r.out->allow = tab[i].method;
                        http_error_status(rt->r.out, 405, EINVAL,
                                          "method not allowed on this route");
                        return true;
                }
                tab[i].fn(rt);
                return true;
        }
        return false;
}

static void route_limiter(struct route *rt, const char *method, const char *verb,
                          struct http_out *out)
{
        static const struct http_verb tab[] = {{"", "GET", get_one},
                                               {"try", "POST", post_try},
                                               {"acquire", "POST", post_acquire},
                                               {"leases", "POST", post_lease},
                                               {"sem", "GET", get_sem},
                                               {"spend", "POST", post_spend},
                                               {"add", "POST", post_add},
                                               {"budget", "GET", get_budget},
                                               {"hold", "POST", post_hold},
                                               {"cap", "POST", post_cap},
                                               {"feedback", "POST", post_feedback},
                                               {"overload", "POST", post_overload}};
        if (http_route_verb(rt, method, verb, tab, sizeof(tab) / sizeof(tab[0])))
                return;
        http_error(out, ENOENT,
                   !strcmp(verb, "serial") || !strcmp(verb, "begin") || !strcmp(verb, "end")
                       ? "serialized windows are not served over HTTP (a hold belongs to a thread)"
                       : "no such route (see doc/http-api.md)");
}

/* PATH's segments after "/v1/" into SEG (at most 4, each NUL-terminated in BUF): their count, or
 * -1 when PATH is not /v1/... or has more. */
static int split_path(const char *path, char *buf, size_t len, char **seg)
{
        if (strncmp(path, "/v1/", 4) || strlen(path) >= len)
                return -1;
        snprintf(buf, len, "%s", path + 4);
        int n = 0;
        for (char *s = buf, *e; s; s = e ? e + 1 : NULL) {
                e = strchr(s, '/');
                if (e)
                        *e = '\0';
                if (n == 4 || !*s)
                        return -1;
                seg[n++] = s;
        }
        return n;
}

static bool is(const char *m, const char *want, struct http_out *out)
{
        if (!strcmp(m, want))
                return true;
        out->allow = want;
        http_error_status(out, 405, EINVAL, "method not allowed on this route");
        return false;
}

static void dispatch(struct route *rt, const char *method, char **seg, int n)
{
        struct http_out *out = rt->r.out;
        if (n >= 1 && !strcmp(seg[0], "limiters")) {
                if (n == 1) {
                        if (is(method, "GET", out))
                                get_all(rt);
                        return;
                }
                rt->name = seg[1];
                if (n >= 3 && !strcmp(seg[2], "breaker")) {
                        http_breaker_route(rt, method, n == 4 ? seg[3] : "");
                        return;
                }
                if (n <= 3) {
                        route_limiter(rt, method, n == 3 ? seg[2] : "", out);
                        return;
                }
        } else if (n >= 2 && !strcmp(seg[0], "leases") && n <= 3) {
                rt->name = seg[1];
                if (n == 2 && is(method, "DELETE", out))
                        delete_lease(rt);
                else if (n == 3 && !strcmp(seg[2], "heartbeat") && is(method, "POST", out))
                        post_heartbeat(rt);
                else if (n == 3 && strcmp(seg[2], "heartbeat"))
                        http_error(out, ENOENT, "no such route (see doc/http-api.md)");
                return;
        } else if (n == 2 && !strcmp(seg[0], "compose")) {
                if ((!strcmp(seg[1], "try") || !strcmp(seg[1], "acquire")) &&
                    is(method, "POST", out))
                        http_compose_post(rt, false, !strcmp(seg[1], "acquire"));
                else if (strcmp(seg[1], "try") && strcmp(seg[1], "acquire"))
                        http_error(out, ENOENT,
                                   !strcmp(seg[1], "refund")
                                       ? "composed refunds are not served over HTTP (tickets)"
                                       : "no such route (see doc/http-api.md)");
                return;
        } else if (n == 3 && !strcmp(seg[0], "groups")) {
                rt->name = seg[1];
                if ((!strcmp(seg[2], "try") || !strcmp(seg[2], "acquire")) &&
                    is(method, "POST", out))
                        http_compose_post(rt, true, !strcmp(seg[2], "acquire"));
                else if (strcmp(seg[2], "try") && strcmp(seg[2], "acquire"))
                        http_error(out, ENOENT, "no such route (see doc/http-api.md)");
                return;
        } else if (n >= 1 && !strcmp(seg[0], "peers")) {
                http_error(out, ENOENT, "peers are not served over HTTP");
                return;
        }
        http_error(out, ENOENT, "no such route (see doc/http-api.md)");
}

void http_api_handle(struct http_api *api, const char *method, const char *path,
                     const struct http_arg *args, size_t n, const char *body, size_t len,
                     struct http_out *out)
{
        memset(out, 0, sizeof(*out));
        char buf[512], *seg[4];
        struct route rt = {.api = api, .r = {.out = out}, .args = args, .nargs = n};
        int nseg = split_path(path, buf, sizeof(buf), seg);
        if (nseg < 0) {
                http_error(out, ENOENT, "no such route: the API is under /v1/ (doc/http-api.md)");
                return;
        }
        if (len) {
                json_error_t e;
                rt.r.o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
                if (!rt.r.o || !json_is_object(rt.r.o)) {
                        char msg[320];
                        if (rt.r.o)
                                snprintf(msg, sizeof(msg), "the body must be a JSON object");
                        else
                                snprintf(msg, sizeof(msg),
                                         "malformed JSON: %s (line %d, column %d)", e.text, e.line,
                                         e.column);
                        json_decref(rt.r.o);
                        http_error(out, EINVAL, msg);
                        return;
                }
        } else {
                rt.r.o = json_object();
        }
        dispatch(&rt, method, seg, nseg);
        json_decref(rt.r.o);
}

/*
 * http_api.c - the HTTP request core's plumbing: errors as JSON, strict field checks (jansson),
 * the cache of limiter and group handles, and the table of leases held for HTTP clients.
 *
 * Handles: every decision goes through the client library's public calls on a handle opened by
 * name (thr_limiter_open) and cached. A reload that removes a limiter makes its handle answer
 * -EIDRM; the name is then looked up again (a limiter configured again under the name gets a
 * new handle). A replaced handle is never closed while the daemon serves: another thread may be
 * inside a call on it (thr_limiter_close requires none is); they are closed by http_api_free,
 * after every thread has stopped. Their number grows by one per removal seen, which reloads
 * bound.
 *
 * Leases and breaker tickets: held by the daemon's process for a remote client (thr_sem_acquire,
 * thr_breaker_allow here), each in a bounded table of its own (http_max_leases slots), named by
 * 128 random bits. The arena knows them as this process's: a lease not heartbeated expires by
 * its TTL exactly as a shared-memory lease does, and the slot is forgotten when the next lease
 * is taken (or answered 410 when its id is used). A ticket not reported within its ttl is
 * reported IGNORE (a probe's place is freed, nothing counts) and forgotten the same way.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "config_internal.h"
#include "http_internal.h"

/* ---------------------------------------------------------------- errors */

static unsigned status_of(int err)
{
        switch (err) {
        case EINVAL:
        case ENAMETOOLONG:
                return 400;
        case EACCES:
                return 401;
        case ENOENT:
                return 404;
        case EOPNOTSUPP:
        case EDEADLK:
        case EEXIST:
        case EALREADY:
                return 409;
        case EIDRM:
        case EKEYEXPIRED:
                return 410;
        case EMSGSIZE:
                return 413;
        case ERANGE:
        case EOVERFLOW:
                return 422;
        case EAGAIN:
        case ETIMEDOUT:
                return 429;
        case ENOSPC:
        case ENOBUFS:
        case EUSERS:
        case EBUSY:
        case ECANCELED:
                return 503;
        default:
                return 500;
        }
}

json_t *http_ju(uint64_t v)
{
        return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

void http_ok(struct http_out *out, unsigned status, json_t *o)
{
        out->status = status;
        out->body = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!out->body) { /* out of memory: a fixed answer */
                out->status = 500;
                out->body = strdup("{\"error\":\"ENOMEM\",\"errno\":12,\"message\":\"out of "
                                   "memory\"}");
        }
}

static void error_body(struct http_out *out, unsigned status, int err, const char *message,
                       json_t *extra)
{
        const char *name = strerrorname_np(err);
        json_t *o = extra ? extra : json_object();
        json_object_set_new(o, "error", json_string(name ? name : "EIO"));
        json_object_set_new(o, "errno", json_integer(err));
        json_t *m = message ? json_string(message) : NULL;
        if (!m) /* none, or it quoted a client's bytes that are not UTF-8 */
                m = json_string(thr_strerror(-err));
        json_object_set_new(o, "message", m);
        http_ok(out, status, o);
}

void http_error_status(struct http_out *out, unsigned status, int err, const char *message)
{
        error_body(out, status, err, message, NULL);
}

void http_error_with(struct http_out *out, int err, const char *message, json_t *extra)
{
        uint64_t ra = 0;
        json_t *v = json_object_get(extra, "retry_after_ns");
        if ((err == EAGAIN || err == ETIMEDOUT) && json_is_integer(v) && json_integer_value(v) > 0)
                ra = ((uint64_t)json_integer_value(v) + 999999999u) / 1000000000u;
        error_body(out, status_of(err), err, message, extra); /* consumes EXTRA */
        out->retry_after = ra;
}

void http_error(struct http_out *out, int err, const char *message)
{
        error_body(out, status_of(err), err, message, NULL);
}

/* ---------------------------------------------------------------- fields */

__attribute__((format(printf, 2, 3))) static int bad(struct http_req *r, const char *fmt, ...)
{
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        http_error(r->out, EINVAL, msg);
        return -1;
}

int http_fields(struct http_req *r, const char *const *allowed)
{
        const char *k;
        json_t *v;
        json_object_foreach(r->o, k, v)
        {
                size_t i = 0;
                while (allowed[i] && strcmp(allowed[i], k))
                        i++;
                if (allowed[i])
                        continue;
                char list[256] = "";
                for (size_t j = 0; allowed[j]; j++)
                        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                                 j ? ", " : "", allowed[j]);
                return bad(r, "unknown field '%.64s' (this route takes: %s)", k,
                           *list ? list : "no field");
        }
        return 0;
}

int http_u64(struct http_req *r, const char *name, bool required, uint64_t dflt, uint64_t max,
             uint64_t *v)
{
        json_t *j = json_object_get(r->o, name);
        if (!j || json_is_null(j)) {
                if (required)
                        return bad(r, "missing field '%s'", name);
                *v = dflt;
                return 0;
        }
        if (!json_is_integer(j))
                return bad(r, "field '%s': expected an integer", name);
        json_int_t x = json_integer_value(j);
        if (x < 0 || (uint64_t)x > max)
                return bad(r, "field '%s': %" PRId64 " is out of range (0 to %" PRIu64 ")", name,
                           (int64_t)x, max);
        *v = (uint64_t)x;
        return 0;
}

int http_key(struct http_req *r, json_t *o, const char *name, char *buf, size_t *len)
{
        json_t *j = json_object_get(o, name);
        if (!j)
                return bad(r, "missing field '%s'", name);
        if (!json_is_string(j))
                return bad(r, "field '%s': expected a string", name);
        size_t n = json_string_length(j);
        if (n == 0)
                return bad(r, "field '%s': a key is 1 to %d bytes, not empty", name,
                           THR_KEY_MAX_LEN);
        if (n > THR_KEY_MAX_LEN) {
                char msg[160];
                snprintf(msg, sizeof(msg), "field '%s': a key is at most %d bytes, not %zu", name,
                         THR_KEY_MAX_LEN, n);
                http_error(r->out, ENAMETOOLONG, msg);
                return -1;
        }
        memcpy(buf, json_string_value(j), n);
        *len = n;
        return 0;
}

uint64_t http_cap(const struct http_api *api, uint64_t ns)
{
        return ns < api->max_wait_ns ? ns : api->max_wait_ns;
}

int http_ms(struct http_req *r, const char *name, bool required, uint64_t dflt_ns, uint64_t *ns)
{
        uint64_t ms = 0;
        json_t *j = json_object_get(r->o, name);
        if (!j || json_is_null(j)) {
                if (required)
                        return bad(r, "missing field '%s'", name);
                *ns = dflt_ns;
                return 0;
        }
        if (http_u64(r, name, true, 0, UINT64_MAX / 1000000u, &ms) < 0)
                return -1;
        *ns = ms * 1000000u;
        return 0;
}

/* ---------------------------------------------------------------- handles */

static int retire(struct http_api *api, void *h)
{
        if (api->nretired == api->capretired) {
                size_t cap = api->capretired ? api->capretired * 2 : 16;
                void **n = realloc(api->retired, cap * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                api->retired = n;
                api->capretired = cap;
        }
        api->retired[api->nretired++] = h;
        return 0;
}

static struct http_lim *lim_find(struct http_api *api, const char *name)
{
        for (size_t i = 0; i < api->nlims; i++)
                if (!strcmp(api->lims[i].name, name))
                        return &api->lims[i];
        return NULL;
}

int http_lim_get(struct http_api *api, const char *name, thr_limiter **out)
{
        if (!config_name_ok(name))
                return -ENOENT;
        pthread_mutex_lock(&api->mu);
        struct http_lim *e = lim_find(api, name);
        int rc = 0;
        if (e) {
                *out = e->lim;
        } else if (api->nlims == api->caplims && api->caplims >= 65536) {
                rc = -ENOSPC; /* never: an arena has at most 65536 limiters */
        } else if ((rc = thr_limiter_open(api->a, name, out)) == 0) {
                if (api->nlims == api->caplims) {
                        size_t cap = api->caplims ? api->caplims * 2 : 16;
                        struct http_lim *n = realloc(api->lims, cap * sizeof(*n));
                        if (!n) {
                                thr_limiter_close(*out);
                                pthread_mutex_unlock(&api->mu);
                                return -ENOMEM;
                        }
                        api->lims = n;
                        api->caplims = cap;
                }
                e = &api->lims[api->nlims++];
                snprintf(e->name, sizeof(e->name), "%s", name);
                e->lim = *out;
        }
        pthread_mutex_unlock(&api->mu);
        return rc;
}

int http_lim_again(struct http_api *api, const char *name, thr_limiter *old, thr_limiter **out)
{
        pthread_mutex_lock(&api->mu);
        struct http_lim *e = lim_find(api, name);
        int rc = -EIDRM;
        if (e && e->lim != old) {
                *out = e->lim; /* another thread found the new one */
                rc = 0;
        } else if (e && thr_limiter_open(api->a, name, out) == 0) {
                if (retire(api, old) == 0) {
                        e->lim = *out;
                        rc = 0;
                } else {
                        thr_limiter_close(*out);
                }
        }
        pthread_mutex_unlock(&api->mu);
        return rc;
}

static struct http_grp *grp_find(struct http_api *api, const char *name)
{
        for (size_t i = 0; i < api->ngrps; i++)
                if (!strcmp(api->grps[i].name, name))
                        return &api->grps[i];
        return NULL;
}

int http_grp_get(struct http_api *api, const char *name, thr_group **out)
{
        if (!config_name_ok(name))
                return -ENOENT;
        pthread_mutex_lock(&api->mu);
        struct http_grp *e = grp_find(api, name);
        int rc = 0;
        if (e) {
                *out = e->grp;
        } else if ((rc = thr_group_open(api->a, name, out)) == 0) {
                if (api->ngrps == api->capgrps) {
                        size_t cap = api->capgrps ? api->capgrps * 2 : 8;
                        struct http_grp *n = realloc(api->grps, cap * sizeof(*n));
                        if (!n) {
                                thr_group_close(*out);
                                pthread_mutex_unlock(&api->mu);
                                return -ENOMEM;
                        }
                        api->grps = n;
                        api->capgrps = cap;
                }
                e = &api->grps[api->ngrps++];
                snprintf(e->name, sizeof(e->name), "%s", name);
                e->grp = *out;
        }
        pthread_mutex_unlock(&api->mu);
        return rc;
}

int http_grp_again(struct http_api *api, const char *name, thr_group *old, thr_group **out)
{
        pthread_mutex_lock(&api->mu);
        struct http_grp *e = grp_find(api, name);
        int rc = -EIDRM;
        if (e && e->grp != old) {
                *out = e->grp;
                rc = 0;
        } else if (e && thr_group_open(api->a, name, out) == 0) {
                if (retire(api, (void *)((uintptr_t)old | 1)) == 0) { /* bit 0: a group */
                        e->grp = *out;
                        rc = 0;
                } else {
                        thr_group_close(*out);
                }
        }
        pthread_mutex_unlock(&api->mu);
        return rc;
}

/* ---------------------------------------------------------------- leases and tickets */

static uint64_t held_due(const struct http_table *t, const struct http_held *h)
{
        return t->kind == HTTP_HELD_LEASE ? h->lease.expires_ns : h->tk.expires_ns;
}

void http_held_forget(const struct http_table *t, struct http_held *h)
{
        if (h->state == 2 && t->kind == HTTP_HELD_LEASE)
                thr_sem_release(&h->lease); /* an expired one: frees what is not reclaimed yet */
        else if (h->state == 2)
                thr_breaker_report(h->tk.lim, &h->tk.t, THR_OUTCOME_IGNORE); /* a probe's place */
        memset(h, 0, sizeof(*h));
}

/* Forget the entries whose time has passed. Under api->mu. */
static void held_sweep(struct http_api *api, struct http_table *t)
{
        uint64_t now = 0;
        thr_clock_now(api->a, &now);
        for (uint32_t i = 0; i < t->max; i++)
                if (t->slots[i].state == 2 && held_due(t, &t->slots[i]) <= now)
                        http_held_forget(t, &t->slots[i]);
}

int http_held_take(struct http_api *api, struct http_table *t)
{
        unsigned char rnd[HTTP_ID_LEN / 2];
        for (size_t got = 0; got < sizeof(rnd);) {
                ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);
                if (n < 0 && errno != EINTR)
                        return -errno;
                got += n > 0 ? (size_t)n : 0;
        }
        int rc = -ENOSPC;
        pthread_mutex_lock(&api->mu);
        held_sweep(api, t);
        for (uint32_t i = 0; i < t->max && rc < 0; i++) {
                struct http_held *h = &t->slots[i];
                if (h->state != 0)
                        continue;
                h->state = 1;
                for (size_t k = 0; k < sizeof(rnd); k++)
                        snprintf(h->id + 2 * k, 3, "%02x", rnd[k]);
                rc = (int)i;
        }
        pthread_mutex_unlock(&api->mu);
        return rc;
}

void http_lease_fill(struct http_api *api, int slot, const struct thr_lease *lease, uint64_t ttl_ns,
                     char *id)
{
        pthread_mutex_lock(&api->mu);
        struct http_held *l = &api->leases.slots[slot];
        l->lease = *lease;
        l->ttl_ns = ttl_ns;
        l->state = 2;
        memcpy(id, l->id, HTTP_ID_LEN + 1);
        pthread_mutex_unlock(&api->mu);
}

void http_ticket_fill(struct http_api *api, int slot, const struct http_ticket *tk, char *id)
{
        pthread_mutex_lock(&api->mu);
        struct http_held *h = &api->tickets.slots[slot];
        h->tk = *tk;
        h->state = 2;
        memcpy(id, h->id, HTTP_ID_LEN + 1);
        pthread_mutex_unlock(&api->mu);
}

void http_held_free(struct http_api *api, struct http_table *t, int slot)
{
        pthread_mutex_lock(&api->mu);
        memset(&t->slots[slot], 0, sizeof(t->slots[slot]));
        pthread_mutex_unlock(&api->mu);
}

int http_held_find(const struct http_table *t, const char *id)
{
        if (strlen(id) != HTTP_ID_LEN || id[strspn(id, "0123456789abcdef")])
                return -ENOENT;
        for (uint32_t i = 0; i < t->max; i++)
                if (t->slots[i].state == 2 && !strcmp(t->slots[i].id, id))
                        return (int)i;
        return -ENOENT;
}

/* ---------------------------------------------------------------- life */

struct http_api *http_api_new(thr_arena *a, uint32_t max_leases, uint64_t max_wait_ns)
{
        struct http_api *api = calloc(1, sizeof(*api));
        if (!api)
                return NULL;
        api->leases = (struct http_table){HTTP_HELD_LEASE,
                                          calloc(max_leases, sizeof(struct http_held)), max_leases};
        api->tickets = (struct http_table){
            HTTP_HELD_TICKET, calloc(max_leases, sizeof(struct http_held)), max_leases};
        if (!api->leases.slots || !api->tickets.slots) {
                free(api->leases.slots);
                free(api->tickets.slots);
                free(api);
                return NULL;
        }
        api->a = a;
        api->max_wait_ns = max_wait_ns;
        pthread_mutex_init(&api->mu, NULL);
        return api;
}

void http_api_set_names(struct http_api *api, const struct config *cfg)
{
        char(*names)[THR_NAME_MAX + 1] = calloc(cfg->nlimiters + 1, sizeof(*names));
        if (!names)
                return;
        for (size_t i = 0; i < cfg->nlimiters; i++)
                snprintf(names[i], sizeof(names[i]), "%s", cfg->limiters[i].name);
        pthread_mutex_lock(&api->mu);
        free(api->names);
        api->names = names;
        api->nnames = cfg->nlimiters;
        pthread_mutex_unlock(&api->mu);
}

void http_api_free(struct http_api *api)
{
        if (!api)
                return;
        for (uint32_t i = 0; i < api->leases.max; i++) {
                http_held_forget(&api->leases, &api->leases.slots[i]);
                http_held_forget(&api->tickets, &api->tickets.slots[i]);
        }
        for (size_t i = 0; i < api->nlims; i++)
                thr_limiter_close(api->lims[i].lim);
        for (size_t i = 0; i < api->ngrps; i++)
                thr_group_close(api->grps[i].grp);
        for (size_t i = 0; i < api->nretired; i++) {
                uintptr_t p = (uintptr_t)api->retired[i];
                if (p & 1)
                        thr_group_close((thr_group *)(p & ~(uintptr_t)1));
                else
                        thr_limiter_close((thr_limiter *)p);
        }
        pthread_mutex_destroy(&api->mu);
        free(api->kept);
        free(api->retired);
        free(api->lims);
        free(api->grps);
        free(api->names);
        free(api->leases.slots);
        free(api->tickets.slots);
        free(api);
}

/*
 * http_internal.h - what the HTTP request core's files share (http_api.c: errors, JSON
 * fields, the limiter and group caches, the tables of leases and breaker tickets; http_routes.c:
 * the routes and their waits; http_compose.c, http_breaker.c: theirs). Nothing else includes it.
 */
#ifndef THR_DAEMON_HTTP_INTERNAL_H
#define THR_DAEMON_HTTP_INTERNAL_H

#include <jansson.h>
#include <pthread.h>

#include "http.h"
#include "shm.h"

#define HTTP_ID_LEN 32 /* a lease's or a ticket's id: 128 random bits in hex */

struct http_lim {
        char name[THR_NAME_MAX + 1];
        thr_limiter *lim;
};

struct http_grp {
        char name[THR_NAME_MAX + 1];
        thr_group *grp;
};

/* A breaker's ticket held for an HTTP client: the ticket holds pointers into this process, so
 * the daemon keeps it and reports it (http_breaker.c). */
struct http_ticket {
        thr_limiter *lim; /* the handle it was handed out on (a replaced one stays open) */
        struct thr_breaker_ticket t;
        uint64_t expires_ns; /* arena time: then reported IGNORE and forgotten */
        char limiter[THR_NAME_MAX + 1];
        char key[THR_KEY_MAX_LEN];
        size_t len;
};

/* What the daemon holds for an HTTP client, named by 128 random bits: a lease or a ticket. */
struct http_held {
        int state; /* 0 free, 1 taken by a call in progress, 2 held */
        char id[HTTP_ID_LEN + 1];
        union {
                struct { /* a lease table's */
                        uint64_t ttl_ns;
                        struct thr_lease lease;
                };
                struct http_ticket tk; /* a ticket table's */
        };
};

/* A bounded table of them (http_max_leases slots), under http_api's mu. */
struct http_table {
        enum { HTTP_HELD_LEASE, HTTP_HELD_TICKET } kind;
        struct http_held *slots;
        uint32_t max;
};

struct http_api {
        thr_arena *a;
        uint64_t max_wait_ns;
        pthread_mutex_t mu; /* everything below */
        struct http_lim *lims;
        size_t nlims, caplims;
        struct http_grp *grps;
        size_t ngrps, capgrps;
        void **retired; /* handles a reload replaced: closed by http_api_free (a thread may still
                         * use one: closing it earlier would be a use after free) */
        size_t nretired, capretired;
        char (*names)[THR_NAME_MAX + 1];
        size_t nnames;
        struct http_table leases, tickets;
        /* places of rate waits whose clients left, kept by thr_reservation_cancel because a later
         * place was stacked on them: given back once the later ones are, dropped when due */
        struct thr_reservation *kept;
        size_t nkept, capkept;
};

/* The body of a request: its JSON object (NULL for none) and where errors go. */
struct http_req {
        json_t *o;
        struct http_out *out;
};

/* http_error with EXTRA's fields added to the body (EXTRA is consumed). */
void http_error_with(struct http_out *out, int err, const char *message, json_t *extra);
/* OUT as STATUS with the JSON object O (consumed). */
void http_ok(struct http_out *out, unsigned status, json_t *o);
/* A JSON integer of V, clamped to INT64_MAX. */
json_t *http_ju(uint64_t v);

/* Field checks: each returns 0, or -1 with OUT filled with a 400 naming the field. */
int http_fields(struct http_req *r, const char *const *allowed);
int http_u64(struct http_req *r, const char *name, bool required, uint64_t dflt, uint64_t max,
             uint64_t *v);
int http_key(struct http_req *r, json_t *o, const char *name, char *buf, size_t *len);
/* A timeout_ms / ttl_ms field in ns (TIMEOUT: capped at the server's max wait). */
int http_ms(struct http_req *r, const char *name, bool required, uint64_t dflt_ns, uint64_t *ns);
uint64_t http_cap(const struct http_api *api, uint64_t ns);

/* The cached handle of limiter NAME: 0, or -ENOENT. http_lim_again: after -EIDRM from OLD, the
 * handle of the limiter now so named (0), or -EIDRM (it is gone). */
int http_lim_get(struct http_api *api, const char *name, thr_limiter **out);
int http_lim_again(struct http_api *api, const char *name, thr_limiter *old, thr_limiter **out);
int http_grp_get(struct http_api *api, const char *name, thr_group **out);
int http_grp_again(struct http_api *api, const char *name, thr_group *old, thr_group **out);

/* A table's slot for a call in progress, with its random id, after the table's expired entries
 * are forgotten (-ENOSPC: full; -errno: no random bytes); http_held_free: the slot given up
 * unfilled. http_held_find: the slot of held ID (-ENOENT); http_held_forget: what H holds
 * given back (a lease released, a ticket reported IGNORE) and the slot freed. Both under
 * api->mu. */
int http_held_take(struct http_api *api, struct http_table *t);
void http_held_free(struct http_api *api, struct http_table *t, int slot);
int http_held_find(const struct http_table *t, const char *id);
void http_held_forget(const struct http_table *t, struct http_held *h);
/* Fill slot SLOT with LEASE (its id copied into ID); http_ticket_fill: with TK. */
void http_lease_fill(struct http_api *api, int slot, const struct thr_lease *lease, uint64_t ttl_ns,
                     char *id);
void http_ticket_fill(struct http_api *api, int slot, const struct http_ticket *tk, char *id);

/* ---------------------------------------------------------------- routes (http_routes.c) */

enum job_kind { JOB_RESERVE, JOB_LEASE, JOB_SPEND, JOB_COMPOSE, JOB_GROUP };

struct http_job { /* a wait: what it needs after the request is gone */
        struct http_api *api;
        enum job_kind kind;
        thr_limiter *lims[THR_COMPOSE_MAX_MEMBERS];
        thr_group *grp;
        char keys[THR_COMPOSE_MAX_MEMBERS][THR_KEY_MAX_LEN];
        size_t lens[THR_COMPOSE_MAX_MEMBERS];
        bool nokey[THR_COMPOSE_MAX_MEMBERS]; /* a group member given no key */
        uint64_t costs[THR_COMPOSE_MAX_MEMBERS];
        size_t n;
        uint64_t timeout_ns, ttl_ns;
        int slot;      /* JOB_LEASE: its slot in the lease table */
        uint32_t prio; /* JOB_LEASE, JOB_SPEND: its class in the key's queue (thr_*_opts) */
        struct thr_reservation rv;
};

/* What one route needs: the request, the limiter's name (or the group's, or the lease id). */
struct route {
        struct http_api *api;
        struct http_req r;
        const char *name;
        const struct http_arg *args;
        size_t nargs;
};

/* The limiter RT names: 0, or -1 with the error answered. http_again: after -EIDRM on *LIM,
 * the limiter now so named (retry: 1), or 0 (it was removed, or RC is another code). */
int http_limiter(struct route *rt, thr_limiter **lim);
int http_again(struct route *rt, thr_limiter **lim, int rc);
/* The query's key argument (the only one these routes take): 0, or -1 answered. */
int http_query_key(struct route *rt, const char **key);

/* One verb of a route table: the last segment of a path, its method, its function. */
struct http_verb {
        const char *verb, *method;
        void (*fn)(struct route *);
};
/* Run the entry of TAB (N entries) for VERB, or answer 405 with its method: true; false when
 * TAB has no VERB (nothing answered). */
bool http_route_verb(struct route *rt, const char *method, const char *verb,
                     const struct http_verb *tab, size_t n);

/* http_breaker.c: POST /v1/limiters/{name}/breaker/allow|report, GET .../breaker?key= (VERB
 * "", "allow" or "report"). */
void http_breaker_route(struct route *rt, const char *method, const char *verb);

/* http_compose.c: POST /v1/compose/... and /v1/groups/{name}/... (GROUP), try or acquire (WAIT);
 * http_compose_run: a composed acquire's wait, in a waiter thread. */
void http_compose_post(struct route *rt, bool group, bool wait);
void http_compose_run(struct http_job *j, struct http_out *out);

#endif

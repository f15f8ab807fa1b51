/*
 * http_internal.h - what the HTTP request core's two files share (http_api.c: errors, JSON
 * fields, the limiter and group caches, the lease table; http_routes.c: the routes and their
 * waits). Nothing else includes it.
 */
#ifndef THR_DAEMON_HTTP_INTERNAL_H
#define THR_DAEMON_HTTP_INTERNAL_H

#include <jansson.h>
#include <pthread.h>

#include "http.h"
#include "shm.h"

#define HTTP_ID_LEN 32 /* a lease id: 128 random bits in hex */

struct http_lim {
        char name[THR_NAME_MAX + 1];
        thr_limiter *lim;
};

struct http_grp {
        char name[THR_NAME_MAX + 1];
        thr_group *grp;
};

struct http_lease {
        int state; /* 0 free, 1 taken by an acquire in progress, 2 held */
        char id[HTTP_ID_LEN + 1];
        uint64_t ttl_ns;
        struct thr_lease lease;
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
        struct http_lease *leases;
        uint32_t max_leases;
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

/* The lease table: a slot for an acquire, with its random id (-ENOSPC: full; -errno: no random
 * bytes), filled with LEASE (its id copied into ID) or freed; http_lease_find: the slot of held
 * lease ID (-ENOENT), under api->mu. */
int http_lease_slot(struct http_api *api);
void http_lease_fill(struct http_api *api, int slot, const struct thr_lease *lease, uint64_t ttl_ns,
                     char *id);
void http_lease_free(struct http_api *api, int slot);
int http_lease_find(struct http_api *api, const char *id);

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
        uint32_t prio; /* JOB_LEASE: its class in the key's queue (thr_sem_acquire_opts) */
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

/* The limiter RT names: 0, or -1 with the error answered. */
int http_limiter(struct route *rt, thr_limiter **lim);

/* http_compose.c: POST /v1/compose/... and /v1/groups/{name}/... (GROUP), try or acquire (WAIT);
 * http_compose_run: a composed acquire's wait, in a waiter thread. */
void http_compose_post(struct route *rt, bool group, bool wait);
void http_compose_run(struct http_job *j, struct http_out *out);

#endif

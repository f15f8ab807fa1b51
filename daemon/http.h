/*
 * http.h - throttled's HTTP API (doc/http-api.md): the limiters of the arena the daemon serves,
 * decided with the client library's public calls, so HTTP and shared-memory clients share every
 * limit exactly.
 *
 * Two layers: the request core (http_api.c: method, path, arguments, body -> status and JSON,
 * callable without a server, which is what the fuzz target does) and the server (http.c:
 * libmicrohttpd, the waits, the bounds).
 */
#ifndef THR_DAEMON_HTTP_H
#define THR_DAEMON_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "throttle/throttle.h"

/* ---------------------------------------------------------------- the request core */

struct http_api;
struct http_job;

#define HTTP_MAX_ARGS 8

struct http_arg {
        const char *name, *value;
};

/* What a request answers now, or the wait it needs first. */
struct http_out {
        unsigned status;
        char *body;           /* malloc'ed JSON, NUL-terminated */
        uint64_t retry_after; /* seconds for a Retry-After header, 0: none */
        const char *allow;    /* 405: the methods the route takes */
        /* pending: the request waits before it is answered (body NULL) */
        enum { HTTP_NOW, HTTP_WAIT_TIMER, HTTP_WAIT_THREAD } wait;
        struct http_job *job;
        uint64_t due_ns; /* HTTP_WAIT_TIMER: arena time the reservation is due */
};

/*
 * http_api_new - the core on the arena A (opened by the caller, which keeps it open until
 * http_api_free), holding at most MAX_LEASES leases, capping every timeout at MAX_WAIT_NS.
 * NULL when out of memory. http_api_free releases every lease still held and closes the handles.
 */
struct http_api *http_api_new(thr_arena *a, uint32_t max_leases, uint64_t max_wait_ns);
void http_api_free(struct http_api *api);

/* http_api_set_names - the limiters GET /v1/limiters lists (the config's, in its order). */
void http_api_set_names(struct http_api *api, const struct config *cfg);

/*
 * http_api_handle - decide one request: METHOD, PATH (no query), ARGS (N query arguments), BODY
 * (LEN bytes, not NUL-terminated). Fills OUT: a response, or a wait (OUT->job) that the caller
 * completes with http_job_timer (when due or cancelled) or http_job_run (in a waiter thread).
 * Thread-safe.
 */
void http_api_handle(struct http_api *api, const char *method, const char *path,
                     const struct http_arg *args, size_t n, const char *body, size_t len,
                     struct http_out *out);

/* http_job_run - the kernel wait of JOB (may sleep up to its timeout), then its response into
 * OUT; frees JOB. GONE(ARG) (may be NULL): whether the client left during the wait; a lease
 * granted to a client that left is given back at once (nobody could release it). */
void http_job_run(struct http_job *job, struct http_out *out, bool (*gone)(void *), void *arg);

/* http_job_timer - a rate wait's end: DUE (its place is due: the response) or not (the client
 * left or the server stops: the reservation is given back, OUT gets 503); frees JOB. */
void http_job_timer(struct http_job *job, bool due, struct http_out *out);

/* http_job_drop - a wait that will not happen: its lease slot freed, its place given back. */
void http_job_drop(struct http_job *job);

/* http_error - OUT as the JSON error for -ERR with MESSAGE (status from the errno). */
void http_error(struct http_out *out, int err, const char *message);
/* http_error_status - the same with STATUS given (405, 401, 413, 503 at a bound). */
void http_error_status(struct http_out *out, unsigned status, int err, const char *message);

/* ---------------------------------------------------------------- the server */

struct http;

/*
 * http_listen - bind and listen on CFG's [daemon] http (HOST:PORT or unix:/path; "" is off: *OUT
 * NULL, 0) before the arena is touched, and read http_token_file. GID: the arena's group (a
 * socket file gets mode 0660 and that group; (gid_t)-1 keeps the daemon's). Returns 0, or a
 * sysexits code after logging why.
 * http_serve - start serving H (NULL: 0) on the arena file at PATH. 0 or EX_OSERR.
 * http_reload - a reload's config: the limiter list and the token file (a bad one keeps the
 * previous token, logged).
 * http_stop - answer the waits (503), wait for the waiter threads, stop the server, release
 * every lease it holds. Safe on NULL.
 */
int http_listen(const struct config *cfg, struct http **out);
int http_serve(struct http *h, const char *path, const struct config *cfg);
void http_reload(struct http *h, const struct config *cfg);
void http_stop(struct http *h);

#endif

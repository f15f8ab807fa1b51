/*
 * http_run.h - the harness shared by test_http's files (test_http.c, test_http_breaker.c, one
 * program: the suite "http"): a real throttled with the HTTP API on a manual-clock arena
 * (tdaemon, helpers.h) on a free loopback port or a Unix socket, requests written on a fresh
 * connection and their whole responses read (Connection: close), and checks of a response's
 * status, JSON error and fields.
 *
 * One fixture per test process (Criterion runs each test in its own): fx, with the suite's
 * .init and .fini http_setup and http_teardown.
 */
#ifndef THR_TEST_HTTP_RUN_H
#define THR_TEST_HTTP_RUN_H

#include <jansson.h>
#include <stdbool.h>

#include "helpers.h"

/* The limiters most tests run with. */
#define LIMS                                                                                       \
        "[lim]\nrate = 1/s\nburst = 5\ncapacity = 64\n\n"                                          \
        "[sem]\nkind = semaphore\nmax = 3\ncapacity = 64\n\n"                                      \
        "[bud]\nkind = budget\ninitial = 10\ncapacity = 64\n\n"                                    \
        "[pair]\ncompose = lim, bud\n"

extern struct tdaemon fx;
extern int port;
extern char unix_path[108]; /* set: requests go to this socket instead of the port */

void http_setup(void);
void http_teardown(void);

/* Start a daemon with the HTTP API on a free port (or EXTRA's own http line) and LIMS (NULL:
 * LIMS). */
void start(const char *extra, const char *lims);

/* A connection to the daemon; a request written on it; its whole response read (and the
 * connection closed). */
int hconnect(void);
void hsend(int fd, const char *method, const char *path, const char *body, const char *headers);

struct resp {
        int status;
        char *raw;        /* the whole response, headers included */
        const char *body; /* in RAW */
        json_t *j;        /* the body parsed, or NULL */
};

struct resp hread(int fd);
void rfree(struct resp *r);
/* One request on a fresh connection (HEADERS: more header lines, each ending in \r\n). */
struct resp req_h(const char *method, const char *path, const char *body, const char *headers);
struct resp req(const char *method, const char *path, const char *body);

/* The integer or boolean FIELD of R's body; fails the test if there is none. */
long long jint(const struct resp *r, const char *field);
bool jbool(const struct resp *r, const char *field);
/* The response must have STATUS and, for an error, the JSON error ERR. */
void expect(const struct resp *r, int status, const char *err);
/* A request that must answer STATUS (and ERR); its response freed. */
void must(const char *method, const char *path, const char *body, int status, const char *err);

#endif

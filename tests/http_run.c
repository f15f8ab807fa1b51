/*
 * http_run.c - the harness of test_http's files (http_run.h).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "http_run.h"

struct tdaemon fx;
int port;
char unix_path[108];

void http_setup(void)
{
        tdaemon_init(&fx);
        unix_path[0] = '\0';
}

void http_teardown(void)
{
        tdaemon_fini(&fx);
}

/* Start a daemon with the HTTP API on a free port (or EXTRA's own http line) and LIMS. */
void start(const char *extra, const char *lims)
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

int hconnect(void)
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

void hsend(int fd, const char *method, const char *path, const char *body, const char *headers)
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

/* Read a whole response (the server closes after it: Connection: close). */
struct resp hread(int fd)
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

void rfree(struct resp *r)
{
        json_decref(r->j);
        free(r->raw);
}

struct resp req_h(const char *method, const char *path, const char *body, const char *headers)
{
        int fd = hconnect();
        hsend(fd, method, path, body, headers);
        return hread(fd);
}

struct resp req(const char *method, const char *path, const char *body)
{
        return req_h(method, path, body, NULL);
}

long long jint(const struct resp *r, const char *field)
{
        json_t *v = json_object_get(r->j, field);
        cr_assert(json_is_integer(v), "no integer '%s' in %s", field, r->raw);
        return json_integer_value(v);
}

bool jbool(const struct resp *r, const char *field)
{
        json_t *v = json_object_get(r->j, field);
        cr_assert(json_is_boolean(v), "no boolean '%s' in %s", field, r->raw);
        return json_is_true(v);
}

/* The response must have STATUS and, for an error, the JSON error ERR. */
void expect(const struct resp *r, int status, const char *err)
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
void must(const char *method, const char *path, const char *body, int status, const char *err)
{
        struct resp r = req(method, path, body);
        expect(&r, status, err);
        rfree(&r);
}
